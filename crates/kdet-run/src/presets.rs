//! The named experiments the shipped `configs/*.toml` are written from (a test checks that
//! every file equals its preset).

use std::path::PathBuf;

use anyhow::{Context, Result};
use kdet_data::synth::CLASS_NAMES;
use kdet_models::backbone::{BackboneConfig, BackboneNorm, ResNetConfig, SmallResNetConfig};
use kdet_models::heads::gfl::GflHeadConfig;
use kdet_models::heads::inference::TestConfig;
use kdet_models::neck::FpnConfig;
use kdet_models::query::Mask2FormerConfig;
use kdet_models::query::mask2former::{MsDeformAttnEncoderConfig, PixelDecoderConfig};
use kdet_models::{DetectorConfig, HeadConfig, ModelConfig};
use kdet_train::{
    AdamWConfig, CheckpointConfig, DecayConfig, Duration, GradClipConfig, OptimizerConfig,
    ScheduleConfig, TrainConfig, WarmupConfig,
};

use crate::experiment::{
    CocoData, DataConfig, DataSource, EvalConfig, Experiment, LoaderSettings, SynthData,
};

/// Names of the presets; `configs/<name>.toml` is each one written out with comments.
pub const PRESET_NAMES: &[&str] = &[
    "gfl_r50_fpn_1x_coco",
    "gfl_synth_teacher",
    "gfl_synth_student",
    "gfl_synth_student_narrow",
    "m2f_synth_teacher",
    "m2f_synth_teacher_scratch",
    "m2f_synth_student",
];

/// The named preset, resolved; the error lists the names.
pub fn resolved(name: &str) -> Result<Experiment> {
    preset(name)
        .with_context(|| {
            format!(
                "no preset named `{name}` (presets: {})",
                PRESET_NAMES.join(", ")
            )
        })?
        .resolve()
        .with_context(|| format!("preset {name}"))
}

/// The named experiment, unresolved (as its shipped file reads).
pub fn preset(name: &str) -> Option<Experiment> {
    match name {
        "gfl_r50_fpn_1x_coco" => Some(gfl_r50_fpn_1x_coco()),
        "gfl_synth_teacher" => Some(synth_experiment(
            SmallResNetConfig::teacher_128(),
            SYNTH_NECK_CHANNELS,
        )),
        "gfl_synth_student" => Some(synth_experiment(
            SmallResNetConfig::student_128(),
            SYNTH_NECK_CHANNELS,
        )),
        "gfl_synth_student_narrow" => Some(synth_experiment(
            SmallResNetConfig::student_128(),
            SYNTH_NECK_CHANNELS / 2,
        )),
        "m2f_synth_teacher" => {
            let mut e = mask_experiment(mask2former_teacher());
            e.pretrained = Some(PathBuf::from(PRETRAINED_MASK_TEACHER));
            Some(e)
        }
        "m2f_synth_teacher_scratch" => Some(mask_experiment(mask2former_teacher())),
        "m2f_synth_student" => Some(mask_experiment(mask2former_student())),
        _ => None,
    }
}

/// GFL-R50-FPN 1x on COCO (mmdetection `configs/gfl/gfl_r50_fpn_1x_coco.py`).
fn gfl_r50_fpn_1x_coco() -> Experiment {
    let coco = |p: &str| PathBuf::from("data/coco").join(p);
    Experiment {
        pretrained: None,
        pretrained_source: None,
        teacher: None,
        distill: None,
        data: DataConfig {
            source: DataSource::Coco(CocoData {
                train_json: coco("annotations/instances_train2017.json"),
                train_images: coco("train2017"),
                val_json: coco("annotations/instances_val2017.json"),
                val_images: coco("val2017"),
            }),
            size_divisor: 32,
            train_transforms: None,
            test_transforms: None,
            loader: LoaderSettings::default(),
        },
        model: DetectorConfig {
            // mmdet: BN(requires_grad=True) with norm_eval=True (frozen statistics,
            // trained affine terms) and frozen_stages=1; FrozenBatch is the nearest norm
            // here (detectron2's choice; the affine terms stay frozen too).
            backbone: BackboneConfig::ResNet(
                ResNetConfig::resnet50()
                    .with_norm(BackboneNorm::FrozenBatch)
                    .with_frozen_stages(Some(1)),
            ),
            neck: FpnConfig::gfl(),
            head: HeadConfig::Gfl(GflHeadConfig::coco(80)),
            test: TestConfig::new(),
        }
        .into(),
        // mmdet 1x: SGD 0.01 (batch 16), momentum 0.9, wd 1e-4, no grad clip, warm-up
        // 500 iterations from 0.001, steps at epochs 8 and 11 of 12.
        train: TrainConfig::default(),
        eval: EvalConfig::default(),
    }
}

/// Width of the FPN and the head of the main synthetic pair (teacher and student alike, so
/// LD compares the same anchor grid and neck/head weights are interchangeable); the narrow
/// student has half of it.
const SYNTH_NECK_CHANNELS: usize = 64;
/// Length of every synthetic schedule (see `configs/gfl_synth_teacher.toml` for the
/// measured step times this is chosen from).
const SYNTH_EPOCHS: u64 = 16;
/// The lr drops 10x at these epochs: mmdet 1x's 8 and 11 of 12, scaled to 16 and rounded up.
const SYNTH_MILESTONES: [u64; 2] = [11, 15];
/// Images per step on the synthetic data.
const SYNTH_BATCH: usize = 8;

/// A GFL detector on the built-in 128x128 data with FPN P3-P5 of `channels` channels.
fn synth_detector(backbone: SmallResNetConfig, channels: usize) -> DetectorConfig {
    // The head's input channels and strides come from the neck (DetectorConfig::new).
    DetectorConfig::new(
        BackboneConfig::SmallResNet(backbone),
        FpnConfig::gfl()
            .with_out_channels(channels)
            .with_num_outs(3),
        HeadConfig::Gfl(GflHeadConfig::synth_128(CLASS_NAMES.len(), channels)),
        TestConfig::new(),
    )
}

/// The built-in-data experiment around `backbone` (the reasons for each value are written
/// beside it in `configs/gfl_synth_*.toml`).
fn synth_experiment(backbone: SmallResNetConfig, channels: usize) -> Experiment {
    Experiment {
        pretrained: None,
        pretrained_source: None,
        teacher: None,
        distill: None,
        data: DataConfig {
            source: DataSource::Synth(SynthData {
                root: PathBuf::from("data/synth"),
                seed: 0,
                train_images: 1000,
                val_images: 250,
                image_size: 128,
                object_scale: 1.0,
                box_noise: None,
            }),
            size_divisor: 32,
            train_transforms: None,
            test_transforms: None,
            loader: LoaderSettings {
                batch_size: SYNTH_BATCH,
                ..LoaderSettings::default()
            },
        },
        model: synth_detector(backbone, channels).into(),
        train: TrainConfig {
            optimizer: OptimizerConfig::AdamW(AdamWConfig {
                lr: 1e-3,
                weight_decay: 0.05,
                ..AdamWConfig::default()
            }),
            grad_clip: None,
            schedule: ScheduleConfig {
                total: Duration::Epochs(SYNTH_EPOCHS),
                warmup: Some(WarmupConfig {
                    iterations: 100,
                    ratio: 0.001,
                }),
                decay: DecayConfig::Step {
                    milestones: SYNTH_MILESTONES.map(Duration::Epochs).to_vec(),
                    gamma: 0.1,
                },
            },
            log_every: 25,
            eval_every: Some(Duration::Epochs(2)),
            checkpoint: CheckpointConfig {
                every: Duration::Epochs(1),
                keep_every: None,
            },
            seed: 0,
        },
        eval: EvalConfig {
            batch_size: SYNTH_BATCH,
            max_images: Some(100),
        },
    }
}

/// The backbone the mask pair's teacher starts from: the shipped GFL teacher's (the same
/// `SmallResNet` teacher_128, trained on the detection pair's data; reasons in
/// `configs/m2f_synth_teacher.toml`).
pub const PRETRAINED_MASK_TEACHER: &str = "assets/teacher/gfl_synth_teacher-seed0.ckpt";

/// The mask pair's teacher (reasons in `configs/m2f_synth_teacher_scratch.toml`): the student
/// preset widened to 96 with 6 decoder layers and a 3-layer encoder, on the GFL teacher's
/// backbone.
fn mask2former_teacher() -> Mask2FormerConfig {
    let backbone = SmallResNetConfig::teacher_128().with_out_indices(vec![0, 1, 2, 3]);
    let mut config = Mask2FormerConfig::lite_128(CLASS_NAMES.len());
    config.backbone = BackboneConfig::SmallResNet(backbone);
    config
        .with_conv_dim(96)
        .with_mask_dim(96)
        .with_hidden_dim(96)
        .with_dim_feedforward(384)
        .with_num_decoder_layers(6)
        .with_pixel_decoder(PixelDecoderConfig::MsDeformAttn(
            MsDeformAttnEncoderConfig::new()
                .with_num_layers(3)
                .with_n_heads(4)
                .with_dim_feedforward(384),
        ))
}

/// The mask pair's student: `Mask2FormerConfig::lite_128` (`configs/m2f_synth_student.toml`).
fn mask2former_student() -> Mask2FormerConfig {
    Mask2FormerConfig::lite_128(CLASS_NAMES.len())
}

/// The mask pair's experiment around `model`: the built-in data with objects 2.5x larger,
/// AdamW 3e-4 with the official gradient clipping, 8 epochs (reasons in
/// `configs/m2f_synth_teacher_scratch.toml`).
fn mask_experiment(model: Mask2FormerConfig) -> Experiment {
    let mut e = synth_experiment(SmallResNetConfig::student_128(), SYNTH_NECK_CHANNELS);
    if let DataSource::Synth(s) = &mut e.data.source {
        s.root = PathBuf::from("data/synth-large");
        s.object_scale = 2.5;
    }
    e.model = ModelConfig::Mask2Former(model);
    e.train.optimizer = OptimizerConfig::AdamW(AdamWConfig {
        lr: 3e-4,
        weight_decay: 0.05,
        ..AdamWConfig::default()
    });
    e.train.grad_clip = Some(GradClipConfig {
        max_norm: 0.01,
        norm_type: 2.0,
    });
    e.train.schedule.total = Duration::Epochs(8);
    e.train.schedule.decay = DecayConfig::Step {
        milestones: vec![Duration::Epochs(6), Duration::Epochs(7)],
        gamma: 0.1,
    };
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kdet_data::TransformConfig;

    /// Every shipped top-level config (`configs/*.toml`, embedded in the binary) parses,
    /// validates and equals the preset of its name (compared as JSON values: the model
    /// configs have no `PartialEq`), and every preset has its file.
    #[test]
    fn shipped_configs_equal_their_presets() {
        let mut seen = Vec::new();
        for name in crate::shipped::config_names().filter(|n| !n.contains('/')) {
            let stem = name.trim_end_matches(".toml");
            let file = Experiment::load(&PathBuf::from(format!("builtin:{name}")))
                .unwrap_or_else(|e| panic!("{e:#}"));
            let preset = preset(stem)
                .unwrap_or_else(|| panic!("{name} has no preset"))
                .resolve()
                .unwrap();
            assert_eq!(
                serde_json::to_value(&file).unwrap(),
                serde_json::to_value(&preset).unwrap(),
                "{name} differs from preset {stem}"
            );
            seen.push(stem.to_string());
        }
        seen.sort();
        let mut want: Vec<String> = PRESET_NAMES.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    #[test]
    fn printed_presets_parse_back_to_themselves() {
        for name in PRESET_NAMES {
            let resolved = preset(name).unwrap().resolve().unwrap();
            let again = Experiment::from_toml_str(&resolved.to_toml().unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(
                serde_json::to_value(&again).unwrap(),
                serde_json::to_value(&resolved).unwrap(),
                "{name}"
            );
        }
    }

    /// The main pair shares the neck width, strides, head design and reg_max; the narrow
    /// student differs only in the neck / head width.
    #[test]
    fn synth_pairs_share_what_distillation_needs() {
        let model = |n: &str| serde_json::to_value(preset(n).unwrap().model).unwrap();
        let (t, s, n) = (
            model("gfl_synth_teacher"),
            model("gfl_synth_student"),
            model("gfl_synth_student_narrow"),
        );
        assert_eq!(t["neck"], s["neck"]);
        assert_eq!(t["head"], s["head"]);
        assert_ne!(t["backbone"], s["backbone"]);
        assert_eq!(s["backbone"], n["backbone"]);
        assert_eq!(
            n["neck"]["out_channels"].as_u64().unwrap() * 2,
            s["neck"]["out_channels"].as_u64().unwrap()
        );
        assert_eq!(n["head"]["anchor"], s["head"]["anchor"]);
        assert_eq!(n["head"]["reg_max"], s["head"]["reg_max"]);
    }

    #[test]
    fn defaults_depend_on_the_source() {
        let coco = preset("gfl_r50_fpn_1x_coco").unwrap().resolve().unwrap();
        assert_eq!(
            coco.data.train_transforms.unwrap(),
            vec![
                TransformConfig::Resize {
                    short_side: 800,
                    max_size: 1333
                },
                TransformConfig::HorizontalFlip { prob: 0.5 }
            ]
        );
        let synth = preset("gfl_synth_teacher").unwrap().resolve().unwrap();
        assert_eq!(
            synth.data.train_transforms.unwrap(),
            vec![TransformConfig::HorizontalFlip { prob: 0.5 }]
        );
        assert_eq!(synth.data.test_transforms.unwrap(), vec![]);
    }
}
