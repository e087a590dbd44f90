//! The logistic search's candidates trained in lockstep: every pair of strengths over the same
//! minibatches at once, each weight's candidates side by side in memory.
//!
//! Owns [`train_grid`]. Must not choose among the candidates (`train_with_l2_search` does) nor
//! change what a candidate computes: each model it returns is, bit for bit, the model
//! [`LogisticTrainer`](super::LogisticTrainer) and the shared epoch loop (`train::train_one`)
//! train for that pair alone (a test checks it).
//!
//! Why: the candidates differ only in their strengths. They start from the same zero weights,
//! shuffle with the same seed (so they see the same minibatches) and read the same weights per
//! row. Trained one after another, every candidate pays the row's feature enumeration and, at
//! scale, a cache miss per user-id and user-tag weight (tens of millions of weights at 1M
//! users); side by side (weight `j`'s `C` candidates in one block, `blocks`), one enumeration
//! and one block's misses serve all `C` candidates, and the per-candidate arithmetic runs over
//! contiguous lanes. Each candidate's own operations, and their order, are the sequential trainer's; a
//! candidate that stops early keeps its best epoch's weights and leaves the lanes (they are
//! packed again without it), so the epochs after it cost only the candidates still training.

use candle_core::{Device, Tensor};
use limaml_data::{FeatureTables, Interactions, TaskRole, TaskSet};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::blocks::WeightBlocks;
use super::{adagrad_step, penalty_per_occurrence, LogLossSum, LogisticNet};
use crate::config::{LogisticConfig, MethodConfig, TrainConfig};
use crate::error::ModelError;
use crate::eval::{auc, query_rows};
use crate::inputs::DataShape;
use crate::mlp::sigmoid;
use crate::prefetch::{prefetch_interaction, prefetch_user_features};
use crate::train::{improves, EpochRecord, TrainedModel};

/// How many touched weights ahead the minibatch's Adagrad update prefetches their blocks.
const PREFETCH_AHEAD: usize = 8;

/// One candidate's early-stopping state.
struct Candidate {
    config: MethodConfig,
    curve: Vec<EpochRecord>,
    /// The best epoch so far, its validation AUC and its weights.
    best: Option<(usize, Option<f64>, Vec<f32>)>,
    stopped: bool,
}

/// Trains one logistic model per pair of `config.l2` and `config.cross_l2` values (`l2` in the
/// config's order, then `cross_l2`), all at once; returns them in that order, each as
/// `train_one` trains it given a config listing that pair alone (see the module docs).
pub(crate) fn train_grid(
    config: &LogisticConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<Vec<TrainedModel>, ModelError> {
    let rows = tasks.baseline_train_rows.as_slice();
    if rows.is_empty() {
        return Err(ModelError::NoTrainingData("baseline_train_rows is empty".into()));
    }
    let shape = DataShape::of(tasks);
    let mut candidates: Vec<Candidate> = Vec::new();
    for &l2 in &config.l2 {
        for &cross_l2 in &config.cross_l2 {
            let single = LogisticConfig { l2: vec![l2], cross_l2: vec![cross_l2], ..config.clone() };
            candidates.push(Candidate {
                config: MethodConfig::Logistic(single),
                curve: Vec::new(),
                best: None,
                stopped: false,
            });
        }
    }
    let lanes = candidates.len();
    let (net, _) = LogisticNet::create(config, shape)?;
    let tables = &tasks.features;
    let size = net.offsets.total;

    // Per weight: how many training rows read it (the penalty's denominator, as the sequential
    // trainer counts it), and `N * l2` per candidate for each of the two strength classes.
    let occurrences = net.occurrences(tables, interactions, rows);
    let n = rows.len() as f64;
    let (mut n_l2, mut n_cross_l2) = (Vec::with_capacity(lanes), Vec::with_capacity(lanes));
    for candidate in &candidates {
        let MethodConfig::Logistic(c) = &candidate.config else { unreachable!("built above") };
        n_l2.push(n * c.l2[0]);
        n_cross_l2.push(n * c.cross_l2[0]);
    }
    let mut lanes_state = Lanes {
        lanes,
        candidates: (0..lanes).collect(),
        n_l2,
        n_cross_l2,
        blocks: WeightBlocks::new(lanes, &occurrences),
        touched: Vec::new(),
        gradient: Vec::new(),
        penalty: Vec::new(),
        row_features: Vec::new(),
        next_features: Vec::new(),
        logit: vec![0f64; lanes],
        error: vec![0f64; lanes],
        batch_loss: vec![LogLossSum::default(); lanes],
        total: vec![0f64; lanes],
    };

    drop(occurrences);
    let context = EpochContext { net: &net, tables, interactions, batch_size: train.batch_size };

    let (val_rows, _) = query_rows(tasks, &[TaskRole::Validation]);
    let val_labels: Vec<f32> = val_rows.iter().map(|&r| interactions.label[r as usize]).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    for epoch in 1..=train.epochs {
        let mut order = rows.to_vec();
        crate::shuffle::shuffle(&mut order, &mut rng);
        let batches = lanes_state.epoch(&context, &order);
        let Lanes { lanes, candidates: in_lanes, blocks, logit, total, .. } = &mut lanes_state;
        let lanes = *lanes;

        let validation_auc: Vec<Option<f64>> = if val_rows.is_empty() {
            vec![None; lanes]
        } else {
            let mut scores = vec![Vec::with_capacity(val_rows.len()); lanes];
            for &r in &val_rows {
                let (u, i) = (interactions.user[r as usize], interactions.item[r as usize]);
                logit.fill(0.0);
                net.for_each_feature(tables, u, i, |j, x| add_to_logits(logit, blocks.weights(j), x));
                scores.iter_mut().zip(logit.iter()).for_each(|(s, &z)| s.push(sigmoid(z as f32)));
            }
            scores.iter().map(|s| auc(s, &val_labels)).collect()
        };
        // The lanes whose candidate improved keep this epoch's weights, copied in one pass over
        // the weights into their best buffers (reused from the last improvement).
        let mut improved: Vec<(usize, Vec<f32>)> = Vec::new();
        for (c, &k) in in_lanes.iter().enumerate() {
            let candidate = &mut candidates[k];
            let record =
                EpochRecord { epoch, train_loss: total[c] / batches.max(1) as f64, validation_auc: validation_auc[c] };
            on_epoch(&record);
            candidate.curve.push(record);
            if improves(candidate.best.as_ref().map(|b| b.1), validation_auc[c]) {
                let buffer = candidate.best.take().map_or_else(Vec::new, |(_, _, kept)| kept);
                candidate.best = Some((epoch, validation_auc[c], Vec::new()));
                improved.push((c, buffer));
            } else if epoch - candidate.best.as_ref().map_or(0, |b| b.0) >= train.patience {
                candidate.stopped = true;
            }
        }
        blocks.copy_lanes(&mut improved);
        for (c, kept) in improved {
            if let Some(best) = &mut candidates[in_lanes[c]].best {
                best.2 = kept;
            }
        }
        if candidates.iter().all(|c| c.stopped) {
            break;
        }
        let keep: Vec<usize> = (0..lanes).filter(|&c| !candidates[lanes_state.candidates[c]].stopped).collect();
        if keep.len() < lanes {
            lanes_state.keep_lanes(&keep);
        }
    }

    candidates
        .into_iter()
        .map(|candidate| {
            let MethodConfig::Logistic(single) = &candidate.config else { unreachable!("built above") };
            let (best_epoch, _, kept) = candidate.best.expect("at least one epoch");
            let (_, store) = LogisticNet::create(single, shape)?;
            store.vars()[0].set(&Tensor::from_vec(kept, size, &Device::Cpu)?)?;
            Ok(TrainedModel {
                method: candidate.config.clone(),
                train: train.clone(),
                seed,
                shape,
                weights: store.to_safetensors_bytes()?,
                curve: candidate.curve,
                best_epoch,
                l2_search: None,
                meta_embeddings: None,
            })
        })
        .collect()
}

/// How many rows ahead of the current one [`prefetch_row_ahead`] brings in a row's ids and
/// label, and how many ahead its user's feature row (whose address needs the id).
const ROW_IDS_AHEAD: usize = 8;
const USER_ROW_AHEAD: usize = 3;

/// Prefetches, for the row at position `at` of `order`, the ids and label of the row
/// [`ROW_IDS_AHEAD`] later and the user feature row of the one [`USER_ROW_AHEAD`] later (its id
/// was prefetched rows before).
#[inline(always)]
fn prefetch_row_ahead(tables: &FeatureTables, interactions: &Interactions, order: &[u32], at: usize) {
    if let Some(&r) = order.get(at + ROW_IDS_AHEAD) {
        prefetch_interaction(interactions, r);
    }
    if let Some(&r) = order.get(at + USER_ROW_AHEAD) {
        prefetch_user_features(tables, interactions.user[r as usize]);
    }
}

/// Adds feature value `x` times its weight in each candidate (`weights`, one per lane) to the
/// candidates' logits, in `f64` as `LogisticNet::logit` sums.
#[inline(always)]
fn add_to_logits(logit: &mut [f64], weights: &[f32], x: f32) {
    logit.iter_mut().zip(weights).for_each(|(z, &w)| *z += w as f64 * x as f64);
}

/// What an epoch of the lanes reads.
struct EpochContext<'a> {
    net: &'a LogisticNet,
    tables: &'a FeatureTables,
    interactions: &'a Interactions,
    batch_size: usize,
}

/// The candidates still training: their weights and Adagrad state side by side, a block per
/// weight ([`WeightBlocks`]), and the scratch of a minibatch.
struct Lanes {
    lanes: usize,
    /// Per lane: the candidate it trains (its index in the grid), and that candidate's
    /// `N * l2` and `N * cross_l2`.
    candidates: Vec<usize>,
    n_l2: Vec<f64>,
    n_cross_l2: Vec<f64>,
    /// Per weight, every lane's weight and Adagrad sum, and the weight's slot in the current
    /// minibatch: its block in `gradient` and `penalty`.
    blocks: WeightBlocks,
    /// The weights the current minibatch touched, in first-touch order.
    touched: Vec<usize>,
    gradient: Vec<f64>,
    penalty: Vec<f64>,
    row_features: Vec<(usize, f32)>,
    /// The next row's features (see [`Lanes::epoch`]).
    next_features: Vec<(usize, f32)>,
    logit: Vec<f64>,
    error: Vec<f64>,
    batch_loss: Vec<LogLossSum>,
    /// Per candidate: the epoch's sum of mean minibatch losses.
    total: Vec<f64>,
}

impl Lanes {
    /// Keeps only lanes `keep` (increasing), in that order: packs each weight's kept lanes
    /// together again and resizes the per-lane scratch. Each kept lane's values are moved, not
    /// recomputed.
    fn keep_lanes(&mut self, keep: &[usize]) {
        let new = keep.len();
        self.blocks.keep_lanes(keep);
        self.candidates = keep.iter().map(|&c| self.candidates[c]).collect();
        self.n_l2 = keep.iter().map(|&c| self.n_l2[c]).collect();
        self.n_cross_l2 = keep.iter().map(|&c| self.n_cross_l2[c]).collect();
        self.lanes = new;
        for scratch in [&mut self.logit, &mut self.error, &mut self.total] {
            scratch.truncate(new);
        }
        self.batch_loss.truncate(new);
    }

    /// One pass over the rows in `order`, in minibatches; returns the number of minibatches.
    /// Runs with AVX2 where the CPU has it: wider lanes for the same operations in the same
    /// order (no fused multiply-add), so the same bits.
    fn epoch(&mut self, context: &EpochContext, order: &[u32]) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { self.epoch_avx2(context, order) };
            }
        }
        self.epoch_portable(context, order)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn epoch_avx2(&mut self, context: &EpochContext, order: &[u32]) -> usize {
        self.epoch_portable(context, order)
    }

    #[inline(always)]
    fn epoch_portable(&mut self, context: &EpochContext, order: &[u32]) -> usize {
        let EpochContext { net, tables, interactions, batch_size } = *context;
        let Lanes {
            lanes,
            n_l2,
            n_cross_l2,
            blocks,
            touched,
            gradient,
            penalty,
            row_features,
            next_features,
            logit,
            error,
            batch_loss,
            total,
            ..
        } = self;
        let lanes = *lanes;
        let learning_rate = net.learning_rate;
        // The penalty gradient per occurrence per unit of weight, `N l2_j / n_j` (0 for the
        // bias and for weights no row reads), of weight `j`, read by `count` rows, for every
        // candidate, into `out`.
        let penalty_of = |j: usize, count: u64, out: &mut [f64]| {
            let class = if net.is_cross(j) { &n_cross_l2[..] } else { &n_l2[..] };
            out.iter_mut().zip(class).for_each(|(p, &nl2)| *p = penalty_per_occurrence(j, count, nl2));
        };
        total.fill(0.0);
        let mut batches = 0usize;
        // A row's features are enumerated one row ahead, and their weights' blocks prefetched,
        // so the next row's cache misses overlap this row's arithmetic; further ahead, the
        // rows' ids and labels and then their users' feature rows are prefetched (shuffled rows
        // over tables of millions: each a miss).
        for (b, batch) in order.chunks(batch_size).enumerate() {
            batch_loss.fill(LogLossSum::default());
            net.row_features(tables, interactions, batch[0], next_features);
            for (k, &r) in batch.iter().enumerate() {
                let at = b * batch_size + k;
                prefetch_row_ahead(tables, interactions, order, at);
                let label = interactions.label[r as usize] as f64;
                std::mem::swap(row_features, next_features);
                if let Some(&ahead) = batch.get(k + 1) {
                    net.row_features(tables, interactions, ahead, next_features);
                    for &(j, _) in next_features.iter() {
                        blocks.prefetch(j);
                    }
                }
                logit.fill(0.0);
                for &(j, x) in row_features.iter() {
                    add_to_logits(logit, blocks.weights(j), x);
                }
                for ((&z, e), batch_loss) in logit.iter().zip(error.iter_mut()).zip(batch_loss.iter_mut()) {
                    *e = batch_loss.add(z, label);
                }
                for &(j, x) in row_features.iter() {
                    let s = match blocks.slot(j) {
                        Some(s) => s,
                        None => {
                            let s = touched.len();
                            blocks.set_slot(j, Some(s));
                            touched.push(j);
                            gradient.resize((s + 1) * lanes, 0.0);
                            penalty.resize((s + 1) * lanes, 0.0);
                            penalty_of(j, blocks.occurrences(j), &mut penalty[s * lanes..(s + 1) * lanes]);
                            s
                        }
                    };
                    let g = &mut gradient[s * lanes..(s + 1) * lanes];
                    let p = &penalty[s * lanes..(s + 1) * lanes];
                    let w = blocks.weights(j);
                    for ((g, &e), (&p, &w)) in g.iter_mut().zip(error.iter()).zip(p.iter().zip(w)) {
                        *g += e * x as f64 + p * w as f64;
                    }
                }
            }
            let scale = 1.0 / batch.len() as f64;
            for (s, &j) in touched.iter().enumerate() {
                if let Some(&ahead) = touched.get(s + PREFETCH_AHEAD) {
                    blocks.prefetch(ahead);
                }
                let g = &gradient[s * lanes..(s + 1) * lanes];
                let (sq, w) = blocks.sums_and_weights_mut(j);
                for ((w, sq), &g) in w.iter_mut().zip(sq.iter_mut()).zip(g) {
                    adagrad_step(w, sq, g * scale, learning_rate);
                }
                blocks.set_slot(j, None);
            }
            touched.clear();
            gradient.clear();
            total.iter_mut().zip(batch_loss.iter()).for_each(|(t, l)| *t += l.total() * scale);
            batches += 1;
        }
        batches
    }
}
