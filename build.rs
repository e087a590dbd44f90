//! Fingerprints of the data and model code, so stage keys change when the code that computes a
//! stage's outputs changes (like cargo's fingerprints), not only when someone bumps a version.
//! `LIMAML_DATA_CODE` hashes crates/data/src; `LIMAML_MODELS_CODE` hashes crates/models/src,
//! the data code and Cargo.lock (a different candle can change numbers).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn fingerprint(paths: &[&str]) -> String {
    let mut all = Vec::new();
    for path in paths {
        let path = Path::new(path);
        if path.is_dir() {
            files(path, &mut all);
        } else {
            all.push(path.to_path_buf());
        }
    }
    all.sort();
    // SipHash with fixed keys: deterministic for a given toolchain, which is all a cache needs.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in all {
        file.to_string_lossy().replace('\\', "/").hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

fn main() {
    for path in ["crates/data/src", "crates/models/src", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rustc-env=LIMAML_DATA_CODE={}", fingerprint(&["crates/data/src"]));
    println!("cargo:rustc-env=LIMAML_MODELS_CODE={}", fingerprint(&["crates/data/src", "crates/models/src", "Cargo.lock"]));
}
