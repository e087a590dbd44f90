//! Checking a store and recovering from a damaged database.
//!
//! Every record the database holds is also kept as a JSON file under `records/` (`stages/`,
//! `runs/`; written by [`super::mirror`] after each flush, and backfilled for older stores).
//! `check` verifies records and artifacts; `recover` moves a damaged database aside and rebuilds
//! it from those files, keeping only stage records whose artifacts are intact (the rest rerun)
//! and moving unreadable files aside. Owns those two operations; must not decide what runs.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{RunRecord, StageRecord, Store, StoreError};

/// The folder of record files, beside `db/`.
pub const RECORDS_DIR: &str = "records";

/// A record kind of the mirror: its folder under [`RECORDS_DIR`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum RecordKind {
    Stage,
    Run,
}

impl RecordKind {
    fn folder(self) -> &'static str {
        match self {
            RecordKind::Stage => "stages",
            RecordKind::Run => "runs",
        }
    }
}

/// The mirror file of a record: ids are hex digests or run ids; anything else is hex-encoded.
pub(crate) fn record_path(root: &Path, kind: RecordKind, id: &str) -> PathBuf {
    let safe = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let name = if safe { id.to_string() } else { id.bytes().map(|b| format!("{b:02x}")).collect() };
    root.join(RECORDS_DIR).join(kind.folder()).join(format!("{name}.json"))
}

/// What `limaml store check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub stage_records: usize,
    pub run_records: usize,
    pub artifacts_verified: usize,
    /// One line per problem: a record that does not parse, an artifact missing or corrupted, a
    /// record missing from `records/`.
    pub problems: Vec<String>,
}

impl Store {
    /// Verifies every record (it parses, and is mirrored under `records/`) and every artifact a
    /// stage record names (present, and hashing to its digest).
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let trees = self.writable("check the database (it is in use)")?;
        for entry in trees.stages.iter() {
            let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
            let key = String::from_utf8_lossy(&key).to_string();
            report.stage_records += 1;
            let record: StageRecord = match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(e) => {
                    report.problems.push(format!("stage record {key} does not parse: {e}"));
                    continue;
                }
            };
            for (name, artifact) in &record.outputs {
                match self.verify_artifact(artifact) {
                    Ok(()) => report.artifacts_verified += 1,
                    Err(e) => report.problems.push(format!("stage {} ({key}) artifact {name}: {e}", record.name)),
                }
            }
            if !record_path(&self.root, RecordKind::Stage, &key).is_file() {
                report.problems.push(format!("stage record {key} has no copy under {RECORDS_DIR}/ (recover cannot rebuild it)"));
            }
        }
        for entry in trees.runs.iter() {
            let (id, bytes) = entry.map_err(|e| self.db_error(e))?;
            let id = String::from_utf8_lossy(&id).to_string();
            report.run_records += 1;
            if let Err(e) = serde_json::from_slice::<RunRecord>(&bytes) {
                report.problems.push(format!("run record {id} does not parse: {e}"));
            }
            if !record_path(&self.root, RecordKind::Run, &id).is_file() {
                report.problems.push(format!("run record {id} has no copy under {RECORDS_DIR}/ (recover cannot rebuild it)"));
            }
        }
        Ok(report)
    }
}

/// What `limaml store recover` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverReport {
    /// Where the old database went.
    pub database_moved_to: Option<PathBuf>,
    pub stages_restored: usize,
    pub runs_restored: usize,
    /// Stage records left out because an artifact is missing or corrupted: those stages rerun.
    pub stages_dropped: usize,
    /// Record files that do not parse, moved here.
    pub unreadable_moved_to: Option<PathBuf>,
    pub unreadable: usize,
}

/// Rebuilds the database of the store at `root` from its record files: the old `db/` is moved to
/// `db.damaged-<unix seconds>`, a new one is created, and every readable record whose artifacts
/// are intact is inserted. Takes the store's lock like any writer (the new database's).
pub fn recover(root: &Path) -> Result<RecoverReport, StoreError> {
    let mut report = RecoverReport::default();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let db = root.join("db");
    if db.exists() {
        let aside = root.join(format!("db.damaged-{stamp}"));
        fs::rename(&db, &aside).map_err(|e| StoreError::io(&db, e))?;
        report.database_moved_to = Some(aside);
    }
    let store = Store::open(root, super::LockWait::NoWait, |_| {})?;
    let unreadable_dir = root.join(format!("{RECORDS_DIR}.unreadable-{stamp}"));
    let move_aside = |path: &Path, report: &mut RecoverReport| -> Result<(), StoreError> {
        fs::create_dir_all(&unreadable_dir).map_err(|e| StoreError::io(&unreadable_dir, e))?;
        let to = unreadable_dir.join(path.file_name().unwrap_or_default());
        fs::rename(path, &to).map_err(|e| StoreError::io(path, e))?;
        report.unreadable += 1;
        report.unreadable_moved_to = Some(unreadable_dir.clone());
        Ok(())
    };
    for path in record_files(root, RecordKind::Stage)? {
        let record = fs::read(&path).ok().and_then(|bytes| serde_json::from_slice::<StageRecord>(&bytes).ok());
        let Some(record) = record else {
            move_aside(&path, &mut report)?;
            continue;
        };
        if record.outputs.values().all(|artifact| store.verify_artifact(artifact).is_ok()) {
            store.commit_stage(&record)?;
            report.stages_restored += 1;
        } else {
            store.forget_stage(&record.key)?;
            report.stages_dropped += 1;
        }
    }
    for path in record_files(root, RecordKind::Run)? {
        let record = fs::read(&path).ok().and_then(|bytes| serde_json::from_slice::<RunRecord>(&bytes).ok());
        match record {
            Some(run) => {
                store.put_run(&run)?;
                report.runs_restored += 1;
            }
            None => move_aside(&path, &mut report)?,
        }
    }
    Ok(report)
}

/// The record files of one kind, sorted (temporary files of an interrupted write skipped).
fn record_files(root: &Path, kind: RecordKind) -> Result<Vec<PathBuf>, StoreError> {
    let dir = root.join(RECORDS_DIR).join(kind.folder());
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}
