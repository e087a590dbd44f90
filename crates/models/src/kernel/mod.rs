//! LiMAML's passes written out by hand over packed rows: the inner loop, the first- and
//! second-order outer gradients, export, adapted scoring and serving.
//!
//! Owns [`DenseStack`] (an MLP's weights as plain vectors; a [`DenseView`] borrows them),
//! [`TaskStacks`] (per-task Meta Blocks as shared weights plus rank-one terms), [`PackedRows`]
//! (the rows of many tasks back to back, no padding) and the forward, tangent and backward
//! passes over them. Must not know where rows, features or weights come from (`limaml` builds
//! the inputs and applies the gradients); candle's autograd path in `limaml` stays as the
//! reference it is tested against.
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
//!
//! Files: `dense` (matrix product, layers as vectors), `rows` (packed rows, the loss),
//! `meta_block` (per-task Meta Blocks), `global_block` (the Global Block on rows), `maml`
//! (inner loop and outer gradients).

mod dense;
mod global_block;
mod maml;
mod meta_block;
mod rows;

pub use dense::{matmul, product, DenseStack, DenseView};
pub(crate) use dense::{add_bias_rows, add_column_sums, relu_backward, relu_in_place};
pub use global_block::{logits, logits_per_row, serve_tiles, untiled_logits_per_row, DotTerm, GatherRows, GlobalBlock, GlobalPass, RowPart, SERVE_TILE};
pub use maml::{adapt, outer_gradients, Adapted, OuterGradients, OuterStep};
pub use meta_block::{meta_backward, meta_forward, MetaPass, RankOne, TaskStacks};
pub use rows::PackedRows;
