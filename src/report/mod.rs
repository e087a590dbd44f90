//! What users read: run summaries, comparisons across runs and seeds, and the paper's tables.
//! Owns statistics and rendering; numbers come from stage records in the store.

pub mod compare;
pub mod export;
pub mod html;
pub mod plots;
pub mod ranking_tables;
pub mod records;
pub mod reproduce;
pub mod search;
pub mod significance;
pub mod stats;
pub mod table;
pub mod tables;
