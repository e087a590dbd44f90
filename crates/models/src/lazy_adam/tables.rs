//! Lazy Adam over the id tables: each step gathers the rows it reads, brought up to date by
//! replaying their skipped steps, and updates only those rows, in place.
//!
//! Owns [`LazyAdam`] and each table's per-row state. Must not hold the replay's arithmetic
//! (`replay` does) nor step dense parameters (`dense` does).

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::ParamsAdamW;

use super::replay::{weight_decay_factor, BiasCorrections, PendingColumns};
use super::{on_values, GatheredRows};
use crate::error::ModelError;
use crate::inputs::TensorValues;
use crate::params::ParamStore;
use crate::prefetch::{prefetch, prefetch_range};

/// Per-row Adam state of one table, row-major like the table.
struct TableState {
    table: usize,
    var: Var,
    dim: usize,
    first_moment: Vec<f32>,
    second_moment: Vec<f32>,
    /// Per row: the step count the row's value and moments are up to date with.
    up_to_step: Vec<i32>,
    /// The columns of the rows being replayed whose tiny second moment needs the replay step by
    /// step, with their moments and value, replayed together when the pass's rows are done.
    step_by_step: PendingColumns,
}

/// AdamW's update of a table row at one step ([`TableState::adam_step`]): the step's constants,
/// applied over a row's columns side by side.
struct RowStep {
    beta1: f64,
    beta2: f64,
    lr: f64,
    eps: f64,
    /// The weight decay factor ([`weight_decay_factor`]).
    decay: f64,
    /// The step's bias corrections, `1 / (1 - beta1^t)` and `1 / (1 - beta2^t)`.
    scale_m: f64,
    scale_v: f64,
}

impl RowStep {
    fn new(params: &ParamsAdamW, (scale_m, scale_v): (f64, f64)) -> RowStep {
        let (beta1, beta2, lr, eps) = (params.beta1, params.beta2, params.lr, params.eps);
        RowStep { beta1, beta2, lr, eps, decay: weight_decay_factor(params), scale_m, scale_v }
    }

    /// Updates a row's values `value` and moments `m`, `v` with its gradient `grad` (one per
    /// column). With AVX2 where the CPU has it: wider lanes for the same correctly rounded
    /// operations in the same order (no fused multiply-add), so the same bits.
    fn apply(&self, m: &mut [f32], v: &mut [f32], value: &mut [f32], grad: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { self.apply_avx2(m, v, value, grad) };
            }
        }
        self.apply_portable(m, v, value, grad)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, m: &mut [f32], v: &mut [f32], value: &mut [f32], grad: &[f32]) {
        self.apply_portable(m, v, value, grad)
    }

    #[inline(always)]
    fn apply_portable(&self, m: &mut [f32], v: &mut [f32], value: &mut [f32], grad: &[f32]) {
        for (((m, v), x), &g) in m.iter_mut().zip(v.iter_mut()).zip(value.iter_mut()).zip(grad) {
            let g = g as f64;
            let m_next = self.beta1 * *m as f64 + (1.0 - self.beta1) * g;
            let v_next = self.beta2 * *v as f64 + (1.0 - self.beta2) * g * g;
            *m = m_next as f32;
            *v = v_next as f32;
            let step = (m_next * self.scale_m) / ((v_next * self.scale_v).sqrt() + self.eps);
            *x = (*x as f64 * self.decay - self.lr * step) as f32;
        }
    }
}

/// Step-by-step columns a replay pass holds at most before replaying them (a pass over a whole
/// table, [`LazyAdam::catch_up`], would otherwise hold one per column of every row).
const MAX_PENDING_COLUMNS: usize = 16_384;

/// How many rows ahead replaying ([`TableState::replay_rows`]) and stepping ([`LazyAdam::step`])
/// prefetch a row's state.
const PREFETCH_AHEAD: usize = 16;

/// Lazy Adam over whole id tables (see the module docs): reads and updates only the rows a
/// step gathers, replaying their skipped zero-gradient steps first.
pub struct LazyAdam {
    params: ParamsAdamW,
    /// Steps taken so far (the bias correction's step count, shared with the dense AdamW).
    step_t: i32,
    tables: Vec<TableState>,
    bias: BiasCorrections,
}

impl LazyAdam {
    /// State for the parameters of `store` at indices `tables` (each a `rows x dim` matrix).
    pub fn new(
        store: &ParamStore,
        tables: &[usize],
        params: ParamsAdamW,
    ) -> Result<LazyAdam, ModelError> {
        let tables = tables
            .iter()
            .map(|&table| {
                let var = store.vars()[table].clone();
                let (rows, dim) = var.as_tensor().dims2()?;
                Ok(TableState {
                    table,
                    var,
                    dim,
                    first_moment: vec![0.0; rows * dim],
                    second_moment: vec![0.0; rows * dim],
                    up_to_step: vec![0; rows],
                    step_by_step: PendingColumns::default(),
                })
            })
            .collect::<Result<_, ModelError>>()?;
        Ok(LazyAdam {
            params,
            step_t: 0,
            tables,
            bias: BiasCorrections::default(),
        })
    }

    /// Zero-gradient steps replayed one by one before the rest only decay: the smallest `k`
    /// with `(beta1 / sqrt(beta2))^k < 1e-10`, the share of a row's momentum still moving it
    /// (what is left would move a row by far less than an f32 rounding step).
    pub fn replay_limit(&self) -> i32 {
        let ratio = self.params.beta1 / self.params.beta2.sqrt();
        if !(ratio > 0.0 && ratio < 1.0) {
            return i32::MAX;
        }
        ((1e-10f64).ln() / ratio.ln()).ceil().clamp(1.0, 1e6) as i32
    }

    fn state(&mut self, table: usize) -> Result<&mut TableState, ModelError> {
        self.tables
            .iter_mut()
            .find(|s| s.table == table)
            .ok_or_else(|| {
                ModelError::Weights(format!("parameter {table} is not an embedding table"))
            })
    }

    /// Copies the distinct `ids` of table `table` into a [`GatheredRows`], first bringing
    /// those rows up to date (replaying their skipped steps). With no ids, gathers row 0 so
    /// padding positions still have a row to point at.
    pub fn gather(
        &mut self,
        table: usize,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<GatheredRows, ModelError> {
        let mut rows: Vec<u32> = ids.into_iter().collect();
        rows.sort_unstable();
        rows.dedup();
        if rows.is_empty() {
            rows.push(0);
        }
        let (params, step_t, limit) = (self.params.clone(), self.step_t, self.replay_limit());
        self.bias.cover(&params, step_t);
        let bias = &mut self.bias;
        let state = self
            .tables
            .iter_mut()
            .find(|s| s.table == table)
            .ok_or_else(|| {
                ModelError::Weights(format!("parameter {table} is not an embedding table"))
            })?;
        let dim = state.dim;
        let stale = rows
            .iter()
            .any(|&row| state.up_to_step[row as usize] < step_t);
        let mut values = vec![0f32; rows.len() * dim];
        let var = state.var.clone();
        on_values(&var, |table| {
            if stale {
                state.replay_rows(&params, bias, step_t, limit, &rows, table);
            }
            for (value, &row) in values.chunks_exact_mut(dim).zip(&rows) {
                value.copy_from_slice(&table[row as usize * dim..][..dim]);
            }
        })?;
        let values = Tensor::from_vec(values, (rows.len(), dim), &Device::Cpu)?;
        Ok(GatheredRows {
            table,
            rows,
            values: Var::from_tensor(&values)?,
        })
    }

    /// Hints the CPU to bring in the state of table `table`'s rows `ids` (value, moments, step
    /// count), for a minibatch that gathers them soon. Changes nothing; a table that is not
    /// one of these is ignored.
    pub fn prefetch_rows(&self, table: usize, ids: impl IntoIterator<Item = u32>) {
        let Some(state) = self.tables.iter().find(|s| s.table == table) else {
            return;
        };
        let dim = state.dim;
        // A hint only: a table whose values cannot be borrowed gets its moments prefetched.
        let borrowed = TensorValues::of(state.var.as_tensor()).ok();
        let values = borrowed.as_ref().map(TensorValues::as_slice);
        for id in ids {
            let row = id as usize;
            prefetch(&state.up_to_step, row);
            prefetch_range(&state.first_moment, row * dim, dim);
            prefetch_range(&state.second_moment, row * dim, dim);
            if let Some(values) = values {
                prefetch_range(values, row * dim, dim);
            }
        }
    }

    /// Brings every row of every table up to date: O(table size); once an epoch, before the
    /// weights are read for validation or kept.
    pub fn catch_up(&mut self) -> Result<(), ModelError> {
        let (params, step_t, limit) = (self.params.clone(), self.step_t, self.replay_limit());
        self.bias.cover(&params, step_t);
        let bias = &mut self.bias;
        for state in &mut self.tables {
            let stale: Vec<u32> = (0..state.up_to_step.len() as u32)
                .filter(|&row| state.up_to_step[row as usize] < step_t)
                .collect();
            if stale.is_empty() {
                continue;
            }
            let var = state.var.clone();
            on_values(&var, |table| state.replay_rows(&params, bias, step_t, limit, &stale, table))?;
        }
        Ok(())
    }

    /// The bias corrections `(1 / (1 - beta1^t), 1 / (1 - beta2^t))` of the last step taken
    /// (the dense AdamW steps with the same `t`).
    pub(super) fn bias_corrections(&self) -> (f64, f64) {
        let t = self.step_t as usize;
        (self.bias.scale_m[t], self.bias.scale_v[t])
    }

    /// One step: AdamW on each gathered row with its gradient from `grads` (rows without a
    /// gradient get a zero-gradient step), written back into its table.
    pub fn step(&mut self, grads: &GradStore, gathered: &[GatheredRows]) -> Result<(), ModelError> {
        self.step_t += 1;
        let (params, step_t) = (self.params.clone(), self.step_t);
        self.bias.cover(&params, step_t);
        let row_step = RowStep::new(&params, self.bias_corrections());
        for g in gathered {
            let state = self.state(g.table)?;
            let dim = state.dim;
            let grad = match grads.get(g.values.as_tensor()) {
                Some(grad) => grad.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0.0; g.rows.len() * dim],
            };
            let mut values = g.values.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            for (k, &row) in g.rows.iter().enumerate() {
                if let Some(&ahead) = g.rows.get(k + PREFETCH_AHEAD) {
                    prefetch_range(&state.first_moment, ahead as usize * dim, dim);
                    prefetch_range(&state.second_moment, ahead as usize * dim, dim);
                }
                let here = k * dim;
                state.adam_step(&row_step, row, &mut values[here..here + dim], &grad[here..here + dim]);
                state.up_to_step[row as usize] = step_t;
            }
            state.write_rows(&g.rows, &values)?;
        }
        Ok(())
    }
}

impl TableState {
    /// AdamW's update of table row `row` (current value `value`) with gradient `grad` (one
    /// per column) at the step `step`; updates the row's moments.
    fn adam_step(&mut self, step: &RowStep, row: u32, value: &mut [f32], grad: &[f32]) {
        let start = row as usize * self.dim;
        let (m, v) = (&mut self.first_moment[start..][..self.dim], &mut self.second_moment[start..][..self.dim]);
        step.apply(m, v, value, grad);
    }

    /// Replays the skipped steps of `rows` in `table`, the table's values (row-major), in place.
    fn replay_rows(
        &mut self,
        params: &ParamsAdamW,
        bias: &mut BiasCorrections,
        step_t: i32,
        limit: i32,
        rows: &[u32],
        table: &mut [f32],
    ) {
        let dim = self.dim;
        for (k, &row) in rows.iter().enumerate() {
            // The rows are scattered over tables of up to millions of rows: ask for a later
            // row's state now, so its cache misses overlap this row's work.
            if let Some(&ahead) = rows.get(k + PREFETCH_AHEAD) {
                let ahead = ahead as usize;
                prefetch(&self.up_to_step, ahead);
                prefetch_range(&self.first_moment, ahead * dim, dim);
                prefetch_range(&self.second_moment, ahead * dim, dim);
                prefetch_range(table, ahead * dim, dim);
            }
            self.replay(params, bias, step_t, limit, row, &mut table[row as usize * dim..][..dim]);
            if self.step_by_step.len() >= MAX_PENDING_COLUMNS {
                self.replay_pending(params, bias, table);
            }
        }
        self.replay_pending(params, bias, table);
    }

    /// Replays the step-by-step columns [`TableState::replay`] left waiting, and stores their
    /// values as it would have: rounded to the table's `f32`, then decayed over the row's steps
    /// after the replay limit.
    fn replay_pending(&mut self, params: &ParamsAdamW, bias: &BiasCorrections, table: &mut [f32]) {
        self.step_by_step.replay(params, bias, |at, theta, rest_decay| {
            let mut x = theta as f32;
            if let Some(decay) = rest_decay {
                x = (x as f64 * decay) as f32;
            }
            table[at] = x;
        });
    }

    /// Replays row `row`'s zero-gradient steps after its last update up to `step_t`: the
    /// first `limit` one by one (AdamW with `g = 0`, bias corrections from `bias`), the rest
    /// as moment and weight decay only.
    fn replay(
        &mut self,
        params: &ParamsAdamW,
        bias: &mut BiasCorrections,
        step_t: i32,
        limit: i32,
        row: u32,
        value: &mut [f32],
    ) {
        let from = self.up_to_step[row as usize];
        if from >= step_t {
            return;
        }
        let replayed_to = step_t.min(from.saturating_add(limit));
        let n = replayed_to - from;
        let first_pending = self.step_by_step.len();
        // With g = 0 the moments only decay (m_k = beta1^k m, v_k = beta2^k v), so the k-th
        // replayed update is m beta1^k c1 / (sqrt(v) beta2^(k/2) c2 + eps), c1 and c2 the bias
        // corrections. Expanding 1 / (a + eps) = 1 / a - eps / a^2 + O(eps^2 / a^3) gives
        // sums shared by every column of the row, each update weighted by the weight decay
        // still to come:
        //   theta_n = d^n theta - lr (m / sqrt(v)) (w1 - (eps / sqrt(v)) w2).
        let closed_form = bias.closed_form(params, from, replayed_to, limit);
        let start = row as usize * self.dim;
        let (m, v) = (&mut self.first_moment[start..][..self.dim], &mut self.second_moment[start..][..self.dim]);
        // Tiny second moment: eps matters, replay step by step (later, side by side with the
        // pass's other such columns; the value stays as it is until then).
        for (j, (&m0, &v0)) in m.iter().zip(v.iter()).enumerate() {
            if closed_form.needs_step_by_step(v0) {
                self.step_by_step.push(bias, from, n, start + j, m0 as f64, v0 as f64, value[j] as f64);
            }
        }
        closed_form.apply(m, v, value);
        let rest = step_t - replayed_to;
        if rest > 0 {
            let [decay, m_decay, v_decay] = bias.rest_decay(params, rest);
            // The waiting columns' decay comes after their replay (`replay_pending`); the
            // values decayed here are overwritten then.
            self.step_by_step.set_rest_decay(first_pending, decay);
            for ((m, v), x) in m.iter_mut().zip(v.iter_mut()).zip(value.iter_mut()) {
                *m = (*m as f64 * m_decay) as f32;
                *v = (*v as f64 * v_decay) as f32;
                *x = (*x as f64 * decay) as f32;
            }
        }
        self.up_to_step[row as usize] = step_t;
    }

    /// Writes `values` (`rows.len() x dim`, row-major) into the table rows `rows` in place:
    /// O(rows) (`Var::set` would copy the whole table).
    fn write_rows(&self, rows: &[u32], values: &[f32]) -> Result<(), ModelError> {
        let dim = self.dim;
        on_values(&self.var, |table| {
            for (value, &row) in values.chunks_exact(dim).zip(rows) {
                table[row as usize * dim..][..dim].copy_from_slice(value);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_over_a_rows_columns_side_by_side_is_the_one_column_code_bit_for_bit() {
        let params = ParamsAdamW { lr: 1e-3, weight_decay: 1e-2, ..ParamsAdamW::default() };
        let corrections = (1.0 / (1.0 - 0.9f64.powi(7)), 1.0 / (1.0 - 0.999f64.powi(7)));
        // 37 columns, so the vector loop has a tail; zero, tiny and large gradients and moments.
        let columns = 37;
        let grad: Vec<f32> = (0..columns).map(|j| [0.0, 1e-9, -3e-4, 0.02, -1.5][j % 5] * (1.0 + j as f32 / 10.0)).collect();
        let first: Vec<f32> = (0..columns).map(|j| [0.0, 2e-5, -1e-3][j % 3]).collect();
        let second: Vec<f32> = (0..columns).map(|j| [0.0, 1e-12, 4e-7, 3e-3][j % 4]).collect();
        let values: Vec<f32> = (0..columns).map(|j| 0.03 * (j as f32 - 12.0)).collect();
        let (mut m, mut v, mut x) = (first.clone(), second.clone(), values.clone());
        RowStep::new(&params, corrections).apply(&mut m, &mut v, &mut x, &grad);
        let (scale_m, scale_v) = corrections;
        let decay = weight_decay_factor(&params);
        for j in 0..columns {
            // The loop `TableState::adam_step` ran per column before.
            let g = grad[j] as f64;
            let m1 = params.beta1 * first[j] as f64 + (1.0 - params.beta1) * g;
            let v1 = params.beta2 * second[j] as f64 + (1.0 - params.beta2) * g * g;
            let step = (m1 * scale_m) / ((v1 * scale_v).sqrt() + params.eps);
            let x1 = (values[j] as f64 * decay - params.lr * step) as f32;
            assert_eq!(m[j].to_bits(), (m1 as f32).to_bits(), "column {j}'s first moment");
            assert_eq!(v[j].to_bits(), (v1 as f32).to_bits(), "column {j}'s second moment");
            assert_eq!(x[j].to_bits(), x1.to_bits(), "column {j}'s value");
        }
    }
}
