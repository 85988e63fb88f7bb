//! DETR's matcher and set criterion (`models/matcher.py`, `SetCriterion` in
//! `models/detr.py`) on kdet's shared pieces: the class + box Hungarian matcher
//! (`crate::ops::matching::BoxMatcherConfig`, costs without gradients, scipy-exact
//! assignment) and the criterion's terms (`crate::query::loss`).
//!
//! Per decoder layer `l` (every layer with `aux_loss`, else the last only), matched on its
//! own: `loss_ce` (cross-entropy over `K + 1` with the no-object class weighted by
//! `eos_coef`), `loss_bbox` (L1) and `loss_giou` (1 − GIoU) on the matched queries, the box
//! terms divided by the batch's number of ground-truth boxes (at least 1), each multiplied
//! by its weight. The last layer's keys have no suffix; auxiliary layer `l` adds `_l`
//! (DETR's `k + f'_{i}'`). `cardinality_error` (the mean absolute difference between the
//! queries not predicting "no object" and the objects, last layer) is logged, not trained,
//! as DETR logs it.

use burn::tensor::{Tensor, TensorData};
use kdet_structures::{ImageSize, Instances};

use super::DetrCriterionConfig;
use crate::assignment::Assignment;
use crate::ops::matching::BoxMatcherConfig;
use crate::output::{DetectorOutput, LossDict, QueryLayer};
use crate::query::loss::{box_losses, check_query_assignment, class_loss, match_images};

/// The ground truth of a batch as DETR's criterion reads it: per image, every instance's
/// label and box as normalised `(cx, cy, w, h)` of the image's own size, and which
/// instances take part (crowd regions do not).
#[derive(Debug, Clone, PartialEq)]
pub struct SetTargets {
    /// `labels[i][g]`: image `i`'s instance `g`'s class.
    pub labels: Vec<Vec<usize>>,
    /// `boxes[i][g]`: its box, normalised by `image_sizes[i]`.
    pub boxes: Vec<Vec<[f32; 4]>>,
    /// `matchable[i]`: the instances of image `i` that are not crowd regions, ascending.
    pub matchable: Vec<Vec<usize>>,
}

impl SetTargets {
    /// `targets` in the batch's resized pixels; `image_sizes` each image's size inside the
    /// padded batch.
    ///
    /// # Panics
    /// If the lengths differ (a caller bug).
    pub fn new(targets: &[Instances], image_sizes: &[ImageSize]) -> Self {
        assert_eq!(
            targets.len(),
            image_sizes.len(),
            "one target set per image of the batch"
        );
        let mut labels = Vec::with_capacity(targets.len());
        let mut boxes = Vec::with_capacity(targets.len());
        let mut matchable = Vec::with_capacity(targets.len());
        for (t, size) in targets.iter().zip(image_sizes) {
            let (w, h) = (size.width.max(1) as f32, size.height.max(1) as f32);
            labels.push(t.classes().to_vec());
            boxes.push(
                t.boxes()
                    .iter()
                    .map(|&[x1, y1, x2, y2]| {
                        [
                            (x1 + x2) / 2.0 / w,
                            (y1 + y2) / 2.0 / h,
                            (x2 - x1) / w,
                            (y2 - y1) / h,
                        ]
                    })
                    .collect(),
            );
            matchable.push((0..t.len()).filter(|&g| !t.is_crowd(g)).collect());
        }
        Self {
            labels,
            boxes,
            matchable,
        }
    }

    /// Matchable objects in the batch (DETR's `num_boxes` before the clamp).
    pub fn num_boxes(&self) -> usize {
        self.matchable.iter().map(Vec::len).sum()
    }
}

/// Hungarian matching of one decoder layer's predictions to the targets, image by image
/// (detached; an image without matchable objects matches no query).
///
/// # Panics
/// If the layer has no boxes, or a cost is not finite (predictions that are NaN or
/// infinite: a diverged model).
pub fn match_layer(
    matcher: &BoxMatcherConfig,
    layer: &QueryLayer,
    targets: &SetTargets,
) -> Assignment {
    let logits = layer.class_logits.clone().detach();
    let boxes = layer
        .boxes
        .clone()
        .expect("a DETR query layer predicts boxes")
        .detach();
    let [b, q, c] = logits.dims();
    let device = logits.device();
    match_images(
        "DETR",
        b,
        q,
        &targets.matchable,
        &targets.labels,
        |i, objects, labels| {
            let gt: Vec<f32> = objects.iter().flat_map(|&g| targets.boxes[i][g]).collect();
            let gt = Tensor::<2>::from_data(TensorData::new(gt, [objects.len(), 4]), &device);
            matcher.match_image(
                logits.clone().slice([i..i + 1, 0..q, 0..c]).reshape([q, c]),
                boxes.clone().slice([i..i + 1, 0..q, 0..4]).reshape([q, 4]),
                gt,
                labels,
            )
        },
    )
}

/// DETR's set criterion over every decoder layer of `out` (see the module doc);
/// `assignment` is the last layer's (from [`match_layer`], shared with KD), the auxiliary
/// layers are matched here.
///
/// # Panics
/// If `out` has no query layers or `assignment` is not a query assignment of this output's
/// query count (a wiring bug).
pub fn set_criterion(
    config: &DetrCriterionConfig,
    out: &DetectorOutput,
    targets: &[Instances],
    assignment: &Assignment,
) -> LossDict {
    let last = out
        .queries
        .len()
        .checked_sub(1)
        .expect("a DETR output has one query layer per decoder layer");
    let num_queries = out.queries[last].class_logits.dims()[1];
    check_query_assignment("DETR", num_queries, targets.len(), assignment);
    let set = SetTargets::new(targets, &out.image_sizes);
    let num_boxes = set.num_boxes() as f32;
    let mut losses = LossDict::new();
    let first = if config.aux_loss { 0 } else { last };
    // The last layer first (its keys carry no suffix), then the auxiliary layers in order.
    let order = std::iter::once(last).chain(first..last);
    for l in order {
        let layer = &out.queries[l];
        let aux;
        let (a, suffix) = if l == last {
            (assignment, String::new())
        } else {
            aux = match_layer(&config.matcher, layer, &set);
            (&aux, format!("_{l}"))
        };
        let ce = class_loss(layer.class_logits.clone(), a, &set.labels, config.eos_coef);
        let (l1, giou) = box_losses(
            layer
                .boxes
                .clone()
                .expect("a DETR query layer predicts boxes"),
            a,
            &set.boxes,
            num_boxes,
        );
        losses.push(
            format!("loss_ce{suffix}"),
            ce.mul_scalar(config.class_loss_weight),
        );
        losses.push(
            format!("loss_bbox{suffix}"),
            l1.mul_scalar(config.bbox_loss_weight),
        );
        losses.push(
            format!("loss_giou{suffix}"),
            giou.mul_scalar(config.giou_loss_weight),
        );
    }
    losses.push_logged(
        "cardinality_error",
        cardinality_error(&out.queries[last].class_logits, &set),
    );
    losses
}

/// `mean_i |#{q : argmax logits[i, q] ≠ K} − #objects_i|` (DETR `loss_cardinality`).
fn cardinality_error(logits: &Tensor<3>, targets: &SetTargets) -> Tensor<1> {
    let [b, q, c] = logits.dims();
    let device = logits.device();
    let best: Vec<i64> = logits
        .clone()
        .detach()
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("an int tensor reads back as i64");
    let error: f32 = (0..b)
        .map(|i| {
            let predicted = best[i * q..(i + 1) * q]
                .iter()
                .filter(|&&k| k as usize != c - 1)
                .count() as f32;
            (predicted - targets.matchable[i].len() as f32).abs()
        })
        .sum::<f32>()
        / b.max(1) as f32;
    Tensor::<1>::from_data(TensorData::new(vec![error], [1]), &device)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use kdet_structures::Boxes;

    const K: usize = 2;

    fn t3(values: Vec<f32>, shape: [usize; 3]) -> Tensor<3> {
        Tensor::from_data(TensorData::new(values, shape), &Device::flex())
    }

    /// One image of 100×200 (h × w) with two objects: class 1 at x 20–60, y 10–50 (cx 0.2,
    /// cy 0.3, w 0.2, h 0.4) and class 0 at x 100–200, y 50–100 (0.75, 0.75, 0.5, 0.5).
    fn targets() -> (Vec<Instances>, Vec<ImageSize>) {
        let size = ImageSize::new(100, 200);
        let inst = Instances::new(
            size,
            Boxes::new(vec![[20.0, 10.0, 60.0, 50.0], [100.0, 50.0, 200.0, 100.0]]),
            vec![1, 0],
        )
        .unwrap();
        (vec![inst], vec![size])
    }

    /// A layer of 3 queries: query 0 predicts object 1 exactly, query 2 object 0 exactly,
    /// query 1 a small box of "no object". Logits: 4 for the predicted class, 0 otherwise.
    fn perfect_layer() -> QueryLayer {
        let logits = vec![4.0, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 4.0, 0.0];
        let boxes = vec![0.75, 0.75, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.2, 0.3, 0.2, 0.4];
        QueryLayer {
            embeddings: t3(vec![0.0; 3 * 4], [1, 3, 4]),
            class_logits: t3(logits, [1, 3, K + 1]),
            mask_logits: None,
            boxes: Some(t3(boxes, [1, 3, 4])),
        }
    }

    fn output(layers: Vec<QueryLayer>, sizes: Vec<ImageSize>) -> DetectorOutput {
        let padded = sizes[0];
        DetectorOutput {
            queries: layers,
            ..DetectorOutput::dense(Vec::new(), Vec::new(), Vec::new(), sizes, padded)
        }
    }

    #[test]
    fn targets_are_normalised_by_the_image_size_and_crowds_are_not_matchable() {
        let (t, sizes) = targets();
        let set = SetTargets::new(&t, &sizes);
        assert_eq!(set.boxes[0][0], [0.2, 0.3, 0.2, 0.4]);
        assert_eq!(set.boxes[0][1], [0.75, 0.75, 0.5, 0.5]);
        assert_eq!(set.matchable, [vec![0, 1]]);
        let crowd = t[0].clone().with_crowd(vec![false, true]).unwrap();
        let set = SetTargets::new(&[crowd], &sizes);
        assert_eq!(set.matchable, [vec![0]]);
        assert_eq!(set.num_boxes(), 1);
        // The crowd object stays unmatched; the matched index is the instance's own.
        let a = match_layer(&BoxMatcherConfig::new(), &perfect_layer(), &set);
        assert_eq!(a.images[0].matched_gt, [None, None, Some(0)]);
    }

    #[test]
    fn the_matcher_pairs_each_object_with_the_query_predicting_it() {
        let (t, sizes) = targets();
        let set = SetTargets::new(&t, &sizes);
        let a = match_layer(&BoxMatcherConfig::new(), &perfect_layer(), &set);
        assert_eq!(a.images[0].matched_gt, [Some(1), None, Some(0)]);
    }

    #[test]
    fn images_without_objects_match_no_query_and_cost_only_the_class_term() {
        let size = ImageSize::new(100, 200);
        let empty = vec![Instances::empty(size)];
        let set = SetTargets::new(&empty, &[size]);
        let layer = perfect_layer();
        let a = match_layer(&BoxMatcherConfig::new(), &layer, &set);
        assert_eq!(a.images[0].matched_gt, [None, None, None]);
        let out = output(vec![layer.clone(), layer], vec![size]);
        let losses = set_criterion(&DetrCriterionConfig::new(), &out, &empty, &a);
        let s: std::collections::HashMap<String, f64> = losses.scalars().into_iter().collect();
        assert_eq!(s["loss_bbox"], 0.0);
        assert_eq!(s["loss_giou_0"], 0.0);
        // Every query's target is "no object" (weight 0.1 each, so the weighted mean is the
        // plain mean of −log p(no object)): queries 0 and 2 have logits (4, 0, 0) or
        // (0, 4, 0), p(no object) = 1 / (e⁴ + 2); query 1 (0, 0, 4): e⁴ / (e⁴ + 2).
        let z = 4f64.exp() + 2.0;
        let want = (2.0 * z.ln() + (z / 4f64.exp()).ln()) / 3.0;
        assert!(
            (s["loss_ce"] - want).abs() < 1e-4,
            "{} vs {want}",
            s["loss_ce"]
        );
        // No object, yet two queries predict something (query 1 predicts no object).
        assert_eq!(s["cardinality_error"], 2.0);
    }

    #[test]
    fn every_layer_is_matched_on_its_own_and_named_as_detr_does() {
        let (t, sizes) = targets();
        let set = SetTargets::new(&t, &sizes);
        let good = perfect_layer();
        // A first layer whose queries predict the objects in the other order: matched on
        // its own it is perfect too; with the last layer's matching it would not be.
        let swapped = QueryLayer {
            class_logits: t3(vec![0.0, 4.0, 0.0, 0.0, 0.0, 4.0, 4.0, 0.0, 0.0], [1, 3, 3]),
            boxes: Some(t3(
                vec![0.2, 0.3, 0.2, 0.4, 0.5, 0.5, 0.1, 0.1, 0.75, 0.75, 0.5, 0.5],
                [1, 3, 4],
            )),
            ..good.clone()
        };
        let out = output(vec![swapped, good.clone(), good.clone()], sizes);
        let a = match_layer(&BoxMatcherConfig::new(), &good, &set);
        let losses = set_criterion(&DetrCriterionConfig::new(), &out, &t, &a);
        let names: Vec<String> = losses.terms.iter().map(|t| t.key.to_string()).collect();
        assert_eq!(
            names,
            [
                "loss_ce",
                "loss_bbox",
                "loss_giou",
                "loss_ce_0",
                "loss_bbox_0",
                "loss_giou_0",
                "loss_ce_1",
                "loss_bbox_1",
                "loss_giou_1",
                "cardinality_error"
            ]
        );
        let s: std::collections::HashMap<String, f64> = losses.scalars().into_iter().collect();
        for key in ["loss_bbox", "loss_giou", "loss_bbox_0", "loss_giou_0"] {
            assert!(s[key].abs() < 1e-5, "{key} = {}", s[key]);
        }
        assert!((s["loss_ce_0"] - s["loss_ce"]).abs() < 1e-6);
        assert_eq!(s["cardinality_error"], 0.0);
        assert!(!losses.terms.last().unwrap().backprop);
        // Without auxiliary losses only the last layer's three terms remain.
        let config = DetrCriterionConfig::new().with_aux_loss(false);
        let losses = set_criterion(&config, &out, &t, &a);
        assert_eq!(losses.terms.len(), 4);
    }

    #[test]
    fn box_losses_are_weighted_and_divided_by_the_number_of_objects() {
        // Shift query 0's box by 0.1 in cx: L1 = 0.1 over 2 objects, times 5 = 0.25.
        let (t, sizes) = targets();
        let mut layer = perfect_layer();
        layer.boxes = Some(t3(
            vec![0.75, 0.75, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.3, 0.3, 0.2, 0.4],
            [1, 3, 4],
        ));
        let set = SetTargets::new(&t, &sizes);
        let a = match_layer(&BoxMatcherConfig::new(), &layer, &set);
        assert_eq!(a.images[0].matched_gt, [Some(1), None, Some(0)]);
        let out = output(vec![layer], sizes);
        let s: std::collections::HashMap<String, f64> =
            set_criterion(&DetrCriterionConfig::new(), &out, &t, &a)
                .scalars()
                .into_iter()
                .collect();
        assert!((s["loss_bbox"] - 0.25).abs() < 1e-5, "{}", s["loss_bbox"]);
        // Boxes [0.1, 0.3] and [0.2, 0.4] wide 0.2 (heights equal): IoU 1/3, enclosing =
        // union, GIoU 1/3; (1 − 1/3) / 2 objects × 2 = 2/3.
        assert!(
            (s["loss_giou"] - 2.0 / 3.0).abs() < 1e-5,
            "{}",
            s["loss_giou"]
        );
    }
}
