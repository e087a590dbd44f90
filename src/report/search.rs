//! What a search looks like to people: the winner of each searched method with its trial count
//! (under the run summary), the trials table (objective per trial, the best marked; `compare
//! --trials`), and the plot of objective against trial. Reads the `search` block of a run (the
//! final `select` stages' metrics, validation objectives only); owns formatting only.

use std::path::Path;

use serde_json::Value;

use super::plots::{line_chart, Series};
use super::table::TableData;

/// `inner_lr=0.31,inner_steps=2`, parameters in path order, floats to 4 significant digits.
pub fn params_text(params: &Value) -> String {
    params
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", value_text(v))).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn objective_text(value: &Value) -> String {
    value.as_f64().map_or("—".to_string(), |v| format!("{v:.4}"))
}

/// One line per searched method: strategy, trial count, the winning configuration and its
/// validation objective. Empty without a search.
pub fn winners(search: &Value) -> String {
    let Some(methods) = search.as_object() else { return String::new() };
    let mut out = String::new();
    for (method, s) in methods {
        out.push_str(&format!(
            "search {method}: {} over {} trials, best trial {} ({}) {} {}\n",
            s["strategy"].as_str().unwrap_or("?"),
            s["count"],
            s["best"]["trial"],
            params_text(&s["best"]["params"]),
            s["objective"].as_str().unwrap_or("objective"),
            objective_text(&s["best"]["objective"]),
        ));
    }
    out
}

/// The trials of every searched method of `search` (one run's): method, trial, parameters,
/// epochs trained to, the validation objective, the best marked with `*`.
pub fn trials_table(title: &str, search: &Value) -> TableData {
    let objective = search
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|s| s["objective"].as_str())
        .unwrap_or("objective")
        .to_string();
    let mut table = TableData::new(title, vec!["method", "trial", "parameters", "epochs", &objective, "best"]);
    for (method, s) in search.as_object().into_iter().flatten() {
        for trial in s["trials"].as_array().into_iter().flatten() {
            table.push(
                vec![
                    method.clone(),
                    trial["trial"].to_string(),
                    params_text(&trial["params"]),
                    trial["epochs"].to_string(),
                    objective_text(&trial["objective"]),
                    if trial["best"].as_bool() == Some(true) { "*".into() } else { String::new() },
                ],
                Vec::new(),
            );
        }
        table.notes.push(format!(
            "{method}: {} trials ({}, {} is better), best trial {}",
            s["count"],
            s["strategy"].as_str().unwrap_or("?"),
            if s["direction"] == "min" { "lower" } else { "higher" },
            s["best"]["trial"],
        ));
    }
    table
}

/// Objective against trial number, one series per method, and each method's best trial as a
/// one-point series (`best <method>`). Writes nothing without trials.
pub fn trials_plot(path: &Path, search: &Value) -> std::io::Result<()> {
    let mut series = Vec::new();
    let mut objective = "objective".to_string();
    for (method, s) in search.as_object().into_iter().flatten() {
        objective = s["objective"].as_str().unwrap_or("objective").to_string();
        let points: Vec<(f64, f64)> = s["trials"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some((t["trial"].as_f64()?, t["objective"].as_f64()?)))
            .collect();
        let best: Vec<(f64, f64)> = s["trials"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["best"].as_bool() == Some(true))
            .filter_map(|t| Some((t["trial"].as_f64()?, t["objective"].as_f64()?)))
            .collect();
        series.push(Series::new(method.clone(), points));
        series.push(Series::new(format!("best {method}"), best));
    }
    line_chart(path, &format!("{objective} per search trial"), "trial", &objective, &series, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search() -> Value {
        serde_json::json!({ "limaml": {
            "strategy": "random", "objective": "validation.auc", "direction": "max", "count": 2,
            "best": { "trial": 1, "params": { "inner_lr": 0.5, "inner_steps": 2 }, "objective": 0.75 },
            "trials": [
                { "trial": 0, "params": { "inner_lr": 0.1, "inner_steps": 1 }, "objective": 0.7, "epochs": 5, "best": false },
                { "trial": 1, "params": { "inner_lr": 0.5, "inner_steps": 2 }, "objective": 0.75, "epochs": 5, "best": true },
            ],
        }})
    }

    #[test]
    fn the_trials_table_marks_the_best_trial_only() {
        let table = trials_table("t", &search());
        let marks: Vec<&str> = table.rows.iter().map(|r| r[5].as_str()).collect();
        assert_eq!(marks, ["", "*"]);
        assert_eq!(table.rows[1][2], "inner_lr=0.5000,inner_steps=2");
    }

    #[test]
    fn the_winner_line_names_the_configuration_and_the_trial_count() {
        let line = winners(&search());
        assert!(line.contains("over 2 trials"), "{line}");
        assert!(line.contains("inner_lr=0.5000,inner_steps=2"), "{line}");
        assert!(line.contains("0.7500"), "{line}");
    }
}
