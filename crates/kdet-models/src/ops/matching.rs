//! One-to-one (Hungarian) matching of queries to ground-truth objects, as the query
//! detectors and segmenters do it: a cost matrix `[queries, objects]` per image, computed
//! without gradients, solved exactly as `scipy.optimize.linear_sum_assignment`, and
//! returned as an [`Assignment`] keyed by query (`Assignment::from_matches`).
//!
//! - **Solver**: hotcoco's `primitives::assign::lsap`, a port of scipy's
//!   `rectangular_lsap.cpp` that reproduces scipy's assignment vector, ties included
//!   (checked here against scipy on committed fixtures). Rectangular matrices are fine:
//!   with more objects than queries, every query gets one object and the rest go
//!   unmatched, as with scipy. Non-finite costs are an error naming the entry (scipy raises
//!   "matrix contains invalid numeric entries"), never a silent match.
//! - **Costs** (each a `[Q, G]` tensor; the matchers take them on detached inputs):
//!   - class: `−softmax(logits)[:, label]` over the `K + 1` classes (the last one "no
//!     object"), DETR's and Mask2Former's `cost_class = -out_prob[:, tgt_ids]`;
//!   - mask, on `P` sampled points: the pairwise mean sigmoid cross-entropy
//!     `(BCE(x, 1) · tᵀ + BCE(x, 0) · (1 − t)ᵀ) / P` and the pairwise dice
//!     `1 − (2 σ(x) · tᵀ + 1) / (Σσ(x) + Σt + 1)` (Mask2Former `matcher.py`,
//!     `batch_sigmoid_ce_loss` and `batch_dice_loss`);
//!   - box, on normalised `cx, cy, w, h`: the L1 distance (`torch.cdist(p=1)`) and
//!     `−GIoU` of the boxes as `x1, y1, x2, y2` (DETR `models/matcher.py`).
//! - **Weights** (the official configs): Mask2Former `class 2, mask 5, dice 5` with
//!   112 × 112 = 12544 points (`MODEL.MASK_FORMER.{CLASS,MASK,DICE}_WEIGHT`,
//!   `TRAIN_NUM_POINTS`); DETR `class 1, bbox 5, giou 2` (`--set_cost_{class,bbox,giou}`).
//!   The points are drawn by the caller (uniform in `[0, 1]²`, the same points for
//!   predictions and targets, as the official matcher): this file takes the sampled values.
//!
//! Reference values: `scripts/fixtures/matching.py` computes the costs and the matching
//! with the PyTorch ports of both matchers in Hugging Face `transformers` (adapted from the
//! official code) and scipy, into `tests/fixtures/ops/matching.json`.

use burn::config::Config;
use burn::tensor::activation::{log_sigmoid, sigmoid, softmax};
use burn::tensor::{Int, Tensor, TensorData};
use kdet_structures::Cxcywh;
use kdet_structures::boxes::BoxTensor;
use kdet_structures::iou::pairwise_giou_tensor;

use crate::assignment::Assignment;

/// A cost matrix the solver cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatchError {
    #[error("matching cost [{query}, {object}] is {value}: costs must be finite")]
    NonFinite {
        query: usize,
        object: usize,
        value: f64,
    },
    #[error("matching cost holds {len} values, not {rows} x {cols}")]
    Shape {
        len: usize,
        rows: usize,
        cols: usize,
    },
}

/// The minimum-cost one-to-one matching of a row-major `rows × cols` cost matrix, as
/// `scipy.optimize.linear_sum_assignment`: `min(rows, cols)` pairs `(row, col)`, rows
/// ascending, the same pairs scipy returns (ties broken as scipy does).
pub fn linear_sum_assignment(
    cost: &[f64],
    rows: usize,
    cols: usize,
) -> Result<Vec<(usize, usize)>, MatchError> {
    if cost.len() != rows * cols {
        return Err(MatchError::Shape {
            len: cost.len(),
            rows,
            cols,
        });
    }
    if let Some(i) = cost.iter().position(|v| !v.is_finite()) {
        return Err(MatchError::NonFinite {
            query: i / cols,
            object: i % cols,
            value: cost[i],
        });
    }
    let (r, c) = hotcoco::primitives::assign::lsap(cost, rows, cols, false);
    Ok(r.into_iter().zip(c).collect())
}

/// Solves a `[Q, G]` cost tensor (read back to the host in `f64`).
pub fn match_cost(cost: Tensor<2>) -> Result<Vec<(usize, usize)>, MatchError> {
    let [rows, cols] = cost.dims();
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    let values: Vec<f64> = cost
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("a float tensor reads back as f64");
    linear_sum_assignment(&values, rows, cols)
}

/// `−softmax(logits)[:, labels]`: `[Q, K+1]` logits (the last class "no object"), `G`
/// labels in `0..K` → `[Q, G]`.
pub fn class_cost(logits: Tensor<2>, labels: &[usize]) -> Tensor<2> {
    let device = logits.device();
    let probs = softmax(logits, 1);
    let index: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [labels.len()]), &device);
    probs.select(1, index).neg()
}

/// Pairwise mean sigmoid cross-entropy between `[Q, P]` mask logits and `[G, P]` binary
/// targets on the same `P` points → `[Q, G]` (Mask2Former `batch_sigmoid_ce_loss`).
pub fn sigmoid_ce_cost(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    let points = logits.dims()[1] as f64;
    // BCE-with-logits against 1 is −log σ(x); against 0 it is −log σ(−x).
    let pos = log_sigmoid(logits.clone()).neg();
    let neg = log_sigmoid(logits.neg()).neg();
    let t = targets.transpose();
    (pos.matmul(t.clone()) + neg.matmul(t.neg().add_scalar(1.0))).div_scalar(points)
}

/// Pairwise dice cost `1 − (2 σ(x)·t + 1) / (Σσ(x) + Σt + 1)` between `[Q, P]` mask logits
/// and `[G, P]` targets → `[Q, G]` (Mask2Former `batch_dice_loss`).
pub fn dice_cost(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    let p = sigmoid(logits);
    let numerator = p
        .clone()
        .matmul(targets.clone().transpose())
        .mul_scalar(2.0);
    let denominator = p.sum_dim(1) + targets.sum_dim(1).transpose();
    (numerator.add_scalar(1.0) / denominator.add_scalar(1.0))
        .neg()
        .add_scalar(1.0)
}

/// Pairwise L1 distance between `[Q, 4]` and `[G, 4]` boxes → `[Q, G]` (`torch.cdist`, p=1).
pub fn l1_cost(pred: Tensor<2>, target: Tensor<2>) -> Tensor<2> {
    let [q, d] = pred.dims();
    let g = target.dims()[0];
    let a = pred.reshape([q, 1, d]);
    let b = target.reshape([1, g, d]);
    (a - b).abs().sum_dim(2).reshape([q, g])
}

/// `−GIoU` between `[Q, 4]` and `[G, 4]` boxes in normalised `cx, cy, w, h` → `[Q, G]`.
pub fn giou_cost(pred: Tensor<2>, target: Tensor<2>) -> Tensor<2> {
    let pred = BoxTensor::<Cxcywh>::new(pred);
    let target = BoxTensor::<Cxcywh>::new(target);
    pairwise_giou_tensor(&pred, &target).neg()
}

/// Class + mask matching (Mask2Former's `HungarianMatcher`).
#[derive(Config, Debug, PartialEq)]
pub struct MaskMatcherConfig {
    /// `MODEL.MASK_FORMER.CLASS_WEIGHT`.
    #[config(default = 2.0)]
    pub class_weight: f64,
    /// `MODEL.MASK_FORMER.MASK_WEIGHT` (sigmoid cross-entropy).
    #[config(default = 5.0)]
    pub mask_weight: f64,
    /// `MODEL.MASK_FORMER.DICE_WEIGHT`.
    #[config(default = 5.0)]
    pub dice_weight: f64,
    /// Points sampled per mask (`MODEL.MASK_FORMER.TRAIN_NUM_POINTS` = 112 × 112).
    #[config(default = 12544)]
    pub num_points: usize,
}

impl MaskMatcherConfig {
    /// The cost matrix of one image: `[Q, K+1]` class logits, `[Q, P]` mask logits and
    /// `[G, P]` target masks at the same points, `G` labels. Detached.
    pub fn cost(
        &self,
        class_logits: Tensor<2>,
        mask_logits: Tensor<2>,
        target_masks: Tensor<2>,
        labels: &[usize],
    ) -> Tensor<2> {
        let (class_logits, mask_logits, target_masks) = (
            class_logits.detach(),
            mask_logits.detach(),
            target_masks.detach(),
        );
        sigmoid_ce_cost(mask_logits.clone(), target_masks.clone()).mul_scalar(self.mask_weight)
            + class_cost(class_logits, labels).mul_scalar(self.class_weight)
            + dice_cost(mask_logits, target_masks).mul_scalar(self.dice_weight)
    }

    /// The `(query, object)` pairs of one image (none when it has no object).
    pub fn match_image(
        &self,
        class_logits: Tensor<2>,
        mask_logits: Tensor<2>,
        target_masks: Tensor<2>,
        labels: &[usize],
    ) -> Result<Vec<(usize, usize)>, MatchError> {
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        match_cost(self.cost(class_logits, mask_logits, target_masks, labels))
    }
}

/// Class + box matching (DETR's `HungarianMatcher`).
#[derive(Config, Debug, PartialEq)]
pub struct BoxMatcherConfig {
    /// `--set_cost_class`.
    #[config(default = 1.0)]
    pub class_weight: f64,
    /// `--set_cost_bbox` (L1 on normalised `cx, cy, w, h`).
    #[config(default = 5.0)]
    pub bbox_weight: f64,
    /// `--set_cost_giou`.
    #[config(default = 2.0)]
    pub giou_weight: f64,
}

impl BoxMatcherConfig {
    /// The cost matrix of one image: `[Q, K+1]` class logits, `[Q, 4]` predicted and
    /// `[G, 4]` target boxes (normalised `cx, cy, w, h`), `G` labels. Detached.
    pub fn cost(
        &self,
        class_logits: Tensor<2>,
        boxes: Tensor<2>,
        target_boxes: Tensor<2>,
        labels: &[usize],
    ) -> Tensor<2> {
        let (class_logits, boxes, target_boxes) =
            (class_logits.detach(), boxes.detach(), target_boxes.detach());
        l1_cost(boxes.clone(), target_boxes.clone()).mul_scalar(self.bbox_weight)
            + class_cost(class_logits, labels).mul_scalar(self.class_weight)
            + giou_cost(boxes, target_boxes).mul_scalar(self.giou_weight)
    }

    /// The `(query, object)` pairs of one image (none when it has no object).
    pub fn match_image(
        &self,
        class_logits: Tensor<2>,
        boxes: Tensor<2>,
        target_boxes: Tensor<2>,
        labels: &[usize],
    ) -> Result<Vec<(usize, usize)>, MatchError> {
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        match_cost(self.cost(class_logits, boxes, target_boxes, labels))
    }
}

/// The assignment of a batch from its per-image matches.
pub fn assignment(num_queries: usize, matches: &[Vec<(usize, usize)>]) -> Assignment {
    Assignment::from_matches(num_queries, matches)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn t2(rows: &[&[f32]]) -> Tensor<2> {
        let c = rows.first().map_or(0, |r| r.len());
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), c]), &Device::flex())
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn the_cheapest_matching_wins_over_the_greedy_one() {
        // Greedy takes (0, 0) at 1 and then (1, 1) at 10: 11. The optimum is 2 + 3 = 5.
        let cost = [1.0, 2.0, 3.0, 10.0];
        assert_eq!(
            linear_sum_assignment(&cost, 2, 2).unwrap(),
            [(0, 1), (1, 0)]
        );
    }

    #[test]
    fn more_objects_than_queries_leaves_objects_unmatched() {
        // 2 queries, 3 objects: each query gets one, the dearest object none.
        let cost = [5.0, 1.0, 9.0, 1.0, 5.0, 9.0];
        assert_eq!(
            linear_sum_assignment(&cost, 2, 3).unwrap(),
            [(0, 1), (1, 0)]
        );
        // 3 queries, 1 object: one query matched, rows ascending.
        assert_eq!(
            linear_sum_assignment(&[4.0, 2.0, 3.0], 3, 1).unwrap(),
            [(1, 0)]
        );
    }

    #[test]
    fn no_objects_match_nothing_and_bad_costs_are_errors() {
        assert!(linear_sum_assignment(&[], 3, 0).unwrap().is_empty());
        assert!(match_cost(t2(&[&[], &[]])).unwrap().is_empty());
        let err = linear_sum_assignment(&[0.0, 1.0, f64::NAN, 2.0], 2, 2).unwrap_err();
        assert!(
            matches!(err, MatchError::NonFinite { query: 1, object: 0, value } if value.is_nan()),
            "{err:?}"
        );
        assert!(err.to_string().contains("[1, 0]"), "{err}");
        assert!(linear_sum_assignment(&[0.0; 3], 2, 2).is_err());
    }

    #[test]
    fn class_cost_is_minus_the_probability_of_the_label() {
        // softmax([0, ln 3]) = [0.25, 0.75].
        let logits = t2(&[&[0.0, 3f32.ln()]]);
        let c = values(class_cost(logits, &[1, 0, 1]));
        for (got, want) in c.iter().zip([-0.75, -0.25, -0.75]) {
            assert!((got - want).abs() < 1e-6, "{c:?}");
        }
    }

    #[test]
    fn mask_costs_by_hand() {
        // One query with logits [0, 0] (σ = 0.5 everywhere) against target [1, 0]:
        // CE = (ln 2 + ln 2) / 2 = ln 2; dice = 1 − (2·0.5 + 1) / (1 + 1 + 1) = 1/3.
        let x = t2(&[&[0.0, 0.0]]);
        let t = t2(&[&[1.0, 0.0]]);
        let ce = values(sigmoid_ce_cost(x.clone(), t.clone()))[0];
        let dice = values(dice_cost(x, t))[0];
        assert!((ce - 2f32.ln()).abs() < 1e-6, "{ce}");
        assert!((dice - 1.0 / 3.0).abs() < 1e-6, "{dice}");
    }

    #[test]
    fn box_costs_by_hand() {
        // Boxes (cx, cy, w, h): a = [0.5, 0.5, 0.2, 0.2] against itself and against
        // b = [0.6, 0.5, 0.2, 0.2] (shifted by 0.1: L1 0.1; IoU 0.02/0.06 = 1/3,
        // enclosing 0.3 x 0.2 = 0.06 = union, so GIoU = 1/3).
        let a = t2(&[&[0.5, 0.5, 0.2, 0.2]]);
        let g = t2(&[&[0.5, 0.5, 0.2, 0.2], &[0.6, 0.5, 0.2, 0.2]]);
        let l1 = values(l1_cost(a.clone(), g.clone()));
        let giou = values(giou_cost(a, g));
        assert!(l1[0].abs() < 1e-6 && (l1[1] - 0.1).abs() < 1e-6, "{l1:?}");
        assert!(
            (giou[0] + 1.0).abs() < 1e-6 && (giou[1] + 1.0 / 3.0).abs() < 1e-5,
            "{giou:?}"
        );
    }

    #[test]
    fn matchers_pair_each_object_with_the_query_that_predicts_it() {
        // Two queries, two objects: query 0 predicts object 1's class and box, query 1
        // object 0's. Three classes + no object.
        let logits = t2(&[&[-5.0, 5.0, -5.0, 0.0], &[5.0, -5.0, -5.0, 0.0]]);
        let boxes = t2(&[&[0.7, 0.7, 0.2, 0.2], &[0.2, 0.2, 0.1, 0.1]]);
        let gt = t2(&[&[0.2, 0.2, 0.1, 0.1], &[0.7, 0.7, 0.2, 0.2]]);
        let pairs = BoxMatcherConfig::new()
            .match_image(logits.clone(), boxes, gt, &[0, 1])
            .unwrap();
        assert_eq!(pairs, [(0, 1), (1, 0)]);
        let masks = t2(&[&[-9.0, -9.0, 9.0, 9.0], &[9.0, 9.0, -9.0, -9.0]]);
        let gt_masks = t2(&[&[1.0, 1.0, 0.0, 0.0], &[0.0, 0.0, 1.0, 1.0]]);
        let pairs = MaskMatcherConfig::new()
            .match_image(logits, masks, gt_masks, &[0, 1])
            .unwrap();
        assert_eq!(pairs, [(0, 1), (1, 0)]);
        let a = assignment(2, &[pairs, Vec::new()]);
        assert_eq!(a.images[0].matched_gt, [Some(1), Some(0)]);
        assert_eq!(a.images[1].matched_gt, [None, None]);
    }
}
