//! mmdetection 3.x checkpoints of the dense detectors with a ResNet + FPN (GFL, ATSS,
//! RetinaNet, FCOS) onto kdet's [`Detector`](crate::Detector): sources `mmdet-gfl`, `mmdet-atss`,
//! `mmdet-retinanet`, `mmdet-fcos`.
//!
//! **Unverified**: no released mmdetection checkpoint (model zoo `.pth`) has been loaded.
//! What is checked (tests in `mmdet/tests.rs`), against models mmdetection 3.3.0 itself
//! builds (mmengine 0.10.4, mmcv-lite 2.1.0; `scripts/weights/make-fixtures.sh`):
//! - key lists: every key (with its shape) of the models built from mmdet's R50 COCO
//!   configs lands on a kdet tensor of the same shape, and every kdet tensor of the
//!   matching config is filled (`tests/fixtures/weights/mmdet_detector_keys.json`, with
//!   the architecture facts the configs below are compared with);
//! - forward passes: tiny mmdet-built GFL, ATSS, RetinaNet and FCOS detectors (ResNet-18
//!   at `base_channels=4`, narrow FPN and heads) with every tensor set by a formula give,
//!   loaded into kdet through these tables, mmdet's head outputs within 1e-4
//!   (`mmdet_forward.json`). Box decoding and post-processing are not compared.
//!
//! A model-zoo checkpoint is `{"meta", "state_dict", ...}`; the state dict is unwrapped by
//! [`StateDict::open`](super::StateDict::open).
//!
//! # The layout (from mmdet 3.3.0's source)
//!
//! | mmdet key                                         | kdet path                                 |
//! |---------------------------------------------------|-------------------------------------------|
//! | `backbone.*` (mmdet `ResNet`, torchvision's names) | `backbone.*` ([`resnet::TORCHVISION_KEY_REMAP`]) |
//! | `neck.{lateral,fpn}_convs.{i}.conv.*` (`ConvModule`) | `neck.{lateral,fpn}_convs.{i}.*`      |
//! | `bbox_head.{cls,reg}_convs.{i}.conv.*`            | `head.{cls,reg}_convs.{i}.conv.*`         |
//! | `bbox_head.{cls,reg}_convs.{i}.gn.*` / `.bn.*` (`ConvModule`'s norm, named by `build_norm_layer`) | `head.{cls,reg}_convs.{i}.norm.*` |
//! | `bbox_head.scales.{l}.scale` (mmcv `Scale`, a 0-d tensor) | `head.scales.{l}.scale` (`[1]`: a 0-d tensor is read as `[1]`, see [`super::import`]) |
//! | the predictors, by source ([`MMDET_GFL_HEAD_REMAP`], [`MMDET_ATSS_HEAD_REMAP`], [`MMDET_RETINA_HEAD_REMAP`], [`MMDET_FCOS_HEAD_REMAP`]) | the same names under `head.` |
//! | `bbox_head.integral.project` (GFL's `Integral`: the buffer `linspace(0, reg_max, reg_max + 1)`) | (ignored: a constant, computed by kdet's [`integral`](crate::heads::gfl::integral)) |
//! | `*.num_batches_tracked`                           | (ignored: burn keeps no BN step counter)  |
//!
//! The FPN's `lateral_convs` start at the backbone's `start_level=1` (C3), which is also
//! kdet's first neck input, so the indices agree; the extra levels are `fpn_convs.3/4` in
//! both. A key no rule knows is passed on unchanged and reported unexpected.
//!
//! # The architectures
//!
//! [`mmdet_gfl_config`], [`mmdet_atss_config`], [`mmdet_retinanet_config`] and
//! [`mmdet_fcos_config`] are the kdet detectors of mmdet's `gfl_r50_fpn_1x_coco`,
//! `atss_r50_fpn_1x_coco`, `retinanet_r50_fpn_1x_coco` and
//! `fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco` (the fixture's
//! `architecture` facts, read from the built models, are checked against them). kdet's
//! own `gfl_r50_fpn_1x_coco` preset is [`mmdet_gfl_config`] with `frozen_batch` norm.
//! - GFL / ATSS: FPN `add_extra_convs='on_output'` ([`FpnConfig::gfl`]); towers of four
//!   conv3x3 (no bias) + GN(32) + ReLU; one square anchor (octave base 8).
//! - RetinaNet: FPN `'on_input'` (P6 from C5, [`FpnConfig::retinanet`]); towers of conv3x3
//!   with bias, no norm; 9 anchors, ratio-major as in kdet.
//! - FCOS: FPN `'on_output'` with `relu_before_extra_convs` ([`FpnConfig::fcos`]); GN(32)
//!   towers. The plain `fcos_r50-caffe_fpn_gn-head_1x_coco` has no tower conv bias
//!   (`conv_bias='auto'`), the `center-normbbox-centeronreg-giou` variant has one: a
//!   checkpoint of the plain head loads into [`FcosHeadConfig::coco`] (what
//!   `mmdet_fcos_config(..).head` becomes with `conv_bias = false`, `norm_on_bbox = false`,
//!   `centerness_on_reg = false`); loading it into the other reports the tower biases
//!   missing.
//!
//! # What cannot map, and why
//!
//! - **Caffe-style ResNets** (mmdet `style='caffe'`: every FCOS config of mmdet 3.3.0
//!   except the `*_8xb8-amp-lsj-200e_coco` ones, and the `*-caffe_*` RetinaNets):
//!   the keys and shapes are those of the pytorch style, so the weights load, but caffe
//!   style puts a Bottleneck's stride on its first 1x1 conv and kdet's ResNet on the 3x3
//!   (pytorch style), and caffe weights expect BGR input in 0-255 less the mean with
//!   std 1. Loaded into kdet such a backbone computes other features; nothing in the file
//!   tells the styles apart, so this is not detected. Use pytorch-style checkpoints (e.g.
//!   `fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco`).
//! - **ResNet-152 and other depths**: kdet's ResNet has depths 18, 34, 50 and 101 (mmdet's
//!   `*_r101_*` teachers, e.g. LD's GFL R101, map like the R50: the same key names, more
//!   blocks in `layer3`); a ResNet-152's extra blocks are reported unexpected.
//! - DCN (`dconv` configs, `dcn_on_last_conv`): kdet has no deformable convs; their
//!   offset convs (`conv2.conv_offset.*`, `conv_offset.*`) are reported unexpected.
//!   FCOS's `cls_predictor_cfg=NormedConv2d` (a 1x1 classifier whose weights mmdet
//!   normalises in `forward`) is reported wrongly shaped (kdet's `conv_cls` is 3x3).
//! - mmdet's BN `norm_eval=True` (frozen statistics, trained affine terms) is a training
//!   setting, not a weight: any [`BackboneNorm`] reads the same keys.
//! - Not weights: the data preprocessor's mean / std (non-persistent buffers, not in the
//!   checkpoint) and resizing belong to kdet's data pipeline.

use crate::backbone::{BackboneConfig, BackboneNorm, ResNetConfig, resnet};
use crate::detector::{DetectorConfig, HeadConfig};
use crate::heads::TestConfig;
use crate::heads::atss::AtssHeadConfig;
use crate::heads::fcos::FcosHeadConfig;
use crate::heads::gfl::GflHeadConfig;
use crate::heads::retina::RetinaHeadConfig;
use crate::neck::FpnConfig;

use super::detectors::replace_prefix;
use super::sources::KeyMap;

/// Classes of mmdetection's COCO detectors (80 categories, no background class).
pub const MMDET_COCO_CLASSES: usize = 80;

/// `GFLHead`'s predictors (`mmdet/models/dense_heads/gfl_head.py` `_init_layers`).
pub const MMDET_GFL_HEAD_REMAP: &[(&str, &str)] = &[
    ("bbox_head.gfl_cls.", "head.gfl_cls."),
    ("bbox_head.gfl_reg.", "head.gfl_reg."),
];

/// `ATSSHead`'s predictors (`atss_head.py`).
pub const MMDET_ATSS_HEAD_REMAP: &[(&str, &str)] = &[
    ("bbox_head.atss_cls.", "head.atss_cls."),
    ("bbox_head.atss_reg.", "head.atss_reg."),
    ("bbox_head.atss_centerness.", "head.atss_centerness."),
];

/// `RetinaHead`'s predictors (`retina_head.py`; RetinaNet has no `scales`).
pub const MMDET_RETINA_HEAD_REMAP: &[(&str, &str)] = &[
    ("bbox_head.retina_cls.", "head.retina_cls."),
    ("bbox_head.retina_reg.", "head.retina_reg."),
];

/// `FCOSHead`'s predictors (`anchor_free_head.py` `_init_predictor`, `fcos_head.py`).
pub const MMDET_FCOS_HEAD_REMAP: &[(&str, &str)] = &[
    ("bbox_head.conv_cls.", "head.conv_cls."),
    ("bbox_head.conv_reg.", "head.conv_reg."),
    ("bbox_head.conv_centerness.", "head.conv_centerness."),
];

/// Keys of mmdet's heads that hold constants kdet computes, with the reason they are
/// ignored.
pub const MMDET_IGNORED: &[(&str, &str)] = &[(
    "bbox_head.integral.project",
    "GFL's Integral projection linspace(0, reg_max, reg_max + 1): a constant kdet computes",
)];

/// An mmdet detector key -> kdet [`Detector`](crate::Detector) path, with `head` the source's predictor
/// table (see the module docs). A key no rule knows is passed on unchanged (and reported
/// unexpected).
pub fn mmdet_key_to_path(key: &str, head: &[(&str, &str)]) -> KeyMap {
    if let Some((_, reason)) = MMDET_IGNORED.iter().find(|(k, _)| *k == key) {
        return KeyMap::Ignore(reason);
    }
    if let Some(body) = key.strip_prefix("backbone.") {
        return match resnet::torchvision_key_to_path(body) {
            Some(path) => KeyMap::To(format!("backbone.{path}")),
            None => KeyMap::To(key.to_string()),
        };
    }
    if let Some(path) = replace_prefix(key, head) {
        return KeyMap::To(path);
    }
    let parts: Vec<&str> = key.splitn(5, '.').collect();
    let path = match parts.as_slice() {
        // `ConvModule(norm_cfg=None)`: the conv is its `.conv`.
        [
            "neck",
            list @ ("lateral_convs" | "fpn_convs"),
            i,
            "conv",
            rest,
        ] => {
            format!("neck.{list}.{i}.{rest}")
        }
        // `ConvModule` with a norm: `.conv` and `.gn` / `.bn` (`build_norm_layer`'s
        // abbreviation), kdet's `ConvNormAct` `conv` / `norm`.
        [
            "bbox_head",
            tower @ ("cls_convs" | "reg_convs"),
            i,
            layer,
            rest,
        ] => {
            let field = match *layer {
                "conv" => "conv",
                "gn" | "bn" => "norm",
                _ => return KeyMap::To(key.to_string()),
            };
            format!("head.{tower}.{i}.{field}.{rest}")
        }
        ["bbox_head", "scales", l, "scale"] => format!("head.scales.{l}.scale"),
        _ => key.to_string(),
    };
    KeyMap::To(path)
}

/// mmdet's ResNet-50 (`out_indices=(0, 1, 2, 3)` with the FPN's `start_level=1`: C3-C5;
/// `frozen_stages=1`) with the given norm.
fn mmdet_resnet50(norm: BackboneNorm) -> BackboneConfig {
    BackboneConfig::ResNet(
        ResNetConfig::resnet50()
            .with_norm(norm)
            .with_frozen_stages(Some(1)),
    )
}

fn detector(norm: BackboneNorm, neck: FpnConfig, head: HeadConfig) -> DetectorConfig {
    DetectorConfig {
        backbone: mmdet_resnet50(norm),
        neck,
        head,
        test: TestConfig::new(),
    }
}

/// mmdet `gfl_r50_fpn_1x_coco` ([`MMDET_COCO_CLASSES`] for its COCO weights). `norm`:
/// `Batch` or `FrozenBatch` (mmdet trains BN with `norm_eval=True`; both load the same
/// keys).
pub fn mmdet_gfl_config(num_classes: usize, norm: BackboneNorm) -> DetectorConfig {
    detector(
        norm,
        FpnConfig::gfl(),
        HeadConfig::Gfl(GflHeadConfig::coco(num_classes)),
    )
}

/// mmdet `atss_r50_fpn_1x_coco`.
pub fn mmdet_atss_config(num_classes: usize, norm: BackboneNorm) -> DetectorConfig {
    detector(
        norm,
        FpnConfig::gfl(),
        HeadConfig::Atss(AtssHeadConfig::coco(num_classes)),
    )
}

/// mmdet `retinanet_r50_fpn_1x_coco` (test NMS IoU 0.5).
pub fn mmdet_retinanet_config(num_classes: usize, norm: BackboneNorm) -> DetectorConfig {
    let mut config = detector(
        norm,
        FpnConfig::retinanet(),
        HeadConfig::Retina(RetinaHeadConfig::coco(num_classes)),
    );
    config.test = TestConfig::new().with_iou_threshold(0.5);
    config
}

/// mmdet `fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco` with a
/// pytorch-style backbone, i.e. the head and neck of
/// `fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-lsj-200e_coco` (see
/// the module docs on caffe style and on the plain FCOS head).
pub fn mmdet_fcos_config(num_classes: usize, norm: BackboneNorm) -> DetectorConfig {
    detector(
        norm,
        FpnConfig::fcos(),
        HeadConfig::Fcos(FcosHeadConfig::coco_center_normbbox_centeronreg_giou(
            num_classes,
        )),
    )
}

#[cfg(test)]
mod tests;
