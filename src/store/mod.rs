//! The store under `runs/store`: sled for records and indexes, content-addressed files for
//! artifacts. Owns the single-writer lock, atomic stage commits, run records and garbage
//! collection. Must not decide what runs: the executor asks, the store answers and records.
//!
//! Layout:
//! - `db/`: sled trees `stages` (stage key -> [`StageRecord`]), `names` (stage name -> last key,
//!   for `limaml why`), `runs` (run id -> [`RunRecord`]).
//! - `objects/`: artifacts as files named by the blake3 digest of their bytes ([`objects`]).
//! - `owner`: which run holds the lock, for the message a waiting process prints.
//! - `records/`: every run and stage record as an atomically replaced JSON file ([`mirror`]):
//!   read by a reader that finds the lock held ([`LockWait::ReadOnly`], so readers never wait),
//!   and the source `limaml store recover` rebuilds a damaged database from ([`recovery`]).
//!
//! Commit protocol: a stage's artifacts are written (fsynced, renamed) first, then its record is
//! inserted and the db flushed. A crash before the flush leaves, at worst, unreferenced objects
//! (removed by `gc`), never a record that claims a stage finished.

pub mod mirror;
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
    #[error("the store {path} is in use by {owner}; it was opened read-only (its file mirror), which cannot {action}")]
    ReadOnly { path: PathBuf, owner: String, action: String },
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
    /// The `--set` overrides the run was started with.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Per-method headline metrics (the run summary), filled at the end.
    pub metrics: serde_json::Value,
    /// Per searched method: its trials and the winner; null without `[search]`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub search: serde_json::Value,
}

/// How `Store::open` behaves when another process holds the store.
#[derive(Debug, Clone, Copy)]
pub enum LockWait {
    /// Fail at once with `StoreError::Busy`.
    NoWait,
    /// Retry until free, calling `on_wait` once with the owner's description.
    Wait,
    /// Readers: when another process holds the lock, read the file mirror instead of waiting
    /// (every finished run and stage is there; writes fail with `StoreError::ReadOnly`).
    ReadOnly,
}

pub struct Store {
    root: PathBuf,
    /// sled's trees; `None` when opened read-only through the mirror.
    trees: Option<Trees>,
    mirror: mirror::Mirror,
    /// Who held the lock when this store was opened read-only.
    owner: String,
    objects: ObjectStore,
}

pub(crate) struct Trees {
    pub(crate) db: sled::Db,
    pub(crate) stages: sled::Tree,
    pub(crate) names: sled::Tree,
    pub(crate) runs: sled::Tree,
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
                        LockWait::ReadOnly => {
                            return Ok(Store {
                                trees: None,
                                mirror: mirror::Mirror::new(root),
                                owner,
                                objects: ObjectStore::open(root.join("objects"))?,
                                root: root.to_path_buf(),
                            })
                        }
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
        let trees = Trees { stages: tree("stages")?, names: tree("names")?, runs: tree("runs")?, db };
        let store = Store {
            trees: Some(trees),
            mirror: mirror::Mirror::new(root),
            owner: String::new(),
            objects: ObjectStore::open(root.join("objects"))?,
            root: root.to_path_buf(),
        };
        store.backfill_mirror()?;
        Ok(store)
    }

    /// Whether this store reads the file mirror (another process holds the lock).
    pub fn is_read_only(&self) -> bool {
        self.trees.is_none()
    }

    /// The trees, for writes; read-only stores refuse with `action` in the message.
    pub(crate) fn writable(&self, action: &str) -> Result<&Trees, StoreError> {
        self.trees.as_ref().ok_or_else(|| StoreError::ReadOnly {
            path: self.root.clone(),
            owner: self.owner.clone(),
            action: action.to_string(),
        })
    }

    /// Mirrors every record once for stores made before the mirror existed.
    fn backfill_mirror(&self) -> Result<(), StoreError> {
        let Some(trees) = &self.trees else { return Ok(()) };
        if self.mirror.is_complete() {
            return Ok(());
        }
        for entry in trees.stages.iter() {
            let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
            self.mirror.put_stage(&String::from_utf8_lossy(&key), &bytes)?;
        }
        for entry in trees.runs.iter() {
            let (id, bytes) = entry.map_err(|e| self.db_error(e))?;
            self.mirror.put_run(&String::from_utf8_lossy(&id), &bytes)?;
        }
        self.mirror.mark_complete()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records who holds the store, for processes that wait on it.
    pub fn set_owner(&self, description: &str) {
        if !self.is_read_only() {
            let _ = fs::write(self.root.join("owner"), format!("{description}\n"));
        }
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
        let trees = self.writable("commit a stage")?;
        let bytes = serde_json::to_vec(record).map_err(|e| self.db_error(e))?;
        trees.stages.insert(record.key.as_bytes(), bytes.as_slice()).map_err(|e| self.db_error(e))?;
        trees.names.insert(record.name.as_bytes(), record.key.as_bytes()).map_err(|e| self.db_error(e))?;
        trees.db.flush().map_err(|e| self.db_error(e))?;
        self.mirror.put_stage(&record.key, &bytes)
    }

    pub fn stage(&self, key: &str) -> Result<Option<StageRecord>, StoreError> {
        let bytes = match &self.trees {
            Some(trees) => trees.stages.get(key.as_bytes()).map_err(|e| self.db_error(e))?.map(|b| b.to_vec()),
            None => self.mirror.stage(key)?,
        };
        decode_record(key, bytes)
    }

    /// Drops a stage record (e.g. one whose artifact is corrupted), so the stage runs again.
    pub fn forget_stage(&self, key: &str) -> Result<(), StoreError> {
        let trees = self.writable("forget a stage")?;
        trees.stages.remove(key.as_bytes()).map_err(|e| self.db_error(e))?;
        trees.db.flush().map_err(|e| self.db_error(e))?;
        self.mirror.remove_stage(key);
        Ok(())
    }

    /// The record of the last finished stage that had this name, whatever its key (`None` from
    /// a read-only store, which keeps no name index).
    pub fn last_stage_named(&self, name: &str) -> Result<Option<StageRecord>, StoreError> {
        let Some(trees) = &self.trees else { return Ok(None) };
        let Some(key) = trees.names.get(name.as_bytes()).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        self.stage(&String::from_utf8_lossy(&key))
    }

    // ---- runs ----

    pub fn put_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let trees = self.writable("record a run")?;
        let bytes = serde_json::to_vec(run).map_err(|e| self.db_error(e))?;
        trees.runs.insert(run.id.as_bytes(), bytes.as_slice()).map_err(|e| self.db_error(e))?;
        trees.db.flush().map_err(|e| self.db_error(e))?;
        self.mirror.put_run(&run.id, &bytes)
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let bytes = match &self.trees {
            Some(trees) => trees.runs.get(id.as_bytes()).map_err(|e| self.db_error(e))?.map(|b| b.to_vec()),
            None => self.mirror.run(id)?,
        };
        decode_record(id, bytes)
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let entries: Vec<(String, Vec<u8>)> = match &self.trees {
            Some(trees) => {
                let mut entries = Vec::new();
                for entry in trees.runs.iter() {
                    let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
                    entries.push((String::from_utf8_lossy(&key).to_string(), bytes.to_vec()));
                }
                entries
            }
            None => self.mirror.runs()?,
        };
        let mut runs = Vec::new();
        for (key, bytes) in entries {
            let run: RunRecord = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::BadRecord { key, message: e.to_string() })?;
            runs.push(run);
        }
        runs.sort_by(|a, b| (a.started_unix_ms, &a.id).cmp(&(b.started_unix_ms, &b.id)));
        Ok(runs)
    }

    pub fn remove_run(&self, id: &str) -> Result<bool, StoreError> {
        let trees = self.writable("forget a run")?;
        let removed = trees.runs.remove(id.as_bytes()).map_err(|e| self.db_error(e))?.is_some();
        trees.db.flush().map_err(|e| self.db_error(e))?;
        self.mirror.remove_run(id);
        Ok(removed)
    }

    // ---- garbage collection ----

    /// Removes stage records and artifacts that no kept run references. Runs are kept until
    /// removed (`limaml gc --keep-last N` removes older ones first). `forgotten`: runs to count
    /// as removed (a dry run of `--keep-last` reports exactly what the real one frees).
    pub fn gc(&self, dry_run: bool, forgotten: &BTreeSet<String>) -> Result<GcReport, StoreError> {
        let mut referenced_keys = BTreeSet::new();
        for run in self.runs()?.iter().filter(|r| !forgotten.contains(&r.id)) {
            for stage in &run.stages {
                referenced_keys.insert(stage.key.clone());
            }
        }
        let mut live_objects = BTreeSet::new();
        let mut report = GcReport::default();
        let mut dead_keys = Vec::new();
        // A dry run reads the mirror when another process holds the lock.
        let trees = if dry_run { self.trees.as_ref() } else { Some(self.writable("collect garbage")?) };
        let records: Vec<(String, Vec<u8>)> = match trees {
            Some(trees) => {
                let mut records = Vec::new();
                for entry in trees.stages.iter() {
                    let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
                    records.push((String::from_utf8_lossy(&key).to_string(), bytes.to_vec()));
                }
                records
            }
            None => self.mirror.stages()?,
        };
        for (key, bytes) in records {
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
        if let (false, Some(trees)) = (dry_run, trees) {
            for key in dead_keys {
                trees.stages.remove(key.as_bytes()).map_err(|e| self.db_error(e))?;
                self.mirror.remove_stage(&key);
            }
            trees.db.flush().map_err(|e| self.db_error(e))?;
        }
        Ok(report)
    }
}

/// A record's JSON, when present, as `T`; unreadable JSON is `BadRecord` naming `key`.
fn decode_record<T: serde::de::DeserializeOwned>(key: &str, bytes: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    bytes
        .map(|bytes| serde_json::from_slice(&bytes))
        .transpose()
        .map_err(|e| StoreError::BadRecord { key: key.to_string(), message: e.to_string() })
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}
