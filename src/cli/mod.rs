//! Argument parsing (clap) and dispatch to the library. Owns the process: logging, Ctrl-C,
//! exit codes. Must not hold experiment logic.

mod bench;
mod commands;
mod compare;
mod fetch;
mod inspect;
mod exps;
mod report;
mod reproduce;
mod slurm;
mod store;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "limaml", version, about = "Meta-learned personalization experiments as a DAG of cached stages")]
pub struct Cli {
    /// The store (sled records and artifacts).
    #[arg(long, global = true, default_value = "runs/store", env = "LIMAML_STORE")]
    pub store: PathBuf,
    /// More log output (-v info, -vv debug); RUST_LOG takes precedence.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct SpecArgs {
    /// The experiment spec (TOML).
    pub spec: PathBuf,
    /// Override a spec value: --set train.epochs=5 (repeatable; VALUE in TOML syntax).
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub overrides: Vec<String>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Show the DAG of stages, their keys and what is cached.
    Plan {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print Graphviz dot instead of the tree.
        #[arg(long)]
        dot: bool,
        /// Print the stages as JSON (name, key, status, inputs).
        #[arg(long, conflicts_with = "dot")]
        json: bool,
        /// Fail at once if another limaml process holds the store (default: read its record
        /// files without waiting).
        #[arg(long)]
        no_wait: bool,
    },
    /// Run every stage that is not cached.
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        /// Parallel stages (default: the number of cores, or runtime.jobs from the spec).
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Where stages run: in this process (local) or as Slurm jobs (slurm).
        #[arg(long, value_enum, default_value = "local")]
        executor: ExecutorKind,
        /// After a failure, still run every stage that does not depend on it.
        #[arg(long)]
        keep_going: bool,
        /// Fail at once if another limaml process holds the store.
        #[arg(long)]
        no_wait: bool,
        /// Print the run summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        slurm: SlurmArgs,
    },
    /// Compare runs: one row per configuration, seeds grouped, mean ± std, n and 95% CI.
    Compare(CompareArgs),
    /// Run every spec under experiments/paper and print and write the paper's tables.
    Reproduce {
        /// A reduced version (one seed, few epochs) for a smoke check.
        #[arg(long)]
        quick: bool,
        /// Where the tables are written (one folder per table).
        #[arg(long, default_value = "runs/reports")]
        out: PathBuf,
        /// The folder of paper specs.
        #[arg(long, default_value = "experiments/paper")]
        specs: PathBuf,
        /// Parallel stages.
        #[arg(short, long)]
        jobs: Option<usize>,
        /// Fail at once if another limaml process holds the store.
        #[arg(long)]
        no_wait: bool,
        /// Override a value in every paper spec: --set data.path=/data/ml-100k (repeatable).
        #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
        overrides: Vec<String>,
    },
    /// Throughput benchmarks: meta-training, embedding export, scoring (and PyTorch, when set up).
    Bench(BenchArgs),
    /// Cancel the cluster jobs a run submitted.
    Cancel {
        /// A run id (or a unique prefix), or "last".
        run: String,
    },
    /// Internal: what a cluster job runs (one stage, inputs and outputs in a staging folder).
    #[command(hide = true)]
    Stage {
        #[command(subcommand)]
        command: StageCommand,
    },
    /// List runs.
    Runs {
        /// Print the runs as JSON: id, experiment, status, overrides, per-method metrics.
        #[arg(long)]
        json: bool,
    },
    /// The experiments view: one row per run and configuration, the parameters that differ
    /// and the headline metrics (like `dvc exp show`).
    Exps {
        /// Only runs of this experiment (its name).
        #[arg(long)]
        experiment: Option<String>,
        /// The metrics shown.
        #[arg(long, value_delimiter = ',', default_value = "auc,gauc,ndcg@10")]
        metrics: Vec<String>,
        /// Output format: terminal, md, csv, latex or json.
        #[arg(long, value_enum, default_value = "terminal")]
        format: limaml::report::table::Format,
    },
    /// Two runs side by side: their overrides, the parameters that differ, and every metric.
    Diff {
        /// The first run (id, unique prefix, or "last").
        a: String,
        /// The second run.
        b: String,
    },
    /// Print the JSON Schema of a spec (every table and key, types, ranges, defaults, the doc
    /// comments as descriptions), for editors with a TOML language server (taplo, Even Better TOML).
    Schema,
    /// Write a commented starter spec, experiments/NAME.toml.
    New {
        /// The experiment's name (letters, digits, - and _).
        name: String,
        /// The folder to write it into.
        #[arg(long, default_value = "experiments")]
        dir: PathBuf,
    },
    /// Show one run.
    Show {
        /// A run id (or a unique prefix of one), or "last".
        run: String,
        /// Print the run record as JSON, each stage with its artifacts.
        #[arg(long)]
        json: bool,
    },
    /// Write one self-contained HTML page (tables and plots) over runs.
    Report {
        /// Run ids (or unique prefixes, or "last"); default: the last run.
        runs: Vec<String>,
        /// The folder to write index.html into (default: runs/reports/<first run id>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write a run's predictions, per-user metrics and meta embeddings as CSV and safetensors.
    Export {
        /// A run id (or a unique prefix of one), or "last".
        run: String,
        /// The folder to write (default: runs/exports/<run id>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Say why a stage would run again: which part of its key changed since its last run.
    Why {
        #[command(flatten)]
        spec: SpecArgs,
        /// The stage name, as `limaml plan` prints it.
        stage: String,
        /// Compare with this run's stage (default: the newest run of the same experiment).
        #[arg(long, value_name = "RUN")]
        against: Option<String>,
    },
    /// Remove stage records and artifacts that no kept run references.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Forget all but the newest N runs first.
        #[arg(long)]
        keep_last: Option<usize>,
    },
    /// Look at the data a spec names.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Verify the store, or rebuild a damaged database.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Verify every record and every artifact (present, hashing to its digest); exit 1 on a problem.
    Check {
        /// Print the report (records, artifacts verified, problems) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Move a damaged database aside and rebuild it from the store's record files.
    Recover,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Load and slice the spec's data and print its statistics.
    Inspect {
        #[command(flatten)]
        spec: SpecArgs,
        /// Print the statistics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download an official data set, check its sha256, and unpack it.
    Fetch {
        /// movielens-100k or movielens-1m.
        name: String,
        /// Where to unpack (default: the current folder).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Download from this URL instead of the official one (mirrors, tests).
        #[arg(long, hide = true)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum StageCommand {
    /// Run one stage of SPEC, reading inputs from and writing outputs to STAGING.
    Exec {
        #[command(flatten)]
        spec: SpecArgs,
        /// The stage's key, as the plan computes it.
        #[arg(long)]
        key: String,
        /// The shared staging folder of the run.
        #[arg(long)]
        staging: PathBuf,
    },
}

#[derive(Args, Clone)]
pub struct CompareArgs {
    /// Run ids (or unique prefixes); with none, --spec or --last, the last run.
    pub runs: Vec<String>,
    /// Every run of the experiment this spec file names (a path to a spec, not a name).
    #[arg(long, value_name = "SPEC.toml")]
    pub spec: Option<PathBuf>,
    /// The newest N runs.
    #[arg(long)]
    pub last: Option<usize>,
    /// Add the paired per-seed difference to this method and its CI.
    #[arg(long)]
    pub baseline: Option<String>,
    /// Metrics to show: any the runs report (auc, gauc, logloss, ece, ne, gauc_uniform,
    /// ndcg@10, recall@10, hr@10, precision@10, map@10, mrr, full_ndcg@10, ...), per slice such
    /// as low.auc or cold.ndcg@10, or validation.auc.
    #[arg(long, value_delimiter = ',', default_value = "auc,gauc,logloss")]
    pub metrics: Vec<String>,
    /// Show the parameters that differ between rows as columns.
    #[arg(long)]
    pub only_changed: bool,
    /// Sort rows by this metric (best first).
    #[arg(long)]
    pub sort: Option<String>,
    /// Keep rows whose parameter or method matches: --filter method=limaml --filter train.epochs=5
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Do not wrap columns to the terminal width.
    #[arg(long)]
    pub wide: bool,
    /// Show the runs' search trials instead (objective per trial, the best marked).
    #[arg(long)]
    pub trials: bool,
    /// With --trials: also draw the objective against trial as an SVG at this path.
    #[arg(long, requires = "trials")]
    pub plot: Option<PathBuf>,
    /// Output format: terminal, md, latex, or numbers for scripts: csv, json.
    #[arg(long, value_enum, default_value = "terminal")]
    pub format: limaml::report::table::Format,
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Print the results as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Smaller sizes and fewer repeats (a smoke check, not a measurement).
    #[arg(long)]
    pub quick: bool,
    /// Which benchmarks: meta-training throughput and scaling (`training`), the metric
    /// registry's cost and the full-catalogue ranking (`metrics`), or both.
    #[arg(long, value_enum, default_value = "all")]
    pub suite: BenchSuite,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSuite {
    All,
    Training,
    Metrics,
    /// Random search against successive halving on experiments/search.toml (not part of `all`).
    Search,
}

/// Options of the Slurm executor (`--executor slurm`).
#[derive(Args, Clone, Default)]
pub struct SlurmArgs {
    /// The Slurm partition to submit to.
    #[arg(long)]
    pub partition: Option<String>,
    /// Extra sbatch options, passed as they are (repeatable): --slurm-opt=--qos=low
    #[arg(long = "slurm-opt", value_name = "OPTION", allow_hyphen_values = true)]
    pub slurm_opts: Vec<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExecutorKind {
    Local,
    Slurm,
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad spec, data or arguments: exit 2.
    BadInput(String),
    /// A stage failed, or the environment did: exit 1.
    Failed(String),
    /// Stopped by Ctrl-C: exit 130.
    Interrupted,
}

/// An error of a library call (or the environment) as a command's failure: exit 1.
pub fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::Failed(e.to_string())
}

impl From<limaml::spec::SpecError> for Failure {
    fn from(error: limaml::spec::SpecError) -> Self {
        Failure::BadInput(error.to_string())
    }
}

impl From<limaml::plan::PlanError> for Failure {
    fn from(error: limaml::plan::PlanError) -> Self {
        match error {
            limaml::plan::PlanError::BadInput(message) => Failure::BadInput(message),
            other => Failure::Failed(other.to_string()),
        }
    }
}

impl From<limaml::store::StoreError> for Failure {
    fn from(error: limaml::store::StoreError) -> Self {
        match error {
            limaml::store::StoreError::Database { ref path, .. } => {
                let store = path.parent().unwrap_or(path).to_path_buf();
                store::store_failure(&store, error)
            }
            other => Failure::Failed(other.to_string()),
        }
    }
}

/// The most worker threads `-j` starts: more only costs memory and thread start-ups.
pub const MAX_JOBS: usize = 256;

/// The worker count from `-j` or `runtime.jobs` (default: the cores), refused (exit 2) when 0 or
/// above [`MAX_JOBS`].
pub fn checked_jobs(jobs: Option<usize>) -> Result<usize, Failure> {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if jobs == 0 {
        return Err(Failure::BadInput("-j must be at least 1".into()));
    }
    if jobs > MAX_JOBS {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        return Err(Failure::BadInput(format!(
            "-j {jobs} is more than the {MAX_JOBS} worker threads limaml starts (this machine has {cores} cores); use -j {cores}"
        )));
    }
    Ok(jobs)
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Failed(error.to_string())
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

pub fn main() -> ExitCode {
    // `limaml runs | head` should end quietly, as other command-line tools do, not panic.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(Failure::BadInput(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Interrupted) => ExitCode::from(130),
    }
}
