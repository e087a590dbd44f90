//! The `[sweep]` grid: its axes flattened to parameter paths, checked against the spec, and
//! expanded into one assignment list per cell; a cell's error blamed on the sweep values that
//! made it.
//!
//! Owns the axes, the grid and its size estimate. Must not read files (`files` does) nor
//! validate a cell's values (`validate` does).

use super::origin::Origins;
use super::validate::{at, attach_source_line};
use super::{compact, did_you_mean, limits, Origin, Spec, SpecError};

/// A `--set` on a path the sweep varies would be overwritten by every cell: refuse it and say
/// how to override the sweep itself.
pub(super) fn check_overrides_not_swept(overrides: &[String], axes: &[(String, Vec<toml::Value>)]) -> Result<(), SpecError> {
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

/// `[sweep]` may use quoted dotted keys (`"train.epochs" = [5, 10]`) or nested tables; both
/// flatten to `(path, values)` axes, in key order.
pub(super) fn flatten_sweep(
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
pub(super) fn check_sweep_axes(
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
pub(super) fn blame_sweep(
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
pub(super) fn estimated_stages_per_cell(spec: &Spec) -> usize {
    let per_seed = 2usize.saturating_add(spec.methods.len().saturating_mul(2));
    1usize.saturating_add(spec.experiment.seeds.len().saturating_mul(per_seed)).saturating_add(1)
}

/// The cartesian product of the axes, first axis slowest.
pub(super) fn grid(axes: &[(String, Vec<toml::Value>)]) -> Vec<Vec<(String, toml::Value)>> {
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
