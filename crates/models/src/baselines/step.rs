//! The baselines' training step written out by hand over plain row-major `f32` vectors: the
//! forward pass of [`BaselineNet`](super::BaselineNet)'s rows, the mean logistic loss and its
//! gradient with respect to the dense layers, the gathered id-embedding rows and the gathered
//! wide entries.
//!
//! Owns [`StepLayout`] (which columns a row input has), [`StepRows`] (what a minibatch reads),
//! [`StepWeights`] (the weights it reads, as vectors), [`train_step`] and the forward pass alone
//! for scoring ([`logits`]). Must not gather rows, draw random numbers or step the optimizer
//! (`baselines` does, in the same order as before), and must not change the maths: candle's
//! autograd path (`BaselineNet::logits_of` with `bce_with_logits`) stays the reference the
//! tests compare it with.
//!
//! Why by hand: through candle's autograd a minibatch step (batch 256, MLP [128, 64]) took
//! 1.1 ms (`global`) to 2.1 ms (`wide_deep`) on 100k synthetic users, while its matrix products
//! are about 28 MFLOP (issue 17); the rest was the graph: index selects, concatenations,
//! zero-filled gradient buffers and the input gradient of the feature columns, which nothing
//! reads. Here the input gradient is computed only for the id-embedding columns, and the
//! products go through [`kernel::matmul`](crate::kernel::matmul) and, into a new vector,
//! [`kernel::product`](crate::kernel::product) (one thread each, so results do not depend on
//! the thread count).

use crate::kernel::{add_bias_rows, add_column_sums, matmul, product, relu_backward, relu_in_place, DenseStack};

/// The columns of a row input, in [`Features::row_inputs`](crate::inputs::Features::row_inputs)
/// order, then the activity summary: user features, item features, item-id embedding, user-id
/// embedding, activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepLayout {
    pub user_dim: usize,
    pub item_dim: usize,
    pub item_embedding_dim: usize,
    pub user_embedding_dim: usize,
    pub activity_dim: usize,
}

impl StepLayout {
    pub fn input_dim(&self) -> usize {
        self.user_dim + self.item_dim + self.item_embedding_dim + self.user_embedding_dim + self.activity_dim
    }

    /// The id-embedding columns (item, then user): the only input columns with a gradient.
    fn embedding_columns(&self) -> std::ops::Range<usize> {
        let start = self.user_dim + self.item_dim;
        start..start + self.item_embedding_dim + self.user_embedding_dim
    }
}

/// What one minibatch reads, one entry per row (`wide`: `wide_per_row` per row).
pub(crate) struct StepRows<'a> {
    /// Rows of the feature tables.
    pub users: &'a [u32],
    pub items: &'a [u32],
    /// Rows in the gathered item- and user-embedding rows (empty without that table).
    pub item_rows: &'a [u32],
    pub user_rows: &'a [u32],
    /// `N x activity_dim` (empty without activity).
    pub activity: &'a [f32],
    /// `N x wide_per_row` positions in the gathered wide entries, and 1 for real entries, 0
    /// for padding (empty without wide weights).
    pub wide: &'a [u32],
    pub wide_mask: &'a [f32],
    pub wide_per_row: usize,
    pub labels: &'a [f32],
}

/// The weights a step reads: the feature tables, the gathered id rows (row-major, the
/// embedding's width; wide: one value a row) and the deep layers.
pub(crate) struct StepWeights<'a> {
    pub layout: StepLayout,
    pub user_features: &'a [f32],
    pub item_features: &'a [f32],
    pub item_embedding: &'a [f32],
    pub user_embedding: &'a [f32],
    pub wide: &'a [f32],
    pub deep: &'a DenseStack,
}

/// The mean logistic loss of a minibatch and its gradient, shaped like [`StepWeights`]: the
/// deep layers, the gathered item, user and wide rows (empty where the model has none).
pub(crate) struct StepGradients {
    pub loss: f64,
    pub deep: DenseStack,
    pub item_embedding: Vec<f32>,
    pub user_embedding: Vec<f32>,
    pub wide: Vec<f32>,
}

/// Row `row` of a row-major table `width` wide.
fn table_row(table: &[f32], width: usize, row: u32) -> &[f32] {
    &table[row as usize * width..][..width]
}

/// The row inputs `N x input_dim`, row-major.
fn row_inputs(weights: &StepWeights, rows: &StepRows) -> Vec<f32> {
    let layout = weights.layout;
    let mut x = Vec::with_capacity(rows.users.len() * layout.input_dim());
    for r in 0..rows.users.len() {
        x.extend_from_slice(table_row(weights.user_features, layout.user_dim, rows.users[r]));
        x.extend_from_slice(table_row(weights.item_features, layout.item_dim, rows.items[r]));
        if layout.item_embedding_dim > 0 {
            x.extend_from_slice(table_row(weights.item_embedding, layout.item_embedding_dim, rows.item_rows[r]));
        }
        if layout.user_embedding_dim > 0 {
            x.extend_from_slice(table_row(weights.user_embedding, layout.user_embedding_dim, rows.user_rows[r]));
        }
        x.extend_from_slice(table_row(rows.activity, layout.activity_dim, r as u32));
    }
    x
}

/// The forward pass: each layer's input (`activations[0]` the row inputs, then each hidden
/// layer's output after ReLU) and the logits (`N`: the deep output plus the masked sum of the
/// row's wide entries).
fn forward(weights: &StepWeights, rows: &StepRows) -> (Vec<Vec<f32>>, Vec<f32>) {
    let deep = weights.deep;
    let n = rows.users.len();
    let mut activations = vec![row_inputs(weights, rows)];
    for layer in 0..deep.n_layers() {
        let (fan_in, fan_out) = (deep.widths[layer], deep.widths[layer + 1]);
        let mut out = product(&activations[layer], false, &deep.weights[layer], false, n, fan_in, fan_out);
        add_bias_rows(&mut out, &deep.biases[layer]);
        if layer + 1 < deep.n_layers() {
            relu_in_place(&mut out);
        }
        activations.push(out);
    }
    let mut logits = activations.pop().expect("a deep stack has at least one layer");
    if rows.wide_per_row > 0 {
        let entries = rows.wide.chunks_exact(rows.wide_per_row).zip(rows.wide_mask.chunks_exact(rows.wide_per_row));
        for (logit, (positions, mask)) in logits.iter_mut().zip(entries) {
            let wide: f32 = positions.iter().zip(mask).map(|(&p, &m)| weights.wide[p as usize] * m).sum();
            *logit += wide;
        }
    }
    (activations, logits)
}

/// The logits (`N`) of the rows: the forward pass alone (labels are not read).
pub(crate) fn logits(weights: &StepWeights, rows: &StepRows) -> Vec<f32> {
    forward(weights, rows).1
}

/// The mean logistic loss of the rows and its gradient with respect to every weight the step
/// reads but the feature tables.
pub(crate) fn train_step(weights: &StepWeights, rows: &StepRows) -> StepGradients {
    let (layout, deep) = (weights.layout, weights.deep);
    let n = rows.users.len();
    let (activations, logits) = forward(weights, rows);
    // Mean over rows of `max(s, 0) - s y + ln(1 + exp(-|s|))`; its gradient is
    // `(sigmoid(s) - y) / N`.
    let scale = 1.0 / n.max(1) as f32;
    let mut loss = 0.0f64;
    let mut d_out: Vec<f32> = logits
        .iter()
        .zip(rows.labels)
        .map(|(&s, &y)| {
            loss += (s.max(0.0) - s * y + (-s.abs()).exp().ln_1p()) as f64;
            scale * (1.0 / (1.0 + (-s).exp()) - y)
        })
        .collect();
    let mut wide = vec![0.0f32; weights.wide.len()];
    if rows.wide_per_row > 0 {
        let entries = rows.wide.chunks_exact(rows.wide_per_row).zip(rows.wide_mask.chunks_exact(rows.wide_per_row));
        for (&g, (positions, mask)) in d_out.iter().zip(entries) {
            for (&p, &m) in positions.iter().zip(mask) {
                if m != 0.0 {
                    wide[p as usize] += m * g;
                }
            }
        }
    }
    let mut grads = deep.zeros_like();
    let mut embedding_input = Vec::new();
    for layer in (0..deep.n_layers()).rev() {
        let (fan_in, fan_out) = (deep.widths[layer], deep.widths[layer + 1]);
        let input = &activations[layer];
        matmul(&mut grads.weights[layer], false, input, true, &d_out, false, fan_in, n, fan_out);
        add_column_sums(&mut grads.biases[layer], &d_out);
        if layer > 0 {
            let mut d_in = product(&d_out, false, &deep.weights[layer], true, n, fan_out, fan_in);
            relu_backward(&mut d_in, input);
            d_out = d_in;
        } else {
            // Only the id-embedding columns of the input have a gradient: `dA0` times the
            // rows of `W0` that read them, transposed.
            let columns = layout.embedding_columns();
            let width = columns.len();
            if width > 0 {
                let w0 = &deep.weights[0][columns.start * fan_out..columns.end * fan_out];
                embedding_input = product(&d_out, false, w0, true, n, fan_out, width);
            }
        }
    }
    let scatter = |table: &[f32], dim: usize, positions: &[u32], offset: usize| {
        let mut gradient = vec![0.0f32; table.len()];
        if dim > 0 {
            let width = layout.item_embedding_dim + layout.user_embedding_dim;
            for (r, &p) in positions.iter().enumerate() {
                let from = &embedding_input[r * width + offset..][..dim];
                let to = &mut gradient[p as usize * dim..][..dim];
                to.iter_mut().zip(from).for_each(|(t, f)| *t += f);
            }
        }
        gradient
    };
    StepGradients {
        loss: loss / n.max(1) as f64,
        item_embedding: scatter(weights.item_embedding, layout.item_embedding_dim, rows.item_rows, 0),
        user_embedding: scatter(
            weights.user_embedding,
            layout.user_embedding_dim,
            rows.user_rows,
            layout.item_embedding_dim,
        ),
        wide,
        deep: grads,
    }
}
