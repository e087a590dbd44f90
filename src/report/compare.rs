//! Comparing runs: every evaluation in the chosen runs becomes an [`Observation`] (one method,
//! one configuration, one seed); observations that differ only in the seed are grouped into a
//! [`Row`] with mean, std, n and a 95% confidence interval, and, against a baseline method, the
//! paired per-seed difference. Reads stage records; writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::stats;
use super::table::TableData;
use crate::store::{RunRecord, StageRecord, Store, StoreError};

/// One evaluation: a method under one configuration and one seed.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    /// The method label as stage names show it (`limaml`, `limaml[methods.limaml.inner_steps=2]`,
    /// `limaml@stale`, `oracle`).
    pub label: String,
    /// The method's name in the spec (`limaml`), without sweep or freshness suffixes.
    pub method: String,
    pub seed: u64,
    /// Identifies everything but the seed: observations with equal ids are grouped.
    pub config_id: String,
    /// Identifies the data and slicing configuration (without the seed): baselines pair on it.
    pub data_id: String,
    /// Flattened output-affecting parameters (`method.inner_lr`, `train.epochs`, `split.setting`...).
    pub params: BTreeMap<String, String>,
    /// `auc`, `gauc`, `logloss`, and `<segment>.auc`, `<state>.auc`... per segment and state.
    pub metrics: BTreeMap<String, f64>,
    pub stage_key: String,
    /// The run the observation was read from, and its experiment.
    pub run: String,
    pub experiment: String,
}

/// Observations of the chosen runs, newest run first winning on duplicates.
pub fn collect(store: &Store, runs: &[RunRecord]) -> Result<Vec<Observation>, StoreError> {
    let mut seen = BTreeSet::new();
    let mut observations = Vec::new();
    for run in runs.iter().rev() {
        for stage in run.stages.iter().filter(|s| s.kind == "evaluate") {
            if !seen.insert(stage.key.clone()) {
                continue;
            }
            let Some(record) = store.stage(&stage.key)? else { continue };
            // The name this run gave the stage (a shared stage may have been first recorded
            // under another spec's name).
            if let Some(mut observation) = observe(store, &stage.name, &record)? {
                observation.run = run.id.clone();
                observation.experiment = run.experiment.clone();
                observations.push(observation);
            }
        }
    }
    observations.sort_by(|a, b| (&a.label, &a.config_id, a.seed).cmp(&(&b.label, &b.config_id, b.seed)));
    Ok(observations)
}

fn observe(store: &Store, name: &str, evaluation: &StageRecord) -> Result<Option<Observation>, StoreError> {
    // evaluate/<label>/seed=<seed>
    let Some(rest) = name.strip_prefix("evaluate/") else { return Ok(None) };
    let Some((label, seed)) = rest.rsplit_once("/seed=") else { return Ok(None) };
    let seed: u64 = seed.parse().unwrap_or(0);
    let method = label.split(['[', '@']).next().unwrap_or(label).to_string();
    let upstream = |role: &str| -> Result<Option<StageRecord>, StoreError> {
        match evaluation.components.inputs.get(role) {
            Some(key) => store.stage(key),
            None => Ok(None),
        }
    };
    let tasks = upstream("tasks")?;
    let dataset = upstream("dataset")?;
    let model = upstream("model")?;
    let embeddings = upstream("embeddings")?;
    let mut params = BTreeMap::new();
    let mut identity = serde_json::Map::new();
    if let Some(dataset) = &dataset {
        flatten("data", &dataset.components.params, &mut params);
        identity.insert("data".into(), dataset.components.params.clone());
        identity.insert("source".into(), dataset.components.source_digest.clone().into());
    }
    if let Some(tasks) = &tasks {
        flatten("split", &tasks.components.params, &mut params);
        identity.insert("split".into(), tasks.components.params.clone());
    }
    let data_id = digest(&identity);
    if let Some(model) = &model {
        flatten("", &model.components.params, &mut params);
        identity.insert("model".into(), model.components.params.clone());
    }
    if let Some(embeddings) = &embeddings {
        flatten("embeddings", &embeddings.components.params, &mut params);
        identity.insert("embeddings".into(), embeddings.components.params.clone());
    }
    identity.insert("evaluate".into(), evaluation.components.params.clone());
    identity.insert("label".into(), label.into());
    let metrics = metric_values(&evaluation.metrics);
    Ok(Some(Observation {
        label: label.to_string(),
        method,
        seed,
        config_id: digest(&identity),
        data_id,
        params,
        metrics,
        stage_key: evaluation.key.clone(),
        run: String::new(),
        experiment: String::new(),
    }))
}


/// Every metric of an evaluation's record, by the name `compare --metrics` takes: `auc`,
/// `ndcg@10`, ... overall; `<slice>.<metric>` per segment, state and window (`low.auc`,
/// `cold.ndcg@10`, `window2.auc`); `validation.<metric>`; and `chance.<metric>`, a query
/// ranking metric under a random order (see `limaml_models::eval::ranking`).
pub fn metric_values(report: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut metrics = BTreeMap::new();
    let mut block = |prefix: &str, value: Option<&serde_json::Value>| {
        for (name, v) in value.and_then(|v| v.as_object()).into_iter().flatten() {
            if let (Some(v), false) = (v.as_f64(), limaml_models::eval::COUNT_FIELDS.contains(&name.as_str())) {
                metrics.insert(format!("{prefix}{name}"), v);
            }
        }
    };
    block("", report.get("overall"));
    block("chance.", report.pointer("/overall/chance"));
    block("validation.", report.get("validation"));
    for (group, prefix) in [("by_segment", ""), ("by_state", ""), ("by_window", "window")] {
        for (slice, values) in report.get(group).and_then(|g| g.as_object()).into_iter().flatten() {
            block(&format!("{prefix}{slice}."), Some(values));
        }
    }
    metrics
}

fn digest(value: &serde_json::Map<String, serde_json::Value>) -> String {
    blake3::hash(serde_json::to_string(value).expect("serializes").as_bytes()).to_hex()[..16].to_string()
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, inner, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string().trim_matches('"').to_string());
        }
    }
}

/// Mean, std, n and 95% CI of one metric over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub n: usize,
    pub ci95: f64,
    pub values: Vec<f64>,
    /// The seed of each value, where known (empty for paired differences).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
}

impl Summary {
    pub fn of(values: Vec<f64>) -> Option<Summary> {
        (!values.is_empty()).then(|| Summary {
            mean: stats::mean(&values),
            std: stats::std_dev(&values),
            n: values.len(),
            ci95: stats::ci95_half_width(&values),
            values,
            seeds: Vec::new(),
        })
    }

    pub fn mean_std(&self) -> String {
        format!("{:.4} ± {:.4}", self.mean, self.std)
    }

    pub fn interval(&self) -> String {
        if self.ci95.is_nan() {
            "—".into()
        } else {
            format!("[{:.4}, {:.4}]", self.mean - self.ci95, self.mean + self.ci95)
        }
    }
}

/// Observations equal in all but the seed.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub label: String,
    pub method: String,
    pub config_id: String,
    pub data_id: String,
    pub params: BTreeMap<String, String>,
    pub seeds: Vec<u64>,
    pub metrics: BTreeMap<String, Summary>,
    /// Paired difference to the baseline method (same data, same seed), per metric.
    pub versus_baseline: BTreeMap<String, Summary>,
    pub stage_keys: Vec<String>,
    /// The runs and experiments the row's observations come from.
    pub runs: BTreeSet<String>,
    pub experiments: BTreeSet<String>,
}

pub fn group(observations: &[Observation], baseline: Option<&str>) -> Vec<Row> {
    let mut groups: BTreeMap<(String, String), Vec<&Observation>> = BTreeMap::new();
    for observation in observations {
        groups.entry((observation.label.clone(), observation.config_id.clone())).or_default().push(observation);
    }
    let mut rows: Vec<Row> = groups
        .into_values()
        .map(|members| {
            let first = members[0];
            let names: BTreeSet<&String> = members.iter().flat_map(|o| o.metrics.keys()).collect();
            let metrics = names
                .into_iter()
                .filter_map(|name| {
                    let (seeds, values): (Vec<u64>, Vec<f64>) =
                        members.iter().filter_map(|o| Some((o.seed, *o.metrics.get(name)?))).unzip();
                    Summary::of(values).map(|mut s| {
                        s.seeds = seeds;
                        (name.clone(), s)
                    })
                })
                .collect();
            Row {
                label: first.label.clone(),
                method: first.method.clone(),
                config_id: first.config_id.clone(),
                data_id: first.data_id.clone(),
                params: first.params.clone(),
                seeds: members.iter().map(|o| o.seed).collect(),
                metrics,
                versus_baseline: BTreeMap::new(),
                stage_keys: members.iter().map(|o| o.stage_key.clone()).collect(),
                runs: members.iter().map(|o| o.run.clone()).collect(),
                experiments: members.iter().map(|o| o.experiment.clone()).collect(),
            }
        })
        .collect();
    if let Some(baseline) = baseline {
        for row in &mut rows {
            let mut differences: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for observation in observations.iter().filter(|o| o.config_id == row.config_id && o.label == row.label) {
                // The baseline on the same data and seed: its plain label, else its row of the
                // same sweep cell (`global[split.x=2]` pairs with `limaml[split.x=2]`).
                let same = |b: &&Observation| {
                    b.method == baseline && !b.label.contains('@') && b.data_id == observation.data_id && b.seed == observation.seed
                };
                let candidates: Vec<&Observation> = observations.iter().filter(same).collect();
                let Some(base) = candidates
                    .iter()
                    .find(|b| b.label == baseline)
                    .or_else(|| (candidates.len() == 1).then(|| &candidates[0]))
                    .copied()
                else {
                    continue;
                };
                for (name, value) in &observation.metrics {
                    if let Some(base_value) = base.metrics.get(name) {
                        differences.entry(name.clone()).or_default().push(value - base_value);
                    }
                }
            }
            row.versus_baseline = differences.into_iter().filter_map(|(k, v)| Summary::of(v).map(|s| (k, s))).collect();
        }
    }
    rows
}

/// Parameter paths whose values differ between configurations of the same method (a
/// parameter that only tells methods apart, such as `method.kind`, is not a change).
pub fn changed_parameters(rows: &[Row]) -> Vec<String> {
    let mut changed = BTreeSet::new();
    let methods: BTreeSet<&String> = rows.iter().map(|r| &r.method).collect();
    for method in methods {
        let same: Vec<&Row> = rows.iter().filter(|r| &r.method == method).collect();
        let keys: BTreeSet<&String> = same.iter().flat_map(|r| r.params.keys()).collect();
        for key in keys {
            let values: BTreeSet<Option<&String>> = same.iter().map(|r| r.params.get(key)).collect();
            if values.len() > 1 {
                changed.insert(key.clone());
            }
        }
    }
    changed.into_iter().collect()
}

/// `limaml[methods.limaml.inner_steps=2,train.epochs=5]@stale` -> (`limaml@stale`,
/// `inner_steps=2 epochs=5`).
fn split_label(label: &str) -> Vec<String> {
    let Some((method, rest)) = label.split_once('[') else { return vec![label.to_string(), String::new()] };
    let (assignments, suffix) = rest.split_once(']').unwrap_or((rest, ""));
    let short: Vec<String> = assignments
        .split(',')
        .map(|a| match a.split_once('=') {
            Some((key, value)) => format!("{}={value}", key.rsplit('.').next().unwrap_or(key)),
            None => a.to_string(),
        })
        .collect();
    vec![format!("{method}{suffix}"), short.join(" ")]
}

/// A query ranking metric whose chance level (its mean under a random order) reaches this is
/// flagged as saturated.
pub const SATURATION_CHANCE: f64 = 0.9;

/// Whether `metric` (possibly slice-prefixed) is saturated for `row`: its overall chance level
/// reaches [`SATURATION_CHANCE`].
pub fn saturated(row: &Row, metric: &str) -> bool {
    let base = metric.rsplit_once('.').map_or(metric, |(_, m)| m);
    row.metrics.get(&format!("chance.{base}")).is_some_and(|c| c.mean >= SATURATION_CHANCE)
}

/// What to show in a comparison table.
pub struct TableOptions<'a> {
    pub metrics: &'a [String],
    pub baseline: Option<&'a str>,
    pub only_changed: bool,
    /// One column per metric (and one per difference), for the terminal without `--wide`.
    pub compact: bool,
}

/// The comparison as a table: label (and experiment, when rows come from several), changed
/// parameters, per metric mean ± std and CI, n. `compact` (the terminal without `--wide`): no
/// CI columns of the means, and the paired difference as `Δ ± CI half-width` in one column, so
/// three metrics with a baseline fit 80 columns.
pub fn comparison_table(title: &str, rows: &[Row], options: &TableOptions<'_>) -> TableData {
    let changed = if options.only_changed { changed_parameters(rows) } else { Vec::new() };
    let experiments: BTreeSet<&String> = rows.iter().flat_map(|r| &r.experiments).collect();
    let show_experiment = experiments.len() > 1;
    // Compact: a sweep cell's assignments get their own column, keys shortened to their last
    // segment (`methods.limaml.inner_steps=2` -> `inner_steps=2`), so labels stay short.
    let show_cell = options.compact && rows.iter().any(|r| r.label.contains('['));
    let mut header: Vec<String> = vec!["method".into()];
    if show_cell {
        header.push("cell".into());
    }
    if show_experiment {
        header.push("experiment".into());
    }
    header.extend(changed.iter().cloned());
    for metric in options.metrics {
        header.push(metric.clone());
        if !options.compact {
            header.push(format!("{metric} 95% CI"));
        }
        if let Some(baseline) = options.baseline {
            if options.compact {
                header.push(format!("Δ{metric}"));
            } else {
                header.push(format!("Δ{metric} vs {baseline}"));
                header.push(format!("Δ{metric} 95% CI"));
            }
        }
    }
    header.push("n".into());
    let mut table = TableData { title: title.to_string(), header, ..Default::default() };
    let mut any_saturated = false;
    for row in rows {
        let mut cells = if show_cell { split_label(&row.label) } else { vec![row.label.clone()] };
        if show_experiment {
            cells.push(row.experiments.iter().cloned().collect::<Vec<_>>().join("+"));
        }
        for key in &changed {
            cells.push(row.params.get(key).cloned().unwrap_or_else(|| "—".into()));
        }
        for metric in options.metrics {
            match row.metrics.get(metric) {
                Some(summary) => {
                    let saturated = saturated(row, metric);
                    any_saturated |= saturated;
                    cells.push(format!("{}{}", summary.mean_std(), if saturated { " ‡" } else { "" }));
                    if !options.compact {
                        cells.push(summary.interval());
                    }
                }
                None => cells.extend(std::iter::repeat_n("—".to_string(), if options.compact { 1 } else { 2 })),
            }
            if options.baseline.is_some() {
                match row.versus_baseline.get(metric) {
                    // The baseline's own rows (every sweep cell of it) have no difference to show.
                    Some(diff) if row.method != options.baseline.unwrap_or_default() => {
                        if options.compact {
                            cells.push(if diff.ci95.is_nan() {
                                format!("{:+.4}", diff.mean)
                            } else {
                                format!("{:+.4} ± {:.4}", diff.mean, diff.ci95)
                            });
                        } else {
                            cells.push(format!("{:+.4}", diff.mean));
                            cells.push(if diff.ci95.is_nan() {
                                "—".into()
                            } else {
                                format!("[{:+.4}, {:+.4}]", diff.mean - diff.ci95, diff.mean + diff.ci95)
                            });
                        }
                    }
                    _ => cells.extend(std::iter::repeat_n("—".to_string(), if options.compact { 1 } else { 2 })),
                }
            }
        }
        cells.push(row.seeds.len().to_string());
        table.push(cells, row.stage_keys.clone());
    }
    if options.compact {
        let mut legend = "mean ± std over seeds".to_string();
        if let Some(baseline) = options.baseline {
            legend.push_str(&format!("; Δ: paired per-seed difference to {baseline} ± its 95% CI half-width"));
        }
        legend.push_str("; --wide adds each mean's 95% CI");
        table.notes.push(legend);
    }
    if any_saturated {
        table.notes.push(format!(
            "‡ saturated by construction: a random order of these query sets already scores >= {SATURATION_CHANCE} \
             (mean chance level), so this metric cannot separate methods here"
        ));
    }
    if rows.iter().any(|r| r.seeds.len() < 3) {
        table.notes.push("warning: some rows have fewer than 3 seeds; their std and CI say little".into());
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(label: &str, seed: u64, auc: f64) -> Observation {
        Observation {
            label: label.into(),
            method: label.into(),
            seed,
            config_id: format!("cfg-{label}"),
            data_id: "data".into(),
            params: BTreeMap::from([("method.kind".to_string(), label.to_string())]),
            metrics: BTreeMap::from([("auc".to_string(), auc)]),
            stage_key: format!("{label}{seed}"),
            run: "run".into(),
            experiment: "experiment".into(),
        }
    }

    #[test]
    fn seeds_of_one_configuration_group_into_one_row_with_mean_std_and_ci() {
        let observations =
            vec![observation("global", 1, 0.70), observation("global", 2, 0.72), observation("global", 3, 0.74)];
        let rows = group(&observations, None);
        assert_eq!(rows.len(), 1);
        let auc = &rows[0].metrics["auc"];
        assert_eq!(auc.n, 3);
        assert!((auc.mean - 0.72).abs() < 1e-12);
        assert!((auc.std - 0.02).abs() < 1e-12);
        assert!((auc.ci95 - 4.303 * 0.02 / 3f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn the_baseline_difference_is_paired_by_seed() {
        let observations = vec![
            observation("global", 1, 0.70),
            observation("global", 2, 0.80),
            observation("limaml", 1, 0.72),
            observation("limaml", 2, 0.83),
        ];
        let rows = group(&observations, Some("global"));
        let limaml = rows.iter().find(|r| r.label == "limaml").unwrap();
        let diff = &limaml.versus_baseline["auc"];
        assert_eq!(diff.n, 2);
        assert!((diff.mean - 0.025).abs() < 1e-12);
        // Paired: differences 0.02 and 0.03, std 0.00707.
        assert!((diff.std - 0.005f64.sqrt() / 10.0).abs() < 1e-9);
    }

    #[test]
    fn only_parameters_that_differ_within_a_method_are_reported_as_changed() {
        let mut a = observation("a", 1, 0.7);
        let mut b = observation("b", 1, 0.7);
        a.params.insert("train.epochs".into(), "5".into());
        b.params.insert("train.epochs".into(), "5".into());
        let rows = group(&[a, b], None);
        assert!(changed_parameters(&rows).is_empty(), "only the methods differ");
        let mut c = observation("a", 1, 0.7);
        c.config_id = "other".into();
        c.params.insert("method.inner_lr".into(), "0.5".into());
        let rows = group(&[observation("a", 1, 0.7), c, observation("b", 1, 0.7)], None);
        assert_eq!(changed_parameters(&rows), vec!["method.inner_lr".to_string()]);
    }
}
