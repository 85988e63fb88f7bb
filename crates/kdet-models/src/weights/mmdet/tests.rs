//! Tests of the mmdet remap: spot checks, the key lists and architecture facts of the
//! models mmdetection 3.3.0 builds from its R50 COCO configs
//! (`tests/fixtures/weights/mmdet_detector_keys.json`), tiny synthetic state dicts of
//! each layout (round trip, one-error reports), and the forward passes of tiny
//! mmdet-built detectors with known weights (`tests/fixtures/weights/mmdet_forward.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use kdet_structures::{ImageBatch, ImageSize};
use serde_json::{Value, json};

use super::*;
use crate::backbone::SmallResNetConfig;
use crate::detector::{DenseHead, Detector};
use crate::layers::NormKind;
use crate::neck::ExtraFrom;
use crate::weights::detectors::{differing_tensors, save_detector_safetensors};
use crate::weights::{ImportOptions, StateDict, WeightSource, WeightsError, load_detector};

#[test]
fn mmdet_keys_map_onto_kdet_fields() {
    let to = |s: WeightSource, k: &str| s.map_key(k);
    let gfl = WeightSource::MmdetGfl;
    for (key, path) in [
        (
            "backbone.layer3.0.downsample.1.running_var",
            "backbone.layer3.0.downsample.bn.running_var",
        ),
        ("backbone.bn1.weight", "backbone.bn1.weight"),
        (
            "neck.lateral_convs.2.conv.weight",
            "neck.lateral_convs.2.weight",
        ),
        ("neck.fpn_convs.4.conv.bias", "neck.fpn_convs.4.bias"),
        (
            "bbox_head.cls_convs.3.conv.weight",
            "head.cls_convs.3.conv.weight",
        ),
        (
            "bbox_head.reg_convs.0.gn.bias",
            "head.reg_convs.0.norm.bias",
        ),
        (
            "bbox_head.reg_convs.1.bn.running_mean",
            "head.reg_convs.1.norm.running_mean",
        ),
        ("bbox_head.gfl_reg.weight", "head.gfl_reg.weight"),
        ("bbox_head.scales.4.scale", "head.scales.4.scale"),
    ] {
        assert_eq!(to(gfl, key), KeyMap::To(path.into()), "{key}");
    }
    assert_eq!(
        to(WeightSource::MmdetAtss, "bbox_head.atss_centerness.bias"),
        KeyMap::To("head.atss_centerness.bias".into())
    );
    assert_eq!(
        to(WeightSource::MmdetRetinanet, "bbox_head.retina_cls.weight"),
        KeyMap::To("head.retina_cls.weight".into())
    );
    assert_eq!(
        to(WeightSource::MmdetFcos, "bbox_head.conv_centerness.weight"),
        KeyMap::To("head.conv_centerness.weight".into())
    );
    assert!(matches!(
        to(gfl, "backbone.layer1.0.bn2.num_batches_tracked"),
        KeyMap::Ignore(_)
    ));
    // Another family's predictor, a DCN offset, an unknown norm name: passed on
    // unchanged, to be reported unexpected under the file's own key.
    for key in [
        "bbox_head.atss_cls.weight",
        "bbox_head.cls_convs.3.conv_offset.weight",
        "bbox_head.cls_convs.0.ln.weight",
        "backbone.fc.weight",
        "roi_head.bbox_head.fc_cls.weight",
    ] {
        assert_eq!(to(gfl, key), KeyMap::To(key.into()), "{key}");
    }
}

/// `tests/fixtures/weights/NAME`.
fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/weights")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The facts `scripts/weights/mmdet_detector_keys.py` records, as a kdet config has
/// them (only those that apply to its head family).
fn facts_of(config: &DetectorConfig) -> Value {
    let BackboneConfig::ResNet(backbone) = &config.backbone else {
        panic!("a ResNet backbone")
    };
    let neck = &config.neck;
    let groups = |norm: NormKind| match norm {
        NormKind::Group(g) => json!([g]),
        NormKind::None | NormKind::Batch => json!([]),
    };
    let strides = |s: &[usize]| json!(s.iter().map(|s| [s, s]).collect::<Vec<_>>());
    let mut f = json!({
        "backbone_depth": usize::from(backbone.depth),
        "fpn_add_extra_convs": match neck.extra_from {
            ExtraFrom::Input => "on_input",
            ExtraFrom::Output => "on_output",
        },
        "fpn_relu_before_extra_convs": neck.relu_before_extra_convs,
        "fpn_num_outs": neck.num_outs,
        "fpn_out_channels": neck.out_channels,
    });
    let anchor_facts = |a: &crate::priors::AnchorGeneratorConfig| {
        json!({
            "prior_strides": strides(&a.strides),
            "num_base_priors": vec![a.num_base_anchors(); a.strides.len()],
            "anchor_octave_base_scale": a.octave_base_scale,
            "anchor_scales_per_octave": a.scales_per_octave,
            "anchor_ratios": a.ratios,
            "anchor_center_offset": a.center_offset,
        })
    };
    let head = match &config.head {
        HeadConfig::Gfl(h) => {
            let mut v = anchor_facts(&h.anchor);
            v["head"] = json!("GFLHead");
            v["reg_max"] = json!(h.reg_max);
            v["tower_conv_bias"] = json!(h.norm == NormKind::None);
            v["head_group_norm_groups"] = groups(h.norm);
            v["num_classes"] = json!(h.num_classes);
            v["stacked_convs"] = json!(h.stacked_convs);
            v["feat_channels"] = json!(h.feat_channels);
            v
        }
        HeadConfig::Atss(h) => {
            let mut v = anchor_facts(&h.anchor);
            v["head"] = json!("ATSSHead");
            v["tower_conv_bias"] = json!(h.norm == NormKind::None);
            v["head_group_norm_groups"] = groups(h.norm);
            v["num_classes"] = json!(h.num_classes);
            v["stacked_convs"] = json!(h.stacked_convs);
            v["feat_channels"] = json!(h.feat_channels);
            v
        }
        HeadConfig::Retina(h) => {
            let mut v = anchor_facts(&h.anchor);
            v["head"] = json!("RetinaHead");
            v["tower_conv_bias"] = json!(h.norm == NormKind::None);
            v["head_group_norm_groups"] = groups(h.norm);
            v["num_classes"] = json!(h.num_classes);
            v["stacked_convs"] = json!(h.stacked_convs);
            v["feat_channels"] = json!(h.feat_channels);
            v
        }
        HeadConfig::Fcos(h) => json!({
            "head": "FCOSHead",
            "prior_strides": strides(&h.strides),
            "num_base_priors": vec![1; h.strides.len()],
            "point_offset": h.point_offset.unwrap_or(0.5),
            "norm_on_bbox": h.norm_on_bbox,
            "centerness_on_reg": h.centerness_on_reg,
            "center_sampling": h.assigner.center_sampling,
            "tower_conv_bias": h.conv_bias || h.norm == NormKind::None,
            "head_group_norm_groups": groups(h.norm),
            "num_classes": h.num_classes,
            "stacked_convs": h.stacked_convs,
            "feat_channels": h.feat_channels,
        }),
    };
    for (k, v) in head.as_object().expect("an object") {
        f[k] = v.clone();
    }
    f
}

/// The fixture's models, each with its source and the kdet config of its architecture.
fn cases() -> Vec<(&'static str, WeightSource, DetectorConfig)> {
    let n = MMDET_COCO_CLASSES;
    let norm = BackboneNorm::Batch;
    let mut plain_fcos = mmdet_fcos_config(n, norm);
    plain_fcos.head = HeadConfig::Fcos(FcosHeadConfig::coco(n));
    vec![
        (
            "gfl_r50_fpn_1x_coco",
            WeightSource::MmdetGfl,
            mmdet_gfl_config(n, norm),
        ),
        (
            "atss_r50_fpn_1x_coco",
            WeightSource::MmdetAtss,
            mmdet_atss_config(n, BackboneNorm::FrozenBatch),
        ),
        (
            "retinanet_r50_fpn_1x_coco",
            WeightSource::MmdetRetinanet,
            mmdet_retinanet_config(n, norm),
        ),
        (
            "fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco",
            WeightSource::MmdetFcos,
            mmdet_fcos_config(n, BackboneNorm::FrozenBatch),
        ),
        (
            "fcos_r50-caffe_fpn_gn-head_1x_coco",
            WeightSource::MmdetFcos,
            plain_fcos,
        ),
    ]
}

#[test]
fn mmdet_configs_match_the_architectures_mmdet_builds() {
    let lists = fixture("mmdet_detector_keys.json");
    for (name, _, config) in cases() {
        let built = &lists["architecture"][name];
        let ours = facts_of(&config);
        for (k, v) in ours.as_object().expect("an object") {
            assert!(
                same(&built[k], v),
                "{name}: `{k}`: mmdet {}, kdet {v}",
                built[k]
            );
        }
        // Every tower norm is a GN named `gn` (or none).
        assert!(
            built["tower_norm_name"] == json!("gn") || built["tower_norm"].is_null(),
            "{name}"
        );
        // The caveat of the module docs: mmdet's FCOS configs are caffe style.
        let style = if name.starts_with("fcos") {
            "caffe"
        } else {
            "pytorch"
        };
        assert_eq!(built["backbone_style"], style, "{name}");
    }
}

/// JSON equality with numbers compared as `f64` (Python writes `8`, kdet `8.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        _ => a == b,
    }
}

fn zeros_state(keys: &[Value], origin: &str) -> StateDict {
    StateDict::from_tensors(
        keys.iter().map(|entry| {
            let key = entry[0].as_str().expect("a key").to_string();
            let shape: Vec<usize> = serde_json::from_value(entry[1].clone()).expect("shape");
            let data = match entry[2].as_str() {
                Some("int64") => TensorData::zeros::<i64, _>(shape),
                Some("float32") => TensorData::zeros::<f32, _>(shape),
                other => panic!("{key}: unexpected dtype {other:?}"),
            };
            (key, data)
        }),
        origin,
    )
}

#[test]
fn mmdet_remaps_cover_the_full_key_lists() {
    let device = Device::flex();
    let lists = fixture("mmdet_detector_keys.json");
    for (name, source, config) in cases() {
        let keys = lists["models"][name].as_array().expect("a key list");
        let state = zeros_state(keys, name);
        let detector = config.init(&device);
        let num_tensors = crate::backbone::tensor_paths(&detector).len();
        // Strict: any missing, unexpected or wrongly-shaped key fails here.
        let (_, report) = load_detector(detector, &state, source, &ImportOptions::strict())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.loaded.len(), num_tensors, "{name}");
        assert!(report.constants.is_empty(), "{name}");
        // Only BN step counters and GFL's integral projection are ignored.
        assert!(
            report.ignored.iter().all(|(k, _)| {
                k.ends_with(".num_batches_tracked") || k == "bbox_head.integral.project"
            }),
            "{name}"
        );
        assert_eq!(
            report.loaded.len() + report.ignored.len(),
            keys.len(),
            "{name}"
        );
    }
}

/// kdet path (the `kdet` layout) -> the mmdet key of the same tensor: the remap
/// table read backwards, written out independently of it.
fn mmdet_key_of(path: &str) -> String {
    let p = path
        .replace(".downsample.conv.", ".downsample.0.")
        .replace(".downsample.bn.", ".downsample.1.");
    if let Some(rest) = p.strip_prefix("neck.") {
        let (conv, leaf) = rest.rsplit_once('.').expect("a dotted path");
        return format!("neck.{conv}.conv.{leaf}");
    }
    match p.strip_prefix("head.") {
        Some(rest) => format!("bbox_head.{}", rest.replace(".norm.", ".gn.")),
        None => p,
    }
}

fn tiny_detectors() -> Vec<(WeightSource, DetectorConfig)> {
    let head = [
        (
            WeightSource::MmdetGfl,
            HeadConfig::Gfl(GflHeadConfig::synth_128(3, 16)),
        ),
        (
            WeightSource::MmdetAtss,
            HeadConfig::Atss(AtssHeadConfig::synth_128(3, 16)),
        ),
        (
            WeightSource::MmdetRetinanet,
            HeadConfig::Retina(RetinaHeadConfig::synth_128(3, 16)),
        ),
        (
            WeightSource::MmdetFcos,
            HeadConfig::Fcos(FcosHeadConfig::synth_128(3, 16).with_conv_bias(true)),
        ),
    ];
    head.into_iter()
        .map(|(source, head)| {
            let config = DetectorConfig {
                backbone: BackboneConfig::SmallResNet(SmallResNetConfig::new(
                    8,
                    [8, 8, 16, 16],
                    [1, 1, 1, 1],
                )),
                neck: FpnConfig::gfl().with_out_channels(16).with_num_outs(3),
                head,
                test: TestConfig::new(),
            };
            (source, config)
        })
        .collect()
}

/// A tiny detector's tensors under mmdet's keys (scales as 0-d tensors, valued
/// `0.5 + level`, as mmcv's `Scale` stores them).
fn as_mmdet_state(detector: &Detector) -> BTreeMap<String, TensorData> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kdet.safetensors");
    save_detector_safetensors(detector, &path).expect("written");
    let kdet = StateDict::open(&path).expect("readable");
    kdet.keys()
        .into_iter()
        .map(|(k, _)| {
            let data = kdet.tensor_data(&k).expect("present").expect("readable");
            let data = match k.strip_prefix("head.scales.") {
                Some(rest) => {
                    let level: f32 = rest[..1].parse().expect("a level");
                    TensorData::new(vec![0.5 + level], Vec::<usize>::new())
                }
                None => data,
            };
            (mmdet_key_of(&k), data)
        })
        .collect()
}

#[test]
fn tiny_mmdet_layouts_load_tensor_for_tensor() {
    let device = Device::flex();
    for (source, config) in tiny_detectors() {
        let original = config.init(&device);
        let state = as_mmdet_state(&original);
        assert!(
            state
                .keys()
                .any(|k| k.starts_with("neck.lateral_convs.0.conv.")),
            "{source}"
        );
        let fresh = config.init(&device);
        assert!(!differing_tensors(&original, &fresh).is_empty());
        let (loaded, report) = load_detector(
            fresh,
            &StateDict::from_tensors(state.clone(), "tiny"),
            source,
            &ImportOptions::strict(),
        )
        .unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(report.loaded.len(), state.len(), "{source}");
        // Every tensor equal, except the scales, which the state dict set to
        // 0.5 + level (0-d tensors read as [1]).
        let differ = differing_tensors(&original, &loaded);
        assert!(
            differ.iter().all(|p| p.starts_with("head.scales.")),
            "{source}: {differ:?}"
        );
        let scales = match &loaded.head {
            DenseHead::Gfl(h) => &h.scales,
            DenseHead::Atss(h) => &h.scales,
            DenseHead::Fcos(h) => &h.scales,
            DenseHead::Retina(_) => continue,
        };
        for (l, s) in scales.iter().enumerate() {
            assert_eq!(s.scale.val().into_scalar::<f32>(), 0.5 + l as f32);
        }
    }
}

#[test]
fn missing_unexpected_and_misshapen_keys_are_one_error() {
    let device = Device::flex();
    let (source, config) = tiny_detectors().remove(0);
    let mut state = as_mmdet_state(&config.init(&device));
    assert!(state.remove("neck.fpn_convs.0.conv.bias").is_some());
    state.insert(
        "bbox_head.atss_centerness.weight".into(),
        TensorData::zeros::<f32, _>([1, 16, 3, 3]),
    );
    state.insert(
        "bbox_head.gfl_cls.weight".into(),
        TensorData::zeros::<f32, _>([4, 16, 3, 3]),
    );
    let state = StateDict::from_tensors(state, "tiny");
    let err = load_detector(
        config.init(&device),
        &state,
        source,
        &ImportOptions::strict(),
    )
    .expect_err("does not fit");
    let text = err.to_string();
    let WeightsError::Mismatch(m) = err else {
        panic!("a mismatch, got {err}")
    };
    assert_eq!(m.missing, ["neck.fpn_convs.0.bias"]);
    assert_eq!(m.unexpected, ["bbox_head.atss_centerness.weight"]);
    assert_eq!(m.wrong_shape.len(), 1, "{m:?}");
    assert_eq!(m.wrong_shape[0].key, "bbox_head.gfl_cls.weight");
    assert_eq!(m.wrong_shape[0].expected, [3, 16, 3, 3]);
    assert_eq!(m.wrong_shape[0].found, [4, 16, 3, 3]);
    assert!(
        text.contains("1 missing, 1 unexpected, 1 wrongly shaped"),
        "{text}"
    );
    // GFL weights are not for an ATSS detector.
    let (_, atss) = tiny_detectors().remove(1);
    assert!(matches!(
        load_detector(atss.init(&device), &state, source, &ImportOptions::strict()),
        Err(WeightsError::WrongTarget { .. })
    ));
}

/// `scripts/weights/known_values.py`'s value of element `i` of the tensor at position `t`
/// of the sorted key list, and `mmdet_forward.py`'s rules for the keys it has none for.
fn known_value(key: &str, t: usize, shape: &[usize], i: usize) -> f64 {
    if let Some(level) = key
        .strip_prefix("bbox_head.scales.")
        .and_then(|r| r.strip_suffix(".scale"))
    {
        return 0.75 + 0.125 * level.parse::<f64>().expect("a level");
    }
    let u = ((i as u64 * 2_654_435_761 + t as u64 * 40_503 + 12_345) % (1 << 32)) as f64
        / 2f64.powi(31)
        - 1.0;
    match shape {
        [_, c, kh, kw] => u * (3.0 / (c * kh * kw) as f64).sqrt(),
        _ if key.ends_with("running_var") => 0.75 + 0.25 * u,
        _ if key.ends_with("running_mean") || key.ends_with("bias") => 0.1 * u,
        _ if key.ends_with("weight") => 1.0 + 0.2 * u,
        _ => panic!("no known-value rule for {key}"),
    }
}

/// The state dict `mmdet_forward.py` loaded into a tiny mmdet detector: every tensor by
/// formula; BN step counters and GFL's integral projection as mmdet builds them.
fn known_state(keys: &[Value], origin: &str) -> StateDict {
    StateDict::from_tensors(
        keys.iter().enumerate().map(|(t, entry)| {
            let key = entry[0].as_str().expect("a key").to_string();
            let shape: Vec<usize> = serde_json::from_value(entry[1].clone()).expect("shape");
            let n: usize = shape.iter().product();
            let data = if key.ends_with("num_batches_tracked") {
                TensorData::new(vec![t as i64], shape)
            } else if key.ends_with("integral.project") {
                TensorData::new((0..n).map(|i| i as f32).collect(), shape)
            } else {
                let v = (0..n)
                    .map(|i| known_value(&key, t, &shape, i) as f32)
                    .collect();
                TensorData::new(v, shape)
            };
            (key, data)
        }),
        origin,
    )
}

/// The kdet detectors of `mmdet_forward.py`'s tiny mmdet models: mmdet ResNet-18 with
/// `base_channels=4`, FPN of 8 channels P3-P7, heads of 2 blocks x 8 channels with GN(2),
/// 2 classes.
fn tiny_mmdet_twins() -> Vec<(&'static str, WeightSource, DetectorConfig)> {
    let k = 2;
    let gn = NormKind::Group(2);
    let neck = |extra: ExtraFrom, relu: bool| {
        FpnConfig::new()
            .with_out_channels(8)
            .with_extra_from(extra)
            .with_relu_before_extra_convs(relu)
    };
    let fcos = || {
        FcosHeadConfig::new(k, 8)
            .with_feat_channels(8)
            .with_stacked_convs(2)
            .with_norm(gn)
    };
    let cases = [
        (
            "gfl",
            WeightSource::MmdetGfl,
            neck(ExtraFrom::Output, false),
            HeadConfig::Gfl(
                GflHeadConfig::new(k, 8)
                    .with_feat_channels(8)
                    .with_stacked_convs(2)
                    .with_norm(gn)
                    .with_reg_max(4),
            ),
        ),
        (
            "atss",
            WeightSource::MmdetAtss,
            neck(ExtraFrom::Output, false),
            HeadConfig::Atss(
                AtssHeadConfig::new(k, 8)
                    .with_feat_channels(8)
                    .with_stacked_convs(2)
                    .with_norm(gn),
            ),
        ),
        (
            "retinanet",
            WeightSource::MmdetRetinanet,
            neck(ExtraFrom::Input, false),
            HeadConfig::Retina(
                RetinaHeadConfig::new(k, 8)
                    .with_feat_channels(8)
                    .with_stacked_convs(2),
            ),
        ),
        (
            "fcos_normbbox",
            WeightSource::MmdetFcos,
            neck(ExtraFrom::Output, true),
            HeadConfig::Fcos(
                fcos()
                    .with_conv_bias(true)
                    .with_norm_on_bbox(true)
                    .with_centerness_on_reg(true),
            ),
        ),
        (
            "fcos",
            WeightSource::MmdetFcos,
            neck(ExtraFrom::Output, true),
            HeadConfig::Fcos(fcos()),
        ),
    ];
    cases
        .into_iter()
        .map(|(name, source, neck, head)| {
            let config = DetectorConfig {
                backbone: BackboneConfig::SmallResNet(SmallResNetConfig::new(
                    4,
                    [4, 8, 16, 32],
                    [2, 2, 2, 2],
                )),
                neck,
                head,
                test: TestConfig::new(),
            };
            (name, source, config)
        })
        .collect()
}

#[test]
fn tiny_mmdet_detectors_give_mmdets_head_outputs() {
    let device = Device::flex();
    let forward = fixture("mmdet_forward.json");
    let shape: [usize; 4] = serde_json::from_value(forward["input_shape"].clone()).expect("shape");
    let n: usize = shape.iter().product();
    let x = Tensor::<4>::from_data(
        TensorData::new(
            (0..n)
                .map(|i| (0.05 * i as f64 + 0.2).sin() as f32)
                .collect(),
            shape,
        ),
        &device,
    );
    let size = ImageSize {
        height: shape[2] as u32,
        width: shape[3] as u32,
    };
    let batch = ImageBatch::new(x, vec![size], vec![size]).expect("a batch");
    for (name, source, config) in tiny_mmdet_twins() {
        let model = &forward["models"][name];
        let keys = model["keys"].as_array().expect("keys");
        let (detector, _) = load_detector(
            config.init(&device),
            &known_state(keys, name),
            source,
            &ImportOptions::strict(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = detector.forward(&batch);
        for (kind, levels) in model["outputs"].as_object().expect("outputs") {
            for (l, want) in levels.as_array().expect("levels").iter().enumerate() {
                let level = &out.head[l];
                let map = match kind.as_str() {
                    "cls_logits" => level.cls_logits.clone(),
                    "box_regression" => level.box_regression.clone(),
                    "centerness" => level.centerness.clone().expect("a centerness map"),
                    other => panic!("unknown output {other}"),
                };
                let at = format!("{name} {kind} level {l}");
                let want_shape: Vec<usize> =
                    serde_json::from_value(want["shape"].clone()).expect("shape");
                assert_eq!(map.dims().to_vec(), want_shape, "{at}");
                let got = map.into_data().try_to_vec::<f32>().expect("f32");
                // float32 on both sides, different summation orders: relative 1e-4 of
                // the map's scale.
                let scale = got.iter().fold(1e-3f64, |m, v| m.max(v.abs() as f64));
                let sum: f64 = got.iter().map(|v| *v as f64).sum();
                let want_sum = want["sum"].as_f64().expect("sum");
                assert!(
                    (sum - want_sum).abs() <= 1e-4 * scale * got.len() as f64,
                    "{at}: sum {sum} vs mmdet {want_sum}"
                );
                for sample in want["samples"].as_array().expect("samples") {
                    let i = sample[0].as_u64().expect("index") as usize;
                    let v = sample[1].as_f64().expect("value");
                    assert!(
                        (got[i] as f64 - v).abs() <= 1e-4 * scale,
                        "{at}[{i}]: {} vs mmdet {v}",
                        got[i]
                    );
                }
            }
        }
    }
}
