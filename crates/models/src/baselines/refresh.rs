//! The baselines' serve-time refresh (`refresh_steps`): before a task is scored, its user's
//! embedding row takes a few SGD steps on the task's support, every other weight frozen; the
//! cheap competitor of LiMAML's regenerated meta embeddings. Must not train the model itself.

use candle_core::{Device, Tensor, Var};
use limaml_data::{Interactions, TaskSet};

use super::{BaselineNet, TableRows};
use crate::error::ModelError;
use crate::inputs::{u32_tensor, Features};
use crate::mlp::bce_with_logits;

/// Tasks refreshed together in [`BaselineNet::refreshed_logits`].
const REFRESH_CHUNK: usize = 1024;

impl BaselineNet {
    /// Logits of query rows (`rows[k]` of task `task_index[k]`) after the serve-time refresh:
    /// each task's user embedding row (the out-of-vocabulary row for users without training
    /// rows) takes `steps` SGD steps on the mean loss of `supports(task)`, every other weight
    /// frozen. Tasks are refreshed independently (each has its own copy of the row).
    #[allow(clippy::too_many_arguments)]
    pub fn refreshed_logits(
        &self,
        params: &[Tensor],
        features: &Features,
        interactions: &Interactions,
        tasks: &TaskSet,
        rows: &[u32],
        task_index: &[u32],
        supports: &dyn Fn(u32) -> Vec<u32>,
    ) -> Result<Vec<f32>, ModelError> {
        let (Some((steps, rate)), Some(table)) = (self.refresh, self.user_embedding) else {
            return Ok(self.logits(params, features, interactions, tasks, rows, None)?.to_vec1::<f32>()?);
        };
        let mut distinct: Vec<u32> = task_index.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let position = |t: u32| distinct.binary_search(&t).expect("task is in distinct") as u32;
        // Each task's starting row: its user's own, or the out-of-vocabulary user's.
        let start_rows: Vec<u32> =
            distinct.iter().map(|&t| self.id_row_of(interactions, tasks, tasks.tasks[t as usize].entity)).collect();
        // Tasks refresh independently (their own rows, their own mean loss), so chunks of
        // tasks bound the memory without changing any result.
        let mut refreshed = Vec::new();
        for (chunk_tasks, chunk_rows) in distinct.chunks(REFRESH_CHUNK).zip(start_rows.chunks(REFRESH_CHUNK)) {
            let start = params[table].index_select(&u32_tensor(chunk_rows.to_vec())?, 0)?;
            let support_rows: Vec<Vec<u32>> = chunk_tasks.iter().map(|&t| supports(t)).collect();
            refreshed.push(self.refresh_rows(params, features, interactions, tasks, table, start, &support_rows, steps, rate)?);
        }
        let mut local = params.to_vec();
        local[table] = Tensor::cat(&refreshed, 0)?;
        let mut out = Vec::with_capacity(rows.len());
        for (chunk, chunk_tasks) in rows.chunks(8192).zip(task_index.chunks(8192)) {
            let ids = self.row_ids(interactions, tasks, chunk, None);
            let table_rows = TableRows {
                items: u32_tensor(ids.items.clone())?,
                users: u32_tensor(chunk_tasks.iter().map(|&t| position(t)).collect())?,
                wide: u32_tensor(ids.wide.clone())?,
            };
            out.extend(self.logits_of(&local, features, &ids, &table_rows)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }

    /// `steps` SGD steps at `rate` on user rows `start` (one per task, `T x d`), each on the
    /// mean loss of its task's `support_rows`, every other weight of `params` frozen.
    #[allow(clippy::too_many_arguments)]
    fn refresh_rows(
        &self,
        params: &[Tensor],
        features: &Features,
        interactions: &Interactions,
        tasks: &TaskSet,
        table: usize,
        start: Tensor,
        support_rows: &[Vec<u32>],
        steps: usize,
        rate: f64,
    ) -> Result<Tensor, ModelError> {
        let rows_of_tasks = Var::from_tensor(&start)?;
        let flat: Vec<u32> = support_rows.iter().flatten().copied().collect();
        if flat.is_empty() {
            return Ok(start);
        }
        let owner: Vec<u32> = support_rows
            .iter()
            .enumerate()
            .flat_map(|(k, s)| std::iter::repeat_n(k as u32, s.len()))
            .collect();
        let weights: Vec<f32> = support_rows
            .iter()
            .flat_map(|s| std::iter::repeat_n(1.0 / s.len().max(1) as f32, s.len()))
            .collect();
        let ids = self.row_ids(interactions, tasks, &flat, None);
        let table_rows = TableRows {
            items: u32_tensor(ids.items.clone())?,
            users: u32_tensor(owner)?,
            wide: u32_tensor(ids.wide.clone())?,
        };
        let labels: Vec<f32> = flat.iter().map(|&r| interactions.label[r as usize]).collect();
        let labels = Tensor::from_vec(labels, flat.len(), &Device::Cpu)?;
        let weights = Tensor::from_vec(weights, flat.len(), &Device::Cpu)?;
        let mut local = params.to_vec();
        for _ in 0..steps {
            local[table] = rows_of_tasks.as_tensor().clone();
            let logits = self.logits_of(&local, features, &ids, &table_rows)?;
            let loss = bce_with_logits(&logits, &labels)?.mul(&weights)?.sum_all()?;
            let grads = loss.backward()?;
            if let Some(g) = grads.get(rows_of_tasks.as_tensor()) {
                rows_of_tasks.set(&(rows_of_tasks.as_tensor() - g.affine(rate, 0.0)?)?)?;
            }
        }
        Ok(rows_of_tasks.as_tensor().detach())
    }

}
