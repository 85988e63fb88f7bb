//! Bad input gets a clear error naming the file and the record, or a counted skip.

use std::path::{Path, PathBuf};

use kdet_data::{CocoDataset, CocoOptions, DataError};
use serde_json::{Value, json};

/// A valid two-image dataset in a temp dir: 8x6 PNGs `a.png` (id 1) and `b.png` (id 2),
/// categories 3 and 7, one box on image 1.
fn valid() -> Value {
    json!({
        "images": [
            {"id": 1, "file_name": "a.png", "width": 8, "height": 6},
            {"id": 2, "file_name": "b.png", "width": 8, "height": 6}
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 1, 3, 2], "area": 6, "iscrowd": 0}
        ]
    })
}

fn write(dir: &Path, doc: &Value) -> PathBuf {
    for name in ["a.png", "b.png"] {
        let p = dir.join(name);
        if !p.exists() {
            image::RgbImage::new(8, 6)
                .save(&p)
                .expect("the image is written");
        }
    }
    let json = dir.join("ann.json");
    std::fs::write(&json, serde_json::to_vec(doc).expect("JSON"))
        .expect("the JSON file is written");
    json
}

fn load(doc: &Value) -> (tempfile::TempDir, Result<CocoDataset, DataError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = write(dir.path(), doc);
    let r = CocoDataset::load(&json, dir.path(), &CocoOptions::default());
    (dir, r)
}

fn err_text(doc: &Value) -> String {
    let (_d, r) = load(doc);
    r.expect_err("expected an error").to_string()
}

#[test]
fn the_valid_fixture_loads() {
    let (_d, r) = load(&valid());
    let ds = r.unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.labels().category_ids(), &[3, 7]);
    assert_eq!(ds.records()[0].instances.classes(), &[1]);
    assert_eq!(
        ds.records()[0].instances.boxes().as_slice()[0],
        [1.0, 1.0, 4.0, 3.0]
    );
    assert_eq!(ds.report().images_without_annotations, 1);
    let (_d, r) = {
        let dir = tempfile::tempdir().unwrap();
        let json = write(dir.path(), &valid());
        let r = CocoDataset::load(&json, dir.path(), &CocoOptions { filter_empty: true });
        (dir, r)
    };
    assert_eq!(
        r.unwrap().len(),
        1,
        "filter_empty drops the image without objects"
    );
}

#[test]
fn malformed_json_names_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("broken.json");
    std::fs::write(&json, br#"{"images": [{"id": 1, "file_name": "a.png""#).unwrap();
    let e = CocoDataset::load(&json, dir.path(), &CocoOptions::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Json { .. }), "{msg}");
    assert!(
        msg.contains("broken.json") && msg.contains("line 1"),
        "{msg}"
    );
    let missing = CocoDataset::load(
        &dir.path().join("nope.json"),
        dir.path(),
        &CocoOptions::default(),
    )
    .unwrap_err();
    assert!(missing.to_string().contains("nope.json"), "{missing}");
}

#[test]
fn unknown_ids_are_errors_naming_the_annotation() {
    let mut doc = valid();
    doc["annotations"][0]["category_id"] = json!(5);
    let msg = err_text(&doc);
    assert!(
        msg.contains("ann.json")
            && msg.contains("annotation id 10")
            && msg.contains("category id 5"),
        "{msg}"
    );

    let mut doc = valid();
    doc["annotations"][0]["image_id"] = json!(99);
    let msg = err_text(&doc);
    assert!(
        msg.contains("annotation id 10") && msg.contains("image id 99"),
        "{msg}"
    );
}

#[test]
fn negative_and_non_finite_boxes_are_errors() {
    let mut doc = valid();
    doc["annotations"][0]["bbox"] = json!([1, 1, -3, 2]);
    let msg = err_text(&doc);
    assert!(
        msg.contains("annotation id 10") && msg.contains("negative"),
        "{msg}"
    );
    // JSON has no NaN; hotcoco turns a literal NaN into null, which is "no bbox".
    let mut doc = valid();
    doc["annotations"][0]["bbox"] = Value::Null;
    let msg = err_text(&doc);
    assert!(msg.contains("neither `bbox` nor `segmentation`"), "{msg}");
}

#[test]
fn zero_size_and_outside_boxes_are_skipped_and_counted() {
    let mut doc = valid();
    let anns = doc["annotations"].as_array_mut().unwrap();
    anns.push(
        json!({"id": 11, "image_id": 1, "category_id": 3, "bbox": [2, 2, 0, 3], "iscrowd": 0}),
    );
    anns.push(
        json!({"id": 12, "image_id": 2, "category_id": 3, "bbox": [20, 20, 4, 4], "iscrowd": 0}),
    );
    anns.push(
        json!({"id": 13, "image_id": 2, "category_id": 3, "bbox": [6, 4, 10, 10], "iscrowd": 0}),
    );
    let (_d, r) = load(&doc);
    let ds = r.unwrap();
    let rep = ds.report();
    assert_eq!(
        (rep.skipped_zero_size, rep.skipped_outside, rep.clipped),
        (1, 1, 1)
    );
    assert_eq!(rep.annotations, 2);
    assert!(
        rep.warnings.iter().any(|w| w.contains("annotation id 12")),
        "{:?}",
        rep.warnings
    );
    // The clipped box ends at the image border.
    assert_eq!(
        ds.records()[1].instances.boxes().as_slice()[0],
        [6.0, 4.0, 8.0, 6.0]
    );
}

#[test]
fn empty_annotation_list_and_missing_categories() {
    let mut doc = valid();
    doc["annotations"] = json!([]);
    let (_d, r) = load(&doc);
    let ds = r.unwrap();
    assert_eq!(ds.report().images_without_annotations, 2);
    assert!(ds.records().iter().all(|r| r.instances.is_empty()));

    let mut doc = valid();
    doc["categories"] = json!([]);
    assert!(err_text(&doc).contains("no categories"));
    let mut doc = valid();
    doc["categories"] = json!([{"id": 3, "name": "a"}, {"id": 3, "name": "b"}]);
    assert!(err_text(&doc).contains("category id 3 appears twice"));
    let mut doc = valid();
    doc["images"][1]["id"] = json!(1);
    assert!(err_text(&doc).contains("image id 1 appears twice"));
}

#[test]
fn bad_segmentations_are_errors() {
    let mut doc = valid();
    doc["annotations"][0]["segmentation"] = json!({"size": [5, 8], "counts": [40]});
    let msg = err_text(&doc);
    assert!(
        msg.contains("annotation id 10") && msg.contains("RLE size is 5x8"),
        "{msg}"
    );
    let mut doc = valid();
    doc["annotations"][0]["segmentation"] = json!([[1, 1, 3, 1, 3]]);
    let msg = err_text(&doc);
    assert!(msg.contains("polygon 0 has 5 coordinates"), "{msg}");
}

#[test]
fn missing_and_corrupt_images_name_the_file_and_id() {
    let dir = tempfile::tempdir().unwrap();
    let json = write(dir.path(), &valid());
    std::fs::remove_file(dir.path().join("b.png")).unwrap();
    let ds = CocoDataset::load(&json, dir.path(), &CocoOptions::default()).unwrap();
    let e = ds.load_image(1).unwrap_err();
    assert!(
        matches!(e, DataError::MissingImage { image_id: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("b.png"), "{e}");

    // Truncate a real PNG: it no longer decodes.
    let png = std::fs::read(dir.path().join("a.png")).unwrap();
    std::fs::write(dir.path().join("a.png"), &png[..png.len() / 2]).unwrap();
    let e = ds.load_image(0).unwrap_err();
    assert!(
        matches!(e, DataError::CorruptImage { image_id: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("a.png"), "{e}");

    // Not an image at all.
    std::fs::write(dir.path().join("a.png"), b"hello").unwrap();
    assert!(matches!(
        ds.load_image(0),
        Err(DataError::CorruptImage { .. })
    ));

    // An image whose pixels disagree with the annotated size.
    image::RgbImage::new(5, 5)
        .save(dir.path().join("a.png"))
        .unwrap();
    let e = ds.load_image(0).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::ImageSize {
                got_w: 5,
                expected_w: 8,
                ..
            }
        ),
        "{e}"
    );
}
