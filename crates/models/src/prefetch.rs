//! Software prefetch hints for the loops that read rows scattered over tables of millions of
//! entries (lazy Adam's table rows, logistic's weight lanes, shuffled interaction rows). Owns
//! [`prefetch`], [`prefetch_range`], and the hints for an interaction row and a user's feature
//! row. Must not change a result: a hint only moves memory into the cache.

use limaml_data::{FeatureTables, Interactions};

/// Bytes per cache line on the CPUs this runs on.
const CACHE_LINE: usize = 64;

/// Hints the CPU to bring `slice[index]`'s cache line in (nothing off x86_64 or past the end).
#[inline(always)]
pub(crate) fn prefetch<T>(slice: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = slice.get(index) {
        // SAFETY: a prefetch reads nothing into the program and `x` is a valid address.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slice, index);
}

/// [`prefetch`] for every cache line of `slice[start..start + len]` (clipped to the slice).
#[inline(always)]
pub(crate) fn prefetch_range<T>(slice: &[T], start: usize, len: usize) {
    let step = (CACHE_LINE / std::mem::size_of::<T>().max(1)).max(1);
    let end = (start + len).min(slice.len());
    let mut at = start;
    while at < end {
        prefetch(slice, at);
        at += step;
    }
    // The range may straddle one more line than its length spans.
    if end > start {
        prefetch(slice, end - 1);
    }
}

/// [`prefetch`] for the user, item and label of interaction row `row`.
#[inline(always)]
pub(crate) fn prefetch_interaction(interactions: &Interactions, row: u32) {
    let r = row as usize;
    prefetch(&interactions.user, r);
    prefetch(&interactions.item, r);
    prefetch(&interactions.label, r);
}

/// [`prefetch_interaction`] for each row of `rows`.
#[inline]
pub(crate) fn prefetch_interactions(interactions: &Interactions, rows: &[u32]) {
    rows.iter().for_each(|&r| prefetch_interaction(interactions, r));
}

/// [`prefetch_range`] over `user`'s row of the user feature table.
#[inline(always)]
pub(crate) fn prefetch_user_features(tables: &FeatureTables, user: u32) {
    prefetch_range(&tables.user_features, user as usize * tables.user_dim, tables.user_dim);
}
