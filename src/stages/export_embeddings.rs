//! Stage `export_embeddings` (LiMAML only): Meta Embedding Generation. Adapts the Meta Block on
//! every entity's support data and stores one vector per entity, as a table for serving and as
//! safetensors for other tools; `limaml export` writes them as CSV on demand. Version 2 stopped
//! storing a CSV copy at every run: nothing read it, and at a million users it was 192 MB of
//! formatted floats written at the end of the run, after the last training stage.

use limaml_data::{Dataset, TaskSet};
use limaml_models::config::MethodConfig;
use limaml_models::TrainedModel;

use super::{encode, Stage, StageContext, StageError, StageOutput};

/// Which support data the embeddings are generated from (the freshness ablation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupportVersion {
    /// The latest support data.
    Latest,
    /// Support data as of an earlier cut-off (its oldest part).
    Stale,
    /// The newest part of the support data, as many rows as `Stale`.
    Recent,
}

impl SupportVersion {
    /// Appended to the method label in stage and report names.
    pub fn suffix(self) -> &'static str {
        match self {
            SupportVersion::Latest => "",
            SupportVersion::Stale => "@stale",
            SupportVersion::Recent => "@recent",
        }
    }

    fn model_version(self) -> limaml_models::SupportVersion {
        match self {
            SupportVersion::Latest => limaml_models::SupportVersion::Latest,
            SupportVersion::Stale => limaml_models::SupportVersion::Stale,
            SupportVersion::Recent => limaml_models::SupportVersion::Recent,
        }
    }
}

/// Whether a method produces meta embeddings.
pub fn applies_to(method: &MethodConfig) -> bool {
    matches!(method, MethodConfig::Limaml(_))
}

pub struct ExportEmbeddings {
    pub support: SupportVersion,
}

impl Stage for ExportEmbeddings {
    fn kind(&self) -> &'static str {
        "export_embeddings"
    }

    fn version(&self) -> u32 {
        2
    }

    fn code(&self) -> &'static str {
        super::MODELS_CODE
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "support": format!("{:?}", self.support).to_lowercase() })
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        let dataset = ctx.decode_shared::<Dataset>("dataset", "dataset")?;
        let tasks = ctx.decode_shared::<TaskSet>("tasks", "tasks")?;
        let model: TrainedModel = super::train::decode_model(ctx, "model")?;
        (ctx.progress)("adapting the Meta Block per entity".into());
        let table =
            limaml_models::export_meta_embeddings(&model, &dataset.interactions, &tasks, self.support.model_version())
                .map_err(|e| StageError::Failed(e.to_string()))?;
        let entities = table.entity_ids.len();
        let metrics = serde_json::json!({
            "entities": entities,
            "dim": table.dim,
            "bytes_per_entity": table.dim * std::mem::size_of::<f32>(),
        });
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert(
            "meta_embeddings.safetensors".into(),
            table.to_safetensors_bytes().map_err(|e| StageError::Failed(e.to_string()))?,
        );
        output.artifacts.insert("meta_embeddings".into(), encode(&table)?);
        Ok(output)
    }
}
