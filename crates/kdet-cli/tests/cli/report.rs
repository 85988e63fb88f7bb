//! `kdet report` end to end on tiny runs (64x64 generated images, 4 steps): a trained run
//! and a student distilled from it in one page (self-contained, a chart per figure with a
//! line per logged term, the table equal to `eval.json`, the image grid decoding to PNGs
//! of the drawn size), a run stopped early (no `eval.json`, no `predictions.json`), and
//! the errors: a malformed `metrics.jsonl` line, labels that do not match the runs.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::train::{fails, metrics, ok, read_json, s, tiny_config};

const RECIPE: &str = r#"inherit = false

[[distill.losses]]
loss = { type = "ld", ld_weight = 0.1 }
"#;

/// A 4-step run in `dir/teacher` and a student distilled from it with LD in
/// `dir/distilled`.
fn teacher_and_student(dir: &Path) -> (PathBuf, PathBuf) {
    let config = tiny_config(dir);
    let teacher = dir.join("teacher");
    ok(&["train", "--config", &s(&config), "--out", &s(&teacher)]);
    let recipe = dir.join("distill.toml");
    let text = format!(
        "extends = \"tiny.toml\"\nteacher = {:?}\n\n[distill]\n{RECIPE}",
        s(&teacher.join("last.ckpt"))
    );
    std::fs::write(&recipe, text).expect("write the recipe");
    let student = dir.join("distilled");
    ok(&["distill", "--config", &s(&recipe), "--out", &s(&student)]);
    (teacher, student)
}

/// The inline `<svg>` elements of a page.
fn svgs(html: &str) -> Vec<&str> {
    html.split("<svg")
        .skip(1)
        .map(|rest| &rest[..rest.find("</svg>").expect("a closed <svg>")])
        .collect()
}

/// The base64 payloads of `data:image/png;base64,` URLs after `marker` (e.g. `src="`).
fn data_pngs(html: &str, marker: &str) -> Vec<image::RgbaImage> {
    let prefix = format!("{marker}data:image/png;base64,");
    html.match_indices(&prefix)
        .map(|(i, _)| {
            let rest = &html[i + prefix.len()..];
            let end = rest.find(['"', '\\']).expect("a closed URL");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&rest[..end])
                .expect("base64");
            assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
            image::load_from_memory(&bytes).expect("decodes").to_rgba8()
        })
        .collect()
}

/// The table row of the run labelled `label`.
fn row<'a>(html: &'a str, label: &str) -> &'a str {
    let table = &html[html.find("<table class=\"runs\"").expect("the runs table")..];
    let table = &table[..table.find("</table>").expect("closed")];
    table
        .split("<tr>")
        .find(|r| r.contains(&format!("</span>{label}</td>")))
        .unwrap_or_else(|| panic!("no row for {label} in {table}"))
}

/// Every `src`/`href`/`url(` of the page points into the page.
fn assert_self_contained(html: &str) {
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script") && !html.contains("<link"));
    for marker in ["src=\"", "href=\"", "url("] {
        for (i, _) in html.match_indices(marker) {
            let rest = &html[i + marker.len()..];
            assert!(
                rest.starts_with("data:image/png;base64,")
                    || rest.starts_with("\"data:image/png;base64,"),
                "{marker} points outside the page: {}",
                &rest[..rest.len().min(60)]
            );
        }
    }
}

#[test]
fn a_report_compares_a_run_and_its_distilled_student() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (teacher, student) = teacher_and_student(dir.path());
    let out = ok(&[
        "report",
        &s(&teacher),
        &s(&student),
        "--labels",
        "teacher,distilled",
        "--images",
        "2",
    ]);
    // Several runs: the page goes beside them.
    let page = dir.path().join("report.html");
    assert!(out.contains(&format!("wrote {}", s(&page))), "{out}");
    let html = std::fs::read_to_string(&page).expect("report.html");
    assert_self_contained(&html);

    // Loss curves of each run, AP over steps, per-class AP.
    let charts = svgs(&html);
    assert_eq!(charts.len(), 4, "2 loss charts, AP, per class");
    for (run, label) in [(&teacher, "teacher"), (&student, "distilled")] {
        let chart = charts
            .iter()
            .find(|c| c.contains(&format!("aria-label=\"{label}: training losses\"")))
            .unwrap_or_else(|| panic!("no loss chart for {label}"));
        let (train, _) = metrics(run);
        let mut terms: Vec<String> = train
            .iter()
            .flat_map(|(_, losses, _)| losses.as_object().expect("losses").keys().cloned())
            .collect();
        terms.sort();
        terms.dedup();
        assert!(terms.iter().any(|t| t.starts_with("loss_")), "{terms:?}");
        for term in &terms {
            let polyline = format!("<polyline data-series=\"{term}\"");
            assert!(chart.contains(&polyline), "{label}: no line for {term}");
        }
        for timing in ["teacher_ms", "kd_ms", "time."] {
            assert!(
                !chart.contains(&format!("<polyline data-series=\"{timing}")),
                "{label}: {timing} is not a loss"
            );
        }
        assert!(chart.contains("<polyline data-series=\"total\""));
        assert!(
            chart.contains("<text") && chart.contains(">step</text>"),
            "axis labels"
        );
    }
    let distilled_chart = charts
        .iter()
        .find(|c| c.contains("distilled: training losses"))
        .expect("the distilled loss chart");
    assert!(
        distilled_chart.contains("data-series=\"kd.ld.kd\" fill=\"none\" stroke=\"#")
            && distilled_chart.contains("stroke-dasharray"),
        "KD terms are drawn dashed"
    );
    let ap_chart = charts
        .iter()
        .find(|c| c.contains("box AP during training"))
        .expect("the AP chart");
    for label in ["teacher", "distilled"] {
        assert!(ap_chart.contains(&format!("<polyline data-series=\"{label}\"")));
    }
    assert!(charts.iter().any(|c| c.contains("box AP per class")));

    // The table: AP numbers of eval.json in percent (full value in the tooltip), the gain
    // over the second run (no run is labelled `student`), the distillation timings.
    let stats = ["AP", "AP50", "AP75", "APs", "APm", "APl"];
    for (run, label) in [(&teacher, "teacher"), (&student, "distilled")] {
        let eval = read_json(&run.join("eval.json"));
        let r = row(&html, label);
        for stat in stats {
            let v = eval["stats"][stat].as_f64().expect("a stat");
            let cell = format!(
                "data-stat=\"{stat}\" title=\"{v:.6}\">{:.1}</td>",
                v * 100.0
            );
            assert!(r.contains(&cell), "{label} {stat}: {cell} not in {r}");
        }
        assert!(r.contains("done, step 4"), "{r}");
    }
    assert!(html.contains("<th>ΔAP vs distilled</th>"));
    assert!(row(&html, "distilled").contains(">baseline</td>"));
    let ap = |run: &Path| {
        read_json(&run.join("eval.json"))["stats"]["AP"]
            .as_f64()
            .expect("AP")
    };
    let gain = format!("{:+.1}</td>", (ap(&teacher) - ap(&student)) * 100.0);
    assert!(row(&html, "teacher").contains(&gain), "{gain}");
    assert!(html.contains("<th>teacher ms</th>") && html.contains("<th>KD ms</th>"));

    // The grid: 2 images x (ground truth + 2 runs) drawings at twice the 64-px images,
    // over the 2 pictures embedded once each.
    let cells = data_pngs(&html, "src=\"");
    assert_eq!(cells.len(), 6);
    assert!(cells.iter().all(|c| c.dimensions() == (128, 128)));
    let pictures = data_pngs(&html, "url(\"");
    assert_eq!(pictures.len(), 2);
    assert!(pictures.iter().all(|p| p.dimensions() == (64, 64)));
    // The ground truth column has its boxes drawn (opaque pixels).
    assert!(cells[0].pixels().any(|p| p.0[3] == 255));
}

#[test]
fn a_stopped_run_reports_as_running_and_a_malformed_log_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let run = dir.path().join("stopped");
    ok(&[
        "train",
        "--config",
        &s(&config),
        "--out",
        &s(&run),
        "--max-steps",
        "2",
    ]);
    assert!(!run.join("eval.json").exists() && !run.join("predictions.json").exists());

    let out = ok(&["report", &s(&run), "--images", "1"]);
    // One run: the page goes into it.
    let html = std::fs::read_to_string(run.join("report.html")).expect("report.html");
    assert!(out.contains("no predictions.json"), "{out}");
    assert_self_contained(&html);
    let r = row(&html, "stopped");
    assert!(r.contains(">running</span>, step 2"), "{r}");
    assert!(r.contains("data-stat=\"AP\">–</td>"), "{r}");
    assert!(html.contains("no predictions.json: no column in the image grid"));
    assert!(html.contains("No run has an eval.json yet."));
    assert_eq!(
        svgs(&html).len(),
        2,
        "loss and AP charts, no per-class chart"
    );
    // Only the ground truth column.
    assert_eq!(data_pngs(&html, "src=\"").len(), 1);

    // Labels must match the runs.
    let err = fails(&["report", &s(&run), &s(&run), "--labels", "a"]);
    assert!(
        err.contains("--labels has 1 label for 2 run directories"),
        "{err}"
    );

    // A malformed line in the middle of the log is an error naming file and line.
    let log = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&log).expect("metrics.jsonl");
    let mut lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    lines[1] = "{\"step\": 2, \"losses\": ";
    std::fs::write(&log, lines.join("\n") + "\n").expect("write");
    let err = fails(&["report", &s(&run)]);
    assert!(
        err.contains(&format!("{}:2: malformed metrics line", s(&log))),
        "{err}"
    );
}
