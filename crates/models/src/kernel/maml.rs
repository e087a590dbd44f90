//! MAML over the blocks: the inner loop ([`adapt`]) and the outer step's gradients, first-
//! or second-order ([`outer_gradients`]). Must not build inputs or apply updates (`limaml`
//! does).

use super::dense::{add_column_sums, matmul, product, DenseStack, DenseView};
use super::global_block::{global_backward, global_dual_backward, global_tangent, DotInputGradients, GlobalBlock, RowPart};
use super::meta_block::{meta_backward, meta_dual_backward, meta_forward, meta_tangent, MetaPass, TaskStacks};
use super::rows::{logistic_loss, sum_by_task, PackedRows};

/// A Meta Block adapted on each task's support: the weights and its embedding.
pub struct Adapted<'a> {
    pub stacks: TaskStacks<'a>,
    pub pass: MetaPass,
}

/// The inner loop: `steps` SGD steps at `rate` on each task's mean support loss, adapting only
/// the Meta Block (the Global Block and the inputs stay as given). `support_row_part` is
/// [`GlobalBlock::row_part`] of the support rows.
pub fn adapt<'a>(
    meta: &DenseView<'a>,
    global: &GlobalBlock,
    meta_input: &[f32],
    support: &PackedRows,
    support_row_part: &RowPart,
    steps: usize,
    rate: f32,
) -> Adapted<'a> {
    let mut trajectory =
        adapt_trajectory(meta, global, meta_input, support, support_row_part, steps, rate);
    let stacks = trajectory.pop().expect("the trajectory starts with the initialization");
    let pass = meta_forward(&stacks, meta_input);
    Adapted { stacks, pass }
}

/// The Meta Block's weights before each inner step and after the last (`steps + 1` entries).
pub(crate) fn adapt_trajectory<'a>(
    meta: &DenseView<'a>,
    global: &GlobalBlock,
    meta_input: &[f32],
    support: &PackedRows,
    support_row_part: &RowPart,
    steps: usize,
    rate: f32,
) -> Vec<TaskStacks<'a>> {
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
pub(crate) fn support_gradient(
    stacks: &TaskStacks,
    global: &GlobalBlock,
    meta_input: &[f32],
    support: &PackedRows,
    support_row_part: &RowPart,
) -> TaskStacks<'static> {
    let h = global.first_width();
    let pass = meta_forward(stacks, meta_input);
    let forward = global.forward(support_row_part, &pass.output, &support.task_of_row);
    let (_, d_logits) = logistic_loss(&forward.logits, support, 1.0);
    let d_first = global_backward(global.stack, &forward, d_logits.clone(), None);
    let d_per_task = sum_by_task(&d_first, &support.task_of_row, support.n_tasks, h);
    let mut d_embedding = global.meta_embedding_gradient(&d_per_task);
    global.dot_backward(&d_logits, &pass.output, support_row_part, &support.task_of_row, &mut d_embedding, None);
    meta_backward(stacks, &pass, &d_embedding, None)
}

/// Gradients of one outer step.
pub struct OuterGradients {
    /// `sum_t mean_t loss / T`, before the step.
    pub loss: f64,
    pub meta: DenseStack,
    pub global: DenseStack,
    /// The dot term's weight `P` (`columns x m`; empty without the term).
    pub dot: Vec<f32>,
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
pub fn outer_gradients(meta: &DenseView, global: &GlobalBlock, step: &OuterStep) -> OuterGradients {
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
    let forward = global.forward(&outer_row_part, embedding, &outer.task_of_row);
    let (loss, d_logits) = logistic_loss(&forward.logits, outer, step.loss_scale);
    let mut global_grads = global.stack.zeros_like();
    let d_first = global_backward(global.stack, &forward, d_logits.clone(), Some(&mut global_grads));
    let rows = outer.len();
    // Layer 0: [dWx; dWe], db0.
    let (d_row_weight, d_meta_weight) = global_grads.weights[0].split_at_mut(row_dim * h);
    matmul(d_row_weight, false, step.outer_x, true, &d_first, false, row_dim, rows, h);
    add_column_sums(&mut global_grads.biases[0], &d_first);
    let d_per_task = sum_by_task(&d_first, &outer.task_of_row, n_tasks, h);
    matmul(d_meta_weight, false, embedding, true, &d_per_task, false, m, n_tasks, h);
    let mut d_embedding = global.meta_embedding_gradient(&d_per_task);
    let mut d_row_inputs = product(&d_first, false, global.row_weight(), true, rows, h, row_dim);
    let mut dot_grads = vec![0.0f32; global.dot.as_ref().map_or(0, |d| d.weight.len())];
    global.dot_backward(
        &d_logits,
        embedding,
        &outer_row_part,
        &outer.task_of_row,
        &mut d_embedding,
        Some(DotInputGradients {
            x: step.outer_x,
            d_weight: &mut dot_grads,
            d_x: &mut d_row_inputs,
        }),
    );
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
                .chain([(&mut dot_grads, &back.dot)])
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
        dot: dot_grads,
        row_inputs: d_row_inputs,
        support_row_inputs,
        meta_input: d_meta_input,
    }
}

/// The gradient of `psi = <g(theta), v>` (`g` each task's support-loss gradient at its Meta
/// Block `theta`, `v` a per-task direction) with respect to everything `g` reads.
pub(crate) struct PsiGradients {
    meta: TaskStacks<'static>,
    global: DenseStack,
    dot: Vec<f32>,
    support_row_inputs: Vec<f32>,
    meta_input: Vec<f32>,
}

/// What one inner step's backward pass reads.
pub(crate) struct InnerStepBackward<'a> {
    global: &'a GlobalBlock<'a>,
    meta_input: &'a [f32],
    support: &'a PackedRows,
    support_x: &'a [f32],
    support_row_part: &'a RowPart,
}

impl InnerStepBackward<'_> {
    /// [`PsiGradients`] at Meta Blocks `stacks` along direction `v`.
    pub(crate) fn run(&self, stacks: &TaskStacks, v: &TaskStacks) -> PsiGradients {
        let (global, support) = (self.global, self.support);
        let (h, row_dim, n_tasks) = (global.first_width(), global.row_dim, support.n_tasks);
        let rows = support.len();
        // Primal: the support loss's forward pass and each row's loss gradient c_r.
        let pass = meta_forward(stacks, self.meta_input);
        let forward = global.forward(self.support_row_part, &pass.output, &support.task_of_row);
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
        let (hidden_tangents, mut logit_tangent) = global_tangent(global.stack, &forward, first_tangent);
        global.add_dot_tangent(&mut logit_tangent, self.support_row_part, &embedding_tangent, &support.task_of_row);
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
            d_logits.clone(),
            c.clone(),
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
        let mut d_embedding = global.meta_embedding_gradient(&d_per_task);
        let mut d_embedding_tangent = global.meta_embedding_gradient(&d_tangent_per_task);
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
        // The dot term: s_r holds e_t . q_r (adjoint d_logits), s'_r holds e'_t . q_r (adjoint c).
        let mut dot = vec![0.0f32; global.dot.as_ref().map_or(0, |d| d.weight.len())];
        for (adjoint, embedding, d_e) in [
            (&d_logits, &pass.output, &mut d_embedding),
            (&c, &embedding_tangent, &mut d_embedding_tangent),
        ] {
            global.dot_backward(
                adjoint,
                embedding,
                self.support_row_part,
                &support.task_of_row,
                d_e,
                Some(DotInputGradients {
                    x: self.support_x,
                    d_weight: &mut dot,
                    d_x: &mut support_row_inputs,
                }),
            );
        }
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
            dot,
            support_row_inputs,
            meta_input,
        }
    }
}
