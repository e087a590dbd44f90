//! The `[data]` and `[split]` tables of an experiment spec, as serde structs.
//!
//! Owns every knob of loading, generating and slicing, with its default, and range checks
//! ([`DataConfig::validate`], [`SplitConfig::validate`]). Must not read files or know about the
//! rest of the spec: the spec embeds these structs as they are.

use serde::{Deserialize, Serialize};

/// One out-of-range value. `field` is a dotted path relative to the table (e.g. `synthetic.n_users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigIssue {
    pub field: String,
    pub message: String,
}

impl ConfigIssue {
    fn new(field: &str, message: impl Into<String>) -> Self {
        ConfigIssue {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Where the interaction log comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    #[default]
    Synthetic,
    Movielens,
    Csv,
}

/// What a loader does with a malformed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BadRowPolicy {
    /// Stop with an error naming the file, line and content.
    #[default]
    Error,
    /// Skip the row and count it in `Dataset::dropped_rows`.
    Drop,
}

/// The `[data]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub source: DataSource,
    /// MovieLens folder or CSV file, relative to the spec's folder. For MovieLens, falls back to
    /// the `LIMAML_DATA` environment variable.
    pub path: Option<String>,
    /// A rating at or above this is a click (label 1).
    pub click_threshold: f32,
    pub bad_rows: BadRowPolicy,
    pub synthetic: SyntheticConfig,
    pub csv: CsvConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: DataSource::Synthetic,
            path: None,
            click_threshold: 4.0,
            bad_rows: BadRowPolicy::Error,
            synthetic: SyntheticConfig::default(),
            csv: CsvConfig::default(),
        }
    }
}

/// The synthetic generator (`[data.synthetic]`). The click logit of user u on item i at time t is
/// `logit(base_rate) + item_bias_i + feature_strength * f(group_u, tags_i) + taste_strength *
/// sum_{t in tags_i} taste_u(t) / sqrt(|tags_i|)`, where `taste_u`, the user's own liking of each
/// tag, is hidden from every user feature and moves by `drift` over the user's history. The taste acts on an observable item feature (tags), so a user's own
/// history reveals it: that is what personalization can learn and features alone cannot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Seed of the generated world. The experiment's seeds vary slicing and training on top of
    /// one data set; change this to draw another data set.
    pub seed: u64,
    pub n_users: usize,
    pub n_items: usize,
    /// Mean interactions per user (before the `min_interactions` floor and the `n_items` cap).
    pub mean_interactions: f32,
    /// Sigma of the lognormal activity distribution: larger = heavier tail.
    pub activity_sigma: f32,
    /// Every user gets at least this many interactions.
    pub min_interactions: usize,
    /// Scale (logit std) of the hidden personal part.
    pub taste_strength: f32,
    /// Scale (logit std) of the part predictable from user group x item tags.
    pub feature_strength: f32,
    /// How far a user's taste moves from first to last interaction (relative to its scale).
    pub drift: f32,
    /// Click probability at a zero logit offset; sets the overall positive rate.
    pub base_rate: f32,
    /// Std of log item popularity (exposure); popular items are also slightly better liked.
    pub item_popularity: f32,
    /// Logit std of the per-item bias.
    pub item_bias: f32,
    pub n_tags: usize,
    /// Maximum tags per item (each item gets 1..=this).
    pub max_tags_per_item: usize,
    /// Values of the predictive user categorical feature "group".
    pub n_user_groups: usize,
    /// Values of a user categorical feature "device" that carries no signal.
    pub n_user_devices: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            seed: 0,
            n_users: 600,
            n_items: 300,
            mean_interactions: 40.0,
            activity_sigma: 1.0,
            min_interactions: 5,
            taste_strength: 1.5,
            feature_strength: 1.0,
            drift: 0.3,
            base_rate: 0.33,
            item_popularity: 1.0,
            item_bias: 0.5,
            n_tags: 10,
            max_tags_per_item: 3,
            n_user_groups: 4,
            n_user_devices: 3,
        }
    }
}

/// A delimited interaction log (`[data.csv]`). Without a header, column names are 0-based
/// column indices written as strings ("0", "1", ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CsvConfig {
    /// "," or "\t" (any single character).
    pub delimiter: String,
    pub has_header: bool,
    pub user: String,
    pub item: String,
    /// A 0/1 (or true/false) label column; takes precedence over `rating`.
    pub label: Option<String>,
    /// A rating column, thresholded by `click_threshold`.
    pub rating: Option<String>,
    /// A numeric timestamp column; without one, the row order is the time.
    pub timestamp: Option<String>,
    pub user_categorical: Vec<String>,
    pub user_numeric: Vec<String>,
    pub item_categorical: Vec<String>,
    pub item_numeric: Vec<String>,
    /// A column of '|'-separated item tags (becomes the multi-hot field "tags").
    pub item_tags: Option<String>,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            delimiter: ",".to_string(),
            has_header: true,
            user: "user".to_string(),
            item: "item".to_string(),
            label: None,
            rating: None,
            timestamp: Some("timestamp".to_string()),
            user_categorical: Vec::new(),
            user_numeric: Vec::new(),
            item_categorical: Vec::new(),
            item_numeric: Vec::new(),
            item_tags: None,
        }
    }
}

impl DataConfig {
    /// Out-of-range values, empty when the table is usable.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if !self.click_threshold.is_finite() {
            issues.push(ConfigIssue::new(
                "click_threshold",
                "must be a finite number",
            ));
        }
        if self.source == DataSource::Csv && self.path.is_none() {
            issues.push(ConfigIssue::new("path", "the csv source needs a file path"));
        }
        let s = &self.synthetic;
        let positive_counts = [
            ("synthetic.n_users", s.n_users),
            ("synthetic.n_items", s.n_items),
            ("synthetic.min_interactions", s.min_interactions),
            ("synthetic.n_tags", s.n_tags),
            ("synthetic.max_tags_per_item", s.max_tags_per_item),
            ("synthetic.n_user_groups", s.n_user_groups),
            ("synthetic.n_user_devices", s.n_user_devices),
        ];
        for (field, value) in positive_counts {
            if value == 0 {
                issues.push(ConfigIssue::new(field, "must be > 0"));
            }
        }
        if s.max_tags_per_item > s.n_tags {
            issues.push(ConfigIssue::new(
                "synthetic.max_tags_per_item",
                "must be <= n_tags",
            ));
        }
        if s.min_interactions > s.n_items {
            issues.push(ConfigIssue::new(
                "synthetic.min_interactions",
                "must be <= n_items",
            ));
        }
        if s.mean_interactions.is_nan() || s.mean_interactions <= 0.0 {
            issues.push(ConfigIssue::new(
                "synthetic.mean_interactions",
                "must be > 0",
            ));
        }
        if !(s.base_rate > 0.0 && s.base_rate < 1.0) {
            issues.push(ConfigIssue::new("synthetic.base_rate", "must be in (0, 1)"));
        }
        let non_negative = [
            ("synthetic.activity_sigma", s.activity_sigma),
            ("synthetic.taste_strength", s.taste_strength),
            ("synthetic.feature_strength", s.feature_strength),
            ("synthetic.drift", s.drift),
            ("synthetic.item_popularity", s.item_popularity),
            ("synthetic.item_bias", s.item_bias),
        ];
        for (field, value) in non_negative {
            if !(value >= 0.0 && value.is_finite()) {
                issues.push(ConfigIssue::new(field, "must be a finite number >= 0"));
            }
        }
        let c = &self.csv;
        if c.delimiter.chars().count() != 1 {
            issues.push(ConfigIssue::new(
                "csv.delimiter",
                "must be a single character, e.g. \",\" or \"\\t\"",
            ));
        }
        if self.source == DataSource::Csv && c.label.is_none() && c.rating.is_none() {
            issues.push(ConfigIssue::new(
                "csv.label",
                "set `label` or `rating` to define clicks",
            ));
        }
        if c.user.is_empty() {
            issues.push(ConfigIssue::new("csv.user", "must name a column"));
        }
        if c.item.is_empty() {
            issues.push(ConfigIssue::new("csv.item", "must name a column"));
        }
        issues
    }
}

/// Which entity a task belongs to (re-exported contract type, spelled "user" | "item").
pub use crate::types::TaskEntity;

/// How a task's rows are divided into support and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SplitBy {
    /// Query = the latest rows.
    #[default]
    Time,
    /// Query = a seeded random subset.
    Random,
}

/// Which evaluation tasks to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvalSetting {
    /// Validation/test entities are unseen in meta-training.
    Cold,
    /// Every entity meta-trains on its earlier rows; evaluation is on its later rows.
    Warm,
    /// Cold validation/test entities, plus warm test tasks for meta-training entities.
    #[default]
    Both,
    /// Validation and test entities are new to every model: each one's first `prefix_rows`
    /// interactions are its support (what a refresh may read, never trained on) and the rest
    /// its query. Entities with no more than `prefix_rows` interactions are skipped and counted.
    Prefix,
    /// Train once, then serve later time windows (`deployment_cuts`): every model trains on
    /// the interactions before the first cut; each later window is scored with the history
    /// before its start (see `slice`'s module docs).
    Deployment,
}

/// The `[split]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    pub task_entity: TaskEntity,
    pub split_by: SplitBy,
    /// Fraction of a task's rows that go to its query set.
    pub query_fraction: f32,
    /// A fixed query size; overrides `query_fraction` when set.
    pub query_count: Option<u32>,
    /// Entities with fewer interactions are dropped.
    pub min_interactions: u32,
    /// Keep only an entity's most recent N interactions.
    pub max_interactions: Option<u32>,
    pub setting: EvalSetting,
    /// Fraction of entities for meta-training.
    pub train_fraction: f32,
    /// Fraction of entities for validation; the rest are test.
    pub validation_fraction: f32,
    /// Explicit inclusive upper bounds of activity segments, ascending; default terciles.
    pub segments: Option<Vec<u32>>,
    /// When set, each task also gets a stale support set without its most recent fraction.
    pub freshness_fraction: Option<f32>,
    /// With `setting = "deployment"`: cut points T0 < T1 < ... as quantiles of all interaction
    /// timestamps, strictly ascending in (0, 1). Training uses the rows before T0; window 1,
    /// [T0, T1), is validation (early stopping); windows 2.. are test, the last one open-ended.
    pub deployment_cuts: Option<Vec<f32>>,
    /// With `setting = "deployment"`: instead of training once before the first cut, train on
    /// everything before the start of this test window (2, 3, ...) and score that window alone:
    /// the retrained upper bound the refreshed and frozen models are compared against.
    pub deployment_retrain_window: Option<u32>,
    /// With `setting = "prefix"`: how many of a new entity's first interactions it is adapted on.
    pub prefix_rows: Option<u32>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            task_entity: TaskEntity::User,
            split_by: SplitBy::Time,
            query_fraction: 0.25,
            query_count: None,
            min_interactions: 5,
            max_interactions: None,
            setting: EvalSetting::Both,
            train_fraction: 0.7,
            validation_fraction: 0.1,
            segments: None,
            freshness_fraction: None,
            deployment_cuts: None,
            deployment_retrain_window: None,
            prefix_rows: None,
        }
    }
}

impl SplitConfig {
    /// Out-of-range values, empty when the table is usable.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let in_open_unit = |v: f32| v > 0.0 && v < 1.0;
        if !in_open_unit(self.query_fraction) {
            issues.push(ConfigIssue::new("query_fraction", "must be in (0, 1)"));
        }
        if self.query_count == Some(0) {
            issues.push(ConfigIssue::new("query_count", "must be > 0"));
        }
        if self.min_interactions < 2 {
            issues.push(ConfigIssue::new(
                "min_interactions",
                "must be >= 2 (a task needs support and query)",
            ));
        }
        if let Some(max) = self.max_interactions {
            if max < self.min_interactions.max(2) {
                issues.push(ConfigIssue::new(
                    "max_interactions",
                    "must be >= min_interactions",
                ));
            }
        }
        if let Some(count) = self.query_count {
            if count >= self.min_interactions && count > 0 {
                issues.push(ConfigIssue::new(
                    "query_count",
                    "must be < min_interactions so support is never empty",
                ));
            }
        }
        if !in_open_unit(self.train_fraction) {
            issues.push(ConfigIssue::new("train_fraction", "must be in (0, 1)"));
        }
        if !(self.validation_fraction >= 0.0 && self.validation_fraction < 1.0) {
            issues.push(ConfigIssue::new("validation_fraction", "must be in [0, 1)"));
        }
        if self.train_fraction + self.validation_fraction >= 1.0 {
            issues.push(ConfigIssue::new(
                "validation_fraction",
                "train_fraction + validation_fraction must be < 1 (the rest is test)",
            ));
        }
        if let Some(bounds) = &self.segments {
            if bounds.is_empty() {
                issues.push(ConfigIssue::new("segments", "must list at least one bound"));
            }
            if bounds.windows(2).any(|w| w[0] >= w[1]) {
                issues.push(ConfigIssue::new(
                    "segments",
                    "bounds must be strictly ascending",
                ));
            }
        }
        if let Some(f) = self.freshness_fraction {
            if !in_open_unit(f) {
                issues.push(ConfigIssue::new("freshness_fraction", "must be in (0, 1)"));
            }
        }
        match (&self.deployment_cuts, self.setting == EvalSetting::Deployment) {
            (None, true) => issues.push(ConfigIssue::new(
                "deployment_cuts",
                "setting = \"deployment\" needs cut points, e.g. deployment_cuts = [0.7, 0.8, 0.9]",
            )),
            (Some(_), false) => issues.push(ConfigIssue::new(
                "deployment_cuts",
                "only applies with setting = \"deployment\"",
            )),
            (Some(cuts), true) => {
                if cuts.len() < 2 {
                    issues.push(ConfigIssue::new(
                        "deployment_cuts",
                        "needs at least two cut points: a validation window and a test window",
                    ));
                }
                if !cuts.iter().all(|&c| in_open_unit(c)) {
                    issues.push(ConfigIssue::new("deployment_cuts", "every cut must be in (0, 1)"));
                }
                if cuts.windows(2).any(|w| w[0] >= w[1]) {
                    issues.push(ConfigIssue::new(
                        "deployment_cuts",
                        "cut points must be strictly ascending",
                    ));
                }
            }
            (None, false) => {}
        }
        if let Some(w) = self.deployment_retrain_window {
            if self.setting != EvalSetting::Deployment {
                issues.push(ConfigIssue::new(
                    "deployment_retrain_window",
                    "only applies with setting = \"deployment\"",
                ));
            } else if w < 2 || self.deployment_cuts.as_ref().is_some_and(|c| w as usize > c.len()) {
                issues.push(ConfigIssue::new(
                    "deployment_retrain_window",
                    "must name a test window: 2..=the number of cuts",
                ));
            }
        }
        match (self.prefix_rows, self.setting == EvalSetting::Prefix) {
            (None, true) => issues.push(ConfigIssue::new(
                "prefix_rows",
                "setting = \"prefix\" needs the support size, e.g. prefix_rows = 10",
            )),
            (Some(_), false) => {
                issues.push(ConfigIssue::new("prefix_rows", "only applies with setting = \"prefix\""))
            }
            (Some(0), true) => issues.push(ConfigIssue::new("prefix_rows", "must be at least 1")),
            _ => {}
        }
        issues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(DataConfig::default().validate().is_empty());
        assert!(SplitConfig::default().validate().is_empty());
    }

    #[test]
    fn empty_tables_deserialize_to_defaults() {
        let data: DataConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(data, DataConfig::default());
        let split: SplitConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(split, SplitConfig::default());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_str::<DataConfig>(r#"{"sorce": "csv"}"#).is_err());
        assert!(serde_json::from_str::<SplitConfig>(r#"{"synthetic": {"n_user": 3}}"#).is_err());
        assert!(serde_json::from_str::<DataConfig>(r#"{"synthetic": {"n_user": 3}}"#).is_err());
    }

    #[test]
    fn enums_use_lowercase_names() {
        let data: DataConfig =
            serde_json::from_str(r#"{"source": "movielens", "bad_rows": "drop"}"#).unwrap();
        assert_eq!(data.source, DataSource::Movielens);
        assert_eq!(data.bad_rows, BadRowPolicy::Drop);
        let split: SplitConfig = serde_json::from_str(
            r#"{"task_entity": "item", "split_by": "random", "setting": "cold"}"#,
        )
        .unwrap();
        assert_eq!(split.task_entity, TaskEntity::Item);
        assert_eq!(split.split_by, SplitBy::Random);
        assert_eq!(split.setting, EvalSetting::Cold);
    }

    #[test]
    fn issues_name_the_dotted_field() {
        let mut data = DataConfig::default();
        data.synthetic.n_users = 0;
        let fields: Vec<_> = data.validate().into_iter().map(|i| i.field).collect();
        assert_eq!(fields, vec!["synthetic.n_users"]);
    }

    #[test]
    fn train_plus_validation_must_leave_a_test_share() {
        let split = SplitConfig {
            train_fraction: 0.8,
            validation_fraction: 0.2,
            ..Default::default()
        };
        assert!(split
            .validate()
            .iter()
            .any(|i| i.field == "validation_fraction"));
    }

    #[test]
    fn fractions_outside_the_unit_interval_are_issues() {
        let split = SplitConfig {
            query_fraction: 1.0,
            freshness_fraction: Some(0.0),
            ..Default::default()
        };
        let fields: Vec<_> = split.validate().into_iter().map(|i| i.field).collect();
        assert!(fields.contains(&"query_fraction".to_string()));
        assert!(fields.contains(&"freshness_fraction".to_string()));
    }
}
