//! The HTML page of `kdet report`: the runs table, the charts and the image grid, with
//! one inline stylesheet.

use std::fmt::Write;

use kdet_run::files::LossKey;

use super::chart::{BarChart, BarGroup, LineChart, Series, YAxis, bar_chart, line_chart};
use super::grid::{Grid, MIN_SCORE};
use super::runs::Run;
use super::svg::{PALETTE, escape};

/// The stats of the table, as named in `eval.json`.
const STATS: [&str; 6] = ["AP", "AP50", "AP75", "APs", "APm", "APl"];
/// Mean timings shown when a run logged them (`kdet distill`).
const TIMINGS: [(&str, &str); 2] = [("teacher_ms", "teacher ms"), ("kd_ms", "KD ms")];

/// The run the gains are measured against: the one labelled `student`, else the second.
fn baseline(runs: &[Run]) -> Option<usize> {
    runs.iter()
        .position(|r| r.label.eq_ignore_ascii_case("student"))
        .or((runs.len() >= 2).then_some(1))
}

fn run_color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// `12.3` (AP in percent, as papers print it).
/// A stat's table cell (`data-stat` names it; a dash when the run has none).
fn stat_cell(h: &mut String, stat: &str, value: Option<&f64>) {
    let _ = match value {
        Some(v) => write!(
            h,
            "<td class=\"num\" data-stat=\"{stat}\" title=\"{v:.6}\">{}</td>",
            percent(*v)
        ),
        None => write!(h, "<td class=\"num\" data-stat=\"{stat}\">{DASH}</td>"),
    };
}

fn percent(v: f64) -> String {
    format!("{:.1}", v * 100.0)
}

fn format_params(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn format_duration(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let s = s.round() as u64;
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

const DASH: &str = "–";

fn table(runs: &[Run]) -> String {
    let base = baseline(runs);
    let timings: Vec<(&str, &str)> = TIMINGS
        .iter()
        .copied()
        .filter(|(name, _)| runs.iter().any(|r| r.mean_timing(name).is_some()))
        .collect();
    let mut h = String::from(
        "<table class=\"runs\"><thead><tr><th>run</th><th>directory</th><th>status</th><th>params</th>",
    );
    for s in STATS {
        let _ = write!(h, "<th>{s}</th>");
    }
    // Mask models: their mask AP beside the box AP.
    let masks = runs
        .iter()
        .any(|r| r.eval.as_ref().is_some_and(|e| e.segm.is_some()));
    if masks {
        h.push_str("<th>mask AP</th><th>mask AP50</th>");
    }
    if let Some(b) = base {
        let _ = write!(h, "<th>ΔAP vs {}</th>", escape(&runs[b].label));
    }
    for (_, name) in &timings {
        let _ = write!(h, "<th>{name}</th>");
    }
    h.push_str("<th>train time</th></tr></thead><tbody>");
    let base_ap = base.and_then(|b| runs[b].eval.as_ref()?.stats.get("AP").copied());
    for (i, r) in runs.iter().enumerate() {
        let step = r
            .eval
            .as_ref()
            .and_then(|e| e.step)
            .or_else(|| r.metrics.as_ref()?.last_step());
        let status = match (r.is_running(), step) {
            (true, Some(s)) => format!("<span class=\"running\">running</span>, step {s}"),
            (true, None) => "<span class=\"running\">running</span>".to_string(),
            (false, Some(s)) => format!("done, step {s}"),
            (false, None) => "done".to_string(),
        };
        let _ = write!(
            h,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td class=\"dir\">{}</td><td>{status}</td>",
            run_color(i),
            escape(&r.label),
            escape(&r.dir.display().to_string())
        );
        match r.params {
            Some(n) => {
                let _ = write!(
                    h,
                    "<td class=\"num\" title=\"{n}\">{}</td>",
                    format_params(n)
                );
            }
            None => {
                let _ = write!(h, "<td class=\"num\">{DASH}</td>");
            }
        }
        for s in STATS {
            stat_cell(&mut h, s, r.eval.as_ref().and_then(|e| e.stats.get(s)));
        }
        if masks {
            for s in ["AP", "AP50"] {
                let v = r.eval.as_ref().and_then(|e| e.segm.as_ref()?.get(s));
                stat_cell(&mut h, &format!("segm_{s}"), v);
            }
        }
        let ap = r.eval.as_ref().and_then(|e| e.stats.get("AP").copied());
        match (base.map(|b| b == i), ap, base_ap) {
            (None, _, _) => {}
            (Some(true), _, _) => h.push_str("<td class=\"num base\">baseline</td>"),
            (Some(false), Some(a), Some(b)) => {
                let d = (a - b) * 100.0;
                let class = if d > 0.0 {
                    "pos"
                } else if d < 0.0 {
                    "neg"
                } else {
                    ""
                };
                let _ = write!(h, "<td class=\"num {class}\">{d:+.1}</td>");
            }
            _ => {
                let _ = write!(h, "<td class=\"num\">{DASH}</td>");
            }
        }
        for (name, _) in &timings {
            match r.mean_timing(name) {
                Some(v) => {
                    let _ = write!(h, "<td class=\"num\">{v:.1}</td>");
                }
                None => {
                    let _ = write!(h, "<td class=\"num\">{DASH}</td>");
                }
            }
        }
        let elapsed = r
            .metrics
            .as_ref()
            .and_then(|m| m.train.iter().rev().find_map(|p| p.elapsed_s));
        let _ = write!(
            h,
            "<td class=\"num\">{}</td></tr>",
            elapsed.map_or(DASH.to_string(), format_duration)
        );
    }
    h.push_str("</tbody></table>");
    h
}

/// Logged terms in plotting order: task losses, then KD terms (timings are not losses).
fn loss_terms(runs: &[Run]) -> Vec<String> {
    let mut terms: Vec<String> = runs
        .iter()
        .filter_map(|r| r.metrics.as_ref())
        .flat_map(|m| m.train.iter().flat_map(|p| p.losses.keys().cloned()))
        .collect();
    let rank = |t: &str| LossKey::parse(t).is_kd();
    terms.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
    terms.dedup();
    terms
}

/// The loss chart of a run; a term keeps its colour in every run's chart.
fn loss_chart(run: &Run, terms: &[String]) -> String {
    let train = run.metrics.as_ref().map_or(&[][..], |m| &m.train[..]);
    let markers = train.len() <= 12;
    let mut series = Vec::new();
    for (k, term) in terms.iter().enumerate() {
        if !train.iter().any(|p| p.losses.contains_key(term)) {
            continue;
        }
        series.push(Series {
            name: term.clone(),
            color: PALETTE[k % PALETTE.len()].to_string(),
            width: 1.5,
            dashed: LossKey::parse(term).is_kd(),
            markers,
            points: train
                .iter()
                .map(|p| (p.step as f64, p.losses.get(term).copied().flatten()))
                .collect(),
        });
    }
    if train.iter().any(|p| p.total.is_some()) {
        series.push(Series {
            name: "total".to_string(),
            color: "#222222".to_string(),
            width: 3.0,
            dashed: false,
            markers,
            points: train.iter().map(|p| (p.step as f64, p.total)).collect(),
        });
    }
    line_chart(&LineChart {
        title: format!("{}: training losses", run.label),
        x_label: "step".to_string(),
        y_label: "loss".to_string(),
        y_axis: YAxis::Auto,
        series,
    })
}

fn ap_chart(runs: &[Run]) -> String {
    let series = runs
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            name: r.label.clone(),
            color: run_color(i).to_string(),
            width: 2.0,
            dashed: false,
            markers: true,
            points: r.metrics.as_ref().map_or_else(Vec::new, |m| {
                m.evals
                    .iter()
                    .filter_map(|e| {
                        let ap = e.metrics.get("bbox_AP")?;
                        Some((e.step as f64, ap.map(|v| v * 100.0)))
                    })
                    .collect()
            }),
        })
        .collect();
    line_chart(&LineChart {
        title: "box AP during training".to_string(),
        x_label: "step".to_string(),
        y_label: "AP (%)".to_string(),
        y_axis: YAxis::Linear,
        series,
    })
}

/// Per-class bars of the runs with an `eval.json`; `None` when none has one.
fn class_chart(runs: &[Run]) -> Option<String> {
    let mut classes: Vec<String> = Vec::new();
    for e in runs.iter().filter_map(|r| r.eval.as_ref()) {
        for (name, _) in &e.per_class {
            if !classes.contains(name) {
                classes.push(name.clone());
            }
        }
    }
    if classes.is_empty() {
        return None;
    }
    let groups = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let e = r.eval.as_ref()?;
            Some(BarGroup {
                name: r.label.clone(),
                color: run_color(i).to_string(),
                values: classes
                    .iter()
                    .map(|c| {
                        let ap = e.per_class.iter().find(|(n, _)| n == c)?.1?;
                        Some(ap * 100.0)
                    })
                    .collect(),
            })
        })
        .collect();
    Some(bar_chart(&BarChart {
        title: "box AP per class (final evaluation)".to_string(),
        y_label: "AP (%)".to_string(),
        categories: classes,
        groups,
    }))
}

/// One CSS class per row with its picture as background (the cells are transparent).
fn grid_css(grid: &Grid) -> String {
    let mut css = String::new();
    for (k, row) in grid.rows.iter().enumerate() {
        let _ = write!(
            css,
            ".p{k}{{background-image:url(\"data:image/png;base64,{}\")}}",
            row.picture
        );
    }
    css
}

fn grid_html(grid: &Grid) -> String {
    let mut h = String::from("<div class=\"legend\">");
    for (i, name) in grid.class_names.iter().enumerate() {
        let c = crate::draw::class_color(i);
        let _ = write!(
            h,
            "<span><span class=\"swatch\" style=\"background:rgb({},{},{})\"></span>{}</span>",
            c[0],
            c[1],
            c[2],
            escape(name)
        );
    }
    h.push_str("</div><div class=\"scroll\"><table class=\"grid\"><thead><tr><th>image</th>");
    for head in &grid.headers {
        let _ = write!(h, "<th>{}</th>", escape(head));
    }
    h.push_str("</tr></thead><tbody>");
    for (row_index, row) in grid.rows.iter().enumerate() {
        let id = row.id;
        let _ = write!(
            h,
            "<tr><th>{}<br><small>id {id}</small></th>",
            escape(&row.file_name)
        );
        for (k, cell) in row.cells.iter().enumerate() {
            let what = if k == 0 {
                format!("{} objects", cell.drawn)
            } else {
                format!("{} detections ≥ {MIN_SCORE}", cell.drawn)
            };
            let _ = write!(
                h,
                "<td><img class=\"p{row_index}\" src=\"data:image/png;base64,{}\" width=\"{}\" height=\"{}\" alt=\"{} on image {id}\"><div class=\"cap\">{what}</div></td>",
                cell.png_base64,
                cell.width,
                cell.height,
                escape(&grid.headers[k])
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></div>");
    h
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1400px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.sub{color:#666;font-size:13px}.notes{background:#fff8e1;border:1px solid #f0d98c;padding:6px 12px 6px 28px;font-size:13px}\
table.runs{border-collapse:collapse;font-size:13px}table.runs th,table.runs td{padding:4px 8px;border-bottom:1px solid #e5e5e5;text-align:left}\
table.runs th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}td.dir{color:#666;font-size:12px}\
.pos{color:#1a7f37;font-weight:600}.neg{color:#c62828;font-weight:600}.base{color:#666}.running{color:#b26a00;font-weight:600}\
.swatch{display:inline-block;width:11px;height:11px;margin-right:6px;vertical-align:-1px;border-radius:2px}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.scroll{overflow-x:auto}svg.chart{max-width:100%;height:auto;border:1px solid #eee}\
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin-bottom:8px}\
table.grid{border-collapse:collapse;font-size:12px}table.grid td,table.grid th{padding:4px;text-align:center;vertical-align:top}\
table.grid img{image-rendering:pixelated;display:block;background-size:100% 100%;-webkit-print-color-adjust:exact;print-color-adjust:exact}.cap{color:#666}.caption{color:#666;font-size:13px}";

pub fn page(runs: &[Run], notes: &[String], grid: &Grid) -> String {
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>kdet report: {t}</title><style>{STYLE}{}</style></head><body>\
         <h1>kdet report</h1><div class=\"sub\">{t} · written by kdet {} from the run directories' logs</div>",
        grid_css(grid),
        env!("CARGO_PKG_VERSION"),
        t = escape(&labels.join(" · "))
    );
    if !notes.is_empty() {
        h.push_str("<ul class=\"notes\">");
        for n in notes {
            let _ = write!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Runs</h2>");
    h.push_str(&table(runs));
    h.push_str("<p class=\"caption\">COCO box AP in percent on the whole validation split (eval.json); hover a number for all its digits. Params: torch's count (BatchNorm statistics excluded) of the evaluated model.</p>");

    h.push_str("<h2>Training losses</h2><div class=\"charts\">");
    let terms = loss_terms(runs);
    for r in runs {
        h.push_str(&loss_chart(r, &terms));
    }
    h.push_str("</div><p class=\"caption\">Weighted terms as logged (means over each logging window); KD terms dashed, the total (the back-propagated sum) thick.</p>");

    h.push_str("<h2>AP during training</h2>");
    h.push_str(&ap_chart(runs));
    let subsets: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let n = r.experiment.as_ref()?.eval.max_images?;
            Some(format!("{}: first {n} images", escape(&r.label)))
        })
        .collect();
    if !subsets.is_empty() {
        let _ = write!(
            h,
            "<p class=\"caption\">Periodic evaluations score a subset of the validation split ({}); the one at the last step scores all of it.</p>",
            subsets.join(", ")
        );
    }

    h.push_str("<h2>AP per class</h2>");
    match class_chart(runs) {
        Some(svg) => {
            h.push_str("<div class=\"scroll\">");
            h.push_str(&svg);
            h.push_str("</div>");
        }
        None => h.push_str("<p class=\"caption\">No run has an eval.json yet.</p>"),
    }

    if !grid.rows.is_empty() {
        let _ = write!(
            h,
            "<h2>Validation images</h2><p class=\"caption\">Ground truth, then each run's final predictions with score ≥ {MIN_SCORE}.</p>"
        );
        h.push_str(&grid_html(grid));
    }
    h.push_str("</body></html>\n");
    h
}
