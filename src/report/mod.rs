//! What users read: the run summary table, run listings, and (later) comparisons across runs.
//! Owns rendering only; numbers come from stage records in the store.

pub mod stats;
pub mod tables;
