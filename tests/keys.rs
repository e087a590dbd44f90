//! Stage keys: stable for the same spec, blind to parameters that cannot change results,
//! sensitive to those that can, and shared across methods, seeds and sweep cells.

mod common;
use std::collections::BTreeMap;

use common::{stderr, Workspace};

fn keys(ws: &Workspace, spec: &str, overrides: &[&str]) -> BTreeMap<String, String> {
    let mut args = vec!["plan", spec, "--json"];
    for o in overrides {
        args.push("--set");
        args.push(o);
    }
    let output = ws.run(&args);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("plan --json");
    json["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["key"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn the_same_spec_gives_the_same_keys() {
    let ws = Workspace::new();
    assert_eq!(keys(&ws, "tiny.toml", &[]), keys(&ws, "tiny.toml", &[]));
}

#[test]
fn runtime_settings_do_not_change_any_key() {
    let ws = Workspace::new();
    let before = keys(&ws, "tiny.toml", &[]);
    let after = keys(&ws, "tiny.toml", &["runtime.jobs=7", "runtime.log_level=debug", "runtime.progress=false"]);
    assert_eq!(before, after);
}

#[test]
fn a_training_parameter_changes_training_keys_but_not_data_keys() {
    let ws = Workspace::new();
    let before = keys(&ws, "tiny.toml", &[]);
    let after = keys(&ws, "tiny.toml", &["methods.limaml.inner_lr=0.05"]);
    assert_eq!(before["data"], after["data"]);
    assert_eq!(before["tasks/seed=1"], after["tasks/seed=1"]);
    assert_eq!(before["train/global/seed=1"], after["train/global/seed=1"]);
    assert_ne!(before["train/limaml/seed=1"], after["train/limaml/seed=1"]);
    assert_ne!(before["evaluate/limaml/seed=1"], after["evaluate/limaml/seed=1"]);
}

#[test]
fn a_data_parameter_changes_every_downstream_key() {
    let ws = Workspace::new();
    let before = keys(&ws, "tiny.toml", &[]);
    let after = keys(&ws, "tiny.toml", &["data.synthetic.n_users=90"]);
    for (name, key) in &before {
        assert_ne!(after.get(name), Some(key), "{name} kept its key");
    }
}

#[test]
fn seeds_share_one_data_load_and_slice_once_each() {
    let ws = Workspace::new();
    let stages = keys(&ws, "tiny.toml", &["experiment.seeds=[1, 2, 3]"]);
    let count = |prefix: &str| stages.keys().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(count("data"), 1);
    assert_eq!(count("tasks/"), 3);
    assert_eq!(count("train/"), 6);
}

#[test]
fn a_sweep_over_a_method_parameter_shares_upstream_stages() {
    let ws = Workspace::new();
    let spec = format!("{}\n[sweep]\n\"methods.limaml.meta_embedding_dim\" = [2, 4, 8]\n", common::TINY_SPEC);
    ws.write("sweep.toml", &spec);
    let stages = keys(&ws, "sweep.toml", &[]);
    let count = |prefix: &str| stages.keys().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(count("data"), 1);
    assert_eq!(count("tasks/"), 1);
    assert_eq!(count("train/global"), 1, "{stages:?}");
    assert_eq!(count("train/limaml"), 3, "{stages:?}");
    assert!(stages.contains_key("train/limaml[methods.limaml.meta_embedding_dim=8]/seed=1"), "{stages:?}");
}

#[test]
fn source_data_content_not_path_enters_the_key() {
    let ws = Workspace::new();
    let csv = "user,item,label,timestamp\n1,10,1,100\n1,11,0,101\n1,12,1,102\n1,13,0,103\n1,14,1,104\n2,10,0,100\n2,11,1,101\n2,12,0,102\n2,13,1,103\n2,14,0,104\n";
    std::fs::create_dir_all(ws.path().join("a")).unwrap();
    std::fs::create_dir_all(ws.path().join("b")).unwrap();
    std::fs::write(ws.path().join("a/log.csv"), csv).unwrap();
    std::fs::write(ws.path().join("b/log.csv"), csv).unwrap();
    let spec = "[experiment]\nname = \"csv\"\n[data]\nsource = \"csv\"\npath = \"a/log.csv\"\n[data.csv]\nlabel = \"label\"\n[methods.g]\nkind = \"global\"\n";
    ws.write("csv.toml", spec);
    let in_a = keys(&ws, "csv.toml", &[]);
    let in_b = keys(&ws, "csv.toml", &["data.path=b/log.csv"]);
    assert_eq!(in_a["data"], in_b["data"], "same bytes elsewhere must keep the key");
    std::fs::write(ws.path().join("b/log.csv"), csv.replace("1,14,1,104", "1,14,0,104")).unwrap();
    let changed = keys(&ws, "csv.toml", &["data.path=b/log.csv"]);
    assert_ne!(in_a["data"], changed["data"], "different bytes must change the key");
}
