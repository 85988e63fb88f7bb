//! The RetinaNet head's modules and forward pass (Lin et al., "Focal Loss for Dense Object
//! Detection", ICCV 2017, arXiv:1708.02002, Sec. 4 and Fig. 3), as mmdetection's
//! `RetinaHead` (`mmdet/models/dense_heads/retina_head.py`) with
//! `configs/retinanet/retinanet_r50_fpn_1x_coco.py`:
//!
//! - two towers of `stacked_convs` conv3x3 + ReLU blocks (no norm, convs with bias),
//!   shared across levels;
//! - `retina_cls` → `A·K` sigmoid logits (anchor-major, `a·K + k`), bias `−ln((1 − π)/π)`,
//!   `π = 0.01`;
//! - `retina_reg` → `A·4` deltas `(dx, dy, dw, dh)` against each anchor (DeltaXYWH coder,
//!   means 0, stds 1);
//! - anchors: 3 scales per octave from `octave_base_scale = 4` × ratios `{0.5, 1, 2}`,
//!   `A = 9`, at strides 8–128.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Device;
use kdet_structures::Instances;

use crate::assigners::max_iou::MaxIouAssignerConfig;
use crate::assignment::{Assignment, Priors};
use crate::coders::DeltaXywhCoder;
use crate::heads::{
    anchor_priors, bias_init_with_prob, check_neck, output_conv, run_tower, tower,
    zero_tower_biases,
};
use crate::layers::{ConvNormAct, NormKind};
use crate::losses::FocalLossConfig;
use crate::output::{FeatureMap, HeadLevel};
use crate::priors::AnchorGeneratorConfig;

/// Configuration of the [`RetinaHead`]. Defaults: `retinanet_r50_fpn_1x_coco`.
#[derive(Config, Debug)]
pub struct RetinaHeadConfig {
    /// Object classes `K` (no background class: sigmoid classification).
    pub num_classes: usize,
    /// Channels of the neck levels (FPN `out_channels`; config 256).
    pub in_channels: usize,
    /// Channels of the tower convs (config `feat_channels=256`).
    #[config(default = 256)]
    pub feat_channels: usize,
    /// Conv blocks per tower (`RetinaHead` default `stacked_convs=4`; paper Sec. 4).
    #[config(default = 4)]
    pub stacked_convs: usize,
    /// Tower normalisation (`RetinaHead` default `norm_cfg=None`: conv + bias + ReLU).
    #[config(default = "NormKind::None")]
    pub norm: NormKind,
    /// Anchors (config `AnchorGenerator(octave_base_scale=4, scales_per_octave=3,
    /// ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128])`); its strides are the
    /// head's level strides.
    #[config(
        default = "AnchorGeneratorConfig::new().with_ratios(vec![0.5, 1.0, 2.0]).with_octave_base_scale(4.0).with_scales_per_octave(3)"
    )]
    pub anchor: AnchorGeneratorConfig,
    /// Box coder (config `DeltaXYWHBBoxCoder(target_means=[0, 0, 0, 0],
    /// target_stds=[1, 1, 1, 1])`).
    #[config(default = "DeltaXywhCoder::new()")]
    pub coder: DeltaXywhCoder,
    /// Assignment (config `MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4,
    /// min_pos_iou=0, ignore_iof_thr=-1)`).
    #[config(default = "MaxIouAssignerConfig::new()")]
    pub assigner: MaxIouAssignerConfig,
    /// Classification loss (config `FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25,
    /// loss_weight=1.0)`), over the non-ignored anchors, averaged over the positives.
    #[config(default = "FocalLossConfig::new()")]
    pub loss_cls: FocalLossConfig,
    /// Weight of the L1 loss on the positives' deltas (config `L1Loss(loss_weight=1.0)`),
    /// averaged over the positives.
    #[config(default = 1.0)]
    pub loss_bbox_weight: f32,
    /// Prior probability of the classification bias (`RetinaHead` `bias_prob=0.01`; paper
    /// Sec. 4.1, π = 0.01).
    #[config(default = 0.01)]
    pub prior_prob: f32,
    /// Std of the Gaussian init of every head conv, biases 0 (`RetinaHead` init
    /// `Normal(std=0.01)`; paper Sec. 4.1).
    #[config(default = 0.01)]
    pub init_std: f64,
}

impl RetinaHeadConfig {
    /// `retinanet_r50_fpn_1x_coco` on a 256-channel FPN (P3–P7).
    pub fn coco(num_classes: usize) -> Self {
        Self::new(num_classes, 256)
    }

    /// The built-in 128×128 synthetic data (`sqrt(area)`: 55% 5.5–16 px, 25% 16–32, 17%
    /// 32–72, 3% 96–118) on a three-level neck of `feat_channels` channels. Changes from [`Self::coco`], each
    /// for a reason:
    pub fn synth_128(num_classes: usize, feat_channels: usize) -> Self {
        Self::new(num_classes, feat_channels)
            .with_feat_channels(feat_channels)
            // CPU budget: two blocks per tower instead of four.
            .with_stacked_convs(2)
            .with_anchor(
                AnchorGeneratorConfig::new()
                    // P3–P5 only: at 128 px P6/P7 would be 2×2 and 1×1 maps.
                    .with_strides(vec![8, 16, 32])
                    .with_ratios(vec![0.5, 1.0, 2.0])
                    // Base anchor side 1·stride instead of 4·stride: sides 8–12.7 px on P3,
                    // 16–25 on P4, 32–51 on P5 match the 6–72-px bulk of the objects under
                    // max-IoU (thresholds 0.4/0.5); with COCO's 4 the smallest anchor
                    // (32 px) has IoU < 0.1 with an 8-px object. The rare ~100-px objects
                    // get their best anchor through the low-quality match.
                    .with_octave_base_scale(1.0)
                    .with_scales_per_octave(3),
            )
    }

    /// Anchors per location (`A`).
    pub fn num_anchors(&self) -> usize {
        self.anchor.num_base_anchors()
    }

    /// Builds the head.
    pub fn init(&self, device: &Device) -> RetinaHead {
        let a = self.num_anchors();
        let make_tower = || {
            let convs = tower(
                self.in_channels,
                self.feat_channels,
                self.stacked_convs,
                self.norm,
                self.init_std,
                device,
            );
            zero_tower_biases(convs, false, device)
        };
        let prior_bias = bias_init_with_prob(self.prior_prob);
        RetinaHead {
            cls_convs: make_tower(),
            reg_convs: make_tower(),
            retina_cls: output_conv(
                self.feat_channels,
                a * self.num_classes,
                self.init_std,
                prior_bias,
                device,
            ),
            retina_reg: output_conv(self.feat_channels, a * 4, self.init_std, 0.0, device),
            config: self.clone(),
        }
    }
}

/// The RetinaNet head (parameter names follow mmdet's state dict: `cls_convs.{i}.conv`,
/// `reg_convs.{i}.conv`, `retina_cls`, `retina_reg`).
#[derive(Module, Debug)]
pub struct RetinaHead {
    pub cls_convs: Vec<ConvNormAct>,
    pub reg_convs: Vec<ConvNormAct>,
    pub retina_cls: Conv2d,
    pub retina_reg: Conv2d,
    #[module(skip)]
    pub config: RetinaHeadConfig,
}

impl RetinaHead {
    /// One [`HeadLevel`] per neck level.
    ///
    /// # Shapes
    /// - `neck[l].tensor`: `[B, C_in, H_l, W_l]`
    /// - `cls_logits`: `[B, A*K, H_l, W_l]`; `box_regression`: `[B, A*4, H_l, W_l]` deltas;
    ///   `centerness`: `None`; `cls_tower` / `reg_tower`: `[B, feat_channels, H_l, W_l]`
    ///
    /// # Panics
    /// If the levels' number, strides or channels differ from the configuration.
    pub fn forward(&self, neck: &[FeatureMap]) -> Vec<HeadLevel> {
        check_neck(
            "RetinaNet",
            neck,
            &self.config.anchor.strides,
            self.config.in_channels,
        );
        neck.iter()
            .map(|f| {
                let (cls_feat, cls_tower) = run_tower(&self.cls_convs, f.tensor.clone());
                let (reg_feat, reg_tower) = run_tower(&self.reg_convs, f.tensor.clone());
                HeadLevel {
                    stride: f.stride,
                    cls_logits: self.retina_cls.forward(cls_feat),
                    box_regression: self.retina_reg.forward(reg_feat),
                    centerness: None,
                    cls_tower,
                    reg_tower,
                }
            })
            .collect()
    }

    /// The anchors of every level for the levels' map sizes (mmdet `AnchorGenerator`,
    /// centre offset 0).
    ///
    /// # Panics
    /// If the levels' strides differ from the anchor generator's.
    pub fn priors(&self, levels: &[HeadLevel]) -> Priors {
        anchor_priors(&self.config.anchor, levels)
    }

    /// Max-IoU assignment of every image (see [`crate::assigners::max_iou`]).
    pub fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment {
        self.config.assigner.init().assign(priors, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::tests::random_neck;

    #[test]
    fn forward_shapes_and_priors() {
        let device = Device::flex();
        let head = RetinaHeadConfig::synth_128(2, 8).init(&device);
        let neck = random_neck(&device, 1, 8, &[(8, 4, 4), (16, 2, 2), (32, 1, 1)]);
        let levels = head.forward(&neck);
        assert_eq!(levels[0].cls_logits.dims(), [1, 9 * 2, 4, 4]);
        assert_eq!(levels[0].box_regression.dims(), [1, 9 * 4, 4, 4]);
        assert!(levels[0].centerness.is_none());
        assert_eq!(levels[1].cls_tower.dims(), [1, 8, 2, 2]);
        let p = head.priors(&levels);
        assert_eq!(p.len(), 9 * (16 + 4 + 1));
        assert_eq!(p.num_per_location, 9);
        // Location (y=1, x=2) of level 0, ratio 1, scale 1 (a = 3): centre (16, 8), side 8.
        assert_eq!(p.boxes[(4 + 2) * 9 + 3], [12.0, 4.0, 20.0, 12.0]);
        // Tower convs have zero biases, the classification bias is the prior logit.
        let zero: Vec<f32> = head.cls_convs[0]
            .conv
            .bias
            .as_ref()
            .expect("bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(zero.iter().all(|&v| v == 0.0));
        let b: Vec<f32> = head
            .retina_cls
            .bias
            .as_ref()
            .expect("bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(b.len() == 18 && b.iter().all(|&v| (v + 99f32.ln()).abs() < 1e-5));
    }

    #[test]
    fn coco_preset_matches_the_config() {
        let c = RetinaHeadConfig::coco(80);
        assert_eq!(c.num_anchors(), 9);
        assert_eq!(c.anchor.strides, vec![8, 16, 32, 64, 128]);
        assert_eq!(
            c.anchor.scales(),
            vec![4.0, 4.0 * 2f32.powf(1.0 / 3.0), 4.0 * 2f32.powf(2.0 / 3.0)]
        );
        assert_eq!(c.coder.stds, [1.0; 4]);
        assert_eq!(
            (c.assigner.pos_iou_threshold, c.assigner.neg_iou_threshold),
            (0.5, 0.4)
        );
        let json = serde_json::to_string(&c).expect("serialisable");
        let back: RetinaHeadConfig = serde_json::from_str(&json).expect("deserialisable");
        assert_eq!(back.anchor, c.anchor);
    }
}
