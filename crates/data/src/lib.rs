//! limaml-data: loaders (MovieLens 100K/1M, CSV/TSV logs), the synthetic generator, encoding, and
//! slicing into per-task support/query sets. Pure data in, data out: no caching, no models, no
//! terminal output; I/O is reading sources, and downloading official archives in [`fetch`].

pub mod check;
pub mod config;
pub mod csv;
mod deployment;
pub mod encode;
pub mod error;
pub mod fetch;
pub mod movielens;
pub mod slice;
pub mod summary;
pub mod synthetic;
mod text;
pub mod types;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use config::{
    BadRowPolicy, ConfigIssue, CsvConfig, DataConfig, DataSource, EvalSetting, SplitBy,
    SplitConfig, SyntheticConfig,
};
pub use check::DataWarning;
pub use error::DataError;
pub use fetch::{FetchError, FetchEvent, Fetched};
pub use slice::slice;
pub use summary::{summarize, DataSummary, NamedCount, SizeStats, TaskSummary};
pub use types::*;

/// The environment variable naming a MovieLens folder when `[data] path` is not set.
pub const DATA_ENV_VAR: &str = "LIMAML_DATA";

/// The path the source reads: `config.path` relative to `base_dir`; for MovieLens, the
/// `LIMAML_DATA` environment variable when no path is set, or when a *relative* path does not
/// exist here (so the specs' default `../../shared/data/ml-100k` finds the data wherever
/// `LIMAML_DATA` says it is). An absolute path is taken as given: missing, it is an error.
/// `None` for the synthetic source.
pub fn resolve_path(config: &DataConfig, base_dir: &Path) -> Result<Option<PathBuf>, DataError> {
    if config.source == DataSource::Synthetic {
        return Ok(None);
    }
    let from_env = std::env::var_os(DATA_ENV_VAR).filter(|d| !d.is_empty()).map(PathBuf::from);
    if let Some(path) = &config.path {
        let configured = base_dir.join(path);
        return Ok(Some(match from_env {
            Some(dir)
                if config.source == DataSource::Movielens
                    && Path::new(path).is_relative()
                    && !configured.exists()
                    && dir.exists() =>
            {
                dir
            }
            _ => configured,
        }));
    }
    match (config.source, from_env) {
        (DataSource::Movielens, Some(dir)) => Ok(Some(dir)),
        _ => Err(DataError::NoPath),
    }
}

/// Loads the data set `config` describes (the synthetic source draws from `synthetic.seed`).
pub fn load(config: &DataConfig, base_dir: &Path) -> Result<Dataset, DataError> {
    let issues = config.validate();
    if !issues.is_empty() {
        return Err(DataError::InvalidConfig { issues });
    }
    let dataset = match (config.source, resolve_path(config, base_dir)?) {
        (DataSource::Synthetic, _) => synthetic::generate(&config.synthetic, config.synthetic.seed),
        (DataSource::Movielens, Some(dir)) => {
            movielens::load(&dir, config.click_threshold, config.bad_rows)
        }
        (DataSource::Csv, Some(file)) => {
            csv::load(&file, &config.csv, config.click_threshold, config.bad_rows)
        }
        (_, None) => Err(DataError::NoPath),
    }?;
    check::usable(&dataset, config.click_threshold)?;
    Ok(dataset)
}

/// The files whose content defines the data set (empty for synthetic), for cache keys.
pub fn source_files(config: &DataConfig, base_dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    match (config.source, resolve_path(config, base_dir)?) {
        (DataSource::Synthetic, _) => Ok(Vec::new()),
        (DataSource::Movielens, Some(dir)) => movielens::source_files(&dir),
        (DataSource::Csv, Some(file)) => Ok(vec![file]),
        (_, None) => Err(DataError::NoPath),
    }
}

/// Serializes a [`Dataset`], [`TaskSet`] or any serializable value with postcard.
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard serialization of in-memory data cannot fail")
}

/// The inverse of [`to_bytes`].
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DataError> {
    Ok(postcard::from_bytes(bytes)?)
}
