//! Helpers shared by the integration tests: scratch folders and the ML-100K location.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh, empty folder under the system temp dir, unique per process and call.
pub fn scratch_dir(label: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "limaml-data-test-{}-{}-{}",
        label,
        std::process::id(),
        n
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// The real ML-100K folder: $LIMAML_DATA, else /work/shared/data/ml-100k, else the shared
/// folder beside the checkout. `None` (after a notice) when absent, unless CI=true.
pub fn ml100k_dir() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("LIMAML_DATA").map(PathBuf::from),
        Some(PathBuf::from("/work/shared/data/ml-100k")),
        Some(manifest.join("../../../shared/data/ml-100k")),
    ];
    for dir in candidates.into_iter().flatten() {
        if dir.join("u.data").is_file() {
            return Some(dir);
        }
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("ML-100K not found: set LIMAML_DATA to the ml-100k folder");
    }
    eprintln!("notice: ML-100K not found (set LIMAML_DATA); skipping this test");
    None
}
