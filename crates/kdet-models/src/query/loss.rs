//! The set criterion of query models (DETR's `SetCriterion`, Mask2Former's), term by term,
//! on the predictions a Hungarian matching paired with ground-truth objects
//! ([`Assignment::from_matches`]):
//!
//! - [`class_loss`]: cross-entropy over `K + 1` classes for *every* query, the target
//!   being the matched object's label or "no object" (`K`), weighted by class (1 for
//!   objects, `eos_coef` for no object: DETR 0.1, Mask2Former `NO_OBJECT_WEIGHT` 0.1) and
//!   averaged with those weights, as `F.cross_entropy(weight=empty_weight)`:
//!   `Σ w_t · (−log p_t) / Σ w_t`;
//! - [`box_losses`]: for matched queries, `Σ |b − b*|₁ / num_boxes` and
//!   `Σ (1 − GIoU(b, b*)) / num_boxes` on normalised `cx, cy, w, h` (DETR `loss_boxes`);
//! - [`mask_losses`]: for matched queries' mask logits and targets at the same sampled
//!   points, the mean sigmoid cross-entropy over points summed over masks / `num_masks`,
//!   and the dice loss `1 − (2 Σ σ(x) t + 1) / (Σ σ(x) + Σ t + 1)` summed / `num_masks`
//!   (Mask2Former `sigmoid_ce_loss`, `dice_loss`).
//!
//! `num_boxes` / `num_masks` is the number of objects in the batch (DETR and Mask2Former
//! average it over GPUs and clamp it to at least 1; one process here). Reference values:
//! `scripts/fixtures/set_criterion.py` (transformers' `ImageLoss` for DETR and the
//! Mask2Former loss functions) into `tests/fixtures/ops/set_criterion.json`, losses and
//! gradients.
//!
//! [`match_images`] is the matchers' shared skeleton: per image, its matchable objects
//! (crowd regions left out), one Hungarian matching of that image's predictions, and the
//! matched positions mapped back to the image's instance indices.

use burn::tensor::activation::{log_sigmoid, log_softmax, sigmoid};
use burn::tensor::{Int, Tensor, TensorData};
use kdet_structures::Cxcywh;
use kdet_structures::boxes::BoxTensor;
use kdet_structures::iou::aligned_giou_tensor;

use crate::assignment::{Assignment, Predictions};
use crate::ops::matching::MatchError;

/// Hungarian matching of a batch of `batch` images with `num_queries` queries each, image
/// by image: `matchable[i]` are image `i`'s objects that take part (ascending instance
/// indices), `labels[i][g]` image `i`'s instance `g`'s class. For every image with
/// matchable objects, `match_image(i, objects, labels)` matches that image's predictions
/// to those objects, in that order (`labels` theirs), and returns `(query, position in
/// objects)` pairs; an image without matchable objects matches no query. The positions
/// are mapped back to the image's instance indices.
///
/// # Panics
/// If a matching fails (a cost that is not finite: a diverged model), naming `family` and
/// the image.
pub(crate) fn match_images<F>(
    family: &str,
    batch: usize,
    num_queries: usize,
    matchable: &[Vec<usize>],
    labels: &[Vec<usize>],
    mut match_image: F,
) -> Assignment
where
    F: FnMut(usize, &[usize], &[usize]) -> Result<Vec<(usize, usize)>, MatchError>,
{
    let matches: Vec<Vec<(usize, usize)>> = (0..batch)
        .map(|i| {
            let objects = &matchable[i];
            if objects.is_empty() {
                return Vec::new();
            }
            let image_labels: Vec<usize> = objects.iter().map(|&g| labels[i][g]).collect();
            let pairs = match_image(i, objects, &image_labels)
                .unwrap_or_else(|e| panic!("{family} matching of image {i}: {e}"));
            // Back from matchable positions to the image's instance indices.
            pairs
                .into_iter()
                .map(|(query, k)| (query, objects[k]))
                .collect()
        })
        .collect();
    Assignment::from_matches(num_queries, &matches)
}

/// That `assignment` is the query assignment of a `family` model's own output: `num_queries`
/// queries per image, `images` images.
///
/// # Panics
/// If it is not (a wiring bug), naming `family`, what was expected and what came.
pub(crate) fn check_query_assignment(
    family: &str,
    num_queries: usize,
    images: usize,
    assignment: &Assignment,
) {
    let got = match &assignment.predictions {
        Predictions::Queries { num_queries } => format!("{num_queries} queries"),
        Predictions::Priors(p) => format!("{} dense priors", p.len()),
        Predictions::Rois(_) => "RoIs".to_string(),
    };
    assert!(
        matches!(assignment.predictions, Predictions::Queries { num_queries: n } if n == num_queries)
            && assignment.images.len() == images,
        "{family}'s loss needs the query assignment of its own output ({num_queries} queries, {images} images), got {got} for {} images",
        assignment.images.len()
    );
}

/// `(batch index · Q + query, image, object)` of every matched query, image by image.
pub(crate) fn matched(assignment: &Assignment, queries: usize) -> Vec<(usize, usize, usize)> {
    assignment
        .images
        .iter()
        .enumerate()
        .flat_map(|(i, img)| {
            img.matched_gt
                .iter()
                .enumerate()
                .filter_map(move |(q, g)| g.map(|g| (i * queries + q, i, g)))
        })
        .collect()
}

/// Weighted cross-entropy over `[B, Q, K+1]` logits; `labels[i][g]` is image `i`'s object
/// `g`'s class in `0..K`. A scalar `[1]`.
///
/// # Panics
/// If the assignment's images or a matched object's label are missing.
pub fn class_loss(
    logits: Tensor<3>,
    assignment: &Assignment,
    labels: &[Vec<usize>],
    eos_coef: f32,
) -> Tensor<1> {
    let [b, q, classes] = logits.dims();
    let no_object = classes - 1;
    let mut target = vec![no_object as i64; b * q];
    for (row, i, g) in matched(assignment, q) {
        target[row] = labels[i][g] as i64;
    }
    let weights: Vec<f32> = target
        .iter()
        .map(|&t| {
            if t as usize == no_object {
                eos_coef
            } else {
                1.0
            }
        })
        .collect();
    let device = logits.device();
    let total_weight: f32 = weights.iter().sum();
    let index = Tensor::<2, Int>::from_data(TensorData::new(target, [b * q, 1]), &device);
    let nll = log_softmax(logits.reshape([b * q, classes]), 1)
        .gather(1, index)
        .reshape([b * q])
        .neg();
    let w = Tensor::<1>::from_data(TensorData::new(weights, [b * q]), &device);
    (nll * w).sum().div_scalar(total_weight)
}

/// `(L1, GIoU)` box losses of the matched queries: `boxes` `[B, Q, 4]`, `targets[i][g]`
/// image `i`'s object `g` (normalised `cx, cy, w, h`). Scalars `[1]`; zero (with the
/// graph kept) when nothing is matched.
pub fn box_losses(
    boxes: Tensor<3>,
    assignment: &Assignment,
    targets: &[Vec<[f32; 4]>],
    num_boxes: f32,
) -> (Tensor<1>, Tensor<1>) {
    let [b, q, _] = boxes.dims();
    let device = boxes.device();
    let pairs = matched(assignment, q);
    let flat = boxes.reshape([b * q, 4]);
    if pairs.is_empty() {
        let zero = flat.sum().mul_scalar(0.0);
        return (zero.clone(), zero);
    }
    let rows: Vec<i64> = pairs.iter().map(|&(r, _, _)| r as i64).collect();
    let gt: Vec<f32> = pairs.iter().flat_map(|&(_, i, g)| targets[i][g]).collect();
    let n = pairs.len();
    let pred = flat.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device),
    );
    let gt = Tensor::<2>::from_data(TensorData::new(gt, [n, 4]), &device);
    let norm = num_boxes.max(1.0);
    let l1 = (pred.clone() - gt.clone()).abs().sum().div_scalar(norm);
    let giou = aligned_giou_tensor(
        &BoxTensor::<Cxcywh>::new(pred),
        &BoxTensor::<Cxcywh>::new(gt),
    );
    let giou_loss = giou.neg().add_scalar(1.0).sum().div_scalar(norm);
    (l1, giou_loss)
}

/// `(sigmoid CE, dice)` of `[M, P]` matched mask logits against `[M, P]` binary targets at
/// the same points. Scalars `[1]`.
pub fn mask_losses(
    logits: Tensor<2>,
    targets: Tensor<2>,
    num_masks: f32,
) -> (Tensor<1>, Tensor<1>) {
    let norm = num_masks.max(1.0);
    // BCE-with-logits: −t log σ(x) − (1 − t) log σ(−x).
    let ce = (log_sigmoid(logits.clone()) * targets.clone()
        + log_sigmoid(logits.clone().neg()) * targets.clone().neg().add_scalar(1.0))
    .neg()
    .mean_dim(1)
    .sum()
    .div_scalar(norm);
    let p = sigmoid(logits);
    let numerator = (p.clone() * targets.clone()).sum_dim(1).mul_scalar(2.0);
    let denominator = p.sum_dim(1) + targets.sum_dim(1);
    let dice = (numerator.add_scalar(1.0) / denominator.add_scalar(1.0))
        .neg()
        .add_scalar(1.0)
        .sum()
        .div_scalar(norm);
    (ce, dice)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn class_loss_weights_no_object_queries_by_eos_coef() {
        // Two queries, K = 1 (+ no object), equal logits: every NLL is ln 2, so any
        // weighting averages to ln 2.
        let device = Device::flex();
        let logits = Tensor::<3>::zeros([1, 2, 2], &device);
        let a = Assignment::from_matches(2, &[vec![(0, 0)]]);
        let l = scalar(class_loss(logits, &a, &[vec![0]], 0.1));
        assert!((l - 2f32.ln()).abs() < 1e-6, "{l}");
        // Query 0 certain of class 0 (matched), query 1 certain of class 0 (no object
        // expected): loss = (1·0 + 0.1·NLL₁) / 1.1 with NLL₁ ≈ 20.
        let logits = Tensor::<3>::from_data(
            TensorData::new(vec![20.0f32, 0.0, 20.0, 0.0], [1, 2, 2]),
            &device,
        );
        let l = scalar(class_loss(logits, &a, &[vec![0]], 0.1));
        assert!((l - 0.1 * 20.0 / 1.1).abs() < 1e-3, "{l}");
    }

    #[test]
    fn perfect_boxes_and_masks_cost_nothing_but_the_dice_smoothing() {
        let device = Device::flex();
        let boxes = Tensor::<3>::from_data(
            TensorData::new(vec![0.5f32, 0.5, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1], [1, 2, 4]),
            &device,
        );
        let a = Assignment::from_matches(2, &[vec![(0, 0)]]);
        let (l1, giou) = box_losses(boxes.clone(), &a, &[vec![[0.5, 0.5, 0.2, 0.2]]], 1.0);
        assert!(scalar(l1).abs() < 1e-6 && scalar(giou).abs() < 1e-6);
        let none = Assignment::from_matches(2, &[Vec::new()]);
        let (l1, _) = box_losses(boxes, &none, &[Vec::new()], 0.0);
        assert_eq!(scalar(l1), 0.0);
        // Saturated logits on a 2-point mask [1, 0]: CE ≈ 0, dice = 1 − 3/3 = 0.
        let logits = Tensor::<2>::from_data(TensorData::new(vec![30.0f32, -30.0], [1, 2]), &device);
        let t = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &device);
        let (ce, dice) = mask_losses(logits, t, 1.0);
        assert!(scalar(ce) < 1e-6 && scalar(dice).abs() < 1e-6);
    }
}
