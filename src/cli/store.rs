//! `limaml store check` and `limaml store recover`, and the checks on `--store` itself: a store
//! path that cannot be a store is bad input (exit 2), named with the flag.

use std::path::Path;
use std::process::ExitCode;

use limaml::store::recovery;

use super::{failed, Failure};

/// Fails (exit 2) when `path` cannot hold a store: not a folder, cannot be created, or not
/// writable (a read-only mount, `/proc`).
pub fn check_store_path(path: &Path) -> Result<(), Failure> {
    let bad = |why: String| {
        Failure::BadInput(format!(
            "--store {}: {why}; give a writable folder with --store DIR (or LIMAML_STORE)",
            path.display()
        ))
    };
    match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_dir() => return Err(bad("is not a folder".into())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path).map_err(|e| bad(format!("cannot be created ({e})")))?;
        }
        Err(e) => return Err(bad(format!("cannot be read ({e})"))),
    }
    let probe = path.join(format!(".write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| bad(format!("is not writable ({e})")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// How a store error reads at the CLI: a damaged database names the way out.
pub fn store_failure(store_path: &Path, error: limaml::store::StoreError) -> Failure {
    match error {
        limaml::store::StoreError::Database { .. } | limaml::store::StoreError::BadRecord { .. } => {
            Failure::Failed(format!(
                "{error}\n  the store's database looks damaged: `limaml --store {0} store recover` moves it aside and \
                 rebuilds it from {0}/{1}/, then `limaml --store {0} store check` verifies the result \
                 (README, \"Recovering a damaged store\")",
                store_path.display(),
                recovery::RECORDS_DIR
            ))
        }
        other => Failure::Failed(other.to_string()),
    }
}

pub fn check_command(store_path: &Path, json: bool) -> Result<ExitCode, Failure> {
    let store = super::commands::open_store(store_path, false)?;
    let report = store.check().map_err(|e| store_failure(store_path, e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serializes"));
    } else {
        println!(
            "{}: {} stage record(s), {} run record(s), {} artifact(s) verified, {} problem(s)",
            store_path.display(),
            report.stage_records,
            report.run_records,
            report.artifacts_verified,
            report.problems.len()
        );
        for problem in &report.problems {
            println!("  {problem}");
        }
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

pub fn recover_command(store_path: &Path) -> Result<ExitCode, Failure> {
    check_store_path(store_path)?;
    let report = recovery::recover(store_path).map_err(failed)?;
    if let Some(aside) = &report.database_moved_to {
        println!("moved the old database to {}", aside.display());
    }
    println!(
        "restored {} stage record(s) and {} run record(s); {} stage(s) with missing or corrupted artifacts will rerun",
        report.stages_restored, report.runs_restored, report.stages_dropped
    );
    if let Some(dir) = &report.unreadable_moved_to {
        println!("moved {} unreadable record file(s) to {}", report.unreadable, dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
