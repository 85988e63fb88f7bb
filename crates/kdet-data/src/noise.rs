//! Noisy boxes for the noisy-box self-correction setting (NDet, "Narrowing the Gap",
//! spec `../shared/methods/video-semisup-weak.md` §4.3), as the official
//! `wangsr126/NDet` `tools/add_noise.py`:
//!
//! - each corner coordinate moves independently by a normal draw times `γ` times the
//!   box's side: `x1 += N(0,1)·γ·w`, `y1 += N(0,1)·γ·h`, `x2 += N(0,1)·γ·w`,
//!   `y2 += N(0,1)·γ·h`; the new `[x, y, w, h]` is rounded to 2 decimals;
//! - a noisy box is drawn again until it is valid: it overlaps the image, `w >= 1`,
//!   `h >= 1` (and the annotation's `area` is positive);
//! - an annotation marked `ignore`, or whose clean box is not valid, keeps its box;
//! - the clean box is kept under `_bbox`, the noisy one replaces `bbox`; nothing else of
//!   the file changes (`area` and `segmentation` stay the clean ones, as the official).
//!
//! kdet's choices: the draws come from a ChaCha8 generator keyed by `(seed, position of the
//! annotation in the file)`, so a file is noised the same way on every machine and an
//! annotation's noise does not depend on the others; the official loop has no bound, this
//! one gives up after [`MAX_DRAWS`] draws with an error naming the annotation.
//!
//! [`clean_box_iou`] is the diagnostic of the official training code: the mean IoU of the
//! (noisy or corrected) `bbox` with the clean `_bbox`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// Draws of one noisy box before giving up.
pub const MAX_DRAWS: usize = 10_000;

/// What [`add_box_noise`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseReport {
    /// Annotations whose box was noised.
    pub noised: usize,
    /// Annotations that kept their box (`ignore`, or an invalid clean box).
    pub kept: usize,
    /// Mean IoU of the noisy boxes with the clean ones (over the noised annotations).
    pub mean_iou: f64,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The official validity rule: overlaps the `width × height` image, positive `area`,
/// `w >= 1`, `h >= 1`.
fn valid(b: [f64; 4], area: f64, width: f64, height: f64) -> bool {
    let inter_w = ((b[0] + b[2]).min(width) - b[0].max(0.0)).max(0.0);
    let inter_h = ((b[1] + b[3]).min(height) - b[1].max(0.0)).max(0.0);
    inter_w * inter_h > 0.0 && area > 0.0 && b[2] >= 1.0 && b[3] >= 1.0
}

/// IoU of two `[x, y, w, h]` boxes.
pub fn xywh_iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// One noisy box of `clean` (`[x, y, w, h]`) in a `width × height` image, or `None` when no
/// valid one came in [`MAX_DRAWS`] draws.
pub fn noisy_box(
    clean: [f64; 4],
    area: f64,
    width: f64,
    height: f64,
    gamma: f64,
    rng: &mut ChaCha8Rng,
) -> Option<[f64; 4]> {
    let [x1, y1, w, h] = clean;
    let round = |v: f64| (v * 100.0).round() / 100.0;
    for _ in 0..MAX_DRAWS {
        let nx1 = x1 + normal(rng) * w * gamma;
        let ny1 = y1 + normal(rng) * h * gamma;
        let nx2 = x1 + w + normal(rng) * w * gamma;
        let ny2 = y1 + h + normal(rng) * h * gamma;
        let b = [nx1, ny1, nx2 - nx1, ny2 - ny1].map(round);
        if valid(b, area, width, height) {
            return Some(b);
        }
    }
    None
}

fn bbox_of(v: &Value) -> Option<[f64; 4]> {
    let a = v.as_array()?;
    if a.len() != 4 {
        return None;
    }
    let mut out = [0.0; 4];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x.as_f64()?;
    }
    Some(out)
}

/// Noises the boxes of a COCO instances file in place (module docs): `file` names it in
/// errors, `gamma` is the official `γ` (0.05, 0.1, ...), `seed` keys the draws.
///
/// # Errors
/// A message naming the file and the annotation for a missing or malformed `images`,
/// `annotations`, `bbox`, `image_id` or image size, a negative or non-finite `gamma`, an
/// annotation of an unknown image, an annotation noised already (it has `_bbox`), or a box
/// that no draw could make valid.
pub fn add_box_noise(
    coco: &mut Value,
    gamma: f64,
    seed: u64,
    file: &str,
) -> Result<NoiseReport, String> {
    if !(gamma.is_finite() && gamma >= 0.0) {
        return Err(format!(
            "box noise gamma {gamma}: must be a finite number >= 0"
        ));
    }
    let mut sizes = std::collections::HashMap::new();
    for (i, img) in coco
        .get("images")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{file}: no `images` list"))?
        .iter()
        .enumerate()
    {
        let num = |k: &str| {
            img.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("{file}: images[{i}] has no numeric `{k}`"))
        };
        let id = img
            .get("id")
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("{file}: images[{i}] has no integer `id`"))?;
        sizes.insert(id, (num("width")?, num("height")?));
    }
    let annotations = coco
        .get_mut("annotations")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| format!("{file}: no `annotations` list"))?;
    let (mut noised, mut kept, mut iou_sum) = (0usize, 0usize, 0.0f64);
    for (i, ann) in annotations.iter_mut().enumerate() {
        let name = format!(
            "{file}: annotations[{i}] (id {})",
            ann.get("id").map_or("?".to_string(), Value::to_string)
        );
        if ann.get("_bbox").is_some() {
            return Err(format!(
                "{name}: already has a clean `_bbox` (a noised file); noise the clean file"
            ));
        }
        let clean = ann
            .get("bbox")
            .and_then(bbox_of)
            .ok_or_else(|| format!("{name}: `bbox` is not 4 numbers"))?;
        let image = ann
            .get("image_id")
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("{name}: no integer `image_id`"))?;
        let &(width, height) = sizes
            .get(&image)
            .ok_or_else(|| format!("{name}: image id {image} is not in `images`"))?;
        // The official reads `area` for its check; a file without it has the box's.
        let area = ann
            .get("area")
            .and_then(Value::as_f64)
            .unwrap_or(clean[2] * clean[3]);
        let ignore = ann.get("ignore").is_some_and(|v| {
            v.as_bool()
                .unwrap_or_else(|| v.as_i64().is_some_and(|x| x != 0))
        });
        let noisy = if ignore || !valid(clean, area, width, height) {
            kept += 1;
            clean
        } else {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            key[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            key[16..24].copy_from_slice(b"boxnoise");
            let mut rng = ChaCha8Rng::from_seed(key);
            let b = noisy_box(clean, area, width, height, gamma, &mut rng).ok_or_else(|| {
                format!("{name}: no valid noisy box in {MAX_DRAWS} draws at gamma {gamma}")
            })?;
            noised += 1;
            iou_sum += xywh_iou(b, clean);
            b
        };
        let obj = ann
            .as_object_mut()
            .ok_or_else(|| format!("{name}: not an object"))?;
        let original = obj.get("bbox").cloned().unwrap_or(Value::Null);
        obj.insert("_bbox".into(), original);
        obj.insert("bbox".into(), serde_json::json!(noisy));
    }
    Ok(NoiseReport {
        noised,
        kept,
        mean_iou: if noised > 0 {
            iou_sum / noised as f64
        } else {
            1.0
        },
    })
}

/// The mean IoU of each annotation's `bbox` with its clean `_bbox`, over the annotations
/// that have one (`None` when none has): how far the boxes a detector trains on are from
/// the clean ones, before or after a correction.
pub fn clean_box_iou(coco: &Value) -> Option<f64> {
    let pairs: Vec<f64> = coco
        .get("annotations")?
        .as_array()?
        .iter()
        .filter_map(|a| {
            Some(xywh_iou(
                bbox_of(a.get("bbox")?)?,
                bbox_of(a.get("_bbox")?)?,
            ))
        })
        .collect();
    (!pairs.is_empty()).then(|| pairs.iter().sum::<f64>() / pairs.len() as f64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file() -> Value {
        json!({
            "images": [{"id": 1, "width": 100, "height": 80, "file_name": "a.png"}],
            "annotations": [
                {"id": 10, "image_id": 1, "bbox": [10, 10, 40, 30], "area": 1200, "category_id": 1, "iscrowd": 0, "extra": "kept"},
                {"id": 11, "image_id": 1, "bbox": [50, 20, 20, 20], "area": 400, "category_id": 2, "iscrowd": 0, "ignore": 1},
                {"id": 12, "image_id": 1, "bbox": [0, 0, 0.5, 10], "area": 5, "category_id": 2, "iscrowd": 0}
            ],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
        })
    }

    #[test]
    fn noise_moves_valid_boxes_keeps_the_clean_ones_and_nothing_else() {
        let mut f = file();
        let r = add_box_noise(&mut f, 0.1, 0, "f.json").unwrap();
        assert_eq!((r.noised, r.kept), (1, 2));
        let anns = f["annotations"].as_array().unwrap();
        // Noised: a valid box, different from the clean one, which is kept under _bbox.
        let b = bbox_of(&anns[0]["bbox"]).unwrap();
        assert_eq!(anns[0]["_bbox"], json!([10, 10, 40, 30]));
        assert_ne!(b, [10.0, 10.0, 40.0, 30.0]);
        assert!(valid(b, 1200.0, 100.0, 80.0));
        // Rounded to 2 decimals.
        for v in b {
            assert!(((v * 100.0).round() - v * 100.0).abs() < 1e-6, "{v}");
        }
        assert!((r.mean_iou - xywh_iou(b, [10.0, 10.0, 40.0, 30.0])).abs() < 1e-12);
        // `ignore` and an invalid clean box (w < 1) keep their boxes.
        assert_eq!(anns[1]["bbox"], json!([50.0, 20.0, 20.0, 20.0]));
        assert_eq!(anns[2]["bbox"], json!([0.0, 0.0, 0.5, 10.0]));
        // Everything else of the file is untouched.
        assert_eq!(anns[0]["extra"], "kept");
        assert_eq!(anns[0]["area"], 1200);
        assert_eq!(f["images"], file()["images"]);
        // The diagnostic reads the pairs back: 1 for the two kept boxes.
        let mean = clean_box_iou(&f).unwrap();
        assert!((mean - (r.mean_iou + 2.0) / 3.0).abs() < 1e-9);
        assert_eq!(clean_box_iou(&file()), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_file_and_gamma_zero_changes_nothing() {
        let (mut a, mut b, mut c) = (file(), file(), file());
        add_box_noise(&mut a, 0.2, 7, "f").unwrap();
        add_box_noise(&mut b, 0.2, 7, "f").unwrap();
        add_box_noise(&mut c, 0.2, 8, "f").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut z = file();
        let r = add_box_noise(&mut z, 0.0, 1, "f").unwrap();
        assert_eq!(r.mean_iou, 1.0);
        assert_eq!(
            bbox_of(&z["annotations"][0]["bbox"]),
            Some([10.0, 10.0, 40.0, 30.0])
        );
    }

    #[test]
    fn noise_grows_with_gamma_as_the_official_model() {
        // Corner noise N(0, (γ·side)²): the mean IoU over many boxes falls as γ grows, and
        // at γ = 0.1 the corners' sample std is γ·side within sampling error.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let clean = [100.0, 100.0, 50.0, 40.0];
        let mut mean_iou = Vec::new();
        for gamma in [0.05, 0.1, 0.2, 0.4] {
            let draws: Vec<[f64; 4]> = (0..4000)
                .map(|_| noisy_box(clean, 2000.0, 1000.0, 1000.0, gamma, &mut rng).unwrap())
                .collect();
            mean_iou.push(draws.iter().map(|b| xywh_iou(*b, clean)).sum::<f64>() / 4000.0);
            if gamma == 0.1 {
                let x1: Vec<f64> = draws.iter().map(|b| b[0] - clean[0]).collect();
                let m = x1.iter().sum::<f64>() / x1.len() as f64;
                let sd = (x1.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 3999.0).sqrt();
                assert!(m.abs() < 0.25 && (sd - 5.0).abs() < 0.25, "{m} {sd}");
            }
        }
        assert!(mean_iou.windows(2).all(|w| w[0] > w[1]), "{mean_iou:?}");
    }

    #[test]
    fn malformed_files_are_errors_naming_the_annotation() {
        let mut f = file();
        f["annotations"][1]["bbox"] = json!([1, 2, 3]);
        let e = add_box_noise(&mut f, 0.1, 0, "f.json").unwrap_err();
        assert!(
            e.contains("f.json: annotations[1] (id 11)") && e.contains("bbox"),
            "{e}"
        );
        let mut f = file();
        f["annotations"][0]["image_id"] = json!(9);
        let e = add_box_noise(&mut f, 0.1, 0, "f.json").unwrap_err();
        assert!(e.contains("image id 9"), "{e}");
        let e = add_box_noise(&mut json!({"annotations": []}), 0.1, 0, "g.json").unwrap_err();
        assert!(e.contains("g.json: no `images`"), "{e}");
        assert!(add_box_noise(&mut file(), -0.1, 0, "f").is_err());
        // A noised file cannot be noised again (its clean boxes would be lost).
        let mut f = file();
        add_box_noise(&mut f, 0.1, 0, "f.json").unwrap();
        let e = add_box_noise(&mut f, 0.1, 0, "f.json").unwrap_err();
        assert!(
            e.contains("annotations[0] (id 10)") && e.contains("_bbox"),
            "{e}"
        );
    }
}
