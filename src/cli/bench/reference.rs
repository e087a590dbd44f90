//! The PyTorch reference (`bench/reference.py`): finding it, running it, and writing the task set
//! and settings it reads. Must not time limaml (`child` does).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use limaml_data::{Interactions, TaskRole, TaskSet};
use limaml_models::TrainConfig;
use serde_json::{json, Value};

use super::super::Failure;
use super::{ModelSize, BENCH_DIR_ENV};

pub(super) struct TorchReference {
    pub(super) python: PathBuf,
    script: PathBuf,
}

impl TorchReference {
    /// Finds `bench/.venv/bin/python` and `bench/reference.py`; the error says how to set it up.
    pub(super) fn locate() -> Result<TorchReference, String> {
        let candidates: Vec<PathBuf> = match std::env::var_os(BENCH_DIR_ENV) {
            Some(dir) => vec![PathBuf::from(dir)],
            None => vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("bench"), PathBuf::from("bench")],
        };
        for dir in &candidates {
            let python = dir.join(".venv/bin/python");
            let script = dir.join("reference.py");
            if python.exists() && script.exists() {
                return Ok(TorchReference { python, script });
            }
        }
        Err(format!(
            "the PyTorch reference is not set up ({} not found): run bench/setup.sh (pip-installs torch \
             and numpy from PyPI into bench/.venv, ~3 GB, ~3 min) to compare; limaml's numbers only, \
             ratios null",
            candidates[0].join(".venv/bin/python").display()
        ))
    }

    pub(super) fn run(&self, data_dir: &Path, config: &Path, threads: usize) -> Result<Value, Failure> {
        let output = Command::new(&self.python)
            .arg(&self.script)
            .arg("--data")
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .arg("--json")
            // One compute pool of `threads` threads, as candle's; no nested OpenMP/MKL pools.
            .env("OMP_NUM_THREADS", threads.to_string())
            .env("MKL_NUM_THREADS", threads.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            return Err(Failure::Failed(format!("{} failed ({})", self.script.display(), output.status)));
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| Failure::Failed(format!("{} printed unreadable JSON: {e}", self.script.display())))
    }
}

/// Writes the task set twice: `tasks.postcard` for the limaml children, and raw little-endian
/// arrays plus `data.json` for the PyTorch reference (layout documented in bench/README.md).
pub(super) fn write_task_set(dir: &Path, interactions: &Interactions, tasks: &TaskSet) -> Result<Value, Failure> {
    fs::write(dir.join("tasks.postcard"), limaml_data::to_bytes(&(interactions, tasks)))?;
    let f = &tasks.features;
    let mut arrays = serde_json::Map::new();
    let mut put = |name: &str, dtype: &str, shape: Vec<usize>, bytes: Vec<u8>| -> Result<(), Failure> {
        let file = format!("{name}.bin");
        fs::write(dir.join(&file), bytes)?;
        arrays.insert(name.into(), json!({"file": file, "dtype": dtype, "shape": shape}));
        Ok(())
    };
    fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| to(v)).collect()
    }
    put("user_features", "float32", vec![f.n_users, f.user_dim], le(&f.user_features, f32::to_le_bytes))?;
    put("item_features", "float32", vec![f.n_items, f.item_dim], le(&f.item_features, f32::to_le_bytes))?;
    let n = interactions.len();
    put("row_user", "uint32", vec![n], le(&interactions.user, u32::to_le_bytes))?;
    put("row_item", "uint32", vec![n], le(&interactions.item, u32::to_le_bytes))?;
    put("row_label", "float32", vec![n], le(&interactions.label, f32::to_le_bytes))?;
    put("row_timestamp", "int64", vec![n], le(&interactions.timestamp, i64::to_le_bytes))?;
    let t = tasks.tasks.len();
    let entity: Vec<u32> = tasks.tasks.iter().map(|t| t.entity).collect();
    let role: Vec<u8> = tasks
        .tasks
        .iter()
        .map(|t| match t.role {
            TaskRole::MetaTrain => 0,
            TaskRole::Validation => 1,
            TaskRole::Test => 2,
        })
        .collect();
    put("task_entity", "uint32", vec![t], le(&entity, u32::to_le_bytes))?;
    put("task_role", "uint8", vec![t], role)?;
    for (name, rows_of) in [("support", 0), ("query", 1)] {
        let mut offsets = vec![0u64];
        let mut rows = Vec::new();
        for task in &tasks.tasks {
            rows.extend_from_slice(if rows_of == 0 { &task.support } else { &task.query });
            offsets.push(rows.len() as u64);
        }
        put(&format!("{name}_offsets"), "uint64", vec![t + 1], le(&offsets, u64::to_le_bytes))?;
        put(&format!("{name}_rows"), "uint32", vec![rows.len()], le(&rows, u32::to_le_bytes))?;
    }
    let meta_train = tasks.tasks.iter().filter(|t| t.role == TaskRole::MetaTrain).count();
    let summary = json!({
        "users": f.n_users,
        "items": f.n_items,
        "user_dim": f.user_dim,
        "item_dim": f.item_dim,
        "interactions": n,
        "tasks": t,
        "meta_train_tasks": meta_train,
        "task_entity": "user",
    });
    let mut document = summary.clone();
    document["arrays"] = Value::Object(arrays);
    fs::write(dir.join("data.json"), serde_json::to_vec_pretty(&document).expect("serializes"))?;
    Ok(summary)
}

/// The model and training settings the reference must use for `size` (written as JSON).
pub(super) fn write_reference_config(dir: &Path, size: ModelSize, meta_batches: usize, threads: usize) -> Result<PathBuf, Failure> {
    let limaml = size.limaml_config(false);
    let train = TrainConfig::default();
    let config = json!({
        "name": size.name,
        "meta_hidden": limaml.meta_hidden,
        "global_hidden": limaml.hidden,
        "meta_embedding_dim": limaml.meta_embedding_dim,
        "item_id_embedding_dim": limaml.item_id_embedding_dim,
        "entity_id_embedding_dim": limaml.entity_id_embedding_dim,
        "meta_inputs": limaml.meta_inputs,
        "inner_steps": limaml.inner_steps,
        "inner_lr": limaml.inner_lr,
        "meta_batch": limaml.meta_batch,
        "learning_rate": train.learning_rate,
        "weight_decay": train.l2,
        "max_support": train.max_support,
        "max_query": train.max_query,
        "meta_batches": meta_batches,
        "export_chunk": limaml_models::limaml::EVAL_CHUNK,
        "score_chunk": 8192,
        "threads": threads,
        "seed": 7,
    });
    let path = dir.join(format!("config-{}.json", size.name));
    fs::write(&path, serde_json::to_vec_pretty(&config).expect("serializes"))?;
    Ok(path)
}
