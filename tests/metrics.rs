//! Ranking metrics, significance tests and exports as users see them: in `run --json`, in
//! `compare --metrics` and `report.metrics`, and in `limaml export`'s files, which an
//! independent Python implementation recomputes.

mod common;
use common::{stderr, stdout, Workspace, TINY_SPEC};

fn two_seed_spec() -> String {
    TINY_SPEC.replace("seeds = [1]", "seeds = [1, 2]")
}

#[test]
fn run_json_carries_ranking_calibration_and_catalogue_metrics_beside_auc() {
    let ws = Workspace::new();
    let (output, json) = ws.run_json("tiny.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for method in ["global", "limaml"] {
        let m = &json["methods"][method];
        for name in ["auc", "gauc", "logloss", "ndcg@10", "recall@10", "mrr", "ndcg@5", "hr@20", "map@10", "precision@10", "ece", "ne", "gauc_uniform", "gauc_positives", "full_ndcg@10", "full_recall@10", "full_mrr"] {
            assert!(m[name].is_f64(), "{method}.{name} missing: {m}");
        }
        assert!(m["segments"]["low"]["ndcg@10"].is_f64(), "per segment");
        assert!(m["chance"]["hr@5"].is_f64(), "chance levels");
        let (ndcg, full) = (m["ndcg@10"].as_f64().unwrap(), m["full_ndcg@10"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&ndcg) && (0.0..=1.0).contains(&full));
    }
    // The oracle knows no unobserved pair: query metrics only.
    assert!(json["methods"]["oracle"]["full_ndcg@10"].is_null());
    let tests = &json["methods"]["limaml"]["significance"];
    assert_eq!(tests["baseline"], "global");
    for metric in ["auc", "ndcg@10", "full_ndcg@10"] {
        let p = tests[metric]["wilcoxon_p"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p) && tests[metric]["t_p_holm"].as_f64().unwrap() >= tests[metric]["t_p"].as_f64().unwrap());
    }
}

#[test]
fn the_cut_offs_and_gauc_weighting_come_from_the_report_table() {
    let ws = Workspace::new();
    let spec = TINY_SPEC.to_string() + "\n[report]\nks = [3]\ngauc_weighting = \"uniform\"\ncatalogue = false\nmetrics = [\"ndcg@3\", \"low.auc\"]\n";
    ws.write("k3.toml", &spec);
    let (output, json) = ws.run_json("k3.toml", &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let m = &json["methods"]["global"];
    assert!(m["ndcg@3"].is_f64() && m["ndcg@10"].is_null() && m["full_mrr"].is_null(), "{m}");
    assert_eq!(m["gauc"], m["gauc_uniform"]);
}

#[test]
fn an_unknown_metric_in_the_spec_names_the_field_and_exits_2() {
    let ws = Workspace::new();
    let spec = TINY_SPEC.to_string() + "\n[report]\nmetrics = [\"ndcg@7\"]\n";
    ws.write("bad.toml", &spec);
    let output = ws.run(&["plan", "bad.toml"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("report.metrics") && stderr(&output).contains("ndcg@7"), "{}", stderr(&output));
}

#[test]
fn compare_shows_any_reported_metric_per_slice_and_refuses_unknown_ones() {
    let ws = Workspace::new();
    ws.write("two.toml", &two_seed_spec());
    ws.run_json("two.toml", &[]);
    let output = ws.run(&["compare", "--metrics", "ndcg@10,low.auc,full_mrr,ece", "--format", "csv"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let header = text.lines().next().unwrap();
    assert!(header.contains("ndcg@10") && header.contains("low.auc") && header.contains("full_mrr"), "{header}");
    let global = text.lines().find(|l| l.starts_with("global")).unwrap();
    assert!(!global.contains(",—,"), "every metric has a value: {global}");
    let output = ws.run(&["compare", "--metrics", "ndgc@10"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("did you mean `ndcg@10`"), "{}", stderr(&output));
}

#[test]
fn compare_flags_a_metric_that_saturates_by_construction() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    // Tiny query sets: HR@20 is 1 under any order.
    let output = ws.run(&["compare", "--metrics", "hr@20"]);
    let text = stdout(&output);
    assert!(text.contains('‡') && text.contains("saturated by construction"), "{text}");
}

#[test]
fn show_json_lists_each_stages_artifacts() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let output = ws.run(&["show", "last", "--json"]);
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let evaluate = run["stages"].as_array().unwrap().iter().find(|s| s["kind"] == "evaluate").unwrap();
    let names: Vec<&str> = evaluate["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["per_task", "predictions"]);
    let embeddings = run["stages"].as_array().unwrap().iter().find(|s| s["kind"] == "export_embeddings").unwrap();
    let tensors =
        embeddings["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "meta_embeddings.safetensors").unwrap();
    assert_eq!(tensors["format"], "safetensors");
    assert!(tensors["bytes"].as_u64().unwrap() > 0 && tensors["digest"].as_str().unwrap().len() == 64);
}

#[test]
fn exported_predictions_reproduce_auc_gauc_and_ndcg_in_an_independent_implementation() {
    if !common::required_tool("python3") {
        return;
    }
    let ws = Workspace::new();
    ws.write("two.toml", &two_seed_spec());
    let (_, json) = ws.run_json("two.toml", &[]);
    let run_json = ws.write("run.json", &json.to_string());
    let out = ws.path().join("export");
    let output = ws.run(&["export", "last", "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for file in ["predictions.csv", "per_user_metrics.csv", "manifest.json", "meta_embeddings/limaml_seed1.csv", "meta_embeddings/limaml_seed2.safetensors"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/check_metrics.py");
    let check = std::process::Command::new("python3").args([script, out.to_str().unwrap(), run_json.to_str().unwrap()]).output().unwrap();
    assert!(check.status.success(), "{}{}", stdout(&check), stderr(&check));
    // Three methods (global, limaml, oracle) x two seeds x three metrics.
    assert!(stdout(&check).contains("checked 18 numbers"), "{}", stdout(&check));
}

#[test]
fn the_exported_per_user_table_has_one_row_per_test_user_and_every_metric() {
    let ws = Workspace::new();
    let (_, json) = ws.run_json("tiny.toml", &[]);
    let out = ws.path().join("export");
    ws.run(&["export", "last", "--out", out.to_str().unwrap()]);
    let mut reader = csv::Reader::from_path(out.join("per_user_metrics.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    for column in ["user", "segment", "state", "auc", "ndcg@10", "full_ndcg@10", "mrr"] {
        assert!(header.iter().any(|h| h == column), "{column}: {header:?}");
    }
    let global_rows = reader.records().filter(|r| r.as_ref().unwrap().get(1) == Some("global")).count();
    assert_eq!(global_rows as u64, json["methods"]["global"]["per_seed"]["1"]["tasks"].as_u64().unwrap());
}

#[test]
fn export_of_an_unknown_run_is_bad_input() {
    let ws = Workspace::new();
    let output = ws.run(&["export", "nope"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
