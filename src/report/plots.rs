//! SVG plots for `reproduce` (plotters, SVG backend, no system fonts): AUC by activity segment
//! (grouped bars with error bars over seeds), AUC per deployment window, learning curves (mean
//! over seeds with a min-max band), and ablation curves. One colour per method in every plot
//! ([`color_of`]), integer ticks on integer axes, a light grid. Owns drawing only; every number
//! comes from the rows and stage records it is given.

use std::path::Path;

use plotters::prelude::*;

use super::compare::Row;

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of a method, the same in every plot: fixed for the built-in methods, else from
/// a hash of the name.
pub fn color_of(name: &str) -> RGBColor {
    let fixed = ["limaml", "global", "id_embedding", "wide_deep", "logistic", "oracle", "global_activity", "id_embedding_refresh"];
    match fixed.iter().position(|m| *m == name) {
        Some(i) => COLORS[i],
        None => COLORS[(blake3::hash(name.as_bytes()).as_bytes()[0] as usize) % COLORS.len()],
    }
}

const GRID: RGBColor = RGBColor(235, 235, 235);

fn draw_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("plot: {e}"))
}

/// One named series of (x, y) points, with an optional band (x, low, high) drawn under it.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, band: Vec::new() }
    }
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
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied().chain(s.band.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)])))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
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
    // Integer x values (epochs, windows, categories) get integer ticks only.
    let integer_axis = x_labels.is_some() || points.iter().all(|(x, _)| (x - x.round()).abs() < 1e-9);
    let label_text = |x: &f64| match x_labels {
        Some(labels) if (x - x.round()).abs() < 1e-6 => labels.get(x.round() as usize).cloned().unwrap_or_default(),
        Some(_) => String::new(),
        None if integer_axis => if (x - x.round()).abs() < 1e-6 { format!("{}", x.round()) } else { String::new() },
        None => format!("{x}"),
    };
    let ticks = if integer_axis { ((x_max - x_min).round() as usize + 1) * 4 + 1 } else { 8 };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(ticks.min(80))
        .x_label_formatter(&label_text)
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .draw()
        .map_err(draw_error)?;
    for s in series {
        let color = color_of(&s.name);
        if !s.band.is_empty() {
            let mut outline: Vec<(f64, f64)> = s.band.iter().map(|&(x, _, hi)| (x, hi)).collect();
            outline.extend(s.band.iter().rev().map(|&(x, lo, _)| (x, lo)));
            chart.draw_series(std::iter::once(Polygon::new(outline, color.mix(0.18).filled()))).map_err(draw_error)?;
        }
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
            band: Vec::new(),
            points: windows
                .iter()
                .enumerate()
                .filter_map(|(i, window)| Some((i as f64, row.metrics.get(&format!("{window}.auc"))?.mean)))
                .collect(),
        })
        .collect();
    line_chart(path, "Test AUC per window after training once", "window", "AUC", &series, Some(windows))
}

/// Test AUC per activity segment: a group of bars per segment, a bar per method (mean over
/// seeds) with an error bar of ± one std over seeds. Segments are categories, so bars, not lines.
pub fn segment_auc(path: &Path, rows: &[Row], segments: &[String]) -> std::io::Result<()> {
    let methods: Vec<&Row> = rows.iter().filter(|r| r.label != "oracle" && !r.label.contains('@')).collect();
    let value = |row: &Row, segment: &str| row.metrics.get(&format!("{segment}.auc")).map(|s| (s.mean, s.std));
    let values: Vec<f64> = methods
        .iter()
        .flat_map(|r| segments.iter().filter_map(|s| value(r, s)).flat_map(|(m, sd)| [m - sd, m + sd]))
        .collect();
    if values.is_empty() || segments.is_empty() {
        return Ok(());
    }
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let pad = ((hi - lo) * 0.15).max(1e-3);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let groups = segments.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("Test AUC by activity segment (mean ± std over seeds)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..groups - 0.5, (lo - pad)..(hi + pad))
        .map_err(draw_error)?;
    let label = |x: &f64| {
        if (x - x.round()).abs() < 1e-6 {
            segments.get(x.round() as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("activity segment")
        .y_desc("AUC")
        .x_labels(segments.len() * 4 + 1)
        .x_label_formatter(&label)
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .draw()
        .map_err(draw_error)?;
    let width = 0.8 / methods.len().max(1) as f64;
    for (m, row) in methods.iter().enumerate() {
        let color = color_of(&row.label);
        let left = |g: usize| g as f64 - 0.4 + m as f64 * width;
        let bars: Vec<(usize, f64, f64)> =
            segments.iter().enumerate().filter_map(|(g, s)| value(row, s).map(|(mean, sd)| (g, mean, sd))).collect();
        chart
            .draw_series(bars.iter().map(|&(g, mean, _)| {
                Rectangle::new([(left(g) + 0.01, lo - pad), (left(g) + width - 0.01, mean)], color.filled())
            }))
            .map_err(draw_error)?
            .label(row.label.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        chart
            .draw_series(bars.iter().map(|&(g, mean, sd)| {
                let x = left(g) + width / 2.0;
                PathElement::new(vec![(x, mean - sd), (x, mean + sd)], BLACK.stroke_width(1))
            }))
            .map_err(draw_error)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}
