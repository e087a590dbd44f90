//! The training rows' shuffle: owns [`shuffle`], rand's `SliceRandom::shuffle` (0.9) with each
//! swap's far element prefetched. Must not change an order: for the same slice and generator
//! it gives rand's permutation and leaves the generator where rand's leaves it (a test checks
//! both against rand for many lengths and seeds).
//!
//! Why: every epoch of every baseline and of the logistic grid shuffles its ~22M training rows
//! at a million users. rand's Fisher-Yates swaps element `i` with a uniformly drawn `j <= i`,
//! and at that size nearly every `j` is a cache miss, taken one at a time: 1.2 % of a 1M run's
//! CPU time went to it (bench/README.md, eighteenth pass). The draws depend only on the
//! generator and on `i`, never on the slice, so they can be drawn [`AHEAD`] swaps early and
//! their elements prefetched while the swaps before them run.

use rand::{Rng, RngCore};

use crate::prefetch::prefetch;

/// How many swaps ahead the far elements are drawn and prefetched.
const AHEAD: usize = 16;

/// Shuffles `slice` exactly as rand 0.9's `slice.shuffle(rng)` does (see the module docs).
pub fn shuffle<T, R: RngCore + ?Sized>(slice: &mut [T], rng: &mut R) {
    let n = slice.len();
    if n <= 1 {
        return;
    }
    // rand draws its indices 32 bits at a time below this length (and through `random_range`
    // above it): the same draws here, or, above it, rand's own shuffle.
    if n >= u32::MAX as usize {
        rand::seq::SliceRandom::shuffle(slice, rng);
        return;
    }
    let mut draws = IncreasingUniform::new(rng);
    // `ahead[i % AHEAD]` holds the index swap `i` swaps with, drawn `AHEAD` swaps before.
    let mut ahead = [0usize; AHEAD];
    for slot in ahead.iter_mut().take(n) {
        *slot = draws.next_index();
    }
    for i in 0..n {
        let j = ahead[i % AHEAD];
        if i + AHEAD < n {
            let later = draws.next_index();
            prefetch(slice, later);
            ahead[i % AHEAD] = later;
        }
        slice.swap(i, j);
    }
}

/// rand 0.9's `seq::increasing_uniform::IncreasingUniform` (private there): the `i`-th call
/// returns a uniform index in `0..=i`, several of them drawn from one 32-bit number. Copied
/// for the order of its draws, which `shuffle` must keep; starts at `n = 0`, as a full shuffle
/// starts it.
struct IncreasingUniform<'r, R: RngCore + ?Sized> {
    rng: &'r mut R,
    n: u32,
    /// A random number in `0..(n + 1) * (n + 2) * .. * (n + chunk_remaining)`.
    chunk: u32,
    chunk_remaining: u8,
}

impl<'r, R: RngCore + ?Sized> IncreasingUniform<'r, R> {
    fn new(rng: &'r mut R) -> Self {
        // With `n = 0` the first index is always 0, drawn from no random bits.
        IncreasingUniform { rng, n: 0, chunk: 0, chunk_remaining: 1 }
    }

    #[inline]
    fn next_index(&mut self) -> usize {
        let next_n = self.n + 1;
        let next_chunk_remaining = self.chunk_remaining.checked_sub(1).unwrap_or_else(|| {
            let (bound, remaining) = bound_of_chunk(next_n);
            self.chunk = self.rng.random_range(..bound);
            remaining - 1
        });
        let result = if next_chunk_remaining == 0 {
            self.chunk as usize
        } else {
            let r = self.chunk % next_n;
            self.chunk /= next_n;
            r as usize
        };
        self.chunk_remaining = next_chunk_remaining;
        self.n = next_n;
        result
    }
}

/// The largest product `m * (m + 1) * .. * (m + count - 1)` that fits in a `u32`, and `count`.
fn bound_of_chunk(m: u32) -> (u32, u8) {
    let mut product = m;
    let mut current = m + 1;
    while let Some(p) = product.checked_mul(current) {
        product = p;
        current += 1;
    }
    (product, (current - m) as u8)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{RngCore, SeedableRng};

    #[test]
    fn the_shuffle_is_rands_and_leaves_the_generator_where_rands_does() {
        for len in [0usize, 1, 2, 3, 5, 13, 14, 15, 16, 17, 33, 100, 1000, 65_537, 300_007] {
            for seed in 0..6u64 {
                let mut expected: Vec<u32> = (0..len as u32).map(|x| x.wrapping_mul(2_654_435_761)).collect();
                let mut got = expected.clone();
                let (mut theirs, mut ours) = (StdRng::seed_from_u64(seed), StdRng::seed_from_u64(seed));
                expected.shuffle(&mut theirs);
                super::shuffle(&mut got, &mut ours);
                assert_eq!(got, expected, "len {len}, seed {seed}");
                assert_eq!(ours.next_u64(), theirs.next_u64(), "generator after len {len}, seed {seed}");
            }
        }
    }
}
