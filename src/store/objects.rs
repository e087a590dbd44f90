//! Content-addressed artifact files: `objects/<2 hex>/<62 hex>`, named by the blake3 digest of
//! their bytes. Owns writing (temp file, fsync, rename) and verified reading.
//! Must not know about stages or runs: sled indexes these files, this module only stores bytes.
//!
//! Why files and not sled values: sled 0.34 amplifies space badly for values over ~128 KiB
//! (measured: 32 MiB live grew to 1 GiB), so large artifacts live here and sled keeps the index.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;

/// The blake3 digest of an artifact's bytes, as 64 lowercase hex characters.
pub type Digest = String;

/// Every object `(digest, size)`, and leftover temporary files.
pub type ObjectListing = (Vec<(Digest, u64)>, Vec<PathBuf>);

pub struct ObjectStore {
    root: PathBuf,
}

impl ObjectStore {
    pub fn open(root: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join("tmp")).map_err(|e| StoreError::io(&root, e))?;
        Ok(Self { root })
    }

    pub fn path_of(&self, digest: &str) -> PathBuf {
        self.root.join(&digest[..2]).join(&digest[2..])
    }

    /// Stores `bytes` and returns their digest. Idempotent: an object already present is kept.
    /// The file appears under its final name only once complete and fsynced.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let digest = blake3::hash(bytes).to_hex().to_string();
        let final_path = self.path_of(&digest);
        // Present and intact: nothing to write. Present but corrupted: overwritten below.
        if file_len(&final_path) == Some(bytes.len() as u64) && self.verify(&digest).is_ok() {
            return Ok(digest);
        }
        let dir = final_path.parent().expect("object path has a parent");
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let tmp_path =
            self.root.join("tmp").join(format!("{}.{}.{}", &digest[..16], std::process::id(), unique_suffix()));
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&tmp_path)?;
            // Large artifacts are written in chunks; nothing is held twice in memory.
            for chunk in bytes.chunks(1 << 20) {
                file.write_all(chunk)?;
            }
            file.sync_all()?;
            fs::rename(&tmp_path, &final_path)?;
            if let Ok(dir) = fs::File::open(dir) {
                let _ = dir.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp_path);
            StoreError::io(&final_path, e)
        })?;
        Ok(digest)
    }

    /// Reads an object and checks it against its digest; a mismatch is `StoreError::Corrupted`.
    pub fn get(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path_of(digest);
        let mut bytes = Vec::new();
        fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingObject { digest: digest.to_string() },
            _ => StoreError::io(&path, e),
        })?;
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if actual != digest {
            return Err(StoreError::Corrupted { digest: digest.to_string(), path, actual });
        }
        Ok(bytes)
    }

    /// Streams an object through blake3 without keeping it in memory.
    pub fn verify(&self, digest: &str) -> Result<(), StoreError> {
        let path = self.path_of(digest);
        let mut file = fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingObject { digest: digest.to_string() },
            _ => StoreError::io(&path, e),
        })?;
        let mut hasher = blake3::Hasher::new();
        io::copy(&mut file, &mut hasher).map_err(|e| StoreError::io(&path, e))?;
        let actual = hasher.finalize().to_hex().to_string();
        if actual != digest {
            return Err(StoreError::Corrupted { digest: digest.to_string(), path, actual });
        }
        Ok(())
    }

    pub fn remove(&self, digest: &str) -> Result<u64, StoreError> {
        let path = self.path_of(digest);
        let size = file_len(&path).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Every object digest on disk, with its size; also leftover temp files from crashed writes.
    pub fn list(&self) -> Result<ObjectListing, StoreError> {
        let mut objects = Vec::new();
        let mut temporaries = Vec::new();
        let entries = fs::read_dir(&self.root).map_err(|e| StoreError::io(&self.root, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name == "tmp" {
                for tmp in fs::read_dir(&path).map_err(|e| StoreError::io(&path, e))?.flatten() {
                    temporaries.push(tmp.path());
                }
                continue;
            }
            if name.len() != 2 || !path.is_dir() {
                continue;
            }
            for object in fs::read_dir(&path).map_err(|e| StoreError::io(&path, e))?.flatten() {
                let rest = object.file_name().to_string_lossy().to_string();
                let size = object.metadata().map(|m| m.len()).unwrap_or(0);
                objects.push((format!("{name}{rest}"), size));
            }
        }
        objects.sort();
        Ok((objects, temporaries))
    }
}

fn file_len(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

fn unique_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) as u128)
}
