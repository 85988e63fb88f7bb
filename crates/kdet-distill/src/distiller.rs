//! The [`Distiller`]: a student [`Detector`] and its distillation modules on the autodiff
//! device, a teacher [`Detector`] on a plain device, and a validated recipe.
//!
//! One step (`../shared/ARCHITECTURE.md`, "Data flow"): the student runs forward, is
//! assigned once, and computes its task losses; the teacher runs forward on the same
//! images on its plain device (no graph, BatchNorm on running statistics: eval mode by
//! construction); every active recipe entry adds its weighted KD terms, logged one by one
//! as `kd.<entry>.<term>`; the time the teacher and the KD terms took is logged as
//! `time.teacher_ms` and `time.kd_ms` (not optimised).
//!
//! The teacher is a `#[module(skip)]` field: it is not visited, not in the optimizer, not
//! in checkpoints, and its tensors are constants in the student's graph, so its weights
//! cannot change. Distillation-only modules (connectors, FGD's GcBlocks on both sides)
//! are ordinary fields: they train with the student and are left out by
//! [`DistilledStudent`], which loads only the student from a distillation checkpoint.

use std::sync::Arc;
use std::time::Instant;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};
use kdet_models::heads::inference::class_scores;
use kdet_models::{Assignment, Detector, DetectorOutput, LossDict};
use kdet_structures::{ImageBatch, ImageSize, Instances};

use crate::connector::{Connector, ConnectorKind};
use crate::error::DistillError;
use crate::losses::KdTargets;
use crate::losses::cwd::cwd_loss;
use crate::losses::fgd::FgdModules;
use crate::losses::fitnet::fitnet_loss;
use crate::losses::frs::frs_loss;
use crate::losses::kd::dense_logit_kd;
use crate::losses::ld::{ld_loss, vlr_weights};
use crate::losses::pgd::{TeacherPredictions, pgd_loss, pgd_masks};
use crate::losses::pkd::pkd_loss;
use crate::recipe::{EntrySchedule, KdLossConfig, RecipeConfig, Tap, TapUse};

/// A recipe entry after validation against the two detectors.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEntry {
    pub name: String,
    pub loss: KdLossConfig,
    pub weight: f32,
    pub schedule: EntrySchedule,
    /// Feature taps (feature methods) or `None` (fixed head taps).
    pub taps: Option<(Tap, Tap)>,
    /// Level indices into the taps (or into the head levels for fixed-tap methods).
    pub levels: Vec<usize>,
}

/// The modules one entry trains besides the student.
#[derive(Module, Debug)]
pub struct EntryModules {
    /// One per selected level (identity connectors hold no parameters).
    pub connectors: Vec<Connector>,
    /// FGD's GcBlocks (student and teacher side), one pair per selected level.
    pub fgd: Option<FgdModules>,
}

/// Student + distillation modules (trained) and the teacher (frozen, skipped).
#[derive(Module, Debug)]
pub struct Distiller {
    pub student: Detector,
    pub entries: Vec<EntryModules>,
    #[module(skip)]
    plan: Arc<Vec<PlanEntry>>,
    #[module(skip)]
    teacher: Option<Arc<Detector>>,
    #[module(skip)]
    not_inherited: Arc<Vec<String>>,
}

/// Loads the student of a distillation checkpoint: the record's `student.*` parameters;
/// the distillation modules' are ignored (they are dropped on export).
#[derive(Module, Debug)]
pub struct DistilledStudent {
    pub student: Detector,
}

/// Channel count, stride and map size of each level of a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelShape {
    pub channels: usize,
    pub stride: usize,
    pub height: usize,
    pub width: usize,
}

/// The shapes of every tap of a detector on an input size.
#[derive(Debug, Clone, PartialEq)]
pub struct TapShapes {
    pub backbone: Vec<LevelShape>,
    pub neck: Vec<LevelShape>,
    pub cls_tower: Vec<LevelShape>,
    pub reg_tower: Vec<LevelShape>,
    pub cls_logits: Vec<LevelShape>,
    pub box_regression: Vec<LevelShape>,
}

impl TapShapes {
    /// Runs `detector` once on a zero batch of `size` (padded size of the training data)
    /// without autodiff (`Module::valid`) and reads every tap's shape.
    pub fn probe(detector: &Detector, size: ImageSize) -> Self {
        let plain = detector.valid();
        let device = plain
            .devices()
            .into_iter()
            .next()
            .expect("a detector has parameters");
        let images = Tensor::<4>::zeros([1, 3, size.height as usize, size.width as usize], &device);
        let batch = ImageBatch::new(images, vec![size], vec![size])
            .expect("one image of the padded size fits its batch");
        let out = plain.forward(&batch);
        let shape = |t: &Tensor<4>, stride: usize| {
            let [_, c, h, w] = t.dims();
            LevelShape {
                channels: c,
                stride,
                height: h,
                width: w,
            }
        };
        TapShapes {
            backbone: out
                .backbone
                .iter()
                .map(|f| shape(&f.tensor, f.stride))
                .collect(),
            neck: out
                .neck
                .iter()
                .map(|f| shape(&f.tensor, f.stride))
                .collect(),
            cls_tower: out
                .head
                .iter()
                .map(|l| shape(&l.cls_tower, l.stride))
                .collect(),
            reg_tower: out
                .head
                .iter()
                .map(|l| shape(&l.reg_tower, l.stride))
                .collect(),
            cls_logits: out
                .head
                .iter()
                .map(|l| shape(&l.cls_logits, l.stride))
                .collect(),
            box_regression: out
                .head
                .iter()
                .map(|l| shape(&l.box_regression, l.stride))
                .collect(),
        }
    }

    pub fn tap(&self, tap: Tap) -> &[LevelShape] {
        match tap {
            Tap::Backbone => &self.backbone,
            Tap::Neck => &self.neck,
            Tap::ClsTower => &self.cls_tower,
            Tap::RegTower => &self.reg_tower,
            Tap::ClsLogits => &self.cls_logits,
            Tap::BoxRegression => &self.box_regression,
        }
    }
}

/// The tensors of a tap, one per level.
pub fn tap_tensors(out: &DetectorOutput, tap: Tap) -> Vec<Tensor<4>> {
    match tap {
        Tap::Backbone => out.backbone.iter().map(|f| f.tensor.clone()).collect(),
        Tap::Neck => out.neck.iter().map(|f| f.tensor.clone()).collect(),
        Tap::ClsTower => out.head.iter().map(|l| l.cls_tower.clone()).collect(),
        Tap::RegTower => out.head.iter().map(|l| l.reg_tower.clone()).collect(),
        Tap::ClsLogits => out.head.iter().map(|l| l.cls_logits.clone()).collect(),
        Tap::BoxRegression => out.head.iter().map(|l| l.box_regression.clone()).collect(),
    }
}

fn select(levels: &[usize], tensors: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
    levels.iter().map(|&l| tensors[l].clone()).collect()
}

/// Every float parameter of a module in visiting order: path, shape, value.
fn float_params<M: Module>(module: &M) -> Vec<(String, Vec<usize>, TensorData)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, TensorData)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            self.out.push((
                self.path.join("."),
                value.shape().as_slice().to_vec(),
                value.into_data(),
            ));
        }
    }
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// FGD/PGD's inheriting strategy for one module: every parameter of `into` takes the value
/// of the parameter at the same position of `from` when their shapes agree (keeping its own
/// id, device and trainability). Returns the module and the paths left at their initial
/// values. Both modules must have the same structure (the same parameter count).
fn inherit_matching<M: Module>(
    into: M,
    from: &M,
    prefix: &str,
) -> Result<(M, Vec<String>), DistillError> {
    struct Copy {
        from: std::vec::IntoIter<(String, Vec<usize>, TensorData)>,
        skipped: Vec<String>,
        prefix: String,
    }
    impl ModuleMapper for Copy {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (path, shape, data) = self
                .from
                .next()
                .expect("the parameter counts were checked to agree");
            let own = param.shape().as_slice().to_vec();
            if own != shape {
                self.skipped.push(format!(
                    "{}.{path} (student {own:?}, teacher {shape:?})",
                    self.prefix
                ));
                return param;
            }
            param.map(|t| {
                let require_grad = t.is_require_grad();
                Tensor::from_data(data, &t.device()).set_require_grad(require_grad)
            })
        }
    }
    let params = float_params(from);
    let own = float_params(&into).len();
    if own != params.len() {
        return Err(DistillError::Recipe(format!(
            "distill.inherit: the student's {prefix} has {own} parameters and the teacher's {}: inheriting needs the same {prefix} architecture",
            params.len()
        )));
    }
    let mut copy = Copy {
        from: params.into_iter(),
        skipped: Vec::new(),
        prefix: prefix.to_string(),
    };
    let module = into.map(&mut copy);
    Ok((module, copy.skipped))
}

/// Validates a recipe against the student's and teacher's taps and resolves defaults.
///
/// `student_shapes`/`teacher_shapes` come from [`TapShapes::probe`] on the training
/// input size.
pub fn plan_recipe(
    recipe: &RecipeConfig,
    student: &Detector,
    teacher: &Detector,
    student_shapes: &TapShapes,
    teacher_shapes: &TapShapes,
) -> Result<Vec<PlanEntry>, DistillError> {
    recipe.validate().map_err(DistillError::Recipe)?;
    let mut plan = Vec::with_capacity(recipe.losses.len());
    for (i, e) in recipe.losses.iter().enumerate() {
        let name = e.name();
        let err = |m: String| DistillError::Recipe(format!("distill.losses[{i}] ({name}): {m}"));
        let needs_classes = !matches!(
            e.loss,
            KdLossConfig::Fitnet(_)
                | KdLossConfig::Cwd(_)
                | KdLossConfig::Pkd(_)
                | KdLossConfig::Fgd(_)
        );
        let (ks, kt) = (student.head.num_classes(), teacher.head.num_classes());
        if needs_classes && ks != kt {
            return Err(err(format!(
                "{} compares class scores, but the student has {ks} classes and the teacher {kt}",
                e.loss.method()
            )));
        }
        let (taps, levels) = match e.loss.tap_use() {
            TapUse::Feature { default } => {
                let st = e.student.unwrap_or(default);
                let tt = e.teacher.unwrap_or(st);
                let (ss, ts) = (student_shapes.tap(st), teacher_shapes.tap(tt));
                let levels = match &e.levels {
                    Some(l) => l.clone(),
                    None => (0..ss.len().min(ts.len())).collect(),
                };
                for &l in &levels {
                    let (Some(s), Some(t)) = (ss.get(l), ts.get(l)) else {
                        return Err(err(format!(
                            "level {l} does not exist: the student's {} tap has {} levels, the teacher's {} tap {}",
                            st.name(),
                            ss.len(),
                            tt.name(),
                            ts.len()
                        )));
                    };
                    // PKD resizes the student map to the teacher's; the others compare
                    // position by position.
                    let resizes = matches!(e.loss, KdLossConfig::Pkd(_));
                    if !resizes && (s.height, s.width) != (t.height, t.width) {
                        return Err(err(format!(
                            "level {l}: student {} is {}x{} (stride {}) but teacher {} is {}x{} (stride {}); pick levels with equal strides",
                            st.name(),
                            s.height,
                            s.width,
                            s.stride,
                            tt.name(),
                            t.height,
                            t.width,
                            t.stride
                        )));
                    }
                    if s.channels != t.channels && e.connector == ConnectorKind::None {
                        return Err(err(format!(
                            "level {l}: student {} has {} channels, teacher {} has {}: set connector = \"conv1x1\" (or \"conv3x3\")",
                            st.name(),
                            s.channels,
                            tt.name(),
                            t.channels
                        )));
                    }
                }
                if let KdLossConfig::Frs(_) = e.loss {
                    if st != Tap::Neck || tt != Tap::Neck {
                        return Err(err(
                            "FRS weights FPN features by the class scores of the same level: both taps must be `neck`".into(),
                        ));
                    }
                    check_same_grid(&levels, student_shapes, teacher_shapes, &[Tap::ClsLogits])
                        .map_err(err)?;
                }
                (Some((st, tt)), levels)
            }
            TapUse::Fixed(fixed) => {
                let n = student_shapes
                    .cls_logits
                    .len()
                    .min(teacher_shapes.cls_logits.len());
                let levels: Vec<usize> = match &e.levels {
                    Some(l) => l.clone(),
                    None => (0..n).collect(),
                };
                if let Some(&bad) = levels.iter().find(|&&l| l >= n) {
                    return Err(err(format!(
                        "level {bad} does not exist (the heads have {n} levels)"
                    )));
                }
                if student_shapes.cls_logits.len() != teacher_shapes.cls_logits.len() {
                    return Err(err(format!(
                        "the student's head has {} levels and the teacher's {}: {} compares the heads prior by prior",
                        student_shapes.cls_logits.len(),
                        teacher_shapes.cls_logits.len(),
                        e.loss.method()
                    )));
                }
                match &e.loss {
                    KdLossConfig::Ld(_) => {
                        let (rs, rt) = (student.head.reg_max(), teacher.head.reg_max());
                        if rs.is_none() || rt.is_none() {
                            return Err(err(format!(
                                "LD distils GFL box-edge distributions: the student head is {} and the teacher head {} (both must be gfl)",
                                student.head.family(),
                                teacher.head.family()
                            )));
                        }
                        if rs != rt {
                            return Err(err(format!(
                                "LD needs equal reg_max: student {rs:?}, teacher {rt:?}"
                            )));
                        }
                        if e.levels.is_some() {
                            return Err(err("LD uses every head level; remove `levels`".into()));
                        }
                    }
                    KdLossConfig::Pgd(_) if e.levels.is_some() => {
                        return Err(err(
                            "PGD selects its regions across all levels; remove `levels`".into(),
                        ));
                    }
                    _ => {}
                }
                check_same_grid(&levels, student_shapes, teacher_shapes, fixed).map_err(err)?;
                (None, levels)
            }
        };
        plan.push(PlanEntry {
            name,
            loss: e.loss.clone(),
            weight: e.weight,
            schedule: e.schedule,
            taps,
            levels,
        });
    }
    Ok(plan)
}

/// Equal map sizes and channel counts on `taps` for every level in `levels`.
fn check_same_grid(
    levels: &[usize],
    s: &TapShapes,
    t: &TapShapes,
    taps: &[Tap],
) -> Result<(), String> {
    for &tap in taps {
        for &l in levels {
            let (a, b) = (s.tap(tap)[l], t.tap(tap)[l]);
            if (a.height, a.width, a.stride) != (b.height, b.width, b.stride) {
                return Err(format!(
                    "head level {l}: the student's {} map is {}x{} (stride {}) but the teacher's {}x{} (stride {})",
                    tap.name(),
                    a.height,
                    a.width,
                    a.stride,
                    b.height,
                    b.width,
                    b.stride
                ));
            }
            if a.channels != b.channels {
                return Err(format!(
                    "head level {l}: the student's {} has {} channels, the teacher's {} (the heads must have the same layout: anchors per location, classes{})",
                    tap.name(),
                    a.channels,
                    b.channels,
                    if tap == Tap::BoxRegression {
                        ", reg_max"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    Ok(())
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
        student: Detector,
        teacher: Detector,
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
        if teacher.devices().iter().any(|d| d.is_autodiff()) {
            return Err(DistillError::Device(
                "the teacher must live on a plain (non-autodiff) device: it never trains".into(),
            ));
        }
        let student_shapes = TapShapes::probe(&student, input_size);
        let teacher_shapes = TapShapes::probe(&teacher, input_size);
        let plan = plan_recipe(recipe, &student, &teacher, &student_shapes, &teacher_shapes)?;
        let mut student = student;
        let mut not_inherited = Vec::new();
        if recipe.inherit {
            let (head, skipped) = inherit_matching(student.head, &teacher.head, "head")?;
            if !skipped.is_empty() {
                return Err(DistillError::Recipe(format!(
                    "distill.inherit: the student's head must have the teacher's shapes; these differ: {}",
                    skipped.join(", ")
                )));
            }
            student.head = head;
            // The FPN's lateral convs read the backbone, whose widths differ between a
            // teacher and its student: they keep their initial values (reported); the
            // output convs and the extra levels are copied.
            let (neck, skipped) = inherit_matching(student.neck, &teacher.neck, "neck")?;
            student.neck = neck;
            not_inherited = skipped;
        }
        let entries = plan
            .iter()
            .zip(&recipe.losses)
            .map(|(p, e)| {
                let (connectors, channels) = match p.taps {
                    Some((st, tt)) => {
                        let (ss, ts) = (student_shapes.tap(st), teacher_shapes.tap(tt));
                        let connectors = p
                            .levels
                            .iter()
                            .map(|&l| e.connector.init(ss[l].channels, ts[l].channels, &device))
                            .collect();
                        let channels: Vec<usize> =
                            p.levels.iter().map(|&l| ts[l].channels).collect();
                        (connectors, channels)
                    }
                    None => (Vec::new(), Vec::new()),
                };
                let fgd = match &p.loss {
                    KdLossConfig::Fgd(c) => Some(c.init(&channels, &device)),
                    _ => None,
                };
                EntryModules { connectors, fgd }
            })
            .collect();
        Ok(Self {
            student,
            entries,
            plan: Arc::new(plan),
            teacher: Some(Arc::new(teacher)),
            not_inherited: Arc::new(not_inherited),
        })
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

    pub fn teacher(&self) -> Option<&Detector> {
        self.teacher.as_deref()
    }

    /// Task losses of the student plus every active entry's KD terms for optimizer step
    /// `step` (0-based).
    ///
    /// # Panics
    /// If the distiller has no teacher (only [`DistilledStudent`] loads without one).
    pub fn step_losses(&self, images: &ImageBatch, targets: &[Instances], step: u64) -> LossDict {
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
            return losses;
        }
        let teacher = self
            .teacher
            .as_ref()
            .expect("a Distiller built by Distiller::new has its teacher");
        let device = student_out.neck[0].tensor.device();
        let t0 = Instant::now();
        let plain = ImageBatch::new(
            images.images().clone().inner(),
            images.original_sizes().to_vec(),
            images.resized_sizes().to_vec(),
        )
        .expect("the same sizes fit the same batch");
        let teacher_out = teacher.forward(&plain);
        sync(&teacher_out);
        let teacher_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let ctx = KdTargets {
            gt: targets,
            image_sizes: &student_out.image_sizes,
            padded_size: student_out.padded_size,
        };
        for (i, w) in active {
            let terms = self.entry_terms(i, &student_out, &teacher_out, &assignment, &ctx, step);
            for (term, value) in terms {
                let name = if term.is_empty() {
                    format!("kd.{}", self.plan[i].name)
                } else {
                    format!("kd.{}.{term}", self.plan[i].name)
                };
                losses.push(name, value * w);
            }
        }
        let kd_ms = t1.elapsed().as_secs_f64() * 1e3;
        let scalar = |v: f64| Tensor::<1>::from_floats([v as f32], &device);
        losses.push_logged("time.teacher_ms", scalar(teacher_ms));
        losses.push_logged("time.kd_ms", scalar(kd_ms));
        losses
    }

    /// The terms of entry `i` before the recipe weight (methods with several terms apply
    /// their own coefficients inside), named; `""` for a single-term loss.
    fn entry_terms(
        &self,
        i: usize,
        s: &DetectorOutput,
        t: &DetectorOutput,
        assignment: &Assignment,
        ctx: &KdTargets,
        step: u64,
    ) -> Vec<(&'static str, Tensor<1>)> {
        let p = &self.plan[i];
        let modules = &self.entries[i];
        let features = || {
            let (st, tt) = p.taps.expect("feature methods have taps");
            let student: Vec<Tensor<4>> = select(&p.levels, tap_tensors(s, st))
                .into_iter()
                .zip(&modules.connectors)
                .map(|(x, c)| c.forward(x))
                .collect();
            (student, select(&p.levels, tap_tensors(t, tt)))
        };
        let k = self.student.head.num_classes();
        match &p.loss {
            KdLossConfig::LogitKd(c) => {
                let ss = select(&p.levels, tap_tensors(s, Tap::ClsLogits));
                let ts = select(&p.levels, tap_tensors(t, Tap::ClsLogits));
                vec![("", dense_logit_kd(c, &ss, &ts, k))]
            }
            KdLossConfig::Fitnet(c) => {
                let (ss, ts) = features();
                vec![("", fitnet_loss(c, &ss, &ts))]
            }
            KdLossConfig::Cwd(c) => {
                let (ss, ts) = features();
                vec![("", cwd_loss(c, &ss, &ts))]
            }
            KdLossConfig::Pkd(c) => {
                let (ss, ts) = features();
                vec![("", pkd_loss(c, &ss, &ts))]
            }
            KdLossConfig::Fgd(c) => {
                let (ss, ts) = features();
                let fgd = modules
                    .fgd
                    .as_ref()
                    .expect("FGD entries own their GcBlocks");
                let terms = fgd.forward(c, &ss, &ts, ctx);
                vec![
                    ("fg", terms.fg),
                    ("bg", terms.bg),
                    ("attention", terms.attention),
                    ("global", terms.global),
                ]
            }
            KdLossConfig::Ld(c) => {
                let vlr = vlr_weights(c, &assignment.priors, ctx);
                let reg_max = self
                    .student
                    .head
                    .reg_max()
                    .expect("LD is planned for GFL heads");
                let terms = ld_loss(c, &s.head, &t.head, assignment, &vlr, k, reg_max);
                vec![("ld", terms.ld), ("vlr", terms.vlr), ("kd", terms.kd)]
            }
            KdLossConfig::Frs(c) => {
                let (ss, ts) = features();
                let sc = select(&p.levels, tap_tensors(s, Tap::ClsLogits));
                let tc = select(&p.levels, tap_tensors(t, Tap::ClsLogits));
                let terms = frs_loss(c, &ss, &ts, &sc, &tc);
                vec![("feature", terms.feature), ("cls", terms.cls)]
            }
            KdLossConfig::Pgd(c) => {
                let teacher = self.teacher.as_ref().expect("checked by the caller");
                let predictions = teacher_predictions(teacher, t, &assignment.priors);
                let ignore: Vec<Vec<bool>> =
                    assignment.images.iter().map(|a| a.ignore.clone()).collect();
                let device = s.neck[0].tensor.device();
                let masks = pgd_masks(
                    c,
                    &assignment.priors,
                    &predictions,
                    ctx,
                    Some(&ignore),
                    step,
                    &device,
                );
                let terms = pgd_loss(
                    c,
                    &tap_tensors(s, Tap::ClsTower),
                    &tap_tensors(t, Tap::ClsTower),
                    &tap_tensors(s, Tap::RegTower),
                    &tap_tensors(t, Tap::RegTower),
                    &masks,
                );
                vec![
                    ("cls_fg", terms.cls_fg),
                    ("cls_bg", terms.cls_bg),
                    ("cls_attention", terms.cls_attention),
                    ("reg", terms.reg),
                    ("reg_attention", terms.reg_attention),
                ]
            }
        }
    }
}

/// The teacher's sigmoid class scores and decoded boxes on every prior, on the host.
fn teacher_predictions(
    teacher: &Detector,
    out: &DetectorOutput,
    priors: &kdet_models::Priors,
) -> TeacherPredictions {
    let k = teacher.head.num_classes();
    let scores = class_scores(&out.head, k); // [B, P, K]
    let boxes = teacher.head.decode_boxes(&out.head, priors); // [B, P, 4]
    let [b, p, _] = scores.dims();
    let scores: Vec<f32> = scores
        .into_data()
        .try_to_vec()
        .expect("class scores are f32");
    let boxes: Vec<f32> = boxes.into_data().try_to_vec().expect("boxes are f32");
    TeacherPredictions {
        scores: scores.chunks(p * k).map(<[f32]>::to_vec).collect(),
        boxes: (0..b)
            .map(|i| {
                boxes[i * p * 4..(i + 1) * p * 4]
                    .chunks(4)
                    .map(|c| [c[0], c[1], c[2], c[3]])
                    .collect()
            })
            .collect(),
        num_classes: k,
    }
}

/// Waits for the teacher's work (timing only).
fn sync(out: &DetectorOutput) {
    if let Some(l) = out.head.last() {
        let _ = l.cls_logits.device().sync();
    }
}
