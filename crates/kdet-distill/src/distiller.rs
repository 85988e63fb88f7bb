//! The [`Distiller`]: a student [`Model`] (any family) and its distillation modules on the
//! autodiff device, a teacher [`Model`] on a plain device, and a validated recipe.
//!
//! One step (`../shared/ARCHITECTURE.md`, "Data flow"): the student runs forward, is
//! assigned once, and computes its task losses; the teacher runs forward on the same
//! images on its plain device (no graph, BatchNorm on running statistics: eval mode by
//! construction); every active recipe entry adds its weighted KD terms
//! ([`crate::method::KdMethod::terms`]), keyed `LossKey::Kd { entry, term }` and logged
//! one by one as `kd.<entry>.<term>`; the time the teacher and the KD terms took comes
//! back beside the losses ([`KdTimings`], [`Distiller::step_losses_timed`]), never as a
//! loss term.
//!
//! The teacher is a `#[module(skip)]` field: it is not visited, not in the optimizer, not
//! in checkpoints, and its tensors are constants in the student's graph, so its weights
//! cannot change. Distillation-only modules (connectors, each method's own modules) are
//! ordinary fields: they train with the student and are left out by
//! [`DistilledStudent`], which loads only the student from a distillation checkpoint.
//! Planning lives in [`crate::plan`], weight inheritance in [`crate::inherit`], the taps
//! in [`crate::taps`]; this file names no method.

use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use kdet_models::{DetectorOutput, LossDict, LossKey, Model, ModelFamily};
use kdet_structures::{ImageBatch, ImageSize, Instances};

use crate::connector::Connector;
use crate::correction::{BoxCorrectionConfig, correct_targets};
use crate::error::DistillError;
use crate::inherit::inherit_neck_and_head;
use crate::losses::KdTargets;
use crate::method::{KdInputs, Wiring};
use crate::methods::KdModules;
use crate::plan::{PlanEntry, plan_recipe};
use crate::recipe::RecipeConfig;
use crate::taps::{TapShapes, select, tap_tensors};

/// The modules one entry trains besides the student.
#[derive(Module, Debug)]
pub struct EntryModules {
    /// One per selected level of a feature method (identity connectors hold no
    /// parameters); none for fixed-tap methods.
    pub connectors: Vec<Connector>,
    /// The method's own trainable modules.
    pub method: KdModules,
}

/// Student + distillation modules (trained) and the teacher (frozen, skipped).
#[derive(Module, Debug)]
pub struct Distiller {
    pub student: Model,
    pub entries: Vec<EntryModules>,
    #[module(skip)]
    plan: Arc<Vec<PlanEntry>>,
    /// `None` for a teacher-free recipe.
    #[module(skip)]
    teacher: Option<Arc<Model>>,
    #[module(skip)]
    not_inherited: Arc<Vec<String>>,
    #[module(skip)]
    seed: u64,
    #[module(skip)]
    correction: Option<BoxCorrectionConfig>,
    #[module(skip)]
    own: Option<crate::method::OwnOptimizer>,
}

/// Loads the student of a distillation checkpoint: the record's `student.*` parameters;
/// the distillation modules' are ignored (they are dropped on export).
#[derive(Module, Debug)]
pub struct DistilledStudent {
    pub student: Model,
}

impl Distiller {
    /// Builds a distiller from a student on the autodiff device and a teacher on a plain
    /// device, validating the recipe on `input_size` (the padded training image size).
    ///
    /// With `recipe.inherit`, the teacher's neck and head weights are copied into the
    /// student (FGD/PGD `init_student=True`): the head must have the teacher's shapes; of
    /// the neck, every parameter whose shape agrees is copied (see
    /// [`Distiller::not_inherited`]).
    pub fn new(
        student: impl Into<Model>,
        teacher: impl Into<Model>,
        recipe: &RecipeConfig,
        input_size: ImageSize,
    ) -> Result<Self, DistillError> {
        Self::build(student.into(), Some(teacher.into()), recipe, input_size)
    }

    /// A distiller without a teacher: every recipe entry must be teacher-free (LGD), and
    /// neither `inherit` nor `box_correction` may be set (both read a teacher).
    pub fn teacher_free(
        student: impl Into<Model>,
        recipe: &RecipeConfig,
        input_size: ImageSize,
    ) -> Result<Self, DistillError> {
        if recipe.inherit || recipe.box_correction.is_some() {
            return Err(DistillError::Recipe(
                "distill.inherit and distill.box_correction read a teacher, and this run has none"
                    .into(),
            ));
        }
        Self::build(student.into(), None, recipe, input_size)
    }

    fn build(
        student: Model,
        teacher: Option<Model>,
        recipe: &RecipeConfig,
        input_size: ImageSize,
    ) -> Result<Self, DistillError> {
        let device = student
            .devices()
            .into_iter()
            .next()
            .ok_or_else(|| DistillError::Recipe("the student has no parameters".into()))?;
        if !device.is_autodiff() {
            return Err(DistillError::Device(
                "the student must live on an autodiff device".into(),
            ));
        }
        if teacher
            .iter()
            .any(|t| t.devices().iter().any(|d| d.is_autodiff()))
        {
            return Err(DistillError::Device(
                "the teacher must live on a plain (non-autodiff) device: it never trains".into(),
            ));
        }
        let student_shapes = TapShapes::probe(&student, input_size);
        let teacher_shapes = teacher.as_ref().map(|t| TapShapes::probe(t, input_size));
        let teacher_pair = teacher.as_ref().zip(teacher_shapes.as_ref());
        let plan = plan_recipe(recipe, &student, teacher_pair, &student_shapes)?;
        if recipe.box_correction.is_some()
            && (student.dense().is_none() || teacher.as_ref().is_none_or(|t| t.dense().is_none()))
        {
            return Err(DistillError::Recipe(
                "distill.box_correction corrects boxes with a dense detector's predictions: the student and the teacher must be dense detectors".into(),
            ));
        }
        // One optimizer of their own at most: the entries that ask for one must agree.
        let mut own: Option<crate::method::OwnOptimizer> = None;
        for (i, (p, e)) in plan.iter().zip(&recipe.losses).enumerate() {
            if let Some(o) = p.loss.own_optimizer() {
                match own {
                    Some(first) if first != o => {
                        return Err(DistillError::Recipe(format!(
                            "distill.losses[{i}] ({}): its modules' own optimizer ({o:?}) differs from another entry's ({first:?}); kdet runs one optimizer beside the student's",
                            e.name()
                        )));
                    }
                    _ => own = Some(o),
                }
            }
        }
        let (student, not_inherited) = match (&teacher, recipe.inherit) {
            (Some(teacher), true) => inherit_neck_and_head(student, teacher)?,
            _ => (student, Vec::new()),
        };
        // Connectors first, then the method's modules, entry by entry: the order in which
        // parameters are initialised (and so the weights a seed gives) is part of a run.
        let entries = plan
            .iter()
            .zip(&recipe.losses)
            .map(|(p, e)| {
                // A teacher-free entry is wired against the student on both sides.
                let (teacher, teacher_shapes) = match (&teacher, &teacher_shapes) {
                    (Some(t), Some(ts)) if !p.loss.teacher_free() => (t, ts),
                    _ => (&student, &student_shapes),
                };
                let connectors = match p.taps {
                    Some((st, tt)) => {
                        let (ss, ts) = (student_shapes.tap(st), teacher_shapes.tap(tt));
                        p.levels
                            .iter()
                            .map(|&l| e.connector.init(ss[l].channels, ts[l].channels, &device))
                            .collect()
                    }
                    None => Vec::new(),
                };
                let wiring = Wiring {
                    entry: e,
                    student: &student,
                    teacher,
                    student_shapes: &student_shapes,
                    teacher_shapes,
                    taps: p.taps,
                    levels: &p.levels,
                };
                let method = p.loss.init(&wiring, &device);
                EntryModules { connectors, method }
            })
            .collect();
        Ok(Self {
            student,
            entries,
            plan: Arc::new(plan),
            teacher: teacher.map(Arc::new),
            not_inherited: Arc::new(not_inherited),
            seed: 0,
            correction: recipe.box_correction.clone(),
            own,
        })
    }

    /// The optimizer of the methods' modules that train apart from the student (ICD's
    /// AdamW), if an entry asks for one ([`crate::method::KdMethod::own_optimizer`]).
    pub fn own_optimizer(&self) -> Option<crate::method::OwnOptimizer> {
        self.own
    }

    /// The modules that [`Distiller::own_optimizer`] trains: the method modules of every
    /// entry that asks for it (its connectors stay with the student's optimizer).
    pub fn own_optimizer_modules(&self) -> Vec<&KdModules> {
        self.plan
            .iter()
            .zip(&self.entries)
            .filter(|(p, _)| p.loss.own_optimizer().is_some())
            .map(|(_, e)| &e.method)
            .collect()
    }

    /// The run's seed, handed to methods that draw random numbers (MGD's masks) so that
    /// a run with another seed draws other numbers and a resumed run the same ones.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// With `inherit`: the student's neck parameters left at their initial values because
    /// their shapes differ from the teacher's (e.g. FPN lateral convs after a narrower
    /// backbone), as `neck.<path> (student [..], teacher [..])`.
    pub fn not_inherited(&self) -> &[String] {
        &self.not_inherited
    }

    pub fn plan(&self) -> &[PlanEntry] {
        &self.plan
    }

    /// The frozen teacher (`None` for a teacher-free recipe).
    pub fn teacher(&self) -> Option<&Model> {
        self.teacher.as_deref()
    }

    /// The teacher, for the parts of a step only a run with a teacher reaches.
    fn frozen_teacher(&self) -> &Model {
        self.teacher
            .as_deref()
            .expect("Distiller::teacher_free refuses box correction and teacher methods")
    }

    /// Whether any entry active at optimizer step `step` freezes the student's backbone
    /// ([`crate::method::KdMethod::freezes_student_backbone`]).
    pub fn student_backbone_frozen(&self, step: u64) -> bool {
        self.plan
            .iter()
            .any(|p| p.weight > 0.0 && p.loss.freezes_student_backbone(step))
    }

    /// The batch on the teacher's plain device.
    fn plain_batch(&self, images: &ImageBatch) -> ImageBatch {
        ImageBatch::new(
            images.images().clone().inner(),
            images.original_sizes().to_vec(),
            images.resized_sizes().to_vec(),
        )
        .expect("the same sizes fit the same batch")
    }

    /// Task losses of the student plus every active entry's KD terms for optimizer step
    /// `step` (0-based).
    pub fn step_losses(&self, images: &ImageBatch, targets: &[Instances], step: u64) -> LossDict {
        self.step_losses_timed(images, targets, step).0
    }

    /// [`step_losses`](Self::step_losses) and, when a KD entry is active at `step`, the
    /// wall time of the teacher's forward and of the KD terms.
    pub fn step_losses_timed(
        &self,
        images: &ImageBatch,
        targets: &[Instances],
        step: u64,
    ) -> (LossDict, Option<KdTimings>) {
        // Noisy-box self-correction: the teacher sees the batch first and the student's
        // task loss (and the KD terms) use the corrected boxes.
        let corrected;
        let (targets, teacher_first) = match &self.correction {
            Some(config) => {
                let t0 = Instant::now();
                let out = self.frozen_teacher().forward(&self.plain_batch(images));
                let teacher = self
                    .frozen_teacher()
                    .dense()
                    .expect("checked in Distiller::new");
                corrected = correct_targets(config, teacher, &out, targets).0;
                (
                    &corrected[..],
                    Some((out, t0.elapsed().as_secs_f64() * 1e3)),
                )
            }
            None => (targets, None),
        };
        let student_out = self.student.forward(images);
        let assignment = self.student.assign(&student_out, targets);
        let mut losses = self.student.loss(&student_out, targets, &assignment);
        let active: Vec<(usize, f32)> = self
            .plan
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.weight * p.schedule.factor(step)))
            .filter(|&(_, w)| w > 0.0)
            .collect();
        if active.is_empty() {
            let timings = teacher_first.map(|(_, teacher_ms)| KdTimings {
                teacher_ms,
                kd_ms: 0.0,
            });
            return (losses, timings);
        }
        // The teacher runs when an active entry reads it (never for teacher-free ones).
        let needs_teacher = active
            .iter()
            .any(|&(i, _)| !self.plan[i].loss.teacher_free());
        let (teacher_out, teacher_ms) = match (teacher_first, needs_teacher) {
            (Some((out, ms)), _) => (Some(out), ms),
            (None, true) => {
                let t0 = Instant::now();
                let out = self.frozen_teacher().forward(&self.plain_batch(images));
                sync(&out);
                (Some(out), t0.elapsed().as_secs_f64() * 1e3)
            }
            (None, false) => (None, 0.0),
        };
        let t1 = Instant::now();
        let ctx = KdTargets {
            gt: targets,
            image_sizes: &student_out.image_sizes,
            padded_size: student_out.padded_size,
        };
        for (i, w) in active {
            let p = &self.plan[i];
            let modules = &self.entries[i];
            let teacher_output = teacher_out.as_ref().filter(|_| !p.loss.teacher_free());
            let (student_features, teacher_features) = match p.taps {
                Some((st, tt)) => (
                    select(&p.levels, tap_tensors(&student_out, st))
                        .into_iter()
                        .zip(&modules.connectors)
                        .map(|(x, c)| c.forward(x))
                        .collect(),
                    teacher_output.map_or_else(Vec::new, |t| select(&p.levels, tap_tensors(t, tt))),
                ),
                None => (Vec::new(), Vec::new()),
            };
            let inputs = KdInputs {
                student: &student_out,
                teacher_output,
                student_features,
                teacher_features,
                levels: &p.levels,
                assignment: &assignment,
                targets: &ctx,
                step,
                seed: self.seed,
                student_model: &self.student,
                frozen_teacher: teacher_output.and(self.teacher.as_deref()),
            };
            for term in p.loss.terms(&modules.method, &inputs) {
                let key = LossKey::Kd {
                    entry: p.name.clone(),
                    term: (!term.name.is_empty()).then(|| term.name.to_string()),
                };
                let value = if term.weighted {
                    term.value * w
                } else {
                    term.value
                };
                losses.push_term(key, value);
            }
        }
        let kd_ms = t1.elapsed().as_secs_f64() * 1e3;
        (losses, Some(KdTimings { teacher_ms, kd_ms }))
    }
}

/// Wall time of a distillation step's extra work, in milliseconds: a timing, never a loss
/// term (logged apart from the losses, as `metrics.jsonl`'s `timings`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KdTimings {
    /// The teacher's forward (waited for; 0 when no active entry reads a teacher).
    pub teacher_ms: f64,
    /// Every active entry's KD terms (their forward; the backward is in the step).
    pub kd_ms: f64,
}

impl KdTimings {
    /// As logged: `teacher_ms`, `kd_ms`.
    pub fn named(&self) -> [(&'static str, f64); 2] {
        [("teacher_ms", self.teacher_ms), ("kd_ms", self.kd_ms)]
    }
}

/// Waits for the teacher's work (timing only).
fn sync(out: &DetectorOutput) {
    if let Some(l) = out.head.last() {
        let _ = l.cls_logits.device().sync();
    } else if let Some(q) = out.queries.last() {
        let _ = q.class_logits.device().sync();
    }
}
