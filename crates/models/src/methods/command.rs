//! `command`: bring your own model. It has no network: training runs the user's program on the
//! exchange files and keeps its checked scores (`crate::command`), and predicting looks them
//! up. Must not run anything itself beyond calling `crate::command`.

use limaml_data::{Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;

use super::{Method, Network};
use crate::config::{MethodConfig, TrainConfig};
use crate::embeddings::MetaEmbeddingTable;
use crate::error::ModelError;
use crate::eval::Predictions;
use crate::inputs::DataShape;
use crate::train::{EpochRecord, TrainedModel};

pub(crate) struct Command;

impl Method for Command {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn create(&self, _: &MethodConfig, _: DataShape, _: &mut StdRng) -> Result<Box<dyn Network>, ModelError> {
        Err(ModelError::NotANet("command".into()))
    }

    fn train(
        &self,
        config: &MethodConfig,
        train: &TrainConfig,
        interactions: &Interactions,
        tasks: &TaskSet,
        seed: u64,
        _: &mut dyn FnMut(&EpochRecord),
    ) -> Result<TrainedModel, ModelError> {
        let MethodConfig::Command(c) = config else { unreachable!("the registry gives command its own config") };
        crate::command::run(c, train, interactions, tasks, seed)
    }

    fn predict(
        &self,
        model: &TrainedModel,
        _: &Interactions,
        tasks: &TaskSet,
        embeddings: Option<&MetaEmbeddingTable>,
        roles: &[TaskRole],
    ) -> Result<Predictions, ModelError> {
        if embeddings.is_some() {
            return Err(ModelError::NotAMetaModel("command".into()));
        }
        crate::command::stored_predictions(model, tasks, roles)
    }
}
