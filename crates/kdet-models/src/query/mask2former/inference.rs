//! Mask2Former's instance inference (`MaskFormer.instance_inference` and
//! `sem_seg_postprocess` in `maskformer_model.py`), per image:
//!
//! 1. mask logits bilinearly upsampled (`align_corners = False`) from the stride-4 grid to
//!    the padded canvas, cropped to the image's resized size, resized to its original size;
//! 2. class scores `softmax` over `K + 1` with the no-object column dropped; the best
//!    `topk` of the `Q · K` (query, class) pairs, label `index mod K`, query `index div K`;
//! 3. masks binarised at logit 0; each pair's score = class probability × mask quality,
//!    the mean sigmoid inside the binarised mask (`Σ σ·m / (Σ m + 1e-6)`).
//!
//! kdet's additions: the pairs are sorted by their final score (the official
//! `topk(sorted=False)` leaves the order open), boxes are the masks' bounding boxes
//! (detectron2 `BitMasks.get_bounding_boxes`, `x2, y2` one past the last pixel; an empty
//! mask gets the zero box), and non-finite scores are dropped.

use burn::tensor::Tensor;
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use kdet_structures::{BitMask, Boxes, ImageSize, Instances, Mask, Masks};

use super::detached_mask_logits;
use crate::output::QueryLayer;

fn bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size(size),
    )
}

/// Row-major `f32` values of a tensor.
fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a converted f32 tensor reads back as f32")
}

/// The bounding box `[x1, y1, x2 + 1, y2 + 1]` of a row-major binary mask; zeros if empty.
fn mask_box(mask: &[u8], width: usize) -> [f32; 4] {
    let mut bounds: Option<[usize; 4]> = None;
    for (i, _) in mask.iter().enumerate().filter(|(_, v)| **v != 0) {
        let (x, y) = (i % width, i / width);
        bounds = Some(match bounds {
            None => [x, y, x, y],
            Some([x1, y1, x2, y2]) => [x1.min(x), y1.min(y), x2.max(x), y2.max(y)],
        });
    }
    bounds.map_or([0.0; 4], |[x1, y1, x2, y2]| {
        [x1 as f32, y1 as f32, (x2 + 1) as f32, (y2 + 1) as f32]
    })
}

/// Instances per image from one prediction (the last, at inference), in original pixels.
///
/// # Panics
/// If the layer has no mask logits, or the sizes do not have one entry per image.
pub fn instance_inference(
    layer: &QueryLayer,
    image_sizes: &[ImageSize],
    padded: ImageSize,
    original_sizes: &[ImageSize],
    topk: usize,
) -> Vec<Instances> {
    let [b, q, c] = layer.class_logits.dims();
    assert!(
        image_sizes.len() == b && original_sizes.len() == b,
        "one resized and one original size per image of the batch"
    );
    let num_classes = c - 1;
    let probs = host(softmax(
        layer.class_logits.clone().detach().without_autodiff(),
        2,
    ));
    let masks = detached_mask_logits(layer);
    let (hp, wp) = (padded.height as usize, padded.width as usize);
    let canvas = bilinear(masks, [hp, wp]);
    (0..b)
        .map(|i| {
            let (hi, wi) = (
                image_sizes[i].height as usize,
                image_sizes[i].width as usize,
            );
            let original = original_sizes[i];
            let (ho, wo) = (original.height as usize, original.width as usize);
            let mut logits = canvas.clone().slice([i..i + 1, 0..q, 0..hi, 0..wi]);
            if (ho, wo) != (hi, wi) {
                logits = bilinear(logits, [ho, wo]);
            }
            let probabilities = host(sigmoid(logits.clone()));
            let logits = host(logits);
            let pixels = ho * wo;
            // Per query: the binarised mask and its quality (the same for every class).
            let binary: Vec<Vec<u8>> = (0..q)
                .map(|j| {
                    logits[j * pixels..(j + 1) * pixels]
                        .iter()
                        .map(|&v| u8::from(v > 0.0))
                        .collect()
                })
                .collect();
            let quality: Vec<f32> = (0..q)
                .map(|j| {
                    let inside: f32 = binary[j].iter().map(|&m| f32::from(m)).sum();
                    let mass: f32 = probabilities[j * pixels..(j + 1) * pixels]
                        .iter()
                        .zip(&binary[j])
                        .map(|(p, &m)| p * f32::from(m))
                        .sum();
                    mass / (inside + 1e-6)
                })
                .collect();
            // Every (query, class) pair, index j·K + k as the official flatten(0, 1).
            let mut pairs: Vec<(f32, usize, usize)> = (0..q * num_classes)
                .map(|index| {
                    let (j, k) = (index / num_classes, index % num_classes);
                    (probs[(i * q + j) * c + k], j, k)
                })
                .collect();
            // The top k by class probability (stable: ties keep index order, as a sort).
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
            pairs.truncate(topk);
            let mut dets: Vec<(f32, usize, usize)> = pairs
                .into_iter()
                .map(|(p, j, k)| (p * quality[j], j, k))
                .filter(|d| d.0.is_finite())
                .collect();
            dets.sort_by(|a, b| b.0.total_cmp(&a.0));
            let boxes = dets
                .iter()
                .map(|&(_, j, _)| mask_box(&binary[j], wo))
                .collect();
            let bitmaps = dets
                .iter()
                .map(|&(_, j, _)| {
                    let bits = BitMask::new(original.height, original.width, binary[j].clone())
                        .expect("a mask of the original size");
                    Mask::Bitmap(bits)
                })
                .collect();
            Instances::new(
                original,
                Boxes::new(boxes),
                dets.iter().map(|d| d.2).collect(),
            )
            .and_then(|inst| inst.with_scores(dets.iter().map(|d| d.0).collect()))
            .and_then(|inst| {
                let masks = Masks::new(original.height, original.width, bitmaps)?;
                inst.with_masks(masks)
            })
            .expect("finite boxes and scores, one class, score and mask per box")
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Two queries on a 2×2 mask grid of an 8×8 canvas (stride 4), two classes.
    fn layer(logits: Vec<f32>, masks: Vec<f32>) -> QueryLayer {
        let device = Device::flex();
        QueryLayer {
            embeddings: Tensor::zeros([1, 2, 2], &device),
            class_logits: Tensor::from_data(TensorData::new(logits, [1, 2, 3]), &device),
            mask_logits: Some(Tensor::from_data(
                TensorData::new(masks, [1, 2, 2, 2]),
                &device,
            )),
            boxes: None,
        }
    }

    #[test]
    fn scores_are_class_probability_times_mask_quality_and_sorted() {
        // Query 0: p(class 0) = 0.8 (logits ln 8, ln 1, ln 1 → 8/10), a hesitant mask
        // (logit 0.2 on the top-left cell, −9 elsewhere). Query 1: p(class 1) = 0.6
        // (ln 2, ln 6, ln 2), a confident mask (+9 on the right column). Quality of query 1
        // is close to 1 and of query 0 at most σ(0.2) ≈ 0.55, so query 1 ranks first
        // despite its lower class probability.
        let (l2, l6, l8) = (2f32.ln(), 6f32.ln(), 8f32.ln());
        let logits = vec![l8, 0.0, 0.0, l2, l6, l2];
        let masks = vec![0.2, -9.0, -9.0, -9.0, -9.0, 9.0, -9.0, 9.0];
        let out = instance_inference(
            &layer(logits, masks),
            &[ImageSize::new(8, 8)],
            ImageSize::new(8, 8),
            &[ImageSize::new(8, 8)],
            100,
        );
        let det = &out[0];
        // All 2 × 2 (query, class) pairs, each mask non-empty.
        assert_eq!(det.len(), 4);
        assert_eq!(&det.classes()[..2], [1, 0]);
        let s = det.scores().unwrap();
        assert!(s.windows(2).all(|p| p[0] >= p[1]), "{s:?}");
        // Query 0's quality: the mean σ over the pixels whose upsampled logit is > 0.
        let masks = det.masks().unwrap().to_bitmaps().unwrap();
        let inside = masks[1].area();
        assert!(inside > 0 && inside < 16, "{inside}");
        assert!(s[1] < 0.8 * 0.56 && s[1] > 0.8 * 0.5, "{s:?}");
        // Its quality: σ of the upsampled logits 2.25, 6.75, 9, 9 across columns 4-7 ≈ 0.976.
        assert!(s[0] > 0.6 * 0.97 && s[0] < 0.6 * 0.98, "{s:?}");
        // Query 1's mask is the right half, its box x 4–8, y 0–8.
        assert_eq!(masks[0].area(), 32);
        assert_eq!(det.boxes().as_slice()[0], [4.0, 0.0, 8.0, 8.0]);
        assert_eq!(det.image_size(), ImageSize::new(8, 8));
    }

    #[test]
    fn topk_keeps_the_best_pairs_by_class_probability() {
        let (l2, l6, l8) = (2f32.ln(), 6f32.ln(), 8f32.ln());
        let logits = vec![l8, 0.0, 0.0, l2, l6, l2];
        let masks = vec![9.0; 8];
        let out = instance_inference(
            &layer(logits, masks),
            &[ImageSize::new(8, 8)],
            ImageSize::new(8, 8),
            &[ImageSize::new(8, 8)],
            2,
        );
        // Class probabilities 0.8 (q0, k0), 0.6 (q1, k1), 0.2, 0.1: the first two stay.
        assert_eq!(out[0].classes(), [0, 1]);
        let s = out[0].scores().unwrap();
        assert!(
            (s[0] - 0.8).abs() < 1e-3 && (s[1] - 0.6).abs() < 1e-3,
            "{s:?}"
        );
    }

    #[test]
    fn masks_are_cropped_to_the_image_and_resized_to_the_original() {
        // Canvas 8×8, image 8×4 (h × w) inside it, originally 16×8. Query 0 covers the
        // top row of cells (y 0–4 of the canvas) → the top half of the image → rows 0–8 of
        // the 16×8 original.
        let logits = vec![5.0, 0.0, 0.0, 0.0, 0.0, 5.0];
        let masks = vec![9.0, 9.0, -9.0, -9.0, -9.0, -9.0, -9.0, -9.0];
        let out = instance_inference(
            &layer(logits, masks),
            &[ImageSize::new(8, 4)],
            ImageSize::new(8, 8),
            &[ImageSize::new(16, 8)],
            1,
        );
        let det = &out[0];
        assert_eq!(det.image_size(), ImageSize::new(16, 8));
        let m = &det.masks().unwrap().to_bitmaps().unwrap()[0];
        assert_eq!((m.height(), m.width()), (16, 8));
        assert_eq!(det.boxes().as_slice()[0], [0.0, 0.0, 8.0, 8.0]);
        assert_eq!(m.area(), 64);
    }

    #[test]
    fn boxes_are_the_masks_bounding_boxes_and_empty_masks_get_zero_boxes() {
        assert_eq!(mask_box(&[0, 0, 0, 0], 2), [0.0; 4]);
        // Rows [0, 1, 0] and [1, 1, 0]: x 0–1, y 0–1 → [0, 0, 2, 2].
        assert_eq!(mask_box(&[0, 1, 0, 1, 1, 0], 3), [0.0, 0.0, 2.0, 2.0]);
        assert_eq!(mask_box(&[0, 0, 0, 0, 0, 1], 3), [2.0, 1.0, 3.0, 2.0]);
    }
}
