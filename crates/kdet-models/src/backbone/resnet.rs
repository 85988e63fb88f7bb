//! ResNet-18/34/50/101 as torchvision defines them (He et al., "Deep Residual Learning for
//! Image Recognition", arXiv:1512.03385; `torchvision/models/resnet.py`), without the
//! classifier: stem `conv1` 7x7/2 + `bn1` + ReLU + `maxpool` 3x3/2, then `layer1..layer4`
//! of BasicBlocks (18/34) or Bottlenecks (50, stride on the 3x3 conv: torchvision /
//! mmdet `style='pytorch'`).
//!
//! Parameter names follow torchvision's state-dict keys. Remaining differences, for the
//! weight importer (enum variant names such as `ResNet`, `Basic`, `Batch` are skipped,
//! burn-store's `skip_enum_variants`):
//!
//! | torchvision                          | here                               |
//! |--------------------------------------|------------------------------------|
//! | `*.downsample.0.weight`              | `*.downsample.conv.weight`         |
//! | `*.downsample.1.*`                   | `*.downsample.bn.*`                |
//! | `*bn*.weight` / `*bn*.bias` (BN)     | `*bn*.gamma` / `*bn*.beta`         |
//! | `*bn*.num_batches_tracked`           | (none; ignore)                     |
//! | `fc.weight`, `fc.bias`               | (none; ignore)                     |
//!
//! With [`BackboneNorm::FrozenBatch`] the BN keys keep torchvision's names (`weight`,
//! `bias`, `running_mean`, `running_var`). [`TORCHVISION_KEY_REMAP`] holds the table,
//! [`torchvision_key_to_path`] applies it; the weight importer
//! ([`crate::weights`], source `torchvision-resnet`) uses it, and a test checks it against
//! torchvision's full key lists (`tests/fixtures/weights/torchvision_keys.json`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::norm::{BackboneNorm, Norm};
use super::resnet_block::{ResNetBlock, conv};
use super::{BackboneError, select_specs, select_stages};
use crate::output::{FeatureMap, FeatureSpec};

/// torchvision key -> key here (prefix/infix substitutions, applied in order). BN
/// `weight`/`bias` -> `gamma`/`beta` is burn-store's `PyTorchToBurnAdapter`'s job.
pub const TORCHVISION_KEY_REMAP: &[(&str, &str)] = &[
    // torchvision's `downsample` is `nn.Sequential(conv1x1, norm)`; Rust fields cannot
    // be named `0` / `1`.
    (".downsample.0.", ".downsample.conv."),
    (".downsample.1.", ".downsample.bn."),
];

/// Maps a torchvision `ResNet` state-dict key to the record path here (enum variants
/// skipped; BN `weight`/`bias` unchanged, as with [`BackboneNorm::FrozenBatch`]).
/// `None` for keys with no counterpart (`fc.*`, `*.num_batches_tracked`).
pub fn torchvision_key_to_path(key: &str) -> Option<String> {
    if key.starts_with("fc.") || key.ends_with(".num_batches_tracked") {
        return None;
    }
    Some(
        TORCHVISION_KEY_REMAP
            .iter()
            .fold(key.to_string(), |k, (from, to)| k.replace(from, to)),
    )
}

/// The residual block family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Two 3x3 convs, expansion 1 (ResNet-18/34).
    Basic,
    /// 1x1 -> 3x3 (strided) -> 1x1, expansion 4 (ResNet-50 and deeper).
    Bottleneck,
}

impl BlockKind {
    /// Output channels per unit of stage width (torchvision `block.expansion`).
    pub fn expansion(&self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// A torchvision ResNet depth. Serialised as the number (`18`, `34`, `50`, `101`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "usize", into = "usize")]
pub enum ResNetDepth {
    R18,
    R34,
    R50,
    R101,
}

impl TryFrom<usize> for ResNetDepth {
    type Error = BackboneError;
    fn try_from(depth: usize) -> Result<Self, Self::Error> {
        match depth {
            18 => Ok(ResNetDepth::R18),
            34 => Ok(ResNetDepth::R34),
            50 => Ok(ResNetDepth::R50),
            101 => Ok(ResNetDepth::R101),
            other => Err(BackboneError::UnsupportedDepth(other)),
        }
    }
}

impl From<ResNetDepth> for usize {
    fn from(depth: ResNetDepth) -> usize {
        match depth {
            ResNetDepth::R18 => 18,
            ResNetDepth::R34 => 34,
            ResNetDepth::R50 => 50,
            ResNetDepth::R101 => 101,
        }
    }
}

impl ResNetDepth {
    /// Block family and blocks per stage (torchvision `resnet18/34/50/101`).
    pub fn layout(&self) -> (BlockKind, [usize; 4]) {
        match self {
            ResNetDepth::R18 => (BlockKind::Basic, [2, 2, 2, 2]),
            ResNetDepth::R34 => (BlockKind::Basic, [3, 4, 6, 3]),
            ResNetDepth::R50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            ResNetDepth::R101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
        }
    }
}

/// A torchvision ResNet backbone.
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// 18, 34, 50 or 101.
    pub depth: ResNetDepth,
    /// torchvision: `Batch`. mmdet detectors train BN affine terms with frozen statistics
    /// (`norm_eval=True`); detectron2 uses `FrozenBatch` throughout.
    #[config(default = "BackboneNorm::Batch")]
    pub norm: BackboneNorm,
    /// Stages to return, 0-based over `layer1..layer4` (strides 4, 8, 16, 32). Default:
    /// C3-C5 (mmdet `out_indices=(0,1,2,3)` with the FPN's `start_level=1`).
    #[config(default = "vec![1, 2, 3]")]
    pub out_indices: Vec<usize>,
    /// Freeze the stem and the first `n` stages (no gradients, BN in eval mode), as mmdet's
    /// `frozen_stages` (`None` = mmdet's -1, nothing frozen; detectors use `Some(1)`).
    #[config(default = "None")]
    pub frozen_stages: Option<usize>,
}

impl ResNetConfig {
    /// torchvision `resnet18`.
    pub fn resnet18() -> Self {
        Self::new(ResNetDepth::R18)
    }

    /// torchvision `resnet34`.
    pub fn resnet34() -> Self {
        Self::new(ResNetDepth::R34)
    }

    /// torchvision `resnet50`.
    pub fn resnet50() -> Self {
        Self::new(ResNetDepth::R50)
    }

    /// torchvision `resnet101` (mmdetection's R-101 teachers).
    pub fn resnet101() -> Self {
        Self::new(ResNetDepth::R101)
    }

    /// The architecture this config describes.
    pub fn arch(&self) -> ResNetArch {
        let (block, depths) = self.depth.layout();
        ResNetArch {
            block,
            stem_channels: 64,
            widths: [64, 128, 256, 512],
            depths,
            norm: self.norm,
            out_indices: self.out_indices.clone(),
            frozen_stages: self.frozen_stages,
        }
    }
}

/// Any ResNet-shaped network: the torchvision stem, four stages of residual blocks with
/// the given widths (3x3-conv channels) and depths. [`ResNetConfig`] and
/// [`SmallResNetConfig`](super::SmallResNetConfig) both resolve to one.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetArch {
    pub block: BlockKind,
    pub stem_channels: usize,
    pub widths: [usize; 4],
    pub depths: [usize; 4],
    pub norm: BackboneNorm,
    pub out_indices: Vec<usize>,
    pub frozen_stages: Option<usize>,
}

impl ResNetArch {
    /// Channels and stride of each of the four stages.
    pub fn stage_specs(&self) -> [FeatureSpec; 4] {
        std::array::from_fn(|i| FeatureSpec {
            channels: self.widths[i] * self.block.expansion(),
            stride: 4 << i,
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

    /// Checks everything a user can get wrong in a config file.
    pub fn validate(&self) -> Result<(), BackboneError> {
        super::validate_out_indices(&self.out_indices, 4)?;
        if self.stem_channels == 0 || self.widths.contains(&0) || self.depths.contains(&0) {
            return Err(BackboneError::Invalid(format!(
                "ResNet stem channels, widths and depths must be positive (stem {}, widths {:?}, depths {:?})",
                self.stem_channels, self.widths, self.depths
            )));
        }
        if let Some(n) = self.frozen_stages
            && n > 4
        {
            return Err(BackboneError::Invalid(format!(
                "frozen_stages {n} exceeds the 4 stages of a ResNet"
            )));
        }
        let mut channels = vec![self.stem_channels];
        for w in self.widths {
            channels.push(w);
            channels.push(w * self.block.expansion());
        }
        if let Some(c) = channels.iter().find(|&&c| !self.norm.supports(c)) {
            return Err(BackboneError::Invalid(format!(
                "{:?} cannot normalise {c} channels",
                self.norm
            )));
        }
        Ok(())
    }

    /// # Panics
    /// On a config that [`validate`](Self::validate) rejects.
    pub fn init(&self, device: &Device) -> ResNet {
        if let Err(e) = self.validate() {
            panic!("invalid ResNet config: {e}");
        }
        let mut conv1 = conv(3, self.stem_channels, 7, 2, device);
        let mut bn1 = self.norm.init(self.stem_channels, device);
        if self.frozen_stages.is_some() {
            conv1 = conv1.freeze();
            bn1 = bn1.freeze();
        }
        let maxpool = MaxPool2dConfig::new([3, 3])
            .with_strides([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init();
        let mut in_channels = self.stem_channels;
        let mut layers: Vec<Vec<ResNetBlock>> = Vec::with_capacity(4);
        for stage in 0..4 {
            let stride = if stage == 0 { 1 } else { 2 };
            let width = self.widths[stage];
            let mut blocks = Vec::with_capacity(self.depths[stage]);
            for b in 0..self.depths[stage] {
                let block = ResNetBlock::new(
                    self.block,
                    in_channels,
                    width,
                    if b == 0 { stride } else { 1 },
                    self.norm,
                    device,
                );
                in_channels = width * self.block.expansion();
                blocks.push(block);
            }
            // mmdet `_freeze_stages`: stages 1..=frozen_stages.
            if self.frozen_stages.is_some_and(|n| stage < n) {
                blocks = blocks.into_iter().map(Module::freeze).collect();
            }
            layers.push(blocks);
        }
        let mut layers = layers.into_iter();
        let mut next = || layers.next().expect("four stages were built above");
        ResNet {
            conv1,
            bn1,
            maxpool,
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            out_indices: self.out_indices.clone(),
            stage_specs: self.stage_specs(),
        }
    }
}

/// torchvision `ResNet` without `avgpool` / `fc`.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: Norm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<ResNetBlock>,
    pub layer2: Vec<ResNetBlock>,
    pub layer3: Vec<ResNetBlock>,
    pub layer4: Vec<ResNetBlock>,
    #[module(skip)]
    pub out_indices: Vec<usize>,
    #[module(skip)]
    pub stage_specs: [FeatureSpec; 4],
}

impl ResNet {
    /// The stages listed in `out_indices`, in that order.
    ///
    /// # Shapes
    /// `[B, 3, H, W] -> [B, C_i, ~H / s_i, ~W / s_i]` (sizes round up at each stride-2
    /// layer: 65 -> 33 -> 17 -> 9 -> 5 -> 3).
    pub fn forward(&self, x: Tensor<4>) -> Vec<FeatureMap> {
        let [_, c, _, _] = x.dims();
        assert_eq!(c, 3, "ResNet expects [B, 3, H, W] images, got {c} channels");
        let deepest = self.out_indices.iter().copied().max().unwrap_or(0);
        let mut x = self
            .maxpool
            .forward(relu(self.bn1.forward(self.conv1.forward(x))));
        let mut stages: Vec<Option<Tensor<4>>> = vec![None; 4];
        for (i, layer) in [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .into_iter()
            .enumerate()
            .take(deepest + 1)
        {
            for block in layer {
                x = block.forward(x);
            }
            stages[i] = Some(x.clone());
        }
        select_stages(stages, &self.out_indices, &self.stage_specs)
    }

    /// Channels and stride of each returned stage.
    pub fn out_specs(&self) -> Vec<FeatureSpec> {
        select_specs(&self.out_indices, &self.stage_specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{num_parameters, tensor_paths};
    use burn::tensor::Distribution;
    use std::collections::BTreeSet;

    // torchvision's `sum(p.numel() for p in model.parameters())` minus `fc` (512*1000 +
    // 1000 = 513,000 for 18/34; 2048*1000 + 1000 = 2,049,000 for 50): 11,689,512,
    // 21,797,672 and 25,557,032 total. Re-derived by hand: stem 3*64*49 + 2*64 = 9,536;
    // each conv c_in*c_out*k*k, each BN 2*c, plus the downsample conv+BN of every
    // stage's first block where the shape changes.
    #[test]
    fn parameter_counts_match_torchvision() {
        let device = Device::flex();
        for (config, expected) in [
            (ResNetConfig::resnet18(), 11_176_512),
            (ResNetConfig::resnet34(), 21_284_672),
            (ResNetConfig::resnet50(), 23_508_032),
            // torchvision resnet101: 44,549,160 with the 2,049,000-parameter classifier.
            (ResNetConfig::resnet101(), 42_500_160),
        ] {
            let model = config.arch().init(&device);
            assert_eq!(num_parameters(&model), expected, "{:?}", config.depth);
        }
    }

    #[test]
    fn stage_specs_follow_torchvision() {
        let r18: Vec<_> = ResNetConfig::resnet18().arch().stage_specs().to_vec();
        let r50: Vec<_> = ResNetConfig::resnet50().arch().stage_specs().to_vec();
        let spec = |channels, stride| FeatureSpec { channels, stride };
        assert_eq!(
            r18,
            vec![spec(64, 4), spec(128, 8), spec(256, 16), spec(512, 32)]
        );
        assert_eq!(
            r50,
            vec![spec(256, 4), spec(512, 8), spec(1024, 16), spec(2048, 32)]
        );
    }

    /// torchvision's state-dict keys, written from `torchvision/models/resnet.py`.
    fn torchvision_keys(bottleneck: bool, layers: [usize; 4]) -> Vec<String> {
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
        let mut keys = vec!["conv1.weight".to_string()];
        keys.extend(bn("bn1"));
        for (i, &n) in layers.iter().enumerate() {
            for b in 0..n {
                let p = format!("layer{}.{b}", i + 1);
                let convs = if bottleneck { 3 } else { 2 };
                for c in 1..=convs {
                    keys.push(format!("{p}.conv{c}.weight"));
                    keys.extend(bn(&format!("{p}.bn{c}")));
                }
                if b == 0 && (i > 0 || bottleneck) {
                    keys.push(format!("{p}.downsample.0.weight"));
                    keys.extend(bn(&format!("{p}.downsample.1")));
                }
            }
        }
        keys.extend(["fc.weight".to_string(), "fc.bias".to_string()]);
        keys
    }

    #[test]
    fn torchvision_keys_map_onto_every_tensor() {
        let device = Device::flex();
        for (config, bottleneck) in [
            (ResNetConfig::resnet18(), false),
            (ResNetConfig::resnet50(), true),
        ] {
            let layers = config.depth.layout().1;
            let model = config
                .with_norm(BackboneNorm::FrozenBatch)
                .arch()
                .init(&device);
            let ours: BTreeSet<String> = tensor_paths(&model).into_iter().map(|(p, _)| p).collect();
            let theirs: BTreeSet<String> = torchvision_keys(bottleneck, layers)
                .iter()
                .filter_map(|k| torchvision_key_to_path(k))
                .collect();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn depth_serialises_as_a_number() {
        let json = serde_json::to_string(&ResNetConfig::resnet50()).expect("a config serialises");
        assert!(json.contains("\"depth\":50"), "{json}");
        let r101: ResNetDepth = serde_json::from_str("101").expect("R101");
        assert_eq!(r101, ResNetDepth::R101);
        let err = serde_json::from_str::<ResNetConfig>(r#"{"depth": 152}"#).map(|_| ());
        assert!(err.is_err_and(|e| e.to_string().contains("unsupported ResNet depth 152")));
    }

    #[test]
    fn frozen_stages_get_no_gradient() {
        let device = Device::flex().autodiff();
        let arch = ResNetArch {
            block: BlockKind::Basic,
            stem_channels: 8,
            widths: [8, 8, 16, 16],
            depths: [1, 1, 1, 1],
            norm: BackboneNorm::Batch,
            out_indices: vec![1, 2, 3],
            frozen_stages: Some(1),
        };
        let model = arch.init(&device);
        let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let loss = model
            .forward(x)
            .into_iter()
            .map(|f| f.tensor.sum())
            .reduce(|a, b| a + b)
            .expect("three stages");
        let grads = loss.backward();
        let first_conv = |layer: &[ResNetBlock]| match &layer[0] {
            ResNetBlock::Basic(b) => b.conv1.weight.grad(&grads).is_some(),
            ResNetBlock::Bottleneck(b) => b.conv1.weight.grad(&grads).is_some(),
        };
        assert!(model.conv1.weight.grad(&grads).is_none(), "stem is frozen");
        assert!(!first_conv(&model.layer1), "layer1 is frozen");
        assert!(first_conv(&model.layer2), "layer2 trains");
        assert!(first_conv(&model.layer4), "layer4 trains");
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let bad = [
            ResNetConfig::resnet18().with_out_indices(vec![]),
            ResNetConfig::resnet18().with_out_indices(vec![1, 4]),
            ResNetConfig::resnet18().with_out_indices(vec![2, 1]),
            ResNetConfig::resnet18().with_frozen_stages(Some(5)),
            ResNetConfig::resnet18().with_norm(BackboneNorm::Group(48)),
        ];
        for c in bad {
            assert!(c.arch().validate().is_err(), "{c:?}");
        }
        assert!(
            ResNetConfig::resnet18()
                .with_norm(BackboneNorm::Group(32))
                .arch()
                .validate()
                .is_ok()
        );
    }
}
