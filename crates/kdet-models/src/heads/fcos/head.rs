//! The FCOS head's modules and forward pass (Tian et al., ICCV 2019, arXiv:1904.01355,
//! Fig. 2), as mmdetection's `FCOSHead` (`mmdet/models/dense_heads/fcos_head.py`) with
//! `configs/fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py`:
//!
//! - two towers (classification and regression) of `stacked_convs` conv3x3 + GN(32) + ReLU
//!   blocks, shared across levels;
//! - `conv_cls` → `K` sigmoid logits, bias `−ln((1 − π)/π)` with `π = 0.01`;
//! - `conv_reg` → 4 distances `(l, t, r, b)` through a learnable per-level [`Scale`] (init
//!   1), then `exp` — or, with `norm_on_bbox`, `ReLU(·) · stride`;
//! - `conv_centerness` → 1 logit, on the classification tower (paper) or the regression
//!   tower (`centerness_on_reg`).
//!
//! `HeadLevel::box_regression` holds the distances **in input pixels** on every level.
//! mmdet's `norm_on_bbox` keeps them in units of the stride during training and multiplies
//! by the stride only at test time (a mode flag our pure `forward` does not have); the loss
//! is the same because IoU/GIoU of two boxes decoded from the same point, and the
//! centerness target, are invariant to scaling all distances by the stride.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Device;
use burn::tensor::activation::relu;
use kdet_structures::Instances;

use crate::assigners::fcos::{FCOS_INF, FcosAssignerConfig};
use crate::assignment::{Assignment, Priors};
use crate::heads::{
    bias_init_with_prob, check_neck, group_norm_groups, level_scales, level_sizes, output_conv,
    run_tower, tower, zero_tower_biases,
};
use crate::layers::{ConvNormAct, NormKind, Scale};
use crate::losses::{FocalLossConfig, GiouLossConfig, IouLossConfig};
use crate::output::{FeatureMap, HeadLevel};
use crate::priors::PointGeneratorConfig;

/// The box-regression loss of FCOS.
#[derive(Config, Debug)]
pub enum FcosBoxLossConfig {
    /// `−ln IoU` (mmdet `IoULoss`, the base FCOS config; UnitBox).
    Iou(IouLossConfig),
    /// `1 − GIoU` (mmdet `GIoULoss(loss_weight=1.0)` of the
    /// `center-normbbox-centeronreg-giou` variant).
    Giou(GiouLossConfig),
}

/// Configuration of the [`FcosHead`]. Defaults: `fcos_r50-caffe_fpn_gn-head_1x_coco`.
#[derive(Config, Debug)]
pub struct FcosHeadConfig {
    /// Object classes `K` (no background class: sigmoid classification).
    pub num_classes: usize,
    /// Channels of the neck levels (FPN `out_channels`; config 256).
    pub in_channels: usize,
    /// Channels of the tower convs (config `feat_channels=256`).
    #[config(default = 256)]
    pub feat_channels: usize,
    /// Conv blocks per tower (config `stacked_convs=4`; paper Fig. 2).
    #[config(default = 4)]
    pub stacked_convs: usize,
    /// Stride of each neck level, fine to coarse (config `strides=[8, 16, 32, 64, 128]`,
    /// P3–P7).
    #[config(default = "vec![8, 16, 32, 64, 128]")]
    pub strides: Vec<usize>,
    /// Tower normalisation (`FCOSHead` default `norm_cfg=dict(type='GN', num_groups=32)`).
    #[config(default = "NormKind::Group(32)")]
    pub norm: NormKind,
    /// Give the tower convs a bias even with a norm (mmdet `conv_bias='auto'` → no bias
    /// with GN; the `center-normbbox-centeronreg-giou` variant sets `conv_bias=True`).
    #[config(default = false)]
    pub conv_bias: bool,
    /// Regress distances in units of the stride through a ReLU instead of `exp`
    /// (mmdet `norm_on_bbox=False`; `True` in the variant; FCOS repo "improvements").
    #[config(default = false)]
    pub norm_on_bbox: bool,
    /// Put the centerness branch on the regression tower (mmdet `centerness_on_reg=False`;
    /// `True` in the variant; tianzhi0549/FCOS#89).
    #[config(default = false)]
    pub centerness_on_reg: bool,
    /// Offset of each point inside its cell, in strides; `None` is mmdet's 0.5 (the cell
    /// centre, `MlvlPointGenerator(offset=0.5)`). torchvision's FCOS puts its points on
    /// the cell corner (anchor centres `x · stride`): 0.
    #[config(default = "None")]
    pub point_offset: Option<f32>,
    /// Point-to-GT assignment: regression ranges and centre sampling (mmdet `FCOSHead`
    /// defaults; see [`FcosAssignerConfig`]).
    #[config(default = "FcosAssignerConfig::new()")]
    pub assigner: FcosAssignerConfig,
    /// Classification loss (config `FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25,
    /// loss_weight=1.0)`), averaged over the positives.
    #[config(default = "FocalLossConfig::new()")]
    pub loss_cls: FocalLossConfig,
    /// Box loss (config `IoULoss(loss_weight=1.0)`, mode `log`), weighted by the
    /// centerness targets and averaged by their sum.
    #[config(default = "FcosBoxLossConfig::Iou(IouLossConfig::new())")]
    pub loss_bbox: FcosBoxLossConfig,
    /// Weight of the centerness BCE (config `CrossEntropyLoss(use_sigmoid=True,
    /// loss_weight=1.0)`), averaged over the positives.
    #[config(default = 1.0)]
    pub loss_centerness_weight: f32,
    /// Prior probability of the classification bias (mmdet `bias_prob=0.01`; RetinaNet
    /// paper Sec. 4.1, π = 0.01).
    #[config(default = 0.01)]
    pub prior_prob: f32,
    /// Std of the Gaussian init of every head conv, biases 0 (mmdet `normal_init(std=0.01)`;
    /// RetinaNet paper Sec. 4.1).
    #[config(default = 0.01)]
    pub init_std: f64,
}

impl FcosHeadConfig {
    /// `fcos_r50-caffe_fpn_gn-head_1x_coco` on a 256-channel FPN (P3–P7).
    pub fn coco(num_classes: usize) -> Self {
        Self::new(num_classes, 256)
    }

    /// `fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco`: centre
    /// sampling (radius 1.5), `norm_on_bbox`, `centerness_on_reg`, tower conv biases and
    /// `GIoULoss(loss_weight=1.0)`.
    pub fn coco_center_normbbox_centeronreg_giou(num_classes: usize) -> Self {
        Self::coco(num_classes)
            .with_assigner(FcosAssignerConfig::new().with_center_sampling(true))
            .with_norm_on_bbox(true)
            .with_centerness_on_reg(true)
            .with_conv_bias(true)
            .with_loss_bbox(FcosBoxLossConfig::Giou(
                GiouLossConfig::new().with_loss_weight(1.0),
            ))
    }

    /// The built-in 128×128 synthetic data (`sqrt(area)`: 55% 5.5–16 px, 25% 16–32, 17%
    /// 32–72, 3% 96–118) on a three-level neck of `feat_channels` channels. Changes from [`Self::coco`], each
    /// for a reason:
    pub fn synth_128(num_classes: usize, feat_channels: usize) -> Self {
        Self::new(num_classes, feat_channels)
            .with_feat_channels(feat_channels)
            // CPU budget: two blocks per tower instead of four.
            .with_stacked_convs(2)
            // P3–P5 only: at 128 px P6/P7 would be 2×2 and 1×1 maps for objects that
            // never need them.
            .with_strides(vec![8, 16, 32])
            // GN needs `groups | channels`: 32 groups when possible, else the largest
            // divisor of C below 32.
            .with_norm(NormKind::Group(group_norm_groups(feat_channels)))
            // Objects are ~6× smaller than on COCO (128 vs ~800 px images), so the
            // per-level ranges of max(l, t, r, b) shrink from 8·stride (64, 128, …) to
            // 2·stride: P3 ≤ 16 px (objects up to ~32 px), P4 16–32, P5 beyond.
            .with_assigner(FcosAssignerConfig::new().with_regress_ranges(vec![
                [-1.0, 16.0],
                [16.0, 32.0],
                [32.0, FCOS_INF],
            ]))
    }

    /// Builds the head.
    ///
    /// # Panics
    /// If the number of regression ranges differs from the number of strides, or the GN
    /// group count does not divide `feat_channels` (configuration errors).
    pub fn init(&self, device: &Device) -> FcosHead {
        assert_eq!(
            self.assigner.regress_ranges.len(),
            self.strides.len(),
            "FCOS head: {} regress ranges for {} strides",
            self.assigner.regress_ranges.len(),
            self.strides.len()
        );
        if let NormKind::Group(g) = self.norm {
            assert!(
                g > 0 && self.feat_channels.is_multiple_of(g),
                "FCOS head: GN with {g} groups cannot split {} channels",
                self.feat_channels
            );
        }
        let make_tower = || {
            let convs = tower(
                self.in_channels,
                self.feat_channels,
                self.stacked_convs,
                self.norm,
                self.init_std,
                device,
            );
            zero_tower_biases(convs, self.conv_bias, device)
        };
        let prior_bias = bias_init_with_prob(self.prior_prob);
        FcosHead {
            cls_convs: make_tower(),
            reg_convs: make_tower(),
            conv_cls: output_conv(
                self.feat_channels,
                self.num_classes,
                self.init_std,
                prior_bias,
                device,
            ),
            conv_reg: output_conv(self.feat_channels, 4, self.init_std, 0.0, device),
            conv_centerness: output_conv(self.feat_channels, 1, self.init_std, 0.0, device),
            scales: level_scales(self.strides.len(), device),
            config: self.clone(),
        }
    }
}

/// The FCOS head (parameter names follow mmdet's state dict: `cls_convs.{i}.conv`,
/// `reg_convs.{i}.conv`, `conv_cls`, `conv_reg`, `conv_centerness`, `scales.{i}.scale`;
/// the GN of a tower block is `norm` here, `gn` in mmdet).
#[derive(Module, Debug)]
pub struct FcosHead {
    pub cls_convs: Vec<ConvNormAct>,
    pub reg_convs: Vec<ConvNormAct>,
    pub conv_cls: Conv2d,
    pub conv_reg: Conv2d,
    pub conv_centerness: Conv2d,
    pub scales: Vec<Scale>,
    #[module(skip)]
    pub config: FcosHeadConfig,
}

impl FcosHead {
    /// One [`HeadLevel`] per neck level.
    ///
    /// # Shapes
    /// - `neck[l].tensor`: `[B, C_in, H_l, W_l]`
    /// - `cls_logits`: `[B, K, H_l, W_l]`; `box_regression`: `[B, 4, H_l, W_l]` distances
    ///   `(l, t, r, b)` in input pixels; `centerness`: `[B, 1, H_l, W_l]` logits;
    ///   `cls_tower` / `reg_tower`: `[B, feat_channels, H_l, W_l]`
    ///
    /// # Panics
    /// If the levels' number, strides or channels differ from the configuration.
    pub fn forward(&self, neck: &[FeatureMap]) -> Vec<HeadLevel> {
        check_neck("FCOS", neck, &self.config.strides, self.config.in_channels);
        neck.iter()
            .enumerate()
            .map(|(l, f)| {
                let (cls_feat, cls_tower) = run_tower(&self.cls_convs, f.tensor.clone());
                let (reg_feat, reg_tower) = run_tower(&self.reg_convs, f.tensor.clone());
                let centerness = if self.config.centerness_on_reg {
                    self.conv_centerness.forward(reg_feat.clone())
                } else {
                    self.conv_centerness.forward(cls_feat.clone())
                };
                let reg = self.scales[l].forward(self.conv_reg.forward(reg_feat));
                let box_regression = if self.config.norm_on_bbox {
                    relu(reg).mul_scalar(f.stride as f32)
                } else {
                    reg.exp()
                };
                HeadLevel {
                    stride: f.stride,
                    cls_logits: self.conv_cls.forward(cls_feat),
                    box_regression,
                    centerness: Some(centerness),
                    cls_tower,
                    reg_tower,
                }
            })
            .collect()
    }

    /// The points of every level (mmdet `MlvlPointGenerator`, offset 0.5: the centre of
    /// each cell), for the levels' map sizes and strides.
    pub fn priors(&self, levels: &[HeadLevel]) -> Priors {
        let mut points =
            PointGeneratorConfig::new().with_strides(levels.iter().map(|l| l.stride).collect());
        if let Some(offset) = self.config.point_offset {
            points = points.with_offset(offset);
        }
        points.grid_priors(&level_sizes(levels))
    }

    /// FCOS assignment of every image (see [`crate::assigners::fcos`]).
    pub fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment {
        self.config.assigner.init().assign(priors, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heads::tests::random_neck;
    use burn::module::Param;
    use burn::tensor::{Tensor, TensorData};

    fn neck(device: &Device, channels: usize, sizes: &[(usize, usize, usize)]) -> Vec<FeatureMap> {
        random_neck(device, 2, channels, sizes)
    }

    fn small() -> FcosHeadConfig {
        FcosHeadConfig::synth_128(3, 16).with_stacked_convs(2)
    }

    #[test]
    fn forward_shapes_towers_and_priors() {
        let device = Device::flex();
        let head = small().init(&device);
        let levels = head.forward(&neck(&device, 16, &[(8, 4, 6), (16, 2, 3), (32, 1, 2)]));
        assert_eq!(levels.len(), 3);
        let l0 = &levels[0];
        assert_eq!(l0.cls_logits.dims(), [2, 3, 4, 6]);
        assert_eq!(l0.box_regression.dims(), [2, 4, 4, 6]);
        assert_eq!(l0.centerness.as_ref().map(|c| c.dims()), Some([2, 1, 4, 6]));
        assert_eq!(l0.cls_tower.dims(), [2, 16, 4, 6]);
        assert_eq!(l0.reg_tower.dims(), [2, 16, 4, 6]);
        assert_eq!(levels[2].stride, 32);
        // exp: distances are positive. With N(0, 0.01) weights and zero bias they start
        // near exp(0) = 1 px.
        let d: Vec<f32> = l0
            .box_regression
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(d.iter().all(|&v| v > 0.0 && (v - 1.0).abs() < 0.5), "{d:?}");
        // The classification bias is the prior logit: sigmoid(bias) = 0.01.
        let b: Vec<f32> = head
            .conv_cls
            .bias
            .as_ref()
            .expect("bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(
            b.iter().all(|&v| (v - (-(99f32).ln())).abs() < 1e-5),
            "{b:?}"
        );
        let p = head.priors(&levels);
        assert_eq!(p.len(), 24 + 6 + 2);
        assert_eq!(p.level_offsets, vec![0, 24, 30, 32]);
        // Level 1, (y=1, x=2): index 24 + 1*3 + 2, point ((2+0.5)*16, (1+0.5)*16).
        assert_eq!(p.centers[29], [40.0, 24.0]);
    }

    #[test]
    fn norm_on_bbox_gives_relu_times_stride() {
        // A head whose regression conv outputs exactly -1 and 2 channels-wise: set the
        // conv's weight to 0 and its bias to (-1, 2, 0.5, 3). With norm_on_bbox the
        // distances are relu(b) * stride = (0, 2s, 0.5s, 3s); without, exp(b).
        let device = Device::flex();
        let mut head = small().with_norm_on_bbox(true).init(&device);
        head.conv_reg.weight = head.conv_reg.weight.clone().map(|w| w.zeros_like());
        let bias = Tensor::<1>::from_data(TensorData::from([-1.0f32, 2.0, 0.5, 3.0]), &device);
        head.conv_reg.bias = Some(Param::from_tensor(bias));
        let levels = head.forward(&neck(&device, 16, &[(8, 1, 1), (16, 1, 1), (32, 1, 1)]));
        let d: Vec<f32> = levels[1]
            .box_regression
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert_eq!(d, vec![0.0, 32.0, 8.0, 48.0, 0.0, 32.0, 8.0, 48.0]);
        head.config.norm_on_bbox = false;
        let levels = head.forward(&neck(&device, 16, &[(8, 1, 1), (16, 1, 1), (32, 1, 1)]));
        let d: Vec<f32> = levels[0]
            .box_regression
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let e = [(-1f32).exp(), 2f32.exp(), 0.5f32.exp(), 3f32.exp()];
        for (a, b) in d.iter().zip(e.iter().chain(e.iter())) {
            assert!((a - b).abs() < 1e-4, "{d:?}");
        }
    }

    #[test]
    fn presets_are_consistent() {
        let c = FcosHeadConfig::coco(80);
        assert_eq!(
            (c.in_channels, c.feat_channels, c.stacked_convs),
            (256, 256, 4)
        );
        assert_eq!(c.strides, vec![8, 16, 32, 64, 128]);
        assert_eq!(c.assigner.regress_ranges.len(), 5);
        let v = FcosHeadConfig::coco_center_normbbox_centeronreg_giou(80);
        assert!(v.assigner.center_sampling && v.norm_on_bbox && v.centerness_on_reg && v.conv_bias);
        assert!(matches!(v.loss_bbox, FcosBoxLossConfig::Giou(ref g) if g.loss_weight == 1.0));
        let s = FcosHeadConfig::synth_128(8, 48);
        assert_eq!(s.norm, NormKind::Group(24));
        assert_eq!(s.assigner.regress_ranges.len(), s.strides.len());
        // Round-trips through JSON (experiment files, resolved configs).
        let json = serde_json::to_string(&v).expect("serialisable");
        let back: FcosHeadConfig = serde_json::from_str(&json).expect("deserialisable");
        assert!(
            back.assigner.center_sampling && matches!(back.loss_bbox, FcosBoxLossConfig::Giou(_))
        );
    }

    #[test]
    fn conv_bias_adds_a_zero_bias_to_normed_tower_convs() {
        let device = Device::flex();
        assert!(small().init(&device).cls_convs[0].conv.bias.is_none());
        let head = small().with_conv_bias(true).init(&device);
        let b: Vec<f32> = head.reg_convs[1]
            .conv
            .bias
            .as_ref()
            .expect("bias")
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(b.len() == 16 && b.iter().all(|&v| v == 0.0));
    }

    #[test]
    #[should_panic(expected = "expected 3 neck levels")]
    fn wrong_level_count_panics() {
        let device = Device::flex();
        let head = small().init(&device);
        let _ = head.forward(&neck(&device, 16, &[(8, 2, 2)]));
    }
}
