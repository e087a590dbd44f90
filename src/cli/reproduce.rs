//! `limaml reproduce`: run the paper specs on one store, then print and write every table.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use limaml::exec::{self, local::LocalExecutor, RunOptions};
use limaml::report::reproduce::{self, PaperRuns, PAPER_SPECS};
use limaml::report::table::Format;
use limaml::store::RunStatus;

use super::commands::{install_ctrlc, open_store};
use super::Failure;

/// `limaml reproduce`'s arguments.
pub struct ReproduceArgs<'a> {
    pub quick: bool,
    pub out: &'a Path,
    pub specs: &'a Path,
    pub jobs: Option<usize>,
    pub no_wait: bool,
    /// `--set` overrides applied to every paper spec (after `--quick`'s).
    pub overrides: &'a [String],
}

pub fn reproduce_command(
    store_path: &Path,
    args: &ReproduceArgs<'_>,
    cancel: &'static AtomicBool,
) -> Result<ExitCode, Failure> {
    let ReproduceArgs { quick, out, specs, jobs, no_wait, .. } = *args;
    let started = Instant::now();
    let mut overrides = if quick { reproduce::quick_overrides() } else { Vec::new() };
    overrides.extend(args.overrides.iter().cloned());
    // Load and plan everything first: a bad spec stops before any work.
    let mut plans = Vec::new();
    for file in PAPER_SPECS {
        let path = specs.join(file);
        let loaded = limaml::spec::load(&path, &overrides)?;
        let plan = limaml::plan::build(&loaded)?;
        plans.push((file, loaded, plan));
    }
    let store = open_store(store_path, no_wait)?;
    install_ctrlc();
    let jobs = super::checked_jobs(jobs)?;
    let executor = LocalExecutor { jobs };
    let mut runs = PaperRuns::new();
    let mut failed = false;
    for (file, loaded, plan) in &plans {
        eprintln!("== {} ({} stages)", loaded.path.display(), plan.graph.node_count());
        let options = RunOptions { keep_going: true, cancel, show_progress: true, quiet: false };
        let outcome = exec::run_plan(plan, loaded, &store, &executor, &options)?;
        eprintln!(
            "   {} executed, {} cached, {} failed in {:.1}s",
            outcome.executed, outcome.cached, outcome.failed, outcome.seconds
        );
        failed |= outcome.status != RunStatus::Succeeded;
        if cancel.load(Ordering::SeqCst) {
            return Err(Failure::Interrupted);
        }
        if let Some(run) = store.run(&outcome.run_id)? {
            runs.insert(file.to_string(), run);
        }
    }
    let tables = reproduce::tables(&store, &runs)?;
    for (name, table) in &tables {
        print!("{}", table.render(Format::Terminal, false));
        println!();
        reproduce::write_table(out, name, table)?;
    }
    let plots = reproduce::write_plots(&store, &runs, out).map_err(super::failed)?;
    let page = limaml::report::html::write_index(out, "limaml reproduce: the paper's tables", &tables, &plots)?;
    eprintln!("wrote {}", page.display());
    println!(
        "{} tables and {} plots written to {} (md, csv, tex, json, manifest.json) in {:.1}s",
        if quick { "quick" } else { "full" },
        plots.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
