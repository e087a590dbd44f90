//! The `limaml` command line. Turns library errors into messages and exit codes:
//! 0 success, 1 a stage failed (or the store was busy with --no-wait), 2 bad input
//! (spec, data, arguments), 130 stopped by Ctrl-C.

mod cli;

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
