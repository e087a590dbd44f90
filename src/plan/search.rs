//! A `[search]` compiled into stages: per searched method, its trials (`trial/<method>/t=NN`,
//! one per rung under halving, each rung after the first gated by the rung before's
//! `select/<method>/rung=K`) and the final `select/<method>`, whose winner the method's
//! ordinary `train` stages (one per experiment seed) then train. Trials train on the search
//! seed's tasks. Owns that wiring only; must not run stages.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use petgraph::graph::NodeIndex;

use super::{PlanBuilder, PlanError};
use crate::spec::search::{self, Strategy};
use crate::spec::Cell;
use crate::stages;

/// Adds the search stages of every searched method of `cell`; returns method name -> its final
/// `select` node. `bracket` gives a stage's sweep label for the sections that reach it.
pub fn add_searches(
    builder: &mut PlanBuilder,
    cell: &Cell,
    base_dir: &Path,
    data: NodeIndex,
    bracket: &dyn Fn(&[&str]) -> String,
) -> Result<BTreeMap<String, NodeIndex>, PlanError> {
    let spec = &cell.spec;
    let Some(config) = &spec.search else { return Ok(BTreeMap::new()) };
    let seed = config.seed.unwrap_or(spec.experiment.seeds[0]);
    let slice_stage = Arc::new(stages::slice_tasks::SliceTasks { split: spec.split.clone(), seed });
    let tasks = builder.add(
        format!("tasks{}/seed={seed}", bracket(&["data", "split"])),
        slice_stage,
        vec![("dataset".into(), data)],
    )?;
    let base_inputs = vec![("dataset".to_string(), data), ("tasks".to_string(), tasks)];
    let eval = limaml_models::EvalConfig { catalogue: false, ..spec.report.eval_config() };
    let mut selections = BTreeMap::new();
    for (method_name, method) in &spec.methods {
        if config.space_for(method_name).is_empty() {
            continue;
        }
        let label = format!(
            "{method_name}{}",
            bracket(&["data", "split", "train", "search", &format!("methods.{method_name}")])
        );
        let trials = config.sample(method_name, seed);
        let rungs = match config.strategy {
            Strategy::Random => vec![search::Rung { trials: trials.len(), epochs: spec.train.epochs }],
            Strategy::Halving => search::halving_rungs(trials.len(), spec.train.epochs, config.eta),
        };
        let select = |keep: Option<usize>| {
            Arc::new(stages::select::Select {
                strategy: config.strategy,
                objective: config.objective.clone(),
                lower_is_better: config.lower_is_better(),
                keep,
            })
        };
        let mut previous: Vec<NodeIndex> = Vec::new();
        let mut promotion: Option<NodeIndex> = None;
        let mut every_rung: Vec<(String, NodeIndex)> = Vec::new();
        for (k, rung) in rungs.iter().enumerate() {
            let mut this_rung = Vec::new();
            for (i, params) in trials.iter().enumerate() {
                let applied = search::apply(method, params).map_err(|e| {
                    PlanError::BadInput(format!("search trial {i} of {method_name}: {e}"))
                })?;
                let train = stages::train::Train {
                    method: applied,
                    train: limaml_models::config::TrainConfig { epochs: rung.epochs, ..spec.train.clone() },
                    seed,
                    base_dir: base_dir.to_path_buf(),
                };
                let stage = Arc::new(stages::trial::Trial {
                    train,
                    params: params.clone(),
                    rung: k,
                    eval: eval.clone(),
                    objective: config.objective_metric().to_string(),
                });
                let mut inputs = base_inputs.clone();
                if let Some(gate) = promotion {
                    inputs.push(("previous".into(), previous[i]));
                    inputs.push(("promotion".into(), gate));
                }
                let budget = if rungs.len() > 1 { format!("/epochs={}", rung.epochs) } else { String::new() };
                let name = format!("trial/{label}/t={i:02}{budget}/seed={seed}");
                let node = builder.add(name, stage, inputs)?;
                let role = if rungs.len() > 1 { format!("trial={i}/rung={k}") } else { format!("trial={i}") };
                this_rung.push((format!("trial={i}"), node));
                every_rung.push((role, node));
            }
            if let Some(next) = rungs.get(k + 1) {
                let gate = builder.add(format!("select/{label}/rung={k}"), select(Some(next.trials)), this_rung.clone())?;
                promotion = Some(gate);
            }
            previous = this_rung.into_iter().map(|(_, node)| node).collect();
        }
        let selection = builder.add(format!("select/{label}"), select(None), every_rung)?;
        selections.insert(method_name.clone(), selection);
    }
    Ok(selections)
}
