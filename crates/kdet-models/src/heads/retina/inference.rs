//! RetinaNet post-processing: decode every anchor's deltas (DeltaXYWH, `dw`/`dh` clamped
//! at `|ln(16/1000)|`), then the shared [`crate::heads::inference`] pipeline without score
//! factors: per level, (anchor, class) pairs with sigmoid score > `score_thr` (0.05), the
//! best `nms_pre` (1000) of them, clipping to the image, class-aware NMS at IoU 0.5, the
//! best `max_per_img` (100) — mmdetection 3.x `BaseDenseHead._predict_by_feat_single` with
//! the `retinanet_r50_fpn_1x_coco` `test_cfg` ([`RetinaHeadConfig::test_config`]).
//!
//! Not applied: mmdet's `min_bbox_size=0` filter (boxes of zero width or height after
//! clipping are dropped before NMS), which the shared pipeline does not have; it only
//! matters for degenerate boxes.

use kdet_structures::{ImageSize, Instances};

use super::head::{RetinaHead, RetinaHeadConfig};
use crate::assignment::Priors;
use crate::heads::inference::{
    TestConfig, class_scores, decode_on_anchors, flat_box_regression, postprocess_batch,
};
use crate::output::HeadLevel;

impl RetinaHeadConfig {
    /// The test settings of `retinanet_r50_fpn_1x_coco`: `nms_pre=1000, score_thr=0.05,
    /// nms=dict(type='nms', iou_threshold=0.5), max_per_img=100` (the shared
    /// [`TestConfig`] default has GFL/ATSS's NMS IoU 0.6).
    pub fn test_config() -> TestConfig {
        TestConfig::new().with_iou_threshold(0.5)
    }
}

impl RetinaHead {
    /// Detections per image in input pixels.
    ///
    /// # Panics
    /// If the levels do not match `priors` or `image_sizes` has another length than the
    /// batch (caller invariants).
    pub fn predict(
        &self,
        levels: &[HeadLevel],
        priors: &Priors,
        image_sizes: &[ImageSize],
        test: &TestConfig,
    ) -> Vec<Instances> {
        let scores = class_scores(levels, self.config.num_classes); // [B, N, K]
        let deltas = flat_box_regression(levels, 4, priors).detach(); // [B, N, 4]
        let boxes = decode_on_anchors(&self.config.coder, deltas, priors);
        postprocess_batch(scores, boxes, None, priors, image_sizes, test)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::priors::AnchorGeneratorConfig;
    use burn::tensor::{Device, Tensor, TensorData};

    #[test]
    fn predict_decodes_hand_made_outputs() {
        // One level of stride 16 on a 1×2 map, one square anchor of side 16 per location
        // (ratio 1, octave base 1, one scale), 2 classes, batch 1.
        // Anchors: x = 0 -> [-8, -8, 8, 8]; x = 1 -> [8, -8, 24, 8].
        let device = Device::flex();
        let head = RetinaHeadConfig::new(2, 4)
            .with_stacked_convs(0)
            .with_anchor(
                AnchorGeneratorConfig::new()
                    .with_strides(vec![16])
                    .with_ratios(vec![1.0])
                    .with_octave_base_scale(1.0),
            )
            .init(&device);
        // x = 0: class 0 logit ln 4 (p = 0.8); deltas (0.5, 0.25, ln 2, 0): centre
        //        (0 + 16*0.5, 0 + 16*0.25) = (8, 4), size (32, 16) -> [-8, -4, 24, 12],
        //        clipped to the 32x32 image: [0, 0, 24, 12].
        // x = 1: class 1 logit 0 (p = 0.5); deltas 0: the anchor [8, -8, 24, 8] -> clipped
        //        [8, 0, 24, 8].
        let t = |v: Vec<f32>, c: usize| {
            Tensor::<4>::from_data(TensorData::new(v, [1, c, 1, 2]), &device)
        };
        let level = HeadLevel {
            stride: 16,
            cls_logits: t(vec![4f32.ln(), -10.0, -10.0, 0.0], 2),
            box_regression: t(vec![0.5, 0.0, 0.25, 0.0, 2f32.ln(), 0.0, 0.0, 0.0], 4),
            centerness: None,
            cls_tower: t(vec![0.0; 2], 1),
            reg_tower: t(vec![0.0; 2], 1),
        };
        let levels = vec![level];
        let priors = head.priors(&levels);
        assert_eq!(
            priors.boxes,
            vec![[-8.0, -8.0, 8.0, 8.0], [8.0, -8.0, 24.0, 8.0]]
        );
        let out = head.predict(
            &levels,
            &priors,
            &[ImageSize::new(32, 32)],
            &RetinaHeadConfig::test_config(),
        );
        let det = &out[0];
        assert_eq!(det.classes(), &[0, 1]);
        let s = det.scores().expect("scores");
        assert!(
            (s[0] - 0.8).abs() < 1e-6 && (s[1] - 0.5).abs() < 1e-6,
            "{s:?}"
        );
        let b = det.boxes().as_slice();
        for (got, want) in b
            .iter()
            .zip([[0.0, 0.0, 24.0, 12.0], [8.0, 0.0, 24.0, 8.0]])
        {
            assert!(
                got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-4),
                "{b:?}"
            );
        }
    }
}
