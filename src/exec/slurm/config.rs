//! How jobs are built: the `limaml stage exec` batch script and the resources each job asks
//! Slurm for.
//!
//! Owns [`SlurmConfig`] and the default resource requests. Must not submit anything (the
//! coordinator does).

use std::path::PathBuf;
use std::time::Duration;

use super::staging::Staging;

/// Resource requests every job gets unless a `--slurm-opt` sets the same thing.
pub const DEFAULT_CPUS_PER_TASK: &str = "--cpus-per-task=1";
pub const DEFAULT_MEMORY: &str = "--mem=2G";
pub const DEFAULT_TIME_LIMIT: &str = "--time=01:00:00";

/// How jobs are built: what they run and what they ask Slurm for.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// The absolute path of the `limaml` binary jobs run.
    pub binary: PathBuf,
    /// The spec, as an absolute path.
    pub spec_path: PathBuf,
    /// `--set` overrides, passed to every job as they are.
    pub overrides: Vec<String>,
    /// Where jobs start (`sbatch --chdir`): the coordinator's working folder.
    pub working_dir: PathBuf,
    pub partition: Option<String>,
    /// `--slurm-opt` values: extra sbatch options; they replace the default cpus, memory and time.
    pub sbatch_options: Vec<String>,
    pub poll_interval: Duration,
}

impl SlurmConfig {
    /// The sbatch options every job gets: defaults the user did not override, the partition,
    /// then the user's options.
    pub fn resource_options(&self) -> Vec<String> {
        let user_sets = |long: &str, short: Option<&str>| {
            self.sbatch_options.iter().any(|o| o.starts_with(long) || short.is_some_and(|s| o.starts_with(s)))
        };
        let mut options = Vec::new();
        if !user_sets("--cpus-per-task", Some("-c")) {
            options.push(DEFAULT_CPUS_PER_TASK.to_string());
        }
        if !user_sets("--mem", None) {
            options.push(DEFAULT_MEMORY.to_string());
        }
        if !user_sets("--time", Some("-t")) {
            options.push(DEFAULT_TIME_LIMIT.to_string());
        }
        if let Some(partition) = &self.partition {
            options.push(format!("--partition={partition}"));
        }
        options.extend(self.sbatch_options.iter().cloned());
        options
    }

    /// The batch script: task `i` of the (possibly one-task) array runs the stage `keys[i]`.
    pub(super) fn batch_script(&self, staging: &Staging, keys: &[&str]) -> String {
        let mut command = vec![
            shell_quote(&self.binary.display().to_string()),
            "stage".into(),
            "exec".into(),
            shell_quote(&self.spec_path.display().to_string()),
        ];
        for set in &self.overrides {
            command.push("--set".into());
            command.push(shell_quote(set));
        }
        command.push("--staging".into());
        command.push(shell_quote(&staging.root().display().to_string()));
        command.push("--key".into());
        command.push("\"${keys[${SLURM_ARRAY_TASK_ID:-0}]}\"".into());
        let keys: Vec<String> = keys.iter().map(|k| shell_quote(k)).collect();
        format!("#!/bin/bash\n# submitted by limaml (Slurm executor)\nkeys=({})\nexec {}\n", keys.join(" "), command.join(" "))
    }
}

/// Quotes a word for a bash script.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn slurm_opts_replace_the_default_resources_they_name() {
        let config = SlurmConfig {
            binary: "/bin/limaml".into(),
            spec_path: "/x/spec.toml".into(),
            overrides: vec![],
            working_dir: "/x".into(),
            partition: Some("debug".into()),
            sbatch_options: vec!["--mem=8G".into(), "--qos=low".into()],
            poll_interval: Duration::from_secs(1),
        };
        let options = config.resource_options();
        assert_eq!(options, vec!["--cpus-per-task=1", "--time=01:00:00", "--partition=debug", "--mem=8G", "--qos=low"]);
    }

    #[test]
    fn the_batch_script_quotes_paths_and_overrides_and_indexes_keys_by_array_task() {
        let config = SlurmConfig {
            binary: "/opt/lim aml".into(),
            spec_path: "/x/it's.toml".into(),
            overrides: vec!["train.epochs=3".into()],
            working_dir: "/x".into(),
            partition: None,
            sbatch_options: vec![],
            poll_interval: Duration::from_secs(1),
        };
        let script = config.batch_script(&Staging::at(Path::new("/s")), &["k0", "k1"]);
        assert!(script.contains("keys=('k0' 'k1')"), "{script}");
        assert!(script.contains("exec '/opt/lim aml' stage exec '/x/it'\\''s.toml' --set 'train.epochs=3' --staging '/s' --key \"${keys[${SLURM_ARRAY_TASK_ID:-0}]}\""), "{script}");
    }
}
