//! The generic delimited-log loader (CSV, TSV) with a column mapping from [`CsvConfig`].
//!
//! Owns parsing one file of interaction rows into a [`Dataset`]. Entity features are taken from
//! each entity's first row. Fields may be wrapped in double quotes ("" escapes a quote).
//! Must not guess columns: everything comes from the mapping.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;

use crate::config::{BadRowPolicy, CsvConfig};
use crate::encode::{categorical_field, multi_hot_field, numeric_field};
use crate::error::DataError;
use crate::text::{excerpt, malformed, numbered_lines, read_utf8, BadRows};
use crate::types::{Dataset, EntityTable, Interactions};

/// Splits one line on `delimiter`, honouring double-quoted fields.
pub fn split_fields(line: &str, delimiter: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
        } else if c == '"' && field.is_empty() {
            in_quotes = true;
        } else if c == delimiter {
            fields.push(std::mem::take(&mut field));
        } else {
            field.push(c);
        }
    }
    fields.push(field);
    fields
}

/// Column indices resolved from the mapping.
struct Columns {
    user: usize,
    item: usize,
    label: Option<usize>,
    rating: Option<usize>,
    timestamp: Option<usize>,
    user_categorical: Vec<usize>,
    user_numeric: Vec<usize>,
    item_categorical: Vec<usize>,
    item_numeric: Vec<usize>,
    item_tags: Option<usize>,
}

fn resolve_columns(
    config: &CsvConfig,
    header: Option<&[String]>,
    path: &Path,
) -> Result<Columns, DataError> {
    let find = |name: &str| -> Result<usize, DataError> {
        let found = match header {
            Some(header) => header.iter().position(|h| h.trim() == name),
            None => name.trim().parse::<usize>().ok(),
        };
        found.ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: name.to_string(),
        })
    };
    let find_all = |names: &[String]| names.iter().map(|n| find(n)).collect::<Result<Vec<_>, _>>();
    let find_opt = |name: &Option<String>| name.as_deref().map(find).transpose();
    Ok(Columns {
        user: find(&config.user)?,
        item: find(&config.item)?,
        label: find_opt(&config.label)?,
        rating: find_opt(&config.rating)?,
        timestamp: find_opt(&config.timestamp)?,
        user_categorical: find_all(&config.user_categorical)?,
        user_numeric: find_all(&config.user_numeric)?,
        item_categorical: find_all(&config.item_categorical)?,
        item_numeric: find_all(&config.item_numeric)?,
        item_tags: find_opt(&config.item_tags)?,
    })
}

/// Raw features of one entity, from its first row.
struct RawEntity {
    categorical: Vec<String>,
    numeric: Vec<f32>,
    tags: Vec<String>,
}

/// One parsed row before entity indices are assigned.
struct RawRow {
    user: String,
    item: String,
    label: f32,
    timestamp: i64,
}

/// Numeric ids compare as numbers, others as strings, so "2" sorts before "10".
fn compare_ids(a: &str, b: &str) -> Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        _ => a.cmp(b),
    }
}

fn parse_label(value: &str) -> Option<f32> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(1.0),
        "false" | "no" => Some(0.0),
        // Exactly 0 or 1 ("1.0" too): a 2 is a rating in the wrong column, not a click.
        other => other
            .parse::<f32>()
            .ok()
            .filter(|v| *v == 0.0 || *v == 1.0),
    }
}

fn parse_numeric(value: &str) -> Option<f32> {
    let value = value.trim();
    if value.is_empty() {
        return Some(f32::NAN); // missing: standardizes to the training mean
    }
    value.parse::<f32>().ok()
}

/// Loads the delimited file at `path`.
pub fn load(
    path: &Path,
    config: &CsvConfig,
    click_threshold: f32,
    policy: BadRowPolicy,
) -> Result<Dataset, DataError> {
    let delimiter = config.delimiter.chars().next().unwrap_or(',');
    let text = read_utf8(path)?;
    let lines = numbered_lines(&text, path)?;
    let (header, body) = if config.has_header {
        (Some(split_fields(lines[0].1, delimiter)), &lines[1..])
    } else {
        (None, &lines[..])
    };
    let columns = resolve_columns(config, header.as_deref(), path)?;
    let n_columns = header.as_ref().map(Vec::len);

    let mut bad_rows = BadRows::new(policy);
    let mut rows = Vec::with_capacity(body.len());
    let mut users: HashMap<String, RawEntity> = HashMap::new();
    let mut items: HashMap<String, RawEntity> = HashMap::new();

    for (row_position, &(line_no, line)) in body.iter().enumerate() {
        let fields = split_fields(line, delimiter);
        if let Some(expected) = n_columns {
            if fields.len() != expected {
                bad_rows.reject(malformed(
                    path,
                    line_no,
                    line,
                    format!("expected {expected} fields, found {}", fields.len()),
                ))?;
                continue;
            }
        }
        let get = |i: usize| fields.get(i).map(|f| f.trim()).unwrap_or("");
        let needed = [
            Some(columns.user),
            Some(columns.item),
            columns.label,
            columns.rating,
            columns.timestamp,
        ];
        if let Some(max) = needed.iter().flatten().max() {
            if *max >= fields.len() {
                bad_rows.reject(malformed(
                    path,
                    line_no,
                    line,
                    format!(
                        "expected at least {} fields, found {}",
                        max + 1,
                        fields.len()
                    ),
                ))?;
                continue;
            }
        }
        let (user, item) = (get(columns.user), get(columns.item));
        if user.is_empty() || item.is_empty() {
            bad_rows.reject(malformed(path, line_no, line, "empty user or item id"))?;
            continue;
        }
        let label = if let Some(c) = columns.label {
            match parse_label(get(c)) {
                Some(label) => label,
                None => {
                    bad_rows.reject(malformed(
                        path,
                        line_no,
                        line,
                        format!("label `{}` is not 0/1 or true/false", excerpt(get(c))),
                    ))?;
                    continue;
                }
            }
        } else if let Some(c) = columns.rating {
            match get(c).parse::<f32>() {
                Ok(r) if r.is_finite() => {
                    if r >= click_threshold {
                        1.0
                    } else {
                        0.0
                    }
                }
                _ => {
                    bad_rows.reject(malformed(
                        path,
                        line_no,
                        line,
                        format!("rating `{}` is not a number", excerpt(get(c))),
                    ))?;
                    continue;
                }
            }
        } else {
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: "label or rating".to_string(),
            });
        };
        let timestamp = match columns.timestamp {
            Some(c) => match get(c).parse::<i64>().ok().or_else(|| {
                get(c)
                    .parse::<f64>()
                    .ok()
                    .filter(|t| t.is_finite())
                    .map(|t| t as i64)
            }) {
                Some(t) => t,
                None => {
                    bad_rows.reject(malformed(
                        path,
                        line_no,
                        line,
                        format!("timestamp `{}` is not a number", excerpt(get(c))),
                    ))?;
                    continue;
                }
            },
            None => row_position as i64,
        };
        let user_numeric: Option<Vec<f32>> = columns
            .user_numeric
            .iter()
            .map(|&c| parse_numeric(get(c)))
            .collect();
        let item_numeric: Option<Vec<f32>> = columns
            .item_numeric
            .iter()
            .map(|&c| parse_numeric(get(c)))
            .collect();
        let (Some(user_numeric), Some(item_numeric)) = (user_numeric, item_numeric) else {
            bad_rows.reject(malformed(
                path,
                line_no,
                line,
                "a numeric feature is not a number",
            ))?;
            continue;
        };
        users.entry(user.to_string()).or_insert_with(|| RawEntity {
            categorical: columns
                .user_categorical
                .iter()
                .map(|&c| get(c).to_string())
                .collect(),
            numeric: user_numeric,
            tags: Vec::new(),
        });
        items.entry(item.to_string()).or_insert_with(|| RawEntity {
            categorical: columns
                .item_categorical
                .iter()
                .map(|&c| get(c).to_string())
                .collect(),
            numeric: item_numeric,
            tags: columns
                .item_tags
                .map(|c| {
                    get(c)
                        .split('|')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        });
        rows.push(RawRow {
            user: user.to_string(),
            item: item.to_string(),
            label,
            timestamp,
        });
    }

    let (user_table, user_index) =
        entity_table(users, &config.user_categorical, &config.user_numeric, None);
    let tag_name = config.item_tags.as_ref().map(|_| "tags");
    let (item_table, item_index) = entity_table(
        items,
        &config.item_categorical,
        &config.item_numeric,
        tag_name,
    );
    let interactions = Interactions {
        user: rows.iter().map(|r| user_index[&r.user]).collect(),
        item: rows.iter().map(|r| item_index[&r.item]).collect(),
        label: rows.iter().map(|r| r.label).collect(),
        timestamp: rows.iter().map(|r| r.timestamp).collect(),
        true_probability: None,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "csv".to_string());
    Ok(Dataset {
        name,
        users: user_table,
        items: item_table,
        interactions,
        dropped_rows: bad_rows.dropped,
    })
}

/// An entity table with indices in id order (numeric ids numerically).
fn entity_table(
    entities: HashMap<String, RawEntity>,
    categorical_names: &[String],
    numeric_names: &[String],
    tag_field: Option<&str>,
) -> (EntityTable, HashMap<String, u32>) {
    let mut ids: Vec<String> = entities.keys().cloned().collect();
    ids.sort_by(|a, b| compare_ids(a, b));
    let index: HashMap<String, u32> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), i as u32))
        .collect();
    let ordered: Vec<&RawEntity> = ids.iter().map(|id| &entities[id]).collect();
    let categorical = categorical_names
        .iter()
        .enumerate()
        .map(|(f, name)| {
            categorical_field(
                name,
                &ordered
                    .iter()
                    .map(|e| e.categorical[f].clone())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let numeric = numeric_names
        .iter()
        .enumerate()
        .map(|(f, name)| numeric_field(name, ordered.iter().map(|e| e.numeric[f]).collect()))
        .collect();
    let multi_hot = tag_field
        .map(|name| {
            vec![multi_hot_field(
                name,
                &ordered.iter().map(|e| e.tags.clone()).collect::<Vec<_>>(),
            )]
        })
        .unwrap_or_default();
    let table = EntityTable {
        count: ids.len(),
        raw_ids: ids,
        categorical,
        multi_hot,
        numeric,
    };
    (table, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_may_contain_the_delimiter() {
        assert_eq!(
            split_fields(r#"1,"a, b","say ""hi""""#, ','),
            vec!["1", "a, b", r#"say "hi""#]
        );
    }

    #[test]
    fn numeric_ids_sort_numerically() {
        let mut ids = vec!["10", "2", "b", "1"];
        ids.sort_by(|a, b| compare_ids(a, b));
        assert_eq!(ids, vec!["1", "2", "10", "b"]);
    }
}
