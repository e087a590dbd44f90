//! LiMAML: the Meta Block, the Global Block and MAML over tasks.
//!
//! Owns [`LimamlNet`] (parameter layout), task batches padded over a task axis ([`TaskBatch`]),
//! the inner loop ([`LimamlNet::adapt`], batched across the tasks of a meta-batch), the outer
//! step, and scoring with adapted Meta Blocks or with given meta embeddings. Must not decide
//! epochs or early stopping (`train` does) nor file formats (`embeddings` does).
//!
//! Files by job: `tasks` (the data and task batches a pass reads), `meta_train` (an epoch and
//! its outer step), `serve` (adapting and scoring a trained model), `autograd` (candle's
//! autograd reference for both); this file holds the parameter layout and what they share.
//!
//! Shapes: `T` tasks, `L` padded rows per task, `m` the meta-embedding size. The Meta Block maps
//! one input vector per task (entity-id embedding, entity features, support-set activity
//! summary) to the meta embedding; per-task adapted weights carry a leading task axis
//! (`T x in x out`), so one batched matmul runs every task's Meta Block. The Global Block maps a
//! row (user features, item features, item-id embedding) plus its task's meta embedding to a
//! logit, with weights shared by all tasks.

use candle_core::Tensor;
use limaml_data::Interactions;
use rand::rngs::StdRng;

use crate::config::{LimamlConfig, MetaInput, MetaInteraction};
use crate::error::ModelError;
use crate::inputs::{row_input_dim, DataShape, Features, RowInputTables, TensorValues};
use crate::kernel::{DenseStack, DenseView, DotTerm, GlobalBlock};
use crate::lazy_adam::GatheredRows;
use crate::mlp::Mlp;
use crate::params::ParamStore;

mod autograd;
mod meta_train;
mod serve;
mod tasks;

pub use autograd::PaddedRows;
pub use meta_train::TASKS_PER_GROUP;
pub use tasks::{
    latest_support, length_bucketed_batches, meta_train_tasks, LimamlData, TaskBatch, TaskRows, TrainingTask,
    BUCKET_POOL_BATCHES, EVALUATION_SUPPORT_QUERY_SHARE,
};

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

impl LimamlNet {
    /// Indices of the id-embedding tables in the [`ParamStore`] (trained with lazy Adam).
    pub fn embedding_tables(&self) -> Vec<usize> {
        self.item_embedding
            .into_iter()
            .chain(self.entity_embedding)
            .collect()
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

    /// Width of the Global Block's row input (without the meta embedding).
    fn row_dim(&self) -> usize {
        row_input_dim(&self.shape, self.config.item_id_embedding_dim, 0)
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
    /// The blocks as [`kernel`](crate::kernel) reads them.
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

/// The Meta Block's and the Global Block's weights as [`kernel`](crate::kernel) reads them (borrowed from a
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

