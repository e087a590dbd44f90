//! Where the models' long parallel work runs: [`on_pool`]. Must not decide how work is split
//! (each caller does, in fixed chunks, so that results do not depend on the thread count).

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
    fn work_started_on_a_pool_thread_runs_in_place() {
        rayon::scope(|_| {
            let caller = std::thread::current().id();
            assert_eq!(on_pool(|| std::thread::current().id()), caller);
        });
    }
}
