//! Executing a plan: deciding what is cached, running the rest through an [`Executor`], and
//! recording the run. Owns the stage lifecycle (read inputs, run, store artifacts, commit the
//! record) shared by every executor. Must not parse specs or render tables.

pub mod local;
pub mod progress;
pub mod slurm;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicBool;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use petgraph::graph::NodeIndex;
use serde::Serialize;

use crate::plan::{Plan, PlanNode};
use crate::stages::shared::KeptValues;
use crate::stages::{InputSource, StageContext, StageError, StageOutput};
use crate::store::{RunRecord, RunStage, RunStatus, StageRecord, StageStatus, Store, StoreError};
pub use progress::Progress;

/// Runs the stages of a plan that are not cached: locally ([`local`]) or as Slurm jobs ([`slurm`]).
pub trait Executor {
    fn name(&self) -> &'static str;
    /// Runs every stage marked in `job.to_run`, committing each to the store as it finishes,
    /// and returns one result per such stage.
    fn execute(&self, job: &ExecutionJob<'_>) -> Vec<StageResult>;
}

pub struct ExecutionJob<'a> {
    pub plan: &'a Plan,
    pub store: &'a Store,
    pub to_run: Vec<bool>,
    pub run_id: &'a str,
    pub keep_going: bool,
    pub cancel: &'a AtomicBool,
    pub progress: &'a Progress,
}

#[derive(Debug, Clone)]
pub struct StageResult {
    pub node: NodeIndex,
    pub status: StageStatus,
    pub seconds: f64,
    pub error: Option<String>,
    /// The failure was bad input (data files, parameters): exit code 2.
    pub bad_input: bool,
}

impl StageResult {
    pub fn skipped(node: NodeIndex, reason: String) -> Self {
        StageResult { node, status: StageStatus::Skipped, seconds: 0.0, error: Some(reason), bad_input: false }
    }
}

/// Whether each stage of the plan is cached, checking every cached artifact against its digest.
/// A corrupted or missing artifact is reported and its record dropped, so the stage runs again.
pub fn cache_status(plan: &Plan, store: &Store, warn: &dyn Fn(String)) -> Result<Vec<bool>, StoreError> {
    let mut cached = vec![false; plan.graph.node_count()];
    for index in plan.graph.node_indices() {
        let node = plan.node(index);
        let record = match store.stage(&node.key) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            // A record this version cannot read is a cache miss, not a failure.
            Err(error @ StoreError::BadRecord { .. }) => {
                warn(format!("stage {}: {error}; it will be recomputed", node.name));
                if !store.is_read_only() {
                    store.forget_stage(&node.key)?;
                }
                continue;
            }
            Err(error) => return Err(error),
        };
        let mut intact = true;
        for (name, artifact) in &record.outputs {
            if let Err(error) = store.verify_artifact(artifact) {
                warn(format!("stage {}: output {name}: {error}; it will be recomputed", node.name));
                intact = false;
            }
        }
        if intact {
            cached[index.index()] = true;
        } else if !store.is_read_only() {
            store.forget_stage(&node.key)?;
        }
    }
    Ok(cached)
}

/// Inputs read from committed stage records in the store.
struct StoreInputs<'a> {
    store: &'a Store,
    records: BTreeMap<String, StageRecord>,
    order: Vec<String>,
}

impl InputSource for StoreInputs<'_> {
    fn artifact(&self, role: &str, name: &str) -> Result<Vec<u8>, StageError> {
        let record = self.records.get(role).ok_or_else(|| StageError::Failed(format!("no input '{role}'")))?;
        let artifact = record
            .outputs
            .get(name)
            .ok_or_else(|| StageError::Failed(format!("input '{role}' ({}) has no artifact '{name}'", record.name)))?;
        self.store.get_artifact(artifact).map_err(|e| StageError::Failed(e.to_string()))
    }

    fn metrics(&self, role: &str) -> Result<serde_json::Value, StageError> {
        self.records
            .get(role)
            .map(|r| r.metrics.clone())
            .ok_or_else(|| StageError::Failed(format!("no input '{role}'")))
    }

    fn roles(&self) -> Vec<String> {
        self.order.clone()
    }

    fn digest(&self, role: &str, name: &str) -> Option<String> {
        Some(self.records.get(role)?.outputs.get(name)?.digest.clone())
    }
}

/// Test hooks: `LIMAML_FAIL_STAGE` (comma-separated substrings of stage names that fail) and
/// `LIMAML_STAGE_SLEEP_MS` (a pause before each stage). Used by the crash and failure tests.
fn injected_failure(name: &str) -> Option<String> {
    let patterns = std::env::var("LIMAML_FAIL_STAGE").ok()?;
    patterns
        .split(',')
        .filter(|p| !p.is_empty())
        .find(|p| name.contains(*p))
        .map(|p| format!("failure injected by LIMAML_FAIL_STAGE={p}"))
}

/// Runs one stage against any input source and returns its output without touching the store:
/// the test hooks, then the stage, with a panic turned into an error. The caller commits (the
/// local executor to the store; a cluster job to its staging folder).
pub fn execute_stage(
    node: &PlanNode,
    inputs: &dyn InputSource,
    cancel: &AtomicBool,
    progress: &(dyn Fn(String) + Sync),
    kept: Option<&KeptValues>,
) -> Result<StageOutput, StageError> {
    if let Ok(ms) = std::env::var("LIMAML_STAGE_SLEEP_MS") {
        std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
    }
    if let Some(message) = injected_failure(&node.name) {
        return Err(StageError::Failed(message));
    }
    let context = StageContext { inputs, progress, cancelled: cancel, kept };
    std::panic::catch_unwind(AssertUnwindSafe(|| node.stage.run(&context))).map_err(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        StageError::Failed(format!("stage panicked: {text}"))
    })?
}

/// The whole life of one stage: read inputs, run, store artifacts, commit the record. The values
/// it decodes through `StageContext::decode_shared` go into `kept` when given.
pub fn run_stage(job: &ExecutionJob<'_>, index: NodeIndex, kept: Option<&KeptValues>) -> StageResult {
    let node = job.plan.node(index);
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    job.progress.started(&node.name);
    let outcome = (|| -> Result<StageRecord, StageError> {
        let mut records = BTreeMap::new();
        let mut order = Vec::new();
        for (role, input) in &node.inputs {
            let upstream = job.plan.node(*input);
            let record = job
                .store
                .stage(&upstream.key)
                .map_err(|e| StageError::Failed(e.to_string()))?
                .ok_or_else(|| StageError::Failed(format!("input {} is not in the store", upstream.name)))?;
            records.insert(role.clone(), record);
            order.push(role.clone());
        }
        let inputs = StoreInputs { store: job.store, records, order };
        let name = node.name.clone();
        let report = move |message: String| job.progress.message(&name, message);
        let output = execute_stage(node, &inputs, job.cancel, &report, kept)?;
        let mut outputs = BTreeMap::new();
        for (name, bytes) in &output.artifacts {
            let artifact = job.store.put_artifact(bytes).map_err(|e| StageError::Failed(e.to_string()))?;
            outputs.insert(name.clone(), artifact);
        }
        let timing = StageTiming { started_unix_ms, seconds: started.elapsed().as_secs_f64(), host: hostname() };
        let record = stage_record(node, outputs, output.metrics, timing, job.run_id);
        job.store.commit_stage(&record).map_err(|e| StageError::Failed(e.to_string()))?;
        Ok(record)
    })();
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(_) => {
            job.progress.finished(&node.name, "done", seconds);
            StageResult { node: index, status: StageStatus::Executed, seconds, error: None, bad_input: false }
        }
        Err(error) => {
            let bad_input = matches!(error, StageError::BadInput(_));
            let status =
                if matches!(error, StageError::Cancelled) { StageStatus::Skipped } else { StageStatus::Failed };
            job.progress.finished(
                &node.name,
                if status == StageStatus::Failed { "FAILED" } else { "stopped" },
                seconds,
            );
            if status == StageStatus::Failed {
                tracing::error!(stage = node.name, "{error}");
            }
            StageResult { node: index, status, seconds, error: Some(error.to_string()), bad_input }
        }
    }
}

/// When and where a stage ran.
pub struct StageTiming {
    pub started_unix_ms: u64,
    pub seconds: f64,
    pub host: String,
}

/// The record committed for a finished stage of the plan (by any executor).
pub fn stage_record(
    node: &crate::plan::PlanNode,
    outputs: BTreeMap<String, crate::store::ArtifactRef>,
    metrics: serde_json::Value,
    timing: StageTiming,
    run_id: &str,
) -> StageRecord {
    StageRecord {
        key: node.key.clone(),
        name: node.name.clone(),
        kind: node.components.kind.clone(),
        components: node.components.clone(),
        outputs,
        metrics,
        started_unix_ms: timing.started_unix_ms,
        seconds: timing.seconds,
        host: timing.host,
        run_id: run_id.to_string(),
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A new run id: UTC start time to the millisecond plus four hex digits; ids sort by start time.
pub fn new_run_id(spec_digest: &str) -> String {
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    let digits: String = stamp.chars().filter(|c| c.is_ascii_digit()).take(17).collect();
    let nanos = now.duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let tag = blake3::hash(format!("{spec_digest}{nanos}{}", std::process::id()).as_bytes()).to_hex();
    format!("{}-{}.{}-{}", &digits[..8], &digits[8..14], &digits[14..], &tag[..4])
}

/// What a run did, for the summary table and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub experiment: String,
    pub status: RunStatus,
    pub executed: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub stages: Vec<RunStage>,
    /// Per-method metrics from the report stage (empty when it did not run).
    pub methods: serde_json::Value,
    /// Per searched method: its trials and the winner (`stages::select`); absent without `[search]`.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub search: serde_json::Value,
    /// Legal but suspicious things in the data (`limaml_data::check`), from the load stages.
    pub data_warnings: Vec<limaml_data::DataWarning>,
    /// Failures were bad input (exit 2) rather than stage errors (exit 1).
    #[serde(skip)]
    pub bad_input: bool,
}

pub struct RunOptions<'a> {
    pub keep_going: bool,
    pub cancel: &'a AtomicBool,
    pub show_progress: bool,
    pub quiet: bool,
}

/// Runs a plan: records the run, executes what is not cached, and fills in the outcome.
pub fn run_plan(
    plan: &Plan,
    spec: &crate::spec::LoadedSpec,
    store: &Store,
    executor: &dyn Executor,
    options: &RunOptions<'_>,
) -> Result<RunOutcome, StoreError> {
    let started = Instant::now();
    let run_id = new_run_id(&spec.digest);
    store.set_owner(&format!("run {run_id} (pid {})", std::process::id()));
    let mut order = plan
        .topological_order()
        .map_err(|e| StoreError::Database { path: store.root().to_path_buf(), message: e.to_string() })?;
    // Pipeline order for people: by depth in the DAG, then by name.
    let mut depth = vec![0usize; plan.graph.node_count()];
    for &index in &order {
        depth[index.index()] = plan.node(index).inputs.iter().map(|(_, i)| depth[i.index()] + 1).max().unwrap_or(0);
    }
    order.sort_by(|a, b| (depth[a.index()], &plan.node(*a).name).cmp(&(depth[b.index()], &plan.node(*b).name)));
    // Warnings while checking the cache print as plain lines; the bars come with the work.
    let progress = Progress::new(0, false, options.quiet);
    let cached = cache_status(plan, store, &|text| progress.note(&format!("warning: {text}")))?;
    let mut record = RunRecord {
        id: run_id.clone(),
        spec_path: spec.path.display().to_string(),
        spec_text: spec.text.clone(),
        spec_digest: spec.digest.clone(),
        overrides: spec.overrides.clone(),
        experiment: plan.experiment.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        host: hostname(),
        started_unix_ms: unix_ms(),
        finished_unix_ms: None,
        status: RunStatus::Running,
        stages: order
            .iter()
            .map(|&i| RunStage {
                name: plan.node(i).name.clone(),
                key: plan.node(i).key.clone(),
                kind: plan.node(i).components.kind.clone(),
                status: if cached[i.index()] { StageStatus::Cached } else { StageStatus::Skipped },
                seconds: 0.0,
                error: None,
            })
            .collect(),
        metrics: serde_json::Value::Null,
        search: serde_json::Value::Null,
    };
    store.put_run(&record)?;
    let to_run: Vec<bool> = cached.iter().map(|c| !c).collect();
    let pending = to_run.iter().filter(|&&r| r).count();
    let progress = Progress::new(pending, options.show_progress, options.quiet);
    if pending > 0 {
        progress.note(&format!(
            "run {run_id}: {pending} stage(s) to run, {} cached ({} executor)",
            cached.iter().filter(|&&c| c).count(),
            executor.name()
        ));
    }
    let job = ExecutionJob {
        plan,
        store,
        to_run,
        run_id: &run_id,
        keep_going: options.keep_going,
        cancel: options.cancel,
        progress: &progress,
    };
    let results = if pending > 0 { executor.execute(&job) } else { Vec::new() };
    progress.done();
    let mut bad_input = false;
    for result in &results {
        bad_input |= result.bad_input;
        let name = &plan.node(result.node).name;
        if let Some(stage) = record.stages.iter_mut().find(|s| &s.name == name) {
            stage.status = result.status;
            stage.seconds = result.seconds;
            stage.error = result.error.clone();
        }
    }
    let count = |status: StageStatus| record.stages.iter().filter(|s| s.status == status).count();
    let (failed, skipped) = (count(StageStatus::Failed), count(StageStatus::Skipped));
    record.status = if failed > 0 {
        RunStatus::Failed
    } else if skipped > 0 {
        RunStatus::Interrupted
    } else {
        RunStatus::Succeeded
    };
    if let Some(report) = plan.report {
        if let Some(report_record) = store.stage(&plan.node(report).key)? {
            record.metrics = report_record.metrics.get("methods").cloned().unwrap_or_default();
            record.search = report_record.metrics.get("search").cloned().unwrap_or_default();
        }
    }
    record.finished_unix_ms = Some(unix_ms());
    store.put_run(&record)?;
    let data_warnings = data_warnings(plan, store);
    Ok(RunOutcome {
        run_id,
        experiment: plan.experiment.clone(),
        status: record.status,
        executed: count(StageStatus::Executed),
        cached: count(StageStatus::Cached),
        failed,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
        stages: record.stages.clone(),
        methods: record.metrics.clone(),
        search: record.search.clone(),
        data_warnings,
        bad_input,
    })
}

/// The data warnings the load stages recorded in their metrics, each once.
fn data_warnings(plan: &Plan, store: &Store) -> Vec<limaml_data::DataWarning> {
    let mut warnings: Vec<limaml_data::DataWarning> = Vec::new();
    for index in plan.graph.node_indices() {
        let node = plan.node(index);
        if node.components.kind != "load_data" {
            continue;
        }
        let Ok(Some(record)) = store.stage(&node.key) else { continue };
        let found: Vec<limaml_data::DataWarning> =
            record.metrics.get("warnings").and_then(|w| serde_json::from_value(w.clone()).ok()).unwrap_or_default();
        for warning in found {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
    }
    warnings
}
