//! Summary statistics over seeds: mean, sample standard deviation, and a 95% confidence interval
//! from Student's t. Plain functions over slices.

/// Two-sided 95% quantiles of Student's t for 1..=30 degrees of freedom; 1.96 beyond.
const T_95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (n - 1); 0 for a single value.
pub fn std_dev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let m = mean(values);
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

/// Half-width of the 95% confidence interval of the mean; NaN below two values.
pub fn ci95_half_width(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return f64::NAN;
    }
    let t = T_95.get(n - 2).copied().unwrap_or(1.96);
    t * std_dev(values) / (n as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_and_ci_match_hand_computed_values() {
        let values = [0.70, 0.72, 0.74];
        assert!((mean(&values) - 0.72).abs() < 1e-12);
        assert!((std_dev(&values) - 0.02).abs() < 1e-12);
        // t(0.975, 2) = 4.303; 4.303 * 0.02 / sqrt(3) = 0.049687...
        assert!((ci95_half_width(&values) - 0.049_686_9).abs() < 1e-6);
    }

    #[test]
    fn a_single_value_has_zero_std_and_no_interval() {
        assert_eq!(std_dev(&[0.5]), 0.0);
        assert!(ci95_half_width(&[0.5]).is_nan());
    }
}
