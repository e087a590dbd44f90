//! LiMAML through candle's autograd: the inner loop ([`LimamlNet::adapt`], batched over the
//! tasks of a meta-batch with rows padded to a common length, [`PaddedRows`]) and the outer loss.
//! The reference the hand-written passes (`meta_train`, `serve`) are tested against.
//!
//! Must not be on a training or serving path: it is slower and exists to be compared with.

use candle_core::{DType, Device, Tensor, Var};
use limaml_data::Interactions;

use super::{counterpart_columns, InnerGradients, LimamlData, LimamlNet, TaskBatch};
use crate::error::ModelError;
use crate::inputs::{u32_tensor, EmbeddingLookup, Features};
use crate::mlp::{masked_task_loss_sum, mlp_forward};

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

impl TaskBatch {
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
}
