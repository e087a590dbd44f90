//! The ledger of submitted jobs (`<store>/staging/jobs.json`), and `limaml cancel RUN`, which
//! reads only the ledger.
//!
//! Owns [`JobLedger`], [`SubmittedJob`], [`LedgerState`] and [`cancel_run`]. Must not be
//! written by anyone but the coordinator (always atomically), and `cancel_run` must not open the
//! store: it runs while a coordinator holds it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::commands::scancel;
use super::staging::{write_json_atomically, Staging};
use super::SlurmError;

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

    pub(super) fn set_state(&mut self, key: &str, state: LedgerState) {
        if let Some(entry) = self.jobs.get_mut(key) {
            entry.state = state;
        }
    }

    pub(super) fn any_submitted(&self) -> bool {
        self.jobs.values().any(|j| j.state == LedgerState::Submitted)
    }
}

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
