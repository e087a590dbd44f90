//! The Global Block on packed rows: its first layer split into a row part and a
//! meta-embedding part ([`GlobalBlock`]), the optional dot-product term ([`DotTerm`]),
//! forward, backward, tangent and dual backward passes, and logits for adapted or stored meta
//! embeddings. Must not adapt anything (`maml` does).

use std::ops::Range;

use rayon::prelude::*;

use super::dense::{add_bias_rows, add_column_sums, matmul, product, relu_backward, relu_in_place, DenseStack, DenseView};
use super::rows::PackedRows;

/// The Global Block's weights with its first layer split by input: `a0 = x Wx + e We + b0`
/// (`x` the row input, `row_dim` wide; `e` the meta embedding), and optionally a dot-product
/// term added to the logit.
pub struct GlobalBlock<'a> {
    pub stack: &'a DenseView<'a>,
    pub row_dim: usize,
    pub dot: Option<DotTerm<'a>>,
}

/// `logit += e . ([x[columns], 1] P)`: the meta embedding against a learned affine
/// representation of the row's counterpart (`columns` of the row input: the item's, for user
/// tasks; the constant column lets `e` carry a per-entity logit offset too).
pub struct DotTerm<'a> {
    /// `P`, `(columns.len() + 1) x m`: a row per column, then the constant's.
    pub weight: &'a [f32],
    pub columns: Range<usize>,
}

/// What the Global Block computes from the row inputs alone, once per batch of rows.
#[derive(Debug, Clone, Default)]
pub struct RowPart {
    /// `x Wx + b0`, `rows x h`.
    pub first: Vec<f32>,
    /// `x[columns] P`, `rows x m`: each row's counterpart representation (empty without the
    /// dot term).
    pub counterpart: Vec<f32>,
}

impl RowPart {
    /// Appends the row parts of more rows.
    pub fn extend(&mut self, more: RowPart) {
        self.first.extend(more.first);
        self.counterpart.extend(more.counterpart);
    }
}

/// `[x[columns], 1]` of `rows x width` row-major inputs, contiguous (`rows x (columns + 1)`).
fn columns_of(x: &[f32], width: usize, columns: &Range<usize>) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() / width.max(1) * (columns.len() + 1));
    for row in x.chunks_exact(width) {
        out.extend_from_slice(&row[columns.clone()]);
        out.push(1.0);
    }
    out
}

/// Adds `e_t(r) . q_r` to each row's logit (`embedding` per task, `T x m`; `q` `rows x m`).
fn add_dot(logits: &mut [f32], q: &[f32], embedding: &[f32], task_of_row: &[u32], m: usize) {
    for ((logit, q), &t) in logits.iter_mut().zip(q.chunks_exact(m)).zip(task_of_row) {
        let e = &embedding[t as usize * m..][..m];
        *logit += e.iter().zip(q).map(|(a, b)| a * b).sum::<f32>();
    }
}

impl GlobalBlock<'_> {
    pub(crate) fn first_width(&self) -> usize {
        self.stack.widths[1]
    }

    /// `Wx`, `row_dim x h`.
    pub(crate) fn row_weight(&self) -> &[f32] {
        &self.stack.weights[0][..self.row_dim * self.first_width()]
    }

    /// `We`, `m x h`.
    pub(crate) fn meta_weight(&self) -> &[f32] {
        &self.stack.weights[0][self.row_dim * self.first_width()..]
    }

    pub(crate) fn meta_dim(&self) -> usize {
        self.stack.widths[0] - self.row_dim
    }

    /// `x Wx + b0` for the inputs `x` of `rows` packed rows (`rows x row_dim`): the part of the
    /// first layer that does not depend on the meta embedding; with the dot term, also each
    /// row's counterpart representation `x[columns] P`.
    pub fn row_part(&self, x: &[f32], rows: usize) -> RowPart {
        let h = self.first_width();
        let mut first = product(x, false, self.row_weight(), false, rows, self.row_dim, h);
        add_bias_rows(&mut first, self.stack.biases[0]);
        let counterpart = match &self.dot {
            Some(dot) => {
                let (c, m) = (dot.columns.len() + 1, self.meta_dim());
                let xc = columns_of(x, self.row_dim, &dot.columns);
                product(&xc, false, dot.weight, false, rows, c, m)
            }
            None => Vec::new(),
        };
        RowPart { first, counterpart }
    }

    /// The Global Block's forward pass on rows whose [`GlobalBlock::row_part`] is `row_part`,
    /// each with its task's meta embedding (`T x m`), the dot term included in the logits.
    pub(crate) fn forward(&self, row_part: &RowPart, meta_embedding: &[f32], task_of_row: &[u32]) -> GlobalPass {
        let first = self.first_pre_activation(row_part, meta_embedding, task_of_row);
        let mut pass = global_forward(self.stack, first);
        if self.dot.is_some() {
            add_dot(&mut pass.logits, &row_part.counterpart, meta_embedding, task_of_row, self.meta_dim());
        }
        pass
    }

    /// Adds the dot term's tangent `e'_t . q_r` to logit tangents (`embedding_tangent` `T x m`).
    pub(crate) fn add_dot_tangent(&self, logit_tangent: &mut [f32], row_part: &RowPart, embedding_tangent: &[f32], task_of_row: &[u32]) {
        if self.dot.is_some() {
            add_dot(logit_tangent, &row_part.counterpart, embedding_tangent, task_of_row, self.meta_dim());
        }
    }

    /// The dot term's backward pass for logit adjoints `d_logits` of rows scored with per-task
    /// `embedding` (`T x m`): adds `sum_r d_r q_r` to each task's `d_embedding`; with `inputs`,
    /// also the weight gradient `dP` and the row inputs' gradient. No-op without the term.
    pub(crate) fn dot_backward(
        &self,
        d_logits: &[f32],
        embedding: &[f32],
        row_part: &RowPart,
        task_of_row: &[u32],
        d_embedding: &mut [f32],
        inputs: Option<DotInputGradients>,
    ) {
        let Some(dot) = &self.dot else { return };
        let m = self.meta_dim();
        for ((&d, q), &t) in d_logits.iter().zip(row_part.counterpart.chunks_exact(m)).zip(task_of_row) {
            let de = &mut d_embedding[t as usize * m..][..m];
            de.iter_mut().zip(q).for_each(|(g, q)| *g += d * q);
        }
        let Some(DotInputGradients { x, d_weight, d_x }) = inputs else { return };
        let (rows, c) = (d_logits.len(), dot.columns.len() + 1);
        // dq_r = d_r e_t(r); dP = x_cᵀ dq; dx_c = dq Pᵀ.
        let mut dq = Vec::with_capacity(rows * m);
        for (&d, &t) in d_logits.iter().zip(task_of_row) {
            dq.extend(embedding[t as usize * m..][..m].iter().map(|e| d * e));
        }
        let xc = columns_of(x, self.row_dim, &dot.columns);
        matmul(d_weight, true, &xc, true, &dq, false, c, rows, m);
        let dxc = product(&dq, false, dot.weight, true, rows, m, c);
        for (row, g) in d_x.chunks_exact_mut(self.row_dim).zip(dxc.chunks_exact(c)) {
            // The constant column (last) is no input.
            row[dot.columns.clone()].iter_mut().zip(g).for_each(|(a, b)| *a += b);
        }
    }

    /// `d_per_task Weᵀ`: the gradient of each task's meta embedding (`T x m`) from the
    /// per-task sums of the first layer's pre-activation gradient (`T x h`).
    pub(crate) fn meta_embedding_gradient(&self, d_per_task: &[f32]) -> Vec<f32> {
        let (h, m) = (self.first_width(), self.meta_dim());
        let n_tasks = d_per_task.len() / h;
        product(d_per_task, false, self.meta_weight(), true, n_tasks, h, m)
    }

    /// `(T x h)` per-task vectors added to each packed row (`rows x h`) of its task.
    pub(crate) fn broadcast_to_rows(per_task: &[f32], task_of_row: &[u32], h: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(task_of_row.len() * h);
        for &t in task_of_row {
            out.extend_from_slice(&per_task[t as usize * h..][..h]);
        }
        out
    }

    /// The first layer's pre-activation: `row_part` plus each row's task's `e We`.
    pub(crate) fn first_pre_activation(
        &self,
        row_part: &RowPart,
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
        let mut out = row_part.first.clone();
        for (row, &t) in out.chunks_exact_mut(h).zip(task_of_row) {
            let add = &per_task[t as usize * h..][..h];
            row.iter_mut().zip(add).for_each(|(x, a)| *x += a);
        }
        out
    }
}

/// Where [`GlobalBlock::dot_backward`] adds the gradients of the dot term's weight and inputs.
pub(crate) struct DotInputGradients<'a> {
    /// The rows' inputs, `rows x row_dim`.
    pub x: &'a [f32],
    /// `dP`, `columns x m`, accumulated.
    pub d_weight: &'a mut [f32],
    /// The row inputs' gradient, `rows x row_dim`, accumulated.
    pub d_x: &'a mut [f32],
}

/// The Global Block run on packed rows: `hidden[k]` is hidden layer `k`'s output (after ReLU),
/// `logits` one per row.
pub struct GlobalPass {
    hidden: Vec<Vec<f32>>,
    pub logits: Vec<f32>,
}

/// Runs the Global Block from its first layer's pre-activation (`rows x h`).
pub(crate) fn global_forward(stack: &DenseView, first_pre: Vec<f32>) -> GlobalPass {
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
        let mut out = product(x, false, stack.weights[layer], false, rows, fan_in, fan_out);
        add_bias_rows(&mut out, stack.biases[layer]);
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
pub(crate) fn global_backward(
    stack: &DenseView,
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
        let mut d_x = product(&d_pre, false, stack.weights[layer], true, rows, fan_out, fan_in);
        relu_backward(&mut d_x, x);
        d_pre = d_x;
    }
    d_pre
}

/// Logits of packed rows from per-task meta embeddings (`T x m`), given the rows'
/// [`GlobalBlock::row_part`].
pub fn logits(global: &GlobalBlock, row_part: &RowPart, meta_embedding: &[f32], rows: &PackedRows) -> Vec<f32> {
    global.forward(row_part, meta_embedding, &rows.task_of_row).logits
}

/// Rows per tile of [`logits_per_row`]: a tile's activations (`SERVE_TILE x h` per layer) stay
/// in the core's L2 cache between layers (bench/README.md, "Serving"). At least
/// [`MATRIX_VECTOR_ROWS`], so that a tile's output layer takes the path all rows at once take.
pub const SERVE_TILE: usize = 320;

/// The fewest rows whose one-column product (`rows x k` times `k x 1`) `gemm` computes on its
/// matrix-vector path, a dot product per row whatever the number of rows; at most 256 output
/// values take its small-product kernel, another summation order.
const MATRIX_VECTOR_ROWS: usize = 257;

/// The row ranges [`logits_per_row`] runs as tiles: [`SERVE_TILE`] rows each, the last one
/// taking a remainder of fewer than [`MATRIX_VECTOR_ROWS`] rows too (all `rows` as one tile
/// when they are fewer than two tiles' worth of that). Every tile then has at least
/// [`MATRIX_VECTOR_ROWS`] rows, or is all of them.
pub fn serve_tiles(rows: usize) -> Vec<Range<usize>> {
    let mut tiles = Vec::with_capacity(rows / SERVE_TILE + 1);
    let mut start = 0;
    while start < rows {
        let end = if rows - start < SERVE_TILE + MATRIX_VECTOR_ROWS { rows } else { start + SERVE_TILE };
        tiles.push(start..end);
        start = end;
    }
    tiles
}

/// Writes the row inputs of a range of rows (`range.len() x row_dim`, row-major) into a buffer.
pub type GatherRows<'a> = dyn Fn(Range<usize>, &mut [f32]) + Sync + 'a;

/// Logits of rows each with its own meta embedding (`meta_per_row`, `rows x m`) and row
/// inputs (`rows x row_dim`) that `gather` writes a tile at a time: serving from stored
/// embeddings.
///
/// The rows run in the tiles of [`serve_tiles`], in parallel: each tile's inputs are gathered
/// and taken through every layer while they are in cache. Within a tile, each run of
/// consecutive rows with the same embedding (a user's rows) gets its first-layer term `e We`
/// from one product row, added to each row of the run. Every value is the one the untiled,
/// per-row computation over all `rows` gives, bit for bit: `gemm`'s matrix products accumulate
/// each output element over `k` in the same order whatever the number of rows (the output
/// layer's one column too, since every tile has at least [`MATRIX_VECTOR_ROWS`] rows or is all
/// of them), and the additions happen in the same order (`((x Wx) + b0) + e We`);
/// `serving_tiles_give_the_untiled_logits_bit_for_bit` checks it.
pub fn logits_per_row(global: &GlobalBlock, meta_per_row: &[f32], rows: usize, gather: &GatherRows) -> Vec<f32> {
    let m = global.meta_dim();
    if global.stack.n_layers() == 1 || global.row_dim == 0 || m == 0 {
        let mut x = vec![0.0f32; rows * global.row_dim];
        gather(0..rows, &mut x);
        return untiled_logits_per_row(global, &x, meta_per_row, rows);
    }
    let tiles = serve_tiles(rows);
    let mut logits = vec![0.0f32; rows];
    let mut outputs = Vec::with_capacity(tiles.len());
    let mut rest = logits.as_mut_slice();
    for tile in &tiles {
        let (out, tail) = rest.split_at_mut(tile.len());
        outputs.push(out);
        rest = tail;
    }
    tiles.into_par_iter().zip(outputs).for_each(|(tile, out)| {
        let job = TileJob { global, meta: &meta_per_row[tile.start * m..tile.end * m], rows: tile, gather };
        // A tile run inside another on the same thread (a `gather` that waits on rayon work)
        // finds the buffers taken: it gets its own.
        SERVE_SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => tile_logits(&job, &mut scratch, out),
            Err(_) => tile_logits(&job, &mut ServeScratch::default(), out),
        })
    });
    logits
}

/// [`logits_per_row`] as one pass over all rows (the reference the tiles are tested against,
/// and the path of a Global Block without hidden layers).
pub fn untiled_logits_per_row(global: &GlobalBlock, x: &[f32], meta_per_row: &[f32], rows: usize) -> Vec<f32> {
    let (h, m) = (global.first_width(), global.meta_dim());
    let RowPart { mut first, counterpart } = global.row_part(x, rows);
    matmul(&mut first, true, meta_per_row, false, global.meta_weight(), false, rows, m, h);
    let mut logits = global_forward(global.stack, first).logits;
    if global.dot.is_some() {
        let own_row: Vec<u32> = (0..rows as u32).collect();
        add_dot(&mut logits, &counterpart, meta_per_row, &own_row, m);
    }
    logits
}

thread_local! {
    /// Each thread's buffers for [`logits_per_row`]'s tiles, kept from call to call: a fresh
    /// set per call (hundreds of kilobytes) came from the system zeroed, page by page.
    static SERVE_SCRATCH: std::cell::RefCell<ServeScratch> = std::cell::RefCell::new(ServeScratch::default());
}

/// Buffers reused across the tiles of [`logits_per_row`].
#[derive(Default)]
struct ServeScratch {
    x: Vec<f32>,
    first_run: Vec<usize>,
    distinct: Vec<f32>,
    per_run: Vec<f32>,
    layer: Vec<f32>,
    next: Vec<f32>,
}

/// The first `len` values of `buffer`, grown (never shrunk) to hold them.
fn at_least(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Whether `a` and `b` hold the same bits (no early exit, so that it vectorizes).
#[inline(always)]
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u32, |differ, (x, y)| differ | (x.to_bits() ^ y.to_bits())) == 0
}

/// `x = max(x + bias, 0)` per row: [`add_bias_rows`] then [`relu_in_place`] in one pass (the
/// same operations per value).
#[inline(always)]
fn add_bias_relu_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v = (*v + b).max(0.0));
    }
}

/// One tile of [`logits_per_row`]: its rows, their meta embeddings, where their inputs come from.
struct TileJob<'a> {
    global: &'a GlobalBlock<'a>,
    rows: Range<usize>,
    meta: &'a [f32],
    gather: &'a GatherRows<'a>,
}

/// Writes one tile's logits to `out`. The operations, and their order, are
/// [`GlobalBlock::row_part`]'s, [`global_forward`]'s and the dot term's. Runs with AVX2 where
/// the CPU has it: wider lanes for the elementwise passes, the same operations in the same
/// order (no fused multiply-add), so the same bits.
fn tile_logits(job: &TileJob, scratch: &mut ServeScratch, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { tile_logits_avx2(job, scratch, out) };
        }
    }
    tile_logits_portable(job, scratch, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_logits_avx2(job: &TileJob, scratch: &mut ServeScratch, out: &mut [f32]) {
    tile_logits_portable(job, scratch, out)
}

#[inline(always)]
fn tile_logits_portable(job: &TileJob, scratch: &mut ServeScratch, out: &mut [f32]) {
    let TileJob { global, rows: tile, meta, gather } = job;
    let stack = global.stack;
    let (h, m, rows) = (global.first_width(), global.meta_dim(), tile.len());
    let ServeScratch { x, first_run, distinct, per_run, layer, next } = scratch;
    let x = at_least(x, rows * global.row_dim);
    gather(tile.clone(), x);
    let first = at_least(layer, rows * h);
    matmul(first, false, x, false, global.row_weight(), false, rows, global.row_dim, h);
    let counterpart = match &global.dot {
        Some(dot) => {
            let c = dot.columns.len() + 1;
            let xc = columns_of(x, global.row_dim, &dot.columns);
            product(&xc, false, dot.weight, false, rows, c, m)
        }
        None => Vec::new(),
    };
    // Runs of equal embeddings (bitwise): the first row of each, and its embedding.
    first_run.clear();
    distinct.clear();
    for (r, e) in meta.chunks_exact(m).enumerate() {
        if r == 0 || !same_bits(e, &meta[(r - 1) * m..r * m]) {
            first_run.push(r);
            distinct.extend_from_slice(e);
        }
    }
    let runs = first_run.len();
    let bias: &[f32] = stack.biases[0];
    // Fewer than two product rows would take gemm's matrix-vector path (another summation
    // order); few repeats save little: the per-row product then.
    if runs < 2 || 2 * runs > rows {
        add_bias_rows(first, bias);
        matmul(first, true, meta, false, global.meta_weight(), false, rows, m, h);
        relu_in_place(first);
    } else {
        let per_run = at_least(per_run, runs * h);
        matmul(per_run, false, distinct, false, global.meta_weight(), false, runs, m, h);
        let mut run = 0;
        for (r, row) in first.chunks_exact_mut(h).enumerate() {
            if run + 1 < runs && first_run[run + 1] == r {
                run += 1;
            }
            let term = &per_run[run * h..][..h];
            row.iter_mut().zip(bias).zip(term).for_each(|((a, b), e)| *a = ((*a + b) + e).max(0.0));
        }
    }
    let last = stack.n_layers() - 1;
    for hidden_layer in 1..last {
        let (fan_in, fan_out) = (stack.widths[hidden_layer], stack.widths[hidden_layer + 1]);
        let output = at_least(next, rows * fan_out);
        matmul(output, false, &layer[..rows * fan_in], false, stack.weights[hidden_layer], false, rows, fan_in, fan_out);
        add_bias_relu_rows(output, stack.biases[hidden_layer]);
        std::mem::swap(layer, next);
    }
    matmul(out, false, &layer[..rows * stack.widths[last]], false, stack.weights[last], false, rows, stack.widths[last], 1);
    add_bias_rows(out, stack.biases[last]);
    if global.dot.is_some() {
        let own_row: Vec<u32> = (0..rows as u32).collect();
        add_dot(out, &counterpart, meta, &own_row, m);
    }
}

/// The Global Block's forward-mode tangent from its first layer's pre-activation tangent
/// (`rows x h`): each hidden layer's output tangent and the logits' (`rows`).
pub(crate) fn global_tangent(stack: &DenseView, pass: &GlobalPass, first_tangent: Vec<f32>) -> (Vec<Vec<f32>>, Vec<f32>) {
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
        let mut out = product(x, false, stack.weights[layer], false, rows, fan_in, fan_out);
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
pub(crate) fn global_dual_backward(
    stack: &DenseView,
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
        let mut d_x = product(&d_pre, false, w, true, rows, fan_out, fan_in);
        relu_backward(&mut d_x, x);
        let mut d_x_tangent = product(&d_tangent, false, w, true, rows, fan_out, fan_in);
        relu_backward(&mut d_x_tangent, x);
        d_pre = d_x;
        d_tangent = d_x_tangent;
    }
    (d_pre, d_tangent)
}
