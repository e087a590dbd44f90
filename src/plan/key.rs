//! Stage keys: what a key hashes, and how two sets of key components differ.
//! Owns the canonical form. Must not read files or the store: callers hand in digests.
//!
//! A key is blake3 over the canonical JSON of [`KeyComponents`]: the stage kind and its
//! implementation version, a fingerprint of the library code behind it (see build.rs), its
//! output-affecting parameters, its seed, the keys of its inputs,
//! and (for data stages) the content digest of the source files. Paths, mtimes, worker counts,
//! log levels and progress display never enter a key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped when the canonical form itself changes; every key changes with it.
const KEY_SCHEME: &str = "limaml-stage-key-v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyComponents {
    pub kind: String,
    pub version: u32,
    /// Fingerprint of the library code that computes the stage (data or models crate).
    /// Records written before fingerprints existed read as "" (and so never match).
    #[serde(default)]
    pub code: String,
    /// Output-affecting parameters. JSON objects serialize with sorted keys (serde_json's
    /// default map is a BTreeMap), which makes this canonical.
    pub params: serde_json::Value,
    pub seed: Option<u64>,
    /// Input role -> the key of the stage that produces it.
    pub inputs: BTreeMap<String, String>,
    /// blake3 over the contents of the source files (data stages only).
    pub source_digest: Option<String>,
}

impl KeyComponents {
    pub fn key(&self) -> String {
        let canonical = serde_json::to_string(self).expect("key components serialize");
        let mut hasher = blake3::Hasher::new();
        hasher.update(KEY_SCHEME.as_bytes());
        hasher.update(&[0]);
        hasher.update(canonical.as_bytes());
        hasher.finalize().to_hex().to_string()
    }

    /// Human lines naming what differs between an earlier run's components and these,
    /// most specific first: `params.inner_lr: 0.1 -> 0.05`.
    pub fn differences_from(&self, earlier: &KeyComponents) -> Vec<KeyChange> {
        let mut changes = Vec::new();
        if self.kind != earlier.kind {
            changes.push(KeyChange::Kind { before: earlier.kind.clone(), after: self.kind.clone() });
        }
        if self.version != earlier.version {
            changes.push(KeyChange::Version { before: earlier.version, after: self.version });
        }
        if self.code != earlier.code {
            changes.push(KeyChange::Code { before: earlier.code.clone(), after: self.code.clone() });
        }
        let mut param_changes = Vec::new();
        diff_json("params", &earlier.params, &self.params, &mut param_changes);
        changes.extend(param_changes.into_iter().map(|(path, before, after)| KeyChange::Param { path, before, after }));
        if self.seed != earlier.seed {
            changes.push(KeyChange::Seed { before: earlier.seed, after: self.seed });
        }
        for (role, key) in &self.inputs {
            match earlier.inputs.get(role) {
                Some(old) if old == key => {}
                old => changes.push(KeyChange::Input { role: role.clone(), before: old.cloned(), after: key.clone() }),
            }
        }
        for role in earlier.inputs.keys().filter(|r| !self.inputs.contains_key(*r)) {
            changes.push(KeyChange::InputRemoved { role: role.clone() });
        }
        if self.source_digest != earlier.source_digest {
            changes.push(KeyChange::SourceData {
                before: earlier.source_digest.clone(),
                after: self.source_digest.clone(),
            });
        }
        changes
    }
}

/// One reason a stage's key differs from its last run's.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyChange {
    Kind { before: String, after: String },
    Version { before: u32, after: u32 },
    Code { before: String, after: String },
    Param { path: String, before: Option<serde_json::Value>, after: Option<serde_json::Value> },
    Seed { before: Option<u64>, after: Option<u64> },
    Input { role: String, before: Option<String>, after: String },
    InputRemoved { role: String },
    SourceData { before: Option<String>, after: Option<String> },
}

impl std::fmt::Display for KeyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<serde_json::Value>| v.as_ref().map_or("(absent)".to_string(), |v| v.to_string());
        let short = |k: &Option<String>| k.as_ref().map_or("(none)".to_string(), |k| k.chars().take(10).collect());
        match self {
            KeyChange::Kind { before, after } => write!(f, "stage kind changed: {before} -> {after}"),
            KeyChange::Version { before, after } => {
                write!(f, "implementation version changed: {before} -> {after}")
            }
            KeyChange::Code { before, after } => write!(f, "the code that computes it changed: {before} -> {after}"),
            KeyChange::Param { path, before, after } => {
                write!(f, "parameter {path} changed: {} -> {}", show(before), show(after))
            }
            KeyChange::Seed { before, after } => write!(f, "seed changed: {before:?} -> {after:?}"),
            KeyChange::Input { role, before, after } => {
                write!(f, "input '{role}' changed: {} -> {}", short(before), short(&Some(after.clone())))
            }
            KeyChange::InputRemoved { role } => write!(f, "input '{role}' is no longer used"),
            KeyChange::SourceData { before, after } => {
                write!(f, "source data content changed: {} -> {}", short(before), short(after))
            }
        }
    }
}

fn diff_json(
    path: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
    out: &mut Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)>,
) {
    use serde_json::Value;
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                // A key that is no plain name (a file path) is quoted: `params.file_content["a/b.py"]`.
                let plain = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                let sub = if plain { format!("{path}.{key}") } else { format!("{path}[{key:?}]") };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff_json(&sub, x, y, out),
                    (x, y) => out.push((sub, x.cloned(), y.cloned())),
                }
            }
        }
        (a, b) if a != b => out.push((path.to_string(), Some(a.clone()), Some(b.clone()))),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn components(params: serde_json::Value) -> KeyComponents {
        KeyComponents {
            kind: "train".into(),
            version: 1,
            code: "c0de".into(),
            params,
            seed: Some(1),
            inputs: BTreeMap::from([("tasks".to_string(), "abc".to_string())]),
            source_digest: None,
        }
    }

    #[test]
    fn key_does_not_depend_on_parameter_order() {
        let a = components(json!({"a": 1, "b": {"c": 2, "d": 3}}));
        let b = components(serde_json::from_str(r#"{"b": {"d": 3, "c": 2}, "a": 1}"#).unwrap());
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn a_changed_parameter_is_named_with_its_path() {
        let before = components(json!({"inner_lr": 0.1, "hidden": [64, 32]}));
        let after = components(json!({"inner_lr": 0.05, "hidden": [64, 32]}));
        assert_ne!(before.key(), after.key());
        let changes = after.differences_from(&before);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].to_string(), "parameter params.inner_lr changed: 0.1 -> 0.05");
    }

    #[test]
    fn a_changed_input_key_changes_the_key() {
        let before = components(json!({}));
        let mut after = before.clone();
        after.inputs.insert("tasks".into(), "def".into());
        assert_ne!(before.key(), after.key());
        assert!(matches!(after.differences_from(&before)[0], KeyChange::Input { .. }));
    }
}
