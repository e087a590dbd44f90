//! Reading a spec's files: the main file and its includes (each file once, within
//! [`limits`]), merged key by key, and `--set` overrides applied to the merged table.
//!
//! Owns file checks and reads, the include walk, merging and overrides, each value's
//! [`Origin`]. Must not deserialize or validate (`validate` does) nor expand the sweep (`sweep`
//! does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::origin::{self, Origins};
use super::validate::at;
use super::{limits, Origin, SpecError};

/// The folder relative paths of a spec are resolved against: the main file's.
pub(super) fn spec_dir(path: &Path) -> PathBuf {
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if base_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base_dir
    }
}

/// Why `path` cannot be a spec file, if it cannot: only regular files of bounded size are read
/// (a FIFO would block, `/dev/zero` never ends).
pub(super) fn check_spec_file(path: &Path) -> Result<(), String> {
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
pub(super) struct Loader {
    /// Every file read, in order, with its text.
    pub(super) texts: Vec<(String, String)>,
    /// Canonical path -> the file's merged table and the positions of its keys (its includes'
    /// first, then its own, so its own win).
    done: BTreeMap<PathBuf, (toml::Table, Origins)>,
    /// The include chain being read, for cycles and the depth limit.
    stack: Vec<PathBuf>,
}

impl Loader {
    /// Parses one file and, recursively, the files it includes, merged in order.
    pub(super) fn load_file(&mut self, path: &Path) -> Result<(toml::Table, Origins), SpecError> {
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

pub(super) fn apply_override(table: &mut toml::Table, origins: &mut Origins, assignment: &str) -> Result<(), SpecError> {
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

pub(super) fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
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
