//! FCOS targets and losses (Tian et al., ICCV 2019, arXiv:1904.01355, Eq. 2–3), with the
//! reductions of mmdetection's `FCOSHead.loss_by_feat`:
//!
//! - `loss_cls`: sigmoid focal loss (γ 2, α 0.25) summed over every point and class,
//!   divided by `max(#positives, 1)` (`reduce_mean` over GPUs is the identity here);
//! - `loss_bbox`: IoU loss (`−ln IoU`; `1 − GIoU` in the variant) between the boxes decoded
//!   from the positives' predicted and target distances, weighted by the centerness
//!   targets and divided by their sum (`max(Σ c*, 1e-6)`);
//! - `loss_centerness`: BCE between the centerness logits and the targets
//!   `c* = sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b))` (paper Eq. 3), divided by
//!   `max(#positives, 1)`.
//!
//! Without positives the box and centerness terms are `0 · Σ prediction` (mmdet returns
//! `pos_bbox_preds.sum()` of an empty selection), which keeps them in the graph.

use burn::tensor::Tensor;
use kdet_structures::Instances;

use super::head::{FcosBoxLossConfig, FcosHead};
use crate::assignment::{Assignment, Priors};
use crate::coders::{decode_distances_tensor, encode_distances};
use crate::heads::{DenseTargets, FlatOutputs, boxes_tensor, focal_cls_loss, points_tensor};
use crate::losses::binary_cross_entropy_with_logits;
use crate::output::{HeadLevel, LossDict};

/// The centerness target of a point with distances `(l, t, r, b)` to its GT's edges
/// (paper Eq. 3; mmdet `FCOSHead.centerness_target`): 1 at the box centre, → 0 at an edge.
pub fn centerness_target(ltrb: [f32; 4]) -> f32 {
    let [l, t, r, b] = ltrb;
    (l.min(r) / l.max(r) * (t.min(b) / t.max(b))).sqrt()
}

/// [`centerness_target`] of every positive's prior centre in its matched box, in the
/// order of `targets.positive_priors` (FCOS, and ATSS for its anchor centres).
pub fn positive_centerness_targets(priors: &Priors, targets: &DenseTargets) -> Vec<f32> {
    targets
        .positive_priors
        .iter()
        .zip(&targets.positive_boxes)
        .map(|(&i, &g)| centerness_target(encode_distances(priors.centers[i], g, None)))
        .collect()
}

impl FcosHead {
    /// `loss_cls`, `loss_bbox` and `loss_centerness` (mmdet names and reductions, see the
    /// module docs).
    ///
    /// # Panics
    /// If the levels do not match the assignment's priors or lack centerness maps (caller
    /// invariants: both come from this head).
    pub fn loss(
        &self,
        levels: &[HeadLevel],
        targets: &[Instances],
        assignment: &Assignment,
    ) -> LossDict {
        let k = self.config.num_classes;
        let device = levels[0].cls_logits.device();
        let priors = assignment.priors();

        let flat = FlatOutputs::new(levels, k, 4, priors);
        let distances = flat.box_regression; // [B*N, 4]
        let centerness = flat
            .centerness
            .expect("FCOS levels carry centerness logits"); // [B*N]

        let t = DenseTargets::new(assignment, targets, k);
        let num_pos = t.num_positives();
        let avg_factor = (num_pos as f32).max(1.0);

        let loss_cls = focal_cls_loss(&self.config.loss_cls, flat.cls_logits, &t, avg_factor);

        let (loss_bbox, loss_centerness) = if num_pos == 0 {
            (
                distances.sum().mul_scalar(0.0),
                centerness.sum().mul_scalar(0.0),
            )
        } else {
            let index = t.positive_index_tensor(&device);
            let pos_distances = distances.select(0, index.clone()); // [P, 4]
            let pos_centerness = centerness.select(0, index); // [P]
            let points: Vec<[f32; 2]> = t
                .positive_priors
                .iter()
                .map(|&i| priors.centers[i])
                .collect();
            let targets_ctr = positive_centerness_targets(priors, &t);
            let ctr_sum: f32 = targets_ctr.iter().sum();
            let weight = Tensor::<1>::from_floats(targets_ctr.as_slice(), &device);
            let pred_boxes =
                decode_distances_tensor(points_tensor(&points, &device), pos_distances);
            let gt_boxes = boxes_tensor(&t.positive_boxes, &device);
            let avg_ctr = ctr_sum.max(1e-6);
            let loss_bbox = match &self.config.loss_bbox {
                FcosBoxLossConfig::Iou(c) => {
                    c.init()
                        .forward(pred_boxes, gt_boxes, Some(weight.clone()), avg_ctr)
                }
                FcosBoxLossConfig::Giou(c) => {
                    c.init()
                        .forward(pred_boxes, gt_boxes, Some(weight.clone()), avg_ctr)
                }
            };
            let loss_centerness = binary_cross_entropy_with_logits(pos_centerness, weight)
                .sum()
                .div_scalar(avg_factor)
                .mul_scalar(self.config.loss_centerness_weight);
            (loss_bbox, loss_centerness)
        };

        let mut losses = LossDict::new();
        losses.push("loss_cls", loss_cls);
        losses.push("loss_bbox", loss_bbox);
        losses.push("loss_centerness", loss_centerness);
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::fcos::head::FcosHeadConfig;
    use crate::heads::flatten_levels;
    use crate::heads::tests::{random_neck, reference_focal};
    use burn::module::Module;
    use burn::tensor::Device;
    use kdet_structures::{Boxes, ImageSize};

    #[test]
    fn centerness_target_values() {
        // Centre of a box: l = r, t = b -> 1.
        assert_eq!(centerness_target([5.0, 3.0, 5.0, 3.0]), 1.0);
        // (l, t, r, b) = (2, 3, 6, 3): sqrt(2/6 * 3/3) = sqrt(1/3).
        assert!((centerness_target([2.0, 3.0, 6.0, 3.0]) - (1.0f32 / 3.0).sqrt()).abs() < 1e-6);
        // (1, 1, 9, 4): sqrt(1/9 * 1/4) = 1/6.
        assert!((centerness_target([1.0, 1.0, 9.0, 4.0]) - 1.0 / 6.0).abs() < 1e-6);
        // Symmetric in l <-> r and t <-> b.
        assert_eq!(
            centerness_target([9.0, 4.0, 1.0, 1.0]),
            centerness_target([1.0, 1.0, 9.0, 4.0])
        );
    }

    /// A head on random features and two images (one without GT). `reg_bias` replaces
    /// the regression conv's bias when given.
    fn setup(
        device: &Device,
        cfg: FcosHeadConfig,
        reg_bias: Option<f32>,
    ) -> (FcosHead, Vec<HeadLevel>, Vec<Instances>, Assignment) {
        device.seed(7);
        let mut head = cfg.init(device);
        if let Some(v) = reg_bias {
            head.conv_reg.bias = head.conv_reg.bias.map(|b| b.map(|t| t.full_like(v)));
        }
        let neck = random_neck(device, 2, 16, &[(8, 8, 8), (16, 4, 4), (32, 2, 2)]);
        let levels = head.forward(&neck);
        let size = ImageSize::new(64, 64);
        let targets = vec![
            Instances::new(
                size,
                Boxes::new(vec![[4.0, 6.0, 20.0, 18.0], [30.0, 20.0, 60.0, 58.0]]),
                vec![0, 2],
            )
            .expect("valid"),
            Instances::empty(size),
        ];
        let priors = head.priors(&levels);
        let assignment = head.assign(&priors, &targets);
        (head, levels, targets, assignment)
    }

    fn scalars(l: &LossDict) -> Vec<(String, f64)> {
        l.scalars()
    }

    #[test]
    fn loss_is_finite_and_reaches_the_head_parameters() {
        let device = Device::flex().autodiff();
        for cfg in [
            FcosHeadConfig::synth_128(3, 16),
            FcosHeadConfig::synth_128(3, 16)
                .with_norm_on_bbox(true)
                .with_centerness_on_reg(true)
                .with_loss_bbox(FcosBoxLossConfig::Giou(
                    crate::losses::GiouLossConfig::new().with_loss_weight(1.0),
                )),
        ] {
            // Bias 1 keeps norm_on_bbox's ReLU active: at the N(0, 0.01) init about half
            // the distances are exactly 0, and a positive whose box has zero width or
            // height gets no IoU/GIoU gradient at all (true of mmdet too); with few
            // positives the conv_reg gradient could then vanish.
            let (head, levels, targets, assignment) = setup(&device, cfg, Some(1.0));
            assert!(assignment.num_positives() > 0);
            let losses = head.loss(&levels, &targets, &assignment);
            let names: Vec<String> = losses.terms.iter().map(|t| t.key.to_string()).collect();
            assert_eq!(names, ["loss_cls", "loss_bbox", "loss_centerness"]);
            for (name, v) in scalars(&losses) {
                assert!(v.is_finite() && v > 0.0, "{name} = {v}");
            }
            let grads = losses.total().expect("three terms").backward();
            let g = |t: Tensor<4>| t.grad(&grads).map(|g| g.abs().sum().into_scalar::<f32>());
            for (name, grad) in [
                ("conv_cls", g(head.conv_cls.weight.val())),
                ("conv_reg", g(head.conv_reg.weight.val())),
                ("conv_centerness", g(head.conv_centerness.weight.val())),
                ("cls_convs.0", g(head.cls_convs[0].conv.weight.val())),
                ("reg_convs.1", g(head.reg_convs[1].conv.weight.val())),
            ] {
                let grad = grad.unwrap_or_else(|| panic!("no gradient for {name}"));
                assert!(grad.is_finite() && grad > 0.0, "{name}: {grad}");
            }
            let s = head.scales[0]
                .scale
                .val()
                .grad(&grads)
                .expect("scale gradient");
            assert!(s.into_scalar::<f32>().is_finite());
            // The head still works as a plain (inference) module.
            let _ = head.valid();
        }
    }

    #[test]
    fn loss_values_follow_the_reductions() {
        // Recompute the three terms by hand from the assignment and the raw outputs.
        let device = Device::flex();
        let (head, levels, targets, assignment) =
            setup(&device, FcosHeadConfig::synth_128(3, 16), None);
        let losses = head.loss(&levels, &targets, &assignment);
        let got: Vec<f64> = scalars(&losses).into_iter().map(|(_, v)| v).collect();

        let read = |t: Tensor<3>| -> Vec<f32> { t.into_data().try_to_vec::<f32>().expect("f32") };
        let cls = read(flatten_levels(
            levels.iter().map(|l| l.cls_logits.clone()).collect(),
            3,
        ));
        let dist = read(flatten_levels(
            levels.iter().map(|l| l.box_regression.clone()).collect(),
            4,
        ));
        let ctr = read(flatten_levels(
            levels
                .iter()
                .map(|l| l.centerness.clone().expect("ctr"))
                .collect(),
            1,
        ));
        let n = assignment.priors().len();
        let bce = |z: f32, t: f32| z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
        let (mut fl, mut box_sum, mut ctr_sum, mut bce_sum, mut pos) =
            (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
        for (img, a) in assignment.images.iter().enumerate() {
            for i in 0..n {
                let m = a.matched_gt[i];
                for c in 0..3 {
                    let z = cls[(img * n + i) * 3 + c];
                    let t = if m.map(|g| targets[img].classes()[g]) == Some(c) {
                        1.0
                    } else {
                        0.0
                    };
                    fl += reference_focal(z, t);
                }
                if let Some(g) = m {
                    pos += 1;
                    let gt = targets[img].boxes().as_slice()[g];
                    let p = assignment.priors().centers[i];
                    let tgt = encode_distances(p, gt, None);
                    let w = centerness_target(tgt);
                    let d = &dist[(img * n + i) * 4..(img * n + i) * 4 + 4];
                    let pred = [p[0] - d[0], p[1] - d[1], p[0] + d[2], p[1] + d[3]];
                    let iou = kdet_structures::iou::iou_xyxy(pred, gt).max(1e-6);
                    box_sum += (w * -iou.ln()) as f64;
                    ctr_sum += w as f64;
                    bce_sum += bce(ctr[img * n + i], w) as f64;
                }
            }
        }
        let pos = pos as f64;
        let expected = [fl / pos, box_sum / ctr_sum, bce_sum / pos];
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g - e).abs() < 1e-4 * e.abs().max(1.0),
                "{got:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn no_positive_gives_zero_box_terms() {
        let device = Device::flex();
        let (head, levels, _, _) = setup(&device, FcosHeadConfig::synth_128(3, 16), None);
        let size = ImageSize::new(64, 64);
        let targets = vec![Instances::empty(size), Instances::empty(size)];
        let assignment = head.assign(&head.priors(&levels), &targets);
        let s = head.loss(&levels, &targets, &assignment).scalars();
        assert!(s[0].1 > 0.0 && s[0].1.is_finite());
        assert_eq!((s[1].1, s[2].1), (0.0, 0.0));
    }
}
