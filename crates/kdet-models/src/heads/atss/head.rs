//! The ATSS head's modules and forward pass (Zhang et al., CVPR 2020, arXiv:1912.02424,
//! Sec. 4), as mmdetection's `ATSSHead` (`mmdet/models/dense_heads/atss_head.py`) with
//! `configs/atss/atss_r50_fpn_1x_coco.py`:
//!
//! - two towers (classification and regression) of `stacked_convs` conv3x3 + GN(32) + ReLU
//!   blocks, shared across levels, weights `N(0, 0.01)`;
//! - `atss_cls` → `A·K` sigmoid logits, bias `−ln((1 − 0.01)/0.01)`;
//! - `atss_reg` → `A·4` deltas (`DeltaXYWHBBoxCoder`, stds `[0.1, 0.1, 0.2, 0.2]`) times a
//!   learnable per-level [`Scale`] (init 1);
//! - `atss_centerness` → `A` logits on the regression tower;
//! - one square anchor per location (`octave_base_scale = 8`), ATSS assignment.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Device;
use kdet_structures::{ImageSize, Instances};

use crate::assigners::AtssAssignerConfig;
use crate::assignment::{Assignment, Priors};
use crate::coders::DeltaXywhCoder;
use crate::heads::inference::TestConfig;
use crate::heads::{
    anchor_priors, bias_init_with_prob, check_neck, group_norm_groups, level_scales, output_conv,
    run_tower, tower,
};
use crate::layers::{ConvNormAct, NormKind, Scale};
use crate::losses::{FocalLossConfig, GiouLossConfig};
use crate::output::{FeatureMap, HeadLevel, LossDict};
use crate::priors::AnchorGeneratorConfig;

/// Configuration of the [`AtssHead`]. Defaults: mmdetection `atss_r50_fpn_1x_coco`.
#[derive(Config, Debug)]
pub struct AtssHeadConfig {
    /// Object classes `K` (sigmoid classification, no background class).
    pub num_classes: usize,
    /// Channels of the neck levels (FPN `out_channels`; config 256).
    pub in_channels: usize,
    /// Channels of the tower convs (config `feat_channels=256`).
    #[config(default = 256)]
    pub feat_channels: usize,
    /// Conv blocks per tower (config `stacked_convs=4`).
    #[config(default = 4)]
    pub stacked_convs: usize,
    /// Tower normalisation (`ATSSHead` default `norm_cfg=dict(type='GN', num_groups=32)`).
    #[config(default = "NormKind::Group(32)")]
    pub norm: NormKind,
    /// Anchors (config `anchor_generator`: `ratios=[1.0], octave_base_scale=8,
    /// scales_per_octave=1, strides=[8, 16, 32, 64, 128]`).
    #[config(default = "AnchorGeneratorConfig::new()")]
    pub anchor: AnchorGeneratorConfig,
    /// Box coder (config `DeltaXYWHBBoxCoder(target_means=[0, 0, 0, 0],
    /// target_stds=[0.1, 0.1, 0.2, 0.2])`).
    #[config(default = "DeltaXywhCoder::atss()")]
    pub coder: DeltaXywhCoder,
    /// Label assignment (config `train_cfg.assigner=dict(type='ATSSAssigner', topk=9)`).
    #[config(default = "AtssAssignerConfig::new()")]
    pub assigner: AtssAssignerConfig,
    /// Classification loss (config `FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25,
    /// loss_weight=1.0)`), averaged over the positives.
    #[config(default = "FocalLossConfig::new()")]
    pub loss_cls: FocalLossConfig,
    /// Box loss on decoded boxes, weighted by the centerness targets (config
    /// `GIoULoss(loss_weight=2.0)`).
    #[config(default = "GiouLossConfig::new()")]
    pub loss_bbox: GiouLossConfig,
    /// Weight of the centerness BCE (config `CrossEntropyLoss(use_sigmoid=True,
    /// loss_weight=1.0)`), averaged over the positives.
    #[config(default = 1.0)]
    pub loss_centerness_weight: f32,
    /// Initial sigmoid score of every class (`bias_init_with_prob(0.01)`).
    #[config(default = 0.01)]
    pub prior_prob: f32,
    /// Std of the normal weight init of every conv (`normal_init(std=0.01)`).
    #[config(default = 0.01)]
    pub init_std: f64,
}

impl AtssHeadConfig {
    /// The paper / mmdetection COCO setting (`atss_r50_fpn_1x_coco`, FPN P3–P7 of 256
    /// channels).
    pub fn coco(num_classes: usize) -> Self {
        Self::new(num_classes, 256)
    }

    /// A setting for the built-in 128×128 synthetic data (objects of about 5–118 px,
    /// most under 32 px), on an FPN of `channels` channels at strides 8, 16, 32.
    pub fn synth_128(num_classes: usize, channels: usize) -> Self {
        Self::new(num_classes, channels)
            // The head is as wide as the neck, like COCO's 256/256; narrow for CPU.
            .with_feat_channels(channels)
            // 2 instead of 4 tower blocks: CPU budget.
            .with_stacked_convs(2)
            // GN(32) needs a multiple of 32 channels; use the largest group count that fits.
            .with_norm(NormKind::Group(group_norm_groups(channels)))
            .with_anchor(
                AnchorGeneratorConfig::new()
                    // P6/P7 of a 128-px image are 2×2 and 1×1 maps: nothing to learn there.
                    .with_strides(vec![8, 16, 32])
                    // Anchor sides 16/32/64 px bracket the 6–118-px objects as COCO's
                    // 64–1024 px bracket COCO's; here the anchor is also the reference
                    // box of the deltas, so it should be near the object sizes.
                    .with_octave_base_scale(2.0),
            )
    }

    /// Builds the head.
    ///
    /// # Panics
    /// If a GN group count does not divide `feat_channels` (a configuration error caught
    /// at construction).
    pub fn init(&self, device: &Device) -> AtssHead {
        let a = self.anchor.num_base_anchors();
        let make_tower = || {
            tower(
                self.in_channels,
                self.feat_channels,
                self.stacked_convs,
                self.norm,
                self.init_std,
                device,
            )
        };
        AtssHead {
            cls_convs: make_tower(),
            reg_convs: make_tower(),
            atss_cls: output_conv(
                self.feat_channels,
                a * self.num_classes,
                self.init_std,
                bias_init_with_prob(self.prior_prob),
                device,
            ),
            atss_reg: output_conv(self.feat_channels, a * 4, self.init_std, 0.0, device),
            atss_centerness: output_conv(self.feat_channels, a, self.init_std, 0.0, device),
            scales: level_scales(self.anchor.strides.len(), device),
            config: self.clone(),
        }
    }
}

/// The ATSS head (see the module docs). Parameter names follow mmdetection's state dict
/// (`cls_convs.i`, `reg_convs.i`, `atss_cls`, `atss_reg`, `atss_centerness`,
/// `scales.i.scale`).
#[derive(Module, Debug)]
pub struct AtssHead {
    pub cls_convs: Vec<ConvNormAct>,
    pub reg_convs: Vec<ConvNormAct>,
    pub atss_cls: Conv2d,
    pub atss_reg: Conv2d,
    pub atss_centerness: Conv2d,
    pub scales: Vec<Scale>,
    #[module(skip)]
    pub config: AtssHeadConfig,
}

impl AtssHead {
    /// Classes `K`.
    pub fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    /// One `HeadLevel` per neck level: `cls_logits [B, A*K, H, W]`, `box_regression
    /// [B, A*4, H, W]` (normalised deltas after the level's `Scale`), `centerness
    /// [B, A, H, W]`, and the first tower blocks' outputs.
    ///
    /// # Panics
    /// If the neck levels do not match the configured strides or input channels.
    pub fn forward(&self, neck: &[FeatureMap]) -> Vec<HeadLevel> {
        check_neck(
            "ATSS",
            neck,
            &self.config.anchor.strides,
            self.config.in_channels,
        );
        neck.iter()
            .zip(&self.scales)
            .map(|(fm, scale)| {
                let (cls_feat, cls_tower) = run_tower(&self.cls_convs, fm.tensor.clone());
                let (reg_feat, reg_tower) = run_tower(&self.reg_convs, fm.tensor.clone());
                HeadLevel {
                    stride: fm.stride,
                    cls_logits: self.atss_cls.forward(cls_feat),
                    box_regression: scale.forward(self.atss_reg.forward(reg_feat.clone())),
                    centerness: Some(self.atss_centerness.forward(reg_feat)),
                    cls_tower,
                    reg_tower,
                }
            })
            .collect()
    }

    /// The anchors for these level sizes.
    ///
    /// # Panics
    /// If the levels' strides differ from the configured ones.
    pub fn priors(&self, levels: &[HeadLevel]) -> Priors {
        anchor_priors(&self.config.anchor, levels)
    }

    /// ATSS assignment (top-9 per level, IoU ≥ mean + std, centre inside the GT).
    pub fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment {
        self.config.assigner.init().assign(priors, targets)
    }

    /// Focal + GIoU + centerness BCE (see [`super::loss`]): terms `loss_cls`,
    /// `loss_bbox`, `loss_centerness`.
    pub fn loss(
        &self,
        levels: &[HeadLevel],
        targets: &[Instances],
        assignment: &Assignment,
    ) -> LossDict {
        super::loss::atss_loss(self, levels, targets, assignment)
    }

    /// Detections per image in input pixels, clipped to `image_sizes[i]`; scores are
    /// `sigmoid(cls) · sigmoid(centerness)` (see [`super::inference`]).
    pub fn predict(
        &self,
        levels: &[HeadLevel],
        priors: &Priors,
        image_sizes: &[ImageSize],
        test: &TestConfig,
    ) -> Vec<Instances> {
        super::inference::atss_predict(self, levels, priors, image_sizes, test)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::heads::tests::tiny_neck;

    pub(crate) fn tiny_config() -> AtssHeadConfig {
        AtssHeadConfig::new(3, 8)
            .with_feat_channels(8)
            .with_stacked_convs(2)
            .with_norm(NormKind::Group(4))
            .with_anchor(
                AnchorGeneratorConfig::new()
                    .with_strides(vec![8, 16])
                    .with_octave_base_scale(2.0),
            )
    }

    #[test]
    fn forward_shapes_towers_and_init() {
        let device = Device::flex();
        let head = tiny_config().init(&device);
        let levels = head.forward(&tiny_neck(&device, 8));
        assert_eq!(levels.len(), 2);
        assert_eq!(levels[0].cls_logits.dims(), [2, 3, 8, 8]);
        assert_eq!(levels[0].box_regression.dims(), [2, 4, 8, 8]);
        assert_eq!(
            levels[0].centerness.as_ref().map(|c| c.dims()),
            Some([2, 1, 8, 8])
        );
        assert_eq!(levels[1].cls_tower.dims(), [2, 8, 4, 4]);
        assert_eq!(levels[1].reg_tower.dims(), [2, 8, 4, 4]);
        let b: Vec<f32> = head
            .atss_cls
            .bias
            .as_ref()
            .expect("bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(b.iter().all(|v| (v + 99f32.ln()).abs() < 1e-5));
        assert_eq!(head.priors(&levels).len(), 80);
    }

    #[test]
    fn presets() {
        let c = AtssHeadConfig::coco(80);
        assert_eq!(
            (c.in_channels, c.feat_channels, c.stacked_convs),
            (256, 256, 4)
        );
        assert_eq!(c.coder.stds, [0.1, 0.1, 0.2, 0.2]);
        assert_eq!(
            (c.loss_cls.gamma, c.loss_cls.alpha, c.loss_bbox.loss_weight),
            (2.0, 0.25, 2.0)
        );
        assert_eq!(c.anchor.octave_base_scale, 8.0);
        let s = AtssHeadConfig::synth_128(8, 64);
        assert_eq!(s.norm, NormKind::Group(32));
        assert_eq!(s.anchor.strides, vec![8, 16, 32]);
    }
}
