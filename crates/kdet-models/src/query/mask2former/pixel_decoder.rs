//! Mask2Former's pixel decoders (`modeling/pixel_decoder/`): per-pixel embeddings at the
//! finest backbone stride and the multi-scale memory of the transformer decoder.
//!
//! - [`FpnPixelDecoder`] (`fpn.py`, `BasePixelDecoder`): from the coarsest stage down,
//!   `y = output_conv(x)` at the top, then `y = output_conv(lateral(x) + nearest(y))`
//!   (1×1 lateral conv + GN, 3×3 output conv + GN + ReLU); a 3×3 `mask_features` conv on
//!   the finest output.
//! - [`MsDeformAttnPixelDecoder`] (`msdeformattn.py`, the official default): the
//!   `num_feature_levels` coarsest stages projected (1×1 conv + GN), flattened, and encoded
//!   jointly by multi-scale deformable self-attention layers (2-D sine positions plus a
//!   level embedding on the queries, reference points at the cell centres, post-norm, FFN);
//!   then the same FPN step for the finer stages with *bilinear* upsampling; a 1×1
//!   `mask_features` conv.
//!
//! Both return the `num_feature_levels` coarsest outputs, coarsest first, as the decoder's
//! memory, and all outputs fine to coarse as the `neck` tap. Parameter names follow the
//! official modules (`adapter_{i}` / `layer_{i}` are `lateral_convs` / `output_convs`,
//! fine to coarse; the official deformable encoder's `transformer.encoder.layers.{i}` is
//! `layers.{i}`, its `linear1/linear2/norm2` are `ffn.{linear1,linear2,norm}`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::norm::NormalizationConfig;
use burn::nn::{
    Embedding, EmbeddingConfig, GroupNormConfig, Initializer, LayerNorm, LayerNormConfig,
    PaddingConfig2d,
};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::layers::ConvNormAct;
use crate::ops::deformable::{MsDeformAttn, MsDeformAttnConfig};
use crate::ops::transformer::{FfnLayer, FfnLayerConfig, SinePositionEncodingConfig};
use crate::output::{FeatureMap, FeatureSpec};

/// The deformable encoder of [`MsDeformAttnPixelDecoder`] (`MSDeformAttnPixelDecoder`'s
/// hard-coded and configured values).
#[derive(Config, Debug, PartialEq)]
pub struct MsDeformAttnEncoderConfig {
    /// Encoder layers (`SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS 6`).
    #[config(default = 6)]
    pub num_layers: usize,
    /// Attention heads (`transformer_nheads = 8`).
    #[config(default = 8)]
    pub n_heads: usize,
    /// Sampling points per head and level (`enc_n_points = 4`).
    #[config(default = 4)]
    pub n_points: usize,
    /// FFN hidden width (`transformer_dim_feedforward = 1024`).
    #[config(default = 1024)]
    pub dim_feedforward: usize,
}

/// Which pixel decoder (`SEM_SEG_HEAD.PIXEL_DECODER_NAME`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PixelDecoderConfig {
    /// `BasePixelDecoder`: the FPN alone.
    Fpn,
    /// `MSDeformAttnPixelDecoder`: the deformable encoder, then the FPN step.
    MsDeformAttn(MsDeformAttnEncoderConfig),
}

// As `BackboneConfig`: burn's `Config` derive drops serde's enum attributes.
impl Config for PixelDecoderConfig {}

/// The widths shared by both pixel decoders (`SEM_SEG_HEAD.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelDecoderWidths {
    /// `CONVS_DIM`.
    pub conv_dim: usize,
    /// `MASK_DIM`.
    pub mask_dim: usize,
    /// GroupNorm groups (`NORM "GN"`: 32).
    pub norm_groups: usize,
    /// Levels the transformer decoder reads (3).
    pub num_feature_levels: usize,
}

/// `c2_xavier_fill` (Kaiming uniform with `a = 1`: bound `sqrt(3 / fan_in)`, bias 0) or,
/// for the deformable encoder's input projections, Xavier-uniform with bias 0.
fn conv(cin: usize, cout: usize, k: usize, bias: bool, xavier: bool, device: &Device) -> Conv2d {
    let p = k / 2;
    let initializer = if xavier {
        Initializer::XavierUniform { gain: 1.0 }
    } else {
        Initializer::KaimingUniform {
            gain: 1.0,
            fan_out_only: false,
        }
    };
    let mut conv = Conv2dConfig::new([cin, cout], [k, k])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(bias)
        .with_initializer(initializer)
        .init(device);
    if bias {
        conv.bias = Some(Initializer::Zeros.init([cout], device));
    }
    conv
}

fn conv_gn(
    cin: usize,
    k: usize,
    relu: bool,
    bias: bool,
    widths: PixelDecoderWidths,
    device: &Device,
) -> ConvNormAct {
    let c = widths.conv_dim;
    ConvNormAct {
        conv: conv(cin, c, k, bias, bias, device),
        norm: Some(
            NormalizationConfig::Group(GroupNormConfig::new(widths.norm_groups, c)).init(device),
        ),
        relu,
    }
}

impl PixelDecoderConfig {
    /// Checks the settings a config file can get wrong.
    pub fn validate(&self, conv_dim: usize) -> Result<(), String> {
        match self {
            Self::Fpn => Ok(()),
            Self::MsDeformAttn(e) => {
                if e.n_heads == 0 || !conv_dim.is_multiple_of(e.n_heads) {
                    Err("pixel_decoder.n_heads must divide conv_dim".into())
                } else if e.n_points == 0 {
                    Err("pixel_decoder.n_points must be at least 1".into())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Builds the decoder for backbone stages `specs` (fine to coarse).
    pub fn init(
        &self,
        specs: &[FeatureSpec],
        widths: PixelDecoderWidths,
        device: &Device,
    ) -> PixelDecoder {
        let c = widths.conv_dim;
        let n = specs.len();
        match self {
            Self::Fpn => {
                let last = n - 1;
                PixelDecoder::Fpn(FpnPixelDecoder {
                    lateral_convs: specs[..last]
                        .iter()
                        .map(|s| conv_gn(s.channels, 1, false, false, widths, device))
                        .collect(),
                    output_convs: specs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            let cin = if i == last { s.channels } else { c };
                            conv_gn(cin, 3, true, false, widths, device)
                        })
                        .collect(),
                    mask_features: conv(c, widths.mask_dim, 3, true, false, device),
                    num_feature_levels: widths.num_feature_levels,
                })
            }
            Self::MsDeformAttn(e) => {
                let levels = widths.num_feature_levels;
                let fpn = n - levels;
                let attention = MsDeformAttnConfig::new(c, levels)
                    .with_n_heads(e.n_heads)
                    .with_n_points(e.n_points);
                PixelDecoder::MsDeformAttn(MsDeformAttnPixelDecoder {
                    // Coarsest first, as the official `input_proj` list.
                    input_proj: specs[fpn..]
                        .iter()
                        .rev()
                        .map(|s| conv_gn(s.channels, 1, false, true, widths, device))
                        .collect(),
                    level_embed: EmbeddingConfig::new(levels, c).init(device),
                    layers: (0..e.num_layers)
                        .map(|_| MsDeformEncoderLayer {
                            self_attn: attention.init(device),
                            norm1: LayerNormConfig::new(c).init(device),
                            ffn: FfnLayerConfig::new(c, e.dim_feedforward).init(device),
                        })
                        .collect(),
                    lateral_convs: specs[..fpn]
                        .iter()
                        .map(|s| conv_gn(s.channels, 1, false, false, widths, device))
                        .collect(),
                    output_convs: (0..fpn)
                        .map(|_| conv_gn(c, 3, true, false, widths, device))
                        .collect(),
                    mask_features: conv(c, widths.mask_dim, 1, true, false, device),
                })
            }
        }
    }
}

/// A pixel decoder of either kind.
#[derive(Module, Debug)]
pub enum PixelDecoder {
    Fpn(FpnPixelDecoder),
    MsDeformAttn(MsDeformAttnPixelDecoder),
}

/// What a pixel decoder returns.
#[derive(Debug, Clone)]
pub struct PixelDecoderOutput {
    /// `[B, mask_dim, H_0, W_0]` at the finest level's stride.
    pub mask_features: FeatureMap,
    /// The decoder's memory: the `num_feature_levels` coarsest outputs, coarsest first.
    pub multi_scale: Vec<FeatureMap>,
    /// Every level's output, fine to coarse (the `neck` tap).
    pub outputs: Vec<FeatureMap>,
}

impl PixelDecoder {
    /// # Shapes
    /// `features`: the backbone stages fine to coarse, `[B, C_l, H_l, W_l]`.
    pub fn forward(&self, features: &[FeatureMap]) -> PixelDecoderOutput {
        match self {
            PixelDecoder::Fpn(d) => d.forward(features),
            PixelDecoder::MsDeformAttn(d) => d.forward(features),
        }
    }
}

/// The FPN pixel decoder (`BasePixelDecoder`).
#[derive(Module, Debug)]
pub struct FpnPixelDecoder {
    /// 1×1 conv + GN of every level but the coarsest, fine to coarse.
    pub lateral_convs: Vec<ConvNormAct>,
    /// 3×3 conv + GN + ReLU of every level, fine to coarse (the coarsest reads the backbone
    /// stage directly).
    pub output_convs: Vec<ConvNormAct>,
    /// 3×3 conv on the finest output: the per-pixel embeddings.
    pub mask_features: Conv2d,
    #[module(skip)]
    pub num_feature_levels: usize,
}

/// `(multi_scale, outputs)` from the outputs collected coarsest first.
fn split_outputs(
    coarse_first: Vec<FeatureMap>,
    levels: usize,
) -> (Vec<FeatureMap>, Vec<FeatureMap>) {
    let multi_scale = coarse_first[..levels].to_vec();
    let mut outputs = coarse_first;
    outputs.reverse();
    (multi_scale, outputs)
}

fn check_levels(expected: usize, features: &[FeatureMap]) {
    assert_eq!(
        features.len(),
        expected,
        "the pixel decoder was built for {expected} backbone levels, got {}",
        features.len()
    );
}

impl FpnPixelDecoder {
    pub fn forward(&self, features: &[FeatureMap]) -> PixelDecoderOutput {
        let n = self.output_convs.len();
        check_levels(n, features);
        let mut coarse_first: Vec<FeatureMap> = Vec::with_capacity(n);
        let mut y = self.output_convs[n - 1].forward(features[n - 1].tensor.clone());
        coarse_first.push(FeatureMap {
            tensor: y.clone(),
            stride: features[n - 1].stride,
        });
        for l in (0..n - 1).rev() {
            let lateral = self.lateral_convs[l].forward(features[l].tensor.clone());
            let [_, _, h, w] = lateral.dims();
            let up = interpolate(
                y,
                InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]),
            );
            y = self.output_convs[l].forward(lateral + up);
            coarse_first.push(FeatureMap {
                tensor: y.clone(),
                stride: features[l].stride,
            });
        }
        let (multi_scale, outputs) = split_outputs(coarse_first, self.num_feature_levels);
        PixelDecoderOutput {
            mask_features: FeatureMap {
                tensor: self.mask_features.forward(y),
                stride: features[0].stride,
            },
            multi_scale,
            outputs,
        }
    }
}

/// One deformable encoder layer: `norm1(x + MSDeformAttn(x + pos, refs, x))`, then the FFN
/// (`MSDeformAttnTransformerEncoderLayer`, post-norm, dropout 0).
#[derive(Module, Debug)]
pub struct MsDeformEncoderLayer {
    pub self_attn: MsDeformAttn,
    pub norm1: LayerNorm,
    pub ffn: FfnLayer,
}

/// The deformable pixel decoder (`MSDeformAttnPixelDecoder`).
#[derive(Module, Debug)]
pub struct MsDeformAttnPixelDecoder {
    /// 1×1 conv (bias) + GN per encoder level, coarsest first.
    pub input_proj: Vec<ConvNormAct>,
    /// `[levels, conv_dim]`, added to each level's positions.
    pub level_embed: Embedding,
    pub layers: Vec<MsDeformEncoderLayer>,
    /// 1×1 conv + GN of each finer level, fine to coarse.
    pub lateral_convs: Vec<ConvNormAct>,
    /// 3×3 conv + GN + ReLU of each finer level, fine to coarse.
    pub output_convs: Vec<ConvNormAct>,
    /// 1×1 conv on the finest output: the per-pixel embeddings.
    pub mask_features: Conv2d,
}

/// Cell-centre reference points of the flattened levels, the same on every level
/// (`get_reference_points` with valid ratios 1: no padding mask).
///
/// # Shapes
/// returns `[B, S, L, 2]` as `(x, y)` in `[0, 1]`, `S = Σ h_l · w_l`.
fn reference_points(shapes: &[(usize, usize)], batch: usize, device: &Device) -> Tensor<4> {
    let levels = shapes.len();
    let points: Vec<f32> = shapes
        .iter()
        .flat_map(|&(h, w)| {
            (0..h).flat_map(move |y| {
                (0..w).flat_map(move |x| [(x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32])
            })
        })
        .collect();
    let s = points.len() / 2;
    Tensor::<3>::from_data(TensorData::new(points, [1, s, 2]), device)
        .reshape([1, s, 1, 2])
        .repeat_dim(2, levels)
        .repeat_dim(0, batch)
}

impl MsDeformAttnPixelDecoder {
    pub fn forward(&self, features: &[FeatureMap]) -> PixelDecoderOutput {
        let levels = self.input_proj.len();
        let fpn = self.lateral_convs.len();
        check_levels(levels + fpn, features);
        let b = features[0].tensor.dims()[0];
        let device = features[0].tensor.device();
        let c = self.level_embed.weight.dims()[1];
        let level_embed = self.level_embed.weight.val();
        let mut shapes = Vec::with_capacity(levels);
        let mut src = Vec::with_capacity(levels);
        let mut pos = Vec::with_capacity(levels);
        // Coarsest first.
        for (k, feature) in features[fpn..].iter().rev().enumerate() {
            let x = self.input_proj[k].forward(feature.tensor.clone());
            let [_, _, h, w] = x.dims();
            shapes.push((h, w));
            // [B, C, h, w] -> [B, h*w, C]
            src.push(x.reshape([b, c, h * w]).swap_dims(1, 2));
            let pe = SinePositionEncodingConfig::new(c / 2).encode(b, h, w, None, &device);
            pos.push(
                pe.reshape([b, c, h * w]).swap_dims(1, 2)
                    + level_embed
                        .clone()
                        .slice([k..k + 1, 0..c])
                        .reshape([1, 1, c]),
            );
        }
        let refs = reference_points(&shapes, b, &device);
        let pos = Tensor::cat(pos, 1);
        let mut memory = Tensor::cat(src, 1);
        for layer in &self.layers {
            let attended = layer.self_attn.forward(
                memory.clone() + pos.clone(),
                refs.clone(),
                memory.clone(),
                &shapes,
                None,
            );
            memory = layer.ffn.forward(layer.norm1.forward(memory + attended));
        }
        // Back to maps, coarsest first.
        let mut coarse_first = Vec::with_capacity(levels + fpn);
        let mut start = 0;
        for (k, &(h, w)) in shapes.iter().enumerate() {
            let tensor = memory
                .clone()
                .slice([0..b, start..start + h * w, 0..c])
                .swap_dims(1, 2)
                .reshape([b, c, h, w]);
            start += h * w;
            coarse_first.push(FeatureMap {
                tensor,
                stride: features[fpn + levels - 1 - k].stride,
            });
        }
        let mut y = coarse_first
            .last()
            .expect("at least one encoder level")
            .tensor
            .clone();
        for l in (0..fpn).rev() {
            let lateral = self.lateral_convs[l].forward(features[l].tensor.clone());
            let [_, _, h, w] = lateral.dims();
            let up = interpolate(
                y,
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size([h, w]),
            );
            y = self.output_convs[l].forward(lateral + up);
            coarse_first.push(FeatureMap {
                tensor: y.clone(),
                stride: features[l].stride,
            });
        }
        let (multi_scale, outputs) = split_outputs(coarse_first, levels);
        PixelDecoderOutput {
            mask_features: FeatureMap {
                tensor: self.mask_features.forward(y),
                stride: features[0].stride,
            },
            multi_scale,
            outputs,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn features(device: &Device) -> Vec<FeatureMap> {
        // Strides 4-32 of a 64×96 image, 5 channels each.
        [(16, 24, 4), (8, 12, 8), (4, 6, 16), (2, 3, 32)]
            .iter()
            .map(|&(h, w, stride)| FeatureMap {
                tensor: Tensor::random([2, 5, h, w], Distribution::Normal(0.0, 1.0), device),
                stride,
            })
            .collect()
    }

    fn specs() -> Vec<FeatureSpec> {
        [4, 8, 16, 32]
            .iter()
            .map(|&stride| FeatureSpec {
                channels: 5,
                stride,
            })
            .collect()
    }

    const WIDTHS: PixelDecoderWidths = PixelDecoderWidths {
        conv_dim: 8,
        mask_dim: 6,
        norm_groups: 2,
        num_feature_levels: 3,
    };

    #[test]
    fn both_decoders_return_the_documented_levels() {
        let device = Device::flex();
        let deform = MsDeformAttnEncoderConfig::new()
            .with_num_layers(2)
            .with_n_heads(2)
            .with_n_points(2)
            .with_dim_feedforward(16);
        for config in [
            PixelDecoderConfig::Fpn,
            PixelDecoderConfig::MsDeformAttn(deform),
        ] {
            let decoder = config.init(&specs(), WIDTHS, &device);
            let out = decoder.forward(&features(&device));
            assert_eq!(
                out.mask_features.tensor.dims(),
                [2, 6, 16, 24],
                "{config:?}"
            );
            assert_eq!(out.mask_features.stride, 4);
            let memory: Vec<([usize; 4], usize)> = out
                .multi_scale
                .iter()
                .map(|f| (f.tensor.dims(), f.stride))
                .collect();
            assert_eq!(
                memory,
                [([2, 8, 2, 3], 32), ([2, 8, 4, 6], 16), ([2, 8, 8, 12], 8)],
                "{config:?}"
            );
            let strides: Vec<usize> = out.outputs.iter().map(|f| f.stride).collect();
            assert_eq!(strides, [4, 8, 16, 32], "{config:?}");
        }
    }

    #[test]
    fn reference_points_are_cell_centres_on_every_level() {
        let refs = reference_points(&[(1, 2), (2, 1)], 1, &Device::flex());
        assert_eq!(refs.dims(), [1, 4, 2, 2]);
        let v: Vec<f32> = refs.into_data().try_into_vec().unwrap();
        // Level 0 (1×2): x 0.25, 0.75 at y 0.5; level 1 (2×1): y 0.25, 0.75 at x 0.5.
        let want = [[0.25, 0.5], [0.75, 0.5], [0.5, 0.25], [0.5, 0.75]];
        for (s, point) in want.iter().enumerate() {
            for l in 0..2 {
                assert_eq!(&v[(s * 2 + l) * 2..(s * 2 + l) * 2 + 2], point, "token {s}");
            }
        }
    }

    #[test]
    fn the_deformable_encoder_mixes_levels() {
        // Changing only the coarsest stage changes the stride-8 memory level through the
        // encoder's cross-level sampling (the FPN decoder's stride-8 output would change
        // too, through the top-down sum; here the finer stages are fixed and the encoder
        // alone connects the levels).
        let device = Device::flex();
        let deform = MsDeformAttnEncoderConfig::new()
            .with_num_layers(1)
            .with_n_heads(2)
            .with_n_points(2)
            .with_dim_feedforward(16);
        let decoder = PixelDecoderConfig::MsDeformAttn(deform).init(&specs(), WIDTHS, &device);
        let mut inputs = features(&device);
        let base = decoder.forward(&inputs).multi_scale[2].tensor.clone();
        inputs[3].tensor = inputs[3].tensor.clone().add_scalar(3.0).mul_scalar(-2.0);
        let changed = decoder.forward(&inputs).multi_scale[2].tensor.clone();
        let diff: f32 = (base - changed).abs().max().into_scalar();
        assert!(diff > 1e-4, "{diff}");
        // With no encoder layer the stride-8 level is its own projection only.
        let plain = PixelDecoderConfig::MsDeformAttn(
            MsDeformAttnEncoderConfig::new()
                .with_num_layers(0)
                .with_n_heads(2),
        )
        .init(&specs(), WIDTHS, &device);
        let mut inputs = features(&device);
        let base = plain.forward(&inputs).multi_scale[2].tensor.clone();
        inputs[3].tensor = inputs[3].tensor.clone().mul_scalar(-2.0);
        let changed = plain.forward(&inputs).multi_scale[2].tensor.clone();
        let diff: f32 = (base - changed).abs().max().into_scalar();
        assert!(diff < 1e-6, "{diff}");
    }
}
