//! Stage `train`: trains one method (global, id_embedding, wide_deep, limaml, logistic) on the sliced
//! tasks, with early stopping on the validation entities. Stores the model and its curves.
//!
//! A `command` method (bring your own model) runs its program here instead, through
//! `limaml_models::command`: its key holds the command line, `params` and the content of every
//! file it names (not `[train]`, which it does not read, nor `timeout`), and a program that
//! cannot be started is bad input (exit 2).

use std::collections::BTreeMap;
use std::path::PathBuf;

use limaml_data::{Dataset, TaskSet};
use limaml_models::config::{MethodConfig, TrainConfig};
use limaml_models::{ModelError, TrainedModel};

use super::{encode, Stage, StageContext, StageError, StageOutput};

pub struct Train {
    pub method: MethodConfig,
    pub train: TrainConfig,
    pub seed: u64,
    /// Folder a command method's relative paths are resolved against (the spec's folder).
    /// Not part of the key: the files' content is.
    pub base_dir: PathBuf,
}

impl Train {
    /// A command method's files as written -> blake3 of their content (or why it is unreadable).
    fn file_digests(&self) -> BTreeMap<String, Result<String, String>> {
        let MethodConfig::Command(config) = &self.method else { return BTreeMap::new() };
        limaml_models::command::dependency_paths(config)
            .into_iter()
            .map(|written| {
                let path = self.base_dir.join(written);
                let digest = std::fs::read(&path)
                    .map(|bytes| blake3::hash(&bytes).to_hex().to_string())
                    .map_err(|e| format!("{}: {e}", path.display()));
                (written.to_string(), digest)
            })
            .collect()
    }
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
        if let MethodConfig::Command(_) = &self.method {
            let mut method = serde_json::json!(self.method);
            method.as_object_mut().expect("a method is a table").remove("timeout");
            let digests: BTreeMap<String, String> = self
                .file_digests()
                .into_iter()
                .map(|(file, digest)| (file, digest.unwrap_or_else(|e| format!("unreadable: {e}"))))
                .collect();
            return serde_json::json!({ "method": method, "file_content": digests });
        }
        serde_json::json!({ "method": self.method, "train": self.train })
    }

    fn seed(&self) -> Option<u64> {
        Some(self.seed)
    }

    fn source_digest(&self) -> Result<Option<String>, StageError> {
        // The digests are in `params` (so `why` names the file); here only unreadable files fail.
        match self.file_digests().into_values().find_map(Result::err) {
            Some(error) => Err(StageError::BadInput(format!("a file of the command cannot be read: {error}"))),
            None => Ok(None),
        }
    }

    fn trains(&self) -> bool {
        true
    }

    fn uses_every_core(&self) -> bool {
        limaml_models::trains_on_every_core(&self.method)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        let dataset = ctx.decode_shared::<Dataset>("dataset", "dataset")?;
        let tasks = ctx.decode_shared::<TaskSet>("tasks", "tasks")?;
        let epochs = self.train.epochs;
        let mut on_epoch = |record: &limaml_models::EpochRecord| {
            (ctx.progress)(format!(
                "epoch {}/{epochs} loss {:.4} val auc {}",
                record.epoch,
                record.train_loss,
                record.validation_auc.map_or("—".to_string(), |auc| format!("{auc:.4}"))
            ));
        };
        let method = match &self.method {
            MethodConfig::Command(config) => {
                (ctx.progress)(format!("running {}", config.command.join(" ")));
                // Absolute: the command runs in its exchange folder.
                let base_dir = std::path::absolute(&self.base_dir)
                    .map_err(|e| StageError::BadInput(format!("{}: {e}", self.base_dir.display())))?;
                MethodConfig::Command(limaml_models::command::resolve(config, &base_dir))
            }
            method => method.clone(),
        };
        let model = limaml_models::train(&method, &self.train, &dataset.interactions, &tasks, self.seed, &mut on_epoch)
            .map_err(|e| match e {
                ModelError::CommandNotStarted { .. } => StageError::BadInput(e.to_string()),
                e => StageError::Failed(e.to_string()),
            })?;
        ctx.check_cancelled()?;
        let metrics = serde_json::json!({
            "best_epoch": model.best_epoch,
            "curve": model.curve,
            "l2_search": model.l2_search,
        });
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert("model".into(), model.to_bytes().map_err(|e| StageError::Failed(e.to_string()))?);
        if let Some(table) = &model.meta_embeddings {
            output.artifacts.insert("meta_embeddings.csv".into(), table.to_csv().into_bytes());
            output.artifacts.insert("meta_embeddings".into(), encode(table)?);
        }
        Ok(output)
    }
}

/// Reads the `model` artifact of the input bound to `role`.
pub fn decode_model(ctx: &StageContext<'_>, role: &str) -> Result<TrainedModel, StageError> {
    let bytes = ctx.inputs.artifact(role, "model")?;
    TrainedModel::from_bytes(&bytes)
        .map_err(|e| StageError::Failed(format!("input {role}/model cannot be decoded: {e}")))
}
