//! The store under `runs/store`: sled for records and indexes, content-addressed files for
//! artifacts. Owns the single-writer lock, atomic stage commits, run records and garbage
//! collection. Must not decide what runs: the executor asks, the store answers and records.
//!
//! Layout:
//! - `db/`: sled trees `stages` (stage key -> [`StageRecord`]), `names` (stage name -> last key,
//!   for `limaml why`), `runs` (run id -> [`RunRecord`]).
//! - `objects/`: artifacts as files named by the blake3 digest of their bytes ([`objects`]).
//! - `owner`: which run holds the lock, for the message a waiting process prints.
//! - `records/`: a JSON copy of every record, from which `limaml store recover` rebuilds a
//!   damaged database ([`recovery`]).
//!
//! Commit protocol: a stage's artifacts are written (fsynced, renamed) first, then its record is
//! inserted and the db flushed. A crash before the flush leaves, at worst, unreferenced objects
//! (removed by `gc`), never a record that claims a stage finished.

pub mod objects;
pub mod recovery;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::key::KeyComponents;
pub use objects::Digest;
use objects::ObjectStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the store {path} is in use by {owner}")]
    Busy { path: PathBuf, owner: String },
    #[error("store database {path}: {message}")]
    Database { path: PathBuf, message: String },
    #[error("artifact {digest} is missing from the store")]
    MissingObject { digest: String },
    #[error("artifact {digest} is corrupted ({path} hashes to {actual})")]
    Corrupted { digest: String, path: PathBuf, actual: String },
    #[error("record {key} in the store cannot be read: {message}")]
    BadRecord { key: String, message: String },
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io { path: path.to_path_buf(), source }
    }
}

/// A committed artifact: where its bytes are and how many there are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub digest: Digest,
    pub size: u64,
}

/// What the store knows about one finished stage. Only finished stages have records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub key: String,
    pub name: String,
    pub kind: String,
    /// Everything the key hashes, so `limaml why` can say which part changed.
    pub components: KeyComponents,
    pub outputs: BTreeMap<String, ArtifactRef>,
    /// Small JSON metrics (headline numbers, curves) kept inline.
    pub metrics: serde_json::Value,
    pub started_unix_ms: u64,
    pub seconds: f64,
    pub host: String,
    pub run_id: String,
}

/// How a stage fared in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Cached,
    Executed,
    Failed,
    /// Not run because an upstream stage failed, or the run was stopped first.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStage {
    pub name: String,
    pub key: String,
    pub kind: String,
    pub status: StageStatus,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished: either still running or killed.
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

/// One `limaml run`: the spec it ran and what became of each stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub spec_path: String,
    pub spec_text: String,
    pub spec_digest: String,
    pub experiment: String,
    pub tool_version: String,
    pub host: String,
    pub started_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    pub status: RunStatus,
    pub stages: Vec<RunStage>,
    /// Per-method headline metrics (the run summary), filled at the end.
    pub metrics: serde_json::Value,
}

/// How `Store::open` behaves when another process holds the store.
#[derive(Debug, Clone, Copy)]
pub enum LockWait {
    /// Fail at once with `StoreError::Busy`.
    NoWait,
    /// Retry until free, calling `on_wait` once with the owner's description.
    Wait,
}

pub struct Store {
    root: PathBuf,
    db: sled::Db,
    stages: sled::Tree,
    names: sled::Tree,
    runs: sled::Tree,
    objects: ObjectStore,
}

/// What `gc` found and removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub objects_removed: usize,
    pub bytes_freed: u64,
    pub records_removed: usize,
    pub objects_kept: usize,
    pub bytes_kept: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root`. sled allows one process per database:
    /// a second process waits here (or fails with `NoWait`) instead of touching anything.
    pub fn open(root: &Path, wait: LockWait, mut on_wait: impl FnMut(&str)) -> Result<Store, StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        let db_path = root.join("db");
        let mut told = false;
        let db = loop {
            match sled::Config::new().path(&db_path).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if is_lock_error(&e) => {
                    let owner =
                        fs::read_to_string(root.join("owner")).unwrap_or_else(|_| "another limaml process".to_string());
                    let owner = owner.trim().to_string();
                    match wait {
                        LockWait::NoWait => return Err(StoreError::Busy { path: root.to_path_buf(), owner }),
                        LockWait::Wait => {
                            if !told {
                                on_wait(&owner);
                                told = true;
                            }
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
                Err(e) => {
                    return Err(StoreError::Database { path: db_path, message: e.to_string() });
                }
            }
        };
        let tree = |name: &str| {
            db.open_tree(name).map_err(|e| StoreError::Database { path: db_path.clone(), message: e.to_string() })
        };
        let store = Store {
            stages: tree("stages")?,
            names: tree("names")?,
            runs: tree("runs")?,
            objects: ObjectStore::open(root.join("objects"))?,
            root: root.to_path_buf(),
            db,
        };
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records who holds the store, for processes that wait on it.
    pub fn set_owner(&self, description: &str) {
        let _ = fs::write(self.root.join("owner"), format!("{description}\n"));
    }

    fn db_error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database { path: self.root.join("db"), message: e.to_string() }
    }

    // ---- artifacts ----

    pub fn put_artifact(&self, bytes: &[u8]) -> Result<ArtifactRef, StoreError> {
        let digest = self.objects.put(bytes)?;
        Ok(ArtifactRef { digest, size: bytes.len() as u64 })
    }

    /// Reads an artifact, verified against its digest.
    pub fn get_artifact(&self, artifact: &ArtifactRef) -> Result<Vec<u8>, StoreError> {
        self.objects.get(&artifact.digest)
    }

    pub fn verify_artifact(&self, artifact: &ArtifactRef) -> Result<(), StoreError> {
        self.objects.verify(&artifact.digest)
    }

    pub fn artifact_path(&self, artifact: &ArtifactRef) -> PathBuf {
        self.objects.path_of(&artifact.digest)
    }

    // ---- stage records ----

    /// Commits a finished stage: its artifacts must already be stored. Durable on return.
    pub fn commit_stage(&self, record: &StageRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| self.db_error(e))?;
        recovery::write_record(&self.root, recovery::RecordKind::Stage, &record.key, &bytes)?;
        self.stages.insert(record.key.as_bytes(), bytes).map_err(|e| self.db_error(e))?;
        self.names.insert(record.name.as_bytes(), record.key.as_bytes()).map_err(|e| self.db_error(e))?;
        self.db.flush().map_err(|e| self.db_error(e))?;
        Ok(())
    }

    pub fn stage(&self, key: &str) -> Result<Option<StageRecord>, StoreError> {
        match self.stages.get(key.as_bytes()).map_err(|e| self.db_error(e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::BadRecord { key: key.to_string(), message: e.to_string() }),
        }
    }

    /// Drops a stage record (e.g. one whose artifact is corrupted), so the stage runs again.
    pub fn forget_stage(&self, key: &str) -> Result<(), StoreError> {
        self.stages.remove(key.as_bytes()).map_err(|e| self.db_error(e))?;
        self.db.flush().map_err(|e| self.db_error(e))?;
        recovery::remove_record(&self.root, recovery::RecordKind::Stage, key);
        Ok(())
    }

    /// The record of the last finished stage that had this name, whatever its key.
    pub fn last_stage_named(&self, name: &str) -> Result<Option<StageRecord>, StoreError> {
        let Some(key) = self.names.get(name.as_bytes()).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        self.stage(&String::from_utf8_lossy(&key))
    }

    // ---- runs ----

    pub fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(run).map_err(|e| self.db_error(e))?;
        recovery::write_record(&self.root, recovery::RecordKind::Run, &run.id, &bytes)?;
        self.runs.insert(run.id.as_bytes(), bytes).map_err(|e| self.db_error(e))?;
        self.db.flush().map_err(|e| self.db_error(e))?;
        Ok(())
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        match self.runs.get(id.as_bytes()).map_err(|e| self.db_error(e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::BadRecord { key: id.to_string(), message: e.to_string() }),
        }
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut runs = Vec::new();
        for entry in self.runs.iter() {
            let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
            let run: RunRecord = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadRecord {
                key: String::from_utf8_lossy(&key).to_string(),
                message: e.to_string(),
            })?;
            runs.push(run);
        }
        runs.sort_by(|a, b| (a.started_unix_ms, &a.id).cmp(&(b.started_unix_ms, &b.id)));
        Ok(runs)
    }

    pub fn remove_run(&self, id: &str) -> Result<bool, StoreError> {
        let removed = self.runs.remove(id.as_bytes()).map_err(|e| self.db_error(e))?.is_some();
        self.db.flush().map_err(|e| self.db_error(e))?;
        recovery::remove_record(&self.root, recovery::RecordKind::Run, id);
        Ok(removed)
    }

    // ---- garbage collection ----

    /// Removes stage records and artifacts that no kept run references. Runs are kept until
    /// removed (`limaml gc --keep-last N` removes older ones first).
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, StoreError> {
        let mut referenced_keys = BTreeSet::new();
        for run in self.runs()? {
            for stage in &run.stages {
                referenced_keys.insert(stage.key.clone());
            }
        }
        let mut live_objects = BTreeSet::new();
        let mut report = GcReport::default();
        let mut dead_keys = Vec::new();
        for entry in self.stages.iter() {
            let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
            let key = String::from_utf8_lossy(&key).to_string();
            if !referenced_keys.contains(&key) {
                dead_keys.push(key);
                continue;
            }
            if let Ok(record) = serde_json::from_slice::<StageRecord>(&bytes) {
                live_objects.extend(record.outputs.values().map(|a| a.digest.clone()));
            }
        }
        let (objects, temporaries) = self.objects.list()?;
        for (digest, size) in objects {
            if live_objects.contains(&digest) {
                report.objects_kept += 1;
                report.bytes_kept += size;
            } else {
                report.objects_removed += 1;
                report.bytes_freed += size;
                if !dry_run {
                    self.objects.remove(&digest)?;
                }
            }
        }
        for tmp in temporaries {
            report.bytes_freed += fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                let _ = fs::remove_file(&tmp);
            }
        }
        report.records_removed = dead_keys.len();
        if !dry_run {
            for key in dead_keys {
                self.stages.remove(key.as_bytes()).map_err(|e| self.db_error(e))?;
                recovery::remove_record(&self.root, recovery::RecordKind::Stage, &key);
            }
            self.db.flush().map_err(|e| self.db_error(e))?;
        }
        Ok(report)
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}
