//! The synthetic generator.

use std::path::Path;

use limaml_data::{load, source_files, synthetic::generate, DataConfig, SyntheticConfig};

#[test]
fn same_config_and_seed_give_the_identical_dataset() {
    let config = SyntheticConfig::default();
    assert_eq!(generate(&config, 7).unwrap(), generate(&config, 7).unwrap());
}

#[test]
fn different_seeds_give_different_datasets() {
    let config = SyntheticConfig::default();
    assert_ne!(
        generate(&config, 7).unwrap().interactions,
        generate(&config, 8).unwrap().interactions
    );
}

#[test]
fn load_with_the_default_config_generates_synthetic_data() {
    let dataset = load(&DataConfig { synthetic: SyntheticConfig { seed: 1, ..Default::default() }, ..Default::default() }, Path::new(".")).unwrap();
    assert_eq!(dataset.name, "synthetic");
    assert_eq!((dataset.users.count, dataset.items.count), (600, 300));
    assert!(source_files(&DataConfig::default(), Path::new("."))
        .unwrap()
        .is_empty());
}

#[test]
fn positive_rate_is_between_30_and_50_percent() {
    let dataset = generate(&SyntheticConfig::default(), 3).unwrap();
    let labels = &dataset.interactions.label;
    let rate = labels.iter().sum::<f32>() / labels.len() as f32;
    assert!((0.3..=0.5).contains(&rate), "positive rate {rate}");
}

#[test]
fn every_user_has_at_least_min_interactions_and_activity_is_heavy_tailed() {
    let config = SyntheticConfig::default();
    let dataset = generate(&config, 3).unwrap();
    let mut counts = vec![0usize; config.n_users];
    for &u in &dataset.interactions.user {
        counts[u as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c >= config.min_interactions));
    counts.sort_unstable();
    let median = counts[counts.len() / 2] as f32;
    let mean = counts.iter().sum::<usize>() as f32 / counts.len() as f32;
    assert!(
        mean > median * 1.2,
        "mean {mean} vs median {median}: not heavy-tailed"
    );
    assert!(*counts.last().unwrap() as f32 > 3.0 * median);
}

#[test]
fn true_probabilities_are_stored_and_match_labels_on_average() {
    let dataset = generate(&SyntheticConfig::default(), 3).unwrap();
    let truth = dataset
        .interactions
        .true_probability
        .as_ref()
        .expect("oracle probabilities");
    assert_eq!(truth.len(), dataset.interactions.len());
    let n = truth.len() as f32;
    let mean_truth = truth.iter().sum::<f32>() / n;
    let mean_label = dataset.interactions.label.iter().sum::<f32>() / n;
    assert!((mean_truth - mean_label).abs() < 0.02);
}

#[test]
fn a_user_never_sees_the_same_item_twice() {
    let dataset = generate(&SyntheticConfig::default(), 3).unwrap();
    let mut pairs: Vec<(u32, u32)> = dataset
        .interactions
        .user
        .iter()
        .copied()
        .zip(dataset.interactions.item.iter().copied())
        .collect();
    let n = pairs.len();
    pairs.sort_unstable();
    pairs.dedup();
    assert_eq!(pairs.len(), n);
}

#[test]
fn personal_taste_is_not_revealed_by_features_when_strong() {
    // With taste on, users of the same group disagree much more about items than without it.
    let spread = |taste_strength: f32| {
        let config = SyntheticConfig {
            taste_strength,
            drift: 0.0,
            ..Default::default()
        };
        let dataset = generate(&config, 5).unwrap();
        let p = dataset.interactions.true_probability.unwrap();
        let n = p.len() as f32;
        let mean = p.iter().sum::<f32>() / n;
        p.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n
    };
    assert!(spread(1.5) > spread(0.0) * 1.3);
}

#[test]
fn items_have_tags_and_users_have_a_group_feature() {
    let dataset = generate(&SyntheticConfig::default(), 3).unwrap();
    let tags = &dataset.items.multi_hot[0];
    assert_eq!(tags.name, "tags");
    assert_eq!(tags.vocabulary.len(), 11, "10 tags plus <unknown>");
    assert!(tags.values.iter().all(|t| !t.is_empty() && t.len() <= 3));
    assert!(dataset.users.categorical.iter().any(|f| f.name == "group"));
}
