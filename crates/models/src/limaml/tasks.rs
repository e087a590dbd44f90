//! What a LiMAML pass reads: the data with its training tasks ([`LimamlData`]), tasks as batch
//! members ([`TaskRows`]) and batches ([`TaskBatch`]), and how an epoch cuts the training tasks
//! into meta-batches ([`length_bucketed_batches`]).
//!
//! Must not compute with the network's weights (the other files of `limaml` do).

use candle_core::{Device, Tensor};
use limaml_data::{Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::ModelError;
use crate::inputs::{support_activity, u32_tensor, DataShape, Features};
use crate::lazy_adam::GatheredRows;

/// Share of an evaluation entity's support rows (the latest, at least one, leaving at least
/// one) that its training task holds out as the inner query: the slicer's default
/// `query_fraction`.
pub const EVALUATION_SUPPORT_QUERY_SHARE: f64 = 0.25;

/// One task meta-training learns from: an entity, the rows to adapt on, the rows held out.
#[derive(Debug, Clone)]
pub struct TrainingTask {
    pub entity: u32,
    pub support: Vec<u32>,
    pub query: Vec<u32>,
}

/// The data a LiMAML pass reads: features as tensors, the tasks meta-training learns from, and
/// which entities meta-training knew (those have a trained id embedding).
pub struct LimamlData<'a> {
    pub interactions: &'a Interactions,
    pub tasks: &'a TaskSet,
    pub features: Features,
    pub(super) entity_features: Option<Tensor>,
    pub(super) known_entity: Vec<bool>,
    /// Meta-train tasks with a non-empty query, in task order; with
    /// `evaluation_support_tasks`, then a task per validation/test support of at least two rows
    /// (support = its earlier rows, query = the latest [`EVALUATION_SUPPORT_QUERY_SHARE`]).
    pub training_tasks: Vec<TrainingTask>,
}

impl<'a> LimamlData<'a> {
    /// `evaluation_support_tasks`: the [`LimamlConfig`](crate::config::LimamlConfig) field of that name.
    pub fn new(
        interactions: &'a Interactions,
        tasks: &'a TaskSet,
        evaluation_support_tasks: bool,
    ) -> Result<Self, ModelError> {
        let shape = DataShape::of(tasks);
        let features = Features::new(&tasks.features)?;
        let entity_features = match shape.entity {
            limaml_data::TaskEntity::User => features.user.clone(),
            limaml_data::TaskEntity::Item => features.item.clone(),
        };
        let mut training_tasks: Vec<TrainingTask> = meta_train_tasks(tasks)
            .into_iter()
            .map(|t| TrainingTask {
                entity: tasks.tasks[t].entity,
                support: tasks.tasks[t].support.clone(),
                query: tasks.tasks[t].query.clone(),
            })
            .collect();
        if evaluation_support_tasks {
            for task in tasks.tasks.iter().filter(|t| t.role != TaskRole::MetaTrain) {
                // A warm evaluation task's support is its entity's meta-train rows already; under
                // the deployment protocol (known / new) support rows after the first cut are
                // for refreshing embeddings only, never for training.
                let n = task.support.len();
                if task.state != limaml_data::EntityState::Cold || n < 2 {
                    continue;
                }
                let mut rows = task.support.clone();
                rows.sort_by_key(|&r| (interactions.timestamp[r as usize], r));
                let held_out = ((EVALUATION_SUPPORT_QUERY_SHARE * n as f64).round() as usize)
                    .clamp(1, n - 1);
                let query = rows.split_off(n - held_out);
                training_tasks.push(TrainingTask {
                    entity: task.entity,
                    support: rows,
                    query,
                });
            }
        }
        let mut known_entity = vec![false; shape.n_entities()];
        for task in &training_tasks {
            known_entity[task.entity as usize] = true;
        }
        Ok(LimamlData {
            interactions,
            tasks,
            features,
            entity_features,
            known_entity,
            training_tasks,
        })
    }

    /// The activity summary of a support set ([`support_activity`]).
    fn activity(&self, support: &[u32]) -> Vec<f32> {
        support_activity(self.tasks, self.interactions, support)
    }
}

/// A batch of tasks: the Meta Block's per-task inputs, the support rows and the query rows.
#[derive(Clone)]
pub struct TaskBatch {
    pub n_tasks: usize,
    /// Each task's row in the entity-id table (the unknown row for hidden or unknown ids), as
    /// numbers; `entity_index` holds them, or positions in a step's [`GatheredRows`].
    pub(super) entity_rows: Vec<u32>,
    pub(super) entity_index: Tensor,
    pub(super) entity_index_raw: Tensor,
    pub(super) activity: Tensor,
    /// Each task's support and query rows (the hand-written passes pack them; candle's
    /// autograd reference pads them, [`TaskBatch::padded`]).
    pub support_rows: Vec<Vec<u32>>,
    pub query_rows: Vec<Vec<u32>>,
}

/// One task as a batch member: its entity, the support rows to adapt on, the query rows to score.
pub struct TaskRows<'r> {
    pub entity: u32,
    /// Look the entity id up as "unknown" even if meta-training knew it.
    pub hide_id: bool,
    pub support: &'r [u32],
    pub query: &'r [u32],
}

impl TaskBatch {
    pub fn new(data: &LimamlData, members: &[TaskRows]) -> Result<TaskBatch, ModelError> {
        let n_entities = data.known_entity.len() as u32;
        let n_tasks = members.len();
        let entity_rows: Vec<u32> = members
            .iter()
            .map(|m| {
                if data.known_entity[m.entity as usize] && !m.hide_id {
                    m.entity
                } else {
                    n_entities
                }
            })
            .collect();
        let activity: Vec<f32> = members
            .iter()
            .flat_map(|m| data.activity(m.support))
            .collect();
        let activity_dim = activity.len() / n_tasks.max(1);
        let supports: Vec<&[u32]> = members.iter().map(|m| m.support).collect();
        let queries: Vec<&[u32]> = members.iter().map(|m| m.query).collect();
        Ok(TaskBatch {
            n_tasks,
            entity_index: u32_tensor(entity_rows.clone())?,
            entity_rows,
            entity_index_raw: u32_tensor(members.iter().map(|m| m.entity).collect())?,
            activity: Tensor::from_vec(activity, (n_tasks, activity_dim), &Device::Cpu)?,
            support_rows: supports.iter().map(|r| r.to_vec()).collect(),
            query_rows: queries.iter().map(|r| r.to_vec()).collect(),
        })
    }

    /// Each task's row in the entity-id table (the unknown row for hidden or unknown ids).
    pub fn entity_rows(&self) -> &[u32] {
        &self.entity_rows
    }

    /// This batch looking entity ids up in the rows a step gathered instead of the table.
    pub(super) fn with_gathered_entities(&self, entities: Option<&GatheredRows>) -> Result<TaskBatch, ModelError> {
        let mut batch = self.clone();
        if let Some(entities) = entities {
            batch.entity_index = u32_tensor(entities.localize(&self.entity_rows, |_| true))?;
        }
        Ok(batch)
    }
}

/// Meta-batches per pool when grouping tasks of similar length (see
/// [`length_bucketed_batches`]).
pub const BUCKET_POOL_BATCHES: usize = 8;

/// The training tasks in meta-batches of `meta_batch`, shuffled, grouped by size: the shuffled
/// order is cut into pools of [`BUCKET_POOL_BATCHES`] meta-batches, each pool is sorted by task
/// row count and cut into meta-batches, and the meta-batches are shuffled. Tasks are padded to
/// the longest in their batch, so this cuts padding (per-user row counts are heavy-tailed) and
/// with it the time per epoch, without changing which tasks an epoch visits.
pub fn length_bucketed_batches(
    tasks: &[TrainingTask],
    meta_batch: usize,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    crate::shuffle::shuffle(&mut order, rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for pool in order.chunks(meta_batch * BUCKET_POOL_BATCHES) {
        let mut pool = pool.to_vec();
        pool.sort_by_key(|&t| tasks[t].support.len() + tasks[t].query.len());
        batches.extend(pool.chunks(meta_batch).map(<[usize]>::to_vec));
    }
    batches.shuffle(rng);
    batches
}

/// Meta-train tasks with a non-empty query, in task order.
pub fn meta_train_tasks(tasks: &TaskSet) -> Vec<usize> {
    (0..tasks.tasks.len())
        .filter(|&t| tasks.tasks[t].role == TaskRole::MetaTrain && !tasks.tasks[t].query.is_empty())
        .collect()
}

/// The latest `max_support` rows of a support set (by timestamp, then row index), in time order.
pub fn latest_support(data: &LimamlData, support: &[u32], max_support: usize) -> Vec<u32> {
    let mut rows = support.to_vec();
    rows.sort_by_key(|&r| (data.interactions.timestamp[r as usize], r));
    let skip = rows.len().saturating_sub(max_support);
    rows.split_off(skip)
}
