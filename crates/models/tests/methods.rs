//! Specifications of training, serving and evaluation on the synthetic task set.

mod common;

use common::*;
use limaml_data::TaskRole;
use limaml_models::*;

/// The overall metrics of the test tasks' query rows.
fn test_metrics(
    model: &TrainedModel,
    interactions: &limaml_data::Interactions,
    tasks: &limaml_data::TaskSet,
) -> Metrics {
    let predictions = predict(model, interactions, tasks, None, &[TaskRole::Test]).unwrap();
    evaluate(&predictions, interactions, tasks).overall
}

fn test_auc(
    model: &TrainedModel,
    interactions: &limaml_data::Interactions,
    tasks: &limaml_data::TaskSet,
) -> f64 {
    test_metrics(model, interactions, tasks).auc.unwrap()
}

/// One epoch of `method` with the quick training settings: enough for tests of what a trained
/// model does, not of how well it does.
fn train_one_epoch(
    method: &MethodConfig,
    interactions: &limaml_data::Interactions,
    tasks: &limaml_data::TaskSet,
    seed: u64,
) -> TrainedModel {
    let train_config = TrainConfig {
        epochs: 1,
        ..quick_train()
    };
    train(method, &train_config, interactions, tasks, seed, &mut |_| {}).unwrap()
}

#[test]
fn every_personalized_method_beats_global_on_test_auc() {
    let (interactions, tasks) = synthetic(7);
    let train_config = quick_train();
    let mut aucs = Vec::new();
    for (name, method) in all_methods() {
        let model = train(
            &method,
            &train_config,
            &interactions,
            &tasks,
            1,
            &mut |_| {},
        )
        .unwrap();
        aucs.push((
            name,
            test_auc(&model, &interactions, &tasks),
            model.best_epoch,
        ));
    }
    let oracle = oracle_predictions(&interactions, &tasks, &[TaskRole::Test]).unwrap();
    let oracle_auc = evaluate(&oracle, &interactions, &tasks)
        .overall
        .auc
        .unwrap();
    eprintln!("test AUC (name, auc, best epoch): {aucs:?}; oracle {oracle_auc:.4}");
    let global = aucs[0].1;
    for &(name, auc, _) in &aucs[1..] {
        assert!(
            auc > global + 0.02,
            "{name} AUC {auc:.4} does not beat global {global:.4}"
        );
        assert!(
            auc <= oracle_auc + 0.03,
            "{name} AUC {auc:.4} above the oracle {oracle_auc:.4}"
        );
    }
}

#[test]
fn same_seed_gives_identical_weights_and_metrics() {
    let (interactions, tasks) = synthetic(3);
    let train_config = TrainConfig {
        epochs: 3,
        ..quick_train()
    };
    for (_, method) in all_methods() {
        let a = train(
            &method,
            &train_config,
            &interactions,
            &tasks,
            42,
            &mut |_| {},
        )
        .unwrap();
        let b = train(
            &method,
            &train_config,
            &interactions,
            &tasks,
            42,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(a.weights, b.weights, "{}", method.kind_name());
        assert_eq!(a.curve, b.curve);
        let pa = predict(&a, &interactions, &tasks, None, &[TaskRole::Test]).unwrap();
        let pb = predict(&b, &interactions, &tasks, None, &[TaskRole::Test]).unwrap();
        assert_eq!(pa, pb);
    }
}

#[test]
fn different_seeds_give_different_weights() {
    let (interactions, tasks) = synthetic(3);
    let train_config = TrainConfig {
        epochs: 1,
        ..quick_train()
    };
    let method = MethodConfig::Limaml(limaml());
    let a = train(
        &method,
        &train_config,
        &interactions,
        &tasks,
        1,
        &mut |_| {},
    )
    .unwrap();
    let b = train(
        &method,
        &train_config,
        &interactions,
        &tasks,
        2,
        &mut |_| {},
    )
    .unwrap();
    assert_ne!(a.weights, b.weights);
}

#[test]
fn serving_from_exported_embeddings_matches_the_adapted_meta_block() {
    let (interactions, tasks) = synthetic(5);
    let train_config = TrainConfig {
        epochs: 4,
        ..quick_train()
    };
    let config = LimamlConfig {
        inner_steps: 2,
        ..limaml()
    };
    let model = train(
        &MethodConfig::Limaml(config),
        &train_config,
        &interactions,
        &tasks,
        9,
        &mut |_| {},
    )
    .unwrap();
    let table =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Latest).unwrap();
    let roles = [TaskRole::Test, TaskRole::Validation];
    let served = predict(&model, &interactions, &tasks, Some(&table), &roles).unwrap();
    let adapted = predict_adapted(&model, &interactions, &tasks, &roles).unwrap();
    assert_eq!(served.rows, adapted.rows);
    assert_eq!(served.task_index, adapted.task_index);
    let max_gap = served
        .score
        .iter()
        .zip(&adapted.score)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_gap < 1e-5,
        "serving and adapted scores differ by {max_gap}"
    );
    // Adaptation changes the embedding: the served scores are not the unadapted ones.
    let unadapted = MethodConfig::Limaml(LimamlConfig {
        inner_steps: 0,
        ..limaml()
    });
    let frozen = TrainedModel {
        method: unadapted,
        ..model.clone()
    };
    let plain = predict(&frozen, &interactions, &tasks, None, &roles).unwrap();
    assert!(plain
        .score
        .iter()
        .zip(&served.score)
        .any(|(a, b)| (a - b).abs() > 1e-4));
}

#[test]
fn exported_embeddings_cover_each_entity_once_and_round_trip() {
    let (interactions, tasks) = synthetic(5);
    let model = train_one_epoch(&MethodConfig::Limaml(limaml()), &interactions, &tasks, 9);
    let table =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Latest).unwrap();
    assert_eq!(table.entity_ids, (0..N_USERS as u32).collect::<Vec<_>>());
    assert_eq!(table.values.len(), N_USERS * table.dim);
    let bytes = table.to_safetensors_bytes().unwrap();
    assert_eq!(
        MetaEmbeddingTable::from_safetensors_bytes(&bytes).unwrap(),
        table
    );
    let csv = table.to_csv();
    assert_eq!(csv.lines().count(), N_USERS + 1);
    assert!(csv.starts_with("entity,m0,m1,"));
    let stale =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Stale).unwrap();
    assert_ne!(
        stale.values, table.values,
        "a smaller support set adapts to other embeddings"
    );
}

#[test]
fn stale_export_without_stale_support_is_a_typed_error() {
    let (interactions, tasks) = synthetic_item_tasks(2);
    let model = train_one_epoch(&MethodConfig::Limaml(limaml()), &interactions, &tasks, 1);
    let err =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Stale).unwrap_err();
    assert!(matches!(err, ModelError::NoStaleSupport { .. }), "{err}");
}

#[test]
fn baselines_have_no_meta_embeddings() {
    let (interactions, tasks) = synthetic(5);
    let method = MethodConfig::default_for("global").unwrap();
    let model = train_one_epoch(&method, &interactions, &tasks, 1);
    let err =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Latest).unwrap_err();
    assert!(matches!(err, ModelError::NotAMetaModel(_)));
}

#[test]
fn second_order_runs_and_differs_from_first_order() {
    let (interactions, tasks) = synthetic(11);
    let train_config = TrainConfig {
        epochs: 2,
        ..quick_train()
    };
    let first = LimamlConfig {
        inner_steps: 2,
        ..limaml()
    };
    let second = LimamlConfig {
        second_order: true,
        ..first.clone()
    };
    let a = train(
        &MethodConfig::Limaml(first),
        &train_config,
        &interactions,
        &tasks,
        4,
        &mut |_| {},
    )
    .unwrap();
    let mut epochs_seen = 0;
    let b = train(
        &MethodConfig::Limaml(second.clone()),
        &train_config,
        &interactions,
        &tasks,
        4,
        &mut |_| epochs_seen += 1,
    )
    .unwrap();
    assert_eq!(
        epochs_seen,
        b.curve.len(),
        "epoch records reach the caller from the worker thread"
    );
    assert_ne!(a.weights, b.weights);
    let gap = (a.curve[0].train_loss - b.curve[0].train_loss).abs();
    assert!(gap < 0.05, "first epoch losses should be close: {gap}");
    assert!(b.curve.iter().all(|r| r.train_loss.is_finite()));
    let c = train(
        &MethodConfig::Limaml(second),
        &train_config,
        &interactions,
        &tasks,
        4,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(b.weights, c.weights, "second-order is deterministic too");
}

#[test]
fn early_stopping_keeps_the_best_validation_epoch() {
    let (interactions, tasks) = synthetic(13);
    // A large learning rate overfits quickly, so validation AUC peaks early.
    let train_config = TrainConfig {
        epochs: 40,
        learning_rate: 0.05,
        patience: 2,
        ..quick_train()
    };
    let method = MethodConfig::default_for("id_embedding").unwrap();
    let model = train(
        &method,
        &train_config,
        &interactions,
        &tasks,
        3,
        &mut |_| {},
    )
    .unwrap();
    let aucs: Vec<f64> = model
        .curve
        .iter()
        .map(|r| r.validation_auc.unwrap())
        .collect();
    let best = aucs.iter().cloned().fold(f64::MIN, f64::max);
    let first_best = aucs.iter().position(|&a| a == best).unwrap() + 1;
    assert_eq!(model.best_epoch, first_best);
    assert!(model.curve.len() < 40, "stopped early: {aucs:?}");
    assert_eq!(model.curve.len(), model.best_epoch + train_config.patience);
    let validation = predict(&model, &interactions, &tasks, None, &[TaskRole::Validation]).unwrap();
    let kept_auc = evaluate(&validation, &interactions, &tasks)
        .overall
        .auc
        .unwrap();
    assert_eq!(kept_auc, best, "the kept weights are the best epoch's");
}

#[test]
fn trained_model_round_trips_through_bytes() {
    let (interactions, tasks) = synthetic(5);
    let method = MethodConfig::default_for("wide_deep").unwrap();
    let model = train_one_epoch(&method, &interactions, &tasks, 1);
    let back = TrainedModel::from_bytes(&model.to_bytes().unwrap()).unwrap();
    assert_eq!(back, model);
}

#[test]
fn item_tasks_train_and_serve_with_the_same_code() {
    let (interactions, tasks) = synthetic_item_tasks(2);
    let train_config = TrainConfig {
        epochs: 3,
        ..quick_train()
    };
    let model = train(
        &MethodConfig::Limaml(limaml()),
        &train_config,
        &interactions,
        &tasks,
        1,
        &mut |_| {},
    )
    .unwrap();
    let table =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Latest).unwrap();
    assert_eq!(table.entity_ids.len(), N_ITEMS);
    let served = predict(
        &model,
        &interactions,
        &tasks,
        Some(&table),
        &[TaskRole::Test],
    )
    .unwrap();
    let adapted = predict_adapted(&model, &interactions, &tasks, &[TaskRole::Test]).unwrap();
    let max_gap = served
        .score
        .iter()
        .zip(&adapted.score)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_gap < 1e-5);
    assert!(served.score.iter().all(|s| s.is_finite()));
}

#[test]
fn a_model_rejects_a_task_set_of_another_shape() {
    let (interactions, tasks) = synthetic(5);
    let method = MethodConfig::default_for("global").unwrap();
    let model = train_one_epoch(&method, &interactions, &tasks, 1);
    let (other_interactions, other_tasks) = synthetic_item_tasks(5);
    let err = predict(
        &model,
        &other_interactions,
        &other_tasks,
        None,
        &[TaskRole::Test],
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::ShapeMismatch(_)));
}

#[test]
fn inconsistent_rows_are_a_typed_error() {
    let (interactions, mut tasks) = synthetic(5);
    tasks.tasks[0].query.push(interactions.len() as u32 + 5);
    let err = train(
        &MethodConfig::default_for("global").unwrap(),
        &quick_train(),
        &interactions,
        &tasks,
        1,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::InconsistentData(_)));
}

#[test]
fn evaluation_reports_segments_and_states() {
    let (interactions, tasks) = synthetic(5);
    let oracle = oracle_predictions(&interactions, &tasks, &[TaskRole::Test]).unwrap();
    let report = evaluate(&oracle, &interactions, &tasks);
    assert_eq!(report.by_state.keys().collect::<Vec<_>>(), ["cold", "warm"]);
    assert_eq!(
        report.by_segment.keys().collect::<Vec<_>>(),
        ["high", "low"]
    );
    let rows: usize = report.by_state.values().map(|m| m.rows).sum();
    assert_eq!(rows, report.overall.rows);
    assert_eq!(report.overall.tasks, 25);
    serde_json::to_string(&report).unwrap();
}

#[test]
fn bench_reports_positive_throughput() {
    let (interactions, tasks) = synthetic(5);
    let result =
        bench_meta_training(&limaml(), &quick_train(), &interactions, &tasks, 1, 3).unwrap();
    assert!(
        result.tasks_per_second > 0.0
            && result.entities_per_second > 0.0
            && result.rows_per_second > 0.0
    );
    assert_eq!(result.tasks, 30);
}

fn test_gauc(
    model: &TrainedModel,
    interactions: &limaml_data::Interactions,
    tasks: &limaml_data::TaskSet,
) -> f64 {
    test_metrics(model, interactions, tasks).gauc.unwrap()
}

#[test]
fn adapting_the_meta_embedding_reorders_items_within_each_user() {
    // The test data's users differ only in a hidden taste over item tags, so ranking within a
    // user (GAUC) beyond the item effects needs the support rows. The same trained weights are
    // scored with and without adaptation.
    let (interactions, tasks) = synthetic(7);
    let model = train(
        &MethodConfig::Limaml(limaml()),
        &quick_train(),
        &interactions,
        &tasks,
        1,
        &mut |_| {},
    )
    .unwrap();
    let adapted = test_gauc(&model, &interactions, &tasks);
    let MethodConfig::Limaml(config) = &model.method else { unreachable!() };
    let unadapted = TrainedModel {
        method: MethodConfig::Limaml(LimamlConfig {
            inner_steps: 0,
            ..config.clone()
        }),
        ..model.clone()
    };
    let frozen = test_gauc(&unadapted, &interactions, &tasks);
    eprintln!("test GAUC adapted {adapted:.4}, unadapted {frozen:.4}");
    assert!(
        adapted > frozen + 0.02,
        "adaptation moved GAUC from {frozen:.4} to {adapted:.4}"
    );
}

#[test]
fn recent_export_adapts_on_the_newest_rows_as_many_as_the_stale_support_holds() {
    let (interactions, tasks) = synthetic(5);
    let model = train_one_epoch(&MethodConfig::Limaml(limaml()), &interactions, &tasks, 9);
    let recent =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Recent).unwrap();
    // The same export from task sets whose support is only its newest rows.
    let mut newest_only = tasks.clone();
    for task in &mut newest_only.tasks {
        let keep = task.stale_support.as_ref().unwrap().len();
        let mut rows = task.support.clone();
        rows.sort_by_key(|&r| (interactions.timestamp[r as usize], r));
        task.support = rows.split_off(rows.len() - keep);
    }
    let expected =
        export_meta_embeddings(&model, &interactions, &newest_only, SupportVersion::Latest)
            .unwrap();
    assert_eq!(recent, expected);
    let stale =
        export_meta_embeddings(&model, &interactions, &tasks, SupportVersion::Stale).unwrap();
    assert_ne!(recent.values, stale.values, "newest and oldest rows adapt differently");
}

#[test]
fn a_refreshed_id_embedding_scores_a_user_by_its_support_and_a_frozen_one_does_not() {
    let (interactions, tasks) = synthetic(4);
    let refreshing = MethodConfig::IdEmbedding {
        hidden: vec![16],
        item_id_embedding_dim: 8,
        user_embedding_dim: 8,
        id_dropout: 0.1,
        refresh_steps: 3,
        refresh_lr: 0.5,
    };
    let model = train_one_epoch(&refreshing, &interactions, &tasks, 2);
    let frozen = TrainedModel {
        method: MethodConfig::IdEmbedding {
            hidden: vec![16],
            item_id_embedding_dim: 8,
            user_embedding_dim: 8,
            id_dropout: 0.1,
            refresh_steps: 0,
            refresh_lr: 0.5,
        },
        ..model.clone()
    };
    // The same tasks with every support label flipped.
    let mut flipped = interactions.clone();
    for task in tasks.tasks.iter().filter(|t| t.role == TaskRole::Test) {
        for &r in &task.support {
            flipped.label[r as usize] = 1.0 - flipped.label[r as usize];
        }
    }
    let score = |m: &TrainedModel, i: &limaml_data::Interactions| {
        predict(m, i, &tasks, None, &[TaskRole::Test]).unwrap().score
    };
    assert_eq!(score(&frozen, &interactions), score(&frozen, &flipped), "frozen scores ignore the support");
    let (a, b) = (score(&model, &interactions), score(&model, &flipped));
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3), "refreshed scores follow the support");
}

#[test]
fn global_with_activity_features_scores_a_user_by_its_support_and_plain_global_does_not() {
    let (interactions, tasks) = synthetic(4);
    let with_activity = |on: bool| MethodConfig::Global {
        hidden: vec![16],
        item_id_embedding_dim: 8,
        activity_features: on,
    };
    let mut flipped = interactions.clone();
    for task in tasks.tasks.iter().filter(|t| t.role == TaskRole::Test) {
        for &r in &task.support {
            flipped.label[r as usize] = 1.0 - flipped.label[r as usize];
        }
    }
    for on in [false, true] {
        let model = train_one_epoch(&with_activity(on), &interactions, &tasks, 2);
        let score = |i: &limaml_data::Interactions| predict(&model, i, &tasks, None, &[TaskRole::Test]).unwrap().score;
        let (a, b) = (score(&interactions), score(&flipped));
        let moved = a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4);
        assert_eq!(moved, on, "activity_features = {on}: scores follow the support labels: {moved}");
    }
}
