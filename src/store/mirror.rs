//! The store's file mirror: every run and stage record also written as one JSON file, replaced
//! atomically (write a temporary, fsync, rename), so that readers (`runs`, `show`, `compare`,
//! `why`, `plan`, `export`, `gc --dry-run`) can read finished results while another process
//! holds sled's single-process lock.
//!
//! Owns the layout `records/runs/<id>.json`, `records/stages/<key>.json` and the
//! `records/complete` marker (every record present before it was written is mirrored), which
//! `limaml store recover` also rebuilds a damaged database from (`super::recovery`). Must not be
//! the source of truth: sled is; the mirror is written after each sled flush and backfilled
//! from sled when the marker is missing (stores made before the mirror existed).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::recovery::{record_path, RecordKind};
use super::StoreError;

pub struct Mirror {
    dir: PathBuf,
}

impl Mirror {
    pub fn new(root: &Path) -> Self {
        Mirror { dir: root.join(super::recovery::RECORDS_DIR) }
    }

    // File names as `recovery` reads them (ids with other characters than [A-Za-z0-9_-] are
    // hex-encoded).
    fn run_path(&self, id: &str) -> PathBuf {
        record_path(self.root(), RecordKind::Run, id)
    }

    fn stage_path(&self, key: &str) -> PathBuf {
        record_path(self.root(), RecordKind::Stage, key)
    }

    fn root(&self) -> &Path {
        self.dir.parent().expect("the mirror folder is inside the store")
    }

    pub fn is_complete(&self) -> bool {
        self.dir.join("complete").exists()
    }

    pub fn mark_complete(&self) -> Result<(), StoreError> {
        write_atomically(&self.dir.join("complete"), b"every record before this marker is mirrored\n")
    }

    pub fn put_run(&self, id: &str, json: &[u8]) -> Result<(), StoreError> {
        write_atomically(&self.run_path(id), json)
    }

    pub fn put_stage(&self, key: &str, json: &[u8]) -> Result<(), StoreError> {
        write_atomically(&self.stage_path(key), json)
    }

    pub fn remove_run(&self, id: &str) {
        let _ = fs::remove_file(self.run_path(id));
    }

    pub fn remove_stage(&self, key: &str) {
        let _ = fs::remove_file(self.stage_path(key));
    }

    pub fn stage(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_if_present(&self.stage_path(key))
    }

    pub fn run(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_if_present(&self.run_path(id))
    }

    /// Every mirrored run record, as bytes.
    pub fn runs(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.all("runs")
    }

    /// Every mirrored stage record, as bytes.
    pub fn stages(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.all("stages")
    }

    fn all(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let dir = self.dir.join(kind);
        let Ok(entries) = fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(bytes) = read_if_present(&path)? {
                out.push((id.to_string(), bytes));
            }
        }
        Ok(out)
    }
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().expect("mirror paths have a parent");
    fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let io = |e| StoreError::io(path, e);
    let mut file = fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&temporary, path).map_err(io)
}
