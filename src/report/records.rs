//! A comparison as numbers: one record per row with each metric's mean, std, CI bounds, n and
//! per-seed values in separate numeric fields, for `compare --format csv|json` (what pandas and
//! jq read). Text only where a value is text (labels, experiment names, non-numeric parameters).
//!
//! Owns [`numeric_records`] and their CSV rendering. Must not choose rows or metrics: `compare`
//! does, and the same [`Row`]s feed the terminal table.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One row's fields, in column order.
pub type Record = Vec<(String, Value)>;

use super::compare::{changed_parameters, Row, TableOptions};

/// A parameter value as JSON: a number when it parses as one, else the text.
fn value_of(text: &str) -> Value {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => serde_json::Number::from_f64(v).map_or_else(|| text.into(), Value::Number),
        _ => text.into(),
    }
}

fn put(record: &mut Record, key: impl Into<String>, value: Value) {
    record.push((key.into(), value));
}

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// One record per row. Fields: `label`, `method`, `experiment`, `runs`, the changed parameters
/// (with `--only-changed`; by their dotted key), then per metric `M`, `M_std`, `M_ci_low`,
/// `M_ci_high`, `M_n`, `M_seed<S>` per seed, and against a baseline `delta_M`, `delta_M_ci_low`,
/// `delta_M_ci_high`, `delta_M_n`; `n` (seeds) and `stage_keys`.
pub fn numeric_records(rows: &[Row], options: &TableOptions<'_>) -> Vec<Record> {
    let changed = if options.only_changed { changed_parameters(rows) } else { Vec::new() };
    rows.iter()
        .map(|row| {
            let mut record = Record::new();
            put(&mut record, "label", Value::from(row.label.clone()));
            put(&mut record, "method", Value::from(row.method.clone()));
            put(&mut record, "experiment", Value::from(row.experiments.iter().cloned().collect::<Vec<_>>().join("+")));
            put(&mut record, "runs", Value::from(row.runs.iter().cloned().collect::<Vec<_>>().join(" ")));
            for key in &changed {
                put(&mut record, key.clone(), row.params.get(key).map_or(Value::Null, |v| value_of(v)));
            }
            for metric in options.metrics {
                let summary = row.metrics.get(metric);
                let ci = |s: &super::compare::Summary, sign: f64| {
                    if s.ci95.is_nan() {
                        Value::Null
                    } else {
                        number(s.mean + sign * s.ci95)
                    }
                };
                put(&mut record, metric.clone(), summary.map_or(Value::Null, |s| number(s.mean)));
                put(&mut record, format!("{metric}_std"), summary.map_or(Value::Null, |s| number(s.std)));
                put(&mut record, format!("{metric}_ci_low"), summary.map_or(Value::Null, |s| ci(s, -1.0)));
                put(&mut record, format!("{metric}_ci_high"), summary.map_or(Value::Null, |s| ci(s, 1.0)));
                put(&mut record, format!("{metric}_n"), summary.map_or(Value::Null, |s| Value::from(s.n)));
                for seed in &row.seeds {
                    let value = summary
                        .and_then(|s| s.seeds.iter().position(|x| x == seed).map(|i| s.values[i]))
                        .map_or(Value::Null, number);
                    put(&mut record, format!("{metric}_seed{seed}"), value);
                }
                if options.baseline.is_some() {
                    let diff = row.versus_baseline.get(metric).filter(|_| Some(row.method.as_str()) != options.baseline);
                    put(&mut record, format!("delta_{metric}"), diff.map_or(Value::Null, |d| number(d.mean)));
                    put(&mut record, format!("delta_{metric}_ci_low"), diff.map_or(Value::Null, |d| ci(d, -1.0)));
                    put(&mut record, format!("delta_{metric}_ci_high"), diff.map_or(Value::Null, |d| ci(d, 1.0)));
                    put(&mut record, format!("delta_{metric}_n"), diff.map_or(Value::Null, |d| Value::from(d.n)));
                }
            }
            put(&mut record, "n", Value::from(row.seeds.len()));
            put(&mut record, "stage_keys", Value::from(row.stage_keys.clone()));
            record
        })
        .collect()
}

/// The records as JSON objects.
pub fn to_json(records: &[Record]) -> Vec<Value> {
    records.iter().map(|r| Value::Object(r.iter().cloned().collect::<Map<String, Value>>())).collect()
}

/// The records as CSV: the union of their fields as the header (in first-seen order), empty
/// cells for nulls, `stage_keys` joined by spaces.
pub fn to_csv(records: &[Record]) -> String {
    let mut header: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for record in records {
        for (key, _) in record {
            if seen.insert(key.clone()) {
                header.push(key.clone());
            }
        }
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header).expect("writes to memory");
    for record in records {
        let cells: Vec<String> = header
            .iter()
            .map(|key| match record.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => {
                    items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).collect::<Vec<_>>().join(" ")
                }
                Some(other) => other.to_string(),
            })
            .collect();
        writer.write_record(&cells).expect("writes to memory");
    }
    String::from_utf8(writer.into_inner().expect("flushes")).expect("CSV of UTF-8 strings")
}
