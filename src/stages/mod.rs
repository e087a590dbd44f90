//! Stage kinds: one file each, behind the small [`Stage`] trait. A stage is a pure function of
//! its parameters, its seed and its inputs' artifacts; it returns named artifacts and metrics.
//! Stages must not touch the store, the plan or the terminal: the executor feeds them inputs,
//! commits their outputs, and shows their progress.

pub mod evaluate;
pub mod export_embeddings;
pub mod load_data;
pub mod report;
pub mod select;
pub mod serving_cost;
pub mod shared;
pub mod slice_tasks;
pub mod train;
pub mod trial;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes of an artifact by name, plus small JSON metrics.
#[derive(Debug, Default)]
pub struct StageOutput {
    pub artifacts: BTreeMap<String, Vec<u8>>,
    pub metrics: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The stage's input (data files, parameters) is wrong: the run exits with code 2.
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Failed(String),
    #[error("stopped before it finished")]
    Cancelled,
}

/// Where a running stage reads its inputs from (the store locally; a staging folder on a cluster).
pub trait InputSource: Sync {
    /// The bytes of artifact `name` of the input bound to `role`, verified against its digest.
    fn artifact(&self, role: &str, name: &str) -> Result<Vec<u8>, StageError>;
    /// The metrics of the input bound to `role`.
    fn metrics(&self, role: &str) -> Result<serde_json::Value, StageError>;
    /// Roles bound, in order (e.g. every `evaluate` input of a report).
    fn roles(&self) -> Vec<String>;
    /// The content digest of artifact `name` of the input bound to `role`, when known: what
    /// [`StageContext::decode_shared`] keys a shared value by.
    fn digest(&self, _role: &str, _name: &str) -> Option<String> {
        None
    }
}

/// What a stage sees while it runs.
pub struct StageContext<'a> {
    pub inputs: &'a dyn InputSource,
    /// Short status text for the progress display ("epoch 3/20 loss 0.61").
    pub progress: &'a (dyn Fn(String) + Sync),
    pub cancelled: &'a AtomicBool,
    /// The run's kept decoded values ([`shared::KeptValues`]); `None` outside the local executor.
    pub kept: Option<&'a shared::KeptValues>,
}

impl StageContext<'_> {
    pub fn check_cancelled(&self) -> Result<(), StageError> {
        if self.cancelled.load(Ordering::Relaxed) {
            Err(StageError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Decodes a postcard-encoded input artifact once for every stage of this process that holds
    /// it at the same time ([`shared::decode_shared`]), and for the later stages of the run that
    /// read it while the run keeps it ([`StageContext::kept`]); read only, as every stage reads
    /// the data set and the task set. Without a known digest, a decode of its own.
    pub fn decode_shared<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &self,
        role: &str,
        name: &str,
    ) -> Result<std::sync::Arc<T>, StageError> {
        let Some(digest) = self.inputs.digest(role, name) else {
            return self.decode(role, name).map(std::sync::Arc::new);
        };
        let value: std::sync::Arc<T> = shared::decode_shared(&digest, || self.decode(role, name))?;
        if let Some(kept) = self.kept {
            kept.keep(&digest, value.clone());
        }
        Ok(value)
    }

    /// Decodes a postcard-encoded input artifact.
    pub fn decode<T: serde::de::DeserializeOwned>(&self, role: &str, name: &str) -> Result<T, StageError> {
        let bytes = self.inputs.artifact(role, name)?;
        postcard::from_bytes(&bytes)
            .map_err(|e| StageError::Failed(format!("input {role}/{name} cannot be decoded: {e}")))
    }
}

/// Fingerprint of the `limaml-data` sources this binary was built from.
pub const DATA_CODE: &str = env!("LIMAML_DATA_CODE");
/// Fingerprint of the `limaml-models` (and `limaml-data`) sources and Cargo.lock.
pub const MODELS_CODE: &str = env!("LIMAML_MODELS_CODE");

/// Encodes a value for an artifact (postcard: compact, deterministic).
pub fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StageError> {
    let failed = |e: postcard::Error| StageError::Failed(format!("cannot encode artifact: {e}"));
    // Sized first, then written once into a buffer of that size: growing the buffer by
    // doubling copied a 500 MB data set about once over and touched twice its size in fresh
    // pages, which cost more here than the extra walk over the value (bench/README.md).
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default()).map_err(failed)?;
    let mut bytes = vec![0u8; size];
    let written = postcard::to_slice(value, &mut bytes).map_err(failed)?.len();
    bytes.truncate(written);
    Ok(bytes)
}

/// One kind of stage, parameterized. Implementations hold their typed parameters.
pub trait Stage: Send + Sync {
    /// The kind's name, e.g. "train". Part of the key.
    fn kind(&self) -> &'static str;
    /// Bump when the implementation changes its outputs. Part of the key.
    fn version(&self) -> u32;
    /// Fingerprint of the library code that computes the outputs ([`DATA_CODE`], [`MODELS_CODE`]).
    /// Part of the key.
    fn code(&self) -> &'static str {
        ""
    }
    /// Output-affecting parameters only. Part of the key.
    fn params(&self) -> serde_json::Value;
    /// The seed this stage draws randomness from, if any. Part of the key.
    fn seed(&self) -> Option<u64> {
        None
    }
    /// For stages that read files: blake3 over their contents. Part of the key.
    fn source_digest(&self) -> Result<Option<String>, StageError> {
        Ok(None)
    }
    /// Whether the stage trains a model: the long stages of a run, which the local executor
    /// starts before the short ones ready with them (`exec::local`). Not part of the key.
    fn trains(&self) -> bool {
        false
    }
    /// Whether most of the stage's work spreads over every core rather than one thread. Not
    /// part of the key. The local executor starts such a stage after the one-thread stages
    /// that train, ready with it (`exec::local`).
    fn uses_every_core(&self) -> bool {
        false
    }
    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError>;
}
