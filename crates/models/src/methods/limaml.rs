//! `limaml`: a Meta Block adapted per task by MAML feeding a shared Global Block
//! ([`LimamlNet`]), meta-trained over tasks; scoring adapts the Meta Block on each task's
//! (capped) support and serves through the Global Block with the meta embedding. Must not hold
//! the network itself (`crate::limaml` does).

use candle_core::Tensor;
use limaml_data::Interactions;
use rand::rngs::StdRng;

use super::{EpochInputs, EpochStep, Method, Network, ScoreInputs};
use crate::config::MethodConfig;
use crate::error::ModelError;
use crate::inputs::{DataShape, Features};
use crate::limaml::{latest_support, InnerGradients, LimamlNet, TaskRows};
use crate::mlp::sigmoid;
use crate::params::ParamStore;

pub(crate) struct Limaml;

impl Method for Limaml {
    fn kind(&self) -> &'static str {
        "limaml"
    }

    /// Meta-training's task groups and the passes over every entity run in parallel chunks.
    fn trains_on_every_core(&self) -> bool {
        true
    }

    fn create(&self, config: &MethodConfig, shape: DataShape, rng: &mut StdRng) -> Result<Box<dyn Network>, ModelError> {
        let MethodConfig::Limaml(c) = config else { unreachable!("the registry gives limaml its own config") };
        let (net, store) = LimamlNet::create(c, shape, rng)?;
        Ok(Box::new(LimamlNetwork { net, store }))
    }
}

struct LimamlNetwork {
    net: LimamlNet,
    store: ParamStore,
}

impl Network for LimamlNetwork {
    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn embedding_tables(&self) -> Vec<usize> {
        self.net.embedding_tables()
    }

    fn evaluation_support_tasks(&self) -> bool {
        self.net.config.evaluation_support_tasks
    }

    fn epoch_step<'a>(&'a self, inputs: &'a EpochInputs<'a>) -> Result<EpochStep<'a>, ModelError> {
        if inputs.data.training_tasks.is_empty() {
            return Err(ModelError::NoTrainingData("no meta-train task has query rows".into()));
        }
        let gradients =
            if self.net.config.second_order { InnerGradients::SecondOrder } else { InnerGradients::FirstOrder };
        let train = inputs.train;
        Ok(Box::new(move |opt, rng| {
            self.net.train_epoch(&self.store, opt, inputs.data, train.max_support, train.max_query, gradients, rng)
        }))
    }

    fn score(&self, inputs: &ScoreInputs<'_>, rows: &[u32], task_index: &[u32]) -> Result<Vec<f32>, ModelError> {
        let ScoreInputs { features, data, interactions, tasks, max_support } = *inputs;
        let mut distinct: Vec<u32> = task_index.to_vec();
        distinct.dedup();
        distinct.sort_unstable();
        distinct.dedup();
        let supports: Vec<Vec<u32>> = distinct
            .iter()
            .map(|&t| latest_support(data, &tasks.tasks[t as usize].support, max_support))
            .collect();
        let members: Vec<TaskRows> = distinct
            .iter()
            .zip(&supports)
            .map(|(&t, support)| TaskRows { entity: tasks.tasks[t as usize].entity, hide_id: false, support, query: &[] })
            .collect();
        let params = self.store.tensors();
        let embeddings = self.net.adapted_meta_embeddings(&params, data, &members)?;
        let m = self.net.config.meta_embedding_dim;
        let position = |t: u32| distinct.binary_search(&t).expect("task is in distinct");
        let per_row: Vec<f32> = task_index
            .iter()
            .flat_map(|&t| embeddings[position(t) * m..(position(t) + 1) * m].to_vec())
            .collect();
        score_with_embeddings(&self.net, &params, features, interactions, rows, &per_row)
    }

    fn meta(&self) -> Option<(&LimamlNet, &ParamStore)> {
        Some((&self.net, &self.store))
    }
}

/// Serving: Global Block probabilities of rows given each row's meta embedding (`rows.len() x m`).
pub(crate) fn score_with_embeddings(
    net: &LimamlNet,
    params: &[Tensor],
    features: &Features,
    interactions: &Interactions,
    rows: &[u32],
    meta_per_row: &[f32],
) -> Result<Vec<f32>, ModelError> {
    let logits = net.logits_with_embeddings(params, features, interactions, rows, meta_per_row)?;
    let scores = logits.into_iter().map(sigmoid).collect();
    Ok(scores)
}
