//! The non-meta baselines: `global`, `id_embedding` and `wide_deep`, as one row-level network.
//!
//! Owns [`BaselineNet`]: parameter layout, the forward pass from rows to logits and one epoch of
//! minibatch training on `TaskSet::baseline_train_rows`. Must not decide when to stop or what to
//! report: `train` drives epochs and early stopping.

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer};
use limaml_data::{Interactions, TaskSet};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::config::MethodConfig;
use crate::error::ModelError;
use crate::inputs::{row_input_dim, u32_tensor, DataShape, Features};
use crate::mlp::{bce_with_logits, mlp_forward, Mlp};
use crate::params::ParamStore;

/// Layout of a baseline's parameters in its [`ParamStore`].
#[derive(Debug, Clone)]
pub struct BaselineNet {
    shape: DataShape,
    deep: Mlp,
    item_embedding: Option<usize>,
    user_embedding: Option<usize>,
    /// Index of the wide weight vector: one-hot user ids, one-hot item ids, hashed user x item,
    /// hashed user x tag (in that order).
    wide: Option<usize>,
    hash_buckets: usize,
}

impl BaselineNet {
    /// Creates the parameters of a baseline `method` (not `limaml`) for `shape`.
    pub fn create(
        method: &MethodConfig,
        shape: DataShape,
        rng: &mut StdRng,
    ) -> Result<(BaselineNet, ParamStore), ModelError> {
        let (hidden, item_dim, user_dim, buckets) = match method {
            MethodConfig::Global {
                hidden,
                item_id_embedding_dim,
            } => (hidden, *item_id_embedding_dim, 0, None),
            MethodConfig::IdEmbedding {
                hidden,
                item_id_embedding_dim,
                user_embedding_dim,
            } => (hidden, *item_id_embedding_dim, *user_embedding_dim, None),
            MethodConfig::WideDeep {
                hidden,
                item_id_embedding_dim,
                user_embedding_dim,
                hash_buckets,
            } => (
                hidden,
                *item_id_embedding_dim,
                *user_embedding_dim,
                Some(*hash_buckets),
            ),
            MethodConfig::Limaml(_) => unreachable!("limaml is not a baseline"),
        };
        let mut store = ParamStore::new();
        let embedding =
            |store: &mut ParamStore, name: &str, rows: usize, dim: usize, rng: &mut StdRng| {
                if dim == 0 {
                    return Ok::<_, ModelError>(None);
                }
                let index = store.vars().len();
                store.normal(name, rows, dim, 0.05, rng)?;
                Ok(Some(index))
            };
        let item_embedding = embedding(&mut store, "item_embedding", shape.n_items, item_dim, rng)?;
        let user_embedding = embedding(&mut store, "user_embedding", shape.n_users, user_dim, rng)?;
        let input = row_input_dim(&shape, item_dim, user_dim);
        let deep = Mlp::create(&mut store, "deep", input, hidden, 1, rng)?;
        let wide = match buckets {
            Some(b) => {
                let index = store.vars().len();
                store.zeros("wide", &[shape.n_users + shape.n_items + 2 * b, 1])?;
                Some(index)
            }
            None => None,
        };
        let net = BaselineNet {
            shape,
            deep,
            item_embedding,
            user_embedding,
            wide,
            hash_buckets: buckets.unwrap_or(0),
        };
        Ok((net, store))
    }

    /// Logits (`N`) of the given rows.
    pub fn logits(
        &self,
        params: &[Tensor],
        features: &Features,
        interactions: &Interactions,
        tasks: &TaskSet,
        rows: &[u32],
    ) -> Result<Tensor, ModelError> {
        let users = u32_tensor(
            rows.iter()
                .map(|&r| interactions.user[r as usize])
                .collect(),
        )?;
        let items = u32_tensor(
            rows.iter()
                .map(|&r| interactions.item[r as usize])
                .collect(),
        )?;
        let x = features.row_inputs(
            &users,
            &items,
            self.item_embedding.map(|i| &params[i]),
            self.user_embedding.map(|i| &params[i]),
        )?;
        let deep = mlp_forward(self.deep.params(params), &x)?.squeeze(1)?;
        match self.wide {
            Some(w) => Ok(deep.add(&self.wide_logits(&params[w], interactions, tasks, rows)?)?),
            None => Ok(deep),
        }
    }

    fn wide_logits(
        &self,
        wide: &Tensor,
        interactions: &Interactions,
        tasks: &TaskSet,
        rows: &[u32],
    ) -> Result<Tensor, ModelError> {
        let tags = &tasks.features.item_tags;
        let max_tags = tags.iter().map(Vec::len).max().unwrap_or(0);
        let per_row = 3 + max_tags;
        let (nu, ni, b) = (
            self.shape.n_users as u64,
            self.shape.n_items as u64,
            self.hash_buckets as u64,
        );
        let mut index = Vec::with_capacity(rows.len() * per_row);
        let mut mask = Vec::with_capacity(rows.len() * per_row);
        for &r in rows {
            let (u, i) = (
                interactions.user[r as usize] as u64,
                interactions.item[r as usize] as u64,
            );
            index.extend([u, nu + i, nu + ni + hash(u, i, 1) % b].map(|x| x as u32));
            mask.extend([1.0f32; 3]);
            let item_tags = tags.get(i as usize).map(Vec::as_slice).unwrap_or(&[]);
            for k in 0..max_tags {
                match item_tags.get(k) {
                    Some(&t) => {
                        index.push((nu + ni + b + hash(u, t as u64, 2) % b) as u32);
                        mask.push(1.0);
                    }
                    None => {
                        index.push(0);
                        mask.push(0.0);
                    }
                }
            }
        }
        let n = rows.len();
        let weights = wide
            .index_select(&u32_tensor(index)?, 0)?
            .reshape((n, per_row))?;
        let mask = Tensor::from_vec(mask, (n, per_row), &Device::Cpu)?;
        Ok(weights.mul(&mask)?.sum(1)?)
    }

    /// One pass over `baseline_train_rows` in shuffled minibatches; returns the mean batch loss.
    #[allow(clippy::too_many_arguments)]
    pub fn train_epoch(
        &self,
        store: &ParamStore,
        optimizer: &mut AdamW,
        features: &Features,
        interactions: &Interactions,
        tasks: &TaskSet,
        batch_size: usize,
        rng: &mut StdRng,
    ) -> Result<f64, ModelError> {
        let mut rows = tasks.baseline_train_rows.clone();
        rows.shuffle(rng);
        let mut total = 0.0;
        let mut batches = 0;
        for batch in rows.chunks(batch_size) {
            let params = store.tensors();
            let logits = self.logits(&params, features, interactions, tasks, batch)?;
            let labels = Tensor::from_vec(
                batch
                    .iter()
                    .map(|&r| interactions.label[r as usize])
                    .collect::<Vec<_>>(),
                batch.len(),
                &Device::Cpu,
            )?;
            let loss = bce_with_logits(&logits, &labels)?.mean_all()?;
            optimizer.backward_step(&loss)?;
            total += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        Ok(total / batches.max(1) as f64)
    }
}

/// A fixed 64-bit mix of two ids and a salt (splitmix64 finalizer), stable across platforms.
fn hash(a: u64, b: u64, salt: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.rotate_left(29)
        ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
