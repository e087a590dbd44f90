//! `limaml compare`: choose runs, group their evaluations by configuration, print the table.

use std::process::ExitCode;

use std::collections::BTreeSet;

use limaml::report::compare::{self, TableOptions};
use limaml::report::records;
use limaml::report::table::Format;
use limaml::store::RunRecord;

use super::commands::{find_run, open_reader};
use super::{CompareArgs, Failure};

pub fn compare_command(store_path: &std::path::Path, args: &CompareArgs) -> Result<ExitCode, Failure> {
    let store = open_reader(store_path)?;
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
    let available: BTreeSet<&String> = observations.iter().flat_map(|o| o.metrics.keys()).collect();
    for metric in args.metrics.iter().chain(args.sort.iter()) {
        if !available.contains(metric) {
            let names: Vec<&str> = available.iter().map(|s| s.as_str()).filter(|s| !s.contains('.')).collect();
            let flag = if args.sort.as_ref() == Some(metric) { "--sort" } else { "--metrics" };
            let mut message = format!(
                "{flag}: unknown metric `{metric}`: these runs report {} (and <slice>.<metric> per segment, state and window, validation.<metric>)",
                names.join(", ")
            );
            if let Some(s) = limaml::spec::did_you_mean(metric, available.iter().map(|s| s.as_str())) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            return Err(Failure::BadInput(message));
        }
    }
    let methods: BTreeSet<&String> = observations.iter().map(|o| &o.method).collect();
    if let Some(baseline) = args.baseline.as_deref() {
        if !methods.iter().any(|m| m.as_str() == baseline) {
            return Err(unknown("--baseline", "method", baseline, methods.iter().map(|m| m.as_str())));
        }
    }
    let mut rows = compare::group(&observations, args.baseline.as_deref());
    for filter in &args.filter {
        let Some((key, value)) = filter.split_once('=') else {
            return Err(Failure::BadInput(format!("--filter {filter}: expected KEY=VALUE")));
        };
        let test = row_filter(&rows, key, value)?;
        rows.retain(|row| test(row));
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
    let title =
        format!("{} run(s): {}", chosen.len(), chosen.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "));
    let options = TableOptions {
        metrics: &args.metrics,
        baseline: args.baseline.as_deref(),
        only_changed: args.only_changed,
        compact: args.format == Format::Terminal && !args.wide,
    };
    match args.format {
        // Numbers in numeric fields: what pandas and jq read.
        Format::Csv => print!("{}", records::to_csv(&records::numeric_records(&rows, &options))),
        Format::Json => {
            let table = compare::comparison_table(&title, &rows, &options);
            let document = serde_json::json!({
                "title": title,
                "rows": records::to_json(&records::numeric_records(&rows, &options)),
                "notes": table.notes,
            });
            println!("{}", serde_json::to_string_pretty(&document).expect("serializes"));
        }
        format => print!("{}", compare::comparison_table(&title, &rows, &options).render(format, args.wide)),
    }
    Ok(ExitCode::SUCCESS)
}

/// "`--flag`: unknown <what> `value`; known: a, b (did you mean `x`?)", exit 2.
fn unknown<'a>(flag: &str, what: &str, value: &str, known: impl Iterator<Item = &'a str> + Clone) -> Failure {
    let list: Vec<&str> = known.clone().collect();
    let mut message = format!("{flag}: unknown {what} `{value}`; the runs have {}", list.join(", "));
    if let Some(s) = limaml::spec::did_you_mean(value, known) {
        message.push_str(&format!(" (did you mean `{s}`?)"));
    }
    Failure::BadInput(message)
}

/// Whether a row passes a `--filter`.
type RowTest = Box<dyn Fn(&compare::Row) -> bool>;

/// The test of `--filter KEY=VALUE`. KEY: `method` (or `label`), a parameter as compare shows it
/// (`method.inner_lr`, `train.epochs`, `split.setting`), or the spec's own dotted path
/// (`methods.limaml.inner_lr`: rows of method `limaml` with `method.inner_lr` = VALUE). Unknown
/// keys, and values no row has, are errors.
fn row_filter(rows: &[compare::Row], key: &str, value: &str) -> Result<RowTest, Failure> {
    let flag = format!("--filter {key}={value}");
    if key == "method" || key == "label" {
        let names: BTreeSet<&str> = rows.iter().flat_map(|r| [r.method.as_str(), r.label.as_str()]).collect();
        if !names.contains(value) {
            return Err(unknown(&flag, "method", value, names.iter().copied()));
        }
        let value = value.to_string();
        return Ok(Box::new(move |row| row.method == value || row.label == value));
    }
    // The spec's path `methods.<name>.<param>` names a method and one of its parameters.
    let (method, param) = match key.strip_prefix("methods.").and_then(|rest| rest.split_once('.')) {
        Some((method, param)) => {
            if !rows.iter().any(|r| r.method == method) {
                let names: BTreeSet<&str> = rows.iter().map(|r| r.method.as_str()).collect();
                return Err(unknown(&flag, "method", method, names.iter().copied()));
            }
            (Some(method.to_string()), format!("method.{param}"))
        }
        None => (None, key.to_string()),
    };
    let keys: BTreeSet<&str> = rows.iter().flat_map(|r| r.params.keys().map(String::as_str)).chain(["method"]).collect();
    if !keys.contains(param.as_str()) {
        let mut message = format!("{flag}: unknown parameter `{key}`");
        let suggestion = limaml::spec::did_you_mean(&param, keys.iter().copied())
            .or_else(|| keys.contains(format!("method.{param}").as_str()).then(|| format!("method.{param}")));
        if let Some(s) = suggestion {
            message.push_str(&format!(" (did you mean `{s}`?)"));
        }
        message.push_str("; `limaml compare --only-changed` shows the parameters that differ");
        return Err(Failure::BadInput(message));
    }
    let matches = {
        let (method, param, value) = (method.clone(), param.clone(), value.to_string());
        move |row: &compare::Row| {
            method.as_ref().is_none_or(|m| &row.method == m) && row.params.get(&param).is_some_and(|v| same_value(v, &value))
        }
    };
    if !rows.iter().any(&matches) {
        let values: BTreeSet<&str> = rows
            .iter()
            .filter(|r| method.as_ref().is_none_or(|m| &r.method == m))
            .filter_map(|r| r.params.get(&param).map(String::as_str))
            .collect();
        return Err(Failure::BadInput(format!(
            "{flag}: no row has {param} = {value}; its values: {}",
            values.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Box::new(matches))
}

/// Equal as text, or as numbers (`0.5` matches `0.50`).
fn same_value(shown: &str, wanted: &str) -> bool {
    shown == wanted || matches!((shown.parse::<f64>(), wanted.parse::<f64>()), (Ok(a), Ok(b)) if a == b)
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
