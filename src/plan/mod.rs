//! The plan: a spec compiled into a petgraph DAG of typed stages with content keys.
//! Owns graph construction (sharing identical stages across seeds, methods and sweep cells),
//! key computation and graph checks. Must not run stages or write the store.
//!
//! Per seed and sweep cell: `data` -> `tasks` -> `train/<method>` -> (`embeddings/<method>`
//! for limaml) -> `evaluate/<method>` -> one `report` over everything. Stages whose keys are equal
//! are one node: a sweep over a method parameter shares the data load and slicing.

pub mod key;
pub mod render;
pub mod search;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::spec::{Cell, LoadedSpec};
use crate::stages::{self, Stage};
use key::KeyComponents;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the plan has a cycle through: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("stage {stage} needs input '{role}', which no stage produces")]
    MissingInput { stage: String, role: String },
    /// The data sources cannot be read or hashed (exit code 2).
    #[error("{0}")]
    BadInput(String),
}

pub struct PlanNode {
    /// Unique, human name: `train/limaml/seed=1`, with sweep assignments when they reach it.
    pub name: String,
    pub stage: Arc<dyn Stage>,
    pub components: KeyComponents,
    pub key: String,
    /// Input role -> producing node, in the order the stage reads them.
    pub inputs: Vec<(String, NodeIndex)>,
}

impl PlanNode {
    pub fn short_key(&self) -> &str {
        &self.key[..12]
    }
}

pub struct Plan {
    pub experiment: String,
    /// Edges run from producer to consumer, weighted by the consumer's input role.
    pub graph: DiGraph<PlanNode, String>,
    /// The `report` node, whose metrics are the run summary.
    pub report: Option<NodeIndex>,
}

impl Plan {
    pub fn node(&self, index: NodeIndex) -> &PlanNode {
        &self.graph[index]
    }

    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.graph.node_indices().find(|&i| self.graph[i].name == name)
    }

    /// Nodes in an order where every input comes before its consumers.
    pub fn topological_order(&self) -> Result<Vec<NodeIndex>, PlanError> {
        self.check_acyclic()?;
        petgraph::algo::toposort(&self.graph, None)
            .map_err(|cycle| PlanError::Cycle(vec![self.graph[cycle.node_id()].name.clone()]))
    }

    /// Reports every stage on a cycle (toposort names only one), via strongly connected components.
    pub fn check_acyclic(&self) -> Result<(), PlanError> {
        for component in petgraph::algo::tarjan_scc(&self.graph) {
            let self_loop = component.len() == 1 && self.graph.contains_edge(component[0], component[0]);
            if component.len() > 1 || self_loop {
                let mut names: Vec<String> = component.iter().map(|&i| self.graph[i].name.clone()).collect();
                names.sort();
                return Err(PlanError::Cycle(names));
            }
        }
        Ok(())
    }

    pub fn dependents(&self, index: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(index, Direction::Outgoing)
    }

    /// Every node downstream of `index`.
    pub fn descendants(&self, index: NodeIndex) -> Vec<NodeIndex> {
        let mut seen = vec![false; self.graph.node_count()];
        let mut stack = vec![index];
        let mut out = Vec::new();
        while let Some(node) = stack.pop() {
            for next in self.dependents(node) {
                if !seen[next.index()] {
                    seen[next.index()] = true;
                    out.push(next);
                    stack.push(next);
                }
            }
        }
        out
    }
}

/// Adds stages, computing keys and merging stages whose keys are equal.
pub struct PlanBuilder {
    graph: DiGraph<PlanNode, String>,
    by_key: HashMap<String, NodeIndex>,
    names: HashMap<String, NodeIndex>,
}

impl Default for PlanBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PlanBuilder {
    pub fn new() -> Self {
        PlanBuilder { graph: DiGraph::new(), by_key: HashMap::new(), names: HashMap::new() }
    }

    /// Adds a stage; an identical stage (same key) already present is returned instead.
    pub fn add(
        &mut self,
        name: String,
        stage: Arc<dyn Stage>,
        inputs: Vec<(String, NodeIndex)>,
    ) -> Result<NodeIndex, PlanError> {
        let components = KeyComponents {
            kind: stage.kind().to_string(),
            version: stage.version(),
            code: stage.code().to_string(),
            params: stage.params(),
            seed: stage.seed(),
            inputs: inputs.iter().map(|(role, i)| (role.clone(), self.graph[*i].key.clone())).collect(),
            source_digest: stage.source_digest().map_err(|e| PlanError::BadInput(e.to_string()))?,
        };
        let key = components.key();
        if let Some(&existing) = self.by_key.get(&key) {
            return Ok(existing);
        }
        let mut unique_name = name.clone();
        let mut n = 2;
        while self.names.contains_key(&unique_name) {
            unique_name = format!("{name}#{n}");
            n += 1;
        }
        let index = self.graph.add_node(PlanNode {
            name: unique_name.clone(),
            stage,
            components,
            key: key.clone(),
            inputs: inputs.clone(),
        });
        for (role, input) in inputs {
            self.graph.add_edge(input, index, role);
        }
        self.by_key.insert(key, index);
        self.names.insert(unique_name, index);
        Ok(index)
    }

    /// The key of a stage already added.
    pub fn key_of(&self, index: NodeIndex) -> &str {
        &self.graph[index].key
    }

    /// Adds an edge by hand (tests use this to build bad graphs).
    pub fn connect(&mut self, from: NodeIndex, to: NodeIndex, role: &str) {
        self.graph.add_edge(from, to, role.to_string());
    }

    pub fn finish(self, experiment: String, report: Option<NodeIndex>) -> Result<Plan, PlanError> {
        let plan = Plan { experiment, graph: self.graph, report };
        plan.check_acyclic()?;
        for index in plan.graph.node_indices() {
            let node = &plan.graph[index];
            for (role, input) in &node.inputs {
                if input.index() >= plan.graph.node_count() {
                    return Err(PlanError::MissingInput { stage: node.name.clone(), role: role.clone() });
                }
            }
        }
        Ok(plan)
    }
}

/// Compiles a loaded spec into its plan.
pub fn build(spec: &LoadedSpec) -> Result<Plan, PlanError> {
    let mut builder = PlanBuilder::new();
    let mut evaluations: Vec<(String, NodeIndex)> = Vec::new();
    let first = &spec.cells[0].spec;
    for cell in &spec.cells {
        add_cell(&mut builder, cell, &spec.base_dir, &mut evaluations)?;
    }
    // Stages a sweep cell does not reach are shared, so the same evaluation can come back.
    let mut seen = std::collections::HashSet::new();
    evaluations.retain(|(role, _)| seen.insert(role.clone()));
    let report_stage = Arc::new(stages::report::Report::new(&first.report, &evaluations));
    let inputs: Vec<(String, NodeIndex)> = evaluations.clone();
    let report = builder.add("report".to_string(), report_stage, inputs)?;
    builder.finish(first.experiment.name.clone(), Some(report))
}

fn add_cell(
    builder: &mut PlanBuilder,
    cell: &Cell,
    base_dir: &Path,
    evaluations: &mut Vec<(String, NodeIndex)>,
) -> Result<(), PlanError> {
    let spec = &cell.spec;
    let bracket = |sections: &[&str]| {
        let sections: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
        let label = cell.label_for(&sections);
        if label.is_empty() {
            String::new()
        } else {
            format!("[{label}]")
        }
    };
    let data_stage = Arc::new(stages::load_data::LoadData::new(spec.data.clone(), base_dir));
    let data = builder.add(format!("data{}", bracket(&["data"])), data_stage, vec![])?;
    let has_oracle = matches!(spec.data.source, limaml_data::config::DataSource::Synthetic);
    // Searched methods: their trials, and the selection each seed's `train` stage reads.
    let selections = search::add_searches(builder, cell, base_dir, data, &bracket)?;
    for &seed in &spec.experiment.seeds {
        let slice_stage = Arc::new(stages::slice_tasks::SliceTasks { split: spec.split.clone(), seed });
        let tasks = builder.add(
            format!("tasks{}/seed={seed}", bracket(&["data", "split"])),
            slice_stage,
            vec![("dataset".into(), data)],
        )?;
        let base_inputs = vec![("dataset".to_string(), data), ("tasks".to_string(), tasks)];
        for (method_name, method) in &spec.methods {
            let label =
                format!("{method_name}{}", bracket(&["data", "split", "train", &format!("methods.{method_name}")]));
            let train_stage =
                stages::train::Train {
                    method: method.clone(),
                    train: spec.train.clone(),
                    seed,
                    base_dir: base_dir.to_path_buf(),
                };
            let model = match selections.get(method_name) {
                None => builder.add(format!("train/{label}/seed={seed}"), Arc::new(train_stage), base_inputs.clone())?,
                Some(&selection) => {
                    evaluations.push((format!("search:{label}"), selection));
                    let mut inputs = base_inputs.clone();
                    inputs.push(("selection".into(), selection));
                    let selection_key = builder.key_of(selection).to_string();
                    let stage = Arc::new(stages::select::TrainSelected { train: train_stage, selection_key });
                    builder.add(format!("train/{label}/seed={seed}"), stage, inputs)?
                }
            };
            let mut eval_inputs = base_inputs.clone();
            eval_inputs.push(("model".into(), model));
            // Under the deployment protocol an entity has a task per window, each adapted on the
            // history before its window's start: evaluate regenerates those embeddings itself,
            // so there is no one-per-entity export to look up.
            let deployment = spec.split.setting == limaml_data::EvalSetting::Deployment;
            if stages::export_embeddings::applies_to(method) && !deployment {
                let mut variants = vec![stages::export_embeddings::SupportVersion::Latest];
                if spec.report.freshness {
                    variants.push(stages::export_embeddings::SupportVersion::Stale);
                    variants.push(stages::export_embeddings::SupportVersion::Recent);
                }
                for support in variants {
                    let suffix = support.suffix();
                    let export = builder.add(
                        format!("embeddings/{label}{suffix}/seed={seed}"),
                        Arc::new(stages::export_embeddings::ExportEmbeddings { support }),
                        eval_inputs.clone(),
                    )?;
                    let mut inputs = eval_inputs.clone();
                    inputs.push(("embeddings".into(), export));
                    if spec.report.serving_cost && support == stages::export_embeddings::SupportVersion::Latest {
                        builder.add(
                            format!("serving/{label}/seed={seed}"),
                            Arc::new(stages::serving_cost::ServingCost),
                            inputs.clone(),
                        )?;
                    }
                    let name = format!("evaluate/{label}{suffix}/seed={seed}");
                    let evaluate =
                        builder.add(name.clone(), Arc::new(stages::evaluate::Evaluate::new(spec.report.eval_config())), inputs)?;
                    evaluations.push((format!("{label}{suffix}|{seed}"), evaluate));
                }
            } else {
                let name = format!("evaluate/{label}/seed={seed}");
                let evaluate = builder.add(name, Arc::new(stages::evaluate::Evaluate::new(spec.report.eval_config())), eval_inputs)?;
                evaluations.push((format!("{label}|{seed}"), evaluate));
            }
        }
        if has_oracle {
            let name = format!("evaluate/oracle{}/seed={seed}", bracket(&["data", "split"]));
            let oracle = builder.add(name, Arc::new(stages::evaluate::Evaluate::oracle(spec.report.eval_config())), base_inputs.clone())?;
            evaluations.push((format!("oracle{}|{seed}", bracket(&["data", "split"])), oracle));
        }
    }
    Ok(())
}

/// Which stage names exist, for "did you mean" on `limaml why`.
pub fn stage_names(plan: &Plan) -> BTreeMap<String, NodeIndex> {
    plan.graph.node_indices().map(|i| (plan.graph[i].name.clone(), i)).collect()
}
