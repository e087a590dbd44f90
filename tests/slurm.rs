//! The Slurm executor against a real single-node Slurm cluster (`../shared/tools/slurm`):
//! a sweep gives the local executor's results, a failing stage and a cancelled job fail their
//! stage and cancel their dependents, a killed coordinator resumes its jobs without submitting
//! again, `limaml cancel` cancels a run's jobs, and a command method (bring your own model)
//! gives the local executor's metrics, and a successive-halving search (its trials Slurm jobs)
//! gives the local executor's trials and winner.
//!
//! The cluster is started once for the whole file and stopped at the end (also on a panic), so
//! every scenario runs in sequence from the single `#[test]` below. Without Slurm the test is
//! skipped, except under `CI=true`, where it fails.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{methods, stderr, stdout, Workspace, TINY_SPEC};

fn slurm_tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/slurm")
}

/// Stops the cluster when dropped, so no daemon outlives the test, even when it panics.
struct Cluster;

impl Cluster {
    fn start() -> Option<Cluster> {
        let started = Instant::now();
        let output = Command::new("bash").arg(slurm_tools().join("start-slurm.sh")).output();
        let ok = matches!(&output, Ok(o) if o.status.success());
        if !ok {
            let why = match &output {
                Ok(o) => String::from_utf8_lossy(&o.stderr).to_string(),
                Err(e) => e.to_string(),
            };
            // Stop whatever half-started.
            let _ = Command::new("bash").arg(slurm_tools().join("stop-slurm.sh")).output();
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and Slurm cannot be started:\n{why}");
            }
            eprintln!("skipping the Slurm tests: Slurm cannot be started here:\n{why}");
            return None;
        }
        eprintln!("slurm cluster up in {:.1}s", started.elapsed().as_secs_f64());
        Some(Cluster)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(slurm_tools().join("stop-slurm.sh")).output();
    }
}

const SWEEP: &str = "\n[sweep]\n\"methods.limaml.meta_embedding_dim\" = [2, 4]\n";

fn sweep_workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("sweep.toml", &format!("{TINY_SPEC}{SWEEP}"));
    ws
}

/// The ledger of submitted jobs: stage name -> (job id, state).
fn ledger(ws: &Workspace) -> Vec<(String, String, String)> {
    let Ok(bytes) = std::fs::read(ws.store().join("staging/jobs.json")) else { return Vec::new() };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Vec::new() };
    json["jobs"]
        .as_object()
        .map(|jobs| {
            jobs.values()
                .map(|j| {
                    (j["stage"].as_str().unwrap().to_string(), j["job_id"].as_str().unwrap().to_string(), j["state"].as_str().unwrap().to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every job Slurm knows that a coordinator on this workspace's store submitted: (id, state).
fn slurm_jobs_of(ws: &Workspace) -> Vec<(String, String)> {
    let marker = format!("store={}", ws.store().join("staging").display());
    let output = Command::new("squeue").args(["--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%k"]).output().expect("squeue runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.ends_with(&marker))
        .map(|line| {
            let mut fields = line.split('|');
            (fields.next().unwrap().to_string(), fields.next().unwrap().to_string())
        })
        .collect()
}

fn active_jobs_of(ws: &Workspace) -> Vec<(String, String)> {
    let finished = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"];
    slurm_jobs_of(ws).into_iter().filter(|(_, state)| !finished.contains(&state.as_str())).collect()
}

fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

fn stage<'a>(json: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
    json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no stage {prefix} in {json}"))
}

fn stage_count(ws: &Workspace, spec: &str) -> usize {
    let output = ws.run(&["plan", spec, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan --json");
    json["stages"].as_array().unwrap().len()
}

fn spawn_slurm_run(ws: &Workspace, spec: &str, sleep_ms: &str) -> Child {
    ws.command(&["run", spec, "--executor", "slurm", "--json"])
        .env("LIMAML_STAGE_SLEEP_MS", sleep_ms)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn limaml run")
}

fn parse_run(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("no JSON ({e}); stderr:\n{}", stderr(output)))
}

#[test]
fn the_slurm_executor_on_a_real_cluster() {
    let Some(_cluster) = Cluster::start() else { return };
    let started = Instant::now();
    let local = sweep_workspace();
    let (output, reference) = local.run_json("sweep.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let step = |name: &str, f: &dyn Fn()| {
        let t = Instant::now();
        f();
        eprintln!("{name}: ok in {:.1}s", t.elapsed().as_secs_f64());
    };
    step("a_sweep_on_slurm_gives_the_local_executors_results", &|| a_sweep_on_slurm_gives_the_local_executors_results(&reference));
    step("a_failing_stage_fails_with_slurms_exit_code_and_its_dependents_are_cancelled", &a_failing_stage_fails_with_slurms_exit_code_and_its_dependents_are_cancelled);
    step("a_job_cancelled_in_slurm_fails_its_stage_and_skips_its_dependents", &a_job_cancelled_in_slurm_fails_its_stage_and_skips_its_dependents);
    step("a_killed_coordinator_resumes_its_jobs_without_submitting_again", &|| a_killed_coordinator_resumes_its_jobs_without_submitting_again(&reference));
    step("limaml_cancel_cancels_the_jobs_of_a_running_coordinator", &limaml_cancel_cancels_the_jobs_of_a_running_coordinator);
    step("a_command_method_gives_the_local_executors_metrics_on_slurm", &a_command_method_gives_the_local_executors_metrics_on_slurm);
    step("a_halving_search_on_slurm_gives_the_local_executors_trials_and_winner", &a_halving_search_on_slurm_gives_the_local_executors_trials_and_winner);
    eprintln!("all slurm scenarios in {:.1}s", started.elapsed().as_secs_f64());
}

fn a_sweep_on_slurm_gives_the_local_executors_results(reference: &serde_json::Value) {
    let ws = sweep_workspace();
    let started = Instant::now();
    let (output, json) = ws.run_json("sweep.toml", &["--executor", "slurm"]);
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    eprintln!("  sweep of {} stages on slurm: {seconds:.1}s end to end", json["executed"]);
    assert_eq!(json["executed"], reference["executed"]);
    assert_eq!(methods(&json), methods(reference), "slurm and local results differ");
    // Every stage went through Slurm, and the train cells sharing their inputs as one array.
    let jobs = ledger(&ws);
    assert_eq!(jobs.len() as u64, json["executed"].as_u64().unwrap(), "{jobs:?}");
    assert!(jobs.iter().all(|(_, _, state)| state == "committed"), "{jobs:?}");
    let train_ids: Vec<&String> = jobs.iter().filter(|(name, _, _)| name.starts_with("train/")).map(|(_, id, _)| id).collect();
    assert!(train_ids.iter().all(|id| id.contains('_')), "train stages form a job array: {train_ids:?}");
    assert!(wait_until(Duration::from_secs(15), || active_jobs_of(&ws).is_empty()), "{:?}", slurm_jobs_of(&ws));
    // Staged outputs are gone once committed.
    assert!(!ws.store().join("staging/stages").exists());
    // A second run executes nothing and submits nothing.
    let (_, again) = ws.run_json("sweep.toml", &["--executor", "slurm"]);
    assert_eq!(again["executed"], 0);
    assert_eq!(methods(&again), methods(reference));
    assert_eq!(slurm_jobs_of(&ws).len(), jobs.iter().map(|(_, id, _)| id).collect::<BTreeSet<_>>().len());
}

/// A command method (an awk script scoring by item id) beside the tiny spec's global method.
fn command_workspace() -> Workspace {
    let ws = Workspace::new();
    let global_only = TINY_SPEC.split("[methods.limaml]").next().unwrap();
    ws.write("by-item.sh", "awk -F, 'NR == 1 { print \"row,score\" } NR > 1 { print $1 \",\" ($4 % 10) / 10 }' eval.csv > scores.csv\n");
    ws.write("command.toml", &format!("{global_only}\n[methods.by_item]\nkind = \"command\"\ncommand = [\"sh\", \"by-item.sh\"]\n"));
    ws
}

fn a_command_method_gives_the_local_executors_metrics_on_slurm() {
    let local = command_workspace();
    let (output, reference) = local.run_json("command.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(reference["methods"]["by_item"]["auc"].is_number(), "{reference}");
    let ws = command_workspace();
    let (output, json) = ws.run_json("command.toml", &["--executor", "slurm"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(methods(&json), methods(&reference), "slurm and local results differ");
    let jobs = ledger(&ws);
    assert!(
        jobs.iter().any(|(name, _, state)| name.starts_with("train/by_item") && state == "committed"),
        "the command stage ran as a Slurm job: {jobs:?}"
    );
    assert!(wait_until(Duration::from_secs(15), || active_jobs_of(&ws).is_empty()), "{:?}", slurm_jobs_of(&ws));
}

fn a_failing_stage_fails_with_slurms_exit_code_and_its_dependents_are_cancelled() {
    let ws = Workspace::new();
    let output = ws
        .command(&["run", "tiny.toml", "--executor", "slurm", "--json"])
        .env("LIMAML_FAIL_STAGE", "train/global")
        .output()
        .expect("limaml runs");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let json = parse_run(&output);
    let failed = stage(&json, "train/global");
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("FAILED, exit code 1:0"), "{error}");
    assert!(error.contains("LIMAML_FAIL_STAGE"), "the stage's own error is reported: {error}");
    for dependent in ["evaluate/global", "report"] {
        assert_eq!(stage(&json, dependent)["status"], "skipped", "{json}");
    }
    assert_eq!(json["status"], "failed");
    // Nothing is left pending in Slurm; the dependents' jobs were cancelled.
    // A job whose work is done may show COMPLETING for a moment while Slurm cleans up.
    let settled = wait_until(Duration::from_secs(15), || active_jobs_of(&ws).is_empty());
    assert!(settled, "{:?}", slurm_jobs_of(&ws));
    let jobs = ledger(&ws);
    let dependent_job = &jobs.iter().find(|(name, _, _)| name.starts_with("evaluate/global")).unwrap().1;
    let states = slurm_jobs_of(&ws);
    let dependent_state = &states.iter().find(|(id, _)| id == dependent_job).unwrap().1;
    assert_eq!(dependent_state, "CANCELLED");
}

fn a_job_cancelled_in_slurm_fails_its_stage_and_skips_its_dependents() {
    let ws = Workspace::new();
    let child = spawn_slurm_run(&ws, "tiny.toml", "2000");
    let mut train_job = None;
    let submitted = wait_until(Duration::from_secs(30), || {
        train_job = ledger(&ws).into_iter().find(|(name, _, _)| name.starts_with("train/limaml")).map(|(_, id, _)| id);
        train_job.is_some()
    });
    assert!(submitted, "the coordinator submitted train/limaml");
    let train_job = train_job.unwrap();
    let cancelled = Command::new("scancel").arg(&train_job).status().expect("scancel");
    assert!(cancelled.success());
    let output = child.wait_with_output().expect("coordinator exits");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let json = parse_run(&output);
    let train = stage(&json, "train/limaml");
    assert_eq!(train["status"], "failed", "{json}");
    assert!(train["error"].as_str().unwrap().contains(&format!("Slurm job {train_job} CANCELLED")), "{}", train["error"]);
    for dependent in ["embeddings/limaml", "evaluate/limaml", "report"] {
        assert_eq!(stage(&json, dependent)["status"], "skipped", "{json}");
    }
    // A job whose work is done may show COMPLETING for a moment while Slurm cleans up.
    let settled = wait_until(Duration::from_secs(15), || active_jobs_of(&ws).is_empty());
    assert!(settled, "{:?}", slurm_jobs_of(&ws));
}

fn a_killed_coordinator_resumes_its_jobs_without_submitting_again(reference: &serde_json::Value) {
    let ws = sweep_workspace();
    let stages = stage_count(&ws, "sweep.toml");
    let mut child = spawn_slurm_run(&ws, "sweep.toml", "1500");
    assert!(
        wait_until(Duration::from_secs(30), || ledger(&ws).len() == stages),
        "the coordinator submitted all {stages} stages: {:?}",
        ledger(&ws)
    );
    child.kill().expect("SIGKILL the coordinator");
    child.wait().unwrap();
    let submitted: BTreeSet<String> = ledger(&ws).into_iter().map(|(_, id, _)| id).collect();
    assert!(!active_jobs_of(&ws).is_empty(), "jobs outlive their coordinator");

    let (output, json) = ws.run_json("sweep.toml", &["--executor", "slurm"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("resuming"), "{}", stderr(&output));
    assert!(!stderr(&output).contains("as Slurm job"), "nothing is submitted again: {}", stderr(&output));
    assert_eq!(methods(&json), methods(reference), "a resumed run gives the local executor's results");
    assert_eq!(json["executed"].as_u64().unwrap() as usize, stages);
    let after: BTreeSet<String> = ledger(&ws).into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(after, submitted, "the ledger holds the first coordinator's jobs");
    let in_slurm: BTreeSet<String> = slurm_jobs_of(&ws).into_iter().map(|(id, _)| id).collect();
    assert_eq!(in_slurm, submitted, "Slurm got no new job");
}

fn limaml_cancel_cancels_the_jobs_of_a_running_coordinator() {
    let ws = Workspace::new();
    let stages = stage_count(&ws, "tiny.toml");
    let child = spawn_slurm_run(&ws, "tiny.toml", "3000");
    assert!(wait_until(Duration::from_secs(30), || ledger(&ws).len() == stages), "{:?}", ledger(&ws));
    // The coordinator holds the store; cancel reads only the ledger.
    let cancel = ws.run(&["cancel", "last"]);
    assert_eq!(cancel.status.code(), Some(0), "{}", stderr(&cancel));
    assert!(stdout(&cancel).contains(&format!("cancelled {stages} Slurm job(s)")), "{}", stdout(&cancel));
    let output = child.wait_with_output().expect("coordinator exits");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let json = parse_run(&output);
    assert_eq!(json["executed"], 0, "{json}");
    let data = stage(&json, "data");
    assert_eq!(data["status"], "failed");
    assert!(data["error"].as_str().unwrap().contains("CANCELLED"), "{}", data["error"]);
    // A job whose work is done may show COMPLETING for a moment while Slurm cleans up.
    let settled = wait_until(Duration::from_secs(15), || active_jobs_of(&ws).is_empty());
    assert!(settled, "{:?}", slurm_jobs_of(&ws));
    assert!(slurm_jobs_of(&ws).iter().all(|(_, state)| state == "CANCELLED"), "{:?}", slurm_jobs_of(&ws));
}

/// Global alone, with a halving search over its item embedding (3 distinct trials, 3 epochs: two rungs).
fn search_workspace() -> Workspace {
    let ws = Workspace::new();
    let global_only = TINY_SPEC.split("[methods.limaml]").next().unwrap().replace("epochs = 2", "epochs = 3");
    ws.write(
        "search.toml",
        &format!(
            "{global_only}\n[search]\nstrategy = \"halving\"\ntrials = 3\n\n[search.space]\n\
             \"methods.global.item_id_embedding_dim\" = {{ int = [2, 64] }}\n"
        ),
    );
    ws
}

fn a_halving_search_on_slurm_gives_the_local_executors_trials_and_winner() {
    let local = search_workspace();
    let (output, reference) = local.run_json("search.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let ws = search_workspace();
    let (output, json) = ws.run_json("search.toml", &["--executor", "slurm"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(json["search"], reference["search"], "slurm and local searches differ");
    assert_eq!(methods(&json), methods(&reference), "slurm and local results differ");
    let jobs = ledger(&ws);
    let trials = jobs.iter().filter(|(name, _, state)| name.starts_with("trial/global") && state == "committed").count();
    assert_eq!(trials, 6, "every trial of both rungs ran as a Slurm job: {jobs:?}");
    assert!(wait_until(Duration::from_secs(15), || active_jobs_of(&ws).is_empty()), "{:?}", slurm_jobs_of(&ws));
}
