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
//!
//! Files, one job each: `config` (the batch script and resources), `staging` (the staging
//! folder and the job side), `ledger` (the ledger and `limaml cancel`), `commands` (Slurm's
//! client commands and their output); this file holds the executor, the coordinator.

mod commands;
mod config;
mod ledger;
mod staging;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use petgraph::Direction;

pub use commands::{check_slurm_available, parse_scontrol, parse_squeue, scancel, JobStatus};
use commands::{run_slurm_command, scontrol_status, squeue_snapshot};
pub use config::{SlurmConfig, DEFAULT_CPUS_PER_TASK, DEFAULT_MEMORY, DEFAULT_TIME_LIMIT};
pub use ledger::{cancel_run, CancelError, CancelReport, JobLedger, LedgerState, SubmittedJob};
pub use staging::{run_staged_stage, StagedFailure, StagedResult, Staging};

use super::{stage_record, unix_ms, ExecutionJob, Executor, StageResult, StageTiming};
use crate::plan::Plan;
use crate::store::{StageStatus, StoreError};

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
