//! The baselines' hand-written training step (`baselines::step`) against candle's autograd: the
//! same loss and the same gradient of every dense weight and every gathered id row, for each
//! layout `BaselineNet::create` builds; the hand-written scoring pass against candle's logits;
//! and training that is bit-for-bit reproducible.

mod common;

use candle_core::Tensor;
use limaml_models::baselines::{BaselineNet, RowSupports};
use limaml_models::inputs::{DataShape, Features};
use limaml_models::lazy_adam::Optimizers;
use limaml_models::{MethodConfig, TrainConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// `|a - b| <= 1e-5 * max |b|` elementwise, with `b` not all zero (a comparison that can fail).
fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the autograd gradient is all zeros");
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst <= 1e-5 * scale, "{what}: largest difference {worst} (scale {scale})");
}

fn global(activity_features: bool) -> MethodConfig {
    MethodConfig::Global { hidden: vec![24, 12], item_id_embedding_dim: 8, activity_features }
}

/// `kind`'s defaults with the hidden widths `widths`.
fn with_hidden(kind: &str, widths: &[usize]) -> MethodConfig {
    let mut config = MethodConfig::default_for(kind).unwrap();
    match &mut config {
        MethodConfig::IdEmbedding { hidden, .. } | MethodConfig::WideDeep { hidden, .. } => *hidden = widths.to_vec(),
        other => panic!("{} has no id embedding", other.kind_name()),
    }
    config
}

/// A model of `config` on the synthetic data after one epoch (so that the wide weights are no
/// longer zero), and its optimizer.
fn trained_one_epoch(config: &MethodConfig) -> (BaselineNet, limaml_models::params::ParamStore, Optimizers) {
    let (interactions, tasks) = common::synthetic(5);
    let mut rng = StdRng::seed_from_u64(3);
    let (net, store) = BaselineNet::create(config, DataShape::of(&tasks), &mut rng).unwrap();
    let mut optimizer = Optimizers::new(&store, &common::quick_train(), &net.embedding_tables()).unwrap();
    net.train_epoch(&store, &mut optimizer, &interactions, &tasks, 128, &mut rng).unwrap();
    (net, store, optimizer)
}

/// The loss and every gradient of one minibatch step (200 rows, with id dropout drawn), both
/// ways.
fn compare_step(config: &MethodConfig) {
    let (interactions, tasks) = common::synthetic(5);
    let features = Features::new(&tasks.features).unwrap();
    let (net, store, mut optimizer) = trained_one_epoch(config);
    let mut rng = StdRng::seed_from_u64(11);
    let batch: Vec<u32> = tasks.baseline_train_rows.iter().step_by(7).take(200).copied().collect();
    let step = net.gather_step(&mut optimizer, &interactions, &tasks, &batch, &mut rng).unwrap();
    let loss = net.autograd_step_loss(&store, &features, &step).unwrap();
    let expected = loss.backward().unwrap();
    let (hand_loss, grads) = net.step_gradients(&store, &tasks, &step).unwrap();
    let autograd_loss = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((hand_loss - autograd_loss).abs() <= 1e-5 * autograd_loss, "loss {hand_loss} vs {autograd_loss}");
    let tables = net.embedding_tables();
    for (index, var) in store.vars().iter().enumerate().filter(|(k, _)| !tables.contains(k)) {
        let name = &store.names()[index];
        let reference = expected.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no autograd gradient"));
        let gradient = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no hand-written gradient"));
        assert_close(name, gradient, reference);
    }
    assert_eq!(step.gathered.len(), tables.len(), "every id table is gathered");
    for gathered in &step.gathered {
        let name = &store.names()[gathered.table];
        let values = gathered.values.as_tensor();
        let reference = expected.get(values).unwrap_or_else(|| panic!("{name}: no autograd gradient"));
        let gradient = grads.get(values).unwrap_or_else(|| panic!("{name}: no hand-written gradient"));
        assert_close(&format!("gathered {name}"), gradient, reference);
    }
}

#[test]
fn global_step_matches_autograd() {
    compare_step(&global(false));
}

#[test]
fn global_with_activity_features_step_matches_autograd() {
    compare_step(&global(true));
}

#[test]
fn id_embedding_step_matches_autograd() {
    compare_step(&with_hidden("id_embedding", &[20]));
}

#[test]
fn wide_deep_step_matches_autograd() {
    compare_step(&with_hidden("wide_deep", &[24, 16, 8]));
}

/// Every weight's bits after two epochs of `config` from seed `seed`.
fn weights_after_two_epochs(config: &MethodConfig, seed: u64) -> Vec<Vec<u32>> {
    let (interactions, tasks) = common::synthetic(5);
    let mut rng = StdRng::seed_from_u64(seed);
    let (net, store) = BaselineNet::create(config, DataShape::of(&tasks), &mut rng).unwrap();
    let train = TrainConfig { batch_size: 64, ..common::quick_train() };
    let mut optimizer = Optimizers::new(&store, &train, &net.embedding_tables()).unwrap();
    for _ in 0..2 {
        net.train_epoch(&store, &mut optimizer, &interactions, &tasks, train.batch_size, &mut rng).unwrap();
    }
    optimizer.catch_up().unwrap();
    common::weight_bits(&store)
}

#[test]
fn training_twice_with_the_same_seed_gives_bit_identical_weights() {
    for config in [global(true), with_hidden("wide_deep", &[24, 16])] {
        let first = weights_after_two_epochs(&config, 9);
        assert_eq!(first, weights_after_two_epochs(&config, 9), "{}", config.kind_name());
        assert_ne!(first, weights_after_two_epochs(&config, 10), "{}: the seed matters", config.kind_name());
    }
}

/// The logits of every task's query rows (activity summarised over the task's support), both
/// ways.
fn compare_scoring(config: &MethodConfig) {
    let (interactions, tasks) = common::synthetic(5);
    let features = Features::new(&tasks.features).unwrap();
    let (net, store, _) = trained_one_epoch(config);
    let params = store.tensors();
    let (mut rows, mut task_index) = (Vec::new(), Vec::new());
    for (t, task) in tasks.tasks.iter().enumerate() {
        rows.extend_from_slice(&task.query);
        task_index.extend(std::iter::repeat_n(t as u32, task.query.len()));
    }
    let support_of = |t: u32| tasks.tasks[t as usize].support.clone();
    let supports = || Some(RowSupports { task_index: &task_index, support_of: &support_of });
    let expected = net.logits(&params, &features, &interactions, &tasks, &rows, supports()).unwrap();
    let weights = net.plain_weights(&params).unwrap();
    let logits = net.forward_logits(&weights, &interactions, &tasks, &rows, supports());
    let logits = Tensor::from_vec(logits, rows.len(), &candle_core::Device::Cpu).unwrap();
    assert_close(&format!("{} logits", config.kind_name()), &logits, &expected);
}

#[test]
fn hand_written_scoring_matches_candle_logits_for_every_layout() {
    for config in [global(false), global(true), with_hidden("id_embedding", &[20]), with_hidden("wide_deep", &[24, 16])] {
        compare_scoring(&config);
    }
}
