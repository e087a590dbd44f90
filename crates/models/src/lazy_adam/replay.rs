//! The arithmetic of a table row's skipped zero-gradient AdamW steps (see the `lazy_adam` docs):
//! the bias corrections by step, the sums a replay shares across a row's columns and their
//! caches, the closed form over a row's columns side by side ([`ClosedForm`]), and the
//! step-by-step replay of columns whose tiny second moment makes `eps` matter, gathered over
//! many rows and replayed side by side ([`PendingColumns`]).
//!
//! Owns [`BiasCorrections`], [`ReplaySums`], [`ClosedForm`], [`StepByStep`] and
//! [`PendingColumns`]. Must not read or write a table (`tables` does): every function here is
//! arithmetic on numbers it is given.

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
    /// [`BiasCorrections::closed_form_from`], once computed.
    closed_form_from: Option<f64>,
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

/// Columns replayed step by step (AdamW with `g = 0`), side by side: every column takes the
/// same steps with the same bias corrections (a group of [`PendingColumns`]), so one pass over
/// the steps updates them all, and the columns' independent square roots and divisions overlap
/// (and vectorize) instead of waiting on one column's chain. Each column's operations, and
/// their order, are the one-column loop's, so its bits are too (a test checks it).
#[derive(Default)]
struct StepByStep {
    /// The caller's index of each column ([`PendingColumns`]: its place in the list).
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
    /// step), `decay` the weight decay factor. With AVX2 where the CPU has it: wider lanes for
    /// the same correctly rounded operations (no fused multiply-add), so the same bits.
    fn replay(&mut self, params: &ParamsAdamW, decay: f64, scale_m: &[f64], scale_v_sqrt: &[f64]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { self.replay_avx2(params, decay, scale_m, scale_v_sqrt) };
            }
        }
        self.replay_portable(params, decay, scale_m, scale_v_sqrt)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn replay_avx2(&mut self, params: &ParamsAdamW, decay: f64, scale_m: &[f64], scale_v_sqrt: &[f64]) {
        self.replay_portable(params, decay, scale_m, scale_v_sqrt)
    }

    #[inline(always)]
    fn replay_portable(&mut self, params: &ParamsAdamW, decay: f64, scale_m: &[f64], scale_v_sqrt: &[f64]) {
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

/// What the closed-form replay of one row's columns shares (see `TableState::replay` in
/// `tables`): `theta_n = d^n theta - lr (m / sqrt(v)) (w1 - (eps / sqrt(v)) w2)` for columns
/// whose second moment stays large enough that the `eps^2` remainder is negligible, only the
/// weight decay for columns that never had a gradient, and the step-by-step replay (the
/// caller's) for the rest.
pub(super) struct ClosedForm {
    lr: f64,
    eps: f64,
    /// The replay sums ([`BiasCorrections::replay_sums`]).
    w1: f64,
    w2: f64,
    /// `beta1^n`, `beta2^n` and `d^n` over the `n` replayed steps.
    m_decay: f64,
    v_decay: f64,
    theta_decay: f64,
    /// [`BiasCorrections::closed_form_from`]: the closed form holds for `v v_decay` at least this.
    closed_form_from: f64,
}

impl ClosedForm {
    /// Whether a column with second moment `v0` needs the replay step by step: it had a
    /// gradient, and `sqrt(v0 v_decay) < 100 eps` (tested without the square root, with the
    /// same answer: [`sqrt_at_least_from`]).
    pub(super) fn needs_step_by_step(&self, v0: f32) -> bool {
        let v0 = v0 as f64;
        v0 != 0.0 && !self.closed_form_holds(v0)
    }

    /// Whether `sqrt(v0 v_decay)` is at least `100 eps` (false for NaN).
    #[inline(always)]
    fn closed_form_holds(&self, v0: f64) -> bool {
        v0 * self.v_decay >= self.closed_form_from
    }

    /// Replays a row's columns (first moments `m`, second moments `v`, values `value`): each
    /// [`ClosedForm::needs_step_by_step`] column's moments decay and its value stays for the
    /// caller; a column that never had a gradient (`v0 = 0`) only decays its value. With AVX2
    /// where the CPU has it: the columns side by side in wider lanes, with the same correctly
    /// rounded operations in the same order (no fused multiply-add), so the same bits.
    pub(super) fn apply(&self, m: &mut [f32], v: &mut [f32], value: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { self.apply_avx2(m, v, value) };
            }
        }
        self.apply_portable(m, v, value)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, m: &mut [f32], v: &mut [f32], value: &mut [f32]) {
        self.apply_portable(m, v, value)
    }

    /// Every column's three outcomes computed, one kept: selects, not branches, and stores
    /// made whatever the outcome, so the loop vectorizes.
    #[inline(always)]
    fn apply_portable(&self, m: &mut [f32], v: &mut [f32], value: &mut [f32]) {
        for ((m, v), x) in m.iter_mut().zip(v.iter_mut()).zip(value.iter_mut()) {
            let (m_in, v_in, x_in) = (*m, *v, *x);
            let (m0, v0) = (m_in as f64, v_in as f64);
            let decayed = x_in as f64 * self.theta_decay;
            let sqrt_v0 = v0.sqrt();
            let closed = decayed - self.lr * (m0 / sqrt_v0) * (self.w1 - self.eps / sqrt_v0 * self.w2);
            let never_moved = v0 == 0.0;
            let moved = if self.closed_form_holds(v0) { closed as f32 } else { x_in };
            *x = if never_moved { decayed as f32 } else { moved };
            *m = if never_moved { m_in } else { (m0 * self.m_decay) as f32 };
            *v = if never_moved { v_in } else { (v0 * self.v_decay) as f32 };
        }
    }
}

/// The smallest `x` with `x.sqrt() >= c`: a correctly rounded square root never decreases as
/// `x` grows, so `x.sqrt() >= c` holds exactly when `x >= sqrt_at_least_from(c)` (for every
/// `x`, NaN and negatives included, where both are false). Found by bisection over the bit
/// patterns of non-negative floats, which order as the floats do.
pub(super) fn sqrt_at_least_from(c: f64) -> f64 {
    if c.is_nan() {
        return f64::NAN;
    }
    if c <= 0.0 {
        return 0.0;
    }
    // sqrt(lo) < c <= sqrt(hi) throughout.
    let (mut lo, mut hi) = (0u64, f64::INFINITY.to_bits());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if f64::from_bits(mid).sqrt() >= c {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    f64::from_bits(hi)
}

/// Columns of many rows whose replay runs step by step ([`StepByStep`]), held until the rows of
/// one replay pass are done and then replayed in groups whose skipped steps have the same bias
/// corrections. One row has one to three such columns as a rule, too few for the vector lanes,
/// and a column's replay is a chain of square roots and divisions; side by side the chains of
/// many rows overlap. Grouping is exact: a group's columns take the same steps with the same
/// corrections, each column's operations are the ones its row alone would run, in the same
/// order, so its bits are too (a test checks it).
#[derive(Default)]
pub(super) struct PendingColumns {
    columns: Vec<PendingColumn>,
    order: Vec<u32>,
    side_by_side: StepByStep,
}

/// One column waiting for its step-by-step replay.
#[derive(Debug, Clone, Copy)]
struct PendingColumn {
    /// Which columns replay together: `(from, n)` (the steps `from + 1 ..= from + n`), with
    /// `from` = `i32::MIN` once every correction is 1, where the steps' corrections depend on
    /// nothing but their count.
    group: (i32, i32),
    /// The row's last update and its number of steps replayed one by one.
    from: i32,
    n: i32,
    /// Where the column's value is (the caller's index: `tables` uses its offset in the table).
    at: usize,
    m: f64,
    v: f64,
    theta: f64,
    /// The decay factor of the row's steps after the replay limit, applied after the replay.
    rest_decay: Option<f64>,
}

impl PendingColumns {
    /// How many columns wait.
    pub(super) fn len(&self) -> usize {
        self.columns.len()
    }

    /// Adds a column of a row last updated at step `from`, whose steps `from + 1 ..= from + n`
    /// replay one by one, with moments `m`, `v` and value `theta` (before those steps).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(&mut self, bias: &BiasCorrections, from: i32, n: i32, at: usize, m: f64, v: f64, theta: f64) {
        let steady = bias.steady_from.is_some_and(|steady_from| from as usize + 1 >= steady_from);
        let group = if steady { (i32::MIN, n) } else { (from, n) };
        self.columns.push(PendingColumn { group, from, n, at, m, v, theta, rest_decay: None });
    }

    /// Gives the columns pushed since `first` (one row's) the decay factor of the row's steps
    /// after the replay limit, which multiplies their value once the replay is done.
    pub(super) fn set_rest_decay(&mut self, first: usize, decay: f64) {
        for column in &mut self.columns[first..] {
            column.rest_decay = Some(decay);
        }
    }

    /// Replays every waiting column, a group at a time, and hands each one's value to
    /// `write(at, theta, rest_decay)`: the caller stores `theta` (rounded as it stores values)
    /// and then applies `rest_decay`, as it would have for the row alone. Empties the list.
    pub(super) fn replay(
        &mut self,
        params: &ParamsAdamW,
        bias: &BiasCorrections,
        mut write: impl FnMut(usize, f64, Option<f64>),
    ) {
        let decay = weight_decay_factor(params);
        self.order.clear();
        self.order.extend(0..self.columns.len() as u32);
        let columns = &self.columns;
        self.order.sort_by_key(|&k| columns[k as usize].group);
        for group in self.order.chunk_by(|&a, &b| columns[a as usize].group == columns[b as usize].group) {
            let first = columns[group[0] as usize];
            for &k in group {
                let c = &columns[k as usize];
                self.side_by_side.push(k as usize, c.m, c.v, c.theta);
            }
            // Any member's steps will do: the group's corrections are the same step for step.
            let steps = (first.from + 1) as usize..=(first.from + first.n) as usize;
            self.side_by_side.replay(params, decay, &bias.scale_m[steps.clone()], &bias.scale_v_sqrt[steps]);
            for (&k, &theta) in self.side_by_side.columns.iter().zip(&self.side_by_side.theta) {
                let c = &columns[k];
                write(c.at, theta, c.rest_decay);
            }
            self.side_by_side.clear();
        }
        self.columns.clear();
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

    /// The least `v v_decay` for which the closed-form replay holds: `sqrt(v v_decay)` at
    /// least `100 eps`, where the `O(eps^2 / a^2)` remainder is below 1e-4 of each update
    /// ([`sqrt_at_least_from`], computed once).
    fn closed_form_from(&mut self, params: &ParamsAdamW) -> f64 {
        *self.closed_form_from.get_or_insert_with(|| sqrt_at_least_from(100.0 * params.eps))
    }

    /// The closed-form replay of a row last updated at step `from`, over the skipped steps
    /// `from + 1 ..= replayed_to` (at most `limit`).
    pub(super) fn closed_form(&mut self, params: &ParamsAdamW, from: i32, replayed_to: i32, limit: i32) -> ClosedForm {
        let (w1, w2) = self.replay_sums(params, from, replayed_to, limit);
        let (m_decay, v_decay, theta_decay) = self.powers(params, limit, replayed_to - from);
        ClosedForm {
            lr: params.lr,
            eps: params.eps,
            w1,
            w2,
            m_decay,
            v_decay,
            theta_decay,
            closed_form_from: self.closed_form_from(params),
        }
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
    fn columns_of_many_rows_replayed_in_groups_are_each_their_rows_replay_bit_for_bit() {
        let params = ParamsAdamW { lr: 1e-3, weight_decay: 1e-2, ..ParamsAdamW::default() };
        let mut bias = BiasCorrections::default();
        bias.cover(&params, 50_000);
        let steady_from = bias.steady_from.expect("the corrections reach 1 by step 50 000") as i32;
        let decay = weight_decay_factor(&params);
        // Rows (last update, steps replayed one by one, columns, rest decay): before the
        // corrections reach 1, across that step, in the steady state with the same and with
        // other counts, two rows sharing both, one row alone in its group.
        let rows: [(i32, i32, usize, Option<f64>); 7] = [
            (17, 220, 3, Some(0.999_9)),
            (17, 220, 1, None),
            (300, 40, 2, None),
            (steady_from - 100, 220, 2, Some(0.98)),
            (steady_from + 5, 220, 4, Some(0.97)),
            (steady_from + 4_000, 220, 1, None),
            (steady_from + 900, 57, 3, None),
        ];
        let mut pending = PendingColumns::default();
        let mut alone = Vec::new();
        let mut at = 0;
        for (r, &(from, n, columns, rest_decay)) in rows.iter().enumerate() {
            let first = pending.len();
            let mut one_row = StepByStep::default();
            for c in 0..columns {
                let (m, v) = (1e-7 * (c as f64 - 1.5), 1e-14 * (1.0 + (r + c) as f64));
                let theta = 0.01 * (r * 5 + c) as f64;
                pending.push(&bias, from, n, at, m, v, theta);
                one_row.push(at, m, v, theta);
                at += 1;
            }
            if let Some(d) = rest_decay {
                pending.set_rest_decay(first, d);
            }
            // What a row alone ran: its own steps' corrections.
            let steps = (from + 1) as usize..=(from + n) as usize;
            one_row.replay(&params, decay, &bias.scale_m[steps.clone()], &bias.scale_v_sqrt[steps]);
            alone.extend(one_row.theta.iter().map(|&theta| (theta, rest_decay)));
        }
        let mut grouped = vec![None; at];
        pending.replay(&params, &bias, |at, theta, rest_decay| grouped[at] = Some((theta, rest_decay)));
        assert_eq!(pending.len(), 0, "the list is emptied");
        for (k, (expected, got)) in alone.iter().zip(&grouped).enumerate() {
            let got = got.unwrap_or_else(|| panic!("column {k} was not written"));
            assert_eq!(got.0.to_bits(), expected.0.to_bits(), "column {k}");
            assert_eq!(got.1, expected.1, "column {k}'s rest decay");
        }
    }

    #[test]
    fn the_square_root_threshold_gives_the_square_roots_comparison_for_every_input() {
        for c in [1e-6, 100.0 * 1e-8, 1.0, 2.0, 0.3, 1e-300, 7.5e150, f64::MIN_POSITIVE, 0.0, -1.0] {
            let from = sqrt_at_least_from(c);
            let below = f64::from_bits(from.to_bits().saturating_sub(1));
            let above = f64::from_bits(from.to_bits() + 1);
            let mut inputs = vec![from, below, above, 0.0, -0.0, -1.0, f64::NAN, f64::INFINITY, c * c, c, 2.0 * c];
            inputs.extend((1..2_000).map(|k| from * (0.999 + 1e-6 * k as f64)));
            for x in inputs {
                assert_eq!(x >= from, x.sqrt() >= c, "c = {c:e}, x = {x:e}");
            }
        }
        assert!(sqrt_at_least_from(f64::NAN).is_nan());
    }

    #[test]
    fn the_closed_form_over_a_row_side_by_side_is_the_one_column_code_bit_for_bit() {
        let params = ParamsAdamW { lr: 1e-3, weight_decay: 1e-2, ..ParamsAdamW::default() };
        let mut bias = BiasCorrections::default();
        bias.cover(&params, 400);
        let (from, n, limit) = (30, 220, 220);
        let closed_form = bias.closed_form(&params, from, from + n, limit);
        let (w1, w2, m_decay, v_decay, theta_decay) =
            (closed_form.w1, closed_form.w2, closed_form.m_decay, closed_form.v_decay, closed_form.theta_decay);
        // Large, small, at the threshold, tiny and zero second moments; a first moment left
        // over where the second underflowed to 0; 37 columns, so the vector loop has a tail.
        let threshold = (closed_form.closed_form_from / v_decay) as f32;
        let second: Vec<f32> = [1e-6, 3e-9, 1e-12, threshold, f32::from_bits(threshold.to_bits() - 1), 1e-14, 0.0, 0.0]
            .into_iter()
            .cycle()
            .take(37)
            .collect();
        let first: Vec<f32> = (0..37).map(|j| if j == 7 { 1e-30 } else { 1e-4 * (j as f32 - 18.0) }).collect();
        let values: Vec<f32> = (0..37).map(|j| 0.05 * (j as f32 - 10.0)).collect();
        let (mut m, mut v, mut x) = (first.clone(), second.clone(), values.clone());
        closed_form.apply(&mut m, &mut v, &mut x);
        let mut step_by_step = 0;
        for j in 0..37 {
            // The loop `TableState::replay` ran per column before.
            let (m0, v0, mut x0) = (first[j] as f64, second[j] as f64, values[j]);
            let (mut m1, mut v1) = (first[j], second[j]);
            if v0 == 0.0 {
                x0 = (x0 as f64 * theta_decay) as f32;
            } else {
                let sqrt_v0 = v0.sqrt();
                if (v0 * v_decay).sqrt() >= 100.0 * params.eps {
                    let ratio = m0 / sqrt_v0;
                    x0 = (x0 as f64 * theta_decay - params.lr * ratio * (w1 - params.eps / sqrt_v0 * w2)) as f32;
                } else {
                    assert!(closed_form.needs_step_by_step(second[j]), "column {j}");
                    step_by_step += 1;
                }
                m1 = (m0 * m_decay) as f32;
                v1 = (v0 * v_decay) as f32;
            }
            if v0 == 0.0 || (v0 * v_decay).sqrt() >= 100.0 * params.eps {
                assert!(!closed_form.needs_step_by_step(second[j]), "column {j}");
            }
            assert_eq!(x[j].to_bits(), x0.to_bits(), "column {j}'s value");
            assert_eq!(m[j].to_bits(), m1.to_bits(), "column {j}'s first moment");
            assert_eq!(v[j].to_bits(), v1.to_bits(), "column {j}'s second moment");
        }
        assert!(step_by_step > 0, "some columns need the replay step by step");
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
