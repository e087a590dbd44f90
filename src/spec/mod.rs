//! The experiment spec: TOML files (with `include`), `--set` overrides, a sweep grid, and
//! validation whose errors name the file, line, column and key. Owns parsing and checking only;
//! must not plan or run anything.
//!
//! Loading, in order: parse each file (syntax errors carry their span), merge included files
//! (later keys override earlier ones; a file's own keys override its includes), apply `--set`
//! overrides, expand `[sweep]` into one spec per grid cell, deserialize each cell into [`Spec`]
//! (`deny_unknown_fields` everywhere), then check ranges.
//!
//! This file holds the spec's types and [`load`], which runs those steps; `files` reads the
//! files and applies overrides, `sweep` expands the grid, `validate` deserializes and checks.

// A SpecError carries its source line for display; it is built once per failed load, so its size
// does not matter.
#![allow(clippy::result_large_err)]

pub mod error;
mod files;
pub mod origin;
pub mod search;
mod sweep;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use limaml_data::config::{DataConfig, SplitConfig};
use limaml_models::config::{MethodConfig, TrainConfig};

pub use error::{did_you_mean, Origin, SpecError};
use files::{apply_override, check_spec_file, set_path, spec_dir, Loader};
use sweep::{blame_sweep, check_overrides_not_swept, check_sweep_axes, estimated_stages_per_cell, flatten_sweep, grid};
use validate::{at, attach_source_line, deserialize, validate};

/// Bounds on what a spec may ask for, checked while loading, before any work starts.
pub mod limits {
    /// Nested includes, main file first.
    pub const MAX_INCLUDE_DEPTH: usize = 32;
    /// Distinct files one spec reads, its includes' included.
    pub const MAX_SPEC_FILES: usize = 256;
    /// Bytes of one spec file.
    pub const MAX_SPEC_FILE_BYTES: u64 = 4 << 20;
    /// Entries of `experiment.seeds`.
    pub const MAX_SEEDS: usize = 1_000;
    /// Cells of the `[sweep]` grid.
    pub const MAX_SWEEP_CELLS: usize = 10_000;
    /// Stages of the whole plan (cells x seeds x per-seed stages), estimated before planning.
    pub const MAX_STAGES: usize = 100_000;
}

/// A whole experiment, one sweep cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Files merged under this one (consumed while loading).
    #[serde(default, skip_serializing)]
    pub include: Vec<String>,
    pub experiment: ExperimentConfig,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub split: SplitConfig,
    pub methods: BTreeMap<String, MethodConfig>,
    #[serde(default)]
    pub train: TrainConfig,
    /// A grid over dotted parameter paths, expanded while loading (empty in a cell).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<serde_json::Value>>")]
    pub sweep: toml::Table,
    #[serde(default)]
    pub report: ReportConfig,
    /// Hyperparameter search over method parameters (`spec::search`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<search::SearchConfig>,
    /// Settings that cannot change results; never part of a stage key.
    #[serde(default)]
    pub runtime: RuntimeConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// One full set of stages (slicing, training, evaluation) per seed; the data load is shared.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Metrics shown in summaries and tables: any name of the metric registry
    /// (`limaml_models::eval::metric_names`: auc, gauc, logloss, ece, ne, gauc_uniform, ndcg@10,
    /// full_recall@20, mrr, ...), optionally for one slice (`low.auc`, `cold.ndcg@10`).
    pub metrics: Vec<String>,
    /// Cut-offs K of the ranking metrics (NDCG@K, Recall@K, HR@K, Precision@K, MAP@K).
    pub ks: Vec<usize>,
    /// How GAUC weighs each user's AUC: "impressions" (rows; as DIN), "uniform" (as Elliot and
    /// torchrec) or "positives" (as RecBole).
    pub gauc_weighting: limaml_models::GaucWeighting,
    /// Also rank the full catalogue per test user (every item not in the user's training or
    /// support rows): the `full_` metrics. User tasks only.
    pub catalogue: bool,
    /// The method lifts are measured against (default: "global" when present).
    pub baseline: Option<String>,
    /// Also evaluate LiMAML with meta embeddings generated from stale support data (needs
    /// `split.freshness_fraction`).
    pub freshness: bool,
    /// Also measure LiMAML's serving cost (lookup vs per-request adaptation).
    pub serving_cost: bool,
}

impl ReportConfig {
    /// What the evaluate stages compute.
    pub fn eval_config(&self) -> limaml_models::EvalConfig {
        let mut ks = self.ks.clone();
        ks.sort_unstable();
        ks.dedup();
        limaml_models::EvalConfig { ks, gauc_weighting: self.gauc_weighting, catalogue: self.catalogue }
    }
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            metrics: vec!["auc".into(), "gauc".into(), "logloss".into()],
            ks: limaml_models::EvalConfig::default().ks,
            gauc_weighting: limaml_models::GaucWeighting::Impressions,
            catalogue: true,
            baseline: None,
            freshness: false,
            serving_cost: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Parallel stages (the `-j` default).
    pub jobs: Option<usize>,
    /// A tracing filter such as "info" or "limaml=debug".
    pub log_level: Option<String>,
    /// Show progress bars (when stderr is a terminal).
    pub progress: Option<bool>,
}

/// One cell of the sweep grid: its assignments and the spec they give.
#[derive(Debug, Clone)]
pub struct Cell {
    /// `(dotted path, value)` per swept parameter; empty without a sweep.
    pub assignments: Vec<(String, toml::Value)>,
    pub spec: Spec,
}

impl Cell {
    /// "methods.limaml.inner_steps=2,train.epochs=5" for the assignments whose path starts with
    /// one of `sections` (a stage's name shows only the sweep parameters that reach it).
    pub fn label_for(&self, sections: &[String]) -> String {
        self.assignments
            .iter()
            .filter(|(path, _)| sections.iter().any(|s| path == s || path.starts_with(&format!("{s}."))))
            .map(|(path, value)| format!("{path}={}", compact(value)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn compact(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A loaded spec file: its text, every file it includes, and the expanded cells.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub path: PathBuf,
    /// Directory relative paths in the spec (data paths) are resolved against.
    pub base_dir: PathBuf,
    /// The main file's text, then each included file's, for the run record.
    pub text: String,
    /// blake3 over every file's text and the overrides.
    pub digest: String,
    /// The `--set` overrides, as given.
    pub overrides: Vec<String>,
    pub cells: Vec<Cell>,
}

impl LoadedSpec {
    pub fn experiment_name(&self) -> &str {
        &self.cells[0].spec.experiment.name
    }
}

/// Loads and validates `path` with `--set` overrides (`key.path=VALUE`, VALUE in TOML syntax,
/// bare words taken as strings).
pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedSpec, SpecError> {
    let mut loader = Loader::default();
    if let Err(message) = check_spec_file(path) {
        return Err(SpecError::new(
            Origin::File { file: path.display().to_string(), line: 0, column: 0 },
            None,
            message,
        ));
    }
    let (mut table, mut origins) = loader.load_file(path)?;
    let texts = loader.texts;
    let mut override_errors = Vec::new();
    for assignment in overrides {
        if let Err(error) = apply_override(&mut table, &mut origins, assignment) {
            override_errors.push(error);
        }
    }
    if !override_errors.is_empty() {
        return Err(SpecError::combine(override_errors));
    }
    let sweep = table.remove("sweep");
    let axes = match sweep {
        None => Vec::new(),
        Some(toml::Value::Table(sweep)) => {
            let mut axes = Vec::new();
            flatten_sweep("", &sweep, &origins, &mut axes)?;
            axes
        }
        Some(_) => return Err(at(&origins, "sweep", "`sweep` must be a table of parameter paths to value lists")),
    };
    check_overrides_not_swept(overrides, &axes)?;
    check_sweep_axes(&axes, &table, &origins, &texts)?;
    let mut cells = Vec::new();
    for assignments in grid(&axes) {
        let mut cell_table = table.clone();
        for (key, value) in &assignments {
            set_path(&mut cell_table, key, value.clone())
                .map_err(|message| at(&origins, &format!("sweep.{key}"), message))?;
        }
        let checked = deserialize(cell_table, &origins, &texts)
            .and_then(|spec| validate(&spec, &origins, &texts, &spec_dir(path)).map(|()| spec));
        let spec = checked.map_err(|error| blame_sweep(error, &assignments, &origins, &texts))?;
        cells.push(Cell { assignments, spec });
    }
    let stages = cells.len().saturating_mul(estimated_stages_per_cell(&cells[0].spec));
    if stages > limits::MAX_STAGES {
        let mut error = at(
            &origins,
            if axes.is_empty() { "experiment.seeds" } else { "sweep" },
            format!(
                "the plan would have about {stages} stages ({} cell(s) x {} seed(s) x {} method(s)), more than the {} \
                 limaml plans; lower the seeds, the sweep's values or the methods",
                cells.len(),
                cells[0].spec.experiment.seeds.len(),
                cells[0].spec.methods.len(),
                limits::MAX_STAGES
            ),
        );
        attach_source_line(&mut error, &texts);
        return Err(error);
    }
    let mut hasher = blake3::Hasher::new();
    for (file, text) in &texts {
        hasher.update(file.as_bytes());
        hasher.update(&[0]);
        hasher.update(text.as_bytes());
        hasher.update(&[0]);
    }
    for assignment in overrides {
        hasher.update(assignment.as_bytes());
        hasher.update(&[0]);
    }
    Ok(LoadedSpec {
        path: path.to_path_buf(),
        base_dir: spec_dir(path),
        text: texts.iter().map(|(f, t)| format!("# ==> {f} <==\n{t}")).collect::<Vec<_>>().join("\n"),
        digest: hasher.finalize().to_hex().to_string(),
        overrides: overrides.to_vec(),
        cells,
    })
}
