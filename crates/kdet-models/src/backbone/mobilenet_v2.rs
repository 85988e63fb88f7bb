//! MobileNetV2 as torchvision defines it (Sandler et al., "MobileNetV2: Inverted Residuals
//! and Linear Bottlenecks", arXiv:1801.04381; `torchvision/models/mobilenetv2.py`),
//! without the classifier: `features` = stem conv 3x3/2 + 17 inverted-residual blocks +
//! a final 1x1 conv to 1280 channels, BN + ReLU6 throughout, linear bottlenecks.
//!
//! Stages follow mmdet's `MobileNetV2` indexing: 0-6 are the seven block groups
//! (`t, c, n, s` rows of the paper's Table 2), 7 is the final 1x1 conv. Only the
//! `features` needed by the deepest requested stage are built.
//!
//! Parameter names follow torchvision's keys except inside `Conv2dNormActivation`
//! (an `nn.Sequential(conv, norm)`, keys `0` / `1`), whose fields here are `conv` / `bn`:
//! see [`torchvision_key_to_path`].

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu6;
use burn::tensor::{Device, Tensor};

use super::norm::{BackboneNorm, Norm};
use super::{BackboneError, kaiming_normal_fan_out, select_specs, select_stages};
use crate::output::{FeatureMap, FeatureSpec};

/// The paper's Table 2 / torchvision `inverted_residual_setting`: expansion `t`, output
/// channels `c`, repeats `n`, first stride `s`.
const INVERTED_RESIDUAL_SETTING: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// A torchvision MobileNetV2 backbone.
#[derive(Config, Debug, PartialEq)]
pub struct MobileNetV2Config {
    /// Channel multiplier (torchvision `width_mult`, default 1.0); channels are rounded
    /// to multiples of 8 (`round_nearest=8`).
    #[config(default = 1.0)]
    pub width_mult: f64,
    #[config(default = "BackboneNorm::Batch")]
    pub norm: BackboneNorm,
    /// Stages to return (mmdet indexing: 0-6 block groups with 16, 24, 32, 64, 96, 160,
    /// 320 channels at width 1.0 and strides 2, 4, 8, 16, 16, 32, 32; 7 the 1280-channel
    /// 1x1 conv at stride 32). Default: strides 8/16/32 = groups 2, 4, 6 (32/96/320 ch).
    /// mmdet's default `(1, 2, 4, 7)` adds stride 4 and uses the 1280 conv instead.
    #[config(default = "vec![2, 4, 6]")]
    pub out_indices: Vec<usize>,
}

impl MobileNetV2Config {
    /// Channels and stride of the eight stages.
    pub fn stage_specs(&self) -> [FeatureSpec; 8] {
        let mut stride = 2;
        std::array::from_fn(|i| match INVERTED_RESIDUAL_SETTING.get(i) {
            Some(&(_, c, _, s)) => {
                stride *= s;
                FeatureSpec {
                    channels: make_divisible(c as f64 * self.width_mult, 8),
                    stride,
                }
            }
            None => FeatureSpec {
                channels: self.last_channels(),
                stride,
            },
        })
    }

    /// The specs of the returned stages, in `out_indices` order.
    pub fn out_specs(&self) -> Vec<FeatureSpec> {
        let specs = self.stage_specs();
        self.out_indices
            .iter()
            .filter_map(|&i| specs.get(i).copied())
            .collect()
    }

    pub fn validate(&self) -> Result<(), BackboneError> {
        super::validate_out_indices(&self.out_indices, 8)?;
        if !(self.width_mult.is_finite() && self.width_mult > 0.0) {
            return Err(BackboneError::Invalid(format!(
                "MobileNetV2 width_mult must be positive, got {}",
                self.width_mult
            )));
        }
        let mut channels = vec![self.stem_channels(), self.last_channels()];
        let mut input = self.stem_channels();
        for &(t, c, _, _) in &INVERTED_RESIDUAL_SETTING {
            channels.push(hidden_channels(input, t));
            input = make_divisible(c as f64 * self.width_mult, 8);
            channels.push(input);
        }
        if let Some(c) = channels.iter().find(|&&c| !self.norm.supports(c)) {
            return Err(BackboneError::Invalid(format!(
                "{:?} cannot normalise {c} channels",
                self.norm
            )));
        }
        Ok(())
    }

    fn stem_channels(&self) -> usize {
        make_divisible(32.0 * self.width_mult, 8)
    }

    fn last_channels(&self) -> usize {
        make_divisible(1280.0 * self.width_mult.max(1.0), 8)
    }

    /// # Panics
    /// On a config that [`validate`](Self::validate) rejects.
    pub fn init(&self, device: &Device) -> MobileNetV2 {
        if let Err(e) = self.validate() {
            panic!("invalid MobileNetV2 config: {e}");
        }
        let deepest = self.out_indices.iter().copied().max().unwrap_or(0);
        let mut input = self.stem_channels();
        let mut features = vec![MobileNetV2Feature::ConvBnAct(ConvBnAct::new(
            3, input, 3, 2, 1, self.norm, device,
        ))];
        let mut stage_ends = Vec::with_capacity(8);
        for &(t, c, n, s) in INVERTED_RESIDUAL_SETTING.iter().take(deepest + 1) {
            let output = make_divisible(c as f64 * self.width_mult, 8);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                features.push(MobileNetV2Feature::InvertedResidual(InvertedResidual::new(
                    input, output, stride, t, self.norm, device,
                )));
                input = output;
            }
            stage_ends.push(features.len() - 1);
        }
        if deepest == 7 {
            features.push(MobileNetV2Feature::ConvBnAct(ConvBnAct::new(
                input,
                self.last_channels(),
                1,
                1,
                1,
                self.norm,
                device,
            )));
            stage_ends.push(features.len() - 1);
        }
        MobileNetV2 {
            features,
            stage_ends,
            out_indices: self.out_indices.clone(),
            stage_specs: self.stage_specs().to_vec(),
        }
    }
}

/// torchvision `MobileNetV2.features`.
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    pub features: Vec<MobileNetV2Feature>,
    /// `features` index after which each built stage ends.
    #[module(skip)]
    pub stage_ends: Vec<usize>,
    #[module(skip)]
    pub out_indices: Vec<usize>,
    #[module(skip)]
    pub stage_specs: Vec<FeatureSpec>,
}

impl MobileNetV2 {
    /// The stages listed in `out_indices`, in that order.
    ///
    /// # Shapes
    /// `[B, 3, H, W] -> [B, C_i, ~H / s_i, ~W / s_i]`
    pub fn forward(&self, x: Tensor<4>) -> Vec<FeatureMap> {
        let [_, c, _, _] = x.dims();
        assert_eq!(
            c, 3,
            "MobileNetV2 expects [B, 3, H, W] images, got {c} channels"
        );
        let mut stages: Vec<Option<Tensor<4>>> = vec![None; self.stage_ends.len()];
        let mut x = x;
        let mut stage = 0;
        for (i, layer) in self.features.iter().enumerate() {
            x = layer.forward(x);
            if self.stage_ends.get(stage) == Some(&i) {
                stages[stage] = Some(x.clone());
                stage += 1;
            }
        }
        select_stages(stages, &self.out_indices, &self.stage_specs)
    }

    /// Channels and stride of each returned stage.
    pub fn out_specs(&self) -> Vec<FeatureSpec> {
        select_specs(&self.out_indices, &self.stage_specs)
    }
}

/// One entry of `features`.
// burn modules cannot be boxed (no `Module` impl for `Box`); built once, so the size
// difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum MobileNetV2Feature {
    ConvBnAct(ConvBnAct),
    InvertedResidual(InvertedResidual),
}

impl MobileNetV2Feature {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            MobileNetV2Feature::ConvBnAct(m) => m.forward(x),
            MobileNetV2Feature::InvertedResidual(m) => m.forward(x),
        }
    }
}

/// torchvision `Conv2dNormActivation(..., activation_layer=nn.ReLU6)`: bias-free conv
/// (padding `k / 2`), norm, ReLU6.
#[derive(Module, Debug)]
pub struct ConvBnAct {
    pub conv: Conv2d,
    pub bn: Norm,
}

impl ConvBnAct {
    fn new(
        in_channels: usize,
        out_channels: usize,
        k: usize,
        stride: usize,
        groups: usize,
        norm: BackboneNorm,
        device: &Device,
    ) -> Self {
        let p = k / 2;
        let conv = Conv2dConfig::new([in_channels, out_channels], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_groups(groups)
            .with_bias(false)
            .with_initializer(kaiming_normal_fan_out(out_channels, k))
            .init(device);
        Self {
            conv,
            bn: norm.init(out_channels, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu6(self.bn.forward(self.conv.forward(x)))
    }
}

/// torchvision `InvertedResidual`: `conv` = [1x1 expand (if `t != 1`)], 3x3 depthwise
/// (strided), 1x1 linear projection, norm; identity shortcut when stride 1 and
/// `in == out`.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub conv: Vec<InvertedResidualLayer>,
    pub use_res_connect: bool,
}

/// One entry of `InvertedResidual.conv` (an `nn.Sequential` in torchvision).
// burn modules cannot be boxed (no `Module` impl for `Box`); built once, so the size
// difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum InvertedResidualLayer {
    ConvBnAct(ConvBnAct),
    Conv(Conv2d),
    Norm(Norm),
}

impl InvertedResidual {
    fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        expand_ratio: usize,
        norm: BackboneNorm,
        device: &Device,
    ) -> Self {
        let hidden = hidden_channels(in_channels, expand_ratio);
        let mut conv = Vec::with_capacity(4);
        if expand_ratio != 1 {
            conv.push(InvertedResidualLayer::ConvBnAct(ConvBnAct::new(
                in_channels,
                hidden,
                1,
                1,
                1,
                norm,
                device,
            )));
        }
        conv.push(InvertedResidualLayer::ConvBnAct(ConvBnAct::new(
            hidden, hidden, 3, stride, hidden, norm, device,
        )));
        conv.push(InvertedResidualLayer::Conv(
            Conv2dConfig::new([hidden, out_channels], [1, 1])
                .with_bias(false)
                .with_initializer(kaiming_normal_fan_out(out_channels, 1))
                .init(device),
        ));
        conv.push(InvertedResidualLayer::Norm(norm.init(out_channels, device)));
        Self {
            conv,
            use_res_connect: stride == 1 && in_channels == out_channels,
        }
    }

    /// # Shapes
    /// `[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = x.clone();
        for layer in &self.conv {
            y = match layer {
                InvertedResidualLayer::ConvBnAct(m) => m.forward(y),
                InvertedResidualLayer::Conv(m) => m.forward(y),
                InvertedResidualLayer::Norm(m) => m.forward(y),
            };
        }
        if self.use_res_connect { x + y } else { y }
    }
}

/// Whether the inverted-residual block at `features[index]` has a 1x1 expansion conv
/// (`t != 1`); `None` for the stem, the last 1x1 conv and indices past the end.
pub fn block_expands(index: usize) -> Option<bool> {
    let mut first = 1;
    for &(t, _, n, _) in &INVERTED_RESIDUAL_SETTING {
        if (first..first + n).contains(&index) {
            return Some(t != 1);
        }
        first += n;
    }
    None
}

/// torchvision `_make_divisible(v, divisor)`: round to the nearest multiple of `divisor`,
/// at least `divisor`, and never more than 10% below `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let rounded = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded + divisor
    } else {
        rounded
    }
}

/// torchvision `int(round(inp * expand_ratio))` (an integer product here).
fn hidden_channels(in_channels: usize, expand_ratio: usize) -> usize {
    in_channels * expand_ratio
}

/// Maps a torchvision `MobileNetV2` state-dict key to the record path here (enum variants
/// skipped; BN `weight`/`bias` stay as they are, which is the name with
/// [`BackboneNorm::FrozenBatch`] — burn-store's PyTorch adapter renames them to
/// `gamma`/`beta` for trainable BN). `None` for keys with no counterpart
/// (`classifier.*`, `*.num_batches_tracked`).
///
/// The one structural difference: `Conv2dNormActivation`'s `nn.Sequential` indices
/// `0` / `1` are the fields `conv` / `bn` here. They are the numeric key segments that
/// directly follow another numeric segment (`features.0.0.weight`,
/// `features.3.conv.1.0.weight`); every other numeric segment is a `Vec` index.
pub fn torchvision_key_to_path(key: &str) -> Option<String> {
    if !key.starts_with("features.") || key.ends_with(".num_batches_tracked") {
        return None;
    }
    let segments: Vec<&str> = key.split('.').collect();
    let is_index = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mapped: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(
            |(i, &s)| match (i > 0 && is_index(segments[i - 1]) && is_index(s), s) {
                (true, "0") => "conv",
                (true, "1") => "bn",
                _ => s,
            },
        )
        .collect();
    Some(mapped.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{num_parameters, tensor_paths};
    use std::collections::BTreeSet;

    // torchvision `mobilenet_v2()` has 3,504,872 parameters; its classifier
    // `Linear(1280, 1000)` has 1,281,000, leaving 2,223,872 in `features`. By hand: stem
    // 3*32*9 + 2*32; per block (hidden h = in*t) [in*h + 2h if t != 1] + 9h + 2h + h*out
    // + 2*out; last conv 320*1280 + 2*1280.
    #[test]
    fn parameter_count_matches_torchvision_features() {
        let config = MobileNetV2Config::new().with_out_indices(vec![2, 4, 6, 7]);
        let model = config.init(&Device::flex());
        assert_eq!(model.features.len(), 19);
        assert_eq!(num_parameters(&model), 2_223_872);
    }

    #[test]
    fn only_needed_features_are_built() {
        let model = MobileNetV2Config::new().init(&Device::flex());
        // Stem + 17 blocks; the 1280-channel conv is not requested.
        assert_eq!(model.features.len(), 18);
        let model = MobileNetV2Config::new()
            .with_out_indices(vec![1, 2])
            .init(&Device::flex());
        assert_eq!(model.features.len(), 7);
    }

    #[test]
    fn stage_specs_follow_the_paper_table() {
        let specs = MobileNetV2Config::new().stage_specs();
        let got: Vec<(usize, usize)> = specs.iter().map(|s| (s.channels, s.stride)).collect();
        assert_eq!(
            got,
            [
                (16, 2),
                (24, 4),
                (32, 8),
                (64, 16),
                (96, 16),
                (160, 32),
                (320, 32),
                (1280, 32)
            ]
        );
        let half = MobileNetV2Config::new().with_width_mult(0.5).out_specs();
        // _make_divisible(32*0.5)=16, (96*0.5)=48, (320*0.5)=160.
        assert_eq!(
            half.iter().map(|s| s.channels).collect::<Vec<_>>(),
            [16, 48, 160]
        );
    }

    #[test]
    fn make_divisible_matches_torchvision() {
        // Values of torchvision's `_make_divisible(v, 8)`.
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(16.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24); // 18 -> 16 < 0.9 * 18 -> 24
        assert_eq!(make_divisible(1280.0 * 1.4, 8), 1792);
        assert_eq!(make_divisible(12.0, 8), 16);
    }

    /// torchvision's state-dict keys, written from `torchvision/models/mobilenetv2.py`.
    fn torchvision_keys() -> Vec<String> {
        let bn = |p: &str| {
            [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            ]
            .map(|s| format!("{p}.{s}"))
        };
        let mut keys = vec!["features.0.0.weight".to_string()];
        keys.extend(bn("features.0.1"));
        let mut idx = 1;
        for &(t, _, n, _) in &INVERTED_RESIDUAL_SETTING {
            for _ in 0..n {
                let p = format!("features.{idx}.conv");
                let mut j = 0;
                if t != 1 {
                    keys.push(format!("{p}.0.0.weight"));
                    keys.extend(bn(&format!("{p}.0.1")));
                    j = 1;
                }
                keys.push(format!("{p}.{j}.0.weight"));
                keys.extend(bn(&format!("{p}.{j}.1")));
                keys.push(format!("{p}.{}.weight", j + 1));
                keys.extend(bn(&format!("{p}.{}", j + 2)));
                idx += 1;
            }
        }
        keys.push("features.18.0.weight".to_string());
        keys.extend(bn("features.18.1"));
        keys.extend([
            "classifier.1.weight".to_string(),
            "classifier.1.bias".to_string(),
        ]);
        keys
    }

    #[test]
    fn torchvision_keys_map_onto_every_tensor() {
        let model = MobileNetV2Config::new()
            .with_norm(BackboneNorm::FrozenBatch)
            .with_out_indices(vec![2, 4, 6, 7])
            .init(&Device::flex());
        let ours: BTreeSet<String> = tensor_paths(&model).into_iter().map(|(p, _)| p).collect();
        let theirs: BTreeSet<String> = torchvision_keys()
            .iter()
            .filter_map(|k| torchvision_key_to_path(k))
            .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn validate_rejects_bad_configs() {
        assert!(
            MobileNetV2Config::new()
                .with_width_mult(0.0)
                .validate()
                .is_err()
        );
        assert!(
            MobileNetV2Config::new()
                .with_width_mult(f64::NAN)
                .validate()
                .is_err()
        );
        assert!(
            MobileNetV2Config::new()
                .with_out_indices(vec![8])
                .validate()
                .is_err()
        );
        assert!(MobileNetV2Config::new().validate().is_ok());
    }
}
