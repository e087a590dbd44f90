//! Running: cache hits, resuming after kill -9, two processes on one store, corrupted
//! artifacts, failing stages, gc and `why`.

mod common;
use std::time::{Duration, Instant};

use common::{methods, stderr, stdout, Workspace};

#[test]
fn a_second_run_of_an_unchanged_spec_executes_nothing() {
    let ws = Workspace::new();
    let (first_output, first) = ws.run_json("tiny.toml", &[]);
    assert_eq!(first_output.status.code(), Some(0), "{}", stderr(&first_output));
    assert!(first["executed"].as_u64().unwrap() > 0);
    let (_, second) = ws.run_json("tiny.toml", &[]);
    assert_eq!(second["executed"], 0);
    assert_eq!(second["cached"], first["executed"]);
    assert_eq!(methods(&first), methods(&second));
}

#[test]
fn run_json_has_per_method_metrics() {
    let ws = Workspace::new();
    let (_, json) = ws.run_json("tiny.toml", &[]);
    for method in ["global", "limaml"] {
        let auc = json["methods"][method]["auc"].as_f64().unwrap_or_else(|| panic!("{method} auc in {json}"));
        assert!((0.0..=1.0).contains(&auc));
        assert!(json["methods"][method]["gauc"].is_number());
        assert!(json["methods"][method]["logloss"].is_number());
        assert!(json["methods"][method]["segments"].is_object());
    }
    assert!(json["run_id"].is_string());
}

#[test]
fn the_same_spec_and_seed_give_identical_metrics_in_separate_stores() {
    let first = Workspace::new();
    let second = Workspace::new();
    let (_, a) = first.run_json("tiny.toml", &[]);
    let (_, b) = second.run_json("tiny.toml", &["-j", "1"]);
    assert_eq!(methods(&a), methods(&b));
}

#[test]
fn a_run_killed_mid_way_resumes_without_redoing_finished_stages_and_gives_identical_results() {
    let ws = Workspace::new();
    let mut child = ws
        .command(&["run", "tiny.toml", "-j", "1"])
        .env("LIMAML_STAGE_SLEEP_MS", "700")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Let a few stages commit, then kill -9 in the middle of one.
    std::thread::sleep(Duration::from_millis(2600));
    child.kill().expect("kill -9");
    child.wait().unwrap();
    let (output, resumed) = ws.run_json("tiny.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let cached = resumed["cached"].as_u64().unwrap();
    assert!(cached >= 1, "finished stages survive the kill: {resumed}");
    assert!(resumed["executed"].as_u64().unwrap() >= 1, "unfinished stages run again: {resumed}");
    let clean = Workspace::new();
    let (_, reference) = clean.run_json("tiny.toml", &[]);
    assert_eq!(methods(&resumed), methods(&reference));
}

#[test]
fn a_second_process_waits_for_the_store_or_fails_at_once_with_no_wait() {
    let ws = Workspace::new();
    let mut first = ws
        .command(&["run", "tiny.toml", "-j", "1"])
        .env("LIMAML_STAGE_SLEEP_MS", "400")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    let busy = ws.run(&["run", "tiny.toml", "--no-wait"]);
    assert_eq!(busy.status.code(), Some(1), "{}", stderr(&busy));
    assert!(stderr(&busy).contains("in use by run"), "{}", stderr(&busy));
    assert!(started.elapsed() < Duration::from_secs(5), "--no-wait must not wait");
    let waited = ws.run(&["run", "tiny.toml", "--json"]);
    assert!(stderr(&waited).contains("waiting for run"), "{}", stderr(&waited));
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
    let json: serde_json::Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(json["executed"], 0, "the waiting run finds everything cached");
    assert!(first.wait().unwrap().success());
}

#[test]
fn a_corrupted_artifact_is_detected_and_recomputed() {
    let ws = Workspace::new();
    let (_, first) = ws.run_json("tiny.toml", &[]);
    // Flip bytes in every stored artifact file.
    let objects = ws.store().join("objects");
    let mut corrupted = 0;
    for dir in std::fs::read_dir(&objects).unwrap().flatten() {
        if dir.file_name() == "tmp" {
            continue;
        }
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let mut bytes = std::fs::read(file.path()).unwrap();
            if let Some(b) = bytes.first_mut() {
                *b ^= 0xff;
                std::fs::write(file.path(), bytes).unwrap();
                corrupted += 1;
            }
        }
    }
    assert!(corrupted > 0);
    let (output, second) = ws.run_json("tiny.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("corrupted"), "{}", stderr(&output));
    assert!(second["executed"].as_u64().unwrap() > 0);
    assert_eq!(methods(&first), methods(&second));
}

#[test]
fn a_failing_stage_stops_its_dependents_and_exits_1() {
    let ws = Workspace::new();
    let output = ws.command(&["run", "tiny.toml", "--keep-going", "--json"]).env("LIMAML_FAIL_STAGE", "train/global").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let status = |name: &str| {
        json["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).map(|s| s["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("train/global/seed=1").as_deref(), Some("failed"));
    assert_eq!(status("evaluate/global/seed=1").as_deref(), Some("skipped"));
    assert_eq!(status("evaluate/limaml/seed=1").as_deref(), Some("executed"), "--keep-going finishes the others");
    // The summary names the failure.
    let text = ws.command(&["run", "tiny.toml"]).env("LIMAML_FAIL_STAGE", "train/global").output().unwrap();
    assert_eq!(text.status.code(), Some(1));
    assert!(stdout(&text).contains("FAILED train/global/seed=1"), "{}", stdout(&text));
}

#[test]
fn why_names_the_changed_parameter() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let output = ws.run(&["why", "tiny.toml", "evaluate/limaml/seed=1", "--set", "methods.limaml.inner_lr=0.05"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("input 'model' changed"), "{text}");
    assert!(text.contains("params.method.inner_lr changed:") && text.contains("-> 0.05"), "{text}");
}

#[test]
fn gc_frees_artifacts_no_run_references() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    ws.run_json("tiny.toml", &["--set", "train.epochs=1"]);
    let dry = ws.run(&["gc", "--dry-run", "--keep-last", "1"]);
    assert!(stdout(&dry).contains("would free"), "{}", stdout(&dry));
    let output = ws.run(&["gc", "--keep-last", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("freed") && !text.contains("freed 0 bytes"), "{text}");
    // The kept run is still fully cached.
    let (_, again) = ws.run_json("tiny.toml", &["--set", "train.epochs=1"]);
    assert_eq!(again["executed"], 0);
}

#[test]
fn runs_and_show_list_what_ran() {
    let ws = Workspace::new();
    let (_, json) = ws.run_json("tiny.toml", &[]);
    let id = json["run_id"].as_str().unwrap();
    let runs = ws.run(&["runs"]);
    assert!(stdout(&runs).contains(id));
    let show = ws.run(&["show", id, "--json"]);
    let record: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(record["id"], id);
    assert_eq!(record["status"], "succeeded");
}

#[test]
fn ctrl_c_stops_after_running_stages_commit_and_exits_130() {
    let ws = Workspace::new();
    let child = ws
        .command(&["run", "tiny.toml", "-j", "1"])
        .env("LIMAML_STAGE_SLEEP_MS", "500")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1700));
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(stderr(&output).contains("stopping after the running stages commit"), "{}", stderr(&output));
    let show = ws.run(&["show", "last", "--json"]);
    let record: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(record["status"], "interrupted");
    let (_, resumed) = ws.run_json("tiny.toml", &[]);
    assert!(resumed["cached"].as_u64().unwrap() >= 2, "stages finished before Ctrl-C are kept: {resumed}");
}
