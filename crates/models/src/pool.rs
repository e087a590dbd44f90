//! Where the models' long parallel work runs ([`on_pool`]) and whether a step's fine-grained
//! parallel parts spread over the pool's threads now ([`spreads`], [`join`], [`min_len`]). Must
//! not decide how work is split (each caller does, in fixed chunks, so that results do not
//! depend on the thread count, nor on whether they spread).
//!
//! Why a step spreads only while a core is free: a step whose parallel parts end in a barrier
//! (LiMAML's task groups, then the serial rest of its outer step, about a millisecond each)
//! waits for its slowest thread; while another stage runs on the other core, the step's second
//! thread shares a core with it and is often descheduled at the barrier. At 200k users, -j 1,
//! LiMAML's training beside a one-thread stage took 39.0 s on two threads and 32.9 s on one (the
//! other stage 48.8 and 46.4 s), and alone 21.4-22.3 s on two threads, 32.4-32.7 s on one
//! (bench/README.md, nineteenth pass). So the executor says how many stages run side by side
//! ([`set_jobs_running`]), and a step spreads only while they are fewer than the pool's threads.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `work` on a thread of a rayon pool of the calling thread's own (as many threads as
/// the global pool, built at its first call and kept), the caller waiting, and returns its
/// result; runs it in place when already on a pool thread.
///
/// Why a pool thread: a parallel iterator started on a thread outside any pool hands its work
/// to the pool and puts the caller to sleep until it is done, two context switches per
/// iterator. An outer step of meta-training runs several, and they add up: on the bench's
/// large model with one thread, the kernel's wake-ups and switches took 7 % of the time, and
/// the same steps run from a pool thread, where the iterators run in place and only idle
/// threads steal, measured 5 800 -> 6 700 tasks/s (bench/README.md, eighth pass).
///
/// Why a pool per calling thread: on one shared pool, a thread waiting for stolen work takes
/// any queued job, another stage's whole epoch included, and finishes it first. Two stages
/// training at once (`limaml run -j 2`, each on a thread of its own) then held each other up:
/// one 100k-user run saw LiMAML's stage take 41 s instead of 26 s. Kept, not built per call,
/// so that its threads' allocator caches stay warm from epoch to epoch.
///
/// Same work, same chunks: same bits.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return work();
    }
    OWN_POOL.with(|pool| {
        let pool = pool.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(rayon::current_num_threads()).build().ok());
        match pool {
            Some(pool) => pool.install(work),
            // No threads to be had: the work runs here, its iterators on the global pool.
            None => work(),
        }
    })
}

/// How many jobs (the executor's stages) run side by side in this process now; 0 until an
/// executor says (a lone caller: the bench, tests), which spreads.
static JOBS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Tells the models how many jobs (stages) run side by side now; the executor calls it as
/// they start and end.
pub fn set_jobs_running(jobs: usize) {
    JOBS_RUNNING.store(jobs, Ordering::Relaxed);
}

/// Whether a step's fine-grained parallel parts spread over the current pool's threads now:
/// while fewer jobs run than the pool has threads (a core is free), or none was reported.
pub fn spreads() -> bool {
    let jobs = JOBS_RUNNING.load(Ordering::Relaxed);
    jobs == 0 || jobs < rayon::current_num_threads()
}

/// `rayon::join(a, b)` while [`spreads`], else `a` then `b` on this thread: the same two
/// results (the closures must not depend on which runs first).
pub fn join<RA: Send, RB: Send>(a: impl FnOnce() -> RA + Send, b: impl FnOnce() -> RB + Send) -> (RA, RB) {
    if spreads() {
        rayon::join(a, b)
    } else {
        (a(), b())
    }
}

/// The `with_min_len` of a step's parallel iterator: 1 while [`spreads`], else no split at all,
/// so it runs on this thread as one piece, in order, and wakes no other.
pub fn min_len() -> usize {
    if spreads() {
        1
    } else {
        usize::MAX
    }
}

thread_local! {
    /// The calling thread's pool for [`on_pool`] (`None`: it could not be built).
    static OWN_POOL: std::cell::OnceCell<Option<rayon::ThreadPool>> = const { std::cell::OnceCell::new() };
}

#[cfg(test)]
mod tests {
    use super::on_pool;

    #[test]
    fn work_runs_on_a_pool_thread_and_its_result_comes_back() {
        assert!(rayon::current_thread_index().is_none(), "the test starts outside any pool");
        let (on_a_pool_thread, sum) = on_pool(|| (rayon::current_thread_index().is_some(), (1..=10).sum::<i32>()));
        assert!(on_a_pool_thread);
        assert_eq!(sum, 55);
    }

    #[test]
    fn a_step_spreads_only_while_fewer_jobs_run_than_the_pool_has_threads() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let spreads_with = |jobs: usize| {
            super::set_jobs_running(jobs);
            pool.install(super::spreads)
        };
        let seen = [spreads_with(0), spreads_with(1), spreads_with(2), spreads_with(3)];
        super::set_jobs_running(0);
        assert_eq!(seen, [true, true, false, false]);
    }

    #[test]
    fn a_parallel_iterator_that_does_not_spread_runs_on_the_calling_thread() {
        use rayon::prelude::*;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let threads: Vec<_> = pool.install(|| {
            let caller = std::thread::current().id();
            (0..64)
                .into_par_iter()
                .with_min_len(usize::MAX)
                .map(|_| std::thread::current().id() == caller)
                .collect()
        });
        assert!(threads.iter().all(|&on_caller| on_caller));
    }

    #[test]
    fn work_started_on_a_pool_thread_runs_in_place() {
        rayon::scope(|_| {
            let caller = std::thread::current().id();
            assert_eq!(on_pool(|| std::thread::current().id()), caller);
        });
    }
}
