//! Looking at results every day: `compare` refuses bad input with a "did you mean", exports
//! numbers, tells experiments apart; `gc --dry-run` tells the truth; runs record their
//! overrides; `why` compares with the same experiment; readers never wait for a running writer.

mod common;
use std::time::{Duration, Instant};

use common::{stderr, stdout, Workspace, TINY_SPEC};

fn bad_input(output: &std::process::Output, wanted: &str) {
    assert_eq!(output.status.code(), Some(2), "{}", stderr(output));
    assert!(stderr(output).contains(wanted), "wanted `{wanted}` in: {}", stderr(output));
    assert!(!stderr(output).contains("panicked"));
}

#[test]
fn compare_refuses_unknown_metrics_sort_keys_filters_and_baselines() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    bad_input(&ws.run(&["compare", "--metrics", "low.acu"]), "did you mean `low.auc`");
    bad_input(&ws.run(&["compare", "--sort", "ndcg"]), "--sort: unknown metric `ndcg`");
    bad_input(&ws.run(&["compare", "--filter", "inner_steps=3"]), "did you mean `method.inner_steps`");
    bad_input(&ws.run(&["compare", "--filter", "method=limmaml"]), "did you mean `limaml`");
    bad_input(&ws.run(&["compare", "--baseline", "globl"]), "did you mean `global`");
    bad_input(&ws.run(&["compare", "--filter", "method.inner_steps=99"]), "no row has method.inner_steps = 99");
}

#[test]
fn compare_filters_by_the_specs_own_dotted_path() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    ws.run_json("tiny.toml", &["--set", "methods.limaml.inner_lr=0.05"]);
    let output = ws.run(&["compare", "--last", "2", "--filter", "methods.limaml.inner_lr=0.05", "--format", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 2, "header and the one limaml row: {text}");
    assert!(text.lines().nth(1).unwrap().starts_with("limaml,"), "{text}");
}

#[test]
fn compare_json_carries_numbers_not_formatted_strings() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let output = ws.run(&["compare", "--format", "json", "--baseline", "global"]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let limaml = value["rows"].as_array().unwrap().iter().find(|r| r["label"] == "limaml").unwrap();
    assert!(limaml["auc"].is_f64() && limaml["auc_std"].is_f64() && limaml["n"].is_u64(), "{limaml}");
    assert!(limaml["auc_seed1"].is_f64() && limaml["delta_auc"].is_f64(), "{limaml}");
}

#[test]
fn compare_shows_the_experiment_when_rows_come_from_several() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    ws.write("other.toml", &TINY_SPEC.replace("name = \"tiny\"", "name = \"other\"").replace("n_users = 80", "n_users = 90"));
    ws.run_json("other.toml", &[]);
    let output = ws.run(&["compare", "--last", "2", "--format", "md"]);
    let text = stdout(&output);
    assert!(text.contains("| experiment |"), "{text}");
    let global_rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| global |")).collect();
    assert_eq!(global_rows.len(), 2, "{text}");
    assert!(global_rows[0].contains("other") != global_rows[1].contains("other"), "{text}");
}

#[test]
fn compare_fits_80_columns_in_the_terminal_by_default() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let output = ws.command(&["compare", "--baseline", "global"]).env("COLUMNS", "80").output().unwrap();
    let text = stdout(&output);
    let widest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= 80, "{widest} columns:\n{text}");
    assert!(text.contains("Δ: paired per-seed difference to global"), "a legend: {text}");
}

#[test]
fn gc_dry_run_reports_exactly_what_gc_frees() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    ws.run_json("tiny.toml", &["--set", "train.epochs=1"]);
    let bytes = |text: &str| -> u64 {
        let line = text.lines().find(|l| l.contains("free")).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().skip_while(|w| !w.starts_with("free")).nth(1).unwrap().parse().unwrap()
    };
    let dry = stdout(&ws.run(&["gc", "--dry-run", "--keep-last", "1"]));
    let real = stdout(&ws.run(&["gc", "--keep-last", "1"]));
    assert!(bytes(&dry) > 0, "{dry}");
    assert_eq!(bytes(&dry), bytes(&real), "dry:\n{dry}\nreal:\n{real}");
}

#[test]
fn runs_record_their_overrides_and_runs_json_carries_metrics() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &["--set", "train.epochs=1"]);
    let show: serde_json::Value = serde_json::from_slice(&ws.run(&["show", "last", "--json"]).stdout).unwrap();
    assert_eq!(show["overrides"], serde_json::json!(["train.epochs=1"]));
    assert!(stdout(&ws.run(&["show", "last"])).contains("overrides: --set train.epochs=1"));
    let runs: serde_json::Value = serde_json::from_slice(&ws.run(&["runs", "--json"]).stdout).unwrap();
    let run = &runs[0];
    assert_eq!(run["overrides"], serde_json::json!(["train.epochs=1"]));
    assert!(run["methods"]["global"]["auc"].is_f64(), "{run}");
}

#[test]
fn a_set_on_a_swept_path_is_an_error_that_says_how_to_override_the_sweep() {
    let ws = Workspace::new();
    ws.write("sweep.toml", &(TINY_SPEC.to_string() + "\n[sweep]\n\"methods.limaml.inner_steps\" = [1, 2]\n"));
    let output = ws.run(&["plan", "sweep.toml", "--set", "methods.limaml.inner_steps=3"]);
    bad_input(&output, "sweep.methods.limaml.inner_steps=[3]");
    assert!(stderr(&output).contains("command line"), "{}", stderr(&output));
}

#[test]
fn why_compares_with_the_same_experiments_last_run_and_names_it() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let first: serde_json::Value = serde_json::from_slice(&ws.run(&["show", "last", "--json"]).stdout).unwrap();
    // Another experiment runs a stage of the same name with other settings afterwards.
    ws.write("other.toml", &TINY_SPEC.replace("name = \"tiny\"", "name = \"other\"").replace("epochs = 2", "epochs = 1"));
    ws.run_json("other.toml", &[]);
    let output = ws.run(&["why", "tiny.toml", "evaluate/limaml/seed=1", "--set", "methods.limaml.inner_lr=0.05"]);
    let text = stdout(&output);
    assert!(text.contains(&format!("in run {}", first["id"].as_str().unwrap())), "{text}");
    assert!(!text.contains("train.epochs"), "the other experiment's epochs are not the reason: {text}");
    // --against picks the run.
    let output = ws.run(&["why", "tiny.toml", "evaluate/limaml/seed=1", "--against", "last"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn readers_answer_within_a_second_while_a_run_holds_the_store() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    // A run whose command method sleeps holds the store for several seconds.
    std::fs::write(
        ws.path().join("slow.sh"),
        "sleep 6\nawk -F, 'NR == 1 { print \"row,score\"; next } { print $1 \",0.5\" }' eval.csv > scores.csv\n",
    )
    .unwrap();
    ws.write("slow.toml", &(TINY_SPEC.replace("name = \"tiny\"", "name = \"slow\"") + "\n[methods.slow]\nkind = \"command\"\ncommand = [\"sh\", \"slow.sh\"]\n"));
    let mut writer = ws.command(&["run", "slow.toml"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(writer.try_wait().unwrap().is_none(), "the slow run is still running");
    for args in [&["runs", "--json"][..], &["show", "last", "--json"], &["compare", "--last", "2"], &["gc", "--dry-run"], &["plan", "tiny.toml"]] {
        let started = Instant::now();
        let output = ws.run(args);
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", stderr(&output));
        assert!(seconds < 1.0, "{args:?} took {seconds:.2}s");
        if args[0] == "runs" {
            let runs: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(runs.as_array().unwrap().len(), 2, "the finished run and the running one: {runs}");
        }
    }
    assert!(writer.wait().unwrap().success());
}

#[test]
fn exps_shows_one_row_per_run_and_method_with_the_parameters_that_differ() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    ws.run_json("tiny.toml", &["--set", "methods.limaml.inner_lr=0.05"]);
    let output = ws.run(&["exps", "--format", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.lines().next().unwrap().contains("method.inner_lr"), "{text}");
    let limaml_rows = text.lines().filter(|l| l.contains(",limaml,")).count();
    assert_eq!(limaml_rows, 2, "one limaml row per run: {text}");
    bad_input(&ws.run(&["exps", "--experiment", "nope"]), "no run of that experiment");
}

#[test]
fn diff_puts_two_runs_side_by_side() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let first: serde_json::Value = serde_json::from_slice(&ws.run(&["show", "last", "--json"]).stdout).unwrap();
    ws.run_json("tiny.toml", &["--set", "methods.limaml.inner_lr=0.05"]);
    let output = ws.run(&["diff", first["id"].as_str().unwrap(), "last"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("method.inner_lr") && text.contains("0.05"), "{text}");
    assert!(text.contains("--set methods.limaml.inner_lr=0.05") || text.contains("methods.limaml.inner_lr=0.05"), "{text}");
}

#[test]
fn new_writes_a_starter_spec_that_plans() {
    let ws = Workspace::new();
    let output = ws.run(&["new", "starter"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = ws.run(&["plan", "experiments/starter.toml"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    bad_input(&ws.run(&["new", "starter"]), "exists");
    bad_input(&ws.run(&["new", "bad name"]), "a name is letters");
}

#[test]
fn schema_describes_every_table_and_method_kind_with_the_doc_comments() {
    let ws = Workspace::new();
    let output = ws.run(&["schema"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    for table in ["experiment", "data", "split", "methods", "train", "sweep", "report", "search", "runtime"] {
        assert!(schema["properties"][table].is_object(), "{table}");
    }
    let kinds: Vec<String> = schema["definitions"]["MethodConfig"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["properties"]["kind"]["enum"][0].as_str().map(String::from))
        .collect();
    for kind in ["global", "id_embedding", "wide_deep", "limaml", "logistic", "command"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    let ks = &schema["definitions"]["ReportConfig"]["properties"]["ks"];
    assert!(ks["description"].as_str().unwrap().contains("Cut-offs K"), "{ks}");
}

#[test]
fn reproduce_takes_overrides_and_names_the_command_line_when_one_is_bad() {
    let ws = Workspace::new();
    let specs = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/paper");
    let output = ws.run(&["reproduce", "--specs", specs, "--set", "train.epohcs=1"]);
    bad_input(&output, "command line");
}

#[test]
fn runs_fits_80_columns_and_never_wraps_a_run_id() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let (_, json) = ws.run_json("tiny.toml", &[]);
    let output = ws.command(&["runs"]).env("COLUMNS", "80").output().unwrap();
    let text = stdout(&output);
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.contains(json["run_id"].as_str().unwrap()), "a whole run id on one line: {text}");
}

#[test]
fn plan_draws_the_report_at_the_top_level_not_under_one_evaluation() {
    let ws = Workspace::new();
    let output = ws.run(&["plan", "tiny.toml"]);
    let text = stdout(&output);
    let report = text.lines().find(|l| l.contains("report")).unwrap_or_else(|| panic!("{text}"));
    assert!(report.starts_with("report"), "{report}");
    assert!(report.contains("gathers"), "{report}");
}

#[test]
fn every_flag_of_every_command_has_help_text() {
    let ws = Workspace::new();
    let commands = ["plan", "run", "compare", "reproduce", "bench", "runs", "show", "export", "report", "why", "gc", "exps", "diff", "new", "schema", "data inspect", "store check"];
    for command in commands {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("-h");
        let text = stdout(&ws.run(&args));
        // clap prints `--flag <VALUE>  description`; a flag without one ends its line.
        for line in text.lines().map(str::trim).filter(|l| l.starts_with("--") || l.starts_with('-') && l.len() > 1) {
            let described = line.contains("  ") && line.split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
            assert!(described, "`limaml {command}`: no help for `{line}`");
        }
    }
}

#[test]
fn a_sweep_over_the_data_pairs_each_method_with_the_baselines_row_of_the_same_cell() {
    let ws = Workspace::new();
    ws.write("cells.toml", &(TINY_SPEC.to_string() + "\n[sweep]\n\"split.query_fraction\" = [0.3, 0.5]\n"));
    let (output, _) = ws.run_json("cells.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = ws.run(&["compare", "--baseline", "global", "--format", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let rows = value["rows"].as_array().unwrap();
    let limaml: Vec<&serde_json::Value> = rows.iter().filter(|r| r["method"] == "limaml").collect();
    assert_eq!(limaml.len(), 2, "{value}");
    assert!(limaml.iter().all(|r| r["delta_auc"].is_f64()), "each cell paired with global's: {value}");
    assert!(rows.iter().filter(|r| r["method"] == "global").all(|r| r["delta_auc"].is_null()));
    // The terminal shows the cell apart from the method.
    let text = stdout(&ws.run(&["compare", "--baseline", "global"]));
    assert!(text.contains("│ cell") || text.contains("┆ cell"), "{text}");
}
