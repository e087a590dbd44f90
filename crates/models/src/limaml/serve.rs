//! Scoring with a trained LiMAML: adapt each task's Meta Block on its support and export the
//! meta embeddings, score query rows with the adapted Meta Blocks, or score rows from stored
//! meta embeddings (the serving path). Through the hand-written passes, in chunks in parallel.
//!
//! Must not train (`meta_train` does) nor read or write embedding files (`embeddings` does).

use candle_core::Tensor;
use limaml_data::Interactions;
use rayon::prelude::*;

use super::{Blocks, LimamlData, LimamlNet, TaskBatch, TaskRows, EVAL_CHUNK};
use crate::error::ModelError;
use crate::inputs::{Features, RowInputTables};
use crate::kernel::{self, PackedRows};

impl LimamlNet {
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
