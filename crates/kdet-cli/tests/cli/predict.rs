//! `kdet predict` end to end: a tiny model trained for 4 steps (`tiny_config`) predicts the
//! generated 64x64 validation images and the real photos of `tests/data/skimage_samples`
//! (512x512, 451x300, 600x400, 640x427: other sizes than it was trained on), and the
//! drawn images are checked against the written predictions pixel by pixel; a tiny COCO
//! model names its classes from its annotation file and falls back without it; the errors
//! a user meets name the path.
//!
//! Reads the vendored `tests/data/` and fails, not skips, when it is missing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::Rgb;
use serde_json::Value;

use crate::test_data;
use crate::train::{fails, inline, ok, read_json, s, stderr, table, tiny_config};

/// The built-in data's classes, in label order (category id = label + 1).
const SYNTH_CLASSES: [&str; 8] = [
    "circle", "ellipse", "triangle", "square", "pentagon", "hexagon", "star", "ring",
];

/// One written prediction.
#[derive(Debug, Clone)]
struct Pred {
    category_id: u64,
    /// xywh, as written.
    bbox: [f64; 4],
    score: f32,
}

fn predictions_by_image(out: &Path) -> HashMap<u64, Vec<Pred>> {
    let mut by_image: HashMap<u64, Vec<Pred>> = HashMap::new();
    for r in read_json(&out.join("predictions.json"))
        .as_array()
        .expect("predictions.json is a list")
    {
        let bbox: Vec<f64> = r["bbox"]
            .as_array()
            .expect("bbox")
            .iter()
            .map(|v| v.as_f64().expect("a number"))
            .collect();
        by_image
            .entry(r["image_id"].as_u64().expect("image_id"))
            .or_default()
            .push(Pred {
                category_id: r["category_id"].as_u64().expect("category_id"),
                bbox: [bbox[0], bbox[1], bbox[2], bbox[3]],
                // Scores are f32 written as f64: the cast back is exact.
                score: r["score"].as_f64().expect("score") as f32,
            });
    }
    by_image
}

/// `category_id -> (name, colour)` from `classes.json`.
fn classes(out: &Path) -> HashMap<u64, (String, Rgb<u8>)> {
    read_json(&out.join("classes.json"))
        .as_array()
        .expect("classes.json is a list")
        .iter()
        .map(|c| {
            let rgb: Vec<u8> = c["color"]
                .as_array()
                .expect("color")
                .iter()
                .map(|v| v.as_u64().expect("a channel") as u8)
                .collect();
            (
                c["category_id"].as_u64().expect("category_id"),
                (
                    c["name"].as_str().expect("name").to_string(),
                    Rgb([rgb[0], rgb[1], rgb[2]]),
                ),
            )
        })
        .collect()
}

/// The printed `FILE: D drawn / T detections -> PATH` lines: `file -> (D, T)`.
fn printed_counts(stdout: &str) -> HashMap<String, (usize, usize)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (file, rest) = l.split_once(": ")?;
            let (drawn, rest) = rest.split_once(" drawn / ")?;
            let (total, _) = rest.split_once(" detections -> ")?;
            Some((file.to_string(), (drawn.parse().ok()?, total.parse().ok()?)))
        })
        .collect()
}

/// Candidate pixel rectangles of a written box, as `draw_detections` rounds: columns
/// `round(x1) ..= round(x2) - 1` clipped to the image, at least one pixel. `x2 = x + w` is
/// rebuilt from the written xywh and may be off by an f32 rounding from the box the
/// command drew, so an end within 1e-3 of a half pixel has two candidates (`lo`, `hi`).
#[derive(Debug, Clone, Copy)]
struct Rect {
    lo: [i64; 4],
    hi: [i64; 4],
}

fn rect_of(bbox: [f64; 4], width: u32, height: u32) -> Rect {
    let clamp = |v: f64, max: u32| (v.round() as i64).clamp(0, i64::from(max) - 1);
    let (x1, y1) = (bbox[0], bbox[1]);
    let (x2, y2) = (bbox[0] + bbox[2], bbox[1] + bbox[3]);
    let x0 = clamp(x1, width);
    let y0 = clamp(y1, height);
    let ends = |v: f64, max: u32, start: i64| {
        (
            clamp(v - 1.0 - 1e-3, max).max(start),
            clamp(v - 1.0 + 1e-3, max).max(start),
        )
    };
    let (xa, xb) = ends(x2, width, x0);
    let (ya, yb) = ends(y2, height, y0);
    Rect {
        lo: [x0, y0, xa, ya],
        hi: [x0, y0, xb, yb],
    }
}

/// Whether pixel `(x, y)` is on the 2-px outline band of rectangle `r` (inclusive).
fn on_band(r: [i64; 4], x: i64, y: i64) -> bool {
    let [x0, y0, x1, y1] = r;
    let inside = x >= x0 && x <= x1 && y >= y0 && y <= y1;
    inside && (x <= x0 + 1 || x >= x1 - 1 || y <= y0 + 1 || y >= y1 - 1)
}

/// Checks one `kdet predict` output folder against its inputs: `images.json` lists the
/// inputs, `predictions.json` refers to them, and every drawn PNG shows exactly the
/// predictions of its image with score >= `threshold`. How the pictures are checked, and
/// why it would catch a missing, extra or misplaced box:
///
/// 1. The printed `D drawn / T detections` of each image equal the number of its
///    predictions with score >= threshold and the number of all its predictions: one more
///    or one fewer box drawn (a duplicate included) changes `D`.
/// 2. Every corner pixel of every such box's outline (rounded as `draw_detections` does)
///    has, in the PNG, the class colour (`classes.json`) of the last box drawn over it:
///    boxes are drawn in ascending score order, outlines after all tags, so that box is
///    computable from the predictions alone. A missing box leaves its corners with the
///    photo's pixels; a box shifted or shrunk by a pixel uncovers at least one corner; a
///    wrong class gives the wrong colour (the palette is distinct).
/// 3. Every pixel that differs from the input image lies on the outline band of such a
///    box or in the zone its label tag can occupy (at most `8 * len + 2` px either side of
///    its left edge, within 10 px above to 12 px below its top edge). An extra box, or one
///    drawn larger or elsewhere, changes pixels outside these zones (its lower edges at
///    least).
///
/// Boxes whose right or bottom end sits within 1e-3 of a half pixel have two possible
/// roundings (see [`rect_of`]): a corner a possible rounding may cover is not checked,
/// and either rounding's band explains a changed pixel.
///
/// Returns how many boxes were drawn over all images.
fn check_output(
    inputs: &[PathBuf],
    out: &Path,
    stdout: &str,
    threshold: f32,
    class_names: &[&str],
) -> usize {
    let images = read_json(&out.join("images.json"));
    let images = images.as_array().expect("images.json is a list");
    assert_eq!(images.len(), inputs.len(), "{images:?}");
    let classes = classes(out);
    let names: Vec<&str> = {
        let mut ids: Vec<&u64> = classes.keys().collect();
        ids.sort();
        ids.iter().map(|id| classes[id].0.as_str()).collect()
    };
    assert_eq!(names, class_names);
    let preds = predictions_by_image(out);
    let counts = printed_counts(stdout);
    let mut total_drawn = 0;
    for (k, (entry, input)) in images.iter().zip(inputs).enumerate() {
        let file_name = input.file_name().expect("a file").to_string_lossy();
        let id = entry["id"].as_u64().expect("id");
        assert_eq!(id, k as u64 + 1, "ids follow the sorted order");
        assert_eq!(entry["file_name"], file_name.as_ref());
        let original = image::open(input).expect("the input decodes").to_rgb8();
        let (w, h) = original.dimensions();
        assert_eq!(
            (entry["width"].as_u64(), entry["height"].as_u64()),
            (Some(w.into()), Some(h.into()))
        );
        let stem = input.file_stem().expect("a stem").to_string_lossy();
        let drawn_path = out.join(format!("{stem}.png"));
        let drawn = image::open(&drawn_path)
            .unwrap_or_else(|e| panic!("{}: {e}", drawn_path.display()))
            .to_rgb8();
        assert_eq!(drawn.dimensions(), (w, h), "{}", drawn_path.display());

        let all = preds.get(&id).cloned().unwrap_or_default();
        for p in &all {
            assert!(classes.contains_key(&p.category_id), "{p:?}");
            let [x, y, bw, bh] = p.bbox;
            let eps = 1e-3;
            assert!(
                x >= -eps && y >= -eps && bw >= 0.0 && bh >= 0.0,
                "{file_name}: {p:?}"
            );
            assert!(
                x + bw <= f64::from(w) + eps && y + bh <= f64::from(h) + eps,
                "{file_name} is {w}x{h}: {p:?} leaves it (boxes are in original pixels)"
            );
        }
        // Draw order: ascending score, ties in written order (a stable sort).
        let mut shown: Vec<Pred> = all
            .iter()
            .filter(|p| p.score >= threshold)
            .cloned()
            .collect();
        shown.sort_by(|a, b| a.score.partial_cmp(&b.score).expect("finite scores"));
        assert_eq!(
            counts.get(file_name.as_ref()),
            Some(&(shown.len(), all.len())),
            "printed counts of {file_name} in\n{stdout}"
        );
        total_drawn += shown.len();
        let rects: Vec<Rect> = shown.iter().map(|p| rect_of(p.bbox, w, h)).collect();
        let color = |p: &Pred| classes[&p.category_id].1;

        // 2. Corners.
        for (i, r) in rects.iter().enumerate() {
            let [x0, y0] = [r.lo[0], r.lo[1]];
            let corners_lo = [(x0, y0), (r.lo[2], y0), (x0, r.lo[3]), (r.lo[2], r.lo[3])];
            let corners_hi = [(x0, y0), (r.hi[2], y0), (x0, r.hi[3]), (r.hi[2], r.hi[3])];
            for (c, (a, b)) in corners_lo.iter().zip(&corners_hi).enumerate() {
                if a != b {
                    continue;
                }
                let (cx, cy) = *a;
                // The last box drawn over this pixel; none if a possible rounding makes
                // that uncertain.
                let mut top = None;
                for j in (i..rects.len()).rev() {
                    let (lo, hi) = (on_band(rects[j].lo, cx, cy), on_band(rects[j].hi, cx, cy));
                    if lo && hi {
                        top = Some(j);
                        break;
                    }
                    if lo || hi {
                        break;
                    }
                }
                let Some(j) = top else { continue };
                assert_eq!(
                    *drawn.get_pixel(cx as u32, cy as u32),
                    color(&shown[j]),
                    "{file_name}: corner {c} ({cx}, {cy}) of {:?} (drawn box {i}; box {j} on top)",
                    shown[i]
                );
            }
        }

        // 3. Every changed pixel is explained by a drawn box's band or tag zone.
        let tag_zone = |p: &Pred, r: &Rect, x: i64, y: i64| {
            let (x0, y0) = (r.lo[0], r.lo[1]);
            let tag_width = 8 * (classes[&p.category_id].0.chars().count() as i64 + 5) + 2;
            x >= x0 - tag_width && x < x0 + tag_width && y >= y0 - 10 && y < y0 + 12
        };
        for (x, y, px) in drawn.enumerate_pixels() {
            if px == original.get_pixel(x, y) {
                continue;
            }
            let (x, y) = (i64::from(x), i64::from(y));
            let explained = shown
                .iter()
                .zip(&rects)
                .any(|(p, r)| on_band(r.lo, x, y) || on_band(r.hi, x, y) || tag_zone(p, r, x, y));
            assert!(
                explained,
                "{file_name}: pixel ({x}, {y}) changed but no drawn prediction explains it"
            );
        }
        if shown.is_empty() {
            assert_eq!(drawn, original, "{file_name}: nothing to draw, yet changed");
        }
    }
    total_drawn
}

/// The .png / .jpg files of a folder, sorted.
fn image_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_string_lossy().as_ref()))
        })
        .collect();
    files.sort();
    files
}

/// A score threshold that draws some boxes but not all: the score of the
/// `3 * num_images`-th best prediction (so about three boxes per image).
fn threshold_for(out: &Path, num_images: usize) -> f32 {
    let mut scores: Vec<f32> = predictions_by_image(out)
        .values()
        .flatten()
        .map(|p| p.score)
        .collect();
    assert!(
        scores.len() > 3 * num_images,
        "the tiny model returned only {} detections",
        scores.len()
    );
    scores.sort_by(|a, b| b.partial_cmp(a).expect("finite scores"));
    scores[3 * num_images]
}

/// Predicts `images` with `run`: once with `--score-threshold 1.1` (nothing drawn), then with
/// a threshold that draws a few boxes per image, and checks both outputs.
fn predict_and_check(run: &Path, images: &Path, out: &Path, extra: &[&str]) -> usize {
    let inputs = image_files(images);
    let first = out.join("none");
    let mut args = vec![
        "predict",
        "--checkpoint",
        &*s(run),
        "--images",
        &*s(images),
        "--out",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|a| a.to_string()));
    let with = |out: &Path, threshold: f32| {
        let mut a = args.clone();
        a.insert(6, s(out));
        a.extend(["--score-threshold".to_string(), threshold.to_string()]);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let stdout = with(&first, 1.1);
    assert_eq!(
        check_output(&inputs, &first, &stdout, 1.1, &SYNTH_CLASSES),
        0
    );
    let threshold = threshold_for(&first, inputs.len());
    let second = out.join("some");
    let stdout = with(&second, threshold);
    let drawn = check_output(&inputs, &second, &stdout, threshold, &SYNTH_CLASSES);
    assert!(
        drawn >= 3 * inputs.len(),
        "{drawn} drawn at {threshold}\n{stdout}"
    );
    // --score-threshold only changes the pictures: predictions.json is every detection.
    assert_eq!(
        std::fs::read(first.join("predictions.json")).expect("first predictions"),
        std::fs::read(second.join("predictions.json")).expect("second predictions")
    );
    drawn
}

/// Rewrites an experiment file with `model.test.score_threshold = 0`: a model trained for
/// 4 steps scores below the usual 0.05, and the checks need detections.
fn every_detection(config: &Path) -> PathBuf {
    let mut t: toml::Table =
        toml::from_str(&std::fs::read_to_string(config).expect("read")).expect("TOML");
    table(table(&mut t, "model"), "test").insert("score_threshold".into(), toml::Value::Float(0.0));
    std::fs::write(config, toml::to_string(&t).expect("TOML")).expect("write");
    config.to_path_buf()
}

#[test]
fn drawn_images_show_exactly_the_written_predictions_and_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = every_detection(&tiny_config(dir.path()));
    let run = dir.path().join("run");
    ok(&["train", "--config", &s(&config), "--out", &s(&run)]);

    // The generated validation images (64x64, what the model was trained on), from the
    // run directory.
    let val = dir.path().join("synth/val/images");
    predict_and_check(&run, &val, &dir.path().join("val"), &[]);

    // Real photos of other sizes, several per padded batch, from the checkpoint file.
    let photos = test_data().join("skimage_samples");
    assert!(photos.is_dir(), "{} is missing", photos.display());
    predict_and_check(
        &run.join("last.ckpt"),
        &photos,
        &dir.path().join("photos"),
        &["--batch-size", "3"],
    );

    // One file.
    let one = dir.path().join("one");
    let stdout = ok(&[
        "predict",
        "--checkpoint",
        &s(&run),
        "--images",
        &s(&photos.join("rocket.jpg")),
        "--out",
        &s(&one),
    ]);
    assert!(one.join("rocket.png").is_file(), "{stdout}");
    check_output(
        &[photos.join("rocket.jpg")],
        &one,
        &stdout,
        0.3,
        &SYNTH_CLASSES,
    );

    // Errors.
    let predict = |images: &Path, out: &Path| {
        fails(&[
            "predict",
            "--checkpoint",
            &s(&run),
            "--images",
            &s(images),
            "--out",
            &s(out),
        ])
    };
    let err_out = dir.path().join("err");
    let missing = dir.path().join("no-such-folder");
    let err = predict(&missing, &err_out);
    assert!(
        err.contains("no-such-folder") && err.contains("no such file or folder"),
        "{err}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    std::fs::write(empty.join("notes.txt"), "not an image").expect("write");
    let err = predict(&empty, &err_out);
    assert!(err.contains("no .png, .jpg or .jpeg files"), "{err}");

    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    std::fs::copy(val.join("000001.png"), bad.join("a.png")).expect("copy");
    std::fs::write(bad.join("broken.jpg"), "not a JPEG").expect("write");
    let err = predict(&bad, &err_out);
    assert!(err.contains("broken.jpg"), "{err}");
    assert!(
        !err_out.exists(),
        "nothing is written before the files are checked"
    );
    // A valid header with the data cut off fails when decoded, still naming the file.
    std::fs::remove_file(bad.join("broken.jpg")).expect("rm");
    let png = std::fs::read(val.join("000002.png")).expect("read");
    std::fs::write(bad.join("cut.png"), &png[..png.len() / 3]).expect("write");
    let err = predict(&bad, &err_out);
    assert!(
        err.contains("cut.png") && err.contains("cannot decode"),
        "{err}"
    );

    let err = predict(&val, &val);
    assert!(err.contains("is the image folder"), "{err}");
}

/// A tiny COCO model (the narrow student with 80 classes on two images of
/// `coco_tiny_val2017` resized to 64 px): predictions carry COCO's non-contiguous category
/// ids and the drawn names are the annotation file's; with the file gone, a warning and
/// `class <k>` names with ids k + 1.
#[test]
fn coco_models_name_classes_from_their_annotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let coco = test_data().join("coco_tiny_val2017");
    let mut gt = read_json(&coco.join("annotations/instances_val2017.json"));
    let keep: Vec<u64> = gt["images"].as_array().expect("images")[..2]
        .iter()
        .map(|i| i["id"].as_u64().expect("id"))
        .collect();
    for (key, id_key) in [("images", "id"), ("annotations", "image_id")] {
        let kept: Vec<Value> = gt[key]
            .as_array()
            .expect("a list")
            .iter()
            .filter(|r| keep.contains(&r[id_key].as_u64().expect("an id")))
            .cloned()
            .collect();
        gt[key] = Value::Array(kept);
    }
    let mut categories: Vec<(u64, String)> = gt["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().expect("id"),
                c["name"].as_str().expect("name").to_string(),
            )
        })
        .collect();
    categories.sort();
    assert_eq!(categories.len(), 80);
    let json = dir.path().join("two.json");
    std::fs::write(&json, gt.to_string()).expect("write");

    let config = every_detection(&tiny_config(dir.path()));
    let mut t: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).expect("read")).expect("TOML");
    let data = table(&mut t, "data");
    data.remove("synth");
    let images = coco.join("val2017");
    for (key, value) in [
        ("train_json", &json),
        ("val_json", &json),
        ("train_images", &images),
        ("val_images", &images),
    ] {
        data.insert(key.into(), toml::Value::String(s(value)));
    }
    let resize = inline("type = \"resize\"\nshort_side = 64\nmax_size = 96");
    data.insert(
        "train_transforms".into(),
        toml::Value::Array(vec![resize.clone()]),
    );
    data.insert("test_transforms".into(), toml::Value::Array(vec![resize]));
    table(table(&mut t, "model"), "head").insert("num_classes".into(), toml::Value::Integer(80));
    std::fs::write(&config, toml::to_string(&t).expect("TOML")).expect("write");
    let run = dir.path().join("run");
    ok(&["train", "--config", &s(&config), "--out", &s(&run)]);

    let photos: Vec<PathBuf> = image_files(&images)
        .into_iter()
        .filter(|p| {
            gt["images"]
                .as_array()
                .expect("images")
                .iter()
                .any(|i| p.ends_with(i["file_name"].as_str().expect("file_name")))
        })
        .collect();
    assert_eq!(photos.len(), 2);
    let input = dir.path().join("photos");
    std::fs::create_dir(&input).expect("mkdir");
    for p in &photos {
        std::fs::copy(p, input.join(p.file_name().expect("a name"))).expect("copy");
    }
    let out = dir.path().join("out");
    let stdout = ok(&[
        "predict",
        "--checkpoint",
        &s(&run),
        "--images",
        &s(&input),
        "--out",
        &s(&out),
        "--score-threshold",
        "0",
    ]);
    let names: Vec<&str> = categories.iter().map(|(_, n)| n.as_str()).collect();
    let drawn = check_output(&photos, &out, &stdout, 0.0, &names);
    assert!(drawn > 0, "{stdout}");
    let ids: Vec<u64> = categories.iter().map(|(id, _)| *id).collect();
    let written = predictions_by_image(&out);
    assert!(
        written
            .values()
            .flatten()
            .all(|p| ids.contains(&p.category_id)),
        "category ids are COCO's"
    );
    // Boxes are in the photos' pixels, not the 64-px network input's: some end past 96.
    assert!(
        written
            .values()
            .flatten()
            .any(|p| p.bbox[0] + p.bbox[2] > 96.0 || p.bbox[1] + p.bbox[3] > 96.0),
        "every box fits the resized image"
    );

    std::fs::remove_file(&json).expect("rm");
    let out = dir.path().join("out-unnamed");
    let output = crate::kdet(&[
        "predict",
        "--checkpoint",
        &s(&run),
        "--images",
        &s(&input),
        "--out",
        &s(&out),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("warning: no class names") && err.contains("two.json"),
        "{err}"
    );
    let generic: Vec<String> = (0..80).map(|k| format!("class {k}")).collect();
    let generic: Vec<&str> = generic.iter().map(String::as_str).collect();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    check_output(&photos, &out, &stdout, 0.3, &generic);
    assert!(
        predictions_by_image(&out)
            .values()
            .flatten()
            .all(|p| (1..=80).contains(&p.category_id)),
        "fallback category ids are k + 1"
    );
}
