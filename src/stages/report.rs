//! Stage `report`: gathers every evaluation of the plan into per-method summaries (mean and std
//! over seeds, overall, per segment, per entity state and on the validation tasks). Its metrics are the run's headline
//! numbers. Reads only its inputs' metrics; tables and files are drawn by `report`.

use std::collections::BTreeMap;

use petgraph::graph::NodeIndex;

use super::{Stage, StageContext, StageError, StageOutput};
use crate::report::stats;
use crate::spec::ReportConfig;

pub struct Report {
    config: ReportConfig,
    /// Input roles, "<method label>|<seed>".
    roles: Vec<String>,
}

impl Report {
    pub fn new(config: &ReportConfig, evaluations: &[(String, NodeIndex)]) -> Self {
        Report { config: config.clone(), roles: evaluations.iter().map(|(r, _)| r.clone()).collect() }
    }
}

const METRICS: [&str; 3] = ["auc", "gauc", "logloss"];

impl Stage for Report {
    fn kind(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        2
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "report": self.config, "roles": self.roles })
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        // method label -> seed -> evaluation report
        let mut by_method: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
        for role in ctx.inputs.roles() {
            let (label, seed) = role.rsplit_once('|').unwrap_or((role.as_str(), "0"));
            by_method.entry(label.to_string()).or_default().insert(seed.to_string(), ctx.inputs.metrics(&role)?);
        }
        let mut methods = serde_json::Map::new();
        for (label, seeds) in &by_method {
            methods.insert(label.clone(), summarize(seeds));
        }
        Ok(StageOutput { metrics: serde_json::json!({ "methods": methods }), ..Default::default() })
    }
}

/// Mean/std over seeds of `overall`, each `by_segment` and each `by_state` entry.
fn summarize(seeds: &BTreeMap<String, serde_json::Value>) -> serde_json::Value {
    let collect = |pointer: &str, metric: &str| -> Vec<f64> {
        seeds
            .values()
            .filter_map(|report| report.pointer(pointer).and_then(|m| m.get(metric)).and_then(|v| v.as_f64()))
            .filter(|v| v.is_finite())
            .collect()
    };
    let block = |pointer: &str| -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for metric in METRICS {
            let values = collect(pointer, metric);
            if values.is_empty() {
                continue;
            }
            out.insert(metric.into(), stats::mean(&values).into());
            out.insert(format!("{metric}_std"), stats::std_dev(&values).into());
        }
        out.into()
    };
    let groups = |field: &str| -> serde_json::Value {
        let names: std::collections::BTreeSet<String> = seeds
            .values()
            .filter_map(|r| r.get(field).and_then(|g| g.as_object()))
            .flat_map(|g| g.keys().cloned())
            .collect();
        names
            .into_iter()
            .map(|name| (name.clone(), block(&format!("/{field}/{name}"))))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let mut summary = block("/overall").as_object().cloned().unwrap_or_default();
    summary.insert("n".into(), seeds.len().into());
    summary.insert("validation".into(), block("/validation"));
    summary.insert("segments".into(), groups("by_segment"));
    summary.insert("states".into(), groups("by_state"));
    summary.insert("windows".into(), groups("by_window"));
    summary.insert(
        "per_seed".into(),
        seeds
            .iter()
            .map(|(seed, r)| (seed.clone(), r.get("overall").cloned().unwrap_or_default()))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    summary.into()
}
