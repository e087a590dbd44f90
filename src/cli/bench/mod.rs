//! `limaml bench`: throughput and scaling benchmarks of LiMAML, side by side with a PyTorch
//! reference of the same step (`bench/reference.py`, set up by `bench/setup.sh`).
//!
//! What is measured, on the project's synthetic generator data (`limaml_data::load` with a
//! synthetic [`DataConfig`], sliced by `limaml_data::slice` with the default split):
//! - for each model size of [`MODEL_SIZES`], through `limaml_models::bench_meta_training`:
//!   meta-training tasks/s first- and second-order, embedding-export entities/s and Global-Block
//!   scoring rows/s, and the peak resident memory of the measurement;
//! - the same through the PyTorch reference, when `bench/.venv` exists, and the ratios
//!   (limaml throughput / PyTorch throughput, same data, same thread count, same run); limaml
//!   is then timed before and after the reference and its rates are the mean ([`bracketed`]);
//! - how cost grows with the number of users ([`SCALING_USERS`]): one real meta-training epoch
//!   (`limaml_models::train`), a real export (`export_meta_embeddings`) and the bytes of what a
//!   run stores (data set, task set, model, meta-embedding table);
//! - a fully cached `limaml run experiments/quick.toml` (when the spec is found);
//! - the machine's sustained `f32` matrix-product throughput with the same threads
//!   ([`measure_gemm_peak`](limaml_models::measure_gemm_peak)), timed right before and after each measurement
//!   ([`windowed_measurement`]), against which that measurement's FLOP rates (counted from the
//!   layer shapes and rows, `limaml_models::StepFlops`) are reported as `peak_fraction`.
//!
//! Every measurement runs in a child process of this binary (the job passed as JSON in
//! [`CHILD_JOB_ENV`]): its peak RSS (`VmHWM`) is then that measurement's alone. Both sides use the thread count candle uses
//! (`RAYON_NUM_THREADS`, else the physical cores); the reference calls `torch.set_num_threads`
//! with it.
//!
//! Files by job: this one plans and runs the training suite and keeps its targets; `child` (the
//! jobs a child process runs), `reference` (the PyTorch reference and the files it reads),
//! `human` (the terminal tables); `metrics` and `search` are the other two suites.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use limaml_data::{DataConfig, DataSource, Dataset, SplitConfig, SyntheticConfig, TaskSet};
use limaml_models::{bench_limaml_config, GemmPeak, LimamlConfig, BENCH_INNER_STEPS, BENCH_META_BATCH};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{failed, BenchArgs, Failure};

mod child;
mod human;
mod metrics;
mod reference;
mod search;

use child::{run_child, run_child_process, this_executable, ChildJob, ScalingPoint, ThroughputReport};
use human::print_human;
use reference::{write_reference_config, write_task_set, TorchReference};

/// Set in a child process: the JSON of the one [`ChildJob`] it runs.
const CHILD_JOB_ENV: &str = "LIMAML_BENCH_CHILD_JOB";
/// Set (to anything): keep the temporary folder (task set, reference arrays) for profiling.
const KEEP_WORK_DIR_ENV: &str = "LIMAML_BENCH_KEEP";
/// Overrides where `reference.py` and `.venv` are looked for (default: `bench/` of the source
/// tree this binary was built from, else `./bench`).
const BENCH_DIR_ENV: &str = "LIMAML_BENCH_DIR";

/// The targets of the benchmark (issues 7 and 17), checked and reported, never enforced: ratios
/// against the fastest PyTorch variant, and the large first-order step's fraction of the GEMM peak.
const TARGET_FIRST_ORDER_RATIO: f64 = 2.5;
const TARGET_SECOND_ORDER_RATIO: f64 = 2.5;
const TARGET_EXPORT_RATIO: f64 = 3.0;
const TARGET_SCORING_RATIO: f64 = 1.5;
const TARGET_TRAINING_PEAK_FRACTION: f64 = 0.5;
const TARGET_CACHED_RUN_SECONDS: f64 = 0.2;

/// The square matrix product timed for the GEMM peak, and for how long per layout.
const GEMM_PEAK_SIZE: usize = 1024;
const GEMM_PEAK_SECONDS: f64 = 2.0;
const GEMM_PEAK_SECONDS_QUICK: f64 = 0.3;
/// The GEMM peak timed right before and right after each throughput child, per layout.
const GEMM_WINDOW_PEAK_SECONDS: f64 = 1.0;

/// Users of the scaling series (`--quick` drops the last).
const SCALING_USERS: [usize; 3] = [1_000, 10_000, 100_000];
/// Support and query rows per task in the scaling series (the default, 256, pads meta-batches
/// to the heaviest user's 256 rows and would make 100k users take ~10 minutes here).
const SCALING_MAX_ROWS: usize = 64;
/// Items of every synthetic world here (held fixed so that only the users vary).
const SYNTHETIC_ITEMS: usize = 1_000;

/// One model size: the Meta Block's hidden width, the Global Block's two hidden widths, and the
/// meta-embedding size ("64/64/64" = meta hidden 64, global hidden 64 x 64, embedding 64).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ModelSize {
    name: &'static str,
    meta_hidden: usize,
    global_hidden: usize,
    meta_embedding_dim: usize,
}

const MODEL_SIZES: [ModelSize; 2] = [
    ModelSize { name: "small", meta_hidden: 64, global_hidden: 64, meta_embedding_dim: 64 },
    ModelSize { name: "large", meta_hidden: 256, global_hidden: 256, meta_embedding_dim: 128 },
];

impl ModelSize {
    fn layers(&self) -> String {
        format!("{}/{}/{}", self.meta_hidden, self.global_hidden, self.meta_embedding_dim)
    }

    fn limaml_config(&self, second_order: bool) -> LimamlConfig {
        bench_limaml_config(self.meta_hidden, self.global_hidden, self.meta_embedding_dim, second_order)
    }

    fn by_name(name: &str) -> Result<ModelSize, Failure> {
        MODEL_SIZES
            .iter()
            .find(|s| s.name == name)
            .copied()
            .ok_or_else(|| Failure::BadInput(format!("unknown model size `{name}`")))
    }
}

/// How much work one `limaml bench` does.
struct BenchPlan {
    /// Users of the throughput data set.
    users: usize,
    /// Timed outer steps per throughput measurement (after one warm-up step).
    meta_batches: usize,
    scaling_users: Vec<usize>,
    time_cached_run: bool,
}

impl BenchPlan {
    fn new(quick: bool) -> BenchPlan {
        if quick {
            BenchPlan { users: 400, meta_batches: 8, scaling_users: SCALING_USERS[..2].to_vec(), time_cached_run: false }
        } else {
            BenchPlan { users: 2_000, meta_batches: 100, scaling_users: SCALING_USERS.to_vec(), time_cached_run: true }
        }
    }
}

pub fn bench_command(args: &BenchArgs) -> Result<ExitCode, Failure> {
    if let Ok(job) = std::env::var(CHILD_JOB_ENV) {
        return run_child(&job);
    }
    let plan = BenchPlan::new(args.quick);
    let threads = candle_core::utils::get_num_threads();
    let work_dir = std::env::temp_dir().join(format!("limaml-bench-{}", std::process::id()));
    fs::create_dir_all(&work_dir)?;
    let outcome = (|| -> Result<Value, Failure> {
        if args.suite == super::BenchSuite::Search {
            return Ok(json!({ "threads": threads, "search": search::search_bench(args, &work_dir)? }));
        }
        let mut document = if args.suite == super::BenchSuite::Metrics {
            json!({ "threads": threads })
        } else {
            run_benchmarks(&plan, threads, &work_dir, args)?
        };
        if args.suite != super::BenchSuite::Training {
            document["metrics"] = metrics::metrics_bench(args)?;
        }
        Ok(document)
    })();
    if std::env::var_os(KEEP_WORK_DIR_ENV).is_some() {
        eprintln!("bench: kept {}", work_dir.display());
    } else {
        let _ = fs::remove_dir_all(&work_dir);
    }
    let document = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&document).expect("JSON values serialize"));
    } else {
        if !document["search"].is_null() {
            search::print_human(&document["search"]);
        } else if args.suite != super::BenchSuite::Metrics {
            print_human(&document);
        }
        if !document["metrics"].is_null() {
            metrics::print_human(&document["metrics"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(args: &BenchArgs, message: &str) {
    if !args.json || std::env::var_os("LIMAML_BENCH_VERBOSE").is_some() {
        eprintln!("bench: {message}");
    }
}

fn run_benchmarks(plan: &BenchPlan, threads: usize, work_dir: &Path, args: &BenchArgs) -> Result<Value, Failure> {
    let load_at_start = load_average();
    let data_dir = work_dir.join("data");
    fs::create_dir_all(&data_dir)?;
    progress(args, &format!("generating {} synthetic users", plan.users));
    let (dataset, tasks) = synthetic_task_set(plan.users, SYNTHETIC_ITEMS, 0)?;
    let data_summary = write_task_set(&data_dir, &dataset.interactions, &tasks)?;
    let reference = TorchReference::locate();
    if let Err(why) = &reference {
        progress(args, why);
    }
    progress(args, &format!("GEMM peak ({GEMM_PEAK_SIZE}^3 f32 products, {threads} threads)"));
    let seconds = if args.quick { GEMM_PEAK_SECONDS_QUICK } else { GEMM_PEAK_SECONDS };
    let gemm_peak: GemmPeak = run_child_process(&ChildJob::GemmPeak { threads, seconds })?;

    let window_seconds = if args.quick { GEMM_PEAK_SECONDS_QUICK } else { GEMM_WINDOW_PEAK_SECONDS };
    let measure_limaml = |size: ModelSize, when: &str| -> Result<serde_json::Map<String, Value>, Failure> {
        let mut limaml = serde_json::Map::new();
        for second_order in [false, true] {
            let order = if second_order { "second_order" } else { "first_order" };
            progress(args, &format!("limaml {} ({}) {order}{when}", size.name, size.layers()));
            let job = ChildJob::Throughput {
                data_dir: data_dir.clone(),
                size: size.name.into(),
                second_order,
                meta_batches: plan.meta_batches,
            };
            limaml.insert(order.into(), windowed_measurement(&job, threads, window_seconds)?);
        }
        Ok(limaml)
    };

    let mut configs = Vec::new();
    for size in MODEL_SIZES {
        let before = measure_limaml(size, "")?;
        let torch = match &reference {
            Ok(reference) => {
                progress(args, &format!("pytorch {} ({})", size.name, size.layers()));
                let config = write_reference_config(&data_dir, size, plan.meta_batches, threads)?;
                Some(reference.run(&data_dir, &config, threads)?)
            }
            Err(_) => None,
        };
        // With a reference, limaml is timed again right after it: the host's speed drifts
        // over minutes (bench/README.md), and the mean of the two brackets the reference's run.
        let limaml = if torch.is_some() {
            let mut after = measure_limaml(size, ", again after pytorch")?;
            let mut limaml = serde_json::Map::new();
            for (order, first) in before {
                let second = after.remove(&order).expect("both runs measure the same orders");
                limaml.insert(order, bracketed(first, second));
            }
            limaml
        } else {
            before
        };
        let ratio = |ours: &str, field: &str| -> Value {
            let theirs = torch.as_ref().and_then(|t| t[ours][field].as_f64());
            let ours = limaml[ours][field].as_f64();
            match (ours, theirs) {
                (Some(a), Some(b)) if b > 0.0 => json!(a / b),
                _ => Value::Null,
            }
        };
        configs.push(json!({
            "name": size.name,
            "layers": size.layers(),
            "meta_hidden": [size.meta_hidden],
            "global_hidden": [size.global_hidden, size.global_hidden],
            "meta_embedding_dim": size.meta_embedding_dim,
            "meta_batch": BENCH_META_BATCH,
            "inner_steps": BENCH_INNER_STEPS,
            "limaml": Value::Object(limaml.clone()),
            "torch": torch.clone().unwrap_or(Value::Null),
            "first_order_ratio_vs_torch": ratio("first_order", "tasks_per_second"),
            "second_order_ratio_vs_torch": ratio("second_order", "tasks_per_second"),
            "export_ratio_vs_torch": ratio("first_order", "entities_per_second"),
            "scoring_ratio_vs_torch": ratio("first_order", "rows_per_second"),
        }));
    }

    let mut scaling = Vec::new();
    for &users in &plan.scaling_users {
        progress(args, &format!("scaling: {users} users"));
        let point: ScalingPoint = run_child_process(&ChildJob::Scaling { users, size: MODEL_SIZES[0].name.into() })?;
        scaling.push(point);
    }

    let cached_run = if plan.time_cached_run {
        progress(args, "cached `limaml run experiments/quick.toml`");
        time_cached_run(work_dir)?
    } else {
        Value::Null
    };

    // Top-level ratios: the smallest over the model sizes (the targets say "at least").
    let worst = |field: &str| -> Value {
        let values: Vec<f64> = configs.iter().filter_map(|c| c[field].as_f64()).collect();
        if values.len() < configs.len() {
            return Value::Null;
        }
        json!(values.into_iter().fold(f64::INFINITY, f64::min))
    };
    let first_order = worst("first_order_ratio_vs_torch");
    let second_order = worst("second_order_ratio_vs_torch");
    let export = worst("export_ratio_vs_torch");
    let scoring = worst("scoring_ratio_vs_torch");
    // The large model's first-order step against the GEMM peak (issue 17's target).
    let training_peak_fraction = configs
        .iter()
        .find(|c| c["name"] == json!(MODEL_SIZES[1].name))
        .map_or(Value::Null, |c| c["limaml"]["first_order"]["peak_fraction"]["train"].clone());
    let met = |ratio: &Value, target: f64| ratio.as_f64().map(|r| r >= target);
    Ok(json!({
        "quick": args.quick,
        "threads": threads,
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "torch": match &reference {
            Ok(r) => json!({"available": true, "python": r.python}),
            Err(why) => json!({"available": false, "reason": why}),
        },
        "data": data_summary,
        "meta_batches_timed": plan.meta_batches,
        "first_order_ratio_vs_torch": first_order,
        "second_order_ratio_vs_torch": second_order,
        "export_ratio_vs_torch": export,
        "scoring_ratio_vs_torch": scoring,
        "ratios_are": "limaml throughput (with the reference: the mean of limaml's runs before and after it) / the fastest PyTorch variant's; top-level values are the smallest over the model sizes",
        "gemm_peak": gemm_peak,
        "training_peak_fraction": training_peak_fraction,
        "configs": configs,
        "scaling": {
            "model": MODEL_SIZES[0].name,
            "max_support": SCALING_MAX_ROWS,
            "max_query": SCALING_MAX_ROWS,
            "items": SYNTHETIC_ITEMS,
            "points": scaling,
            "per_1k_users": per_thousand_users(&scaling),
        },
        "cached_run": cached_run,
        "targets": {
            "first_order_ratio": {"target": TARGET_FIRST_ORDER_RATIO, "met": met(&first_order, TARGET_FIRST_ORDER_RATIO)},
            "second_order_ratio": {"target": TARGET_SECOND_ORDER_RATIO, "met": met(&second_order, TARGET_SECOND_ORDER_RATIO)},
            "export_ratio": {"target": TARGET_EXPORT_RATIO, "met": met(&export, TARGET_EXPORT_RATIO)},
            "scoring_ratio": {"target": TARGET_SCORING_RATIO, "met": met(&scoring, TARGET_SCORING_RATIO)},
            "training_peak_fraction": {
                "target": TARGET_TRAINING_PEAK_FRACTION,
                "met": met(&training_peak_fraction, TARGET_TRAINING_PEAK_FRACTION),
            },
            "cached_run_seconds": {
                "target": TARGET_CACHED_RUN_SECONDS,
                "met": cached_run["cached_seconds"].as_f64().map(|s| s < TARGET_CACHED_RUN_SECONDS),
            },
        },
    }))
}

/// Cost per 1000 users at each scaling point: constant values mean linear growth.
fn per_thousand_users(points: &[ScalingPoint]) -> Vec<Value> {
    points
        .iter()
        .map(|p| {
            let k = p.users as f64 / 1000.0;
            json!({
                "users": p.users,
                "train_epoch_seconds": p.train_epoch_seconds / k,
                "export_seconds": p.export_seconds / k,
                "store_bytes": p.store_bytes as f64 / k,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Data

/// The synthetic world of `users` users (and [`SYNTHETIC_ITEMS`] items), sliced with the default
/// split (user tasks, time split, a quarter of each user's rows as query).
/// Synthetic data of `users` x `items`, sliced with the default split (every bench's data).
fn synthetic_task_set(users: usize, items: usize, seed: u64) -> Result<(Dataset, TaskSet), Failure> {
    let config = DataConfig {
        source: DataSource::Synthetic,
        synthetic: SyntheticConfig { seed, n_users: users, n_items: items, ..SyntheticConfig::default() },
        ..DataConfig::default()
    };
    let dataset = limaml_data::load(&config, Path::new(".")).map_err(failed)?;
    let tasks = limaml_data::slice(&dataset, &SplitConfig::default(), 1).map_err(failed)?;
    Ok((dataset, tasks))
}

/// Runs the throughput child `job` between two GEMM-peak children (`window_seconds` per layout)
/// and reports it with its window's peak (`gemm_peak_window`: the faster of the two) and every
/// phase's `peak_fraction` of that peak. The peak and the phases are timed seconds apart, so the
/// host's drift over minutes (bench/README.md) moves both alike; the peak is its own child so
/// that the throughput child's peak RSS is the measurement's alone.
fn windowed_measurement(job: &ChildJob, threads: usize, window_seconds: f64) -> Result<Value, Failure> {
    let peak_job = ChildJob::GemmPeak { threads, seconds: window_seconds };
    let peak_before: GemmPeak = run_child_process(&peak_job)?;
    let report: ThroughputReport = run_child_process(job)?;
    let peak_after: GemmPeak = run_child_process(&peak_job)?;
    let peak = peak_before.peak_flops_per_second.max(peak_after.peak_flops_per_second);
    let mut value = serde_json::to_value(&report).expect("serializes");
    let r = &report.result;
    value["gemm_peak_window"] = json!({
        "before": peak_before,
        "after": peak_after,
        "peak_flops_per_second": peak,
    });
    value["peak_fraction"] = json!({
        "train": r.train_flops_per_second / peak,
        "export": r.export_flops_per_second / peak,
        "score": r.score_flops_per_second / peak,
    });
    Ok(value)
}

/// One limaml measurement from two, timed before and after the PyTorch reference: every rate
/// and peak fraction is the mean of the two (the reference ran between them), the peak RSS the
/// larger; both runs are kept under `runs`.
fn bracketed(before: Value, after: Value) -> Value {
    let mean = |path: &[&str]| -> Value {
        let get = |v: &Value| path.iter().fold(v, |v, key| &v[*key]).as_f64();
        match (get(&before), get(&after)) {
            (Some(a), Some(b)) => json!((a + b) / 2.0),
            _ => Value::Null,
        }
    };
    let mut merged = before.clone();
    for field in [
        "tasks_per_second",
        "entities_per_second",
        "rows_per_second",
        "train_flops_per_second",
        "export_flops_per_second",
        "score_flops_per_second",
    ] {
        merged[field] = mean(&[field]);
    }
    for phase in ["train", "export", "score"] {
        merged["peak_fraction"][phase] = mean(&["peak_fraction", phase]);
    }
    merged["peak_rss_bytes"] = match (before["peak_rss_bytes"].as_u64(), after["peak_rss_bytes"].as_u64()) {
        (Some(a), Some(b)) => json!(a.max(b)),
        (a, b) => json!(a.or(b)),
    };
    merged.as_object_mut().expect("a report is an object").remove("gemm_peak_window");
    merged["runs"] = json!([before, after]);
    merged["bracket"] = json!("timed before and after the PyTorch reference of this size; rates and fractions are the mean of the two runs");
    merged
}

/// The 1-minute load average (/proc/loadavg): above the core count, other processes compete
/// for the CPUs and every throughput here is understated (spinning thread pools suffer most).
fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Cached run

/// Times `limaml run experiments/quick.toml` into a fresh store, then twice more (cached); the
/// faster cached run counts. Null when the spec is not found.
fn time_cached_run(work_dir: &Path) -> Result<Value, Failure> {
    let spec = [PathBuf::from("experiments/quick.toml"), Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quick.toml")]
        .into_iter()
        .find(|p| p.exists());
    let Some(spec) = spec else { return Ok(Value::Null) };
    let store = work_dir.join("store");
    let exe = this_executable()?;
    let mut seconds = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let status = Command::new(&exe)
            .arg("run")
            .arg(&spec)
            .arg("--store")
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(Failure::Failed(format!("limaml run {} failed ({status})", spec.display())));
        }
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok(json!({
        "spec": spec,
        "first_seconds": seconds[0],
        "cached_seconds": seconds[1].min(seconds[2]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tasks_per_second: f64, train_fraction: f64, rss: u64) -> Value {
        json!({
            "tasks": 32,
            "tasks_per_second": tasks_per_second,
            "entities_per_second": 2.0 * tasks_per_second,
            "rows_per_second": 3.0 * tasks_per_second,
            "train_flops_per_second": 1e9,
            "export_flops_per_second": 2e9,
            "score_flops_per_second": 3e9,
            "peak_fraction": {"train": train_fraction, "export": 0.5, "score": 0.25},
            "peak_rss_bytes": rss,
            "gemm_peak_window": {"peak_flops_per_second": 1e10},
        })
    }

    #[test]
    fn a_bracketed_measurement_is_the_mean_of_its_two_runs_and_keeps_both() {
        let merged = bracketed(run(100.0, 0.4, 10), run(300.0, 0.6, 30));
        assert_eq!(merged["tasks_per_second"], json!(200.0));
        assert_eq!(merged["entities_per_second"], json!(400.0));
        assert_eq!(merged["rows_per_second"], json!(600.0));
        assert_eq!(merged["peak_fraction"]["train"], json!(0.5));
        assert_eq!(merged["peak_fraction"]["export"], json!(0.5));
        assert_eq!(merged["peak_rss_bytes"], json!(30));
        assert_eq!(merged["tasks"], json!(32));
        assert_eq!(merged["runs"][0]["tasks_per_second"], json!(100.0));
        assert_eq!(merged["runs"][1]["tasks_per_second"], json!(300.0));
        assert!(merged.get("gemm_peak_window").is_none(), "each run keeps its own window");
    }

    #[test]
    fn a_bracketed_rate_missing_from_either_run_is_null() {
        let mut after = run(300.0, 0.6, 30);
        after["tasks_per_second"] = Value::Null;
        assert_eq!(bracketed(run(100.0, 0.4, 10), after)["tasks_per_second"], Value::Null);
    }
}
