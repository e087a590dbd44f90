//! Encoding: raw feature strings to vocabularies, and entity tables to dense model-ready rows.
//!
//! Owns the vocabulary rule (index 0 is "<unknown>", the rest sorted) and [`encode_features`]
//! (one-hot, multi-hot, standardization with training statistics only). Must not decide which
//! entities are training entities: the slicer passes that in.

use std::collections::BTreeSet;

use crate::types::{CategoricalField, EntityTable, FeatureTables, MultiHotField, NumericField};

/// The name of vocabulary index 0 in every vocabulary.
pub const UNKNOWN: &str = "<unknown>";

/// A vocabulary from raw values: `"<unknown>"` first, then the distinct non-empty values sorted.
pub fn build_vocabulary<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let distinct: BTreeSet<&str> = values
        .into_iter()
        .filter(|v| !v.is_empty() && *v != UNKNOWN)
        .collect();
    std::iter::once(UNKNOWN.to_string())
        .chain(distinct.into_iter().map(str::to_string))
        .collect()
}

fn code_of(vocabulary: &[String], value: &str) -> u32 {
    // Vocabulary[1..] is sorted, so binary search it; absent or empty values are unknown.
    match vocabulary[1..].binary_search_by(|v| v.as_str().cmp(value)) {
        Ok(i) => (i + 1) as u32,
        Err(_) => 0,
    }
}

/// A categorical field from one raw value per entity; empty strings map to the unknown bucket.
pub fn categorical_field(name: &str, raw_values: &[String]) -> CategoricalField {
    let vocabulary = build_vocabulary(raw_values.iter().map(String::as_str));
    let values = raw_values.iter().map(|v| code_of(&vocabulary, v)).collect();
    CategoricalField {
        name: name.to_string(),
        vocabulary,
        values,
    }
}

/// A multi-hot field from a set of raw values per entity. The vocabulary also starts with
/// "<unknown>" (an always-empty column) so every vocabulary follows the same rule.
pub fn multi_hot_field(name: &str, raw_values: &[Vec<String>]) -> MultiHotField {
    let vocabulary = build_vocabulary(raw_values.iter().flatten().map(String::as_str));
    let values = raw_values
        .iter()
        .map(|entity_values| {
            let codes: BTreeSet<u32> = entity_values
                .iter()
                .map(|v| code_of(&vocabulary, v))
                .filter(|&c| c != 0)
                .collect();
            codes.into_iter().collect()
        })
        .collect();
    MultiHotField {
        name: name.to_string(),
        vocabulary,
        values,
    }
}

/// A numeric field; missing values are NaN (they standardize to 0, the training mean).
pub fn numeric_field(name: &str, values: Vec<f32>) -> NumericField {
    NumericField {
        name: name.to_string(),
        values,
    }
}

/// Dense rows for one entity table. `fit[e]` marks the entities whose values define the
/// statistics: categorical values never seen among them map to the unknown column, numeric
/// columns are standardized with their mean and std.
pub fn encode_table(table: &EntityTable, fit: &[bool]) -> (Vec<f32>, usize, Vec<String>) {
    let mut columns = Vec::new();
    for field in &table.categorical {
        columns.extend(
            field
                .vocabulary
                .iter()
                .map(|v| format!("{}={}", field.name, v)),
        );
    }
    for field in &table.multi_hot {
        columns.extend(
            field
                .vocabulary
                .iter()
                .map(|v| format!("{}:{}", field.name, v)),
        );
    }
    for field in &table.numeric {
        columns.push(field.name.clone());
    }
    let dim = columns.len();
    let mut rows = vec![0.0f32; table.count * dim];

    let mut offset = 0;
    for field in &table.categorical {
        let mut seen = vec![false; field.vocabulary.len()];
        for (e, &code) in field.values.iter().enumerate() {
            if fit[e] {
                seen[code as usize] = true;
            }
        }
        for (e, &code) in field.values.iter().enumerate() {
            let code = if seen[code as usize] {
                code as usize
            } else {
                0
            };
            rows[e * dim + offset + code] = 1.0;
        }
        offset += field.vocabulary.len();
    }
    for field in &table.multi_hot {
        for (e, codes) in field.values.iter().enumerate() {
            for &code in codes {
                rows[e * dim + offset + code as usize] = 1.0;
            }
        }
        offset += field.vocabulary.len();
    }
    for field in &table.numeric {
        let (mean, std) = training_mean_std(&field.values, fit);
        for (e, &value) in field.values.iter().enumerate() {
            rows[e * dim + offset] = if value.is_finite() {
                (value - mean) / std
            } else {
                0.0
            };
        }
        offset += 1;
    }
    (rows, dim, columns)
}

/// Mean and std (population) of the finite values of fitting entities; std 1 when degenerate.
pub fn training_mean_std(values: &[f32], fit: &[bool]) -> (f32, f32) {
    let fitted: Vec<f64> = values
        .iter()
        .zip(fit)
        .filter(|(v, &f)| f && v.is_finite())
        .map(|(&v, _)| v as f64)
        .collect();
    if fitted.is_empty() {
        return (0.0, 1.0);
    }
    let mean = fitted.iter().sum::<f64>() / fitted.len() as f64;
    let variance = fitted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / fitted.len() as f64;
    let std = variance.sqrt();
    (mean as f32, if std > 1e-12 { std as f32 } else { 1.0 })
}

/// The feature tables for users and items, fitted on the marked entities.
pub fn encode_features(
    users: &EntityTable,
    items: &EntityTable,
    user_fit: &[bool],
    item_fit: &[bool],
) -> FeatureTables {
    let (user_features, user_dim, user_columns) = encode_table(users, user_fit);
    let (item_features, item_dim, item_columns) = encode_table(items, item_fit);
    let (item_tags, n_tags) = match items.multi_hot.first() {
        Some(tags) => (tags.values.clone(), tags.vocabulary.len()),
        None => (vec![Vec::new(); items.count], 0),
    };
    FeatureTables {
        n_users: users.count,
        n_items: items.count,
        user_features,
        user_dim,
        item_features,
        item_dim,
        item_tags,
        n_tags,
        user_columns,
        item_columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn vocabulary_starts_with_unknown_then_sorted_values() {
        let field = categorical_field("color", &strings(&["red", "blue", "", "red"]));
        assert_eq!(field.vocabulary, strings(&["<unknown>", "blue", "red"]));
        assert_eq!(field.values, vec![2, 1, 0, 2]);
    }

    #[test]
    fn categorical_values_unseen_in_training_encode_as_unknown() {
        let table = EntityTable {
            count: 2,
            raw_ids: strings(&["a", "b"]),
            categorical: vec![categorical_field("color", &strings(&["red", "blue"]))],
            multi_hot: vec![],
            numeric: vec![],
        };
        let (rows, dim, columns) = encode_table(&table, &[true, false]);
        assert_eq!(
            columns,
            strings(&["color=<unknown>", "color=blue", "color=red"])
        );
        assert_eq!(dim, 3);
        assert_eq!(&rows[0..3], &[0.0, 0.0, 1.0]);
        assert_eq!(
            &rows[3..6],
            &[1.0, 0.0, 0.0],
            "blue was never seen in training"
        );
    }

    #[test]
    fn multi_hot_sets_one_column_per_value() {
        let field = multi_hot_field("genre", &[strings(&["Drama", "Comedy"]), vec![]]);
        assert_eq!(field.vocabulary, strings(&["<unknown>", "Comedy", "Drama"]));
        assert_eq!(field.values, vec![vec![1, 2], vec![]]);
    }

    #[test]
    fn numeric_standardization_uses_only_fitting_entities() {
        let table = EntityTable {
            count: 3,
            raw_ids: strings(&["a", "b", "c"]),
            categorical: vec![],
            multi_hot: vec![],
            numeric: vec![numeric_field("age", vec![10.0, 20.0, 1000.0])],
        };
        let (rows, _, _) = encode_table(&table, &[true, true, false]);
        assert_eq!(rows[0], -1.0);
        assert_eq!(rows[1], 1.0);
        assert!((rows[2] - 197.0).abs() < 1e-4);
    }

    #[test]
    fn missing_numeric_values_encode_as_the_training_mean() {
        let table = EntityTable {
            count: 2,
            raw_ids: strings(&["a", "b"]),
            categorical: vec![],
            multi_hot: vec![],
            numeric: vec![numeric_field("year", vec![1990.0, f32::NAN])],
        };
        let (rows, _, _) = encode_table(&table, &[true, true]);
        assert_eq!(rows[1], 0.0);
    }
}
