//! `limaml reproduce`: run every spec under `experiments/paper/` on one store (so they share
//! cached stages), then build the paper-style tables from the stage records and write each as
//! Markdown, CSV, LaTeX and JSON with a manifest linking cells to stage keys.
//! Owns the tables' shapes; the numbers all come from evaluate / serving_cost records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::compare::{self, Row, Summary};
use super::ranking_tables;
use super::table::{Format, TableData};
use crate::store::{RunRecord, Store, StoreError};

/// The paper specs, in the order their tables are printed.
pub const PAPER_SPECS: [&str; 13] = [
    "main.toml",
    "synthetic.toml",
    "ablation-meta-embedding-size.toml",
    "ablation-inner-steps.toml",
    "ablation-order.toml",
    "ablation-meta-inputs.toml",
    "ablation-meta-interaction.toml",
    "ablation-meta-interaction-synthetic.toml",
    "ablation-outer-rows.toml",
    "ablation-inner-prior-rows.toml",
    "deployment.toml",
    "ml-100k-prefix.toml",
    "deployment-retrained.toml",
];

/// `--quick`: one seed and few epochs, a smoke check of the whole pipeline.
pub fn quick_overrides() -> Vec<String> {
    vec!["experiment.seeds=[1]".into(), "train.epochs=3".into()]
}

/// The runs of one reproduce, by spec file name.
pub type PaperRuns = BTreeMap<String, RunRecord>;

pub fn rows_of(store: &Store, run: &RunRecord, baseline: Option<&str>) -> Result<Vec<Row>, StoreError> {
    let observations = compare::collect(store, std::slice::from_ref(run))?;
    Ok(compare::group(&observations, baseline))
}

pub(crate) fn cell(summary: Option<&Summary>) -> String {
    summary.map_or("—".into(), |s| if s.n > 1 { s.mean_std() } else { format!("{:.4}", s.mean) })
}

fn lift(row: &Row, base: Option<&Row>, metric: &str) -> String {
    match (row.metrics.get(metric), base.and_then(|b| b.metrics.get(metric))) {
        (Some(value), Some(base)) if base.mean != 0.0 => {
            format!("{:+.2}", 100.0 * (value.mean - base.mean) / base.mean)
        }
        _ => "—".into(),
    }
}

fn find<'a>(rows: &'a [Row], label: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.label == label)
}

/// Table 1 (or 5 on synthetic data): every method, AUC / GAUC / log loss, lifts.
pub fn main_table(title: &str, rows: &[Row]) -> TableData {
    let mut table = TableData::new(
        title,
        vec![
            "method",
            "AUC",
            "GAUC",
            "log loss",
            "AUC lift vs global %",
            "AUC lift vs wide_deep %",
            "ΔAUC vs global 95% CI",
            "n",
        ],
    );
    let global = find(rows, "global");
    let wide_deep = find(rows, "wide_deep");
    for row in rows.iter().filter(|r| !r.label.contains('@')) {
        let paired = row.versus_baseline.get("auc").filter(|_| row.label != "global").map_or("—".into(), |d| {
            if d.ci95.is_nan() {
                format!("{:+.4}", d.mean)
            } else {
                format!("{:+.4} ± {:.4}", d.mean, d.ci95)
            }
        });
        table.push(
            vec![
                row.label.clone(),
                cell(row.metrics.get("auc")),
                cell(row.metrics.get("gauc")),
                cell(row.metrics.get("logloss")),
                lift(row, global, "auc"),
                lift(row, wide_deep, "auc"),
                paired,
                row.seeds.len().to_string(),
            ],
            row.stage_keys.clone(),
        );
    }
    note_seeds(&mut table, rows);
    table
}

/// Table 2: AUC and lift over global per activity segment and per warm/cold state.
pub fn segment_table(title: &str, rows: &[Row], segments: &[String]) -> TableData {
    let mut header = vec!["method".to_string()];
    for segment in segments {
        header.push(format!("{segment} AUC"));
        header.push(format!("{segment} lift %"));
    }
    let mut table = TableData { title: title.into(), header, ..Default::default() };
    let global = find(rows, "global");
    for row in rows.iter().filter(|r| !r.label.contains('@') && r.label != "oracle") {
        let mut cells = vec![row.label.clone()];
        for segment in segments {
            let metric = format!("{segment}.auc");
            cells.push(cell(row.metrics.get(&metric)));
            cells.push(lift(row, global, &metric));
        }
        table.push(cells, row.stage_keys.clone());
    }
    note_seeds(&mut table, rows);
    table
}

/// Table 3 (one per ablation): each swept value of LiMAML, AUC / GAUC and the change against
/// the spec's default value (marked).
pub fn ablation_table(title: &str, rows: &[Row], default_label: &str) -> TableData {
    let mut table = TableData::new(title, vec!["setting", "AUC", "GAUC", "low AUC", "ΔAUC vs default", "n"]);
    let default = find(rows, default_label).or_else(|| rows.first());
    let mut ablated: Vec<&Row> = rows.iter().filter(|r| r.method == "limaml").collect();
    ablated.sort_by(|a, b| {
        let number = |r: &Row| setting_of(r).rsplit('=').next().and_then(|v| v.parse::<f64>().ok());
        match (number(a), number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
            _ => a.label.cmp(&b.label),
        }
    });
    for row in ablated {
        let setting = setting_of(row);
        let name = if row.label == default_label { format!("{setting} (default)") } else { setting };
        table.push(variant_cells(name, row, default), row.stage_keys.clone());
    }
    table
}

/// One LiMAML variant: name, AUC, GAUC, low-segment AUC, the AUC change against `reference`, n.
fn variant_cells(name: String, row: &Row, reference: Option<&Row>) -> Vec<String> {
    let delta = match (row.metrics.get("auc"), reference.and_then(|r| r.metrics.get("auc"))) {
        (Some(value), Some(base)) => format!("{:+.4}", value.mean - base.mean),
        _ => "—".into(),
    };
    vec![
        name,
        cell(row.metrics.get("auc")),
        cell(row.metrics.get("gauc")),
        cell(row.metrics.get("low.auc")),
        delta,
        row.seeds.len().to_string(),
    ]
}

/// "inner_steps=2" from "limaml[methods.limaml.inner_steps=2]".
fn setting_of(row: &Row) -> String {
    let inside = row.label.split_once('[').and_then(|(_, rest)| rest.strip_suffix(']')).unwrap_or(&row.label);
    match inside.split_once('=') {
        Some((path, value)) => format!("{}={value}", path.rsplit('.').next().unwrap_or(path)),
        None => inside.to_string(),
    }
}

/// Table 3, freshness: meta embeddings from all the support data, from its newest part, and
/// from its oldest part of the same size (an earlier cut-off). Newest against oldest is recency
/// at equal amount; all against newest is amount.
pub fn freshness_table(title: &str, rows: &[Row]) -> TableData {
    let mut table =
        TableData::new(title, vec!["meta embeddings", "AUC", "GAUC", "low AUC", "ΔAUC vs oldest part", "n"]);
    let limaml = |suffix: &str| {
        rows.iter().find(|r| r.method == "limaml" && r.label.ends_with(suffix) && (suffix.starts_with('@') || !r.label.contains('@')))
    };
    let oldest = limaml("@stale");
    let named = [
        ("", "all support rows (latest)"),
        ("@recent", "newest part (as many rows as the oldest)"),
        ("@stale", "oldest part (earlier cut-off)"),
    ];
    for (suffix, name) in named {
        if let Some(row) = limaml(suffix) {
            table.push(variant_cells(name.into(), row, oldest), row.stage_keys.clone());
        }
    }
    table
}

/// Tables 6c and 6e: AUC and GAUC per method for each value of one swept integer parameter
/// (`prefix_rows`: k; `deployment_retrain_window`: the window), columns named `{name}={value}`.
pub fn sweep_table(title: &str, rows: &[Row], parameter: &str, name: &str) -> TableData {
    // "limaml[split.prefix_rows=10]" -> "10".
    let k_of = |row: &Row| -> String {
        row.label
            .split_once(&format!("{parameter}="))
            .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).collect())
            .unwrap_or_default()
    };
    let mut ks: Vec<String> = rows.iter().map(k_of).filter(|k| !k.is_empty()).collect();
    ks.sort_by_key(|k| k.parse::<u32>().unwrap_or(u32::MAX));
    ks.dedup();
    let mut header = vec!["method".to_string()];
    for k in &ks {
        header.push(format!("{name}={k} AUC"));
        header.push(format!("{name}={k} GAUC"));
    }
    let mut table = TableData { title: title.into(), header, ..Default::default() };
    let mut methods: Vec<String> = rows.iter().map(|r| r.method.clone()).collect();
    methods.sort();
    methods.dedup();
    for method in methods {
        let mut cells = vec![method.clone()];
        let mut keys = Vec::new();
        for k in &ks {
            let row = rows.iter().find(|r| r.method == method && &k_of(r) == k);
            cells.push(cell(row.and_then(|r| r.metrics.get("auc"))));
            cells.push(cell(row.and_then(|r| r.metrics.get("gauc"))));
            keys.extend(row.map(|r| r.stage_keys.clone()).unwrap_or_default());
        }
        table.push(cells, keys);
    }
    note_seeds(&mut table, rows);
    table
}

/// Table 6d: what keeping each method current costs under the deployment protocol, from the
/// stage records' compute times (mean over seeds): training once, and scoring every
/// validation and test window, which for LiMAML and the cheap refresh includes adapting on
/// each task's history; per 1k scored tasks.
pub fn deployment_cost_table(title: &str, store: &Store, run: &RunRecord) -> Result<TableData, StoreError> {
    let mut table = TableData::new(
        title,
        vec!["method", "training s", "scoring s (refresh included)", "scoring s per 1k tasks", "n"],
    );
    let mut by_label: BTreeMap<String, Vec<SeedCost>> = BTreeMap::new();
    let label_seed = |name: &str, prefix: &str| -> Option<(String, String)> {
        let rest = name.strip_prefix(prefix)?;
        let (label, seed) = rest.rsplit_once("/seed=")?;
        Some((label.to_string(), seed.to_string()))
    };
    let mut train: BTreeMap<(String, String), (f64, String)> = BTreeMap::new();
    for stage in run.stages.iter().filter(|s| s.kind == "train") {
        if let (Some(record), Some(id)) = (store.stage(&stage.key)?, label_seed(&stage.name, "train/")) {
            train.insert(id, (record.seconds, stage.key.clone()));
        }
    }
    for stage in run.stages.iter().filter(|s| s.kind == "evaluate") {
        let (Some(record), Some(id)) = (store.stage(&stage.key)?, label_seed(&stage.name, "evaluate/")) else {
            continue;
        };
        let Some((train_seconds, train_key)) = train.get(&id) else { continue };
        let tasks = |pointer: &str| record.metrics.pointer(pointer).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let scored = tasks("/overall/tasks") + tasks("/validation/tasks");
        by_label.entry(id.0.clone()).or_default().push(SeedCost {
            train_seconds: *train_seconds,
            score_seconds: record.seconds,
            scored_tasks: scored,
            keys: vec![train_key.clone(), stage.key.clone()],
        });
    }
    for (label, seeds) in by_label {
        let mean = |f: fn(&SeedCost) -> f64| super::stats::mean(&seeds.iter().map(f).collect::<Vec<_>>());
        let (train_s, score_s, tasks) =
            (mean(|s| s.train_seconds), mean(|s| s.score_seconds), mean(|s| s.scored_tasks));
        table.push(
            vec![
                label,
                format!("{train_s:.2}"),
                format!("{score_s:.3}"),
                if tasks > 0.0 { format!("{:.4}", 1000.0 * score_s / tasks) } else { "—".into() },
                seeds.len().to_string(),
            ],
            seeds.iter().flat_map(|s| s.keys.clone()).collect(),
        );
    }
    table.notes.push(
        "note: stage compute times on this machine, with other stages running beside them (-j); retraining \
         to refresh a baseline would cost its training time again for every window"
            .into(),
    );
    Ok(table)
}

/// One seed's costs in [`deployment_cost_table`].
struct SeedCost {
    train_seconds: f64,
    /// The evaluate stage: validation and test scoring, the refresh included.
    score_seconds: f64,
    scored_tasks: f64,
    /// The train and evaluate stage keys.
    keys: Vec<String>,
}

/// Table 4: serving cost, from the serving_cost stages (mean over seeds).
pub fn serving_table(title: &str, store: &Store, run: &RunRecord) -> Result<TableData, StoreError> {
    let mut table = TableData::new(
        title,
        vec![
            "method",
            "bytes / entity",
            "lookup rows/s",
            "adapt-per-request rows/s",
            "speedup",
            "max |score diff|",
            "n",
        ],
    );
    let mut by_label: BTreeMap<String, Vec<(String, serde_json::Value)>> = BTreeMap::new();
    for stage in run.stages.iter().filter(|s| s.kind == "serving_cost") {
        if let Some(record) = store.stage(&stage.key)? {
            let label = stage
                .name
                .trim_start_matches("serving/")
                .rsplit_once("/seed=")
                .map_or(stage.name.clone(), |(l, _)| l.to_string());
            by_label.entry(label).or_default().push((stage.key.clone(), record.metrics));
        }
    }
    for (label, records) in by_label {
        let mean = |field: &str| {
            let values: Vec<f64> = records.iter().filter_map(|(_, m)| m.get(field).and_then(|v| v.as_f64())).collect();
            super::stats::mean(&values)
        };
        let max =
            |field: &str| records.iter().filter_map(|(_, m)| m.get(field).and_then(|v| v.as_f64())).fold(0.0, f64::max);
        table.push(
            vec![
                label,
                format!("{:.0}", mean("bytes_per_entity")),
                format!("{:.0}", mean("lookup_rows_per_second")),
                format!("{:.0}", mean("adapt_rows_per_second")),
                format!("{:.1}x", mean("speedup")),
                {
                    let difference = max("max_abs_score_difference");
                    if difference == 0.0 { "0 (identical)".to_string() } else { format!("{difference:.1e}") }
                },
                records.len().to_string(),
            ],
            records.iter().map(|(k, _)| k.clone()).collect(),
        );
    }
    Ok(table)
}

pub(crate) fn note_seeds(table: &mut TableData, rows: &[Row]) {
    if rows.iter().any(|r| r.seeds.len() < 3) {
        table.notes.push("note: fewer than 3 seeds (--quick?); std and CI say little".into());
    }
}

/// The segment names of a run's tasks, lowest activity first, then entity states.
/// The deployment protocol's windows in the rows' metrics (`window1`, `window2`, ...), in order.
pub fn window_names(rows: &[Row]) -> Vec<String> {
    let mut windows: Vec<(u32, String)> = Vec::new();
    for row in rows {
        for name in row.metrics.keys() {
            let Some(prefix) = name.strip_suffix(".auc") else { continue };
            let Some(number) = prefix.strip_prefix("window").and_then(|n| n.parse::<u32>().ok()) else { continue };
            if !windows.iter().any(|(n, _)| *n == number) {
                windows.push((number, prefix.to_string()));
            }
        }
    }
    windows.sort();
    windows.into_iter().map(|(_, name)| name).collect()
}

pub fn segment_names(rows: &[Row]) -> (Vec<String>, Vec<String>) {
    let mut segments = Vec::new();
    let mut states = Vec::new();
    for row in rows {
        for name in row.metrics.keys() {
            if let Some(prefix) = name.strip_suffix(".auc") {
                // Windows have their own tables; validation and chance are not slices of users.
                if prefix.starts_with("window") || matches!(prefix, "validation" | "chance") {
                    continue;
                }
                let is_state = matches!(prefix, "warm" | "cold" | "known" | "new");
                let bucket = if is_state { &mut states } else { &mut segments };
                if !bucket.iter().any(|s: &String| s == prefix) {
                    bucket.push(prefix.to_string());
                }
            }
        }
    }
    let order = |s: &String| match s.as_str() {
        "low" => 0,
        "mid" => 1,
        "high" => 2,
        _ => 3,
    };
    segments.sort_by_key(order);
    (segments, states)
}

/// Builds every table from the runs of one reproduce.
pub fn tables(store: &Store, runs: &PaperRuns) -> Result<Vec<(String, TableData)>, StoreError> {
    let mut out: Vec<(String, TableData)> = Vec::new();
    if let Some(run) = runs.get("main.toml") {
        let rows = rows_of(store, run, Some("global"))?;
        let (segments, states) = segment_names(&rows);
        out.push((
            "1-main".into(),
            main_table("Table 1. MovieLens 100K: test AUC, GAUC, log loss (mean ± std over seeds)", &rows),
        ));
        out.push((
            "1b-ranking".into(),
            ranking_tables::ranking_table("Table 1b. MovieLens 100K: ranking and calibration (mean ± std over seeds)", &rows),
        ));
        out.push((
            "1c-per-user-tests".into(),
            ranking_tables::significance_table("Table 1c. MovieLens 100K: per-user paired tests vs global", &rows, &run.metrics),
        ));
        out.push((
            "2a-segments".into(),
            segment_table("Table 2a. AUC and lift over global by activity segment", &rows, &segments),
        ));
        out.push((
            "2b-warm-cold".into(),
            segment_table("Table 2b. AUC and lift over global, warm vs cold users", &rows, &states),
        ));
        out.push(("3e-freshness".into(), freshness_table("Table 3e. Meta embedding freshness", &rows)));
        out.push(("4-serving".into(), serving_table("Table 4. Serving cost of LiMAML's meta embeddings", store, run)?));
    }
    let ablations = [
        (
            "ablation-meta-embedding-size.toml",
            "3a-meta-embedding-size",
            "Table 3a. Meta embedding size",
            "meta_embedding_dim",
        ),
        ("ablation-inner-steps.toml", "3b-inner-steps", "Table 3b. Inner steps (0 = no adaptation)", "inner_steps"),
        ("ablation-order.toml", "3c-order", "Table 3c. First- vs second-order MAML", "second_order"),
        ("ablation-meta-inputs.toml", "3d-meta-inputs", "Table 3d. What the Meta Block sees", "meta_inputs"),
        (
            "ablation-meta-interaction.toml",
            "3f-meta-interaction",
            "Table 3f. How the Global Block reads the meta embedding",
            "meta_interaction",
        ),
        (
            "ablation-meta-interaction-synthetic.toml",
            "3g-meta-interaction-synthetic",
            "Table 3g. How the Global Block reads the meta embedding, synthetic data",
            "meta_interaction",
        ),
        ("ablation-outer-rows.toml", "3h-outer-rows", "Table 3h. Rows the outer loss scores", "outer_rows"),
        (
            "ablation-inner-prior-rows.toml",
            "3i-inner-prior-rows",
            "Table 3i. Prior rows of the inner loss (0 = each support's mean)",
            "inner_prior_rows",
        ),
    ];
    for (spec, name, title, parameter) in ablations {
        if let Some(run) = runs.get(spec) {
            let rows = rows_of(store, run, None)?;
            // The default cell is the one whose parameter equals the method's default value.
            let default_value = limaml_models::LimamlConfig::default();
            let default_text =
                serde_json::to_value(&default_value).ok().and_then(|v| v.get(parameter).cloned()).unwrap_or_default();
            let default_label = rows
                .iter()
                .find(|r| {
                    r.params.get(&format!("method.{parameter}")).map(|v| v.as_str())
                        == Some(plain(&default_text).as_str())
                })
                .map(|r| r.label.clone())
                .unwrap_or_default();
            out.push((name.into(), ablation_table(title, &rows, &default_label)));
        }
    }
    if let Some(run) = runs.get("deployment.toml") {
        let rows = rows_of(store, run, Some("global"))?;
        let (_, states) = segment_names(&rows);
        let windows = window_names(&rows);
        out.push((
            "6a-deployment-windows".into(),
            segment_table(
                "Table 6a. Deployment: AUC per test window (trained once before window 1; LiMAML refreshed per window, baselines frozen)",
                &rows,
                &windows,
            ),
        ));
        out.push((
            "6b-deployment-states".into(),
            segment_table("Table 6b. Deployment: AUC of users known before training vs new since", &rows, &states),
        ));
        out.push((
            "6d-deployment-cost".into(),
            deployment_cost_table("Table 6d. Deployment: training once vs scoring with the refresh", store, run)?,
        ));
    }
    if let Some(run) = runs.get("ml-100k-prefix.toml") {
        let rows = rows_of(store, run, None)?;
        out.push((
            "6c-prefix".into(),
            sweep_table(
                "Table 6c. MovieLens 100K, new users adapted on their first k ratings (prefix protocol)",
                &rows,
                "prefix_rows",
                "k",
            ),
        ));
    }
    if let Some(run) = runs.get("deployment-retrained.toml") {
        let rows = rows_of(store, run, None)?;
        out.push((
            "6e-deployment-retrained".into(),
            sweep_table(
                "Table 6e. Deployment: the upper bound, every model retrained on all rows before each test window",
                &rows,
                "deployment_retrain_window",
                "window",
            ),
        ));
    }
    if let Some(run) = runs.get("synthetic.toml") {
        let rows = rows_of(store, run, Some("global"))?;
        out.push((
            "5-synthetic".into(),
            main_table("Table 5. Synthetic data (taste invisible to features), with the oracle", &rows),
        ));
        out.push((
            "5b-synthetic-ranking".into(),
            ranking_tables::ranking_table("Table 5b. Synthetic data: ranking and calibration", &rows),
        ));
        out.push((
            "5c-synthetic-per-user-tests".into(),
            ranking_tables::significance_table("Table 5c. Synthetic data: per-user paired tests vs global", &rows, &run.metrics),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Draws the SVG plots next to their tables: lift by segment (2a), learning curves (1), and
/// AUC against the swept value for the numeric ablations (3a, 3b). Returns the files written.
pub fn write_plots(store: &Store, runs: &PaperRuns, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    if let Some(run) = runs.get("main.toml") {
        let rows = rows_of(store, run, Some("global"))?;
        let (segments, _) = segment_names(&rows);
        let path = dir.join("2a-segments").join("auc-by-segment.svg");
        std::fs::create_dir_all(dir.join("2a-segments"))?;
        super::plots::segment_auc(&path, &rows, &segments)?;
        written.push(path);
        let curves = learning_curves(store, run)?;
        let path = dir.join("1-main").join("learning-curves.svg");
        std::fs::create_dir_all(dir.join("1-main"))?;
        let title = "Validation AUC per epoch (mean over seeds, band: min to max)";
        super::plots::line_chart(&path, title, "epoch", "validation AUC", &curves, None)?;
        written.push(path);
    }
    if let Some(run) = runs.get("deployment.toml") {
        let rows = rows_of(store, run, None)?;
        let path = dir.join("6a-deployment-windows").join("auc-by-window.svg");
        std::fs::create_dir_all(dir.join("6a-deployment-windows"))?;
        super::plots::window_auc(&path, &rows, &window_names(&rows))?;
        written.push(path);
    }
    for (spec, name, parameter) in
        [("ablation-meta-embedding-size.toml", "3a-meta-embedding-size", "meta_embedding_dim"), ("ablation-inner-steps.toml", "3b-inner-steps", "inner_steps")]
    {
        let Some(run) = runs.get(spec) else { continue };
        let rows = rows_of(store, run, None)?;
        let mut points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| {
                let x: f64 = r.params.get(&format!("method.{parameter}"))?.parse().ok()?;
                Some((x, r.metrics.get("auc")?.mean))
            })
            .collect();
        points.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let path = dir.join(name).join("auc.svg");
        std::fs::create_dir_all(dir.join(name))?;
        let series = [super::plots::Series::new("limaml", points)];
        super::plots::line_chart(&path, &format!("LiMAML AUC by {parameter}"), parameter, "AUC", &series, None)?;
        written.push(path);
    }
    Ok(written)
}

/// Validation AUC per epoch of every trained method: the mean over seeds, with the min-max
/// band (an epoch counts only seeds that reached it; early stopping ends some sooner).
pub fn learning_curves(store: &Store, run: &RunRecord) -> Result<Vec<super::plots::Series>, StoreError> {
    // label -> epoch -> validation AUC of each seed
    let mut by_label: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for stage in run.stages.iter().filter(|s| s.kind == "train") {
        let Some((label, _seed)) = stage.name.trim_start_matches("train/").rsplit_once("/seed=") else { continue };
        let Some(record) = store.stage(&stage.key)? else { continue };
        let epochs = record.metrics.get("curve").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        for e in epochs {
            if let (Some(epoch), Some(auc)) = (e.get("epoch").and_then(|v| v.as_u64()), e.get("validation_auc").and_then(|v| v.as_f64())) {
                by_label.entry(label.to_string()).or_default().entry(epoch).or_default().push(auc);
            }
        }
    }
    Ok(by_label
        .into_iter()
        .map(|(label, epochs)| {
            let mut series = super::plots::Series::new(label, Vec::new());
            for (epoch, values) in epochs {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
                series.points.push((epoch as f64, mean));
                series.band.push((epoch as f64, lo, hi));
            }
            series
        })
        .collect())
}

/// Reading records or writing report files.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
}

fn plain(value: &serde_json::Value) -> String {
    value.to_string().trim_matches('"').to_string()
}

/// Writes a table as table.md/.csv/.tex/.json plus manifest.json under `dir/name/`.
pub fn write_table(dir: &Path, name: &str, table: &TableData) -> std::io::Result<PathBuf> {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder)?;
    for (format, extension) in
        [(Format::Md, "md"), (Format::Csv, "csv"), (Format::Latex, "tex"), (Format::Json, "json")]
    {
        write_atomically(&folder.join(format!("table.{extension}")), &table.render(format, true))?;
    }
    let mut cells = serde_json::Map::new();
    for (r, (row, keys)) in table.rows.iter().zip(&table.provenance).enumerate() {
        for column in table.header.iter().skip(1) {
            cells.insert(
                format!("{}/{}", row.first().cloned().unwrap_or_else(|| r.to_string()), column),
                keys.clone().into(),
            );
        }
    }
    let manifest = serde_json::json!({
        "table": name,
        "title": table.title,
        "cells": cells,
        "note": "each cell maps to the keys of the stage records its numbers were computed from (limaml show / the store)",
    });
    write_atomically(
        &folder.join("manifest.json"),
        &(serde_json::to_string_pretty(&manifest).expect("serializes") + "\n"),
    )?;
    Ok(folder)
}

/// Writes through a temporary file and a rename: a table file is never half-written.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
