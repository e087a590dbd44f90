//! The data contract between `limaml-data` and its consumers (`limaml-models`, the stage glue).
//!
//! Owns the plain, serializable shapes of a loaded [`Dataset`] and of a sliced [`TaskSet`].
//! Must not hold behaviour beyond trivial accessors: loaders, the generator and the slicer
//! produce these; models read them. Changing a field here changes both sides.

use serde::{Deserialize, Serialize};

/// A loaded, vocabulary-encoded data set: entities with raw features, and the interaction log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Human name of the source ("synthetic", "movielens-100k", a file name).
    pub name: String,
    pub users: EntityTable,
    pub items: EntityTable,
    pub interactions: Interactions,
    /// Rows dropped by a `bad_rows = "drop"` policy (0 under the default "error" policy).
    pub dropped_rows: usize,
}

/// One side of the interaction log (users or items): ids and raw (unstandardized) features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityTable {
    /// Number of entities; entity index `e` is `0..count`.
    pub count: usize,
    /// The source's id for each entity index (e.g. MovieLens user id "196").
    pub raw_ids: Vec<String>,
    pub categorical: Vec<CategoricalField>,
    pub multi_hot: Vec<MultiHotField>,
    pub numeric: Vec<NumericField>,
}

/// A single-valued categorical feature. Vocabulary index 0 is always the "unknown" bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalField {
    pub name: String,
    /// `vocabulary[0] == "<unknown>"`.
    pub vocabulary: Vec<String>,
    /// One code per entity, an index into `vocabulary`.
    pub values: Vec<u32>,
}

/// A multi-valued categorical feature (e.g. movie genres).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiHotField {
    pub name: String,
    pub vocabulary: Vec<String>,
    /// For each entity, the vocabulary indices that are set.
    pub values: Vec<Vec<u32>>,
}

/// A numeric feature, raw. Standardization happens at slicing time with training statistics only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericField {
    pub name: String,
    pub values: Vec<f32>,
}

/// The interaction log, column-oriented. Row `r` is (`user[r]`, `item[r]`, `label[r]`, `timestamp[r]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interactions {
    pub user: Vec<u32>,
    pub item: Vec<u32>,
    /// 1.0 = click / positive, 0.0 = negative.
    pub label: Vec<f32>,
    /// Seconds (any epoch); only the order matters.
    pub timestamp: Vec<i64>,
    /// The true click probability, known only for synthetic data (the oracle row).
    pub true_probability: Option<Vec<f32>>,
}

impl Interactions {
    pub fn len(&self) -> usize {
        self.label.len()
    }
    pub fn is_empty(&self) -> bool {
        self.label.is_empty()
    }
}

/// Which entity a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskEntity {
    User,
    Item,
}

/// What a task is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskRole {
    /// Meta-training: support for the inner loop, query for the outer loop.
    MetaTrain,
    /// Early stopping: adapt on support, score query.
    Validation,
    /// Final evaluation: adapt on support, score query.
    Test,
}

/// Whether the task's entity has interactions in meta-training (warm) or is unseen (cold start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityState {
    Warm,
    Cold,
    /// Deployment protocol: the entity has interactions before the first cut (training data).
    Known,
    /// Deployment protocol: the entity's first interaction is after the first cut.
    New,
}

/// One entity's interactions, split into a support set and a query set (row indices into
/// [`Interactions`]). Under a time split every query row is later than every support row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Entity index (a user index, or an item index when `TaskSet::entity == Item`).
    pub entity: u32,
    pub role: TaskRole,
    pub state: EntityState,
    /// Index into `TaskSet::segments` (activity segment, by the entity's interaction count).
    pub segment: u8,
    /// The entity's total interaction count (after filters), which decides its segment.
    pub n_interactions: u32,
    pub support: Vec<u32>,
    pub query: Vec<u32>,
    /// For the freshness ablation: the support rows as of an earlier cut-off (a subset of
    /// `support`), present when the spec asks for a freshness split.
    pub stale_support: Option<Vec<u32>>,
    /// Deployment protocol: the time window the query rows fall in (1 = validation).
    #[serde(default)]
    pub window: Option<u32>,
}

/// Dense, model-ready feature rows: categorical fields one-hot (unknown bucket included),
/// numeric fields standardized with statistics of meta-training entities only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureTables {
    pub n_users: usize,
    pub n_items: usize,
    /// Row-major `n_users x user_dim`.
    pub user_features: Vec<f32>,
    pub user_dim: usize,
    /// Row-major `n_items x item_dim`.
    pub item_features: Vec<f32>,
    pub item_dim: usize,
    /// Per item, its tags (genres / synthetic categories) as indices `< n_tags`, for cross features.
    pub item_tags: Vec<Vec<u32>>,
    pub n_tags: usize,
    /// Names of the columns of `user_features` and `item_features`, for reports.
    pub user_columns: Vec<String>,
    pub item_columns: Vec<String>,
}

/// The sliced data set: tasks with support/query sets, segments, and the encoded features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSet {
    pub entity: TaskEntity,
    pub tasks: Vec<Task>,
    /// Segment names, lowest activity first (default "low", "mid", "high").
    pub segments: Vec<String>,
    /// Upper bounds (inclusive) of interaction counts per segment, except the last.
    pub segment_bounds: Vec<u32>,
    pub features: FeatureTables,
    /// Rows (indices into `Interactions`) a non-meta baseline may train on: every meta-train
    /// task's rows plus the support rows of validation and test tasks. Same data for all methods.
    pub baseline_train_rows: Vec<u32>,
    /// Evaluation entities left out because their history is too short for the setting
    /// (`prefix`: no more than `prefix_rows` interactions).
    #[serde(default)]
    pub skipped_entities: usize,
}
