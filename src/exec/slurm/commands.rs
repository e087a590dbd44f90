//! Talking to Slurm: the client commands (`sbatch`, `squeue`, `scontrol`, `scancel`) run as
//! child processes, and their output parsed into [`JobStatus`].
//!
//! Owns running a Slurm command and reading what it prints. Must not decide anything from it
//! (the coordinator does) nor touch the staging folder or the ledger.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use super::SlurmError;

pub(super) fn run_slurm_command(program: &str, args: &[String], stdin: Option<&str>) -> Result<String, SlurmError> {
    let command_line = format!("{program} {}", args.join(" "));
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().map_err(|source| SlurmError::Spawn { command: program.to_string(), source })?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).map_err(|source| SlurmError::Spawn { command: command_line.clone(), source })?;
    }
    let output = child.wait_with_output().map_err(|source| SlurmError::Spawn { command: command_line.clone(), source })?;
    if !output.status.success() {
        // Some commands (`scontrol show job` of an unknown array task) explain on stdout.
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        return Err(SlurmError::CommandFailed { command: command_line, status: output.status.to_string(), stderr: message });
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

/// A job's state as `squeue` or `scontrol` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Slurm's state name: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...
    pub state: String,
    pub reason: String,
    /// `exit:signal`, when known (`scontrol show job` only).
    pub exit_code: Option<String>,
}

impl JobStatus {
    pub fn is_active(&self) -> bool {
        !self.is_finished()
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.state.as_str(),
            "COMPLETED"
                | "FAILED"
                | "CANCELLED"
                | "TIMEOUT"
                | "OUT_OF_MEMORY"
                | "NODE_FAIL"
                | "PREEMPTED"
                | "BOOT_FAIL"
                | "DEADLINE"
                | "SPECIAL_EXIT"
                | "REVOKED"
        )
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "RUNNING" | "COMPLETING" | "CONFIGURING" | "STAGE_OUT" | "SIGNALING")
    }
}

/// Parses `squeue -h -r -o '%i|%T|%r'` output: job id -> status.
pub fn parse_squeue(output: &str) -> HashMap<String, JobStatus> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().splitn(3, '|');
            let id = fields.next()?.trim();
            let state = fields.next()?.trim();
            let reason = fields.next().unwrap_or("").trim();
            (!id.is_empty()).then(|| {
                // A state may carry a suffix ("CANCELLED by 0"); keep the name.
                let state = state.split_whitespace().next().unwrap_or("").to_string();
                (id.to_string(), JobStatus { state, reason: reason.to_string(), exit_code: None })
            })
        })
        .collect()
}

/// Parses one record of `scontrol show job -o ID`.
pub fn parse_scontrol(output: &str) -> Option<JobStatus> {
    let field = |name: &str| {
        output.split_whitespace().find_map(|f| f.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))).map(str::to_string)
    };
    Some(JobStatus { state: field("JobState")?, reason: field("Reason").unwrap_or_default(), exit_code: field("ExitCode") })
}

/// Every job of this user that slurmctld still knows, one line per array task.
pub(super) fn squeue_snapshot() -> Result<HashMap<String, JobStatus>, SlurmError> {
    let args = ["--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%r"].map(String::from);
    Ok(parse_squeue(&run_slurm_command("squeue", &args, None)?))
}

/// `scontrol show job ID`: `None` when Slurm no longer knows the job.
pub(super) fn scontrol_status(job_id: &str) -> Result<Option<JobStatus>, SlurmError> {
    match run_slurm_command("scontrol", &["show".into(), "job".into(), "-o".into(), job_id.into()], None) {
        Ok(output) => Ok(parse_scontrol(&output)),
        Err(SlurmError::CommandFailed { stderr, .. }) if stderr.contains("Invalid job id") || stderr.contains("not found") => Ok(None),
        Err(e) => Err(e),
    }
}

/// `scancel` the given jobs (errors for jobs that already finished are ignored).
pub fn scancel(job_ids: &[String]) -> Result<(), SlurmError> {
    if job_ids.is_empty() {
        return Ok(());
    }
    match run_slurm_command("scancel", job_ids, None) {
        Ok(_) => Ok(()),
        Err(SlurmError::CommandFailed { stderr, .. })
            if stderr.lines().all(|l| l.contains("already completed") || l.contains("Invalid job id") || l.trim().is_empty()) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Checks that the Slurm client commands can be run (`sbatch --version`).
pub fn check_slurm_available() -> Result<String, SlurmError> {
    Ok(run_slurm_command("sbatch", &["--version".to_string()], None)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_parse_into_states_per_job_and_array_task() {
        let parsed = parse_squeue("1_0|COMPLETED|None\n1_1|FAILED|NonZeroExitCode\n2|PENDING|DependencyNeverSatisfied\n");
        assert_eq!(parsed["1_1"].state, "FAILED");
        assert!(parsed["1_0"].is_finished());
        assert!(parsed["2"].is_active());
        assert_eq!(parsed["2"].reason, "DependencyNeverSatisfied");
    }

    #[test]
    fn scontrol_records_give_state_reason_and_exit_code() {
        let status = parse_scontrol("JobId=4 ArrayJobId=1 ArrayTaskId=1 JobName=wrap JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 RunTime=00:00:02").unwrap();
        assert_eq!(status, JobStatus { state: "FAILED".into(), reason: "NonZeroExitCode".into(), exit_code: Some("3:0".into()) });
    }
}
