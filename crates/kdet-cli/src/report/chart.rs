//! Line and grouped-bar charts of `kdet report` as inline SVG strings (no `xmlns`, no
//! fonts or styles from outside; every piece of text escaped): axes with nice ticks, a
//! log-10 y axis when the values span more than two decades, one `<polyline>` per
//! unbroken run of a series (`data-series` names it), a legend on the right.

use std::fmt::Write;

use super::svg::{
    Scale, escape, format_log_tick, format_tick, log_ticks, nice_ticks, wants_log_scale,
};

/// One line of a [`LineChart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub width: f64,
    pub dashed: bool,
    /// Dots on the points (for sparse series such as periodic evaluations).
    pub markers: bool,
    /// `(x, y)`; `None` (a term not logged at that step) breaks the line.
    pub points: Vec<(f64, Option<f64>)>,
}

/// How the y axis of a line chart is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum YAxis {
    /// Linear from 0 (or the minimum when negative), log-10 when [`wants_log_scale`].
    Auto,
    /// Linear from 0 (or the minimum when negative).
    Linear,
}

#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub y_axis: YAxis,
    pub series: Vec<Series>,
}

const PLOT_W: f64 = 500.0;
const PLOT_H: f64 = 230.0;
const LEFT: f64 = 58.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 44.0;
const FONT: &str = "font-family=\"system-ui,sans-serif\" font-size=\"11\"";

/// Width of a legend column for these names (about 6.5 px per character at 11 px).
fn legend_width(names: &[&str]) -> f64 {
    names
        .iter()
        .map(|n| n.chars().count() as f64 * 6.5 + 34.0)
        .fold(0.0, f64::max)
}

/// Legend entries (a line sample, or a square for bars, and the name) from `(x, y)` down.
fn legend(out: &mut String, x: f64, y: f64, entries: &[(&str, &str, bool, bool)]) {
    for (i, (name, color, dashed, square)) in entries.iter().enumerate() {
        let cy = y + i as f64 * 16.0;
        if *square {
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"18\" height=\"10\" fill=\"{color}\"/>",
                cy - 5.0
            );
        } else {
            let dash = if *dashed {
                " stroke-dasharray=\"5 3\""
            } else {
                ""
            };
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{cy:.1}\" x2=\"{:.1}\" y2=\"{cy:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                x + 18.0
            );
        }
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{cy:.1}\" dy=\"0.32em\" {FONT}>{}</text>",
            x + 24.0,
            escape(name)
        );
    }
}

/// Opening tag, background and title.
fn open_svg(out: &mut String, width: f64, height: f64, title: &str) {
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {width:.0} {height:.0}\" width=\"{width:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"{t}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
         <text x=\"{LEFT}\" y=\"18\" font-family=\"system-ui,sans-serif\" font-size=\"13\" font-weight=\"600\">{t}</text>",
        t = escape(title)
    );
}

/// Horizontal grid lines and labels of the y axis at the given `(value, label)` ticks.
fn y_ticks(out: &mut String, scale: &Scale, ticks: &[(f64, String)], plot_w: f64, faint: &[f64]) {
    for &v in faint {
        if let Some(f) = scale.frac(v) {
            let y = TOP + PLOT_H * (1.0 - f);
            let _ = write!(
                out,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#f2f2f2\"/>",
                LEFT + plot_w
            );
        }
    }
    for (v, label) in ticks {
        let Some(f) = scale.frac(*v) else { continue };
        let y = TOP + PLOT_H * (1.0 - f);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" dy=\"0.32em\" text-anchor=\"end\" {FONT}>{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            escape(label)
        );
    }
}

/// The axis frame and the axis labels.
fn frame(out: &mut String, plot_w: f64, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w:.1}\" height=\"{PLOT_H}\" fill=\"none\" stroke=\"#888\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" {FONT}>{}</text>\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\" {FONT}>{}</text>",
        LEFT + plot_w / 2.0,
        TOP + PLOT_H + 36.0,
        escape(x_label),
        TOP + PLOT_H / 2.0,
        escape(y_label)
    );
}

/// A line chart: x and y axes with nice ticks, one polyline per unbroken run of points of
/// each series (`data-series` names the series), and a legend on the right.
pub fn line_chart(chart: &LineChart) -> String {
    let ys: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .filter(|v| v.is_finite())
        .collect();
    let xs: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let log = chart.y_axis == YAxis::Auto && wants_log_scale(&ys);

    let x_max = xs.iter().copied().fold(0.0, f64::max);
    let x_min = xs.iter().copied().fold(0.0, f64::min);
    let x_ticks = nice_ticks(x_min, x_max, 6);
    let x_step = x_ticks[1] - x_ticks[0];
    let x_scale = Scale::Linear {
        lo: x_ticks[0],
        hi: x_ticks[x_ticks.len() - 1],
    };

    let (y_scale, y_labels, faint) = if log {
        let pos = ys.iter().copied().filter(|v| *v > 0.0);
        let (lo, hi) = pos.fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
        let exps = log_ticks(lo, hi);
        let (first, last) = (exps[0], exps[exps.len() - 1]);
        let faint: Vec<f64> = if last - first <= 4 {
            (first..last)
                .flat_map(|e| (2..10).map(move |m| m as f64 * 10f64.powi(e)))
                .collect()
        } else {
            Vec::new()
        };
        (
            Scale::Log {
                lo_exp: first as f64,
                hi_exp: last as f64,
            },
            exps.iter()
                .map(|&e| (10f64.powi(e), format_log_tick(e)))
                .collect::<Vec<_>>(),
            faint,
        )
    } else {
        let lo = ys.iter().copied().fold(0.0, f64::min);
        let hi = ys.iter().copied().fold(0.0, f64::max);
        let ticks = nice_ticks(lo, hi, 5);
        let step = ticks[1] - ticks[0];
        (
            Scale::Linear {
                lo: ticks[0],
                hi: ticks[ticks.len() - 1],
            },
            ticks.iter().map(|&t| (t, format_tick(t, step))).collect(),
            Vec::new(),
        )
    };

    let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
    let legend_w = legend_width(&names);
    let width = LEFT + PLOT_W + 16.0 + legend_w + 8.0;
    let height = (TOP + PLOT_H + BOTTOM).max(TOP + 16.0 * names.len() as f64 + 8.0);
    let mut out = String::new();
    open_svg(&mut out, width, height, &chart.title);
    y_ticks(&mut out, &y_scale, &y_labels, PLOT_W, &faint);
    for &t in &x_ticks {
        let Some(f) = x_scale.frac(t) else { continue };
        let x = LEFT + PLOT_W * f;
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" {FONT}>{}</text>",
            TOP + PLOT_H,
            TOP + PLOT_H + 16.0,
            format_tick(t, x_step)
        );
    }
    let y_label = if log {
        format!("{} (log scale)", chart.y_label)
    } else {
        chart.y_label.clone()
    };
    frame(&mut out, PLOT_W, &chart.x_label, &y_label);
    if ys.is_empty() {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#888\" {FONT}>no data yet</text>",
            LEFT + PLOT_W / 2.0,
            TOP + PLOT_H / 2.0
        );
    }

    for s in &chart.series {
        let to_xy = |(x, y): (f64, Option<f64>)| -> Option<(f64, f64)> {
            let fy = y_scale.frac(y?)?;
            let fx = x_scale.frac(x)?;
            Some((LEFT + PLOT_W * fx, TOP + PLOT_H * (1.0 - fy)))
        };
        let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &p in &s.points {
            match to_xy(p) {
                Some(xy) => segments.last_mut().expect("one segment at least").push(xy),
                None => segments.push(Vec::new()),
            }
        }
        let dash = if s.dashed {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        };
        let name = escape(&s.name);
        for seg in segments.iter().filter(|seg| !seg.is_empty()) {
            let points: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                out,
                "<polyline data-series=\"{name}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" stroke-linejoin=\"round\"{dash} points=\"{}\"><title>{name}</title></polyline>",
                s.color,
                s.width,
                points.join(" ")
            );
            if s.markers || seg.len() == 1 {
                for (x, y) in seg {
                    let _ = write!(
                        out,
                        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.8\" fill=\"{}\"/>",
                        s.color
                    );
                }
            }
        }
    }
    let entries: Vec<(&str, &str, bool, bool)> = chart
        .series
        .iter()
        .map(|s| (s.name.as_str(), s.color.as_str(), s.dashed, false))
        .collect();
    legend(&mut out, LEFT + PLOT_W + 16.0, TOP + 6.0, &entries);
    out.push_str("</svg>");
    out
}

/// One colour of a [`BarChart`]: a value per category (`None`: no bar).
#[derive(Debug, Clone)]
pub struct BarGroup {
    pub name: String,
    pub color: String,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub groups: Vec<BarGroup>,
}

/// Grouped bars: per category one bar per group, y from 0 with nice ticks; long category
/// lists get slanted labels and a wider plot.
pub fn bar_chart(chart: &BarChart) -> String {
    let n = chart.categories.len().max(1);
    let g = chart.groups.len().max(1);
    let bar_w = (60.0 / g as f64).clamp(4.0, 16.0);
    let slot = g as f64 * bar_w + 10.0;
    let plot_w = (n as f64 * slot).max(PLOT_W);
    let slot = plot_w / n as f64;
    let slanted = n > 10
        || chart
            .categories
            .iter()
            .any(|c| c.chars().count() as f64 * 6.5 > slot);
    let longest = chart
        .categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0);
    let bottom = if slanted {
        BOTTOM + longest as f64 * 4.6
    } else {
        BOTTOM
    };
    let hi = chart
        .groups
        .iter()
        .flat_map(|gr| gr.values.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let ticks = nice_ticks(0.0, hi, 5);
    let step = ticks[1] - ticks[0];
    let scale = Scale::Linear {
        lo: 0.0,
        hi: ticks[ticks.len() - 1],
    };
    let names: Vec<&str> = chart.groups.iter().map(|gr| gr.name.as_str()).collect();
    let legend_w = legend_width(&names);
    let width = LEFT + plot_w + 16.0 + legend_w + 8.0;
    let height = (TOP + PLOT_H + bottom).max(TOP + 16.0 * names.len() as f64 + 8.0);
    let mut out = String::new();
    open_svg(&mut out, width, height, &chart.title);
    let labels: Vec<(f64, String)> = ticks.iter().map(|&t| (t, format_tick(t, step))).collect();
    y_ticks(&mut out, &scale, &labels, plot_w, &[]);
    for (ci, category) in chart.categories.iter().enumerate() {
        let x0 = LEFT + ci as f64 * slot + (slot - g as f64 * bar_w) / 2.0;
        for (gi, group) in chart.groups.iter().enumerate() {
            let Some(v) = group.values.get(ci).copied().flatten() else {
                continue;
            };
            let Some(f) = scale.frac(v.max(0.0)) else {
                continue;
            };
            let h = PLOT_H * f;
            let _ = write!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {} {v:.1}</title></rect>",
                x0 + gi as f64 * bar_w,
                TOP + PLOT_H - h,
                bar_w - 1.0,
                group.color,
                escape(&group.name),
                escape(category),
            );
        }
        let cx = LEFT + (ci as f64 + 0.5) * slot;
        let ly = TOP + PLOT_H + 14.0;
        if slanted {
            let _ = write!(
                out,
                "<text transform=\"translate({cx:.1} {ly:.1}) rotate(-40)\" text-anchor=\"end\" {FONT}>{}</text>",
                escape(category)
            );
        } else {
            let _ = write!(
                out,
                "<text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" {FONT}>{}</text>",
                escape(category)
            );
        }
    }
    let _ = write!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w:.1}\" height=\"{PLOT_H}\" fill=\"none\" stroke=\"#888\"/>\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\" {FONT}>{}</text>",
        TOP + PLOT_H / 2.0,
        escape(&chart.y_label)
    );
    let entries: Vec<(&str, &str, bool, bool)> = chart
        .groups
        .iter()
        .map(|gr| (gr.name.as_str(), gr.color.as_str(), false, true))
        .collect();
    legend(&mut out, LEFT + plot_w + 16.0, TOP + 6.0, &entries);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::svg::PALETTE;

    #[test]
    fn a_line_chart_has_one_polyline_per_unbroken_run_and_escapes_names() {
        let chart = LineChart {
            title: "a <b>".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            y_axis: YAxis::Auto,
            series: vec![
                Series {
                    name: "kd.<x>".into(),
                    color: PALETTE[0].into(),
                    width: 1.5,
                    dashed: true,
                    markers: false,
                    points: vec![
                        (1.0, Some(1.0)),
                        (2.0, None),
                        (3.0, Some(0.5)),
                        (4.0, Some(0.4)),
                    ],
                },
                Series {
                    name: "total".into(),
                    color: "#222".into(),
                    width: 3.0,
                    dashed: false,
                    markers: false,
                    points: vec![(1.0, Some(2.0)), (4.0, Some(1.0))],
                },
            ],
        };
        let svg = line_chart(&chart);
        assert_eq!(
            svg.matches("data-series=\"kd.&lt;x&gt;\"").count(),
            2,
            "{svg}"
        );
        assert_eq!(svg.matches("data-series=\"total\"").count(), 1);
        assert!(svg.contains("a &lt;b&gt;") && !svg.contains("<b>"));
        assert!(!svg.contains("log scale"), "1 to 0.4 is under a decade");
        // The lone point before the gap gets a dot.
        assert_eq!(svg.matches("<circle").count(), 1);
    }

    #[test]
    fn a_line_chart_switches_to_log_and_skips_zeros() {
        let chart = LineChart {
            title: "t".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            y_axis: YAxis::Auto,
            series: vec![Series {
                name: "a".into(),
                color: PALETTE[1].into(),
                width: 1.0,
                dashed: false,
                markers: false,
                points: vec![
                    (1.0, Some(10.0)),
                    (2.0, Some(0.0)),
                    (3.0, Some(0.01)),
                    (4.0, Some(0.02)),
                ],
            }],
        };
        let svg = line_chart(&chart);
        assert!(svg.contains("loss (log scale)"), "{svg}");
        assert_eq!(svg.matches("<polyline").count(), 2);
        let linear = line_chart(&LineChart {
            y_axis: YAxis::Linear,
            ..chart
        });
        assert!(!linear.contains("log scale"));
        assert_eq!(linear.matches("<polyline").count(), 1);
    }

    #[test]
    fn a_bar_chart_has_a_bar_per_known_value() {
        let svg = bar_chart(&BarChart {
            title: "per class".into(),
            y_label: "AP".into(),
            categories: vec!["circle".into(), "ring".into()],
            groups: vec![
                BarGroup {
                    name: "teacher".into(),
                    color: PALETTE[0].into(),
                    values: vec![Some(40.0), Some(10.0)],
                },
                BarGroup {
                    name: "student".into(),
                    color: PALETTE[1].into(),
                    values: vec![None, Some(5.0)],
                },
            ],
        });
        assert_eq!(svg.matches("<title>").count(), 3, "{svg}");
        assert!(svg.contains("<title>student: ring 5.0</title>"), "{svg}");
    }
}
