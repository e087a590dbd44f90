//! Terminal tables (comfy-table) for run summaries, run lists and single runs.

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};

use crate::exec::RunOutcome;
use crate::store::{RunRecord, StageStatus};

fn new_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    // Off a terminal, fit $COLUMNS (else 80) columns.
    if !table.is_tty() {
        table.set_width(super::table::terminal_width() as u16);
    }
    table
}

fn number(value: Option<f64>, std: Option<f64>) -> Cell {
    let text = match (value, std) {
        (Some(v), Some(s)) if s > 0.0 => format!("{v:.4} ± {s:.4}"),
        (Some(v), _) => format!("{v:.4}"),
        _ => "—".into(),
    };
    Cell::new(text).set_alignment(CellAlignment::Right)
}

/// The metrics a summary shows by default.
pub const DEFAULT_METRICS: [&str; 3] = ["auc", "gauc", "logloss"];

/// A method summary's value of `metric` and its std: `auc` overall, `low.auc` per segment or
/// state, `window2.auc` per window, `validation.auc` on the validation tasks.
fn summary_value(summary: &serde_json::Value, metric: &str) -> (Option<f64>, Option<f64>) {
    let block = match metric.rsplit_once('.') {
        None => Some(summary),
        Some(("validation", _)) => summary.get("validation"),
        Some((slice, _)) => ["segments", "states"]
            .iter()
            .find_map(|group| summary.get(*group).and_then(|g| g.get(slice)))
            .or_else(|| slice.strip_prefix("window").and_then(|w| summary.get("windows").and_then(|g| g.get(w)))),
    };
    let name = metric.rsplit_once('.').map_or(metric, |(_, m)| m);
    let get = |k: &str| block.and_then(|b| b.get(k)).and_then(|v| v.as_f64());
    (get(name), get(&format!("{name}_std")))
}

/// Per-method `metrics` (mean ± std over seeds; `report.metrics` of the spec), with the lift
/// over `baseline` in AUC.
pub fn methods_table(methods: &serde_json::Value, baseline: Option<&str>, metrics: &[String]) -> Option<Table> {
    let methods = methods.as_object().filter(|m| !m.is_empty())?;
    let mut header: Vec<&str> = vec!["method"];
    header.extend(metrics.iter().map(String::as_str));
    header.push("seeds");
    let baseline_auc = baseline.and_then(|b| methods.get(b)).and_then(|m| m.get("auc")).and_then(|v| v.as_f64());
    if baseline_auc.is_some() {
        header.push("AUC lift");
    }
    let mut table = new_table(header);
    for (label, summary) in methods {
        let mut row = vec![Cell::new(label)];
        for metric in metrics {
            let (value, std) = summary_value(summary, metric);
            row.push(number(value, std));
        }
        row.push(Cell::new(summary.get("n").and_then(|v| v.as_u64()).unwrap_or(0)).set_alignment(CellAlignment::Right));
        if let Some(base) = baseline_auc {
            let lift = summary
                .get("auc")
                .and_then(|v| v.as_f64())
                .map(|auc| format!("{:+.2}%", 100.0 * (auc - base) / base))
                .unwrap_or_else(|| "—".into());
            row.push(Cell::new(lift).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    Some(table)
}

/// The end-of-run summary: stage counts, failures, then the methods table.
pub fn run_summary(outcome: &RunOutcome, baseline: Option<&str>, metrics: &[String]) -> String {
    let mut text = format!(
        "run {} ({}): {:?}; {} executed, {} cached, {} failed, {} skipped in {:.2}s\n",
        outcome.run_id,
        outcome.experiment,
        outcome.status,
        outcome.executed,
        outcome.cached,
        outcome.failed,
        outcome.skipped,
        outcome.seconds
    )
    .to_lowercase();
    for stage in outcome.stages.iter().filter(|s| s.status == StageStatus::Failed) {
        text.push_str(&format!("FAILED {}: {}\n", stage.name, stage.error.as_deref().unwrap_or("")));
    }
    for warning in &outcome.data_warnings {
        text.push_str(&format!("warning: data: {}\n", warning.message));
    }
    if let Some(table) = methods_table(&outcome.methods, baseline, metrics) {
        text.push_str(&format!("{table}\n"));
    }
    text
}

/// One line per run, fitting 80 columns: the id (never wrapped, so it can be copied), the
/// experiment, status and wall time, stages run/cached/failed, and the start (UTC).
pub fn runs_table(runs: &[RunRecord]) -> Table {
    let mut table = new_table(vec!["run", "experiment", "status", "stages r/c/f", "started (UTC)"]);
    for run in runs {
        let count = |s: StageStatus| run.stages.iter().filter(|x| x.status == s).count();
        let started = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(run.started_unix_ms),
        )
        .to_string();
        // 2026-12-01T23:15:40Z -> 12-01 23:15
        let started = started.get(5..16).map_or(started.clone(), |s| s.replace('T', " "));
        let seconds = run
            .finished_unix_ms
            .map(|f| format!(" {:.0}s", (f.saturating_sub(run.started_unix_ms)) as f64 / 1000.0))
            .unwrap_or_default();
        table.add_row(vec![
            Cell::new(&run.id),
            Cell::new(&run.experiment),
            Cell::new(format!("{}{seconds}", format!("{:?}", run.status).to_lowercase())),
            Cell::new(format!(
                "{}/{}/{}",
                count(StageStatus::Executed),
                count(StageStatus::Cached),
                count(StageStatus::Failed)
            )),
            Cell::new(started),
        ]);
    }
    if let Some(column) = table.column_mut(0) {
        column.set_constraint(comfy_table::ColumnConstraint::ContentWidth);
    }
    table
}

pub fn stages_table(run: &RunRecord) -> Table {
    let mut table = new_table(vec!["stage", "key", "status", "seconds", "error"]);
    for stage in &run.stages {
        table.add_row(vec![
            Cell::new(&stage.name),
            Cell::new(&stage.key[..12]),
            Cell::new(format!("{:?}", stage.status).to_lowercase()),
            Cell::new(format!("{:.2}", stage.seconds)),
            Cell::new(stage.error.as_deref().unwrap_or("")),
        ]);
    }
    table
}
