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
use crate::logistic::{train_with_l2_search, LogisticNet, LogisticTrainer};
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
        // The candidates train on rayon's threads; their epochs come back over a channel, so
        // `on_epoch` (progress, not `Send`) runs here, as they end.
        let (sender, receiver) = std::sync::mpsc::channel::<EpochRecord>();
        std::thread::scope(|scope| {
            let search = scope.spawn(move || {
                train_with_l2_search(c, interactions, tasks, &|single| {
                    train_one(single, train, interactions, tasks, seed, &mut |record| {
                        // The receiver lives until the search ends.
                        let _ = sender.send(record.clone());
                    })
                })
            });
            for record in receiver {
                on_epoch(&record);
            }
            search.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
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
