//! The Slurm side of the command line: building the Slurm executor for `run --executor slurm`,
//! `limaml cancel RUN`, and `limaml stage exec` (what each cluster job runs). Owns turning
//! arguments into [`SlurmConfig`] and errors into exit codes; the work is in
//! `limaml::exec::slurm`. `stage exec` must never open the store: the coordinator holds it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use limaml::exec::slurm::{self, CancelError, SlurmConfig, SlurmExecutor, Staging};
use limaml::exec::Executor;
use limaml::spec::LoadedSpec;
use limaml::stages::StageError;

use super::{Failure, SlurmArgs, SpecArgs};

/// How often the coordinator asks Slurm about its jobs.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub fn executor(spec: &LoadedSpec, args: &SpecArgs, slurm_args: &SlurmArgs, _store: &Path) -> Result<Box<dyn Executor>, Failure> {
    slurm::check_slurm_available()
        .map_err(|e| Failure::Failed(format!("--executor slurm needs the Slurm client commands: {e}")))?;
    let binary = std::env::current_exe().map_err(|e| Failure::Failed(format!("cannot find the limaml binary for jobs to run: {e}")))?;
    let spec_path = std::path::absolute(&spec.path).map_err(|e| Failure::BadInput(format!("{}: {e}", spec.path.display())))?;
    let working_dir = std::env::current_dir()?;
    Ok(Box::new(SlurmExecutor {
        config: SlurmConfig {
            binary,
            spec_path,
            overrides: args.overrides.clone(),
            working_dir,
            partition: slurm_args.partition.clone(),
            sbatch_options: slurm_args.slurm_opts.clone(),
            poll_interval: POLL_INTERVAL,
        },
    }))
}

pub fn cancel_command(store: &Path, run: &str) -> Result<ExitCode, Failure> {
    match slurm::cancel_run(store, run) {
        Ok(report) if report.cancelled.is_empty() => {
            println!("run {}: no Slurm jobs left to cancel", report.run_id);
            Ok(ExitCode::SUCCESS)
        }
        Ok(report) => {
            for (stage, job_id) in &report.cancelled {
                println!("cancelled Slurm job {job_id} ({stage})");
            }
            println!("run {}: cancelled {} Slurm job(s)", report.run_id, report.cancelled.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ (CancelError::NoSuchRun(..) | CancelError::Ambiguous(..))) => Err(Failure::BadInput(error.to_string())),
        Err(error) => Err(Failure::Failed(error.to_string())),
    }
}

pub fn stage_exec_command(spec: &SpecArgs, key: &str, staging: &Path) -> Result<ExitCode, Failure> {
    let (_, plan) = super::commands::load(spec)?;
    match slurm::run_staged_stage(&plan, key, &Staging::at(staging)) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(StageError::BadInput(message)) => Err(Failure::BadInput(message)),
        Err(error) => Err(Failure::Failed(error.to_string())),
    }
}
