//! The GFL head's modules and forward pass (Li et al., "Generalized Focal Loss",
//! NeurIPS 2020, arXiv:2006.04388, Fig. 3), as mmdetection's `GFLHead`
//! (`mmdet/models/dense_heads/gfl_head.py`) with `configs/gfl/gfl_r50_fpn_1x_coco.py`:
//!
//! - two towers (classification and regression) of `stacked_convs` conv3x3 + GN(32) + ReLU
//!   blocks, shared across levels, weights `N(0, 0.01)`;
//! - `gfl_cls` → `A·K` sigmoid logits (the joint class-IoU score trained with QFL), bias
//!   `−ln((1 − 0.01)/0.01)`;
//! - `gfl_reg` → `4·(reg_max + 1)` edge-distribution logits (edge-major, l t r b), times a
//!   learnable per-level [`Scale`] (init 1);
//! - one square anchor per location (side `octave_base_scale · stride`) used only for the
//!   ATSS assignment; the box is regressed as distances from the anchor centre in units of
//!   the stride, each decoded by the integral `Σ_i i · softmax(z)_i` ([`integral`]).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use kdet_structures::{ImageSize, Instances};

use crate::assigners::AtssAssignerConfig;
use crate::assignment::{Assignment, Priors};
use crate::heads::inference::TestConfig;
use crate::heads::{
    anchor_priors, bias_init_with_prob, check_neck, group_norm_groups, level_scales, output_conv,
    run_tower, tower,
};
use crate::layers::{ConvNormAct, NormKind, Scale};
use crate::losses::{DistributionFocalLossConfig, GiouLossConfig, QualityFocalLossConfig};
use crate::output::{FeatureMap, HeadLevel, LossDict};
use crate::priors::AnchorGeneratorConfig;

/// Configuration of the [`GflHead`]. Defaults: mmdetection `gfl_r50_fpn_1x_coco`.
#[derive(Config, Debug)]
pub struct GflHeadConfig {
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
    /// Tower normalisation (config `norm_cfg=dict(type='GN', num_groups=32)`).
    #[config(default = "NormKind::Group(32)")]
    pub norm: NormKind,
    /// Largest bin index `n` of the edge distributions; `n + 1` bins (config `reg_max=16`;
    /// paper Sec. 3.3 / Table 5).
    #[config(default = 16)]
    pub reg_max: usize,
    /// Anchors (config `anchor_generator`: `ratios=[1.0], octave_base_scale=8,
    /// scales_per_octave=1, strides=[8, 16, 32, 64, 128]`).
    #[config(default = "AnchorGeneratorConfig::new()")]
    pub anchor: AnchorGeneratorConfig,
    /// Label assignment (config `train_cfg.assigner=dict(type='ATSSAssigner', topk=9)`).
    #[config(default = "AtssAssignerConfig::new()")]
    pub assigner: AtssAssignerConfig,
    /// Classification loss (config `QualityFocalLoss(use_sigmoid=True, beta=2.0,
    /// loss_weight=1.0)`), averaged over the positives.
    #[config(default = "QualityFocalLossConfig::new()")]
    pub loss_cls: QualityFocalLossConfig,
    /// Edge-distribution loss (config `DistributionFocalLoss(loss_weight=0.25)`).
    #[config(default = "DistributionFocalLossConfig::new()")]
    pub loss_dfl: DistributionFocalLossConfig,
    /// Box loss on the decoded boxes (config `GIoULoss(loss_weight=2.0)`).
    #[config(default = "GiouLossConfig::new()")]
    pub loss_bbox: GiouLossConfig,
    /// Initial sigmoid score of every class (`bias_init_with_prob(0.01)`).
    #[config(default = 0.01)]
    pub prior_prob: f32,
    /// Std of the normal weight init of every conv (`normal_init(std=0.01)`).
    #[config(default = 0.01)]
    pub init_std: f64,
}

impl GflHeadConfig {
    /// The paper / mmdetection COCO setting (`gfl_r50_fpn_1x_coco`, FPN P3–P7 of 256
    /// channels).
    pub fn coco(num_classes: usize) -> Self {
        Self::new(num_classes, 256)
    }

    /// A setting for the built-in 128×128 synthetic data (objects of about 5–118 px,
    /// most under 32 px), on an FPN of `channels` channels with levels at strides
    /// 8, 16, 32 (P3–P5).
    pub fn synth_128(num_classes: usize, channels: usize) -> Self {
        Self::new(num_classes, channels)
            // The head is as wide as the neck, like COCO's 256/256; narrow for CPU.
            .with_feat_channels(channels)
            // 2 instead of 4 tower blocks: CPU budget; the towers' first-block taps exist
            // either way.
            .with_stacked_convs(2)
            // GN(32) needs a multiple of 32 channels; use the largest group count that fits.
            .with_norm(NormKind::Group(group_norm_groups(channels)))
            .with_anchor(
                AnchorGeneratorConfig::new()
                    // P6/P7 of a 128-px image are 2×2 and 1×1 maps: nothing to learn there.
                    .with_strides(vec![8, 16, 32])
                    // Anchor sides 16/32/64 px bracket the 6–118-px objects as COCO's
                    // 64–1024 px (octave base 8) bracket COCO's; the anchors only rank
                    // candidates by IoU in ATSS, regression is anchor-free.
                    .with_octave_base_scale(2.0),
            )
    }

    /// Builds the head.
    ///
    /// # Panics
    /// If a GN group count does not divide `feat_channels` (a configuration error caught
    /// at construction).
    pub fn init(&self, device: &Device) -> GflHead {
        let a = self.anchor.num_base_anchors();
        let k = self.num_classes;
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
        GflHead {
            cls_convs: make_tower(),
            reg_convs: make_tower(),
            gfl_cls: output_conv(
                self.feat_channels,
                a * k,
                self.init_std,
                bias_init_with_prob(self.prior_prob),
                device,
            ),
            gfl_reg: output_conv(
                self.feat_channels,
                a * 4 * (self.reg_max + 1),
                self.init_std,
                0.0,
                device,
            ),
            scales: level_scales(self.anchor.strides.len(), device),
            config: self.clone(),
        }
    }
}

/// The GFL head (see the module docs). Parameter names follow mmdetection's state dict
/// (`cls_convs.i`, `reg_convs.i`, `gfl_cls`, `gfl_reg`, `scales.i.scale`).
#[derive(Module, Debug)]
pub struct GflHead {
    pub cls_convs: Vec<ConvNormAct>,
    pub reg_convs: Vec<ConvNormAct>,
    pub gfl_cls: Conv2d,
    pub gfl_reg: Conv2d,
    pub scales: Vec<Scale>,
    #[module(skip)]
    pub config: GflHeadConfig,
}

/// The integral decoding of edge distributions (GFL Eq. 4, mmdet `Integral`):
/// `d = Σ_{i=0}^{n} i · softmax(z)_i`, in units of the stride.
///
/// # Shapes
/// - `logits`: `[M, n + 1]` → `[M]`
pub fn integral(logits: Tensor<2>) -> Tensor<1> {
    let [m, bins] = logits.dims();
    let device = logits.device();
    let project = Tensor::<1, burn::tensor::Int>::arange(0..bins as i64, &device)
        .float()
        .reshape([1, bins]);
    (softmax(logits, 1) * project).sum_dim(1).reshape([m])
}

impl GflHead {
    /// Classes `K`.
    pub fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    /// `reg_max` (`n`; `n + 1` bins per edge).
    pub fn reg_max(&self) -> usize {
        self.config.reg_max
    }

    /// One `HeadLevel` per neck level: `cls_logits [B, A*K, H, W]`, `box_regression
    /// [B, A*4*(reg_max+1), H, W]` (edge-distribution logits after the level's `Scale`),
    /// no centerness, and the first tower blocks' outputs.
    ///
    /// # Panics
    /// If the neck levels do not match the configured strides or input channels.
    pub fn forward(&self, neck: &[FeatureMap]) -> Vec<HeadLevel> {
        check_neck(
            "GFL",
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
                    cls_logits: self.gfl_cls.forward(cls_feat),
                    box_regression: scale.forward(self.gfl_reg.forward(reg_feat)),
                    centerness: None,
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

    /// QFL + DFL + GIoU (see [`super::loss`]): terms `loss_cls`, `loss_bbox`, `loss_dfl`.
    pub fn loss(
        &self,
        levels: &[HeadLevel],
        targets: &[Instances],
        assignment: &Assignment,
    ) -> LossDict {
        super::loss::gfl_loss(self, levels, targets, assignment)
    }

    /// Detections per image in input pixels, clipped to `image_sizes[i]` (see
    /// [`super::inference`]).
    pub fn predict(
        &self,
        levels: &[HeadLevel],
        priors: &Priors,
        image_sizes: &[ImageSize],
        test: &TestConfig,
    ) -> Vec<Instances> {
        super::inference::gfl_predict(self, levels, priors, image_sizes, test)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::heads::tests::tiny_neck;
    use burn::tensor::TensorData;

    pub(crate) fn tiny_config() -> GflHeadConfig {
        GflHeadConfig::new(3, 8)
            .with_feat_channels(8)
            .with_stacked_convs(2)
            .with_norm(NormKind::Group(4))
            .with_reg_max(4)
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
        assert_eq!(levels[0].box_regression.dims(), [2, 4 * 5, 8, 8]);
        assert_eq!(levels[1].cls_logits.dims(), [2, 3, 4, 4]);
        assert_eq!(levels[1].cls_tower.dims(), [2, 8, 4, 4]);
        assert_eq!(levels[1].reg_tower.dims(), [2, 8, 4, 4]);
        assert!(levels[0].centerness.is_none());
        // The cls bias starts every score at 0.01: -ln(99).
        let b: Vec<f32> = head
            .gfl_cls
            .bias
            .as_ref()
            .expect("bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(b.iter().all(|v| (v + 99f32.ln()).abs() < 1e-5));
        let p = head.priors(&levels);
        assert_eq!(p.len(), 64 + 16);
        assert_eq!(p.level_offsets, vec![0, 64, 80]);
    }

    #[test]
    fn presets() {
        let c = GflHeadConfig::coco(80);
        assert_eq!(
            (c.in_channels, c.feat_channels, c.stacked_convs, c.reg_max),
            (256, 256, 4, 16)
        );
        assert_eq!(c.anchor.strides, vec![8, 16, 32, 64, 128]);
        assert_eq!(c.anchor.octave_base_scale, 8.0);
        assert_eq!(c.assigner.topk, 9);
        assert_eq!(
            (
                c.loss_dfl.loss_weight,
                c.loss_bbox.loss_weight,
                c.loss_cls.beta
            ),
            (0.25, 2.0, 2.0)
        );
        let s = GflHeadConfig::synth_128(8, 48);
        assert_eq!(s.norm, NormKind::Group(24));
        assert_eq!(s.anchor.strides, vec![8, 16, 32]);
    }

    #[test]
    fn integral_decoding() {
        let device = Device::flex();
        // All mass on bin 3 (logit 50 vs 0 elsewhere) -> 3; uniform -> n/2 = 8 for n = 16.
        let mut peaked = vec![0.0f32; 17];
        peaked[3] = 50.0;
        let z = Tensor::<2>::from_data(
            TensorData::new([peaked, vec![0.0; 17]].concat(), [2, 17]),
            &device,
        );
        let d: Vec<f32> = integral(z).into_data().try_to_vec::<f32>().expect("f32");
        assert!(
            (d[0] - 3.0).abs() < 1e-4 && (d[1] - 8.0).abs() < 1e-4,
            "{d:?}"
        );
    }
}
