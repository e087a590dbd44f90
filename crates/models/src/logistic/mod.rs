//! The `logistic` method: L2-regularised logistic regression over one-hot user and item ids,
//! the encoded user and item features, and the crosses user id x item tag and user features x
//! item tag; a well-tuned simple baseline for the neural methods.
//!
//! Owns [`LogisticNet`] (the weight layout and the logit of a row), [`LogisticTrainer`] (one
//! epoch of minibatch Adagrad on an honest L2 objective, for one pair of strengths), `grid`
//! (every pair of `l2` and `cross_l2` values trained in lockstep, each as the trainer trains it
//! alone) and [`train_with_l2_search`] (the best on validation kept, recorded as an
//! [`L2Search`]). Must not read test
//! rows (the search scores validation query rows only) nor decide when to stop: `train` drives
//! each candidate's epochs and early stopping, with the rules of every method.
//!
//! The model, for a row of user `u` and item `i` with feature rows `x_u`, `x_i` (one-hot
//! categoricals, standardized numerics, multi-hot tags, as encoded by `limaml_data`):
//!
//! ```text
//! logit = b + w_user[u] + w_item[i] + w_f . x_u + w_g . x_i
//!       + sum over the item's tags t of (w_ut[u, t] + sum_j x_u[j] V[j, t])
//! ```
//!
//! All weights start at 0 (the problem is convex; the seed only orders the minibatches). `w_ut`
//! holds one weight per (user, tag) pair unless `n_users * n_tags` exceeds `user_tag_buckets`,
//! in which case the pairs are hashed into that many weights. `V` is exact (`user_dim x n_tags`).
//!
//! Why the L2 penalty is honest under sparse updates: the objective is
//! `F(w) = (1/N) sum_r logloss_r(w) + (l2 / 2) |w_ids, w_f, w_g|^2 + (cross_l2 / 2) |w_ut, V|^2`
//! (bias excluded) over the `N` rows of `baseline_train_rows`; write `l2_j` for weight `j`'s
//! strength. Weight `j` is read by `n_j` occurrences in those rows, so the penalty
//! splits exactly into per-occurrence terms `(N l2_j / (2 n_j)) w_j^2`: the sum over all rows is
//! the full penalty. A minibatch's mean gradient is then an unbiased estimate of `grad F` that
//! touches only the weights its rows read: no decay of unread rows to replay, and no decoupled
//! weight decay (AdamW), which Adam's per-coordinate scaling turns into a different,
//! frequency-dependent regulariser. Weights no training row reads stay at 0, their optimum.
//!
//! Why Adagrad (not the Adam of `[train]`): its per-coordinate steps shrink with each weight's
//! own gradient history, so a cross read a few times an epoch moves as fast as the bias, and its
//! decaying steps average minibatch noise out, so the iterate approaches the regularised optimum
//! that makes comparing `l2` values meaningful. Adam at `learning_rate = 1e-3` moves a weight by
//! at most about 1e-3 per step that reads it: a user x tag weight read a few times an epoch would
//! need hundreds of epochs.
//!
//! Why the search keeps the best validation AUC (not log loss): AUC is what picks every method's
//! epoch (early stopping) and what the comparison reports first, so logistic is tuned on the
//! same criterion as the others. Each candidate's validation log loss is recorded next to it.
//! Ties go to the stronger penalty.

use candle_core::{Device, Tensor};
use limaml_data::{FeatureTables, Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::baselines::hash;
use crate::config::{LogisticConfig, MethodConfig};
use crate::error::ModelError;
use crate::eval::overall_auc_and_logloss;
use crate::inputs::DataShape;
use crate::methods::method_for;
use crate::mlp::sigmoid;
use crate::params::ParamStore;
use crate::train::TrainedModel;

mod blocks;
mod grid;

pub(crate) use grid::train_grid;

/// Name of the one flat weight tensor in the [`ParamStore`] (blocks as in [`Offsets`]).
const WEIGHTS: &str = "logistic.weights";

/// Adagrad's denominator floor.
const ADAGRAD_EPS: f64 = 1e-8;

/// Where each block starts in the flat weight vector, in this order after the bias (index 0):
/// user ids, item ids, user features, item features, user id x tag, user features x tag.
#[derive(Debug, Clone, Copy)]
struct Offsets {
    user_id: usize,
    item_id: usize,
    user_features: usize,
    item_features: usize,
    user_tag: usize,
    feature_tag: usize,
    total: usize,
}

/// Layout of a logistic model's weights and its logit.
#[derive(Debug, Clone)]
pub struct LogisticNet {
    shape: DataShape,
    /// The L2 strengths this net trains with, of the id and feature weights and of the
    /// crosses: the first of the config's `l2` and `cross_l2` (the search hands each candidate
    /// pair to `train` alone).
    pub l2: f64,
    pub cross_l2: f64,
    /// Adagrad learning rate.
    pub learning_rate: f64,
    /// Number of user id x tag weights: `n_users * n_tags`, or the buckets when hashed.
    user_tag_size: usize,
    user_tag_hashed: bool,
    offsets: Offsets,
}

impl LogisticNet {
    /// The layout for `shape`, with all weights 0.
    pub fn create(
        config: &LogisticConfig,
        shape: DataShape,
    ) -> Result<(LogisticNet, ParamStore), ModelError> {
        let exact = shape.n_users.saturating_mul(shape.n_tags);
        let user_tag_hashed = exact > config.user_tag_buckets;
        let user_tag_size = if user_tag_hashed {
            config.user_tag_buckets
        } else {
            exact
        };
        let user_id = 1;
        let item_id = user_id + shape.n_users;
        let user_features = item_id + shape.n_items;
        let item_features = user_features + shape.user_dim;
        let user_tag = item_features + shape.item_dim;
        let feature_tag = user_tag + user_tag_size;
        let total = feature_tag + shape.user_dim * shape.n_tags;
        let offsets = Offsets {
            user_id,
            item_id,
            user_features,
            item_features,
            user_tag,
            feature_tag,
            total,
        };
        let mut store = ParamStore::new();
        store.zeros(WEIGHTS, &[total])?;
        let net = LogisticNet {
            shape,
            l2: config.l2.first().copied().unwrap_or(0.0),
            cross_l2: config.cross_l2.first().copied().unwrap_or(0.0),
            learning_rate: config.learning_rate,
            user_tag_size,
            user_tag_hashed,
            offsets,
        };
        Ok((net, store))
    }

    /// Calls `visit(weight index, feature value)` for every nonzero feature of the row of
    /// `user` and `item`, the bias (index 0) first.
    fn for_each_feature(
        &self,
        tables: &FeatureTables,
        user: u32,
        item: u32,
        mut visit: impl FnMut(usize, f32),
    ) {
        let (u, i) = (user as usize, item as usize);
        let (o, user_dim, item_dim) = (&self.offsets, self.shape.user_dim, self.shape.item_dim);
        visit(0, 1.0);
        visit(o.user_id + u, 1.0);
        visit(o.item_id + i, 1.0);
        let user_row = &tables.user_features[u * user_dim..(u + 1) * user_dim];
        for (j, &x) in user_row.iter().enumerate().filter(|(_, &x)| x != 0.0) {
            visit(o.user_features + j, x);
        }
        let item_row = &tables.item_features[i * item_dim..(i + 1) * item_dim];
        for (j, &x) in item_row.iter().enumerate().filter(|(_, &x)| x != 0.0) {
            visit(o.item_features + j, x);
        }
        let n_tags = self.shape.n_tags;
        for &t in tables.item_tags.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            let t = t as usize;
            let pair = if self.user_tag_hashed {
                (hash(u as u64, t as u64, 3) % self.user_tag_size as u64) as usize
            } else {
                u * n_tags + t
            };
            visit(o.user_tag + pair, 1.0);
            for (j, &x) in user_row.iter().enumerate().filter(|(_, &x)| x != 0.0) {
                visit(o.feature_tag + j * n_tags + t, x);
            }
        }
    }

    /// The nonzero features of interaction row `r` as `(weight index, value)`, in the order
    /// [`LogisticNet::for_each_feature`] visits them, into `out` (cleared first).
    fn row_features(&self, tables: &FeatureTables, interactions: &Interactions, r: u32, out: &mut Vec<(usize, f32)>) {
        let (u, i) = (interactions.user[r as usize], interactions.item[r as usize]);
        out.clear();
        self.for_each_feature(tables, u, i, |j, x| out.push((j, x)));
    }

    /// Whether weight `j` is a cross (user id x tag, user features x tag), penalised with
    /// `cross_l2`; the others (bias aside) take `l2`.
    fn is_cross(&self, j: usize) -> bool {
        j >= self.offsets.user_tag
    }

    /// Per weight: how many of `rows` read it (the L2 penalty's denominator `n_j`).
    fn occurrences(&self, tables: &FeatureTables, interactions: &Interactions, rows: &[u32]) -> Vec<u64> {
        let mut occurrences = vec![0u64; self.offsets.total];
        for &r in rows {
            let (u, i) = (interactions.user[r as usize], interactions.item[r as usize]);
            self.for_each_feature(tables, u, i, |j, _| occurrences[j] += 1);
        }
        occurrences
    }

    /// The logit of the row of `user` and `item` under `weights`.
    fn logit(&self, weights: &[f32], tables: &FeatureTables, user: u32, item: u32) -> f64 {
        let mut sum = 0.0f64;
        self.for_each_feature(tables, user, item, |j, x| {
            sum += weights[j] as f64 * x as f64
        });
        sum
    }

    /// Click probabilities of interaction rows `rows` under the weights in `store`.
    pub fn scores(
        &self,
        store: &ParamStore,
        tables: &FeatureTables,
        interactions: &Interactions,
        rows: &[u32],
    ) -> Result<Vec<f32>, ModelError> {
        let weights = read_weights(store)?;
        Ok(rows
            .iter()
            .map(|&r| {
                let (u, i) = (interactions.user[r as usize], interactions.item[r as usize]);
                sigmoid(self.logit(&weights, tables, u, i) as f32)
            })
            .collect())
    }
}

fn read_weights(store: &ParamStore) -> Result<Vec<f32>, ModelError> {
    Ok(store.vars()[0].as_tensor().to_vec1::<f32>()?)
}

/// Minibatch Adagrad on `baseline_train_rows` for one [`LogisticNet`] and its strengths (see the
/// module docs); holds the weights and optimizer state between epochs.
pub struct LogisticTrainer<'a> {
    net: &'a LogisticNet,
    store: &'a ParamStore,
    tables: &'a FeatureTables,
    interactions: &'a Interactions,
    rows: &'a [u32],
    weights: Vec<f32>,
    /// Per weight: `N l2_j / n_j`, its penalty gradient per occurrence per unit of weight (0 for
    /// the bias and for weights no training row reads).
    penalty: Vec<f64>,
    /// Adagrad's sum of squared gradients, per weight.
    squared_gradients: Vec<f64>,
    /// The current minibatch's gradient sum; nonzero only at `touched`.
    gradient: Vec<f64>,
    in_batch: Vec<bool>,
    touched: Vec<usize>,
}

impl<'a> LogisticTrainer<'a> {
    /// State for training `net` (weights in `store`) on the tasks' baseline training rows.
    pub fn new(
        net: &'a LogisticNet,
        store: &'a ParamStore,
        interactions: &'a Interactions,
        tasks: &'a TaskSet,
    ) -> Result<LogisticTrainer<'a>, ModelError> {
        let rows = tasks.baseline_train_rows.as_slice();
        let tables = &tasks.features;
        let size = net.offsets.total;
        let occurrences = net.occurrences(tables, interactions, rows);
        let n = rows.len() as f64;
        let penalty = occurrences
            .iter()
            .enumerate()
            .map(|(j, &count)| {
                let l2 = if net.is_cross(j) { net.cross_l2 } else { net.l2 };
                penalty_per_occurrence(j, count, n * l2)
            })
            .collect();
        Ok(LogisticTrainer {
            net,
            store,
            tables,
            interactions,
            rows,
            weights: read_weights(store)?,
            penalty,
            squared_gradients: vec![0.0; size],
            gradient: vec![0.0; size],
            in_batch: vec![false; size],
            touched: Vec::new(),
        })
    }

    /// One pass over the training rows in shuffled minibatches of `batch_size`; writes the
    /// weights into the store and returns the mean batch log loss (the penalty not included).
    pub fn train_epoch(&mut self, batch_size: usize, rng: &mut StdRng) -> Result<f64, ModelError> {
        let mut order = self.rows.to_vec();
        crate::shuffle::shuffle(&mut order, rng);
        let LogisticTrainer {
            net,
            tables,
            interactions,
            weights,
            penalty,
            squared_gradients,
            gradient,
            in_batch,
            touched,
            ..
        } = self;
        let (mut total, mut batches) = (0.0, 0usize);
        let mut row_features: Vec<(usize, f32)> = Vec::new();
        for batch in order.chunks(batch_size) {
            let mut batch_loss = LogLossSum::default();
            for &r in batch {
                let label = interactions.label[r as usize] as f64;
                // The row's features once, for the logit and the gradient (the sums run in the
                // order `logit` uses).
                net.row_features(tables, interactions, r, &mut row_features);
                let z: f64 = row_features.iter().fold(0.0, |sum, &(j, x)| sum + weights[j] as f64 * x as f64);
                let error = batch_loss.add(z, label);
                for &(j, x) in row_features.iter() {
                    gradient[j] += error * x as f64 + penalty[j] * weights[j] as f64;
                    if !in_batch[j] {
                        in_batch[j] = true;
                        touched.push(j);
                    }
                }
            }
            let scale = 1.0 / batch.len() as f64;
            for &j in touched.iter() {
                adagrad_step(&mut weights[j], &mut squared_gradients[j], gradient[j] * scale, net.learning_rate);
                gradient[j] = 0.0;
                in_batch[j] = false;
            }
            touched.clear();
            total += batch_loss.total() * scale;
            batches += 1;
        }
        let values = Tensor::from_slice(weights.as_slice(), weights.len(), &Device::Cpu)?;
        self.store.vars()[0].set(&values)?;
        Ok(total / batches.max(1) as f64)
    }
}

/// The penalty gradient per occurrence per unit of weight of weight `j`, read by `count`
/// training rows, for a strength `l2_j` given as `n_l2 = N l2_j`: `N l2_j / n_j` (see the
/// module docs); 0 for the bias and for weights no row reads.
fn penalty_per_occurrence(j: usize, count: u64, n_l2: f64) -> f64 {
    if j == 0 || count == 0 {
        0.0
    } else {
        n_l2 / count as f64
    }
}

/// A minibatch's summed log loss, added up a row at a time from the one `exp` the row's
/// gradient needs ([`LogLossSum::add`]).
///
/// A row's log loss is `max(z, 0) - z label + ln(1 + exp(-|z|))`. Summed directly, every row
/// costs a `log1p` and a second `exp` (of `-|z|`) besides the gradient's `exp(-z)`: 22 % of the
/// logistic stage's time at 1M users (perf, bench/README.md). Here the linear parts are summed,
/// and the factors `1 + exp(-|z|)` (in `(1, 2]`, formed from `exp(-z)`: itself where `z >= 0`,
/// its reciprocal otherwise) are multiplied up, with one `ln` of the product at the end of
/// the batch (and whenever the product grows past [`LogLossSum::RENORMALIZE_ABOVE`]). The
/// result equals the direct sum up to float rounding (relative error about `rows * 1e-16`);
/// it is only the recorded training loss: gradients, weights and every metric are unchanged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLossSum {
    linear: f64,
    product: f64,
    logs: f64,
}

impl Default for LogLossSum {
    fn default() -> LogLossSum {
        LogLossSum { linear: 0.0, product: 1.0, logs: 0.0 }
    }
}

impl LogLossSum {
    /// Above this the product is folded into `logs` (each factor is at most 2, so it stays
    /// far from overflow).
    const RENORMALIZE_ABOVE: f64 = 1e280;

    /// Adds the row with logit `z` and label `label`; returns the logit's gradient
    /// `sigmoid(z) - label`.
    #[inline(always)]
    fn add(&mut self, z: f64, label: f64) -> f64 {
        let exp_neg_z = (-z).exp();
        let denominator = 1.0 + exp_neg_z;
        let factor = if z >= 0.0 { denominator } else { 1.0 + exp_neg_z.recip() };
        self.linear += z.max(0.0) - z * label;
        self.product *= factor;
        if self.product > Self::RENORMALIZE_ABOVE {
            self.logs += self.product.ln();
            self.product = 1.0;
        }
        1.0 / denominator - label
    }

    /// The summed log loss of the rows added.
    fn total(&self) -> f64 {
        self.linear + self.logs + self.product.ln()
    }
}

/// Adagrad's update of a weight with minibatch gradient `g` (its sum of squares in `squared`).
fn adagrad_step(weight: &mut f32, squared: &mut f64, g: f64, learning_rate: f64) {
    *squared += g * g;
    let step = learning_rate * g / (squared.sqrt() + ADAGRAD_EPS);
    *weight = (*weight as f64 - step) as f32;
}

/// The L2 strengths a logistic model was chosen among, on validation query rows only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L2Search {
    /// The kept model's `l2` and `cross_l2`.
    pub l2: f64,
    pub cross_l2: f64,
    /// Every candidate: `l2` in the config's order, then `cross_l2`.
    pub candidates: Vec<L2Candidate>,
}

/// One candidate pair of strengths: its early-stopped model's validation metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L2Candidate {
    pub l2: f64,
    pub cross_l2: f64,
    pub best_epoch: usize,
    pub validation_auc: Option<f64>,
    pub validation_logloss: Option<f64>,
}

impl L2Candidate {
    /// Whether `self` should be kept over `other`: higher validation AUC; ties (or no AUC on
    /// either) to the stronger penalty, `l2` first; a candidate with an AUC beats one without.
    fn beats(&self, other: &L2Candidate) -> bool {
        match (self.validation_auc, other.validation_auc) {
            (Some(a), Some(b)) if a != b => a > b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            _ => (self.l2, self.cross_l2) > (other.l2, other.cross_l2),
        }
    }
}

/// Keeps, of `models` (one per pair of `config.l2` and `config.cross_l2` values, `l2` in the
/// config's order, then `cross_l2`, as [`train_grid`] returns them), the one with the best
/// validation AUC; ties go to the earlier. The kept model carries the full `config` and the
/// search in [`TrainedModel::l2_search`].
pub(crate) fn train_with_l2_search(
    config: &LogisticConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    models: Vec<TrainedModel>,
) -> Result<TrainedModel, ModelError> {
    let mut candidates = Vec::with_capacity(models.len());
    let mut best: Option<(TrainedModel, usize)> = None;
    for model in models {
        let MethodConfig::Logistic(single) = &model.method else {
            unreachable!("the grid trains logistic models")
        };
        let (l2, cross_l2) = (single.l2[0], single.cross_l2[0]);
        // The data were checked when training started (`train`): not again for every candidate.
        let validation =
            method_for(&model.method).predict(&model, interactions, tasks, None, &[TaskRole::Validation])?;
        let (validation_auc, validation_logloss) = overall_auc_and_logloss(&validation, interactions);
        let candidate = L2Candidate { l2, cross_l2, best_epoch: model.best_epoch, validation_auc, validation_logloss };
        tracing::info!(
            "logistic l2 {l2:e} cross_l2 {cross_l2:e}: best epoch {}, validation auc {:?}, log loss {:?}",
            candidate.best_epoch,
            candidate.validation_auc,
            candidate.validation_logloss
        );
        let keep = match &best {
            None => true,
            Some((_, k)) => candidate.beats(&candidates[*k]),
        };
        candidates.push(candidate);
        if keep {
            best = Some((model, candidates.len() - 1));
        }
    }
    let (model, kept) = best.ok_or_else(|| {
        ModelError::InvalidConfig(vec![crate::config::ConfigIssue {
            field: "l2".into(),
            message: "lists no value".into(),
        }])
    })?;
    let (l2, cross_l2) = (candidates[kept].l2, candidates[kept].cross_l2);
    tracing::info!(
        "logistic: l2 {l2:e} cross_l2 {cross_l2:e} chosen on validation auc {:?}",
        candidates[kept].validation_auc
    );
    Ok(TrainedModel {
        method: MethodConfig::Logistic(config.clone()),
        l2_search: Some(L2Search {
            l2,
            cross_l2,
            candidates,
        }),
        ..model
    })
}

#[cfg(test)]
mod tests {
    use super::LogLossSum;

    /// A row's log loss and gradient summed the direct way: `log1p` and two `exp`s a row.
    fn direct(z: f64, label: f64) -> (f64, f64) {
        (z.max(0.0) - z * label + (-z.abs()).exp().ln_1p(), 1.0 / (1.0 + (-z).exp()) - label)
    }

    fn logits(n: usize) -> impl Iterator<Item = (f64, f64)> {
        (0..n).map(|k| (((k * 7919) % 2001) as f64 / 100.0 - 10.0, (k % 3 == 0) as u8 as f64))
    }

    #[test]
    fn the_batch_loss_is_the_direct_sum_up_to_rounding_and_the_gradient_bit_for_bit() {
        for rows in [1, 256, 10_000] {
            let (mut summed, mut expected) = (LogLossSum::default(), 0.0);
            for (z, label) in logits(rows) {
                let (loss, error) = direct(z, label);
                expected += loss;
                assert_eq!(summed.add(z, label).to_bits(), error.to_bits(), "z {z}");
            }
            let relative = (summed.total() - expected).abs() / expected;
            assert!(relative < 1e-12, "{rows} rows: {} against {expected}", summed.total());
        }
    }

    #[test]
    fn a_batch_of_large_losses_folds_its_product_before_it_overflows() {
        // Every factor is 2 (z = 0): 2^5000 overflows an f64 unless the product is folded.
        let mut summed = LogLossSum::default();
        for _ in 0..5000 {
            summed.add(0.0, 1.0);
        }
        let expected = 5000.0 * std::f64::consts::LN_2;
        assert!((summed.total() - expected).abs() < 1e-9 * expected, "{}", summed.total());
    }

    #[test]
    fn extreme_logits_keep_the_loss_finite() {
        let mut summed = LogLossSum::default();
        summed.add(-800.0, 0.0);
        summed.add(800.0, 1.0);
        assert_eq!(summed.total(), 0.0);
        summed.add(-800.0, 1.0);
        assert_eq!(summed.total(), 800.0);
    }
}
