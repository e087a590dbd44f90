//! The network of the three baselines (`global`, `id_embedding`, `wide_deep`): a
//! [`BaselineNet`] with its parameters, trained by minibatch Adam on
//! `TaskSet::baseline_train_rows` and scored in chunks through the hand-written forward pass
//! (through candle, after a serve-time refresh of the user rows, when the method has one). Must not choose the layout (`baselines` does).

use candle_core::Tensor;

use super::{EpochInputs, EpochStep, Network, ScoreInputs};
use crate::baselines::{BaselineNet, RowSupports};
use crate::error::ModelError;
use crate::limaml::latest_support;
use crate::mlp::sigmoid;
use crate::params::ParamStore;

/// Rows scored per forward pass.
const CHUNK: usize = 8192;

pub(crate) struct BaselineNetwork {
    pub net: BaselineNet,
    pub store: ParamStore,
}

impl Network for BaselineNetwork {
    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn embedding_tables(&self) -> Vec<usize> {
        self.net.embedding_tables()
    }

    fn epoch_step<'a>(&'a self, inputs: &'a EpochInputs<'a>) -> Result<EpochStep<'a>, ModelError> {
        if inputs.tasks.baseline_train_rows.is_empty() {
            return Err(ModelError::NoTrainingData("baseline_train_rows is empty".into()));
        }
        Ok(Box::new(|opt, rng| {
            self.net.train_epoch(
                &self.store,
                opt,
                inputs.interactions,
                inputs.tasks,
                inputs.train.batch_size,
                rng,
            )
        }))
    }

    fn score(&self, inputs: &ScoreInputs<'_>, rows: &[u32], task_index: &[u32]) -> Result<Vec<f32>, ModelError> {
        let ScoreInputs { features, data, interactions, tasks, max_support } = *inputs;
        let mut scores = Vec::with_capacity(rows.len());
        // What a serving-time refresh or activity summary may read of a task: its capped support.
        let support_of = |t: u32| latest_support(data, &tasks.tasks[t as usize].support, max_support);
        let params: Vec<Tensor> = self.store.tensors().iter().map(Tensor::detach).collect();
        if self.net.refresh().is_some() {
            let logits =
                self.net.refreshed_logits(&params, features, interactions, tasks, rows, task_index, &support_of)?;
            scores.extend(logits.into_iter().map(sigmoid));
            return Ok(scores);
        }
        let weights = self.net.plain_weights(&params)?;
        for (chunk, chunk_tasks) in rows.chunks(CHUNK).zip(task_index.chunks(CHUNK)) {
            let supports =
                self.net.reads_activity().then_some(RowSupports { task_index: chunk_tasks, support_of: &support_of });
            let logits = self.net.forward_logits(&weights, interactions, tasks, chunk, supports);
            scores.extend(logits.into_iter().map(sigmoid));
        }
        Ok(scores)
    }
}
