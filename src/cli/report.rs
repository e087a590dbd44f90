//! `limaml report RUN... [--out DIR]`: one self-contained HTML page over the chosen runs: the
//! comparison table, ranking and calibration, per-user tests, AUC by segment and learning
//! curves. The numbers come from the same rows as `compare`.

use std::path::Path;
use std::process::ExitCode;

use limaml::report::compare::{self, TableOptions};
use limaml::report::{html, plots, ranking_tables, reproduce};

use super::commands::{find_run, open_reader};
use super::{failed, Failure};

pub fn report_command(store_path: &Path, ids: &[String], out: Option<&Path>) -> Result<ExitCode, Failure> {
    let store = open_reader(store_path)?;
    let ids: Vec<String> = if ids.is_empty() { vec!["last".into()] } else { ids.to_vec() };
    let mut runs = Vec::new();
    for id in &ids {
        runs.push(find_run(&store, id)?);
    }
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| Path::new("runs/reports").join(&runs[0].id));
    let observations = compare::collect(&store, &runs)?;
    let baseline = observations.iter().any(|o| o.method == "global").then_some("global");
    let rows = compare::group(&observations, baseline);
    let wanted = ["auc", "gauc", "logloss", "ndcg@10", "full_ndcg@10", "ece"];
    let metrics: Vec<String> =
        wanted.iter().filter(|m| rows.iter().any(|r| r.metrics.contains_key(**m))).map(|m| m.to_string()).collect();
    let options = TableOptions { metrics: &metrics, baseline, only_changed: true, compact: false };
    let title = format!("{} run(s): {}", runs.len(), runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "));
    let mut tables = vec![
        ("comparison".to_string(), compare::comparison_table(&title, &rows, &options)),
        ("ranking".to_string(), ranking_tables::ranking_table("Ranking and calibration", &rows)),
    ];
    for run in &runs {
        tables.push((
            format!("tests-{}", run.id),
            ranking_tables::significance_table(&format!("Per-user paired tests, run {}", run.id), &rows, &run.metrics),
        ));
    }
    let mut figures = Vec::new();
    let (segments, _) = reproduce::segment_names(&rows);
    let segment_plot = out.join("comparison").join("auc-by-segment.svg");
    std::fs::create_dir_all(out.join("comparison")).map_err(failed)?;
    plots::segment_auc(&segment_plot, &rows, &segments).map_err(failed)?;
    if segment_plot.exists() {
        figures.push(segment_plot);
    }
    let curves = reproduce::learning_curves(&store, &runs[0])?;
    let curve_plot = out.join("comparison").join("learning-curves.svg");
    plots::line_chart(&curve_plot, "Validation AUC per epoch (mean over seeds, band: min to max)", "epoch", "validation AUC", &curves, None)
        .map_err(failed)?;
    if curve_plot.exists() {
        figures.push(curve_plot);
    }
    let page = html::write_index(&out, &format!("limaml report: {title}"), &tables, &figures)
        .map_err(|e| Failure::Failed(format!("writing {}: {e}", out.display())))?;
    println!("{}", page.display());
    Ok(ExitCode::SUCCESS)
}
