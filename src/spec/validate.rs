//! Turning a merged table into a [`Spec`] and checking it: deserialization that
//! reports every independent mistake at its own key, range and consistency checks, data-source
//! checks, and errors that name the file, line, column and key.
//!
//! Owns deserialization, validation and error placement. Must not read spec files (`files`
//! does) nor plan anything.

use std::path::Path;

use limaml_data::config::{DataConfig, SplitConfig};
use limaml_models::config::{MethodConfig, TrainConfig};

use super::origin::{self, Origins};
use super::search;
use super::{did_you_mean, limits, ExperimentConfig, Origin, ReportConfig, RuntimeConfig, Spec, SpecError};

/// Deserializes one cell. Each table is first checked on its own, and each method field by
/// field, so that independent mistakes are all reported, each at its own key.
pub(super) fn deserialize(table: toml::Table, origins: &Origins, texts: &[(String, String)]) -> Result<Spec, SpecError> {
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
pub(super) fn at(origins: &Origins, key: &str, message: impl Into<String>) -> SpecError {
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

pub(super) fn attach_source_line(error: &mut SpecError, texts: &[(String, String)]) {
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
pub(super) fn validate(spec: &Spec, origins: &Origins, texts: &[(String, String)], base_dir: &Path) -> Result<(), SpecError> {
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
