//! Whole detectors in and out: torchvision's RetinaNet and FCOS state dicts onto kdet's
//! [`Detector`], and a detector's own tensors to a SafeTensors file (the `kdet` layout).
//! mmdetection's detectors have their own module, [`super::mmdet`].
//!
//! # torchvision `retinanet_resnet50_fpn` / `fcos_resnet50_fpn`
//!
//! The kdet configs that reproduce their architecture are
//! [`torchvision_retinanet_config`] and [`torchvision_fcos_config`]. What had to be chosen
//! (each read from the built torchvision models, recorded in
//! `tests/fixtures/weights/torchvision_detector_keys.json`):
//!
//! - FPN: torchvision's `LastLevelP6P7(256, 256)` computes P6 from **P5** (`use_P5`) and
//!   P7 = conv(ReLU(P6)), for RetinaNet as well: that is kdet's
//!   [`FpnConfig::fcos`] (`ExtraFrom::Output`, `relu_before_extra_convs`), not
//!   [`FpnConfig::retinanet`] (P6 from C5, mmdet's `'on_input'`; its P6 conv is
//!   `[256, 2048, 3, 3]`, so torchvision's `extra_blocks.p6` is reported wrongly shaped).
//! - RetinaNet head: four conv3x3 + bias + ReLU per tower, no norm (kdet default);
//!   `cls_logits` `A·K` channels anchor-major (`view(N, A, K, H, W)`), `bbox_reg` `A·4`
//!   (`view(N, A, 4, H, W)`), anchors ratio-major, scale-minor, centred on the cell
//!   corner: all as kdet. `K = 91` (torchvision's COCO category ids, index 0 unused).
//! - FCOS head: conv3x3 **with bias** + GN(32) + ReLU (`conv_bias`), centerness on the
//!   regression tower (`bbox_ctrness`, `centerness_on_reg`), distances
//!   `ReLU(bbox_reg) · stride` (`BoxLinearCoder(normalize_by_size=True)` with anchor
//!   size = stride: kdet's `norm_on_bbox`), and points at the cell corner `x · stride`
//!   (torchvision's anchor centres; kdet's default is the cell centre, so the preset sets
//!   `point_offset = 0`).
//!
//! What cannot map, and why:
//! - FCOS `scales.{l}.scale` (kdet, mmdet `Scale`): torchvision has no per-level scale.
//!   It is the identity there, so the import sets every scale to 1 (listed in the
//!   report's `constants`), not left at an initial value.
//! - `*.num_batches_tracked`: burn keeps no BatchNorm step counter (ignored, reported).
//! - Not weights, so not in any table, and different: RetinaNet's anchor sizes are
//!   truncated to integers in torchvision (`int(32 · 2^(1/3)) = 40`, `50`) while kdet's
//!   octave scales give 40.3 and 50.8 (< 1.6% apart); torchvision rounds base anchors
//!   to integers. Input normalisation and resizing (`GeneralizedRCNNTransform`: ImageNet
//!   mean/std on RGB in [0, 1], min size 800) belong to the data pipeline.

use std::path::Path;

use burn::module::Module;
use burn::tensor::TensorData;
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};

use super::sources::{KeyMap, Target, WeightSource};
use super::{ImportOptions, ImportReport, StateDict, WeightsError, import_with_constants};
use crate::backbone::{BackboneConfig, BackboneNorm, ResNetConfig, resnet};
use crate::detector::{DenseHead, Detector, DetectorConfig, HeadConfig};
use crate::family::ModelFamily;
use crate::heads::TestConfig;
use crate::heads::fcos::FcosHeadConfig;
use crate::heads::retina::RetinaHeadConfig;
use crate::model::Model;
use crate::neck::FpnConfig;

/// Classes of torchvision's COCO detectors (`num_classes=91`: category ids 1-90, index 0
/// unused).
pub const TORCHVISION_COCO_CLASSES: usize = 91;

/// torchvision `BackboneWithFPN.fpn` key prefix -> kdet `Fpn` path prefix, for a
/// three-input FPN (C3-C5) with two extra levels. torchvision wraps each conv in a
/// `Conv2dNormActivation` without norm (`.0`); its extra levels are named `p6` / `p7`,
/// kdet's are the `fpn_convs` after the three output convs.
pub const TORCHVISION_FPN_REMAP: &[(&str, &str)] = &[
    ("backbone.fpn.inner_blocks.0.0.", "neck.lateral_convs.0."),
    ("backbone.fpn.inner_blocks.1.0.", "neck.lateral_convs.1."),
    ("backbone.fpn.inner_blocks.2.0.", "neck.lateral_convs.2."),
    ("backbone.fpn.layer_blocks.0.0.", "neck.fpn_convs.0."),
    ("backbone.fpn.layer_blocks.1.0.", "neck.fpn_convs.1."),
    ("backbone.fpn.layer_blocks.2.0.", "neck.fpn_convs.2."),
    ("backbone.fpn.extra_blocks.p6.", "neck.fpn_convs.3."),
    ("backbone.fpn.extra_blocks.p7.", "neck.fpn_convs.4."),
];

/// torchvision `RetinaNetHead` key prefix -> kdet `RetinaHead` path prefix (the tower
/// blocks `conv.{i}.0` are rewritten by [`torchvision_retinanet_key_to_path`]).
pub const TORCHVISION_RETINA_HEAD_REMAP: &[(&str, &str)] = &[
    ("head.classification_head.cls_logits.", "head.retina_cls."),
    ("head.regression_head.bbox_reg.", "head.retina_reg."),
];

/// torchvision `FCOSHead` key prefix -> kdet `FcosHead` path prefix (the tower blocks
/// `conv.{3i}` / `conv.{3i+1}` are rewritten by [`torchvision_fcos_key_to_path`]).
pub const TORCHVISION_FCOS_HEAD_REMAP: &[(&str, &str)] = &[
    ("head.classification_head.cls_logits.", "head.conv_cls."),
    ("head.regression_head.bbox_reg.", "head.conv_reg."),
    (
        "head.regression_head.bbox_ctrness.",
        "head.conv_centerness.",
    ),
];

/// The tower of a torchvision head key: (`cls` / `reg`, tower index in the `conv`
/// `nn.Sequential`, the rest of the key).
fn tower_key(key: &str) -> Option<(&'static str, usize, &str)> {
    let (tower, rest) = if let Some(r) = key.strip_prefix("head.classification_head.conv.") {
        ("cls", r)
    } else if let Some(r) = key.strip_prefix("head.regression_head.conv.") {
        ("reg", r)
    } else {
        return None;
    };
    let (index, rest) = rest.split_once('.')?;
    Some((tower, index.parse().ok()?, rest))
}

/// `key` with the first matching `from` prefix of `table` replaced by its `to`.
pub(super) fn replace_prefix(key: &str, table: &[(&str, &str)]) -> Option<String> {
    table
        .iter()
        .find_map(|(from, to)| key.strip_prefix(from).map(|rest| format!("{to}{rest}")))
}

/// The parts both detectors share: `backbone.body.*` (torchvision ResNet keys, see
/// [`resnet::TORCHVISION_KEY_REMAP`]) and `backbone.fpn.*`.
fn backbone_and_fpn(key: &str) -> Option<String> {
    if let Some(body) = key.strip_prefix("backbone.body.") {
        return resnet::torchvision_key_to_path(body).map(|p| format!("backbone.{p}"));
    }
    replace_prefix(key, TORCHVISION_FPN_REMAP)
}

/// A torchvision `retinanet_resnet50_fpn` key -> kdet [`Detector`] path. A key no rule
/// knows is passed on unchanged (and reported unexpected).
pub fn torchvision_retinanet_key_to_path(key: &str) -> KeyMap {
    if let Some(p) =
        backbone_and_fpn(key).or_else(|| replace_prefix(key, TORCHVISION_RETINA_HEAD_REMAP))
    {
        return KeyMap::To(p);
    }
    // `conv.{i}` is `Conv2dNormActivation(norm_layer=None)` = `[Conv2d, ReLU]`.
    match tower_key(key) {
        Some((tower, i, rest)) if rest.starts_with("0.") => {
            KeyMap::To(format!("head.{tower}_convs.{i}.conv.{}", &rest[2..]))
        }
        _ => KeyMap::To(key.to_string()),
    }
}

/// A torchvision `fcos_resnet50_fpn` key -> kdet [`Detector`] path. A key no rule knows
/// is passed on unchanged (and reported unexpected).
pub fn torchvision_fcos_key_to_path(key: &str) -> KeyMap {
    if let Some(p) =
        backbone_and_fpn(key).or_else(|| replace_prefix(key, TORCHVISION_FCOS_HEAD_REMAP))
    {
        return KeyMap::To(p);
    }
    // `conv` is a flat `nn.Sequential` of `[Conv2d, GroupNorm, ReLU] x 4`: index 3i is
    // block i's conv, 3i + 1 its GN.
    match tower_key(key) {
        Some((tower, j, rest)) if j % 3 != 2 => {
            let field = if j % 3 == 0 { "conv" } else { "norm" };
            KeyMap::To(format!("head.{tower}_convs.{}.{field}.{rest}", j / 3))
        }
        _ => KeyMap::To(key.to_string()),
    }
}

/// torchvision's ResNet-50 + FPN (C3-C5 -> P3-P7, P6 from P5, ReLU before P7).
fn torchvision_resnet50_fpn(norm: BackboneNorm) -> (BackboneConfig, FpnConfig) {
    (
        BackboneConfig::ResNet(ResNetConfig::resnet50().with_norm(norm)),
        FpnConfig::fcos(),
    )
}

/// The kdet detector of torchvision's `retinanet_resnet50_fpn` architecture (see the
/// module docs): backbone norm `norm` (`Batch` for a checkpoint built with
/// `weights=None`, either works for loading), `num_classes` ([`TORCHVISION_COCO_CLASSES`]
/// for torchvision's COCO weights).
pub fn torchvision_retinanet_config(num_classes: usize, norm: BackboneNorm) -> DetectorConfig {
    let (backbone, neck) = torchvision_resnet50_fpn(norm);
    DetectorConfig {
        backbone,
        neck,
        head: HeadConfig::Retina(RetinaHeadConfig::coco(num_classes)),
        test: TestConfig::new(),
    }
}

/// The kdet detector of torchvision's `fcos_resnet50_fpn` architecture (see the module
/// docs).
pub fn torchvision_fcos_config(num_classes: usize, norm: BackboneNorm) -> DetectorConfig {
    let (backbone, neck) = torchvision_resnet50_fpn(norm);
    DetectorConfig {
        backbone,
        neck,
        head: HeadConfig::Fcos(
            FcosHeadConfig::coco(num_classes)
                .with_conv_bias(true)
                .with_centerness_on_reg(true)
                .with_norm_on_bbox(true)
                .with_point_offset(Some(0.0)),
        ),
        test: TestConfig::new(),
    }
}

/// The family a detector's head belongs to, as a [`Target`].
fn head_target(detector: &Detector) -> (Target, &'static str) {
    match &detector.head {
        DenseHead::Retina(_) => (Target::RetinaNet, "RetinaNet"),
        DenseHead::Fcos(_) => (Target::Fcos, "FCOS"),
        DenseHead::Gfl(_) => (Target::Gfl, "GFL"),
        DenseHead::Atss(_) => (Target::Atss, "ATSS"),
    }
}

/// Loads a whole detector's weights from a state dict of `source`'s layout: the
/// detector sources (`torchvision-retinanet`, `torchvision-fcos`, `mmdet-gfl`,
/// `mmdet-atss`, `mmdet-retinanet`, `mmdet-fcos`) and `kdet` (what
/// [`save_detector_safetensors`] writes). A source of another head family is
/// [`WeightsError::WrongTarget`].
pub fn load_detector(
    detector: Detector,
    state: &StateDict,
    source: WeightSource,
    options: &ImportOptions,
) -> Result<(Detector, ImportReport), WeightsError> {
    let (target, name) = head_target(&detector);
    if source.target() != target && source.target() != Target::Any {
        return Err(WeightsError::WrongTarget {
            source_name: source.name(),
            target: name,
        });
    }
    // torchvision's FCOS has no per-level scale: the identity.
    let constants: Vec<(String, TensorData, &'static str)> = match (&detector.head, source) {
        (DenseHead::Fcos(h), WeightSource::TorchvisionFcos) => (0..h.scales.len())
            .map(|l| {
                (
                    format!("head.scales.{l}.scale"),
                    TensorData::new(vec![1f32], [1]),
                    "torchvision FCOS has no per-level Scale (the identity): set to 1",
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    import_with_constants(
        detector,
        state,
        source.name(),
        |key| source.map_key(key),
        &constants,
        options,
    )
}

/// Opens `path` and loads it into `detector` ([`StateDict::open`] + [`load_detector`]).
pub fn load_detector_file(
    detector: Detector,
    path: impl AsRef<Path>,
    source: WeightSource,
    options: &ImportOptions,
) -> Result<(Detector, ImportReport), WeightsError> {
    let state = StateDict::open(path)?;
    load_detector(detector, &state, source, options)
}

/// Loads a whole model of any family from a state dict: a dense detector through
/// [`load_detector`] (every detector layout), a query model from the `kdet` layout only
/// (what `kdet export` writes; no other layout of those families is mapped yet).
pub fn load_model(
    model: Model,
    state: &StateDict,
    source: WeightSource,
    options: &ImportOptions,
) -> Result<(Model, ImportReport), WeightsError> {
    match model {
        Model::Dense(d) => {
            load_detector(d, state, source, options).map(|(d, r)| (Model::Dense(d), r))
        }
        model => {
            if source != WeightSource::Kdet {
                return Err(WeightsError::WrongTarget {
                    source_name: source.name(),
                    target: ModelFamily::family(&model),
                });
            }
            import_with_constants(
                model,
                state,
                source.name(),
                |key| source.map_key(key),
                &[],
                options,
            )
        }
    }
}

/// Opens `path` and loads it into `model` ([`StateDict::open`] + [`load_model`]).
pub fn load_model_file(
    model: Model,
    path: impl AsRef<Path>,
    source: WeightSource,
    options: &ImportOptions,
) -> Result<(Model, ImportReport), WeightsError> {
    let state = StateDict::open(path)?;
    load_model(model, &state, source, options)
}

/// Writes every tensor of `module` (BatchNorm running statistics included) to a
/// SafeTensors file under kdet's paths with enum variants left out, BatchNorm / GroupNorm
/// affine terms named `weight` / `bias` as in PyTorch, and the metadata
/// `kdet_layout = kdet` plus `extra`. [`WeightSource::Kdet`] reads it back. With
/// `overwrite` false an existing file is an error. Returns the number of tensors.
pub fn save_safetensors<M: Module>(
    module: &M,
    path: impl AsRef<Path>,
    overwrite: bool,
    extra: &[(&str, String)],
) -> Result<usize, WeightsError> {
    let path = path.as_ref();
    let mut store = SafetensorsStore::from_file(path)
        .skip_enum_variants(true)
        .with_to_adapter(BurnToPyTorchAdapter)
        .overwrite(overwrite)
        .metadata("kdet_layout", "kdet");
    for (k, v) in extra {
        store = store.metadata(*k, v.clone());
    }
    module
        .save_into(&mut store)
        .map_err(|e| WeightsError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(module.collect(None, None, true).len())
}

/// A detector's weights (backbone, neck, head; no distillation modules, which live
/// outside [`Detector`]) as a SafeTensors file of the `kdet` layout, replacing `path`.
/// The metadata names the head family (`kdet_head`).
pub fn save_detector_safetensors(
    detector: &Detector,
    path: impl AsRef<Path>,
) -> Result<usize, WeightsError> {
    save_safetensors(
        detector,
        path,
        true,
        &[("kdet_head", detector.head.family().to_string())],
    )
}

/// The kdet paths (enum variants left out) at which two modules of one architecture hold
/// different tensors (shape, dtype or any value, bit for bit), plus paths present in only
/// one of them. Empty when every tensor is equal (what `kdet export` checks after writing).
pub fn differing_tensors<M: Module>(a: &M, b: &M) -> Vec<String> {
    let read = |m: &M| -> std::collections::BTreeMap<String, Option<TensorData>> {
        m.collect(None, None, true)
            .into_iter()
            .map(|t| (t.name.clone(), burn_store::bridge::to_data(&t).ok()))
            .collect()
    };
    let (a, b) = (read(a), read(b));
    let mut out: Vec<String> = a
        .iter()
        .filter(|(path, data)| match (data, b.get(*path)) {
            (Some(x), Some(Some(y))) => x != y,
            _ => true,
        })
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_keys_map_onto_kdet_fields() {
        let r = torchvision_retinanet_key_to_path;
        assert_eq!(
            r("backbone.body.layer2.0.downsample.1.running_var"),
            KeyMap::To("backbone.layer2.0.downsample.bn.running_var".into())
        );
        assert_eq!(
            r("backbone.fpn.extra_blocks.p7.bias"),
            KeyMap::To("neck.fpn_convs.4.bias".into())
        );
        assert_eq!(
            r("head.regression_head.conv.3.0.weight"),
            KeyMap::To("head.reg_convs.3.conv.weight".into())
        );
        assert_eq!(
            r("head.classification_head.cls_logits.bias"),
            KeyMap::To("head.retina_cls.bias".into())
        );
        let f = torchvision_fcos_key_to_path;
        assert_eq!(
            f("head.classification_head.conv.9.weight"),
            KeyMap::To("head.cls_convs.3.conv.weight".into())
        );
        assert_eq!(
            f("head.regression_head.conv.4.bias"),
            KeyMap::To("head.reg_convs.1.norm.bias".into())
        );
        assert_eq!(
            f("head.regression_head.bbox_ctrness.weight"),
            KeyMap::To("head.conv_centerness.weight".into())
        );
        // A ReLU index has no weights: a key there is not torchvision's, passed on to be
        // reported unexpected.
        assert_eq!(
            f("head.regression_head.conv.2.weight"),
            KeyMap::To("head.regression_head.conv.2.weight".into())
        );
    }
}
