//! The `limaml` command line. Turns library errors into messages and exit codes:
//! 0 success, 1 a stage failed (or the store was busy with --no-wait), 2 bad input
//! (spec, data, arguments), 130 stopped by Ctrl-C.

mod cli;

/// mimalloc instead of glibc's malloc: the passes allocate and free buffers of hundreds of
/// kilobytes every step, which glibc hands back to the kernel (`munmap`, `brk` trims) and
/// faults in again, zeroed, on the next step. Measured on the large first-order meta-training
/// step (perf, one thread): 38 % of the time in page faults and 9 % in `brk`/`munmap`
/// (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    pin_thread_count();
    cli::main()
}

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_t`, mimalloc 3 as pinned in
/// Cargo.lock; a test checks it by its default).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Tells mimalloc to keep the memory the process frees for its next allocations, instead of
/// handing it back to the kernel a second after the free (its default): a stage's epochs
/// free and allocate the same tens to hundreds of megabytes (shuffled row orders, validation
/// scores, gathered rows), and every page handed back is faulted in and zeroed again by the
/// kernel when reused. Measured at one million synthetic users (bench/README.md, twelfth
/// pass): the system time of `limaml run experiments/synthetic-1m.toml -j 2` halved (67 ->
/// 31 s) and its peak resident memory grew from 4.6 to 6.0 GB; its wall-time effect was
/// within this machine's run-to-run spread. The memory goes back at exit. To hand it back
/// sooner (less peak memory), set `MIMALLOC_PURGE_DELAY` (milliseconds; mimalloc's default is
/// 1000): when it is set, mimalloc's reading of it is left alone.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc is this binary's allocator (linked above); setting an option is
    // thread-safe and only changes when freed memory is purged.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Sets `RAYON_NUM_THREADS` to candle's default (the physical cores) when it is unset, before
/// any thread starts: the count is the same, but candle reads the variable on every matrix
/// product and, without it, parses `/proc/cpuinfo` each time (measured: half the throughput of
/// small meta-training steps at 2 threads).
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

#[cfg(test)]
mod tests {
    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    #[test]
    fn the_option_kept_is_mimallocs_purge_delay_unless_the_environment_sets_it() {
        // Its default is 1000 ms; no other option of mimalloc 3 defaults to 1000.
        let from_environment: Option<std::ffi::c_long> =
            std::env::var("MIMALLOC_PURGE_DELAY").ok().and_then(|v| v.parse().ok());
        // SAFETY: reading an option has no side effect.
        let before = unsafe { mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, from_environment.unwrap_or(1000));
        super::keep_freed_memory();
        let kept = if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() { before } else { -1 };
        // SAFETY: as above.
        assert_eq!(unsafe { mi_option_get(super::MI_OPTION_PURGE_DELAY) }, kept);
    }
}
