//! Training: the epoch loop with early stopping shared by every method, and the trained model.
//!
//! Owns [`train`], [`TrainedModel`] (config + safetensors weights + learning curve) and
//! [`EpochRecord`]. `logistic` trains one model per `l2` value through the same loop and keeps
//! the best on validation (`logistic::train_with_l2_search`). Baselines train with minibatch Adam on `baseline_train_rows`; LiMAML
//! meta-trains over meta-train tasks. Id-embedding tables take lazy Adam steps on the rows a
//! step reads (`lazy_adam`), so a step costs what it reads, not the table size. Both stop
//! early on the validation tasks' query AUC, with the same rule, and keep the best epoch's
//! weights. Must not evaluate test tasks or write files.


use candle_core::Tensor;
use limaml_data::{Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::baselines::{BaselineNet, RowSupports};
use crate::config::{MethodConfig, TrainConfig};
use crate::error::ModelError;
use crate::eval::{auc, query_rows};
use crate::inputs::{check_data, DataShape, Features};
use crate::limaml::{
    latest_support, InnerGradients, LimamlData, LimamlNet, TaskRows,
};
use crate::lazy_adam::Optimizers;
use crate::logistic::{train_with_l2_search, L2Search, LogisticNet, LogisticTrainer};
use crate::mlp::sigmoid;
use crate::params::ParamStore;

/// One epoch of the learning curve (`epoch` counts from 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean minibatch loss (the outer query loss for LiMAML).
    pub train_loss: f64,
    /// AUC over the query rows of validation tasks; `None` without validation rows of both classes.
    pub validation_auc: Option<f64>,
}

/// A trained model: what it was trained with, its weights, and how training went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    pub method: MethodConfig,
    pub train: TrainConfig,
    pub seed: u64,
    pub shape: DataShape,
    /// The weights as a safetensors file (tensor names from the model layout).
    pub weights: Vec<u8>,
    pub curve: Vec<EpochRecord>,
    /// The epoch whose weights were kept (the best validation AUC).
    pub best_epoch: usize,
    /// `logistic` only: the `l2` values tried and the one kept, chosen on validation rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2_search: Option<L2Search>,
    /// `command` only: the meta embeddings the command wrote (`meta_embeddings.csv`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_embeddings: Option<crate::embeddings::MetaEmbeddingTable>,
}

/// A model's layout with its parameters, ready to run.
pub(crate) enum Net {
    Baseline(BaselineNet, ParamStore),
    Limaml(LimamlNet, ParamStore),
    Logistic(LogisticNet, ParamStore),
}

impl Net {
    fn create(
        method: &MethodConfig,
        shape: DataShape,
        rng: &mut StdRng,
    ) -> Result<Net, ModelError> {
        Ok(match method {
            MethodConfig::Limaml(c) => {
                let (net, store) = LimamlNet::create(c, shape, rng)?;
                Net::Limaml(net, store)
            }
            MethodConfig::Logistic(c) => {
                let (net, store) = LogisticNet::create(c, shape)?;
                Net::Logistic(net, store)
            }
            MethodConfig::Command(_) => return Err(ModelError::NotANet("command".into())),
            baseline => {
                let (net, store) = BaselineNet::create(baseline, shape, rng)?;
                Net::Baseline(net, store)
            }
        })
    }

    pub(crate) fn store(&self) -> &ParamStore {
        match self {
            Net::Baseline(_, s) | Net::Limaml(_, s) | Net::Logistic(_, s) => s,
        }
    }
}

impl TrainedModel {
    /// Rebuilds the network and loads the weights, checking the task set has the trained shape.
    pub(crate) fn load(&self, tasks: &TaskSet) -> Result<Net, ModelError> {
        let shape = DataShape::of(tasks);
        if shape != self.shape {
            return Err(ModelError::ShapeMismatch(format!(
                "trained on {:?}, given {:?}",
                self.shape, shape
            )));
        }
        let net = Net::create(&self.method, self.shape, &mut StdRng::seed_from_u64(0))?;
        net.store().load_safetensors_bytes(&self.weights)?;
        Ok(net)
    }

    /// A binary encoding of the whole model: a little-endian `u64` length, the JSON of
    /// everything but the weights, then the safetensors weights as they are. (The internally
    /// tagged `MethodConfig` rules out non-self-describing formats such as postcard.)
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let header = TrainedModel {
            weights: Vec::new(),
            ..self.clone()
        };
        let json = serde_json::to_vec(&header).map_err(|e| ModelError::Weights(e.to_string()))?;
        let mut out = Vec::with_capacity(8 + json.len() + self.weights.len());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.weights);
        Ok(out)
    }

    /// Reads what [`TrainedModel::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<TrainedModel, ModelError> {
        let truncated = || ModelError::Weights("truncated model bytes".into());
        let length = u64::from_le_bytes(
            bytes
                .get(..8)
                .ok_or_else(truncated)?
                .try_into()
                .expect("8 bytes"),
        ) as usize;
        let json = bytes
            .get(8..8usize.checked_add(length).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        let mut model: TrainedModel =
            serde_json::from_slice(json).map_err(|e| ModelError::Weights(e.to_string()))?;
        model.weights = bytes[8 + length..].to_vec();
        Ok(model)
    }
}

/// Trains `method` on `tasks` with `train`; `on_epoch` sees each epoch's record as it ends.
/// The same arguments and seed give bit-identical weights.
pub fn train(
    method: &MethodConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainedModel, ModelError> {
    let mut issues = method.validate();
    issues.extend(train.validate());
    if !issues.is_empty() {
        return Err(ModelError::InvalidConfig(issues));
    }
    check_data(interactions, tasks)?;
    train_here(method, train, interactions, tasks, seed, on_epoch)
}

/// One training epoch of a method; returns its mean loss.
type EpochStep<'a> = Box<dyn FnMut(&mut Optimizers, &mut StdRng) -> Result<f64, ModelError> + 'a>;

fn train_here(
    method: &MethodConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainedModel, ModelError> {
    match method {
        MethodConfig::Logistic(c) => train_with_l2_search(c, interactions, tasks, &mut |single| {
            train_one(single, train, interactions, tasks, seed, on_epoch)
        }),
        MethodConfig::Command(c) => crate::command::run(c, train, interactions, tasks, seed),
        _ => train_one(method, train, interactions, tasks, seed, on_epoch),
    }
}

/// Trains one model with the epoch loop; `logistic` with a single `l2`.
fn train_one(
    method: &MethodConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainedModel, ModelError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = DataShape::of(tasks);
    let net = Net::create(method, shape, &mut rng)?;
    let store = net.store();
    let tables = match &net {
        Net::Baseline(b, _) => b.embedding_tables(),
        Net::Limaml(l, _) => l.embedding_tables(),
        Net::Logistic(..) => Vec::new(),
    };
    let mut optimizer = Optimizers::new(store, train, &tables)?;
    let features = Features::new(&tasks.features)?;
    let evaluation_support_tasks =
        matches!(method, MethodConfig::Limaml(c) if c.evaluation_support_tasks);
    let data = LimamlData::new(interactions, tasks, evaluation_support_tasks)?;
    let mut epoch_step: EpochStep<'_> = match &net {
        Net::Baseline(b, s) => {
            if tasks.baseline_train_rows.is_empty() {
                return Err(ModelError::NoTrainingData(
                    "baseline_train_rows is empty".into(),
                ));
            }
            Box::new(|opt, rng| {
                b.train_epoch(
                    s,
                    opt,
                    &features,
                    interactions,
                    tasks,
                    train.batch_size,
                    rng,
                )
            })
        }
        Net::Logistic(l, s) => {
            if tasks.baseline_train_rows.is_empty() {
                return Err(ModelError::NoTrainingData(
                    "baseline_train_rows is empty".into(),
                ));
            }
            // Its own Adagrad (see `logistic`): the shared optimizer holds no table of it.
            let mut trainer = LogisticTrainer::new(l, s, interactions, tasks)?;
            Box::new(move |_, rng| trainer.train_epoch(train.batch_size, rng))
        }
        Net::Limaml(l, s) => {
            if data.training_tasks.is_empty() {
                return Err(ModelError::NoTrainingData(
                    "no meta-train task has query rows".into(),
                ));
            }
            let gradients = if l.config.second_order {
                InnerGradients::SecondOrder
            } else {
                InnerGradients::FirstOrder
            };
            let data = &data;
            Box::new(move |opt, rng| {
                l.train_epoch(
                    s,
                    opt,
                    data,
                    train.max_support,
                    train.max_query,
                    gradients,
                    rng,
                )
            })
        }
    };

    let (val_rows, val_tasks) = query_rows(tasks, &[TaskRole::Validation]);
    let val_labels: Vec<f32> = val_rows
        .iter()
        .map(|&r| interactions.label[r as usize])
        .collect();
    let mut curve = Vec::new();
    let mut best: Option<(usize, Option<f64>, Vec<Tensor>)> = None;
    for epoch in 1..=train.epochs {
        let train_loss = epoch_step(&mut optimizer, &mut rng)?;
        // The id tables' rows not read lately still owe their momentum steps.
        optimizer.catch_up()?;
        let validation_auc = if val_rows.is_empty() {
            None
        } else {
            let scores = score_rows(
                &net,
                &features,
                &data,
                interactions,
                tasks,
                &val_rows,
                &val_tasks,
                train.max_support,
            )?;
            auc(&scores, &val_labels)
        };
        let record = EpochRecord {
            epoch,
            train_loss,
            validation_auc,
        };
        on_epoch(&record);
        curve.push(record);
        let improved = match (&best, validation_auc) {
            (None, _) => true,
            (Some((_, None, _)), _) => true,
            (Some((_, Some(_), _)), None) => false,
            (Some((_, Some(b), _)), Some(a)) => a > *b,
        };
        if improved {
            best = Some((epoch, validation_auc, store.snapshot()?));
        } else if epoch - best.as_ref().map_or(0, |b| b.0) >= train.patience {
            break;
        }
    }
    let (best_epoch, _, weights) = best.expect("at least one epoch");
    store.restore(&weights)?;
    Ok(TrainedModel {
        method: method.clone(),
        train: train.clone(),
        seed,
        shape,
        weights: store.to_safetensors_bytes()?,
        curve,
        best_epoch,
        l2_search: None,
        meta_embeddings: None,
    })
}

/// Probabilities of query rows (`rows[k]` of task `task_index[k]`), for validation and
/// prediction. LiMAML adapts on each task's own (capped) support, then scores through the
/// Global Block with the meta embedding (the serving path).
#[allow(clippy::too_many_arguments)]
pub(crate) fn score_rows(
    net: &Net,
    features: &Features,
    data: &LimamlData,
    interactions: &Interactions,
    tasks: &TaskSet,
    rows: &[u32],
    task_index: &[u32],
    max_support: usize,
) -> Result<Vec<f32>, ModelError> {
    const CHUNK: usize = 8192;
    let mut scores = Vec::with_capacity(rows.len());
    // What a serving-time refresh or activity summary may read of a task: its capped support.
    let support_of = |t: u32| latest_support(data, &tasks.tasks[t as usize].support, max_support);
    match net {
        Net::Baseline(b, s) if b.refresh().is_some() => {
            let params: Vec<Tensor> = s.tensors().iter().map(Tensor::detach).collect();
            let logits = b.refreshed_logits(&params, features, interactions, tasks, rows, task_index, &support_of)?;
            scores.extend(logits.into_iter().map(sigmoid));
        }
        Net::Baseline(b, s) => {
            let params: Vec<Tensor> = s.tensors().iter().map(Tensor::detach).collect();
            for (chunk, chunk_tasks) in rows.chunks(CHUNK).zip(task_index.chunks(CHUNK)) {
                let supports = b
                    .reads_activity()
                    .then_some(RowSupports { task_index: chunk_tasks, support_of: &support_of });
                let logits = b
                    .logits(&params, features, interactions, tasks, chunk, supports)?
                    .to_vec1::<f32>()?;
                scores.extend(logits.into_iter().map(sigmoid));
            }
        }
        Net::Logistic(l, s) => {
            scores = l.scores(s, &tasks.features, interactions, rows)?;
        }
        Net::Limaml(l, s) => {
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
                .map(|(&t, support)| TaskRows {
                    entity: tasks.tasks[t as usize].entity,
                    hide_id: false,
                    support,
                    query: &[],
                })
                .collect();
            let params = s.tensors();
            let embeddings = l.adapted_meta_embeddings(&params, data, &members)?;
            let m = l.config.meta_embedding_dim;
            let position = |t: u32| distinct.binary_search(&t).expect("task is in distinct");
            let per_row: Vec<f32> = task_index
                .iter()
                .flat_map(|&t| embeddings[position(t) * m..(position(t) + 1) * m].to_vec())
                .collect();
            scores = score_with_embeddings(l, &params, features, interactions, rows, &per_row)?;
        }
    }
    Ok(scores)
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
