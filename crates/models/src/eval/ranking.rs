//! Top-K ranking metrics of one ranked list: NDCG@K, Recall@K, HR@K, Precision@K, MAP@K and MRR,
//! computed from the ranks of the list's positives; and their chance level (the expected value
//! under a uniformly random order), which tells when a metric saturates by construction.
//!
//! Owns [`PositiveRanks`], [`positive_ranks`] and [`RankingMetric`]. Must not know where a list
//! comes from (a query set, the full catalogue): `super` builds the lists.
//!
//! Order: by score, highest first; equal scores are ordered by the candidates' index (the
//! interaction row for query sets, the item index for the catalogue), lowest first, so every
//! metric is a deterministic function of the scores.

use serde::{Deserialize, Serialize};

/// A ranked list reduced to what the metrics need: its length and the 1-based ranks of its
/// positives, ascending.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PositiveRanks {
    pub candidates: u32,
    pub ranks: Vec<u32>,
}

/// Ranks the candidates `(score, index, positive)`; ties broken by `index` (see the module doc).
pub fn positive_ranks(candidates: &[(f32, u32, bool)]) -> PositiveRanks {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        candidates[b].0.total_cmp(&candidates[a].0).then(candidates[a].1.cmp(&candidates[b].1))
    });
    let ranks = order
        .iter()
        .enumerate()
        .filter(|&(_, &c)| candidates[c].2)
        .map(|(position, _)| position as u32 + 1)
        .collect();
    PositiveRanks { candidates: candidates.len() as u32, ranks }
}

/// The rank of a candidate scored `score` with index `index` among `others` (its own entry
/// excluded), with the module's tie rule. For long lists where only the positives' ranks are
/// wanted: O(candidates) per positive, no sort.
pub fn rank_among(score: f32, index: u32, others: impl Iterator<Item = (f32, u32)>) -> u32 {
    1 + others
        .filter(|&(s, i)| s.total_cmp(&score).is_gt() || (s == score && i < index))
        .count() as u32
}

/// One ranking metric at one cut-off (`k` is ignored by MRR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankingMetric {
    Ndcg(usize),
    Recall(usize),
    HitRate(usize),
    Precision(usize),
    Map(usize),
    Mrr,
}

impl RankingMetric {
    /// Every metric of the registry for cut-offs `ks`, in report order.
    pub fn all(ks: &[usize]) -> Vec<RankingMetric> {
        let mut out = Vec::new();
        for make in [RankingMetric::Ndcg, RankingMetric::Recall, RankingMetric::HitRate, RankingMetric::Precision, RankingMetric::Map] {
            out.extend(ks.iter().map(|&k| make(k)));
        }
        out.push(RankingMetric::Mrr);
        out
    }

    /// `ndcg@10`, `recall@5`, `hr@20`, `precision@10`, `map@10`, `mrr`.
    pub fn name(self) -> String {
        match self {
            RankingMetric::Ndcg(k) => format!("ndcg@{k}"),
            RankingMetric::Recall(k) => format!("recall@{k}"),
            RankingMetric::HitRate(k) => format!("hr@{k}"),
            RankingMetric::Precision(k) => format!("precision@{k}"),
            RankingMetric::Map(k) => format!("map@{k}"),
            RankingMetric::Mrr => "mrr".into(),
        }
    }

    /// The metric of `name` (as [`RankingMetric::name`] writes it), any cut-off.
    pub fn parse(name: &str) -> Option<RankingMetric> {
        if name == "mrr" {
            return Some(RankingMetric::Mrr);
        }
        let (base, k) = name.split_once('@')?;
        let k: usize = k.parse().ok().filter(|&k| k > 0)?;
        Some(match base {
            "ndcg" => RankingMetric::Ndcg(k),
            "recall" => RankingMetric::Recall(k),
            "hr" => RankingMetric::HitRate(k),
            "precision" => RankingMetric::Precision(k),
            "map" => RankingMetric::Map(k),
            _ => return None,
        })
    }

    /// The metric's value for one list; `None` when the list has no positive.
    ///
    /// With `hits = #{positives ranked <= k}` and `p` positives: NDCG@k = sum over hits of
    /// 1/log2(rank+1), over the ideal sum of the first min(k, p) ranks; Recall@k = hits / p;
    /// HR@k = 1 if hits > 0; Precision@k = hits / k; MAP@k = sum over the j-th positive ranked
    /// within k of j / rank, over min(k, p); MRR = 1 / the best positive's rank (no cut-off).
    pub fn value(self, list: &PositiveRanks) -> Option<f64> {
        let p = list.ranks.len();
        if p == 0 {
            return None;
        }
        // (Folds from +0.0: an empty f64 `sum()` is -0.0.)
        let within = |k: usize| list.ranks.iter().take_while(move |&&r| r as usize <= k);
        Some(match self {
            RankingMetric::Ndcg(k) => {
                let dcg = within(k).fold(0.0, |sum, &r| sum + 1.0 / (r as f64 + 1.0).log2());
                let ideal: f64 = (1..=k.min(p)).map(|i| 1.0 / (i as f64 + 1.0).log2()).sum();
                dcg / ideal
            }
            RankingMetric::Recall(k) => within(k).count() as f64 / p as f64,
            RankingMetric::HitRate(k) => (within(k).count() > 0) as u8 as f64,
            RankingMetric::Precision(k) => within(k).count() as f64 / k as f64,
            RankingMetric::Map(k) => {
                let sum = within(k).enumerate().fold(0.0, |sum, (j, &r)| sum + (j + 1) as f64 / r as f64);
                sum / k.min(p) as f64
            }
            RankingMetric::Mrr => 1.0 / list.ranks[0] as f64,
        })
    }

    /// The expected value under a uniformly random order of the list (`None` without a
    /// positive, or where no closed form is used: MAP). A metric whose chance level is near 1
    /// cannot separate methods (HR@5 over query sets of 10 rows with 6 positives is 1 always).
    pub fn chance(self, list: &PositiveRanks) -> Option<f64> {
        let (n, p) = (list.candidates as usize, list.ranks.len());
        if p == 0 {
            return None;
        }
        // P(a given position holds a positive) = p / n.
        let rate = p as f64 / n as f64;
        Some(match self {
            RankingMetric::Ndcg(k) => {
                let top = k.min(n);
                let dcg: f64 = (1..=top).map(|i| rate / (i as f64 + 1.0).log2()).sum();
                let ideal: f64 = (1..=k.min(p)).map(|i| 1.0 / (i as f64 + 1.0).log2()).sum();
                dcg / ideal
            }
            RankingMetric::Recall(k) => k.min(n) as f64 / n as f64,
            RankingMetric::HitRate(k) => 1.0 - no_positive_in_top(n, p, k.min(n)),
            RankingMetric::Precision(k) => rate * k.min(n) as f64 / k as f64,
            RankingMetric::Map(_) => return None,
            RankingMetric::Mrr => {
                // P(best rank = r) = P(no positive in the first r-1) * p / (n - r + 1).
                let mut expected = 0.0;
                for r in 1..=(n - p + 1) {
                    let before = no_positive_in_top(n, p, r - 1);
                    if before < 1e-12 {
                        break;
                    }
                    expected += before * p as f64 / (n - r + 1) as f64 / r as f64;
                }
                expected
            }
        })
    }
}

/// P(none of `p` positives among the first `top` of `n` randomly ordered candidates).
fn no_positive_in_top(n: usize, p: usize, top: usize) -> f64 {
    if top + p > n {
        return 0.0;
    }
    (0..top).map(|i| (n - p - i) as f64 / (n - i) as f64).product()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(candidates: u32, ranks: &[u32]) -> PositiveRanks {
        PositiveRanks { candidates, ranks: ranks.to_vec() }
    }

    #[test]
    fn ties_are_ordered_by_index() {
        // Scores: item 7 and item 3 tie at 0.5; item 3 goes first.
        let ranked = positive_ranks(&[(0.5, 7, true), (0.9, 1, false), (0.5, 3, false), (0.1, 2, true)]);
        assert_eq!(ranked, list(4, &[3, 4]));
        assert_eq!(rank_among(0.5, 7, [(0.9, 1), (0.5, 3), (0.1, 2)].into_iter()), 3);
    }

    #[test]
    fn ndcg_matches_its_definition() {
        // Positives at ranks 1 and 3 of 5, k = 3: (1 + 1/2) / (1 + 1/log2 3).
        let value = RankingMetric::Ndcg(3).value(&list(5, &[1, 3])).unwrap();
        let expected = 1.5 / (1.0 + 1.0 / 3f64.log2());
        assert!((value - expected).abs() < 1e-12);
        assert_eq!(RankingMetric::Ndcg(3).value(&list(5, &[1, 2])), Some(1.0));
    }

    #[test]
    fn recall_hit_rate_precision_map_and_mrr_count_hits_within_k() {
        let l = list(10, &[2, 5, 9]);
        assert_eq!(RankingMetric::Recall(5).value(&l), Some(2.0 / 3.0));
        assert_eq!(RankingMetric::HitRate(1).value(&l), Some(0.0));
        assert_eq!(RankingMetric::HitRate(2).value(&l), Some(1.0));
        assert_eq!(RankingMetric::Precision(5).value(&l), Some(0.4));
        // MAP@5: (1/2 + 2/5) / min(5, 3).
        assert!((RankingMetric::Map(5).value(&l).unwrap() - (0.5 + 0.4) / 3.0).abs() < 1e-12);
        assert_eq!(RankingMetric::Mrr.value(&l), Some(0.5));
        assert_eq!(RankingMetric::Mrr.value(&list(10, &[])), None);
    }

    #[test]
    fn chance_levels_match_enumeration() {
        // Every order of 4 candidates with 2 positives: the mean of each metric.
        let mut orders = Vec::new();
        for a in 1..=4u32 {
            for b in (a + 1)..=4 {
                orders.push(list(4, &[a, b]));
            }
        }
        for metric in [RankingMetric::Ndcg(2), RankingMetric::Recall(1), RankingMetric::HitRate(1), RankingMetric::Precision(3), RankingMetric::Mrr] {
            let mean: f64 = orders.iter().map(|o| metric.value(o).unwrap()).sum::<f64>() / orders.len() as f64;
            let chance = metric.chance(&list(4, &[1, 2])).unwrap();
            assert!((mean - chance).abs() < 1e-12, "{}: {mean} vs {chance}", metric.name());
        }
    }

    #[test]
    fn hit_rate_saturates_when_positives_fill_the_cut() {
        // 10 rows, 6 positives: any 5 contain a positive.
        assert_eq!(RankingMetric::HitRate(5).chance(&list(10, &[1, 2, 3, 4, 5, 6])), Some(1.0));
    }

    #[test]
    fn names_round_trip() {
        for metric in RankingMetric::all(&[5, 10]) {
            assert_eq!(RankingMetric::parse(&metric.name()), Some(metric));
        }
        assert_eq!(RankingMetric::parse("ndcg@0"), None);
        assert_eq!(RankingMetric::parse("ndcg"), None);
    }
}
