//! Stage `evaluate`: scores the query rows of the test tasks and computes every metric of the
//! registry (`limaml_models::eval`: AUC, GAUC, log loss, calibration, ranking metrics within
//! each query set and, with `catalogue`, over the full catalogue) overall, per activity segment,
//! per entity state and per window; and the same overall metrics on the validation tasks
//! (`validation`), the rows every hyperparameter is chosen on. For LiMAML it scores through the
//! serving path (Global Block + stored meta embedding). The oracle variant scores with the true
//! click probability of synthetic data (query rows only: it knows no unobserved pair; nor
//! does a `command` method, which scores only the rows it was given).
//!
//! Artifacts: `predictions` (the scored test rows) and `per_task` (one row of metrics per test
//! task), both postcard; `limaml export` turns them into CSV.

use limaml_data::{Dataset, TaskRole, TaskSet};
use std::collections::BTreeMap;

use limaml_models::eval::PositiveRanks;
use limaml_models::{EvalConfig, MetaEmbeddingTable, Predictions, TrainedModel};

use super::{encode, Stage, StageContext, StageError, StageOutput};

pub struct Evaluate {
    oracle: bool,
    config: EvalConfig,
}

impl Evaluate {
    pub fn new(config: EvalConfig) -> Self {
        Evaluate { oracle: false, config }
    }

    pub fn oracle(config: EvalConfig) -> Self {
        Evaluate { oracle: true, config }
    }
}

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        4
    }

    fn code(&self) -> &'static str {
        super::MODELS_CODE
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "oracle": self.oracle,
            "roles": ["test"],
            "validation_roles": ["validation"],
            "metrics": self.config,
        })
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        let dataset = ctx.decode_shared::<Dataset>("dataset", "dataset")?;
        let tasks = ctx.decode_shared::<TaskSet>("tasks", "tasks")?;
        let roles = [TaskRole::Test];
        let validation_config = EvalConfig { catalogue: false, ..self.config.clone() };
        // Each half's metrics, whoever scored its rows.
        let evaluate_test = |predictions: Predictions, catalogue: Option<&BTreeMap<u32, PositiveRanks>>| {
            let evaluation = limaml_models::evaluate_with(&predictions, &dataset.interactions, &tasks, &self.config, catalogue);
            (predictions, evaluation)
        };
        let evaluate_validation = |predictions: Predictions| {
            limaml_models::evaluate_with(&predictions, &dataset.interactions, &tasks, &validation_config, None).report.overall
        };
        // The test rows (scored, ranked over the catalogue, their metrics) and the validation
        // rows (scored, their overall metrics) are two independent halves: side by side while a
        // core is free (`limaml_models::pool::join`), as at the end of a run, where this stage
        // of the last method to train runs alone.
        let (test, validation) = if self.oracle {
            let oracle = |roles: &[TaskRole]| {
                limaml_models::oracle_predictions(&dataset.interactions, &tasks, roles).ok_or_else(|| {
                    StageError::BadInput("the data set has no true click probabilities (only synthetic data does)".into())
                })
            };
            (Ok(evaluate_test(oracle(&roles)?, None)), Ok(evaluate_validation(oracle(&[TaskRole::Validation])?)))
        } else {
            let model: TrainedModel = super::train::decode_model(ctx, "model")?;
            // Without an embeddings input (baselines; LiMAML under the deployment protocol, one
            // task per window) LiMAML adapts on each task's own support.
            let embeddings: Option<MetaEmbeddingTable> = if ctx.inputs.roles().iter().any(|r| r == "embeddings") {
                Some(ctx.decode("embeddings", "meta_embeddings")?)
            } else {
                None
            };
            (ctx.progress)("scoring".into());
            let (model, embeddings, dataset, tasks) = (&model, embeddings.as_ref(), &dataset, &tasks);
            limaml_models::pool::join(
                || -> Result<_, StageError> {
                    let test = limaml_models::predict(model, &dataset.interactions, tasks, embeddings, &roles)
                        .map_err(|e| StageError::Failed(e.to_string()))?;
                    // A command method scores only the rows of its eval.csv, so it has no
                    // catalogue ranking (its `full_` metrics are absent, never made up).
                    let mut catalogue = None;
                    if self.config.catalogue && !matches!(model.method, limaml_models::MethodConfig::Command(_)) {
                        ctx.check_cancelled()?;
                        let progress =
                            |done: usize, total: usize| (ctx.progress)(format!("ranking the catalogue: {done}/{total} users"));
                        catalogue = limaml_models::eval::catalogue::catalogue_ranks(
                            model,
                            &dataset.interactions,
                            tasks,
                            embeddings,
                            &roles,
                            &progress,
                        )
                        .map_err(|e| StageError::Failed(e.to_string()))?;
                    }
                    Ok(evaluate_test(test, catalogue.as_ref()))
                },
                || -> Result<_, StageError> {
                    // Validation entities have no stored embeddings: LiMAML adapts on their
                    // supports directly (the same scores as the serving path, to float rounding).
                    let validation =
                        limaml_models::predict(model, &dataset.interactions, tasks, None, &[TaskRole::Validation])
                            .map_err(|e| StageError::Failed(e.to_string()))?;
                    Ok(evaluate_validation(validation))
                },
            )
        };
        let (predictions, evaluation) = test?;
        let mut metrics = serde_json::to_value(&evaluation.report).map_err(|e| StageError::Failed(e.to_string()))?;
        metrics["validation"] = serde_json::to_value(&validation?).map_err(|e| StageError::Failed(e.to_string()))?;
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert("predictions".into(), encode(&predictions)?);
        output.artifacts.insert("per_task".into(), encode(&evaluation.per_task)?);
        Ok(output)
    }
}
