//! The `limaml` command line. Turns library errors into messages and exit codes:
//! 0 success, 1 a stage failed (or the store was busy with --no-wait), 2 bad input
//! (spec, data, arguments), 130 stopped by Ctrl-C.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
