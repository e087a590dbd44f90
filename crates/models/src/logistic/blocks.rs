//! The logistic grid's state, laid out one weight at a time: owns [`WeightBlocks`]. Must not
//! compute: `grid` does the arithmetic, in the same order whatever the layout.
//!
//! Why one block of cache lines per weight: at a million users most weights a training row
//! reads (its user's id, its user x tag buckets) are cache misses, and the grid's epoch waits on
//! them: `perf annotate` put 43 % of the epoch's samples on the instructions right after its
//! prefetches, which stall once every miss buffer is taken (bench/README.md, seventeenth pass).
//! Kept in four vectors (the lanes' `f32` weights, their `f64` Adagrad sums, the weight's
//! occurrence count, its minibatch slot), one weight's state spanned 8-9 cache lines, each a
//! miss of its own. Here it is one aligned block: the count, the slot, the sums, the weights,
//! in `ceil((16 + 12 lanes) / 64)` lines (5 for the 25 default candidates).

use crate::prefetch::prefetch_range;

/// A cache line of the blocks: their allocation unit, so that every block starts on a line.
#[repr(C, align(64))]
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
struct Line([u64; WORDS_PER_LINE]);

const WORDS_PER_LINE: usize = 8;

/// Where a block's fields sit, in 64-bit words: the occurrence count, the slot (`0`: none, else
/// the slot plus one, so that zeroed memory is "no slot"), then the lanes' sums, then their
/// weights, two to a word.
const OCCURRENCES: usize = 0;
const SLOT: usize = 1;
const SUMS: usize = 2;

/// Per weight `j`, for every lane (candidate) `c`: its weight and Adagrad sum of squared
/// gradients, and, shared by the lanes, how many training rows read the weight and its slot in
/// the current minibatch.
pub(super) struct WeightBlocks {
    lanes: usize,
    /// Words per block, a whole number of lines.
    stride: usize,
    lines: Vec<Line>,
}

impl WeightBlocks {
    /// One block per entry of `occurrences`, for `lanes` lanes: weights and sums 0, no slot.
    pub(super) fn new(lanes: usize, occurrences: &[u64]) -> WeightBlocks {
        let stride = stride_of(lanes);
        let mut blocks = WeightBlocks {
            lanes,
            stride,
            lines: bytemuck::zeroed_vec(occurrences.len() * stride / WORDS_PER_LINE),
        };
        let words = blocks.words_mut();
        for (j, &count) in occurrences.iter().enumerate() {
            words[j * stride + OCCURRENCES] = count;
        }
        blocks
    }

    /// How many weights.
    fn len(&self) -> usize {
        self.lines.len() * WORDS_PER_LINE / self.stride
    }

    fn words(&self) -> &[u64] {
        bytemuck::cast_slice(&self.lines)
    }

    fn words_mut(&mut self) -> &mut [u64] {
        bytemuck::cast_slice_mut(&mut self.lines)
    }

    #[inline(always)]
    fn block(&self, j: usize) -> &[u64] {
        &self.words()[j * self.stride..(j + 1) * self.stride]
    }

    #[inline(always)]
    fn block_mut(&mut self, j: usize) -> &mut [u64] {
        let stride = self.stride;
        &mut self.words_mut()[j * stride..(j + 1) * stride]
    }

    /// Weight `j`'s value in every lane.
    #[inline(always)]
    pub(super) fn weights(&self, j: usize) -> &[f32] {
        let lanes = self.lanes;
        &bytemuck::cast_slice(&self.block(j)[SUMS + lanes..])[..lanes]
    }

    /// How many training rows read weight `j`.
    #[inline(always)]
    pub(super) fn occurrences(&self, j: usize) -> u64 {
        self.block(j)[OCCURRENCES]
    }

    /// Weight `j`'s slot in the current minibatch, if it has one.
    #[inline(always)]
    pub(super) fn slot(&self, j: usize) -> Option<usize> {
        (self.block(j)[SLOT] as usize).checked_sub(1)
    }

    #[inline(always)]
    pub(super) fn set_slot(&mut self, j: usize, slot: Option<usize>) {
        self.block_mut(j)[SLOT] = slot.map_or(0, |s| s as u64 + 1);
    }

    /// Weight `j`'s Adagrad sums and values, every lane.
    #[inline(always)]
    pub(super) fn sums_and_weights_mut(&mut self, j: usize) -> (&mut [f64], &mut [f32]) {
        let lanes = self.lanes;
        let (sums, weights) = self.block_mut(j)[SUMS..].split_at_mut(lanes);
        (bytemuck::cast_slice_mut(sums), &mut bytemuck::cast_slice_mut(weights)[..lanes])
    }

    /// Hints the CPU to bring weight `j`'s whole block in.
    #[inline(always)]
    pub(super) fn prefetch(&self, j: usize) {
        prefetch_range(self.words(), j * self.stride, self.stride);
    }

    /// Copies lane `c`'s weights into `out` (one value per weight), for each `(c, out)`, in one
    /// pass over the blocks.
    pub(super) fn copy_lanes(&self, lanes_out: &mut [(usize, Vec<f32>)]) {
        for (_, out) in lanes_out.iter_mut() {
            out.resize(self.len(), 0.0);
        }
        for j in 0..self.len() {
            let weights = self.weights(j);
            for (c, out) in lanes_out.iter_mut() {
                out[j] = weights[*c];
            }
        }
    }

    /// Keeps only lanes `keep` (increasing), in that order, in blocks sized for them: each kept
    /// lane's values are moved, not recomputed; counts and slots stay.
    pub(super) fn keep_lanes(&mut self, keep: &[usize]) {
        let (old_lanes, old_stride) = (self.lanes, self.stride);
        let (new_lanes, new_stride) = (keep.len(), stride_of(keep.len()));
        let mut block = vec![0u64; old_stride];
        let len = self.len();
        let words = self.words_mut();
        for j in 0..len {
            // Block `j` moves down (`j * new_stride <= j * old_stride`) and ends before block
            // `j + 1` starts: a copy of it, taken first, is all the move reads.
            block.copy_from_slice(&words[j * old_stride..(j + 1) * old_stride]);
            let old_sums: &[f64] = bytemuck::cast_slice(&block[SUMS..SUMS + old_lanes]);
            let old_weights: &[f32] = bytemuck::cast_slice(&block[SUMS + old_lanes..]);
            let new = &mut words[j * new_stride..(j + 1) * new_stride];
            new[OCCURRENCES] = block[OCCURRENCES];
            new[SLOT] = block[SLOT];
            let (sums, weights) = new[SUMS..].split_at_mut(new_lanes);
            let (sums, weights): (&mut [f64], &mut [f32]) =
                (bytemuck::cast_slice_mut(sums), bytemuck::cast_slice_mut(weights));
            weights.fill(0.0);
            for (c, &from) in keep.iter().enumerate() {
                sums[c] = old_sums[from];
                weights[c] = old_weights[from];
            }
        }
        self.lines.truncate(len * new_stride / WORDS_PER_LINE);
        self.lines.shrink_to_fit();
        self.lanes = new_lanes;
        self.stride = new_stride;
    }
}

/// Words per block for `lanes` lanes: the count, the slot, a sum a lane, a weight a half word,
/// rounded up to whole lines.
fn stride_of(lanes: usize) -> usize {
    (SUMS + lanes + lanes.div_ceil(2)).div_ceil(WORDS_PER_LINE) * WORDS_PER_LINE
}

#[cfg(test)]
mod tests {
    use super::WeightBlocks;

    #[test]
    fn a_block_of_25_lanes_takes_five_cache_lines() {
        assert_eq!(super::stride_of(25) * 8, 5 * 64);
        assert_eq!(super::stride_of(1) * 8, 64);
    }

    #[test]
    fn each_weights_fields_are_its_own_and_kept_lanes_keep_their_values() {
        let occurrences = [3u64, 0, 7, 1];
        let mut blocks = WeightBlocks::new(5, &occurrences);
        for j in 0..4 {
            let (sums, weights) = blocks.sums_and_weights_mut(j);
            for c in 0..5 {
                sums[c] = (10 * j + c) as f64 + 0.5;
                weights[c] = -((10 * j + c) as f32);
            }
        }
        blocks.set_slot(2, Some(0));
        blocks.set_slot(3, Some(41));
        for (j, &count) in occurrences.iter().enumerate() {
            assert_eq!(blocks.occurrences(j), count);
            assert_eq!(blocks.weights(j), &[0, 1, 2, 3, 4].map(|c| -((10 * j + c) as f32)));
        }
        assert_eq!([0, 1, 2, 3].map(|j| blocks.slot(j)), [None, None, Some(0), Some(41)]);

        blocks.keep_lanes(&[1, 4]);
        assert_eq!(blocks.weights(0).len(), 2);
        for (j, &count) in occurrences.iter().enumerate() {
            assert_eq!(blocks.occurrences(j), count);
            assert_eq!(blocks.weights(j), &[1, 4].map(|c| -((10 * j + c) as f32)));
            let (sums, _) = blocks.sums_and_weights_mut(j);
            assert_eq!(sums, &[1, 4].map(|c| (10 * j + c) as f64 + 0.5));
        }
        assert_eq!([0, 1, 2, 3].map(|j| blocks.slot(j)), [None, None, Some(0), Some(41)]);

        let mut lanes_out = vec![(1, Vec::new())];
        blocks.copy_lanes(&mut lanes_out);
        assert_eq!(lanes_out[0].1, [0, 1, 2, 3].map(|j| -((10 * j + 4) as f32)));
    }
}
