//! LiMAML: the Meta Block, the Global Block and MAML over tasks.
//!
//! Owns [`LimamlNet`] (parameter layout), task batches padded over a task axis ([`TaskBatch`]),
//! the inner loop ([`LimamlNet::adapt`], batched across the tasks of a meta-batch), the outer
//! step, and scoring with adapted Meta Blocks or with given meta embeddings. Must not decide
//! epochs or early stopping (`train` does) nor file formats (`embeddings` does).
//!
//! Shapes: `T` tasks, `L` padded rows per task, `m` the meta-embedding size. The Meta Block maps
//! one input vector per task (entity-id embedding, entity features, support-set activity
//! summary) to the meta embedding; per-task adapted weights carry a leading task axis
//! (`T x in x out`), so one batched matmul runs every task's Meta Block. The Global Block maps a
//! row (user features, item features, item-id embedding) plus its task's meta embedding to a
//! logit, with weights shared by all tasks.

use candle_core::{DType, Device, Tensor, Var};
use limaml_data::{Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use rayon::prelude::*;

use crate::config::{LimamlConfig, MetaInput, MetaInteraction, OuterRows};
use crate::error::ModelError;
use crate::inputs::{
    row_input_dim, support_activity, u32_tensor, DataShape, EmbeddingLookup, Features, RowInputTables, TensorValues,
};
use crate::kernel::{self, DenseStack, DenseView, DotTerm, GlobalBlock, PackedRows};
use crate::lazy_adam::{gradient_store, sum_parts_into, GatheredRows, GradientParts, Optimizers};
use crate::mlp::{masked_task_loss_sum, mlp_forward, Mlp};
use crate::params::ParamStore;

/// Tasks adapted together when evaluating or exporting. 32 keeps a chunk's activations in
/// cache: export of the bench's 256/256/128 model ran at 10 933 entities/s with 32, 8 747 with
/// 128 and 7 455 with 512 (1 thread). Rows are packed and each task's computation is its own,
/// so the size does not change results.
pub const EVAL_CHUNK: usize = 32;

/// How the inner loop's gradients are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerGradients {
    /// Differentiate through the inner loop (on candle's autograd path, [`LimamlNet::adapt`],
    /// this needs `CANDLE_GRAD_DO_NOT_DETACH=1` in the thread; the hand-written path does not).
    SecondOrder,
    /// Detach inner gradients: the outer gradient treats them as constants.
    FirstOrder,
}

/// Layout of LiMAML's parameters in its [`ParamStore`].
#[derive(Debug, Clone)]
pub struct LimamlNet {
    pub shape: DataShape,
    pub config: LimamlConfig,
    item_embedding: Option<usize>,
    /// `(n_entities + 1) x d`; the last row (initially zero; trained only through
    /// `unknown_id_rate`) stands for entities without a meta-train task.
    entity_embedding: Option<usize>,
    meta: Mlp,
    global: Mlp,
    /// The dot term's weight `P` (`(counterpart columns + 1) x m`), with
    /// [`MetaInteraction::Dot`].
    dot: Option<usize>,
}

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
    entity_features: Option<Tensor>,
    known_entity: Vec<bool>,
    /// Meta-train tasks with a non-empty query, in task order; with
    /// `evaluation_support_tasks`, then a task per validation/test support of at least two rows
    /// (support = its earlier rows, query = the latest [`EVALUATION_SUPPORT_QUERY_SHARE`]).
    pub training_tasks: Vec<TrainingTask>,
}

impl<'a> LimamlData<'a> {
    /// `evaluation_support_tasks`: the [`LimamlConfig`] field of that name.
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

/// Rows of `T` tasks padded to a common length `L` (padding points at row 0, masked out).
#[derive(Clone)]
pub struct PaddedRows {
    pub n_tasks: usize,
    pub len: usize,
    users: Tensor,
    items: Tensor,
    labels: Tensor,
    mask: Tensor,
    inv_count: Tensor,
}

impl PaddedRows {
    /// `prior_rows`: each task's loss is its summed loss over `its rows + prior_rows`.
    fn new(interactions: &Interactions, rows: &[&[u32]], prior_rows: f32) -> Result<PaddedRows, ModelError> {
        let n_tasks = rows.len();
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut users = vec![0u32; n_tasks * len];
        let mut items = vec![0u32; n_tasks * len];
        let mut labels = vec![0f32; n_tasks * len];
        let mut mask = vec![0f32; n_tasks * len];
        for (t, task_rows) in rows.iter().enumerate() {
            for (l, &r) in task_rows.iter().enumerate() {
                let at = t * len + l;
                users[at] = interactions.user[r as usize];
                items[at] = interactions.item[r as usize];
                labels[at] = interactions.label[r as usize];
                mask[at] = 1.0;
            }
        }
        let inv_count: Vec<f32> = rows
            .iter()
            .map(|r| 1.0 / (r.len().max(1) as f32 + prior_rows))
            .collect();
        Ok(PaddedRows {
            n_tasks,
            len,
            users: u32_tensor(users)?,
            items: u32_tensor(items)?,
            labels: Tensor::from_vec(labels, (n_tasks, len), &Device::Cpu)?,
            mask: Tensor::from_vec(mask, (n_tasks, len), &Device::Cpu)?,
            inv_count: Tensor::from_vec(inv_count, n_tasks, &Device::Cpu)?,
        })
    }

    /// `sum over tasks of the task's mean logistic loss`.
    fn loss_sum(&self, logits: &Tensor) -> Result<Tensor, ModelError> {
        masked_task_loss_sum(logits, &self.labels, &self.mask, &self.inv_count)
    }
}

/// A batch of tasks: the Meta Block's per-task inputs, the support rows and the query rows.
#[derive(Clone)]
pub struct TaskBatch {
    pub n_tasks: usize,
    /// Each task's row in the entity-id table (the unknown row for hidden or unknown ids), as
    /// numbers; `entity_index` holds them, or positions in a step's [`GatheredRows`].
    entity_rows: Vec<u32>,
    entity_index: Tensor,
    entity_index_raw: Tensor,
    activity: Tensor,
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
}

impl TaskBatch {
    /// Each task's row in the entity-id table (the unknown row for hidden or unknown ids).
    pub fn entity_rows(&self) -> &[u32] {
        &self.entity_rows
    }

    /// This batch looking entity ids up in the rows a step gathered instead of the table.
    fn with_gathered_entities(&self, entities: Option<&GatheredRows>) -> Result<TaskBatch, ModelError> {
        let mut batch = self.clone();
        if let Some(entities) = entities {
            batch.entity_index = u32_tensor(entities.localize(&self.entity_rows, |_| true))?;
        }
        Ok(batch)
    }

    /// The support and query rows padded to their longest task (candle's autograd path); the
    /// support loss counts `prior_rows` more rows per task.
    fn padded(&self, interactions: &Interactions, prior_rows: f32) -> Result<(PaddedRows, PaddedRows), ModelError> {
        let support: Vec<&[u32]> = self.support_rows.iter().map(Vec::as_slice).collect();
        let query: Vec<&[u32]> = self.query_rows.iter().map(Vec::as_slice).collect();
        Ok((
            PaddedRows::new(interactions, &support, prior_rows)?,
            PaddedRows::new(interactions, &query, 0.0)?,
        ))
    }
}

impl LimamlNet {
    /// Indices of the id-embedding tables in the [`ParamStore`] (trained with lazy Adam).
    pub fn embedding_tables(&self) -> Vec<usize> {
        self.item_embedding
            .into_iter()
            .chain(self.entity_embedding)
            .collect()
    }

    /// Gathers the id-table rows `batch` reads (entity ids; items of real support and query
    /// rows) through `optimizer`: entity table first, then item table, each if present.
    fn gather_rows(
        &self,
        optimizer: &mut Optimizers,
        data: &LimamlData,
        batch: &TaskBatch,
    ) -> Result<(Option<GatheredRows>, Option<GatheredRows>), ModelError> {
        let entities = self
            .entity_embedding
            .map(|e| optimizer.gather(e, batch.entity_rows.iter().copied()))
            .transpose()?;
        let items = self
            .item_embedding
            .map(|i| {
                let rows = batch.support_rows.iter().chain(&batch.query_rows).flatten();
                optimizer.gather(i, rows.map(|&r| data.interactions.item[r as usize]))
            })
            .transpose()?;
        Ok((entities, items))
    }

    pub fn create(
        config: &LimamlConfig,
        shape: DataShape,
        rng: &mut StdRng,
    ) -> Result<(LimamlNet, ParamStore), ModelError> {
        let mut store = ParamStore::new();
        let item_embedding = if config.item_id_embedding_dim > 0 {
            let index = store.vars().len();
            store.normal(
                "item_embedding",
                shape.n_items,
                config.item_id_embedding_dim,
                0.05,
                rng,
            )?;
            Some(index)
        } else {
            None
        };
        let entity_embedding = if config.meta_inputs.contains(&MetaInput::Id) {
            let (rows, dim) = (shape.n_entities(), config.entity_id_embedding_dim);
            // Stored divided by the multiplier (see `entity_id_lr_multiplier`).
            let std = 0.05 / config.entity_id_lr_multiplier as f32;
            let normal = rand_distr::Normal::new(0.0f32, std)
                .map_err(|e| ModelError::Weights(e.to_string()))?;
            let mut values: Vec<f32> = (0..rows * dim)
                .map(|_| rand::Rng::sample(rng, normal))
                .collect();
            values.extend(std::iter::repeat_n(0.0, dim));
            let index = store.vars().len();
            store.push("meta.entity_embedding", values, &[rows + 1, dim])?;
            Some(index)
        } else {
            None
        };
        let meta_input = Self::meta_input_dim(config, &shape);
        let meta = Mlp::create(
            &mut store,
            "meta_block",
            meta_input,
            &config.meta_hidden,
            config.meta_embedding_dim,
            rng,
        )?;
        let global_input =
            row_input_dim(&shape, config.item_id_embedding_dim, 0) + config.meta_embedding_dim;
        let global = Mlp::create(
            &mut store,
            "global_block",
            global_input,
            &config.hidden,
            1,
            rng,
        )?;
        let columns = counterpart_columns(&shape, config.item_id_embedding_dim).len();
        // Without counterpart columns there is nothing to project: the dot term is absent.
        let dot = match config.meta_interaction {
            MetaInteraction::Dot if columns > 0 => {
                let index = store.vars().len();
                store.glorot("global_block.dot", columns + 1, config.meta_embedding_dim, rng)?;
                Some(index)
            }
            _ => None,
        };
        Ok((
            LimamlNet {
                shape,
                config: config.clone(),
                item_embedding,
                entity_embedding,
                meta,
                global,
                dot,
            },
            store,
        ))
    }

    /// The dense layers' widths: the Meta Block's (input, hidden..., meta embedding) and the
    /// Global Block's (row input + meta embedding, hidden..., 1). For FLOP counts (`bench`).
    pub fn layer_widths(&self) -> (Vec<usize>, Vec<usize>) {
        let m = self.config.meta_embedding_dim;
        let meta_in = Self::meta_input_dim(&self.config, &self.shape);
        let meta = std::iter::once(meta_in).chain(self.config.meta_hidden.iter().copied()).chain([m]).collect();
        let global = std::iter::once(self.row_dim() + m).chain(self.config.hidden.iter().copied()).chain([1]).collect();
        (meta, global)
    }

    fn meta_input_dim(config: &LimamlConfig, shape: &DataShape) -> usize {
        config
            .meta_inputs
            .iter()
            .map(|input| match input {
                MetaInput::Id => config.entity_id_embedding_dim,
                MetaInput::Features => shape.entity_dim(),
                MetaInput::Activity => 2 * shape.counterpart_dim() + 2,
            })
            .sum()
    }

    /// The Meta Block's input, `T x 1 x in`.
    fn meta_input(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        batch: &TaskBatch,
    ) -> Result<Tensor, ModelError> {
        let mut parts = Vec::new();
        for input in &self.config.meta_inputs {
            match input {
                MetaInput::Id => {
                    let table = &params[self.entity_embedding.expect("created with the id input")];
                    let rows = table.index_select(&batch.entity_index, 0)?;
                    parts.push(rows.affine(self.config.entity_id_lr_multiplier, 0.0)?);
                }
                MetaInput::Features => {
                    if let Some(f) = &data.entity_features {
                        parts.push(f.index_select(&batch.entity_index_raw, 0)?);
                    }
                }
                MetaInput::Activity => parts.push(batch.activity.clone()),
            }
        }
        if parts.is_empty() {
            return Err(ModelError::ShapeMismatch(
                "the Meta Block has no inputs (entity features are empty)".into(),
            ));
        }
        Ok(Tensor::cat(&parts, 1)?.unsqueeze(1)?)
    }

    /// The Meta Block's layers with a task axis: `T x in x out` weights, `T x 1 x out` biases.
    fn meta_layers_per_task(
        &self,
        params: &[Tensor],
        n_tasks: usize,
    ) -> Result<Vec<Tensor>, ModelError> {
        let mut out = Vec::new();
        for p in self.meta.params(params) {
            let (a, b) = p.dims2()?;
            out.push(
                p.unsqueeze(0)?
                    .broadcast_as((n_tasks, a, b))?
                    .contiguous()?,
            );
        }
        Ok(out)
    }

    /// Meta embeddings `T x 1 x m` from per-task Meta Block layers.
    fn meta_embedding(meta_layers: &[Tensor], meta_input: &Tensor) -> Result<Tensor, ModelError> {
        mlp_forward(meta_layers, meta_input)
    }

    /// Global Block logits `N` of rows (`users`, `items`: `N`) with their meta embeddings `N x m`;
    /// `item_embedding_rows` (`N`) are the rows' item-id rows in `params`' item table (`items`
    /// unless the table is a step's gathered rows).
    pub fn global_logits(
        &self,
        params: &[Tensor],
        features: &Features,
        users: &Tensor,
        items: &Tensor,
        item_embedding_rows: &Tensor,
        meta_per_row: &Tensor,
    ) -> Result<Tensor, ModelError> {
        let item_embedding = self.item_embedding.map(|i| EmbeddingLookup {
            table: &params[i],
            rows: item_embedding_rows,
        });
        let x = features.row_inputs(users, items, item_embedding, None)?;
        let input = Tensor::cat(&[&x, meta_per_row], 1)?;
        let logits = mlp_forward(self.global.params(params), &input)?.squeeze(1)?;
        match self.dot {
            Some(dot) => {
                let columns = counterpart_columns(&self.shape, self.config.item_id_embedding_dim);
                let counterpart = x.narrow(1, columns.start, columns.len())?;
                let ones = Tensor::ones((counterpart.dims()[0], 1), DType::F32, &Device::Cpu)?;
                let counterpart = Tensor::cat(&[&counterpart, &ones], 1)?.matmul(&params[dot])?;
                Ok((logits + (counterpart * meta_per_row)?.sum(1)?)?)
            }
            None => Ok(logits),
        }
    }

    /// Global Block logits `T x L` of padded rows, each task's rows with its meta embedding.
    fn padded_logits(
        &self,
        params: &[Tensor],
        features: &Features,
        meta_embedding: &Tensor,
        rows: &PaddedRows,
    ) -> Result<Tensor, ModelError> {
        let m = self.config.meta_embedding_dim;
        let meta_per_row = meta_embedding
            .broadcast_as((rows.n_tasks, rows.len, m))?
            .reshape((rows.n_tasks * rows.len, m))?;
        let logits = self.global_logits(
            params,
            features,
            &rows.users,
            &rows.items,
            &rows.items,
            &meta_per_row,
        )?;
        Ok(logits.reshape((rows.n_tasks, rows.len))?)
    }

    /// The inner loop: `inner_steps` SGD steps at `inner_lr` on each task's support loss,
    /// adapting only the Meta Block; all tasks at once. Returns the adapted Meta Block layers
    /// with a task axis. With [`InnerGradients::SecondOrder`] the result stays differentiable
    /// with respect to `params` through the inner gradients.
    pub fn adapt(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        batch: &TaskBatch,
        gradients: InnerGradients,
    ) -> Result<Vec<Tensor>, ModelError> {
        let inner_params: Vec<Tensor> = match gradients {
            InnerGradients::SecondOrder => params.to_vec(),
            InnerGradients::FirstOrder => params.iter().map(Tensor::detach).collect(),
        };
        let meta_input = self.meta_input(&inner_params, data, batch)?;
        let (support, _) = batch.padded(data.interactions, self.config.inner_prior_rows as f32)?;
        let mut adapted = self.meta_layers_per_task(params, batch.n_tasks)?;
        for _ in 0..self.config.inner_steps {
            // Zero leaf variables on the adapted weights: backward keeps only leaf gradients,
            // and the gradient at a probe is exactly each task's gradient at its own weights.
            let probes: Vec<Var> = adapted
                .iter()
                .map(|a| Var::zeros(a.shape(), DType::F32, &Device::Cpu))
                .collect::<Result<_, _>>()?;
            let current: Vec<Tensor> = adapted
                .iter()
                .zip(&probes)
                .map(|(a, p)| a.add(p.as_tensor()))
                .collect::<Result<_, _>>()?;
            let meta_embedding = Self::meta_embedding(&current, &meta_input)?;
            let logits = self.padded_logits(
                &inner_params,
                &data.features,
                &meta_embedding,
                &support,
            )?;
            let support_loss = support.loss_sum(&logits)?;
            let grads = support_loss.backward()?;
            adapted = Vec::with_capacity(current.len());
            for (c, probe) in current.iter().zip(&probes) {
                let g = match grads.get(probe.as_tensor()) {
                    Some(g) => g.clone(),
                    None => probe.as_tensor().zeros_like()?,
                };
                let g = match gradients {
                    InnerGradients::SecondOrder => g,
                    InnerGradients::FirstOrder => g.detach(),
                };
                adapted.push(c.sub(&g.affine(self.config.inner_lr, 0.0)?)?);
            }
        }
        Ok(adapted)
    }

    /// One outer step on a meta-batch: adapt on supports, mean query loss over tasks, Adam.
    /// Returns the loss before the step.
    ///
    /// The id-table rows the meta-batch reads are gathered into small variables and stand in
    /// for the tables, so the gradient and the (lazy Adam) update touch only those rows: the
    /// step costs O(meta-batch), not O(users). The gradients come from the hand-written passes
    /// ([`kernel`]); candle's autograd ([`LimamlNet::autograd_outer_loss`]) is their test
    /// reference. Without `outer_gradient_clip`, the task groups' gradients of the dense
    /// layers are summed by the optimizer as it reads them (the same sums, the same bits); a
    /// clip needs their sum's norm first, so with one they are summed before.
    pub fn meta_train_step(
        &self,
        store: &ParamStore,
        optimizer: &mut Optimizers,
        data: &LimamlData,
        batch: &TaskBatch,
        gradients: InnerGradients,
    ) -> Result<f64, ModelError> {
        let (entities, items) = self.gather_rows(optimizer, data, batch)?;
        let mut params = store.tensors();
        for g in entities.iter().chain(&items) {
            params[g.table] = g.values.as_tensor().clone();
        }
        let entity_rows = match &entities {
            Some(e) => e.localize(&batch.entity_rows, |_| true),
            None => batch.entity_rows.clone(),
        };
        let batch = batch.with_gathered_entities(entities.as_ref())?;
        let (loss, per_group) =
            self.outer_gradient_parts(&params, data, &batch, &entity_rows, items.as_ref(), gradients)?;
        let gathered: Vec<GatheredRows> = entities.into_iter().chain(items).collect();
        let mut grads = gradient_store()?;
        let Some(limit) = self.config.outer_gradient_clip else {
            // No clipping: each dense parameter steps from its groups' parts, summed as the
            // optimizer reads them; the tables' gathered rows from their sums.
            let mut parts = Vec::new();
            for (k, &(index, _)) in per_group.first().map_or(&[][..], Vec::as_slice).iter().enumerate() {
                let of_groups: Vec<&[f32]> = per_group.iter().map(|group| group[k].1.as_slice()).collect();
                match gathered.iter().find(|g| g.table == index) {
                    Some(g) => {
                        let mut sum = vec![0.0; of_groups.first().map_or(0, |p| p.len())];
                        sum_parts_into(&mut sum, &of_groups, 0);
                        grads.insert(g.values.as_tensor(), Tensor::from_vec(sum, params[index].shape(), &Device::Cpu)?);
                    }
                    None => parts.push(GradientParts { var: store.vars()[index].as_tensor(), parts: of_groups }),
                }
            }
            optimizer.step_with_parts(&grads, &parts, &gathered)?;
            return Ok(loss);
        };
        let mut gradients = sum_groups(&params, per_group)?;
        clip_global_norm(&mut gradients, limit)?;
        for (index, gradient) in gradients {
            match gathered.iter().find(|g| g.table == index) {
                Some(g) => grads.insert(g.values.as_tensor(), gradient),
                None => grads.insert(store.vars()[index].as_tensor(), gradient),
            };
        }
        optimizer.step_with(&grads, &gathered)?;
        Ok(loss)
    }

    /// The outer loss `sum_t mean_t loss / T` as a candle graph over `params` (adapt on the
    /// supports, score the query rows with the adapted Meta Blocks).
    pub fn autograd_outer_loss(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        batch: &TaskBatch,
        gradients: InnerGradients,
    ) -> Result<Tensor, ModelError> {
        let adapted = self.adapt(params, data, batch, gradients)?;
        let meta_input = self.meta_input(params, data, batch)?;
        let meta_embedding = Self::meta_embedding(&adapted, &meta_input)?;
        let (_, query) = batch.padded(data.interactions, 0.0)?;
        let logits = self.padded_logits(params, &data.features, &meta_embedding, &query)?;
        Ok(query
            .loss_sum(&logits)?
            .affine(1.0 / batch.n_tasks as f64, 0.0)?)
    }

    /// Meta embeddings (`T x m`) adapted through candle's autograd: the reference for
    /// [`LimamlNet::adapted_meta_embeddings`].
    pub fn autograd_meta_embeddings(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        batch: &TaskBatch,
    ) -> Result<Tensor, ModelError> {
        let params: Vec<Tensor> = params.iter().map(Tensor::detach).collect();
        let adapted = self.adapt(&params, data, batch, InnerGradients::FirstOrder)?;
        let meta_input = self.meta_input(&params, data, batch)?;
        Ok(Self::meta_embedding(&adapted, &meta_input)?.squeeze(1)?)
    }

    /// The outer loss (`sum_t mean_t loss / T`) and its gradient with respect to every
    /// parameter in `params` (by index), through [`kernel::outer_gradients`]. `entity_rows`
    /// are the tasks' rows in `params`' entity table; `items` the gathered item-id rows
    /// standing in for the item table in `params` (`None`: the whole table).
    pub fn outer_gradients(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        batch: &TaskBatch,
        entity_rows: &[u32],
        items: Option<&GatheredRows>,
        order: InnerGradients,
    ) -> Result<(f64, Vec<(usize, Tensor)>), ModelError> {
        let (loss, per_group) = self.outer_gradient_parts(params, data, batch, entity_rows, items, order)?;
        Ok((loss, sum_groups(params, per_group)?))
    }

    /// [`LimamlNet::outer_gradients`] before the task groups' gradients are summed: the loss
    /// and each group's gradients, in group order (the gradient is their sum in that order,
    /// element by element).
    fn outer_gradient_parts(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        batch: &TaskBatch,
        entity_rows: &[u32],
        items: Option<&GatheredRows>,
        order: InnerGradients,
    ) -> Result<(f64, Vec<ParamGradients>), ModelError> {
        let n_tasks = batch.n_tasks;
        let meta_input = self.meta_input(params, data, batch)?.flatten_all()?.to_vec1::<f32>()?;
        let width = meta_input.len() / n_tasks.max(1);
        let values = self.block_values(params)?;
        let step = GroupStep {
            params,
            data,
            batch,
            items,
            order,
            blocks: values.blocks(),
            loss_scale: 1.0 / n_tasks.max(1) as f32,
        };
        // Fixed groups of tasks (not one per thread), run in parallel and summed in group
        // order: the result does not depend on the thread count.
        let groups: Vec<std::ops::Range<usize>> = (0..n_tasks.max(1))
            .step_by(TASKS_PER_GROUP)
            .map(|start| start..(start + TASKS_PER_GROUP).min(n_tasks))
            .collect();
        // The largest group (by rows, which its products scale with) goes first, to the thread
        // handing the groups out, which starts at once; a thread taking one starts a wake-up
        // later. The rest keep their order (sorting them all would hand rayon's first half
        // the largest ones). The results are put back in group order, so the sum is the same.
        let rows = |tasks: &std::ops::Range<usize>| -> usize {
            tasks.clone().map(|t| batch.support_rows[t].len() + batch.query_rows[t].len()).sum()
        };
        let largest = (0..groups.len()).rev().max_by_key(|&g| rows(&groups[g])).unwrap_or(0);
        let largest_first: Vec<usize> =
            std::iter::once(largest).chain((0..groups.len()).filter(|&g| g != largest)).collect();
        let mut per_group: Vec<(usize, (f64, ParamGradients))> = largest_first
            .par_iter()
            .map(|&g| {
                let tasks = groups[g].clone();
                let meta_input = &meta_input[tasks.start * width..tasks.end * width];
                Ok((g, self.group_gradients(&step, tasks.clone(), meta_input, &entity_rows[tasks])?))
            })
            .collect::<Result<_, ModelError>>()?;
        per_group.sort_by_key(|(g, _)| *g);
        let loss = per_group.iter().fold(0.0, |loss, (_, (group_loss, _))| loss + group_loss);
        Ok((loss, per_group.into_iter().map(|(_, (_, grads))| grads).collect()))
    }

    /// [`LimamlNet::outer_gradients`] of the tasks `tasks` of the step's batch (`meta_input`
    /// and `entity_rows` are theirs): the loss share and a gradient per parameter index.
    fn group_gradients(
        &self,
        step: &GroupStep,
        tasks: std::ops::Range<usize>,
        meta_input: &[f32],
        entity_rows: &[u32],
    ) -> Result<(f64, ParamGradients), ModelError> {
        let (params, data, batch, items) = (step.params, step.data, step.batch, step.items);
        let n_tasks = tasks.len();
        let labels = &data.interactions.label;
        let support_rows = &batch.support_rows[tasks.clone()];
        let query_rows = &batch.query_rows[tasks];
        let supports: Vec<&[u32]> = support_rows.iter().map(Vec::as_slice).collect();
        // Outer rows that start with the support rows (`support_and_query`) are packed as all
        // supports, then the rest, so the support rows' first-layer row part is reused.
        let starts_with_support = query_rows
            .iter()
            .zip(support_rows)
            .all(|(q, s)| q.starts_with(s));
        let outer_parts: Vec<Vec<&[u32]>> = if starts_with_support {
            let rest = query_rows
                .iter()
                .zip(&supports)
                .map(|(q, s)| &q[s.len()..])
                .collect();
            vec![supports.clone(), rest]
        } else {
            vec![query_rows.iter().map(Vec::as_slice).collect()]
        };
        let support = PackedRows::new(n_tasks, &[supports], labels)
            .with_prior_rows(self.config.inner_prior_rows as f32);
        let outer = PackedRows::new(n_tasks, &outer_parts, labels);
        let support_x = self.row_inputs(params, &data.features, data.interactions, &support.rows, items)?;
        let outer_x = if starts_with_support {
            let mut x = support_x.clone();
            x.extend(self.row_inputs(params, &data.features, data.interactions, &outer.rows[support.len()..], items)?);
            x
        } else {
            self.row_inputs(params, &data.features, data.interactions, &outer.rows, items)?
        };
        let global = self.global_block(&step.blocks);
        let g = kernel::outer_gradients(
            &step.blocks.meta,
            &global,
            &kernel::OuterStep {
                meta_input,
                support: &support,
                support_x: &support_x,
                outer: &outer,
                outer_x: &outer_x,
                outer_starts_with_support: starts_with_support,
                inner_steps: self.config.inner_steps,
                inner_rate: self.config.inner_lr as f32,
                second_order: step.order == InnerGradients::SecondOrder,
                loss_scale: step.loss_scale,
            },
        );
        let mut out = Vec::new();
        for (stack, mlp) in [(g.meta, &self.meta), (g.global, &self.global)] {
            for (layer, (w, b)) in stack.weights.into_iter().zip(stack.biases).enumerate() {
                out.push((mlp.first + 2 * layer, w));
                out.push((mlp.first + 2 * layer + 1, b));
            }
        }
        if let Some(dot) = self.dot {
            out.push((dot, g.dot));
        }
        if let Some(table) = self.item_embedding {
            // Outer rows, then (second-order) the support rows through the inner loop.
            let mut scored = outer.rows.clone();
            let mut row_gradients = g.row_inputs;
            if !g.support_row_inputs.is_empty() {
                scored.extend(&support.rows);
                row_gradients.extend(&g.support_row_inputs);
            }
            let item_ids: Vec<u32> =
                scored.iter().map(|&r| data.interactions.item[r as usize]).collect();
            let local = match items {
                Some(g) => g.localize(&item_ids, |_| true),
                None => item_ids,
            };
            let columns = self.item_embedding_columns();
            let gradient =
                scatter_rows(&params[table], &local, &row_gradients, self.row_dim(), columns)?;
            out.push((table, gradient));
        }
        if let (Some(table), Some(columns)) = (self.entity_embedding, self.entity_id_columns(data)) {
            let width = meta_input.len() / n_tasks.max(1);
            let mut gradient = scatter_rows(&params[table], entity_rows, &g.meta_input, width, columns)?;
            let multiplier = self.config.entity_id_lr_multiplier as f32;
            gradient.iter_mut().for_each(|g| *g *= multiplier);
            out.push((table, gradient));
        }
        Ok((g.loss, out))
    }

    /// Width of the Global Block's row input (without the meta embedding).
    fn row_dim(&self) -> usize {
        row_input_dim(&self.shape, self.config.item_id_embedding_dim, 0)
    }

    /// The item-id embedding's columns in a row input.
    fn item_embedding_columns(&self) -> std::ops::Range<usize> {
        let start = self.shape.user_dim + self.shape.item_dim;
        start..start + self.config.item_id_embedding_dim
    }

    /// The entity-id embedding's columns in the Meta Block's input (`None` without that input).
    fn entity_id_columns(&self, data: &LimamlData) -> Option<std::ops::Range<usize>> {
        let mut start = 0;
        for input in &self.config.meta_inputs {
            start += match input {
                MetaInput::Id => return Some(start..start + self.config.entity_id_embedding_dim),
                MetaInput::Features => data.entity_features.as_ref().map_or(0, |f| f.dims()[1]),
                MetaInput::Activity => 2 * self.shape.counterpart_dim() + 2,
            };
        }
        None
    }

    /// Row inputs (`rows.len() x row_dim`, row-major) of interaction rows `rows`; item-id rows
    /// are looked up in `items` (a step's gathered rows) or else in the whole table.
    fn row_inputs(
        &self,
        params: &[Tensor],
        features: &Features,
        interactions: &Interactions,
        rows: &[u32],
        items: Option<&GatheredRows>,
    ) -> Result<Vec<f32>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let tables = RowInputTables::new(features, self.item_embedding.map(|i| &params[i]))?;
        let embedding_rows = match (items, self.item_embedding) {
            (Some(g), Some(_)) => {
                let item_ids: Vec<u32> = rows.iter().map(|&r| interactions.item[r as usize]).collect();
                Some(g.localize(&item_ids, |_| true))
            }
            _ => None,
        };
        let mut x = vec![0.0f32; rows.len() * tables.width()];
        tables.gather(interactions, rows, embedding_rows.as_deref(), &mut x);
        Ok(x)
    }

    /// Global Block logits of interaction rows `rows` given each row's meta embedding
    /// (`rows x m`, row-major): serving from stored embeddings, through the hand-written
    /// forward pass.
    pub fn logits_with_embeddings(
        &self,
        params: &[Tensor],
        features: &Features,
        interactions: &Interactions,
        rows: &[u32],
        meta_per_row: &[f32],
    ) -> Result<Vec<f32>, ModelError> {
        const CHUNK: usize = 8192;
        let m = self.config.meta_embedding_dim;
        let values = self.block_values(params)?;
        let blocks = values.blocks();
        let global = self.global_block(&blocks);
        let tables = RowInputTables::new(features, self.item_embedding.map(|i| &params[i]))?;
        if tables.width() != global.row_dim {
            return Err(ModelError::ShapeMismatch(format!(
                "row inputs are {} wide, the Global Block takes {}",
                tables.width(),
                global.row_dim
            )));
        }
        // Chunks are independent: in parallel, in order; each gathers its rows' inputs a tile
        // at a time, inside the kernel.
        let chunks: Vec<Vec<f32>> = rows
            .par_chunks(CHUNK)
            .zip(meta_per_row.par_chunks(CHUNK * m.max(1)))
            .map(|(chunk, meta)| {
                let gather = |tile: std::ops::Range<usize>, out: &mut [f32]| tables.gather(interactions, &chunk[tile], None, out);
                kernel::logits_per_row(&global, meta, chunk.len(), &gather)
            })
            .collect();
        Ok(chunks.concat())
    }

    /// The blocks' parameter values, borrowed where they are (see [`BlockValues`]).
    fn block_values<'p>(&self, params: &'p [Tensor]) -> Result<BlockValues<'p>, ModelError> {
        let values = |layers: &'p [Tensor]| -> Result<(Vec<usize>, Vec<ParamValues<'p>>), ModelError> {
            Ok((stack_widths(layers)?, layers.iter().map(ParamValues::of).collect::<Result<_, _>>()?))
        };
        let (meta_widths, meta) = values(self.meta.params(params))?;
        let (global_widths, global) = values(self.global.params(params))?;
        Ok(BlockValues {
            meta_widths,
            meta,
            global_widths,
            global,
            dot: self.dot.map(|d| ParamValues::of(&params[d])).transpose()?,
        })
    }

    fn global_block<'a>(&self, blocks: &'a Blocks<'a>) -> GlobalBlock<'a> {
        GlobalBlock {
            stack: &blocks.global,
            row_dim: self.row_dim(),
            dot: blocks.dot.map(|weight| DotTerm {
                weight,
                columns: counterpart_columns(&self.shape, self.config.item_id_embedding_dim),
            }),
        }
    }

    /// Adapts each task of `batch` on its support through the hand-written inner loop (no
    /// outer graph).
    fn adapt_packed<'v>(
        &self,
        params: &[Tensor],
        blocks: &Blocks<'v>,
        data: &LimamlData,
        batch: &TaskBatch,
    ) -> Result<kernel::Adapted<'v>, ModelError> {
        let meta_input = self.meta_input(params, data, batch)?.flatten_all()?.to_vec1::<f32>()?;
        let supports: Vec<&[u32]> = batch.support_rows.iter().map(Vec::as_slice).collect();
        let support = PackedRows::new(batch.n_tasks, &[supports], &data.interactions.label)
            .with_prior_rows(self.config.inner_prior_rows as f32);
        let support_x = self.row_inputs(params, &data.features, data.interactions, &support.rows, None)?;
        let global = self.global_block(blocks);
        let row_part = global.row_part(&support_x, support.len());
        Ok(kernel::adapt(
            &blocks.meta,
            &global,
            &meta_input,
            &support,
            &row_part,
            self.config.inner_steps,
            self.config.inner_lr as f32,
        ))
    }

    /// One pass over the training tasks ([`LimamlData::training_tasks`]) in shuffled
    /// meta-batches; returns the mean outer loss. The outer loss scores the rows `outer_rows`
    /// names: the query rows (at most `max_query`, a seeded sample), plus with
    /// [`OuterRows::SupportAndQuery`] the (capped) support rows adapted on; with
    /// [`OuterRows::CrossHalves`] each task is two members, each half adapted on and the other
    /// scored.
    #[allow(clippy::too_many_arguments)]
    pub fn train_epoch(
        &self,
        store: &ParamStore,
        optimizer: &mut Optimizers,
        data: &LimamlData,
        max_support: usize,
        max_query: usize,
        gradients: InnerGradients,
        rng: &mut StdRng,
    ) -> Result<f64, ModelError> {
        let batches = length_bucketed_batches(&data.training_tasks, self.config.meta_batch, rng);
        let mut total = 0.0;
        let mut steps = 0;
        for chunk in &batches {
            // (entity, rows adapted on, rows the outer loss scores) per member of the batch.
            let mut parts: Vec<(u32, Vec<u32>, Vec<u32>)> = Vec::with_capacity(2 * chunk.len());
            for &t in chunk {
                let task = &data.training_tasks[t];
                let sample = |rows: &[u32], rng: &mut StdRng| -> Vec<u32> {
                    if rows.len() <= max_query {
                        return rows.to_vec();
                    }
                    let mut picked: Vec<u32> = rows.choose_multiple(rng, max_query).copied().collect();
                    picked.sort_unstable();
                    picked
                };
                match self.config.outer_rows {
                    OuterRows::Query | OuterRows::SupportAndQuery => {
                        let support = latest_support(data, &task.support, max_support);
                        let mut outer = sample(&task.query, rng);
                        if self.config.outer_rows == OuterRows::SupportAndQuery {
                            let mut rows = support.clone();
                            rows.append(&mut outer);
                            outer = rows;
                        }
                        parts.push((task.entity, support, outer));
                    }
                    OuterRows::CrossHalves => {
                        let mut rows: Vec<u32> = task.support.iter().chain(&task.query).copied().collect();
                        rows.shuffle(rng);
                        let second = rows.split_off(rows.len() / 2);
                        for (adapt_on, score) in [(&rows, &second), (&second, &rows)] {
                            if adapt_on.is_empty() || score.is_empty() {
                                continue;
                            }
                            let support = latest_support(data, adapt_on, max_support);
                            let mut outer = sample(score, rng);
                            outer.sort_by_key(|&r| (data.interactions.timestamp[r as usize], r));
                            parts.push((task.entity, support, outer));
                        }
                    }
                }
            }
            let members: Vec<TaskRows> = parts
                .iter()
                .map(|(entity, support, outer)| TaskRows {
                    entity: *entity,
                    hide_id: self.config.unknown_id_rate > 0.0
                        && rng.random_bool(self.config.unknown_id_rate),
                    support,
                    query: outer,
                })
                .collect();
            let batch = TaskBatch::new(data, &members)?;
            total += self.meta_train_step(store, optimizer, data, &batch, gradients)?;
            steps += 1;
        }
        Ok(total / steps.max(1) as f64)
    }

    /// Adapts on each task's support (first-order, no outer graph) and returns the meta
    /// embeddings, `tasks.len() x m` row-major, in the order given.
    pub fn adapted_meta_embeddings(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        members: &[TaskRows],
    ) -> Result<Vec<f32>, ModelError> {
        let values = self.block_values(params)?;
        let blocks = values.blocks();
        // Chunks are independent (each task adapts on its own rows): in parallel, in order.
        let chunks: Vec<Vec<f32>> = members
            .par_chunks(EVAL_CHUNK)
            .map(|chunk| {
                let batch = TaskBatch::new(data, chunk)?;
                Ok(self.adapt_packed(params, &blocks, data, &batch)?.pass.output)
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(chunks.concat())
    }

    /// Adapts on each task's support and scores its query rows with the adapted Meta Block run
    /// directly (not through stored embeddings). Logits per task, in query order.
    pub fn adapted_query_logits(
        &self,
        params: &[Tensor],
        data: &LimamlData,
        members: &[TaskRows],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let values = self.block_values(params)?;
        let blocks = values.blocks();
        let global = self.global_block(&blocks);
        let chunks: Vec<Vec<Vec<f32>>> = members
            .par_chunks(EVAL_CHUNK)
            .map(|chunk| {
                let batch = TaskBatch::new(data, chunk)?;
                let adapted = self.adapt_packed(params, &blocks, data, &batch)?;
                let queries: Vec<&[u32]> = batch.query_rows.iter().map(Vec::as_slice).collect();
                let query = PackedRows::new(batch.n_tasks, &[queries], &data.interactions.label);
                let query_x =
                    self.row_inputs(params, &data.features, data.interactions, &query.rows, None)?;
                let row_part = global.row_part(&query_x, query.len());
                let logits = kernel::logits(&global, &row_part, &adapted.pass.output, &query);
                let mut rest = logits.as_slice();
                let mut out = Vec::with_capacity(chunk.len());
                for member in chunk {
                    let (task, tail) = rest.split_at(member.query.len());
                    out.push(task.to_vec());
                    rest = tail;
                }
                Ok(out)
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(chunks.into_iter().flatten().collect())
    }
}

/// An MLP's layers (`[w0, b0, w1, b1, ...]`) as plain vectors.
pub(crate) fn dense_stack(layers: &[Tensor]) -> Result<DenseStack, ModelError> {
    let (mut weights, mut biases) = (Vec::new(), Vec::new());
    for pair in layers.chunks(2) {
        weights.push(pair[0].flatten_all()?.to_vec1::<f32>()?);
        biases.push(pair[1].flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(DenseStack {
        widths: stack_widths(layers)?,
        weights,
        biases,
    })
}

/// The widths of a dense stack given as its layers' `[weight, bias]` tensors: the first
/// weight's fan-in, then each weight's fan-out.
fn stack_widths(layers: &[Tensor]) -> Result<Vec<usize>, ModelError> {
    let mut widths = Vec::new();
    for weight in layers.iter().step_by(2) {
        let (fan_in, fan_out) = weight.dims2()?;
        if widths.is_empty() {
            widths.push(fan_in);
        }
        widths.push(fan_out);
    }
    Ok(widths)
}

/// Scales every gradient by `limit / norm` when their global L2 norm exceeds `limit`.
fn clip_global_norm(gradients: &mut [(usize, Tensor)], limit: f64) -> Result<(), ModelError> {
    let mut squares = 0.0f64;
    for (_, g) in gradients.iter() {
        squares += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = squares.sqrt();
    if norm.is_finite() && norm > limit {
        for (_, g) in gradients.iter_mut() {
            *g = g.affine(limit / norm, 0.0)?;
        }
    }
    Ok(())
}

/// A gradient per parameter, by its index in the [`ParamStore`] (row-major values).
type ParamGradients = Vec<(usize, Vec<f32>)>;

/// The task groups' gradients (each group's in the same parameter order) summed in group
/// order, element by element, as tensors shaped as `params`.
fn sum_groups(params: &[Tensor], per_group: Vec<ParamGradients>) -> Result<Vec<(usize, Tensor)>, ModelError> {
    let mut total: ParamGradients = Vec::new();
    for grads in per_group {
        if total.is_empty() {
            total = grads;
        } else {
            for ((_, sum), (_, g)) in total.iter_mut().zip(grads) {
                sum.iter_mut().zip(g).for_each(|(s, g)| *s += g);
            }
        }
    }
    total
        .into_iter()
        .map(|(index, g)| Ok((index, Tensor::from_vec(g, params[index].shape(), &Device::Cpu)?)))
        .collect()
}

/// Tasks per group of an outer step computed on its own (see [`LimamlNet::outer_gradients`]).
pub const TASKS_PER_GROUP: usize = 8;

/// What every task group of one outer step shares.
struct GroupStep<'a> {
    params: &'a [Tensor],
    data: &'a LimamlData<'a>,
    batch: &'a TaskBatch,
    items: Option<&'a GatheredRows>,
    order: InnerGradients,
    blocks: Blocks<'a>,
    loss_scale: f32,
}

/// The values of the Meta Block's and the Global Block's parameters, borrowed where they are
/// (each holds a read lock on its parameter's storage while it lives, so none may outlive the
/// call that took it: the optimizer writes them in place), copied where they cannot be.
/// Copying them out every step took 2 % of the large model's step on one thread and 4 % on
/// two (bench/README.md, eleventh pass).
struct BlockValues<'p> {
    meta_widths: Vec<usize>,
    meta: Vec<ParamValues<'p>>,
    global_widths: Vec<usize>,
    global: Vec<ParamValues<'p>>,
    dot: Option<ParamValues<'p>>,
}

impl BlockValues<'_> {
    /// The blocks as [`kernel`] reads them.
    fn blocks(&self) -> Blocks<'_> {
        fn view<'v>(widths: &[usize], layers: &'v [ParamValues]) -> DenseView<'v> {
            DenseStack {
                widths: widths.to_vec(),
                weights: layers.iter().step_by(2).map(ParamValues::as_slice).collect(),
                biases: layers.iter().skip(1).step_by(2).map(ParamValues::as_slice).collect(),
            }
        }
        Blocks {
            meta: view(&self.meta_widths, &self.meta),
            global: view(&self.global_widths, &self.global),
            dot: self.dot.as_ref().map(ParamValues::as_slice),
        }
    }
}

/// One parameter's values: in place where it is one contiguous `f32` block on the CPU, a
/// copy otherwise.
enum ParamValues<'p> {
    InPlace(TensorValues<'p>),
    Copied(Vec<f32>),
}

impl<'p> ParamValues<'p> {
    fn of(tensor: &'p Tensor) -> Result<ParamValues<'p>, ModelError> {
        match TensorValues::of(tensor) {
            Ok(values) => Ok(ParamValues::InPlace(values)),
            Err(_) => Ok(ParamValues::Copied(tensor.flatten_all()?.to_vec1::<f32>()?)),
        }
    }

    fn as_slice(&self) -> &[f32] {
        match self {
            ParamValues::InPlace(values) => values.as_slice(),
            ParamValues::Copied(values) => values,
        }
    }
}

/// The Meta Block's and the Global Block's weights as [`kernel`] reads them (borrowed from a
/// [`BlockValues`]).
struct Blocks<'v> {
    meta: DenseView<'v>,
    global: DenseView<'v>,
    dot: Option<&'v [f32]>,
}

/// The columns of a row input (user features, item features, item-id embedding) that describe
/// the row's counterpart, which the dot term projects: the item's for user tasks, the user's
/// for item tasks.
fn counterpart_columns(shape: &DataShape, item_id_embedding_dim: usize) -> std::ops::Range<usize> {
    match shape.entity {
        limaml_data::TaskEntity::User => {
            shape.user_dim..shape.user_dim + shape.item_dim + item_id_embedding_dim
        }
        limaml_data::TaskEntity::Item => 0..shape.user_dim,
    }
}

/// The gradient of an id table shaped like `table` (row-major): row `indices[k]` gets the sum
/// of `columns` of source row `k` (`source` row-major with `source_width` columns).
fn scatter_rows(
    table: &Tensor,
    indices: &[u32],
    source: &[f32],
    source_width: usize,
    columns: std::ops::Range<usize>,
) -> Result<Vec<f32>, ModelError> {
    let (rows, dim) = table.dims2()?;
    let mut gradient = vec![0.0f32; rows * dim];
    for (k, &row) in indices.iter().enumerate() {
        let from = &source[k * source_width + columns.start..][..dim];
        let to = &mut gradient[row as usize * dim..][..dim];
        to.iter_mut().zip(from).for_each(|(t, f)| *t += f);
    }
    Ok(gradient)
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
    order.shuffle(rng);
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
