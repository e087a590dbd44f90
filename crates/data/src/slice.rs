//! Slicing a [`Dataset`] into per-entity tasks with support and query sets.
//!
//! Owns: the min/max interaction filters, the seeded meta-train / validation / test draw of
//! entities, the cold / warm / both / prefix settings (deployment: `deployment.rs`), time and random support/query splits, activity
//! segments, stale (freshness) support sets, the baseline's training rows, and which entities
//! the feature statistics are fitted on. Must not train, cache or read files.
//!
//! Settings, for entities drawn into meta-train (M), validation (V) and test (T):
//! - `cold`: M entities get a MetaTrain task on all their rows; V and T entities get one Cold
//!   task each (role Validation / Test) and never appear in meta-training.
//! - `warm`: every entity meta-trains. Its rows split into an earlier train part and a later eval
//!   part (the query share); the train part is the MetaTrain task (itself split into support and
//!   query). V and T entities also get a Warm task: support = the train part, query = the eval part.
//! - `both`: V and T entities get Cold tasks as in `cold`; M entities meta-train on their train
//!   part and get a Warm Test task (support = train part, query = eval part).
//! - `prefix`: M entities as in `cold`; V and T entities get one New task each: support = their
//!   first `prefix_rows` rows, query = the rest. Their rows never enter any training rows, so the
//!   support is what a refresh at serving time may read; shorter histories are skipped and
//!   counted (`TaskSet::skipped_entities`).
//! - `deployment`: time cuts instead of an entity draw; see `deployment.rs`.
//!
//! The same `split_by` rule (time or random) is used for every split. An entity whose train part
//! has fewer than 2 rows gets no MetaTrain task. Feature statistics (numeric mean/std, the set of
//! known categorical values) are fitted on the users and items appearing in MetaTrain rows.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::config::{EvalSetting, SplitBy, SplitConfig};
use crate::encode::encode_features;
use crate::error::DataError;
use crate::types::{Dataset, EntityState, FeatureTables, Task, TaskEntity, TaskRole, TaskSet};

/// Slices `dataset` into tasks per `config`; `seed` drives the entity draw and random splits.
/// Fails, saying why, when no test task has a row to score.
pub fn slice(dataset: &Dataset, config: &SplitConfig, seed: u64) -> Result<TaskSet, DataError> {
    let task_set = slice_tasks(dataset, config, seed)?;
    let evaluable = |role: TaskRole| task_set.tasks.iter().filter(|t| t.role == role && !t.query.is_empty()).count();
    if evaluable(TaskRole::Test) == 0 {
        let entities = task_set.tasks.iter().map(|t| t.entity).collect::<std::collections::BTreeSet<_>>().len();
        return Err(DataError::Slice {
            reason: format!(
                "no test task has a row to score: {entities} {} entit(ies) with at least {} interactions gave {} \
                 meta-train, {} validation and 0 test task(s); use more data, lower split.min_interactions, or \
                 raise the test share (1 - split.train_fraction - split.validation_fraction)",
                entity_name(config.task_entity),
                config.min_interactions,
                evaluable(TaskRole::MetaTrain),
                evaluable(TaskRole::Validation),
            ),
        });
    }
    if config.validation_fraction > 0.0 && evaluable(TaskRole::Validation) == 0 {
        return Err(DataError::Slice {
            reason: format!(
                "no validation task: {} meta-train and {} test task(s) but none to stop training early on; use \
                 more {}s, or set split.validation_fraction = 0 to train for train.epochs",
                evaluable(TaskRole::MetaTrain),
                evaluable(TaskRole::Test),
                entity_name(config.task_entity),
            ),
        });
    }
    let test_labels: Vec<f32> = task_set
        .tasks
        .iter()
        .filter(|t| t.role == TaskRole::Test)
        .flat_map(|t| t.query.iter().map(|&r| dataset.interactions.label[r as usize]))
        .collect();
    let test_clicks = test_labels.iter().filter(|&&l| l > 0.5).count();
    if test_clicks == 0 || test_clicks == test_labels.len() {
        return Err(DataError::Slice {
            reason: format!(
                "the {} test row(s) to score are all {}; AUC needs clicks and non-clicks among them",
                test_labels.len(),
                if test_clicks == 0 { "non-clicks" } else { "clicks" }
            ),
        });
    }
    Ok(task_set)
}

fn entity_name(entity: TaskEntity) -> &'static str {
    match entity {
        TaskEntity::User => "user",
        TaskEntity::Item => "item",
    }
}

fn slice_tasks(dataset: &Dataset, config: &SplitConfig, seed: u64) -> Result<TaskSet, DataError> {
    let issues = config.validate();
    if !issues.is_empty() {
        return Err(DataError::InvalidConfig { issues });
    }
    let interactions = &dataset.interactions;
    let (entity_of_row, n_entities) = match config.task_entity {
        TaskEntity::User => (&interactions.user, dataset.users.count),
        TaskEntity::Item => (&interactions.item, dataset.items.count),
    };

    let mut rows_by_entity: Vec<Vec<u32>> = vec![Vec::new(); n_entities];
    for (row, &entity) in entity_of_row.iter().enumerate() {
        let slot = rows_by_entity
            .get_mut(entity as usize)
            .ok_or_else(|| DataError::Slice {
                reason: format!(
                    "row {row} refers to entity {entity}, but there are only {n_entities}"
                ),
            })?;
        slot.push(row as u32);
    }
    for rows in &mut rows_by_entity {
        rows.sort_by_key(|&r| (interactions.timestamp[r as usize], r));
        if let Some(max) = config.max_interactions {
            let excess = rows.len().saturating_sub(max as usize);
            rows.drain(..excess);
        }
    }
    let kept: Vec<u32> = (0..n_entities as u32)
        .filter(|&e| rows_by_entity[e as usize].len() >= config.min_interactions as usize)
        .collect();
    if kept.is_empty() {
        return Err(DataError::Slice {
            reason: format!(
                "no entity has at least {} interactions",
                config.min_interactions
            ),
        });
    }

    if config.setting == EvalSetting::Deployment {
        return crate::deployment::slice_deployment(dataset, config, seed, &rows_by_entity, &kept);
    }
    let counts: Vec<u32> = kept
        .iter()
        .map(|&e| rows_by_entity[e as usize].len() as u32)
        .collect();
    let (segments, segment_bounds) = segments_for(&counts, config.segments.as_deref());
    let segment_of = |n: u32| {
        segment_bounds
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(segment_bounds.len()) as u8
    };

    let mut drawn = kept.clone();
    drawn.shuffle(&mut StdRng::seed_from_u64(seed));
    let n = drawn.len();
    let n_train = ((config.train_fraction as f64 * n as f64).round() as usize).clamp(1, n);
    let n_validation =
        ((config.validation_fraction as f64 * n as f64).round() as usize).min(n - n_train);
    let role_of_position = |position: usize| {
        if position < n_train {
            TaskRole::MetaTrain
        } else if position < n_train + n_validation {
            TaskRole::Validation
        } else {
            TaskRole::Test
        }
    };

    let mut tasks = Vec::new();
    let mut skipped_entities = 0usize;
    for (position, &entity) in drawn.iter().enumerate() {
        let rows = &rows_by_entity[entity as usize];
        let n_interactions = rows.len() as u32;
        let make = |role, state, support: Vec<u32>, query: Vec<u32>| Task {
            entity,
            role,
            state,
            segment: segment_of(n_interactions),
            n_interactions,
            stale_support: config.freshness_fraction.map(|f| stale(&support, f)),
            window: None,
            support,
            query,
        };
        let mut rng = entity_rng(seed, entity);
        let drawn_role = role_of_position(position);
        if config.setting == EvalSetting::Prefix && drawn_role != TaskRole::MetaTrain {
            let k = config.prefix_rows.expect("validated: prefix needs prefix_rows") as usize;
            if rows.len() <= k {
                skipped_entities += 1;
                continue;
            }
            tasks.push(make(drawn_role, EntityState::New, rows[..k].to_vec(), rows[k..].to_vec()));
            continue;
        }
        let cold_evaluation =
            drawn_role != TaskRole::MetaTrain && config.setting != EvalSetting::Warm;
        if cold_evaluation {
            let (support, query) = split_rows(rows, config, &mut rng);
            tasks.push(make(drawn_role, EntityState::Cold, support, query));
            continue;
        }
        if config.setting == EvalSetting::Cold {
            let (support, query) = split_rows(rows, config, &mut rng);
            tasks.push(make(TaskRole::MetaTrain, EntityState::Warm, support, query));
            continue;
        }
        // Warm handling: meta-train on the train part, evaluate on the later eval part.
        let (train_part, eval_part) = split_rows(rows, config, &mut rng);
        if train_part.len() >= 2 {
            let (support, query) = split_rows(&train_part, config, &mut rng);
            tasks.push(make(TaskRole::MetaTrain, EntityState::Warm, support, query));
        }
        let evaluation_role = match (config.setting, drawn_role) {
            (EvalSetting::Both, TaskRole::MetaTrain) => Some(TaskRole::Test),
            (EvalSetting::Warm, TaskRole::MetaTrain) => None,
            (_, role) => Some(role),
        };
        if let Some(role) = evaluation_role {
            tasks.push(make(role, EntityState::Warm, train_part, eval_part));
        }
    }
    tasks.sort_by_key(|t| (role_rank(t.role), t.entity, t.state == EntityState::Cold));

    // Every row some task trains on, once, in row order: marked, then read in order (a sort
    // of the ~22M rows at a million users took a tenth of the stage).
    let mut trains_on = vec![false; interactions.len()];
    for t in &tasks {
        let query: &[u32] = if t.role == TaskRole::MetaTrain { &t.query } else { &[] };
        // New entities' support rows are for adapting at serving time only.
        let support: &[u32] = if t.state == EntityState::New { &[] } else { &t.support };
        for &row in support.iter().chain(query) {
            trains_on[row as usize] = true;
        }
    }
    let baseline_train_rows: Vec<u32> =
        trains_on.iter().enumerate().filter(|(_, &on)| on).map(|(row, _)| row as u32).collect();

    let meta_train_rows = tasks
        .iter()
        .filter(|t| t.role == TaskRole::MetaTrain)
        .flat_map(|t| t.support.iter().chain(&t.query).copied());
    let features = features_fitted_on(dataset, meta_train_rows);

    Ok(TaskSet {
        entity: config.task_entity,
        tasks,
        segments,
        segment_bounds,
        features,
        baseline_train_rows,
        skipped_entities,
    })
}

/// The encoded feature tables, with statistics fitted on the users and items of `rows`.
pub(crate) fn features_fitted_on(dataset: &Dataset, rows: impl IntoIterator<Item = u32>) -> FeatureTables {
    let interactions = &dataset.interactions;
    let mut user_fit = vec![false; dataset.users.count];
    let mut item_fit = vec![false; dataset.items.count];
    for row in rows {
        user_fit[interactions.user[row as usize] as usize] = true;
        item_fit[interactions.item[row as usize] as usize] = true;
    }
    encode_features(&dataset.users, &dataset.items, &user_fit, &item_fit)
}

pub(crate) fn role_rank(role: TaskRole) -> u8 {
    match role {
        TaskRole::MetaTrain => 0,
        TaskRole::Validation => 1,
        TaskRole::Test => 2,
    }
}

/// A per-entity generator, so an entity's random split does not depend on the others.
pub(crate) fn entity_rng(seed: u64, entity: u32) -> StdRng {
    let mixed = seed ^ (entity as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    StdRng::seed_from_u64(mixed)
}

/// Splits time-ordered `rows` into (support, query), both kept in time order. The query gets
/// `query_count` rows or the `query_fraction` share, at least 1 and leaving at least 1 support row.
pub fn split_rows(rows: &[u32], config: &SplitConfig, rng: &mut StdRng) -> (Vec<u32>, Vec<u32>) {
    let n = rows.len();
    if n < 2 {
        return (rows.to_vec(), Vec::new());
    }
    let wanted = match config.query_count {
        Some(count) => count as usize,
        None => (config.query_fraction as f64 * n as f64).round() as usize,
    };
    let n_query = wanted.clamp(1, n - 1);
    match config.split_by {
        SplitBy::Time => (rows[..n - n_query].to_vec(), rows[n - n_query..].to_vec()),
        SplitBy::Random => {
            let mut positions: Vec<usize> = (0..n).collect();
            positions.shuffle(rng);
            let mut in_query = vec![false; n];
            for &p in &positions[..n_query] {
                in_query[p] = true;
            }
            let mut support = Vec::with_capacity(n - n_query);
            let mut query = Vec::with_capacity(n_query);
            for (position, &row) in rows.iter().enumerate() {
                if in_query[position] {
                    query.push(row)
                } else {
                    support.push(row)
                }
            }
            (support, query)
        }
    }
}

/// The time-ordered `support` without its most recent `fraction` (at least one row kept).
pub(crate) fn stale(support: &[u32], fraction: f32) -> Vec<u32> {
    let dropped = (fraction as f64 * support.len() as f64).round() as usize;
    let keep = support
        .len()
        .saturating_sub(dropped)
        .max(1)
        .min(support.len());
    support[..keep].to_vec()
}

/// Segment names and inclusive upper bounds (all but the last segment). Explicit `bounds` name
/// segments "<=b1", "b1+1..b2", ..., ">bk"; otherwise terciles of `counts` named low/mid/high.
pub fn segments_for(counts: &[u32], bounds: Option<&[u32]>) -> (Vec<String>, Vec<u32>) {
    match bounds {
        Some(bounds) => {
            let mut names = Vec::with_capacity(bounds.len() + 1);
            for (i, &b) in bounds.iter().enumerate() {
                names.push(match i {
                    0 => format!("<={b}"),
                    _ => format!("{}..{}", bounds[i - 1] + 1, b),
                });
            }
            names.push(format!(">{}", bounds[bounds.len() - 1]));
            (names, bounds.to_vec())
        }
        None => {
            let mut sorted = counts.to_vec();
            sorted.sort_unstable();
            let at = |q: f64| {
                sorted[((q * sorted.len() as f64).ceil() as usize)
                    .saturating_sub(1)
                    .min(sorted.len() - 1)]
            };
            let names = ["low", "mid", "high"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            (names, vec![at(1.0 / 3.0), at(2.0 / 3.0)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_segment_bounds_are_named_by_their_ranges() {
        let (names, bounds) = segments_for(&[1, 2, 3], Some(&[10, 30]));
        assert_eq!(names, vec!["<=10", "11..30", ">30"]);
        assert_eq!(bounds, vec![10, 30]);
    }

    #[test]
    fn default_segments_are_terciles_of_counts() {
        let counts: Vec<u32> = (1..=9).collect();
        let (names, bounds) = segments_for(&counts, None);
        assert_eq!(names, vec!["low", "mid", "high"]);
        assert_eq!(bounds, vec![3, 6]);
    }

    #[test]
    fn stale_support_drops_the_most_recent_share() {
        assert_eq!(stale(&[1, 2, 3, 4], 0.5), vec![1, 2]);
        assert_eq!(stale(&[1], 0.9), vec![1]);
    }

    #[test]
    fn query_count_overrides_the_fraction() {
        let config = SplitConfig {
            query_count: Some(2),
            ..Default::default()
        };
        let (support, query) = split_rows(
            &[0, 1, 2, 3, 4, 5, 6, 7],
            &config,
            &mut StdRng::seed_from_u64(0),
        );
        assert_eq!(support, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(query, vec![6, 7]);
    }
}
