//! The arithmetic of a table row's skipped zero-gradient AdamW steps (see the `lazy_adam` docs):
//! the bias corrections by step, the sums a replay shares across a row's columns and their
//! caches, and the step-by-step replay of columns whose tiny second moment makes `eps` matter.
//!
//! Owns [`BiasCorrections`], [`ReplaySums`] and [`StepByStep`]. Must not read or write a table
//! (`tables` does): every function here is arithmetic on numbers it is given.

use candle_nn::ParamsAdamW;

/// Adam's bias corrections by step (index 0 unused): `1 / (1 - beta1^t)`, `1 / (1 - beta2^t)`
/// and its square root, kept so that a step or a replayed step costs no `powi`.
#[derive(Default)]
pub(super) struct BiasCorrections {
    pub(super) scale_m: Vec<f64>,
    pub(super) scale_v: Vec<f64>,
    pub(super) scale_v_sqrt: Vec<f64>,
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
pub(super) struct StepByStep {
    pub(super) columns: Vec<usize>,
    m: Vec<f64>,
    v: Vec<f64>,
    pub(super) theta: Vec<f64>,
}

impl StepByStep {
    pub(super) fn push(&mut self, column: usize, m: f64, v: f64, theta: f64) {
        self.columns.push(column);
        self.m.push(m);
        self.v.push(v);
        self.theta.push(theta);
    }

    pub(super) fn clear(&mut self) {
        self.columns.clear();
        self.m.clear();
        self.v.clear();
        self.theta.clear();
    }

    /// The zero-gradient steps with bias corrections `scale_m` and `scale_v_sqrt` (one per
    /// step), `decay` the weight decay factor.
    pub(super) fn replay(&mut self, params: &ParamsAdamW, decay: f64, scale_m: &[f64], scale_v_sqrt: &[f64]) {
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

/// The largest replay limit the caches of [`BiasCorrections`] serve (about 220 for Adam's usual
/// betas); a larger one (degenerate betas) computes every replay afresh.
const MAX_CACHED_LIMIT: i32 = 10_000;

/// AdamW's decoupled weight decay of one step, `1 - lr * weight_decay`, the factor every
/// weight is multiplied by before the update.
pub(super) fn weight_decay_factor(params: &ParamsAdamW) -> f64 {
    1.0 - params.lr * params.weight_decay
}

/// The replay sums `(w1, w2)` over skipped steps whose bias corrections are `scale_m` and
/// `scale_v_sqrt` (see `TableState::replay` in `tables`).
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
    pub(super) fn cover(&mut self, params: &ParamsAdamW, step_t: i32) {
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
    pub(super) fn replay_sums(&mut self, params: &ParamsAdamW, from: i32, replayed_to: i32, limit: i32) -> (f64, f64) {
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
    pub(super) fn rest_decay(&mut self, params: &ParamsAdamW, rest: i32) -> [f64; 3] {
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
    pub(super) fn powers(&mut self, params: &ParamsAdamW, limit: i32, n: i32) -> (f64, f64, f64) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
