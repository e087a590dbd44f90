//! Meta embeddings for serving: export (adapt each entity's Meta Block on its support set and
//! store the output) and prediction, either from stored embeddings or by running the adapted
//! Meta Block directly.
//!
//! Owns [`MetaEmbeddingTable`] and its formats, [`export_meta_embeddings`], [`predict`] and
//! [`predict_adapted`]. Must not train: it reads a [`TrainedModel`].

use candle_core::Tensor;
use limaml_data::{Interactions, TaskRole, TaskSet};
use serde::{Deserialize, Serialize};

use crate::config::MethodConfig;
use crate::error::ModelError;
use crate::eval::{query_rows, Predictions};
use crate::inputs::{check_data, Features};
use crate::limaml::{latest_support, LimamlData, LimamlNet, TaskRows};
use crate::mlp::sigmoid;
use crate::params::ParamStore;
use crate::methods::{method_for, score_with_embeddings, Network};
use crate::train::{score_rows, TrainedModel};

/// Which support set an embedding is adapted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupportVersion {
    /// The task's support set as of the evaluation cut-off.
    Latest,
    /// The earlier cut-off's support (`Task::stale_support`, the oldest part of the support),
    /// for the freshness ablation.
    Stale,
    /// The newest rows of the support, as many as the stale support holds: against `Stale`,
    /// the same amount of data, only more recent (`Latest` against this one adds amount).
    Recent,
}

/// One meta embedding per entity: row `k` of `values` (`dim` wide) belongs to `entity_ids[k]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaEmbeddingTable {
    /// Ascending entity indices.
    pub entity_ids: Vec<u32>,
    pub dim: usize,
    /// Row-major `entity_ids.len() x dim`.
    pub values: Vec<f32>,
}

impl MetaEmbeddingTable {
    /// The embedding of `entity`, if stored.
    pub fn get(&self, entity: u32) -> Option<&[f32]> {
        let k = self.entity_ids.binary_search(&entity).ok()?;
        Some(&self.values[k * self.dim..(k + 1) * self.dim])
    }

    /// A safetensors file with `entity_ids` (u32, `n`) and `meta_embeddings` (f32, `n x dim`).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let n = self.entity_ids.len();
        let ids = Tensor::from_slice(&self.entity_ids, n, &candle_core::Device::Cpu)?;
        let values = Tensor::from_slice(&self.values, (n, self.dim), &candle_core::Device::Cpu)?;
        safetensors::serialize([("entity_ids", &ids), ("meta_embeddings", &values)], None)
            .map_err(|e| ModelError::Weights(e.to_string()))
    }

    /// Reads what [`MetaEmbeddingTable::to_safetensors_bytes`] wrote.
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<MetaEmbeddingTable, ModelError> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &candle_core::Device::Cpu)?;
        let get = |name: &str| {
            tensors
                .get(name)
                .ok_or_else(|| ModelError::Weights(format!("tensor `{name}` is missing")))
        };
        let values = get("meta_embeddings")?;
        let (_, dim) = values.dims2()?;
        Ok(MetaEmbeddingTable {
            entity_ids: get("entity_ids")?.to_vec1::<u32>()?,
            dim,
            values: values.flatten_all()?.to_vec1::<f32>()?,
        })
    }

    /// CSV with a header `entity,m0,m1,...` and one line per entity.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("entity");
        for k in 0..self.dim {
            out.push_str(&format!(",m{k}"));
        }
        out.push('\n');
        for (row, &entity) in self.entity_ids.iter().enumerate() {
            out.push_str(&entity.to_string());
            for v in &self.values[row * self.dim..(row + 1) * self.dim] {
                out.push_str(&format!(",{v}"));
            }
            out.push('\n');
        }
        out
    }
}

fn limaml_net<'n>(
    net: &'n dyn Network,
    model: &TrainedModel,
) -> Result<(&'n LimamlNet, &'n ParamStore), ModelError> {
    net.meta().ok_or_else(|| ModelError::NotAMetaModel(model.method.kind_name().to_string()))
}

/// Exports one meta embedding per entity with a task, adapted on the support set of that
/// entity's evaluation task: its Test task if any, else its Validation task, else its
/// meta-train task (the latest such task in task order).
pub fn export_meta_embeddings(
    model: &TrainedModel,
    interactions: &Interactions,
    tasks: &TaskSet,
    which: SupportVersion,
) -> Result<MetaEmbeddingTable, ModelError> {
    export_meta_embeddings_for_roles(
        model,
        interactions,
        tasks,
        which,
        &[TaskRole::Test, TaskRole::Validation, TaskRole::MetaTrain],
    )
}

/// Like [`export_meta_embeddings`], choosing each entity's task by the first role of
/// `roles_by_priority` it has; entities with none of them are left out.
pub fn export_meta_embeddings_for_roles(
    model: &TrainedModel,
    interactions: &Interactions,
    tasks: &TaskSet,
    which: SupportVersion,
    roles_by_priority: &[TaskRole],
) -> Result<MetaEmbeddingTable, ModelError> {
    check_data(interactions, tasks)?;
    if matches!(model.method, MethodConfig::Command(_)) {
        return Err(ModelError::NotAMetaModel("command".into()));
    }
    let net = model.load(tasks)?;
    let (l, store) = limaml_net(net.as_ref(), model)?;
    let data = LimamlData::new(interactions, tasks, l.config.evaluation_support_tasks)?;
    let rank = |role: TaskRole| roles_by_priority.iter().position(|&r| r == role);
    let mut chosen: std::collections::BTreeMap<u32, (usize, usize)> = Default::default();
    for (t, task) in tasks.tasks.iter().enumerate() {
        let Some(r) = rank(task.role) else { continue };
        let entry = chosen.entry(task.entity).or_insert((r, t));
        if r <= entry.0 {
            *entry = (r, t);
        }
    }
    let mut supports = Vec::with_capacity(chosen.len());
    for &(_, t) in chosen.values() {
        let task = &tasks.tasks[t];
        let support = match which {
            SupportVersion::Latest => &task.support,
            SupportVersion::Stale | SupportVersion::Recent => {
                task.stale_support
                    .as_ref()
                    .ok_or(ModelError::NoStaleSupport {
                        task: t,
                        entity: task.entity,
                    })?
            }
        };
        let support = match which {
            SupportVersion::Recent => latest_support(&data, &task.support, support.len()),
            _ => support.clone(),
        };
        supports.push(latest_support(&data, &support, model.train.max_support));
    }
    let members: Vec<TaskRows> = chosen
        .keys()
        .zip(&supports)
        .map(|(&entity, support)| TaskRows {
            entity,
            hide_id: false,
            support,
            query: &[],
        })
        .collect();
    let values = l.adapted_meta_embeddings(&store.tensors(), &data, &members)?;
    Ok(MetaEmbeddingTable {
        entity_ids: chosen.keys().copied().collect(),
        dim: l.config.meta_embedding_dim,
        values,
    })
}

/// Scores the query rows of the tasks with one of `roles`, in task order.
///
/// Baselines score rows directly. LiMAML scores with the Global Block given each task's meta
/// embedding: looked up by entity in `embeddings` when given (the serving path), otherwise
/// adapted on the task's own support set first.
pub fn predict(
    model: &TrainedModel,
    interactions: &Interactions,
    tasks: &TaskSet,
    embeddings: Option<&MetaEmbeddingTable>,
    roles: &[TaskRole],
) -> Result<Predictions, ModelError> {
    check_data(interactions, tasks)?;
    method_for(&model.method).predict(model, interactions, tasks, embeddings, roles)
}

/// [`predict`] for a method with a network: loads it and scores through it.
pub(crate) fn predict_with_network(
    model: &TrainedModel,
    interactions: &Interactions,
    tasks: &TaskSet,
    embeddings: Option<&MetaEmbeddingTable>,
    roles: &[TaskRole],
) -> Result<Predictions, ModelError> {
    let net = model.load(tasks)?;
    let features = Features::new(&tasks.features)?;
    let data = LimamlData::new(interactions, tasks, net.evaluation_support_tasks())?;
    let (rows, task_index) = query_rows(tasks, roles);
    let score = match (embeddings, net.meta()) {
        (Some(table), Some((l, store))) => {
            if table.dim != l.config.meta_embedding_dim {
                return Err(ModelError::ShapeMismatch(format!(
                    "meta embeddings are {} wide, the model's {}",
                    table.dim, l.config.meta_embedding_dim
                )));
            }
            let mut per_row = Vec::with_capacity(rows.len() * table.dim);
            for &t in &task_index {
                let entity = tasks.tasks[t as usize].entity;
                per_row.extend_from_slice(
                    table
                        .get(entity)
                        .ok_or(ModelError::MissingMetaEmbedding { entity })?,
                );
            }
            score_with_embeddings(
                l,
                &store.tensors(),
                &features,
                interactions,
                &rows,
                &per_row,
            )?
        }
        (Some(_), None) => {
            return Err(ModelError::NotAMetaModel(
                model.method.kind_name().to_string(),
            ))
        }
        (None, _) => score_rows(
            net.as_ref(),
            &features,
            &data,
            interactions,
            tasks,
            &rows,
            &task_index,
            model.train.max_support,
        )?,
    };
    Ok(Predictions {
        rows,
        task_index,
        score,
    })
}

/// LiMAML only: adapts each chosen task's Meta Block on its support set and scores its query
/// rows through the adapted weights directly (no stored embedding). Agrees with [`predict`]
/// given exported embeddings up to float rounding.
pub fn predict_adapted(
    model: &TrainedModel,
    interactions: &Interactions,
    tasks: &TaskSet,
    roles: &[TaskRole],
) -> Result<Predictions, ModelError> {
    check_data(interactions, tasks)?;
    if matches!(model.method, MethodConfig::Command(_)) {
        return Err(ModelError::NotAMetaModel("command".into()));
    }
    let net = model.load(tasks)?;
    let (l, store) = limaml_net(net.as_ref(), model)?;
    let data = LimamlData::new(interactions, tasks, l.config.evaluation_support_tasks)?;
    let chosen: Vec<usize> = (0..tasks.tasks.len())
        .filter(|&t| roles.contains(&tasks.tasks[t].role))
        .collect();
    let supports: Vec<Vec<u32>> = chosen
        .iter()
        .map(|&t| latest_support(&data, &tasks.tasks[t].support, model.train.max_support))
        .collect();
    let members: Vec<TaskRows> = chosen
        .iter()
        .zip(&supports)
        .map(|(&t, support)| TaskRows {
            entity: tasks.tasks[t].entity,
            hide_id: false,
            support,
            query: &tasks.tasks[t].query,
        })
        .collect();
    let logits = l.adapted_query_logits(&store.tensors(), &data, &members)?;
    let mut predictions = Predictions::default();
    for (&t, task_logits) in chosen.iter().zip(logits) {
        predictions.rows.extend_from_slice(&tasks.tasks[t].query);
        predictions
            .task_index
            .extend(std::iter::repeat_n(t as u32, task_logits.len()));
        predictions
            .score
            .extend(task_logits.into_iter().map(sigmoid));
    }
    Ok(predictions)
}
