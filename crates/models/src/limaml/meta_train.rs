//! Meta-training: one epoch over the training tasks in meta-batches ([`LimamlNet::train_epoch`])
//! and its outer step ([`LimamlNet::meta_train_step`]): gather the id-table rows the batch
//! reads, the outer gradient by the hand-written passes ([`kernel::outer_gradients`]) over
//! fixed task groups in parallel, and the optimizer's step.
//!
//! Must not decide epochs or early stopping (`train` does).

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use rayon::prelude::*;

use super::{latest_support, length_bucketed_batches, Blocks, InnerGradients, LimamlData, LimamlNet, TaskBatch, TaskRows};
use crate::config::{MetaInput, OuterRows};
use crate::error::ModelError;
use crate::kernel::{self, PackedRows};
use crate::lazy_adam::{gradient_store, sum_parts_into, GatheredRows, GradientParts, Optimizers};
use crate::params::ParamStore;

impl LimamlNet {
    /// One pass over the training tasks ([`LimamlData::training_tasks`]) in shuffled
    /// meta-batches; returns the mean outer loss. The outer loss scores the rows `outer_rows`
    /// names: the query rows (at most `max_query`, a seeded sample), plus with
    /// [`OuterRows::SupportAndQuery`] the (capped) support rows adapted on; with
    /// [`OuterRows::CrossHalves`] each task is two members, each half adapted on and the other
    /// scored.
    ///
    /// Each meta-batch is built (its rows sampled, [`TaskBatch::new`]) while the step before it
    /// runs (`pool::join`: a free thread takes it, while a core is free, [`crate::pool`]).
    /// Building reads no parameter and draws from `rng` in batch order, one batch after the
    /// other, so the batches are the ones built between steps. Why: the step's groups run on
    /// every thread, but its parts around them run on one; building there too held the other
    /// thread idle for about a tenth of the epoch (bench/README.md, eighteenth pass).
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
        let build = |chunk: &[usize], rng: &mut StdRng| self.build_batch(data, chunk, max_support, max_query, rng);
        let mut total = 0.0;
        let mut next = batches.first().map(|chunk| build(chunk, rng)).transpose()?;
        for k in 0..batches.len() {
            let batch = next.take().expect("built before its step");
            let (loss, following) = crate::pool::join(
                || self.meta_train_step(store, optimizer, data, &batch, gradients),
                || batches.get(k + 1).map(|chunk| build(chunk, rng)).transpose(),
            );
            total += loss?;
            next = following?;
        }
        Ok(total / batches.len().max(1) as f64)
    }

    /// The meta-batch of training tasks `chunk` (indices into [`LimamlData::training_tasks`]):
    /// per task its support rows and the rows the outer loss scores, as
    /// [`LimamlNet::train_epoch`] describes, drawing from `rng`.
    fn build_batch(
        &self,
        data: &LimamlData,
        chunk: &[usize],
        max_support: usize,
        max_query: usize,
        rng: &mut StdRng,
    ) -> Result<TaskBatch, ModelError> {
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
                hide_id: self.config.unknown_id_rate > 0.0 && rng.random_bool(self.config.unknown_id_rate),
                support,
                query: outer,
            })
            .collect();
        TaskBatch::new(data, &members)
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
        // Fixed groups of tasks (not one per thread), run in parallel (while a core is free:
        // `pool::min_len`) and summed in group order: the result does not depend on the thread
        // count.
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
            .with_min_len(crate::pool::min_len())
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
