use super::*;
use limaml_data::{FeatureTables, Task, TaskEntity};

#[test]
fn gauc_weights_by_rows_and_skips_single_class_groups() {
    // Group 0 (3 rows): AUC 1. Group 1 (2 rows): AUC 0. Group 2: one class, skipped.
    let scores = [0.9, 0.8, 0.1, 0.2, 0.7, 0.5, 0.4];
    let labels = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
    let groups = [0, 0, 0, 1, 1, 2, 2];
    let (value, groups_seen, skipped) = gauc(&scores, &labels, &groups);
    assert!((value.unwrap() - 3.0 / 5.0).abs() < 1e-12);
    assert_eq!((groups_seen, skipped), (3, 1));
}

/// Two users' test tasks: user 0 with rows 0..4, user 1 with rows 4..7.
fn two_tasks() -> (Interactions, TaskSet) {
    let interactions = Interactions {
        user: vec![0, 0, 0, 0, 1, 1, 1],
        item: vec![0, 1, 2, 3, 0, 1, 2],
        label: vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0],
        timestamp: vec![0; 7],
        true_probability: None,
    };
    let task = |entity: u32, query: Vec<u32>, segment: u8| Task {
        entity,
        role: TaskRole::Test,
        state: EntityState::Warm,
        segment,
        n_interactions: query.len() as u32,
        support: vec![],
        query,
        stale_support: None,
        window: None,
    };
    let tasks = TaskSet {
        entity: TaskEntity::User,
        tasks: vec![task(0, vec![0, 1, 2, 3], 1), task(1, vec![4, 5, 6], 0)],
        segments: vec!["low".into(), "high".into()],
        segment_bounds: vec![3],
        features: FeatureTables {
            n_users: 2,
            n_items: 4,
            user_features: vec![],
            user_dim: 0,
            item_features: vec![],
            item_dim: 0,
            item_tags: vec![],
            n_tags: 0,
            user_columns: vec![],
            item_columns: vec![],
        },
        baseline_train_rows: vec![],
        skipped_entities: 0,
    };
    (interactions, tasks)
}

fn predictions(score: Vec<f32>) -> Predictions {
    Predictions { rows: (0..7).collect(), task_index: vec![0, 0, 0, 0, 1, 1, 1], score }
}

#[test]
fn gauc_weighting_is_selectable() {
    let (interactions, tasks) = two_tasks();
    // User 0: AUC 1 (4 rows, 2 positives). User 1: AUC 0 (3 rows, 1 positive).
    let p = predictions(vec![0.9, 0.1, 0.8, 0.2, 0.9, 0.1, 0.8]);
    let overall = |weighting| {
        let config = EvalConfig { gauc_weighting: weighting, ..EvalConfig::default() };
        evaluate_with(&p, &interactions, &tasks, &config, None).report.overall
    };
    assert_eq!(overall(GaucWeighting::Impressions).gauc, Some(4.0 / 7.0));
    assert_eq!(overall(GaucWeighting::Uniform).gauc, Some(0.5));
    assert_eq!(overall(GaucWeighting::Positives).gauc, Some(2.0 / 3.0));
    let m = overall(GaucWeighting::Impressions);
    assert_eq!(m.more["gauc_uniform"], 0.5);
}

#[test]
fn ranking_metrics_average_per_task_and_per_slice() {
    let (interactions, tasks) = two_tasks();
    let p = predictions(vec![0.9, 0.1, 0.8, 0.2, 0.9, 0.1, 0.8]);
    let config = EvalConfig { ks: vec![1], ..EvalConfig::default() };
    let evaluation = evaluate_with(&p, &interactions, &tasks, &config, None);
    // User 0's positives rank 1 and 2 (HR@1 = 1); user 1's positive ranks 3 (HR@1 = 0, MRR 1/3).
    let overall = &evaluation.report.overall;
    assert_eq!(overall.more["hr@1"], 0.5);
    assert!((overall.more["mrr"] - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
    assert_eq!(overall.ranked_tasks, 2);
    assert_eq!(evaluation.report.by_segment["low"].more["hr@1"], 0.0);
    assert_eq!(evaluation.report.by_segment["high"].more["hr@1"], 1.0);
    // Chance of HR@1: 2/4 for user 0, 1/3 for user 1.
    assert!((overall.chance["hr@1"] - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
    let row = &evaluation.per_task.tasks[1];
    assert_eq!((row.task, row.rows, row.positives), (1, 3, 1));
    assert_eq!(row.values[evaluation.per_task.column("mrr").unwrap()], Some(1.0 / 3.0));
}

#[test]
fn catalogue_ranks_give_full_metrics() {
    let (interactions, tasks) = two_tasks();
    let p = predictions(vec![0.9, 0.1, 0.8, 0.2, 0.9, 0.1, 0.8]);
    let config = EvalConfig { ks: vec![10], catalogue: true, ..EvalConfig::default() };
    let catalogue: BTreeMap<u32, PositiveRanks> =
        [(0, PositiveRanks { candidates: 100, ranks: vec![20] })].into_iter().collect();
    let evaluation = evaluate_with(&p, &interactions, &tasks, &config, Some(&catalogue));
    let overall = &evaluation.report.overall;
    // Only task 0 has catalogue ranks: full_mrr = 1/20, full_hr@10 = 0.
    assert_eq!(overall.more["full_mrr"], 0.05);
    assert_eq!(overall.more["full_hr@10"], 0.0);
    assert!(metric_names(&config).contains(&"full_ndcg@10".to_string()));
}

#[test]
fn metric_directions_are_known() {
    assert!(lower_is_better("logloss") && lower_is_better("low.ece") && lower_is_better("ne"));
    assert!(!lower_is_better("ndcg@10") && !lower_is_better("cold.gauc"));
}

#[test]
fn the_overall_auc_and_logloss_alone_are_evaluates_overall_bit_for_bit() {
    let (interactions, tasks) = two_tasks();
    // The second task's rows first: the log loss still sums in task order.
    let predictions = Predictions {
        rows: vec![4, 5, 6, 0, 1, 2, 3],
        task_index: vec![1, 1, 1, 0, 0, 0, 0],
        score: vec![0.31, 0.77, 0.12, 0.9, 0.2, 0.6, 0.45],
    };
    let overall = evaluate(&predictions, &interactions, &tasks).overall;
    let (auc, logloss) = overall_auc_and_logloss(&predictions, &interactions);
    assert_eq!(auc.map(f64::to_bits), overall.auc.map(f64::to_bits));
    assert_eq!(logloss.map(f64::to_bits), overall.logloss.map(f64::to_bits));
}
