//! One self-contained `index.html` (inline CSS, tables as HTML tables, plots as inline SVG, no
//! network, no script) for `reproduce` and `limaml report RUN...`.
//!
//! Owns [`write_index`] and the page's markup. Must not compute numbers: it draws the
//! [`TableData`] and the SVG files it is given.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::table::TableData;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.1em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}\
th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:right;white-space:nowrap}\
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}\
p.note{color:#555;font-size:.85em;margin:.2em 0}nav a{margin-right:1em}\
figure{margin:1em 0}figcaption{color:#555;font-size:.85em}";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An SVG file's markup for inlining (its XML declaration dropped).
fn inline_svg(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(match text.find("<svg") {
        Some(start) => text[start..].to_string(),
        None => text,
    })
}

/// Writes `dir/index.html`: a title, a table of contents, then each `(name, table)` as a
/// section, with the plots whose path lies in that table's folder (`dir/<name>/*.svg`) under
/// it, and any other plot at the end. Returns the page's path.
pub fn write_index(dir: &Path, title: &str, tables: &[(String, TableData)], plots: &[PathBuf]) -> std::io::Result<PathBuf> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1><nav>",
        escape(title),
        escape(title)
    );
    for (name, table) in tables {
        let _ = write!(html, "<a href=\"#{}\">{}</a>", escape(name), escape(table.title.split('.').next().unwrap_or(name)));
    }
    html.push_str("</nav>");
    let mut placed = vec![false; plots.len()];
    for (name, table) in tables {
        let _ = write!(html, "<section id=\"{}\"><h2>{}</h2><table><thead><tr>", escape(name), escape(&table.title));
        for column in &table.header {
            let _ = write!(html, "<th>{}</th>", escape(column));
        }
        html.push_str("</tr></thead><tbody>");
        for row in &table.rows {
            html.push_str("<tr>");
            for cell in row {
                let _ = write!(html, "<td>{}</td>", escape(cell));
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table>");
        for note in &table.notes {
            let _ = write!(html, "<p class=\"note\">{}</p>", escape(note));
        }
        for (i, plot) in plots.iter().enumerate() {
            if plot.parent().and_then(|p| p.file_name()).is_some_and(|f| f.to_string_lossy() == *name) {
                let _ = write!(html, "<figure>{}<figcaption>{}</figcaption></figure>", inline_svg(plot)?, escape(&plot.display().to_string()));
                placed[i] = true;
            }
        }
        html.push_str("</section>");
    }
    for (plot, _) in plots.iter().zip(&placed).filter(|(_, placed)| !**placed) {
        let _ = write!(html, "<figure>{}<figcaption>{}</figcaption></figure>", inline_svg(plot)?, escape(&plot.display().to_string()));
    }
    html.push_str("</body></html>\n");
    std::fs::create_dir_all(dir)?;
    let path = dir.join("index.html");
    let temporary = dir.join("index.html.partial");
    std::fs::write(&temporary, html)?;
    std::fs::rename(&temporary, &path)?;
    Ok(path)
}
