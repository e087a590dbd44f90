//! The deployment protocol (`[split] setting = "deployment"`): train once, serve later windows.
//!
//! Owns the time cuts and the tasks they give. With cut points T0 < T1 < ... (quantiles of all
//! interaction timestamps):
//! - training: every entity's rows before T0 are its MetaTrain task (support/query split by
//!   `split_by` and `query_fraction`; at least two rows) and the baselines' training rows;
//! - window `w` (1-based) holds the rows in [T_{w-1}, T_w), the last one open-ended; every
//!   entity active in it gets a task whose query is those rows and whose support is all its
//!   rows before the window's start: what an offline refresh of its meta embedding may read,
//!   with no retraining. Window 1 is validation (early stopping), the rest are test;
//! - state: `Known` if the entity has rows before T0 (the models trained on them), `New` if
//!   not; segment: terciles of the support size (history at the window's start).
//! - the retrained upper bound (`deployment_retrain_window = w`): the models train on every
//!   row before window w's start, except window w - 1's rows of a seeded fifth of its
//!   entities, which are the validation tasks; window w alone is test.
//!
//! Must not train or score anything; the entity filters (`min_interactions`, ...) are applied by
//! `slice` before this runs.

use crate::config::SplitConfig;
use crate::error::DataError;
use crate::slice::{entity_rng, features_fitted_on, role_rank, segments_for, split_rows, stale};
use crate::types::{Dataset, EntityState, Task, TaskRole, TaskSet};

/// Timestamps at the cut quantiles: `T_k` is the smallest timestamp with at least a `cuts[k]`
/// share of all rows before it.
pub(crate) fn cut_times(timestamps: &[i64], cuts: &[f32]) -> Vec<i64> {
    let mut sorted = timestamps.to_vec();
    sorted.sort_unstable();
    cuts.iter()
        .map(|&q| {
            let at = ((q as f64 * sorted.len() as f64).ceil() as usize).min(sorted.len().saturating_sub(1));
            sorted[at]
        })
        .collect()
}

pub(crate) fn slice_deployment(
    dataset: &Dataset,
    config: &SplitConfig,
    seed: u64,
    rows_by_entity: &[Vec<u32>],
    kept: &[u32],
) -> Result<TaskSet, DataError> {
    let interactions = &dataset.interactions;
    let cuts = config.deployment_cuts.as_deref().expect("validated: deployment needs cuts");
    let kept_rows: Vec<i64> = kept
        .iter()
        .flat_map(|&e| rows_by_entity[e as usize].iter().map(|&r| interactions.timestamp[r as usize]))
        .collect();
    let times = cut_times(&kept_rows, cuts);
    if times.windows(2).any(|w| w[0] >= w[1]) {
        return Err(DataError::Slice {
            reason: format!(
                "split.deployment_cuts {cuts:?} fall on timestamps {times:?}: two cuts meet, so a window has no \
                 interactions (spread the cuts further apart)"
            ),
        });
    }
    let t0 = times[0];
    // window w (0-based) is [times[w], times[w + 1]), the last one open-ended.
    let window_of = |t: i64| -> Option<usize> {
        if t < t0 {
            return None;
        }
        Some(times.iter().rposition(|&start| t >= start).expect("t >= t0"))
    };
    let retrain = config.deployment_retrain_window.map(|w| w as usize);
    if let Some(w) = retrain {
        if !(2..=times.len()).contains(&w) {
            return Err(DataError::Slice {
                reason: format!(
                    "split.deployment_retrain_window = {w}: the test windows are 2..={}",
                    times.len()
                ),
            });
        }
    }
    // Training ends at the first cut, or (retrained upper bound) at the start of its window.
    let train_end = retrain.map_or(t0, |w| times[w - 1]);
    let mut tasks = Vec::new();
    let mut baseline_train_rows: Vec<u32> = Vec::new();
    let mut rows_per_window = vec![0usize; times.len()];
    for &entity in kept {
        let rows = &rows_by_entity[entity as usize];
        let in_window = |w: usize| -> Vec<u32> {
            rows.iter().copied().filter(|&r| window_of(interactions.timestamp[r as usize]) == Some(w)).collect()
        };
        let before = |t: i64| -> Vec<u32> {
            rows.iter().copied().filter(|&r| interactions.timestamp[r as usize] < t).collect()
        };
        let state = if before(t0).is_empty() { EntityState::New } else { EntityState::Known };
        // Retrained upper bound for window w: a seeded fifth of the entities active in window
        // w - 1 hold those rows out of training, for early stopping.
        let held_out_window = match retrain {
            Some(w) if rand::Rng::random_bool(&mut entity_rng(seed ^ 0x0005_eed0, entity), 0.2) => Some(w - 2),
            _ => None,
        };
        let held_out = |r: u32| held_out_window.is_some() && window_of(interactions.timestamp[r as usize]) == held_out_window;
        let holds_out = rows.iter().any(|&r| held_out(r));
        let training: Vec<u32> = before(train_end).into_iter().filter(|&r| !held_out(r)).collect();
        let mut rng = entity_rng(seed, entity);
        let make = |role, support: Vec<u32>, query: Vec<u32>, window: Option<u32>| Task {
            entity,
            role,
            state,
            segment: 0,
            n_interactions: support.len() as u32,
            stale_support: config.freshness_fraction.map(|f| stale(&support, f)),
            support,
            query,
            window,
        };
        if training.len() >= 2 {
            let (support, query) = split_rows(&training, config, &mut rng);
            tasks.push(make(TaskRole::MetaTrain, support, query, None));
        }
        baseline_train_rows.extend(&training);
        for w in 0..times.len() {
            let query = in_window(w);
            rows_per_window[w] += query.len();
            let role = match retrain {
                None if w == 0 => TaskRole::Validation,
                None => TaskRole::Test,
                Some(r) if w + 2 == r && holds_out => TaskRole::Validation,
                Some(r) if w + 1 == r => TaskRole::Test,
                Some(_) => continue,
            };
            if query.is_empty() {
                continue;
            }
            tasks.push(make(role, before(times[w]), query, Some(w as u32 + 1)));
        }
    }
    if let Some(w) = rows_per_window.iter().position(|&n| n == 0) {
        return Err(DataError::Slice {
            reason: format!("split.deployment_cuts: window {} has no interactions", w + 1),
        });
    }
    // Segments: terciles of the history an evaluation task is scored with.
    let counts: Vec<u32> =
        tasks.iter().filter(|t| t.role != TaskRole::MetaTrain).map(|t| t.support.len() as u32).collect();
    let (segments, segment_bounds) = segments_for(&counts, config.segments.as_deref());
    for task in &mut tasks {
        let n = task.support.len() as u32;
        task.segment = segment_bounds.iter().position(|&b| n <= b).unwrap_or(segment_bounds.len()) as u8;
    }
    tasks.sort_by_key(|t| (role_rank(t.role), t.window, t.entity));

    baseline_train_rows.sort_unstable();
    if baseline_train_rows.is_empty() {
        return Err(DataError::Slice {
            reason: "split.deployment_cuts: no interactions before the first cut to train on".into(),
        });
    }
    let features = features_fitted_on(dataset, baseline_train_rows.iter().copied());
    Ok(TaskSet {
        entity: config.task_entity,
        tasks,
        segments,
        segment_bounds,
        features,
        baseline_train_rows,
        skipped_entities: 0,
    })
}
