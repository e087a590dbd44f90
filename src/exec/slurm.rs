//! The Slurm executor: every stage that is not cached becomes an `sbatch` job running
//! `limaml stage exec`, chained with `--dependency=afterok:`; stages of one kind that wait on
//! the same upstream jobs (the cells of a sweep) go out together as one job array.
//!
//! Owns the staging folder on the shared file system, the ledger of submitted jobs, submission,
//! polling (`squeue`, `scontrol show job`), cancellation (`scancel`), and the job side of a
//! stage (`run_staged_stage`). The coordinator (the `limaml run` process, which holds the store
//! lock) is the only writer of the store and of the ledger: jobs never open the store (sled
//! admits one process), they read inputs from and write outputs to the staging folder, and the
//! coordinator verifies the digests of what they staged before committing it.
//!
//! Staging layout, under `<store>/staging/`:
//! - `stages/<stage key>/`: one stage's output, as staged by its job (or exported from the store
//!   by the coordinator for inputs that are already cached): artifact files named by their
//!   blake3 digest, then `result.json` ([`StagedResult`]), written last and atomically; or
//!   `error.json` ([`StagedFailure`]) when the stage failed. Keys name content, so a key's folder
//!   means the same thing in every run; that lets a restarted coordinator (a new run id) resume
//!   jobs an earlier one submitted.
//! - `logs/<job id>.log`: each job's stdout and stderr (kept for failed stages until a later run).
//! - `jobs.json`: the ledger ([`JobLedger`]), stage key -> submitted job, rewritten atomically
//!   after every submission. It is how a restarted coordinator finds its jobs and how
//!   `limaml cancel RUN` finds what to cancel.
//!
//! Must not: touch sled from a job, decide what is cached (the caller passes `to_run`), or
//! submit a stage a second time while a job for it is still queued or running.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use super::{execute_stage, hostname, stage_record, unix_ms, ExecutionJob, Executor, StageResult, StageTiming};
use crate::plan::{Plan, PlanNode};
use crate::stages::{InputSource, StageError, StageOutput};
use crate::store::{ArtifactRef, StageRecord, StageStatus, Store, StoreError};

/// Resource requests every job gets unless a `--slurm-opt` sets the same thing.
pub const DEFAULT_CPUS_PER_TASK: &str = "--cpus-per-task=1";
pub const DEFAULT_MEMORY: &str = "--mem=2G";
pub const DEFAULT_TIME_LIMIT: &str = "--time=01:00:00";

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run `{command}` (is Slurm installed and on PATH?): {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed { command: String, status: String, stderr: String },
    #[error("`{command}` printed something unexpected: {output:?}")]
    Unparsable { command: String, output: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("staged output {path}: {message}")]
    BadStaging { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SlurmError {
    fn io(path: &Path, source: io::Error) -> Self {
        SlurmError::Io { path: path.to_path_buf(), source }
    }
}

// ---------------------------------------------------------------------------------------------
// Staging folder

/// What a job staged for one finished stage: its artifacts (files named by digest) and metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedResult {
    pub key: String,
    pub name: String,
    pub outputs: BTreeMap<String, ArtifactRef>,
    pub metrics: serde_json::Value,
    pub started_unix_ms: u64,
    pub seconds: f64,
    pub host: String,
}

/// What a job staged for a stage that failed: the stage's own error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedFailure {
    pub key: String,
    pub name: String,
    pub message: String,
    /// The stage's input was bad (the job exits with code 2).
    pub bad_input: bool,
}

/// The shared staging folder of a store (see the module documentation for its layout).
#[derive(Debug, Clone)]
pub struct Staging {
    root: PathBuf,
}

impl Staging {
    /// The staging folder of the store at `store_root`, made absolute so jobs can find it.
    pub fn for_store(store_root: &Path) -> Self {
        Staging::at(&store_root.join("staging"))
    }

    pub fn at(root: &Path) -> Self {
        Staging { root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stage_dir(&self, key: &str) -> PathBuf {
        self.root.join("stages").join(key)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log_path(&self, job_id: &str) -> PathBuf {
        self.logs_dir().join(format!("{job_id}.log"))
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("jobs.json")
    }

    fn create_dirs(&self) -> Result<(), SlurmError> {
        for dir in [self.root.join("stages"), self.logs_dir()] {
            fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        }
        Ok(())
    }

    /// Removes whatever an earlier attempt staged for `key`, before a fresh job is submitted.
    fn clear_stage(&self, key: &str) -> Result<(), SlurmError> {
        let dir = self.stage_dir(key);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SlurmError::io(&dir, e)),
        }
        fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))
    }

    /// Reads `result.json` of `key`: `None` when the stage has staged no result.
    pub fn read_result(&self, key: &str) -> Result<Option<StagedResult>, SlurmError> {
        let path = self.stage_dir(key).join("result.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SlurmError::io(&path, e)),
        };
        let result: StagedResult = serde_json::from_slice(&bytes)
            .map_err(|e| SlurmError::BadStaging { path: path.clone(), message: e.to_string() })?;
        if result.key != key {
            return Err(SlurmError::BadStaging { path, message: format!("it is the result of stage key {}", result.key) });
        }
        Ok(Some(result))
    }

    pub fn read_failure(&self, key: &str) -> Option<StagedFailure> {
        let bytes = fs::read(self.stage_dir(key).join("error.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The bytes of a staged artifact of `key`, checked against its digest and size.
    pub fn read_artifact(&self, key: &str, artifact: &ArtifactRef) -> Result<Vec<u8>, SlurmError> {
        let path = self.stage_dir(key).join(&artifact.digest);
        let mut bytes = Vec::new();
        fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| SlurmError::io(&path, e))?;
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if actual != artifact.digest || bytes.len() as u64 != artifact.size {
            return Err(SlurmError::BadStaging {
                path,
                message: format!("hashes to {actual} ({} bytes), expected {} ({} bytes)", bytes.len(), artifact.digest, artifact.size),
            });
        }
        Ok(bytes)
    }

    /// Writes one artifact file named by its digest (skipped when present with the right size).
    fn write_artifact(&self, key: &str, bytes: &[u8]) -> Result<ArtifactRef, SlurmError> {
        let digest = blake3::hash(bytes).to_hex().to_string();
        let path = self.stage_dir(key).join(&digest);
        if fs::metadata(&path).map(|m| m.len() == bytes.len() as u64).unwrap_or(false) {
            return Ok(ArtifactRef { digest, size: bytes.len() as u64 });
        }
        write_atomically(&path, bytes)?;
        Ok(ArtifactRef { digest, size: bytes.len() as u64 })
    }

    /// Job side: stages a finished stage's artifacts, then its `result.json`.
    pub fn write_result(&self, node: &PlanNode, output: &StageOutput, started_unix_ms: u64, seconds: f64) -> Result<StagedResult, SlurmError> {
        let dir = self.stage_dir(&node.key);
        fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        let mut outputs = BTreeMap::new();
        for (name, bytes) in &output.artifacts {
            outputs.insert(name.clone(), self.write_artifact(&node.key, bytes)?);
        }
        let result = StagedResult {
            key: node.key.clone(),
            name: node.name.clone(),
            outputs,
            metrics: output.metrics.clone(),
            started_unix_ms,
            seconds,
            host: hostname(),
        };
        write_json_atomically(&dir.join("result.json"), &result)?;
        Ok(result)
    }

    /// Job side: records why a stage failed, for the coordinator's message.
    pub fn write_failure(&self, node: &PlanNode, error: &StageError) -> Result<(), SlurmError> {
        let dir = self.stage_dir(&node.key);
        fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        let failure = StagedFailure {
            key: node.key.clone(),
            name: node.name.clone(),
            message: error.to_string(),
            bad_input: matches!(error, StageError::BadInput(_)),
        };
        write_json_atomically(&dir.join("error.json"), &failure)
    }

    /// Coordinator side: copies a cached stage's artifacts out of the store so jobs can read
    /// them. Skipped when an intact-looking export (or a job's result) is already there.
    pub fn export_cached(&self, store: &Store, record: &StageRecord) -> Result<(), SlurmError> {
        if let Some(existing) = self.read_result(&record.key).ok().flatten() {
            let dir = self.stage_dir(&record.key);
            let complete = existing.outputs == record.outputs
                && existing.outputs.values().all(|a| fs::metadata(dir.join(&a.digest)).map(|m| m.len() == a.size).unwrap_or(false));
            if complete {
                return Ok(());
            }
        }
        self.clear_stage(&record.key)?;
        for artifact in record.outputs.values() {
            let bytes = store.get_artifact(artifact)?;
            self.write_artifact(&record.key, &bytes)?;
        }
        let result = StagedResult {
            key: record.key.clone(),
            name: record.name.clone(),
            outputs: record.outputs.clone(),
            metrics: record.metrics.clone(),
            started_unix_ms: record.started_unix_ms,
            seconds: record.seconds,
            host: record.host.clone(),
        };
        write_json_atomically(&self.stage_dir(&record.key).join("result.json"), &result)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SlurmError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SlurmError::io(path, e)
    })
}

fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), SlurmError> {
    let bytes = serde_json::to_vec_pretty(value).expect("staging JSON serializes");
    write_atomically(path, &bytes)
}

/// Inputs of a stage running in a job: read from the staging folder, verified on every read.
struct StagedInputs<'a> {
    staging: &'a Staging,
    /// Role -> the input's key and staged result, in the order the stage reads them.
    inputs: Vec<(String, String, StagedResult)>,
}

impl StagedInputs<'_> {
    fn find(&self, role: &str) -> Result<&(String, String, StagedResult), StageError> {
        self.inputs.iter().find(|(r, _, _)| r == role).ok_or_else(|| StageError::Failed(format!("no input '{role}'")))
    }
}

impl InputSource for StagedInputs<'_> {
    fn artifact(&self, role: &str, name: &str) -> Result<Vec<u8>, StageError> {
        let (_, key, result) = self.find(role)?;
        let artifact = result
            .outputs
            .get(name)
            .ok_or_else(|| StageError::Failed(format!("input '{role}' ({}) has no artifact '{name}'", result.name)))?;
        self.staging.read_artifact(key, artifact).map_err(|e| StageError::Failed(e.to_string()))
    }

    fn metrics(&self, role: &str) -> Result<serde_json::Value, StageError> {
        Ok(self.find(role)?.2.metrics.clone())
    }

    fn roles(&self) -> Vec<String> {
        self.inputs.iter().map(|(role, _, _)| role.clone()).collect()
    }

    fn digest(&self, role: &str, name: &str) -> Option<String> {
        Some(self.find(role).ok()?.2.outputs.get(name)?.digest.clone())
    }
}

/// Job side (`limaml stage exec`): runs the stage of `plan` whose key is `key`, reading its
/// inputs from `staging` and staging its output there (or its error). Never opens the store.
pub fn run_staged_stage(plan: &Plan, key: &str, staging: &Staging) -> Result<StagedResult, StageError> {
    let index = plan.graph.node_indices().find(|&i| plan.node(i).key == key).ok_or_else(|| {
        StageError::BadInput(format!("the plan has no stage with key {key} (did the spec or its data change since the job was submitted?)"))
    })?;
    let node = plan.node(index);
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    eprintln!("limaml stage exec: {} (key {}) on {}", node.name, node.short_key(), hostname());
    let outcome = (|| -> Result<StagedResult, StageError> {
        let mut inputs = Vec::new();
        for (role, input) in &node.inputs {
            let upstream = plan.node(*input);
            let result = staging
                .read_result(&upstream.key)
                .map_err(|e| StageError::Failed(e.to_string()))?
                .ok_or_else(|| StageError::Failed(format!("input {} has no staged output in {}", upstream.name, staging.root().display())))?;
            inputs.push((role.clone(), upstream.key.clone(), result));
        }
        let inputs = StagedInputs { staging, inputs };
        let never_cancelled = AtomicBool::new(false);
        let name = node.name.clone();
        let report = move |message: String| eprintln!("  {name}: {message}");
        let output = execute_stage(node, &inputs, &never_cancelled, &report)?;
        staging
            .write_result(node, &output, started_unix_ms, started.elapsed().as_secs_f64())
            .map_err(|e| StageError::Failed(e.to_string()))
    })();
    match outcome {
        Ok(result) => {
            eprintln!("limaml stage exec: {} done in {:.1}s", node.name, started.elapsed().as_secs_f64());
            Ok(result)
        }
        Err(error) => {
            if let Err(write_error) = staging.write_failure(node, &error) {
                eprintln!("limaml stage exec: cannot stage the failure: {write_error}");
            }
            Err(error)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ledger of submitted jobs

/// What became of a submitted job, as far as the coordinator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    /// Queued or running in Slurm (or finished and not yet looked at).
    Submitted,
    /// Its staged output verified and is committed to the store.
    Committed,
    /// Failed, cancelled or timed out in Slurm, or its output did not verify.
    Failed,
    /// Finished while no coordinator watched it and no longer in any plan being run.
    Abandoned,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmittedJob {
    /// Slurm's job id: `123`, or `123_4` for task 4 of an array.
    pub job_id: String,
    pub stage: String,
    /// The run that submitted the job.
    pub submitted_by: String,
    /// The run whose coordinator watches it now (a restarted coordinator adopts its jobs).
    pub watched_by: String,
    pub submitted_unix_ms: u64,
    pub state: LedgerState,
}

/// `<store>/staging/jobs.json`: stage key -> the job submitted for it. Written only by the
/// coordinator, always atomically.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobLedger {
    pub jobs: BTreeMap<String, SubmittedJob>,
}

impl JobLedger {
    pub fn load(staging: &Staging) -> Result<JobLedger, SlurmError> {
        let path = staging.ledger_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SlurmError::BadStaging { path, message: e.to_string() }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(JobLedger::default()),
            Err(e) => Err(SlurmError::io(&path, e)),
        }
    }

    pub fn save(&self, staging: &Staging) -> Result<(), SlurmError> {
        write_json_atomically(&staging.ledger_path(), self)
    }

    fn set_state(&mut self, key: &str, state: LedgerState) {
        if let Some(entry) = self.jobs.get_mut(key) {
            entry.state = state;
        }
    }

    fn any_submitted(&self) -> bool {
        self.jobs.values().any(|j| j.state == LedgerState::Submitted)
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to Slurm

fn run_slurm_command(program: &str, args: &[String], stdin: Option<&str>) -> Result<String, SlurmError> {
    let command_line = format!("{program} {}", args.join(" "));
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().map_err(|source| SlurmError::Spawn { command: program.to_string(), source })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).map_err(|source| SlurmError::Spawn { command: command_line.clone(), source })?;
    }
    let output = child.wait_with_output().map_err(|source| SlurmError::Spawn { command: command_line.clone(), source })?;
    if !output.status.success() {
        // Some commands (`scontrol show job` of an unknown array task) explain on stdout.
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        return Err(SlurmError::CommandFailed { command: command_line, status: output.status.to_string(), stderr: message });
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// A job's state as `squeue` or `scontrol` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Slurm's state name: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    pub state: String,
    pub reason: String,
    /// `exit:signal`, when known (`scontrol show job` only).
    pub exit_code: Option<String>,
}

impl JobStatus {
    pub fn is_active(&self) -> bool {
        !self.is_finished()
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.state.as_str(),
            "COMPLETED"
                | "FAILED"
                | "CANCELLED"
                | "TIMEOUT"
                | "OUT_OF_MEMORY"
                | "NODE_FAIL"
                | "PREEMPTED"
                | "BOOT_FAIL"
                | "DEADLINE"
                | "SPECIAL_EXIT"
                | "REVOKED"
        )
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "RUNNING" | "COMPLETING" | "CONFIGURING" | "STAGE_OUT" | "SIGNALING")
    }
}

/// Parses `squeue -h -r -o '%i|%T|%r'` output: job id -> status.
pub fn parse_squeue(output: &str) -> HashMap<String, JobStatus> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().splitn(3, '|');
            let id = fields.next()?.trim();
            let state = fields.next()?.trim();
            let reason = fields.next().unwrap_or("").trim();
            (!id.is_empty()).then(|| {
                // A state may carry a suffix ("CANCELLED by 0"); keep the name.
                let state = state.split_whitespace().next().unwrap_or("").to_string();
                (id.to_string(), JobStatus { state, reason: reason.to_string(), exit_code: None })
            })
        })
        .collect()
}

/// Parses one record of `scontrol show job -o ID`.
pub fn parse_scontrol(output: &str) -> Option<JobStatus> {
    let field = |name: &str| {
        output.split_whitespace().find_map(|f| f.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))).map(str::to_string)
    };
    Some(JobStatus { state: field("JobState")?, reason: field("Reason").unwrap_or_default(), exit_code: field("ExitCode") })
}

/// Every job of this user that slurmctld still knows, one line per array task.
fn squeue_snapshot() -> Result<HashMap<String, JobStatus>, SlurmError> {
    let args = ["--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%r"].map(String::from);
    Ok(parse_squeue(&run_slurm_command("squeue", &args, None)?))
}

/// `scontrol show job ID`: `None` when Slurm no longer knows the job.
fn scontrol_status(job_id: &str) -> Result<Option<JobStatus>, SlurmError> {
    match run_slurm_command("scontrol", &["show".into(), "job".into(), "-o".into(), job_id.into()], None) {
        Ok(output) => Ok(parse_scontrol(&output)),
        Err(SlurmError::CommandFailed { stderr, .. }) if stderr.contains("Invalid job id") || stderr.contains("not found") => Ok(None),
        Err(e) => Err(e),
    }
}

/// `scancel` the given jobs (errors for jobs that already finished are ignored).
pub fn scancel(job_ids: &[String]) -> Result<(), SlurmError> {
    if job_ids.is_empty() {
        return Ok(());
    }
    match run_slurm_command("scancel", job_ids, None) {
        Ok(_) => Ok(()),
        Err(SlurmError::CommandFailed { stderr, .. })
            if stderr.lines().all(|l| l.contains("already completed") || l.contains("Invalid job id") || l.trim().is_empty()) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Quotes a word for a bash script.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------------------------
// The executor

/// How jobs are built: what they run and what they ask Slurm for.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// The absolute path of the `limaml` binary jobs run.
    pub binary: PathBuf,
    /// The spec, as an absolute path.
    pub spec_path: PathBuf,
    /// `--set` overrides, passed to every job as they are.
    pub overrides: Vec<String>,
    /// Where jobs start (`sbatch --chdir`): the coordinator's working folder.
    pub working_dir: PathBuf,
    pub partition: Option<String>,
    /// `--slurm-opt` values: extra sbatch options; they replace the default cpus, memory and time.
    pub sbatch_options: Vec<String>,
    pub poll_interval: Duration,
}

impl SlurmConfig {
    /// The sbatch options every job gets: defaults the user did not override, the partition,
    /// then the user's options.
    pub fn resource_options(&self) -> Vec<String> {
        let user_sets = |long: &str, short: Option<&str>| {
            self.sbatch_options.iter().any(|o| o.starts_with(long) || short.is_some_and(|s| o.starts_with(s)))
        };
        let mut options = Vec::new();
        if !user_sets("--cpus-per-task", Some("-c")) {
            options.push(DEFAULT_CPUS_PER_TASK.to_string());
        }
        if !user_sets("--mem", None) {
            options.push(DEFAULT_MEMORY.to_string());
        }
        if !user_sets("--time", Some("-t")) {
            options.push(DEFAULT_TIME_LIMIT.to_string());
        }
        if let Some(partition) = &self.partition {
            options.push(format!("--partition={partition}"));
        }
        options.extend(self.sbatch_options.iter().cloned());
        options
    }

    /// The batch script: task `i` of the (possibly one-task) array runs the stage `keys[i]`.
    fn batch_script(&self, staging: &Staging, keys: &[&str]) -> String {
        let mut command = vec![
            shell_quote(&self.binary.display().to_string()),
            "stage".into(),
            "exec".into(),
            shell_quote(&self.spec_path.display().to_string()),
        ];
        for set in &self.overrides {
            command.push("--set".into());
            command.push(shell_quote(set));
        }
        command.push("--staging".into());
        command.push(shell_quote(&staging.root().display().to_string()));
        command.push("--key".into());
        command.push("\"${keys[${SLURM_ARRAY_TASK_ID:-0}]}\"".into());
        let keys: Vec<String> = keys.iter().map(|k| shell_quote(k)).collect();
        format!("#!/bin/bash\n# submitted by limaml (Slurm executor)\nkeys=({})\nexec {}\n", keys.join(" "), command.join(" "))
    }
}

/// Stages submitted together (one sbatch, an array when several): same kind, same upstream jobs.
type GroupKey = (String, Vec<String>);

pub struct SlurmExecutor {
    pub config: SlurmConfig,
}

/// Where one stage that must run stands, in the coordinator.
#[derive(Debug, Clone)]
enum Tracked {
    /// Not submitted yet.
    Unsubmitted,
    /// A job is queued or running for it.
    Watching { job_id: String, running_since: Option<Instant>, last_reason: String },
    Settled(StageResult),
}

/// The coordinator's state for one `execute`.
struct Coordinator<'j, 'a> {
    job: &'j ExecutionJob<'a>,
    config: &'j SlurmConfig,
    staging: Staging,
    ledger: JobLedger,
    tracked: Vec<Option<Tracked>>,
    /// Stages that must run, inputs first.
    order: Vec<NodeIndex>,
    /// Set after the first failure without --keep-going: pending jobs are cancelled.
    stop_after_failure: bool,
}

impl Executor for SlurmExecutor {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn execute(&self, job: &ExecutionJob<'_>) -> Vec<StageResult> {
        let plan = job.plan;
        let order: Vec<NodeIndex> = match plan.topological_order() {
            Ok(order) => order.into_iter().filter(|i| job.to_run[i.index()]).collect(),
            Err(e) => return fail_all(job, &e.to_string()),
        };
        let staging = Staging::for_store(job.store.root());
        let ledger = match staging.create_dirs().and_then(|_| JobLedger::load(&staging)) {
            Ok(ledger) => ledger,
            Err(e) => {
                // Said on stderr too: a damaged ledger is the environment's fault, not a stage's.
                tracing::error!("slurm executor: {e} (move the file aside to start the ledger afresh)");
                return fail_all(job, &e.to_string());
            }
        };
        let mut tracked = vec![None; plan.graph.node_count()];
        for &index in &order {
            tracked[index.index()] = Some(Tracked::Unsubmitted);
        }
        let mut coordinator = Coordinator { job, config: &self.config, staging, ledger, tracked, order, stop_after_failure: false };
        if let Err(e) = coordinator.run() {
            // Slurm or the staging folder failed underneath us: what is not settled fails.
            tracing::error!("slurm executor: {e}");
            coordinator.fail_unsettled(&e.to_string());
        }
        coordinator.finish()
    }
}

fn fail_all(job: &ExecutionJob<'_>, message: &str) -> Vec<StageResult> {
    job.plan
        .graph
        .node_indices()
        .filter(|i| job.to_run[i.index()])
        .map(|node| StageResult { node, status: StageStatus::Failed, seconds: 0.0, error: Some(message.to_string()), bad_input: false })
        .collect()
}

impl Coordinator<'_, '_> {
    fn plan(&self) -> &Plan {
        self.job.plan
    }

    fn state(&self, index: NodeIndex) -> &Tracked {
        self.tracked[index.index()].as_ref().expect("tracked stages are the ones to run")
    }

    fn set(&mut self, index: NodeIndex, state: Tracked) {
        self.tracked[index.index()] = Some(state);
    }

    fn is_settled(&self, index: NodeIndex) -> bool {
        matches!(self.state(index), Tracked::Settled(_))
    }

    fn watching_count(&self) -> usize {
        self.order.iter().filter(|&&i| matches!(self.state(i), Tracked::Watching { .. })).count()
    }

    /// Upstream stages that must run too (the others are cached in the store).
    fn upstream_to_run(&self, index: NodeIndex) -> Vec<NodeIndex> {
        let mut upstream: Vec<NodeIndex> = self
            .plan()
            .graph
            .neighbors_directed(index, Direction::Incoming)
            .filter(|i| self.job.to_run[i.index()])
            .collect();
        upstream.sort();
        upstream.dedup();
        upstream
    }

    fn run(&mut self) -> Result<(), SlurmError> {
        self.resume_submitted_jobs()?;
        self.export_cached_inputs()?;
        self.submit_unsubmitted()?;
        self.watch()
    }

    // ---- 1. resume what an earlier coordinator submitted ----

    fn resume_submitted_jobs(&mut self) -> Result<(), SlurmError> {
        if !self.ledger.any_submitted() {
            return Ok(());
        }
        let snapshot = squeue_snapshot()?;
        let run_id = self.job.run_id.to_string();
        let mut adopted = 0;
        let mut committed = 0;
        // Entries this plan does not run: settled ones stop counting as submitted.
        let keys_to_run: HashMap<&str, NodeIndex> = self.order.iter().map(|&i| (self.plan().node(i).key.as_str(), i)).collect();
        let mut stale = Vec::new();
        for (key, entry) in &self.ledger.jobs {
            if entry.state == LedgerState::Submitted && !keys_to_run.contains_key(key.as_str()) {
                let status = match snapshot.get(&entry.job_id) {
                    Some(status) => Some(status.clone()),
                    None => scontrol_status(&entry.job_id)?,
                };
                if !status.is_some_and(|s| s.is_active()) {
                    let cached = self.job.store.stage(key)?.is_some();
                    stale.push((key.clone(), if cached { LedgerState::Committed } else { LedgerState::Abandoned }));
                }
            }
        }
        for (key, state) in stale {
            self.ledger.set_state(&key, state);
        }
        for index in self.order.clone() {
            let key = self.plan().node(index).key.clone();
            let Some(entry) = self.ledger.jobs.get(&key).cloned() else { continue };
            if entry.state != LedgerState::Submitted {
                continue;
            }
            if let Some(e) = self.ledger.jobs.get_mut(&key) {
                e.watched_by = run_id.clone();
            }
            let status = match snapshot.get(&entry.job_id) {
                Some(status) => Some(status.clone()),
                None => scontrol_status(&entry.job_id)?,
            };
            // A job waits on the jobs of its upstream stages: adopt it only if they are adopted
            // or committed, otherwise its dependency can never be met.
            let upstream_ok = self
                .upstream_to_run(index)
                .iter()
                .all(|&u| matches!(self.state(u), Tracked::Watching { .. } | Tracked::Settled(StageResult { status: StageStatus::Executed, .. })));
            match status {
                Some(status) if status.is_active() && upstream_ok => {
                    let running_since = status.is_running().then(Instant::now);
                    if running_since.is_some() {
                        self.job.progress.started(&self.plan().node(index).name);
                    }
                    self.set(index, Tracked::Watching { job_id: entry.job_id.clone(), running_since, last_reason: String::new() });
                    adopted += 1;
                }
                Some(status) if status.is_active() => {
                    scancel(std::slice::from_ref(&entry.job_id))?;
                    self.ledger.set_state(&key, LedgerState::Failed);
                }
                _ if upstream_ok && self.staging.read_result(&key).ok().flatten().is_some() => {
                    // Finished (or forgotten by Slurm) with a staged result: commit it if it verifies.
                    self.job.progress.started(&self.plan().node(index).name);
                    match self.commit(index) {
                        Ok(result) => {
                            self.ledger.set_state(&key, LedgerState::Committed);
                            self.set(index, Tracked::Settled(result));
                            committed += 1;
                        }
                        Err(e) => {
                            tracing::warn!("stage {}: staged output of job {} does not verify ({e}); submitting again", self.plan().node(index).name, entry.job_id);
                            self.ledger.set_state(&key, LedgerState::Failed);
                        }
                    }
                }
                _ => self.ledger.set_state(&key, LedgerState::Failed),
            }
        }
        self.ledger.save(&self.staging)?;
        if adopted + committed > 0 {
            self.job.progress.note(&format!(
                "resuming: {adopted} Slurm job(s) still queued or running are watched again, {committed} finished job(s) committed; nothing is submitted twice"
            ));
        }
        Ok(())
    }

    // ---- 2. export cached inputs ----

    fn export_cached_inputs(&mut self) -> Result<(), SlurmError> {
        let mut exported = std::collections::BTreeSet::new();
        for index in self.order.clone() {
            if self.is_settled(index) {
                continue;
            }
            let inputs: Vec<NodeIndex> = self.plan().node(index).inputs.iter().map(|(_, i)| *i).collect();
            for input in inputs {
                if self.job.to_run[input.index()] || !exported.insert(input) {
                    continue;
                }
                let upstream = self.plan().node(input);
                let record = self.job.store.stage(&upstream.key)?.ok_or_else(|| SlurmError::BadStaging {
                    path: self.staging.stage_dir(&upstream.key),
                    message: format!("cached input {} is not in the store", upstream.name),
                })?;
                self.staging.export_cached(self.job.store, &record)?;
            }
        }
        Ok(())
    }

    // ---- 3. submit ----

    fn submit_unsubmitted(&mut self) -> Result<(), SlurmError> {
        let mut remaining: Vec<NodeIndex> = self.order.iter().copied().filter(|&i| matches!(self.state(i), Tracked::Unsubmitted)).collect();
        let mut jobs = 0;
        let mut stages = 0;
        while !remaining.is_empty() {
            // Ready: no upstream stage still waiting to be submitted.
            let (ready, later): (Vec<NodeIndex>, Vec<NodeIndex>) = remaining
                .iter()
                .partition(|&&i| self.upstream_to_run(i).iter().all(|u| !matches!(self.state(*u), Tracked::Unsubmitted)));
            assert!(!ready.is_empty(), "the plan is acyclic, so some stage is always ready");
            // Group by kind and upstream jobs: each group is one sbatch (an array when > 1).
            let mut groups: Vec<(GroupKey, Vec<NodeIndex>)> = Vec::new();
            for index in ready {
                let mut dependencies = Vec::new();
                let mut failed_upstream = None;
                for upstream in self.upstream_to_run(index) {
                    match self.state(upstream) {
                        Tracked::Watching { job_id, .. } => dependencies.push(job_id.clone()),
                        Tracked::Settled(StageResult { status: StageStatus::Executed, .. }) => {}
                        _ => failed_upstream = Some(upstream),
                    }
                }
                if let Some(upstream) = failed_upstream {
                    let reason = format!("upstream {} failed", self.plan().node(upstream).name);
                    self.set(index, Tracked::Settled(StageResult::skipped(index, reason)));
                    continue;
                }
                if self.stop_after_failure || self.job.cancel.load(Ordering::Relaxed) {
                    continue; // left unsubmitted; reported skipped at the end
                }
                dependencies.sort();
                let group_key = (self.plan().node(index).components.kind.clone(), dependencies);
                match groups.iter_mut().find(|(k, _)| *k == group_key) {
                    Some((_, members)) => members.push(index),
                    None => groups.push((group_key, vec![index])),
                }
            }
            for ((_, dependencies), members) in groups {
                match self.submit_group(&members, &dependencies) {
                    Ok(()) => {
                        jobs += 1;
                        stages += members.len();
                    }
                    Err(e) => {
                        for &index in &members {
                            let name = self.plan().node(index).name.clone();
                            tracing::error!(stage = name, "{e}");
                            self.job.progress.finished(&name, "FAILED", 0.0);
                            let result = StageResult { node: index, status: StageStatus::Failed, seconds: 0.0, error: Some(format!("cannot submit: {e}")), bad_input: false };
                            self.set(index, Tracked::Settled(result));
                        }
                        self.stop_after_failure |= !self.job.keep_going;
                    }
                }
            }
            remaining = later;
        }
        if stages > 0 {
            self.job.progress.note(&format!("submitted {stages} stage(s) as {jobs} sbatch submission(s) (arrays group stages of one kind with the same upstream jobs)"));
        }
        Ok(())
    }

    fn submit_group(&mut self, members: &[NodeIndex], dependencies: &[String]) -> Result<(), SlurmError> {
        let keys: Vec<&str> = members.iter().map(|&i| self.plan().node(i).key.as_str()).collect();
        for key in &keys {
            self.staging.clear_stage(key)?;
        }
        let first = self.plan().node(members[0]);
        let array = members.len() > 1;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name=limaml:{}", if array { first.components.kind.clone() } else { first.name.clone() }),
            format!("--chdir={}", self.config.working_dir.display()),
            format!("--output={}", self.staging.logs_dir().join(if array { "%A_%a.log" } else { "%j.log" }).display()),
            format!("--comment=limaml:run={}:store={}", self.job.run_id, self.staging.root().display()),
            "--export=ALL".to_string(),
            "--kill-on-invalid-dep=yes".to_string(),
        ];
        if array {
            args.push(format!("--array=0-{}", members.len() - 1));
        }
        if !dependencies.is_empty() {
            args.push(format!("--dependency=afterok:{}", dependencies.join(":")));
        }
        args.extend(self.config.resource_options());
        let script = self.config.batch_script(&self.staging, &keys);
        let output = run_slurm_command("sbatch", &args, Some(&script))?;
        let job_id = output.trim().split(';').next().unwrap_or("").trim().to_string();
        if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(SlurmError::Unparsable { command: "sbatch --parsable".into(), output });
        }
        for (task, &index) in members.iter().enumerate() {
            let id = if array { format!("{job_id}_{task}") } else { job_id.clone() };
            let node = self.plan().node(index);
            self.job.progress.note(&format!(
                "  queued {} as Slurm job {id}{}",
                node.name,
                if dependencies.is_empty() { String::new() } else { format!(" (afterok:{})", dependencies.join(":")) }
            ));
            self.ledger.jobs.insert(
                node.key.clone(),
                SubmittedJob {
                    job_id: id.clone(),
                    stage: node.name.clone(),
                    submitted_by: self.job.run_id.to_string(),
                    watched_by: self.job.run_id.to_string(),
                    submitted_unix_ms: unix_ms(),
                    state: LedgerState::Submitted,
                },
            );
            self.set(index, Tracked::Watching { job_id: id, running_since: None, last_reason: String::new() });
        }
        // Recorded before anything else happens, so a killed coordinator's successor finds it.
        self.ledger.save(&self.staging)
    }

    // ---- 4. watch ----

    fn watch(&mut self) -> Result<(), SlurmError> {
        let mut consecutive_errors = 0;
        while self.watching_count() > 0 {
            if self.job.cancel.load(Ordering::Relaxed) {
                return Ok(()); // detach: the jobs keep running in Slurm; `finish` says so
            }
            match self.poll_once() {
                Ok(()) => consecutive_errors = 0,
                Err(e) => {
                    consecutive_errors += 1;
                    tracing::warn!("polling Slurm failed ({consecutive_errors} in a row): {e}");
                    if consecutive_errors >= 30 {
                        return Err(e);
                    }
                }
            }
            if self.watching_count() == 0 {
                break;
            }
            let deadline = Instant::now() + self.config.poll_interval;
            while Instant::now() < deadline && !self.job.cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn poll_once(&mut self) -> Result<(), SlurmError> {
        let snapshot = squeue_snapshot()?;
        for index in self.order.clone() {
            let Tracked::Watching { job_id, running_since, last_reason } = self.state(index).clone() else { continue };
            let name = self.plan().node(index).name.clone();
            let status = match snapshot.get(&job_id) {
                Some(status) if status.is_finished() => scontrol_status(&job_id)?.or(Some(status.clone())),
                Some(status) => Some(status.clone()),
                None => scontrol_status(&job_id)?,
            };
            let Some(status) = status else {
                // Slurm forgot the job: its staged result decides.
                self.settle_finished(index, &job_id, running_since, None);
                continue;
            };
            if status.is_finished() {
                self.settle_finished(index, &job_id, running_since, Some(&status));
            } else if status.state == "PENDING" && status.reason == "DependencyNeverSatisfied" {
                scancel(std::slice::from_ref(&job_id))?;
                self.ledger.set_state(&self.plan().node(index).key.clone(), LedgerState::Failed);
                let result = StageResult::skipped(index, format!("an upstream job failed (Slurm job {job_id}: DependencyNeverSatisfied; cancelled)"));
                self.set(index, Tracked::Settled(result));
            } else if status.is_running() && running_since.is_none() {
                self.job.progress.started(&name);
                self.job.progress.message(&name, format!("job {job_id} running"));
                self.set(index, Tracked::Watching { job_id, running_since: Some(Instant::now()), last_reason });
            } else if status.reason != last_reason {
                self.job.progress.message(&name, format!("job {job_id} {} ({})", status.state.to_lowercase(), status.reason));
                self.set(index, Tracked::Watching { job_id, running_since, last_reason: status.reason.clone() });
            }
        }
        self.ledger.save(&self.staging)
    }

    /// A job left the queue: commit its staged output, or record why it failed.
    fn settle_finished(&mut self, index: NodeIndex, job_id: &str, running_since: Option<Instant>, status: Option<&JobStatus>) {
        let node = self.plan().node(index);
        let name = node.name.clone();
        let key = node.key.clone();
        if running_since.is_none() {
            self.job.progress.started(&name);
        }
        let seconds = running_since.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        let completed = status.is_none_or(|s| s.state == "COMPLETED");
        if completed {
            match self.commit(index) {
                Ok(result) => {
                    self.job.progress.finished(&name, "done", result.seconds);
                    self.ledger.set_state(&key, LedgerState::Committed);
                    self.set(index, Tracked::Settled(result));
                    return;
                }
                Err(e) if status.is_some() => {
                    let message = format!("Slurm job {job_id} COMPLETED but its staged output does not verify: {e}");
                    self.fail(index, job_id, message, false, seconds);
                    return;
                }
                Err(_) => {}
            }
        }
        let (state, exit_code, reason) = match status {
            Some(s) => (s.state.clone(), s.exit_code.clone().unwrap_or_else(|| "unknown".into()), s.reason.clone()),
            // Slurm drops an array task cancelled while pending; its array is still known.
            None if job_id.split_once('_').is_some_and(|(array, _)| scontrol_status(array).ok().flatten().is_some()) => (
                "CANCELLED".to_string(),
                "none".to_string(),
                "cancelled while pending (Slurm drops such array tasks from its queue)".to_string(),
            ),
            None => ("VANISHED".to_string(), "unknown".to_string(), "Slurm no longer knows the job and it staged no result".to_string()),
        };
        let failure = self.staging.read_failure(&key);
        let stage_error = failure.as_ref().map(|f| format!(": {}", f.message)).unwrap_or_default();
        let log = self.staging.log_path(job_id);
        let log_hint = if log.exists() { format!(" (log {})", log.display()) } else { String::new() };
        let message = format!("Slurm job {job_id} {state}, exit code {exit_code}, reason {reason}{stage_error}{log_hint}");
        let bad_input = failure.is_some_and(|f| f.bad_input);
        self.fail(index, job_id, message, bad_input, seconds);
    }

    fn fail(&mut self, index: NodeIndex, job_id: &str, message: String, bad_input: bool, seconds: f64) {
        let name = self.plan().node(index).name.clone();
        tracing::error!(stage = name, "{message}");
        self.job.progress.finished(&name, "FAILED", seconds);
        self.ledger.set_state(&self.plan().node(index).key.clone(), LedgerState::Failed);
        self.set(index, Tracked::Settled(StageResult { node: index, status: StageStatus::Failed, seconds, error: Some(message), bad_input }));
        // Dependents can never run: cancel their jobs rather than leave them pending.
        let mut to_cancel = Vec::new();
        for downstream in self.plan().descendants(index) {
            if !self.job.to_run[downstream.index()] || self.is_settled(downstream) {
                continue;
            }
            if let Tracked::Watching { job_id, .. } = self.state(downstream) {
                to_cancel.push(job_id.clone());
            }
            let key = self.plan().node(downstream).key.clone();
            self.ledger.set_state(&key, LedgerState::Failed);
            let reason = format!("upstream {name} failed (Slurm job {job_id})");
            self.set(downstream, Tracked::Settled(StageResult::skipped(downstream, reason)));
        }
        if !self.job.keep_going {
            // Like the local executor: nothing new starts after a failure; running jobs finish.
            self.stop_after_failure = true;
            for other in self.order.clone() {
                if let Tracked::Watching { job_id, running_since: None, .. } = self.state(other).clone() {
                    to_cancel.push(job_id);
                    let key = self.plan().node(other).key.clone();
                    self.ledger.set_state(&key, LedgerState::Failed);
                    self.set(other, Tracked::Settled(StageResult::skipped(other, "run stopped after a failure (job cancelled)".into())));
                }
            }
        }
        if let Err(e) = scancel(&to_cancel) {
            tracing::warn!("cancelling the jobs of stages that cannot run: {e}");
        }
    }

    /// Verifies a stage's staged output and commits it to the store.
    fn commit(&self, index: NodeIndex) -> Result<StageResult, SlurmError> {
        let node = self.plan().node(index);
        let staged = self.staging.read_result(&node.key)?.ok_or_else(|| SlurmError::BadStaging {
            path: self.staging.stage_dir(&node.key),
            message: "the job staged no result.json".into(),
        })?;
        let mut outputs = BTreeMap::new();
        for (name, artifact) in &staged.outputs {
            let bytes = self.staging.read_artifact(&node.key, artifact)?;
            let stored = self.job.store.put_artifact(&bytes)?;
            debug_assert_eq!(stored.digest, artifact.digest);
            outputs.insert(name.clone(), stored);
        }
        let timing =
            StageTiming { started_unix_ms: staged.started_unix_ms, seconds: staged.seconds, host: staged.host.clone() };
        let record = stage_record(node, outputs, staged.metrics.clone(), timing, self.job.run_id);
        self.job.store.commit_stage(&record)?;
        Ok(StageResult { node: index, status: StageStatus::Executed, seconds: staged.seconds, error: None, bad_input: false })
    }

    fn fail_unsettled(&mut self, message: &str) {
        for index in self.order.clone() {
            if !self.is_settled(index) {
                let result = StageResult { node: index, status: StageStatus::Failed, seconds: 0.0, error: Some(message.to_string()), bad_input: false };
                self.set(index, Tracked::Settled(result));
            }
        }
    }

    // ---- 5. finish ----

    /// One result per stage; saves the ledger and, when no job is left anywhere, cleans staging.
    fn finish(mut self) -> Vec<StageResult> {
        let mut left_in_slurm = 0;
        let mut results = Vec::new();
        for index in self.order.clone() {
            let result = match self.state(index).clone() {
                Tracked::Settled(result) => result,
                Tracked::Watching { job_id, .. } => {
                    left_in_slurm += 1;
                    StageResult::skipped(
                        index,
                        format!("run stopped while Slurm job {job_id} was queued or running; rerun to resume it, `limaml cancel {}` to cancel it", self.job.run_id),
                    )
                }
                Tracked::Unsubmitted => {
                    let reason = if self.job.cancel.load(Ordering::Relaxed) { "run stopped" } else { "run stopped after a failure" };
                    StageResult::skipped(index, reason.to_string())
                }
            };
            results.push(result);
        }
        if left_in_slurm > 0 {
            self.job.progress.note(&format!(
                "{left_in_slurm} Slurm job(s) keep running; rerun the same command to resume watching them, or `limaml cancel {}`",
                self.job.run_id
            ));
        }
        // Settled entries of earlier runs are dropped, with their logs; this run's stay (for
        // `limaml cancel` and for inspection) until the next run.
        let run_id = self.job.run_id.to_string();
        let dropped: Vec<(String, SubmittedJob)> = self
            .ledger
            .jobs
            .iter()
            .filter(|(_, j)| j.state != LedgerState::Submitted && j.watched_by != run_id)
            .map(|(k, j)| (k.clone(), j.clone()))
            .collect();
        for (key, job) in dropped {
            self.ledger.jobs.remove(&key);
            let _ = fs::remove_file(self.staging.log_path(&job.job_id));
        }
        if let Err(e) = self.ledger.save(&self.staging) {
            tracing::warn!("cannot save the job ledger: {e}");
        }
        if !self.ledger.any_submitted() {
            // No job anywhere reads staging any more: drop staged outputs (committed or
            // exported) and the logs of jobs that succeeded.
            let _ = fs::remove_dir_all(self.staging.root().join("stages"));
            for job in self.ledger.jobs.values().filter(|j| j.state == LedgerState::Committed) {
                let _ = fs::remove_file(self.staging.log_path(&job.job_id));
            }
        }
        results
    }
}

// ---------------------------------------------------------------------------------------------
// `limaml cancel RUN`

/// What `cancel_run` did.
#[derive(Debug, Clone)]
pub struct CancelReport {
    pub run_id: String,
    /// `(stage, job id)` of every job cancelled.
    pub cancelled: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no Slurm jobs are recorded for run {0} (in {1})")]
    NoSuchRun(String, PathBuf),
    #[error("{0} matches several runs with Slurm jobs: {1}; give more of the id")]
    Ambiguous(String, String),
    #[error(transparent)]
    Slurm(#[from] SlurmError),
}

/// Cancels the jobs still submitted for `run` (an id, a unique prefix, or "last"). Reads only
/// the ledger, so it works while the coordinator holds the store; the coordinator (or the next
/// one) sees the jobs CANCELLED and marks their stages failed.
pub fn cancel_run(store_root: &Path, run: &str) -> Result<CancelReport, CancelError> {
    let staging = Staging::for_store(store_root);
    let ledger = JobLedger::load(&staging)?;
    let mut run_ids: Vec<&str> = ledger.jobs.values().flat_map(|j| [j.submitted_by.as_str(), j.watched_by.as_str()]).collect();
    run_ids.sort();
    run_ids.dedup();
    let run_id = if run == "last" {
        run_ids.last().copied()
    } else {
        let matches: Vec<&str> = run_ids.iter().copied().filter(|id| id.starts_with(run)).collect();
        if matches.len() > 1 {
            return Err(CancelError::Ambiguous(run.to_string(), matches.join(", ")));
        }
        matches.first().copied()
    }
    .ok_or_else(|| CancelError::NoSuchRun(run.to_string(), staging.ledger_path()))?
    .to_string();
    let cancelled: Vec<(String, String)> = ledger
        .jobs
        .values()
        .filter(|j| j.state == LedgerState::Submitted && (j.watched_by == run_id || j.submitted_by == run_id))
        .map(|j| (j.stage.clone(), j.job_id.clone()))
        .collect();
    let ids: Vec<String> = cancelled.iter().map(|(_, id)| id.clone()).collect();
    scancel(&ids)?;
    Ok(CancelReport { run_id, cancelled })
}

/// Checks that the Slurm client commands can be run (`sbatch --version`).
pub fn check_slurm_available() -> Result<String, SlurmError> {
    Ok(run_slurm_command("sbatch", &["--version".to_string()], None)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_parse_into_states_per_job_and_array_task() {
        let parsed = parse_squeue("1_0|COMPLETED|None\n1_1|FAILED|NonZeroExitCode\n2|PENDING|DependencyNeverSatisfied\n");
        assert_eq!(parsed["1_1"].state, "FAILED");
        assert!(parsed["1_0"].is_finished());
        assert!(parsed["2"].is_active());
        assert_eq!(parsed["2"].reason, "DependencyNeverSatisfied");
    }

    #[test]
    fn scontrol_records_give_state_reason_and_exit_code() {
        let status = parse_scontrol("JobId=4 ArrayJobId=1 ArrayTaskId=1 JobName=wrap JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 RunTime=00:00:02").unwrap();
        assert_eq!(status, JobStatus { state: "FAILED".into(), reason: "NonZeroExitCode".into(), exit_code: Some("3:0".into()) });
    }

    #[test]
    fn slurm_opts_replace_the_default_resources_they_name() {
        let config = SlurmConfig {
            binary: "/bin/limaml".into(),
            spec_path: "/x/spec.toml".into(),
            overrides: vec![],
            working_dir: "/x".into(),
            partition: Some("debug".into()),
            sbatch_options: vec!["--mem=8G".into(), "--qos=low".into()],
            poll_interval: Duration::from_secs(1),
        };
        let options = config.resource_options();
        assert_eq!(options, vec!["--cpus-per-task=1", "--time=01:00:00", "--partition=debug", "--mem=8G", "--qos=low"]);
    }

    #[test]
    fn the_batch_script_quotes_paths_and_overrides_and_indexes_keys_by_array_task() {
        let config = SlurmConfig {
            binary: "/opt/lim aml".into(),
            spec_path: "/x/it's.toml".into(),
            overrides: vec!["train.epochs=3".into()],
            working_dir: "/x".into(),
            partition: None,
            sbatch_options: vec![],
            poll_interval: Duration::from_secs(1),
        };
        let script = config.batch_script(&Staging::at(Path::new("/s")), &["k0", "k1"]);
        assert!(script.contains("keys=('k0' 'k1')"), "{script}");
        assert!(script.contains("exec '/opt/lim aml' stage exec '/x/it'\\''s.toml' --set 'train.epochs=3' --staging '/s' --key \"${keys[${SLURM_ARRAY_TASK_ID:-0}]}\""), "{script}");
    }
}
