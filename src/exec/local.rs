//! The local executor: independent stages in parallel on a pool of `-j` worker threads.
//! Owns scheduling only: a stage becomes ready when its inputs are committed; a failure skips
//! its dependents; a stop request (Ctrl-C) lets running stages finish and commit. Must not
//! change what a stage computes: the order it starts ready stages in changes only when they end.
//!
//! Which ready stage starts when a worker frees: the stages that train a model
//! ([`Stage::trains`]) before the short ones (evaluations, exports, reports), and among those
//! that train, the one-thread stages before those that spread over every core
//! ([`Stage::uses_every_core`]); each group in the order its stages became ready, except that
//! among the short stages the one with the longest chain of stages after it goes first.
//!
//! Why training first: a run's length is set by its chain of long stages; a short stage started
//! ahead of one delays the run's end by its own length, while started later it fits where a
//! worker would otherwise wait. At a million users on two cores (`-j 2`, bench/README.md,
//! seventeenth pass), LiMAML's training, the head of the run's longest chain (training, then
//! its embeddings, its evaluation, the report), waited 28 s for three evaluations that became
//! ready with it, and the run ended with one core idle while it trained alone.
//!
//! Why every-core stages last among those that train: a run's last stage to end often runs
//! alone. At a million users on two cores, five training stages of similar length ran in
//! rounds of two, two and one, and the last one (a one-thread baseline) ran alone for 2-4
//! minutes while a core idled (bench/README.md). Started last, a stage that can use every core
//! takes the idle one. The sixth pass tried this order on another host and reverted it (one run
//! each way, within that host's noise); the fifteenth measured it again in alternating runs
//! (bench/README.md). Where it would cost (reasoned, not measured): a stage that uses every core
//! and is also by far the longest starts late, with fewer one-thread stages left to share the
//! cores with.
//!
//! Why the short stage with the longest chain after it first: the run ends with a chain of
//! short stages (LiMAML's export, its evaluation, the report), and its head became ready while
//! the baselines' evaluations, each with only the report after it, still queued. At a million
//! users the export waited 4-6 s for one of them (bench/README.md, nineteenth pass).
//!
//! Which worker a stage goes to: the one freed last. Its allocator's freed memory and its
//! caches are warm; a worker idle for a while has had its freed memory handed back to the
//! kernel, and what it allocates comes back as fresh pages to zero. At a million users the
//! report, run on the worker that had idled since its last evaluation a minute before, spent
//! half its 5-6 s zeroing pages; re-run on the worker of the evaluation before it, 3.2 s
//! (bench/README.md, nineteenth pass).
//!
//! How many stages run side by side is told to the models as they start and end
//! (`limaml_models::pool::set_jobs_running`): a stage's fine-grained parallel steps spread over
//! every core only while a core is free (see `limaml_models::pool`).
//!
//! What a run keeps: the values its stages decode through `StageContext::decode_shared` stay
//! alive ([`KeptValues`]) while a stage that reads their producer runs, and through the moment
//! one such stage ends and the next starts, so a chain of stages that read the same data set
//! one after another (`embeddings`, then `evaluate`) decodes it once. A value whose readers are
//! all waiting for a worker goes, as before: keeping it until they start could hold every
//! seed's task set at once.
//!
//! [`Stage::trains`]: crate::stages::Stage::trains
//! [`Stage::uses_every_core`]: crate::stages::Stage::uses_every_core

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use petgraph::graph::NodeIndex;
use petgraph::Direction;

use super::{run_stage, ExecutionJob, Executor, StageResult};
use crate::plan::Plan;
use crate::stages::shared::KeptValues;
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
        let mut ready = ReadyStages { stages_after: stages_after(job), ..ReadyStages::default() };
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
        // Each worker has its own queue; `idle` holds the free ones, the last freed on top.
        let mut work_queues: Vec<mpsc::Sender<NodeIndex>> = Vec::new();
        let mut idle: Vec<usize> = Vec::new();
        let (done_tx, done_rx) = mpsc::channel::<(usize, StageResult)>();
        let mut no_worker: Option<String> = None;
        let kept = KeptValues::default();
        std::thread::scope(|scope| {
            // A worker that cannot start (thread limit, memory) leaves fewer workers, not a panic.
            let mut started = 0usize;
            for worker in 0..self.jobs.max(1) {
                let (work_tx, work_rx) = mpsc::channel::<NodeIndex>();
                let kept = &kept;
                let done_tx = done_tx.clone();
                let spawned = std::thread::Builder::new().name(format!("limaml-worker-{worker}")).spawn_scoped(
                    scope,
                    move || {
                        while let Ok(node) = work_rx.recv() {
                            let result = run_stage(job, node, Some(kept));
                            if done_tx.send((worker, result)).is_err() {
                                break;
                            }
                        }
                    },
                );
                match spawned {
                    Ok(_) => {
                        started += 1;
                        work_queues.push(work_tx);
                    }
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
            idle.extend((0..started).rev());
            let mut in_flight = 0usize;
            // Running stages, and the producers whose kept values may go once none of their
            // readers runs (checked after each round of starts, so a reader started as the
            // last one ends keeps them).
            let mut running = vec![false; count];
            let mut to_release: Vec<NodeIndex> = Vec::new();
            loop {
                if job.cancel.load(Ordering::Relaxed) {
                    stop_dispatching = true;
                }
                // One stage per free worker, so that the next choice is made when a worker
                // frees, among every stage ready by then.
                let mut starting = Vec::new();
                while !stop_dispatching && in_flight < started {
                    let Some(node) = ready.pop() else { break };
                    running[node.index()] = true;
                    in_flight += 1;
                    starting.push(node);
                }
                // Released before the round's stages are handed over, so that none of them
                // sees a value the run has let go of as still kept.
                to_release.retain(|&producer| {
                    let read = plan.dependents(producer).any(|reader| running[reader.index()]);
                    if !read {
                        release_outputs(job, &kept, producer);
                    }
                    read
                });
                for node in starting {
                    let worker = idle.pop().expect("a free worker for each stage started");
                    work_queues[worker].send(node).expect("workers alive");
                }
                limaml_models::pool::set_jobs_running(in_flight);
                if in_flight == 0 {
                    break;
                }
                let (worker, result) = done_rx.recv().expect("a worker reports");
                idle.push(worker);
                in_flight -= 1;
                limaml_models::pool::set_jobs_running(in_flight);
                running[result.node.index()] = false;
                settled[result.node.index()] = true;
                for &(_, producer) in &plan.node(result.node).inputs {
                    if !to_release.contains(&producer) {
                        to_release.push(producer);
                    }
                }
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
            drop(work_queues);
        });
        limaml_models::pool::set_jobs_running(0);
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

/// Lets go of the kept values decoded from `producer`'s artifacts.
fn release_outputs(job: &ExecutionJob<'_>, kept: &KeptValues, producer: NodeIndex) {
    if let Ok(Some(record)) = job.store.stage(&job.plan.node(producer).key) {
        for artifact in record.outputs.values() {
            kept.release(&artifact.digest);
        }
    }
}

/// The stages ready to start, in the order they start (see the module docs): the one-thread
/// stages that train, then those that train on every core, each in the order they became
/// ready, then the short ones, the one with the longest chain after it first.
#[derive(Default)]
struct ReadyStages {
    training_on_one_thread: VecDeque<NodeIndex>,
    training_on_every_core: VecDeque<NodeIndex>,
    short: VecDeque<NodeIndex>,
    /// Per stage, from [`stages_after`].
    stages_after: Vec<usize>,
}

impl ReadyStages {
    fn push(&mut self, plan: &Plan, node: NodeIndex) {
        let stage = &plan.node(node).stage;
        let queue = match (stage.trains(), stage.uses_every_core()) {
            (true, false) => &mut self.training_on_one_thread,
            (true, true) => &mut self.training_on_every_core,
            (false, _) => &mut self.short,
        };
        queue.push_back(node);
    }

    fn pop(&mut self) -> Option<NodeIndex> {
        (self.training_on_one_thread.pop_front())
            .or_else(|| self.training_on_every_core.pop_front())
            .or_else(|| self.pop_short())
    }

    /// The short stage with the most stages after it, the first ready among equals.
    fn pop_short(&mut self) -> Option<NodeIndex> {
        let after = |node: &NodeIndex| self.stages_after.get(node.index()).copied().unwrap_or(0);
        let mut first = None;
        for (position, node) in self.short.iter().enumerate() {
            if first.is_none_or(|(_, most)| after(node) > most) {
                first = Some((position, after(node)));
            }
        }
        self.short.remove(first?.0)
    }
}

/// Per stage, how many stages that must run follow it on its longest path through the plan
/// (0 for a stage no stage that runs reads).
fn stages_after(job: &ExecutionJob<'_>) -> Vec<usize> {
    let plan = job.plan;
    let mut after = vec![0; plan.graph.node_count()];
    // A plan is acyclic (checked as it is built); without an order every stage counts 0.
    for node in plan.topological_order().unwrap_or_default().into_iter().rev() {
        after[node.index()] = plan
            .dependents(node)
            .filter(|next| job.to_run[next.index()])
            .map(|next| after[next.index()] + 1)
            .max()
            .unwrap_or(0);
    }
    after
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::LocalExecutor;
    use crate::exec::progress::Progress;
    use crate::exec::{ExecutionJob, Executor, StageResult};
    use crate::plan::{Plan, PlanBuilder};
    use crate::stages::{Stage, StageContext, StageError, StageOutput};
    use crate::store::{LockWait, StageStatus, Store};

    /// Runs every stage of `plan` on one worker, into a fresh store.
    fn run_on_one_worker(plan: &Plan) -> Vec<StageResult> {
        run_on_workers(plan, 1)
    }

    /// Runs every stage of `plan` on `jobs` workers, into a fresh store.
    fn run_on_workers(plan: &Plan, jobs: usize) -> Vec<StageResult> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), LockWait::NoWait, |_| {}).unwrap();
        let cancel = AtomicBool::new(false);
        let progress = Progress::new(plan.graph.node_count(), false, true);
        let job = ExecutionJob {
            plan,
            store: &store,
            to_run: vec![true; plan.graph.node_count()],
            run_id: "test",
            keep_going: false,
            cancel: &cancel,
            progress: &progress,
        };
        LocalExecutor { jobs }.execute(&job)
    }

    /// A stage that writes its name and the name of its thread in `started` when it runs.
    struct Recorded {
        name: &'static str,
        trains: bool,
        every_core: bool,
        started: Arc<Mutex<Vec<(&'static str, String)>>>,
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
        fn trains(&self) -> bool {
            self.trains
        }
        fn uses_every_core(&self) -> bool {
            self.every_core
        }
        fn run(&self, _: &StageContext<'_>) -> Result<StageOutput, StageError> {
            let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
            self.started.lock().unwrap().push((self.name, thread));
            Ok(StageOutput::default())
        }
    }

    /// The order the stages of `plan` start in, on one worker.
    fn start_order(plan: &Plan, started: &Arc<Mutex<Vec<(&'static str, String)>>>) -> Vec<&'static str> {
        let results = run_on_one_worker(plan);
        assert!(results.iter().all(|r| r.status == StageStatus::Executed));
        let started: Vec<&'static str> = started.lock().unwrap().iter().map(|(name, _)| *name).collect();
        assert_eq!(started.len(), plan.graph.node_count());
        started
    }

    #[test]
    fn a_stage_that_uses_every_core_starts_after_the_one_thread_stages_that_train_ready_with_it_and_after_them() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let stage = |name, every_core| Arc::new(Recorded { name, trains: true, every_core, started: started.clone() });
        let mut builder = PlanBuilder::new();
        let root = builder.add("root".into(), stage("root", false), vec![]).unwrap();
        builder.add("parallel".into(), stage("parallel", true), vec![("in".into(), root)]).unwrap();
        let first = builder.add("first".into(), stage("first", false), vec![("in".into(), root)]).unwrap();
        builder.add("second".into(), stage("second", false), vec![("in".into(), root)]).unwrap();
        // Ready only once `first` has run, after `parallel` became ready.
        builder.add("after_first".into(), stage("after_first", false), vec![("in".into(), first)]).unwrap();
        let plan = builder.finish("order".into(), None).unwrap();

        let started = start_order(&plan, &started);
        assert_eq!((started[0], started[4]), ("root", "parallel"), "start order: {started:?}");
    }

    #[test]
    fn stages_that_train_start_before_the_short_stages_ready_with_them() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let stage = |name, trains, every_core| Arc::new(Recorded { name, trains, every_core, started: started.clone() });
        let mut builder = PlanBuilder::new();
        let root = builder.add("root".into(), stage("root", false, false), vec![]).unwrap();
        let short = builder.add("short".into(), stage("short", false, false), vec![("in".into(), root)]).unwrap();
        builder.add("parallel".into(), stage("parallel", true, true), vec![("in".into(), root)]).unwrap();
        builder.add("one_thread".into(), stage("one_thread", true, false), vec![("in".into(), root)]).unwrap();
        // Ready once `short` has run, after every other stage became ready.
        builder.add("after_short".into(), stage("after_short", true, false), vec![("in".into(), short)]).unwrap();
        let plan = builder.finish("order".into(), None).unwrap();

        assert_eq!(start_order(&plan, &started), ["root", "one_thread", "parallel", "short", "after_short"]);
    }

    #[test]
    fn among_short_stages_the_one_with_the_longest_chain_after_it_starts_first() {
        let started = Arc::new(Mutex::new(Vec::new()));
        let stage = |name| Arc::new(Recorded { name, trains: false, every_core: false, started: started.clone() });
        let mut builder = PlanBuilder::new();
        // `alone` and `head` ready at once, `alone` first; only `head` has a stage after it.
        builder.add("alone".into(), stage("alone"), vec![]).unwrap();
        let head = builder.add("head".into(), stage("head"), vec![]).unwrap();
        builder.add("tail".into(), stage("tail"), vec![("in".into(), head)]).unwrap();
        let plan = builder.finish("order".into(), None).unwrap();

        assert_eq!(start_order(&plan, &started), ["head", "alone", "tail"]);
    }

    #[test]
    fn a_stage_goes_to_the_worker_freed_last() {
        // A chain on two workers: each stage becomes ready as the one before it ends, with the
        // other worker idle all along; every stage goes to the worker that ran the one before.
        let ran = Arc::new(Mutex::new(Vec::new()));
        let stage = |name| Arc::new(Recorded { name, trains: false, every_core: false, started: ran.clone() });
        let mut builder = PlanBuilder::new();
        let mut previous = builder.add("a".into(), stage("a"), vec![]).unwrap();
        for name in ["b", "c", "d"] {
            previous = builder.add(name.into(), stage(name), vec![("in".into(), previous)]).unwrap();
        }
        let plan = builder.finish("chain".into(), None).unwrap();
        let results = run_on_workers(&plan, 2);
        assert!(results.iter().all(|r| r.status == StageStatus::Executed));
        let ran = ran.lock().unwrap().clone();
        let threads: Vec<&str> = ran.iter().map(|(_, thread)| thread.as_str()).collect();
        assert_eq!(threads, ["limaml-worker-0"; 4], "stages and their threads: {ran:?}");
    }

    static DECODES: AtomicUsize = AtomicUsize::new(0);

    /// A number that counts how often it is decoded.
    struct Counted(u32);

    impl<'de> serde::Deserialize<'de> for Counted {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            DECODES.fetch_add(1, Ordering::SeqCst);
            u32::deserialize(deserializer).map(Counted)
        }
    }

    /// `Produce` writes the artifact `value`; `Read` decodes its input's, through the shared path;
    /// `CountKept` writes how many artifacts the run keeps values of when it runs.
    enum Step {
        Produce,
        Read,
        CountKept(Arc<Mutex<Option<usize>>>),
    }

    struct Sharing(&'static str, Step);

    impl Stage for Sharing {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn version(&self) -> u32 {
            1
        }
        fn params(&self) -> serde_json::Value {
            serde_json::json!({ "name": self.0 })
        }
        fn run(&self, ctx: &StageContext<'_>) -> Result<StageOutput, StageError> {
            let mut output = StageOutput::default();
            match &self.1 {
                Step::Produce => {
                    output.artifacts.insert("value".into(), crate::stages::encode(&7u32)?);
                }
                Step::Read => assert_eq!(ctx.decode_shared::<Counted>("in", "value")?.0, 7),
                Step::CountKept(kept) => *kept.lock().unwrap() = Some(ctx.kept.expect("a local run keeps values").artifacts()),
            }
            Ok(output)
        }
    }

    #[test]
    fn stages_that_read_an_input_one_after_another_decode_it_once_and_the_run_lets_it_go_after_its_last_reader() {
        let kept_later = Arc::new(Mutex::new(None));
        let mut builder = PlanBuilder::new();
        let produce = builder.add("produce".into(), Arc::new(Sharing("produce", Step::Produce)), vec![]).unwrap();
        let first = builder.add("first".into(), Arc::new(Sharing("first", Step::Read)), vec![("in".into(), produce)]).unwrap();
        builder.add("second".into(), Arc::new(Sharing("second", Step::Read)), vec![("in".into(), produce)]).unwrap();
        // Ready once `first` has ended, so it starts after `second` (one worker, oldest first).
        let later = Sharing("later", Step::CountKept(kept_later.clone()));
        builder.add("later".into(), Arc::new(later), vec![("after".into(), first)]).unwrap();
        let plan = builder.finish("sharing".into(), None).unwrap();
        let results = run_on_one_worker(&plan);

        assert!(results.iter().all(|r| r.status == StageStatus::Executed), "{results:?}");
        assert_eq!(DECODES.load(Ordering::SeqCst), 1, "two readers one after another, one decode");
        assert_eq!(*kept_later.lock().unwrap(), Some(0), "both readers had ended: nothing kept");
    }
}
