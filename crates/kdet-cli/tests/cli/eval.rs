//! `kdet eval` end to end: the printed numbers are pycocotools' for COCO box and mask AP (both
//! mask-area conventions) on the 80 real images of `tests/data/coco_tiny_val2017`, and the
//! youtubevos reference's for video AP on the committed synthetic fixture.
//!
//! Reads the vendored `tests/data/` and fails, not skips, when it is missing.

use crate::{kdet, test_data};
use std::path::{Path, PathBuf};

fn coco_tiny(rel: &str) -> String {
    test_data()
        .join("coco_tiny_val2017")
        .join(rel)
        .display()
        .to_string()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eval")
        .join(name)
        .display()
        .to_string()
}

/// Runs `kdet eval ARGS`, asserts success, returns the 12 printed values as printed.
fn eval_ok(args: &[&str]) -> (Vec<String>, String) {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    let out = kdet(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kdet {all:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<String> = stdout
        .lines()
        .filter(|l| l.contains("maxDets="))
        .map(|l| {
            l.rsplit("= ")
                .next()
                .expect("a value after '= '")
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(values.len(), 12, "{stdout}");
    (values, stdout)
}

/// pycocotools 2.0.11 on coco_tiny (from the data folder's README).
const BBOX: &str = "0.384728 0.693443 0.352731 0.450815 0.395365 0.447274 0.346229 0.480031 0.480950 0.486930 0.441006 0.514424";
const SEGM_MASK_AREA: &str = "0.252154 0.521820 0.204483 0.304283 0.251479 0.342014 0.239506 0.331900 0.332848 0.353369 0.287989 0.398045";
const SEGM_BOX_AREA: &str = "0.252154 0.521820 0.204483 0.319704 0.252212 0.330609 0.239506 0.331900 0.332848 0.353369 0.287989 0.398045";

/// Printed values rounded to 6 decimals equal the reference's.
fn assert_prints(values: &[String], want: &str) {
    let rounded: Vec<String> = values
        .iter()
        .map(|v| format!("{:.6}", v.parse::<f64>().expect("a number")))
        .collect();
    assert_eq!(rounded.join(" "), want);
    assert!(
        values
            .iter()
            .all(|v| v.split('.').nth(1).is_some_and(|d| d.len() >= 6)),
        "{values:?}"
    );
}

#[test]
fn coco_tiny_box_and_mask_ap_match_pycocotools() {
    let gt = coco_tiny("annotations/instances_val2017.json");
    let dt = coco_tiny("derived/dets_val2017_perturbed_seed0.json");
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("nested/stats.json");
    let out_s = out.display().to_string();

    let (values, stdout) = eval_ok(&["--gt", &gt, "--dt", &dt, "--out", &out_s, "--per-class"]);
    assert_prints(&values, BBOX);
    assert!(
        stdout.starts_with("bbox evaluation: 80 images, 1600 detections"),
        "{stdout}"
    );
    assert!(stdout.contains("person"), "per-class table: {stdout}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).expect("stats.json written")).expect("JSON");
    assert_eq!(
        format!("{:.6}", doc["stats"]["AP"].as_f64().expect("AP")),
        "0.384728"
    );
    assert_eq!(doc["settings"]["iou_type"], "bbox");
    assert_eq!(
        doc["report"]["per_class"].as_array().map(Vec::len),
        Some(80)
    );
    assert_eq!(
        doc["report"]["pr_curves"].as_array().map(Vec::len),
        Some(10)
    );

    let (values, _) = eval_ok(&["--gt", &gt, "--dt", &dt, "--iou-type", "segm"]);
    assert_prints(&values, SEGM_MASK_AREA);
    let (values, _) = eval_ok(&[
        "--gt",
        &gt,
        "--dt",
        &dt,
        "--iou-type",
        "segm",
        "--segm-area",
        "mask",
    ]);
    assert_prints(&values, SEGM_MASK_AREA);
    let (values, _) = eval_ok(&[
        "--gt",
        &gt,
        "--dt",
        &dt,
        "--iou-type",
        "segm",
        "--segm-area",
        "bbox",
    ]);
    assert_prints(&values, SEGM_BOX_AREA);
}

#[test]
fn video_ap_matches_the_reference_fixture() {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("ytvis_synth_reference.json")).expect("fixture"),
    )
    .expect("JSON");
    let want: Vec<String> = reference["stats"]
        .as_array()
        .expect("stats")
        .iter()
        .map(|v| format!("{:.6}", v.as_f64().expect("a number")))
        .collect();
    let (values, stdout) = eval_ok(&[
        "--video",
        "--gt",
        &fixture("ytvis_synth_gt.json"),
        "--dt",
        &fixture("ytvis_synth_dt.json"),
    ]);
    assert_prints(&values, &want.join(" "));
    assert!(
        stdout.starts_with("video segm evaluation: 7 videos"),
        "{stdout}"
    );
}

fn eval_err(args: &[&str]) -> String {
    let mut all = vec!["eval"];
    all.extend_from_slice(args);
    let out = kdet(&all);
    assert!(!out.status.success(), "kdet {all:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_gives_clear_errors() {
    let gt = coco_tiny("annotations/instances_val2017.json");
    let dir = tempfile::tempdir().expect("a temp dir");
    let bad = dir.path().join("dets.json");
    std::fs::write(
        &bad,
        r#"[{"image_id": 5001, "category_id": 1, "score": 0.9, "bbox": [1, 2, 3, 4]},
            {"image_id": 123, "category_id": 1, "score": 0.8, "bbox": [1, 2, 3, 4]},
            {"image_id": 5001, "category_id": 300, "score": 0.7, "bbox": [1, 2, 3, 4]}]"#,
    )
    .expect("write");
    let bad_s = bad.display().to_string();
    let err = eval_err(&["--gt", &gt, "--dt", &bad_s]);
    assert!(err.contains(&bad_s), "names the file: {err}");
    assert!(
        err.contains("1 image id(s) not in the ground truth: 123"),
        "{err}"
    );
    assert!(
        err.contains("1 category id(s) not in the ground truth: 300"),
        "{err}"
    );

    let err = eval_err(&["--gt", &gt]);
    assert!(
        err.contains("needs both --gt GT.json and --dt DT.json (missing: --dt)"),
        "{err}"
    );
    let missing = Path::new(&bad_s)
        .with_file_name("nope.json")
        .display()
        .to_string();
    let err = eval_err(&["--gt", &gt, "--dt", &missing]);
    assert!(err.contains("nope.json"), "{err}");
    let err = eval_err(&["--gt", &gt, "--dt", &bad_s, "--segm-area", "bbox"]);
    assert!(
        err.contains("--segm-area applies to --iou-type segm only"),
        "{err}"
    );
    let err = eval_err(&["--video", "--iou-type", "bbox", "--gt", &gt, "--dt", &bad_s]);
    assert!(err.contains("masks only"), "{err}");
}
