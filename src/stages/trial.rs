//! Stage `trial`: one configuration of a hyperparameter search (`[search]`) trained to one
//! budget of epochs and scored on the **validation** tasks only. Its metrics hold the trial's
//! parameters, its epochs and its validation metrics (overall) with the objective; its artifact
//! is the model. It never scores a test task, so nothing downstream of a search can read a test
//! metric.
//!
//! Under successive halving a trial has one stage per rung. A rung after the first reads the
//! rung before's selection (`promotion`): a trial not promoted ends there ("pruned", no model);
//! a promoted one continues the same trial's model from the rung before (`previous`) with
//! `limaml_models::resume`, so the epochs already trained are not trained again (methods whose
//! model cannot be continued, `command` and multi-strength `logistic`, train the larger budget
//! from scratch). The key holds the parameters, not the trial's number: equal draws are one stage.

use limaml_data::{Dataset, TaskRole, TaskSet};
use limaml_models::{EvalConfig, TrainedModel};

use super::train::Train;
use super::{Stage, StageContext, StageError, StageOutput};
use crate::spec::search::TrialParams;

pub struct Trial {
    /// The method with the trial's parameters applied, `[train]` with the rung's epochs.
    pub train: Train,
    pub params: TrialParams,
    pub rung: usize,
    /// What the validation metrics are computed with (no catalogue ranking).
    pub eval: EvalConfig,
    /// The objective's metric name in the validation block (`auc`).
    pub objective: String,
}

impl Stage for Trial {
    fn kind(&self) -> &'static str {
        "trial"
    }

    fn version(&self) -> u32 {
        1
    }

    fn code(&self) -> &'static str {
        super::MODELS_CODE
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "train": self.train.params(),
            "params": self.params,
            "rung": self.rung,
            "validation": self.eval,
            "objective": self.objective,
        })
    }

    fn seed(&self) -> Option<u64> {
        self.train.seed()
    }

    fn source_digest(&self) -> Result<Option<String>, StageError> {
        self.train.source_digest()
    }

    fn trains(&self) -> bool {
        true
    }

    fn uses_every_core(&self) -> bool {
        self.train.uses_every_core()
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        let roles = ctx.inputs.roles();
        let prior = if roles.iter().any(|r| r == "promotion") {
            let promotion = ctx.inputs.metrics("promotion")?;
            let promoted = promotion.get("promoted").and_then(|p| p.as_array()).cloned().unwrap_or_default();
            let me = serde_json::to_value(&self.params).map_err(|e| StageError::Failed(e.to_string()))?;
            if !promoted.contains(&me) {
                let metrics = serde_json::json!({ "params": self.params, "rung": self.rung, "pruned": true });
                return Ok(StageOutput { metrics, ..Default::default() });
            }
            Some(super::train::decode_model(ctx, "previous")?)
        } else {
            None
        };
        // Held for the whole stage, so training (resumed here, or the train stage's own path,
        // which reads the same shared values) and the validation scoring decode them once.
        let dataset = ctx.decode_shared::<Dataset>("dataset", "dataset")?;
        let tasks = ctx.decode_shared::<TaskSet>("tasks", "tasks")?;
        let mut resumed_from = 0;
        let model = match prior {
            Some(prior) if limaml_models::resumable(&prior) => {
                resumed_from = prior.curve.len();
                let epochs = self.train.train.epochs;
                let mut on_epoch = |record: &limaml_models::EpochRecord| {
                    (ctx.progress)(format!("epoch {}/{epochs} (resumed at {resumed_from})", record.epoch));
                };
                limaml_models::resume(&prior, &self.train.train, &dataset.interactions, &tasks, &mut on_epoch)
                    .map_err(|e| StageError::Failed(e.to_string()))?
            }
            _ => self.train_from_scratch(ctx)?,
        };
        ctx.check_cancelled()?;
        (ctx.progress)("scoring the validation tasks".into());
        let predictions =
            limaml_models::predict(&model, &dataset.interactions, &tasks, None, &[TaskRole::Validation])
                .map_err(|e| StageError::Failed(e.to_string()))?;
        let validation =
            limaml_models::evaluate_with(&predictions, &dataset.interactions, &tasks, &self.eval, None).report.overall;
        let validation = serde_json::to_value(&validation).map_err(|e| StageError::Failed(e.to_string()))?;
        let objective = validation.get(&self.objective).cloned().unwrap_or(serde_json::Value::Null);
        let metrics = serde_json::json!({
            "params": self.params,
            "rung": self.rung,
            "epochs": self.train.train.epochs,
            "trained_epochs": model.curve.len(),
            "resumed_from": resumed_from,
            "best_epoch": model.best_epoch,
            "pruned": false,
            "objective": objective,
            "validation": validation,
        });
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert("model".into(), model.to_bytes().map_err(|e| StageError::Failed(e.to_string()))?);
        Ok(output)
    }
}

impl Trial {
    /// The `train` stage's own path (command methods included), at this rung's budget.
    fn train_from_scratch(&self, ctx: &StageContext<'_>) -> Result<TrainedModel, StageError> {
        let output = self.train.run(ctx)?;
        let bytes = output.artifacts.get("model").ok_or_else(|| StageError::Failed("training wrote no model".into()))?;
        TrainedModel::from_bytes(bytes).map_err(|e| StageError::Failed(e.to_string()))
    }
}
