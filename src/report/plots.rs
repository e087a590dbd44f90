//! SVG plots for `reproduce` (plotters, SVG backend, no system fonts): lift by activity
//! segment, AUC per deployment window, learning curves, and ablation curves. Owns drawing only; every number comes from the
//! rows and stage records it is given.

use std::path::Path;

use plotters::prelude::*;

use super::compare::Row;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn draw_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("plot: {e}"))
}

/// One named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart; `x_labels` (when given) names integer x positions (categorical axes).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    x_labels: Option<&[String]>,
) -> std::io::Result<()> {
    let points: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
    if points.is_empty() {
        return Ok(());
    }
    let (mut x_min, mut x_max) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
    let (mut y_min, mut y_max) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(*y), b.max(*y)));
    if x_max - x_min < 1e-9 {
        x_min -= 0.5;
        x_max += 0.5;
    }
    let pad = ((y_max - y_min) * 0.1).max(1e-3);
    y_min -= pad;
    y_max += pad;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_min - 0.05 * (x_max - x_min)..x_max + 0.05 * (x_max - x_min), y_min..y_max)
        .map_err(draw_error)?;
    let label_text = |x: &f64| match x_labels {
        Some(labels) if (x - x.round()).abs() < 1e-6 => labels.get(x.round() as usize).cloned().unwrap_or_default(),
        Some(_) => String::new(),
        None => format!("{x}"),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(x_labels.map_or(8, |l| l.len() * 2 + 1))
        .x_label_formatter(&label_text)
        .draw()
        .map_err(draw_error)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

/// Test AUC per deployment window, one line per method: how each decays as its training data
/// ages (frozen) or keeps up (refreshed).
pub fn window_auc(path: &Path, rows: &[Row], windows: &[String]) -> std::io::Result<()> {
    let series: Vec<Series> = rows
        .iter()
        .filter(|r| r.label != "oracle" && !r.label.contains('@'))
        .map(|row| Series {
            name: row.label.clone(),
            points: windows
                .iter()
                .enumerate()
                .filter_map(|(i, window)| Some((i as f64, row.metrics.get(&format!("{window}.auc"))?.mean)))
                .collect(),
        })
        .collect();
    line_chart(path, "Test AUC per window after training once", "window", "AUC", &series, Some(windows))
}

/// AUC lift over global (%) per activity segment, one line per method.
pub fn segment_lift(path: &Path, rows: &[Row], segments: &[String]) -> std::io::Result<()> {
    let Some(global) = rows.iter().find(|r| r.label == "global") else { return Ok(()) };
    let series: Vec<Series> = rows
        .iter()
        .filter(|r| r.label != "global" && r.label != "oracle" && !r.label.contains('@'))
        .map(|row| Series {
            name: row.label.clone(),
            points: segments
                .iter()
                .enumerate()
                .filter_map(|(i, segment)| {
                    let metric = format!("{segment}.auc");
                    let (value, base) = (row.metrics.get(&metric)?, global.metrics.get(&metric)?);
                    Some((i as f64, 100.0 * (value.mean - base.mean) / base.mean))
                })
                .collect(),
        })
        .collect();
    line_chart(path, "AUC lift over global by activity segment", "activity segment", "AUC lift %", &series, Some(segments))
}
