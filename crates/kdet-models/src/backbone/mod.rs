//! Backbones that report a [`FeatureSpec`] (channels, stride) for every stage they
//! return: torchvision's ResNet-18/34/50/101 and MobileNetV2, and a small configurable
//! ResNet for fast CPU runs.
//!
//! [`BackboneConfig`] (a serde-tagged enum) builds a [`Backbone`] (an enum module);
//! `Backbone::forward` returns the stages listed by the config's `out_indices`, shallow
//! to deep (default C3, C4, C5 = strides 8, 16, 32).

mod frozen_bn;
pub mod mobilenet_v2;
mod norm;
pub mod resnet;
mod resnet_block;
mod small;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

pub use frozen_bn::FrozenBatchNorm;
pub use mobilenet_v2::{MobileNetV2, MobileNetV2Config};
pub use norm::{BackboneNorm, Norm};
pub use resnet::{BlockKind, ResNet, ResNetArch, ResNetConfig, ResNetDepth};
pub use resnet_block::{BasicBlock, Bottleneck, Downsample, ResNetBlock};
pub use small::SmallResNetConfig;

use crate::output::{FeatureMap, FeatureSpec};

/// A backbone config error (user input: a config file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BackboneError {
    #[error("unsupported ResNet depth {0} (expected 18, 34, 50 or 101)")]
    UnsupportedDepth(usize),
    #[error("out_indices {indices:?}: {reason}")]
    OutIndices { indices: Vec<usize>, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// Which backbone to build.
///
/// JSON (burn `Config`s have no serde defaults, so every non-`Option` field is written):
/// `{"type": "resnet", "depth": 50, "norm": "batch", "out_indices": [1, 2, 3], "frozen_stages": 1}`,
/// `{"type": "mobilenet_v2", "width_mult": 1.0, "norm": "batch", "out_indices": [2, 4, 6]}`,
/// `{"type": "small_resnet", "stem_channels": 16, "widths": [16, 32, 64, 128],
/// "depths": [1, 1, 1, 1], "norm": "batch", "out_indices": [1, 2, 3]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BackboneConfig {
    #[serde(rename = "resnet")]
    ResNet(ResNetConfig),
    #[serde(rename = "mobilenet_v2")]
    MobileNetV2(MobileNetV2Config),
    #[serde(rename = "small_resnet")]
    SmallResNet(SmallResNetConfig),
}

// burn's `Config` derive does not keep serde's enum attributes (`tag`), so the enum
// derives serde itself and gets `Config`'s `save` / `load` from the blanket methods.
impl burn::config::Config for BackboneConfig {}

impl BackboneConfig {
    /// Checks everything a user can get wrong in a config file. [`init`](Self::init)
    /// panics on what this rejects, so call it where the config is loaded.
    pub fn validate(&self) -> Result<(), BackboneError> {
        match self {
            BackboneConfig::ResNet(c) => c.arch().validate(),
            BackboneConfig::MobileNetV2(c) => c.validate(),
            BackboneConfig::SmallResNet(c) => c.validate(),
        }
    }

    /// # Panics
    /// On a config that [`validate`](Self::validate) rejects.
    pub fn init(&self, device: &Device) -> Backbone {
        match self {
            BackboneConfig::ResNet(c) => Backbone::ResNet(c.arch().init(device)),
            BackboneConfig::MobileNetV2(c) => Backbone::MobileNetV2(c.init(device)),
            BackboneConfig::SmallResNet(c) => Backbone::ResNet(c.init(device)),
        }
    }

    /// Channels and stride of each returned stage, shallow to deep (what the neck is
    /// built from). Invalid `out_indices` are left out; [`validate`](Self::validate)
    /// reports them.
    pub fn out_specs(&self) -> Vec<FeatureSpec> {
        match self {
            BackboneConfig::ResNet(c) => c.arch().out_specs(),
            BackboneConfig::MobileNetV2(c) => c.out_specs(),
            BackboneConfig::SmallResNet(c) => c.out_specs(),
        }
    }
}

/// A built backbone.
// burn modules cannot be boxed (no `Module` impl for `Box`); built once, so the size
// difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// torchvision ResNets and [`SmallResNetConfig`] networks.
    ResNet(ResNet),
    MobileNetV2(MobileNetV2),
}

impl Backbone {
    /// The stages listed by the config's `out_indices`, shallow to deep.
    ///
    /// # Shapes
    /// `[B, 3, H, W] -> [B, C_i, ~H / s_i, ~W / s_i]` per returned stage `i`.
    pub fn forward(&self, x: Tensor<4>) -> Vec<FeatureMap> {
        match self {
            Backbone::ResNet(m) => m.forward(x),
            Backbone::MobileNetV2(m) => m.forward(x),
        }
    }

    /// Channels and stride of each returned stage.
    pub fn out_specs(&self) -> Vec<FeatureSpec> {
        match self {
            Backbone::ResNet(m) => m.out_specs(),
            Backbone::MobileNetV2(m) => m.out_specs(),
        }
    }
}

/// Stage indices must be in range, strictly increasing (shallow to deep) and non-empty.
fn validate_out_indices(indices: &[usize], num_stages: usize) -> Result<(), BackboneError> {
    let err = |reason: String| BackboneError::OutIndices {
        indices: indices.to_vec(),
        reason,
    };
    if indices.is_empty() {
        return Err(err("at least one stage must be returned".into()));
    }
    if let Some(i) = indices.iter().find(|&&i| i >= num_stages) {
        return Err(err(format!(
            "stage {i} does not exist (stages 0..{num_stages})"
        )));
    }
    if indices.windows(2).any(|w| w[0] >= w[1]) {
        return Err(err(
            "stages must be listed shallow to deep without repeats".into()
        ));
    }
    Ok(())
}

/// The stages listed in `out_indices`, in that order, as feature maps with their
/// strides. `stages[i]` is `None` for a stage the forward pass did not build or run.
///
/// # Panics
/// If a listed stage was not computed (an invariant of the backbone's forward pass).
fn select_stages(
    stages: Vec<Option<Tensor<4>>>,
    out_indices: &[usize],
    stage_specs: &[FeatureSpec],
) -> Vec<FeatureMap> {
    out_indices
        .iter()
        .map(|&i| FeatureMap {
            tensor: stages[i]
                .clone()
                .expect("every requested stage was built and computed"),
            stride: stage_specs[i].stride,
        })
        .collect()
}

/// Channels and stride of each stage listed in `out_indices`.
fn select_specs(out_indices: &[usize], stage_specs: &[FeatureSpec]) -> Vec<FeatureSpec> {
    out_indices.iter().map(|&i| stage_specs[i]).collect()
}

/// torch's `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: `std = sqrt(2 / fan_out)`
/// with `fan_out = out_channels * k * k` (torch does not divide by `groups`; burn's
/// `KaimingNormal` does, which matters for depthwise convs).
fn kaiming_normal_fan_out(out_channels: usize, k: usize) -> Initializer {
    Initializer::Normal {
        mean: 0.0,
        std: (2.0 / (out_channels * k * k) as f64).sqrt(),
    }
}

/// Every float tensor of a module as `(path, number of elements)`, with enum variant
/// names left out of the paths (as weight import sees them: `layer1.0.conv1.weight`,
/// not `ResNet.layer1.0.Basic.conv1.weight`). Includes BatchNorm running statistics.
pub fn tensor_paths<M: Module>(module: &M) -> Vec<(String, usize)> {
    struct Paths {
        stack: Vec<Option<String>>,
        out: Vec<(String, usize)>,
    }
    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            let keep = !container_type.starts_with("Enum:");
            self.stack.push(keep.then(|| name.to_string()));
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path: Vec<&str> = self.stack.iter().flatten().map(String::as_str).collect();
            self.out
                .push((path.join("."), param.lazy_shape().num_elements()));
        }
    }
    let mut v = Paths {
        stack: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// The parameter count torch reports (`sum(p.numel() for p in m.parameters())`): every
/// float tensor except BatchNorm running statistics (buffers in torch). burn's
/// `Module::num_params` counts the running statistics too. A [`FrozenBatchNorm`]'s
/// `weight`/`bias` are counted (torchvision counts them for the BN model it replaces).
pub fn num_parameters<M: Module>(module: &M) -> usize {
    tensor_paths(module)
        .into_iter()
        .filter(|(p, _)| !(p.ends_with("running_mean") || p.ends_with("running_var")))
        .map(|(_, n)| n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Runs a 2x3x64x96 image batch (H != W) and checks every returned map against the
    /// config's specs and the expected `[H, W]`.
    fn check_shapes(config: &BackboneConfig, expected_hw: &[[usize; 2]]) {
        let device = Device::flex();
        let backbone = config.init(&device);
        let x = Tensor::<4>::random([2, 3, 64, 96], Distribution::Normal(0.0, 1.0), &device);
        let maps = backbone.forward(x);
        let specs: Vec<FeatureSpec> = maps.iter().map(FeatureMap::spec).collect();
        assert_eq!(specs, config.out_specs(), "{config:?}");
        assert_eq!(specs, backbone.out_specs(), "{config:?}");
        let hw: Vec<[usize; 2]> = maps
            .iter()
            .map(|m| {
                let [b, _, h, w] = m.tensor.dims();
                assert_eq!(b, 2);
                [h, w]
            })
            .collect();
        assert_eq!(hw, expected_hw, "{config:?}");
        for (m, [h, w]) in maps.iter().zip(expected_hw) {
            assert_eq!(
                [64 / m.stride, 96 / m.stride],
                [*h, *w],
                "stride {}",
                m.stride
            );
        }
    }

    const C3_C5: [[usize; 2]; 3] = [[8, 12], [4, 6], [2, 3]];

    #[test]
    fn every_backbone_returns_c3_to_c5() {
        let configs = [
            BackboneConfig::ResNet(ResNetConfig::resnet18()),
            BackboneConfig::ResNet(ResNetConfig::resnet34()),
            BackboneConfig::ResNet(ResNetConfig::resnet50()),
            BackboneConfig::MobileNetV2(MobileNetV2Config::new()),
            BackboneConfig::SmallResNet(SmallResNetConfig::teacher_128()),
            BackboneConfig::SmallResNet(SmallResNetConfig::student_128()),
        ];
        for config in &configs {
            check_shapes(config, &C3_C5);
        }
        let channels: Vec<Vec<usize>> = configs
            .iter()
            .map(|c| c.out_specs().iter().map(|s| s.channels).collect())
            .collect();
        assert_eq!(
            channels,
            [
                vec![128, 256, 512],
                vec![128, 256, 512],
                vec![512, 1024, 2048],
                vec![32, 96, 320],
                vec![96, 192, 384],
                vec![32, 64, 128],
            ]
        );
    }

    #[test]
    fn out_indices_select_stages() {
        let r = ResNetConfig::resnet18().with_out_indices(vec![0, 1, 2, 3]);
        check_shapes(
            &BackboneConfig::ResNet(r),
            &[[16, 24], [8, 12], [4, 6], [2, 3]],
        );
        let m = MobileNetV2Config::new().with_out_indices(vec![1, 7]);
        check_shapes(&BackboneConfig::MobileNetV2(m.clone()), &[[16, 24], [2, 3]]);
        assert_eq!(
            BackboneConfig::MobileNetV2(m).out_specs(),
            [
                FeatureSpec {
                    channels: 24,
                    stride: 4
                },
                FeatureSpec {
                    channels: 1280,
                    stride: 32
                }
            ]
        );
    }

    #[test]
    fn config_json_is_tagged() {
        let parse = |s: &str| serde_json::from_str::<BackboneConfig>(s);
        // burn's `Config` derive gives no serde defaults: every field but `Option`s is
        // written out (as `Config::save` does).
        let r = parse(
            r#"{"type": "resnet", "depth": 50, "norm": "frozen_batch", "out_indices": [1, 2, 3],
                "frozen_stages": 1}"#,
        );
        assert_eq!(
            r.ok(),
            Some(BackboneConfig::ResNet(
                ResNetConfig::resnet50()
                    .with_frozen_stages(Some(1))
                    .with_norm(BackboneNorm::FrozenBatch)
            ))
        );
        let m = parse(
            r#"{"type": "mobilenet_v2", "width_mult": 0.5, "norm": "batch", "out_indices": [2, 4, 6]}"#,
        );
        assert_eq!(
            m.ok(),
            Some(BackboneConfig::MobileNetV2(
                MobileNetV2Config::new().with_width_mult(0.5)
            ))
        );
        for config in [
            BackboneConfig::SmallResNet(
                SmallResNetConfig::student_128().with_norm(BackboneNorm::Group(8)),
            ),
            BackboneConfig::ResNet(ResNetConfig::resnet34()),
        ] {
            let json = serde_json::to_string(&config).expect("configs serialise");
            assert!(json.starts_with(r#"{"type":"#), "{json}");
            assert_eq!(parse(&json).ok(), Some(config), "{json}");
        }
        assert!(parse(r#"{"type": "vgg"}"#).is_err());
        let err =
            parse(r#"{"type": "resnet", "depth": 152, "norm": "batch", "out_indices": [1, 2, 3]}"#);
        assert!(err.is_err_and(|e| e.to_string().contains("unsupported ResNet depth 152")));
    }

    #[test]
    fn validate_reports_user_errors() {
        let bad = BackboneConfig::SmallResNet(
            SmallResNetConfig::student_128().with_out_indices(vec![3, 3]),
        );
        assert!(matches!(
            bad.validate(),
            Err(BackboneError::OutIndices { .. })
        ));
        let bad =
            BackboneConfig::SmallResNet(SmallResNetConfig::new(16, [16, 0, 64, 128], [1, 1, 1, 1]));
        assert!(matches!(bad.validate(), Err(BackboneError::Invalid(_))));
        assert!(
            BackboneConfig::ResNet(ResNetConfig::resnet50())
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn burn_num_params_also_counts_running_statistics() {
        // Why `num_parameters` exists: burn counts BN buffers, torch does not.
        let model = SmallResNetConfig::student_128().init(&Device::flex());
        let bn_channels: usize = tensor_paths(&model)
            .iter()
            .filter(|(p, _)| p.ends_with("running_mean"))
            .map(|(_, n)| n)
            .sum();
        assert!(bn_channels > 0);
        assert_eq!(model.num_params(), num_parameters(&model) + 2 * bn_channels);
    }
}
