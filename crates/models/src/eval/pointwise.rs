//! Metrics over scored rows, blind to who the rows belong to: AUC, log loss, and calibration
//! (expected calibration error, normalized entropy).
//!
//! Owns [`auc`], [`log_loss`], [`expected_calibration_error`] and [`normalized_entropy`]. Must
//! not group rows by task: `super::grouped` does that.

/// Probability clamp for the log loss.
pub const LOGLOSS_EPS: f64 = 1e-7;

/// Equal-width probability bins of the expected calibration error.
pub const ECE_BINS: usize = 10;

/// Area under the ROC curve: the probability that a random positive outscores a random
/// negative, ties counting one half (average ranks). `None` without both classes.
pub fn auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    auc_of_ordered(order_by_score(scores).into_iter().map(|k| (scores[k as usize], labels[k as usize] > 0.5)))
}

/// The indices of `scores`, ascending as `f32::total_cmp` orders the scores (the order inside a
/// run of equal scores is unspecified: no metric here depends on it). Each index is packed under
/// its score's bits in one `u64`, so this is one unstable sort of plain integers. One order
/// serves the AUC of every subset of the rows ([`auc_of_ordered`] over the subset's indices).
pub fn order_by_score(scores: &[f32]) -> Vec<u32> {
    assert!(scores.len() <= u32::MAX as usize, "more rows than a u32 index");
    let mut keys: Vec<u64> =
        scores.iter().enumerate().map(|(k, &s)| (total_order_bits(s) as u64) << 32 | k as u64).collect();
    keys.sort_unstable();
    keys.into_iter().map(|key| key as u32).collect()
}

/// [`auc`] of rows `(score, positive)` given in the order of [`order_by_score`]: rows whose scores
/// are `==` (a tie, `-0.0` and `0.0` included) are adjacent and share their average rank.
pub fn auc_of_ordered(rows: impl Iterator<Item = (f32, bool)>) -> Option<f64> {
    let mut positive_rank_sum = 0.0f64;
    let (mut positives, mut count) = (0usize, 0usize);
    // The open run of equal scores: its score, its first 0-based rank, its positives.
    let mut run: Option<(f32, usize, usize)> = None;
    // Ranks start..end (0-based) share the average 1-based rank, added once per positive.
    let close = |start: usize, end: usize, run_positives: usize, sum: &mut f64| {
        let average_rank = (start + 1 + end) as f64 / 2.0;
        for _ in 0..run_positives {
            *sum += average_rank;
        }
    };
    for (score, positive) in rows {
        run = match run {
            Some((first, start, p)) if score == first => Some((first, start, p + positive as usize)),
            Some((_, start, p)) => {
                close(start, count, p, &mut positive_rank_sum);
                Some((score, count, positive as usize))
            }
            None => Some((score, count, positive as usize)),
        };
        count += 1;
        positives += positive as usize;
    }
    if let Some((_, start, p)) = run {
        close(start, count, p, &mut positive_rank_sum);
    }
    let negatives = count - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// The bits of `score` as an unsigned integer whose order is `f32::total_cmp`'s (negative values
/// have every bit flipped, the others only the sign bit).
fn total_order_bits(score: f32) -> u32 {
    let bits = score.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

fn clamped(score: f32) -> f64 {
    (score as f64).clamp(LOGLOSS_EPS, 1.0 - LOGLOSS_EPS)
}

/// Mean log loss with probabilities clamped to `[eps, 1 - eps]`. `None` for no rows.
pub fn log_loss(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let total: f64 = scores
        .iter()
        .zip(labels)
        .map(|(&s, &y)| {
            let p = clamped(s);
            if y > 0.5 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Some(total / scores.len() as f64)
}

/// Expected calibration error over [`ECE_BINS`] equal-width bins of the predicted probability
/// (bin `b` holds scores in `[b/10, (b+1)/10)`, the last bin includes 1): the row-weighted mean
/// of |mean score - positive rate| per bin. `None` for no rows.
pub fn expected_calibration_error(scores: &[f32], labels: &[f32]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let mut count = [0usize; ECE_BINS];
    let mut score_sum = [0.0f64; ECE_BINS];
    let mut label_sum = [0.0f64; ECE_BINS];
    for (&s, &y) in scores.iter().zip(labels) {
        let s = (s as f64).clamp(0.0, 1.0);
        let bin = ((s * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        count[bin] += 1;
        score_sum[bin] += s;
        label_sum[bin] += if y > 0.5 { 1.0 } else { 0.0 };
    }
    let total: f64 = (0..ECE_BINS)
        .filter(|&b| count[b] > 0)
        .map(|b| (score_sum[b] - label_sum[b]).abs())
        .sum();
    Some(total / scores.len() as f64)
}

/// Normalized entropy (He et al. 2014): the log loss divided by the entropy of the rows' own
/// positive rate, i.e. relative to always predicting the base rate (1 = no better than it).
/// `None` without both classes.
pub fn normalized_entropy(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let rate = labels.iter().filter(|&&y| y > 0.5).count() as f64 / labels.len().max(1) as f64;
    if rate <= 0.0 || rate >= 1.0 {
        return None;
    }
    let base = -(rate * rate.ln() + (1.0 - rate) * (1.0 - rate).ln());
    Some(log_loss(scores, labels)? / base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_a_positive_wins() {
        // Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.6) win, (0.4, 0.1) win, (0.4, 0.6) loss: 3/4.
        assert_eq!(auc(&[0.8, 0.4, 0.1, 0.6], &[1.0, 1.0, 0.0, 0.0]), Some(0.75));
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // Pairs: (0.5, 0.5) tie = 1/2, (0.5, 0.2) win, (0.9, 0.5) win, (0.9, 0.2) win: 3.5/4.
        assert_eq!(auc(&[0.5, 0.9, 0.5, 0.2], &[1.0, 1.0, 0.0, 0.0]), Some(0.875));
        assert_eq!(auc(&[0.3; 4], &[1.0, 0.0, 1.0, 0.0]), Some(0.5));
    }

    #[test]
    fn auc_ties_equal_scores_of_either_sign_and_orders_every_float_as_total_cmp() {
        // -0.0 == 0.0 is a tie (1/2); infinities, subnormals and large values are ordered.
        assert_eq!(auc(&[-0.0, 0.0], &[1.0, 0.0]), Some(0.5));
        let ordered = [f32::NEG_INFINITY, -3e38, -1.0, -1e-45, 1e-45, 0.5, 3e38, f32::INFINITY];
        for (k, &low) in ordered.iter().enumerate() {
            for &high in &ordered[k + 1..] {
                assert_eq!(auc(&[high, low], &[1.0, 0.0]), Some(1.0), "{high} over {low}");
                assert_eq!(auc(&[high, low], &[0.0, 1.0]), Some(0.0), "{low} under {high}");
            }
        }
    }

    #[test]
    fn the_auc_of_a_subset_in_the_full_order_is_the_auc_of_the_subset() {
        let scores = [0.3, 0.9, 0.3, 0.1, 0.7, 0.3, 0.9, 0.5];
        let labels = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        let order = order_by_score(&scores);
        let subset = [0usize, 1, 2, 4, 6, 7];
        let in_subset = |k: usize| subset.contains(&k);
        let ordered = order.iter().map(|&k| k as usize).filter(|&k| in_subset(k)).map(|k| (scores[k], labels[k] > 0.5));
        let (s, y): (Vec<f32>, Vec<f32>) = subset.iter().map(|&k| (scores[k], labels[k])).unzip();
        assert_eq!(auc_of_ordered(ordered), auc(&s, &y));
        // Pairs (pos, neg) of the subset: 0.3 vs 0.9 loss, 0.3 vs 0.3 tie, 0.3 vs 0.5 loss,
        // 0.7 wins twice and loses once, 0.9 vs 0.9 tie and wins twice: 5/9.
        assert_eq!(auc(&s, &y), Some(5.0 / 9.0));
    }

    #[test]
    fn auc_is_undefined_for_one_class() {
        assert_eq!(auc(&[0.1, 0.2], &[1.0, 1.0]), None);
        assert_eq!(auc(&[], &[]), None);
    }

    #[test]
    fn log_loss_is_clamped() {
        let certain_and_wrong = log_loss(&[0.0], &[1.0]).unwrap();
        assert!((certain_and_wrong - -(LOGLOSS_EPS.ln())).abs() < 1e-9);
        assert!((log_loss(&[0.5, 0.5], &[1.0, 0.0]).unwrap() - 2f64.ln()).abs() < 1e-7);
    }

    #[test]
    fn ece_is_the_row_weighted_gap_per_bin() {
        // Bin [0.2, 0.3): scores 0.25, 0.25, one positive -> 2 rows x |0.25 - 0.5| = 0.5.
        // Bin [0.9, 1]: scores 0.95, 1.0, no positive -> |1.95 - 0| = 1.95. Over 4 rows.
        let ece = expected_calibration_error(&[0.25, 0.25, 0.95, 1.0], &[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!((ece - 2.45 / 4.0).abs() < 1e-6, "{ece}");
        assert_eq!(expected_calibration_error(&[0.5, 0.5], &[1.0, 0.0]), Some(0.0));
    }

    #[test]
    fn normalized_entropy_is_one_for_the_base_rate() {
        let ne = normalized_entropy(&[0.25; 4], &[1.0, 0.0, 0.0, 0.0]).unwrap();
        assert!((ne - 1.0).abs() < 1e-6, "{ne}");
        assert!(normalized_entropy(&[0.9, 0.1, 0.1, 0.1], &[1.0, 0.0, 0.0, 0.0]).unwrap() < 1.0);
        assert_eq!(normalized_entropy(&[0.5], &[1.0]), None);
    }
}
