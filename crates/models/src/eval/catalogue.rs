//! Full-catalogue ranking: for each evaluated user task, the rank of each of its positives among
//! every item the user has not interacted with in rows a method may train or adapt on.
//!
//! Owns [`catalogue_ranks`] and [`candidate_items`]. Must not compute metrics (`ranking` does)
//! nor know how a method scores: it scores (user, item) pairs through the method's own serving
//! path, [`crate::predict`], as extra query rows of the user's task, so every method (and the
//! meta embeddings LiMAML serves with) ranks the catalogue exactly as it scores query rows.
//!
//! Candidates of a task: every item, less the items of its user's rows in
//! `TaskSet::baseline_train_rows` and of the task's support rows. Positives: the distinct items
//! of the task's positive query rows that are candidates (a query item also seen in training
//! is neither). A candidate row carries the task's latest query timestamp and label 0.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use limaml_data::{Interactions, TaskEntity, TaskRole, TaskSet};

use super::ranking::{rank_among, PositiveRanks};
use crate::embeddings::{predict, MetaEmbeddingTable};
use crate::error::ModelError;
use crate::train::TrainedModel;

/// Candidate rows scored per call of the serving path (bounds the memory at any scale).
pub const CHUNK_ROWS: usize = 1 << 20;

/// Per task (index into `TaskSet::tasks`), the items excluded from its catalogue, sorted.
pub fn excluded_items(interactions: &Interactions, tasks: &TaskSet, chosen: &[usize]) -> BTreeMap<u32, Vec<u32>> {
    let users: BTreeSet<u32> = chosen.iter().map(|&t| tasks.tasks[t].entity).collect();
    let mut trained: HashMap<u32, Vec<u32>> = HashMap::new();
    for &r in &tasks.baseline_train_rows {
        let user = interactions.user[r as usize];
        if users.contains(&user) {
            trained.entry(user).or_default().push(interactions.item[r as usize]);
        }
    }
    chosen
        .iter()
        .map(|&t| {
            let task = &tasks.tasks[t];
            let mut items = trained.get(&task.entity).cloned().unwrap_or_default();
            items.extend(task.support.iter().map(|&r| interactions.item[r as usize]));
            items.sort_unstable();
            items.dedup();
            (t as u32, items)
        })
        .collect()
}

/// The candidate items of a task, given its sorted excluded items.
pub fn candidate_items(n_items: usize, excluded: &[u32]) -> Vec<u32> {
    (0..n_items as u32).filter(|i| excluded.binary_search(i).is_err()).collect()
}

/// The catalogue ranks of the positives of every user task with one of `roles` that has a
/// positive candidate; `None` for item tasks (there is no item catalogue to rank for an item).
/// `progress(done, total)` is called after each chunk of tasks.
pub fn catalogue_ranks(
    model: &TrainedModel,
    interactions: &Interactions,
    tasks: &TaskSet,
    embeddings: Option<&MetaEmbeddingTable>,
    roles: &[TaskRole],
    progress: &dyn Fn(usize, usize),
) -> Result<Option<BTreeMap<u32, PositiveRanks>>, ModelError> {
    if tasks.entity != TaskEntity::User {
        return Ok(None);
    }
    let n_items = tasks.features.n_items;
    let chosen: Vec<usize> = (0..tasks.tasks.len()).filter(|&t| roles.contains(&tasks.tasks[t].role)).collect();
    let excluded = excluded_items(interactions, tasks, &chosen);
    // (task, its positive items, its candidate count), for tasks with a positive candidate.
    let mut ranked: Vec<(u32, Vec<u32>, usize)> = Vec::new();
    for &t in &chosen {
        let out = &excluded[&(t as u32)];
        let mut positives: Vec<u32> = tasks.tasks[t]
            .query
            .iter()
            .filter(|&&r| interactions.label[r as usize] > 0.5)
            .map(|&r| interactions.item[r as usize])
            .filter(|item| out.binary_search(item).is_err())
            .collect();
        positives.sort_unstable();
        positives.dedup();
        if !positives.is_empty() {
            ranked.push((t as u32, positives, n_items - out.len()));
        }
    }
    // The serving path sees the real log plus one appended row per candidate, and a copy of
    // the task set in which only the current chunk's tasks have (candidate) query rows: every
    // other task, its support, role and state are untouched, so each method scores as it does
    // in `evaluate`.
    let mut extended = interactions.clone();
    let base_rows = interactions.len();
    let mut view = tasks.clone();
    for &t in &chosen {
        view.tasks[t].query.clear();
    }
    let mut out = BTreeMap::new();
    let mut start = 0;
    while start < ranked.len() {
        let mut end = start;
        let mut rows = 0;
        while end < ranked.len() && (end == start || rows + ranked[end].2 <= CHUNK_ROWS) {
            rows += ranked[end].2;
            end += 1;
        }
        let chunk = &ranked[start..end];
        truncate(&mut extended, base_rows);
        let mut items_of_chunk: Vec<Vec<u32>> = Vec::with_capacity(chunk.len());
        for (t, _, _) in chunk {
            let task = &tasks.tasks[*t as usize];
            let timestamp = task.query.iter().map(|&r| interactions.timestamp[r as usize]).max().unwrap_or(0);
            let items = candidate_items(n_items, &excluded[t]);
            let first = extended.len() as u32;
            for &item in &items {
                extended.user.push(task.entity);
                extended.item.push(item);
                extended.label.push(0.0);
                extended.timestamp.push(timestamp);
                if let Some(truth) = extended.true_probability.as_mut() {
                    truth.push(0.0);
                }
            }
            view.tasks[*t as usize].query = (first..extended.len() as u32).collect();
            items_of_chunk.push(items);
        }
        let predictions = predict(model, &extended, &view, embeddings, roles)?;
        // Rows come back task by task, in query order.
        let mut scores_of: HashMap<u32, Vec<f32>> = HashMap::new();
        for (&t, &score) in predictions.task_index.iter().zip(&predictions.score) {
            scores_of.entry(t).or_default().push(score);
        }
        for ((t, positives, candidates), items) in chunk.iter().zip(&items_of_chunk) {
            let scores = &scores_of[t];
            debug_assert_eq!(scores.len(), *candidates);
            let mut ranks: Vec<u32> = positives
                .iter()
                .map(|item| {
                    let k = items.binary_search(item).expect("a positive is a candidate");
                    let others =
                        items.iter().zip(scores).enumerate().filter(|&(j, _)| j != k).map(|(_, (&i, &s))| (s, i));
                    rank_among(scores[k], *item, others)
                })
                .collect();
            ranks.sort_unstable();
            out.insert(*t, PositiveRanks { candidates: *candidates as u32, ranks });
        }
        for (t, _, _) in chunk {
            view.tasks[*t as usize].query.clear();
        }
        start = end;
        progress(start, ranked.len());
    }
    Ok(Some(out))
}

fn truncate(interactions: &mut Interactions, rows: usize) {
    interactions.user.truncate(rows);
    interactions.item.truncate(rows);
    interactions.label.truncate(rows);
    interactions.timestamp.truncate(rows);
    if let Some(truth) = interactions.true_probability.as_mut() {
        truth.truncate(rows);
    }
}
