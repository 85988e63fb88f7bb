//! GFL inference, as mmdetection `GFLHead._predict_by_feat_single`: class scores are
//! `sigmoid(cls_logits)` (no separate quality branch: GFL's class score *is* the
//! IoU-aware score), distances are `integral(z) · stride` from the anchor centre, and the
//! shared pipeline of [`crate::heads::inference`] does top-k, threshold, clip, NMS.

use burn::tensor::{Tensor, TensorData};
use kdet_structures::{ImageSize, Instances};

use super::head::{GflHead, integral};
use crate::assignment::Priors;
use crate::heads::inference::{
    TestConfig, class_scores, decode_from_points, flat_box_regression, postprocess_batch,
};
use crate::output::HeadLevel;

/// Decoded boxes of every prior in input pixels (not clipped).
///
/// # Shapes
/// - `levels[l].box_regression`: `[B, 4(reg_max+1), H_l, W_l]` → `[B, N, 4]`
pub fn decode_boxes(levels: &[HeadLevel], priors: &Priors, reg_max: usize) -> Tensor<3> {
    let bins = reg_max + 1;
    let device = levels[0].box_regression.device();
    let reg = flat_box_regression(levels, 4 * bins, priors);
    let [b, n, _] = reg.dims();
    let dist = integral(reg.reshape([b * n * 4, bins])).reshape([b, n, 4]); // strides
    let strides: Vec<f32> = (0..priors.num_levels())
        .flat_map(|l| {
            std::iter::repeat_n(
                priors.strides[l] as f32,
                priors.level_offsets[l + 1] - priors.level_offsets[l],
            )
        })
        .collect();
    let strides = Tensor::<1>::from_data(TensorData::new(strides, [n]), &device).reshape([1, n, 1]);
    decode_from_points(dist * strides, priors) // distances in pixels
}

/// GFL detections per image (input pixels, clipped to `image_sizes[i]`).
pub fn gfl_predict(
    head: &GflHead,
    levels: &[HeadLevel],
    priors: &Priors,
    image_sizes: &[ImageSize],
    test: &TestConfig,
) -> Vec<Instances> {
    let scores = class_scores(levels, head.num_classes()); // [B, N, K]
    let boxes = decode_boxes(levels, priors, head.reg_max());
    postprocess_batch(scores, boxes, None, priors, image_sizes, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::gfl::GflHeadConfig;
    use crate::layers::NormKind;
    use crate::priors::AnchorGeneratorConfig;
    use burn::tensor::Device;

    #[test]
    fn integral_distances_are_scaled_by_the_stride() {
        // One level of stride 16, 4×4 map, 1 class, reg_max 4 (5 bins). Edge logits put all
        // mass on bin 2 for l, t and bin 1 for r, b: distances (32, 32, 16, 16) px.
        // Only location (x=3, y=3), anchor centre (48, 48), scores above the threshold:
        // box [48-32, 48-32, 48+16, 48+16] = [16, 16, 64, 64].
        let device = Device::flex();
        let head = GflHeadConfig::new(1, 4)
            .with_feat_channels(4)
            .with_stacked_convs(1)
            .with_norm(NormKind::Group(1))
            .with_reg_max(4)
            .with_anchor(AnchorGeneratorConfig::new().with_strides(vec![16]))
            .init(&device);
        let mut cls = vec![-10.0f32; 16];
        cls[15] = 3.0;
        let mut reg = vec![0.0f32; 20 * 16];
        for (edge, bin) in [(0, 2), (1, 2), (2, 1), (3, 1)] {
            for p in 0..16 {
                reg[(edge * 5 + bin) * 16 + p] = 60.0;
            }
        }
        let level = HeadLevel {
            stride: 16,
            cls_logits: Tensor::from_data(TensorData::new(cls, [1, 1, 4, 4]), &device),
            box_regression: Tensor::from_data(TensorData::new(reg, [1, 20, 4, 4]), &device),
            centerness: None,
            cls_tower: Tensor::zeros([1, 4, 4, 4], &device),
            reg_tower: Tensor::zeros([1, 4, 4, 4], &device),
        };
        let levels = vec![level];
        let priors = head.priors(&levels);
        let out = head.predict(
            &levels,
            &priors,
            &[ImageSize::new(64, 64)],
            &TestConfig::new(),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 1);
        let b = out[0].boxes().as_slice()[0];
        for (v, e) in b.iter().zip([16.0, 16.0, 64.0, 64.0]) {
            assert!((v - e).abs() < 1e-3, "{b:?}");
        }
        let s = out[0].scores().expect("scores")[0];
        assert!((s - 1.0 / (1.0 + (-3f32).exp())).abs() < 1e-5);
        // Clipping: a 60×60 image cuts the box at 60.
        let out = head.predict(
            &levels,
            &priors,
            &[ImageSize::new(60, 60)],
            &TestConfig::new(),
        );
        assert!((out[0].boxes().as_slice()[0][2] - 60.0).abs() < 1e-5);
    }
}
