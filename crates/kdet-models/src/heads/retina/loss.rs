//! RetinaNet losses (Lin et al., ICCV 2017, arXiv:1708.02002, Sec. 4), with the reductions
//! of mmdetection's `AnchorHead.loss_by_feat` for `retinanet_r50_fpn_1x_coco`:
//!
//! - `loss_cls`: sigmoid focal loss (γ 2, α 0.25) summed over every non-ignored anchor and
//!   class (ignored anchors have label weight 0);
//! - `loss_bbox`: L1 between the positives' predicted deltas and their DeltaXYWH targets
//!   (`reg_decoded_bbox=False`), summed;
//! - both divided by `avg_factor = Σ_images max(#positives_i, 1)` (PseudoSampler's
//!   `SamplingResult.avg_factor`, which counts at least one positive per image).
//!
//! Without positives the box term is `0 · Σ prediction`, which keeps it in the graph.

use kdet_structures::Instances;

use super::head::RetinaHead;
use crate::assignment::Assignment;
use crate::heads::{DenseTargets, FlatOutputs, boxes_tensor, focal_cls_loss};
use crate::output::{HeadLevel, LossDict};

impl RetinaHead {
    /// `loss_cls` and `loss_bbox` (mmdet names and reductions, see the module docs).
    ///
    /// # Panics
    /// If the levels do not match the assignment's priors (a caller invariant).
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
        let deltas = flat.box_regression; // [B*N, 4]

        let t = DenseTargets::new(assignment, targets, k);
        let avg_factor: f32 = assignment
            .images
            .iter()
            .map(|a| a.num_positives().max(1) as f32)
            .sum();

        let loss_cls = focal_cls_loss(&self.config.loss_cls, flat.cls_logits, &t, avg_factor);

        let loss_bbox = if t.num_positives() == 0 {
            deltas.sum().mul_scalar(0.0)
        } else {
            let coder = &self.config.coder;
            let target: Vec<[f32; 4]> = t
                .positive_priors
                .iter()
                .zip(&t.positive_boxes)
                .map(|(&i, &g)| coder.encode(priors.boxes[i], g))
                .collect();
            let pred = deltas.select(0, t.positive_index_tensor(&device)); // [P, 4]
            (pred - boxes_tensor(&target, &device))
                .abs()
                .sum()
                .div_scalar(avg_factor)
                .mul_scalar(self.config.loss_bbox_weight)
        };

        let mut losses = LossDict::new();
        losses.push("loss_cls", loss_cls);
        losses.push("loss_bbox", loss_bbox);
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::flatten_levels;
    use crate::heads::retina::head::RetinaHeadConfig;
    use crate::heads::tests::{random_neck, reference_focal};
    use burn::tensor::{Device, Tensor};
    use kdet_structures::{Boxes, ImageSize};

    fn setup(device: &Device) -> (RetinaHead, Vec<HeadLevel>, Vec<Instances>, Assignment) {
        device.seed(3);
        let head = RetinaHeadConfig::synth_128(3, 8).init(device);
        let neck = random_neck(device, 2, 8, &[(8, 8, 8), (16, 4, 4), (32, 2, 2)]);
        let levels = head.forward(&neck);
        let size = ImageSize::new(64, 64);
        let targets = vec![
            Instances::new(
                size,
                Boxes::new(vec![[4.0, 6.0, 14.0, 15.0], [30.0, 20.0, 60.0, 58.0]]),
                vec![1, 2],
            )
            .expect("valid"),
            Instances::new(size, Boxes::new(vec![[40.0, 8.0, 52.0, 30.0]]), vec![0])
                .expect("valid"),
        ];
        let priors = head.priors(&levels);
        let assignment = head.assign(&priors, &targets);
        (head, levels, targets, assignment)
    }

    #[test]
    fn loss_is_finite_and_reaches_the_head_parameters() {
        let device = Device::flex().autodiff();
        let (head, levels, targets, assignment) = setup(&device);
        assert!(
            assignment.num_positives() >= 3,
            "every GT gets at least its best anchor"
        );
        let losses = head.loss(&levels, &targets, &assignment);
        let s = losses.scalars();
        assert_eq!(
            s.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["loss_cls", "loss_bbox"]
        );
        assert!(s.iter().all(|(_, v)| v.is_finite() && *v > 0.0), "{s:?}");
        let grads = losses.total().expect("two terms").backward();
        for (name, w) in [
            ("retina_cls", head.retina_cls.weight.val()),
            ("retina_reg", head.retina_reg.weight.val()),
            ("cls_convs.0", head.cls_convs[0].conv.weight.val()),
            ("reg_convs.1", head.reg_convs[1].conv.weight.val()),
        ] {
            let g = w
                .grad(&grads)
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let g = g.abs().sum().into_scalar::<f32>();
            assert!(g.is_finite() && g > 0.0, "{name}: {g}");
        }
    }

    #[test]
    fn loss_values_follow_the_reductions() {
        let device = Device::flex();
        let (head, levels, targets, assignment) = setup(&device);
        let got: Vec<f64> = head
            .loss(&levels, &targets, &assignment)
            .scalars()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let read = |t: Tensor<3>| -> Vec<f32> { t.into_data().try_to_vec::<f32>().expect("f32") };
        let cls = read(flatten_levels(
            levels.iter().map(|l| l.cls_logits.clone()).collect(),
            3,
        ));
        let deltas = read(flatten_levels(
            levels.iter().map(|l| l.box_regression.clone()).collect(),
            4,
        ));
        let n = assignment.priors().len();
        let coder = head.config.coder;
        let (mut fl, mut l1, mut avg) = (0.0f64, 0.0f64, 0.0f64);
        for (img, a) in assignment.images.iter().enumerate() {
            avg += a.num_positives().max(1) as f64;
            for i in 0..n {
                if a.ignore[i] {
                    continue;
                }
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
                    let tgt = coder.encode(
                        assignment.priors().boxes[i],
                        targets[img].boxes().as_slice()[g],
                    );
                    for e in 0..4 {
                        l1 += (deltas[(img * n + i) * 4 + e] - tgt[e]).abs() as f64;
                    }
                }
            }
        }
        assert!(
            assignment
                .images
                .iter()
                .any(|a| a.ignore.iter().any(|&x| x)),
            "the test should exercise ignored anchors"
        );
        let expected = [fl / avg, l1 / avg];
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (g - e).abs() < 1e-4 * e.abs().max(1.0),
                "{got:?} vs {expected:?}"
            );
        }
    }

    #[test]
    fn images_without_positives_count_one_in_the_average() {
        // Image 0 has no GT: avg_factor = max(0, 1) + #pos(image 1).
        let device = Device::flex();
        let (head, levels, targets, _) = setup(&device);
        let size = ImageSize::new(64, 64);
        let targets = vec![Instances::empty(size), targets[1].clone()];
        let assignment = head.assign(&head.priors(&levels), &targets);
        let pos = assignment.images[1].num_positives();
        assert!(pos > 0 && assignment.images[0].num_positives() == 0);
        let both = head.loss(&levels, &targets, &assignment).scalars();
        // Only image 1: its positives alone in the average, and the same L1 sum.
        let single = Assignment {
            predictions: assignment.predictions.clone(),
            images: vec![assignment.images[1].clone()],
        };
        let lv1: Vec<HeadLevel> = levels
            .iter()
            .map(|l| {
                let sl = |t: &Tensor<4>| t.clone().narrow(0, 1, 1);
                HeadLevel {
                    stride: l.stride,
                    cls_logits: sl(&l.cls_logits),
                    box_regression: sl(&l.box_regression),
                    centerness: None,
                    cls_tower: sl(&l.cls_tower),
                    reg_tower: sl(&l.reg_tower),
                }
            })
            .collect();
        let one = head.loss(&lv1, &targets[1..], &single).scalars();
        let ratio = pos as f64 / (pos as f64 + 1.0);
        assert!(
            (both[1].1 - one[1].1 * ratio).abs() < 1e-5,
            "{both:?} {one:?}"
        );
    }
}
