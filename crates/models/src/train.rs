//! Training: the epoch loop with early stopping shared by every method, and the trained model.
//!
//! Owns [`train`] (which hands a configuration to its method in `methods`), the epoch loop
//! every network goes through ([`train_one`]), [`TrainedModel`] (config + safetensors weights +
//! learning curve) and [`EpochRecord`]. It knows no method: each network's epoch and scoring
//! come from its `methods::Network`. `logistic` trains one model per `l2` value through the
//! same loop and keeps the best on validation (`logistic::train_with_l2_search`); `command`
//! runs its program instead. Baselines train with minibatch Adam on `baseline_train_rows`; LiMAML
//! meta-trains over meta-train tasks. Id-embedding tables take lazy Adam steps on the rows a
//! step reads (`lazy_adam`), so a step costs what it reads, not the table size. Both stop
//! early on the validation tasks' query AUC, with the same rule, and keep the best epoch's
//! weights. Must not evaluate test tasks or write files.

use candle_core::Tensor;
use limaml_data::{Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::{MethodConfig, TrainConfig};
use crate::error::ModelError;
use crate::eval::{auc, query_rows};
use crate::inputs::{check_data, DataShape, Features};
use crate::lazy_adam::Optimizers;
use crate::limaml::LimamlData;
use crate::logistic::L2Search;
use crate::methods::{method_for, EpochInputs, Network, ScoreInputs};
use crate::pool::on_pool;

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

impl TrainedModel {
    /// Rebuilds the network and loads the weights, checking the task set has the trained shape.
    pub(crate) fn load(&self, tasks: &TaskSet) -> Result<Box<dyn Network>, ModelError> {
        let shape = DataShape::of(tasks);
        if shape != self.shape {
            return Err(ModelError::ShapeMismatch(format!(
                "trained on {:?}, given {:?}",
                self.shape, shape
            )));
        }
        let net = method_for(&self.method).create(&self.method, self.shape, &mut StdRng::seed_from_u64(0))?;
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
    method_for(method).train(method, train, interactions, tasks, seed, on_epoch)
}

/// Whether training `method` spreads over every core rather than one thread (see
/// [`crate::methods::Method::trains_on_every_core`]); it says nothing of the results, which do
/// not depend on the thread count.
pub fn trains_on_every_core(method: &MethodConfig) -> bool {
    method_for(method).trains_on_every_core()
}

/// Trains one network with the epoch loop ([`crate::methods::Method::train`]'s default;
/// `logistic` calls it once per pair of strengths).
pub(crate) fn train_one(
    method: &MethodConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainedModel, ModelError> {
    train_one_from(method, train, interactions, tasks, seed, None, on_epoch)
}

/// Whether [`resume`] can continue `model` (one network through the shared epoch loop) rather
/// than train again from scratch: not a `command` method, nor `logistic` over several pairs of
/// strengths (its kept model is one of several).
pub fn resumable(model: &TrainedModel) -> bool {
    match &model.method {
        MethodConfig::Command(_) => false,
        MethodConfig::Logistic(c) => c.l2.len() * c.cross_l2.len() == 1,
        _ => true,
    }
}

/// Continues training `prior` (trained with fewer epochs) up to `train.epochs`: the network
/// starts from `prior`'s kept weights, its learning curve and best validation AUC carry over,
/// and early stopping goes on counting from them, so the epochs already trained are not
/// trained again. The optimizer's moments start afresh and the shuffling draws from a stream
/// seeded by `prior`'s seed and the epoch it resumes at (deterministic, but not bit-identical
/// to training `train.epochs` in one go). A model that already stopped early (its patience ran
/// out) or reached `train.epochs` comes back as it is. Not for [`resumable`]-false models:
/// those train from scratch.
pub fn resume(
    prior: &TrainedModel,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainedModel, ModelError> {
    let mut issues = prior.method.validate();
    issues.extend(train.validate());
    if !issues.is_empty() {
        return Err(ModelError::InvalidConfig(issues));
    }
    if !resumable(prior) {
        return crate::train::train(&prior.method, train, interactions, tasks, prior.seed, on_epoch);
    }
    let trained = prior.curve.len();
    let stopped_early = trained < prior.train.epochs;
    if stopped_early || trained >= train.epochs {
        return Ok(TrainedModel { train: train.clone(), ..prior.clone() });
    }
    check_data(interactions, tasks)?;
    train_one_from(&prior.method, train, interactions, tasks, prior.seed, Some(prior), on_epoch)
}

/// The epoch loop, from fresh weights or (with `init`) from a model trained for fewer epochs.
fn train_one_from(
    method: &MethodConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    init: Option<&TrainedModel>,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<TrainedModel, ModelError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = DataShape::of(tasks);
    let net = method_for(method).create(method, shape, &mut rng)?;
    let store = net.store();
    let mut curve = Vec::new();
    let mut best: Option<(usize, Option<f64>, Vec<Tensor>)> = None;
    if let Some(prior) = init {
        if prior.shape != shape {
            return Err(ModelError::ShapeMismatch(format!("trained on {:?}, given {:?}", prior.shape, shape)));
        }
        store.load_safetensors_bytes(&prior.weights)?;
        curve = prior.curve.clone();
        let best_auc = curve.iter().find(|r| r.epoch == prior.best_epoch).and_then(|r| r.validation_auc);
        best = Some((prior.best_epoch, best_auc, store.snapshot()?));
        // A stream of its own per resumption point, so resumed epochs do not replay the shuffles
        // of the first ones.
        rng = StdRng::seed_from_u64(seed ^ (curve.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    let first_epoch = curve.len() + 1;
    let mut optimizer = Optimizers::new(store, train, &net.embedding_tables())?;
    let features = Features::new(&tasks.features)?;
    let data = LimamlData::new(interactions, tasks, net.evaluation_support_tasks())?;
    let epoch_inputs = EpochInputs { train, interactions, tasks, data: &data };
    let mut epoch_step = net.epoch_step(&epoch_inputs)?;

    let (val_rows, val_tasks) = query_rows(tasks, &[TaskRole::Validation]);
    let val_labels: Vec<f32> = val_rows
        .iter()
        .map(|&r| interactions.label[r as usize])
        .collect();
    for epoch in first_epoch..=train.epochs {
        // On a pool thread, so that the step's parallel iterators run in place (crate::pool).
        let train_loss = on_pool(|| epoch_step(&mut optimizer, &mut rng))?;
        // The id tables' rows not read lately still owe their momentum steps.
        optimizer.catch_up()?;
        let validation_auc = if val_rows.is_empty() {
            None
        } else {
            let scores = score_rows(
                net.as_ref(),
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
        if improves(best.as_ref().map(|b| b.1), validation_auc) {
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

/// The early-stopping rule's test: whether an epoch with `validation_auc` improves on the best
/// kept so far (`None`: nothing kept yet; `Some(None)`: kept without an AUC). An epoch without
/// an AUC never replaces one with an AUC; ties keep the earlier epoch.
pub(crate) fn improves(best: Option<Option<f64>>, validation_auc: Option<f64>) -> bool {
    match (best, validation_auc) {
        (None, _) | (Some(None), _) => true,
        (Some(Some(_)), None) => false,
        (Some(Some(b)), Some(a)) => a > b,
    }
}

/// Probabilities of query rows (`rows[k]` of task `task_index[k]`), for validation and
/// prediction. LiMAML adapts on each task's own (capped) support, then scores through the
/// Global Block with the meta embedding (the serving path).
#[allow(clippy::too_many_arguments)]
pub(crate) fn score_rows(
    net: &dyn Network,
    features: &Features,
    data: &LimamlData,
    interactions: &Interactions,
    tasks: &TaskSet,
    rows: &[u32],
    task_index: &[u32],
    max_support: usize,
) -> Result<Vec<f32>, ModelError> {
    net.score(&ScoreInputs { features, data, interactions, tasks, max_support }, rows, task_index)
}

#[cfg(test)]
mod tests {
    use super::trains_on_every_core;
    use crate::config::MethodConfig;

    #[test]
    fn only_limaml_declares_that_its_training_uses_every_core() {
        for kind in ["global", "id_embedding", "wide_deep", "logistic", "limaml"] {
            let config = MethodConfig::default_for(kind).expect("a built-in method");
            assert_eq!(trains_on_every_core(&config), kind == "limaml", "{kind}");
        }
    }
}
