//! `[search]`: trials as cached stages, selection on validation only, the winner over the seeds.

mod common;

use common::{stderr, stdout, Workspace, TINY_SPEC};

/// The tiny spec with a search over LiMAML's inner loop (global is not searched).
fn search_spec(strategy: &str, trials: usize, epochs: usize) -> String {
    format!(
        "{}\n[search]\nstrategy = \"{strategy}\"\ntrials = {trials}\n\n[search.space]\n\
         \"methods.limaml.inner_lr\" = {{ loguniform = [0.5, 8.0] }}\n\
         \"methods.limaml.inner_steps\" = {{ int = [1, 3] }}\n",
        TINY_SPEC.replace("epochs = 2", &format!("epochs = {epochs}\npatience = {epochs}")),
    )
}

fn trial_stages<'a>(json: &'a serde_json::Value, status: &str) -> Vec<&'a str> {
    json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "trial" && s["status"] == status)
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

#[test]
fn run_json_carries_each_searched_methods_trials_and_its_best_on_validation() {
    let ws = Workspace::new();
    ws.write("search.toml", &search_spec("random", 3, 2));
    let (output, json) = ws.run_json("search.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let search = &json["search"]["limaml"];
    let trials = search["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3);
    assert_eq!(search["count"], 3);
    assert_eq!(search["objective"], "validation.auc");
    let best = trials.iter().map(|t| t["objective"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(search["best"]["objective"].as_f64(), Some(best));
    let marked: Vec<&serde_json::Value> = trials.iter().filter(|t| t["best"] == true).collect();
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0]["params"], search["best"]["params"]);
    assert!(json["search"].get("global").is_none(), "global has no path in the space: {}", json["search"]);
    // The winner is then trained and evaluated on test like any method.
    assert!(json["methods"]["limaml"]["auc"].is_number(), "{}", json["methods"]);
}

#[test]
fn a_rerun_of_a_search_computes_nothing() {
    let ws = Workspace::new();
    ws.write("search.toml", &search_spec("halving", 3, 3));
    let (_, first) = ws.run_json("search.toml", &[]);
    let (output, again) = ws.run_json("search.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(again["executed"], 0);
    assert_eq!(again["search"], first["search"]);
}

#[test]
fn widening_the_budget_computes_only_the_new_trials() {
    let ws = Workspace::new();
    ws.write("search.toml", &search_spec("random", 2, 2));
    let (_, small) = ws.run_json("search.toml", &[]);
    let (output, wide) = ws.run_json("search.toml", &["--set", "search.trials=3"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(trial_stages(&wide, "cached").len(), 2, "{}", wide["stages"]);
    assert_eq!(trial_stages(&wide, "executed"), ["trial/limaml/t=02/seed=1"]);
    let first_two = |json: &serde_json::Value| json["search"]["limaml"]["trials"].as_array().unwrap()[..2].to_vec();
    assert_eq!(first_two(&small), first_two(&wide));
}

#[test]
fn the_same_spec_and_seed_give_the_same_trials_and_winner_in_separate_stores() {
    let (a, b) = (Workspace::new(), Workspace::new());
    for ws in [&a, &b] {
        ws.write("search.toml", &search_spec("halving", 3, 3));
    }
    let (_, first) = a.run_json("search.toml", &[]);
    let (_, second) = b.run_json("search.toml", &[]);
    assert_eq!(first["search"], second["search"]);
    assert_eq!(first["methods"], second["methods"]);
}

#[test]
fn halving_prunes_weak_trials_early_and_resumes_the_promoted_one_from_its_earlier_epochs() {
    let ws = Workspace::new();
    // 3 trials, eta 3, 3 epochs: all three train 1 epoch, the best goes on to 3.
    ws.write("search.toml", &search_spec("halving", 3, 3));
    let (output, json) = ws.run_json("search.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let search = &json["search"]["limaml"];
    let trials = search["trials"].as_array().unwrap();
    let epochs: Vec<u64> = trials.iter().map(|t| t["epochs"].as_u64().unwrap()).collect();
    assert_eq!(epochs.iter().filter(|&&e| e == 1).count(), 2, "{epochs:?}");
    assert_eq!(epochs.iter().filter(|&&e| e == 3).count(), 1, "{epochs:?}");
    let best = trials.iter().find(|t| t["best"] == true).unwrap();
    assert_eq!(best["epochs"], 3);
    let rungs = best["rungs"].as_array().unwrap();
    assert_eq!(rungs.len(), 2);
    assert_eq!(rungs[1]["resumed_from"], 1, "the second rung continues the first rung's model: {best}");
    assert_eq!(best["trained_epochs"], 3);
}

#[test]
fn selection_reads_only_trial_stages_and_trials_read_no_evaluation() {
    let ws = Workspace::new();
    ws.write("search.toml", &search_spec("halving", 3, 3));
    let output = ws.run(&["plan", "search.toml", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stages = plan["stages"].as_array().unwrap();
    let kind_of = |name: &str| stages.iter().find(|s| s["name"] == name).map(|s| s["kind"].as_str().unwrap().to_string());
    let selects: Vec<&serde_json::Value> = stages.iter().filter(|s| s["kind"] == "select").collect();
    assert_eq!(selects.len(), 2, "a promotion and the final choice");
    for select in selects {
        for producer in select["inputs"].as_object().unwrap().values() {
            let producer = producer.as_str().unwrap();
            assert_eq!(kind_of(producer).as_deref(), Some("trial"), "{} reads {producer}", select["name"]);
        }
    }
    // A trial reads the data, the tasks and its own earlier rung, never an evaluation.
    for trial in stages.iter().filter(|s| s["kind"] == "trial") {
        for producer in trial["inputs"].as_object().unwrap().values() {
            let kind = kind_of(producer.as_str().unwrap()).unwrap();
            assert!(["load_data", "slice_tasks", "trial", "select"].contains(&kind.as_str()), "{kind}");
        }
    }
}

#[test]
fn compare_trials_lists_every_trial_marks_the_best_and_plots_them() {
    let ws = Workspace::new();
    ws.write("search.toml", &search_spec("random", 3, 2));
    ws.run_json("search.toml", &[]);
    let output = ws.run(&["compare", "--trials", "--format", "md", "--plot", "trials.svg"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| limaml")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(rows.iter().filter(|r| r.trim_end().ends_with("* |")).count(), 1, "{text}");
    let svg = std::fs::read_to_string(ws.path().join("trials.svg")).expect("the plot is written");
    assert!(svg.contains("<svg"), "{svg}");
}

#[test]
fn each_bad_search_entry_is_an_error_naming_its_key() {
    let cases = [
        ("\"methods.limaml.inner_rate\" = { uniform = [0.1, 1.0] }", "trials = 2", "search.space.methods.limaml.inner_rate"),
        ("\"methods.nope.inner_lr\" = { uniform = [0.1, 1.0] }", "trials = 2", "search.space.methods.nope.inner_lr"),
        ("\"methods.limaml.inner_lr\" = { uniform = [1.0, 0.1] }", "trials = 2", "search.space.methods.limaml.inner_lr"),
        ("\"methods.limaml.inner_lr\" = { uniform = [0.5, 0.5] }", "trials = 2", "search.space.methods.limaml.inner_lr"),
        ("\"methods.limaml.inner_lr\" = { loguniform = [0.0, 1.0] }", "trials = 2", "search.space.methods.limaml.inner_lr"),
        ("\"methods.limaml.inner_steps\" = { int = [3, 1] }", "trials = 2", "search.space.methods.limaml.inner_steps"),
        ("\"methods.limaml.inner_lr\" = { uniform = [0.1, 1.0] }", "trials = 0", "search.trials"),
        ("\"methods.limaml.inner_lr\" = { uniform = [0.1, 1.0] }", "trials = 2\nobjective = \"test.auc\"", "search.objective"),
    ];
    for (entry, budget, key) in cases {
        let ws = Workspace::new();
        ws.write("bad.toml", &format!("{TINY_SPEC}\n[search]\n{budget}\n\n[search.space]\n{entry}\n"));
        let output = ws.run(&["plan", "bad.toml"]);
        assert_eq!(output.status.code(), Some(2), "{entry}: {}", stderr(&output));
        assert!(stderr(&output).contains(key), "{entry}: the error names {key}: {}", stderr(&output));
    }
}

#[test]
fn a_model_resumed_to_more_epochs_keeps_its_first_epochs_and_trains_only_the_rest() {
    use limaml_data::{DataConfig, DataSource, SplitConfig, SyntheticConfig};
    use limaml_models::{MethodConfig, TrainConfig};
    let config = DataConfig {
        source: DataSource::Synthetic,
        synthetic: SyntheticConfig { seed: 3, n_users: 80, n_items: 40, ..SyntheticConfig::default() },
        ..DataConfig::default()
    };
    let dataset = limaml_data::load(&config, std::path::Path::new(".")).unwrap();
    let tasks = limaml_data::slice(&dataset, &SplitConfig::default(), 1).unwrap();
    let method = MethodConfig::default_for("global").unwrap();
    let budget = |epochs| TrainConfig { epochs, patience: 10, ..TrainConfig::default() };
    let mut epochs_run = Vec::new();
    let prior = limaml_models::train(&method, &budget(1), &dataset.interactions, &tasks, 5, &mut |_| {}).unwrap();
    let resumed = limaml_models::resume(&prior, &budget(3), &dataset.interactions, &tasks, &mut |r| epochs_run.push(r.epoch))
        .unwrap();
    assert_eq!(epochs_run, [2, 3], "only the epochs beyond the first are trained");
    assert_eq!(resumed.curve.len(), 3);
    assert_eq!(resumed.curve[0], prior.curve[0]);
    // A model already at its budget comes back as it is.
    let same = limaml_models::resume(&resumed, &budget(3), &dataset.interactions, &tasks, &mut |_| panic!("trained")).unwrap();
    assert_eq!(same.weights, resumed.weights);
}
