//! The Global Block on packed rows: its first layer split into a row part and a
//! meta-embedding part ([`GlobalBlock`]), forward, backward, tangent and dual backward passes,
//! and logits for adapted or stored meta embeddings. Must not adapt anything (`maml` does).

use super::dense::{add_bias_rows, add_column_sums, matmul, relu_backward, relu_in_place, DenseStack};
use super::rows::PackedRows;

/// The Global Block's weights with its first layer split by input: `a0 = x Wx + e We + b0`
/// (`x` the row input, `row_dim` wide; `e` the meta embedding).
pub struct GlobalBlock<'a> {
    pub stack: &'a DenseStack,
    pub row_dim: usize,
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
    pub(crate) fn meta_embedding_gradient(&self, d_per_task: &[f32]) -> Vec<f32> {
        let (h, m) = (self.first_width(), self.meta_dim());
        let n_tasks = d_per_task.len() / h;
        let mut out = vec![0.0f32; n_tasks * m];
        matmul(&mut out, false, d_per_task, false, self.meta_weight(), true, n_tasks, h, m);
        out
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
pub(crate) fn global_forward(stack: &DenseStack, first_pre: Vec<f32>) -> GlobalPass {
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
pub(crate) fn global_backward(
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

/// The Global Block's forward-mode tangent from its first layer's pre-activation tangent
/// (`rows x h`): each hidden layer's output tangent and the logits' (`rows`).
pub(crate) fn global_tangent(stack: &DenseStack, pass: &GlobalPass, first_tangent: Vec<f32>) -> (Vec<Vec<f32>>, Vec<f32>) {
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
pub(crate) fn global_dual_backward(
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
