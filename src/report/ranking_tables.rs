//! The paper tables of ranking metrics, calibration and per-user tests (1b, 1c, 5b, 5c): what
//! the meta-learning recommender papers report beside AUC. Split from `reproduce`, which calls
//! them; the numbers come from evaluate records (through `compare` rows) and from the report
//! stage's per-user tests (the run's metrics).

use super::compare::{saturated, Row, SATURATION_CHANCE};
use super::reproduce::{cell, note_seeds};
use super::table::TableData;

/// The ranking metrics shown, at K = 10 (the registry's default middle cut-off).
const QUERY: [(&str, &str); 3] = [("ndcg@10", "NDCG@10"), ("recall@10", "Recall@10"), ("mrr", "MRR")];
const CATALOGUE: [(&str, &str); 3] =
    [("full_ndcg@10", "full NDCG@10"), ("full_recall@10", "full Recall@10"), ("full_mrr", "full MRR")];

/// Ranking within each user's query set and over the full catalogue, and calibration.
pub fn ranking_table(title: &str, rows: &[Row]) -> TableData {
    let mut header = vec!["method"];
    header.extend(QUERY.iter().map(|(_, h)| *h));
    header.extend(CATALOGUE.iter().map(|(_, h)| *h));
    header.extend(["ECE", "NE", "n"]);
    let mut table = TableData::new(title, header);
    let mut any_saturated = false;
    for row in rows.iter().filter(|r| !r.label.contains('@')) {
        let mut cells = vec![row.label.clone()];
        for (metric, _) in QUERY {
            let flag = saturated(row, metric);
            any_saturated |= flag;
            cells.push(format!("{}{}", cell(row.metrics.get(metric)), if flag { " ‡" } else { "" }));
        }
        for (metric, _) in CATALOGUE {
            cells.push(cell(row.metrics.get(metric)));
        }
        cells.push(cell(row.metrics.get("ece")));
        cells.push(cell(row.metrics.get("ne")));
        cells.push(row.seeds.len().to_string());
        table.push(cells, row.stage_keys.clone());
    }
    // The chance level: each query metric under a random order of the same query sets.
    if let Some(any) = rows.iter().find(|r| r.metrics.contains_key("chance.ndcg@10")) {
        let mut cells = vec!["random order (chance)".to_string()];
        cells.extend(QUERY.iter().map(|(m, _)| cell(any.metrics.get(&format!("chance.{m}")))));
        cells.extend(std::iter::repeat_n("—".to_string(), CATALOGUE.len() + 2));
        cells.push(any.seeds.len().to_string());
        table.push(cells, any.stage_keys.clone());
    }
    table.notes.push(
        "query metrics rank each test user's query rows; full metrics rank every item the user has no training or \
         support row for (positives: the user's positive query items); users without a positive are left out"
            .into(),
    );
    if any_saturated {
        table.notes.push(format!("‡ saturated by construction: a random order already scores >= {SATURATION_CHANCE}"));
    }
    note_seeds(&mut table, rows);
    table
}

/// Per-user paired tests of each method against the baseline (the report stage's).
pub fn significance_table(title: &str, rows: &[Row], methods: &serde_json::Value) -> TableData {
    let mut table = TableData::new(
        title,
        vec!["method", "metric", "mean per-user Δ", "pairs", "t-test p", "t-test p (Holm)", "Wilcoxon p", "Wilcoxon p (Holm)"],
    );
    let p = |v: &serde_json::Value| {
        v.as_f64().map_or("—".into(), |x| match x {
            0.0 => "< 1e-300".to_string(),
            x if x < 1e-4 => format!("{x:.1e}"),
            x => format!("{x:.4}"),
        })
    };
    let mut baseline = None;
    for row in rows.iter().filter(|r| !r.label.contains('@')) {
        let Some(tests) = methods.get(&row.label).and_then(|m| m.get("significance")).and_then(|s| s.as_object()) else {
            continue;
        };
        baseline = tests.get("baseline").and_then(|b| b.as_str()).map(str::to_string);
        for (metric, test) in tests.iter().filter(|(k, _)| k.as_str() != "baseline") {
            table.push(
                vec![
                    row.label.clone(),
                    metric.clone(),
                    test["mean_difference"].as_f64().map_or("—".into(), |d| format!("{d:+.4}")),
                    test["pairs"].to_string(),
                    p(&test["t_p"]),
                    p(&test["t_p_holm"]),
                    p(&test["wilcoxon_p"]),
                    p(&test["wilcoxon_p_holm"]),
                ],
                row.stage_keys.clone(),
            );
        }
    }
    table.notes.push(format!(
        "pairs: (seed, test user) with the metric defined for both the method and {}; two-sided p; Holm's \
         correction across the methods compared to the same baseline",
        baseline.as_deref().unwrap_or("the baseline")
    ));
    table
}
