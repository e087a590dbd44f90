//! The staging folder on the shared file system (layout in the parent module's docs): where
//! jobs read their inputs and stage their outputs, and the job side of a stage,
//! [`run_staged_stage`].
//!
//! Owns [`Staging`] (paths, atomic writes, digest-checked reads, exports of cached inputs),
//! [`StagedResult`], [`StagedFailure`] and the inputs a job reads. Must not open the store from
//! a job (sled admits one process) nor decide what to submit or commit (the coordinator does).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::SlurmError;
use crate::exec::{execute_stage, hostname, unix_ms};
use crate::plan::{Plan, PlanNode};
use crate::stages::{InputSource, StageError, StageOutput};
use crate::store::{ArtifactRef, StageRecord, Store};

/// What a job staged for one finished stage: its artifacts (files named by digest) and metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedResult {
    pub key: String,
    pub name: String,
    pub outputs: BTreeMap<String, ArtifactRef>,
    pub metrics: serde_json::Value,
    pub started_unix_ms: u64,
    pub seconds: f64,
    pub host: String,
}

/// What a job staged for a stage that failed: the stage's own error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedFailure {
    pub key: String,
    pub name: String,
    pub message: String,
    /// The stage's input was bad (the job exits with code 2).
    pub bad_input: bool,
}

/// The shared staging folder of a store (see the module documentation for its layout).
#[derive(Debug, Clone)]
pub struct Staging {
    root: PathBuf,
}

impl Staging {
    /// The staging folder of the store at `store_root`, made absolute so jobs can find it.
    pub fn for_store(store_root: &Path) -> Self {
        Staging::at(&store_root.join("staging"))
    }

    pub fn at(root: &Path) -> Self {
        Staging { root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stage_dir(&self, key: &str) -> PathBuf {
        self.root.join("stages").join(key)
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log_path(&self, job_id: &str) -> PathBuf {
        self.logs_dir().join(format!("{job_id}.log"))
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("jobs.json")
    }

    pub(super) fn create_dirs(&self) -> Result<(), SlurmError> {
        for dir in [self.root.join("stages"), self.logs_dir()] {
            fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        }
        Ok(())
    }

    /// Removes whatever an earlier attempt staged for `key`, before a fresh job is submitted.
    pub(super) fn clear_stage(&self, key: &str) -> Result<(), SlurmError> {
        let dir = self.stage_dir(key);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SlurmError::io(&dir, e)),
        }
        fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))
    }

    /// Reads `result.json` of `key`: `None` when the stage has staged no result.
    pub fn read_result(&self, key: &str) -> Result<Option<StagedResult>, SlurmError> {
        let path = self.stage_dir(key).join("result.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SlurmError::io(&path, e)),
        };
        let result: StagedResult = serde_json::from_slice(&bytes)
            .map_err(|e| SlurmError::BadStaging { path: path.clone(), message: e.to_string() })?;
        if result.key != key {
            return Err(SlurmError::BadStaging { path, message: format!("it is the result of stage key {}", result.key) });
        }
        Ok(Some(result))
    }

    pub fn read_failure(&self, key: &str) -> Option<StagedFailure> {
        let bytes = fs::read(self.stage_dir(key).join("error.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The bytes of a staged artifact of `key`, checked against its digest and size.
    pub fn read_artifact(&self, key: &str, artifact: &ArtifactRef) -> Result<Vec<u8>, SlurmError> {
        let path = self.stage_dir(key).join(&artifact.digest);
        let mut bytes = Vec::new();
        fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| SlurmError::io(&path, e))?;
        let actual = blake3::hash(&bytes).to_hex().to_string();
        if actual != artifact.digest || bytes.len() as u64 != artifact.size {
            return Err(SlurmError::BadStaging {
                path,
                message: format!("hashes to {actual} ({} bytes), expected {} ({} bytes)", bytes.len(), artifact.digest, artifact.size),
            });
        }
        Ok(bytes)
    }

    /// Writes one artifact file named by its digest (skipped when present with the right size).
    fn write_artifact(&self, key: &str, bytes: &[u8]) -> Result<ArtifactRef, SlurmError> {
        let digest = blake3::hash(bytes).to_hex().to_string();
        let path = self.stage_dir(key).join(&digest);
        if fs::metadata(&path).map(|m| m.len() == bytes.len() as u64).unwrap_or(false) {
            return Ok(ArtifactRef { digest, size: bytes.len() as u64 });
        }
        write_atomically(&path, bytes)?;
        Ok(ArtifactRef { digest, size: bytes.len() as u64 })
    }

    /// Job side: stages a finished stage's artifacts, then its `result.json`.
    pub fn write_result(&self, node: &PlanNode, output: &StageOutput, started_unix_ms: u64, seconds: f64) -> Result<StagedResult, SlurmError> {
        let dir = self.stage_dir(&node.key);
        fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        let mut outputs = BTreeMap::new();
        for (name, bytes) in &output.artifacts {
            outputs.insert(name.clone(), self.write_artifact(&node.key, bytes)?);
        }
        let result = StagedResult {
            key: node.key.clone(),
            name: node.name.clone(),
            outputs,
            metrics: output.metrics.clone(),
            started_unix_ms,
            seconds,
            host: hostname(),
        };
        write_json_atomically(&dir.join("result.json"), &result)?;
        Ok(result)
    }

    /// Job side: records why a stage failed, for the coordinator's message.
    pub fn write_failure(&self, node: &PlanNode, error: &StageError) -> Result<(), SlurmError> {
        let dir = self.stage_dir(&node.key);
        fs::create_dir_all(&dir).map_err(|e| SlurmError::io(&dir, e))?;
        let failure = StagedFailure {
            key: node.key.clone(),
            name: node.name.clone(),
            message: error.to_string(),
            bad_input: matches!(error, StageError::BadInput(_)),
        };
        write_json_atomically(&dir.join("error.json"), &failure)
    }

    /// Coordinator side: copies a cached stage's artifacts out of the store so jobs can read
    /// them. Skipped when an intact-looking export (or a job's result) is already there.
    pub fn export_cached(&self, store: &Store, record: &StageRecord) -> Result<(), SlurmError> {
        if let Some(existing) = self.read_result(&record.key).ok().flatten() {
            let dir = self.stage_dir(&record.key);
            let complete = existing.outputs == record.outputs
                && existing.outputs.values().all(|a| fs::metadata(dir.join(&a.digest)).map(|m| m.len() == a.size).unwrap_or(false));
            if complete {
                return Ok(());
            }
        }
        self.clear_stage(&record.key)?;
        for artifact in record.outputs.values() {
            let bytes = store.get_artifact(artifact)?;
            self.write_artifact(&record.key, &bytes)?;
        }
        let result = StagedResult {
            key: record.key.clone(),
            name: record.name.clone(),
            outputs: record.outputs.clone(),
            metrics: record.metrics.clone(),
            started_unix_ms: record.started_unix_ms,
            seconds: record.seconds,
            host: record.host.clone(),
        };
        write_json_atomically(&self.stage_dir(&record.key).join("result.json"), &result)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SlurmError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SlurmError::io(path, e)
    })
}

pub(super) fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> Result<(), SlurmError> {
    let bytes = serde_json::to_vec_pretty(value).expect("staging JSON serializes");
    write_atomically(path, &bytes)
}

/// Inputs of a stage running in a job: read from the staging folder, verified on every read.
struct StagedInputs<'a> {
    staging: &'a Staging,
    /// Role -> the input's key and staged result, in the order the stage reads them.
    inputs: Vec<(String, String, StagedResult)>,
}

impl StagedInputs<'_> {
    fn find(&self, role: &str) -> Result<&(String, String, StagedResult), StageError> {
        self.inputs.iter().find(|(r, _, _)| r == role).ok_or_else(|| StageError::Failed(format!("no input '{role}'")))
    }
}

impl InputSource for StagedInputs<'_> {
    fn artifact(&self, role: &str, name: &str) -> Result<Vec<u8>, StageError> {
        let (_, key, result) = self.find(role)?;
        let artifact = result
            .outputs
            .get(name)
            .ok_or_else(|| StageError::Failed(format!("input '{role}' ({}) has no artifact '{name}'", result.name)))?;
        self.staging.read_artifact(key, artifact).map_err(|e| StageError::Failed(e.to_string()))
    }

    fn metrics(&self, role: &str) -> Result<serde_json::Value, StageError> {
        Ok(self.find(role)?.2.metrics.clone())
    }

    fn roles(&self) -> Vec<String> {
        self.inputs.iter().map(|(role, _, _)| role.clone()).collect()
    }

    fn digest(&self, role: &str, name: &str) -> Option<String> {
        Some(self.find(role).ok()?.2.outputs.get(name)?.digest.clone())
    }
}

/// Job side (`limaml stage exec`): runs the stage of `plan` whose key is `key`, reading its
/// inputs from `staging` and staging its output there (or its error). Never opens the store.
pub fn run_staged_stage(plan: &Plan, key: &str, staging: &Staging) -> Result<StagedResult, StageError> {
    let index = plan.graph.node_indices().find(|&i| plan.node(i).key == key).ok_or_else(|| {
        StageError::BadInput(format!("the plan has no stage with key {key} (did the spec or its data change since the job was submitted?)"))
    })?;
    let node = plan.node(index);
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    eprintln!("limaml stage exec: {} (key {}) on {}", node.name, node.short_key(), hostname());
    let outcome = (|| -> Result<StagedResult, StageError> {
        let mut inputs = Vec::new();
        for (role, input) in &node.inputs {
            let upstream = plan.node(*input);
            let result = staging
                .read_result(&upstream.key)
                .map_err(|e| StageError::Failed(e.to_string()))?
                .ok_or_else(|| StageError::Failed(format!("input {} has no staged output in {}", upstream.name, staging.root().display())))?;
            inputs.push((role.clone(), upstream.key.clone(), result));
        }
        let inputs = StagedInputs { staging, inputs };
        let never_cancelled = AtomicBool::new(false);
        let name = node.name.clone();
        let report = move |message: String| eprintln!("  {name}: {message}");
        let output = execute_stage(node, &inputs, &never_cancelled, &report, None)?;
        staging
            .write_result(node, &output, started_unix_ms, started.elapsed().as_secs_f64())
            .map_err(|e| StageError::Failed(e.to_string()))
    })();
    match outcome {
        Ok(result) => {
            eprintln!("limaml stage exec: {} done in {:.1}s", node.name, started.elapsed().as_secs_f64());
            Ok(result)
        }
        Err(error) => {
            if let Err(write_error) = staging.write_failure(node, &error) {
                eprintln!("limaml stage exec: cannot stage the failure: {write_error}");
            }
            Err(error)
        }
    }
}
