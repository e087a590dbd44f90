//! Model inputs built from the data contract: feature tables as tensors, per-row input rows,
//! entity/counterpart views of a row, and data consistency checks.
//!
//! Owns [`DataShape`] (what a trained model's shapes depend on), [`Features`],
//! [`RowInputTables`] (the same input rows gathered from borrowed values, without tensors) and
//! [`check_data`]. Must not hold parameters or training logic.

use std::ops::Range;

use candle_core::{Device, Tensor};
use limaml_data::{FeatureTables, Interactions, TaskEntity, TaskSet};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The shapes a model is built for; a model only serves task sets of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataShape {
    pub entity: TaskEntity,
    pub n_users: usize,
    pub n_items: usize,
    pub user_dim: usize,
    pub item_dim: usize,
    pub n_tags: usize,
}

impl DataShape {
    pub fn of(tasks: &TaskSet) -> DataShape {
        let f = &tasks.features;
        DataShape {
            entity: tasks.entity,
            n_users: f.n_users,
            n_items: f.n_items,
            user_dim: f.user_dim,
            item_dim: f.item_dim,
            n_tags: f.n_tags,
        }
    }

    /// Number of task entities (users for user tasks, items for item tasks).
    pub fn n_entities(&self) -> usize {
        match self.entity {
            TaskEntity::User => self.n_users,
            TaskEntity::Item => self.n_items,
        }
    }

    /// Width of the task entity's own features.
    pub fn entity_dim(&self) -> usize {
        match self.entity {
            TaskEntity::User => self.user_dim,
            TaskEntity::Item => self.item_dim,
        }
    }

    /// Width of the counterpart's features (item features for user tasks).
    pub fn counterpart_dim(&self) -> usize {
        match self.entity {
            TaskEntity::User => self.item_dim,
            TaskEntity::Item => self.user_dim,
        }
    }
}

/// Row `r`'s task entity (its user for user tasks, its item for item tasks).
pub fn entity_of_row(entity: TaskEntity, interactions: &Interactions, row: usize) -> u32 {
    match entity {
        TaskEntity::User => interactions.user[row],
        TaskEntity::Item => interactions.item[row],
    }
}

/// Row `r`'s counterpart (its item for user tasks, its user for item tasks).
pub fn counterpart_of_row(entity: TaskEntity, interactions: &Interactions, row: usize) -> u32 {
    match entity {
        TaskEntity::User => interactions.item[row],
        TaskEntity::Item => interactions.user[row],
    }
}

/// An id-embedding lookup: a table (the whole table, or the rows a training step gathered) and
/// the row of each input row in it.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingLookup<'a> {
    pub table: &'a Tensor,
    pub rows: &'a Tensor,
}

/// The feature tables as tensors (`None` for a zero-width table).
#[derive(Debug, Clone)]
pub struct Features {
    pub user: Option<Tensor>,
    pub item: Option<Tensor>,
}

impl Features {
    pub fn new(tables: &FeatureTables) -> Result<Features, ModelError> {
        let table =
            |values: &[f32], rows: usize, dim: usize| -> Result<Option<Tensor>, ModelError> {
                if dim == 0 {
                    return Ok(None);
                }
                Ok(Some(Tensor::from_slice(values, (rows, dim), &Device::Cpu)?))
            };
        Ok(Features {
            user: table(&tables.user_features, tables.n_users, tables.user_dim)?,
            item: table(&tables.item_features, tables.n_items, tables.item_dim)?,
        })
    }

    /// Input rows `N x d` of the row-level networks: `[user features, item features,
    /// item-id embedding, user-id embedding]`, absent parts skipped. `users` and `items` index
    /// the feature tables; each embedding comes with its own row indices, since training looks
    /// rows up in the few rows a step gathered (`lazy_adam::GatheredRows`), not in the table.
    pub fn row_inputs(
        &self,
        users: &Tensor,
        items: &Tensor,
        item_embedding: Option<EmbeddingLookup>,
        user_embedding: Option<EmbeddingLookup>,
    ) -> Result<Tensor, ModelError> {
        let mut parts = Vec::with_capacity(4);
        if let Some(t) = &self.user {
            parts.push(t.index_select(users, 0)?);
        }
        if let Some(t) = &self.item {
            parts.push(t.index_select(items, 0)?);
        }
        for lookup in [item_embedding, user_embedding].into_iter().flatten() {
            parts.push(lookup.table.index_select(lookup.rows, 0)?);
        }
        if parts.is_empty() {
            return Err(ModelError::ShapeMismatch(
                "the model has no row inputs (no features, no id embeddings)".into(),
            ));
        }
        Ok(Tensor::cat(&parts, 1)?)
    }
}

/// A contiguous CPU `f32` tensor's values, borrowed (its storage stays read-locked meanwhile).
pub struct TensorValues<'a> {
    storage: candle_core::StorageRef<'a>,
    range: Range<usize>,
}

impl<'a> TensorValues<'a> {
    pub fn of(tensor: &'a Tensor) -> Result<TensorValues<'a>, ModelError> {
        let (storage, layout) = tensor.storage_and_layout();
        let range = layout
            .contiguous_offsets()
            .map(|(start, end)| start..end)
            .ok_or_else(|| {
                ModelError::ShapeMismatch(format!("a tensor {:?} to read in place is not contiguous", tensor.dims()))
            })?;
        let values = TensorValues { storage, range };
        values.checked()?;
        Ok(values)
    }

    fn checked(&self) -> Result<&[f32], ModelError> {
        match &*self.storage {
            candle_core::Storage::Cpu(cpu) => Ok(&cpu.as_slice::<f32>()?[self.range.clone()]),
            _ => Err(ModelError::ShapeMismatch("a tensor to read in place is not on the CPU".into())),
        }
    }

    pub fn as_slice(&self) -> &[f32] {
        self.checked().expect("checked when borrowed")
    }

    /// Whether both borrow the same storage, whatever their ranges: a tensor of it locked for
    /// writing (an in-place update) would wait for this borrow to end.
    pub fn shares_storage_with(&self, other: &TensorValues) -> bool {
        std::ptr::eq(&*self.storage, &*other.storage)
    }
}

/// The tables of [`Features::row_inputs`] (user features, item features, the item-id
/// embedding), borrowed as plain values: input rows gathered without tensors (three copies of
/// every row fewer than `index_select`, `cat` and `to_vec1`).
pub struct RowInputTables<'a> {
    parts: Vec<(TensorValues<'a>, usize, RowIndex)>,
}

/// Which row of a table an input row reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowIndex {
    User,
    Item,
    /// The item's row in the item-id embedding table (its id, or its row in the few rows a
    /// training step gathered).
    ItemEmbedding,
}

impl<'a> RowInputTables<'a> {
    pub fn new(features: &'a Features, item_embedding: Option<&'a Tensor>) -> Result<RowInputTables<'a>, ModelError> {
        let mut parts = Vec::with_capacity(3);
        for (table, index) in [(&features.user, RowIndex::User), (&features.item, RowIndex::Item)] {
            if let Some(t) = table {
                parts.push((TensorValues::of(t)?, t.dim(1)?, index));
            }
        }
        if let Some(t) = item_embedding {
            parts.push((TensorValues::of(t)?, t.dim(1)?, RowIndex::ItemEmbedding));
        }
        Ok(RowInputTables { parts })
    }

    /// Width of a gathered row.
    pub fn width(&self) -> usize {
        self.parts.iter().map(|(_, dim, _)| dim).sum()
    }

    /// Writes the input rows of interaction rows `rows` (`rows.len() x width`) into `out`: the
    /// values [`Features::row_inputs`] concatenates for them. The item-id embedding is looked
    /// up at `embedding_rows[k]` for row `k`, or at the item's id without them.
    pub fn gather(&self, interactions: &Interactions, rows: &[u32], embedding_rows: Option<&[u32]>, out: &mut [f32]) {
        let parts: Vec<(&[f32], usize, RowIndex)> = self.parts.iter().map(|(v, dim, index)| (v.as_slice(), *dim, *index)).collect();
        let mut at = 0;
        for (k, &r) in rows.iter().enumerate() {
            let (user, item) = (interactions.user[r as usize] as usize, interactions.item[r as usize] as usize);
            for &(values, dim, index) in &parts {
                let row = match index {
                    RowIndex::User => user,
                    RowIndex::Item => item,
                    RowIndex::ItemEmbedding => embedding_rows.map_or(item, |e| e[k] as usize),
                };
                out[at..at + dim].copy_from_slice(&values[row * dim..(row + 1) * dim]);
                at += dim;
            }
        }
    }
}

/// Width of [`Features::row_inputs`].
pub fn row_input_dim(
    shape: &DataShape,
    item_embedding_dim: usize,
    user_embedding_dim: usize,
) -> usize {
    shape.user_dim + shape.item_dim + item_embedding_dim + user_embedding_dim
}

pub fn u32_tensor(values: Vec<u32>) -> Result<Tensor, ModelError> {
    let n = values.len();
    Ok(Tensor::from_vec(values, n, &Device::Cpu)?)
}

/// Checks that the task set and the interactions agree: every row index, user and item in range,
/// feature tables of the declared sizes.
pub fn check_data(interactions: &Interactions, tasks: &TaskSet) -> Result<(), ModelError> {
    let f = &tasks.features;
    let n = interactions.len();
    let bad = |m: String| Err(ModelError::InconsistentData(m));
    if interactions.user.len() != n
        || interactions.item.len() != n
        || interactions.timestamp.len() != n
    {
        return bad("interaction columns have different lengths".into());
    }
    if f.user_features.len() != f.n_users * f.user_dim
        || f.item_features.len() != f.n_items * f.item_dim
    {
        return bad("feature tables do not match n_users x user_dim / n_items x item_dim".into());
    }
    if f.item_tags.len() != f.n_items && !f.item_tags.is_empty() {
        return bad(format!(
            "item_tags has {} entries for {} items",
            f.item_tags.len(),
            f.n_items
        ));
    }
    if f.item_tags
        .iter()
        .flatten()
        .any(|&t| t as usize >= f.n_tags)
    {
        return bad("an item tag is >= n_tags".into());
    }
    if let Some(r) = interactions
        .user
        .iter()
        .position(|&u| u as usize >= f.n_users)
    {
        return bad(format!(
            "row {r}: user {} >= n_users {}",
            interactions.user[r], f.n_users
        ));
    }
    if let Some(r) = interactions
        .item
        .iter()
        .position(|&i| i as usize >= f.n_items)
    {
        return bad(format!(
            "row {r}: item {} >= n_items {}",
            interactions.item[r], f.n_items
        ));
    }
    let n_entities = DataShape::of(tasks).n_entities();
    for (t, task) in tasks.tasks.iter().enumerate() {
        if task.entity as usize >= n_entities {
            return bad(format!("task {t}: entity {} out of range", task.entity));
        }
        let rows = task
            .support
            .iter()
            .chain(&task.query)
            .chain(task.stale_support.iter().flatten());
        for &r in rows {
            if r as usize >= n {
                return bad(format!("task {t}: row {r} >= {n} interactions"));
            }
            if entity_of_row(tasks.entity, interactions, r as usize) != task.entity {
                return bad(format!("task {t}: row {r} belongs to another entity"));
            }
        }
    }
    if let Some(&r) = tasks.baseline_train_rows.iter().find(|&&r| r as usize >= n) {
        return bad(format!("baseline_train_rows: row {r} >= {n} interactions"));
    }
    Ok(())
}

/// `ln(1 + n)`-scaled activity summary of a support set (what LiMAML's Meta Block and the
/// `global` model with `activity_features` read): mean counterpart features of the positive
/// rows, of all rows, the positive rate, `ln(1 + n) / 5`; `2 * counterpart_dim + 2` wide.
pub fn support_activity(tasks: &TaskSet, interactions: &Interactions, support: &[u32]) -> Vec<f32> {
    let f = &tasks.features;
    let entity = tasks.entity;
    let (table, dim) = match entity {
        limaml_data::TaskEntity::User => (&f.item_features, f.item_dim),
        limaml_data::TaskEntity::Item => (&f.user_features, f.user_dim),
    };
    let mut positive_mean = vec![0.0f32; dim];
    let mut all_mean = vec![0.0f32; dim];
    let mut positives = 0usize;
    for &r in support {
        let c = counterpart_of_row(entity, interactions, r as usize) as usize;
        let row = &table[c * dim..(c + 1) * dim];
        let positive = interactions.label[r as usize] > 0.5;
        positives += positive as usize;
        for k in 0..dim {
            all_mean[k] += row[k];
            if positive {
                positive_mean[k] += row[k];
            }
        }
    }
    positive_mean
        .iter_mut()
        .for_each(|x| *x /= positives.max(1) as f32);
    all_mean
        .iter_mut()
        .for_each(|x| *x /= support.len().max(1) as f32);
    let rate = positives as f32 / support.len().max(1) as f32;
    let mut out = positive_mean;
    out.extend(all_mean);
    out.push(rate);
    out.push((1.0 + support.len() as f32).ln() / 5.0);
    out
}
