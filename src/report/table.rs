//! A plain table (header + string cells + per-cell provenance) and its renderings: the terminal
//! (comfy-table), Markdown, CSV, LaTeX (booktabs) and JSON. Owns formatting only.

use std::fmt::Write as _;

use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
use serde::Serialize;

/// Output formats of `compare --format` and the files `reproduce` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Terminal,
    Md,
    Csv,
    Latex,
    Json,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableData {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// For each row, the stage keys whose records the row's numbers come from.
    pub provenance: Vec<Vec<String>>,
    /// Lines printed under the table (warnings, notes).
    pub notes: Vec<String>,
}

impl TableData {
    pub fn new(title: impl Into<String>, header: Vec<&str>) -> Self {
        TableData { title: title.into(), header: header.into_iter().map(String::from).collect(), ..Default::default() }
    }

    pub fn push(&mut self, row: Vec<String>, stage_keys: Vec<String>) {
        self.rows.push(row);
        self.provenance.push(stage_keys);
    }

    pub fn render(&self, format: Format, wide: bool) -> String {
        match format {
            Format::Terminal => self.terminal(wide),
            Format::Md => self.markdown(),
            Format::Csv => self.csv(),
            Format::Latex => self.latex(),
            Format::Json => self.json(),
        }
    }

    fn terminal(&self, wide: bool) -> String {
        let mut table = Table::new();
        table.load_style(presets::UTF8_FULL_CONDENSED).set_header(self.header.clone());
        table.set_content_arrangement(if wide { ContentArrangement::Disabled } else { ContentArrangement::Dynamic });
        // Off a terminal (a pipe, a test), fit $COLUMNS or 80 columns unless --wide.
        let width = (!wide).then(terminal_width);
        if let (Some(width), false) = (width, table.is_tty()) {
            table.set_width(width as u16);
        }
        for row in &self.rows {
            table.add_row(row.iter().enumerate().map(|(i, text)| {
                let cell = Cell::new(text);
                if i > 0 && looks_numeric(text) {
                    cell.set_alignment(CellAlignment::Right)
                } else {
                    cell
                }
            }));
        }
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "{}", self.title);
        }
        let _ = writeln!(out, "{table}");
        let note_width = if wide { usize::MAX } else { table.width().map_or(80, usize::from) };
        for note in &self.notes {
            let _ = writeln!(out, "{}", wrap(note, note_width));
        }
        out
    }

    fn markdown(&self) -> String {
        let escape = |s: &str| s.replace('|', "\\|");
        let mut out = String::new();
        if !self.title.is_empty() {
            let _ = writeln!(out, "### {}\n", self.title);
        }
        let _ = writeln!(out, "| {} |", self.header.iter().map(|h| escape(h)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(
            out,
            "|{}|",
            self.header
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---" } else { "---:" })
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.iter().map(|c| escape(c)).collect::<Vec<_>>().join(" | "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n{note}");
        }
        out
    }

    fn csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(&self.header).expect("in-memory csv");
        for row in &self.rows {
            writer.write_record(row).expect("in-memory csv");
        }
        String::from_utf8(writer.into_inner().expect("in-memory csv")).expect("utf-8 cells")
    }

    fn latex(&self) -> String {
        let escape = |s: &str| {
            s.replace('\\', "\\textbackslash{}")
                .replace('&', "\\&")
                .replace('%', "\\%")
                .replace('_', "\\_")
                .replace('#', "\\#")
                .replace('±', "$\\pm$")
                .replace('—', "--")
                .replace('Δ', "$\\Delta$")
        };
        let columns: String = self.header.iter().enumerate().map(|(i, _)| if i == 0 { 'l' } else { 'r' }).collect();
        let mut out = String::new();
        let _ = writeln!(out, "\\begin{{table}}[t]\n\\centering");
        if !self.title.is_empty() {
            let _ = writeln!(out, "\\caption{{{}}}", escape(&self.title));
        }
        let _ = writeln!(out, "\\begin{{tabular}}{{{columns}}}\n\\toprule");
        let _ =
            writeln!(out, "{} \\\\\n\\midrule", self.header.iter().map(|h| escape(h)).collect::<Vec<_>>().join(" & "));
        for row in &self.rows {
            let _ = writeln!(out, "{} \\\\", row.iter().map(|c| escape(c)).collect::<Vec<_>>().join(" & "));
        }
        let _ = writeln!(out, "\\bottomrule\n\\end{{tabular}}\n\\end{{table}}");
        out
    }

    fn json(&self) -> String {
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = self
            .rows
            .iter()
            .zip(&self.provenance)
            .map(|(row, keys)| {
                let mut object: serde_json::Map<String, serde_json::Value> =
                    self.header.iter().cloned().zip(row.iter().map(|c| serde_json::Value::String(c.clone()))).collect();
                object.insert("stage_keys".into(), keys.clone().into());
                object
            })
            .collect();
        let document =
            serde_json::json!({ "title": self.title, "columns": self.header, "rows": rows, "notes": self.notes });
        serde_json::to_string_pretty(&document).expect("serializes") + "\n"
    }
}

/// The width to fit when stdout is not a terminal: `$COLUMNS`, else 80.
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|&c: &usize| c >= 20).unwrap_or(80)
}

/// `text` broken at spaces into lines of at most `width` characters (longer words stay whole).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ') {
        let length = word.chars().count();
        if line > 0 && line + 1 + length > width {
            out.push_str("\n  ");
            line = 2;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += length;
    }
    out
}

fn looks_numeric(text: &str) -> bool {
    text.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '—')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TableData {
        let mut table = TableData::new("Main, 3 seeds", vec!["method", "AUC", "lift %"]);
        table.push(vec!["global".into(), "0.7000 ± 0.0100".into(), "—".into()], vec!["k1".into()]);
        table.push(vec!["wide_deep, \"x\"".into(), "0.7100 ± 0.0100".into(), "+1.43".into()], vec!["k2".into()]);
        table
    }

    #[test]
    fn csv_quotes_cells_that_need_it_and_parses_back() {
        let text = sample().render(Format::Csv, false);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[1][0], "wide_deep, \"x\"");
    }

    #[test]
    fn json_parses_and_links_rows_to_stage_keys() {
        let value: serde_json::Value = serde_json::from_str(&sample().render(Format::Json, false)).unwrap();
        assert_eq!(value["rows"][1]["stage_keys"][0], "k2");
        assert_eq!(value["rows"][0]["AUC"], "0.7000 ± 0.0100");
    }

    #[test]
    fn latex_is_a_booktabs_tabular_with_one_row_per_line_and_escaped_cells() {
        let text = sample().render(Format::Latex, false);
        assert!(text.contains("\\begin{tabular}{lrr}"));
        assert!(text.contains("\\toprule") && text.contains("\\midrule") && text.contains("\\bottomrule"));
        assert!(text.contains("0.7000 $\\pm$ 0.0100"));
        assert!(text.contains("lift \\%"));
        assert_eq!(text.lines().filter(|l| l.ends_with("\\\\")).count(), 3);
    }

    #[test]
    fn markdown_has_a_header_separator_and_a_row_per_entry() {
        let text = sample().render(Format::Md, false);
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("|---|"));
    }
}
