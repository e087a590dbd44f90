//! Stage `slice_tasks`: divides entities into meta-train / validation / test and each entity's
//! interactions into support and query sets, per `[split]` and the seed.

use limaml_data::config::SplitConfig;
use limaml_data::{Dataset, TaskRole};

use super::{encode, Stage, StageContext, StageError, StageOutput};

pub struct SliceTasks {
    pub split: SplitConfig,
    pub seed: u64,
}

impl Stage for SliceTasks {
    fn kind(&self) -> &'static str {
        "slice_tasks"
    }

    fn version(&self) -> u32 {
        1
    }

    fn code(&self) -> &'static str {
        super::DATA_CODE
    }

    fn params(&self) -> serde_json::Value {
        serde_json::to_value(&self.split).expect("config serializes")
    }

    fn seed(&self) -> Option<u64> {
        Some(self.seed)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        let dataset = ctx.decode_shared::<Dataset>("dataset", "dataset")?;
        (ctx.progress)("slicing".into());
        let tasks =
            limaml_data::slice(&dataset, &self.split, self.seed).map_err(|e| StageError::BadInput(e.to_string()))?;
        let count = |role: TaskRole| tasks.tasks.iter().filter(|t| t.role == role).count();
        let metrics = serde_json::json!({
            "tasks": tasks.tasks.len(),
            "meta_train": count(TaskRole::MetaTrain),
            "validation": count(TaskRole::Validation),
            "test": count(TaskRole::Test),
            "segments": tasks.segments,
            "segment_bounds": tasks.segment_bounds,
        });
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert("tasks".into(), encode(&tasks)?);
        Ok(output)
    }
}
