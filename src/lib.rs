//! limaml: compile a TOML experiment spec into a DAG of cached stages, run it, and report.
//!
//! The modules follow the data: [`spec`] (TOML, validation) -> [`plan`] (DAG, keys) -> [`exec`]
//! (executors) -> [`store`] (sled + content-addressed files) -> [`report`] (tables). [`stages`]
//! holds one file per stage kind; data and models live in the `limaml-data` and `limaml-models`
//! crates.

pub mod exec;
pub mod plan;
pub mod report;
pub mod spec;
pub mod stages;
pub mod store;
