//! Slicing into tasks: roles, settings, splits, segments, features.

mod common;

use std::collections::{HashMap, HashSet};

use limaml_data::encode::{categorical_field, numeric_field};
use limaml_data::synthetic::generate;
use limaml_data::{
    from_bytes, slice, summarize, to_bytes, Dataset, EntityState, EntityTable, EvalSetting,
    Interactions, SplitBy, SplitConfig, SyntheticConfig, TaskEntity, TaskRole, TaskSet,
};

fn synthetic() -> Dataset {
    generate(
        &SyntheticConfig {
            n_users: 200,
            n_items: 120,
            ..Default::default()
        },
        11,
    )
    .unwrap()
}

fn config(setting: EvalSetting) -> SplitConfig {
    SplitConfig {
        setting,
        ..Default::default()
    }
}

fn entities_with_role(tasks: &TaskSet, role: TaskRole) -> HashSet<u32> {
    tasks
        .tasks
        .iter()
        .filter(|t| t.role == role)
        .map(|t| t.entity)
        .collect()
}

#[test]
fn within_a_role_every_row_belongs_to_at_most_one_task_and_one_side() {
    let dataset = synthetic();
    for setting in [EvalSetting::Cold, EvalSetting::Warm, EvalSetting::Both] {
        let tasks = slice(&dataset, &config(setting), 1).unwrap();
        for role in [TaskRole::MetaTrain, TaskRole::Validation, TaskRole::Test] {
            let mut seen = HashSet::new();
            for task in tasks.tasks.iter().filter(|t| t.role == role) {
                for &row in task.support.iter().chain(&task.query) {
                    assert!(
                        seen.insert(row),
                        "{setting:?} {role:?}: row {row} used twice"
                    );
                    assert_eq!(dataset.interactions.user[row as usize], task.entity);
                }
            }
        }
    }
}

#[test]
fn under_cold_the_tasks_cover_every_kept_row_exactly_once() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Cold), 1).unwrap();
    let total: usize = tasks
        .tasks
        .iter()
        .map(|t| t.support.len() + t.query.len())
        .sum();
    assert_eq!(
        total,
        dataset.interactions.len(),
        "every synthetic user has >= 5 rows"
    );
    for task in &tasks.tasks {
        assert_eq!(
            task.support.len() + task.query.len(),
            task.n_interactions as usize
        );
        assert!(!task.support.is_empty() && !task.query.is_empty());
    }
}

#[test]
fn entities_are_divided_by_train_and_validation_fractions() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Cold), 1).unwrap();
    assert_eq!(entities_with_role(&tasks, TaskRole::MetaTrain).len(), 140);
    assert_eq!(entities_with_role(&tasks, TaskRole::Validation).len(), 20);
    assert_eq!(entities_with_role(&tasks, TaskRole::Test).len(), 40);
}

#[test]
fn time_split_puts_every_query_row_at_or_after_every_support_row() {
    let dataset = synthetic();
    let time = &dataset.interactions.timestamp;
    for setting in [EvalSetting::Cold, EvalSetting::Warm, EvalSetting::Both] {
        let tasks = slice(&dataset, &config(setting), 1).unwrap();
        for task in &tasks.tasks {
            let last_support = task
                .support
                .iter()
                .map(|&r| time[r as usize])
                .max()
                .unwrap();
            let first_query = task.query.iter().map(|&r| time[r as usize]).min().unwrap();
            assert!(
                first_query >= last_support,
                "{setting:?} entity {}",
                task.entity
            );
        }
    }
}

#[test]
fn cold_validation_and_test_entities_never_appear_in_meta_training() {
    let dataset = synthetic();
    for setting in [EvalSetting::Cold, EvalSetting::Both] {
        let tasks = slice(&dataset, &config(setting), 1).unwrap();
        let meta_train = entities_with_role(&tasks, TaskRole::MetaTrain);
        let meta_train_rows: HashSet<u32> = tasks
            .tasks
            .iter()
            .filter(|t| t.role == TaskRole::MetaTrain)
            .flat_map(|t| t.support.iter().chain(&t.query).copied())
            .collect();
        for task in tasks.tasks.iter().filter(|t| t.state == EntityState::Cold) {
            assert_ne!(task.role, TaskRole::MetaTrain);
            assert!(!meta_train.contains(&task.entity));
            assert!(task
                .support
                .iter()
                .chain(&task.query)
                .all(|r| !meta_train_rows.contains(r)));
        }
        assert!(tasks.tasks.iter().any(|t| t.state == EntityState::Cold));
    }
}

#[test]
fn warm_entities_all_meta_train_and_are_evaluated_on_later_rows() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Warm), 1).unwrap();
    assert_eq!(entities_with_role(&tasks, TaskRole::MetaTrain).len(), 200);
    let meta_train: HashMap<u32, _> = tasks
        .tasks
        .iter()
        .filter(|t| t.role == TaskRole::MetaTrain)
        .map(|t| (t.entity, t))
        .collect();
    let evaluation: Vec<_> = tasks
        .tasks
        .iter()
        .filter(|t| t.role != TaskRole::MetaTrain)
        .collect();
    assert_eq!(evaluation.len(), 60, "validation and test shares");
    for task in evaluation {
        assert_eq!(task.state, EntityState::Warm);
        let train = meta_train[&task.entity];
        let mut train_part: Vec<u32> = train.support.iter().chain(&train.query).copied().collect();
        train_part.sort_unstable();
        let mut support = task.support.clone();
        support.sort_unstable();
        assert_eq!(support, train_part, "warm support is the whole train part");
        assert!(task.query.iter().all(|r| !train_part.contains(r)));
    }
}

#[test]
fn both_gives_cold_validation_and_test_plus_warm_test_for_meta_train_entities() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Both), 1).unwrap();
    let meta_train = entities_with_role(&tasks, TaskRole::MetaTrain);
    let warm_test: HashSet<u32> = tasks
        .tasks
        .iter()
        .filter(|t| t.role == TaskRole::Test && t.state == EntityState::Warm)
        .map(|t| t.entity)
        .collect();
    assert_eq!(warm_test, meta_train);
    assert!(tasks
        .tasks
        .iter()
        .filter(|t| t.role == TaskRole::Validation)
        .all(|t| t.state == EntityState::Cold));
    assert_eq!(
        tasks
            .tasks
            .iter()
            .filter(|t| t.role == TaskRole::Test && t.state == EntityState::Cold)
            .count(),
        40
    );
}

#[test]
fn baseline_rows_never_include_a_validation_or_test_query_row() {
    let dataset = synthetic();
    for setting in [EvalSetting::Cold, EvalSetting::Warm, EvalSetting::Both] {
        let tasks = slice(&dataset, &config(setting), 1).unwrap();
        let baseline: HashSet<u32> = tasks.baseline_train_rows.iter().copied().collect();
        for task in &tasks.tasks {
            assert!(task.support.iter().all(|r| baseline.contains(r)));
            match task.role {
                TaskRole::MetaTrain => assert!(task.query.iter().all(|r| baseline.contains(r))),
                _ => assert!(
                    task.query.iter().all(|r| !baseline.contains(r)),
                    "{setting:?}"
                ),
            }
        }
    }
}

#[test]
fn min_and_max_interactions_filter_and_truncate_to_the_most_recent_rows() {
    let dataset = synthetic();
    let split = SplitConfig {
        min_interactions: 30,
        max_interactions: Some(50),
        ..config(EvalSetting::Cold)
    };
    let tasks = slice(&dataset, &split, 1).unwrap();
    let time = &dataset.interactions.timestamp;
    for task in &tasks.tasks {
        assert!((30..=50).contains(&task.n_interactions));
        let all_rows: Vec<u32> = (0..dataset.interactions.len() as u32)
            .filter(|&r| dataset.interactions.user[r as usize] == task.entity)
            .collect();
        let kept_earliest = task
            .support
            .iter()
            .map(|&r| time[r as usize])
            .min()
            .unwrap();
        let dropped = all_rows.len() - task.n_interactions as usize;
        let older = all_rows
            .iter()
            .filter(|&&r| time[r as usize] < kept_earliest)
            .count();
        assert_eq!(older, dropped, "the dropped rows are the oldest");
    }
}

#[test]
fn query_fraction_sets_the_query_size() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Cold), 1).unwrap();
    for task in &tasks.tasks {
        let expected = ((task.n_interactions as f64) * 0.25).round().max(1.0) as usize;
        assert_eq!(task.query.len(), expected);
    }
}

#[test]
fn random_split_is_seeded_and_differs_from_the_time_split() {
    let dataset = synthetic();
    let random = SplitConfig {
        split_by: SplitBy::Random,
        ..config(EvalSetting::Cold)
    };
    let a = slice(&dataset, &random, 1).unwrap();
    assert_eq!(a, slice(&dataset, &random, 1).unwrap());
    let time = slice(&dataset, &config(EvalSetting::Cold), 1).unwrap();
    assert_ne!(a.tasks, time.tasks);
}

#[test]
fn different_seeds_draw_different_entities() {
    let dataset = synthetic();
    let a = slice(&dataset, &config(EvalSetting::Cold), 1).unwrap();
    let b = slice(&dataset, &config(EvalSetting::Cold), 2).unwrap();
    assert_ne!(
        entities_with_role(&a, TaskRole::Test),
        entities_with_role(&b, TaskRole::Test)
    );
}

#[test]
fn default_segments_are_low_mid_high_terciles() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Cold), 1).unwrap();
    assert_eq!(tasks.segments, vec!["low", "mid", "high"]);
    assert_eq!(tasks.segment_bounds.len(), 2);
    for segment in 0..3u8 {
        let share = tasks.tasks.iter().filter(|t| t.segment == segment).count() as f64 / 200.0;
        assert!((0.25..0.42).contains(&share), "segment {segment}: {share}");
    }
    for task in &tasks.tasks {
        let expected = tasks
            .segment_bounds
            .iter()
            .position(|&b| task.n_interactions <= b)
            .unwrap_or(2);
        assert_eq!(task.segment as usize, expected);
    }
}

#[test]
fn explicit_segment_bounds_assign_segments_by_count() {
    let dataset = synthetic();
    let split = SplitConfig {
        segments: Some(vec![10, 40]),
        ..config(EvalSetting::Cold)
    };
    let tasks = slice(&dataset, &split, 1).unwrap();
    assert_eq!(tasks.segments, vec!["<=10", "11..40", ">40"]);
    for task in &tasks.tasks {
        let expected = if task.n_interactions <= 10 {
            0
        } else if task.n_interactions <= 40 {
            1
        } else {
            2
        };
        assert_eq!(task.segment, expected);
    }
}

#[test]
fn stale_support_is_the_support_without_its_most_recent_share() {
    let dataset = synthetic();
    let split = SplitConfig {
        freshness_fraction: Some(0.5),
        ..config(EvalSetting::Both)
    };
    let tasks = slice(&dataset, &split, 1).unwrap();
    for task in &tasks.tasks {
        let stale = task.stale_support.as_ref().unwrap();
        assert!(!stale.is_empty() && stale.len() < task.support.len().max(2));
        assert_eq!(
            &task.support[..stale.len()],
            &stale[..],
            "a prefix of the time-ordered support"
        );
    }
    let fresh = slice(&dataset, &config(EvalSetting::Both), 1).unwrap();
    assert!(fresh.tasks.iter().all(|t| t.stale_support.is_none()));
}

#[test]
fn item_tasks_group_rows_by_item() {
    let dataset = synthetic();
    let split = SplitConfig {
        task_entity: TaskEntity::Item,
        ..config(EvalSetting::Cold)
    };
    let tasks = slice(&dataset, &split, 1).unwrap();
    assert_eq!(tasks.entity, TaskEntity::Item);
    for task in &tasks.tasks {
        assert!(task
            .support
            .iter()
            .chain(&task.query)
            .all(|&r| dataset.interactions.item[r as usize] == task.entity));
    }
    assert_eq!(tasks.features.n_users, 200);
    assert_eq!(tasks.features.n_items, 120);
}

/// Ten users with six rows each; user u has age u*u and a country only it holds.
fn tiny_dataset() -> Dataset {
    let n_users = 10;
    let mut interactions = Interactions {
        user: vec![],
        item: vec![],
        label: vec![],
        timestamp: vec![],
        true_probability: None,
    };
    for user in 0..n_users {
        for step in 0..6 {
            interactions.user.push(user);
            interactions.item.push(step % 2);
            interactions.label.push((step % 2) as f32);
            interactions.timestamp.push(step as i64);
        }
    }
    let ids: Vec<String> = (0..n_users).map(|u| u.to_string()).collect();
    let items = EntityTable {
        count: 2,
        raw_ids: vec!["a".into(), "b".into()],
        categorical: vec![],
        multi_hot: vec![],
        numeric: vec![],
    };
    let users = EntityTable {
        count: n_users as usize,
        // Each user's own country: a country only held-out users have must encode as unknown.
        categorical: vec![categorical_field(
            "country",
            &ids.iter().map(|id| format!("c{id}")).collect::<Vec<_>>(),
        )],
        multi_hot: vec![],
        numeric: vec![numeric_field(
            "age",
            (0..n_users).map(|u| (u * u) as f32).collect(),
        )],
        raw_ids: ids,
    };
    Dataset {
        name: "tiny".into(),
        users,
        items,
        interactions,
        dropped_rows: 0,
    }
}

#[test]
fn numeric_features_are_standardized_with_meta_train_entities_only() {
    let dataset = tiny_dataset();
    let tasks = slice(
        &dataset,
        &SplitConfig {
            train_fraction: 0.5,
            validation_fraction: 0.2,
            ..config(EvalSetting::Cold)
        },
        3,
    )
    .unwrap();
    let features = &tasks.features;
    let age_column = features
        .user_columns
        .iter()
        .position(|c| c == "age")
        .unwrap();
    let meta_train = entities_with_role(&tasks, TaskRole::MetaTrain);
    let values: Vec<f32> = meta_train
        .iter()
        .map(|&u| features.user_features[u as usize * features.user_dim + age_column])
        .collect();
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
    assert!(mean.abs() < 1e-4, "{mean}");
    assert!((variance - 1.0).abs() < 1e-3, "{variance}");
    let all: Vec<f32> = (0..10)
        .map(|u| features.user_features[u * features.user_dim + age_column])
        .collect();
    let all_mean = all.iter().sum::<f32>() / 10.0;
    assert!(
        all_mean.abs() > 1e-3,
        "held-out users did not shift the statistics"
    );
}

#[test]
fn categories_seen_only_among_held_out_entities_encode_as_unknown() {
    let dataset = tiny_dataset();
    let tasks = slice(
        &dataset,
        &SplitConfig {
            train_fraction: 0.5,
            validation_fraction: 0.2,
            ..config(EvalSetting::Cold)
        },
        3,
    )
    .unwrap();
    let features = &tasks.features;
    assert_eq!(features.user_columns[0], "country=<unknown>");
    let meta_train = entities_with_role(&tasks, TaskRole::MetaTrain);
    for user in 0..10usize {
        let unknown = features.user_features[user * features.user_dim];
        let expected = if meta_train.contains(&(user as u32)) {
            0.0
        } else {
            1.0
        };
        assert_eq!(unknown, expected, "user {user}");
    }
}

#[test]
fn feature_tables_have_named_columns_and_item_tags() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Both), 1).unwrap();
    let f = &tasks.features;
    assert_eq!(f.user_features.len(), f.n_users * f.user_dim);
    assert_eq!(f.item_features.len(), f.n_items * f.item_dim);
    assert_eq!(f.user_columns.len(), f.user_dim);
    assert_eq!(f.item_columns.len(), f.item_dim);
    assert_eq!(f.n_tags, 11);
    assert_eq!(f.item_tags, dataset.items.multi_hot[0].values);
}

#[test]
fn dataset_and_task_set_round_trip_through_bytes() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Both), 1).unwrap();
    assert_eq!(from_bytes::<Dataset>(&to_bytes(&dataset)).unwrap(), dataset);
    assert_eq!(from_bytes::<TaskSet>(&to_bytes(&tasks)).unwrap(), tasks);
    assert!(from_bytes::<TaskSet>(&[1, 2, 3]).is_err());
}

#[test]
fn summary_counts_tasks_per_role_segment_and_state() {
    let dataset = synthetic();
    let tasks = slice(&dataset, &config(EvalSetting::Both), 1).unwrap();
    let summary = summarize(&dataset, Some(&tasks));
    assert_eq!(summary.users, 200);
    assert_eq!(summary.interactions, dataset.interactions.len());
    assert!(summary.positive_rate > 0.0 && summary.positive_rate < 1.0);
    let task_summary = summary.tasks.unwrap();
    let roles: Vec<(String, usize)> = task_summary
        .per_role
        .iter()
        .map(|c| (c.name.clone(), c.count))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("meta_train".into(), 140),
            ("validation".into(), 20),
            ("test".into(), 180)
        ]
    );
    assert_eq!(
        task_summary
            .per_segment
            .iter()
            .map(|c| c.count)
            .sum::<usize>(),
        tasks.tasks.len()
    );
    assert_eq!(
        task_summary
            .per_state
            .iter()
            .map(|c| c.count)
            .sum::<usize>(),
        tasks.tasks.len()
    );
    assert!(task_summary.support_size.min >= 1);
    assert!(summarize(&dataset, None).tasks.is_none());
}

#[test]
fn an_invalid_split_config_is_rejected() {
    let dataset = synthetic();
    let split = SplitConfig {
        train_fraction: 0.95,
        ..Default::default()
    };
    assert!(matches!(
        slice(&dataset, &split, 1),
        Err(limaml_data::DataError::InvalidConfig { .. })
    ));
}

#[test]
fn ml_100k_slices_with_defaults() {
    let Some(dir) = common::ml100k_dir() else {
        return;
    };
    let config = limaml_data::DataConfig {
        source: limaml_data::DataSource::Movielens,
        path: Some(dir.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let dataset = limaml_data::load(&config, std::path::Path::new("/")).unwrap();
    let tasks = slice(&dataset, &SplitConfig::default(), 0).unwrap();
    assert_eq!(entities_with_role(&tasks, TaskRole::MetaTrain).len(), 660);
    assert_eq!(tasks.features.n_tags, 20);
}
