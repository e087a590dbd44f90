//! One function per subcommand: load, call the library, print.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use limaml::exec::{self, local::LocalExecutor, RunOptions};
use limaml::plan::{self, Plan};
use limaml::report::tables;
use limaml::spec::{self, did_you_mean, LoadedSpec};
use limaml::store::{LockWait, RunStatus, Store};

use super::{Cli, Command, DataCommand, ExecutorKind, Failure, SlurmArgs, SpecArgs, StageCommand, StoreCommand};

static CANCEL: AtomicBool = AtomicBool::new(false);

pub fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    let store_path = cli.store.clone();
    match cli.command {
        Command::Plan { spec, dot, json, no_wait } => plan_command(&store_path, &spec, dot, json, no_wait),
        Command::Run { spec, jobs, executor, keep_going, no_wait, json, slurm } => {
            run_command(&store_path, &spec, jobs, executor, keep_going, no_wait, json, &slurm)
        }
        Command::Compare(args) => super::compare::compare_command(&store_path, &args),
        Command::Reproduce { quick, out, specs, jobs, no_wait, overrides } => super::reproduce::reproduce_command(
            &store_path,
            &super::reproduce::ReproduceArgs { quick, out: &out, specs: &specs, jobs, no_wait, overrides: &overrides },
            &CANCEL,
        ),
        Command::Bench(args) => super::bench::bench_command(&args),
        Command::Cancel { run } => super::slurm::cancel_command(&store_path, &run),
        Command::Stage { command: StageCommand::Exec { spec, key, staging } } => {
            super::slurm::stage_exec_command(&spec, &key, &staging)
        }
        Command::Data { command: DataCommand::Fetch { name, dir, url } } => {
            super::fetch::fetch_command(&name, &dir, url.as_deref())
        }
        Command::Runs { json } => runs_command(&store_path, json),
        Command::Show { run, json } => show_command(&store_path, &run, json),
        Command::Exps { experiment, metrics, format } => {
            super::exps::exps_command(&store_path, experiment.as_deref(), &metrics, format)
        }
        Command::Diff { a, b } => super::exps::diff_command(&store_path, &a, &b),
        Command::New { name, dir } => super::exps::new_command(&name, &dir),
        Command::Schema => {
            let schema = schemars::schema_for!(limaml::spec::Spec);
            println!("{}", serde_json::to_string_pretty(&schema).expect("a schema serializes"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { runs, out } => super::report::report_command(&store_path, &runs, out.as_deref()),
        Command::Export { run, out } => export_command(&store_path, &run, out.as_deref()),
        Command::Why { spec, stage, against } => why_command(&store_path, &spec, &stage, against.as_deref()),
        Command::Gc { dry_run, keep_last } => gc_command(&store_path, dry_run, keep_last),
        Command::Data { command: DataCommand::Inspect { spec, json } } => super::inspect::inspect_command(&spec, json),
        Command::Store { command: StoreCommand::Check { json } } => super::store::check_command(&store_path, json),
        Command::Store { command: StoreCommand::Recover } => super::store::recover_command(&store_path),
    }
}

pub fn load(args: &SpecArgs) -> Result<(LoadedSpec, Plan), Failure> {
    let loaded = spec::load(&args.spec, &args.overrides)?;
    let plan = plan::build(&loaded)?;
    Ok((loaded, plan))
}

/// The store for a command that only reads: when another process holds it, its file mirror
/// (finished runs and stages), without waiting.
pub fn open_reader(path: &std::path::Path) -> Result<Store, Failure> {
    super::store::check_store_path(path)?;
    let store = Store::open(path, LockWait::ReadOnly, |_| {}).map_err(|e| super::store::store_failure(path, e))?;
    if store.is_read_only() {
        eprintln!("note: {} is in use by another process; reading its finished runs and stages", path.display());
    }
    Ok(store)
}

pub fn open_store(path: &std::path::Path, no_wait: bool) -> Result<Store, Failure> {
    let wait = if no_wait { LockWait::NoWait } else { LockWait::Wait };
    let display = path.display().to_string();
    super::store::check_store_path(path)?;
    Store::open(path, wait, |owner| eprintln!("waiting for {owner} to release {display} ..."))
        .map_err(|e| super::store::store_failure(path, e))
}

fn plan_command(
    store_path: &std::path::Path,
    args: &SpecArgs,
    dot: bool,
    json: bool,
    no_wait: bool,
) -> Result<ExitCode, Failure> {
    let (_, plan) = load(args)?;
    let store = if no_wait { open_store(store_path, true)? } else { open_reader(store_path)? };
    let cached = exec::cache_status(&plan, &store, &|text| eprintln!("warning: {text}"))?;
    let status =
        |i: petgraph::graph::NodeIndex| if cached[i.index()] { "cached".to_string() } else { "to run".to_string() };
    if json {
        let stages: Vec<serde_json::Value> = plan
            .graph
            .node_indices()
            .map(|i| {
                let node = plan.node(i);
                serde_json::json!({
                    "name": node.name,
                    "key": node.key,
                    "kind": node.components.kind,
                    "status": status(i),
                    "inputs": node.inputs.iter().map(|(role, input)| (role.clone(), plan.node(*input).name.clone())).collect::<std::collections::BTreeMap<_, _>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"experiment": plan.experiment, "stages": stages}))
                .expect("serializes")
        );
    } else if dot {
        print!("{}", plan::render::dot(&plan, &status));
    } else {
        let to_run = cached.iter().filter(|c| !**c).count();
        println!(
            "experiment {}: {} stages, {} cached, {} to run",
            plan.experiment,
            plan.graph.node_count(),
            plan.graph.node_count() - to_run,
            to_run
        );
        print!("{}", plan::render::tree(&plan, &status));
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn run_command(
    store_path: &std::path::Path,
    args: &SpecArgs,
    jobs: Option<usize>,
    executor: ExecutorKind,
    keep_going: bool,
    no_wait: bool,
    json: bool,
    slurm: &SlurmArgs,
) -> Result<ExitCode, Failure> {
    let (loaded, plan) = load(args)?;
    let runtime = &loaded.cells[0].spec.runtime;
    let jobs = super::checked_jobs(jobs.or(runtime.jobs))?;
    let executor: Box<dyn exec::Executor> = match executor {
        ExecutorKind::Local => Box::new(LocalExecutor { jobs }),
        ExecutorKind::Slurm => super::slurm::executor(&loaded, args, slurm, store_path)?,
    };
    let store = open_store(store_path, no_wait)?;
    install_ctrlc();
    let options =
        RunOptions { keep_going, cancel: &CANCEL, show_progress: runtime.progress.unwrap_or(true), quiet: false };
    let outcome = exec::run_plan(&plan, &loaded, &store, executor.as_ref(), &options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome).expect("outcome serializes"));
    } else {
        let baseline = loaded.cells[0]
            .spec
            .report
            .baseline
            .clone()
            .or_else(|| loaded.cells[0].spec.methods.contains_key("global").then(|| "global".to_string()));
        print!("{}", tables::run_summary(&outcome, baseline.as_deref(), &loaded.cells[0].spec.report.metrics));
        print!("{}", limaml::report::search::winners(&outcome.search));
    }
    if CANCEL.load(Ordering::SeqCst) {
        return Err(Failure::Interrupted);
    }
    match outcome.status {
        RunStatus::Succeeded => Ok(ExitCode::SUCCESS),
        _ if outcome.bad_input => Ok(ExitCode::from(2)),
        _ => Ok(ExitCode::from(1)),
    }
}

/// First Ctrl-C: stop dispatching, let running stages commit. Second: exit at once (finished
/// stages are already committed).
pub fn install_ctrlc() {
    let _ = ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopping now; finished stages are committed");
            std::process::exit(130);
        }
        eprintln!("\nstopping after the running stages commit (Ctrl-C again to stop now)");
    });
}

fn runs_command(store_path: &std::path::Path, json: bool) -> Result<ExitCode, Failure> {
    let store = open_reader(store_path)?;
    let runs = store.runs()?;
    if json {
        // Per run: its overrides and, per method, the headline metrics as numbers.
        let list: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                let methods: serde_json::Map<String, serde_json::Value> = r
                    .metrics
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(label, summary)| {
                        let numbers: serde_json::Map<String, serde_json::Value> = summary
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(_, v)| v.is_number())
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        (label.clone(), numbers.into())
                    })
                    .collect();
                serde_json::json!({
                    "id": r.id,
                    "experiment": r.experiment,
                    "status": r.status,
                    "spec": r.spec_path,
                    "overrides": r.overrides,
                    "started_unix_ms": r.started_unix_ms,
                    "finished_unix_ms": r.finished_unix_ms,
                    "stages": r.stages.len(),
                    "methods": methods,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("serializes"));
    } else if runs.is_empty() {
        println!("no runs in {}", store_path.display());
    } else {
        println!("{}", tables::runs_table(&runs));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn find_run(store: &Store, id: &str) -> Result<limaml::store::RunRecord, Failure> {
    let runs = store.runs()?;
    if id == "last" {
        return runs.last().cloned().ok_or_else(|| Failure::BadInput("the store has no runs".into()));
    }
    let matches: Vec<_> = runs.iter().filter(|r| r.id.starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let hint = did_you_mean(id, runs.iter().map(|r| r.id.as_str()))
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            Err(Failure::BadInput(format!("no run {id}{hint}; `limaml runs` lists them")))
        }
        many => Err(Failure::BadInput(format!("{id} matches {} runs; give more of the id", many.len()))),
    }
}

fn show_command(store_path: &std::path::Path, id: &str, json: bool) -> Result<ExitCode, Failure> {
    let store = open_reader(store_path)?;
    let run = find_run(&store, id)?;
    if json {
        let mut value = serde_json::to_value(&run).expect("serializes");
        // Each stage's artifacts: name, digest, bytes and format.
        if let Some(stages) = value.get_mut("stages").and_then(|s| s.as_array_mut()) {
            for stage in stages {
                let Some(key) = stage.get("key").and_then(|k| k.as_str()).map(str::to_string) else { continue };
                let artifacts: Vec<serde_json::Value> = store
                    .stage(&key)?
                    .map(|record| {
                        record
                            .outputs
                            .iter()
                            .map(|(name, artifact)| {
                                serde_json::json!({
                                    "name": name,
                                    "digest": artifact.digest,
                                    "bytes": artifact.size,
                                    "format": artifact_format(name),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                stage["artifacts"] = artifacts.into();
            }
        }
        println!("{}", serde_json::to_string_pretty(&value).expect("serializes"));
        return Ok(ExitCode::SUCCESS);
    }
    println!("run {} — experiment {} — {}", run.id, run.experiment, format!("{:?}", run.status).to_lowercase());
    println!(
        "spec {} (digest {}), limaml {}, host {}",
        run.spec_path,
        &run.spec_digest[..12],
        run.tool_version,
        run.host
    );
    if !run.overrides.is_empty() {
        println!("overrides: {}", run.overrides.iter().map(|o| format!("--set {o}")).collect::<Vec<_>>().join(" "));
    }
    println!("{}", tables::stages_table(&run));
    // The metrics the run's spec asked for, when its text still parses.
    let metrics = toml::from_str::<toml::Table>(&run.spec_text)
        .ok()
        .and_then(|t| t.get("report")?.get("metrics")?.as_array().cloned())
        .map(|m| m.iter().filter_map(|v| v.as_str().map(String::from)).collect::<Vec<_>>())
        .unwrap_or_else(|| tables::DEFAULT_METRICS.map(String::from).to_vec());
    if let Some(table) = tables::methods_table(&run.metrics, Some("global"), &metrics) {
        println!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The file format of a stage artifact, by its name.
fn artifact_format(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, extension)| extension) {
        Some("csv") => "csv",
        Some("safetensors") => "safetensors",
        Some("json") => "json",
        _ => "postcard",
    }
}

fn export_command(store_path: &std::path::Path, id: &str, out: Option<&std::path::Path>) -> Result<ExitCode, Failure> {
    let store = open_reader(store_path)?;
    let run = find_run(&store, id)?;
    let out = out.map(std::path::Path::to_path_buf).unwrap_or_else(|| std::path::Path::new("runs/exports").join(&run.id));
    let files = limaml::report::export::export_run(&store, &run, &out).map_err(|e| match e {
        limaml::report::export::ExportError::NothingToExport(_) => Failure::BadInput(e.to_string()),
        other => Failure::Failed(other.to_string()),
    })?;
    for file in &files {
        println!("{} ({} rows)", file.path, file.rows);
    }
    eprintln!("exported run {} to {}", run.id, out.display());
    Ok(ExitCode::SUCCESS)
}

fn why_command(
    store_path: &std::path::Path,
    args: &SpecArgs,
    stage_name: &str,
    against: Option<&str>,
) -> Result<ExitCode, Failure> {
    let (_, plan) = load(args)?;
    let Some(index) = plan.find(stage_name) else {
        let names = plan::stage_names(&plan);
        let hint = did_you_mean(stage_name, names.keys().map(String::as_str))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(Failure::BadInput(format!("the plan has no stage `{stage_name}`{hint}; `limaml plan` lists them")));
    };
    let store = open_reader(store_path)?;
    // The run to compare with: --against RUN, else this experiment's newest run of the stage.
    let chosen: Vec<limaml::store::RunRecord> = match against {
        Some(id) => vec![find_run(&store, id)?],
        None => store.runs()?.into_iter().rev().filter(|r| r.experiment == plan.experiment).collect(),
    };
    let previous_of = |name: &str| -> Result<Option<(String, limaml::store::StageRecord)>, Failure> {
        for run in &chosen {
            if let Some(stage) = run.stages.iter().find(|s| s.name == name) {
                if let Some(record) = store.stage(&stage.key)? {
                    return Ok(Some((run.id.clone(), record)));
                }
            }
        }
        Ok(None)
    };
    let mut current = Some(index);
    let mut depth = 0;
    while let Some(index) = current.take() {
        let node = plan.node(index);
        let indent = "  ".repeat(depth);
        if store.stage(&node.key)?.is_some() {
            println!("{indent}{} is cached (key {})", node.name, node.short_key());
            break;
        }
        let Some((run_id, previous)) = previous_of(&node.name)? else {
            let scope = match against {
                Some(id) => format!("run {id} has no stage of that name"),
                None => format!("no run of experiment `{}` in this store has it", plan.experiment),
            };
            println!("{indent}{} will run: {scope}", node.name);
            break;
        };
        let changes = node.components.differences_from(&previous.components);
        println!(
            "{indent}{} will run: key {} (in run {run_id}: {}) because",
            node.name,
            node.short_key(),
            &previous.key[..12]
        );
        for change in &changes {
            println!("{indent}  - {change}");
        }
        // Follow the first changed input upstream, like a build system's rebuild reason.
        current = changes.iter().find_map(|c| match c {
            plan::key::KeyChange::Input { role, .. } => node.inputs.iter().find(|(r, _)| r == role).map(|(_, i)| *i),
            _ => None,
        });
        depth += 1;
    }
    Ok(ExitCode::SUCCESS)
}

fn gc_command(store_path: &std::path::Path, dry_run: bool, keep_last: Option<usize>) -> Result<ExitCode, Failure> {
    let store = if dry_run { open_reader(store_path)? } else { open_store(store_path, false)? };
    let mut forgotten = std::collections::BTreeSet::new();
    if let Some(keep) = keep_last {
        let runs = store.runs()?;
        let forget = runs.len().saturating_sub(keep);
        for run in &runs[..forget] {
            if dry_run {
                println!("would forget run {}", run.id);
                forgotten.insert(run.id.clone());
            } else {
                store.remove_run(&run.id)?;
                println!("forgot run {}", run.id);
            }
        }
    }
    let report = store.gc(dry_run, &forgotten)?;
    let verb = if dry_run { "would free" } else { "freed" };
    println!(
        "{verb} {} bytes: {} artifact(s), {} stage record(s); kept {} artifact(s), {} bytes",
        report.bytes_freed, report.objects_removed, report.records_removed, report.objects_kept, report.bytes_kept
    );
    Ok(ExitCode::SUCCESS)
}
