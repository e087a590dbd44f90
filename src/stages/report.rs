//! Stage `report`: gathers every evaluation of the plan into per-method summaries (mean and std
//! over seeds, overall, per segment, per entity state and on the validation tasks), and tests
//! each method against the baseline per user (paired t and Wilcoxon signed-rank tests over the
//! per-task metrics, Holm-corrected across methods). Its metrics are the run's headline numbers.
//! Reads only its inputs' metrics and `per_task` artifacts (a search's `select` input is passed
//! through as `search.<method>`); tables and files are drawn by `report`.

use std::collections::{BTreeMap, HashMap};

use petgraph::graph::NodeIndex;

use super::{Stage, StageContext, StageError, StageOutput};
use crate::report::{significance, stats};
use limaml_models::TaskMetrics;
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

/// The role prefix of a search's selection among the report's inputs.
pub const SEARCH_ROLE: &str = "search:";


impl Stage for Report {
    fn kind(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        3
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "report": self.config, "roles": self.roles })
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        // method label -> seed -> evaluation report
        let mut by_method: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
        // `search:<label>` inputs are searches' selections (`stages::select`), not evaluations.
        let mut searches = serde_json::Map::new();
        for role in ctx.inputs.roles() {
            if let Some(label) = role.strip_prefix(SEARCH_ROLE) {
                searches.insert(label.to_string(), ctx.inputs.metrics(&role)?);
                continue;
            }
            let (label, seed) = role.rsplit_once('|').unwrap_or((role.as_str(), "0"));
            by_method.entry(label.to_string()).or_default().insert(seed.to_string(), ctx.inputs.metrics(&role)?);
        }
        let mut methods = serde_json::Map::new();
        for (label, seeds) in &by_method {
            methods.insert(label.clone(), summarize(seeds));
        }
        let baseline = self
            .config
            .baseline
            .clone()
            .or_else(|| by_method.contains_key("global").then(|| "global".to_string()));
        if let Some(baseline) = baseline.filter(|b| by_method.contains_key(b)) {
            let tests = self.significance(ctx, &baseline)?;
            for (label, tests) in tests {
                if let Some(summary) = methods.get_mut(&label).and_then(|m| m.as_object_mut()) {
                    summary.insert("significance".into(), tests);
                }
            }
        }
        let mut metrics = serde_json::json!({ "methods": methods });
        if !searches.is_empty() {
            metrics["search"] = searches.into();
        }
        Ok(StageOutput { metrics, ..Default::default() })
    }
}

impl Report {
    /// The per-task metrics the paired tests run on: per-user AUC, NDCG at the middle cut-off
    /// (10 by default) within the query set and over the catalogue.
    fn tested_metrics(&self) -> Vec<String> {
        let config = self.config.eval_config();
        let mut names = vec!["auc".to_string()];
        if let Some(&k) = config.ks.get(config.ks.len().saturating_sub(1) / 2) {
            names.push(format!("ndcg@{k}"));
            if config.catalogue {
                names.push(format!("{}ndcg@{k}", limaml_models::eval::CATALOGUE_PREFIX));
            }
        }
        names
    }

    /// Per method label (other than `baseline`), per tested metric: the paired tests against
    /// `baseline` over (seed, user, window) pairs of every seed, and Holm-adjusted p-values
    /// across the methods.
    ///
    /// The baseline's values are looked up by query set once per seed and metric, and the other
    /// methods' per-task tables are decoded one at a time and dropped once their differences are
    /// taken. Why: at a million users each table is ~200k rows, and the report is the run's
    /// last stage; holding every table at once, in memory that mostly came fresh from the
    /// kernel, and building the baseline's lookup again for every method, took half its time
    /// (bench/README.md, eighteenth pass). The differences, and their order, are the same.
    fn significance(
        &self,
        ctx: &StageContext<'_>,
        baseline: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, StageError> {
        // label -> seed -> role
        let mut roles: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for role in ctx.inputs.roles().into_iter().filter(|r| !r.starts_with(SEARCH_ROLE)) {
            let (label, seed) = role.rsplit_once('|').unwrap_or((role.as_str(), "0"));
            roles.entry(label.to_string()).or_default().insert(seed.to_string(), role.clone());
        }
        let metrics = self.tested_metrics();
        // The same query set: same entity, window, rows and positives.
        type QuerySet = (u32, Option<u32>, u32, u32);
        let key = |r: &limaml_models::eval::TaskRow| -> QuerySet { (r.entity, r.window, r.rows, r.positives) };
        // seed -> per tested metric, the baseline's value per query set (`None`: no such column).
        let mut base_values: BTreeMap<&str, Vec<Option<HashMap<QuerySet, f64>>>> = BTreeMap::new();
        for (seed, role) in &roles[baseline] {
            let table: TaskMetrics = ctx.decode(role, "per_task")?;
            let per_metric = metrics
                .iter()
                .map(|metric| {
                    let bc = table.column(metric)?;
                    Some(table.tasks.iter().filter_map(|r| Some((key(r), r.values[bc]?))).collect())
                })
                .collect();
            base_values.insert(seed, per_metric);
        }
        // per tested metric: (label, differences), labels in order
        let mut differences: Vec<Vec<(String, Vec<f64>)>> = vec![Vec::new(); metrics.len()];
        for (label, seeds) in roles.iter().filter(|(label, _)| label.as_str() != baseline) {
            let mut of_label: Vec<Vec<f64>> = vec![Vec::new(); metrics.len()];
            for (seed, role) in seeds {
                let Some(base) = base_values.get(seed.as_str()) else { continue };
                let table: TaskMetrics = ctx.decode(role, "per_task")?;
                for ((metric, base), out) in metrics.iter().zip(base).zip(&mut of_label) {
                    let (Some(c), Some(base)) = (table.column(metric), base) else { continue };
                    for row in &table.tasks {
                        if let (Some(v), Some(b)) = (row.values[c], base.get(&key(row))) {
                            out.push(v - b);
                        }
                    }
                }
            }
            for (per_metric, d) in differences.iter_mut().zip(of_label) {
                per_metric.push((label.clone(), d));
            }
        }
        let mut out: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
        for (metric, of_labels) in metrics.iter().zip(differences) {
            let results: Vec<(String, significance::PairedTest)> = of_labels
                .into_iter()
                .filter_map(|(label, d)| Some((label, significance::paired_tests(&d)?)))
                .collect();
            let t_holm = significance::holm(&results.iter().map(|(_, t)| t.t_p).collect::<Vec<_>>());
            let w_holm = significance::holm(&results.iter().map(|(_, t)| t.wilcoxon_p).collect::<Vec<_>>());
            for (k, (label, test)) in results.iter().enumerate() {
                let entry = out.entry(label.clone()).or_default();
                entry.insert("baseline".into(), baseline.into());
                entry.insert(
                    metric.clone(),
                    serde_json::json!({
                        "pairs": test.n,
                        "mean_difference": test.mean_difference,
                        "t_p": test.t_p,
                        "t_p_holm": t_holm[k],
                        "wilcoxon_p": test.wilcoxon_p,
                        "wilcoxon_p_holm": w_holm[k],
                    }),
                );
            }
        }
        Ok(out.into_iter().map(|(label, map)| (label, map.into())).collect())
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
        // Every metric any seed reports here (the registry decides which exist).
        let names: std::collections::BTreeSet<String> = seeds
            .values()
            .filter_map(|report| report.pointer(pointer).and_then(|m| m.as_object()))
            .flat_map(|m| m.iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k.clone()))
            .filter(|k| !limaml_models::eval::COUNT_FIELDS.contains(&k.as_str()))
            .collect();
        for metric in &names {
            let values = collect(pointer, metric);
            if values.is_empty() {
                continue;
            }
            out.insert(metric.clone(), stats::mean(&values).into());
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
    summary.insert("chance".into(), block("/overall/chance"));
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
