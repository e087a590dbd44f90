//! LiMAML's passes written out by hand over packed rows: the inner loop, the first- and
//! second-order outer gradients, export, adapted scoring and serving.
//!
//! Owns [`DenseStack`] (an MLP's weights as plain vectors), [`TaskStacks`] (per-task Meta
//! Blocks as shared weights plus rank-one terms), [`PackedRows`] (the rows of many tasks back
//! to back, no padding) and the forward, tangent and backward passes over them. Must not know
//! where rows, features or weights come from (`limaml` builds the inputs and applies the
//! gradients); candle's autograd path in `limaml` stays as the reference it is tested against.
//!
//! Why by hand: candle's autograd, on these small matrices, spent most of a meta-training step
//! on work the step does not need (bench/README.md has the profile): weight gradients of the
//! frozen Global Block in the inner loop, a zero-filled buffer per gradient, padding every task
//! to the longest in its batch. Here the inner loop computes only what adapting the Meta Block
//! needs, and it uses the Global Block's structure:
//!
//! - the first Global Block layer splits into a row part and a meta-embedding part,
//!   `a0 = x Wx + e We + b0`; in the inner loop the Global Block is fixed, so `x Wx + b0` is
//!   computed once per batch and each inner step adds the per-task `e We` (`T x h`, not rows);
//! - the gradient of the meta embedding is the per-task sum of `dA0` times `Weᵀ`;
//! - rows are packed (each task's rows back to back), so no work is spent on padding.
//!
//! The maths is candle's path's (tests check gradients, embeddings and logits against it).
//! Matrix products go through `gemm` (the crate candle's CPU backend uses).

use gemm::{gemm, Parallelism};

/// `out (m x n) = [out +] op(a) op(b)`, all row-major, `op(a)` `m x k` (`a` stored `k x m`
/// when `a_transposed`), `op(b)` `k x n` (`b` stored `n x k` when `b_transposed`).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    out: &mut [f32],
    accumulate: bool,
    a: &[f32],
    a_transposed: bool,
    b: &[f32],
    b_transposed: bool,
    m: usize,
    k: usize,
    n: usize,
) {
    assert_eq!(out.len(), m * n, "matmul output");
    assert_eq!(a.len(), m * k, "matmul lhs");
    assert_eq!(b.len(), k * n, "matmul rhs");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    let (a_rs, a_cs) = if a_transposed { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
    // One thread per product: callers parallelize over independent tasks and chunks, which
    // measured faster than splitting these medium-sized products (bench/README.md).
    let parallelism = Parallelism::None;
    // SAFETY: the asserts above bound every index gemm reads or writes: `out` is m x n with
    // row stride n, `a` and `b` hold m * k and k * n values laid out as the strides say.
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Adds `bias` (`n`) to every row of `out` (`rows x n`).
fn add_bias_rows(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
}

/// Column sums of `x` (`rows x n`) added to `out` (`n`).
fn add_column_sums(out: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(out.len()) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

fn relu_in_place(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// `grad *= (activation > 0)`: ReLU's backward from its output.
fn relu_backward(grad: &mut [f32], activation: &[f32]) {
    grad.iter_mut()
        .zip(activation)
        .for_each(|(g, &a)| *g = if a > 0.0 { *g } else { 0.0 });
}

/// A dense stack (ReLU between layers, none after the last) as plain row-major vectors:
/// `weights[k]` is `widths[k] x widths[k + 1]`, `biases[k]` is `widths[k + 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseStack {
    pub widths: Vec<usize>,
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<Vec<f32>>,
}

impl DenseStack {
    pub fn n_layers(&self) -> usize {
        self.weights.len()
    }

    /// A stack of the same shape, all zeros (a gradient accumulator).
    pub fn zeros_like(&self) -> DenseStack {
        DenseStack {
            widths: self.widths.clone(),
            weights: self.weights.iter().map(|w| vec![0.0; w.len()]).collect(),
            biases: self.biases.iter().map(|b| vec![0.0; b.len()]).collect(),
        }
    }
}

/// One rank-one term per task: task `t`'s matrix is `left[t] ⊗ right[t]` (`left` is
/// `T x fan_in`, `right` is `T x fan_out`).
#[derive(Debug, Clone, PartialEq)]
pub struct RankOne {
    pub left: Vec<f32>,
    pub right: Vec<f32>,
}

/// Per-task Meta Blocks, kept as shared weights plus per-task rank-one terms: task `t`'s layer
/// `k` weight is `base.weights[k] + sum_j terms[k][j].left[t] ⊗ terms[k][j].right[t]` and its
/// bias is `biases[k][t]`. Without a base, the same form holds per-task *gradients*.
///
/// Why: the Meta Block sees one input vector per task, so each task's weight gradient is a
/// rank-one outer product per layer (`input ⊗ pre-activation gradient`). Adapted weights are
/// therefore the shared weights plus a few rank-one terms; keeping them in that form runs every
/// task's layer as one matrix product with the shared weights plus per-task dot products, and
/// never copies a `T x in x out` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStacks {
    pub n_tasks: usize,
    pub widths: Vec<usize>,
    pub base: Option<DenseStack>,
    pub terms: Vec<Vec<RankOne>>,
    /// Per layer, `T x fan_out`.
    pub biases: Vec<Vec<f32>>,
}

impl TaskStacks {
    /// `n_tasks` copies of `shared`.
    pub fn repeat(shared: &DenseStack, n_tasks: usize) -> TaskStacks {
        TaskStacks {
            n_tasks,
            widths: shared.widths.clone(),
            terms: vec![Vec::new(); shared.n_layers()],
            biases: shared.biases.iter().map(|b| b.repeat(n_tasks)).collect(),
            base: Some(shared.clone()),
        }
    }

    /// A per-task gradient of these stacks' shape, all zeros (no base, no terms).
    fn zero_gradient(&self) -> TaskStacks {
        TaskStacks {
            n_tasks: self.n_tasks,
            widths: self.widths.clone(),
            base: None,
            terms: vec![Vec::new(); self.widths.len() - 1],
            biases: self.biases.iter().map(|b| vec![0.0; b.len()]).collect(),
        }
    }

    /// `self -= rate * gradient` (`gradient` without a base).
    fn descend(&mut self, gradient: &TaskStacks, rate: f32) {
        for (terms, grads) in self.terms.iter_mut().zip(&gradient.terms) {
            for g in grads {
                terms.push(RankOne {
                    left: g.left.iter().map(|v| -rate * v).collect(),
                    right: g.right.clone(),
                });
            }
        }
        for (values, grads) in self.biases.iter_mut().zip(&gradient.biases) {
            values.iter_mut().zip(grads).for_each(|(v, g)| *v -= rate * g);
        }
    }

    /// Each task's layer `layer` applied to its row of `x` (`T x fan_in`): `T x fan_out`,
    /// with or without the bias.
    fn apply(&self, layer: usize, x: &[f32], with_bias: bool) -> Vec<f32> {
        let (fan_in, fan_out, n) = (self.widths[layer], self.widths[layer + 1], self.n_tasks);
        let mut out = if with_bias {
            self.biases[layer].clone()
        } else {
            vec![0.0f32; n * fan_out]
        };
        if let Some(base) = &self.base {
            matmul(&mut out, true, x, false, &base.weights[layer], false, n, fan_in, fan_out);
        }
        for term in &self.terms[layer] {
            for t in 0..n {
                let xt = &x[t * fan_in..][..fan_in];
                let s: f32 = xt.iter().zip(&term.left[t * fan_in..][..fan_in]).map(|(a, b)| a * b).sum();
                let o = &mut out[t * fan_out..][..fan_out];
                o.iter_mut().zip(&term.right[t * fan_out..][..fan_out]).for_each(|(o, r)| *o += s * r);
            }
        }
        out
    }

    /// Each task's layer `layer` transposed, applied to its row of `d` (`T x fan_out`):
    /// `T x fan_in` (backpropagation to the layer's input).
    fn apply_transposed(&self, layer: usize, d: &[f32]) -> Vec<f32> {
        let (fan_in, fan_out, n) = (self.widths[layer], self.widths[layer + 1], self.n_tasks);
        let mut out = vec![0.0f32; n * fan_in];
        if let Some(base) = &self.base {
            matmul(&mut out, false, d, false, &base.weights[layer], true, n, fan_out, fan_in);
        }
        for term in &self.terms[layer] {
            for t in 0..n {
                let dt = &d[t * fan_out..][..fan_out];
                let s: f32 = dt.iter().zip(&term.right[t * fan_out..][..fan_out]).map(|(a, b)| a * b).sum();
                let o = &mut out[t * fan_in..][..fan_in];
                o.iter_mut().zip(&term.left[t * fan_in..][..fan_in]).for_each(|(o, l)| *o += s * l);
            }
        }
        out
    }

    /// The sum over tasks of a per-task gradient, as one shared stack.
    pub fn sum_over_tasks(&self) -> DenseStack {
        let n = self.n_tasks;
        let mut out = DenseStack {
            widths: self.widths.clone(),
            weights: Vec::new(),
            biases: Vec::new(),
        };
        for layer in 0..self.widths.len() - 1 {
            let (fan_in, fan_out) = (self.widths[layer], self.widths[layer + 1]);
            let mut w = match &self.base {
                Some(base) => base.weights[layer].iter().map(|v| v * n as f32).collect(),
                None => vec![0.0f32; fan_in * fan_out],
            };
            for term in &self.terms[layer] {
                matmul(&mut w, true, &term.left, true, &term.right, false, fan_in, n, fan_out);
            }
            let mut b = vec![0.0f32; fan_out];
            add_column_sums(&mut b, &self.biases[layer]);
            out.weights.push(w);
            out.biases.push(b);
        }
        out
    }
}

/// The Meta Block run per task: `inputs[k]` is layer `k`'s input (`T x widths[k]`, after
/// ReLU for `k > 0`); `output` is the meta embedding, `T x m`.
pub struct MetaPass {
    inputs: Vec<Vec<f32>>,
    pub output: Vec<f32>,
}

/// Runs every task's own Meta Block on its input vector (`meta_input`, `T x in`).
pub fn meta_forward(stacks: &TaskStacks, meta_input: &[f32]) -> MetaPass {
    let n_layers = stacks.widths.len() - 1;
    let mut inputs = vec![meta_input.to_vec()];
    for layer in 0..n_layers {
        let mut out = stacks.apply(layer, &inputs[layer], true);
        if layer + 1 < n_layers {
            relu_in_place(&mut out);
            inputs.push(out);
        } else {
            return MetaPass { inputs, output: out };
        }
    }
    // No layers: the embedding is the input.
    MetaPass {
        output: meta_input.to_vec(),
        inputs,
    }
}

/// Backpropagates `d_output` (`T x m`) through each task's Meta Block: per-task weight
/// gradients (rank-one terms), and with `d_input` the gradient of each task's input vector
/// (`T x in`).
pub fn meta_backward(
    stacks: &TaskStacks,
    pass: &MetaPass,
    d_output: &[f32],
    d_input: Option<&mut [f32]>,
) -> TaskStacks {
    let mut grads = stacks.zero_gradient();
    let n_layers = stacks.widths.len() - 1;
    let mut d_pre = d_output.to_vec();
    for layer in (0..n_layers).rev() {
        let x = &pass.inputs[layer];
        grads.biases[layer].copy_from_slice(&d_pre);
        grads.terms[layer].push(RankOne {
            left: x.clone(),
            right: d_pre.clone(),
        });
        if layer == 0 {
            if let Some(d_input) = d_input {
                d_input.copy_from_slice(&stacks.apply_transposed(0, &d_pre));
            }
            break;
        }
        let mut d_x = stacks.apply_transposed(layer, &d_pre);
        relu_backward(&mut d_x, x);
        d_pre = d_x;
    }
    grads
}

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

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The Global Block's weights with its first layer split by input: `a0 = x Wx + e We + b0`
/// (`x` the row input, `row_dim` wide; `e` the meta embedding).
pub struct GlobalBlock<'a> {
    pub stack: &'a DenseStack,
    pub row_dim: usize,
}

impl GlobalBlock<'_> {
    fn first_width(&self) -> usize {
        self.stack.widths[1]
    }

    /// `Wx`, `row_dim x h`.
    fn row_weight(&self) -> &[f32] {
        &self.stack.weights[0][..self.row_dim * self.first_width()]
    }

    /// `We`, `m x h`.
    fn meta_weight(&self) -> &[f32] {
        &self.stack.weights[0][self.row_dim * self.first_width()..]
    }

    fn meta_dim(&self) -> usize {
        self.stack.widths[0] - self.row_dim
    }

    /// `x Wx + b0` for the inputs `x` of `rows` packed rows (`rows x row_dim`): the part of the
    /// first layer that does not depend on the meta embedding.
    pub fn row_part(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let h = self.first_width();
        let mut out = vec![0.0f32; rows * h];
        matmul(&mut out, false, x, false, self.row_weight(), false, rows, self.row_dim, h);
        add_bias_rows(&mut out, &self.stack.biases[0]);
        out
    }

    /// `d_per_task Weᵀ`: the gradient of each task's meta embedding (`T x m`) from the
    /// per-task sums of the first layer's pre-activation gradient (`T x h`).
    fn meta_embedding_gradient(&self, d_per_task: &[f32]) -> Vec<f32> {
        let (h, m) = (self.first_width(), self.meta_dim());
        let n_tasks = d_per_task.len() / h;
        let mut out = vec![0.0f32; n_tasks * m];
        matmul(&mut out, false, d_per_task, false, self.meta_weight(), true, n_tasks, h, m);
        out
    }

    /// `(T x h)` per-task vectors added to each packed row (`rows x h`) of its task.
    fn broadcast_to_rows(per_task: &[f32], task_of_row: &[u32], h: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(task_of_row.len() * h);
        for &t in task_of_row {
            out.extend_from_slice(&per_task[t as usize * h..][..h]);
        }
        out
    }

    /// The first layer's pre-activation: `row_part` plus each row's task's `e We`.
    fn first_pre_activation(
        &self,
        row_part: &[f32],
        meta_embedding: &[f32],
        task_of_row: &[u32],
    ) -> Vec<f32> {
        let h = self.first_width();
        let n_tasks = meta_embedding.len() / self.meta_dim().max(1);
        let mut per_task = vec![0.0f32; n_tasks * h];
        matmul(
            &mut per_task,
            false,
            meta_embedding,
            false,
            self.meta_weight(),
            false,
            n_tasks,
            self.meta_dim(),
            h,
        );
        let mut out = row_part.to_vec();
        for (row, &t) in out.chunks_exact_mut(h).zip(task_of_row) {
            let add = &per_task[t as usize * h..][..h];
            row.iter_mut().zip(add).for_each(|(x, a)| *x += a);
        }
        out
    }
}

/// The Global Block run on packed rows: `hidden[k]` is hidden layer `k`'s output (after ReLU),
/// `logits` one per row.
pub struct GlobalPass {
    hidden: Vec<Vec<f32>>,
    pub logits: Vec<f32>,
}

/// Runs the Global Block from its first layer's pre-activation (`rows x h`).
fn global_forward(stack: &DenseStack, first_pre: Vec<f32>) -> GlobalPass {
    let n_layers = stack.n_layers();
    if n_layers == 1 {
        return GlobalPass {
            hidden: Vec::new(),
            logits: first_pre,
        };
    }
    let rows = first_pre.len() / stack.widths[1];
    let mut h = first_pre;
    relu_in_place(&mut h);
    let mut hidden = vec![h];
    for layer in 1..n_layers {
        let (fan_in, fan_out) = (stack.widths[layer], stack.widths[layer + 1]);
        let x = hidden.last().expect("layer 0 is pushed first");
        let mut out = vec![0.0f32; rows * fan_out];
        matmul(&mut out, false, x, false, &stack.weights[layer], false, rows, fan_in, fan_out);
        add_bias_rows(&mut out, &stack.biases[layer]);
        if layer + 1 < n_layers {
            relu_in_place(&mut out);
            hidden.push(out);
        } else {
            return GlobalPass {
                hidden,
                logits: out,
            };
        }
    }
    unreachable!("the loop returns at the last layer")
}

/// Backpropagates `d_logits` through the Global Block down to its first layer's
/// pre-activation (returned, `rows x h`), adding the weight gradients of layers `1..` to
/// `grads` when given (layer 0's are the caller's: they need the row inputs).
fn global_backward(
    stack: &DenseStack,
    pass: &GlobalPass,
    d_logits: Vec<f32>,
    mut grads: Option<&mut DenseStack>,
) -> Vec<f32> {
    let n_layers = stack.n_layers();
    let rows = d_logits.len();
    let mut d_pre = d_logits;
    for layer in (1..n_layers).rev() {
        let (fan_in, fan_out) = (stack.widths[layer], stack.widths[layer + 1]);
        let x = &pass.hidden[layer - 1];
        if let Some(grads) = grads.as_deref_mut() {
            matmul(&mut grads.weights[layer], true, x, true, &d_pre, false, fan_in, rows, fan_out);
            add_column_sums(&mut grads.biases[layer], &d_pre);
        }
        let mut d_x = vec![0.0f32; rows * fan_in];
        matmul(&mut d_x, false, &d_pre, false, &stack.weights[layer], true, rows, fan_out, fan_in);
        relu_backward(&mut d_x, x);
        d_pre = d_x;
    }
    d_pre
}

/// `sum_r weight_r * logistic_loss(logit_r, label_r)` and its gradient with respect to each
/// logit, times `scale`.
fn logistic_loss(logits: &[f32], rows: &PackedRows, scale: f32) -> (f64, Vec<f32>) {
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
fn sum_by_task(x: &[f32], task_of_row: &[u32], n_tasks: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n_tasks * h];
    for (row, &t) in x.chunks_exact(h).zip(task_of_row) {
        let o = &mut out[t as usize * h..][..h];
        o.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out
}

/// A Meta Block adapted on each task's support: the weights and its embedding.
pub struct Adapted {
    pub stacks: TaskStacks,
    pub pass: MetaPass,
}

/// The inner loop: `steps` SGD steps at `rate` on each task's mean support loss, adapting only
/// the Meta Block (the Global Block and the inputs stay as given). `support_row_part` is
/// [`GlobalBlock::row_part`] of the support rows.
pub fn adapt(
    meta: &DenseStack,
    global: &GlobalBlock,
    meta_input: &[f32],
    support: &PackedRows,
    support_row_part: &[f32],
    steps: usize,
    rate: f32,
) -> Adapted {
    let mut trajectory =
        adapt_trajectory(meta, global, meta_input, support, support_row_part, steps, rate);
    let stacks = trajectory.pop().expect("the trajectory starts with the initialization");
    let pass = meta_forward(&stacks, meta_input);
    Adapted { stacks, pass }
}

/// The Meta Block's weights before each inner step and after the last (`steps + 1` entries).
fn adapt_trajectory(
    meta: &DenseStack,
    global: &GlobalBlock,
    meta_input: &[f32],
    support: &PackedRows,
    support_row_part: &[f32],
    steps: usize,
    rate: f32,
) -> Vec<TaskStacks> {
    let mut trajectory = vec![TaskStacks::repeat(meta, support.n_tasks)];
    for _ in 0..steps {
        let mut stacks = trajectory.last().expect("pushed above").clone();
        if !support.is_empty() {
            let grads = support_gradient(&stacks, global, meta_input, support, support_row_part);
            stacks.descend(&grads, rate);
        }
        trajectory.push(stacks);
    }
    trajectory
}

/// Each task's gradient of its mean support loss with respect to its own Meta Block.
fn support_gradient(
    stacks: &TaskStacks,
    global: &GlobalBlock,
    meta_input: &[f32],
    support: &PackedRows,
    support_row_part: &[f32],
) -> TaskStacks {
    let h = global.first_width();
    let pass = meta_forward(stacks, meta_input);
    let first = global.first_pre_activation(support_row_part, &pass.output, &support.task_of_row);
    let forward = global_forward(global.stack, first);
    let (_, d_logits) = logistic_loss(&forward.logits, support, 1.0);
    let d_first = global_backward(global.stack, &forward, d_logits, None);
    let d_per_task = sum_by_task(&d_first, &support.task_of_row, support.n_tasks, h);
    let d_embedding = global.meta_embedding_gradient(&d_per_task);
    meta_backward(stacks, &pass, &d_embedding, None)
}

/// Logits of packed rows from per-task meta embeddings (`T x m`), given the rows'
/// [`GlobalBlock::row_part`].
pub fn logits(global: &GlobalBlock, row_part: &[f32], meta_embedding: &[f32], rows: &PackedRows) -> Vec<f32> {
    let first = global.first_pre_activation(row_part, meta_embedding, &rows.task_of_row);
    global_forward(global.stack, first).logits
}

/// Logits of rows each with its own meta embedding (`meta_per_row`, `rows x m`) and row
/// inputs `x` (`rows x row_dim`): serving from stored embeddings.
pub fn logits_per_row(global: &GlobalBlock, x: &[f32], meta_per_row: &[f32], rows: usize) -> Vec<f32> {
    let (h, m) = (global.first_width(), global.meta_dim());
    let mut first = global.row_part(x, rows);
    matmul(&mut first, true, meta_per_row, false, global.meta_weight(), false, rows, m, h);
    global_forward(global.stack, first).logits
}

/// Gradients of one outer step.
pub struct OuterGradients {
    /// `sum_t mean_t loss / T`, before the step.
    pub loss: f64,
    pub meta: DenseStack,
    pub global: DenseStack,
    /// `rows x row_dim`: the gradient of each outer row's input (callers keep the columns of
    /// trainable inputs, the item-id embedding).
    pub row_inputs: Vec<f32>,
    /// `support rows x row_dim`: the same for the support rows through the inner loop
    /// (second-order only; empty for first-order).
    pub support_row_inputs: Vec<f32>,
    /// `T x in`: the gradient of each task's Meta Block input.
    pub meta_input: Vec<f32>,
}

/// The inputs of one outer step: the tasks' Meta Block inputs, support rows and outer rows.
pub struct OuterStep<'a> {
    /// `T x in`.
    pub meta_input: &'a [f32],
    pub support: &'a PackedRows,
    /// `support rows x row_dim`.
    pub support_x: &'a [f32],
    pub outer: &'a PackedRows,
    /// `outer rows x row_dim`.
    pub outer_x: &'a [f32],
    /// The outer rows begin with exactly the support rows (their row part is reused).
    pub outer_starts_with_support: bool,
    pub inner_steps: usize,
    pub inner_rate: f32,
    /// Differentiate through the inner loop (MAML) rather than first-order MAML.
    pub second_order: bool,
    /// The outer loss is `loss_scale * sum_t mean_t loss` (`1 / T` for the meta-batch mean;
    /// the same when the meta-batch is split into groups computed apart).
    pub loss_scale: f32,
}

/// The outer step's gradients: adapt on the support, score the outer rows with the adapted
/// Meta Blocks, and differentiate `sum_t mean_t loss / T` with respect to the Global Block,
/// the Meta Block's initialization, the row inputs and the Meta Block inputs.
///
/// First-order: the inner gradients are constants, so the initialization's gradient is the
/// sum of each task's gradient at its adapted weights. Second-order: the gradient flows back
/// through every inner step `theta' = theta - rate * g(theta)`: with `v` the gradient at
/// `theta'`, the step adds `- rate * grad <g(theta), v>` to every parameter's gradient, and
/// `<g, v> = sum_r c_r s'_r` (`c_r` a support row's loss gradient at its logit, `s'_r` the
/// logit's derivative along the Meta Block direction `v`), so one forward-mode tangent pass
/// and one backward pass over primal and tangent values give it.
pub fn outer_gradients(meta: &DenseStack, global: &GlobalBlock, step: &OuterStep) -> OuterGradients {
    let (support, outer) = (step.support, step.outer);
    let n_tasks = support.n_tasks;
    let (h, row_dim, m) = (global.first_width(), global.row_dim, global.meta_dim());
    let support_row_part = global.row_part(step.support_x, support.len());
    let mut trajectory = adapt_trajectory(
        meta,
        global,
        step.meta_input,
        support,
        &support_row_part,
        step.inner_steps,
        step.inner_rate,
    );
    let adapted = trajectory.pop().expect("the trajectory starts with the initialization");
    let adapted_pass = meta_forward(&adapted, step.meta_input);
    let outer_row_part = if step.outer_starts_with_support {
        let mut part = support_row_part.clone();
        let rest = outer.len() - support.len();
        part.extend(global.row_part(&step.outer_x[support.len() * row_dim..], rest));
        part
    } else {
        global.row_part(step.outer_x, outer.len())
    };
    let embedding = &adapted_pass.output;
    let first = global.first_pre_activation(&outer_row_part, embedding, &outer.task_of_row);
    let forward = global_forward(global.stack, first);
    let (loss, d_logits) = logistic_loss(&forward.logits, outer, step.loss_scale);
    let mut global_grads = global.stack.zeros_like();
    let d_first = global_backward(global.stack, &forward, d_logits, Some(&mut global_grads));
    let rows = outer.len();
    // Layer 0: [dWx; dWe], db0.
    let (d_row_weight, d_meta_weight) = global_grads.weights[0].split_at_mut(row_dim * h);
    matmul(d_row_weight, false, step.outer_x, true, &d_first, false, row_dim, rows, h);
    add_column_sums(&mut global_grads.biases[0], &d_first);
    let d_per_task = sum_by_task(&d_first, &outer.task_of_row, n_tasks, h);
    matmul(d_meta_weight, false, embedding, true, &d_per_task, false, m, n_tasks, h);
    let d_embedding = global.meta_embedding_gradient(&d_per_task);
    let mut d_row_inputs = vec![0.0f32; rows * row_dim];
    matmul(&mut d_row_inputs, false, &d_first, false, global.row_weight(), true, rows, h, row_dim);
    let mut d_meta_input = vec![0.0f32; step.meta_input.len()];
    let mut v = meta_backward(&adapted, &adapted_pass, &d_embedding, Some(&mut d_meta_input));
    let mut support_row_inputs = Vec::new();
    if step.second_order && !support.is_empty() {
        support_row_inputs = vec![0.0f32; support.len() * row_dim];
        for stacks in trajectory.iter().rev() {
            let back = InnerStepBackward {
                global,
                meta_input: step.meta_input,
                support,
                support_x: step.support_x,
                support_row_part: &support_row_part,
            }
            .run(stacks, &v);
            let rate = step.inner_rate;
            let pairs = global_grads.weights.iter_mut().zip(&back.global.weights);
            let pairs = pairs.chain(global_grads.biases.iter_mut().zip(&back.global.biases));
            let pairs = pairs
                .chain([(&mut support_row_inputs, &back.support_row_inputs)])
                .chain([(&mut d_meta_input, &back.meta_input)]);
            for (total, psi) in pairs {
                total.iter_mut().zip(psi).for_each(|(t, p)| *t -= rate * p);
            }
            v.descend(&back.meta, rate);
        }
    }
    OuterGradients {
        loss,
        meta: v.sum_over_tasks(),
        global: global_grads,
        row_inputs: d_row_inputs,
        support_row_inputs,
        meta_input: d_meta_input,
    }
}

/// The gradient of `psi = <g(theta), v>` (`g` each task's support-loss gradient at its Meta
/// Block `theta`, `v` a per-task direction) with respect to everything `g` reads.
struct PsiGradients {
    meta: TaskStacks,
    global: DenseStack,
    support_row_inputs: Vec<f32>,
    meta_input: Vec<f32>,
}

/// What one inner step's backward pass reads.
struct InnerStepBackward<'a> {
    global: &'a GlobalBlock<'a>,
    meta_input: &'a [f32],
    support: &'a PackedRows,
    support_x: &'a [f32],
    support_row_part: &'a [f32],
}

impl InnerStepBackward<'_> {
    /// [`PsiGradients`] at Meta Blocks `stacks` along direction `v`.
    fn run(&self, stacks: &TaskStacks, v: &TaskStacks) -> PsiGradients {
        let (global, support) = (self.global, self.support);
        let (h, row_dim, n_tasks) = (global.first_width(), global.row_dim, support.n_tasks);
        let rows = support.len();
        // Primal: the support loss's forward pass and each row's loss gradient c_r.
        let pass = meta_forward(stacks, self.meta_input);
        let first =
            global.first_pre_activation(self.support_row_part, &pass.output, &support.task_of_row);
        let forward = global_forward(global.stack, first);
        let (_, c) = logistic_loss(&forward.logits, support, 1.0);
        // Tangent along v: the meta embedding's, then every Global Block activation's.
        let (meta_tangents, embedding_tangent) = meta_tangent(stacks, &pass, v);
        let mut first_tangent_per_task = vec![0.0f32; n_tasks * h];
        let m = global.meta_dim();
        matmul(
            &mut first_tangent_per_task,
            false,
            &embedding_tangent,
            false,
            global.meta_weight(),
            false,
            n_tasks,
            m,
            h,
        );
        let first_tangent =
            GlobalBlock::broadcast_to_rows(&first_tangent_per_task, &support.task_of_row, h);
        let (hidden_tangents, logit_tangent) = global_tangent(global.stack, &forward, first_tangent);
        // psi = sum_r c_r s'_r: the adjoint of s'_r is c_r; of s_r, s'_r dc_r/ds_r.
        let d_logits: Vec<f32> = forward
            .logits
            .iter()
            .zip(&logit_tangent)
            .zip(&support.weight)
            .map(|((&s, &tangent), &w)| {
                let p = 1.0 / (1.0 + (-s).exp());
                tangent * w * p * (1.0 - p)
            })
            .collect();
        let mut global_grads = global.stack.zeros_like();
        let (d_first, d_first_tangent) = global_dual_backward(
            global.stack,
            &forward,
            &hidden_tangents,
            d_logits,
            c,
            &mut global_grads,
        );
        let (d_row_weight, d_meta_weight) = global_grads.weights[0].split_at_mut(row_dim * h);
        matmul(d_row_weight, false, self.support_x, true, &d_first, false, row_dim, rows, h);
        add_column_sums(&mut global_grads.biases[0], &d_first);
        let d_per_task = sum_by_task(&d_first, &support.task_of_row, n_tasks, h);
        let d_tangent_per_task = sum_by_task(&d_first_tangent, &support.task_of_row, n_tasks, h);
        matmul(d_meta_weight, false, &pass.output, true, &d_per_task, false, m, n_tasks, h);
        matmul(
            d_meta_weight,
            true,
            &embedding_tangent,
            true,
            &d_tangent_per_task,
            false,
            m,
            n_tasks,
            h,
        );
        let d_embedding = global.meta_embedding_gradient(&d_per_task);
        let d_embedding_tangent = global.meta_embedding_gradient(&d_tangent_per_task);
        let mut support_row_inputs = vec![0.0f32; rows * row_dim];
        matmul(
            &mut support_row_inputs,
            false,
            &d_first,
            false,
            global.row_weight(),
            true,
            rows,
            h,
            row_dim,
        );
        let mut meta_input = vec![0.0f32; self.meta_input.len()];
        let meta = meta_dual_backward(
            stacks,
            &pass,
            v,
            &meta_tangents,
            &d_embedding,
            &d_embedding_tangent,
            &mut meta_input,
        );
        PsiGradients {
            meta,
            global: global_grads,
            support_row_inputs,
            meta_input,
        }
    }
}

/// The Meta Blocks' forward-mode tangent along a weight direction `direction` (per task,
/// without a base): returns each layer input's tangent (the first, of the constant input, is
/// zero) and the meta embedding's (`T x m`).
fn meta_tangent(stacks: &TaskStacks, pass: &MetaPass, direction: &TaskStacks) -> (Vec<Vec<f32>>, Vec<f32>) {
    let n_layers = stacks.widths.len() - 1;
    let mut tangents = vec![vec![0.0f32; stacks.n_tasks * stacks.widths[0]]];
    for layer in 0..n_layers {
        // p' = u' M + u V + nu, per task (u' = 0 at the input).
        let mut out = direction.apply(layer, &pass.inputs[layer], true);
        if layer > 0 {
            let from_tangent = stacks.apply(layer, &tangents[layer], false);
            out.iter_mut().zip(&from_tangent).for_each(|(o, v)| *o += v);
        }
        if layer + 1 < n_layers {
            relu_backward(&mut out, &pass.inputs[layer + 1]);
            tangents.push(out);
        } else {
            return (tangents, out);
        }
    }
    // No layers: the embedding is the (constant) input.
    let zero = vec![0.0f32; stacks.n_tasks * stacks.widths[0]];
    (tangents, zero)
}

/// Backpropagates primal and tangent adjoints of the meta embedding (`d_output`,
/// `d_output_tangent`, `T x m`) through the Meta Blocks and their tangent along `direction`:
/// per-task weight gradients; adds the input's gradient to `d_input` (`T x in`).
fn meta_dual_backward(
    stacks: &TaskStacks,
    pass: &MetaPass,
    direction: &TaskStacks,
    tangents: &[Vec<f32>],
    d_output: &[f32],
    d_output_tangent: &[f32],
    d_input: &mut [f32],
) -> TaskStacks {
    let mut grads = stacks.zero_gradient();
    let n_layers = stacks.widths.len() - 1;
    let mut d_pre = d_output.to_vec();
    let mut d_pre_tangent = d_output_tangent.to_vec();
    for layer in (0..n_layers).rev() {
        let u = &pass.inputs[layer];
        // dM = u ⊗ dp + u' ⊗ dp' (u' = 0 at the input); db = dp.
        grads.terms[layer].push(RankOne {
            left: u.clone(),
            right: d_pre.clone(),
        });
        if layer > 0 {
            grads.terms[layer].push(RankOne {
                left: tangents[layer].clone(),
                right: d_pre_tangent.clone(),
            });
        }
        grads.biases[layer].copy_from_slice(&d_pre);
        // du = dp Mᵀ + dp' Vᵀ; du' = dp' Mᵀ.
        let mut d_u = stacks.apply_transposed(layer, &d_pre);
        let through_direction = direction.apply_transposed(layer, &d_pre_tangent);
        d_u.iter_mut().zip(&through_direction).for_each(|(d, v)| *d += v);
        if layer > 0 {
            let mut d_u_tangent = stacks.apply_transposed(layer, &d_pre_tangent);
            relu_backward(&mut d_u, u);
            relu_backward(&mut d_u_tangent, u);
            d_pre = d_u;
            d_pre_tangent = d_u_tangent;
        } else {
            d_input.iter_mut().zip(&d_u).for_each(|(g, d)| *g += d);
        }
    }
    grads
}

/// The Global Block's forward-mode tangent from its first layer's pre-activation tangent
/// (`rows x h`): each hidden layer's output tangent and the logits' (`rows`).
fn global_tangent(stack: &DenseStack, pass: &GlobalPass, first_tangent: Vec<f32>) -> (Vec<Vec<f32>>, Vec<f32>) {
    let n_layers = stack.n_layers();
    if n_layers == 1 {
        return (Vec::new(), first_tangent);
    }
    let rows = first_tangent.len() / stack.widths[1];
    let mut h = first_tangent;
    relu_backward(&mut h, &pass.hidden[0]);
    let mut tangents = vec![h];
    for layer in 1..n_layers {
        let (fan_in, fan_out) = (stack.widths[layer], stack.widths[layer + 1]);
        let x = tangents.last().expect("layer 0 is pushed first");
        let mut out = vec![0.0f32; rows * fan_out];
        matmul(&mut out, false, x, false, &stack.weights[layer], false, rows, fan_in, fan_out);
        if layer + 1 < n_layers {
            relu_backward(&mut out, &pass.hidden[layer]);
            tangents.push(out);
        } else {
            return (tangents, out);
        }
    }
    unreachable!("the loop returns at the last layer")
}

/// Backpropagates primal and tangent adjoints of the logits through the Global Block and its
/// tangent down to the first layer's pre-activation; adds the weight gradients of layers `1..`
/// to `grads`. Returns the first layer's primal and tangent pre-activation adjoints.
fn global_dual_backward(
    stack: &DenseStack,
    pass: &GlobalPass,
    tangents: &[Vec<f32>],
    d_logits: Vec<f32>,
    d_logits_tangent: Vec<f32>,
    grads: &mut DenseStack,
) -> (Vec<f32>, Vec<f32>) {
    let n_layers = stack.n_layers();
    let rows = d_logits.len();
    let (mut d_pre, mut d_tangent) = (d_logits, d_logits_tangent);
    for layer in (1..n_layers).rev() {
        let (fan_in, fan_out) = (stack.widths[layer], stack.widths[layer + 1]);
        let (x, x_tangent) = (&pass.hidden[layer - 1], &tangents[layer - 1]);
        let w = &stack.weights[layer];
        matmul(&mut grads.weights[layer], true, x, true, &d_pre, false, fan_in, rows, fan_out);
        matmul(&mut grads.weights[layer], true, x_tangent, true, &d_tangent, false, fan_in, rows, fan_out);
        add_column_sums(&mut grads.biases[layer], &d_pre);
        let mut d_x = vec![0.0f32; rows * fan_in];
        matmul(&mut d_x, false, &d_pre, false, w, true, rows, fan_out, fan_in);
        relu_backward(&mut d_x, x);
        let mut d_x_tangent = vec![0.0f32; rows * fan_in];
        matmul(&mut d_x_tangent, false, &d_tangent, false, w, true, rows, fan_out, fan_in);
        relu_backward(&mut d_x_tangent, x);
        d_pre = d_x;
        d_tangent = d_x_tangent;
    }
    (d_pre, d_tangent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        out
    }

    fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let mut out = vec![0.0; a.len()];
        for i in 0..rows {
            for j in 0..cols {
                out[j * rows + i] = a[i * cols + j];
            }
        }
        out
    }

    #[test]
    fn matmul_matches_the_textbook_product_for_every_transposition() {
        let (m, k, n) = (5, 3, 4);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| 1.0 - v as f32 * 0.25).collect();
        let expected = naive(&a, &b, m, k, n);
        let (a_t, b_t) = (transpose(&a, m, k), transpose(&b, k, n));
        for (lhs, lt) in [(&a, false), (&a_t, true)] {
            for (rhs, rt) in [(&b, false), (&b_t, true)] {
                let mut out = vec![1.0; m * n];
                matmul(&mut out, false, lhs, lt, rhs, rt, m, k, n);
                assert_eq!(out, expected, "a transposed {lt}, b transposed {rt}");
            }
        }
        let mut out = vec![1.0; m * n];
        matmul(&mut out, true, &a, false, &b, false, m, k, n);
        let plus_one: Vec<f32> = expected.iter().map(|v| v + 1.0).collect();
        assert_eq!(out, plus_one);
    }

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
}
