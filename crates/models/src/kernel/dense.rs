//! Dense layers over plain row-major `f32` vectors: the matrix product (through `gemm`, the
//! crate candle's CPU backend uses), bias and ReLU helpers, and [`DenseStack`]. Must not know
//! what the layers mean.

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
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    // SAFETY: `out` holds m * n initialized values.
    unsafe { gemm_into(out.as_mut_ptr(), accumulate, a, a_transposed, b, b_transposed, m, k, n) }
}

/// `op(a) op(b)` (`m x n`) in a new vector, as [`matmul`] without accumulating, but without
/// first zeroing the output: `gemm` writes every value of a product it does not accumulate
/// into (and reads none), so the zeros would only be overwritten.
#[allow(clippy::too_many_arguments)]
pub fn product(a: &[f32], a_transposed: bool, b: &[f32], b_transposed: bool, m: usize, k: usize, n: usize) -> Vec<f32> {
    assert_eq!(a.len(), m * k, "matmul lhs");
    assert_eq!(b.len(), k * n, "matmul rhs");
    if k == 0 || m == 0 || n == 0 {
        return vec![0.0; m * n];
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the capacity is m * n; gemm, not accumulating (`read_dst` false), writes every
    // one of those m * n values before anything reads them, so all are initialized after it.
    unsafe {
        gemm_into(out.as_mut_ptr(), false, a, a_transposed, b, b_transposed, m, k, n);
        out.set_len(m * n);
    }
    out
}

/// The product through `gemm` into `m x n` values at `out` (row-major).
///
/// # Safety
/// `out` must be valid for writes of `m * n` values, and for reads of them when `accumulate`;
/// `a` and `b` must hold `m * k` and `k * n` values (the callers assert it).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    out: *mut f32,
    accumulate: bool,
    a: &[f32],
    a_transposed: bool,
    b: &[f32],
    b_transposed: bool,
    m: usize,
    k: usize,
    n: usize,
) {
    debug_assert!(a.len() == m * k && b.len() == k * n);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let (a_rs, a_cs) = if a_transposed { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b_transposed { (1, k as isize) } else { (n as isize, 1) };
    // One thread per product: callers parallelize over independent tasks and chunks, which
    // measured faster than splitting these medium-sized products (bench/README.md).
    let parallelism = Parallelism::None;
    // SAFETY: the caller's contract bounds every index gemm reads or writes: `out` is m x n
    // with row stride n, `a` and `b` hold m * k and k * n values laid out as the strides say;
    // with `read_dst` false gemm reads nothing of `out`.
    unsafe {
        gemm(
            m,
            n,
            k,
            out,
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
#[inline]
pub(crate) fn add_bias_rows(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
}

/// Column sums of `x` (`rows x n`) added to `out` (`n`).
pub(crate) fn add_column_sums(out: &mut [f32], x: &[f32]) {
    for row in x.chunks_exact(out.len()) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
}

#[inline]
pub(crate) fn relu_in_place(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// `grad *= (activation > 0)`: ReLU's backward from its output.
pub(crate) fn relu_backward(grad: &mut [f32], activation: &[f32]) {
    grad.iter_mut()
        .zip(activation)
        .for_each(|(g, &a)| *g = if a > 0.0 { *g } else { 0.0 });
}

/// A dense stack (ReLU between layers, none after the last) as plain row-major values:
/// `weights[k]` is `widths[k] x widths[k + 1]`, `biases[k]` is `widths[k + 1]`. Owned vectors
/// (gradients, per-task stacks) or, as a [`DenseView`], borrowed ones.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseStack<W = Vec<f32>> {
    pub widths: Vec<usize>,
    pub weights: Vec<W>,
    pub biases: Vec<W>,
}

/// A [`DenseStack`] whose values are borrowed, e.g. from the parameter tensors where they
/// are, so that a step reads the weights without copying them out.
pub type DenseView<'a> = DenseStack<&'a [f32]>;

impl<W: std::ops::Deref<Target = [f32]>> DenseStack<W> {
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

    /// This stack's values, borrowed.
    pub fn view(&self) -> DenseView<'_> {
        DenseStack {
            widths: self.widths.clone(),
            weights: self.weights.iter().map(|w| &w[..]).collect(),
            biases: self.biases.iter().map(|b| &b[..]).collect(),
        }
    }
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
    fn product_is_the_same_bits_as_matmul_into_zeros_for_every_transposition() {
        // Large enough for gemm's blocking (several k blocks and register tiles), with reused
        // memory under the new vector: a value gemm left unwritten would show.
        let (m, k, n) = (67, 300, 45);
        let a: Vec<f32> = (0..m * k).map(|v| ((v * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| ((v * 53) % 97) as f32 / 48.0 - 1.0).collect();
        let (a_t, b_t) = (transpose(&a, m, k), transpose(&b, k, n));
        for (lhs, lt) in [(&a, false), (&a_t, true)] {
            for (rhs, rt) in [(&b, false), (&b_t, true)] {
                drop(vec![f32::NAN; m * n]);
                let mut expected = vec![0.0; m * n];
                matmul(&mut expected, false, lhs, lt, rhs, rt, m, k, n);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&product(lhs, lt, rhs, rt, m, k, n)), bits(&expected), "a transposed {lt}, b transposed {rt}");
            }
        }
        assert_eq!(product(&[], false, &[], false, 2, 0, 3), vec![0.0; 6]);
        assert!(product(&[], false, &[1.0, 2.0], false, 0, 1, 2).is_empty());
    }
}
