//! A width/depth-configurable ResNet of BasicBlocks for fast CPU runs on the built-in
//! 128x128 data. Same stem and stage strides as torchvision's ResNet (so the default
//! outputs are C3-C5 at strides 8/16/32: 16x16, 8x8 and 4x4 maps for a 128x128 image),
//! only narrower and shallower.

use burn::config::Config;
use burn::tensor::Device;

use super::BackboneError;
use super::norm::BackboneNorm;
use super::resnet::{BlockKind, ResNet, ResNetArch};
use crate::output::FeatureSpec;

/// A small BasicBlock ResNet.
#[derive(Config, Debug, PartialEq)]
pub struct SmallResNetConfig {
    /// Channels of the 7x7/2 stem conv (torchvision: 64).
    pub stem_channels: usize,
    /// Channels of `layer1..layer4` (torchvision ResNet-18: 64/128/256/512).
    pub widths: [usize; 4],
    /// BasicBlocks per stage (ResNet-18: 2/2/2/2).
    pub depths: [usize; 4],
    /// Trained from scratch here, so trainable BatchNorm by default.
    #[config(default = "BackboneNorm::Batch")]
    pub norm: BackboneNorm,
    /// Stages to return, 0-based over `layer1..layer4` (strides 4, 8, 16, 32); default
    /// C3-C5.
    #[config(default = "vec![1, 2, 3]")]
    pub out_indices: Vec<usize>,
}

impl SmallResNetConfig {
    /// Teacher for the 128x128 presets: ResNet-18's shape at 3/4 width (stem 48, widths
    /// 48/96/192/384, depths 2/2/2/2; about 6.3 M parameters, 20x the student's backbone).
    ///
    /// Half width (stem 32, widths 32-256, 2.8 M) was the first preset: with the 64-channel
    /// FPN and head both detectors share costing as much as the student's whole backbone,
    /// the student ran inference only 1.97x faster (forward, batch 1; 1.81x with
    /// post-processing; `scripts/bench-infer.sh` on an idle 2-core machine). At 3/4 width
    /// the forward takes 54 ms against the student's 16 (`kdet bench infer --config`).
    pub fn teacher_128() -> Self {
        Self::new(48, [48, 96, 192, 384], [2, 2, 2, 2])
    }

    /// Student for the 128x128 presets: a ResNet-10 (one block per stage) at quarter width
    /// (widths 16/32/64/128, depths 1/1/1/1; about 0.31 M parameters, ~9x fewer than the
    /// teacher). The stem has 24 channels, not 16: burn-flex 0.22.1 runs convs with <= 4
    /// input and <= 16 output channels on a direct (non-GEMM) path that is about 2x slower
    /// for this 7x7 stem than the GEMM path a 24-channel stem takes (measured 15.2 vs
    /// 8.3 ms on 2x3x128x128, 2 cores), and the stem is most of the student's time.
    pub fn student_128() -> Self {
        Self::new(24, [16, 32, 64, 128], [1, 1, 1, 1])
    }

    /// The architecture this config describes.
    pub fn arch(&self) -> ResNetArch {
        ResNetArch {
            block: BlockKind::Basic,
            stem_channels: self.stem_channels,
            widths: self.widths,
            depths: self.depths,
            norm: self.norm,
            out_indices: self.out_indices.clone(),
            frozen_stages: None,
        }
    }

    pub fn validate(&self) -> Result<(), BackboneError> {
        self.arch().validate()
    }

    pub fn out_specs(&self) -> Vec<FeatureSpec> {
        self.arch().out_specs()
    }

    /// # Panics
    /// On a config that [`validate`](Self::validate) rejects.
    pub fn init(&self, device: &Device) -> ResNet {
        self.arch().init(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::num_parameters;
    use burn::tensor::{Distribution, Tensor};
    use std::time::Instant;

    #[test]
    fn teacher_is_at_least_three_times_the_student() {
        let device = Device::flex();
        let teacher = num_parameters(&SmallResNetConfig::teacher_128().init(&device));
        let student = num_parameters(&SmallResNetConfig::student_128().init(&device));
        // By hand: teacher 6,290,352 (stem 3*48*49 + 2*48, then per block c_in*w*9 + w*w*9 +
        // 4w, plus a 1x1 downsample conv + BN, c_in*w + 2w, where the channels change, here
        // layer2-4: 7,152 + 83,328 + 295,872 + 1,181,568 + 4,722,432); student 312,216 by the
        // same formula (its layer1 also has a downsample, 24 -> 16).
        assert_eq!(teacher, 6_290_352);
        assert_eq!(student, 312_216);
        assert!(
            teacher >= 3 * student,
            "teacher {teacher}, student {student}"
        );
    }

    /// Forward time of the two presets on a 2x3x128x128 batch, plain `Device::flex()`:
    /// median of 10 runs after 3 warm-ups, teacher and student interleaved so that load
    /// from other processes hits both alike. Prints, asserts nothing:
    /// `cargo test -p kdet-models --lib preset_forward_time -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, prints only"]
    fn preset_forward_time() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 128, 128], Distribution::Normal(0.0, 1.0), &device);
        let models = [
            (
                "teacher_128",
                SmallResNetConfig::teacher_128().init(&device),
            ),
            (
                "student_128",
                SmallResNetConfig::student_128().init(&device),
            ),
        ];
        let mut times = [Vec::new(), Vec::new()];
        for i in 0..13 {
            for ((_, model), times) in models.iter().zip(&mut times) {
                let t0 = Instant::now();
                let total: f32 = model
                    .forward(x.clone())
                    .into_iter()
                    .map(|f| f.tensor.sum().into_scalar::<f32>())
                    .sum();
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                assert!(total.is_finite());
                if i >= 3 {
                    times.push(ms);
                }
            }
        }
        let mut medians = Vec::new();
        for ((name, model), times) in models.iter().zip(&mut times) {
            times.sort_by(f64::total_cmp);
            let median = (times[4] + times[5]) / 2.0;
            medians.push(median);
            println!(
                "{name}: {} params, forward 2x3x128x128 median {median:.2} ms (min {:.2}, max {:.2}, 10 runs)",
                num_parameters(model),
                times[0],
                times[9]
            );
        }
        println!("teacher / student time: {:.2}x", medians[0] / medians[1]);
    }
}
