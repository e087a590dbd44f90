//! One epoch of a baseline's minibatch training: shuffle the training rows, and per minibatch
//! gather what it reads (ids, activity summaries, the id-table rows brought up to date by lazy
//! Adam), take the gradient through the hand-written step (`step`) and step the optimizer.
//!
//! Owns [`BaselineNet::train_epoch`] and [`TrainingStep`]. Must not decide when to stop (`train`
//! does) nor change the step's maths (`step` does; candle's autograd,
//! [`BaselineNet::autograd_step_loss`], stays its test reference).

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use limaml_data::{Interactions, TaskSet};
use rand::rngs::StdRng;

use super::step::{self, StepRows};
use super::{BaselineNet, RowIds, TableRows};
use crate::error::ModelError;
use crate::inputs::{u32_tensor, Features};
use crate::lazy_adam::{gradient_store, GatheredRows, Optimizers};
use crate::mlp::bce_with_logits;
use crate::params::ParamStore;
use crate::prefetch::{prefetch, prefetch_interactions, prefetch_user_features};

impl BaselineNet {
    /// One pass over `baseline_train_rows` in shuffled minibatches; returns the mean batch loss.
    ///
    /// Each minibatch gathers the id-table rows it reads into small variables that stand in for
    /// the tables, so its gradient and (lazy Adam) update touch only those rows: a step costs
    /// O(batch size), not O(users + items). The loss and gradients come from the hand-written
    /// step ([`BaselineNet::step_gradients`]); candle's autograd
    /// ([`BaselineNet::autograd_step_loss`]) is their test reference.
    pub fn train_epoch(
        &self,
        store: &ParamStore,
        optimizer: &mut Optimizers,
        interactions: &Interactions,
        tasks: &TaskSet,
        batch_size: usize,
        rng: &mut StdRng,
    ) -> Result<f64, ModelError> {
        let mut rows = tasks.baseline_train_rows.clone();
        crate::shuffle::shuffle(&mut rows, rng);
        let mut total = 0.0;
        let mut batches = 0;
        let minibatches: Vec<&[u32]> = rows.chunks(batch_size).collect();
        for (k, batch) in minibatches.iter().enumerate() {
            // Shuffled rows over tables of millions are cache misses: the rows' ids and labels
            // are brought in two minibatches ahead, and then (their ids now at hand) what the
            // next minibatch reads of each user.
            if let Some(later) = minibatches.get(k + 2) {
                prefetch_interactions(interactions, later);
            }
            if let Some(next) = minibatches.get(k + 1) {
                self.prefetch_user_rows(optimizer, interactions, tasks, next);
            }
            let step = self.gather_step(optimizer, interactions, tasks, batch, rng)?;
            let (loss, grads) = self.step_gradients(store, tasks, &step)?;
            optimizer.step_with(&grads, &step.gathered)?;
            total += loss;
            batches += 1;
        }
        Ok(total / batches.max(1) as f64)
    }

    /// Prefetch hints for what a minibatch of `batch` reads of each row's user: its feature row,
    /// whether it is known, and its rows in the user-id tables (the user embedding, the wide
    /// user one-hot). Changes nothing.
    fn prefetch_user_rows(&self, optimizer: &Optimizers, interactions: &Interactions, tasks: &TaskSet, batch: &[u32]) {
        let known = self.known_users(interactions, tasks);
        for &r in batch {
            let user = interactions.user[r as usize];
            prefetch_user_features(&tasks.features, user);
            prefetch(known, user as usize);
        }
        let users = || batch.iter().map(|&r| interactions.user[r as usize]);
        for table in self.user_embedding.into_iter().chain(self.wide) {
            optimizer.prefetch_rows(table, users());
        }
    }

    /// What one training step on the minibatch `batch` reads: its ids (drawing the id dropout
    /// from `rng`), activity summaries and the id-table rows it reads, gathered (brought up to
    /// date) by `optimizer`.
    pub fn gather_step(
        &self,
        optimizer: &mut Optimizers,
        interactions: &Interactions,
        tasks: &TaskSet,
        batch: &[u32],
        rng: &mut StdRng,
    ) -> Result<TrainingStep, ModelError> {
        let mut ids = self.row_ids(interactions, tasks, batch, Some(rng));
        if self.reads_activity() {
            ids.activity = self.history_activity(interactions, tasks, batch);
        }
        let mut gathered = Vec::new();
        let mut gather =
            |table: Option<usize>, ids: &[u32], is_real: &dyn Fn(usize) -> bool| -> Result<Vec<u32>, ModelError> {
                let Some(t) = table else {
                    return Ok(Vec::new());
                };
                let real_ids = ids.iter().enumerate().filter(|(k, _)| is_real(*k)).map(|(_, &id)| id);
                let rows = optimizer.gather(t, real_ids)?;
                let local = rows.localize(ids, is_real);
                gathered.push(rows);
                Ok(local)
            };
        let items = gather(self.item_embedding, &ids.items, &|_| true)?;
        let users = gather(self.user_embedding, &ids.user_ids, &|_| true)?;
        let wide = gather(self.wide, &ids.wide, &|k| ids.wide_mask[k] > 0.0)?;
        let labels = batch.iter().map(|&r| interactions.label[r as usize]).collect();
        Ok(TrainingStep {
            ids,
            local_rows: LocalRows { items, users, wide },
            gathered,
            labels,
        })
    }

    /// The parameters a step reads: `store`'s, with each gathered table replaced by its
    /// gathered rows.
    fn step_params(&self, store: &ParamStore, step: &TrainingStep) -> Vec<Tensor> {
        let mut params = store.tensors();
        for g in &step.gathered {
            params[g.table] = g.values.as_tensor().clone();
        }
        params
    }

    /// The step's mean logistic loss as a candle graph over `store`'s variables and the
    /// gathered rows (the reference for [`BaselineNet::step_gradients`]).
    pub fn autograd_step_loss(
        &self,
        store: &ParamStore,
        features: &Features,
        step: &TrainingStep,
    ) -> Result<Tensor, ModelError> {
        let params = self.step_params(store, step);
        let table_rows = TableRows {
            items: u32_tensor(step.local_rows.items.clone())?,
            users: u32_tensor(step.local_rows.users.clone())?,
            wide: u32_tensor(step.local_rows.wide.clone())?,
        };
        let logits = self.logits_of(&params, features, &step.ids, &table_rows)?;
        let labels = Tensor::from_slice(&step.labels, step.labels.len(), &Device::Cpu)?;
        Ok(bce_with_logits(&logits, &labels)?.mean_all()?)
    }

    /// The step's mean logistic loss and its gradients through the hand-written pass
    /// ([`step::train_step`]), keyed as [`Optimizers::step_with`] reads them: the dense
    /// layers by their variables, the tables by their gathered rows.
    pub fn step_gradients(
        &self,
        store: &ParamStore,
        tasks: &TaskSet,
        step: &TrainingStep,
    ) -> Result<(f64, GradStore), ModelError> {
        // The dense layers and the gathered table rows, as plain vectors.
        let plain = self.plain_weights(&self.step_params(store, step))?;
        let weights = plain.step_weights(&tasks.features);
        let deep = &plain.deep;
        let ids = &step.ids;
        let rows = StepRows {
            users: &ids.users,
            items: &ids.items,
            item_rows: &step.local_rows.items,
            user_rows: &step.local_rows.users,
            activity: &ids.activity,
            wide: &step.local_rows.wide,
            wide_mask: &ids.wide_mask,
            wide_per_row: ids.wide_per_row,
            labels: &step.labels,
        };
        let gradients = step::train_step(&weights, &rows);
        let mut grads = gradient_store()?;
        for layer in 0..deep.n_layers() {
            let (fan_in, fan_out) = (deep.widths[layer], deep.widths[layer + 1]);
            let (w, b) = (self.deep.first + 2 * layer, self.deep.first + 2 * layer + 1);
            let weight = Tensor::from_slice(&gradients.deep.weights[layer], (fan_in, fan_out), &Device::Cpu)?;
            let bias = Tensor::from_slice(&gradients.deep.biases[layer], (1, fan_out), &Device::Cpu)?;
            grads.insert(store.vars()[w].as_tensor(), weight);
            grads.insert(store.vars()[b].as_tensor(), bias);
        }
        let table_gradients = [
            (self.item_embedding, gradients.item_embedding),
            (self.user_embedding, gradients.user_embedding),
            (self.wide, gradients.wide),
        ];
        for (table, gradient) in table_gradients {
            let Some(table) = table else { continue };
            let g = step.gathered.iter().find(|g| g.table == table).expect("every table of the model was gathered");
            let shape = g.values.as_tensor().shape().clone();
            grads.insert(g.values.as_tensor(), Tensor::from_vec(gradient, shape, &Device::Cpu)?);
        }
        Ok((gradients.loss, grads))
    }
}

/// What one training step on a minibatch reads ([`BaselineNet::gather_step`]).
pub struct TrainingStep {
    ids: RowIds,
    local_rows: LocalRows,
    /// The id-table rows the minibatch reads (item, user, wide: those the model has).
    pub gathered: Vec<GatheredRows>,
    labels: Vec<f32>,
}

/// Positions in a step's gathered rows of each row's item and user (wide: of each wide
/// entry; padding points at 0). Empty for tables the model lacks.
struct LocalRows {
    items: Vec<u32>,
    users: Vec<u32>,
    wide: Vec<u32>,
}
