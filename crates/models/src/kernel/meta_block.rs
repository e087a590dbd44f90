//! The Meta Block of a meta-batch: per-task weights as shared weights plus rank-one terms
//! ([`TaskStacks`]), and its forward, backward, tangent and dual backward passes. Must not
//! touch rows (the Global Block's passes do).

use super::dense::{matmul, add_column_sums, relu_backward, relu_in_place, DenseStack, DenseView};

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
pub struct TaskStacks<'a> {
    pub n_tasks: usize,
    pub widths: Vec<usize>,
    /// Borrowed: the stacks of an inner loop's steps share it, uncopied.
    pub base: Option<DenseView<'a>>,
    pub terms: Vec<Vec<RankOne>>,
    /// Per layer, `T x fan_out`.
    pub biases: Vec<Vec<f32>>,
}

impl<'a> TaskStacks<'a> {
    /// `n_tasks` copies of `shared`.
    pub fn repeat(shared: &DenseView<'a>, n_tasks: usize) -> TaskStacks<'a> {
        TaskStacks {
            n_tasks,
            widths: shared.widths.clone(),
            terms: vec![Vec::new(); shared.n_layers()],
            biases: shared.biases.iter().map(|b| b.repeat(n_tasks)).collect(),
            base: Some(shared.clone()),
        }
    }

    /// A per-task gradient of these stacks' shape, all zeros (no base, no terms).
    pub(crate) fn zero_gradient(&self) -> TaskStacks<'static> {
        TaskStacks {
            n_tasks: self.n_tasks,
            widths: self.widths.clone(),
            base: None,
            terms: vec![Vec::new(); self.widths.len() - 1],
            biases: self.biases.iter().map(|b| vec![0.0; b.len()]).collect(),
        }
    }

    /// `self -= rate * gradient` (`gradient` without a base).
    pub(crate) fn descend(&mut self, gradient: &TaskStacks<'_>, rate: f32) {
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
    pub(crate) fn apply(&self, layer: usize, x: &[f32], with_bias: bool) -> Vec<f32> {
        let (fan_in, fan_out, n) = (self.widths[layer], self.widths[layer + 1], self.n_tasks);
        let mut out = if with_bias {
            self.biases[layer].clone()
        } else {
            vec![0.0f32; n * fan_out]
        };
        if let Some(base) = &self.base {
            matmul(&mut out, true, x, false, base.weights[layer], false, n, fan_in, fan_out);
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
    pub(crate) fn apply_transposed(&self, layer: usize, d: &[f32]) -> Vec<f32> {
        let (fan_in, fan_out, n) = (self.widths[layer], self.widths[layer + 1], self.n_tasks);
        let mut out = vec![0.0f32; n * fan_in];
        if let Some(base) = &self.base {
            matmul(&mut out, false, d, false, base.weights[layer], true, n, fan_out, fan_in);
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
) -> TaskStacks<'static> {
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

/// The Meta Blocks' forward-mode tangent along a weight direction `direction` (per task,
/// without a base): returns each layer input's tangent (the first, of the constant input, is
/// zero) and the meta embedding's (`T x m`).
pub(crate) fn meta_tangent(stacks: &TaskStacks, pass: &MetaPass, direction: &TaskStacks) -> (Vec<Vec<f32>>, Vec<f32>) {
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
pub(crate) fn meta_dual_backward(
    stacks: &TaskStacks,
    pass: &MetaPass,
    direction: &TaskStacks,
    tangents: &[Vec<f32>],
    d_output: &[f32],
    d_output_tangent: &[f32],
    d_input: &mut [f32],
) -> TaskStacks<'static> {
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
