//! `limaml bench --suite search`: random search against successive halving at the same number
//! of trials, on `experiments/search.toml` (quick synthetic data, every method, one budget).
//!
//! Each strategy runs the whole spec in a fresh store of its own, one stage at a time (`-j 1`,
//! so a stage's time is not shared with another's). The search's cost is the summed time of its
//! `trial` and `select` stages; the run's wall time is reported beside it. Per method it reports
//! the best validation objective of each strategy and the seed noise: the standard deviation
//! over the experiment's seeds of the tuned method's validation objective (random search's run).
//! Targets: halving at least [`TARGET_SPEEDUP`]x cheaper, and every method's best within
//! [`NOISE_MULTIPLE`] seed standard deviations of random search's. `--quick` halves the trials.
//! Owns nothing the rest of the tool uses.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::{json, Value};

use limaml::exec::{self, local::LocalExecutor, RunOptions};
use limaml::store::{LockWait, Store};

use super::super::{BenchArgs, Failure};
use super::failed;

pub const SPEC: &str = "experiments/search.toml";
/// The target: halving's search costs at most 1/this of random search's.
pub const TARGET_SPEEDUP: f64 = 2.0;
/// The target: halving's best validation objective within this many seed standard deviations.
pub const NOISE_MULTIPLE: f64 = 2.0;

/// Runs the spec with `strategy` in a fresh store under `work_dir`.
fn run_strategy(strategy: &str, args: &BenchArgs, work_dir: &Path) -> Result<Value, Failure> {
    let mut overrides = vec![format!("search.strategy={strategy}")];
    if args.quick {
        overrides.push("search.trials=4".into());
    }
    let loaded = limaml::spec::load(Path::new(SPEC), &overrides)?;
    let plan = limaml::plan::build(&loaded).map_err(failed)?;
    let store = Store::open(&work_dir.join(strategy), LockWait::NoWait, |_| {}).map_err(failed)?;
    let cancel = AtomicBool::new(false);
    let options = RunOptions { keep_going: false, cancel: &cancel, show_progress: false, quiet: true };
    super::progress(args, &format!("search: {strategy} on {SPEC}"));
    let started = Instant::now();
    let outcome = exec::run_plan(&plan, &loaded, &store, &LocalExecutor { jobs: 1 }, &options).map_err(failed)?;
    let wall = started.elapsed().as_secs_f64();
    if outcome.failed > 0 {
        let errors: Vec<String> = outcome.stages.iter().filter_map(|s| s.error.clone()).collect();
        return Err(Failure::Failed(format!("the {strategy} run failed: {}", errors.join("; "))));
    }
    let search_seconds: f64 =
        outcome.stages.iter().filter(|s| s.kind == "trial" || s.kind == "select").map(|s| s.seconds).sum();
    let trained_epochs: u64 = outcome
        .search
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .map(|s| s["trials"].as_array().into_iter().flatten().map(|t| t["trained_epochs"].as_u64().unwrap_or(0)).max().unwrap_or(0))
        .sum();
    let objective = loaded.cells[0].spec.search.as_ref().map(|s| s.objective_metric().to_string()).unwrap_or_default();
    Ok(json!({
        "strategy": strategy,
        "search_seconds": search_seconds,
        "run_seconds": wall,
        "trial_stages": outcome.stages.iter().filter(|s| s.kind == "trial").count(),
        "max_trained_epochs_sum": trained_epochs,
        "objective": objective,
        "search": outcome.search,
        "methods": outcome.methods,
    }))
}

pub fn search_bench(args: &BenchArgs, work_dir: &Path) -> Result<Value, Failure> {
    let random = run_strategy("random", args, work_dir)?;
    let halving = run_strategy("halving", args, work_dir)?;
    let objective = random["objective"].as_str().unwrap_or("auc").to_string();
    let mut methods = serde_json::Map::new();
    let mut within_noise = true;
    for (method, search) in random["search"].as_object().into_iter().flatten() {
        let best_random = search["best"]["objective"].as_f64();
        let best_halving = halving["search"][method]["best"]["objective"].as_f64();
        let noise = random["methods"][method]["validation"][format!("{objective}_std")].as_f64();
        let difference = best_halving.zip(best_random).map(|(h, r)| h - r);
        let within = match (difference, noise) {
            (Some(d), Some(n)) => d.abs() <= NOISE_MULTIPLE * n,
            _ => false,
        };
        within_noise &= within;
        methods.insert(
            method.clone(),
            json!({
                "trials": search["count"],
                "random_best": best_random,
                "halving_best": best_halving,
                "difference": difference,
                "seed_std": noise,
                "within_noise": within,
                "random_winner": search["best"]["params"],
                "halving_winner": halving["search"][method]["best"]["params"],
            }),
        );
    }
    let speedup = random["search_seconds"].as_f64().unwrap_or(0.0) / halving["search_seconds"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "spec": SPEC,
        "objective": format!("validation.{objective}"),
        "random_search_seconds": random["search_seconds"],
        "halving_search_seconds": halving["search_seconds"],
        "random_run_seconds": random["run_seconds"],
        "halving_run_seconds": halving["run_seconds"],
        "random_trial_stages": random["trial_stages"],
        "halving_trial_stages": halving["trial_stages"],
        "speedup": speedup,
        "target_speedup": TARGET_SPEEDUP,
        "speedup_met": speedup >= TARGET_SPEEDUP,
        "noise_multiple": NOISE_MULTIPLE,
        "within_noise": within_noise,
        "methods": methods,
    }))
}

pub fn print_human(document: &Value) {
    println!(
        "search ({}, {}): random {:.1} s, halving {:.1} s of trial stages -> {:.2}x (target >= {}x: {}); whole runs {:.1} s vs {:.1} s",
        document["spec"].as_str().unwrap_or(SPEC),
        document["objective"].as_str().unwrap_or(""),
        document["random_search_seconds"].as_f64().unwrap_or(f64::NAN),
        document["halving_search_seconds"].as_f64().unwrap_or(f64::NAN),
        document["speedup"].as_f64().unwrap_or(f64::NAN),
        TARGET_SPEEDUP,
        if document["speedup_met"] == true { "met" } else { "NOT met" },
        document["random_run_seconds"].as_f64().unwrap_or(f64::NAN),
        document["halving_run_seconds"].as_f64().unwrap_or(f64::NAN),
    );
    let f = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.4}"));
    println!("| method | trials | random best | halving best | difference | seed std | within {NOISE_MULTIPLE} std |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (method, m) in document["methods"].as_object().into_iter().flatten() {
        println!(
            "| {method} | {} | {} | {} | {} | {} | {} |",
            m["trials"],
            f(&m["random_best"]),
            f(&m["halving_best"]),
            f(&m["difference"]),
            f(&m["seed_std"]),
            if m["within_noise"] == true { "yes" } else { "no" }
        );
    }
}
