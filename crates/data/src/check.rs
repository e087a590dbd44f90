//! Whole-data-set checks after loading: what makes a data set unusable (an error that says why)
//! and what is legal but suspicious (a counted [`DataWarning`] the run summary and
//! `limaml data inspect` show).
//!
//! Owns those judgements only. Must not change the data: a warning never drops or fixes a row.

use serde::{Deserialize, Serialize};

use crate::error::DataError;
use crate::types::{Dataset, Interactions};

/// Something legal but suspicious in a data set, with how often it happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataWarning {
    /// A stable name: `duplicate_rows`, `users_without_positives`, `users_without_negatives`.
    pub name: String,
    pub count: usize,
    /// What it is and why it matters, for people.
    pub message: String,
}

/// Errors for a data set no model can be trained and evaluated on: no rows, or only one label.
pub fn usable(dataset: &Dataset, click_threshold: f32) -> Result<(), DataError> {
    let labels = &dataset.interactions.label;
    let unusable = |reason: String| Err(DataError::Unusable { name: dataset.name.clone(), reason });
    if labels.is_empty() {
        return unusable("it has no interactions".into());
    }
    let positives = labels.iter().filter(|&&l| l > 0.5).count();
    if positives == 0 {
        return unusable(format!(
            "none of its {} interactions is a click (every rating is below data.click_threshold = \
             {click_threshold}, or every label is 0); AUC and training need both labels",
            labels.len()
        ));
    }
    if positives == labels.len() {
        return unusable(format!(
            "every one of its {} interactions is a click (data.click_threshold = {click_threshold}); \
             AUC and training need both labels",
            labels.len()
        ));
    }
    Ok(())
}

/// How many rows repeat an earlier row's (user, item, timestamp): with equal keys made
/// adjacent by a sort, each key occurring `n` times counts `n - 1`. Where the rows are ordered
/// by user (generated data, most files), each user's run of (item, timestamp) pairs is sorted
/// in one reused buffer; otherwise the keys of every row are sorted at once. Either way no hash
/// set of 30M keys, which was a cache miss per row.
fn duplicate_rows(interactions: &Interactions) -> usize {
    let user = &interactions.user;
    if !user.windows(2).all(|pair| pair[0] <= pair[1]) {
        let mut keys: Vec<(u32, u32, i64)> =
            (0..interactions.len()).map(|r| (user[r], interactions.item[r], interactions.timestamp[r])).collect();
        return repeats_after_sorting(&mut keys);
    }
    let mut pairs: Vec<(u32, i64)> = Vec::new();
    let (mut count, mut r) = (0, 0);
    while r < user.len() {
        let end = user[r..].iter().position(|&other| other != user[r]).map_or(user.len(), |n| r + n);
        pairs.clear();
        pairs.extend((r..end).map(|k| (interactions.item[k], interactions.timestamp[k])));
        count += repeats_after_sorting(&mut pairs);
        r = end;
    }
    count
}

/// Sorts `keys` and counts the keys equal to the one before them.
fn repeats_after_sorting<T: Ord>(keys: &mut [T]) -> usize {
    keys.sort_unstable();
    keys.windows(2).filter(|pair| pair[0] == pair[1]).count()
}

/// The suspicious things in `dataset`, those that occur at all.
pub fn warnings(dataset: &Dataset) -> Vec<DataWarning> {
    let interactions = &dataset.interactions;
    let duplicates = duplicate_rows(interactions);
    let mut positives = vec![0usize; dataset.users.count];
    let mut rows = vec![0usize; dataset.users.count];
    for r in 0..interactions.len() {
        let user = interactions.user[r] as usize;
        if user < rows.len() {
            rows[user] += 1;
            positives[user] += usize::from(interactions.label[r] > 0.5);
        }
    }
    let active = || rows.iter().zip(&positives).filter(|(n, _)| **n > 0);
    let without_positives = active().filter(|(_, p)| **p == 0).count();
    let without_negatives = active().filter(|(n, p)| *n == *p).count();
    let mut warnings = Vec::new();
    let mut warn = |name: &str, count: usize, message: String| {
        if count > 0 {
            warnings.push(DataWarning { name: name.into(), count, message });
        }
    };
    warn(
        "duplicate_rows",
        duplicates,
        format!("{duplicates} row(s) repeat an earlier (user, item, timestamp); they weigh twice in training and metrics"),
    );
    warn(
        "users_without_positives",
        without_positives,
        format!("{without_positives} user(s) have no click; their AUC is undefined and GAUC leaves them out"),
    );
    warn(
        "users_without_negatives",
        without_negatives,
        format!("{without_negatives} user(s) have only clicks; their AUC is undefined and GAUC leaves them out"),
    );
    warnings
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn duplicate_rows_counts_each_repeat_of_an_earlier_user_item_and_timestamp() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 5000;
        let mut interactions = Interactions {
            user: (0..n).map(|_| rng.random_range(0..40)).collect(),
            item: (0..n).map(|_| rng.random_range(0..6)).collect(),
            label: vec![0.0; n],
            timestamp: (0..n).map(|_| rng.random_range(0..4)).collect(),
            true_probability: None,
        };
        let mut seen = HashSet::new();
        let expected = (0..n)
            .filter(|&r| !seen.insert((interactions.user[r], interactions.item[r], interactions.timestamp[r])))
            .count();
        assert!(expected > 1000, "the data repeats keys often: {expected}");
        assert_eq!(duplicate_rows(&interactions), expected, "users interleaved: every key sorted");
        // The same rows ordered by user take the run-by-run path and count the same.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&r| interactions.user[r]);
        let grouped = Interactions {
            user: order.iter().map(|&r| interactions.user[r]).collect(),
            item: order.iter().map(|&r| interactions.item[r]).collect(),
            label: vec![0.0; n],
            timestamp: order.iter().map(|&r| interactions.timestamp[r]).collect(),
            true_probability: None,
        };
        assert_eq!(duplicate_rows(&grouped), expected, "ordered by user: run by run");
        // Ids far beyond the rows (here in descending order) count the same.
        let mut sparse = grouped;
        sparse.user.iter_mut().for_each(|u| *u = u32::MAX - *u);
        assert_eq!(duplicate_rows(&sparse), expected);
        interactions.timestamp = (0..n as i64).collect();
        assert_eq!(duplicate_rows(&interactions), 0);
    }
}
