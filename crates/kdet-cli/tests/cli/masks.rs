//! A query mask model through the CLI: `kdet train` on the synthetic mask student preset
//! (shrunk to a test) writes box and mask AP, `kdet eval --checkpoint` reproduces both,
//! `kdet predict` draws masks, `kdet distill` runs matched-query KD between two of them
//! (the teacher a checkpoint, or the same exported to safetensors: the same weights),
//! `kdet report` shows mask AP, and the trained model's backbone starts another run
//! (`pretrained`, from its checkpoint or its export); training a mask model on COCO data
//! without segmentations is an error naming the file.

use std::path::{Path, PathBuf};

use crate::train::{crc, fails, inline, ok, read_json, s, table, tiny_preset};

/// The mask student preset shrunk to a test (`tiny_preset`): 64x64 images with large
/// objects, 256 points in the matcher and the mask losses.
fn tiny_mask_config(dir: &Path) -> PathBuf {
    tiny_preset(
        dir,
        "m2f_synth_student",
        "object_scale = 2.5",
        "tiny_mask.toml",
        |t| {
            let criterion = table(table(t, "model"), "criterion");
            table(criterion, "matcher").insert("num_points".into(), toml::Value::Integer(256));
            table(criterion, "points").insert("num_points".into(), toml::Value::Integer(256));
        },
    )
}

#[test]
fn a_mask2former_trains_evaluates_predicts_masks_and_distils() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_mask_config(dir.path());
    let run = dir.path().join("run");
    let out = ok(&["train", "--config", &s(&config), "--out", &s(&run)]);
    assert!(out.contains("segm evaluation"), "{out}");
    let eval_json = read_json(&run.join("eval.json"));
    assert_eq!(eval_json["settings"]["iou_type"], "bbox");
    assert_eq!(eval_json["segm"]["settings"]["iou_type"], "segm");
    assert_eq!(eval_json["segm"]["settings"]["segm_area"], "mask");
    assert_eq!(
        eval_json["segm"]["stats"].as_object().expect("stats").len(),
        12
    );
    // The periodic evaluations log mask AP too.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
    assert!(metrics.contains("segm_AP50"), "{metrics}");
    // predictions.json carries RLE masks.
    let predictions = read_json(&run.join("predictions.json"));
    let first = &predictions.as_array().expect("a list")[0];
    assert!(first["segmentation"]["counts"].is_string(), "{first}");

    // The checkpoint evaluated again: the same weights and both reports.
    let stats_path = dir.path().join("stats.json");
    let synth = dir.path().join("synth");
    let printed = ok(&[
        "eval",
        "--checkpoint",
        &s(&run),
        "--data",
        &s(&synth),
        "--out",
        &s(&stats_path),
    ]);
    assert_eq!(crc(&printed), crc(&out));
    let again = read_json(&stats_path);
    assert_eq!(again["stats"], eval_json["stats"]);
    assert_eq!(again["segm"]["stats"], eval_json["segm"]["stats"]);

    // Predicted masks are drawn: some pixel of the drawing differs from the image outside
    // every box outline (the masks' half-transparent fill).
    let drawn = dir.path().join("drawn");
    ok(&[
        "predict",
        "--checkpoint",
        &s(&run),
        "--images",
        &s(&synth.join("val/images")),
        "--out",
        &s(&drawn),
        "--score-threshold",
        "0",
    ]);
    let pictures: Vec<_> = std::fs::read_dir(&drawn)
        .expect("predict output")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png" || e == "jpg"))
        .collect();
    assert_eq!(pictures.len(), 2, "{pictures:?}");

    // Matched-query KD from the trained model to a fresh student of the same preset.
    let mut t: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).expect("config")).expect("TOML");
    t.insert(
        "teacher".into(),
        inline(&format!("checkpoint = {:?}", s(&run.join("last.ckpt")))),
    );
    t.insert(
        "distill".into(),
        inline("losses = [{ loss = { type = \"matched_query_kd\", num_points = 256 } }]"),
    );
    let recipe = dir.path().join("mqkd.toml");
    std::fs::write(&recipe, toml::to_string(&t).expect("serialise")).expect("write");
    let distilled = dir.path().join("distilled");
    let out_distill = ok(&["distill", "--config", &s(&recipe), "--out", &s(&distilled)]);
    assert!(
        out_distill.contains("kd.matched_query_kd.cls"),
        "{out_distill}"
    );
    assert!(read_json(&distilled.join("eval.json"))["segm"].is_object());

    // The same teacher as a safetensors file (`kdet export`, read back tensor by tensor)
    // with its architecture from the config: the same distillation, bit for bit.
    let weights = dir.path().join("teacher.safetensors");
    let out = ok(&[
        "export",
        "--checkpoint",
        &s(&run.join("last.ckpt")),
        "--format",
        "safetensors",
        "--out",
        &s(&weights),
    ]);
    assert!(out.contains("every tensor equal"), "{out}");
    t.insert(
        "teacher".into(),
        inline(&format!(
            "weights = {{ path = {:?}, model = {:?}, source = \"kdet\" }}",
            s(&weights),
            s(&config)
        )),
    );
    std::fs::write(&recipe, toml::to_string(&t).expect("serialise")).expect("write");
    let from_file = dir.path().join("from_file");
    let again = ok(&["distill", "--config", &s(&recipe), "--out", &s(&from_file)]);
    assert_eq!(crc(&again), crc(&out_distill));

    // The trained model's backbone starts a new run (`pretrained`): from its checkpoint,
    // and from its whole-model export in kdet's layout (the `backbone.` tensors, the rest
    // left out), the same tensors either way.
    let mut loaded = Vec::new();
    for (i, (pretrained, source)) in [(run.join("last.ckpt"), None), (weights, Some("kdet"))]
        .into_iter()
        .enumerate()
    {
        let started = dir.path().join(format!("pretrained{i}"));
        let set = format!("pretrained={:?}", s(&pretrained));
        let mut args = vec![
            "train",
            "--config",
            &*s(&config),
            "--out",
            &*s(&started),
            "--max-steps",
            "1",
            "--set",
            &set,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if let Some(source) = source {
            args.extend(["--set".into(), format!("pretrained_source={source:?}")]);
        }
        let out = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let line = out
            .lines()
            .find(|l| l.starts_with("pretrained backbone:"))
            .unwrap_or_else(|| panic!("no pretrained line in\n{out}"))
            .to_string();
        loaded.push(line.rsplit(": ").next().expect("count").to_string());
        if source.is_some() {
            assert!(
                out.contains("outside the backbone of a whole model's file"),
                "{out}"
            );
        }
    }
    assert_eq!(loaded[0], loaded[1]);
    assert!(loaded[0].ends_with("tensors loaded"), "{loaded:?}");

    // The report shows each run's mask AP beside its box AP.
    let html = dir.path().join("report.html");
    ok(&[
        "report",
        &s(&run),
        &s(&distilled),
        "--out",
        &s(&html),
        "--images",
        "2",
    ]);
    let page = std::fs::read_to_string(&html).expect("report.html");
    assert!(
        page.contains("<th>mask AP</th>") && page.contains("data-stat=\"segm_AP\""),
        "no mask AP in the report"
    );
}

#[test]
fn a_mask_model_on_data_without_segmentations_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_mask_config(dir.path());
    // Generate the data, then strip the segmentations from a copy of the training split.
    ok(&[
        "data",
        "synth",
        "--out",
        &s(&dir.path().join("synth")),
        "--images",
        "4",
        "--val-images",
        "2",
        "--size",
        "64",
        "--object-scale",
        "2.5",
    ]);
    let synth = dir.path().join("synth");
    let mut gt = read_json(&synth.join("train/annotations.json"));
    for a in gt["annotations"].as_array_mut().expect("annotations") {
        a.as_object_mut()
            .expect("an annotation")
            .remove("segmentation");
    }
    let boxes_only = dir.path().join("boxes_only.json");
    std::fs::write(&boxes_only, gt.to_string()).expect("write");
    let coco = format!(
        "train_json = {:?}\ntrain_images = {:?}\nval_json = {:?}\nval_images = {:?}",
        s(&boxes_only),
        s(&synth.join("train/images")),
        s(&synth.join("val/annotations.json")),
        s(&synth.join("val/images"))
    );
    let mut t: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).expect("config")).expect("TOML");
    let data = table(&mut t, "data");
    data.remove("synth");
    data.insert("coco".into(), inline(&coco));
    let path = dir.path().join("coco_boxes.toml");
    std::fs::write(&path, toml::to_string(&t).expect("serialise")).expect("write");
    let err = fails(&[
        "train",
        "--config",
        &s(&path),
        "--out",
        &s(&dir.path().join("run")),
    ]);
    assert!(
        err.contains("boxes_only.json") && err.contains("segmentation"),
        "{err}"
    );
}
