//! Functional layers over plain tensors: dense stacks and the stable logistic loss.
//!
//! Owns [`Mlp`] (where an MLP's parameters sit in a flat parameter list), [`mlp_forward`] and
//! [`bce_with_logits`]. Must not own parameters: callers pass `&[Tensor]`, so the same code runs
//! on a model's weights and on MAML-adapted copies (with a leading task axis).

use candle_core::{Tensor, D};
use rand::rngs::StdRng;

use crate::error::ModelError;
use crate::params::ParamStore;

/// A stack of dense layers `in -> hidden... -> out`, ReLU between layers, none after the last.
/// Its weights are `2 * layers` consecutive entries of a parameter list starting at `first`:
/// `[w0, b0, w1, b1, ...]`, `w` as `fan_in x fan_out`, `b` as `1 x fan_out`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    pub first: usize,
    pub widths: Vec<usize>,
}

impl Mlp {
    /// Creates the layers' parameters (Glorot weights, zero biases) in `store`.
    pub fn create(
        store: &mut ParamStore,
        prefix: &str,
        input: usize,
        hidden: &[usize],
        output: usize,
        rng: &mut StdRng,
    ) -> Result<Mlp, ModelError> {
        let first = store.vars().len();
        let mut widths = vec![input];
        widths.extend_from_slice(hidden);
        widths.push(output);
        for (layer, pair) in widths.windows(2).enumerate() {
            store.glorot(&format!("{prefix}.{layer}.weight"), pair[0], pair[1], rng)?;
            store.zeros(&format!("{prefix}.{layer}.bias"), &[1, pair[1]])?;
        }
        Ok(Mlp { first, widths })
    }

    pub fn n_params(&self) -> usize {
        2 * (self.widths.len() - 1)
    }

    /// This MLP's slice of a flat parameter list.
    pub fn params<'a>(&self, all: &'a [Tensor]) -> &'a [Tensor] {
        &all[self.first..self.first + self.n_params()]
    }
}

/// Applies dense layers `[w0, b0, w1, b1, ...]` to `x`.
///
/// Shared weights: `x` is `N x in`, `w` is `in x out`, `b` is `1 x out`. Per-task weights: `x`
/// is `T x N x in`, `w` is `T x in x out`, `b` is `T x 1 x out` (a batched matmul over tasks).
pub fn mlp_forward(layers: &[Tensor], x: &Tensor) -> Result<Tensor, ModelError> {
    let n_layers = layers.len() / 2;
    let mut h = x.clone();
    for layer in 0..n_layers {
        h = h
            .matmul(&layers[2 * layer])?
            .broadcast_add(&layers[2 * layer + 1])?;
        if layer + 1 < n_layers {
            h = h.relu()?;
        }
    }
    Ok(h)
}

/// Elementwise logistic loss from logits, stable for large |logit|:
/// `max(x, 0) - x * y + ln(1 + exp(-|x|))`. Twice differentiable in candle.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor, ModelError> {
    let softplus_tail = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok((logits.relu()? - logits.mul(labels)?)?.add(&softplus_tail)?)
}

/// Mean over rows of the logistic loss, each task's rows averaged first, then tasks averaged:
/// `logits`, `labels` and `mask` are `T x L` (mask 1 for real rows, 0 for padding).
/// Returns the per-task means summed (`sum_t mean_t`), which gives each task's own parameters
/// exactly its own loss gradient; divide by `T` for the task average.
pub fn masked_task_loss_sum(
    logits: &Tensor,
    labels: &Tensor,
    mask: &Tensor,
    rows_per_task_inv: &Tensor,
) -> Result<Tensor, ModelError> {
    let per_row = bce_with_logits(logits, labels)?.mul(mask)?;
    Ok(per_row.sum(D::Minus1)?.mul(rows_per_task_inv)?.sum_all()?)
}

/// Logistic function on plain numbers.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
