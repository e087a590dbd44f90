//! A tiny synthetic task set for the tests: users with a hidden taste over item tags that their
//! features do not reveal, so only personalization (ids, support sets) can recover it.
#![allow(dead_code)]

use limaml_data::{EntityState, FeatureTables, Interactions, Task, TaskEntity, TaskRole, TaskSet};
use limaml_models::{LimamlConfig, MethodConfig, TrainConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub const N_USERS: usize = 90;
pub const N_ITEMS: usize = 60;
pub const N_TAGS: usize = 6;

/// Users 0..60 meta-train (the first 10 also get a warm test task on later rows), 60..75
/// validation (cold), 75..90 test (cold). Support = the earlier half of a task's rows.
pub fn synthetic(seed: u64) -> (Interactions, TaskSet) {
    synthetic_sized(seed, N_USERS)
}

/// [`synthetic`] with `n_users` users: the first two thirds meta-train, then a sixth
/// validation and a sixth test.
pub fn synthetic_sized(seed: u64, n_users: usize) -> (Interactions, TaskSet) {
    let (meta_train_end, validation_end) = (n_users * 2 / 3, n_users * 5 / 6);
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let item_tag: Vec<u32> = (0..N_ITEMS).map(|i| (i % N_TAGS) as u32).collect();
    let item_bias: Vec<f32> = (0..N_ITEMS)
        .map(|_| 0.5 * normal.sample(&mut rng))
        .collect();
    let mut item_features = Vec::new();
    for &tag in &item_tag {
        for t in 0..N_TAGS {
            item_features.push(if tag as usize == t { 1.0 } else { 0.0 });
        }
        item_features.push(normal.sample(&mut rng));
    }
    let user_features: Vec<f32> = (0..n_users * 2).map(|_| normal.sample(&mut rng)).collect();
    let taste: Vec<f32> = (0..n_users * N_TAGS)
        .map(|_| 1.6 * normal.sample(&mut rng))
        .collect();

    let mut interactions = Interactions {
        user: vec![],
        item: vec![],
        label: vec![],
        timestamp: vec![],
        true_probability: Some(vec![]),
    };
    let draw = |interactions: &mut Interactions,
                rng: &mut StdRng,
                user: usize,
                count: usize,
                t0: i64|
     -> Vec<u32> {
        (0..count)
            .map(|k| {
                let item = rng.random_range(0..N_ITEMS);
                let logit = taste[user * N_TAGS + item_tag[item] as usize] + item_bias[item] - 0.2;
                let p = 1.0 / (1.0 + (-logit).exp());
                let row = interactions.len() as u32;
                interactions.user.push(user as u32);
                interactions.item.push(item as u32);
                interactions
                    .label
                    .push(if rng.random::<f32>() < p { 1.0 } else { 0.0 });
                interactions.timestamp.push(t0 + k as i64);
                interactions.true_probability.as_mut().unwrap().push(p);
                row
            })
            .collect()
    };
    let mut tasks = Vec::new();
    let mut baseline_train_rows = Vec::new();
    for user in 0..n_users {
        let count = rng.random_range(24..=48usize);
        let rows = draw(&mut interactions, &mut rng, user, count, 1000);
        let (support, query) = rows.split_at(count / 2);
        let role = if user < meta_train_end {
            TaskRole::MetaTrain
        } else if user < validation_end {
            TaskRole::Validation
        } else {
            TaskRole::Test
        };
        let task = |role, state, support: Vec<u32>, query: Vec<u32>, n: usize| Task {
            entity: user as u32,
            role,
            state,
            segment: if n <= 36 { 0 } else { 1 },
            n_interactions: n as u32,
            stale_support: Some(support[..support.len() / 2].to_vec()),
            window: None,
            support,
            query,
        };
        if role == TaskRole::MetaTrain {
            baseline_train_rows.extend_from_slice(&rows);
            tasks.push(task(
                role,
                EntityState::Warm,
                support.to_vec(),
                query.to_vec(),
                count,
            ));
            if user < 10 {
                let later = draw(&mut interactions, &mut rng, user, 16, 5000);
                tasks.push(task(
                    TaskRole::Test,
                    EntityState::Warm,
                    rows.clone(),
                    later,
                    count + 16,
                ));
            }
        } else {
            baseline_train_rows.extend_from_slice(support);
            tasks.push(task(
                role,
                EntityState::Cold,
                support.to_vec(),
                query.to_vec(),
                count,
            ));
        }
    }
    let features = FeatureTables {
        n_users,
        n_items: N_ITEMS,
        user_features,
        user_dim: 2,
        item_features,
        item_dim: N_TAGS + 1,
        item_tags: item_tag.iter().map(|&t| vec![t]).collect(),
        n_tags: N_TAGS,
        user_columns: vec!["u0".into(), "u1".into()],
        item_columns: (0..=N_TAGS).map(|k| format!("i{k}")).collect(),
    };
    let task_set = TaskSet {
        entity: TaskEntity::User,
        tasks,
        segments: vec!["low".into(), "high".into()],
        segment_bounds: vec![36],
        features,
        baseline_train_rows,
        skipped_entities: 0,
    };
    (interactions, task_set)
}

/// The same interactions sliced into item tasks (each item's rows, earlier half as support).
pub fn synthetic_item_tasks(seed: u64) -> (Interactions, TaskSet) {
    let (interactions, mut task_set) = synthetic(seed);
    let mut by_item: Vec<Vec<u32>> = vec![vec![]; N_ITEMS];
    for r in 0..interactions.len() {
        by_item[interactions.item[r] as usize].push(r as u32);
    }
    task_set.entity = TaskEntity::Item;
    task_set.tasks = by_item
        .into_iter()
        .enumerate()
        .map(|(item, rows)| {
            let half = rows.len() / 2;
            Task {
                entity: item as u32,
                role: match item % 5 {
                    0 => TaskRole::Validation,
                    1 => TaskRole::Test,
                    _ => TaskRole::MetaTrain,
                },
                state: EntityState::Warm,
                segment: 0,
                n_interactions: rows.len() as u32,
                support: rows[..half].to_vec(),
                query: rows[half..].to_vec(),
                stale_support: None,
                window: None,
            }
        })
        .collect();
    (interactions, task_set)
}

/// Training settings small enough for a test run in release.
pub fn quick_train() -> TrainConfig {
    TrainConfig {
        epochs: 25,
        learning_rate: 0.01,
        batch_size: 128,
        patience: 4,
        ..TrainConfig::default()
    }
}

pub fn limaml() -> LimamlConfig {
    LimamlConfig {
        meta_batch: 10,
        ..LimamlConfig::default()
    }
}

pub fn all_methods() -> Vec<(&'static str, MethodConfig)> {
    ["global", "id_embedding", "wide_deep"]
        .into_iter()
        .map(|k| (k, MethodConfig::default_for(k).unwrap()))
        .chain([("limaml", MethodConfig::Limaml(limaml()))])
        .chain([("logistic", MethodConfig::default_for("logistic").unwrap())])
        .collect()
}

/// Every parameter's values in `store`, as bits (to compare two trainings bit for bit).
pub fn weight_bits(store: &limaml_models::params::ParamStore) -> Vec<Vec<u32>> {
    store
        .vars()
        .iter()
        .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect())
        .collect()
}
