//! Stage `train`: trains one method (global, id_embedding, wide_deep, limaml, logistic) on the sliced
//! tasks, with early stopping on the validation entities. Stores the model and its curves.

use limaml_data::{Dataset, TaskSet};
use limaml_models::config::{MethodConfig, TrainConfig};
use limaml_models::TrainedModel;

use super::{Stage, StageContext, StageError, StageOutput};

pub struct Train {
    pub method: MethodConfig,
    pub train: TrainConfig,
    pub seed: u64,
}

impl Stage for Train {
    fn kind(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        1
    }

    fn code(&self) -> &'static str {
        super::MODELS_CODE
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "method": self.method, "train": self.train })
    }

    fn seed(&self) -> Option<u64> {
        Some(self.seed)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        let dataset: Dataset = ctx.decode("dataset", "dataset")?;
        let tasks: TaskSet = ctx.decode("tasks", "tasks")?;
        let epochs = self.train.epochs;
        let mut on_epoch = |record: &limaml_models::EpochRecord| {
            (ctx.progress)(format!(
                "epoch {}/{epochs} loss {:.4} val auc {}",
                record.epoch,
                record.train_loss,
                record.validation_auc.map_or("—".to_string(), |auc| format!("{auc:.4}"))
            ));
        };
        let model =
            limaml_models::train(&self.method, &self.train, &dataset.interactions, &tasks, self.seed, &mut on_epoch)
                .map_err(|e| StageError::Failed(e.to_string()))?;
        ctx.check_cancelled()?;
        let metrics = serde_json::json!({
            "best_epoch": model.best_epoch,
            "curve": model.curve,
            "l2_search": model.l2_search,
        });
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert("model".into(), model.to_bytes().map_err(|e| StageError::Failed(e.to_string()))?);
        Ok(output)
    }
}

/// Reads the `model` artifact of the input bound to `role`.
pub fn decode_model(ctx: &StageContext<'_>, role: &str) -> Result<TrainedModel, StageError> {
    let bytes = ctx.inputs.artifact(role, "model")?;
    TrainedModel::from_bytes(&bytes)
        .map_err(|e| StageError::Failed(format!("input {role}/model cannot be decoded: {e}")))
}
