//! Evaluation: every metric of the registry, overall, per activity segment, per entity state and
//! per deployment window, computed once per task and then aggregated per slice.
//!
//! Owns [`Predictions`], the metric registry ([`EvalConfig`], [`metric_names`],
//! [`lower_is_better`]), [`evaluate_with`] (the [`EvalReport`] and the per-task table
//! [`TaskMetrics`]), [`gauc`], [`query_rows`] and [`oracle_predictions`]. Must not train or score
//! models: it reads [`Predictions`], the labels, and ranks a caller scored (`catalogue`).
//!
//! What each metric needs, and so where it is computed:
//! - rows (scores and labels of the slice): `auc`, `logloss`, `ece`, `ne` ([`pointwise`]);
//! - per-task AUC, weighted: `gauc` and its variants `gauc_impressions`, `gauc_uniform`,
//!   `gauc_positives` ([`GaucWeighting`]);
//! - each task's query rows ranked by score: `ndcg@K`, `recall@K`, `hr@K`, `precision@K`,
//!   `map@K`, `mrr` ([`ranking`]), averaged over tasks with at least one positive, with their
//!   chance level beside them (`Metrics::chance`);
//! - each task's rank of its positives among every candidate item (`catalogue`): the same
//!   metrics prefixed `full_` (`full_ndcg@10`).

pub mod catalogue;
pub mod pointwise;
pub mod ranking;

use std::collections::BTreeMap;

use limaml_data::{EntityState, Interactions, TaskRole, TaskSet};
use serde::{Deserialize, Serialize};

pub use pointwise::{auc, auc_of_ordered, expected_calibration_error, log_loss, normalized_entropy, order_by_score, LOGLOSS_EPS};
pub use ranking::{positive_ranks, PositiveRanks, RankingMetric};

/// Scores of query rows: `score[k]` is the predicted click probability of interaction row
/// `rows[k]`, which is a query row of task `task_index[k]` (an index into `TaskSet::tasks`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Predictions {
    pub rows: Vec<u32>,
    pub task_index: Vec<u32>,
    pub score: Vec<f32>,
}

/// How GAUC weighs each task's AUC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GaucWeighting {
    /// By the task's scored rows (as DIN, Zhou et al. 2018). The default.
    #[default]
    Impressions,
    /// Every task alike (as Elliot and torchrec).
    Uniform,
    /// By the task's positive rows (as RecBole).
    Positives,
}

impl GaucWeighting {
    pub const ALL: [GaucWeighting; 3] = [GaucWeighting::Impressions, GaucWeighting::Uniform, GaucWeighting::Positives];

    pub fn name(self) -> &'static str {
        match self {
            GaucWeighting::Impressions => "impressions",
            GaucWeighting::Uniform => "uniform",
            GaucWeighting::Positives => "positives",
        }
    }

    fn weight(self, rows: u32, positives: u32) -> f64 {
        match self {
            GaucWeighting::Impressions => rows as f64,
            GaucWeighting::Uniform => 1.0,
            GaucWeighting::Positives => positives as f64,
        }
    }
}

/// What to compute: the cut-offs of the ranking metrics, GAUC's weighting, and whether to rank
/// the full catalogue. Comes from the spec's `[report]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvalConfig {
    pub ks: Vec<usize>,
    pub gauc_weighting: GaucWeighting,
    pub catalogue: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { ks: vec![5, 10, 20], gauc_weighting: GaucWeighting::Impressions, catalogue: false }
    }
}

/// Fields of a [`Metrics`] block that are counts, not metrics.
pub const COUNT_FIELDS: [&str; 4] = ["rows", "tasks", "skipped_tasks", "ranked_tasks"];

/// The prefix of full-catalogue ranking metrics (`full_ndcg@10`).
pub const CATALOGUE_PREFIX: &str = "full_";

/// Every metric name [`evaluate_with`] can report under `config`, in report order.
pub fn metric_names(config: &EvalConfig) -> Vec<String> {
    let mut names: Vec<String> = ["auc", "gauc", "logloss", "ece", "ne"].map(String::from).to_vec();
    names.extend(GaucWeighting::ALL.map(|w| format!("gauc_{}", w.name())));
    let ranking = RankingMetric::all(&config.ks);
    names.extend(ranking.iter().map(|m| m.name()));
    if config.catalogue {
        names.extend(ranking.iter().map(|m| format!("{CATALOGUE_PREFIX}{}", m.name())));
    }
    names
}

/// Whether smaller values of metric `name` are better (log loss, calibration error, normalized
/// entropy); a slice prefix (`low.logloss`) is allowed.
pub fn lower_is_better(name: &str) -> bool {
    let base = name.rsplit('.').next().unwrap_or(name);
    matches!(base, "logloss" | "ece" | "ne")
}

/// Metrics of one slice of predictions. A metric is absent (or `None`) when undefined: AUC and
/// normalized entropy with one class, ranking metrics without a task that has a positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Metrics {
    pub auc: Option<f64>,
    pub gauc: Option<f64>,
    pub logloss: Option<f64>,
    pub rows: usize,
    pub tasks: usize,
    /// Tasks left out of GAUC because their rows have a single class.
    pub skipped_tasks: usize,
    /// Tasks with at least one positive: the ones ranking metrics average over.
    #[serde(default)]
    pub ranked_tasks: usize,
    /// Every other metric of the registry, by name (`ece`, `ndcg@10`, `full_mrr`, ...).
    #[serde(flatten)]
    pub more: BTreeMap<String, f64>,
    /// Query-set ranking metrics under a uniformly random order, by metric name: near 1 means
    /// the metric saturates by construction on these query sets and cannot separate methods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chance: BTreeMap<String, f64>,
}

impl Metrics {
    /// The value of metric `name`, wherever it is kept.
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "auc" => self.auc,
            "gauc" => self.gauc,
            "logloss" => self.logloss,
            other => self.more.get(other).copied(),
        }
    }
}

/// Metrics overall, per segment name, per entity state and per deployment window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvalReport {
    pub overall: Metrics,
    pub by_segment: BTreeMap<String, Metrics>,
    pub by_state: BTreeMap<String, Metrics>,
    /// Deployment protocol: per time window of the query rows ("1", "2", ...); empty otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_window: BTreeMap<String, Metrics>,
}

/// One task's metrics: a row of [`TaskMetrics`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskRow {
    /// Index into `TaskSet::tasks`.
    pub task: u32,
    /// The task's entity (a user index for user tasks) and deployment window, which pair a
    /// task across methods.
    pub entity: u32,
    pub window: Option<u32>,
    pub rows: u32,
    pub positives: u32,
    /// One value per `TaskMetrics::columns` entry; `None` where undefined for this task.
    pub values: Vec<Option<f64>>,
    /// One chance level per `TaskMetrics::chance_columns` entry.
    pub chance: Vec<Option<f64>>,
}

/// Per-task metrics (per user, for user tasks): what the per-user significance tests pair and
/// what `limaml export` writes as CSV.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TaskMetrics {
    /// `auc`, then the query ranking metrics, then the catalogue ones.
    pub columns: Vec<String>,
    pub chance_columns: Vec<String>,
    pub tasks: Vec<TaskRow>,
}

impl TaskMetrics {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// What [`evaluate_with`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub report: EvalReport,
    pub per_task: TaskMetrics,
}

/// Group AUC with impressions weighting: per-group AUC weighted by the group's row count;
/// groups with one class are skipped. Returns (gauc, groups, skipped groups). `groups[k]` is
/// row `k`'s group.
pub fn gauc(scores: &[f32], labels: &[f32], groups: &[u32]) -> (Option<f64>, usize, usize) {
    let mut by_group: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (k, &g) in groups.iter().enumerate() {
        by_group.entry(g).or_default().push(k);
    }
    let per_group: Vec<(Option<f64>, u32, u32)> = by_group
        .values()
        .map(|members| {
            let s: Vec<f32> = members.iter().map(|&k| scores[k]).collect();
            let y: Vec<f32> = members.iter().map(|&k| labels[k]).collect();
            let positives = y.iter().filter(|&&v| v > 0.5).count() as u32;
            (auc(&s, &y), members.len() as u32, positives)
        })
        .collect();
    let skipped = per_group.iter().filter(|g| g.0.is_none()).count();
    (weighted_auc(&per_group, GaucWeighting::Impressions), by_group.len(), skipped)
}

/// The weighted mean of the defined per-task AUCs `(auc, rows, positives)`.
fn weighted_auc(per_task: &[(Option<f64>, u32, u32)], weighting: GaucWeighting) -> Option<f64> {
    let (mut sum, mut weight) = (0.0f64, 0.0f64);
    for &(a, rows, positives) in per_task {
        if let Some(a) = a {
            let w = weighting.weight(rows, positives);
            sum += a * w;
            weight += w;
        }
    }
    (weight > 0.0).then(|| sum / weight)
}

/// Metrics of `predictions` overall, by segment and by entity state, query metrics only, with
/// the default configuration.
pub fn evaluate(predictions: &Predictions, interactions: &Interactions, tasks: &TaskSet) -> EvalReport {
    evaluate_with(predictions, interactions, tasks, &EvalConfig::default(), None).report
}

/// The overall AUC and log loss of `predictions`, the values [`evaluate`]'s `overall` holds
/// (the log loss summed over the rows in task order, as there), without the per-task, slice and
/// ranking metrics: for a caller that reads only these two, as the logistic search does for
/// each of its candidates.
pub fn overall_auc_and_logloss(predictions: &Predictions, interactions: &Interactions) -> (Option<f64>, Option<f64>) {
    let mut in_task_order: Vec<usize> = (0..predictions.rows.len()).collect();
    in_task_order.sort_by_key(|&k| predictions.task_index[k]);
    let (s, y): (Vec<f32>, Vec<f32>) = in_task_order
        .iter()
        .map(|&k| (predictions.score[k], interactions.label[predictions.rows[k] as usize]))
        .unzip();
    (auc(&s, &y), log_loss(&s, &y))
}

/// Every metric of `config` for `predictions`, overall and per slice, and the per-task table.
/// `catalogue` holds, per task index, the ranks of its positives among every candidate item
/// (see [`catalogue::catalogue_ranks`]); without it no `full_` metric is reported.
pub fn evaluate_with(
    predictions: &Predictions,
    interactions: &Interactions,
    tasks: &TaskSet,
    config: &EvalConfig,
    catalogue: Option<&BTreeMap<u32, PositiveRanks>>,
) -> Evaluation {
    let labels: Vec<f32> = predictions.rows.iter().map(|&r| interactions.label[r as usize]).collect();
    // Per task, its rows (ascending); a task's rows usually sit together, so one map lookup
    // per run of equal task indices.
    let mut members: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut k = 0;
    while k < predictions.task_index.len() {
        let t = predictions.task_index[k];
        let end = predictions.task_index[k..].iter().position(|&other| other != t).map_or(predictions.task_index.len(), |n| k + n);
        members.entry(t).or_default().extend(k..end);
        k = end;
    }
    let ranking = RankingMetric::all(&config.ks);
    let mut columns = vec!["auc".to_string()];
    columns.extend(ranking.iter().map(|m| m.name()));
    if catalogue.is_some() {
        columns.extend(ranking.iter().map(|m| format!("{CATALOGUE_PREFIX}{}", m.name())));
    }
    let chance_columns: Vec<String> = ranking.iter().map(|m| m.name()).collect();
    let per_task: Vec<TaskRow> = members
        .iter()
        .map(|(&task, rows)| {
            let scored: Vec<(f32, u32, bool)> = rows
                .iter()
                .map(|&k| (predictions.score[k], predictions.rows[k], labels[k] > 0.5))
                .collect();
            let (s, y): (Vec<f32>, Vec<f32>) = rows.iter().map(|&k| (predictions.score[k], labels[k])).unzip();
            let query = positive_ranks(&scored);
            let mut values = vec![auc(&s, &y)];
            values.extend(ranking.iter().map(|m| m.value(&query)));
            if let Some(catalogue) = catalogue {
                let full = catalogue.get(&task);
                values.extend(ranking.iter().map(|m| full.and_then(|list| m.value(list))));
            }
            TaskRow {
                task,
                entity: tasks.tasks[task as usize].entity,
                window: tasks.tasks[task as usize].window,
                rows: rows.len() as u32,
                positives: query.ranks.len() as u32,
                values,
                chance: ranking.iter().map(|m| m.chance(&query)).collect(),
            }
        })
        .collect();
    let per_task = TaskMetrics { columns, chance_columns, tasks: per_task };

    // The rows in task order (the order every slice's sums run in), and by score as (score,
    // positive, task) (one sort and one gather for every slice's AUC: a slice's rows in this
    // order are the slice sorted on its own).
    let in_task_order: Vec<usize> = members.values().flatten().copied().collect();
    let by_score: Vec<(f32, bool, u32)> = order_by_score(&predictions.score)
        .into_iter()
        .map(|k| (predictions.score[k as usize], labels[k as usize] > 0.5, predictions.task_index[k as usize]))
        .collect();
    let task_of = |k: usize| predictions.task_index[k] as usize;
    // A slice: per task index, whether the task is in it.
    let slice_metrics = |in_slice: &[bool]| -> Metrics {
        let chosen: Vec<&TaskRow> = per_task.tasks.iter().filter(|row| in_slice[row.task as usize]).collect();
        let (mut s, mut y) = (Vec::new(), Vec::new());
        for &k in in_task_order.iter().filter(|&&k| in_slice[task_of(k)]) {
            s.push(predictions.score[k]);
            y.push(labels[k]);
        }
        let slice_auc = auc_of_ordered(
            by_score.iter().filter(|&&(_, _, t)| in_slice[t as usize]).map(|&(score, positive, _)| (score, positive)),
        );
        // One pass over the slice's task rows (each row's values are read once): per-task AUCs
        // and, per column, the sum and count of the defined values, summed in row order.
        let mut task_aucs: Vec<(Option<f64>, u32, u32)> = Vec::with_capacity(chosen.len());
        let mut column_sums = ColumnMeans::new(per_task.columns.len());
        let mut chance_sums = ColumnMeans::new(per_task.chance_columns.len());
        for row in &chosen {
            task_aucs.push((row.values[0], row.rows, row.positives));
            column_sums.add(&row.values);
            chance_sums.add(&row.chance);
        }
        let mut more = BTreeMap::new();
        let mut put = |name: String, value: Option<f64>| {
            if let Some(v) = value.filter(|v| v.is_finite()) {
                more.insert(name, v);
            }
        };
        put("ece".into(), expected_calibration_error(&s, &y));
        put("ne".into(), normalized_entropy(&s, &y));
        for weighting in GaucWeighting::ALL {
            put(format!("gauc_{}", weighting.name()), weighted_auc(&task_aucs, weighting));
        }
        for (c, name) in per_task.columns.iter().enumerate().skip(1) {
            put(name.clone(), column_sums.mean(c));
        }
        let chance = per_task
            .chance_columns
            .iter()
            .enumerate()
            .filter_map(|(c, name)| Some((name.clone(), chance_sums.mean(c)?)))
            .collect();
        Metrics {
            auc: slice_auc,
            gauc: weighted_auc(&task_aucs, config.gauc_weighting),
            logloss: log_loss(&s, &y),
            rows: s.len(),
            tasks: chosen.len(),
            skipped_tasks: task_aucs.iter().filter(|(auc, _, _)| auc.is_none()).count(),
            ranked_tasks: chosen.iter().filter(|row| row.positives > 0).count(),
            more,
            chance,
        }
    };
    let n_tasks = tasks.tasks.len();
    let slices = |key: &dyn Fn(usize) -> String| -> BTreeMap<String, Metrics> {
        let keys: Vec<(usize, String)> = members.keys().map(|&t| (t as usize, key(t as usize))).collect();
        let names: std::collections::BTreeSet<&String> = keys.iter().map(|(_, name)| name).collect();
        names
            .into_iter()
            .map(|name| {
                let mut in_slice = vec![false; n_tasks];
                for (t, _) in keys.iter().filter(|(_, key)| key == name) {
                    in_slice[*t] = true;
                }
                (name.clone(), slice_metrics(&in_slice))
            })
            .collect()
    };
    let segment_name = |t: usize| {
        let segment = tasks.tasks[t].segment as usize;
        tasks.segments.get(segment).cloned().unwrap_or_else(|| format!("segment_{segment}"))
    };
    let state_name = |t: usize| state_name(tasks.tasks[t].state).to_string();
    let windowed = members.keys().any(|&t| tasks.tasks[t as usize].window.is_some());
    let overall = slice_metrics(&vec![true; n_tasks]);
    let by_segment = slices(&segment_name);
    let by_state = slices(&state_name);
    let report = EvalReport {
        overall,
        by_segment,
        by_state,
        by_window: if windowed {
            slices(&|t: usize| tasks.tasks[t].window.map_or("none".to_string(), |w| w.to_string()))
        } else {
            BTreeMap::new()
        },
    };
    Evaluation { report, per_task }
}

/// Per column, the sum and the count of the defined values added, for their mean.
struct ColumnMeans {
    sums: Vec<f64>,
    counts: Vec<usize>,
}

impl ColumnMeans {
    fn new(columns: usize) -> Self {
        // -0.0: the neutral element `Iterator::sum` of f64 starts from, so a mean is the same
        // bits as summing the column's defined values with `sum`.
        ColumnMeans { sums: vec![-0.0; columns], counts: vec![0; columns] }
    }

    fn add(&mut self, values: &[Option<f64>]) {
        for ((sum, count), value) in self.sums.iter_mut().zip(&mut self.counts).zip(values) {
            if let Some(v) = value {
                *sum += v;
                *count += 1;
            }
        }
    }

    /// The mean of column `c`'s defined values; `None` when it has none.
    fn mean(&self, c: usize) -> Option<f64> {
        (self.counts[c] > 0).then(|| self.sums[c] / self.counts[c] as f64)
    }
}

/// The report's name of an entity state.
pub fn state_name(state: EntityState) -> &'static str {
    match state {
        EntityState::Warm => "warm",
        EntityState::Cold => "cold",
        EntityState::Known => "known",
        EntityState::New => "new",
    }
}

/// The query rows of tasks with one of `roles`, in task order: (rows, task indices).
pub fn query_rows(tasks: &TaskSet, roles: &[TaskRole]) -> (Vec<u32>, Vec<u32>) {
    let mut rows = Vec::new();
    let mut task_index = Vec::new();
    for (t, task) in tasks
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, task)| roles.contains(&task.role))
    {
        rows.extend_from_slice(&task.query);
        task_index.extend(std::iter::repeat_n(t as u32, task.query.len()));
    }
    (rows, task_index)
}

/// Predictions that score each query row with its true click probability (synthetic data
/// only); `None` when `interactions.true_probability` is absent.
pub fn oracle_predictions(
    interactions: &Interactions,
    tasks: &TaskSet,
    roles: &[TaskRole],
) -> Option<Predictions> {
    let truth = interactions.true_probability.as_ref()?;
    let (rows, task_index) = query_rows(tasks, roles);
    let score = rows.iter().map(|&r| truth[r as usize]).collect();
    Some(Predictions {
        rows,
        task_index,
        score,
    })
}

#[cfg(test)]
mod tests;
