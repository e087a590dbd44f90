//! Where each key of a spec file sits: dotted key path -> line and column, read from toml's
//! spanned parse tree. Owns nothing else.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};

use super::error::Origin;

/// Dotted key path -> where it was written.
pub type Origins = BTreeMap<String, Origin>;

/// 1-based line and column of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// Longest source line an error shows, in characters (the rest is cut, with a mark).
pub const SHOWN_LINE_CHARS: usize = 160;

pub fn source_line(text: &str, line: usize) -> Option<String> {
    let line = text.lines().nth(line.checked_sub(1)?)?;
    Some(match line.char_indices().nth(SHOWN_LINE_CHARS) {
        None => line.to_string(),
        Some((cut, _)) => format!("{} ... ({} bytes in all)", &line[..cut], line.len()),
    })
}

/// Records the position of every key in `text` (already known to parse).
pub fn collect(file: &str, text: &str) -> Origins {
    let mut origins = Origins::new();
    if let Ok(table) = DeTable::parse(text) {
        walk(file, text, "", table.get_ref(), &mut origins);
    }
    origins
}

fn walk(file: &str, text: &str, prefix: &str, table: &DeTable<'_>, out: &mut Origins) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        let (line, column) = line_column(text, key.span().start);
        out.entry(path.clone()).or_insert(Origin::File { file: file.to_string(), line, column });
        if let DeValue::Table(inner) = value.get_ref() {
            walk(file, text, &path, inner, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_keys_get_their_own_lines() {
        let text = "[experiment]\nname = \"x\"\n\n[methods.limaml]\nkind = \"limaml\"\ninner_lr = 0.1\n";
        let origins = collect("f.toml", text);
        assert_eq!(
            origins.get("methods.limaml.inner_lr"),
            Some(&Origin::File { file: "f.toml".into(), line: 6, column: 1 })
        );
        assert_eq!(origins.get("experiment.name"), Some(&Origin::File { file: "f.toml".into(), line: 2, column: 1 }));
    }
}
