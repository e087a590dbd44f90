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
    pin_thread_count();
    cli::main()
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
