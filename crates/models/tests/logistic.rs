//! Specifications of the `logistic` method on the synthetic task set.

mod common;

use common::*;
use limaml_data::{Interactions, TaskRole, TaskSet};
use limaml_models::*;

fn train_logistic(
    config: LogisticConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
) -> TrainedModel {
    let method = MethodConfig::Logistic(config);
    train(&method, &quick_train(), interactions, tasks, 1, &mut |_| {}).unwrap()
}

fn test_metrics(model: &TrainedModel, interactions: &Interactions, tasks: &TaskSet) -> Metrics {
    let predictions = predict(model, interactions, tasks, None, &[TaskRole::Test]).unwrap();
    evaluate(&predictions, interactions, tasks).overall
}

/// The rows of the query sets of tasks with `role`.
fn query_rows_of(tasks: &TaskSet, role: TaskRole) -> Vec<u32> {
    tasks
        .tasks
        .iter()
        .filter(|t| t.role == role)
        .flat_map(|t| t.query.iter().copied())
        .collect()
}

fn flip_labels(interactions: &mut Interactions, rows: &[u32]) {
    for &r in rows {
        let label = &mut interactions.label[r as usize];
        *label = 1.0 - *label;
    }
}

/// Sum of squared weights of a trained model.
fn squared_norm(model: &TrainedModel) -> f64 {
    let tensors =
        candle_core::safetensors::load_buffer(&model.weights, &candle_core::Device::Cpu).unwrap();
    tensors
        .values()
        .flat_map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(|w| (w as f64).powi(2))
        .sum()
}

#[test]
fn logistic_beats_a_constant_predictor_on_test_rows() {
    let (interactions, tasks) = synthetic(7);
    let model = train_logistic(LogisticConfig::default(), &interactions, &tasks);
    let metrics = test_metrics(&model, &interactions, &tasks);
    let positive_rate = tasks
        .baseline_train_rows
        .iter()
        .map(|&r| interactions.label[r as usize] as f64)
        .sum::<f64>()
        / tasks.baseline_train_rows.len() as f64;
    let test_rows = query_rows_of(&tasks, TaskRole::Test);
    let constant_logloss = test_rows
        .iter()
        .map(|&r| {
            let y = interactions.label[r as usize] as f64;
            -(y * positive_rate.ln() + (1.0 - y) * (1.0 - positive_rate).ln())
        })
        .sum::<f64>()
        / test_rows.len() as f64;
    let (auc, logloss) = (metrics.auc.unwrap(), metrics.logloss.unwrap());
    assert!(auc > 0.65, "test AUC {auc:.4} (a constant scores 0.5)");
    assert!(
        logloss < constant_logloss - 0.02,
        "test log loss {logloss:.4} vs {constant_logloss:.4} for the training positive rate"
    );
}

#[test]
fn the_l2_search_records_every_pair_and_keeps_the_best_validation_auc() {
    let (interactions, tasks) = synthetic(3);
    let config = LogisticConfig {
        l2: vec![1e-5, 1e-3, 1e-1],
        cross_l2: vec![1e-4, 1e-2],
        ..LogisticConfig::default()
    };
    let model = train_logistic(config.clone(), &interactions, &tasks);
    let search = model.l2_search.as_ref().expect("logistic records its search");
    let pairs: Vec<(f64, f64)> = search
        .candidates
        .iter()
        .map(|c| (c.l2, c.cross_l2))
        .collect();
    assert_eq!(
        pairs,
        [(1e-5, 1e-4), (1e-5, 1e-2), (1e-3, 1e-4), (1e-3, 1e-2), (1e-1, 1e-4), (1e-1, 1e-2)]
    );
    let best = search
        .candidates
        .iter()
        .map(|c| c.validation_auc.unwrap())
        .fold(f64::MIN, f64::max);
    let kept = search
        .candidates
        .iter()
        .find(|c| (c.l2, c.cross_l2) == (search.l2, search.cross_l2))
        .unwrap();
    assert_eq!(kept.validation_auc, Some(best));
    assert_eq!(model.method, MethodConfig::Logistic(config), "the full grid is kept");
    let validation = predict(&model, &interactions, &tasks, None, &[TaskRole::Validation]).unwrap();
    let auc = evaluate(&validation, &interactions, &tasks).overall.auc;
    assert_eq!(auc, Some(best), "the kept weights are the chosen candidate's");
}

#[test]
fn the_l2_choice_and_weights_do_not_depend_on_test_labels() {
    let (interactions, tasks) = synthetic(5);
    let model = train_logistic(LogisticConfig::default(), &interactions, &tasks);

    let mut flipped_test = interactions.clone();
    flip_labels(&mut flipped_test, &query_rows_of(&tasks, TaskRole::Test));
    let same = train_logistic(LogisticConfig::default(), &flipped_test, &tasks);
    assert_eq!(same.l2_search, model.l2_search);
    assert_eq!(same.weights, model.weights);

    // The search does read the validation labels: flipping them changes what it measures.
    let mut flipped_validation = interactions.clone();
    flip_labels(
        &mut flipped_validation,
        &query_rows_of(&tasks, TaskRole::Validation),
    );
    let other = train_logistic(LogisticConfig::default(), &flipped_validation, &tasks);
    assert_ne!(other.l2_search, model.l2_search);
}

#[test]
fn a_stronger_l2_gives_smaller_weights() {
    let (interactions, tasks) = synthetic(5);
    let with = |l2: f64| {
        let config = LogisticConfig {
            l2: vec![l2],
            cross_l2: vec![l2],
            ..LogisticConfig::default()
        };
        squared_norm(&train_logistic(config, &interactions, &tasks))
    };
    let (weak, strong) = (with(1e-5), with(1e-1));
    assert!(strong < 0.5 * weak, "|w|^2 {strong:.4} at l2 0.1 vs {weak:.4} at 1e-5");
}

#[test]
fn the_lockstep_search_trains_each_pair_as_it_trains_alone() {
    // The grid trains every pair at once; one pair alone goes through the shared epoch loop
    // with its own trainer. Each candidate must be that model, bit for bit.
    let (interactions, tasks) = synthetic(3);
    let config = LogisticConfig {
        l2: vec![1e-5, 1e-3, 1e-1],
        cross_l2: vec![1e-4, 1e-2],
        ..LogisticConfig::default()
    };
    let grid = train_logistic(config.clone(), &interactions, &tasks);
    let search = grid.l2_search.clone().unwrap();
    assert_eq!(search.candidates.len(), 6);
    // Candidates that stop at different epochs leave the lockstep at different times.
    let best_epochs: std::collections::BTreeSet<usize> = search.candidates.iter().map(|c| c.best_epoch).collect();
    assert!(best_epochs.len() > 1, "every candidate stopped at the same epoch: {best_epochs:?}");
    for candidate in &search.candidates {
        let single = LogisticConfig { l2: vec![candidate.l2], cross_l2: vec![candidate.cross_l2], ..config.clone() };
        let alone = train_logistic(single, &interactions, &tasks);
        let alone_candidate = &alone.l2_search.as_ref().unwrap().candidates[0];
        assert_eq!(candidate, alone_candidate, "l2 {} cross_l2 {}", candidate.l2, candidate.cross_l2);
        if (candidate.l2, candidate.cross_l2) == (search.l2, search.cross_l2) {
            assert_eq!(grid.weights, alone.weights);
            assert_eq!(grid.curve, alone.curve);
            assert_eq!(grid.best_epoch, alone.best_epoch);
        }
    }
}
