//! Stage `load_data`: reads (or generates) the data set named by `[data]`. Its key includes the
//! blake3 digest of the source files' contents, never their paths or modification times.

use std::path::{Path, PathBuf};

use limaml_data::config::DataConfig;

use super::{encode, Stage, StageContext, StageError, StageOutput};

pub struct LoadData {
    pub config: DataConfig,
    /// Folder relative data paths are resolved against (the spec's folder). Not part of the key.
    pub base_dir: PathBuf,
}

impl LoadData {
    pub fn new(config: DataConfig, base_dir: &Path) -> Self {
        LoadData { config, base_dir: base_dir.to_path_buf() }
    }
}

impl Stage for LoadData {
    fn kind(&self) -> &'static str {
        "load_data"
    }

    fn version(&self) -> u32 {
        1
    }

    fn code(&self) -> &'static str {
        super::DATA_CODE
    }

    fn params(&self) -> serde_json::Value {
        let mut params = serde_json::to_value(&self.config).expect("config serializes");
        // The location is not content: the source digest stands for the files.
        if let Some(object) = params.as_object_mut() {
            object.remove("path");
        }
        params
    }

    fn source_digest(&self) -> Result<Option<String>, StageError> {
        let files =
            limaml_data::source_files(&self.config, &self.base_dir).map_err(|e| StageError::BadInput(e.to_string()))?;
        if files.is_empty() {
            return Ok(None);
        }
        let mut hasher = blake3::Hasher::new();
        for file in files {
            let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let bytes = std::fs::read(&file).map_err(|e| StageError::BadInput(format!("{}: {e}", file.display())))?;
            hasher.update(name.as_bytes());
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        Ok(Some(hasher.finalize().to_hex().to_string()))
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        (ctx.progress)("loading".into());
        let dataset =
            limaml_data::load(&self.config, &self.base_dir).map_err(|e| StageError::BadInput(e.to_string()))?;
        let interactions = &dataset.interactions;
        let positives = interactions.label.iter().filter(|&&l| l > 0.5).count();
        let metrics = serde_json::json!({
            "name": dataset.name,
            "users": dataset.users.count,
            "items": dataset.items.count,
            "interactions": interactions.len(),
            "positive_rate": positives as f64 / interactions.len().max(1) as f64,
            "dropped_rows": dataset.dropped_rows,
            "has_true_probability": interactions.true_probability.is_some(),
            "warnings": limaml_data::check::warnings(&dataset),
        });
        let mut output = StageOutput { metrics, ..Default::default() };
        output.artifacts.insert("dataset".into(), encode(&dataset)?);
        Ok(output)
    }
}
