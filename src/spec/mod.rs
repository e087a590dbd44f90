//! The experiment spec: TOML files (with `include`), `--set` overrides, a sweep grid, and
//! validation whose errors name the file, line, column and key. Owns parsing and checking only;
//! must not plan or run anything.
//!
//! Loading, in order: parse each file (syntax errors carry their span), merge included files
//! (later keys override earlier ones; a file's own keys override its includes), apply `--set`
//! overrides, expand `[sweep]` into one spec per grid cell, deserialize each cell into [`Spec`]
//! (`deny_unknown_fields` everywhere), then check ranges.

// A SpecError carries its source line for display; it is built once per failed load, so its size
// does not matter.
#![allow(clippy::result_large_err)]

pub mod error;
pub mod origin;
pub mod search;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use limaml_data::config::{DataConfig, SplitConfig};
use limaml_models::config::{MethodConfig, TrainConfig};

pub use error::{did_you_mean, Origin, SpecError};
use origin::Origins;

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

/// A `--set` on a path the sweep varies would be overwritten by every cell: refuse it and say
/// how to override the sweep itself.
fn check_overrides_not_swept(overrides: &[String], axes: &[(String, Vec<toml::Value>)]) -> Result<(), SpecError> {
    for assignment in overrides {
        let Some((path, value)) = assignment.split_once('=') else { continue };
        let path = path.trim();
        if axes.iter().any(|(axis, _)| axis == path) {
            return Err(SpecError::new(
                Origin::CommandLine { assignment: assignment.clone() },
                Some(path.to_string()),
                format!(
                    "this path is swept by [sweep], so every sweep cell would replace the value; override \
                     the sweep instead: --set 'sweep.{path}=[{value}]'"
                ),
            ));
        }
    }
    Ok(())
}

/// The folder relative paths of a spec are resolved against: the main file's.
fn spec_dir(path: &Path) -> PathBuf {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    }
}

/// Why `path` cannot be a spec file, if it cannot: only regular files of bounded size are read
/// (a FIFO would block, `/dev/zero` never ends).
fn check_spec_file(path: &Path) -> Result<(), String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !metadata.is_file() {
        return Err("is not a regular file (a spec, and every file it includes, must be one)".into());
    }
    if metadata.len() > limits::MAX_SPEC_FILE_BYTES {
        return Err(format!(
            "is {} bytes; a spec file may have at most {}",
            metadata.len(),
            limits::MAX_SPEC_FILE_BYTES
        ));
    }
    Ok(())
}

/// Reads a spec file already known to be a regular file, never more than the size limit.
fn read_spec_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(limits::MAX_SPEC_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limits::MAX_SPEC_FILE_BYTES {
        return Err(format!("is larger than the {} bytes a spec file may have", limits::MAX_SPEC_FILE_BYTES));
    }
    String::from_utf8(bytes).map_err(|e| format!("is not UTF-8 text ({e})"))
}

/// Reads a spec and its includes: each file once however often it is included (a diamond of
/// includes is read once per file, not once per path to it), within [`limits`].
#[derive(Default)]
struct Loader {
    /// Every file read, in order, with its text.
    texts: Vec<(String, String)>,
    /// Canonical path -> the file's merged table and the positions of its keys (its includes'
    /// first, then its own, so its own win).
    done: BTreeMap<PathBuf, (toml::Table, Origins)>,
    /// The include chain being read, for cycles and the depth limit.
    stack: Vec<PathBuf>,
}

impl Loader {
    /// Parses one file and, recursively, the files it includes, merged in order.
    fn load_file(&mut self, path: &Path) -> Result<(toml::Table, Origins), SpecError> {
        let display = path.display().to_string();
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Some(done) = self.done.get(&canonical) {
            return Ok(done.clone());
        }
        let text = read_spec_file(path)
            .map_err(|message| SpecError::new(Origin::File { file: display.clone(), line: 0, column: 0 }, None, message))?;
        let mut own: toml::Table = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| origin::line_column(&text, s.start)).unwrap_or((1, 1));
            let mut error =
                SpecError::new(Origin::File { file: display.clone(), line, column }, None, e.message().trim().to_string());
            error.source_line = origin::source_line(&text, line);
            error
        })?;
        self.texts.push((display.clone(), text.clone()));
        let own_origins = origin::collect(&display, &text);
        let include_error = |message: String| {
            let mut error = at(&own_origins, "include", message);
            error.source_line = error.line().and_then(|line| origin::source_line(&text, line));
            error
        };

        let includes = match own.remove("include") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    _ => Err(include_error("`include` must be a list of file paths".into())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(include_error("`include` must be a list of file paths".into())),
        };
        self.stack.push(canonical.clone());
        let mut merged = toml::Table::new();
        let mut origins = Origins::new();
        let dir = path.parent().unwrap_or(Path::new("."));
        for include in includes {
            let included_path = dir.join(&include);
            let included = included_path.canonicalize().unwrap_or_else(|_| included_path.clone());
            if self.stack.contains(&included) {
                let chain: Vec<String> =
                    self.stack.iter().chain([&included]).map(|p| p.display().to_string()).collect();
                return Err(include_error(format!("include cycle: {}", chain.join(" -> "))));
            }
            if !self.done.contains_key(&included) {
                if self.stack.len() >= limits::MAX_INCLUDE_DEPTH {
                    return Err(include_error(format!(
                        "includes nest deeper than {} files; flatten the chain",
                        limits::MAX_INCLUDE_DEPTH
                    )));
                }
                if self.texts.len() >= limits::MAX_SPEC_FILES {
                    return Err(include_error(format!(
                        "the spec reads more than {} files; include fewer",
                        limits::MAX_SPEC_FILES
                    )));
                }
                check_spec_file(&included_path)
                    .map_err(|message| include_error(format!("`{include}` ({}) {message}", included_path.display())))?;
            }
            let (table, included_origins) = self.load_file(&included_path)?;
            merge(&mut merged, table);
            origins.extend(included_origins);
        }
        self.stack.pop();
        merge(&mut merged, own);
        // This file's keys override its includes', positions included.
        origins.extend(own_origins);
        self.done.insert(canonical, (merged.clone(), origins.clone()));
        Ok((merged, origins))
    }
}

/// Deep merge: tables merge key by key, anything else in `overlay` replaces `base`.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn apply_override(table: &mut toml::Table, origins: &mut Origins, assignment: &str) -> Result<(), SpecError> {
    let origin = Origin::CommandLine { assignment: assignment.to_string() };
    let Some((key, raw)) = assignment.split_once('=') else {
        return Err(SpecError::new(origin, None, "expected KEY.PATH=VALUE"));
    };
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(SpecError::new(origin, Some(key.to_string()), "expected a dotted key path such as train.epochs"));
    }
    let value = parse_value(raw.trim());
    set_path(table, key, value).map_err(|message| SpecError::new(origin.clone(), Some(key.to_string()), message))?;
    origins.retain(|path, _| !(path == key || path.starts_with(&format!("{key}."))));
    origins.insert(key.to_string(), origin);
    Ok(())
}

/// A value in TOML syntax (`0.1`, `[1, 2]`, `"x"`, `true`), or a bare word taken as a string.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("value = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("split yields one part");
    let mut current = table;
    for (i, part) in parts.iter().enumerate() {
        let entry = current.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{}` is not a table", parts[..=i].join("."))),
        };
    }
    current.insert(last.to_string(), value);
    Ok(())
}

/// `[sweep]` may use quoted dotted keys (`"train.epochs" = [5, 10]`) or nested tables; both
/// flatten to `(path, values)` axes, in key order.
fn flatten_sweep(
    prefix: &str,
    table: &toml::Table,
    origins: &Origins,
    axes: &mut Vec<(String, Vec<toml::Value>)>,
) -> Result<(), SpecError> {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten_sweep(&path, inner, origins, axes)?,
            toml::Value::Array(values) if !values.is_empty() => axes.push((path, values.clone())),
            _ => {
                return Err(at(origins, &format!("sweep.{path}"), "a sweep entry must be a non-empty list of values"));
            }
        }
    }
    Ok(())
}

/// Checks the sweep before its grid is built: the grid's size, and that each path under
/// `methods.` names a method of the spec.
fn check_sweep_axes(
    axes: &[(String, Vec<toml::Value>)],
    table: &toml::Table,
    origins: &Origins,
    texts: &[(String, String)],
) -> Result<(), SpecError> {
    let mut errors = Vec::new();
    let cells = axes.iter().try_fold(1usize, |cells, (_, values)| cells.checked_mul(values.len()));
    if cells.is_none_or(|cells| cells > limits::MAX_SWEEP_CELLS) {
        let sizes: Vec<String> = axes.iter().map(|(path, values)| format!("{path}: {}", values.len())).collect();
        errors.push(at(
            origins,
            "sweep",
            format!(
                "the grid has {} cells ({}), more than the {} limaml runs; sweep fewer values",
                cells.map_or("too many".to_string(), |c| c.to_string()),
                sizes.join(" x "),
                limits::MAX_SWEEP_CELLS
            ),
        ));
    }
    let methods = table.get("methods").and_then(toml::Value::as_table);
    for (path, _) in axes {
        let mut parts = path.splitn(3, '.');
        if let (Some("methods"), Some(name)) = (parts.next(), parts.next()) {
            if !methods.is_some_and(|m| m.contains_key(name)) {
                let names: Vec<&str> = methods.map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
                let mut error = at(
                    origins,
                    &format!("sweep.{path}"),
                    format!("sweeps method `{name}`, but the spec has no such method (it has {})", names.join(", ")),
                );
                error.suggestion = did_you_mean(name, names.iter().copied()).map(|s| path.replacen(name, &s, 1));
                errors.push(error);
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    for error in &mut errors {
        attach_source_line(error, texts);
    }
    Err(SpecError::combine(errors))
}

/// Errors of a sweep cell whose key is (under) a swept path are the sweep entry's fault: they
/// are shown at the entry, with the cell's value.
fn blame_sweep(
    error: SpecError,
    assignments: &[(String, toml::Value)],
    origins: &Origins,
    texts: &[(String, String)],
) -> SpecError {
    let errors = error
        .flatten()
        .into_iter()
        .map(|mut error| {
            let key = error.key.clone().unwrap_or_default();
            let key = key.split('[').next().unwrap_or_default();
            let swept = assignments.iter().find(|(path, _)| {
                key == path || key.starts_with(&format!("{path}.")) || path.starts_with(&format!("{key}."))
            });
            if let Some((path, value)) = swept {
                let original = at(origins, &format!("sweep.{path}"), "");
                error.origin = original.origin;
                error.message = format!("value {} for `{key}`: {}", compact(value), error.message);
                error.key = Some(format!("sweep.{path}"));
                error.source_line = None;
                attach_source_line(&mut error, texts);
            }
            error
        })
        .collect();
    SpecError::combine(errors)
}

/// Stages one sweep cell plans, about: the shared load, then per seed a slice and per method a
/// train and an evaluate, and a report.
fn estimated_stages_per_cell(spec: &Spec) -> usize {
    let per_seed = 2usize.saturating_add(spec.methods.len().saturating_mul(2));
    1usize.saturating_add(spec.experiment.seeds.len().saturating_mul(per_seed)).saturating_add(1)
}

/// The cartesian product of the axes, first axis slowest.
fn grid(axes: &[(String, Vec<toml::Value>)]) -> Vec<Vec<(String, toml::Value)>> {
    let mut cells = vec![Vec::new()];
    for (path, values) in axes {
        cells = cells
            .into_iter()
            .flat_map(|cell| {
                values.iter().map(move |v| {
                    let mut next: Vec<(String, toml::Value)> = cell.clone();
                    next.push((path.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    cells
}

/// Deserializes one cell. Each table is first checked on its own, and each method field by
/// field, so that independent mistakes are all reported, each at its own key.
fn deserialize(table: toml::Table, origins: &Origins, texts: &[(String, String)]) -> Result<Spec, SpecError> {
    let mut found: Vec<(String, String)> = Vec::new();
    for (section, value) in &table {
        let checked = match section.as_str() {
            "experiment" => check_as::<ExperimentConfig>(section, value),
            "data" => check_as::<DataConfig>(section, value),
            "split" => check_as::<SplitConfig>(section, value),
            "train" => check_as::<TrainConfig>(section, value),
            "report" => check_as::<ReportConfig>(section, value),
            "runtime" => check_as::<RuntimeConfig>(section, value),
            "methods" => {
                if let Some(methods) = value.as_table() {
                    for (name, method) in methods {
                        found.extend(check_method(name, method));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        found.extend(checked.err());
    }
    if !found.is_empty() {
        let errors = found.iter().map(|(path, message)| explain(path, message, origins, texts)).collect();
        return Err(SpecError::combine(in_reading_order(errors, texts)));
    }
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, Spec>(value).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = error.inner().message().trim().to_string();
        explain(&path, &message, origins, texts)
    })
}

/// `value` deserialized as a `T` at `prefix`: the full dotted path and message of the first error.
fn check_as<T: serde::de::DeserializeOwned>(prefix: &str, value: &toml::Value) -> Result<(), (String, String)> {
    serde_path_to_error::deserialize::<_, T>(value.clone()).map(|_| ()).map_err(|error| {
        let inner = error.path().to_string();
        let path = if inner == "." {
            prefix.to_string()
        } else if inner.starts_with('[') {
            format!("{prefix}{inner}")
        } else {
            format!("{prefix}.{inner}")
        };
        (path, error.inner().message().trim().to_string())
    })
}

/// The errors of one method table. Methods are tagged by `kind`, so serde reports a bad field
/// at the table; each field is then tried alone with the kind to find the ones at fault.
fn check_method(name: &str, method: &toml::Value) -> Vec<(String, String)> {
    let prefix = format!("methods.{name}");
    let Err(whole) = check_as::<MethodConfig>(&prefix, method) else { return Vec::new() };
    let Some(fields) = method.as_table() else { return vec![whole] };
    let Some(kind) = fields.get("kind").filter(|k| k.as_str().is_some()) else { return vec![whole] };
    let mut found = Vec::new();
    for (field, value) in fields.iter().filter(|(field, _)| *field != "kind") {
        let alone = toml::Table::from_iter([("kind".to_string(), kind.clone()), (field.clone(), value.clone())]);
        if let Err((_, message)) = check_as::<MethodConfig>(&prefix, &toml::Value::Table(alone)) {
            // A field alone may lack the kind's required fields; that is not its fault.
            if !message.starts_with("missing field") {
                let path = if message.starts_with("unknown field") { prefix.clone() } else { format!("{prefix}.{field}") };
                found.push((path, message));
            }
        }
    }
    if found.is_empty() {
        vec![whole]
    } else {
        found
    }
}

/// Turns a serde message at `path` into a located error with a suggestion.
fn explain(path: &str, message: &str, origins: &Origins, texts: &[(String, String)]) -> SpecError {
    // serde_path_to_error's path ends at the unknown field itself, but not at a missing one.
    let join = |field: &str| {
        if path.is_empty() || path == field {
            field.to_string()
        } else if path.ends_with(&format!(".{field}")) {
            path.to_string()
        } else {
            format!("{path}.{field}")
        }
    };
    let quoted = |text: &str| -> Vec<String> { text.split('`').skip(1).step_by(2).map(str::to_string).collect() };
    let (key, suggestion) = if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = quoted(rest);
        let field = names.first().cloned().unwrap_or_default();
        let suggestion = did_you_mean(&field, names.iter().skip(1).map(String::as_str));
        (join(&field), suggestion)
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        let names = quoted(rest);
        let variant = names.first().cloned().unwrap_or_default();
        (path.to_string(), did_you_mean(&variant, names.iter().skip(1).map(String::as_str)))
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        (join(quoted(rest).first().map(String::as_str).unwrap_or("")), None)
    } else {
        (path.to_string(), None)
    };
    let mut error = at(origins, &key, message);
    error.suggestion = suggestion;
    attach_source_line(&mut error, texts);
    error
}

/// An error at `key`, located at the key itself or, failing that, its nearest written parent.
fn at(origins: &Origins, key: &str, message: impl Into<String>) -> SpecError {
    // Array elements (`experiment.seeds[0]`, `report.ks.0`) sit at their array's key.
    let mut probe = key.split('[').next().unwrap_or_default().to_string();
    let origin = loop {
        if let Some(origin) = origins.get(&probe) {
            break origin.clone();
        }
        match probe.rfind('.') {
            Some(dot) => probe.truncate(dot),
            None => {
                break origins
                    .values()
                    .find_map(|o| match o {
                        Origin::File { file, .. } => Some(Origin::File { file: file.clone(), line: 1, column: 1 }),
                        _ => None,
                    })
                    .unwrap_or(Origin::File { file: "<spec>".into(), line: 1, column: 1 })
            }
        }
    };
    SpecError::new(origin, (!key.is_empty()).then(|| key.to_string()), message)
}

fn attach_source_line(error: &mut SpecError, texts: &[(String, String)]) {
    if let Origin::File { file, line, .. } = &error.origin {
        if let Some((_, text)) = texts.iter().find(|(f, _)| f == file) {
            error.source_line = origin::source_line(text, *line);
        }
    }
}

/// A command method's files (its file words and `files`) that do not exist, relative to the
/// spec's folder.
fn missing_command_files(
    name: &str,
    command: &limaml_models::CommandConfig,
    base_dir: &Path,
) -> Vec<(String, String)> {
    let missing = |written: &str| !base_dir.join(written).is_file();
    let words = limaml_models::command::file_words(&command.command).into_iter().map(|(i, w)| ("command", i, w));
    let files = command.files.iter().enumerate().map(|(i, w)| ("files", i, w.as_str()));
    words
        .chain(files)
        .filter(|(_, _, written)| missing(written))
        .map(|(field, i, written)| {
            let resolved = base_dir.join(written);
            (
                format!("methods.{name}.{field}.{i}"),
                format!("file `{written}` does not exist ({} is resolved against the spec's folder)", resolved.display()),
            )
        })
        .collect()
}

/// Range and cross-reference checks that types alone cannot express.
fn validate(spec: &Spec, origins: &Origins, texts: &[(String, String)], base_dir: &Path) -> Result<(), SpecError> {
    let mut issues: Vec<(String, String)> = Vec::new();
    if spec.experiment.name.trim().is_empty() {
        issues.push(("experiment.name".into(), "must not be empty".into()));
    }
    if spec.experiment.seeds.is_empty() {
        issues.push(("experiment.seeds".into(), "must list at least one seed".into()));
    }
    if spec.experiment.seeds.len() > limits::MAX_SEEDS {
        issues.push((
            "experiment.seeds".into(),
            format!("lists {} seeds; at most {} are run", spec.experiment.seeds.len(), limits::MAX_SEEDS),
        ));
    }
    if spec.methods.is_empty() {
        issues.push(("methods".into(), "at least one [methods.<name>] table is needed".into()));
    }
    for issue in spec.data.validate() {
        issues.push((format!("data.{}", issue.field), issue.message));
    }
    issues.extend(data_source_issues(&spec.data, base_dir));
    for issue in spec.split.validate() {
        issues.push((format!("split.{}", issue.field), issue.message));
    }
    for (name, method) in &spec.methods {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            issues.push((format!("methods.{name}"), "method names use letters, digits, '_' and '-'".into()));
        }
        for issue in method.validate() {
            issues.push((format!("methods.{name}.{}", issue.field), issue.message));
        }
        if let MethodConfig::Command(command) = method {
            issues.extend(missing_command_files(name, command, base_dir));
        }
    }
    for issue in spec.train.validate() {
        issues.push((format!("train.{}", issue.field), issue.message));
    }
    for (i, k) in spec.report.ks.iter().enumerate() {
        if *k == 0 {
            issues.push((format!("report.ks.{i}"), "a cut-off K must be at least 1".into()));
        }
    }
    let known = limaml_models::eval::metric_names(&spec.report.eval_config());
    for (i, metric) in spec.report.metrics.iter().enumerate() {
        // A metric, or `<slice>.<metric>` for one segment, state or window.
        let base = metric.rsplit_once('.').map_or(metric.as_str(), |(_, m)| m);
        if !known.iter().any(|k| k == base) {
            let mut message = format!("unknown metric `{metric}`, expected one of {}", known.join(", "));
            if let Some(s) = did_you_mean(base, known.iter().map(String::as_str)) {
                message.push_str(&format!(" (did you mean `{s}`?)"));
            }
            issues.push((format!("report.metrics.{i}"), message));
        }
    }
    if let Some(baseline) = &spec.report.baseline {
        if !spec.methods.contains_key(baseline) {
            let names: Vec<&str> = spec.methods.keys().map(String::as_str).collect();
            let mut message = format!("names no method; the spec has {}", names.join(", "));
            if let Some(s) = did_you_mean(baseline, names.iter().copied()) {
                message.push_str(&format!(" (did you mean `{s}`?)"));
            }
            issues.push(("report.baseline".into(), message));
        }
    }
    if spec.report.freshness && spec.split.freshness_fraction.is_none() {
        issues.push((
            "report.freshness".into(),
            "needs split.freshness_fraction (how much of the support is too new for the stale embeddings)".into(),
        ));
    }
    issues.extend(search::validate(spec));
    if let Some(jobs) = spec.runtime.jobs {
        if jobs == 0 {
            issues.push(("runtime.jobs".into(), "must be at least 1".into()));
        }
    }
    if issues.is_empty() {
        return Ok(());
    }
    let errors = issues
        .into_iter()
        .map(|(key, message)| {
            let mut error = at(origins, &key, message);
            attach_source_line(&mut error, texts);
            error
        })
        .collect();
    Err(SpecError::combine(in_reading_order(errors, texts)))
}

/// Errors sorted as a reader meets them: by file (in the order read), line and column, then the
/// command line's.
fn in_reading_order(mut errors: Vec<SpecError>, texts: &[(String, String)]) -> Vec<SpecError> {
    errors.sort_by_key(|error| match &error.origin {
        Origin::File { file, line, column } => {
            (texts.iter().position(|(f, _)| f == file).unwrap_or(usize::MAX), *line, *column)
        }
        Origin::CommandLine { .. } => (usize::MAX, usize::MAX, usize::MAX),
    });
    errors
}

/// Whether the data can be found, and, for the generator, fits in memory: checked before any
/// stage runs, with the key to change and how.
fn data_source_issues(data: &DataConfig, base_dir: &Path) -> Vec<(String, String)> {
    use limaml_data::DataSource;
    let mut issues = Vec::new();
    match data.source {
        DataSource::Synthetic => {
            let needed = limaml_data::synthetic::estimated_bytes(&data.synthetic);
            if let Some(available) = available_memory_bytes() {
                if needed > available as f64 {
                    issues.push((
                        "data.synthetic.n_users".into(),
                        format!(
                            "the generated data would need about {:.1} GiB ({:.0} interactions), more than the {:.1} GiB \
                             of memory available; lower data.synthetic.n_users, n_items or mean_interactions",
                            needed / GIB,
                            limaml_data::synthetic::estimated_rows(&data.synthetic),
                            available as f64 / GIB
                        ),
                    ));
                }
            }
        }
        DataSource::Movielens | DataSource::Csv => {
            let what = if data.source == DataSource::Movielens { "folder" } else { "file" };
            let fix = if data.source == DataSource::Movielens {
                "download ML-100K with `limaml data fetch movielens-100k --dir DIR`, or point at a copy with \
                 `--set data.path=DIR` (or the LIMAML_DATA environment variable)"
            } else {
                "point at the file with `--set data.path=FILE`"
            };
            match limaml_data::resolve_path(data, base_dir) {
                Err(_) => issues.push(("data.path".into(), format!("no data {what} is set; {fix}"))),
                Ok(Some(path)) if !path.exists() => {
                    let from = if data.path.is_some() {
                        "resolved against the spec's folder".to_string()
                    } else {
                        format!("from {}", limaml_data::DATA_ENV_VAR)
                    };
                    issues.push((
                        "data.path".into(),
                        format!("the data {what} {} does not exist ({from}); {fix}", path.display()),
                    ));
                }
                Ok(_) => {}
            }
        }
    }
    issues
}

const GIB: f64 = (1u64 << 30) as f64;

/// Memory this process may still use: the smaller of the machine's available memory and the
/// address-space limit (`ulimit -v`), when either is known.
fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("MemAvailable:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    let address_space = (unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY)
        .then_some(limit.rlim_cur);
    match (available, address_space) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
