//! Per-user paired significance tests of a method against the baseline: the paired t-test and
//! the Wilcoxon signed-rank test over per-user metric differences, with Holm's correction across
//! the methods compared to one baseline.
//!
//! Owns [`paired_t_test`], [`wilcoxon_signed_rank`] and [`holm`]. Must not read stages or runs:
//! the report stage pairs the users and calls these.
//!
//! p-values are two-sided. The t-test uses Student's t with n - 1 degrees of freedom (the
//! regularized incomplete beta function by its continued fraction). The signed-rank test drops
//! zero differences, ranks |d| with average ranks for ties, and uses the exact null distribution
//! for n <= 50 without ties, the normal approximation with tie and continuity corrections
//! otherwise (as scipy.stats.wilcoxon does by default).

use serde::Serialize;

/// One paired test's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedTest {
    /// Pairs used (both values defined; for the signed-rank test, zero differences are dropped
    /// after this count).
    pub n: usize,
    pub mean_difference: f64,
    pub t_p: f64,
    pub wilcoxon_p: f64,
}

/// Both tests over the differences `d` (method minus baseline, one per user); `None` for fewer
/// than 2 pairs.
pub fn paired_tests(d: &[f64]) -> Option<PairedTest> {
    (d.len() >= 2).then(|| PairedTest {
        n: d.len(),
        mean_difference: d.iter().sum::<f64>() / d.len() as f64,
        t_p: paired_t_test(d),
        wilcoxon_p: wilcoxon_signed_rank(d),
    })
}

/// Two-sided p-value of the one-sample t-test of mean(d) = 0. 1 when every difference is 0;
/// 0 when they are all equal and non-zero.
pub fn paired_t_test(d: &[f64]) -> f64 {
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let variance = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    if variance == 0.0 {
        return if mean == 0.0 { 1.0 } else { 0.0 };
    }
    let t = mean / (variance / n).sqrt();
    let df = n - 1.0;
    // P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2).
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// Two-sided p-value of the Wilcoxon signed-rank test of a zero median difference.
pub fn wilcoxon_signed_rank(d: &[f64]) -> f64 {
    let nonzero: Vec<f64> = d.iter().copied().filter(|x| *x != 0.0).collect();
    let n = nonzero.len();
    if n == 0 {
        return 1.0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| nonzero[a].abs().total_cmp(&nonzero[b].abs()));
    let mut ranks = vec![0.0; n];
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && nonzero[order[end]].abs() == nonzero[order[start]].abs() {
            end += 1;
        }
        let rank = (start + 1 + end) as f64 / 2.0;
        for &k in &order[start..end] {
            ranks[k] = rank;
        }
        let t = (end - start) as f64;
        tie_term += t * t * t - t;
        start = end;
    }
    let w_plus: f64 = (0..n).filter(|&k| nonzero[k] > 0.0).map(|k| ranks[k]).sum();
    let nf = n as f64;
    let total = nf * (nf + 1.0) / 2.0;
    if n <= 50 && tie_term == 0.0 {
        // Exact: counts of subsets of {1..n} by rank sum.
        let max = n * (n + 1) / 2;
        let mut counts = vec![0.0f64; max + 1];
        counts[0] = 1.0;
        for r in 1..=n {
            for s in (r..=max).rev() {
                counts[s] += counts[s - r];
            }
        }
        let all: f64 = counts.iter().sum();
        let w = w_plus.min(total - w_plus).round() as usize;
        let tail: f64 = counts[..=w].iter().sum::<f64>() / all;
        return (2.0 * tail).min(1.0);
    }
    let mean = total / 2.0;
    let variance = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term / 48.0;
    if variance <= 0.0 {
        return 1.0;
    }
    let z = ((w_plus - mean).abs() - 0.5).max(0.0) / variance.sqrt();
    libm::erfc(z / std::f64::consts::SQRT_2).min(1.0)
}

/// Holm's step-down adjustment of `p` (family-wise error), in the input order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (i, &k) in order.iter().enumerate() {
        running = running.max(((m - i) as f64 * p[k]).min(1.0));
        adjusted[k] = running;
    }
    adjusted
}

/// I_x(a, b), by the continued fraction of Numerical Recipes (6.4), using the symmetry
/// I_x(a, b) = 1 - I_{1-x}(b, a) where it converges faster.
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_test_matches_a_known_value() {
        // d = 1..5: mean 3, sd 1.5811, t = 4.2426 on 4 df: p = 0.013236 (scipy.stats.ttest_1samp).
        let p = paired_t_test(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!((p - 0.013236).abs() < 1e-5, "{p}");
        // t = 1 on 1 df: p = 0.5 exactly (Cauchy).
        assert!((paired_t_test(&[0.0, 2.0]) - 0.5).abs() < 1e-10);
    }

    #[test]
    fn wilcoxon_is_exact_for_small_samples_without_ties() {
        // All 5 differences positive: W- = 0, p = 2 / 2^5 = 0.0625.
        assert!((wilcoxon_signed_rank(&[0.1, 0.2, 0.3, 0.4, 0.5]) - 0.0625).abs() < 1e-12);
        // Ranks 1..4 with signs -, +, -, +: W+ = 6, W- = 4; 7 of the 16 sign patterns have a
        // rank sum <= 4, so p = 2 * 7 / 16.
        assert_eq!(wilcoxon_signed_rank(&[-0.1, 0.1 + 1e-9, -0.2, 0.2 + 1e-9]), 0.875);
    }

    #[test]
    fn wilcoxon_uses_the_corrected_normal_approximation_with_ties() {
        // 60 differences of +1 and 20 of -1 (all tied): W+ = 60 * 40.5 = 2430, mean 1620,
        // variance 80*81*161/24 - (80^3-80)/48 = 43470 - 10665 = 32805; z = (810 - 0.5)/181.12.
        let d: Vec<f64> = (0..80).map(|i| if i < 60 { 1.0 } else { -1.0 }).collect();
        let z: f64 = 809.5 / 32805f64.sqrt();
        let expected = libm::erfc(z / std::f64::consts::SQRT_2);
        assert!((wilcoxon_signed_rank(&d) - expected).abs() < 1e-12);
    }

    #[test]
    fn holm_multiplies_by_the_remaining_count_and_stays_monotone() {
        let adjusted = holm(&[0.01, 0.04, 0.03]);
        // Sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06.
        assert_eq!(adjusted, vec![0.03, 0.06, 0.06]);
    }
}
