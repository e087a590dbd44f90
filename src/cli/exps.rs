//! `limaml exps` (one row per run and configuration, like `dvc exp show`), `limaml diff RUN RUN`
//! (two runs side by side) and `limaml new NAME` (a commented starter spec). Read the store
//! through the same comparison rows as `compare`; write nothing but the new spec.

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;
use std::process::ExitCode;

use limaml::report::compare::{self, Row};
use limaml::report::table::{Format, TableData};

use super::commands::{find_run, open_reader};
use super::Failure;

pub fn exps_command(store_path: &Path, experiment: Option<&str>, metrics: &[String], format: Format) -> Result<ExitCode, Failure> {
    let store = open_reader(store_path)?;
    let runs: Vec<_> = store.runs()?.into_iter().filter(|r| experiment.is_none_or(|e| r.experiment == e)).collect();
    if runs.is_empty() {
        return Err(Failure::BadInput(match experiment {
            Some(e) => format!("--experiment {e}: no run of that experiment; `limaml runs` lists them"),
            None => "the store has no runs".into(),
        }));
    }
    // Per run, its rows (its own seeds grouped); the parameters that differ across all of them.
    let mut groups = Vec::new();
    for run in &runs {
        groups.push((run, compare::group(&compare::collect(&store, std::slice::from_ref(run))?, None)));
    }
    let all: Vec<Row> = groups.iter().flat_map(|(_, rows)| rows.iter().cloned()).collect();
    let changed = compare::changed_parameters(&all);
    let mut header = vec!["run".to_string(), "method".to_string()];
    header.extend(changed.iter().cloned());
    header.extend(metrics.iter().cloned());
    let mut table = TableData { title: format!("{} run(s)", runs.len()), header, ..Default::default() };
    for (run, rows) in &groups {
        for (i, row) in rows.iter().enumerate() {
            // The run's id on its first row only (whole, so it can be copied), the rest blank.
            let mut cells = vec![if i == 0 { run.id.clone() } else { String::new() }, row.label.clone()];
            cells.extend(changed.iter().map(|k| row.params.get(k).cloned().unwrap_or_else(|| "—".into())));
            cells.extend(metrics.iter().map(|m| row.metrics.get(m).map_or("—".into(), |s| format!("{:.4}", s.mean))));
            table.push(cells, row.stage_keys.clone());
        }
    }
    for (run, _) in &groups {
        let overrides = if run.overrides.is_empty() { String::new() } else { format!(", --set {}", run.overrides.join(" --set ")) };
        table.notes.push(format!("{}: {}{overrides}", run.id, run.experiment));
    }
    print!("{}", table.render(format, false));
    Ok(ExitCode::SUCCESS)
}

pub fn diff_command(store_path: &Path, a: &str, b: &str) -> Result<ExitCode, Failure> {
    let store = open_reader(store_path)?;
    let (run_a, run_b) = (find_run(&store, a)?, find_run(&store, b)?);
    let rows = |run: &limaml::store::RunRecord| -> Result<BTreeMap<String, Row>, Failure> {
        Ok(compare::group(&compare::collect(&store, std::slice::from_ref(run))?, None).into_iter().map(|r| (r.label.clone(), r)).collect())
    };
    let (rows_a, rows_b) = (rows(&run_a)?, rows(&run_b)?);
    println!("a: {} ({}) {}", run_a.id, run_a.experiment, run_a.overrides.join(" "));
    println!("b: {} ({}) {}", run_b.id, run_b.experiment, run_b.overrides.join(" "));
    let mut table = TableData::new("", vec!["method", "what", "a", "b", "b - a"]);
    let labels: BTreeSet<&String> = rows_a.keys().chain(rows_b.keys()).collect();
    for label in labels {
        let (ra, rb) = (rows_a.get(label), rows_b.get(label));
        let params: BTreeSet<&String> = ra.iter().chain(rb.iter()).flat_map(|r| r.params.keys()).collect();
        for key in params {
            let (va, vb) = (ra.and_then(|r| r.params.get(key)), rb.and_then(|r| r.params.get(key)));
            if va != vb {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "—".into());
                table.push(vec![label.clone(), key.clone(), show(va), show(vb), String::new()], Vec::new());
            }
        }
        let metrics: BTreeSet<&String> = ra.iter().chain(rb.iter()).flat_map(|r| r.metrics.keys()).filter(|m| !m.contains('.')).collect();
        for metric in metrics {
            let (ma, mb) = (ra.and_then(|r| r.metrics.get(metric)), rb.and_then(|r| r.metrics.get(metric)));
            let show = |s: Option<&compare::Summary>| s.map_or("—".into(), |s| format!("{:.4}", s.mean));
            let delta = match (ma, mb) {
                (Some(x), Some(y)) => format!("{:+.4}", y.mean - x.mean),
                _ => "—".into(),
            };
            table.push(vec![label.clone(), metric.clone(), show(ma), show(mb), delta], Vec::new());
        }
    }
    print!("{}", table.render(Format::Terminal, false));
    Ok(ExitCode::SUCCESS)
}

const STARTER: &str = r#"# NAME: a starter spec. `limaml plan experiments/NAME.toml` shows the stages; `limaml run`
# runs them. Every key is documented in README.md ("Specs", "Metrics", "Methods").
[experiment]
name = "NAME"
description = "What this experiment asks."
seeds = [1, 2, 3]               # one full set of stages per seed

[data]
source = "synthetic"            # or "movielens" (path = "../../shared/data/ml-100k", or $LIMAML_DATA), "csv"

[data.synthetic]
n_users = 2000
n_items = 300
mean_interactions = 30

[split]
setting = "warm"                # "warm" (time split per user), "cold", "prefix", "deployment"

[train]
epochs = 10                     # early stopping on validation AUC keeps the best epoch

[methods.global]
kind = "global"

[methods.id_embedding]
kind = "id_embedding"

[methods.limaml]
kind = "limaml"                 # MAML over a Meta Block; its output is the meta embedding

[report]
baseline = "global"
metrics = ["auc", "gauc", "ndcg@10"]   # any registry metric, or <slice>.<metric> (low.auc)
ks = [5, 10, 20]

# [sweep]                       # a grid over dotted paths: one cell per combination
# "methods.limaml.inner_steps" = [1, 3]
"#;

pub fn new_command(name: &str, dir: &Path) -> Result<ExitCode, Failure> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Failure::BadInput(format!("`{name}`: a name is letters, digits, - and _")));
    }
    let path = dir.join(format!("{name}.toml"));
    if path.exists() {
        return Err(Failure::BadInput(format!("{} exists; choose another name", path.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| Failure::BadInput(format!("{}: {e}", dir.display())))?;
    std::fs::write(&path, STARTER.replace("NAME", name)).map_err(|e| Failure::Failed(format!("{}: {e}", path.display())))?;
    // The starter must itself be a valid spec.
    limaml::spec::load(&path, &[])?;
    println!("wrote {}; try `limaml plan {}`", path.display(), path.display());
    Ok(ExitCode::SUCCESS)
}
