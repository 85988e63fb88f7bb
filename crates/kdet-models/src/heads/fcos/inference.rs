//! FCOS post-processing: decode the distances at every point, then the shared
//! [`crate::heads::inference`] pipeline with the sigmoid centerness as score factor.
//!
//! What mmdetection 3.x does (`BaseDenseHead._predict_by_feat_single` +
//! `_bbox_post_process`, `with_score_factors=True`), and so do we: the score threshold
//! (`score_thr=0.05`) and the per-level top-k (`nms_pre=1000`) look at the **class score
//! alone**; the survivors' scores become `sigmoid(cls) · sigmoid(centerness)` (paper
//! Sec. 3.3; the official FCOS repo later ranks by the square root of that product, mmdet
//! leaves a TODO about it); boxes
//! are clipped to the image; class-aware NMS (IoU 0.5 in the FCOS config) runs on the
//! multiplied scores; the best `max_per_img=100` are kept. The FCOS config's `test_cfg`
//! is [`FcosHeadConfig::test_config`].
//!
//! Not applied: mmdet's `min_bbox_size=0` filter (boxes of zero width or height after
//! clipping are dropped before NMS), which the shared pipeline does not have; it only
//! matters for degenerate boxes.

use kdet_structures::{ImageSize, Instances};

use super::head::{FcosHead, FcosHeadConfig};
use crate::assignment::Priors;
use crate::heads::inference::{
    TestConfig, centerness_factors, class_scores, decode_from_points, flat_box_regression,
    postprocess_batch,
};
use crate::output::HeadLevel;

impl FcosHeadConfig {
    /// The test settings of `fcos_r50-caffe_fpn_gn-head_1x_coco`: `nms_pre=1000, score_thr=0.05,
    /// nms=dict(type='nms', iou_threshold=0.5), max_per_img=100` (the shared
    /// [`TestConfig`] default has GFL/ATSS's NMS IoU 0.6).
    pub fn test_config() -> TestConfig {
        TestConfig::new().with_iou_threshold(0.5)
    }
}

impl FcosHead {
    /// Detections per image in input pixels.
    ///
    /// # Panics
    /// If the levels do not match `priors`, lack centerness maps, or `image_sizes` has
    /// another length than the batch (caller invariants).
    pub fn predict(
        &self,
        levels: &[HeadLevel],
        priors: &Priors,
        image_sizes: &[ImageSize],
        test: &TestConfig,
    ) -> Vec<Instances> {
        let scores = class_scores(levels, self.config.num_classes); // [B, N, K]
        let distances = flat_box_regression(levels, 4, priors).detach(); // [B, N, 4]
        let boxes = decode_from_points(distances, priors);
        let centerness = centerness_factors(levels); // [B, N]
        postprocess_batch(scores, boxes, Some(centerness), priors, image_sizes, test)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor, TensorData};

    /// One level of stride 8 on a 1×2 map, 2 classes, batch 1, with hand-set outputs.
    fn level(cls: [f32; 4], dist: [f32; 8], ctr: [f32; 2], device: &Device) -> HeadLevel {
        // Channel-major [B, C, H, W]: cls[c * 2 + x], dist[e * 2 + x], ctr[x].
        let t = |v: Vec<f32>, c: usize| {
            Tensor::<4>::from_data(TensorData::new(v, [1, c, 1, 2]), device)
        };
        HeadLevel {
            stride: 8,
            cls_logits: t(cls.to_vec(), 2),
            box_regression: t(dist.to_vec(), 4),
            centerness: Some(t(ctr.to_vec(), 1)),
            cls_tower: t(vec![0.0; 2], 1),
            reg_tower: t(vec![0.0; 2], 1),
        }
    }

    #[test]
    fn predict_decodes_hand_made_outputs() {
        let device = Device::flex();
        let head = FcosHeadConfig::new(2, 4)
            .with_strides(vec![8])
            .with_assigner(
                crate::assigners::fcos::FcosAssignerConfig::new()
                    .with_regress_ranges(vec![[-1.0, 1e8]]),
            )
            .with_stacked_convs(0)
            .init(&device);
        // Points: (4, 4) and (12, 4).
        // x = 0: class 1 logit 2 (p = 0.8808), distances (l,t,r,b) = (2, 3, 4, 5) -> box
        //        [2, 1, 8, 9]; centerness logit 0 (0.5) -> score 0.4404.
        // x = 1: class 0 logit ln 9 (p = 0.9), distances (10, 10, 10, 10) -> box
        //        [2, -6, 22, 14] clipped to the 16x16 image: [2, 0, 16, 14]; centerness
        //        logit ln 3 (0.75) -> score 0.675.
        // Every other logit is -10 (p = 4.5e-5 < 0.05: no candidate).
        let lv = level(
            [-10.0, 9f32.ln(), 2.0, -10.0],
            [2.0, 10.0, 3.0, 10.0, 4.0, 10.0, 5.0, 10.0],
            [0.0, 3f32.ln()],
            &device,
        );
        let levels = vec![lv];
        let priors = head.priors(&levels);
        assert_eq!(priors.centers, vec![[4.0, 4.0], [12.0, 4.0]]);
        let out = head.predict(
            &levels,
            &priors,
            &[ImageSize::new(16, 16)],
            &FcosHeadConfig::test_config(),
        );
        assert_eq!(out.len(), 1);
        let det = &out[0];
        assert_eq!(det.classes(), &[0, 1]);
        let s = det.scores().expect("scores");
        assert!(
            (s[0] - 0.675).abs() < 1e-5 && (s[1] - 0.880797 * 0.5).abs() < 1e-5,
            "{s:?}"
        );
        let b = det.boxes().as_slice();
        assert_eq!(b[0], [2.0, 0.0, 16.0, 14.0]);
        assert_eq!(b[1], [2.0, 1.0, 8.0, 9.0]);
        // The threshold looks at the class score alone: raising it to 0.89 keeps only the
        // 0.9 class score, even though its final score (0.675) is below.
        let out = head.predict(
            &levels,
            &priors,
            &[ImageSize::new(16, 16)],
            &TestConfig::new().with_score_threshold(0.89),
        );
        assert_eq!(out[0].classes(), &[0]);
    }
}
