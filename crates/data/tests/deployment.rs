//! The deployment protocol: train before the first cut, serve each later window with the history
//! before its start.

use limaml_data::synthetic::generate;
use limaml_data::{slice, DataError, Dataset, EntityState, EvalSetting, SplitConfig, SyntheticConfig, TaskRole};

fn synthetic() -> Dataset {
    generate(&SyntheticConfig { n_users: 300, n_items: 100, ..Default::default() }, 5).unwrap()
}

fn deployment(cuts: &[f32]) -> SplitConfig {
    SplitConfig { setting: EvalSetting::Deployment, deployment_cuts: Some(cuts.to_vec()), ..Default::default() }
}

/// The timestamp of the first cut: the earliest query timestamp of window 1.
fn first_cut(dataset: &Dataset, tasks: &limaml_data::TaskSet) -> i64 {
    tasks
        .tasks
        .iter()
        .filter(|t| t.window == Some(1))
        .flat_map(|t| t.query.iter().map(|&r| dataset.interactions.timestamp[r as usize]))
        .min()
        .unwrap()
}

#[test]
fn every_training_row_is_before_the_first_cut() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &deployment(&[0.6, 0.8]), 1).unwrap();
    let t0 = first_cut(&dataset, &tasks);
    let ts = |r: &u32| dataset.interactions.timestamp[*r as usize];
    assert!(tasks.baseline_train_rows.iter().all(|r| ts(r) < t0));
    for task in tasks.tasks.iter().filter(|t| t.role == TaskRole::MetaTrain) {
        assert!(task.support.iter().chain(&task.query).all(|r| ts(r) < t0));
    }
}

#[test]
fn a_window_task_adapts_on_the_history_before_its_window_and_scores_the_window() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &deployment(&[0.5, 0.7, 0.9]), 1).unwrap();
    let ts = |r: u32| dataset.interactions.timestamp[r as usize];
    for task in tasks.tasks.iter().filter(|t| t.window.is_some()) {
        let earliest_query = task.query.iter().map(|&r| ts(r)).min().unwrap();
        assert!(task.support.iter().all(|&r| ts(r) < earliest_query), "support before the window");
        let expected_role = if task.window == Some(1) { TaskRole::Validation } else { TaskRole::Test };
        assert_eq!(task.role, expected_role);
    }
    let windows: std::collections::BTreeSet<u32> = tasks.tasks.iter().filter_map(|t| t.window).collect();
    assert_eq!(windows.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn entities_without_rows_before_the_first_cut_are_new_and_the_others_known() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &deployment(&[0.6, 0.8]), 1).unwrap();
    let t0 = first_cut(&dataset, &tasks);
    let mut states = std::collections::HashSet::new();
    for task in tasks.tasks.iter().filter(|t| t.window.is_some()) {
        let user = task.entity;
        let has_history = (0..dataset.interactions.len())
            .any(|r| dataset.interactions.user[r] == user && dataset.interactions.timestamp[r] < t0);
        let expected = if has_history { EntityState::Known } else { EntityState::New };
        assert_eq!(task.state, expected, "user {user}");
        states.insert(task.state);
    }
    assert_eq!(states.len(), 2, "both states occur in the synthetic data");
}

#[test]
fn deployment_cuts_out_of_order_or_missing_are_issues_naming_the_key() {
    for config in [
        deployment(&[0.8, 0.6]),
        deployment(&[0.6]),
        deployment(&[0.0, 0.5]),
        SplitConfig { setting: EvalSetting::Deployment, ..Default::default() },
        SplitConfig { deployment_cuts: Some(vec![0.5, 0.7]), ..Default::default() },
    ] {
        let issues = config.validate();
        assert!(issues.iter().any(|i| i.field == "deployment_cuts"), "{config:?}: {issues:?}");
    }
}

#[test]
fn cuts_on_the_same_timestamp_are_an_error_naming_the_key() {
    let mut dataset = synthetic();
    // Half the log at one instant: the 0.2 and 0.4 quantiles coincide.
    let n = dataset.interactions.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&r| dataset.interactions.timestamp[r]);
    let first = dataset.interactions.timestamp[order[0]];
    for &r in &order[..n / 2] {
        dataset.interactions.timestamp[r] = first;
    }
    let err = slice(&dataset, &deployment(&[0.2, 0.4, 0.8]), 1).unwrap_err();
    assert!(matches!(&err, DataError::Slice { reason } if reason.contains("deployment_cuts")), "{err}");
}

fn prefix(k: u32) -> SplitConfig {
    SplitConfig { setting: EvalSetting::Prefix, prefix_rows: Some(k), ..Default::default() }
}

#[test]
fn prefix_users_adapt_on_their_first_rows_which_no_model_trains_on() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &prefix(10), 1).unwrap();
    let trained: std::collections::HashSet<u32> = tasks.baseline_train_rows.iter().copied().collect();
    let evaluated: Vec<_> = tasks.tasks.iter().filter(|t| t.role != TaskRole::MetaTrain).collect();
    assert!(!evaluated.is_empty());
    for task in evaluated {
        assert_eq!(task.state, EntityState::New);
        assert_eq!(task.support.len(), 10);
        let ts = |r: &u32| dataset.interactions.timestamp[*r as usize];
        let last_support = task.support.iter().map(ts).max().unwrap();
        assert!(task.query.iter().all(|r| ts(r) >= last_support), "query after the first k rows");
        assert!(task.support.iter().chain(&task.query).all(|r| !trained.contains(r)), "never trained on");
    }
}

#[test]
fn prefix_users_with_no_more_than_k_rows_are_skipped_and_counted() {
    let dataset = synthetic();
    let few = slice(&dataset, &prefix(5), 1).unwrap();
    let many = slice(&dataset, &prefix(60), 1).unwrap();
    assert!(many.skipped_entities > few.skipped_entities);
    let evaluated = |t: &limaml_data::TaskSet| t.tasks.iter().filter(|t| t.role != TaskRole::MetaTrain).count();
    assert_eq!(evaluated(&few) + few.skipped_entities, evaluated(&many) + many.skipped_entities);
    assert!(prefix(0).validate().iter().any(|i| i.field == "prefix_rows"));
    assert!(SplitConfig { prefix_rows: Some(3), ..Default::default() }.validate().iter().any(|i| i.field == "prefix_rows"));
}

#[test]
fn the_retrained_upper_bound_trains_before_its_window_and_holds_out_only_its_validation_rows() {
    let dataset = synthetic();
    let config = SplitConfig { deployment_retrain_window: Some(3), ..deployment(&[0.5, 0.7, 0.9]) };
    let tasks = slice(&dataset, &config, 1).unwrap();
    let ts = |r: &u32| dataset.interactions.timestamp[*r as usize];
    let start_of = |w: u32| {
        tasks.tasks.iter().filter(|t| t.window == Some(w)).flat_map(|t| t.query.iter().map(ts)).min().unwrap()
    };
    let window3 = start_of(3);
    let trained: std::collections::HashSet<u32> = tasks.baseline_train_rows.iter().copied().collect();
    assert!(tasks.baseline_train_rows.iter().all(|r| ts(r) < window3), "trains before window 3");
    assert!(tasks.baseline_train_rows.iter().any(|r| ts(r) >= start_of(2)), "window 2 rows train too");
    for task in tasks.tasks.iter().filter(|t| t.role != TaskRole::MetaTrain) {
        let expected = if task.role == TaskRole::Validation { 2 } else { 3 };
        assert_eq!(task.window, Some(expected));
        if task.role == TaskRole::Validation {
            assert!(task.query.iter().all(|r| !trained.contains(r)), "validation rows held out");
        }
    }
    assert!(tasks.tasks.iter().any(|t| t.role == TaskRole::Validation));
    let bad = SplitConfig { deployment_retrain_window: Some(1), ..deployment(&[0.5, 0.7, 0.9]) };
    assert!(bad.validate().iter().any(|i| i.field == "deployment_retrain_window"));
}
