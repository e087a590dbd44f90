//! `limaml compare`: choose runs, group their evaluations by configuration, print the table.

use std::process::ExitCode;

use limaml::report::compare::{self, TableOptions};
use limaml::store::RunRecord;

use super::commands::{find_run, open_store};
use super::{CompareArgs, Failure};

pub fn compare_command(store_path: &std::path::Path, args: &CompareArgs) -> Result<ExitCode, Failure> {
    let store = open_store(store_path, false)?;
    let all = store.runs()?;
    let mut chosen: Vec<RunRecord> = Vec::new();
    for id in &args.runs {
        chosen.push(find_run(&store, id)?);
    }
    if let Some(spec) = &args.spec {
        let loaded = limaml::spec::load(spec, &[])?;
        chosen.extend(all.iter().filter(|r| r.experiment == loaded.experiment_name()).cloned());
    }
    if let Some(n) = args.last {
        chosen.extend(all.iter().rev().take(n).rev().cloned());
    }
    if args.runs.is_empty() && args.spec.is_none() && args.last.is_none() {
        chosen.extend(all.last().cloned());
    }
    if chosen.is_empty() {
        return Err(Failure::BadInput("no runs to compare; `limaml runs` lists them".into()));
    }
    chosen.sort_by_key(|r| r.started_unix_ms);
    chosen.dedup_by(|a, b| a.id == b.id);
    if args.trials {
        return trials(&chosen, args);
    }
    let observations = compare::collect(&store, &chosen)?;
    let available: std::collections::BTreeSet<&String> = observations.iter().flat_map(|o| o.metrics.keys()).collect();
    for metric in args.metrics.iter().chain(args.sort.iter()) {
        if !available.contains(metric) {
            let names: Vec<&str> = available.iter().map(|s| s.as_str()).filter(|s| !s.contains('.')).collect();
            let mut message = format!(
                "unknown metric `{metric}`: these runs report {} (and <slice>.<metric> per segment, state and window, validation.<metric>)",
                names.join(", ")
            );
            if let Some(s) = limaml::spec::did_you_mean(metric, available.iter().map(|s| s.as_str())) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            return Err(Failure::BadInput(message));
        }
    }
    let mut rows = compare::group(&observations, args.baseline.as_deref());
    for filter in &args.filter {
        let Some((key, value)) = filter.split_once('=') else {
            return Err(Failure::BadInput(format!("--filter {filter}: expected KEY=VALUE")));
        };
        rows.retain(|row| match key {
            "method" | "label" => row.method == value || row.label == value,
            _ => row.params.get(key).is_some_and(|v| v == value),
        });
    }
    if let Some(metric) = &args.sort {
        let lower_is_better = limaml_models::eval::lower_is_better(metric);
        let value = |row: &compare::Row| row.metrics.get(metric).map_or(f64::NAN, |s| s.mean);
        rows.sort_by(|a, b| {
            let (x, y) = (value(a), value(b));
            let order = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if lower_is_better {
                order
            } else {
                order.reverse()
            }
        });
    }
    if args.baseline.as_deref().is_some_and(|b| !rows.iter().any(|r| r.method == b)) {
        eprintln!("warning: no rows of baseline method {}", args.baseline.as_deref().unwrap_or_default());
    }
    let title =
        format!("{} run(s): {}", chosen.len(), chosen.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "));
    let options =
        TableOptions { metrics: &args.metrics, baseline: args.baseline.as_deref(), only_changed: args.only_changed };
    let table = compare::comparison_table(&title, &rows, &options);
    print!("{}", table.render(args.format, args.wide));
    Ok(ExitCode::SUCCESS)
}

/// `compare --trials`: each run's search trials, and with `--plot` the objective per trial.
fn trials(chosen: &[RunRecord], args: &CompareArgs) -> Result<ExitCode, Failure> {
    let searched: Vec<&RunRecord> = chosen.iter().filter(|r| r.search.as_object().is_some_and(|m| !m.is_empty())).collect();
    if searched.is_empty() {
        return Err(Failure::BadInput("--trials: none of these runs has a [search]".into()));
    }
    for run in &searched {
        let table = limaml::report::search::trials_table(&format!("search trials of run {}", run.id), &run.search);
        print!("{}", table.render(args.format, args.wide));
    }
    if let Some(path) = &args.plot {
        let last = searched.last().expect("one run at least");
        limaml::report::search::trials_plot(path, &last.search)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
