//! Stage `evaluate`: scores the query rows of the test tasks and computes AUC, GAUC and log loss
//! overall, per activity segment and per warm/cold entity state; and the same overall metrics
//! on the validation tasks (`validation`), the rows every hyperparameter is chosen on. For LiMAML it scores through
//! the serving path (Global Block + stored meta embedding). The oracle variant scores with the
//! true click probability of synthetic data.

use limaml_data::{Dataset, TaskRole, TaskSet};
use limaml_models::{MetaEmbeddingTable, TrainedModel};

use super::{encode, Stage, StageContext, StageError, StageOutput};

#[derive(Default)]
pub struct Evaluate {
    oracle: bool,
}

impl Evaluate {
    pub fn oracle() -> Self {
        Evaluate { oracle: true }
    }
}

impl Stage for Evaluate {
    fn kind(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        3
    }

    fn code(&self) -> &'static str {
        super::MODELS_CODE
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "oracle": self.oracle, "roles": ["test"], "validation_roles": ["validation"] })
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        let dataset: Dataset = ctx.decode("dataset", "dataset")?;
        let tasks: TaskSet = ctx.decode("tasks", "tasks")?;
        let roles = [TaskRole::Test];
        let (predictions, validation) = if self.oracle {
            let oracle = |roles: &[TaskRole]| {
                limaml_models::oracle_predictions(&dataset.interactions, &tasks, roles).ok_or_else(|| {
                    StageError::BadInput("the data set has no true click probabilities (only synthetic data does)".into())
                })
            };
            (oracle(&roles)?, oracle(&[TaskRole::Validation])?)
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
            let test = limaml_models::predict(&model, &dataset.interactions, &tasks, embeddings.as_ref(), &roles)
                .map_err(|e| StageError::Failed(e.to_string()))?;
            // Validation entities have no stored embeddings: LiMAML adapts on their supports
            // directly (the same scores as the serving path, to float rounding).
            let validation =
                limaml_models::predict(&model, &dataset.interactions, &tasks, None, &[TaskRole::Validation])
                    .map_err(|e| StageError::Failed(e.to_string()))?;
            (test, validation)
        };
        let report = limaml_models::evaluate(&predictions, &dataset.interactions, &tasks);
        let mut metrics = serde_json::to_value(&report).map_err(|e| StageError::Failed(e.to_string()))?;
        let validation = limaml_models::evaluate(&validation, &dataset.interactions, &tasks).overall;
        metrics["validation"] = serde_json::to_value(&validation).map_err(|e| StageError::Failed(e.to_string()))?;
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert("predictions".into(), encode(&predictions)?);
        Ok(output)
    }
}
