//! Descriptive statistics of a data set and its task set, for the CLI to render.
//!
//! Owns computing [`DataSummary`]. Must not format or print it.

use serde::{Deserialize, Serialize};

use crate::types::{Dataset, EntityState, TaskEntity, TaskRole, TaskSet};

/// Sizes of a collection of sets (support sets, query sets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeStats {
    pub min: usize,
    pub median: f64,
    pub mean: f64,
    pub max: usize,
}

impl SizeStats {
    /// Statistics of `sizes`; all zero when empty.
    pub fn of(sizes: &[usize]) -> SizeStats {
        if sizes.is_empty() {
            return SizeStats {
                min: 0,
                median: 0.0,
                mean: 0.0,
                max: 0,
            };
        }
        let mut sorted = sizes.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2] as f64
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0
        };
        SizeStats {
            min: sorted[0],
            median,
            mean: sorted.iter().sum::<usize>() as f64 / n as f64,
            max: sorted[n - 1],
        }
    }
}

/// A named count, in a meaningful order (roles, then segments lowest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub entity: TaskEntity,
    pub tasks: usize,
    pub support_size: SizeStats,
    pub query_size: SizeStats,
    /// "meta_train", "validation", "test".
    pub per_role: Vec<NamedCount>,
    /// One entry per segment name, lowest activity first.
    pub per_segment: Vec<NamedCount>,
    /// "warm", "cold".
    pub per_state: Vec<NamedCount>,
    pub baseline_train_rows: usize,
    /// Evaluation entities skipped for a too-short history (`TaskSet::skipped_entities`).
    pub skipped_entities: usize,
    pub user_dim: usize,
    pub item_dim: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    pub name: String,
    pub users: usize,
    pub items: usize,
    pub interactions: usize,
    /// Share of positive labels (0 when there are no interactions).
    pub positive_rate: f64,
    pub dropped_rows: usize,
    /// Whether true click probabilities (an oracle) are known.
    pub has_true_probability: bool,
    /// Legal but suspicious things in the data, counted (`check::warnings`).
    pub warnings: Vec<crate::check::DataWarning>,
    pub tasks: Option<TaskSummary>,
}

/// Summarizes `dataset` and, when given, its task set.
pub fn summarize(dataset: &Dataset, tasks: Option<&TaskSet>) -> DataSummary {
    let labels = &dataset.interactions.label;
    let positive_rate = if labels.is_empty() {
        0.0
    } else {
        labels.iter().filter(|&&l| l > 0.5).count() as f64 / labels.len() as f64
    };
    DataSummary {
        name: dataset.name.clone(),
        users: dataset.users.count,
        items: dataset.items.count,
        interactions: labels.len(),
        positive_rate,
        dropped_rows: dataset.dropped_rows,
        has_true_probability: dataset.interactions.true_probability.is_some(),
        warnings: crate::check::warnings(dataset),
        tasks: tasks.map(summarize_tasks),
    }
}

fn summarize_tasks(task_set: &TaskSet) -> TaskSummary {
    let tasks = &task_set.tasks;
    let count_where =
        |f: &dyn Fn(&crate::types::Task) -> bool| tasks.iter().filter(|t| f(t)).count();
    let named = |name: &str, count| NamedCount {
        name: name.to_string(),
        count,
    };
    TaskSummary {
        entity: task_set.entity,
        tasks: tasks.len(),
        support_size: SizeStats::of(&tasks.iter().map(|t| t.support.len()).collect::<Vec<_>>()),
        query_size: SizeStats::of(&tasks.iter().map(|t| t.query.len()).collect::<Vec<_>>()),
        per_role: vec![
            named(
                "meta_train",
                count_where(&|t| t.role == TaskRole::MetaTrain),
            ),
            named(
                "validation",
                count_where(&|t| t.role == TaskRole::Validation),
            ),
            named("test", count_where(&|t| t.role == TaskRole::Test)),
        ],
        per_segment: task_set
            .segments
            .iter()
            .enumerate()
            .map(|(i, name)| named(name, count_where(&|t| t.segment as usize == i)))
            .collect(),
        per_state: vec![
            named("warm", count_where(&|t| t.state == EntityState::Warm)),
            named("cold", count_where(&|t| t.state == EntityState::Cold)),
            named("known", count_where(&|t| t.state == EntityState::Known)),
            named("new", count_where(&|t| t.state == EntityState::New)),
        ],
        baseline_train_rows: task_set.baseline_train_rows.len(),
        skipped_entities: task_set.skipped_entities,
        user_dim: task_set.features.user_dim,
        item_dim: task_set.features.item_dim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_stats_of_an_even_count_average_the_middle_pair() {
        let stats = SizeStats::of(&[4, 1, 3, 2]);
        assert_eq!(
            stats,
            SizeStats {
                min: 1,
                median: 2.5,
                mean: 2.5,
                max: 4
            }
        );
    }
}
