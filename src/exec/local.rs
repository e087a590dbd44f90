//! The local executor: independent stages in parallel on a pool of `-j` worker threads.
//! Owns scheduling only: a stage becomes ready when its inputs are committed; a failure skips
//! its dependents; a stop request (Ctrl-C) lets running stages finish and commit. Must not
//! change what a stage computes: the order it starts ready stages in changes only when they end.
//!
//! Which ready stage starts when a worker frees: the one-thread stages first, in the order they
//! became ready, then the stages that spread over every core ([`Stage::uses_every_core`]).
//! Why: a run's last stage to end often runs alone. At a million users on two cores
//! (`-j 2`), five training stages of similar length ran in rounds of two, two and one, and the
//! last one (a one-thread baseline) ran alone for 2-4 minutes while a core idled
//! (bench/README.md). Started last, a stage that can use every core takes the idle one.
//!
//! [`Stage::uses_every_core`]: crate::stages::Stage::uses_every_core

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
                // One stage per free worker, so that the next choice is made when a worker
                // frees, among every stage ready by then.
                while !stop_dispatching && in_flight < started {
                    let Some(node) = ready.pop() else { break };
                    work_tx.send(node).expect("workers alive");
                    in_flight += 1;
                }
                if in_flight == 0 {
                    break;
                }
                let result = done_rx.recv().expect("a worker reports");
                in_flight -= 1;
                settled[result.node.index()] = true;
                match result.status {
                    StageStatus::Executed => {
                        for next in plan.dependents(result.node) {
                            if job.to_run[next.index()] {
                                waiting[next.index()] -= 1;
                                if waiting[next.index()] == 0 {
                                    ready.push(plan, next);
                                }
                            }
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

/// The stages ready to start, in the order they start (see the module docs): one-thread stages
/// first, then those that use every core, each in the order they became ready.
#[derive(Default)]
struct ReadyStages {
    one_thread: VecDeque<NodeIndex>,
    every_core: VecDeque<NodeIndex>,
}

impl ReadyStages {
    fn push(&mut self, plan: &Plan, node: NodeIndex) {
        if plan.node(node).stage.uses_every_core() {
            self.every_core.push_back(node);
        } else {
            self.one_thread.push_back(node);
        }
    }

    fn pop(&mut self) -> Option<NodeIndex> {
        self.one_thread.pop_front().or_else(|| self.every_core.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    use super::LocalExecutor;
    use crate::exec::progress::Progress;
    use crate::exec::{ExecutionJob, Executor};
    use crate::plan::PlanBuilder;
    use crate::stages::{Stage, StageContext, StageError, StageOutput};
    use crate::store::{LockWait, StageStatus, Store};

    /// A stage that writes its name in `started` when it runs.
    struct Recorded {
        name: &'static str,
        every_core: bool,
        started: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Stage for Recorded {
        fn kind(&self) -> &'static str {
            "test"
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
            self.started.lock().unwrap().push(self.name);
            Ok(StageOutput::default())
        }
    }

    #[test]
    fn a_stage_that_uses_every_core_starts_after_the_one_thread_stages_ready_with_it_and_after_them() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let stage = |name, every_core| Arc::new(Recorded { name, every_core, started: started.clone() });
        let mut builder = PlanBuilder::new();
        let root = builder.add("root".into(), stage("root", false), vec![]).unwrap();
        builder.add("parallel".into(), stage("parallel", true), vec![("in".into(), root)]).unwrap();
        let first = builder.add("first".into(), stage("first", false), vec![("in".into(), root)]).unwrap();
        builder.add("second".into(), stage("second", false), vec![("in".into(), root)]).unwrap();
        // Ready only once `first` has run, after `parallel` became ready.
        builder.add("after_first".into(), stage("after_first", false), vec![("in".into(), first)]).unwrap();
        let plan = builder.finish("order".into(), None).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockWait::NoWait, |_| {}).unwrap();
        let cancel = AtomicBool::new(false);
        let progress = Progress::new(plan.graph.node_count(), false, true);
        let job = ExecutionJob {
            plan: &plan,
            store: &store,
            to_run: vec![true; plan.graph.node_count()],
            run_id: "test",
            keep_going: false,
            cancel: &cancel,
            progress: &progress,
        };
        let results = LocalExecutor { jobs: 1 }.execute(&job);

        assert!(results.iter().all(|r| r.status == StageStatus::Executed));
        let started = started.lock().unwrap().clone();
        assert_eq!(started.len(), 5);
        assert_eq!(started[0], "root");
        assert_eq!(started[4], "parallel", "start order: {started:?}");
    }
}
