//! What users read: `compare` tables in every format, and `reproduce` writing every table,
//! then recomputing nothing on a second call.

mod common;
use common::{stderr, stdout, Workspace, TINY_SPEC};

fn two_seed_spec() -> String {
    TINY_SPEC.replace("seeds = [1]", "seeds = [1, 2]")
}

#[test]
fn compare_groups_seeds_and_prints_csv_that_parses() {
    let ws = Workspace::new();
    ws.write("two.toml", &two_seed_spec());
    ws.run_json("two.toml", &[]);
    let output = ws.run(&["compare", "--last", "1", "--format", "csv", "--baseline", "global"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    for column in ["auc", "auc_std", "auc_ci_low", "auc_ci_high", "auc_n", "auc_seed1", "auc_seed2", "delta_auc", "delta_auc_ci_low"] {
        assert!(header.iter().any(|h| h == column), "{column}: {header:?}");
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    // Every metric column is a number (or empty where undefined, as the baseline's own Δ).
    let numeric: Vec<usize> =
        header.iter().enumerate().filter(|(_, h)| h.starts_with("auc") || h.starts_with("delta_")).map(|(i, _)| i).collect();
    for row in &rows {
        for &i in &numeric {
            assert!(row[i].is_empty() || row[i].parse::<f64>().is_ok(), "{} = {:?}", &header[i], &row[i]);
        }
    }
    let global = rows.iter().find(|r| &r[0] == "global").unwrap();
    let auc = header.iter().position(|h| h == "auc").unwrap();
    assert!(global[auc].parse::<f64>().unwrap() > 0.0);
    let labels: Vec<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(labels, vec!["global", "limaml", "oracle"]);
    let n = header.iter().position(|h| h == "n").unwrap();
    assert!(rows.iter().all(|r| &r[n] == "2"), "seeds grouped into one row each");
}

#[test]
fn compare_json_parses_and_links_rows_to_stage_keys() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let output = ws.run(&["compare", "--format", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let rows = value["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["stage_keys"].as_array().is_some_and(|k| !k.is_empty())));
}

#[test]
fn compare_warns_when_fewer_than_three_seeds() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    let output = ws.run(&["compare"]);
    assert!(stdout(&output).contains("fewer than 3 seeds"), "{}", stdout(&output));
}

#[test]
fn compare_only_changed_shows_the_parameter_that_differs_between_runs() {
    let ws = Workspace::new();
    ws.run_json("tiny.toml", &[]);
    ws.run_json("tiny.toml", &["--set", "methods.limaml.inner_lr=0.05"]);
    let output = ws.run(&["compare", "--last", "2", "--only-changed", "--filter", "method=limaml", "--format", "csv"]);
    let text = stdout(&output);
    assert!(text.lines().next().unwrap().contains("method.inner_lr"), "{text}");
    assert_eq!(text.lines().count(), 3, "two limaml configurations: {text}");
}

/// Small stand-ins for experiments/paper: synthetic data, two seeds, tiny sweeps.
fn write_paper_specs(ws: &Workspace) {
    std::fs::create_dir_all(ws.path().join("paper")).unwrap();
    let common = "[experiment]\nname = \"p\"\nseeds = [1, 2]\n[data]\nsource = \"synthetic\"\n[data.synthetic]\nn_users = 80\nn_items = 40\nmean_interactions = 20\n[train]\nepochs = 2\n[split]\nfreshness_fraction = 0.5\n";
    ws.write("paper/common.toml", common);
    let methods = "[methods.global]\nkind = \"global\"\nhidden = [8]\n[methods.id_embedding]\nkind = \"id_embedding\"\nhidden = [8]\n[methods.wide_deep]\nkind = \"wide_deep\"\nhidden = [8]\n[methods.limaml]\nkind = \"limaml\"\nhidden = [8]\n";
    ws.write("paper/main.toml", &format!("include = [\"common.toml\"]\n{methods}[report]\nbaseline = \"global\"\nfreshness = true\nserving_cost = true\n"));
    ws.write("paper/synthetic.toml", &format!("include = [\"common.toml\"]\n{methods}"));
    ws.write(
        "paper/ml-100k-prefix.toml",
        &format!("include = [\"common.toml\"]\n{methods}[split]\nsetting = \"prefix\"\nprefix_rows = 5\n[sweep]\n\"split.prefix_rows\" = [3, 5]\n"),
    );
    ws.write(
        "paper/deployment-retrained.toml",
        &format!("include = [\"common.toml\"]\n{methods}[split]\nsetting = \"deployment\"\ndeployment_cuts = [0.6, 0.8]\n[sweep]\n\"split.deployment_retrain_window\" = [2]\n"),
    );
    ws.write(
        "paper/deployment.toml",
        &format!("include = [\"common.toml\"]\n{methods}[split]\nfreshness_fraction = 0.5\nsetting = \"deployment\"\ndeployment_cuts = [0.6, 0.8]\n[report]\nbaseline = \"global\"\n"),
    );
    for (file, parameter, values) in [
        ("ablation-meta-embedding-size.toml", "meta_embedding_dim", "[4, 16]"),
        ("ablation-inner-steps.toml", "inner_steps", "[0, 3]"),
        ("ablation-order.toml", "second_order", "[false, true]"),
        ("ablation-meta-inputs.toml", "meta_inputs", "[[\"id\", \"features\", \"activity\"], [\"activity\"]]"),
        ("ablation-meta-interaction.toml", "meta_interaction", "[\"concat\", \"dot\"]"),
        ("ablation-meta-interaction-synthetic.toml", "meta_interaction", "[\"concat\", \"dot\"]"),
        ("ablation-outer-rows.toml", "outer_rows", "[\"support_and_query\", \"cross_halves\"]"),
        ("ablation-inner-prior-rows.toml", "inner_prior_rows", "[0.0, 50.0]"),
    ] {
        ws.write(
            &format!("paper/{file}"),
            &format!("include = [\"common.toml\"]\n[methods.limaml]\nkind = \"limaml\"\nhidden = [8]\n[sweep]\n\"methods.limaml.{parameter}\" = {values}\n"),
        );
    }
}

#[test]
fn reproduce_writes_every_table_in_every_format_and_recomputes_nothing_the_second_time() {
    let ws = Workspace::new();
    write_paper_specs(&ws);
    let output = ws.run(&["reproduce", "--specs", "paper", "--out", "reports"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let reports = ws.path().join("reports");
    let tables = ["1-main", "1b-ranking", "1c-per-user-tests", "2a-segments", "2b-warm-cold", "3a-meta-embedding-size", "3b-inner-steps", "3c-order", "3d-meta-inputs", "3e-freshness", "3f-meta-interaction", "3g-meta-interaction-synthetic", "3h-outer-rows", "3i-inner-prior-rows", "4-serving", "5-synthetic", "5b-synthetic-ranking", "5c-synthetic-per-user-tests", "6a-deployment-windows", "6b-deployment-states", "6c-prefix", "6d-deployment-cost", "6e-deployment-retrained"];
    for table in tables {
        let folder = reports.join(table);
        for file in ["table.md", "table.csv", "table.tex", "table.json", "manifest.json"] {
            assert!(folder.join(file).exists(), "{table}/{file}");
        }
        let csv_text = std::fs::read_to_string(folder.join("table.csv")).unwrap();
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let width = reader.headers().unwrap().len();
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert!(!rows.is_empty(), "{table} has rows");
        assert!(rows.iter().all(|r| r.len() == width), "{table}: ragged csv");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(folder.join("table.json")).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), rows.len());
        let tex = std::fs::read_to_string(folder.join("table.tex")).unwrap();
        assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"));
        assert_eq!(tex.lines().filter(|l| l.ends_with("\\\\")).count(), rows.len() + 1, "{table}: header + rows");
    }
    // One page with every table and plot.
    let page = std::fs::read_to_string(reports.join("index.html")).unwrap();
    for table in tables {
        assert!(page.contains(&format!("<section id=\"{table}\">")), "{table} in index.html");
    }
    assert!(page.matches("<svg").count() >= 4, "plots inlined");
    let main_csv = std::fs::read_to_string(reports.join("1-main/table.csv")).unwrap();
    for method in ["global", "id_embedding", "wide_deep", "limaml", "oracle"] {
        assert!(main_csv.lines().any(|l| l.starts_with(method)), "{method} in main table");
    }
    let freshness = std::fs::read_to_string(reports.join("3e-freshness/table.csv")).unwrap();
    for row in ["all support rows (latest)", "newest part", "oldest part"] {
        assert!(freshness.contains(row), "{row} in the freshness table: {freshness}");
    }
    let ablation = std::fs::read_to_string(reports.join("3b-inner-steps/table.csv")).unwrap();
    assert!(ablation.contains("inner_steps=0") && ablation.contains("inner_steps=3 (default)"), "{ablation}");

    for plot in ["1-main/learning-curves.svg", "3b-inner-steps/auc.svg", "6a-deployment-windows/auc-by-window.svg"] {
        let svg = std::fs::read_to_string(reports.join(plot)).unwrap_or_else(|e| panic!("{plot}: {e}"));
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{plot} draws lines");
    }
    // Activity segments are categories: bars, not lines.
    let bars = std::fs::read_to_string(reports.join("2a-segments/auc-by-segment.svg")).unwrap();
    assert!(bars.matches("<rect").count() >= 6, "segments drawn as bars (one per method and segment)");

    let again = ws.run(&["reproduce", "--specs", "paper", "--out", "reports"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(!stderr(&again).contains("  start "), "nothing runs again: {}", stderr(&again));
    assert_eq!(stdout(&again).lines().filter(|l| l.contains("Table")).count(), stdout(&output).lines().filter(|l| l.contains("Table")).count());
}
