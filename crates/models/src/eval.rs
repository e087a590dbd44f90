//! Evaluation metrics: AUC, GAUC and log loss, overall, per segment and per entity state.
//!
//! Owns [`auc`], [`gauc`], [`log_loss`], [`evaluate`] and [`oracle_predictions`]. Must not train
//! or score models: it reads [`Predictions`] and the labels.

use std::collections::BTreeMap;

use limaml_data::{EntityState, Interactions, TaskRole, TaskSet};
use serde::{Deserialize, Serialize};

/// Scores of query rows: `score[k]` is the predicted click probability of interaction row
/// `rows[k]`, which is a query row of task `task_index[k]` (an index into `TaskSet::tasks`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Predictions {
    pub rows: Vec<u32>,
    pub task_index: Vec<u32>,
    pub score: Vec<f32>,
}

/// Metrics of one slice of predictions. `auc`/`gauc` are `None` when undefined (one class only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub auc: Option<f64>,
    pub gauc: Option<f64>,
    pub logloss: Option<f64>,
    pub rows: usize,
    pub tasks: usize,
    /// Tasks left out of GAUC because their rows have a single class.
    pub skipped_tasks: usize,
}

/// Metrics overall, per segment name and per entity state ("warm", "cold").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub overall: Metrics,
    pub by_segment: BTreeMap<String, Metrics>,
    pub by_state: BTreeMap<String, Metrics>,
    /// Deployment protocol: per time window of the query rows ("1", "2", ...); empty otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_window: BTreeMap<String, Metrics>,
}

/// Probability clamp for the log loss.
pub const LOGLOSS_EPS: f64 = 1e-7;

/// Area under the ROC curve: the probability that a random positive outscores a random
/// negative, ties counting one half (average ranks). `None` without both classes.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut positive_rank_sum = 0.0f64;
    let mut positives = 0usize;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..end (0-based) share the average 1-based rank.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        for &k in &order[start..end] {
            if labels[k] > 0.5 {
                positive_rank_sum += average_rank;
                positives += 1;
            }
        }
        start = end;
    }
    let negatives = scores.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Mean log loss with probabilities clamped to `[eps, 1 - eps]`. `None` for no rows.
pub fn log_loss(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let total: f64 = scores
        .iter()
        .zip(labels)
        .map(|(&s, &y)| {
            let p = (s as f64).clamp(LOGLOSS_EPS, 1.0 - LOGLOSS_EPS);
            if y > 0.5 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Some(total / scores.len() as f64)
}

/// Group AUC: per-group AUC weighted by the group's row count; groups with one class are
/// skipped. Returns (gauc, groups, skipped groups). `groups[k]` is row `k`'s group.
pub fn gauc(scores: &[f32], labels: &[f32], groups: &[u32]) -> (Option<f64>, usize, usize) {
    let mut by_group: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (k, &g) in groups.iter().enumerate() {
        by_group.entry(g).or_default().push(k);
    }
    let (mut weighted, mut weight, mut skipped) = (0.0f64, 0.0f64, 0usize);
    for members in by_group.values() {
        let s: Vec<f32> = members.iter().map(|&k| scores[k]).collect();
        let y: Vec<f32> = members.iter().map(|&k| labels[k]).collect();
        match auc(&s, &y) {
            Some(a) => {
                weighted += a * members.len() as f64;
                weight += members.len() as f64;
            }
            None => skipped += 1,
        }
    }
    let value = if weight > 0.0 {
        Some(weighted / weight)
    } else {
        None
    };
    (value, by_group.len(), skipped)
}

fn metrics(scores: &[f32], labels: &[f32], groups: &[u32]) -> Metrics {
    let (g, tasks, skipped_tasks) = gauc(scores, labels, groups);
    Metrics {
        auc: auc(scores, labels),
        gauc: g,
        logloss: log_loss(scores, labels),
        rows: scores.len(),
        tasks,
        skipped_tasks,
    }
}

/// Scores, labels and task indices of one slice of the predictions.
type Slice = (Vec<f32>, Vec<f32>, Vec<u32>);

/// Metrics of `predictions` overall, by segment and by entity state.
pub fn evaluate(
    predictions: &Predictions,
    interactions: &Interactions,
    tasks: &TaskSet,
) -> EvalReport {
    let labels: Vec<f32> = predictions
        .rows
        .iter()
        .map(|&r| interactions.label[r as usize])
        .collect();
    let overall = metrics(&predictions.score, &labels, &predictions.task_index);
    let slice = |key: &dyn Fn(usize) -> String| -> BTreeMap<String, Metrics> {
        let mut parts: BTreeMap<String, Slice> = BTreeMap::new();
        for ((&score, &label), &task) in predictions
            .score
            .iter()
            .zip(&labels)
            .zip(&predictions.task_index)
        {
            let part = parts.entry(key(task as usize)).or_default();
            part.0.push(score);
            part.1.push(label);
            part.2.push(task);
        }
        parts
            .into_iter()
            .map(|(name, (s, y, g))| (name, metrics(&s, &y, &g)))
            .collect()
    };
    let segment_name = |t: usize| {
        let segment = tasks.tasks[t].segment as usize;
        tasks
            .segments
            .get(segment)
            .cloned()
            .unwrap_or_else(|| format!("segment_{segment}"))
    };
    let state_name = |t: usize| match tasks.tasks[t].state {
        EntityState::Warm => "warm".to_string(),
        EntityState::Cold => "cold".to_string(),
        EntityState::Known => "known".to_string(),
        EntityState::New => "new".to_string(),
    };
    let windowed = predictions.task_index.iter().any(|&t| tasks.tasks[t as usize].window.is_some());
    EvalReport {
        overall,
        by_segment: slice(&segment_name),
        by_state: slice(&state_name),
        by_window: if windowed {
            slice(&|t: usize| tasks.tasks[t].window.map_or("none".to_string(), |w| w.to_string()))
        } else {
            BTreeMap::new()
        },
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
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_a_positive_wins() {
        // Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.6) win, (0.4, 0.1) win, (0.4, 0.6) loss: 3/4.
        assert_eq!(
            auc(&[0.8, 0.4, 0.1, 0.6], &[1.0, 1.0, 0.0, 0.0]),
            Some(0.75)
        );
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // Pairs: (0.5, 0.5) tie = 1/2, (0.5, 0.2) win, (0.9, 0.5) win, (0.9, 0.2) win: 3.5/4.
        assert_eq!(
            auc(&[0.5, 0.9, 0.5, 0.2], &[1.0, 1.0, 0.0, 0.0]),
            Some(0.875)
        );
        assert_eq!(auc(&[0.3; 4], &[1.0, 0.0, 1.0, 0.0]), Some(0.5));
    }

    #[test]
    fn auc_is_undefined_for_one_class() {
        assert_eq!(auc(&[0.1, 0.2], &[1.0, 1.0]), None);
        assert_eq!(auc(&[], &[]), None);
    }

    #[test]
    fn gauc_weights_by_rows_and_skips_single_class_groups() {
        // Group 0 (3 rows): AUC 1. Group 1 (2 rows): AUC 0. Group 2: one class, skipped.
        let scores = [0.9, 0.8, 0.1, 0.2, 0.7, 0.5, 0.4];
        let labels = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let groups = [0, 0, 0, 1, 1, 2, 2];
        let (value, groups_seen, skipped) = gauc(&scores, &labels, &groups);
        assert!((value.unwrap() - 3.0 / 5.0).abs() < 1e-12);
        assert_eq!((groups_seen, skipped), (3, 1));
    }

    #[test]
    fn log_loss_is_clamped() {
        let certain_and_wrong = log_loss(&[0.0], &[1.0]).unwrap();
        assert!((certain_and_wrong - -(LOGLOSS_EPS.ln())).abs() < 1e-9);
        assert!((log_loss(&[0.5, 0.5], &[1.0, 0.0]).unwrap() - 2f64.ln()).abs() < 1e-7);
    }
}
