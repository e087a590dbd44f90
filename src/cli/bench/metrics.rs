//! `limaml bench --suite metrics`: what the metric registry costs, against the evaluate stage's
//! own scoring measured in the same run.
//!
//! 1. On ML-100K (`experiments/ml-100k.toml`, its `global` method; synthetic data of the same
//!    size when the data set is absent, said so in the output): the evaluate stage's scoring
//!    (test and validation rows), then the metrics with AUC/GAUC/log loss only, with every
//!    query-set metric, and the full-catalogue ranking; the overheads are ratios to the
//!    baseline stage time (scoring + AUC/GAUC/log loss).
//! 2. Full-catalogue top-K at scale: N synthetic users x 5,000 items (N = 100,000; 10,000 with
//!    `--quick`), the `global` method, every test user ranked over every unseen item.
//!
//! Each timing is the fastest of `REPEATS` runs. Owns nothing the rest of the tool uses.

use std::path::Path;
use std::time::Instant;

use limaml_data::{Dataset, TaskRole, TaskSet};
use limaml_models::{EvalConfig, MethodConfig, TrainConfig, TrainedModel};
use serde_json::{json, Value};

use super::super::{BenchArgs, Failure};
use super::failed;

const REPEATS: usize = 3;
/// The target: every metric together adds under this share to the evaluate stage's time.
pub const TARGET_METRICS_OVERHEAD: f64 = 0.10;
/// The target: full-catalogue top-K for 100k users x 5k items within this many seconds.
pub const TARGET_CATALOGUE_SECONDS: f64 = 60.0;
const CATALOGUE_ITEMS: usize = 5_000;

fn fastest<T>(mut work: impl FnMut() -> Result<T, Failure>) -> Result<(f64, T), Failure> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..REPEATS {
        let started = Instant::now();
        let value = work()?;
        best = best.min(started.elapsed().as_secs_f64());
        last = Some(value);
    }
    Ok((best, last.expect("REPEATS > 0")))
}

/// ML-100K as `experiments/ml-100k.toml` slices it, or `None` when the files are absent.
fn movielens() -> Result<Option<(Dataset, TaskSet, MethodConfig, TrainConfig)>, Failure> {
    let spec = Path::new("experiments/ml-100k.toml");
    let Ok(loaded) = limaml::spec::load(spec, &[]) else { return Ok(None) };
    let cell = &loaded.cells[0].spec;
    let Ok(dataset) = limaml_data::load(&cell.data, &loaded.base_dir) else { return Ok(None) };
    let tasks = limaml_data::slice(&dataset, &cell.split, 1).map_err(failed)?;
    let method = cell.methods.get("global").cloned().unwrap_or_else(|| MethodConfig::default_for("global").expect("known"));
    Ok(Some((dataset, tasks, method, cell.train.clone())))
}

/// A `global` model trained for `epochs` (the timings need its shape, not its quality).
fn quick_model(dataset: &Dataset, tasks: &TaskSet, method: &MethodConfig, train: &TrainConfig, epochs: usize) -> Result<TrainedModel, Failure> {
    let train = TrainConfig { epochs, ..train.clone() };
    limaml_models::train(method, &train, &dataset.interactions, tasks, 1, &mut |_| {}).map_err(failed)
}

fn evaluate_costs(dataset: &Dataset, tasks: &TaskSet, model: &TrainedModel) -> Result<Value, Failure> {
    let interactions = &dataset.interactions;
    // What the stage does before scoring: decode its inputs (postcard, as the store holds them).
    let (dataset_bytes, tasks_bytes) = (postcard::to_allocvec(dataset).map_err(failed)?, postcard::to_allocvec(tasks).map_err(failed)?);
    let model_bytes = model.to_bytes().map_err(failed)?;
    let (decode, _) = fastest(|| {
        let _: Dataset = postcard::from_bytes(&dataset_bytes).map_err(failed)?;
        let _: TaskSet = postcard::from_bytes(&tasks_bytes).map_err(failed)?;
        TrainedModel::from_bytes(&model_bytes).map_err(failed)
    })?;
    let (scoring, (test, validation)) = fastest(|| {
        let test = limaml_models::predict(model, interactions, tasks, None, &[TaskRole::Test]).map_err(failed)?;
        let validation = limaml_models::predict(model, interactions, tasks, None, &[TaskRole::Validation]).map_err(failed)?;
        Ok((test, validation))
    })?;
    let metrics_with = |config: &EvalConfig| {
        fastest(|| {
            let report = limaml_models::evaluate_with(&test, interactions, tasks, config, None);
            let _ = limaml_models::evaluate_with(&validation, interactions, tasks, config, None);
            Ok(report)
        })
    };
    let (classification, _) = metrics_with(&EvalConfig { ks: vec![], catalogue: false, ..EvalConfig::default() })?;
    let (all_query, _) = metrics_with(&EvalConfig { catalogue: false, ..EvalConfig::default() })?;
    let (catalogue, ranks) = fastest(|| {
        limaml_models::eval::catalogue::catalogue_ranks(model, interactions, tasks, None, &[TaskRole::Test], &|_, _| {}).map_err(failed)
    })?;
    let ranks = ranks.unwrap_or_default();
    let catalogue_config = EvalConfig { catalogue: true, ..EvalConfig::default() };
    let (all_with_catalogue_metrics, _) =
        fastest(|| Ok(limaml_models::evaluate_with(&test, interactions, tasks, &catalogue_config, Some(&ranks))))?;
    let stage = decode + scoring + classification;
    let candidates: u64 = ranks.values().map(|r| r.candidates as u64).sum();
    Ok(json!({
        "test_rows": test.rows.len(),
        "validation_rows": validation.rows.len(),
        "decode_inputs_seconds": decode,
        "scoring_seconds": scoring,
        "auc_gauc_logloss_seconds": classification,
        "all_query_metrics_seconds": all_query,
        "catalogue_scoring_seconds": catalogue,
        "catalogue_users": ranks.len(),
        "catalogue_pairs": candidates,
        "catalogue_metrics_seconds": all_with_catalogue_metrics,
        "baseline_stage_seconds": stage,
        "query_metrics_overhead": (all_query - classification) / stage,
        "catalogue_overhead": (all_query - classification + catalogue + all_with_catalogue_metrics) / stage,
    }))
}

pub fn metrics_bench(args: &BenchArgs) -> Result<Value, Failure> {
    let progress = |message: &str| super::progress(args, message);
    progress("metrics: ML-100K evaluate stage");
    let (source, dataset, tasks, method, train) = match movielens()? {
        Some((dataset, tasks, method, train)) => ("ml-100k", dataset, tasks, method, train),
        None => {
            progress("ML-100K not found: synthetic data of its size instead");
            let (dataset, tasks) = super::synthetic_task_set(943, 1682, 7)?;
            ("synthetic 943 users x 1682 items", dataset, tasks, MethodConfig::default_for("global").expect("known"), TrainConfig::default())
        }
    };
    let model = quick_model(&dataset, &tasks, &method, &train, 2)?;
    let small = evaluate_costs(&dataset, &tasks, &model)?;

    let users = if args.quick { 10_000 } else { 100_000 };
    progress(&format!("metrics: full catalogue, {users} users x {CATALOGUE_ITEMS} items"));
    let (dataset, tasks) = super::synthetic_task_set(users, CATALOGUE_ITEMS, 7)?;
    let method = MethodConfig::default_for("global").expect("known");
    let model = quick_model(&dataset, &tasks, &method, &TrainConfig::default(), 1)?;
    let started = Instant::now();
    let ranks = limaml_models::eval::catalogue::catalogue_ranks(&model, &dataset.interactions, &tasks, None, &[TaskRole::Test], &|done, total| {
        if done * 10 / total.max(1) != (done.saturating_sub(1)) * 10 / total.max(1) || done == total {
            progress(&format!("  catalogue: {done}/{total} users, {:.0}s", started.elapsed().as_secs_f64()));
        }
    })
    .map_err(failed)?
    .unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let pairs: u64 = ranks.values().map(|r| r.candidates as u64).sum();
    let met_overhead = small["catalogue_overhead"].as_f64().map(|o| o < TARGET_METRICS_OVERHEAD);
    Ok(json!({
        "evaluate_stage": { "data": source, "method": "global", "costs": small },
        "catalogue_at_scale": {
            "users": users,
            "items": CATALOGUE_ITEMS,
            "ranked_users": ranks.len(),
            "pairs_scored": pairs,
            "seconds": seconds,
            "pairs_per_second": pairs as f64 / seconds,
        },
        "targets": {
            "all_metrics_overhead": {"target": TARGET_METRICS_OVERHEAD, "value": small["catalogue_overhead"], "met": met_overhead},
            "query_metrics_overhead": {"target": TARGET_METRICS_OVERHEAD, "value": small["query_metrics_overhead"], "met": small["query_metrics_overhead"].as_f64().map(|o| o < TARGET_METRICS_OVERHEAD)},
            "catalogue_seconds": {"target": TARGET_CATALOGUE_SECONDS, "value": seconds, "met": (users == 100_000).then_some(seconds < TARGET_CATALOGUE_SECONDS)},
        },
    }))
}

pub fn print_human(doc: &Value) {
    let costs = &doc["evaluate_stage"]["costs"];
    let s = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{x:.3}s"));
    let pct = |v: &Value| v.as_f64().map_or("-".into(), |x| format!("{:+.1}%", 100.0 * x));
    println!("metrics on {} (global; fastest of {REPEATS}):", doc["evaluate_stage"]["data"].as_str().unwrap_or(""));
    println!(
        "  decoding inputs {}; scoring {} ({} test + {} validation rows); AUC/GAUC/log loss {}; every query metric {}; catalogue scoring {} ({} users, {} pairs) + its metrics {}",
        s(&costs["decode_inputs_seconds"]),
        s(&costs["scoring_seconds"]),
        costs["test_rows"],
        costs["validation_rows"],
        s(&costs["auc_gauc_logloss_seconds"]),
        s(&costs["all_query_metrics_seconds"]),
        s(&costs["catalogue_scoring_seconds"]),
        costs["catalogue_users"],
        costs["catalogue_pairs"],
        s(&costs["catalogue_metrics_seconds"]),
    );
    println!(
        "  added to the evaluate stage: query metrics {}, with the full catalogue {}",
        pct(&costs["query_metrics_overhead"]),
        pct(&costs["catalogue_overhead"])
    );
    let at_scale = &doc["catalogue_at_scale"];
    println!(
        "full catalogue: {} users x {} items: {} ranked users, {} pairs in {} ({:.0} pairs/s)",
        at_scale["users"],
        at_scale["items"],
        at_scale["ranked_users"],
        at_scale["pairs_scored"],
        s(&at_scale["seconds"]),
        at_scale["pairs_per_second"].as_f64().unwrap_or(f64::NAN)
    );
    let verdict = |t: &Value| match t["met"].as_bool() {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    };
    let targets = &doc["targets"];
    println!(
        "targets: all metrics < {:.0}% of the evaluate stage: {} (query metrics alone: {}); 100k x 5k catalogue < {}s: {}",
        100.0 * TARGET_METRICS_OVERHEAD,
        verdict(&targets["all_metrics_overhead"]),
        verdict(&targets["query_metrics_overhead"]),
        TARGET_CATALOGUE_SECONDS,
        verdict(&targets["catalogue_seconds"]),
    );
}
