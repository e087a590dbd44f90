//! The bench's child processes: each measurement runs in a fresh process of this binary (the job
//! as JSON in [`CHILD_JOB_ENV`]), so its peak RSS is its own. Owns [`ChildJob`], what a child
//! prints, and the scaling measurement. Must not decide what to measure (`bench` does).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use limaml_data::{DataConfig, DataSource, Interactions, SplitConfig, SyntheticConfig, TaskRole, TaskSet};
use limaml_models::{
    bench_meta_training, export_meta_embeddings, measure_gemm_peak, train, BenchResult, MethodConfig, SupportVersion,
    TrainConfig,
};
use serde::{Deserialize, Serialize};

use super::super::Failure;
use super::{failed, ModelSize, CHILD_JOB_ENV, GEMM_PEAK_SIZE, SCALING_MAX_ROWS, SYNTHETIC_ITEMS};

/// One measurement, run in a child process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum ChildJob {
    /// `bench_meta_training` on the task set in `data_dir/tasks.postcard`.
    Throughput { data_dir: PathBuf, size: String, second_order: bool, meta_batches: usize },
    /// Generate, slice, meta-train one epoch and export for `users` users; sizes of the artifacts.
    Scaling { users: usize, size: String },
    /// The sustained GEMM throughput (`measure_gemm_peak`) with `threads` threads.
    GemmPeak { threads: usize, seconds: f64 },
}

/// What a throughput child prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ThroughputReport {
    #[serde(flatten)]
    pub(super) result: BenchResult,
    pub(super) peak_rss_bytes: Option<u64>,
}

/// What a scaling child prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ScalingPoint {
    pub(super) users: usize,
    pub(super) interactions: usize,
    pub(super) tasks: usize,
    pub(super) meta_train_tasks: usize,
    pub(super) generate_seconds: f64,
    pub(super) slice_seconds: f64,
    /// One meta-training epoch over every meta-train task, plus the validation pass `train` does.
    pub(super) train_epoch_seconds: f64,
    pub(super) export_seconds: f64,
    pub(super) exported_entities: usize,
    pub(super) dataset_bytes: usize,
    pub(super) task_set_bytes: usize,
    pub(super) model_bytes: usize,
    pub(super) meta_embedding_bytes: usize,
    pub(super) store_bytes: usize,
    pub(super) peak_rss_bytes: Option<u64>,
}

/// Runs `job` in a child process of this binary and parses the one JSON document it prints.
pub(super) fn run_child_process<T: serde::de::DeserializeOwned>(job: &ChildJob) -> Result<T, Failure> {
    let output = Command::new(this_executable()?)
        .arg("bench")
        .env(CHILD_JOB_ENV, serde_json::to_string(job).expect("serializes"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(Failure::Failed(format!("benchmark child {job:?} failed ({})", output.status)));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| Failure::Failed(format!("benchmark child {job:?} printed unreadable output: {e}")))
}

/// This binary, as it was started: `/proc/self/exe` on Linux keeps working when a concurrent
/// `cargo build` replaces the file under target/release.
pub(super) fn this_executable() -> Result<PathBuf, Failure> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    Ok(std::env::current_exe()?)
}

pub(super) fn run_child(job: &str) -> Result<ExitCode, Failure> {
    let job: ChildJob =
        serde_json::from_str(job).map_err(|e| Failure::BadInput(format!("{CHILD_JOB_ENV}: {e}")))?;
    let report = match job {
        ChildJob::Throughput { data_dir, size, second_order, meta_batches } => {
            let size = ModelSize::by_name(&size)?;
            let (interactions, tasks): (Interactions, TaskSet) =
                limaml_data::from_bytes(&fs::read(data_dir.join("tasks.postcard"))?)
                    .map_err(failed)?;
            let result = bench_meta_training(
                &size.limaml_config(second_order),
                &TrainConfig::default(),
                &interactions,
                &tasks,
                7,
                meta_batches,
            )
            .map_err(failed)?;
            serde_json::to_value(ThroughputReport { result, peak_rss_bytes: peak_rss_bytes() })
        }
        ChildJob::Scaling { users, size } => serde_json::to_value(scaling_point(users, ModelSize::by_name(&size)?)?),
        ChildJob::GemmPeak { threads, seconds } => serde_json::to_value(measure_gemm_peak(GEMM_PEAK_SIZE, threads, seconds)),
    };
    println!("{}", report.expect("serializes"));
    Ok(ExitCode::SUCCESS)
}

fn scaling_point(users: usize, size: ModelSize) -> Result<ScalingPoint, Failure> {
    let started = Instant::now();
    let config = DataConfig {
        source: DataSource::Synthetic,
        synthetic: SyntheticConfig { seed: 0, n_users: users, n_items: SYNTHETIC_ITEMS, ..SyntheticConfig::default() },
        ..DataConfig::default()
    };
    let dataset = limaml_data::load(&config, Path::new(".")).map_err(failed)?;
    let generate_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tasks = limaml_data::slice(&dataset, &SplitConfig::default(), 1).map_err(failed)?;
    let slice_seconds = started.elapsed().as_secs_f64();

    let method = MethodConfig::Limaml(size.limaml_config(false));
    let train_config = TrainConfig {
        epochs: 1,
        patience: 1,
        max_support: SCALING_MAX_ROWS,
        max_query: SCALING_MAX_ROWS,
        ..TrainConfig::default()
    };
    let started = Instant::now();
    let model = train(&method, &train_config, &dataset.interactions, &tasks, 7, &mut |_| {}).map_err(failed)?;
    let train_epoch_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let table = export_meta_embeddings(&model, &dataset.interactions, &tasks, SupportVersion::Latest)
        .map_err(failed)?;
    let export_seconds = started.elapsed().as_secs_f64();

    let dataset_bytes = limaml_data::to_bytes(&dataset).len();
    let task_set_bytes = limaml_data::to_bytes(&tasks).len();
    let model_bytes = model.to_bytes().map_err(failed)?.len();
    let meta_embedding_bytes = table.to_safetensors_bytes().map_err(failed)?.len();
    Ok(ScalingPoint {
        users,
        interactions: dataset.interactions.len(),
        tasks: tasks.tasks.len(),
        meta_train_tasks: tasks.tasks.iter().filter(|t| t.role == TaskRole::MetaTrain).count(),
        generate_seconds,
        slice_seconds,
        train_epoch_seconds,
        export_seconds,
        exported_entities: table.entity_ids.len(),
        dataset_bytes,
        task_set_bytes,
        model_bytes,
        meta_embedding_bytes,
        store_bytes: dataset_bytes + task_set_bytes + model_bytes + meta_embedding_bytes,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// This process's peak resident set size (`VmHWM` in /proc/self/status), where Linux gives it.
pub(super) fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
