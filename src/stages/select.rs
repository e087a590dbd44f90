//! Stage `select`: picks among a method's search trials on their **validation** objective, and
//! the `train` stage that trains the winner. Reads nothing but its `trial` inputs' metrics, and
//! of those only the parameters, epochs and the validation objective ([`TrialRecord`]): a
//! trial stage scores validation tasks alone, so no test metric exists for it to read.
//!
//! Two uses: a successive-halving rung's promotion (`keep` = how many go on; the metrics list
//! the promoted parameters) and the final choice (the best trial of the last rung; the metrics
//! hold every trial and the winner, which the report carries as `search.<method>`). Ties go to
//! the earlier trial; a trial without the objective (e.g. AUC over one class) ranks last.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::train::Train;
use super::{Stage, StageContext, StageError, StageOutput};
use crate::spec::search::{self, TrialParams};

pub struct Select {
    pub strategy: search::Strategy,
    /// `validation.<metric>`, as written in the spec.
    pub objective: String,
    pub lower_is_better: bool,
    /// A promotion keeps this many trials; `None`: the final choice.
    pub keep: Option<usize>,
}

/// What selection reads of a trial stage's metrics: never more.
#[derive(Debug, Clone, Deserialize)]
struct TrialRecord {
    params: TrialParams,
    rung: usize,
    #[serde(default)]
    pruned: bool,
    #[serde(default)]
    epochs: usize,
    #[serde(default)]
    trained_epochs: usize,
    #[serde(default)]
    resumed_from: usize,
    #[serde(default)]
    objective: Option<f64>,
}

impl Select {
    fn better(&self, a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) if self.lower_is_better => a < b,
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// Indices of `records` from best to worst (stable: ties keep trial order).
    fn ranking(&self, records: &[(usize, TrialRecord)]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..records.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (records[a].1.objective, records[b].1.objective);
            if self.better(x, y) {
                std::cmp::Ordering::Less
            } else if self.better(y, x) {
                std::cmp::Ordering::Greater
            } else {
                records[a].0.cmp(&records[b].0)
            }
        });
        order
    }
}

/// "trial=3" or "trial=3/rung=1" -> 3.
fn trial_number(role: &str) -> Option<usize> {
    role.strip_prefix("trial=")?.split('/').next()?.parse().ok()
}

impl Stage for Select {
    fn kind(&self) -> &'static str {
        "select"
    }

    fn version(&self) -> u32 {
        1
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({
            "strategy": self.strategy,
            "objective": self.objective,
            "lower_is_better": self.lower_is_better,
            "keep": self.keep,
        })
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
        // trial number -> its record at each rung it reached
        let mut trials: BTreeMap<usize, Vec<TrialRecord>> = BTreeMap::new();
        for role in ctx.inputs.roles() {
            let Some(number) = trial_number(&role) else { continue };
            let record: TrialRecord = serde_json::from_value(ctx.inputs.metrics(&role)?)
                .map_err(|e| StageError::Failed(format!("input {role} is not a trial: {e}")))?;
            if !record.pruned {
                trials.entry(number).or_default().push(record);
            }
        }
        for records in trials.values_mut() {
            records.sort_by_key(|r| r.rung);
        }
        let Some(last_rung) = trials.values().filter_map(|r| r.last()).map(|r| r.rung).max() else {
            return Err(StageError::Failed("the search has no trial".into()));
        };
        // Candidates: the trials that reached the last rung, at it.
        let candidates: Vec<(usize, TrialRecord)> = trials
            .iter()
            .filter_map(|(&n, records)| records.last().filter(|r| r.rung == last_rung).map(|r| (n, r.clone())))
            .collect();
        let ranking = self.ranking(&candidates);
        if let Some(keep) = self.keep {
            let promoted: Vec<&TrialParams> = ranking.iter().take(keep).map(|&i| &candidates[i].1.params).collect();
            let numbers: Vec<usize> = ranking.iter().take(keep).map(|&i| candidates[i].0).collect();
            let metrics = serde_json::json!({ "rung": last_rung, "promoted": promoted, "trials": numbers });
            return Ok(StageOutput { metrics, ..Default::default() });
        }
        let (best_number, best) = &candidates[ranking[0]];
        let rows: Vec<serde_json::Value> = trials
            .iter()
            .map(|(n, records)| {
                let last = records.last().expect("a trial with a record");
                serde_json::json!({
                    "trial": n,
                    "params": last.params,
                    "objective": last.objective,
                    "epochs": last.epochs,
                    "trained_epochs": last.trained_epochs,
                    "rung": last.rung,
                    "rungs": records
                        .iter()
                        .map(|r| serde_json::json!({"epochs": r.epochs, "resumed_from": r.resumed_from, "objective": r.objective}))
                        .collect::<Vec<_>>(),
                    "best": n == best_number,
                })
            })
            .collect();
        let metrics = serde_json::json!({
            "strategy": self.strategy,
            "objective": self.objective,
            "direction": if self.lower_is_better { "min" } else { "max" },
            "count": trials.len(),
            "best": { "trial": best_number, "params": best.params, "objective": best.objective, "epochs": best.epochs },
            "trials": rows,
        });
        Ok(StageOutput { metrics, ..Default::default() })
    }
}

/// The `train` stage of a searched method: the spec's configuration with the parameters of the
/// search's winner (read from its `selection` input) applied, trained as any method is. Its
/// parameters hold the selection's key (so `compare` tells runs of different searches apart), and
/// a changed search trains it again.
pub struct TrainSelected {
    pub train: Train,
    pub selection_key: String,
}

impl Stage for TrainSelected {
    fn kind(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        self.train.version()
    }

    fn code(&self) -> &'static str {
        self.train.code()
    }

    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "selection": self.selection_key, "train": self.train.params() })
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
        let selection = ctx.inputs.metrics("selection")?;
        let params: TrialParams = selection
            .pointer("/best/params")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StageError::Failed(format!("the selection cannot be read: {e}")))?
            .ok_or_else(|| StageError::Failed("the selection names no best trial".into()))?;
        let method = search::apply(&self.train.method, &params).map_err(StageError::Failed)?;
        let train = Train { method, train: self.train.train.clone(), seed: self.train.seed, base_dir: self.train.base_dir.clone() };
        let mut output = train.run(ctx)?;
        if let Some(metrics) = output.metrics.as_object_mut() {
            metrics.insert("selected_params".into(), serde_json::to_value(&params).unwrap_or_default());
        }
        Ok(output)
    }
}
