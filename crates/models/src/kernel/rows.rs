//! Packed rows ([`PackedRows`]: many tasks' rows back to back, no padding), the weighted
//! logistic loss over them and per-task sums. Must not know the networks.

/// The rows of `T` tasks back to back. A task's rows may come in several parts (support, then
/// query); each row carries its task and its weight in the loss, `1 / (the task's rows)`, so
/// that the loss sums each task's mean.
#[derive(Debug, Clone, Default)]
pub struct PackedRows {
    pub n_tasks: usize,
    /// Interaction row of each packed row.
    pub rows: Vec<u32>,
    pub task_of_row: Vec<u32>,
    pub weight: Vec<f32>,
    pub labels: Vec<f32>,
}

impl PackedRows {
    /// Packs `parts` in order, each part a list of per-task row sets (all parts list the same
    /// `n_tasks` tasks); `labels` gives an interaction row's label.
    pub fn new(n_tasks: usize, parts: &[Vec<&[u32]>], labels: &[f32]) -> PackedRows {
        let mut per_task = vec![0usize; n_tasks];
        for part in parts {
            for (t, rows) in part.iter().enumerate() {
                per_task[t] += rows.len();
            }
        }
        let mut packed = PackedRows {
            n_tasks,
            ..PackedRows::default()
        };
        for part in parts {
            for (t, rows) in part.iter().enumerate() {
                for &r in rows.iter() {
                    packed.rows.push(r);
                    packed.task_of_row.push(t as u32);
                    packed.weight.push(1.0 / per_task[t] as f32);
                    packed.labels.push(labels[r as usize]);
                }
            }
        }
        packed
    }

    /// The same rows with each task's loss a sum over `its rows + prior_rows` instead of a
    /// mean: `weight = 1 / (n_t + prior_rows)`. Used for the inner (support) loss, so that a
    /// step on a handful of rows moves less than a step on hundreds.
    pub fn with_prior_rows(mut self, prior_rows: f32) -> PackedRows {
        for w in &mut self.weight {
            *w /= 1.0 + prior_rows * *w;
        }
        self
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// `sum_r weight_r * logistic_loss(logit_r, label_r)` and its gradient with respect to each
/// logit, times `scale`.
pub(crate) fn logistic_loss(logits: &[f32], rows: &PackedRows, scale: f32) -> (f64, Vec<f32>) {
    let mut loss = 0.0f64;
    let grads = logits
        .iter()
        .zip(rows.labels.iter().zip(&rows.weight))
        .map(|(&s, (&y, &w))| {
            let term = s.max(0.0) - s * y + (-s.abs()).exp().ln_1p();
            loss += (w * term) as f64;
            let p = 1.0 / (1.0 + (-s).exp());
            scale * w * (p - y)
        })
        .collect();
    (loss * scale as f64, grads)
}

/// Per-task sums of packed rows' vectors (`rows x h` -> `T x h`).
pub(crate) fn sum_by_task(x: &[f32], task_of_row: &[u32], n_tasks: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n_tasks * h];
    for (row, &t) in x.chunks_exact(h).zip(task_of_row) {
        let o = &mut out[t as usize * h..][..h];
        o.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_rows_weigh_each_task_by_its_rows_over_all_parts() {
        let labels = [0.0, 1.0, 0.0, 1.0, 1.0];
        let support: Vec<&[u32]> = vec![&[0, 1], &[2]];
        let query: Vec<&[u32]> = vec![&[3], &[4]];
        let packed = PackedRows::new(2, &[support, query], &labels);
        assert_eq!(packed.rows, vec![0, 1, 2, 3, 4]);
        assert_eq!(packed.task_of_row, vec![0, 0, 1, 0, 1]);
        assert_eq!(packed.weight, vec![1.0 / 3.0, 1.0 / 3.0, 0.5, 1.0 / 3.0, 0.5]);
        assert_eq!(packed.labels, vec![0.0, 1.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn prior_rows_turn_each_task_mean_into_a_sum_over_rows_plus_the_prior() {
        let labels = [0.0, 1.0, 0.0];
        let support: Vec<&[u32]> = vec![&[0, 1], &[2]];
        let packed = PackedRows::new(2, &[support], &labels).with_prior_rows(2.0);
        let expected = [0.25f32, 0.25, 1.0 / 3.0];
        for (w, e) in packed.weight.iter().zip(expected) {
            assert!((w - e).abs() < 1e-6, "{w} vs {e}");
        }
    }
}
