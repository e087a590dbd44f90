//! The methods, one file each behind [`Method`], and their registry ([`METHODS`]).
//!
//! A method turns its `[methods.<name>]` configuration into a [`Network`]: its parameters, the
//! id tables the optimizer steps lazily, one training epoch, and how it scores rows. `train`
//! drives every network through the same epoch loop and early stopping; a method that trains
//! otherwise (`logistic`'s strength search, `command`'s program) overrides [`Method::train`],
//! and one without a network (`command`) also [`Method::predict`]. Adding a method: a
//! `MethodConfig` variant, one file here, one line in [`METHODS`].
//!
//! Must not drive epochs or decide when to stop (`train` does), nor compute metrics (`eval`).

mod baseline_network;
mod command;
mod global;
mod id_embedding;
mod limaml;
mod logistic;
mod wide_deep;

pub(crate) use self::limaml::score_with_embeddings;

use limaml_data::{Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;

use crate::config::{MethodConfig, TrainConfig};
use crate::embeddings::MetaEmbeddingTable;
use crate::error::ModelError;
use crate::eval::Predictions;
use crate::inputs::{DataShape, Features};
use crate::lazy_adam::Optimizers;
use crate::limaml::{LimamlData, LimamlNet};
use crate::params::ParamStore;
use crate::train::{EpochRecord, TrainedModel};

/// Every method, one line each; [`method_for`] finds a configuration's by its `kind`.
pub(crate) static METHODS: &[&dyn Method] = &[
    &global::Global,
    &id_embedding::IdEmbedding,
    &wide_deep::WideDeep,
    &limaml::Limaml,
    &logistic::Logistic,
    &command::Command,
];

/// The method of `config` (by its `kind` tag).
pub(crate) fn method_for(config: &MethodConfig) -> &'static dyn Method {
    let kind = config.kind_name();
    *METHODS.iter().find(|m| m.kind() == kind).unwrap_or_else(|| panic!("method `{kind}` is not registered"))
}

/// One training epoch of a network; returns its mean loss.
pub(crate) type EpochStep<'a> = Box<dyn FnMut(&mut Optimizers, &mut StdRng) -> Result<f64, ModelError> + Send + 'a>;

/// What one epoch of training reads.
pub(crate) struct EpochInputs<'a> {
    pub train: &'a TrainConfig,
    pub interactions: &'a Interactions,
    pub tasks: &'a TaskSet,
    pub data: &'a LimamlData<'a>,
}

/// What scoring rows reads.
pub(crate) struct ScoreInputs<'a> {
    pub features: &'a Features,
    pub data: &'a LimamlData<'a>,
    pub interactions: &'a Interactions,
    pub tasks: &'a TaskSet,
    /// At most this many support rows per task are read at serving (the latest).
    pub max_support: usize,
}

/// A method's parameters and layout, ready to train or to score.
pub(crate) trait Network {
    fn store(&self) -> &ParamStore;
    /// Indices (in the store) of the id tables the optimizer steps lazily.
    fn embedding_tables(&self) -> Vec<usize> {
        Vec::new()
    }
    /// Whether LiMAML's training tasks include the evaluation entities' supports (the data
    /// every pass reads is built with it).
    fn evaluation_support_tasks(&self) -> bool {
        false
    }
    /// One epoch of training, or an error when there is nothing to train on.
    fn epoch_step<'a>(&'a self, inputs: &'a EpochInputs<'a>) -> Result<EpochStep<'a>, ModelError>;
    /// Probabilities of query rows (`rows[k]` of task `task_index[k]`).
    fn score(&self, inputs: &ScoreInputs<'_>, rows: &[u32], task_index: &[u32]) -> Result<Vec<f32>, ModelError>;
    /// The Meta Block, for meta-embedding export and serving; `None` for methods without one.
    fn meta(&self) -> Option<(&LimamlNet, &ParamStore)> {
        None
    }
}

/// One kind of method.
pub(crate) trait Method: Sync {
    /// The `kind` tag it implements.
    fn kind(&self) -> &'static str;

    /// Whether its training spreads over every core (the calling thread's pool, `crate::pool`)
    /// rather than running on one thread. The local executor starts such a stage after the
    /// one-thread stages ready with it, so that it fills the cores they leave idle at the end
    /// of a run instead of competing with them.
    fn trains_on_every_core(&self) -> bool {
        false
    }

    /// Its network's parameters for `shape`, drawn from `rng`.
    fn create(&self, config: &MethodConfig, shape: DataShape, rng: &mut StdRng) -> Result<Box<dyn Network>, ModelError>;

    /// Trains a model: by default one network through the shared epoch loop.
    fn train(
        &self,
        config: &MethodConfig,
        train: &TrainConfig,
        interactions: &Interactions,
        tasks: &TaskSet,
        seed: u64,
        on_epoch: &mut dyn FnMut(&EpochRecord),
    ) -> Result<TrainedModel, ModelError> {
        crate::train::train_one(config, train, interactions, tasks, seed, on_epoch)
    }

    /// Scores the query rows of the tasks with one of `roles`: by default through the loaded
    /// network (see [`crate::predict`]).
    fn predict(
        &self,
        model: &TrainedModel,
        interactions: &Interactions,
        tasks: &TaskSet,
        embeddings: Option<&MetaEmbeddingTable>,
        roles: &[TaskRole],
    ) -> Result<Predictions, ModelError> {
        crate::embeddings::predict_with_network(model, interactions, tasks, embeddings, roles)
    }
}
