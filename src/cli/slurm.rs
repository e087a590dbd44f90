//! The Slurm side of the command line: building the Slurm executor for `run --executor slurm`,
//! `limaml cancel RUN`, and `limaml stage exec` (what each cluster job runs).

use std::path::Path;
use std::process::ExitCode;

use limaml::exec::Executor;
use limaml::spec::LoadedSpec;

use super::{Failure, SlurmArgs, SpecArgs};

pub fn executor(
    _spec: &LoadedSpec,
    _args: &SpecArgs,
    _slurm: &SlurmArgs,
    _store: &Path,
) -> Result<Box<dyn Executor>, Failure> {
    Err(Failure::BadInput("the slurm executor is not available in this build yet; use --executor local".into()))
}

pub fn cancel_command(_store: &Path, _run: &str) -> Result<ExitCode, Failure> {
    Err(Failure::BadInput("limaml cancel needs the slurm executor, which is not available in this build yet".into()))
}

pub fn stage_exec_command(_spec: &SpecArgs, _key: &str, _staging: &Path) -> Result<ExitCode, Failure> {
    Err(Failure::BadInput(
        "limaml stage exec needs the slurm executor, which is not available in this build yet".into(),
    ))
}
