//! ATSS inference, as mmdetection `ATSSHead` with `BaseDenseHead._predict_by_feat_single`
//! (`with_score_factors`): deltas decoded on the anchors (`DeltaXYWHBBoxCoder`), class
//! scores `sigmoid(cls)` thresholded and top-k'd, then multiplied by
//! `sigmoid(centerness)` before NMS (`_bbox_post_process`: `scores * score_factors`, no
//! square root); see [`crate::heads::inference`].
//!
//! mmdetection ≤ 2.17 ranked the `nms_pre` candidates by `score · centerness` instead and
//! thresholded inside `multiclass_nms`; we follow the current (2.18+ / 3.x) order.

use burn::tensor::Tensor;
use kdet_structures::{ImageSize, Instances};

use super::head::AtssHead;
use crate::assignment::Priors;
use crate::heads::inference::{
    TestConfig, centerness_factors, class_scores, decode_on_anchors, flat_box_regression,
    postprocess_batch,
};
use crate::output::HeadLevel;

/// Decoded boxes of every prior in input pixels (not clipped).
///
/// # Shapes
/// - `levels[l].box_regression`: `[B, A*4, H_l, W_l]` → `[B, N, 4]`
pub fn decode_boxes(head: &AtssHead, levels: &[HeadLevel], priors: &Priors) -> Tensor<3> {
    decode_on_anchors(
        &head.config.coder,
        flat_box_regression(levels, 4, priors),
        priors,
    )
}

/// ATSS detections per image (input pixels, clipped to `image_sizes[i]`).
///
/// # Panics
/// If the levels lack centerness maps (a caller invariant: they come from this head).
pub fn atss_predict(
    head: &AtssHead,
    levels: &[HeadLevel],
    priors: &Priors,
    image_sizes: &[ImageSize],
    test: &TestConfig,
) -> Vec<Instances> {
    let scores = class_scores(levels, head.num_classes()); // [B, N, K]
    let factors = centerness_factors(levels); // [B, N]
    let boxes = decode_boxes(head, levels, priors);
    postprocess_batch(scores, boxes, Some(factors), priors, image_sizes, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::atss::AtssHeadConfig;
    use crate::layers::NormKind;
    use crate::priors::AnchorGeneratorConfig;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn deltas_decode_on_anchors_and_centerness_multiplies() {
        // One level of stride 16, 2×2 map, anchors of side 32 (octave base 2), 1 class.
        // Only location (x=1, y=1) (anchor [0, 0, 32, 32], centre (16, 16)) scores above
        // the threshold: cls logit 0 (σ 0.5), centerness logit 0 (σ 0.5) -> score 0.25.
        // Deltas (10, 0, 0, 5·ln 0.5) times stds (0.1, 0.1, 0.2, 0.2) -> raw
        // (1, 0, 0, ln 0.5): centre x 16 + 1·32 = 48, height 32·0.5 = 16 -> [32, 8, 64, 24].
        let device = Device::flex();
        let head = AtssHeadConfig::new(1, 4)
            .with_feat_channels(4)
            .with_stacked_convs(1)
            .with_norm(NormKind::Group(1))
            .with_anchor(
                AnchorGeneratorConfig::new()
                    .with_strides(vec![16])
                    .with_octave_base_scale(2.0),
            )
            .init(&device);
        let mut reg = vec![0.0f32; 16];
        reg[3] = 10.0; // channel 0 (dx) at location 3 = (y 1, x 1)
        reg[3 * 4 + 3] = 5.0 * 0.5f32.ln(); // channel 3 (dh) at location 3
        let level = HeadLevel {
            stride: 16,
            cls_logits: Tensor::from_data(
                TensorData::new(vec![-10.0, -10.0, -10.0, 0.0], [1, 1, 2, 2]),
                &device,
            ),
            box_regression: Tensor::from_data(TensorData::new(reg, [1, 4, 2, 2]), &device),
            centerness: Some(Tensor::zeros([1, 1, 2, 2], &device)),
            cls_tower: Tensor::zeros([1, 4, 2, 2], &device),
            reg_tower: Tensor::zeros([1, 4, 2, 2], &device),
        };
        let levels = vec![level];
        let priors = head.priors(&levels);
        let out = head.predict(
            &levels,
            &priors,
            &[ImageSize::new(100, 100)],
            &TestConfig::new(),
        );
        assert_eq!(out[0].len(), 1);
        let b = out[0].boxes().as_slice()[0];
        for (v, e) in b.iter().zip([32.0, 8.0, 64.0, 24.0]) {
            assert!((v - e).abs() < 1e-3, "{b:?}");
        }
        assert!((out[0].scores().expect("scores")[0] - 0.25).abs() < 1e-6);
    }
}
