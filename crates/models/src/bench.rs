//! A throughput benchmark of LiMAML for `limaml bench`: meta-training tasks per second,
//! export entities per second, serving rows per second.
//!
//! Owns [`bench_meta_training`] and [`BenchResult`]. Must not be used for results: it trains
//! from a fresh initialization for a fixed number of outer steps and discards the model.

use std::time::Instant;

use limaml_data::{Interactions, TaskSet};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::{LimamlConfig, MethodConfig, TrainConfig};
use crate::error::ModelError;
use crate::inputs::{check_data, DataShape, Features};
use crate::limaml::{
    latest_support, meta_train_tasks, InnerGradients, LimamlData, LimamlNet, TaskBatch, TaskRows,
};
use crate::lazy_adam::Optimizers;
use crate::methods::score_with_embeddings;

/// Measured throughput (wall clock, this process's thread settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub second_order: bool,
    /// Meta-train tasks per second through outer steps (inner loop + outer loss + Adam).
    pub tasks_per_second: f64,
    /// Entities per second through export (adapting the Meta Block on each support set).
    pub entities_per_second: f64,
    /// Query rows per second scored by the Global Block from stored meta embeddings.
    pub rows_per_second: f64,
    pub meta_batches: usize,
    pub tasks: usize,
    pub entities: usize,
    pub rows: usize,
}

/// Runs `meta_batches` outer steps (after one warm-up step), then exports an embedding for every
/// task and scores every query row from them, timing each phase.
pub fn bench_meta_training(
    config: &LimamlConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    meta_batches: usize,
) -> Result<BenchResult, ModelError> {
    let method = MethodConfig::Limaml(config.clone());
    let mut issues = method.validate();
    issues.extend(train.validate());
    if !issues.is_empty() {
        return Err(ModelError::InvalidConfig(issues));
    }
    check_data(interactions, tasks)?;
    let order = meta_train_tasks(tasks);
    if order.is_empty() {
        return Err(ModelError::NoTrainingData(
            "no meta-train task has query rows".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (net, store) = LimamlNet::create(config, DataShape::of(tasks), &mut rng)?;
    let mut opt = Optimizers::new(&store, train, &net.embedding_tables())?;
    let data = LimamlData::new(interactions, tasks, config.evaluation_support_tasks)?;
    let gradients = if config.second_order {
        InnerGradients::SecondOrder
    } else {
        InnerGradients::FirstOrder
    };
    let batch_of = |step: usize| -> Result<(TaskBatch, usize), ModelError> {
        let start = step * config.meta_batch;
        let picked: Vec<usize> = (0..config.meta_batch)
            .map(|k| order[(start + k) % order.len()])
            .collect();
        let supports: Vec<Vec<u32>> = picked
            .iter()
            .map(|&t| latest_support(&data, &tasks.tasks[t].support, train.max_support))
            .collect();
        let queries: Vec<Vec<u32>> = picked
            .iter()
            .map(|&t| {
                let q = &tasks.tasks[t].query;
                q[..q.len().min(train.max_query)].to_vec()
            })
            .collect();
        let members: Vec<TaskRows> = picked
            .iter()
            .zip(supports.iter().zip(&queries))
            .map(|(&t, (s, q))| TaskRows {
                entity: tasks.tasks[t].entity,
                hide_id: false,
                support: s,
                query: q,
            })
            .collect();
        Ok((TaskBatch::new(&data, &members)?, picked.len()))
    };
    let (warm_up, _) = batch_of(0)?;
    net.meta_train_step(&store, &mut opt, &data, &warm_up, gradients)?;
    let started = Instant::now();
    let mut trained_tasks = 0;
    for step in 0..meta_batches {
        let (batch, n) = batch_of(step + 1)?;
        net.meta_train_step(&store, &mut opt, &data, &batch, gradients)?;
        trained_tasks += n;
    }
    let train_seconds = started.elapsed().as_secs_f64();
    opt.catch_up()?;

    let supports: Vec<Vec<u32>> = tasks
        .tasks
        .iter()
        .map(|t| latest_support(&data, &t.support, train.max_support))
        .collect();
    let members: Vec<TaskRows> = tasks
        .tasks
        .iter()
        .zip(&supports)
        .map(|(t, s)| TaskRows {
            entity: t.entity,
            hide_id: false,
            support: s,
            query: &[],
        })
        .collect();
    let started = Instant::now();
    let embeddings = net.adapted_meta_embeddings(&store.tensors(), &data, &members)?;
    let export_seconds = started.elapsed().as_secs_f64();

    let m = config.meta_embedding_dim;
    let mut rows = Vec::new();
    let mut per_row = Vec::new();
    for (t, task) in tasks.tasks.iter().enumerate() {
        rows.extend_from_slice(&task.query);
        for _ in &task.query {
            per_row.extend_from_slice(&embeddings[t * m..(t + 1) * m]);
        }
    }
    let features = Features::new(&tasks.features)?;
    let started = Instant::now();
    score_with_embeddings(
        &net,
        &store.tensors(),
        &features,
        interactions,
        &rows,
        &per_row,
    )?;
    let score_seconds = started.elapsed().as_secs_f64();

    let per_second = |n: usize, s: f64| n as f64 / s.max(1e-9);
    Ok(BenchResult {
        second_order: config.second_order,
        tasks_per_second: per_second(trained_tasks, train_seconds),
        entities_per_second: per_second(members.len(), export_seconds),
        rows_per_second: per_second(rows.len(), score_seconds),
        meta_batches,
        tasks: trained_tasks,
        entities: members.len(),
        rows: rows.len(),
    })
}
