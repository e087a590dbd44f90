//! The command method: a user's own program (PyTorch, scikit-learn, RecBole, plain Python)
//! run as one method among the built-in ones, through the exchange contract, format version
//! [`EXCHANGE_FORMAT_VERSION`] (README, "Bring your own model").
//!
//! Owns the exchange: writing a fresh folder with `manifest.json`, `train.csv`, `support.csv`
//! and `eval.csv`; running the command there (with its timeout); checking the `scores.csv` it
//! writes (every eval row once, finite, in [0, 1]) and the optional `meta_embeddings.csv`; and
//! the "model" that results, whose weights are the checked scores, looked up by
//! [`stored_predictions`]. Also which words of a command line are files ([`file_words`]) and
//! their resolution against the spec's folder ([`resolve`], path joins only).
//!
//! The one part of this crate that writes files and starts processes, only inside the exchange
//! folder it creates under the system's temporary folder (removed when the command succeeds,
//! kept for inspection when it fails). Must not hash files or know about stage keys (the stage
//! does), and must not evaluate: the scores go through the same evaluator as every method's.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use limaml_data::{Interactions, TaskRole, TaskSet};

use crate::config::{CommandConfig, MethodConfig, TrainConfig};
use crate::embeddings::MetaEmbeddingTable;
use crate::error::ModelError;
use crate::eval::{query_rows, Predictions};
use crate::inputs::DataShape;
use crate::train::TrainedModel;

/// The version of the exchange contract written to `manifest.json`. Bump it when a file, a
/// column or a check changes meaning.
pub const EXCHANGE_FORMAT_VERSION: u32 = 1;

/// The roles whose query rows `eval.csv` holds, in this order of tasks (task order, filtered).
pub const EVAL_ROLES: [TaskRole; 2] = [TaskRole::Validation, TaskRole::Test];

/// Extensions that make a command word a script file even without a `/`.
const SCRIPT_EXTENSIONS: [&str; 9] = [".py", ".sh", ".R", ".r", ".jl", ".pl", ".rb", ".js", ".lua"];

/// Lines of the command's stderr kept in an error.
const STDERR_TAIL_LINES: usize = 20;

/// The words of a command line that name files, with their positions: the program when it
/// holds a `/`, and every later word that does not start with `-` and holds a `/` or ends in
/// a script extension.
pub fn file_words(command: &[String]) -> Vec<(usize, &str)> {
    command
        .iter()
        .enumerate()
        .filter(|(i, word)| {
            if *i == 0 {
                word.contains('/')
            } else {
                !word.starts_with('-')
                    && (word.contains('/') || SCRIPT_EXTENSIONS.iter().any(|e| word.ends_with(e)))
            }
        })
        .map(|(i, word)| (i, word.as_str()))
        .collect()
}

/// Every file the command's result depends on, as written: its file words, then `files`.
pub fn dependency_paths(config: &CommandConfig) -> Vec<&str> {
    file_words(&config.command)
        .into_iter()
        .map(|(_, word)| word)
        .chain(config.files.iter().map(String::as_str))
        .collect()
}

/// The configuration with its file words and `files` joined onto `base_dir` (relative ones
/// only). Reads nothing.
pub fn resolve(config: &CommandConfig, base_dir: &Path) -> CommandConfig {
    let join = |word: &str| {
        let path = Path::new(word);
        if path.is_absolute() { word.to_string() } else { base_dir.join(path).display().to_string() }
    };
    let mut resolved = config.clone();
    for (i, word) in file_words(&config.command) {
        resolved.command[i] = join(word);
    }
    resolved.files = config.files.iter().map(|f| join(f)).collect();
    resolved
}

/// Runs the command on the exchange files of `tasks` and keeps its checked scores as the
/// model. `config` must be [`resolve`]d (the command runs in another folder).
pub fn run(
    config: &CommandConfig,
    train: &TrainConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
) -> Result<TrainedModel, ModelError> {
    let folder = fresh_folder().map_err(|e| ModelError::Exchange(format!("cannot create the exchange folder: {e}")))?;
    let exchange_error = |e: io::Error| ModelError::Exchange(format!("{}: {e}", folder.display()));
    let (eval_rows, eval_tasks) = query_rows(tasks, &EVAL_ROLES);
    write_exchange(&folder, config, interactions, tasks, seed, &eval_rows, &eval_tasks).map_err(exchange_error)?;
    let outcome = run_in(&folder, config).and_then(|(status, stderr_tail)| {
        let fail = |what: String| ModelError::CommandFailed {
            command: config.command.join(" "),
            what,
            stderr_tail: stderr_tail.clone(),
            folder: folder.clone(),
        };
        if !status.success() {
            return Err(fail(format!("exited with {}", describe(status))));
        }
        let scores = match fs::read_to_string(folder.join("scores.csv")) {
            Ok(text) => parse_scores(&text, eval_rows.len()).map_err(|e| fail(format!("wrote a bad scores.csv: {e}")))?,
            Err(e) => return Err(fail(format!("exited with status 0 but wrote no readable scores.csv ({e})"))),
        };
        let meta_embeddings = match fs::read_to_string(folder.join("meta_embeddings.csv")) {
            Ok(text) => Some(
                parse_meta_embeddings(&text, tasks).map_err(|e| fail(format!("wrote a bad meta_embeddings.csv: {e}")))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail(format!("wrote an unreadable meta_embeddings.csv ({e})"))),
        };
        Ok((scores, meta_embeddings))
    });
    let (scores, meta_embeddings) = outcome?;
    // Kept on failure (the error names it); the scores are all that is needed now.
    let _ = fs::remove_dir_all(&folder);
    Ok(TrainedModel {
        method: MethodConfig::Command(config.clone()),
        train: train.clone(),
        seed,
        shape: DataShape::of(tasks),
        weights: scores.iter().flat_map(|s| s.to_le_bytes()).collect(),
        curve: Vec::new(),
        best_epoch: 0,
        l2_search: None,
        meta_embeddings,
    })
}

/// The stored scores of the query rows of the tasks with one of `roles`, in task order (the
/// order [`crate::predict`] gives every method's).
pub fn stored_predictions(model: &TrainedModel, tasks: &TaskSet, roles: &[TaskRole]) -> Result<Predictions, ModelError> {
    let shape = DataShape::of(tasks);
    if shape != model.shape {
        return Err(ModelError::ShapeMismatch(format!("trained on {:?}, given {:?}", model.shape, shape)));
    }
    let (eval_rows, eval_tasks) = query_rows(tasks, &EVAL_ROLES);
    if model.weights.len() != 4 * eval_rows.len() {
        return Err(ModelError::ShapeMismatch(format!(
            "the command scored {} rows, the task set has {} to score",
            model.weights.len() / 4,
            eval_rows.len()
        )));
    }
    let mut predictions = Predictions::default();
    for (k, (&row, &task)) in eval_rows.iter().zip(&eval_tasks).enumerate() {
        if roles.contains(&tasks.tasks[task as usize].role) {
            let bytes: [u8; 4] = model.weights[4 * k..4 * k + 4].try_into().expect("4 bytes");
            predictions.rows.push(row);
            predictions.task_index.push(task);
            predictions.score.push(f32::from_le_bytes(bytes));
        }
    }
    Ok(predictions)
}

fn fresh_folder() -> io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let folder = std::env::temp_dir().join(format!("limaml-command-{}-{nanos}-{n}", std::process::id()));
    fs::create_dir_all(&folder)?;
    Ok(folder)
}

/// A feature column's name in the CSVs: `user_` or `item_` and the encoder's column name,
/// anything but letters, digits, `_`, `.`, `=` and `-` replaced by `_`.
fn column_name(side: &str, name: &str) -> String {
    let clean: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.=-".contains(c) { c } else { '_' }).collect();
    format!("{side}_{clean}")
}

fn write_exchange(
    folder: &Path,
    config: &CommandConfig,
    interactions: &Interactions,
    tasks: &TaskSet,
    seed: u64,
    eval_rows: &[u32],
    eval_tasks: &[u32],
) -> io::Result<()> {
    let f = &tasks.features;
    let user_columns: Vec<String> = f.user_columns.iter().map(|c| column_name("user", c)).collect();
    let item_columns: Vec<String> = f.item_columns.iter().map(|c| column_name("item", c)).collect();
    let feature_header = user_columns.iter().chain(&item_columns).fold(String::new(), |mut out, c| {
        out.push(',');
        out.push_str(c);
        out
    });
    let features = |out: &mut String, row: u32| {
        let (user, item) = (interactions.user[row as usize] as usize, interactions.item[row as usize] as usize);
        for v in &f.user_features[user * f.user_dim..(user + 1) * f.user_dim] {
            let _ = write!(out, ",{v}");
        }
        for v in &f.item_features[item * f.item_dim..(item + 1) * f.item_dim] {
            let _ = write!(out, ",{v}");
        }
    };
    let base = |out: &mut String, row: u32, label: bool| {
        let r = row as usize;
        let _ = write!(out, "{},{}", interactions.user[r], interactions.item[r]);
        if label {
            let _ = write!(out, ",{}", interactions.label[r]);
        }
        let _ = write!(out, ",{}", interactions.timestamp[r]);
        features(out, row);
        out.push('\n');
    };

    let mut train = format!("user,item,label,timestamp{feature_header}\n");
    let mut in_train = vec![false; interactions.len()];
    for &row in &tasks.baseline_train_rows {
        in_train[row as usize] = true;
        base(&mut train, row, true);
    }
    let mut support = format!("task,user,item,label,timestamp{feature_header}\n");
    let mut support_rows = 0usize;
    let mut eval_task_ids: Vec<u32> = eval_tasks.to_vec();
    eval_task_ids.dedup();
    for &t in &eval_task_ids {
        for &row in tasks.tasks[t as usize].support.iter().filter(|&&r| !in_train[r as usize]) {
            let _ = write!(support, "{t},");
            base(&mut support, row, true);
            support_rows += 1;
        }
    }
    let mut eval = format!("row,task,user,item,timestamp{feature_header}\n");
    for (k, (&row, &t)) in eval_rows.iter().zip(eval_tasks).enumerate() {
        let _ = write!(eval, "{k},{t},");
        base(&mut eval, row, false);
    }
    fs::write(folder.join("train.csv"), train)?;
    fs::write(folder.join("support.csv"), support)?;
    fs::write(folder.join("eval.csv"), eval)?;

    let distinct_train: HashSet<u32> = tasks.baseline_train_rows.iter().copied().collect();
    let manifest = serde_json::json!({
        "format_version": EXCHANGE_FORMAT_VERSION,
        "seed": seed,
        "params": config.params,
        "task_entity": tasks.entity,
        "n_users": f.n_users,
        "n_items": f.n_items,
        "features": {
            "user": f.user_columns.iter().zip(&user_columns).map(|(source, column)| serde_json::json!({"column": column, "source": source})).collect::<Vec<_>>(),
            "item": f.item_columns.iter().zip(&item_columns).map(|(source, column)| serde_json::json!({"column": column, "source": source})).collect::<Vec<_>>(),
            "standardized": "numeric columns are standardized with the statistics of the training entities; categorical ones are one-hot (0/1)",
        },
        "files": {
            "inputs": ["manifest.json", "train.csv", "support.csv", "eval.csv"],
            "outputs": {"scores": "scores.csv", "meta_embeddings": "meta_embeddings.csv (optional)"},
            "dependencies": config.files,
        },
        "rows": {"train": distinct_train.len(), "support": support_rows, "eval": eval_rows.len()},
    });
    let text = serde_json::to_string_pretty(&manifest).map_err(io::Error::other)?;
    fs::write(folder.join("manifest.json"), text)
}

/// Runs the command in `folder` until it exits or its timeout passes; returns its status and
/// the tail of its stderr (stdout and stderr go to files there).
fn run_in(folder: &Path, config: &CommandConfig) -> Result<(ExitStatus, String), ModelError> {
    let exchange_error = |e: io::Error| ModelError::Exchange(format!("{}: {e}", folder.display()));
    let stdout = fs::File::create(folder.join("stdout.txt")).map_err(exchange_error)?;
    let stderr = fs::File::create(folder.join("stderr.txt")).map_err(exchange_error)?;
    let (program, args) = config.command.split_first().expect("validated: the command names a program");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(folder)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| {
            let _ = fs::remove_dir_all(folder);
            ModelError::CommandNotStarted { program: program.clone(), reason: e.to_string() }
        })?;
    let started = Instant::now();
    let limit = config.timeout.map(Duration::from_secs_f64);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(exchange_error)? {
            break status;
        }
        if limit.is_some_and(|limit| started.elapsed() >= limit) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ModelError::CommandFailed {
                command: config.command.join(" "),
                what: format!("timed out after {}s and was killed", config.timeout.unwrap_or_default()),
                stderr_tail: stderr_tail(folder),
                folder: folder.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status, stderr_tail(folder)))
}

fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("signal {signal}");
        }
    }
    status.to_string()
}

fn stderr_tail(folder: &Path) -> String {
    let text = fs::read(folder.join("stderr.txt")).map(|b| String::from_utf8_lossy(&b).to_string()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
}

/// Checks `scores.csv` (header `row,score`, every row `0..n` exactly once, a finite score in
/// [0, 1]) and returns the scores in row order.
pub fn parse_scores(text: &str, n: usize) -> Result<Vec<f32>, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header = lines.next().map(|(_, l)| l.trim().trim_start_matches('\u{feff}').replace(' ', ""));
    if header.as_deref() != Some("row,score") {
        return Err(format!("the header is {:?}, expected \"row,score\"", header.unwrap_or_default()));
    }
    let mut scores: Vec<Option<f32>> = vec![None; n];
    for (i, line) in lines {
        let at = i + 1;
        let mut fields = line.split(',').map(str::trim);
        let (Some(row), Some(score), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {at}: expected two fields `row,score`, got {line:?}"));
        };
        let row: usize = row.parse().map_err(|_| format!("line {at}: row {row:?} is not a row id"))?;
        let score: f64 = score.parse().map_err(|_| format!("line {at}: score {score:?} is not a number"))?;
        if row >= n {
            return Err(format!("line {at}: row {row} is not in eval.csv (rows 0..{n})"));
        }
        if !score.is_finite() {
            return Err(format!("line {at}: the score of row {row} is {score}, not finite"));
        }
        if !(0.0..=1.0).contains(&score) {
            return Err(format!("line {at}: the score of row {row} is {score}, outside [0, 1] (a probability is needed)"));
        }
        if scores[row].replace(score as f32).is_some() {
            return Err(format!("line {at}: row {row} is scored twice"));
        }
    }
    let missing: Vec<usize> = (0..n).filter(|&k| scores[k].is_none()).collect();
    if let Some(first) = missing.first() {
        return Err(format!("{} of {n} eval rows have no score (the first: row {first})", missing.len()));
    }
    Ok(scores.into_iter().map(|s| s.expect("checked")).collect())
}

/// Checks `meta_embeddings.csv` (header `entity,m0,...`, one line per task entity, each once,
/// finite values) and returns it as a table.
fn parse_meta_embeddings(text: &str, tasks: &TaskSet) -> Result<MetaEmbeddingTable, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<String> = lines.next().map(|(_, l)| l.split(',').map(|f| f.trim().to_string()).collect()).unwrap_or_default();
    if header.first().map(String::as_str) != Some("entity") || header.len() < 2 {
        return Err("the header must be `entity,m0,m1,...`".into());
    }
    let dim = header.len() - 1;
    let n_entities = match tasks.entity {
        limaml_data::TaskEntity::User => tasks.features.n_users,
        limaml_data::TaskEntity::Item => tasks.features.n_items,
    };
    let mut rows: Vec<(u32, Vec<f32>)> = Vec::new();
    for (i, line) in lines {
        let at = i + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != dim + 1 {
            return Err(format!("line {at}: {} fields, the header has {}", fields.len(), dim + 1));
        }
        let entity: u32 = fields[0].parse().map_err(|_| format!("line {at}: entity {:?} is not an index", fields[0]))?;
        if entity as usize >= n_entities {
            return Err(format!("line {at}: entity {entity} is out of range 0..{n_entities}"));
        }
        let values = fields[1..]
            .iter()
            .map(|v| v.parse::<f32>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| format!("line {at}: every value must be a finite number"))?;
        rows.push((entity, values));
    }
    rows.sort_by_key(|(entity, _)| *entity);
    if let Some(pair) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("entity {} appears twice", pair[0].0));
    }
    Ok(MetaEmbeddingTable {
        entity_ids: rows.iter().map(|(e, _)| *e).collect(),
        dim,
        values: rows.into_iter().flat_map(|(_, v)| v).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_words_are_the_program_with_a_slash_and_path_or_script_arguments() {
        let words: Vec<String> =
            ["python3", "-u", "../models/pop.py", "--lr=0.1", "run.sh", "x"].iter().map(|s| s.to_string()).collect();
        assert_eq!(file_words(&words), vec![(2, "../models/pop.py"), (4, "run.sh")]);
        let words: Vec<String> = ["./models/run", "a/b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(file_words(&words), vec![(0, "./models/run"), (1, "a/b")]);
    }

    #[test]
    fn well_formed_scores_parse_in_row_order() {
        assert_eq!(parse_scores("row,score\n1,0.25\n0,1\n", 2).unwrap(), vec![1.0, 0.25]);
    }

    #[test]
    fn each_malformed_score_file_is_named() {
        let cases = [
            ("row,score\n0,0.5\n", "1 of 2 eval rows have no score (the first: row 1)"),
            ("row,score\n0,0.5\n1,NaN\n", "not finite"),
            ("row,score\n0,0.5\n1,1.5\n", "outside [0, 1]"),
            ("row,score\n0,0.5\n0,0.5\n1,0.1\n", "row 0 is scored twice"),
            ("row,prob\n0,0.5\n1,0.1\n", "expected \"row,score\""),
            ("row,score\n0,0.5\n7,0.1\n", "row 7 is not in eval.csv"),
        ];
        for (text, expected) in cases {
            let error = parse_scores(text, 2).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
