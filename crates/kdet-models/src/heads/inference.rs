//! Shared post-processing of the dense heads (mmdetection 3.x
//! `BaseDenseHead._predict_by_feat_single` + `_bbox_post_process`):
//!
//! 1. per level, every (prior, class) pair whose sigmoid score exceeds
//!    `score_threshold` is a candidate, and the `pre_nms_top_k` best are kept
//!    (`filter_scores_and_topk`: multi-label, a prior may yield several classes);
//! 2. the kept pairs' scores are multiplied by the prior's score factor where the family
//!    has one (ATSS / FCOS centerness: `scores * centerness` *after* the threshold and
//!    top-k, which look at the class score alone);
//! 3. boxes are clipped to the image (`max_shape`), then class-aware NMS
//!    ([`kdet_structures::batched_nms`], suppression at IoU > `iou_threshold`);
//! 4. the `max_detections` best survive.
//!
//! Non-finite boxes or scores (a diverged model) are dropped rather than panicking.

use burn::config::Config;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use kdet_structures::{Boxes, ImageSize, Instances, batched_nms};

use crate::assignment::Priors;
use crate::coders::{DeltaXywhCoder, decode_distances_tensor};
use crate::heads::{boxes_tensor, flatten_levels, points_tensor};
use crate::output::HeadLevel;

/// Test-time settings (mmdet `test_cfg`; defaults = GFL / ATSS COCO configs:
/// `nms_pre=1000, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6),
/// max_per_img=100`).
#[derive(Config, Debug, PartialEq)]
pub struct TestConfig {
    /// Minimum class score of a candidate (`score_thr`, 0.05).
    #[config(default = 0.05)]
    pub score_threshold: f32,
    /// Candidates kept per level before NMS (`nms_pre`, 1000).
    #[config(default = 1000)]
    pub pre_nms_top_k: usize,
    /// NMS IoU threshold (`nms.iou_threshold`: 0.6 for GFL/ATSS, 0.5 for RetinaNet/FCOS).
    #[config(default = 0.6)]
    pub iou_threshold: f32,
    /// Detections kept per image (`max_per_img`, 100).
    #[config(default = 100)]
    pub max_detections: usize,
}

/// Sigmoid class scores of a batch, all levels in prior order. Detached: inference
/// reads them back to the host.
///
/// # Shapes
/// - `levels[l].cls_logits`: `[B, A*K, H_l, W_l]` → `[B, N, K]`
pub fn class_scores(levels: &[HeadLevel], num_classes: usize) -> Tensor<3> {
    sigmoid(flatten_levels(
        levels
            .iter()
            .map(|l| l.cls_logits.clone().detach())
            .collect(),
        num_classes,
    ))
}

/// Sigmoid centerness, the score factors of ATSS and FCOS (detached, as
/// [`class_scores`]).
///
/// # Shapes
/// - `levels[l].centerness`: `[B, A, H_l, W_l]` → `[B, N]`
///
/// # Panics
/// If a level has no centerness map (a caller invariant: only heads with a centerness
/// branch ask).
pub fn centerness_factors(levels: &[HeadLevel]) -> Tensor<2> {
    let centerness = flatten_levels(
        levels
            .iter()
            .map(|l| {
                l.centerness
                    .clone()
                    .expect("the head's levels carry centerness logits")
                    .detach()
            })
            .collect(),
        1,
    );
    let [b, n, _] = centerness.dims();
    sigmoid(centerness.reshape([b, n]))
}

/// A batch's box regression in prior order, `box_channels` per prior. Not detached: GFL's
/// [`crate::heads::gfl::decode_boxes`] also serves training-time (KD) code.
///
/// # Shapes
/// - `levels[l].box_regression`: `[B, A*R, H_l, W_l]` → `[B, N, R]`
///
/// # Panics
/// If the levels hold another number of priors than `priors` (a caller invariant).
pub fn flat_box_regression(
    levels: &[HeadLevel],
    box_channels: usize,
    priors: &Priors,
) -> Tensor<3> {
    let reg = flatten_levels(
        levels.iter().map(|l| l.box_regression.clone()).collect(),
        box_channels,
    );
    let [_, n, _] = reg.dims();
    assert_eq!(
        n,
        priors.len(),
        "head outputs for {n} priors but {} priors",
        priors.len()
    );
    reg
}

/// Boxes from per-anchor deltas (ATSS, RetinaNet), in input pixels, not clipped.
///
/// # Shapes
/// - `deltas`: `[B, N, 4]` → `[B, N, 4]`
pub fn decode_on_anchors(coder: &DeltaXywhCoder, deltas: Tensor<3>, priors: &Priors) -> Tensor<3> {
    let [b, n, _] = deltas.dims();
    let anchors = boxes_tensor(&priors.boxes, &deltas.device()).repeat(&[b, 1]); // [B*N, 4]
    coder
        .decode_tensor(anchors, deltas.reshape([b * n, 4]))
        .reshape([b, n, 4])
}

/// Boxes from per-point distances `(l, t, r, b)` in input pixels (FCOS, GFL), not
/// clipped.
///
/// # Shapes
/// - `distances`: `[B, N, 4]` → `[B, N, 4]`
pub fn decode_from_points(distances: Tensor<3>, priors: &Priors) -> Tensor<3> {
    let [b, n, _] = distances.dims();
    let points = points_tensor(&priors.centers, &distances.device()).repeat(&[b, 1]); // [B*N, 2]
    decode_distances_tensor(points, distances.reshape([b * n, 4])).reshape([b, n, 4])
}

/// One image's dense predictions on the host, all levels concatenated in prior order.
#[derive(Debug, Clone, Copy)]
pub struct DensePredictions<'a> {
    /// Sigmoid class scores, `[N, K]` row-major.
    pub scores: &'a [f32],
    pub num_classes: usize,
    /// Per-prior score multiplier (`[N]`, e.g. sigmoid centerness), if any.
    pub score_factors: Option<&'a [f32]>,
    /// Decoded boxes `[N]` in input pixels (not yet clipped).
    pub boxes: &'a [[f32; 4]],
}

/// `(prior, class, score)` candidates of one level: score above the threshold, best
/// `top_k` by descending score (ties by ascending `prior * K + class`).
///
/// `range` is the level's prior range; returned priors are global indices.
pub fn level_candidates(
    scores: &[f32],
    num_classes: usize,
    range: std::ops::Range<usize>,
    score_threshold: f32,
    top_k: usize,
) -> Vec<(usize, usize, f32)> {
    let k = num_classes;
    let mut cands: Vec<(usize, usize, f32)> = Vec::new();
    for i in range {
        for (c, &s) in scores[i * k..(i + 1) * k].iter().enumerate() {
            if s > score_threshold {
                cands.push((i, c, s));
            }
        }
    }
    let cmp = |a: &(usize, usize, f32), b: &(usize, usize, f32)| {
        b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1)))
    };
    if top_k < cands.len() {
        if top_k == 0 {
            return Vec::new();
        }
        cands.select_nth_unstable_by(top_k - 1, cmp);
        cands.truncate(top_k);
    }
    cands.sort_unstable_by(cmp);
    cands
}

/// Clips `[x1, y1, x2, y2]` to `[0, W] × [0, H]`.
pub fn clip_box(b: [f32; 4], size: ImageSize) -> [f32; 4] {
    let (w, h) = (size.width as f32, size.height as f32);
    [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ]
}

/// Steps 1–4 for one image; `level_offsets` as in [`Priors`].
///
/// # Panics
/// If the prediction slices disagree in length (a caller invariant).
pub fn postprocess_image(
    pred: &DensePredictions<'_>,
    level_offsets: &[usize],
    image_size: ImageSize,
    test: &TestConfig,
) -> Instances {
    let n = pred.boxes.len();
    assert_eq!(
        pred.scores.len(),
        n * pred.num_classes,
        "scores must be [N, K] for {n} boxes"
    );
    if let Some(f) = pred.score_factors {
        assert_eq!(f.len(), n, "one score factor per prior");
    }
    let mut boxes = Vec::new();
    let mut scores = Vec::new();
    let mut classes = Vec::new();
    for w in level_offsets.windows(2) {
        for (i, c, s) in level_candidates(
            pred.scores,
            pred.num_classes,
            w[0]..w[1],
            test.score_threshold,
            test.pre_nms_top_k,
        ) {
            let s = match pred.score_factors {
                Some(f) => s * f[i],
                None => s,
            };
            let b = clip_box(pred.boxes[i], image_size);
            if s.is_finite() && b.iter().all(|v| v.is_finite()) {
                boxes.push(b);
                scores.push(s);
                classes.push(c);
            }
        }
    }
    let boxes = Boxes::new(boxes);
    let mut keep = batched_nms(&boxes, &scores, &classes, test.iou_threshold);
    keep.truncate(test.max_detections);
    let kept_scores: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
    let kept_classes: Vec<usize> = keep.iter().map(|&i| classes[i]).collect();
    Instances::new(image_size, boxes.select(&keep), kept_classes)
        .and_then(|inst| inst.with_scores(kept_scores))
        .expect("finite boxes and scores, one class and score per box")
}

/// Reads a batch's predictions back and post-processes every image.
///
/// # Shapes
/// - `scores`: `[B, N, K]` sigmoid class scores
/// - `boxes`: `[B, N, 4]` decoded boxes in input pixels
/// - `score_factors`: `[B, N]` (e.g. sigmoid centerness), optional
pub fn postprocess_batch(
    scores: Tensor<3>,
    boxes: Tensor<3>,
    score_factors: Option<Tensor<2>>,
    priors: &Priors,
    image_sizes: &[ImageSize],
    test: &TestConfig,
) -> Vec<Instances> {
    let [b, n, k] = scores.dims();
    assert_eq!(
        boxes.dims(),
        [b, n, 4],
        "boxes must be [B, N, 4] like scores [B, N, K]"
    );
    assert_eq!(
        n,
        priors.len(),
        "predictions for {n} priors but {} priors",
        priors.len()
    );
    assert_eq!(image_sizes.len(), b, "one image size per image");
    let read = |t: burn::tensor::TensorData| -> Vec<f32> {
        t.convert::<f32>()
            .try_to_vec::<f32>()
            .expect("a converted f32 tensor reads back as f32")
    };
    let scores = read(scores.into_data());
    let boxes: Vec<[f32; 4]> = read(boxes.into_data())
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let factors = score_factors.map(|f| read(f.into_data()));
    (0..b)
        .map(|i| {
            let pred = DensePredictions {
                scores: &scores[i * n * k..(i + 1) * n * k],
                num_classes: k,
                score_factors: factors.as_ref().map(|f| &f[i * n..(i + 1) * n]),
                boxes: &boxes[i * n..(i + 1) * n],
            };
            postprocess_image(&pred, &priors.level_offsets, image_sizes[i], test)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: ImageSize = ImageSize {
        height: 100,
        width: 100,
    };

    #[test]
    fn nms_keeps_the_best_of_each_cluster_and_classes_are_separate() {
        // One level, 4 priors, 2 classes. Priors 0 and 1 overlap (IoU 81/119 > 0.6);
        // prior 2 is far away; prior 3 duplicates prior 0 but scores class 1.
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0],
            [50.0, 50.0, 60.0, 60.0],
            [0.0, 0.0, 10.0, 10.0],
        ];
        let scores = [0.7, 0.0, 0.9, 0.0, 0.3, 0.0, 0.0, 0.8];
        let pred = DensePredictions {
            scores: &scores,
            num_classes: 2,
            score_factors: None,
            boxes: &boxes,
        };
        let out = postprocess_image(&pred, &[0, 4], SIZE, &TestConfig::new());
        // Kept by descending score: prior 1 (0.9, class 0), prior 3 (0.8, class 1),
        // prior 2 (0.3); prior 0 (0.7) is suppressed by prior 1.
        assert_eq!(out.scores().expect("scores"), &[0.9, 0.8, 0.3]);
        assert_eq!(out.classes(), &[0, 1, 0]);
        assert_eq!(out.boxes().as_slice()[0], boxes[1]);
    }

    #[test]
    fn threshold_top_k_factors_clip_and_max_detections() {
        // Two levels of 2 priors, 1 class, all disjoint boxes.
        let boxes = [
            [-5.0, 0.0, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
            [40.0, 40.0, 50.0, 50.0],
            [60.0, 60.0, 120.0, 70.0],
        ];
        let scores = [0.04, 0.5, 0.6, 0.7];
        let pred = DensePredictions {
            scores: &scores,
            num_classes: 1,
            score_factors: None,
            boxes: &boxes,
        };
        // 0.04 < 0.05 is dropped; top-1 per level keeps prior 1 and prior 3.
        let test = TestConfig::new().with_pre_nms_top_k(1);
        let out = postprocess_image(&pred, &[0, 2, 4], SIZE, &test);
        assert_eq!(out.scores().expect("scores"), &[0.7, 0.5]);
        // Clipped to the 100 x 100 image.
        assert_eq!(out.boxes().as_slice()[0], [60.0, 60.0, 100.0, 70.0]);
        // max_detections 2 of the 3 above threshold.
        let out = postprocess_image(
            &pred,
            &[0, 2, 4],
            SIZE,
            &TestConfig::new().with_max_detections(2),
        );
        assert_eq!(out.scores().expect("scores"), &[0.7, 0.6]);
        // Score factors multiply after the threshold: 0.5 * 0.5 = 0.25 survives although
        // it is below 0.5; prior 0's factor cannot lift its 0.04 above the threshold.
        let f = [10.0, 0.5, 1.0, 0.1];
        let pred = DensePredictions {
            score_factors: Some(&f),
            ..pred
        };
        let out = postprocess_image(&pred, &[0, 2, 4], SIZE, &TestConfig::new());
        let s = out.scores().expect("scores");
        assert_eq!(out.len(), 3);
        assert!(
            (s[0] - 0.6).abs() < 1e-6 && (s[1] - 0.25).abs() < 1e-6 && (s[2] - 0.07).abs() < 1e-6,
            "{s:?}"
        );
    }

    #[test]
    fn no_candidates_give_empty_instances() {
        let boxes = [[0.0, 0.0, 1.0, 1.0]];
        let pred = DensePredictions {
            scores: &[0.01],
            num_classes: 1,
            score_factors: None,
            boxes: &boxes,
        };
        let out = postprocess_image(&pred, &[0, 1], SIZE, &TestConfig::new());
        assert!(out.is_empty());
        assert_eq!(out.image_size(), SIZE);
    }
}
