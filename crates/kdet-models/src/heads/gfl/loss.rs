//! GFL's targets and losses, as mmdetection 2.x `GFLHead.loss` / `loss_single`
//! (`mmdet/models/dense_heads/gfl_head.py`), computed on all levels at once (every term
//! is a sum over priors, so concatenating the levels changes nothing):
//!
//! - positives from the ATSS assignment; per positive, with anchor centre `c`, level
//!   stride `s` and matched box `g`, everything in units of `s`:
//!   predicted distances `d̂ = integral(z)` ([`super::integral`]), predicted box
//!   `b̂ = decode(c/s, d̂)`, target box `g/s`, DFL targets
//!   `bbox2distance(c/s, g/s, reg_max)` (clamped to `[0, reg_max − 0.1]`);
//! - weight `w` = max over classes of the **detached** sigmoid class score;
//! - `loss_cls` = QFL with soft target `IoU(b̂.detach(), g/s)` at the positive's class
//!   (0 elsewhere, ignored priors weight 0) / `num_total_samples`, where
//!   `num_total_samples = max(#positives, 1)` (mmdet `reduce_mean` over GPUs, one here);
//! - `loss_bbox` = `2.0 · Σ w (1 − GIoU(b̂, g/s))` / `avg_factor`;
//! - `loss_dfl` = `0.25 · Σ_pos Σ_edges w · DFL / 4` / `avg_factor`;
//! - `avg_factor = max(Σ w, 1)` (mmdet: `sum(weight_targets)` over levels,
//!   `reduce_mean(..).clamp_(min=1)`).
//!
//! Without positives `loss_bbox` and `loss_dfl` are `0 · Σ box_regression` (mmdet's
//! `bbox_pred.sum() * 0`), so the graph still reaches every parameter.

use burn::tensor::activation::sigmoid;
use burn::tensor::ops::IndexingUpdateOp;
use burn::tensor::{Tensor, TensorData};
use kdet_structures::Instances;
use kdet_structures::Xyxy;
use kdet_structures::boxes::BoxTensor;
use kdet_structures::iou::aligned_iou_tensor;

use super::head::{GflHead, integral};
use crate::assignment::{Assignment, Priors};
use crate::coders::{decode_distances_tensor, encode_distances};
use crate::heads::{DenseTargets, FlatOutputs, boxes_tensor, points_tensor};
use crate::output::{HeadLevel, LossDict};

/// Per-positive geometry in units of the positive's level stride.
#[derive(Debug, Clone, PartialEq)]
pub struct GflPositives {
    /// Anchor centres divided by the stride, `[P]`.
    pub centers: Vec<[f32; 2]>,
    /// Matched ground-truth boxes divided by the stride, `[P]`.
    pub gt_boxes: Vec<[f32; 4]>,
    /// DFL targets `(l, t, r, b)` in strides, clamped to `[0, reg_max − 0.1]`, `[P]`.
    pub distance_targets: Vec<[f32; 4]>,
    /// The stride of each positive's level.
    pub strides: Vec<f32>,
}

impl GflPositives {
    /// Geometry of the positives of `targets` (see [`DenseTargets`]).
    pub fn new(priors: &Priors, targets: &DenseTargets, reg_max: usize) -> Self {
        let mut out = GflPositives {
            centers: Vec::with_capacity(targets.num_positives()),
            gt_boxes: Vec::with_capacity(targets.num_positives()),
            distance_targets: Vec::with_capacity(targets.num_positives()),
            strides: Vec::with_capacity(targets.num_positives()),
        };
        for (&i, g) in targets.positive_priors.iter().zip(&targets.positive_boxes) {
            let s = priors.strides[priors.level_of(i)] as f32;
            let c = priors.centers[i].map(|v| v / s);
            let g = g.map(|v| v / s);
            out.centers.push(c);
            out.gt_boxes.push(g);
            out.distance_targets
                .push(encode_distances(c, g, Some(reg_max as f32)));
            out.strides.push(s);
        }
        out
    }
}

/// The GFL task loss (see the module docs).
///
/// # Panics
/// If the levels, priors and assignment disagree in size (caller invariants).
pub fn gfl_loss(
    head: &GflHead,
    levels: &[HeadLevel],
    targets: &[Instances],
    assignment: &Assignment,
) -> LossDict {
    let k = head.num_classes();
    let bins = head.reg_max() + 1;
    let device = levels[0].cls_logits.device();
    let flat = FlatOutputs::new(levels, k, 4 * bins, assignment.priors());
    let (b, n) = (flat.batch_size, flat.num_priors);
    let cls = flat.cls_logits; // [B*N, K]
    let reg = flat.box_regression; // [B*N, 4(n+1)]

    let dt = DenseTargets::new(assignment, targets, k);
    let num_pos = dt.num_positives();
    let num_total_samples = (num_pos as f32).max(1.0);
    let label_weights = dt.label_weight_tensor(&device);
    let one_hot = dt.one_hot(k, &device); // [B*N, K]
    let cfg = &head.config;
    let mut losses = LossDict::new();

    if num_pos == 0 {
        let zero = reg.sum().mul_scalar(0.0);
        let loss_cls = cfg.loss_cls.init().forward(
            cls,
            one_hot.mul_scalar(0.0),
            Some(label_weights),
            num_total_samples,
        );
        losses.push("loss_cls", loss_cls);
        losses.push("loss_bbox", zero.clone());
        losses.push("loss_dfl", zero);
        return losses;
    }

    let geo = GflPositives::new(assignment.priors(), &dt, cfg.reg_max);
    let pos_idx = dt.positive_index_tensor(&device);
    let pos_reg = reg.select(0, pos_idx.clone()); // [P, 4(n+1)]
    // w: max sigmoid class score, detached (mmdet `cls_score.detach().sigmoid().max(dim=1)`).
    let weight = sigmoid(cls.clone().detach().select(0, pos_idx.clone()))
        .max_dim(1)
        .reshape([num_pos]); // [P]
    let corners = integral(pos_reg.clone().reshape([num_pos * 4, bins])).reshape([num_pos, 4]); // [P, 4]
    let centers = points_tensor(&geo.centers, &device);
    let pred_boxes = decode_distances_tensor(centers, corners); // [P, 4], strides
    let gt_boxes = boxes_tensor(&geo.gt_boxes, &device);
    // QFL soft target: IoU of the detached prediction with its ground truth.
    let iou = aligned_iou_tensor(
        &BoxTensor::<Xyxy>::new(pred_boxes.clone().detach()),
        &BoxTensor::<Xyxy>::new(gt_boxes.clone()),
    ); // [P]
    let score =
        Tensor::<1>::zeros([b * n], &device).select_assign(0, pos_idx, iou, IndexingUpdateOp::Add); // [B*N]
    let soft_targets = one_hot * score.reshape([b * n, 1]);
    let loss_cls =
        cfg.loss_cls
            .init()
            .forward(cls, soft_targets, Some(label_weights), num_total_samples);

    // avg_factor = max(Σ w, 1), a detached tensor (mmdet reads it with `.item()`).
    let avg_factor = weight.clone().sum().clamp_min(1.0); // [1]
    let loss_bbox = cfg
        .loss_bbox
        .init()
        .forward(pred_boxes, gt_boxes, Some(weight.clone()), 1.0)
        / avg_factor.clone();
    let dist_targets: Vec<f32> = geo.distance_targets.iter().flatten().copied().collect();
    let dist_targets =
        Tensor::<1>::from_data(TensorData::new(dist_targets, [num_pos * 4]), &device);
    let edge_weight = weight
        .reshape([num_pos, 1])
        .repeat_dim(1, 4)
        .reshape([num_pos * 4]); // [P*4]
    let loss_dfl = cfg.loss_dfl.init().forward(
        pos_reg.reshape([num_pos * 4, bins]),
        dist_targets,
        Some(edge_weight),
        4.0,
    ) / avg_factor;

    losses.push("loss_cls", loss_cls);
    losses.push("loss_bbox", loss_bbox);
    losses.push("loss_dfl", loss_dfl);
    losses
}

#[cfg(test)]
mod tests {
    use super::super::head::tests::{tiny_config, tiny_neck};
    use super::*;
    use crate::DenseHead;
    use crate::heads::tests::{assert_found_in_top, one_image_neck, train_on_fixed_features};
    use burn::optim::GradientsParams;
    use burn::tensor::Device;
    use kdet_structures::{Boxes, ImageSize};

    fn targets() -> Vec<Instances> {
        vec![
            Instances::new(
                ImageSize::new(64, 64),
                Boxes::new(vec![[4.0, 6.0, 30.0, 28.0], [36.0, 30.0, 60.0, 62.0]]),
                vec![0, 2],
            )
            .expect("valid"),
            Instances::empty(ImageSize::new(64, 64)),
        ]
    }

    #[test]
    fn loss_is_finite_and_reaches_the_head_parameters() {
        let device = Device::flex().autodiff();
        let head = tiny_config().init(&device);
        let levels = head.forward(&tiny_neck(&device, 8));
        let priors = head.priors(&levels);
        let t = targets();
        let assignment = head.assign(&priors, &t);
        assert!(assignment.num_positives() > 0);
        let losses = head.loss(&levels, &t, &assignment);
        let names: Vec<String> = losses.terms.iter().map(|t| t.key.to_string()).collect();
        assert_eq!(names, ["loss_cls", "loss_bbox", "loss_dfl"]);
        for (name, v) in losses.scalars() {
            assert!(v.is_finite() && v > 0.0, "{name} = {v}");
        }
        let grads = losses.total().expect("terms").backward();
        let grads = GradientsParams::from_grads(grads, &head);
        let sum_abs =
            |g: Option<Tensor<4>>| -> f32 { g.expect("a gradient").abs().sum().into_scalar() };
        let g_cls = sum_abs(grads.get::<4>(head.gfl_cls.weight.id));
        let g_reg = sum_abs(grads.get::<4>(head.gfl_reg.weight.id));
        let g_tower = sum_abs(grads.get::<4>(head.reg_convs[0].conv.weight.id));
        assert!(
            g_cls.is_finite() && g_cls > 0.0 && g_reg.is_finite() && g_reg > 0.0 && g_tower > 0.0
        );
        let g_scale: f32 = grads
            .get::<1>(head.scales[0].scale.id)
            .expect("a gradient")
            .abs()
            .sum()
            .into_scalar();
        assert!(g_scale.is_finite() && g_scale > 0.0);
    }

    #[test]
    fn no_positives_give_zero_box_losses_and_a_connected_graph() {
        let device = Device::flex().autodiff();
        let head = tiny_config().init(&device);
        let levels = head.forward(&tiny_neck(&device, 8));
        let priors = head.priors(&levels);
        let t = vec![Instances::empty(ImageSize::new(64, 64)); 2];
        let assignment = head.assign(&priors, &t);
        let losses = head.loss(&levels, &t, &assignment);
        let s = losses.scalars();
        // QFL on all-negative targets with σ = 0.01 everywhere: per element
        // BCE(z, 0) σ² = -ln(0.99) · 1e-4; 2 images × 80 priors × 3 classes / max(0, 1).
        let expected = 2.0 * 80.0 * 3.0 * -(0.99f64.ln()) * 1e-4;
        // (The logits scatter around the bias by the N(0, 0.01) weights: a loose check.)
        assert!(
            (s[0].1 - expected).abs() < 0.3 * expected,
            "{s:?} vs {expected}"
        );
        assert_eq!((s[1].1, s[2].1), (0.0, 0.0));
        let _ = losses.total().expect("terms").backward();
    }

    #[test]
    fn reductions_match_hand_derived_values() {
        // One level of stride 8, 2×2 map, 1 class, reg_max 4, ATSS topk 1. All logits 0:
        // σ = 0.5 everywhere (w = 0.5), uniform edge distributions -> distances 2 strides.
        // GT [2, 4, 18, 14] (centre (10, 9)): the nearest anchor centre is (8, 8), prior 3,
        // the only candidate (std 0) and inside the GT -> the single positive.
        // Predicted box [8-16, 8-16, 8+16, 8+16] contains the GT: IoU = GIoU = 160/1024.
        // - loss_bbox = 2.0 · 0.5 · (1 − 0.15625) / max(0.5, 1) = 0.84375
        // - loss_dfl  = 0.25 · 4 edges · 0.5 · ln 5 / 4 / 1 = 0.125 ln 5
        //   (uniform logits: DFL = ln 5 whatever the target)
        // - loss_cls  = [3 negatives · ln2 · 0.5² + ln2 · (0.15625 − 0.5)²] / 1
        //   (BCE at logit 0 is ln 2 for any target).
        let device = Device::flex();
        let head = crate::heads::gfl::GflHeadConfig::new(1, 4)
            .with_feat_channels(4)
            .with_stacked_convs(1)
            .with_norm(crate::layers::NormKind::Group(1))
            .with_reg_max(4)
            .with_anchor(crate::priors::AnchorGeneratorConfig::new().with_strides(vec![8]))
            .with_assigner(crate::assigners::AtssAssignerConfig::new().with_topk(1))
            .init(&device);
        let levels = vec![HeadLevel {
            stride: 8,
            cls_logits: Tensor::zeros([1, 1, 2, 2], &device),
            box_regression: Tensor::zeros([1, 20, 2, 2], &device),
            centerness: None,
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
        let expected = [
            ln2 * (0.75 + (0.15625f64 - 0.5).powi(2)),
            0.84375,
            0.125 * 5f64.ln(),
        ];
        for ((name, v), e) in s.iter().zip(expected) {
            assert!((v - e).abs() < 1e-5, "{name}: {v} vs {e}");
        }
    }

    #[test]
    fn overfits_fixed_features() {
        // Smoke test of the whole head on fixed random neck features: Adam steps on one
        // image must lower the loss and recover both objects at IoU > 0.5 as the top
        // detections. (GFL's total loss is not monotone early on: the box terms are
        // weighted by the class scores, which start at 0.01.)
        let device = Device::flex().autodiff();
        device.seed(0);
        let head = DenseHead::Gfl(tiny_config().init(&device));
        let neck = one_image_neck(&device, 8);
        let t = vec![targets().remove(0)];
        let (head, first, last) = train_on_fixed_features(head, &neck, &t, 100);
        assert!(last < first, "loss {first} -> {last}");
        // Inference on the plain device, as the detector runs it (`valid()` keeps the
        // skipped config).
        use burn::module::Module;
        let DenseHead::Gfl(head) = head.valid() else {
            unreachable!("trained a GFL head")
        };
        assert_eq!(head.config.reg_max, 4);
        let neck: Vec<_> = neck
            .into_iter()
            .map(|mut f| {
                f.tensor = f.tensor.inner();
                f
            })
            .collect();
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
