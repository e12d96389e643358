//! Drawing: grouped bar charts (pps, TCP), line charts (TCP by MTU, scaling) and the
//! latency percentile plot, as [`WIDTH`]×[`HEIGHT`] PNGs through plotters' bitmap
//! backend. Text uses the TTF registered by [`super::font`]; nothing here reads input.

use std::ops::Range;
use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::ChartError;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 700;

/// Colours for series, in order.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn err(path: &Path, e: impl std::fmt::Display) -> ChartError {
    ChartError::Render {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// One bar series: a name and a value per category (None: no bar, "n/a" is printed).
pub struct Bars {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// Grouped bars: one group per category, one bar per series; values printed on top.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    caption: &str,
    y_label: &str,
    categories: &[String],
    series: &[Bars],
    fmt: &dyn Fn(f64) -> String,
) -> Result<(), ChartError> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let root = titled(&root, path, title, caption)?;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = if max > 0.0 { max * 1.25 } else { 1.0 };
    let n = categories.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .margin(10)
        .x_label_area_size(60)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(|e| err(path, e))?;
    let label = |x: &f64| {
        let i = x.floor() as usize;
        if (x - i as f64 - 0.5).abs() < 1e-6 {
            categories.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&label)
        .y_desc(y_label)
        .y_label_formatter(&|v| fmt(*v))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(path, e))?;
    let k = series.len().max(1) as f64;
    let slot = 0.8 / k;
    for (si, s) in series.iter().enumerate() {
        let c = color(si);
        let mut bars = Vec::new();
        let mut texts = Vec::new();
        for (ci, v) in s.values.iter().enumerate().take(n) {
            let x0 = ci as f64 + 0.1 + si as f64 * slot;
            let x1 = x0 + slot * 0.92;
            match v {
                Some(v) => {
                    bars.push(Rectangle::new([(x0, 0.0), (x1, *v)], c.filled()));
                    texts.push(((x0 + x1) / 2.0, *v + top * 0.01, fmt(*v)));
                }
                None => texts.push(((x0 + x1) / 2.0, top * 0.01, "n/a".to_string())),
            }
        }
        chart
            .draw_series(bars)
            .map_err(|e| err(path, e))?
            .label(s.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.filled()));
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Bottom,
            ),
        );
        chart
            .draw_series(
                texts
                    .into_iter()
                    .map(|(x, y, t)| Text::new(t, (x, y), style.clone())),
            )
            .map_err(|e| err(path, e))?;
    }
    legend(&mut chart, path, SeriesLabelPosition::UpperRight)?;
    root.present().map_err(|e| err(path, e))
}

/// A title line and a smaller caption line (command, date, load) above the plot.
fn titled<'a>(
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    path: &Path,
    title: &str,
    caption: &str,
) -> Result<DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>, ChartError> {
    let (head, body) = root.split_vertically(64);
    head.draw_text(
        title,
        &("sans-serif", 24).into_font().color(&BLACK),
        (12, 8),
    )
    .map_err(|e| err(path, e))?;
    head.draw_text(
        caption,
        &("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
        (12, 40),
    )
    .map_err(|e| err(path, e))?;
    Ok(body)
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    path: &Path,
    at: SeriesLabelPosition,
) -> Result<(), ChartError>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| err(path, e))
}

/// One line of a line chart: points, whether it is a dashed reference, and optional
/// text printed above each point (empty: none).
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub reference: bool,
    pub labels: Vec<String>,
}

/// Lines over a log-scale x axis (e.g. MTU) or a linear one, linear or log y.
#[allow(clippy::too_many_arguments, reason = "one call site per chart")]
pub fn lines(
    path: &Path,
    title: &str,
    caption: &str,
    (x_label, x_log): (&str, bool),
    (y_label, y_log): (&str, bool),
    lines: &[Line],
    x_fmt: &dyn Fn(f64) -> String,
    y_fmt: &dyn Fn(f64) -> String,
) -> Result<(), ChartError> {
    let pts = || lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(x, y) in pts() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (1.0, 2.0, 1.0, 2.0);
    }
    let xr = pad(x0..x1, x_log);
    // Headroom above the data for the legend (upper left).
    let yr = if y_log {
        let r = pad(y0..y1, true);
        r.start..r.end * 3.0
    } else {
        0.0..(y1 * 1.5).max(1e-9)
    };
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let root = titled(&root, path, title, caption)?;
    // Four axis combinations, one drawing routine.
    macro_rules! draw {
        ($xr:expr, $yr:expr) => {{
            let mut chart = ChartBuilder::on(&root)
                .margin(14)
                .x_label_area_size(50)
                .y_label_area_size(90)
                .build_cartesian_2d($xr, $yr)
                .map_err(|e| err(path, e))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .x_labels(24)
                .x_label_formatter(&|v| x_fmt(*v))
                .y_label_formatter(&|v| y_fmt(*v))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(|e| err(path, e))?;
            for (i, l) in lines.iter().enumerate() {
                let c = color(i);
                let style = ShapeStyle::from(&c).stroke_width(if l.reference { 1 } else { 2 });
                let drawn = if l.reference {
                    chart.draw_series(DashedLineSeries::new(l.points.iter().copied(), 8, 6, style))
                } else {
                    chart.draw_series(LineSeries::new(l.points.iter().copied(), style))
                };
                drawn
                    .map_err(|e| err(path, e))?
                    .label(l.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                if !l.reference && l.points.len() <= 30 {
                    chart
                        .draw_series(l.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                        .map_err(|e| err(path, e))?;
                }
                let style = TextStyle::from(("sans-serif", 13).into_font().color(&c)).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                );
                chart
                    .draw_series(
                        l.points
                            .iter()
                            .zip(&l.labels)
                            .filter(|(_, t)| !t.is_empty())
                            .map(|(&p, t)| {
                                EmptyElement::at(p) + Text::new(t.clone(), (0, -6), style.clone())
                            }),
                    )
                    .map_err(|e| err(path, e))?;
            }
            legend(&mut chart, path, SeriesLabelPosition::UpperLeft)?;
        }};
    }
    match (x_log, y_log) {
        (true, true) => draw!(xr.log_scale(), yr.log_scale()),
        (true, false) => draw!(xr.log_scale(), yr),
        (false, true) => draw!(xr, yr.log_scale()),
        (false, false) => draw!(xr, yr),
    }
    root.present().map_err(|e| err(path, e))
}

/// A range around [lo, hi] with some room (multiplicative on log axes, never ≤ 0 there).
fn pad(r: Range<f64>, log: bool) -> Range<f64> {
    if log {
        let lo = r.start.max(1e-9);
        let hi = r.end.max(lo * 1.0001);
        lo / 1.3..hi * 1.3
    } else {
        let span = (r.end - r.start).max(r.end.abs() * 0.1).max(1e-9);
        (r.start - span * 0.15)..(r.end + span * 0.15)
    }
}
