//! Mask2Former's matcher and set criterion (`modeling/matcher.py` `HungarianMatcher`,
//! `modeling/criterion.py` `SetCriterion`) on kdet's shared pieces: the class + mask
//! matcher (`crate::ops::matching::MaskMatcherConfig`), point sampling
//! (`crate::ops::sample`) and the criterion's terms (`crate::query::loss`).
//!
//! **Matching** (no gradients), per image with objects: `num_points` uniform points in
//! `[0, 1]²` of the padded canvas, the same for every query and object; the predicted mask
//! logits and the target masks sampled there (bilinear, zero outside); cost
//! `2 · class + 5 · sigmoid CE + 5 · dice`; scipy-exact Hungarian assignment.
//!
//! **Losses**, per prediction `l` (every one with deep supervision, else the last only),
//! matched on its own: `loss_ce` (cross-entropy over `K + 1`, the no-object class weighted
//! 0.1, averaged with the class weights); for the matched queries, points chosen by
//! `get_uncertain_point_coords_with_randomness` on each predicted mask (`⌊3P⌋` uniform
//! candidates, the `⌊0.75P⌋` with the smallest `|logit|`, plus fresh uniform points),
//! `loss_mask` (mean sigmoid CE over the points, summed over masks) and `loss_dice`, both
//! divided by the batch's number of objects (at least 1). Each term times its weight
//! (2, 5, 5). The last prediction's keys have no suffix; prediction `l` before it adds
//! `_l` (the official `k + f"_{i}"`; `_0` is the learnable queries' prediction).

use burn::tensor::{Device, Int, Tensor, TensorData};
use kdet_structures::{ImageSize, Instances};

use super::{Mask2FormerCriterionConfig, detached_mask_logits};
use crate::assignment::Assignment;
use crate::ops::matching::MaskMatcherConfig;
use crate::ops::sample::{PointDraws, point_sample, uncertain_point_coords_with_randomness};
use crate::output::{DetectorOutput, LossDict, QueryLayer};
use crate::query::loss::{check_query_assignment, class_loss, mask_losses, match_images, matched};

/// The ground truth of a batch as Mask2Former's criterion reads it.
#[derive(Debug, Clone)]
pub struct MaskTargets {
    /// `labels[i][g]`: image `i`'s instance `g`'s class.
    pub labels: Vec<Vec<usize>>,
    /// `matchable[i]`: the instances of image `i` that are not crowd regions, ascending.
    pub matchable: Vec<Vec<usize>>,
    /// Row of image `i`'s instance `g` in `masks`: `offsets[i] + g`.
    pub offsets: Vec<usize>,
    /// `[N, 1, H_pad, W_pad]` 0/1 masks of every instance of the batch, zero-padded to the
    /// padded canvas, on a plain (non-autodiff) device; `None` when the batch has no
    /// instance.
    pub masks: Option<Tensor<4>>,
}

impl MaskTargets {
    /// `targets` in the batch's resized pixels, each with a mask per instance on its own
    /// canvas; `padded` the batch's padded size; the masks go to `device` without autodiff.
    ///
    /// # Panics
    /// If an image with instances has no masks (Mask2Former needs instance masks), a mask
    /// cannot be decoded, or a canvas exceeds the padded size (caller bugs).
    pub fn new(targets: &[Instances], padded: ImageSize, device: &Device) -> Self {
        let (hp, wp) = (padded.height, padded.width);
        let mut labels = Vec::with_capacity(targets.len());
        let mut matchable = Vec::with_capacity(targets.len());
        let mut offsets = Vec::with_capacity(targets.len());
        let mut data: Vec<f32> = Vec::new();
        let mut n = 0;
        for (i, t) in targets.iter().enumerate() {
            labels.push(t.classes().to_vec());
            matchable.push((0..t.len()).filter(|&g| !t.is_crowd(g)).collect());
            offsets.push(n);
            if t.is_empty() {
                continue;
            }
            let masks = t.masks().unwrap_or_else(|| {
                panic!("Mask2Former needs instance masks: image {i} of the batch has none")
            });
            let bitmaps = masks
                .to_bitmaps()
                .unwrap_or_else(|e| panic!("image {i}'s masks do not decode: {e}"));
            for bitmap in bitmaps {
                data.extend(bitmap.pad(hp, wp).as_slice().iter().map(|&v| f32::from(v)));
            }
            n += t.len();
        }
        let device = device.clone().without_autodiff();
        let masks = (n > 0).then(|| {
            Tensor::<4>::from_data(
                TensorData::new(data, [n, 1, hp as usize, wp as usize]),
                &device,
            )
        });
        Self {
            labels,
            matchable,
            offsets,
            masks,
        }
    }

    /// Objects that take part in matching (the official `num_masks` before the clamp).
    pub fn num_masks(&self) -> usize {
        self.matchable.iter().map(Vec::len).sum()
    }

    /// The masks of these `(image, instance)` pairs, `[M, 1, H_pad, W_pad]`.
    fn select(&self, pairs: impl Iterator<Item = (usize, usize)>) -> Tensor<4> {
        let rows: Vec<i64> = pairs.map(|(i, g)| (self.offsets[i] + g) as i64).collect();
        let masks = self
            .masks
            .clone()
            .expect("instances are selected only from a batch that has some");
        let device = masks.device();
        let n = rows.len();
        masks.select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device),
        )
    }
}

/// Hungarian matching of one prediction to the targets, image by image (detached; an
/// image without matchable objects matches no query). The points are drawn from the
/// device's generator.
///
/// # Panics
/// If the layer has no mask logits, or a cost is not finite (a diverged model).
pub fn match_layer(
    matcher: &MaskMatcherConfig,
    layer: &QueryLayer,
    targets: &MaskTargets,
) -> Assignment {
    let logits = layer.class_logits.clone().detach().without_autodiff();
    let masks = detached_mask_logits(layer);
    let [b, q, c] = logits.dims();
    let [_, _, h, w] = masks.dims();
    let device = logits.device();
    let p = matcher.num_points;
    match_images(
        "Mask2Former",
        b,
        q,
        &targets.matchable,
        &targets.labels,
        |i, objects, labels| {
            let g = objects.len();
            // One set of uniform points for every query and object of the image.
            let coords =
                Tensor::<3>::random([1, p, 2], burn::tensor::Distribution::Default, &device);
            let predicted = point_sample(
                masks
                    .clone()
                    .slice([i..i + 1, 0..q, 0..h, 0..w])
                    .reshape([q, 1, h, w]),
                coords.clone().repeat_dim(0, q),
            )
            .reshape([q, p]);
            let target = point_sample(
                targets.select(objects.iter().map(|&k| (i, k))),
                coords.repeat_dim(0, g),
            )
            .reshape([g, p]);
            matcher.match_image(
                logits.clone().slice([i..i + 1, 0..q, 0..c]).reshape([q, c]),
                predicted,
                target,
                labels,
            )
        },
    )
}

/// `(loss_mask, loss_dice)` of one prediction's matched queries on importance-sampled
/// points (unweighted), divided by `num_masks`; zero with the graph kept when nothing is
/// matched.
pub fn point_mask_losses(
    mask_logits: Tensor<4>,
    assignment: &Assignment,
    targets: &MaskTargets,
    points: &crate::ops::sample::UncertainPointsConfig,
    num_masks: f32,
) -> (Tensor<1>, Tensor<1>) {
    let [b, q, h, w] = mask_logits.dims();
    let pairs = matched(assignment, q);
    let flat = mask_logits.reshape([b * q, 1, h, w]);
    if pairs.is_empty() {
        let zero = flat.sum().mul_scalar(0.0);
        return (zero.clone(), zero);
    }
    let device = flat.device();
    let m = pairs.len();
    let rows: Vec<i64> = pairs.iter().map(|&(r, _, _)| r as i64).collect();
    let predicted = flat.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(rows, [m]), &device),
    ); // [M, 1, h, w]
    let target = targets.select(pairs.iter().map(|&(_, i, g)| (i, g)));
    // Points from the predictions' uncertainty (no gradient), the same for the targets.
    let coords = uncertain_point_coords_with_randomness(
        predicted.clone().detach(),
        points,
        &mut PointDraws::Device,
    );
    let p = coords.dims()[1];
    let labels = point_sample(target, coords.clone().without_autodiff()).reshape([m, p]);
    let labels = if predicted.is_autodiff() {
        labels.autodiff()
    } else {
        labels
    };
    let logits = point_sample(predicted, coords).reshape([m, p]);
    mask_losses(logits, labels, num_masks)
}

/// Mask2Former's set criterion over every prediction of `out` (see the module doc);
/// `assignment` is the last prediction's (from [`match_layer`], shared with KD), the
/// earlier ones are matched here.
///
/// # Panics
/// If `out` has no query layers or `assignment` is not a query assignment of this output's
/// query count (a wiring bug), or as [`MaskTargets::new`].
pub fn set_criterion(
    config: &Mask2FormerCriterionConfig,
    out: &DetectorOutput,
    targets: &[Instances],
    assignment: &Assignment,
) -> LossDict {
    let last = out
        .queries
        .len()
        .checked_sub(1)
        .expect("a Mask2Former output has one query layer per prediction");
    let num_queries = out.queries[last].class_logits.dims()[1];
    check_query_assignment("Mask2Former", num_queries, targets.len(), assignment);
    let set = MaskTargets::new(
        targets,
        out.padded_size,
        &out.queries[last].class_logits.device(),
    );
    let num_masks = set.num_masks() as f32;
    let mut losses = LossDict::new();
    let first = if config.deep_supervision { 0 } else { last };
    // The last prediction first (its keys carry no suffix), then the earlier ones in order.
    for l in std::iter::once(last).chain(first..last) {
        let layer = &out.queries[l];
        let aux;
        let (a, suffix) = if l == last {
            (assignment, String::new())
        } else {
            aux = match_layer(&config.matcher, layer, &set);
            (&aux, format!("_{l}"))
        };
        let ce = class_loss(layer.class_logits.clone(), a, &set.labels, config.eos_coef);
        let (mask, dice) = point_mask_losses(
            layer
                .mask_logits
                .clone()
                .expect("a Mask2Former query layer predicts masks"),
            a,
            &set,
            &config.points,
            num_masks,
        );
        losses.push(
            format!("loss_ce{suffix}"),
            ce.mul_scalar(config.class_loss_weight),
        );
        losses.push(
            format!("loss_mask{suffix}"),
            mask.mul_scalar(config.mask_loss_weight),
        );
        losses.push(
            format!("loss_dice{suffix}"),
            dice.mul_scalar(config.dice_loss_weight),
        );
    }
    losses
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ops::sample::UncertainPointsConfig;
    use kdet_structures::masks::{BitMask, Mask};
    use kdet_structures::{Boxes, Masks};
    use std::collections::HashMap;

    const K: usize = 2;

    fn t3(values: Vec<f32>, shape: [usize; 3]) -> Tensor<3> {
        Tensor::from_data(TensorData::new(values, shape), &Device::flex())
    }

    /// A 0/1 `h × w` bitmap with the rectangle rows `y0..y1`, columns `x0..x1` set.
    fn rect(h: u32, w: u32, y0: u32, y1: u32, x0: u32, x1: u32) -> BitMask {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| u8::from(y >= y0 && y < y1 && x >= x0 && x < x1)))
            .collect();
        BitMask::new(h, w, data).unwrap()
    }

    /// One 8×8 image (padded to 8×16) with two objects: class 1 in the left half (x 0–4),
    /// class 0 in the right half (x 4–8).
    fn targets() -> Vec<Instances> {
        let size = ImageSize::new(8, 8);
        let masks = Masks::new(
            8,
            8,
            vec![
                Mask::Bitmap(rect(8, 8, 0, 8, 0, 4)),
                Mask::Bitmap(rect(8, 8, 0, 8, 4, 8)),
            ],
        )
        .unwrap();
        let inst = Instances::new(
            size,
            Boxes::new(vec![[0.0, 0.0, 4.0, 8.0], [4.0, 0.0, 8.0, 8.0]]),
            vec![1, 0],
        )
        .unwrap()
        .with_masks(masks)
        .unwrap();
        vec![inst]
    }

    const PADDED: ImageSize = ImageSize {
        height: 8,
        width: 16,
    };

    /// Confident mask logits. Bilinear sampling between a +s and a −s cell crosses 0
    /// exactly on the objects' borders, but the targets are sampled bilinearly too (soft
    /// within half a pixel of a border, as the official `point_sample` of the target
    /// masks) and importance sampling picks points near the borders: a right mask costs
    /// little, not nothing, so the tests compare it with a wrong one.
    const SATURATED: f32 = 20.0;

    /// Mask logits `[1, 3, 2, 4]` on the stride-4 grid of the 8×16 canvas: query 0 predicts
    /// object 1 (column 1), query 2 object 0 (column 0), query 1 nothing.
    fn perfect_layer() -> QueryLayer {
        let col = |c: usize| -> Vec<f32> {
            (0..8)
                .map(|i| if i % 4 == c { SATURATED } else { -SATURATED })
                .collect()
        };
        let mut masks = col(1);
        masks.extend(vec![-SATURATED; 8]);
        masks.extend(col(0));
        let logits = vec![8.0, 0.0, 0.0, 0.0, 0.0, 8.0, 0.0, 8.0, 0.0];
        let device = Device::flex();
        QueryLayer {
            embeddings: t3(vec![0.0; 3 * 4], [1, 3, 4]),
            class_logits: t3(logits, [1, 3, K + 1]),
            mask_logits: Some(Tensor::from_data(
                TensorData::new(masks, [1, 3, 2, 4]),
                &device,
            )),
            boxes: None,
        }
    }

    fn output(layers: Vec<QueryLayer>) -> DetectorOutput {
        DetectorOutput {
            queries: layers,
            ..DetectorOutput::dense(
                Vec::new(),
                Vec::new(),
                Vec::new(),
                vec![ImageSize::new(8, 8)],
                PADDED,
            )
        }
    }

    fn matcher() -> MaskMatcherConfig {
        MaskMatcherConfig::new().with_num_points(256)
    }

    fn criterion() -> Mask2FormerCriterionConfig {
        Mask2FormerCriterionConfig::new().with_num_points(256)
    }

    fn scalars(losses: &LossDict) -> HashMap<String, f64> {
        losses.scalars().into_iter().collect()
    }

    #[test]
    fn targets_are_zero_padded_to_the_canvas_and_crowds_are_not_matchable() {
        let t = targets();
        let set = MaskTargets::new(&t, PADDED, &Device::flex());
        let masks: Vec<f32> = set
            .masks
            .clone()
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(masks.len(), 2 * 8 * 16);
        for y in 0..8 {
            for x in 0..16 {
                assert_eq!(masks[y * 16 + x], f32::from(u8::from(x < 4)), "({y}, {x})");
                assert_eq!(
                    masks[128 + y * 16 + x],
                    f32::from(u8::from((4..8).contains(&x)))
                );
            }
        }
        assert_eq!(set.matchable, [vec![0, 1]]);
        let crowd = t[0].clone().with_crowd(vec![false, true]).unwrap();
        let set = MaskTargets::new(&[crowd], PADDED, &Device::flex());
        assert_eq!((set.matchable.clone(), set.num_masks()), (vec![vec![0]], 1));
        let a = match_layer(&matcher(), &perfect_layer(), &set);
        assert_eq!(a.images[0].matched_gt, [None, None, Some(0)]);
    }

    #[test]
    fn the_matcher_pairs_each_object_with_the_query_predicting_its_mask() {
        let set = MaskTargets::new(&targets(), PADDED, &Device::flex());
        let a = match_layer(&matcher(), &perfect_layer(), &set);
        assert_eq!(a.images[0].matched_gt, [Some(1), None, Some(0)]);
        // With uninformative classes, the masks alone decide.
        let mut layer = perfect_layer();
        layer.class_logits = t3(vec![0.0; 9], [1, 3, 3]);
        let a = match_layer(&matcher(), &layer, &set);
        assert_eq!(a.images[0].matched_gt, [Some(1), None, Some(0)]);
    }

    #[test]
    fn right_masks_cost_far_less_than_wrong_ones_and_the_class_term_carries_its_weight() {
        let t = targets();
        let set = MaskTargets::new(&t, PADDED, &Device::flex());
        let layer = perfect_layer();
        let a = match_layer(&matcher(), &layer, &set);
        let out = output(vec![layer.clone(), layer.clone()]);
        let s = scalars(&set_criterion(&criterion(), &out, &t, &a));
        // The two objects' queries swapped: each mask is the other object's.
        let wrong = Assignment::from_matches(3, &[vec![(0, 0), (2, 1)]]);
        let w = scalars(&set_criterion(&criterion(), &out, &t, &wrong));
        for key in ["loss_mask", "loss_dice"] {
            assert!(
                w[key] > 5.0 * s[key],
                "{key}: right {} vs wrong {}",
                s[key],
                w[key]
            );
        }
        // loss_ce = 2 · Σ w·NLL / Σ w: matched queries 0 and 2 (weight 1) have logit 8 on
        // their class, NLL ln(e⁸ + 2) − 8; query 1 (no object, weight 0.1) NLL the same.
        let nll = (8f64.exp() + 2.0).ln() - 8.0;
        assert!((s["loss_ce"] - 2.0 * nll).abs() < 1e-5, "{}", s["loss_ce"]);
        assert_eq!(s["loss_ce_0"], s["loss_ce"]);
    }

    #[test]
    fn mask_terms_are_normalised_by_the_objects_not_the_matches() {
        // Two queries with logits 0 everywhere (σ = 0.5: sigmoid CE ln 2 at every point,
        // whatever the points) and three objects: two matched, three counted.
        let mut t = targets();
        let extra = Masks::new(
            8,
            8,
            vec![
                Mask::Bitmap(rect(8, 8, 0, 8, 0, 4)),
                Mask::Bitmap(rect(8, 8, 0, 8, 4, 8)),
                Mask::Bitmap(rect(8, 8, 0, 2, 0, 2)),
            ],
        )
        .unwrap();
        t[0] = Instances::new(
            ImageSize::new(8, 8),
            Boxes::new(vec![
                [0.0, 0.0, 4.0, 8.0],
                [4.0, 0.0, 8.0, 8.0],
                [0.0, 0.0, 2.0, 2.0],
            ]),
            vec![1, 0, 0],
        )
        .unwrap()
        .with_masks(extra)
        .unwrap();
        let device = Device::flex();
        let layer = QueryLayer {
            embeddings: t3(vec![0.0; 8], [1, 2, 4]),
            class_logits: t3(vec![0.0; 6], [1, 2, 3]),
            mask_logits: Some(Tensor::zeros([1, 2, 2, 4], &device)),
            boxes: None,
        };
        let set = MaskTargets::new(&t, PADDED, &Device::flex());
        let a = match_layer(&matcher(), &layer, &set);
        assert_eq!(a.images[0].matched_gt.iter().flatten().count(), 2);
        let out = output(vec![layer]);
        let s = scalars(&set_criterion(&criterion(), &out, &t, &a));
        let want = 5.0 * 2f64.ln() * 2.0 / 3.0;
        assert!(
            (s["loss_mask"] - want).abs() < 1e-5,
            "{} vs {want}",
            s["loss_mask"]
        );
        // Equal logits: every class NLL is ln 3, whatever the weights.
        assert!(
            (s["loss_ce"] - 2.0 * 3f64.ln()).abs() < 1e-5,
            "{}",
            s["loss_ce"]
        );
        // Dice with σ = 0.5 on P points, t_k of them inside: 1 − (t + 1) / (P/2 + t + 1)
        // per mask, in (0, 1).
        assert!(s["loss_dice"] > 0.0 && s["loss_dice"] < 5.0 * 2.0 / 3.0);
    }

    #[test]
    fn every_prediction_is_matched_on_its_own_and_named_as_mask2former_does() {
        let t = targets();
        let set = MaskTargets::new(&t, PADDED, &Device::flex());
        let good = perfect_layer();
        // A first prediction with the two objects' queries swapped: matched on its own it
        // is perfect too; with the last prediction's matching it would not be.
        let mut swapped = good.clone();
        let col = |c: usize| -> Vec<f32> {
            (0..8)
                .map(|i| if i % 4 == c { SATURATED } else { -SATURATED })
                .collect()
        };
        let mut masks = col(0);
        masks.extend(vec![-SATURATED; 8]);
        masks.extend(col(1));
        swapped.mask_logits = Some(Tensor::from_data(
            TensorData::new(masks, [1, 3, 2, 4]),
            &Device::flex(),
        ));
        let swapped_classes = vec![0.0, 8.0, 0.0, 0.0, 0.0, 8.0, 8.0, 0.0, 0.0];
        swapped.class_logits = t3(swapped_classes, [1, 3, 3]);
        let out = output(vec![swapped, good.clone(), good.clone()]);
        let a = match_layer(&matcher(), &good, &set);
        let losses = set_criterion(&criterion(), &out, &t, &a);
        let names: Vec<String> = losses.terms.iter().map(|t| t.key.to_string()).collect();
        assert_eq!(
            names,
            [
                "loss_ce",
                "loss_mask",
                "loss_dice",
                "loss_ce_0",
                "loss_mask_0",
                "loss_dice_0",
                "loss_ce_1",
                "loss_mask_1",
                "loss_dice_1",
            ]
        );
        let s = scalars(&losses);
        assert!((s["loss_ce_0"] - s["loss_ce"]).abs() < 1e-6);
        // The swapped prediction under the last one's matching: every mask wrong.
        let forced = point_mask_losses(
            out.queries[0].mask_logits.clone().unwrap(),
            &a,
            &set,
            &criterion().points,
            2.0,
        );
        let forced_mask = 5.0 * forced.0.into_scalar::<f32>() as f64;
        assert!(
            forced_mask > 5.0 * s["loss_mask_0"],
            "own matching {} vs forced {forced_mask}",
            s["loss_mask_0"]
        );
        // Without deep supervision only the last prediction's three terms remain.
        let losses = set_criterion(&criterion().with_deep_supervision(false), &out, &t, &a);
        assert_eq!(losses.terms.len(), 3);
    }

    #[test]
    fn images_without_objects_cost_only_the_class_term() {
        let size = ImageSize::new(8, 8);
        let empty = vec![Instances::empty(size)];
        let set = MaskTargets::new(&empty, PADDED, &Device::flex());
        assert!(set.masks.is_none());
        let layer = perfect_layer();
        let a = match_layer(&matcher(), &layer, &set);
        assert_eq!(a.images[0].matched_gt, [None, None, None]);
        let s = scalars(&set_criterion(
            &criterion(),
            &output(vec![layer]),
            &empty,
            &a,
        ));
        assert_eq!((s["loss_mask"], s["loss_dice"]), (0.0, 0.0));
        assert!(s["loss_ce"] > 0.0);
    }

    #[test]
    fn only_matched_masks_get_gradients() {
        let device = Device::flex().autodiff();
        let t = targets();
        let set = MaskTargets::new(&t, PADDED, &Device::flex());
        let logits = Tensor::<4>::zeros([1, 3, 2, 4], &device).require_grad();
        // Query 0 matched to object 1; queries 1 and 2 unmatched.
        let a = Assignment::from_matches(3, &[vec![(0, 1)]]);
        let points = UncertainPointsConfig::new().with_num_points(64);
        let (ce, dice) = point_mask_losses(logits.clone(), &a, &set, &points, 2.0);
        // Logits 0: sigmoid CE ln 2 at every point, one mask over two objects.
        let value: f32 = ce.clone().into_scalar();
        assert!((value - 2f32.ln() / 2.0).abs() < 1e-6, "{value}");
        let grads = (ce + dice).backward();
        let g: Vec<f32> = logits
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec()
            .unwrap();
        assert!(g[..8].iter().any(|v| v.abs() > 1e-6), "{g:?}");
        assert!(g[8..].iter().all(|&v| v == 0.0), "{g:?}");
    }
}
