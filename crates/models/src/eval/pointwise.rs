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
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut positive_rank_sum = 0.0f64;
    let mut positives = 0usize;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..end (0-based) share the average 1-based rank.
        let average_rank = (start + 1 + end) as f64 / 2.0;
        for &k in &order[start..end] {
            if labels[k] > 0.5 {
                positive_rank_sum += average_rank;
                positives += 1;
            }
        }
        start = end;
    }
    let negatives = scores.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n))
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
