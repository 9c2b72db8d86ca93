//! Plots for `beets plan --plot` and `demo --plot`: a few stacked panels sharing an x axis,
//! drawn with `plotters` into an SVG document.
//!
//! SVG only: plotters' bitmap (PNG) backend needs a font rasteriser and a font file, which this
//! tool does not ship; convert the SVG (e.g. `rsvg-convert -o fig.png fig.svg`) if a PNG is
//! needed.

// Shared by the `beets` tool, the demo and the tests; each uses a part.
#![allow(dead_code)]

use std::path::Path;

use plotters::prelude::*;

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// Joined points.
    Line,
    /// Points only (reference values, events).
    Points,
}

/// One named series of (x, y) points.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
    pub(crate) style: Style,
}

impl Series {
    pub(crate) fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            style: Style::Line,
        }
    }

    pub(crate) fn points(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            style: Style::Points,
        }
    }
}

/// One chart: a y axis and its series.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Panel {
    pub(crate) y_label: String,
    pub(crate) series: Vec<Series>,
    /// Fixed y range; by default 0 to 110 % of the largest value.
    pub(crate) y_range: Option<(f64, f64)>,
    /// Legend in the lower right corner (for rising curves) instead of the upper right.
    pub(crate) legend_low: bool,
}

/// Panels stacked top to bottom, sharing the x axis label.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Figure {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) panels: Vec<Panel>,
}

fn x_range(fig: &Figure) -> (f64, f64) {
    let xs = fig
        .panels
        .iter()
        .flat_map(|p| &p.series)
        .flat_map(|s| &s.points)
        .map(|p| p.0);
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.03 } else { 1.0 };
    (lo - pad, hi + pad)
}

fn y_range(panel: &Panel) -> (f64, f64) {
    if let Some(r) = panel.y_range {
        return r;
    }
    let hi = panel
        .series
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    (0.0, if hi > 0.0 { hi * 1.1 } else { 1.0 })
}

/// The figure as an SVG document, 900 px wide and 330 px per panel.
pub(crate) fn svg(fig: &Figure) -> Result<String, String> {
    let mut out = String::new();
    let height = 60 + 330 * fig.panels.len().max(1) as u32;
    draw(fig, &mut out, (900, height)).map_err(|e| format!("plot: {e}"))?;
    Ok(out)
}

fn draw(
    fig: &Figure,
    out: &mut String,
    size: (u32, u32),
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, size).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&fig.title, ("sans-serif", 20))?;
    let areas = root.split_evenly((fig.panels.len().max(1), 1));
    let (x0, x1) = x_range(fig);
    for (panel, area) in fig.panels.iter().zip(&areas) {
        let (y0, y1) = y_range(panel);
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(62)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(fig.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .label_style(("sans-serif", 14))
            .x_label_formatter(&|x| format!("{x}"))
            .draw()?;
        for (k, s) in panel.series.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            match s.style {
                Style::Line => {
                    chart
                        .draw_series(
                            LineSeries::new(s.points.iter().copied(), color.stroke_width(2))
                                .point_size(3),
                        )?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                }
                Style::Points => {
                    let black = BLACK.to_rgba();
                    let c = if k == 0 && panel.series.len() == 1 {
                        color
                    } else {
                        black
                    };
                    chart
                        .draw_series(
                            s.points
                                .iter()
                                .map(move |&p| Cross::new(p, 7, c.stroke_width(3))),
                        )?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| Cross::new((x + 10, y), 6, c.stroke_width(3)));
                }
            }
        }
        if !panel.series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .position(if panel.legend_low {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                })
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// Writes the figure to `path` (`.svg`).
pub(crate) fn write(path: &Path, fig: &Figure) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("svg") => {}
        _ => {
            return Err(format!(
                "{}: only SVG plots are written (name the file *.svg; convert to PNG with e.g. rsvg-convert)",
                path.display()
            ));
        }
    }
    let text = svg(fig)?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The demo's timeline: published and delivered tuples per second (1 s bins over
/// `0..seconds`), and each survey's first-answer round trip (unanswered ones at 0, marked).
///
/// `published` and `delivered` are event times in seconds since the start; `surveys` is
/// (sent at, round trip in ms if answered).
pub(crate) fn timeline_figure(
    title: &str,
    published: &[f64],
    delivered: &[f64],
    surveys: &[(f64, Option<f64>)],
    seconds: u64,
) -> Figure {
    let bins = |times: &[f64]| -> Vec<(f64, f64)> {
        let mut counts = vec![0u64; seconds.max(1) as usize];
        for &t in times {
            if t >= 0.0 && (t as usize) < counts.len() {
                counts[t as usize] += 1;
            }
        }
        counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (i as f64 + 0.5, c as f64))
            .collect()
    };
    let answered: Vec<(f64, f64)> = surveys
        .iter()
        .filter_map(|&(t, rtt)| rtt.map(|r| (t, r)))
        .collect();
    let unanswered: Vec<(f64, f64)> = surveys
        .iter()
        .filter(|s| s.1.is_none())
        .map(|&(t, _)| (t, 0.0))
        .collect();
    let mut round_trips = vec![Series::points("survey round trip (first answer)", answered)];
    if !unanswered.is_empty() {
        round_trips.push(Series::points("survey not answered", unanswered));
    }
    Figure {
        title: title.to_owned(),
        x_label: "time since start (s)".into(),
        panels: vec![
            Panel {
                y_label: "tuples per second".into(),
                series: vec![
                    Series::line("published by the mobiles", bins(published)),
                    Series::line("delivered to the server (distinct)", bins(delivered)),
                ],
                y_range: None,
                legend_low: false,
            },
            Panel {
                y_label: "round trip (ms)".into(),
                series: round_trips,
                y_range: None,
                legend_low: false,
            },
        ],
    }
}
