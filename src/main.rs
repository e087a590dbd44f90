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
    keep_freed_memory_longer();
    pin_thread_count();
    cli::main()
}

/// mimalloc's `purge_delay` option: its place in mimalloc's `mi_option_t` (libmimalloc-sys
/// names no constant for it; a test checks it reads mimalloc's default delay).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long memory a run has freed stays with the allocator before it goes back to the kernel.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Keeps freed memory with the allocator for [`PURGE_DELAY_MS`] instead of mimalloc's 1 s. A
/// run's stages free and allocate data sets, task sets and id tables of hundreds of megabytes
/// seconds apart (a stage ends, the next decodes its inputs); handed back after 1 s, each comes
/// back as fresh pages for the kernel to zero. Measured at 1M users (`id_embedding`, 2 epochs,
/// two runs at once; bench/README.md, seventeenth pass): never handing memory back took the
/// page faults from 98 336 to 2 078, the system time from 13.6 s to 9.7 s and the run from
/// 142.7 s to 136.1 s, at a peak of 3.28 GB instead of 2.58 GB; 10 s ran as fast as never
/// (143.7 s against 143.0 s, another pair) at 3.20 GB.
fn keep_freed_memory_longer() {
    // SAFETY: sets one option's value; mimalloc reads it each time it decides to purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
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
    #[test]
    fn the_option_set_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            println!("skipped: MIMALLOC_PURGE_DELAY is set, so the option does not read its default");
            return;
        }
        // mimalloc 3's default purge delay, 1 000 ms: no other option defaults to it.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) }, 1000);
    }
}
