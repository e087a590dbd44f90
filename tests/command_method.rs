//! The command method (bring your own model): the example spec runs end to end beside the
//! built-in methods; an edit to the script reruns only its stage, and `why` names the file; a
//! failing script, a timeout, a missing program and malformed scores each fail with the stated
//! error and exit code; missing files are spec errors.
//!
//! The failure cases use `sh` and `awk` scripts; the example needs `python3` (`.ci/run`
//! installs it).

mod common;

use std::path::Path;

use common::{stderr, stdout, Workspace};

/// A tiny experiment: the global baseline and a command method running `script` with `sh`.
fn spec_with(script: &str, extra: &str) -> String {
    format!(
        r#"
[experiment]
name = "byom"
seeds = [1]

[data]
source = "synthetic"

[data.synthetic]
n_users = 80
n_items = 40
mean_interactions = 20

[train]
epochs = 2

[methods.global]
kind = "global"
hidden = [16]

[methods.mine]
kind = "command"
command = ["sh", "{script}"]
{extra}
"#
    )
}

/// Scores every eval row with `score` (an awk expression over the eval.csv fields).
fn scoring_script(score: &str) -> String {
    format!("awk -F, 'NR == 1 {{ print \"row,score\" }} NR > 1 {{ print $1 \",\" {score} }}' eval.csv > scores.csv\n")
}

fn workspace_with(script_body: &str, extra: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write("mine.sh", script_body);
    ws.write("byom.toml", &spec_with("mine.sh", extra));
    ws
}

fn stage_error(json: &serde_json::Value, name: &str) -> String {
    let stage = json["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name} in {json}"));
    assert_eq!(stage["status"], "failed", "{json}");
    stage["error"].as_str().unwrap().to_string()
}

/// Whether some file under `dir` has exactly `content`.
fn store_holds(dir: &Path, content: &[u8]) -> bool {
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            store_holds(&path, content)
        } else {
            std::fs::read(&path).is_ok_and(|bytes| bytes == content)
        }
    })
}

fn status_of(json: &serde_json::Value, name: &str) -> String {
    let stage = json["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no {name} in {json}"));
    stage["status"].as_str().unwrap().to_string()
}

#[test]
fn the_external_model_example_runs_end_to_end_beside_the_built_in_methods() {
    let ws = Workspace::new();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/external-model.toml");
    let (output, json) = ws.run_json(spec.to_str().unwrap(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for method in ["popularity", "global", "id_embedding"] {
        let metrics = &json["methods"][method];
        let auc = metrics["auc"].as_f64().unwrap_or_else(|| panic!("{method} auc in {json}"));
        assert!((0.55..=1.0).contains(&auc), "{method}: {auc}");
        assert!(metrics["gauc"].is_number() && metrics["logloss"].is_number(), "{metrics}");
        assert!(metrics["segments"].is_object(), "the command method has per-segment metrics: {metrics}");
    }
    // Scored on the same rows and tasks as the built-in methods.
    let scored = |method: &str| {
        let seed = &json["methods"][method]["per_seed"]["1"];
        (seed["rows"].clone(), seed["tasks"].clone())
    };
    assert_eq!(scored("popularity"), scored("global"));
    assert!(json["methods"]["popularity"]["states"].is_object(), "{json}");
}

#[test]
fn an_edit_to_the_script_reruns_only_its_stage_and_why_names_the_file() {
    let ws = workspace_with(&scoring_script("0.5"), "");
    let (output, first) = ws.run_json("byom.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(first["methods"]["mine"]["auc"].is_number(), "{first}");

    ws.write("mine.sh", &scoring_script("($3 % 7) / 7"));
    let why = ws.run(&["why", "byom.toml", "train/mine/seed=1"]);
    assert_eq!(why.status.code(), Some(0), "{}", stderr(&why));
    assert!(stdout(&why).contains(r#"params.file_content["mine.sh"] changed"#), "{}", stdout(&why));
    let why_global = ws.run(&["why", "byom.toml", "train/global/seed=1"]);
    assert!(!stdout(&why_global).contains("will run"), "{}", stdout(&why_global));

    let (output, second) = ws.run_json("byom.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for name in ["train/mine/seed=1", "evaluate/mine/seed=1", "report"] {
        assert_eq!(status_of(&second, name), "executed", "{name}");
    }
    assert_eq!(second["executed"], 3, "only the command's stage, its evaluation and the report rerun: {second}");
    assert_eq!(second["methods"]["global"], first["methods"]["global"]);
    assert_ne!(second["methods"]["mine"], first["methods"]["mine"]);
}

#[test]
fn a_failing_script_fails_its_stage_with_its_exit_status_and_stderr_tail() {
    let ws = workspace_with("echo 'loading the model' >&2\necho 'ValueError: no GPU here' >&2\nexit 3\n", "");
    let (output, json) = ws.run_json("byom.toml", &["--keep-going"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let error = stage_error(&json, "train/mine/seed=1");
    assert!(error.contains("exited with status 3"), "{error}");
    assert!(error.contains("ValueError: no GPU here"), "{error}");
    assert_eq!(status_of(&json, "evaluate/mine/seed=1"), "skipped");
    assert_eq!(status_of(&json, "evaluate/global/seed=1"), "executed");
}

#[test]
fn a_script_past_its_timeout_is_killed_and_fails_its_stage() {
    let ws = workspace_with("echo 'starting' >&2\nexec sleep 30\n", "timeout = 0.5");
    let started = std::time::Instant::now();
    let (output, json) = ws.run_json("byom.toml", &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(started.elapsed().as_secs() < 20, "the command was killed at its timeout");
    let error = stage_error(&json, "train/mine/seed=1");
    assert!(error.contains("timed out after 0.5s"), "{error}");
    assert!(error.contains("starting"), "{error}");
}

#[test]
fn a_program_that_is_not_found_is_bad_input() {
    let ws = Workspace::new();
    ws.write("byom.toml", &spec_with("x.sh", "").replace(r#"["sh", "x.sh"]"#, r#"["no-such-program-limaml"]"#));
    let (output, json) = ws.run_json("byom.toml", &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let error = stage_error(&json, "train/mine/seed=1");
    assert!(error.contains("command `no-such-program-limaml` cannot be started"), "{error}");
}

#[test]
fn malformed_scores_fail_the_stage_naming_what_is_wrong() {
    let cases = [
        ("missing rows", "awk -F, 'NR == 1 { print \"row,score\" } NR > 2 { print $1 \",0.5\" }' eval.csv > scores.csv\n", "1 of "),
        ("NaN", "awk -F, 'NR == 1 { print \"row,score\" } NR > 1 { print $1 (NR == 2 ? \",nan\" : \",0.5\") }' eval.csv > scores.csv\n", "not finite"),
        ("out of range", &scoring_script("1.5"), "outside [0, 1]"),
        ("duplicates", "awk -F, 'NR == 1 { print \"row,score\" } NR > 1 { print $1 \",0.5\" } NR == 2 { print $1 \",0.5\" }' eval.csv > scores.csv\n", "is scored twice"),
        ("no scores.csv", "true\n", "wrote no readable scores.csv"),
    ];
    for (case, script, expected) in cases {
        let ws = workspace_with(script, "");
        let (output, json) = ws.run_json("byom.toml", &[]);
        assert_eq!(output.status.code(), Some(1), "{case}: {}", stderr(&output));
        let error = stage_error(&json, "train/mine/seed=1");
        assert!(error.contains("bad scores.csv") || case == "no scores.csv", "{case}: {error}");
        assert!(error.contains(expected), "{case}: {error}");
        assert!(error.contains("exited with status 0") || error.contains("bad scores.csv"), "{case}: {error}");
    }
}

#[test]
fn a_missing_script_file_is_a_spec_error_naming_file_line_and_key() {
    let ws = Workspace::new();
    ws.write("byom.toml", &spec_with("models/absent.py", "files = [\"also-absent.json\"]"));
    let output = ws.run(&["run", "byom.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("byom.toml:"), "{text}");
    assert!(text.contains("methods.mine.command.1"), "{text}");
    assert!(text.contains("file `models/absent.py` does not exist"), "{text}");
}

#[test]
fn a_missing_dependency_file_is_a_spec_error() {
    let ws = workspace_with(&scoring_script("0.5"), "files = [\"weights/absent.json\"]");
    let output = ws.run(&["run", "byom.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("methods.mine.files.0") && text.contains("weights/absent.json"), "{text}");
}

#[test]
fn an_empty_command_is_a_spec_error() {
    let ws = Workspace::new();
    ws.write("byom.toml", &spec_with("x.sh", "").replace(r#"["sh", "x.sh"]"#, "[]"));
    let output = ws.run(&["run", "byom.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("methods.mine.command") && stderr(&output).contains("must name a program"), "{}", stderr(&output));
}

#[test]
fn support_csv_is_empty_by_default_and_holds_serving_history_under_deployment() {
    // The script fails (exit 9) unless support.csv has the expected number of data lines.
    let check = |condition: &str| format!("test $(($(wc -l < support.csv) - 1)) {condition} || exit 9\n{}", scoring_script("0.5"));
    let ws = workspace_with(&check("-eq 0"), "");
    let (output, _) = ws.run_json("byom.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "default protocol: {}", stderr(&output));

    let ws = workspace_with(&check("-gt 0"), "");
    let deployment = ["--set", "split.setting=deployment", "--set", "split.deployment_cuts=[0.6, 0.7, 0.8, 0.9]"];
    let (output, json) = ws.run_json("byom.toml", &deployment);
    assert_eq!(output.status.code(), Some(0), "deployment protocol: {}", stderr(&output));
    assert!(json["methods"]["mine"]["auc"].is_number(), "{json}");
}

#[test]
fn meta_embeddings_written_by_the_command_are_checked_and_kept() {
    let write = |text: &str| format!("printf '{text}' > meta_embeddings.csv\n{}", scoring_script("0.5"));
    let ws = workspace_with(&write("entity,m0,m1\\n1,0.5,-2\\n0,0.25,1e-3\\n"), "");
    let (output, _) = ws.run_json("byom.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Kept as the train stage's `meta_embeddings.csv` artifact, sorted by entity.
    let expected = b"entity,m0,m1\n0,0.25,0.001\n1,0.5,-2\n";
    assert!(store_holds(&ws.store(), expected), "no artifact holds the checked table");

    let ws = workspace_with(&write("entity,m0\\n0,oops\\n"), "");
    let (output, json) = ws.run_json("byom.toml", &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let error = stage_error(&json, "train/mine/seed=1");
    assert!(error.contains("bad meta_embeddings.csv") && error.contains("line 2"), "{error}");
}
