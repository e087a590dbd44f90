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

/// A whole experiment, one sweep cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    let mut origins = Origins::new();
    let mut texts = Vec::new();
    let mut table = load_file(path, &mut origins, &mut texts, &mut Vec::new())?;
    for assignment in overrides {
        apply_override(&mut table, &mut origins, assignment)?;
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
    let mut cells = Vec::new();
    for assignments in grid(&axes) {
        let mut cell_table = table.clone();
        for (key, value) in &assignments {
            set_path(&mut cell_table, key, value.clone())
                .map_err(|message| at(&origins, &format!("sweep.{key}"), message))?;
        }
        let spec = deserialize(cell_table, &origins, &texts)?;
        validate(&spec, &origins, &texts, &spec_dir(path))?;
        cells.push(Cell { assignments, spec });
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

/// Parses one file and, recursively, the files it includes, merged in order.
fn load_file(
    path: &Path,
    origins: &mut Origins,
    texts: &mut Vec<(String, String)>,
    stack: &mut Vec<PathBuf>,
) -> Result<toml::Table, SpecError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError::new(Origin::File { file: display.clone(), line: 0, column: 0 }, None, format!("cannot read: {e}"))
    })?;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if stack.contains(&canonical) {
        let chain: Vec<String> = stack.iter().chain([&canonical]).map(|p| p.display().to_string()).collect();
        return Err(SpecError::new(
            Origin::File { file: display, line: 1, column: 1 },
            Some("include".into()),
            format!("include cycle: {}", chain.join(" -> ")),
        ));
    }
    let mut own: toml::Table = toml::from_str(&text).map_err(|e| {
        let (line, column) = e.span().map(|s| origin::line_column(&text, s.start)).unwrap_or((1, 1));
        let mut error =
            SpecError::new(Origin::File { file: display.clone(), line, column }, None, e.message().trim().to_string());
        error.source_line = origin::source_line(&text, line);
        error
    })?;
    texts.push((display.clone(), text.clone()));
    let own_origins = origin::collect(&display, &text);

    let includes = match own.remove("include") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s),
                _ => Err(at(&own_origins, "include", "`include` must be a list of file paths")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(at(&own_origins, "include", "`include` must be a list of file paths")),
    };
    stack.push(canonical);
    let mut merged = toml::Table::new();
    let dir = path.parent().unwrap_or(Path::new("."));
    for include in includes {
        let included = load_file(&dir.join(&include), origins, texts, stack)?;
        merge(&mut merged, included);
    }
    stack.pop();
    merge(&mut merged, own);
    // This file's keys override its includes', positions included.
    origins.extend(own_origins);
    Ok(merged)
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

fn deserialize(table: toml::Table, origins: &Origins, texts: &[(String, String)]) -> Result<Spec, SpecError> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, Spec>(value).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = error.inner().message().trim().to_string();
        explain(&path, &message, origins, texts)
    })
}

/// Turns a serde message at `path` into a located error with a suggestion.
fn explain(path: &str, message: &str, origins: &Origins, texts: &[(String, String)]) -> SpecError {
    let join = |field: &str| if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
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
    let mut probe = key.to_string();
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
    if spec.methods.is_empty() {
        issues.push(("methods".into(), "at least one [methods.<name>] table is needed".into()));
    }
    for issue in spec.data.validate() {
        issues.push((format!("data.{}", issue.field), issue.message));
    }
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
    match issues.into_iter().next() {
        None => Ok(()),
        Some((key, message)) => {
            let mut error = at(origins, &key, message);
            attach_source_line(&mut error, texts);
            Err(error)
        }
    }
}
