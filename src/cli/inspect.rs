//! `limaml data inspect`: load and slice the spec's data (first seed) and print its statistics.

use std::process::ExitCode;

use comfy_table::{presets, Table};

use super::{failed, Failure, SpecArgs};

pub fn inspect_command(args: &SpecArgs, json: bool) -> Result<ExitCode, Failure> {
    let loaded = limaml::spec::load(&args.spec, &args.overrides)?;
    let spec = &loaded.cells[0].spec;
    let seed = spec.experiment.seeds[0];
    let dataset = limaml_data::load(&spec.data, &loaded.base_dir).map_err(|e| Failure::BadInput(e.to_string()))?;
    let tasks = limaml_data::slice(&dataset, &spec.split, seed).map_err(|e| Failure::BadInput(e.to_string()))?;
    let summary = limaml_data::summarize(&dataset, Some(&tasks));
    for warning in &summary.warnings {
        eprintln!("warning: data: {}", warning.message);
    }
    let value = serde_json::to_value(&summary).map_err(failed)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value).expect("serializes"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_header(vec!["statistic", "value"]);
    let mut rows = Vec::new();
    flatten("", &value, &mut rows);
    for (key, text) in rows {
        table.add_row(vec![key, text]);
    }
    println!("data of {} (split seed {seed})", loaded.path.display());
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// Nested JSON to ("a.b", "value") rows, numbers rounded for reading.
fn flatten(prefix: &str, value: &serde_json::Value, rows: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, inner, rows);
            }
        }
        // Lists of named counts (per role, per segment) read best one row each.
        serde_json::Value::Array(items) if items.iter().all(|i| i.get("name").is_some()) && !items.is_empty() => {
            for item in items {
                let name = item["name"].as_str().unwrap_or("?");
                let mut rest = item.clone();
                if let Some(object) = rest.as_object_mut() {
                    object.remove("name");
                    if object.len() == 1 {
                        rest = object.values().next().cloned().unwrap_or_default();
                    }
                }
                flatten(&format!("{prefix}.{name}"), &rest, rows);
            }
        }
        serde_json::Value::Number(n) if n.is_f64() => {
            rows.push((prefix.to_string(), format!("{:.4}", n.as_f64().unwrap_or(0.0))))
        }
        other => rows.push((prefix.to_string(), other.to_string().trim_matches('"').to_string())),
    }
}
