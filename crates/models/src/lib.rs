//! limaml-models: the methods (global, id_embedding, wide_deep, limaml, logistic) in candle, and
//! `command` (a user's own program, through the exchange contract of `command`), meta-embedding
//! export and serving, and evaluation metrics. Reads `limaml_data` task sets; knows nothing of
//! specs, caching or the store.
//!
//! Everything runs in f32 on the CPU. The same configuration, data and seed give bit-identical
//! weights and predictions (weights are drawn from a seeded `StdRng`; no parallel reductions on
//! the results path).

pub mod baselines;
pub mod bench;
pub mod command;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod eval;
pub mod inputs;
pub mod kernel;
pub mod lazy_adam;
pub mod limaml;
pub mod logistic;
mod methods;
pub mod mlp;
pub mod params;
pub mod pool;
mod prefetch;
pub mod shuffle;
pub mod train;

pub use bench::{bench_limaml_config, bench_meta_training, BENCH_INNER_STEPS, BENCH_META_BATCH, measure_gemm_peak, BenchResult, GemmPeak, StepFlops};
pub use config::{
    CommandConfig, ConfigIssue, LimamlConfig, LogisticConfig, MetaInput, MetaInteraction, MethodConfig,
    OuterRows, TrainConfig,
};
pub use embeddings::{
    export_meta_embeddings, export_meta_embeddings_for_roles, predict, predict_adapted,
    MetaEmbeddingTable, SupportVersion,
};
pub use error::ModelError;
pub use eval::{
    auc, evaluate, evaluate_with, gauc, log_loss, oracle_predictions, EvalConfig, EvalReport, Evaluation,
    GaucWeighting, Metrics, Predictions, TaskMetrics,
};
pub use inputs::DataShape;
pub use logistic::{L2Candidate, L2Search};
pub use train::{resumable, resume, train, trains_on_every_core, EpochRecord, TrainedModel};
