//! Feature Pyramid Network (Lin et al., "Feature Pyramid Networks for Object
//! Detection", arXiv:1612.03144) as mmdetection's `FPN` neck
//! (`mmdet/models/necks/fpn.py`), with extra stride-2 3x3 convs for P6/P7 as RetinaNet
//! (Lin et al., arXiv:1708.02002) and FCOS/ATSS/GFL configure them.
//!
//! `lateral_convs[i]` 1x1 on every input; top-down: each lateral gets the coarser
//! (already merged) lateral added after nearest upsampling *to its own size* (mmdet
//! `F.interpolate(size=prev_shape, mode='nearest')`, so odd sizes work); `fpn_convs[i]`
//! 3x3 on each merged lateral; then `fpn_convs[n..]` stride-2 3x3 extra levels.
//! No norm, no activation (mmdet defaults `norm_cfg=None`, `act_cfg=None`).
//!
//! Parameter names follow mmdet's keys except that mmdet's `ConvModule` adds a `.conv`
//! level: `lateral_convs.0.conv.weight` is `lateral_convs.0.weight` here. The backbone
//! hands over only the used stages, so mmdet's `start_level=1` is implicit and the
//! indices agree.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::output::{FeatureMap, FeatureSpec};

/// What the first extra (stride-2 conv) level is computed from (mmdet
/// `add_extra_convs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraFrom {
    /// The deepest backbone input, C5 (`'on_input'`: RetinaNet).
    Input,
    /// The deepest FPN output, P5 (`'on_output'`: FCOS, ATSS, GFL).
    Output,
}

/// An FPN neck.
#[derive(Config, Debug, PartialEq)]
pub struct FpnConfig {
    /// Channels of every output level (mmdet configs: `out_channels=256`).
    #[config(default = 256)]
    pub out_channels: usize,
    /// Output levels; those beyond the inputs are extra stride-2 convs (mmdet configs:
    /// `num_outs=5`, P3-P7 from C3-C5).
    #[config(default = 5)]
    pub num_outs: usize,
    /// Source of the first extra level. mmdet: RetinaNet `add_extra_convs='on_input'`;
    /// FCOS, ATSS and GFL `'on_output'` (default here, GFL being the LD/GFL baseline).
    #[config(default = "ExtraFrom::Output")]
    pub extra_from: ExtraFrom,
    /// ReLU before every extra conv after the first (P7 = conv(relu(P6))). mmdet default
    /// `False`; FCOS configs `True`.
    #[config(default = false)]
    pub relu_before_extra_convs: bool,
}

impl FpnConfig {
    /// mmdet `retinanet_r50_fpn`: 256 channels, P3-P7, extra levels from C5.
    pub fn retinanet() -> Self {
        Self::new().with_extra_from(ExtraFrom::Input)
    }

    /// mmdet `fcos_r50_caffe_fpn_gn-head_1x`: extra levels from P5, ReLU before P7.
    pub fn fcos() -> Self {
        Self::new()
            .with_extra_from(ExtraFrom::Output)
            .with_relu_before_extra_convs(true)
    }

    /// mmdet `atss_r50_fpn_1x` and `gfl_r50_fpn_1x`: extra levels from P5.
    pub fn gfl() -> Self {
        Self::new().with_extra_from(ExtraFrom::Output)
    }

    /// Channels and stride of every output level, fine to coarse.
    ///
    /// # Panics
    /// If `in_specs` is empty or `num_outs < in_specs.len()` (mmdet asserts the same).
    pub fn out_specs(&self, in_specs: &[FeatureSpec]) -> Vec<FeatureSpec> {
        self.check(in_specs);
        let last = in_specs[in_specs.len() - 1].stride;
        (0..self.num_outs)
            .map(|i| FeatureSpec {
                channels: self.out_channels,
                stride: match in_specs.get(i) {
                    Some(s) => s.stride,
                    None => last << (i + 1 - in_specs.len()),
                },
            })
            .collect()
    }

    fn check(&self, in_specs: &[FeatureSpec]) {
        assert!(!in_specs.is_empty(), "FPN needs at least one input level");
        assert!(
            self.num_outs >= in_specs.len(),
            "FPN num_outs {} is less than its {} inputs",
            self.num_outs,
            in_specs.len()
        );
        assert!(self.out_channels > 0, "FPN out_channels must be positive");
    }

    /// # Panics
    /// See [`out_specs`](Self::out_specs).
    pub fn init(&self, in_specs: &[FeatureSpec], device: &Device) -> Fpn {
        self.check(in_specs);
        let c = self.out_channels;
        let lateral_convs = in_specs
            .iter()
            .map(|s| conv(s.channels, c, 1, 1, device))
            .collect();
        let mut fpn_convs: Vec<Conv2d> =
            in_specs.iter().map(|_| conv(c, c, 3, 1, device)).collect();
        for i in in_specs.len()..self.num_outs {
            let in_channels = match (i == in_specs.len(), self.extra_from) {
                (true, ExtraFrom::Input) => in_specs[in_specs.len() - 1].channels,
                _ => c,
            };
            fpn_convs.push(conv(in_channels, c, 3, 2, device));
        }
        Fpn {
            lateral_convs,
            fpn_convs,
            extra_from: self.extra_from,
            relu_before_extra_convs: self.relu_before_extra_convs,
            in_specs: in_specs.to_vec(),
            out_specs: self.out_specs(in_specs),
        }
    }
}

/// mmdet `FPN`.
#[derive(Module, Debug)]
pub struct Fpn {
    /// 1x1, one per input level.
    pub lateral_convs: Vec<Conv2d>,
    /// 3x3 output convs, one per input level, then the stride-2 extra convs.
    pub fpn_convs: Vec<Conv2d>,
    #[module(skip)]
    pub extra_from: ExtraFrom,
    pub relu_before_extra_convs: bool,
    #[module(skip)]
    pub in_specs: Vec<FeatureSpec>,
    #[module(skip)]
    pub out_specs: Vec<FeatureSpec>,
}

impl Fpn {
    /// Pyramid levels, fine to coarse.
    ///
    /// # Shapes
    /// Inputs `[B, C_i, H_i, W_i]` (the specs given to `init`) -> the first `n` outputs
    /// `[B, out_channels, H_i, W_i]`, each extra level
    /// `[B, out_channels, ceil(H / 2), ceil(W / 2)]` of the previous one.
    pub fn forward(&self, inputs: Vec<FeatureMap>) -> Vec<FeatureMap> {
        let n = self.in_specs.len();
        let specs: Vec<FeatureSpec> = inputs.iter().map(FeatureMap::spec).collect();
        assert_eq!(
            specs, self.in_specs,
            "FPN inputs: expected specs {:?}, got {:?}",
            self.in_specs, specs
        );
        let deepest_input = inputs[n - 1].tensor.clone();
        let laterals: Vec<Tensor<4>> = inputs
            .into_iter()
            .zip(&self.lateral_convs)
            .map(|(f, conv)| conv.forward(f.tensor))
            .collect();
        let mut outs: Vec<Tensor<4>> = merge_top_down(laterals)
            .into_iter()
            .zip(&self.fpn_convs)
            .map(|(l, conv)| conv.forward(l))
            .collect();
        for i in n..self.fpn_convs.len() {
            let source = if i == n {
                match self.extra_from {
                    ExtraFrom::Input => deepest_input.clone(),
                    ExtraFrom::Output => outs[n - 1].clone(),
                }
            } else if self.relu_before_extra_convs {
                relu(outs[i - 1].clone())
            } else {
                outs[i - 1].clone()
            };
            outs.push(self.fpn_convs[i].forward(source));
        }
        outs.into_iter()
            .zip(&self.out_specs)
            .map(|(tensor, spec)| FeatureMap {
                tensor,
                stride: spec.stride,
            })
            .collect()
    }

    /// Channels and stride of every output level, fine to coarse.
    pub fn out_specs(&self) -> Vec<FeatureSpec> {
        self.out_specs.clone()
    }
}

/// The top-down pathway: from the coarsest level down, each level gets the (already
/// merged) next-coarser level added after nearest upsampling to its own size
/// (`F.interpolate(size=prev_shape, mode='nearest')`: source index
/// `floor(dst * in / out)`, so odd sizes such as 3 -> 5 work).
///
/// # Shapes
/// `[B, C, H_i, W_i]` per level, fine to coarse -> the same shapes.
fn merge_top_down(mut laterals: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
    for i in (1..laterals.len()).rev() {
        let [_, _, h, w] = laterals[i - 1].dims();
        let up = interpolate(
            laterals[i].clone(),
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]),
        );
        laterals[i - 1] = laterals[i - 1].clone() + up;
    }
    laterals
}

/// A biased `k x k` conv, padding `k / 2`, mmdet's FPN init (`xavier_init(distribution=
/// 'uniform')`: Xavier-uniform weights, zero bias).
fn conv(
    in_channels: usize,
    out_channels: usize,
    k: usize,
    stride: usize,
    device: &Device,
) -> Conv2d {
    let p = k / 2;
    let mut conv = Conv2dConfig::new([in_channels, out_channels], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device);
    conv.bias = Some(Initializer::Zeros.init([out_channels], device));
    conv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{BackboneConfig, ResNetConfig, SmallResNetConfig, num_parameters};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    fn hw(maps: &[FeatureMap]) -> Vec<[usize; 2]> {
        maps.iter()
            .map(|m| {
                let [_, _, h, w] = m.tensor.dims();
                [h, w]
            })
            .collect()
    }

    /// Backbone + FPN on a `2 x 3 x h x w` batch.
    fn run(
        backbone: BackboneConfig,
        fpn: FpnConfig,
        h: usize,
        w: usize,
    ) -> (Vec<FeatureMap>, Vec<FeatureSpec>) {
        let device = Device::flex();
        let in_specs = backbone.out_specs();
        let neck = fpn.init(&in_specs, &device);
        let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        let out = neck.forward(backbone.init(&device).forward(x));
        assert_eq!(neck.out_specs(), fpn.out_specs(&in_specs));
        (out, fpn.out_specs(&in_specs))
    }

    #[test]
    fn p3_to_p7_for_64x96() {
        let backbone = BackboneConfig::SmallResNet(SmallResNetConfig::student_128());
        let (out, specs) = run(backbone, FpnConfig::new().with_out_channels(32), 64, 96);
        assert_eq!(hw(&out), [[8, 12], [4, 6], [2, 3], [1, 2], [1, 1]]);
        assert_eq!(out.iter().map(FeatureMap::spec).collect::<Vec<_>>(), specs);
        let strides: Vec<usize> = specs.iter().map(|s| s.stride).collect();
        assert_eq!(strides, [8, 16, 32, 64, 128]);
        assert!(specs.iter().all(|s| s.channels == 32));
    }

    #[test]
    fn odd_input_65x97_through_resnet18_and_every_preset() {
        // conv1 7x7/2: 65 -> 33, 97 -> 49; maxpool: 17, 25; layer2-4: 9x13, 5x7, 3x4;
        // P6, P7 (3x3/2, pad 1): 2x2, 1x1. Upsampling 3x4 -> 5x7 and 5x7 -> 9x13 is
        // non-integer.
        for fpn in [FpnConfig::retinanet(), FpnConfig::fcos(), FpnConfig::gfl()] {
            let backbone = BackboneConfig::ResNet(ResNetConfig::resnet18());
            let (out, specs) = run(backbone, fpn.with_out_channels(16), 65, 97);
            assert_eq!(hw(&out), [[9, 13], [5, 7], [3, 4], [2, 2], [1, 1]]);
            assert_eq!(out.iter().map(FeatureMap::spec).collect::<Vec<_>>(), specs);
        }
    }

    #[test]
    fn extra_levels_read_c5_or_p5() {
        let device = Device::flex();
        let in_specs = ResNetConfig::resnet50().arch().out_specs();
        let on_input = FpnConfig::retinanet().init(&in_specs, &device);
        let on_output = FpnConfig::gfl().init(&in_specs, &device);
        assert_eq!(on_input.fpn_convs[3].weight.dims(), [256, 2048, 3, 3]);
        assert_eq!(on_output.fpn_convs[3].weight.dims(), [256, 256, 3, 3]);
        assert_eq!(on_input.fpn_convs[4].weight.dims(), [256, 256, 3, 3]);
        // mmdet FPN on ResNet-50 C3-C5: laterals (512+1024+2048)*256 + 3*256 = 918,272;
        // three 3x3 outputs 3 * (256*256*9 + 256) = 1,770,240; P7 590,080; P6 from C5
        // 2048*256*9 + 256 = 4,718,848 (RetinaNet) or from P5 590,080 (GFL).
        assert_eq!(
            num_parameters(&on_input),
            918_272 + 1_770_240 + 4_718_848 + 590_080
        );
        assert_eq!(
            num_parameters(&on_output),
            918_272 + 1_770_240 + 590_080 + 590_080
        );
        let biases_zero = on_input
            .fpn_convs
            .iter()
            .filter_map(|c| c.bias.as_ref())
            .all(|b| b.val().abs().max().into_scalar::<f32>() == 0.0);
        assert!(biases_zero, "mmdet xavier_init zeroes biases");
    }

    #[test]
    fn relu_before_extra_convs_changes_only_p7() {
        let device = Device::flex();
        let in_specs = SmallResNetConfig::student_128().out_specs();
        let mut fpn = FpnConfig::gfl()
            .with_out_channels(8)
            .init(&in_specs, &device);
        let inputs: Vec<FeatureMap> = in_specs
            .iter()
            .zip([[8, 8], [4, 4], [2, 2]])
            .map(|(s, [h, w])| FeatureMap {
                tensor: Tensor::random(
                    [1, s.channels, h, w],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                ),
                stride: s.stride,
            })
            .collect();
        let plain = fpn.forward(inputs.clone());
        fpn.relu_before_extra_convs = true;
        let relu = fpn.forward(inputs);
        let max_diff = |a: &FeatureMap, b: &FeatureMap| {
            (a.tensor.clone() - b.tensor.clone())
                .abs()
                .max()
                .into_scalar::<f32>()
        };
        for level in 0..4 {
            assert_eq!(max_diff(&plain[level], &relu[level]), 0.0, "P{}", level + 3);
        }
        assert!(max_diff(&plain[4], &relu[4]) > 0.0, "P7 = conv(relu(P6))");
    }

    #[test]
    fn top_down_upsamples_nearest_to_the_finer_size() {
        let device = Device::flex();
        let fine = Tensor::<4>::zeros([1, 1, 3, 5], &device);
        let coarse = Tensor::<4>::from_floats([[[[1.0f32, 2.0], [3.0, 4.0]]]], &device);
        let merged = merge_top_down(vec![fine, coarse]);
        // torch `F.interpolate(size=(3, 5), mode='nearest')`: rows floor(i * 2/3) = 0, 0, 1;
        // columns floor(j * 2/5) = 0, 0, 0, 1, 1.
        let expected = TensorData::from([[[
            [1.0f32, 1.0, 1.0, 2.0, 2.0],
            [1.0, 1.0, 1.0, 2.0, 2.0],
            [3.0, 3.0, 3.0, 4.0, 4.0],
        ]]]);
        merged[0]
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&expected, Tolerance::default());
    }

    #[test]
    #[should_panic(expected = "FPN inputs: expected specs")]
    fn wrong_inputs_are_a_contract_violation() {
        let device = Device::flex();
        let in_specs = [
            FeatureSpec {
                channels: 4,
                stride: 8,
            },
            FeatureSpec {
                channels: 8,
                stride: 16,
            },
        ];
        let fpn = FpnConfig::new()
            .with_out_channels(4)
            .init(&in_specs, &device);
        let map = |c, s| FeatureMap {
            tensor: Tensor::zeros([1, c, 4, 4], &device),
            stride: s,
        };
        fpn.forward(vec![map(4, 8), map(4, 16)]);
    }
}
