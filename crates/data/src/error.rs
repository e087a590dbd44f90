//! Typed errors of the data layer.
//!
//! Owns [`DataError`]: every way loading, generating or slicing can fail. A malformed input row
//! names its file, its 1-based line and the line's content. Must not format for a terminal or
//! decide policy (the `bad_rows` policy lives with the loaders).

use std::path::PathBuf;

use crate::config::ConfigIssue;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data file not found: {}", path.display())]
    MissingFile { path: PathBuf },

    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is empty", path.display())]
    EmptyFile { path: PathBuf },

    #[error("{}:{line}: {reason}: `{content}`", path.display())]
    MalformedRow {
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending line, verbatim (after Latin-1 decoding where applicable).
        content: String,
        reason: String,
    },

    #[error("{}: no column named `{column}`", path.display())]
    MissingColumn { path: PathBuf, column: String },

    #[error("no data path: set `path` in [data] or the LIMAML_DATA environment variable")]
    NoPath,

    #[error("{} is not a MovieLens folder (expected u.data for ML-100K or ratings.dat for ML-1M)", dir.display())]
    UnrecognizedLayout { dir: PathBuf },

    #[error("invalid configuration: {}", issues.iter().map(|i| format!("{}: {}", i.field, i.message)).collect::<Vec<_>>().join("; "))]
    InvalidConfig { issues: Vec<ConfigIssue> },

    #[error("data set {name} cannot be used: {reason}")]
    Unusable { name: String, reason: String },

    #[error("cannot slice: {reason}")]
    Slice { reason: String },

    #[error("serialization failed: {0}")]
    Serialization(#[from] postcard::Error),
}
