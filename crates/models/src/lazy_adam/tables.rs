//! Lazy Adam over the id tables: each step gathers the rows it reads, brought up to date by
//! replaying their skipped steps, and updates only those rows, in place.
//!
//! Owns [`LazyAdam`] and each table's per-row state. Must not hold the replay's arithmetic
//! (`replay` does) nor step dense parameters (`dense` does).

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::ParamsAdamW;

use super::replay::{weight_decay_factor, BiasCorrections, StepByStep};
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
    /// The columns of the row being replayed whose tiny second moment needs the replay step by
    /// step, with their moments and value (reused from row to row).
    step_by_step: StepByStep,
}

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
                    step_by_step: StepByStep::default(),
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
        let corrections = self.bias_corrections();
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
                state.adam_step(&params, corrections, row, &mut values[here..here + dim], |j| {
                    grad[here + j] as f64
                });
                state.up_to_step[row as usize] = step_t;
            }
            state.write_rows(&g.rows, &values)?;
        }
        Ok(())
    }
}

impl TableState {
    /// AdamW's update of table row `row` (current value `value`) with gradient `grad(j)` for
    /// column `j`, at the step whose bias corrections are `(scale_m, scale_v)`
    /// (`1 / (1 - beta1^t)`, `1 / (1 - beta2^t)`); updates the row's moments.
    fn adam_step(
        &mut self,
        params: &ParamsAdamW,
        (scale_m, scale_v): (f64, f64),
        row: u32,
        value: &mut [f32],
        grad: impl Fn(usize) -> f64,
    ) {
        let (beta1, beta2) = (params.beta1, params.beta2);
        let decay = weight_decay_factor(params);
        for (j, x) in value.iter_mut().enumerate() {
            let at = row as usize * self.dim + j;
            let g = grad(j);
            let m = beta1 * self.first_moment[at] as f64 + (1.0 - beta1) * g;
            let v = beta2 * self.second_moment[at] as f64 + (1.0 - beta2) * g * g;
            self.first_moment[at] = m as f32;
            self.second_moment[at] = v as f32;
            let step = (m * scale_m) / ((v * scale_v).sqrt() + params.eps);
            *x = (*x as f64 * decay - params.lr * step) as f32;
        }
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
        }
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
        let decay = weight_decay_factor(params);
        // With g = 0 the moments only decay (m_k = beta1^k m, v_k = beta2^k v), so the k-th
        // replayed update is m beta1^k c1 / (sqrt(v) beta2^(k/2) c2 + eps), c1 and c2 the bias
        // corrections. Expanding 1 / (a + eps) = 1 / a - eps / a^2 + O(eps^2 / a^3) gives
        // sums shared by every column of the row, each update weighted by the weight decay
        // still to come:
        //   theta_n = d^n theta - lr (m / sqrt(v)) (w1 - (eps / sqrt(v)) w2).
        let (w1, w2) = bias.replay_sums(params, from, replayed_to, limit);
        let (m_decay, v_decay, theta_decay) = bias.powers(params, limit, n);
        let steps = (from + 1) as usize..=replayed_to as usize;
        let (scale_m, scale_v_sqrt) = (&bias.scale_m[steps.clone()], &bias.scale_v_sqrt[steps]);
        for (j, x) in value.iter_mut().enumerate() {
            let at = row as usize * self.dim + j;
            let (m0, v0) = (self.first_moment[at] as f64, self.second_moment[at] as f64);
            if v0 == 0.0 {
                // Never had a gradient (so m0 = 0 too): only the weight decay moves it.
                *x = (*x as f64 * theta_decay) as f32;
                continue;
            }
            let sqrt_v0 = v0.sqrt();
            if (v0 * v_decay).sqrt() >= 100.0 * params.eps {
                // The O(eps^2 / a^2) remainder is below 1e-4 of each update.
                let ratio = m0 / sqrt_v0;
                *x = (*x as f64 * theta_decay
                    - params.lr * ratio * (w1 - params.eps / sqrt_v0 * w2))
                    as f32;
            } else {
                // Tiny second moment: eps matters, replay step by step (below, with the row's
                // other such columns).
                self.step_by_step.push(j, m0, v0, *x as f64);
            }
            self.first_moment[at] = (m0 * m_decay) as f32;
            self.second_moment[at] = (v0 * v_decay) as f32;
        }
        if !self.step_by_step.columns.is_empty() {
            self.step_by_step.replay(params, decay, scale_m, scale_v_sqrt);
            for (&j, &theta) in self.step_by_step.columns.iter().zip(&self.step_by_step.theta) {
                value[j] = theta as f32;
            }
            self.step_by_step.clear();
        }
        let rest = step_t - replayed_to;
        if rest > 0 {
            let [decay, m_decay, v_decay] = bias.rest_decay(params, rest);
            for (j, x) in value.iter_mut().enumerate() {
                let at = row as usize * self.dim + j;
                self.first_moment[at] = (self.first_moment[at] as f64 * m_decay) as f32;
                self.second_moment[at] = (self.second_moment[at] as f64 * v_decay) as f32;
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
