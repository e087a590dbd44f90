//! `limaml export`: a run's evaluated predictions, per-user metrics and meta embeddings as files
//! a notebook loads with one call each (`pandas.read_csv`, `safetensors.numpy.load_file`).
//!
//! Owns [`export_run`] and the file layout it writes:
//! - `predictions.csv`: run, method, seed, task, row, user, item, timestamp, label, score: every
//!   scored test row of every evaluated method and seed (`row` is the interaction row, which
//!   breaks score ties in the ranking metrics; `user`/`item` are the source's ids);
//! - `per_user_metrics.csv`: run, method, seed, task, user, window, segment, state, rows,
//!   positives, then every per-task metric (`auc`, `ndcg@10`, `full_mrr`, ...; empty where
//!   undefined);
//! - `meta_embeddings/<method>_seed<seed>.csv` (method, seed, entity, user, m0..) and `.safetensors`
//!   (the `embeddings` and `entity_ids` tensors the export stage wrote), per LiMAML embedding
//!   export of the run;
//! - `manifest.json`: the run, and each file with its rows and the stages it came from.
//!
//! Reads the store only; must not run stages. Files are written to a temporary name and renamed,
//! so an interrupted export never leaves a half-written file under a final name.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};


use limaml_data::{Dataset, TaskSet};
use limaml_models::{MetaEmbeddingTable, Predictions, TaskMetrics};

use crate::store::{RunRecord, StageRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("stage {stage}: {message}")]
    Stage { stage: String, message: String },
    #[error("run {0} has no finished evaluate stage to export")]
    NothingToExport(String),
}

/// A task's metric values by column name.
type TaskValues = BTreeMap<String, Option<f64>>;

/// One file written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportedFile {
    pub path: String,
    pub rows: usize,
    pub stages: Vec<String>,
}

/// Writes the run's files under `out` (created if needed) and returns what it wrote.
pub fn export_run(store: &Store, run: &RunRecord, out: &Path) -> Result<Vec<ExportedFile>, ExportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut inputs = Inputs::new(store);
    let mut predictions = Csv::new(&["run", "method", "seed", "task", "row", "user", "item", "timestamp", "label", "score"]);
    let mut per_task_rows: Vec<(Vec<String>, TaskValues)> = Vec::new();
    let mut metric_columns: Vec<String> = Vec::new();
    let mut evaluated = Vec::new();
    for stage in run.stages.iter().filter(|s| s.kind == "evaluate") {
        let Some(record) = store.stage(&stage.key)? else { continue };
        let (label, seed) = label_and_seed(&stage.name, "evaluate/");
        let tasks = inputs.tasks(&record)?.clone();
        let dataset = inputs.dataset(&record)?;
        let scored: Predictions = decode(store, &record, "predictions")?;
        let table: TaskMetrics = decode(store, &record, "per_task")?;
        let interactions = &dataset.interactions;
        for k in 0..scored.rows.len() {
            let r = scored.rows[k] as usize;
            predictions.push(vec![
                run.id.clone(),
                label.clone(),
                seed.clone(),
                scored.task_index[k].to_string(),
                r.to_string(),
                dataset.users.raw_ids[interactions.user[r] as usize].clone(),
                dataset.items.raw_ids[interactions.item[r] as usize].clone(),
                interactions.timestamp[r].to_string(),
                interactions.label[r].to_string(),
                scored.score[k].to_string(),
            ]);
        }
        for name in &table.columns {
            if !metric_columns.contains(name) {
                metric_columns.push(name.clone());
            }
        }
        for row in &table.tasks {
            let task = &tasks.tasks[row.task as usize];
            let entity_ids = match tasks.entity {
                limaml_data::TaskEntity::User => &dataset.users.raw_ids,
                limaml_data::TaskEntity::Item => &dataset.items.raw_ids,
            };
            let fixed = vec![
                run.id.clone(),
                label.clone(),
                seed.clone(),
                row.task.to_string(),
                entity_ids[task.entity as usize].clone(),
                task.window.map(|w| w.to_string()).unwrap_or_default(),
                tasks.segments.get(task.segment as usize).cloned().unwrap_or_default(),
                limaml_models::eval::state_name(task.state).to_string(),
                row.rows.to_string(),
                row.positives.to_string(),
            ];
            let values = table.columns.iter().cloned().zip(row.values.iter().copied()).collect();
            per_task_rows.push((fixed, values));
        }
        evaluated.push(stage.name.clone());
    }
    if evaluated.is_empty() {
        return Err(ExportError::NothingToExport(run.id.clone()));
    }
    let mut files = Vec::new();
    files.push(predictions.write(out, "predictions.csv", evaluated.clone())?);
    let mut header: Vec<String> =
        ["run", "method", "seed", "task", "user", "window", "segment", "state", "rows", "positives"].map(String::from).to_vec();
    header.extend(metric_columns.iter().cloned());
    let mut per_user = Csv::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
    for (mut fixed, values) in per_task_rows {
        for name in &metric_columns {
            fixed.push(values.get(name).copied().flatten().map(|v| v.to_string()).unwrap_or_default());
        }
        per_user.push(fixed);
    }
    files.push(per_user.write(out, "per_user_metrics.csv", evaluated)?);

    let embedding_dir = out.join("meta_embeddings");
    for stage in run.stages.iter().filter(|s| s.kind == "export_embeddings") {
        let Some(record) = store.stage(&stage.key)? else { continue };
        let (label, seed) = label_and_seed(&stage.name, "embeddings/");
        let dataset = inputs.dataset(&record)?;
        let table: MetaEmbeddingTable = decode(store, &record, "meta_embeddings")?;
        std::fs::create_dir_all(&embedding_dir).map_err(io(&embedding_dir))?;
        let stem = format!("{}_seed{seed}", file_safe(&label));
        let mut header: Vec<String> = ["method", "seed", "entity", "user"].map(String::from).to_vec();
        header.extend((0..table.dim).map(|k| format!("m{k}")));
        let mut csv = Csv::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
        for (i, &entity) in table.entity_ids.iter().enumerate() {
            let mut cells = vec![
                label.clone(),
                seed.clone(),
                entity.to_string(),
                dataset.users.raw_ids.get(entity as usize).cloned().unwrap_or_default(),
            ];
            cells.extend(table.values[i * table.dim..(i + 1) * table.dim].iter().map(|v| v.to_string()));
            csv.push(cells);
        }
        files.push(csv.write(out, &format!("meta_embeddings/{stem}.csv"), vec![stage.name.clone()])?);
        let bytes = store.get_artifact(artifact(&record, "meta_embeddings.safetensors")?)?;
        let relative = format!("meta_embeddings/{stem}.safetensors");
        write_atomically(&out.join(&relative), &bytes)?;
        files.push(ExportedFile { path: relative, rows: table.entity_ids.len(), stages: vec![stage.name.clone()] });
    }
    let manifest = serde_json::json!({ "run": run.id, "experiment": run.experiment, "files": files });
    let manifest_path = out.join("manifest.json");
    write_atomically(&manifest_path, serde_json::to_string_pretty(&manifest).expect("serializes").as_bytes())?;
    Ok(files.into_iter().map(|mut f| {
        f.path = out.join(&f.path).display().to_string();
        f
    }).collect())
}

/// `evaluate/limaml@stale/seed=2` -> ("limaml@stale", "2").
fn label_and_seed(name: &str, prefix: &str) -> (String, String) {
    let rest = name.strip_prefix(prefix).unwrap_or(name);
    let (label, seed) = rest.rsplit_once("/seed=").unwrap_or((rest, "0"));
    (label.to_string(), seed.to_string())
}

fn file_safe(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() || "-_@".contains(c) { c } else { '_' }).collect()
}

fn artifact<'r>(record: &'r StageRecord, name: &str) -> Result<&'r crate::store::ArtifactRef, ExportError> {
    record.outputs.get(name).ok_or_else(|| ExportError::Stage {
        stage: record.name.clone(),
        message: format!("has no `{name}` artifact (recorded by an older limaml? run it again)"),
    })
}

fn decode<T: serde::de::DeserializeOwned>(store: &Store, record: &StageRecord, name: &str) -> Result<T, ExportError> {
    let bytes = store.get_artifact(artifact(record, name)?)?;
    postcard::from_bytes(&bytes)
        .map_err(|e| ExportError::Stage { stage: record.name.clone(), message: format!("artifact `{name}` cannot be decoded: {e}") })
}

/// Upstream artifacts (data sets, task sets), decoded once per stage key.
struct Inputs<'s> {
    store: &'s Store,
    datasets: BTreeMap<String, Dataset>,
    task_sets: BTreeMap<String, TaskSet>,
}

impl<'s> Inputs<'s> {
    fn new(store: &'s Store) -> Self {
        Inputs { store, datasets: BTreeMap::new(), task_sets: BTreeMap::new() }
    }

    /// The record of the stage bound to `role` of `record`.
    fn upstream(&self, record: &StageRecord, role: &str) -> Result<(String, StageRecord), ExportError> {
        let key = record.components.inputs.get(role).ok_or_else(|| ExportError::Stage {
            stage: record.name.clone(),
            message: format!("has no `{role}` input"),
        })?;
        let upstream = self.store.stage(key)?.ok_or_else(|| ExportError::Stage {
            stage: record.name.clone(),
            message: format!("its `{role}` input {} is no longer in the store (gc'd?)", &key[..12.min(key.len())]),
        })?;
        Ok((key.clone(), upstream))
    }

    fn dataset(&mut self, record: &StageRecord) -> Result<&Dataset, ExportError> {
        let (key, upstream) = self.upstream(record, "dataset")?;
        if !self.datasets.contains_key(&key) {
            let dataset = decode(self.store, &upstream, "dataset")?;
            self.datasets.insert(key.clone(), dataset);
        }
        Ok(&self.datasets[&key])
    }

    fn tasks(&mut self, record: &StageRecord) -> Result<&TaskSet, ExportError> {
        let (key, upstream) = self.upstream(record, "tasks")?;
        if !self.task_sets.contains_key(&key) {
            let tasks = decode(self.store, &upstream, "tasks")?;
            self.task_sets.insert(key.clone(), tasks);
        }
        Ok(&self.task_sets[&key])
    }
}

/// A CSV table built in memory, then written at once.
struct Csv {
    writer: csv::Writer<Vec<u8>>,
    rows: usize,
}

impl Csv {
    fn new(header: &[&str]) -> Self {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(header).expect("writes to memory");
        Csv { writer, rows: 0 }
    }

    fn push(&mut self, cells: Vec<String>) {
        self.writer.write_record(&cells).expect("writes to memory");
        self.rows += 1;
    }

    /// Writes the table to `out/relative`.
    fn write(self, out: &Path, relative: &str, stages: Vec<String>) -> Result<ExportedFile, ExportError> {
        let rows = self.rows;
        let bytes = self.writer.into_inner().expect("flushes to memory");
        write_atomically(&out.join(relative), &bytes)?;
        Ok(ExportedFile { path: relative.to_string(), rows, stages })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let temporary = path.with_extension("partial");
    let io = |source| ExportError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}
