//! `logistic`: L2-regularised logistic regression over one-hot ids, features and id x tag
//! crosses ([`LogisticNet`], its own Adagrad in [`LogisticTrainer`]), one model per pair of
//! strengths, the best on validation AUC kept. Must not hold the model itself (`crate::logistic`
//! does).

use rand::rngs::StdRng;

use limaml_data::{Interactions, TaskSet};

use super::{EpochInputs, EpochStep, Method, Network, ScoreInputs};
use crate::config::{MethodConfig, TrainConfig};
use crate::error::ModelError;
use crate::inputs::DataShape;
use crate::logistic::{train_grid, train_with_l2_search, LogisticNet, LogisticTrainer};
use crate::params::ParamStore;
use crate::train::{train_one, EpochRecord, TrainedModel};

pub(crate) struct Logistic;

impl Method for Logistic {
    fn kind(&self) -> &'static str {
        "logistic"
    }

    fn create(&self, config: &MethodConfig, shape: DataShape, _: &mut StdRng) -> Result<Box<dyn Network>, ModelError> {
        let MethodConfig::Logistic(c) = config else { unreachable!("the registry gives logistic its own config") };
        let (net, store) = LogisticNet::create(c, shape)?;
        Ok(Box::new(LogisticNetwork { net, store }))
    }

    fn train(
        &self,
        config: &MethodConfig,
        train: &TrainConfig,
        interactions: &Interactions,
        tasks: &TaskSet,
        seed: u64,
        on_epoch: &mut dyn FnMut(&EpochRecord),
    ) -> Result<TrainedModel, ModelError> {
        let MethodConfig::Logistic(c) = config else { unreachable!("the registry gives logistic its own config") };
        let pairs = c.l2.len() * c.cross_l2.len();
        let models = if pairs == 1 {
            // One candidate: the shared epoch loop with its own trainer (as `resume` continues it).
            vec![train_one(config, train, interactions, tasks, seed, on_epoch)?]
        } else {
            train_grid(c, train, interactions, tasks, seed, on_epoch)?
        };
        train_with_l2_search(c, interactions, tasks, models)
    }
}

struct LogisticNetwork {
    net: LogisticNet,
    store: ParamStore,
}

impl Network for LogisticNetwork {
    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn epoch_step<'a>(&'a self, inputs: &'a EpochInputs<'a>) -> Result<EpochStep<'a>, ModelError> {
        if inputs.tasks.baseline_train_rows.is_empty() {
            return Err(ModelError::NoTrainingData("baseline_train_rows is empty".into()));
        }
        // Its own Adagrad (see `logistic`): the shared optimizer holds no table of it.
        let mut trainer = LogisticTrainer::new(&self.net, &self.store, inputs.interactions, inputs.tasks)?;
        let batch_size = inputs.train.batch_size;
        Ok(Box::new(move |_, rng| trainer.train_epoch(batch_size, rng)))
    }

    fn score(&self, inputs: &ScoreInputs<'_>, rows: &[u32], _: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.net.scores(&self.store, &inputs.tasks.features, inputs.interactions, rows)
    }
}
