//! Building the models of an experiment: the student (with its `pretrained` backbone),
//! the teacher (a checkpoint or a weights file, on a plain device), the distiller, and the
//! model stored in a checkpoint. The only module that calls `kdet_distill`'s
//! `Distiller`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use kdet_data::DetectionBatch;
use kdet_distill::Distiller;
use kdet_distill::distiller::DistilledStudent;
use kdet_distill::recipe::RecipeConfig;
use kdet_models::weights::{ImportOptions, load_model_file};
use kdet_models::{LossDict, Model};
use kdet_structures::ImageSize;
use kdet_train::{Checkpoint, TrainStep, last_checkpoint_path};

use crate::experiment::{Experiment, TeacherConfig, TeacherWeights, load_model_config};

/// A [`Model`] as the training loop sees it. `Module` is delegated field-less, so its
/// records (checkpoints) have exactly the model's parameter paths and load into a plain
/// `Model`.
///
/// (The wrapper exists because `TrainStep` and `Model` live in other crates.)
#[derive(Debug, Clone)]
pub struct TrainableModel(pub Model);

impl Module for TrainableModel {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.0.collect_devices(devices)
    }
    fn fork(self, device: &Device) -> Self {
        Self(self.0.fork(device))
    }
    fn to_device(self, device: &Device) -> Self {
        Self(self.0.to_device(device))
    }
    fn train(self) -> Self {
        Self(self.0.train())
    }
    fn valid(&self) -> Self {
        Self(self.0.valid())
    }
    fn materialize(self) -> Self {
        Self(self.0.materialize())
    }
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.0.visit(visitor)
    }
    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self(self.0.map(mapper))
    }
}

impl TrainStep for TrainableModel {
    /// Forward, the family's assignment and its task losses.
    fn losses(&self, batch: &DetectionBatch, _step: u64) -> LossDict {
        let (_, _, losses) = self.0.forward_loss(&batch.images, &batch.targets);
        losses
    }
}

/// What the run loop needs of a trained model besides [`TrainStep`]: the model that is
/// evaluated and exported (the model itself, or a distiller's student).
pub trait RunModel: TrainStep {
    fn model(&self) -> &Model;
}

impl RunModel for TrainableModel {
    fn model(&self) -> &Model {
        &self.0
    }
}

impl RunModel for Distiller {
    fn model(&self) -> &Model {
        &self.student
    }
}

/// CRC-32 of every float parameter's bytes in visiting order: equal for bit-identical
/// weights (checkpoint files differ anyway: burn gives parameters random ids).
pub fn weights_crc32<M: Module>(model: &M) -> u32 {
    struct Crc(crc32fast::Hasher);
    impl ModuleVisitor for Crc {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.update(param.val().into_data().as_bytes());
        }
    }
    let mut crc = Crc(crc32fast::Hasher::new());
    model.visit(&mut crc);
    crc.0.finalize()
}

/// The model a run trains, with its `pretrained` backbone weights on a new run (a resumed
/// run reads every weight from its checkpoint).
pub fn student_model(e: &Experiment, device: &Device, load_pretrained: bool) -> Result<Model> {
    let (model, report) = e.init_model(device, load_pretrained)?;
    if let Some(report) = report {
        println!("pretrained backbone: {report}");
    }
    Ok(model)
}

/// The experiment's distiller: its teacher loaded on the plain device beneath `device`,
/// its student built on `device` (the order matters: both draw from the seeded backend
/// RNG), checked against the recipe. A teacher-free recipe (LGD) loads no teacher.
pub fn distiller(e: &Experiment, device: &Device, load_pretrained: bool) -> Result<Distiller> {
    let Some(recipe) = &e.distill else {
        bail!(
            "distillation needs a `[distill]` section in the experiment (use `kdet train` without it)"
        );
    };
    let teacher = match &e.teacher {
        Some(teacher) => Some(load_teacher(teacher, e, &device.clone().inner())?),
        None if recipe.teacher_free() => None,
        None => bail!(
            "distillation needs a `teacher` in the experiment (only a recipe of teacher-free methods, lgd, runs without one)"
        ),
    };
    let student = student_model(e, device, load_pretrained)?;
    distiller_of(student, teacher, recipe, e)
}

/// A distiller of `student` and `teacher` (`None` for a teacher-free recipe) with the
/// recipe, checked before the first step; reports what `inherit` could not copy.
pub fn distiller_of(
    student: Model,
    teacher: Option<Model>,
    recipe: &RecipeConfig,
    e: &Experiment,
) -> Result<Distiller> {
    // The run's seed reaches the methods that draw random numbers (MGD's masks), so a
    // resumed run draws the same ones and another seed other ones.
    let distiller = match teacher {
        Some(teacher) => Distiller::new(student, teacher, recipe, probe_size(e)),
        None => Distiller::teacher_free(student, recipe, probe_size(e)),
    }
    .context("checking the `[distill]` recipe")?
    .with_seed(e.train.seed);
    if !distiller.not_inherited().is_empty() {
        println!(
            "distill.inherit: copied the teacher's head and neck except (shapes differ, initial values kept): {}",
            distiller.not_inherited().join(", ")
        );
    }
    Ok(distiller)
}

/// The teacher of a distillation, built on `device`, a plain device (no autodiff,
/// BatchNorm on running statistics): a `kdet train` or `kdet distill` checkpoint (the
/// latter's student), or a weights file of the
/// `model` architecture and `source` layout, loaded strictly.
pub fn load_teacher(
    teacher: &TeacherConfig,
    student: &Experiment,
    device: &Device,
) -> Result<Model> {
    teacher.validate()?;
    let path = match teacher {
        TeacherConfig::Weights(w) => return load_weights_teacher(w, student, device),
        TeacherConfig::Checkpoint(path) => path,
    };
    let ckpt =
        Checkpoint::read(path).with_context(|| format!("`teacher`: reading {}", path.display()))?;
    // A `kdet distill` checkpoint teaches with its student (without the recipe's modules):
    // NDet's teacher is the student trained on the noisy boxes, and a distilled student
    // can teach the next, smaller one.
    let config = experiment_of(&ckpt).context("`teacher`")?;
    if config.model.num_classes() != student.model.num_classes() {
        bail!(
            "`teacher`: {} predicts {} classes, the student {}",
            path.display(),
            config.model.num_classes(),
            student.model.num_classes()
        );
    }
    model_of(&ckpt, &config, device)
        .with_context(|| format!("`teacher`: loading {}", path.display()))
}

/// [`load_teacher`] of a weights file: the `model` architecture, every tensor from the
/// file (one error names each missing, unexpected and wrongly-shaped key).
fn load_weights_teacher(
    w: &TeacherWeights,
    student: &Experiment,
    device: &Device,
) -> Result<Model> {
    let named = format!(
        "`teacher.weights` (`path = \"{}\"`, `source = \"{}\"`, `model = \"{}\"`)",
        w.path.display(),
        w.source,
        w.model.display()
    );
    let config = load_model_config(&w.model)
        .with_context(|| format!("{named}: the teacher's architecture"))?;
    if config.num_classes() != student.model.num_classes() {
        bail!(
            "{named}: the teacher predicts {} classes, the student {}",
            config.num_classes(),
            student.model.num_classes()
        );
    }
    let (teacher, report) = load_model_file(
        config.init(device),
        &w.path,
        w.source,
        &ImportOptions::strict(),
    )
    .with_context(|| format!("{named}: loading the teacher's weights"))?;
    println!("teacher: {report}");
    Ok(teacher)
}

/// The padded input size the recipe is checked on: the built-in data's images, or a
/// 320-pixel square for COCO data (strides, not sizes, decide whether levels align),
/// rounded up to `data.size_divisor`.
pub fn probe_size(e: &Experiment) -> ImageSize {
    let side = e.synth().map_or(320, |s| s.image_size as usize);
    let d = e.data.size_divisor.max(1);
    let side = side.div_ceil(d) * d;
    ImageSize::new(side as u32, side as u32)
}

/// The experiment a checkpoint was trained with.
pub fn experiment_of(ckpt: &Checkpoint) -> Result<Experiment> {
    let value = ckpt.meta.experiment.clone().with_context(|| {
        format!(
            "{}: the checkpoint stores no experiment (not written by `kdet train`?)",
            ckpt.path.display()
        )
    })?;
    Experiment::from_stored(value).with_context(|| {
        format!(
            "{}: the stored experiment does not parse (written by another kdet version?)",
            ckpt.path.display()
        )
    })
}

/// A checkpoint (file or run directory) with its stored experiment.
pub fn read_checkpoint(checkpoint: &Path) -> Result<(Checkpoint, Experiment)> {
    let path = if checkpoint.is_dir() {
        last_checkpoint_path(checkpoint)
    } else {
        checkpoint.to_path_buf()
    };
    let ckpt = Checkpoint::read(&path).context("reading the checkpoint")?;
    let experiment = experiment_of(&ckpt)?;
    Ok((ckpt, experiment))
}

/// The model of a checkpoint on `device`: the trained model of a `kdet train` run, the
/// student (without its distillation modules) of a `kdet distill` run.
pub fn model_of(ckpt: &Checkpoint, experiment: &Experiment, device: &Device) -> Result<Model> {
    let student = experiment.model.init(device);
    if experiment.distill.is_some() {
        ckpt.load_submodel(DistilledStudent { student })
            .map(|d| d.student)
    } else {
        ckpt.load_model(student)
    }
    .context("loading the checkpoint's weights")
}

/// The model of a checkpoint file or run directory on `device`, with its experiment.
pub fn load_model(checkpoint: &Path, device: &Device) -> Result<(Model, Experiment, Checkpoint)> {
    let (ckpt, experiment) = read_checkpoint(checkpoint)?;
    let model = model_of(&ckpt, &experiment, device)?;
    Ok((model, experiment, ckpt))
}
