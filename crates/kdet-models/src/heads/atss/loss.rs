//! ATSS's targets and losses, as mmdetection 2.x `ATSSHead.loss` / `loss_single`
//! (`mmdet/models/dense_heads/atss_head.py`, `reg_decoded_bbox=True`), computed on all
//! levels at once (every term is a sum over priors):
//!
//! - `loss_cls` = sigmoid focal loss (γ 2, α 0.25) against one-hot labels, ignored priors
//!   weight 0, / `num_total_samples = max(#positives, 1)`;
//! - per positive with anchor `a` and matched box `g`: centerness target
//!   `c = sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b))` of `a`'s centre in `g`
//!   (mmdet `centerness_target`, the FCOS formula), predicted box
//!   `b̂ = DeltaXYWH.decode(a, δ)`;
//! - `loss_bbox` = `2.0 · Σ c (1 − GIoU(b̂, g))` / `max(Σ c, 1)` (pixels);
//! - `loss_centerness` = `Σ BCE(centerness logit, c)` / `num_total_samples`.
//!
//! Without positives `loss_bbox` and `loss_centerness` are `0 · Σ` of their maps.

use burn::tensor::{Tensor, TensorData};
use kdet_structures::Instances;

use super::head::AtssHead;
use crate::assignment::Assignment;
use crate::heads::fcos::loss::positive_centerness_targets;
use crate::heads::{DenseTargets, FlatOutputs, boxes_tensor, focal_cls_loss};
use crate::losses::binary_cross_entropy_with_logits;
use crate::output::{HeadLevel, LossDict};

/// The ATSS task loss (see the module docs).
///
/// # Panics
/// If the levels lack centerness maps or disagree with the assignment (caller
/// invariants: both come from this head).
pub fn atss_loss(
    head: &AtssHead,
    levels: &[HeadLevel],
    targets: &[Instances],
    assignment: &Assignment,
) -> LossDict {
    let k = head.num_classes();
    let device = levels[0].cls_logits.device();
    let priors = assignment.priors();
    let flat = FlatOutputs::new(levels, k, 4, priors);
    let reg = flat.box_regression; // [B*N, 4]
    let centerness = flat.centerness.expect("ATSS levels carry centerness"); // [B*N]

    let dt = DenseTargets::new(assignment, targets, k);
    let num_pos = dt.num_positives();
    let num_total_samples = (num_pos as f32).max(1.0);
    let cfg = &head.config;
    let mut losses = LossDict::new();
    let loss_cls = focal_cls_loss(&cfg.loss_cls, flat.cls_logits, &dt, num_total_samples);
    losses.push("loss_cls", loss_cls);

    if num_pos == 0 {
        losses.push("loss_bbox", reg.sum().mul_scalar(0.0));
        losses.push("loss_centerness", centerness.sum().mul_scalar(0.0));
        return losses;
    }

    let anchors: Vec<[f32; 4]> = dt
        .positive_priors
        .iter()
        .map(|&i| priors.boxes[i])
        .collect();
    let ctr_targets = positive_centerness_targets(priors, &dt);
    let ctr_sum: f32 = ctr_targets.iter().sum();
    let ctr_targets = Tensor::<1>::from_data(TensorData::new(ctr_targets, [num_pos]), &device);
    let pos_idx = dt.positive_index_tensor(&device);
    let decoded = cfg.coder.decode_tensor(
        boxes_tensor(&anchors, &device),
        reg.select(0, pos_idx.clone()),
    ); // [P, 4]
    let loss_bbox = cfg
        .loss_bbox
        .init()
        .forward(
            decoded,
            dt.positive_box_tensor(&device),
            Some(ctr_targets.clone()),
            1.0,
        )
        .div_scalar(ctr_sum.max(1.0));
    let loss_centerness =
        binary_cross_entropy_with_logits(centerness.select(0, pos_idx), ctr_targets)
            .sum()
            .mul_scalar(cfg.loss_centerness_weight / num_total_samples);
    losses.push("loss_bbox", loss_bbox);
    losses.push("loss_centerness", loss_centerness);
    losses
}

#[cfg(test)]
mod tests {
    use super::super::head::tests::{tiny_config, tiny_neck};
    use super::*;
    use crate::DenseHead;
    use crate::assigners::AtssAssignerConfig;
    use crate::heads::atss::AtssHeadConfig;
    use crate::heads::tests::{assert_found_in_top, one_image_neck, train_on_fixed_features};
    use crate::layers::NormKind;
    use crate::priors::AnchorGeneratorConfig;
    use burn::optim::GradientsParams;
    use burn::tensor::Device;
    use kdet_structures::{Boxes, ImageSize};

    #[test]
    fn reductions_match_hand_derived_values() {
        // One level of stride 8, 2×2 map, anchors of side 16, 1 class, topk 1, all outputs
        // 0. GT [2, 4, 18, 14] (centre (10, 9)): nearest anchor centre (8, 8) = prior 3,
        // anchor [0, 0, 16, 16], the single positive.
        // - zero deltas decode to the anchor: inter [2,4,16,14] = 140, union 256+160-140
        //   = 276, enclosing [0,0,18,16] = 288: GIoU = 140/276 − 12/288;
        // - centerness target at (8, 8): l 6, t 4, r 10, b 6 -> sqrt(0.6 · 4/6) = sqrt(0.4);
        // - loss_bbox = 2 · c (1 − GIoU) / max(c, 1) = 2 c (1 − GIoU);
        // - loss_centerness = BCE(0, c) = ln 2 (/ 1 positive);
        // - loss_cls: σ = 0.5; negatives 0.75 · 0.25 · ln2 each (3), positive 0.25 · 0.25 ·
        //   ln2 -> 0.625 ln 2.
        let device = Device::flex();
        let head = AtssHeadConfig::new(1, 4)
            .with_feat_channels(4)
            .with_stacked_convs(1)
            .with_norm(NormKind::Group(1))
            .with_anchor(
                AnchorGeneratorConfig::new()
                    .with_strides(vec![8])
                    .with_octave_base_scale(2.0),
            )
            .with_assigner(AtssAssignerConfig::new().with_topk(1))
            .init(&device);
        let levels = vec![HeadLevel {
            stride: 8,
            cls_logits: Tensor::zeros([1, 1, 2, 2], &device),
            box_regression: Tensor::zeros([1, 4, 2, 2], &device),
            centerness: Some(Tensor::zeros([1, 1, 2, 2], &device)),
            cls_tower: Tensor::zeros([1, 4, 2, 2], &device),
            reg_tower: Tensor::zeros([1, 4, 2, 2], &device),
        }];
        let t = vec![
            Instances::new(
                ImageSize::new(16, 16),
                Boxes::new(vec![[2.0, 4.0, 18.0, 14.0]]),
                vec![0],
            )
            .expect("valid"),
        ];
        let priors = head.priors(&levels);
        let assignment = head.assign(&priors, &t);
        assert_eq!(assignment.images[0].positives(), vec![3]);
        let s = head.loss(&levels, &t, &assignment).scalars();
        let ln2 = 2f64.ln();
        let giou = 140.0 / 276.0 - 12.0 / 288.0;
        let c = 0.4f64.sqrt();
        let expected = [0.625 * ln2, 2.0 * c * (1.0 - giou), ln2];
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["loss_cls", "loss_bbox", "loss_centerness"]);
        for ((name, v), e) in s.iter().zip(expected) {
            assert!((v - e).abs() < 1e-5, "{name}: {v} vs {e}");
        }
    }

    #[test]
    fn loss_is_finite_and_reaches_the_head_parameters() {
        let device = Device::flex().autodiff();
        let head = tiny_config().init(&device);
        let levels = head.forward(&tiny_neck(&device, 8));
        let priors = head.priors(&levels);
        let t = vec![
            Instances::new(
                ImageSize::new(64, 64),
                Boxes::new(vec![[4.0, 6.0, 30.0, 28.0], [36.0, 30.0, 60.0, 62.0]]),
                vec![0, 2],
            )
            .expect("valid"),
            Instances::empty(ImageSize::new(64, 64)),
        ];
        let assignment = head.assign(&priors, &t);
        assert!(assignment.num_positives() > 0);
        let losses = head.loss(&levels, &t, &assignment);
        for (name, v) in losses.scalars() {
            assert!(v.is_finite() && v > 0.0, "{name} = {v}");
        }
        let grads = GradientsParams::from_grads(losses.total().expect("terms").backward(), &head);
        let sum_abs =
            |g: Option<Tensor<4>>| -> f32 { g.expect("a gradient").abs().sum().into_scalar() };
        for g in [
            sum_abs(grads.get::<4>(head.atss_cls.weight.id)),
            sum_abs(grads.get::<4>(head.atss_reg.weight.id)),
            sum_abs(grads.get::<4>(head.atss_centerness.weight.id)),
            sum_abs(grads.get::<4>(head.cls_convs[0].conv.weight.id)),
        ] {
            assert!(g.is_finite() && g > 0.0);
        }
        // No positives at all: finite, box terms 0, backward still works.
        let levels = head.forward(&tiny_neck(&device, 8)); // a fresh graph
        let empty = vec![Instances::empty(ImageSize::new(64, 64)); 2];
        let a = head.assign(&priors, &empty);
        let losses = head.loss(&levels, &empty, &a);
        let s = losses.scalars();
        assert!(s[0].1.is_finite() && s[0].1 > 0.0);
        assert_eq!((s[1].1, s[2].1), (0.0, 0.0));
        let _ = losses.total().expect("terms").backward();
    }

    #[test]
    fn overfits_fixed_features() {
        // Smoke test of the whole head on fixed random neck features: 100 Adam steps on
        // one image must halve the loss and recover both objects at IoU > 0.5 as the top
        // two detections.
        let device = Device::flex().autodiff();
        device.seed(0);
        let head = DenseHead::Atss(tiny_config().init(&device));
        let neck = one_image_neck(&device, 8);
        let t = vec![
            Instances::new(
                ImageSize::new(64, 64),
                Boxes::new(vec![[4.0, 6.0, 30.0, 28.0], [36.0, 30.0, 60.0, 62.0]]),
                vec![0, 2],
            )
            .expect("valid"),
        ];
        let (head, first, last) = train_on_fixed_features(head, &neck, &t, 100);
        assert!(last < 0.5 * first, "loss {first} -> {last}");
        let levels = head.forward(&neck);
        let priors = head.priors(&levels);
        let det = head.predict(
            &levels,
            &priors,
            &[ImageSize::new(64, 64)],
            &crate::heads::TestConfig::new(),
        );
        assert_found_in_top(&det[0], &t[0], 2);
    }
}
