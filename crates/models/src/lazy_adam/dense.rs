//! AdamW for the dense parameters (every parameter but the id tables), over plain vectors, bit
//! for bit candle-nn's.
//!
//! Owns [`DenseAdamW`], [`GradientParts`] and [`sum_parts_into`]. Must not touch the id tables
//! (`tables` does).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::ParamsAdamW;

use super::on_values;
use crate::error::ModelError;
use crate::inputs::TensorValues;

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
pub(super) struct DenseAdamW {
    params: ParamsAdamW,
    vars: Vec<DenseVar>,
}

struct DenseVar {
    var: Var,
    first_moment: Vec<f32>,
    second_moment: Vec<f32>,
}

impl DenseAdamW {
    pub(super) fn new(vars: Vec<Var>, params: ParamsAdamW) -> DenseAdamW {
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
    pub(super) fn step(&mut self, grads: &GradStore, parts: &[GradientParts], (scale_m, scale_v): (f64, f64)) -> Result<(), ModelError> {
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
        let small = sources.iter().map(|(dense, _)| dense.first_moment.len()).sum::<usize>() < 4 * DenseVar::CHUNK;
        if small || !crate::pool::spreads() {
            // Small (a baseline's minibatch step), or no core free (`pool`): one parameter
            // after the other, each split into chunks only if it is larger than one and a core
            // is free, so that another thread is woken only for a parameter worth it.
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
/// [`Optimizers::step_with_parts`](super::Optimizers::step_with_parts)).
pub struct GradientParts<'a> {
    /// The variable's tensor (as in [`ParamStore::vars`](crate::params::ParamStore::vars)).
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

    /// This parameter's AdamW step, in place, over chunks in parallel (while a core is free:
    /// `pool::min_len`).
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
                .with_min_len(crate::pool::min_len())
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
}
