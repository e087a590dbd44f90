//! The local executor: independent stages in parallel on a pool of `-j` worker threads.
//! Owns scheduling only: a stage becomes ready when its inputs are committed; a failure skips
//! its dependents; a stop request (Ctrl-C) lets running stages finish and commit.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Mutex;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::{run_stage, ExecutionJob, Executor, StageResult};
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
        let mut ready = VecDeque::new();
        for index in plan.graph.node_indices() {
            if !job.to_run[index.index()] {
                continue;
            }
            waiting[index.index()] =
                plan.graph.neighbors_directed(index, Direction::Incoming).filter(|i| job.to_run[i.index()]).count();
            if waiting[index.index()] == 0 {
                ready.push_back(index);
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
                    while let Some(node) = ready.pop_front() {
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
                        for next in plan.dependents(result.node) {
                            if job.to_run[next.index()] {
                                waiting[next.index()] -= 1;
                                if waiting[next.index()] == 0 {
                                    ready.push_back(next);
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
