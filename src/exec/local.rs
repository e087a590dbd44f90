//! The local executor: independent stages in parallel on a pool of `-j` worker threads.
//! Owns scheduling only: a stage becomes ready when its inputs are committed; a free worker
//! takes the oldest ready single-threaded stage, and a stage that uses every core only when no
//! single-threaded one is ready ([`ReadyStages`]); a failure skips its dependents; a stop
//! request (Ctrl-C) lets running stages finish and commit.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Mutex;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::{run_stage, ExecutionJob, Executor, StageResult};
use crate::plan::Plan;
use crate::store::StageStatus;

pub struct LocalExecutor {
    pub jobs: usize,
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn execute(&self, job: &ExecutionJob<'_>) -> Vec<StageResult> {
        let plan = job.plan;
        let count = plan.graph.node_count();
        // Inputs still to be produced, per stage that must run.
        let mut waiting: Vec<usize> = vec![0; count];
        let mut ready = ReadyStages::default();
        for index in plan.graph.node_indices() {
            if !job.to_run[index.index()] {
                continue;
            }
            waiting[index.index()] =
                plan.graph.neighbors_directed(index, Direction::Incoming).filter(|i| job.to_run[i.index()]).count();
            if waiting[index.index()] == 0 {
                ready.push(plan, index);
            }
        }
        let total = job.to_run.iter().filter(|&&r| r).count();
        let mut results: Vec<StageResult> = Vec::new();
        let mut settled = vec![false; count];
        let mut stop_dispatching = false;
        let (work_tx, work_rx) = mpsc::channel::<NodeIndex>();
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<StageResult>();
        let mut no_worker: Option<String> = None;
        std::thread::scope(|scope| {
            // A worker that cannot start (thread limit, memory) leaves fewer workers, not a panic.
            let mut started = 0usize;
            for worker in 0..self.jobs.max(1) {
                let work_rx = &work_rx;
                let done_tx = done_tx.clone();
                let spawned = std::thread::Builder::new().name(format!("limaml-worker-{worker}")).spawn_scoped(
                    scope,
                    move || loop {
                        let next = work_rx.lock().expect("work queue lock").recv();
                        let Ok(node) = next else { break };
                        let result = run_stage(job, node);
                        if done_tx.send(result).is_err() {
                            break;
                        }
                    },
                );
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => {
                        tracing::warn!("started {started} of {} worker threads: {e}", self.jobs);
                        if started == 0 {
                            no_worker = Some(format!("cannot start a worker thread: {e}"));
                        }
                        break;
                    }
                }
            }
            drop(done_tx);
            if no_worker.is_some() {
                return;
            }
            let mut in_flight = 0usize;
            loop {
                if job.cancel.load(Ordering::Relaxed) {
                    stop_dispatching = true;
                }
                if !stop_dispatching {
                    // Only as many as there are workers: the choice is made when one is free.
                    while in_flight < started {
                        let Some(node) = ready.pop() else { break };
                        work_tx.send(node).expect("workers alive");
                        in_flight += 1;
                    }
                }
                if in_flight == 0 {
                    break;
                }
                let result = done_rx.recv().expect("a worker reports");
                in_flight -= 1;
                settled[result.node.index()] = true;
                match result.status {
                    StageStatus::Executed => {
                        let mut now_ready = Vec::new();
                        for next in plan.dependents(result.node) {
                            if job.to_run[next.index()] {
                                waiting[next.index()] -= 1;
                                if waiting[next.index()] == 0 {
                                    now_ready.push(next);
                                }
                            }
                        }
                        // Ready together: in plan order (petgraph lists dependents newest first).
                        now_ready.sort();
                        for next in now_ready {
                            ready.push(plan, next);
                        }
                    }
                    _ => {
                        for downstream in plan.descendants(result.node) {
                            if job.to_run[downstream.index()] && !settled[downstream.index()] {
                                settled[downstream.index()] = true;
                                results.push(StageResult::skipped(
                                    downstream,
                                    format!("upstream {} failed", plan.node(result.node).name),
                                ));
                            }
                        }
                        if !job.keep_going {
                            stop_dispatching = true;
                        }
                    }
                }
                results.push(result);
                if results.len() >= total {
                    break;
                }
            }
            drop(work_tx);
        });
        for index in plan.graph.node_indices() {
            if job.to_run[index.index()] && !settled[index.index()] {
                if let Some(reason) = &no_worker {
                    let mut failed = StageResult::skipped(index, reason.clone());
                    failed.status = StageStatus::Failed;
                    results.push(failed);
                    continue;
                }
                let reason =
                    if job.cancel.load(Ordering::Relaxed) { "run stopped" } else { "run stopped after a failure" };
                results.push(StageResult::skipped(index, reason.to_string()));
            }
        }
        results
    }
}

/// The stages whose inputs are committed, waiting for a worker. Single-threaded stages go first,
/// oldest first (stages ready at the same time in plan order); a stage that uses every core ([`Stage::uses_every_core`]) goes only when none
/// is ready. Started last, such a stage fills the cores the others leave idle at the end of a
/// run, where a single-threaded stage started last would run alone on one core (at 1M synthetic
/// users, global's last 100 s; bench/README.md). The order changes wall time, never results.
///
/// [`Stage::uses_every_core`]: crate::stages::Stage::uses_every_core
#[derive(Default)]
struct ReadyStages {
    single_threaded: VecDeque<NodeIndex>,
    every_core: VecDeque<NodeIndex>,
}

impl ReadyStages {
    fn push(&mut self, plan: &Plan, node: NodeIndex) {
        if plan.node(node).stage.uses_every_core() {
            self.every_core.push_back(node);
        } else {
            self.single_threaded.push_back(node);
        }
    }

    fn pop(&mut self) -> Option<NodeIndex> {
        self.single_threaded.pop_front().or_else(|| self.every_core.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::exec::Progress;
    use crate::plan::PlanBuilder;
    use crate::stages::{Stage, StageContext, StageError, StageOutput};
    use crate::store::{LockWait, Store};

    /// A stage that records its name when it runs.
    struct Logged {
        name: &'static str,
        every_core: bool,
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Stage for Logged {
        fn kind(&self) -> &'static str {
            "logged"
        }
        fn version(&self) -> u32 {
            1
        }
        fn params(&self) -> serde_json::Value {
            serde_json::json!({ "name": self.name })
        }
        fn uses_every_core(&self) -> bool {
            self.every_core
        }
        fn run(&self, _: &StageContext<'_>) -> Result<StageOutput, StageError> {
            self.log.lock().unwrap().push(self.name);
            Ok(StageOutput::default())
        }
    }

    /// The order one worker runs `stages` in; each is `(name, uses every core, inputs)`.
    fn order_on_one_worker(stages: &[(&'static str, bool, &[&'static str])]) -> Vec<&'static str> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut builder = PlanBuilder::new();
        let mut added = std::collections::HashMap::new();
        for &(name, every_core, inputs) in stages {
            let inputs = inputs.iter().map(|i| (i.to_string(), added[i])).collect();
            let stage = Arc::new(Logged { name, every_core, log: log.clone() });
            added.insert(name, builder.add(name.to_string(), stage, inputs).unwrap());
        }
        let plan = builder.finish("order".into(), None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockWait::NoWait, |_| {}).unwrap();
        let cancel = AtomicBool::new(false);
        let progress = Progress::new(stages.len(), false, true);
        let job = ExecutionJob {
            plan: &plan,
            store: &store,
            to_run: vec![true; stages.len()],
            run_id: "test",
            keep_going: false,
            cancel: &cancel,
            progress: &progress,
        };
        let results = LocalExecutor { jobs: 1 }.execute(&job);
        assert!(results.iter().all(|r| r.status == StageStatus::Executed));
        let order = log.lock().unwrap().clone();
        order
    }

    #[test]
    fn a_stage_that_uses_every_core_starts_after_the_ready_single_threaded_ones() {
        let order = order_on_one_worker(&[
            ("data", false, &[]),
            ("limaml", true, &["data"]),
            ("global", false, &["data"]),
            ("wide_deep", false, &["data"]),
        ]);
        assert_eq!(order, vec!["data", "global", "wide_deep", "limaml"]);
    }

    #[test]
    fn a_single_threaded_stage_ready_later_still_goes_before_a_waiting_every_core_stage() {
        let order = order_on_one_worker(&[
            ("data", false, &[]),
            ("limaml", true, &["data"]),
            ("global", false, &["data"]),
            ("evaluate_global", false, &["global"]),
        ]);
        assert_eq!(order, vec!["data", "global", "evaluate_global", "limaml"]);
    }

    #[test]
    fn ready_single_threaded_stages_start_oldest_first() {
        let order = order_on_one_worker(&[
            ("data", false, &[]),
            ("a", false, &["data"]),
            ("b", false, &["data"]),
            ("after_a", false, &["a"]),
        ]);
        // b was ready before after_a.
        assert_eq!(order[..2], ["data", "a"]);
        assert_eq!(order[2..], ["b", "after_a"]);
    }
}
