//! Typed errors of `limaml-models`.
//!
//! Owns [`ModelError`]. Must not format user-facing advice beyond the message itself: the CLI
//! decides how to present it.

use thiserror::Error;

/// Everything that can go wrong while training, exporting, serving or loading a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, out-of-range index, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The method or training configuration has out-of-range values.
    #[error("invalid configuration: {}", .0.iter().map(|i| format!("{}: {}", i.field, i.message)).collect::<Vec<_>>().join("; "))]
    InvalidConfig(Vec<crate::config::ConfigIssue>),
    /// The task set and the interactions disagree (row or entity index out of range, ...).
    #[error("inconsistent data: {0}")]
    InconsistentData(String),
    /// There is nothing to train on (no baseline rows, or no meta-train task with a query).
    #[error("no training data: {0}")]
    NoTrainingData(String),
    /// A stale support set was asked for but a task has none (`Task::stale_support` is `None`).
    #[error("task {task} (entity {entity}) has no stale support set")]
    NoStaleSupport { task: usize, entity: u32 },
    /// Serving needed a meta embedding for an entity that the table does not hold.
    #[error("no meta embedding for entity {entity}")]
    MissingMetaEmbedding { entity: u32 },
    /// A meta-embedding operation was asked of a model that has no Meta Block.
    #[error("method `{0}` has no Meta Block (only `limaml` exports meta embeddings)")]
    NotAMetaModel(String),
    /// The model was trained on a task set of another shape (feature widths, entity counts).
    #[error("model does not match the task set: {0}")]
    ShapeMismatch(String),
    /// Stored weights could not be read or written.
    #[error("weights: {0}")]
    Weights(String),
    /// A command method's program cannot be started (not found, not executable): bad input.
    #[error("command `{program}` cannot be started: {reason}")]
    CommandNotStarted { program: String, reason: String },
    /// A command method's program failed: a non-zero exit, a timeout, or bad output files.
    #[error("command `{command}` {what}; the end of its stderr:\n{stderr_tail}\n(its exchange folder is kept at {})", folder.display())]
    CommandFailed { command: String, what: String, stderr_tail: String, folder: std::path::PathBuf },
    /// An operation on network weights was asked of a method that has none (`command`).
    #[error("method `{0}` has no network (its scores come from its command)")]
    NotANet(String),
    /// The exchange folder of a command method cannot be written.
    #[error("command exchange folder: {0}")]
    Exchange(String),
}
