//! `kdet demo --quick` end to end: the three stages run from the shipped teacher, the table,
//! `summary.json` and `report.html` are written, and a rerun reuses every finished stage
//! with the same numbers.

use crate::train::{ok, read_json, s};

#[test]
fn quick_demo_runs_every_stage_and_a_rerun_reuses_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let data = dir.path().join("synth");
    let args = [
        "demo",
        "--quick",
        "--method",
        "pkd",
        "--out",
        &s(&out),
        "--data",
        &s(&data),
    ];
    let first = ok(&args);
    let quick = out.join("quick");
    for stage in ["teacher", "baseline-seed0", "pkd-seed0"] {
        assert!(
            quick.join(stage).join("eval.json").is_file(),
            "{stage}: {first}"
        );
    }
    for label in ["| teacher |", "| student |", "| student + pkd |"] {
        assert!(first.contains(label), "{label} missing in\n{first}");
    }
    let summary = read_json(&quick.join("summary.json"));
    let rows = summary["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    // The table's AP numbers are the runs' own evaluations; the gain is their difference.
    for row in rows {
        let run = std::path::PathBuf::from(row["run"].as_str().expect("run"));
        let eval = read_json(&run.join("eval.json"));
        assert_eq!(row["AP"], eval["stats"]["AP"], "{row}");
    }
    let gain = summary["gain_AP"].as_f64().expect("gain");
    let (base, kd) = (
        rows[1]["AP"].as_f64().expect("AP"),
        rows[2]["AP"].as_f64().expect("AP"),
    );
    assert!((gain - (kd - base)).abs() < 1e-12);
    // The shipped teacher's own numbers (assets/teacher/README.md).
    assert!(
        (rows[0]["AP"].as_f64().expect("AP") - 0.2112).abs() < 5e-4,
        "{}",
        rows[0]
    );
    let html = std::fs::read_to_string(quick.join("report.html")).expect("report.html");
    assert!(html.contains("<svg") && html.contains("data:image/png;base64,"));

    let second = ok(&args);
    assert_eq!(
        second.matches("finished earlier, reusing").count(),
        2,
        "{second}"
    );
    let again = read_json(&quick.join("summary.json"));
    for (a, b) in rows.iter().zip(again["rows"].as_array().expect("rows")) {
        assert_eq!(a["AP"], b["AP"]);
    }
}

/// `kdet demo --task segm --quick`: the mask pair from the shipped mask teacher, on a small
/// built-in dataset (64 training, 16 validation images) to keep CI short: mask AP beside
/// box AP in the table and `summary.json`, each number the run's own evaluation, masks in
/// the report.
#[test]
fn quick_segm_demo_runs_the_mask_pair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let data = dir.path().join("synth-large");
    let first = ok(&[
        "demo",
        "--task",
        "segm",
        "--quick",
        "--out",
        &s(&out),
        "--data",
        &s(&data),
        "--set",
        "data.synth.train_images=64",
        "--set",
        "data.synth.val_images=16",
    ]);
    let quick = out.join("quick");
    for stage in ["teacher", "baseline-seed0", "mqkd-seed0"] {
        assert!(
            quick.join(stage).join("eval.json").is_file(),
            "{stage}: {first}"
        );
    }
    assert!(
        first.contains("| model | params | ms/image | mask AP |"),
        "{first}"
    );
    for label in ["| teacher |", "| student |", "| student + mqkd |"] {
        assert!(first.contains(label), "{label} missing in\n{first}");
    }
    let summary = read_json(&quick.join("summary.json"));
    assert_eq!(summary["task"], "segm");
    let rows = summary["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    for row in rows {
        let run = std::path::PathBuf::from(row["run"].as_str().expect("run"));
        let eval = read_json(&run.join("eval.json"));
        assert_eq!(row["AP"], eval["stats"]["AP"], "{row}");
        assert_eq!(row["mask_AP"], eval["segm"]["stats"]["AP"], "{row}");
    }
    let gain = summary["gain_mask_AP"].as_f64().expect("mask gain");
    let (base, kd) = (
        rows[1]["mask_AP"].as_f64().expect("mask AP"),
        rows[2]["mask_AP"].as_f64().expect("mask AP"),
    );
    assert!((gain - (kd - base)).abs() < 1e-12);
    let html = std::fs::read_to_string(quick.join("report.html")).expect("report.html");
    assert!(html.contains("mask AP"), "the report's table has mask AP");

    // A method without a recipe for the pair is refused, naming the ones there are.
    let err = crate::train::fails(&[
        "demo",
        "--task",
        "segm",
        "--quick",
        "--method",
        "ld",
        "--out",
        &s(&out),
    ]);
    assert!(err.contains("mqkd") && err.contains("pkd"), "{err}");
}

/// `kdet demo --task noisy-boxes --quick`: the student on clean boxes, on noisy ones (the
/// teacher) and on the boxes that teacher corrects, on a small built-in dataset; the noisy
/// training file is written by the run, the validation split stays clean, the summary
/// carries gamma and the train-box IoU diagnostic, and the gain is corrected minus noisy.
#[test]
fn quick_noisy_boxes_demo_trains_clean_noisy_and_corrected_students() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let data = dir.path().join("synth");
    let first = ok(&[
        "demo",
        "--task",
        "noisy-boxes",
        "--box-noise",
        "0.4",
        "--quick",
        "--out",
        &s(&out),
        "--data",
        &s(&data),
        "--set",
        "data.synth.train_images=48",
        "--set",
        "data.synth.val_images=8",
    ]);
    let quick = out.join("quick");
    for stage in ["clean-seed0", "noisy-seed0", "ndet-seed0"] {
        assert!(
            quick.join(stage).join("eval.json").is_file(),
            "{stage}: {first}"
        );
    }
    assert!(data.join("train/annotations.noise-0.4.json").is_file());
    // The noisy and the corrected students trained on the noisy file, the clean one not;
    // all three are scored on the clean validation file.
    for (stage, train) in [
        ("clean-seed0", "annotations.json"),
        ("noisy-seed0", "annotations.noise-0.4.json"),
        ("ndet-seed0", "annotations.noise-0.4.json"),
    ] {
        let config =
            std::fs::read_to_string(quick.join(stage).join("config.toml")).expect("config.toml");
        let noisy = config.contains("box_noise = 0.4");
        assert_eq!(noisy, train != "annotations.json", "{stage}: {config}");
        let eval = read_json(&quick.join(stage).join("eval.json"));
        assert!(
            eval["gt"]
                .as_str()
                .is_some_and(|g| g.ends_with("val/annotations.json")),
            "{stage}: {eval}"
        );
    }
    let corrected = std::fs::read_to_string(quick.join("ndet-seed0/config.toml")).expect("toml");
    assert!(
        corrected.contains("[distill.box_correction]"),
        "{corrected}"
    );
    assert!(
        corrected.contains("noisy-seed0"),
        "the teacher: {corrected}"
    );
    for label in [
        "| student (clean boxes) |",
        "| student (noisy boxes, gamma 0.4) |",
        "| student (corrected boxes) |",
    ] {
        assert!(first.contains(label), "{label} missing in\n{first}");
    }
    let summary = read_json(&quick.join("summary.json"));
    assert_eq!(summary["task"], "noisy-boxes");
    assert_eq!(summary["box_noise"], 0.4);
    let iou = &summary["box_iou"];
    let before = iou["before"].as_f64().expect("before");
    assert!(before > 0.2 && before < 0.9, "{iou}");
    assert!(iou["after"].as_f64().is_some_and(|a| a > 0.0 && a <= 1.0));
    assert!(iou["boxes"].as_u64().is_some_and(|n| n > 48), "{iou}");
    let rows = summary["rows"].as_array().expect("rows");
    let gain = summary["gain_AP"].as_f64().expect("gain");
    let (noisy, fixed) = (
        rows[1]["AP"].as_f64().expect("AP"),
        rows[2]["AP"].as_f64().expect("AP"),
    );
    assert!((gain - (fixed - noisy)).abs() < 1e-12);
}
