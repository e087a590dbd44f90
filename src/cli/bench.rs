//! `limaml bench`: throughput benchmarks (placeholder until the benchmark lands).

use std::process::ExitCode;

use super::{BenchArgs, Failure};

pub fn bench_command(_args: &BenchArgs) -> Result<ExitCode, Failure> {
    Err(Failure::Failed("limaml bench is not available in this build yet".into()))
}
