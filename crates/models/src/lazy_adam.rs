//! The optimizer every method trains with: AdamW for dense layers, sparse ("lazy") Adam for
//! id-embedding tables.
//!
//! Owns [`GatheredRows`] (the rows of a table one step reads, copied into a small leaf `Var`),
//! [`GradientParts`] (a dense gradient given as parts the update sums as it reads them),
//! [`LazyAdam`] and [`Optimizers`]. Must not know what a table means: models say which of their
//! parameters are tables and which rows a step reads.
//!
//! Why: the id tables have one row per user or item, but a step reads only the rows of its
//! minibatch or meta-batch. Differentiating the whole table (a dense `index_select` gradient)
//! and letting dense AdamW move every row makes a step cost O(table rows) and an epoch
//! O(entities^2). Here a step gathers the rows it reads, the gradient is taken with respect to
//! that small copy, and only those rows are updated and written back (in place), so a step
//! costs O(rows read).
//!
//! The update is lazy Adam with per-row moments, as for embedding tables in TensorFlow Addons'
//! `LazyAdam` and PyTorch's `SparseAdam`, with one difference: those skip the steps in which a
//! row got no gradient, whereas dense AdamW keeps moving such a row on its decaying momentum
//! (and decays it). Skipping changed results: with it, LiMAML (whose user rows are read once
//! per epoch) lost 0.004 validation AUC on MovieLens 100K (seed 1: 0.011). So each row
//! remembers the step it is up to date with, and before it is read again (or at the end of an
//! epoch, [`Optimizers::catch_up`]) its skipped zero-gradient steps are replayed: AdamW's
//! formula with `g = 0`, where the moments only decay geometrically, so the replay is a sum
//! shared by the row's columns (exact up to a second-order term in `eps`; rows whose second
//! moment is so small that `eps` matters are replayed step by step). The replay is cut after
//! [`LazyAdam::replay_limit`] steps, where the momentum left is below 1e-10 of its size (later
//! steps only decay), so a read costs O(1) and the weights follow dense AdamW up to float
//! rounding. Updates run in a fixed order on the CPU, so the same seed still gives
//! bit-identical weights.

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::ParamsAdamW;

use crate::config::TrainConfig;
use crate::error::ModelError;
use crate::inputs::TensorValues;
use crate::params::ParamStore;
use crate::prefetch::{prefetch, prefetch_range};

/// The distinct rows of one id table that a step reads, as a small leaf variable: the forward
/// pass looks rows up in `values` (through [`GatheredRows::localize`]) instead of the table.
pub struct GatheredRows {
    /// The table's index in the model's [`ParamStore`].
    pub table: usize,
    /// Ascending distinct table rows; row `k` of `values` is table row `rows[k]`.
    pub rows: Vec<u32>,
    /// `rows.len() x dim`, a copy of those table rows.
    pub values: Var,
}

impl GatheredRows {
    /// Positions in `values` of table rows `ids`; ids for which `is_real` is false (padding,
    /// masked out of the loss, so their gradient is zero) point at position 0.
    pub fn localize(&self, ids: &[u32], is_real: impl Fn(usize) -> bool) -> Vec<u32> {
        ids.iter()
            .enumerate()
            .map(|(k, id)| {
                if is_real(k) {
                    self.rows
                        .binary_search(id)
                        .expect("every real id was gathered") as u32
                } else {
                    0
                }
            })
            .collect()
    }
}

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

/// Adam's bias corrections by step (index 0 unused): `1 / (1 - beta1^t)`, `1 / (1 - beta2^t)`
/// and its square root, kept so that a step or a replayed step costs no `powi`.
#[derive(Default)]
struct BiasCorrections {
    scale_m: Vec<f64>,
    scale_v: Vec<f64>,
    scale_v_sqrt: Vec<f64>,
    /// The first step from which both corrections are exactly 1 (`beta^t` below half an f64
    /// ulp of 1: about step 37 000 for `beta2 = 0.999`); `None` until the tables reach it.
    steady_from: Option<usize>,
    /// From `steady_from` on, the replay sums `(w1, w2)` of `n` skipped steps depend on `n`
    /// alone: entry `n - 1`, for `n` up to the replay limit (filled on first use, by the
    /// loop [`replay_sums_over`] runs, so the values are the ones it would compute).
    steady_sums: Vec<(f64, f64)>,
    /// By step `from`: the replay sums of a row last updated at `from` and read again `limit`
    /// or more steps later (the usual case for user rows: every row a minibatch updated shares
    /// them). Filled on first use.
    full_limit_sums: Vec<Option<(f64, f64)>>,
    /// By `from` modulo the replay limit: the replay sums of a row last updated at `from` up
    /// to the latest step a read asked for. A row read fewer than `limit` steps after its
    /// update extends them from there instead of summing afresh (rows last updated in the
    /// same step and read at different later steps: item rows, hashed crosses).
    recent_sums: Vec<ReplaySums>,
    /// `(beta1^n, beta2^n, d^n)` for `n` = 1 up to the replay limit, `d` the weight decay.
    powers: Vec<(f64, f64, f64)>,
    /// The decay of the steps after the replay limit ([`BiasCorrections::rest_decay`]): the
    /// latest `(rest, [d^rest, beta1^rest, beta2^rest])` by `rest` modulo its length.
    rest_decays: Vec<(i32, [f64; 3])>,
}

/// `[a.powi(n), b.powi(n), c.powi(n)]` for `n >= 0`, with the square-and-multiply of
/// `f64::powi` (compiler-builtins' `__powidf2`: the same products in the same order, so the
/// same bits; a test checks it) run for the three bases side by side, whose chains overlap
/// instead of three calls waiting on each other's multiplications.
fn powi3(mut bases: [f64; 3], n: i32) -> [f64; 3] {
    debug_assert!(n >= 0);
    let mut n = n as u32;
    let mut result = [1.0f64; 3];
    loop {
        if n & 1 != 0 {
            for (r, a) in result.iter_mut().zip(&bases) {
                *r *= a;
            }
        }
        n >>= 1;
        if n == 0 {
            break;
        }
        for a in bases.iter_mut() {
            *a *= *a;
        }
    }
    result
}

/// Columns of one row replayed step by step (AdamW with `g = 0`), side by side: every column
/// takes the same steps, so one pass over the steps updates them all, and the columns'
/// independent square roots and divisions overlap (and vectorize) instead of waiting on one
/// column's chain. Each column's operations, and their order, are the one-column loop's, so its
/// bits are too (a test checks it).
#[derive(Default)]
struct StepByStep {
    columns: Vec<usize>,
    m: Vec<f64>,
    v: Vec<f64>,
    theta: Vec<f64>,
}

impl StepByStep {
    fn push(&mut self, column: usize, m: f64, v: f64, theta: f64) {
        self.columns.push(column);
        self.m.push(m);
        self.v.push(v);
        self.theta.push(theta);
    }

    fn clear(&mut self) {
        self.columns.clear();
        self.m.clear();
        self.v.clear();
        self.theta.clear();
    }

    /// The zero-gradient steps with bias corrections `scale_m` and `scale_v_sqrt` (one per
    /// step), `decay` the weight decay factor.
    fn replay(&mut self, params: &ParamsAdamW, decay: f64, scale_m: &[f64], scale_v_sqrt: &[f64]) {
        let (beta1, beta2, lr, eps) = (params.beta1, params.beta2, params.lr, params.eps);
        let n = self.columns.len();
        let (m, v, theta) = (&mut self.m[..n], &mut self.v[..n], &mut self.theta[..n]);
        for (&sm, &sv) in scale_m.iter().zip(scale_v_sqrt) {
            for ((m, v), theta) in m.iter_mut().zip(v.iter_mut()).zip(theta.iter_mut()) {
                *m *= beta1;
                *v *= beta2;
                *theta = *theta * decay - lr * (*m * sm) / (v.sqrt() * sv + eps);
            }
        }
    }
}

/// How many rows ahead replaying ([`TableState::replay_rows`]) and stepping ([`LazyAdam::step`])
/// prefetch a row's state.
const PREFETCH_AHEAD: usize = 16;

/// The largest replay limit the caches of [`BiasCorrections`] serve (about 220 for Adam's usual
/// betas); a larger one (degenerate betas) computes every replay afresh.
const MAX_CACHED_LIMIT: i32 = 10_000;

/// AdamW's decoupled weight decay of one step, `1 - lr * weight_decay`, the factor every
/// weight is multiplied by before the update.
fn weight_decay_factor(params: &ParamsAdamW) -> f64 {
    1.0 - params.lr * params.weight_decay
}

/// The replay sums `(w1, w2)` over skipped steps whose bias corrections are `scale_m` and
/// `scale_v_sqrt` (see [`TableState::replay`]).
fn replay_sums_over(params: &ParamsAdamW, scale_m: &[f64], scale_v_sqrt: &[f64]) -> (f64, f64) {
    let mut sums = ReplaySums::start(0);
    sums.extend(params, scale_m, scale_v_sqrt);
    (sums.w1, sums.w2)
}

/// The replay sums of a row last updated at step `from`, over the skipped steps up to `to`:
/// extended one step at a time, so sums carried from an earlier `to` to a later one are the
/// ones computed afresh, bit for bit.
#[derive(Debug, Clone, Copy)]
struct ReplaySums {
    from: i32,
    to: i32,
    w1: f64,
    w2: f64,
    /// `(beta1 / sqrt(beta2))^(to - from)` and `(beta1 / beta2)^(to - from)`, as the loop
    /// multiplies them up.
    r1: f64,
    r2: f64,
}

impl ReplaySums {
    fn start(from: i32) -> ReplaySums {
        ReplaySums { from, to: from, w1: 0.0, w2: 0.0, r1: 1.0, r2: 1.0 }
    }

    /// Adds the skipped steps after `to` whose bias corrections are `scale_m`, `scale_v_sqrt`.
    fn extend(&mut self, params: &ParamsAdamW, scale_m: &[f64], scale_v_sqrt: &[f64]) {
        let decay = weight_decay_factor(params);
        let (ratio1, ratio2) = (params.beta1 / params.beta2.sqrt(), params.beta1 / params.beta2);
        for (sm, sv) in scale_m.iter().zip(scale_v_sqrt) {
            self.r1 *= ratio1;
            self.r2 *= ratio2;
            self.w1 = self.w1 * decay + self.r1 * sm / sv;
            self.w2 = self.w2 * decay + self.r2 * sm / (sv * sv);
        }
        self.to += scale_m.len() as i32;
    }
}

impl BiasCorrections {
    /// Extends the tables to cover step `step_t`.
    fn cover(&mut self, params: &ParamsAdamW, step_t: i32) {
        if self.scale_m.is_empty() {
            self.scale_m.push(f64::NAN);
            self.scale_v.push(f64::NAN);
            self.scale_v_sqrt.push(f64::NAN);
        }
        while self.scale_m.len() <= step_t as usize {
            let t = self.scale_m.len() as i32;
            let (scale_m, scale_v) = (1.0 / (1.0 - params.beta1.powi(t)), 1.0 / (1.0 - params.beta2.powi(t)));
            self.scale_m.push(scale_m);
            self.scale_v.push(scale_v);
            self.scale_v_sqrt.push(scale_v.sqrt());
            // `beta^t` only shrinks with t, so once both corrections are 1 they stay 1.
            if self.steady_from.is_none() && scale_m == 1.0 && scale_v == 1.0 {
                self.steady_from = Some(t as usize);
            }
        }
    }

    /// The replay sums of the skipped steps `from + 1 ..= replayed_to` (at most `limit`), as
    /// [`replay_sums_over`] computes them, from a cache where the same sums recur.
    fn replay_sums(&mut self, params: &ParamsAdamW, from: i32, replayed_to: i32, limit: i32) -> (f64, f64) {
        let n = replayed_to - from;
        let steps = (from + 1) as usize..=replayed_to as usize;
        if limit > MAX_CACHED_LIMIT {
            return replay_sums_over(params, &self.scale_m[steps.clone()], &self.scale_v_sqrt[steps]);
        }
        let cached_limit = limit as usize;
        if self.steady_from.is_some_and(|steady_from| from as usize + 1 >= steady_from) {
            // Every skipped step's corrections are 1: the sums depend on `n` alone.
            if self.steady_sums.is_empty() {
                // One step at a time: entry `k - 1` is the sums of `k` steps at once, bit for bit.
                let mut sums = ReplaySums::start(0);
                self.steady_sums = (0..cached_limit)
                    .map(|_| {
                        sums.extend(params, &[1.0], &[1.0]);
                        (sums.w1, sums.w2)
                    })
                    .collect();
            }
            return self.steady_sums[n as usize - 1];
        }
        if n == limit {
            if self.full_limit_sums.len() <= from as usize {
                self.full_limit_sums.resize(from as usize + 1, None);
            }
            if let Some(sums) = self.full_limit_sums[from as usize] {
                return sums;
            }
            let sums = replay_sums_over(params, &self.scale_m[steps.clone()], &self.scale_v_sqrt[steps]);
            self.full_limit_sums[from as usize] = Some(sums);
            return sums;
        }
        if self.recent_sums.len() < cached_limit {
            self.recent_sums = vec![ReplaySums::start(i32::MIN); cached_limit];
        }
        let recent = &mut self.recent_sums[from as usize % cached_limit];
        if recent.from != from || recent.to > replayed_to {
            *recent = ReplaySums::start(from);
        }
        let more = (recent.to + 1) as usize..=replayed_to as usize;
        recent.extend(params, &self.scale_m[more.clone()], &self.scale_v_sqrt[more]);
        (recent.w1, recent.w2)
    }

    /// `[d^rest, beta1^rest, beta2^rest]`, `d` the weight decay factor ([`powi3`]), for the
    /// `rest` zero-gradient steps of a row after its replay limit. Remembered by `rest`: the
    /// rows a step reads that were last updated in the same step (a user's id, embedding and
    /// cross rows) share it, and `powi3`'s chain of squarings is a large share of replaying
    /// rows read thousands of steps apart (1M users). The same call, so the same bits.
    fn rest_decay(&mut self, params: &ParamsAdamW, rest: i32) -> [f64; 3] {
        const SLOTS: usize = 64;
        if self.rest_decays.is_empty() {
            self.rest_decays = vec![(0, [1.0; 3]); SLOTS];
        }
        let slot = &mut self.rest_decays[rest as usize % SLOTS];
        if slot.0 != rest {
            *slot = (rest, powi3([weight_decay_factor(params), params.beta1, params.beta2], rest));
        }
        slot.1
    }

    /// `(beta1^n, beta2^n, d^n)`, `d` the weight decay factor, cached for `n` up to `limit`.
    fn powers(&mut self, params: &ParamsAdamW, limit: i32, n: i32) -> (f64, f64, f64) {
        let decay = weight_decay_factor(params);
        let of = |n: i32| (params.beta1.powi(n), params.beta2.powi(n), decay.powi(n));
        if limit > MAX_CACHED_LIMIT || n > limit {
            return of(n);
        }
        if self.powers.is_empty() {
            self.powers = (1..=limit).map(of).collect();
        }
        self.powers[n as usize - 1]
    }
}

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
    fn bias_corrections(&self) -> (f64, f64) {
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

/// Runs `f` on the values of `var` (`f32`, row-major), in place, and returns its result: a
/// step reads and writes table rows where they are, instead of gathering them into a tensor
/// (`index_select`) and scattering them back (`scatter_set`, with an index per value), and the
/// dense AdamW updates weights without copying them out and back. A candle user-land in-place
/// op ([`candle_core::InplaceOp1`]), so each parameter stays the one variable the forward pass
/// reads.
fn on_values<R>(var: &Var, f: impl FnOnce(&mut [f32]) -> R) -> Result<R, ModelError> {
    let mut result = None;
    let op = OnValues(std::cell::RefCell::new(Some(|table: &mut [f32]| result = Some(f(table)))));
    var.as_tensor().inplace_op1(&op)?;
    drop(op);
    result.ok_or_else(|| ModelError::Weights("a parameter's values were not reached".into()))
}

/// The in-place op of [`on_values`]: calls its closure once, on the variable's values.
struct OnValues<F>(std::cell::RefCell<Option<F>>);

impl<F: FnOnce(&mut [f32])> candle_core::InplaceOp1 for OnValues<F> {
    fn name(&self) -> &'static str {
        "parameter-values-in-place"
    }

    fn cpu_fwd(&self, storage: &mut candle_core::CpuStorage, layout: &candle_core::Layout) -> candle_core::Result<()> {
        let candle_core::CpuStorage::F32(values) = storage else {
            return Err(candle_core::Error::Msg("a trained parameter must be f32".into()));
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::Msg("a trained parameter must be contiguous".into()));
        };
        if let Some(f) = self.0.borrow_mut().take() {
            f(&mut values[start..end]);
        }
        Ok(())
    }
}

/// `x`, or zero (of `x`'s sign) where `x` is subnormal. A parameter whose gradient stays zero
/// (the weights into a dead ReLU unit) has moments that only decay, and the first moment stops
/// at a subnormal fixed point (4 x 2^-149 times 0.9 rounds back to 4 x 2^-149): without this,
/// every later step of that element computes on subnormals, which x86 CPUs without
/// flush-to-zero take a microcode assist for (~130 ns an element here, against ~1 ns). Tested
/// on the exponent bits, so the test itself is integer work.
#[inline(always)]
fn flush_subnormal(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7f80_0000 == 0 {
        f32::from_bits(bits & 0x8000_0000)
    } else {
        x
    }
}

/// candle-nn's `AdamW`, element for element (the same `f32` operations in the same order, so the
/// same bits; a subnormal moment is stored as zero, [`flush_subnormal`], which leaves the weights'
/// bits as they are), over plain vectors: candle's runs about fifteen whole-tensor operations per
/// parameter per step, each allocating its result, which on the large meta-training step was a
/// serial share of the step as large as the parallel passes (bench/README.md). Elements are
/// independent, so large parameters update in parallel without changing a bit.
struct DenseAdamW {
    params: ParamsAdamW,
    vars: Vec<DenseVar>,
}

struct DenseVar {
    var: Var,
    first_moment: Vec<f32>,
    second_moment: Vec<f32>,
}

impl DenseAdamW {
    fn new(vars: Vec<Var>, params: ParamsAdamW) -> DenseAdamW {
        let vars = vars
            .into_iter()
            .map(|var| {
                let n = var.as_tensor().elem_count();
                DenseVar { var, first_moment: vec![0.0; n], second_moment: vec![0.0; n] }
            })
            .collect();
        DenseAdamW { params, vars }
    }

    /// One AdamW step of every parameter that has a gradient in `grads` or in `parts`, at the
    /// step whose bias corrections are `(scale_m, scale_v)`. The gradients are read where they
    /// are (not copied out), and each element updates as [`DenseStepConstants::update`] says.
    /// Parameters of at least four chunks in all update side by side (one parallel region for
    /// all of them, so a thread woken for the first keeps working through the others).
    fn step(&mut self, grads: &GradStore, parts: &[GradientParts], (scale_m, scale_v): (f64, f64)) -> Result<(), ModelError> {
        let constants = DenseStepConstants::new(&self.params, scale_m, scale_v);
        // Each parameter's gradient, found before the parallel region.
        let mut sources: Vec<(&mut DenseVar, GradientInput)> = Vec::new();
        for dense in &mut self.vars {
            let n = dense.first_moment.len();
            let input = if let Some(gradient) = grads.get(dense.var.as_tensor()) {
                GradientInput::Tensor(gradient.clone())
            } else if let Some(given) = parts.iter().find(|p| p.var.id() == dense.var.as_tensor().id()) {
                if given.parts.is_empty() || given.parts.iter().any(|p| p.len() != n) {
                    return Err(ModelError::ShapeMismatch(format!(
                        "gradient parts of lengths {:?} for a parameter of {n} values",
                        given.parts.iter().map(|p| p.len()).collect::<Vec<_>>()
                    )));
                }
                GradientInput::Parts(&given.parts)
            } else {
                continue;
            };
            sources.push((dense, input));
        }
        if sources.iter().map(|(dense, _)| dense.first_moment.len()).sum::<usize>() < 4 * DenseVar::CHUNK {
            // Small (a baseline's minibatch step): one parameter after the other, each split
            // into chunks only if it is larger than one, so that another thread is woken only
            // for a parameter worth it.
            for (dense, input) in sources {
                dense.update(&constants, &input)?;
            }
            return Ok(());
        }
        let failure: std::sync::Mutex<Option<ModelError>> = std::sync::Mutex::new(None);
        rayon::scope(|scope| {
            for (dense, source) in sources {
                let (failure, constants) = (&failure, &constants);
                scope.spawn(move |_| {
                    if let Err(e) = dense.update(constants, &source) {
                        failure.lock().expect("failure lock").get_or_insert(e);
                    }
                });
            }
        });
        match failure.into_inner().expect("failure lock") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A dense parameter's gradient as parts whose sum, element by element and in order
/// (`(p0 + p1) + p2 ...`), is the gradient: the update sums as it reads, instead of a pass
/// that writes the sum first (LiMAML's task groups each give one part,
/// [`Optimizers::step_with_parts`]).
pub struct GradientParts<'a> {
    /// The variable's tensor (as in [`ParamStore::vars`]).
    pub var: &'a Tensor,
    pub parts: Vec<&'a [f32]>,
}

/// `out` = the element-wise sum, in order (`(p0 + p1) + p2 ...`), of the values of `parts`
/// from `from` on (`out.len()` of each): one gradient from the parts [`GradientParts`] holds.
pub(crate) fn sum_parts_into(out: &mut [f32], parts: &[&[f32]], from: usize) {
    let to = from + out.len();
    match parts.split_first() {
        Some((first, rest)) => {
            out.copy_from_slice(&first[from..to]);
            for part in rest {
                out.iter_mut().zip(&part[from..to]).for_each(|(s, &p)| *s += p);
            }
        }
        None => out.fill(0.0),
    }
}

/// One dense parameter's gradient in [`DenseAdamW::step`]: a tensor, or parts to sum.
enum GradientInput<'a> {
    Tensor(Tensor),
    Parts(&'a [&'a [f32]]),
}

/// Where [`DenseVar::update`] reads the gradient: whole, or as parts to sum.
#[derive(Clone, Copy)]
enum GradientSource<'a> {
    Whole(&'a [f32]),
    Parts(&'a [&'a [f32]]),
}

impl DenseVar {
    /// Elements a parallel task updates.
    const CHUNK: usize = 1 << 14;

    /// This parameter's AdamW step, in place, over chunks in parallel.
    fn update(&mut self, constants: &DenseStepConstants, input: &GradientInput) -> Result<(), ModelError> {
        use rayon::prelude::*;
        const CHUNK: usize = DenseVar::CHUNK;
        let n = self.first_moment.len();
        // A gradient tensor is borrowed where it is one contiguous f32 block of its own (every
        // hand-written pass makes one), copied out otherwise: a gradient sharing the
        // variable's storage would hold a read lock on what `on_values` locks for writing.
        let (borrowed, copied);
        let source = match input {
            GradientInput::Tensor(gradient) => {
                borrowed = {
                    let weights = TensorValues::of(self.var.as_tensor())?;
                    TensorValues::of(gradient).ok().filter(|g| !g.shares_storage_with(&weights))
                };
                copied = match borrowed {
                    Some(_) => Vec::new(),
                    None => gradient.flatten_all()?.to_vec1::<f32>()?,
                };
                let whole = borrowed.as_ref().map_or(copied.as_slice(), TensorValues::as_slice);
                if whole.len() != n {
                    return Err(ModelError::ShapeMismatch(format!(
                        "a gradient of {} values for a parameter of {n}",
                        whole.len()
                    )));
                }
                GradientSource::Whole(whole)
            }
            GradientInput::Parts(parts) => GradientSource::Parts(parts),
        };
        let DenseVar { var, first_moment, second_moment } = self;
        on_values(var, |theta| {
            theta
                .par_chunks_mut(CHUNK)
                .zip(first_moment.par_chunks_mut(CHUNK))
                .zip(second_moment.par_chunks_mut(CHUNK))
                .enumerate()
                .for_each(|(c, ((theta, m), v))| {
                    let range = c * CHUNK..c * CHUNK + theta.len();
                    match source {
                        GradientSource::Whole(g) => constants.update_chunk(theta, m, v, &g[range]),
                        GradientSource::Parts(parts) => constants.update_chunk_summing(theta, m, v, parts, range),
                    }
                });
        })
    }
}

/// One dense AdamW step's constants, as `f32`, as candle-nn's `AdamW::step` applies them
/// (`Tensor * f64` is `x * (c as f32) + 0`, `Tensor + f64` is `x * 1 + c`).
#[derive(Debug, Clone, Copy)]
struct DenseStepConstants {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    eps: f32,
    lr: f32,
}

impl DenseStepConstants {
    fn new(p: &ParamsAdamW, scale_m: f64, scale_v: f64) -> DenseStepConstants {
        let lr_lambda = p.lr * p.weight_decay;
        DenseStepConstants {
            beta1: p.beta1 as f32,
            one_minus_beta1: (1.0 - p.beta1) as f32,
            beta2: p.beta2 as f32,
            one_minus_beta2: (1.0 - p.beta2) as f32,
            scale_m: scale_m as f32,
            scale_v: scale_v as f32,
            decay: (1f64 - lr_lambda) as f32,
            eps: p.eps as f32,
            lr: p.lr as f32,
        }
    }

    /// One element: candle-nn's AdamW operation for operation (a subnormal moment stored as
    /// zero, [`flush_subnormal`]).
    #[inline(always)]
    fn update(&self, theta: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        let c = self;
        let next_m = flush_subnormal((*m * c.beta1 + 0.0) + (g * c.one_minus_beta1 + 0.0));
        let next_v = flush_subnormal((*v * c.beta2 + 0.0) + ((g * g) * c.one_minus_beta2 + 0.0));
        let m_hat = next_m * c.scale_m + 0.0;
        let v_hat = next_v * c.scale_v + 0.0;
        let next_theta = *theta * c.decay + 0.0;
        let adjusted = m_hat / (v_hat.sqrt() * 1.0 + c.eps);
        *theta = next_theta - (adjusted * c.lr + 0.0);
        (*m, *v) = (next_m, next_v);
    }

    /// [`DenseStepConstants::update`] over a chunk of elements, with AVX2 where the CPU has it:
    /// wider lanes for the same correctly rounded operations (no fused multiply-add), so the
    /// same bits.
    fn update_chunk(&self, theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { self.update_chunk_avx2(theta, m, v, g) };
            }
        }
        self.update_chunk_portable(theta, m, v, g)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn update_chunk_avx2(&self, theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        self.update_chunk_portable(theta, m, v, g)
    }

    /// [`DenseStepConstants::update_chunk`] from the sum of `parts` over `range` (this chunk's
    /// elements), added in order into a small buffer a block at a time: the same sums, so the
    /// same bits, as updating from a gradient summed beforehand.
    fn update_chunk_summing(
        &self,
        theta: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        parts: &[&[f32]],
        range: std::ops::Range<usize>,
    ) {
        const BLOCK: usize = 1024;
        let mut sum = [0f32; BLOCK];
        for start in (0..theta.len()).step_by(BLOCK) {
            let end = (start + BLOCK).min(theta.len());
            let from = range.start + start;
            let g = &mut sum[..end - start];
            sum_parts_into(g, parts, from);
            self.update_chunk(&mut theta[start..end], &mut m[start..end], &mut v[start..end], g);
        }
    }

    #[inline(always)]
    fn update_chunk_portable(&self, theta: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((theta, m), v), &g) in theta.iter_mut().zip(m).zip(v).zip(g) {
            self.update(theta, m, v, g);
        }
    }
}

/// AdamW for every parameter but the id tables, lazy Adam for the tables; both with
/// `[train]`'s learning rate and `l2`, stepping together.
pub struct Optimizers {
    dense: DenseAdamW,
    embeddings: LazyAdam,
}

impl Optimizers {
    /// `tables`: the indices in `store` of the id-embedding tables.
    pub fn new(
        store: &ParamStore,
        train: &TrainConfig,
        tables: &[usize],
    ) -> Result<Optimizers, ModelError> {
        let params = ParamsAdamW {
            lr: train.learning_rate,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: train.l2,
        };
        let dense_vars = store
            .vars()
            .iter()
            .enumerate()
            .filter(|(k, _)| !tables.contains(k))
            .map(|(_, v)| v.clone())
            .collect();
        Ok(Optimizers {
            dense: DenseAdamW::new(dense_vars, params.clone()),
            embeddings: LazyAdam::new(store, tables, params)?,
        })
    }

    /// The rows `ids` of table `table` (an index given to [`Optimizers::new`]), up to date, as
    /// a small variable to stand in for the table in this step's forward pass.
    pub fn gather(
        &mut self,
        table: usize,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<GatheredRows, ModelError> {
        self.embeddings.gather(table, ids)
    }

    /// See [`LazyAdam::prefetch_rows`].
    pub fn prefetch_rows(&self, table: usize, ids: impl IntoIterator<Item = u32>) {
        self.embeddings.prefetch_rows(table, ids)
    }

    /// Brings every table row up to date (see [`LazyAdam::catch_up`]); call before reading or
    /// keeping the weights.
    pub fn catch_up(&mut self) -> Result<(), ModelError> {
        self.embeddings.catch_up()
    }

    /// Backpropagates `loss` and steps: dense layers from their gradients, the tables' gathered
    /// rows from the gradients of their [`GatheredRows::values`].
    pub fn backward_step(
        &mut self,
        loss: &Tensor,
        gathered: &[GatheredRows],
    ) -> Result<(), ModelError> {
        let grads = loss.backward()?;
        self.step_with(&grads, gathered)
    }

    /// Steps from gradients computed elsewhere (keyed by the variables' tensors, and by the
    /// [`GatheredRows::values`] of the tables).
    pub fn step_with(&mut self, grads: &GradStore, gathered: &[GatheredRows]) -> Result<(), ModelError> {
        // One step count for both: the tables' optimizer advances it and the dense one reads
        // its bias corrections.
        self.embeddings.step(grads, gathered)?;
        self.dense.step(grads, &[], self.embeddings.bias_corrections())
    }

    /// [`Optimizers::step_with`], the dense parameters named in `parts` stepping from the sum
    /// of their parts (summed as the update reads them; a parameter in both `grads` and
    /// `parts` steps from `grads`).
    pub fn step_with_parts(
        &mut self,
        grads: &GradStore,
        parts: &[GradientParts],
        gathered: &[GatheredRows],
    ) -> Result<(), ModelError> {
        self.embeddings.step(grads, gathered)?;
        self.dense.step(grads, parts, self.embeddings.bias_corrections())
    }
}

/// An empty gradient store to fill by hand (`GradStore` has no public constructor; the
/// backward pass of a constant yields a store holding only that constant's own gradient).
pub fn gradient_store() -> Result<GradStore, ModelError> {
    let constant = Tensor::new(0f32, &Device::Cpu)?;
    let mut grads = constant.backward()?;
    grads.remove(&constant);
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnormals_flush_to_zero_of_their_sign_and_nothing_else_changes() {
        let smallest_normal = f32::MIN_POSITIVE;
        for x in [smallest_normal, -smallest_normal, 1.0, -3.5e-20, 0.0, -0.0, f32::INFINITY, f32::MAX] {
            assert_eq!(flush_subnormal(x).to_bits(), x.to_bits(), "{x:e}");
        }
        for x in [smallest_normal / 2.0, f32::from_bits(4), f32::from_bits(0x007f_ffff)] {
            assert_eq!(flush_subnormal(x).to_bits(), 0.0f32.to_bits(), "{x:e}");
            assert_eq!(flush_subnormal(-x).to_bits(), (-0.0f32).to_bits(), "{x:e}");
        }
        // Why: the first moment of a weight whose gradient stopped stays subnormal for ever.
        let stuck = f32::from_bits(4);
        assert_eq!((stuck * 0.9 + 0.0).to_bits(), stuck.to_bits());
    }

    #[test]
    fn powi3_is_powi_bit_for_bit() {
        let bases = [0.9, 0.999, 1.0 - 1e-3 * 1e-2, 0.5, 1.7, 1e-3];
        for n in (0..70).chain([255, 256, 1000, 37_001, 123_457, 1 << 20, i32::MAX]) {
            for base in bases.windows(3) {
                let three = powi3([base[0], base[1], base[2]], n);
                for (k, &b) in base.iter().enumerate() {
                    assert_eq!(three[k].to_bits(), b.powi(std::hint::black_box(n)).to_bits(), "{b}^{n}");
                }
            }
        }
    }

    #[test]
    fn columns_replayed_side_by_side_are_each_the_one_column_replay_bit_for_bit() {
        let params = ParamsAdamW { lr: 1e-3, weight_decay: 1e-2, ..ParamsAdamW::default() };
        let mut bias = BiasCorrections::default();
        bias.cover(&params, 400);
        let decay = weight_decay_factor(&params);
        let steps = 31usize..=250;
        let (scale_m, scale_v_sqrt) = (&bias.scale_m[steps.clone()], &bias.scale_v_sqrt[steps]);
        let mut side_by_side = StepByStep::default();
        let columns: Vec<(f64, f64, f64)> =
            (0..13).map(|c| (1e-7 * (c as f64 - 6.0), 1e-14 * (1.0 + c as f64), 0.01 * c as f64 - 0.05)).collect();
        for (c, &(m, v, theta)) in columns.iter().enumerate() {
            side_by_side.push(c, m, v, theta);
        }
        side_by_side.replay(&params, decay, scale_m, scale_v_sqrt);
        for (c, &(m0, v0, theta0)) in columns.iter().enumerate() {
            // The loop `replay` ran per column before.
            let (mut m, mut v, mut theta) = (m0, v0, theta0);
            for (sm, sv) in scale_m.iter().zip(scale_v_sqrt) {
                m *= params.beta1;
                v *= params.beta2;
                theta = theta * decay - params.lr * (m * sm) / (v.sqrt() * sv + params.eps);
            }
            assert_eq!(side_by_side.theta[c].to_bits(), theta.to_bits(), "column {c}");
            assert_ne!(theta, theta0, "column {c} moved");
        }
    }

    #[test]
    fn replay_sums_extended_step_by_step_are_the_sums_computed_at_once() {
        let params = ParamsAdamW { lr: 1e-3, weight_decay: 1e-2, ..ParamsAdamW::default() };
        let mut bias = BiasCorrections::default();
        bias.cover(&params, 400);
        let (from, limit) = (17, 220);
        // Read at several later steps, as a row updated at `from` is when nothing updates it.
        for to in [18, 19, 40, 41, 41, 150, 236] {
            let extended = bias.replay_sums(&params, from, to, limit);
            let steps = (from + 1) as usize..=to as usize;
            let at_once = replay_sums_over(&params, &bias.scale_m[steps.clone()], &bias.scale_v_sqrt[steps]);
            assert_eq!(extended.0.to_bits(), at_once.0.to_bits(), "w1 up to {to}");
            assert_eq!(extended.1.to_bits(), at_once.1.to_bits(), "w2 up to {to}");
        }
    }

    #[test]
    fn steady_state_replay_sums_are_the_sums_computed_at_once() {
        let params = ParamsAdamW { lr: 1e-3, weight_decay: 1e-2, ..ParamsAdamW::default() };
        let mut bias = BiasCorrections::default();
        bias.cover(&params, 50_000);
        let steady_from = bias.steady_from.expect("the corrections reach 1 by step 50 000") as i32;
        let limit = 220;
        for n in [1, 2, 57, 219, 220] {
            let from = steady_from + 10;
            let cached = bias.replay_sums(&params, from, from + n, limit);
            let steps = (from + 1) as usize..=(from + n) as usize;
            let at_once = replay_sums_over(&params, &bias.scale_m[steps.clone()], &bias.scale_v_sqrt[steps]);
            assert_eq!(cached.0.to_bits(), at_once.0.to_bits(), "w1 of {n} steps");
            assert_eq!(cached.1.to_bits(), at_once.1.to_bits(), "w2 of {n} steps");
        }
    }
}
