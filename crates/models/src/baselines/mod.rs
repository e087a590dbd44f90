//! The non-meta baselines: `global`, `id_embedding` and `wide_deep`, as one row-level network
//! (the serve-time refresh of a user row is in `refresh`, the hand-written training step in `step`,
//! one epoch of minibatch training in `epoch`).
//!
//! Owns [`BaselineNet`]: parameter layout, the forward pass from rows to logits and one epoch of
//! minibatch training on `TaskSet::baseline_train_rows`. Must not decide when to stop or what to
//! report: `train` drives epochs and early stopping.

use candle_core::{Device, Tensor};
use limaml_data::{FeatureTables, Interactions, TaskSet};
use rand::rngs::StdRng;
use rand::Rng;

use crate::config::MethodConfig;
use crate::error::ModelError;
use crate::inputs::{
    entity_of_row, row_input_dim, support_activity, u32_tensor, DataShape, EmbeddingLookup, Features,
};
use crate::limaml::dense_stack;
use crate::mlp::{mlp_forward, Mlp};
use crate::params::ParamStore;
use step::{StepLayout, StepRows, StepWeights};

mod epoch;
mod refresh;
mod step;

pub use epoch::TrainingStep;

/// Layout of a baseline's parameters in its [`ParamStore`].
#[derive(Debug, Clone)]
pub struct BaselineNet {
    shape: DataShape,
    deep: Mlp,
    item_embedding: Option<usize>,
    user_embedding: Option<usize>,
    /// Index of the wide weight vector: one-hot user ids (plus the out-of-vocabulary user),
    /// one-hot item ids, hashed user x item, hashed user x tag (in that order).
    wide: Option<usize>,
    hash_buckets: usize,
    /// The chance that a training row reads the out-of-vocabulary user instead of its own.
    id_dropout: f64,
    /// Width of the activity summary appended to the row input (0: none).
    activity_dim: usize,
    /// Each entity's training rows in time order, for the training rows' activity summaries.
    /// Filled on first use.
    history: std::sync::OnceLock<Vec<Vec<u32>>>,
    /// Serve-time refresh of each task's user embedding row: SGD steps and step size.
    refresh: Option<(usize, f64)>,
    /// Users with training rows (`TaskSet::baseline_train_rows`); the others read the
    /// out-of-vocabulary user (row `n_users` of the user tables). Filled on first use.
    known_users: std::sync::OnceLock<Vec<bool>>,
}

impl BaselineNet {
    /// Creates the parameters of a baseline `method` (not `limaml`) for `shape`.
    pub fn create(
        method: &MethodConfig,
        shape: DataShape,
        rng: &mut StdRng,
    ) -> Result<(BaselineNet, ParamStore), ModelError> {
        let (hidden, item_dim, user_dim, buckets, id_dropout) = match method {
            MethodConfig::Global {
                hidden,
                item_id_embedding_dim,
                ..
            } => (hidden, *item_id_embedding_dim, 0, None, 0.0),
            MethodConfig::IdEmbedding {
                hidden,
                item_id_embedding_dim,
                user_embedding_dim,
                id_dropout,
                ..
            } => (hidden, *item_id_embedding_dim, *user_embedding_dim, None, *id_dropout),
            MethodConfig::WideDeep {
                hidden,
                item_id_embedding_dim,
                user_embedding_dim,
                hash_buckets,
                id_dropout,
            } => (
                hidden,
                *item_id_embedding_dim,
                *user_embedding_dim,
                Some(*hash_buckets),
                *id_dropout,
            ),
            MethodConfig::Limaml(_) | MethodConfig::Logistic(_) | MethodConfig::Command(_) => {
                unreachable!("{} is not a BaselineNet", method.kind_name())
            }
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
        // One more row: the out-of-vocabulary user.
        let user_embedding = embedding(&mut store, "user_embedding", shape.n_users + 1, user_dim, rng)?;
        let activity_dim = match method {
            MethodConfig::Global { activity_features: true, .. } => 2 * shape.counterpart_dim() + 2,
            _ => 0,
        };
        let input = row_input_dim(&shape, item_dim, user_dim) + activity_dim;
        let deep = Mlp::create(&mut store, "deep", input, hidden, 1, rng)?;
        let wide = match buckets {
            Some(b) => {
                let index = store.vars().len();
                store.zeros("wide", &[shape.n_users + 1 + shape.n_items + 2 * b, 1])?;
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
            id_dropout,
            activity_dim,
            history: std::sync::OnceLock::new(),
            refresh: match method {
                MethodConfig::IdEmbedding { refresh_steps, refresh_lr, .. } if *refresh_steps > 0 => {
                    Some((*refresh_steps, *refresh_lr))
                }
                _ => None,
            },
            known_users: std::sync::OnceLock::new(),
        };
        Ok((net, store))
    }

    /// Indices of the id-embedding tables in the [`ParamStore`] (trained with lazy Adam): the
    /// item and user embeddings and the wide weights (one row per id, hashed cross, or tag).
    pub fn embedding_tables(&self) -> Vec<usize> {
        self.item_embedding
            .into_iter()
            .chain(self.user_embedding)
            .chain(self.wide)
            .collect()
    }

    /// Whether the rows' inputs include an activity summary (then [`BaselineNet::logits`] needs
    /// each row's support).
    pub fn reads_activity(&self) -> bool {
        self.activity_dim > 0
    }

    /// The activity summary of each training row: over its entity's training rows before it
    /// (the latest 256), `rows x activity_dim` row-major.
    fn history_activity(&self, interactions: &Interactions, tasks: &TaskSet, rows: &[u32]) -> Vec<f32> {
        let key = |r: u32| (interactions.timestamp[r as usize], r);
        let history = self.history.get_or_init(|| {
            let n = match tasks.entity {
                limaml_data::TaskEntity::User => self.shape.n_users,
                limaml_data::TaskEntity::Item => self.shape.n_items,
            };
            let mut by_entity = vec![Vec::new(); n];
            for &r in &tasks.baseline_train_rows {
                by_entity[entity_of_row(tasks.entity, interactions, r as usize) as usize].push(r);
            }
            by_entity.iter_mut().for_each(|rows: &mut Vec<u32>| rows.sort_by_key(|&r| key(r)));
            by_entity
        });
        rows.iter()
            .flat_map(|&r| {
                let own = &history[entity_of_row(tasks.entity, interactions, r as usize) as usize];
                let before = own.partition_point(|&h| key(h) < key(r));
                support_activity(tasks, interactions, &own[before.saturating_sub(256)..before])
            })
            .collect()
    }

    /// Logits (`N`) of the given rows. `supports` gives each row's task (`task_index`) and a
    /// task's support, which a model that [`reads_activity`](BaselineNet::reads_activity)
    /// summarises once per task; without it, training rows' own history is summarised.
    pub fn logits(
        &self,
        params: &[Tensor],
        features: &Features,
        interactions: &Interactions,
        tasks: &TaskSet,
        rows: &[u32],
        supports: Option<RowSupports>,
    ) -> Result<Tensor, ModelError> {
        let ids = self.scored_ids(interactions, tasks, rows, supports);
        let table_rows = TableRows {
            items: u32_tensor(ids.items.clone())?,
            users: u32_tensor(ids.user_ids.clone())?,
            wide: u32_tensor(ids.wide.clone())?,
        };
        self.logits_of(params, features, &ids, &table_rows)
    }

    /// [`BaselineNet::logits`] through the hand-written forward pass ([`step`]) over
    /// `weights` (from [`BaselineNet::plain_weights`]); equal up to float rounding.
    pub fn forward_logits(
        &self,
        weights: &PlainWeights,
        interactions: &Interactions,
        tasks: &TaskSet,
        rows: &[u32],
        supports: Option<RowSupports>,
    ) -> Vec<f32> {
        let ids = self.scored_ids(interactions, tasks, rows, supports);
        let step_weights = weights.step_weights(&tasks.features);
        let step_rows = StepRows {
            users: &ids.users,
            items: &ids.items,
            item_rows: &ids.items,
            user_rows: &ids.user_ids,
            activity: &ids.activity,
            wide: &ids.wide,
            wide_mask: &ids.wide_mask,
            wide_per_row: ids.wide_per_row,
            labels: &[],
        };
        step::logits(&step_weights, &step_rows)
    }

    /// `params` as the plain vectors the hand-written passes read: for scoring, the whole id
    /// tables (copy once, score many chunks); in a training step, the gathered rows.
    pub fn plain_weights(&self, params: &[Tensor]) -> Result<PlainWeights, ModelError> {
        let values = |table: Option<usize>| -> Result<Vec<f32>, ModelError> {
            match table {
                Some(t) => Ok(params[t].flatten_all()?.to_vec1::<f32>()?),
                None => Ok(Vec::new()),
            }
        };
        Ok(PlainWeights {
            layout: self.step_layout(params)?,
            deep: dense_stack(self.deep.params(params))?,
            item_embedding: values(self.item_embedding)?,
            user_embedding: values(self.user_embedding)?,
            wide: values(self.wide)?,
        })
    }

    /// The ids scored rows look up (no id dropout), with their activity summaries when the
    /// model reads them: per task over `supports`, or (without) over each training row's own
    /// history.
    fn scored_ids(
        &self,
        interactions: &Interactions,
        tasks: &TaskSet,
        rows: &[u32],
        supports: Option<RowSupports>,
    ) -> RowIds {
        let mut ids = self.row_ids(interactions, tasks, rows, None);
        if self.reads_activity() {
            ids.activity = match supports {
                Some(RowSupports { task_index, support_of }) => {
                    let mut by_task: std::collections::BTreeMap<u32, Vec<f32>> = Default::default();
                    let mut activity = Vec::with_capacity(rows.len() * self.activity_dim);
                    for &t in task_index {
                        let summary = by_task
                            .entry(t)
                            .or_insert_with(|| support_activity(tasks, interactions, &support_of(t)));
                        activity.extend_from_slice(summary);
                    }
                    activity
                }
                None => self.history_activity(interactions, tasks, rows),
            };
        }
        ids
    }

    /// The row of `user` in the user-id tables: its own if it has training rows, else the
    /// out-of-vocabulary user's (`n_users`).
    fn id_row_of(&self, interactions: &Interactions, tasks: &TaskSet, user: u32) -> u32 {
        if self.known_users(interactions, tasks)[user as usize] {
            user
        } else {
            self.shape.n_users as u32
        }
    }

    /// Whether each user has training rows (`TaskSet::baseline_train_rows`), computed once.
    fn known_users(&self, interactions: &Interactions, tasks: &TaskSet) -> &[bool] {
        self.known_users.get_or_init(|| {
            let mut known = vec![false; self.shape.n_users];
            for &r in &tasks.baseline_train_rows {
                known[interactions.user[r as usize] as usize] = true;
            }
            known
        })
    }

    /// With a serve-time refresh configured, the steps and step size.
    pub fn refresh(&self) -> Option<(usize, f64)> {
        self.refresh.filter(|_| self.user_embedding.is_some())
    }

    /// Logits of rows given their ids and their rows in `params`' id tables (the whole tables
    /// or, in training, the rows a step gathered).
    fn logits_of(
        &self,
        params: &[Tensor],
        features: &Features,
        ids: &RowIds,
        table_rows: &TableRows,
    ) -> Result<Tensor, ModelError> {
        let users = u32_tensor(ids.users.clone())?;
        let items = u32_tensor(ids.items.clone())?;
        let lookup = |table: Option<usize>, rows| {
            table.map(|t| EmbeddingLookup {
                table: &params[t],
                rows,
            })
        };
        let mut x = features.row_inputs(
            &users,
            &items,
            lookup(self.item_embedding, &table_rows.items),
            lookup(self.user_embedding, &table_rows.users),
        )?;
        if self.activity_dim > 0 {
            let n = ids.users.len();
            let activity = Tensor::from_vec(ids.activity.clone(), (n, self.activity_dim), &Device::Cpu)?;
            x = Tensor::cat(&[&x, &activity], 1)?;
        }
        let deep = mlp_forward(self.deep.params(params), &x)?.squeeze(1)?;
        match self.wide {
            Some(w) => {
                let n = ids.users.len();
                let weights = params[w]
                    .index_select(&table_rows.wide, 0)?
                    .reshape((n, ids.wide_per_row))?;
                let mask = Tensor::from_vec(
                    ids.wide_mask.clone(),
                    (n, ids.wide_per_row),
                    &Device::Cpu,
                )?;
                Ok(deep.add(&weights.mul(&mask)?.sum(1)?)?)
            }
            None => Ok(deep),
        }
    }

    /// The ids rows look up: users, items and (wide_deep) the wide weight indices, `per_row`
    /// per row: user id, item id, hashed user x item, then hashed user x tag for each of the
    /// item's tags (padded with masked-out index 0 to the most tags of any item).
    ///
    /// Users without training rows read the out-of-vocabulary user (`n_users`); with
    /// `dropout`, so does each training row with probability `id_dropout`, which trains it.
    fn row_ids(
        &self,
        interactions: &Interactions,
        tasks: &TaskSet,
        rows: &[u32],
        mut dropout: Option<&mut StdRng>,
    ) -> RowIds {
        let users: Vec<u32> = rows.iter().map(|&r| interactions.user[r as usize]).collect();
        let user_ids: Vec<u32> = users
            .iter()
            .map(|&user| {
                let dropped = match dropout.as_deref_mut() {
                    Some(rng) => self.id_dropout > 0.0 && rng.random_bool(self.id_dropout),
                    None => false,
                };
                if dropped {
                    self.shape.n_users as u32
                } else {
                    self.id_row_of(interactions, tasks, user)
                }
            })
            .collect();
        let items: Vec<u32> = rows
            .iter()
            .map(|&r| interactions.item[r as usize])
            .collect();
        let (mut wide, mut wide_mask, mut wide_per_row) = (Vec::new(), Vec::new(), 0);
        if self.wide.is_some() {
            let tags = &tasks.features.item_tags;
            let max_tags = tags.iter().map(Vec::len).max().unwrap_or(0);
            wide_per_row = 3 + max_tags;
            // The user one-hots include the out-of-vocabulary user.
            let (nu, ni, b) = (
                self.shape.n_users as u64 + 1,
                self.shape.n_items as u64,
                self.hash_buckets as u64,
            );
            wide.reserve(rows.len() * wide_per_row);
            wide_mask.reserve(rows.len() * wide_per_row);
            for (&u, &i) in user_ids.iter().zip(&items) {
                let (u, i) = (u as u64, i as u64);
                wide.extend([u, nu + i, nu + ni + hash(u, i, 1) % b].map(|x| x as u32));
                wide_mask.extend([1.0f32; 3]);
                let item_tags = tags.get(i as usize).map(Vec::as_slice).unwrap_or(&[]);
                for k in 0..max_tags {
                    match item_tags.get(k) {
                        Some(&t) => {
                            wide.push((nu + ni + b + hash(u, t as u64, 2) % b) as u32);
                            wide_mask.push(1.0);
                        }
                        None => {
                            wide.push(0);
                            wide_mask.push(0.0);
                        }
                    }
                }
            }
        }
        RowIds {
            activity: Vec::new(),
            users,
            user_ids,
            items,
            wide,
            wide_mask,
            wide_per_row,
        }
    }

    /// The columns of this model's row inputs (the id-embedding widths read from `params`).
    fn step_layout(&self, params: &[Tensor]) -> Result<StepLayout, ModelError> {
        let width = |table: Option<usize>| -> Result<usize, ModelError> {
            match table {
                Some(t) => Ok(params[t].dims2()?.1),
                None => Ok(0),
            }
        };
        Ok(StepLayout {
            user_dim: self.shape.user_dim,
            item_dim: self.shape.item_dim,
            item_embedding_dim: width(self.item_embedding)?,
            user_embedding_dim: width(self.user_embedding)?,
            activity_dim: self.activity_dim,
        })
    }
}

/// A baseline's weights as plain vectors ([`BaselineNet::plain_weights`]): the deep layers and
/// the id tables or their gathered rows (row-major; empty where the model has none).
pub struct PlainWeights {
    layout: StepLayout,
    deep: crate::kernel::DenseStack,
    item_embedding: Vec<f32>,
    user_embedding: Vec<f32>,
    wide: Vec<f32>,
}

impl PlainWeights {
    /// The weights as [`step`]'s passes read them, with the feature tables of `features`.
    fn step_weights<'a>(&'a self, features: &'a FeatureTables) -> StepWeights<'a> {
        StepWeights {
            layout: self.layout,
            user_features: &features.user_features,
            item_features: &features.item_features,
            item_embedding: &self.item_embedding,
            user_embedding: &self.user_embedding,
            wide: &self.wide,
            deep: &self.deep,
        }
    }
}

/// Which task each scored row belongs to, and what a task's support is: what a model that
/// reads activity summaries needs at serving time.
pub struct RowSupports<'a> {
    pub task_index: &'a [u32],
    pub support_of: &'a dyn Fn(u32) -> Vec<u32>,
}

/// The ids a batch of rows looks up (see [`BaselineNet::row_ids`]).
struct RowIds {
    /// `N x activity_dim` activity summaries, when the model reads them (filled by the caller).
    activity: Vec<f32>,
    /// Each row's user (for its features).
    users: Vec<u32>,
    /// Each row's row in the user-id tables: its user, or the out-of-vocabulary user.
    user_ids: Vec<u32>,
    items: Vec<u32>,
    /// `N x wide_per_row` wide weight indices, row-major; empty without wide weights.
    wide: Vec<u32>,
    /// 1 for real entries of `wide`, 0 for tag padding.
    wide_mask: Vec<f32>,
    wide_per_row: usize,
}

/// Rows of each id table that each row (wide: each wide entry) reads, in the tables `params`
/// holds: the ids themselves for whole tables, positions for a step's gathered rows.
struct TableRows {
    items: Tensor,
    users: Tensor,
    wide: Tensor,
}

/// A fixed 64-bit mix of two ids and a salt (splitmix64 finalizer), stable across platforms.
pub(crate) fn hash(a: u64, b: u64, salt: u64) -> u64 {
    let mut z = a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.rotate_left(29)
        ^ salt.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
