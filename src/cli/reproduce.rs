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

pub fn reproduce_command(
    store_path: &Path,
    quick: bool,
    out: &Path,
    specs: &Path,
    jobs: Option<usize>,
    no_wait: bool,
    cancel: &'static AtomicBool,
) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    let overrides = if quick { reproduce::quick_overrides() } else { Vec::new() };
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
    for (name, table) in reproduce::tables(&store, &runs)? {
        print!("{}", table.render(Format::Terminal, false));
        println!();
        reproduce::write_table(out, &name, &table)?;
    }
    let plots = reproduce::write_plots(&store, &runs, out).map_err(|e| Failure::Failed(e.to_string()))?;
    println!(
        "{} tables and {} plots written to {} (md, csv, tex, json, manifest.json) in {:.1}s",
        if quick { "quick" } else { "full" },
        plots.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
