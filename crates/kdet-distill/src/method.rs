//! The KD-method contract: what one distillation method is, in code.
//!
//! A method is its config type (the `loss = { type = "...", ... }` table of a recipe entry,
//! with the paper's defaults) implementing [`KdMethod`]:
//! - its name ([`KdMethod::NAME`]) and defaults ([`KdMethod::defaults`]);
//! - the taps it reads ([`KdMethod::tap_use`]) and whether it compares class scores
//!   ([`KdMethod::compares_classes`]);
//! - its own wiring check ([`KdMethod::check`]), run by the planner after the generic
//!   checks, before the first step; errors are prefixed with the recipe entry;
//! - its own trainable modules ([`KdMethod::Modules`], built by [`KdMethod::init`]): they
//!   train with the student and are dropped on export;
//! - its terms ([`KdMethod::terms`]) from the student's and teacher's outputs and the
//!   step's context ([`KdInputs`]).
//!
//! The method list (`crate::methods`) names every method once; the recipe's loss enum
//! ([`crate::KdLossConfig`]), its parser, the enum of trainable modules
//! ([`crate::KdModules`]), `KdLossConfig::METHODS` and the dispatch are generated from it by
//! [`kd_methods!`](crate::kd_methods). Adding a method = one file implementing this trait +
//! one line in that list; neither the planner nor the distiller names any method.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use kdet_models::{Assignment, Detector, DetectorOutput, Model};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::losses::KdTargets;
use crate::recipe::RecipeEntry;
use crate::taps::{LevelShape, Tap, TapShapes};

/// How a method uses taps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapUse {
    /// One feature tap on each side, chosen by the entry (default given); a connector may
    /// map the student's channels; map sizes must match unless the method resizes
    /// ([`KdMethod::resizes_student`]).
    Feature { default: Tap },
    /// Fixed head outputs, compared prior by prior; `student`/`teacher`/`connector` must
    /// not be set.
    Fixed(&'static [Tap]),
    /// The query predictions of every decoder layer (query families: DETR, Mask2Former),
    /// matched query to query by the method; no feature taps or levels
    /// (`student`/`teacher`/`connector`/`levels` must not be set).
    Queries,
}

/// One named KD term before the recipe weight (`name` is `""` for a single-term method;
/// logged as `kd.<entry>` or `kd.<entry>.<name>`).
#[derive(Debug, Clone)]
pub struct KdTerm {
    pub name: &'static str,
    pub value: Tensor<1>,
    /// Whether the entry's weight and schedule multiply the term (every distillation
    /// term). `false` for a term that trains a method's own modules at a fixed balance and
    /// is not a distillation term: LGD's detection losses of its label-guided teacher.
    pub weighted: bool,
}

impl KdTerm {
    pub fn new(name: &'static str, value: Tensor<1>) -> Self {
        Self {
            name,
            value,
            weighted: true,
        }
    }

    /// A term the recipe weight and schedule leave alone (see [`KdTerm::weighted`]).
    pub fn unweighted(name: &'static str, value: Tensor<1>) -> Self {
        Self {
            name,
            value,
            weighted: false,
        }
    }

    /// The term of a single-term method.
    pub fn single(value: Tensor<1>) -> Vec<Self> {
        vec![Self::new("", value)]
    }
}

/// A recipe entry's wiring, after the generic planning: what [`KdMethod::check`] and
/// [`KdMethod::init`] see.
#[derive(Debug, Clone, Copy)]
pub struct Wiring<'a> {
    /// The entry as written (`levels`, `connector`, ...).
    pub entry: &'a RecipeEntry,
    pub student: &'a Model,
    /// The teacher; for a teacher-free method ([`KdMethod::teacher_free`]) the student
    /// itself (its shapes are what the method's modules produce).
    pub teacher: &'a Model,
    pub student_shapes: &'a TapShapes,
    /// The teacher's tap shapes (the student's for a teacher-free method).
    pub teacher_shapes: &'a TapShapes,
    /// `(student tap, teacher tap)` of a feature method; `None` for fixed taps.
    pub taps: Option<(Tap, Tap)>,
    /// The selected levels (into the feature taps, or into the head levels).
    pub levels: &'a [usize],
}

/// The dense detectors of a method that [`KdMethod::needs_dense_head`] (the planner has
/// checked both sides are dense before any method sees them).
fn dense_pair<'a>(student: &'a Model, teacher: &'a Model) -> (&'a Detector, &'a Detector) {
    let planned = "the planner checks that a method reading a dense head has dense models";
    (
        student.dense().expect(planned),
        teacher.dense().expect(planned),
    )
}

impl Wiring<'_> {
    /// Student and teacher detectors, for a method that [`KdMethod::needs_dense_head`].
    ///
    /// # Panics
    /// If either is not a dense detector (the planner rejects that first).
    pub fn dense(&self) -> (&Detector, &Detector) {
        dense_pair(self.student, self.teacher)
    }

    /// The shapes of the selected student levels of the feature tap (empty for fixed
    /// taps).
    pub fn student_levels(&self) -> Vec<LevelShape> {
        self.selected(|(s, _)| self.student_shapes.tap(s))
    }

    /// The shapes of the selected teacher levels of the feature tap (empty for fixed
    /// taps).
    pub fn teacher_levels(&self) -> Vec<LevelShape> {
        self.selected(|(_, t)| self.teacher_shapes.tap(t))
    }

    fn selected<'s>(&'s self, tap: impl Fn((Tap, Tap)) -> &'s [LevelShape]) -> Vec<LevelShape> {
        match self.taps {
            Some(taps) => {
                let shapes = tap(taps);
                self.levels.iter().map(|&l| shapes[l]).collect()
            }
            None => Vec::new(),
        }
    }
}

/// What [`KdMethod::terms`] computes from, for one step.
pub struct KdInputs<'a> {
    /// The student's output (autodiff device).
    pub student: &'a DetectorOutput,
    /// The teacher's output (plain device: constants in the student's graph); `None` for a
    /// teacher-free method ([`KdMethod::teacher_free`]). Read it with [`KdInputs::teacher`].
    pub teacher_output: Option<&'a DetectorOutput>,
    /// Feature methods: the selected student levels after the entry's connectors (teacher
    /// channels). Empty for fixed-tap methods.
    pub student_features: Vec<Tensor<4>>,
    /// Feature methods: the teacher's selected levels. Empty for fixed-tap and
    /// teacher-free methods.
    pub teacher_features: Vec<Tensor<4>>,
    /// The selected levels (into the feature taps, or into the head levels).
    pub levels: &'a [usize],
    /// The student's assignment of this step (computed once, without gradients).
    pub assignment: &'a Assignment,
    /// Ground truth and batch geometry.
    pub targets: &'a KdTargets<'a>,
    /// Optimizer step (0-based).
    pub step: u64,
    /// The run's seed (for methods that draw random numbers, e.g. MGD's masks: a value
    /// drawn from `(seed, step, ...)` makes a resumed run bit-exact).
    pub seed: u64,
    /// The student model (its head's class count, `reg_max`, ...).
    pub student_model: &'a Model,
    /// The frozen teacher model (PGD decodes its boxes); `None` for a teacher-free method.
    /// Read it with [`KdInputs::teacher_model`].
    pub frozen_teacher: Option<&'a Model>,
}

const TEACHER_GIVEN: &str =
    "the distiller runs the teacher for every method that is not teacher-free";

impl KdInputs<'_> {
    /// The teacher's output.
    ///
    /// # Panics
    /// For a teacher-free method (the distiller gives every other method the teacher).
    pub fn teacher(&self) -> &DetectorOutput {
        self.teacher_output.expect(TEACHER_GIVEN)
    }

    /// The frozen teacher model.
    ///
    /// # Panics
    /// For a teacher-free method.
    pub fn teacher_model(&self) -> &Model {
        self.frozen_teacher.expect(TEACHER_GIVEN)
    }

    /// Student and teacher detectors, for a method that [`KdMethod::needs_dense_head`].
    ///
    /// # Panics
    /// If either is not a dense detector (the planner rejects that first), or for a
    /// teacher-free method.
    pub fn dense_models(&self) -> (&Detector, &Detector) {
        dense_pair(self.student_model, self.teacher_model())
    }

    /// The selected levels of a fixed tap, student side.
    pub fn student_tap(&self, tap: Tap) -> Vec<Tensor<4>> {
        crate::taps::select(self.levels, crate::taps::tap_tensors(self.student, tap))
    }

    /// The selected levels of a fixed tap, teacher side.
    pub fn teacher_tap(&self, tap: Tap) -> Vec<Tensor<4>> {
        crate::taps::select(self.levels, crate::taps::tap_tensors(self.teacher(), tap))
    }
}

/// One KD method (see the module doc). Implemented by the method's config type.
pub trait KdMethod:
    Clone + std::fmt::Debug + PartialEq + Serialize + DeserializeOwned + Sized
{
    /// The `type` name in recipes, the default entry name and log prefix.
    const NAME: &'static str;

    /// The method's own trainable modules ([`NoModules`] when it has none). They train
    /// with the student (teacher-side ones too: only the teacher's *features* are
    /// constants) and are dropped on export.
    type Modules: Module + std::fmt::Debug;

    /// The paper / official defaults.
    fn defaults() -> Self;

    /// The taps the method reads.
    fn tap_use(&self) -> TapUse;

    /// Whether the method compares class scores (then both heads need the same classes).
    fn compares_classes(&self) -> bool;

    /// Whether a feature method resizes the student map to the teacher's (PKD), so equal
    /// map sizes are not required.
    fn resizes_student(&self) -> bool {
        false
    }

    /// Whether the method reads a dense head (its maps, priors or decoded boxes): then
    /// both models must be dense detectors (the planner says so otherwise). Default: the
    /// fixed-tap methods, which compare head maps prior by prior.
    fn needs_dense_head(&self) -> bool {
        matches!(self.tap_use(), TapUse::Fixed(_))
    }

    /// Whether the method needs no teacher (LGD: its "teacher" is built from the labels
    /// and the student's own features by its modules). A recipe of teacher-free entries
    /// only runs without a teacher; such an entry gets no teacher output, no teacher
    /// features, and the student as the wiring's teacher.
    fn teacher_free(&self) -> bool {
        false
    }

    /// Whether the student's backbone must not change at optimizer step `step` (LGD's
    /// `PRE_FREEZE_STUDENT_BACKBONE_ITERS`): the loop drops the backbone's gradients, so
    /// the optimizer leaves its parameters and their state alone, as PyTorch does for a
    /// parameter whose `grad` is `None`.
    fn freezes_student_backbone(&self, _step: u64) -> bool {
        false
    }

    /// The method's own optimizer for its modules, when the official trains them apart
    /// from the student (ICD: AdamW at lr 1e-4 with a cosine schedule); `None` (the
    /// default) trains them with the run's optimizer and schedule.
    fn own_optimizer(&self) -> Option<OwnOptimizer> {
        None
    }

    /// Method-specific wiring checks, after the generic ones (levels exist, map sizes,
    /// channels vs connector, equal head layouts for fixed taps). The message need not
    /// name the entry: the planner prefixes it.
    fn check(&self, _wiring: &Wiring) -> Result<(), String> {
        Ok(())
    }

    /// The method's trainable modules for this wiring, on the student's device.
    fn init(&self, wiring: &Wiring, device: &Device) -> Self::Modules;

    /// The method's terms before the recipe weight (its own coefficients applied).
    fn terms(&self, modules: &Self::Modules, inputs: &KdInputs) -> Vec<KdTerm>;
}

/// A method's own optimizer for its modules ([`KdMethod::own_optimizer`]): PyTorch's
/// AdamW (β 0.9 / 0.999, ε 1e-8, decoupled weight decay) at `lr`, decayed over the run by
/// a cosine to 0 (detectron2's `WarmupCosineLR`: `lr · ½ (1 + cos(π t / T))`, `T` the
/// run's steps). Its state is part of every checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct OwnOptimizer {
    pub lr: f64,
    pub weight_decay: f64,
}

impl OwnOptimizer {
    /// The learning rate of optimizer step `step` (0-based) of a `total`-step run.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let t = step as f64 / total.max(1) as f64;
        self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
    }
}

/// The modules of a method that has none (no parameters, nothing in checkpoints).
#[derive(Module, Debug)]
pub struct NoModules {
    /// burn's `Module` derive needs a field; a constant holds no parameter.
    none: bool,
}

impl NoModules {
    pub fn new() -> Self {
        Self { none: false }
    }
}

impl Default for NoModules {
    fn default() -> Self {
        Self::new()
    }
}

/// Fills `user` keys over the serialised defaults of a method's config; an unknown key is
/// an error listing the method's settings.
pub(crate) fn with_defaults<T: KdMethod>(
    user: serde_json::Map<String, serde_json::Value>,
) -> Result<T, String> {
    let method = T::NAME;
    let mut base = serde_json::to_value(T::defaults()).map_err(|e| e.to_string())?;
    let fields = base
        .as_object_mut()
        .expect("loss configs serialise to tables");
    for (k, v) in user {
        if !fields.contains_key(&k) {
            let known: Vec<&str> = fields.keys().map(String::as_str).collect();
            return Err(format!(
                "`{k}` is not a setting of the {method} loss (its settings: {})",
                known.join(", ")
            ));
        }
        fields.insert(k, v);
    }
    serde_json::from_value(base).map_err(|e| format!("{method} loss: {e}"))
}

/// A config with its `type` name in front (the serialised form of a recipe loss).
#[derive(Serialize)]
#[doc(hidden)]
pub struct Tagged<'a, C: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub config: &'a C,
}

/// Generates, from the method list, the recipe's loss enum `KdLossConfig` (serde-tagged by
/// `type`, unknown fields rejected, defaults filled), `KdLossConfig::METHODS`, the modules
/// enum `KdModules`, and the dispatch over both. Each line is
/// `Variant(ConfigType)`; the `type` name is `ConfigType::NAME`.
#[macro_export]
macro_rules! kd_methods {
    ($($(#[$doc:meta])* $variant:ident($config:ty),)+) => {
        /// The KD methods of the zoo, each with its paper-default config.
        ///
        /// In TOML a loss is a table with `type` and any of its config's fields; fields
        /// left out keep the config's defaults (the paper's), unknown fields are errors
        /// naming the field.
        #[derive(Debug, Clone, PartialEq)]
        pub enum KdLossConfig {
            $($(#[$doc])* $variant($config),)+
        }

        /// The trainable modules of one recipe entry's method (generated with
        /// [`KdLossConfig`]; one variant per method).
        // One value per recipe entry, built once per run: a large variant (LGD's dynamic
        // teacher holds some twenty layers inline) costs nothing worth a box, which burn's
        // `Module` derive does not support.
        #[allow(clippy::large_enum_variant)]
        #[derive(burn::module::Module, Debug)]
        pub enum KdModules {
            $($variant(<$config as $crate::method::KdMethod>::Modules),)+
        }

        impl KdLossConfig {
            /// Every method's `type` name, in the method list's order.
            pub const METHODS: &'static [&'static str] =
                &[$(<$config as $crate::method::KdMethod>::NAME,)+];

            /// The method's name (`type`), also the default entry name and log prefix.
            pub fn method(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$config as $crate::method::KdMethod>::NAME,)+
                }
            }

            /// The config of method `name` with `settings` over its defaults.
            pub fn parse(
                name: &str,
                settings: serde_json::Map<String, serde_json::Value>,
            ) -> Result<Self, String> {
                $(if name == <$config as $crate::method::KdMethod>::NAME {
                    return $crate::method::with_defaults::<$config>(settings).map(Self::$variant);
                })+
                Err(format!(
                    "unknown loss type `{name}` (known: {})",
                    Self::METHODS.join(", ")
                ))
            }

            pub fn tap_use(&self) -> $crate::method::TapUse {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::tap_use(c),)+
                }
            }

            pub fn compares_classes(&self) -> bool {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::compares_classes(c),)+
                }
            }

            pub fn resizes_student(&self) -> bool {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::resizes_student(c),)+
                }
            }

            pub fn needs_dense_head(&self) -> bool {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::needs_dense_head(c),)+
                }
            }

            pub fn teacher_free(&self) -> bool {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::teacher_free(c),)+
                }
            }

            pub fn freezes_student_backbone(&self, step: u64) -> bool {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::freezes_student_backbone(c, step),)+
                }
            }

            pub fn own_optimizer(&self) -> Option<$crate::method::OwnOptimizer> {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::own_optimizer(c),)+
                }
            }

            pub fn check(&self, wiring: &$crate::method::Wiring) -> Result<(), String> {
                match self {
                    $(Self::$variant(c) => $crate::method::KdMethod::check(c, wiring),)+
                }
            }

            pub fn init(
                &self,
                wiring: &$crate::method::Wiring,
                device: &burn::tensor::Device,
            ) -> KdModules {
                match self {
                    $(Self::$variant(c) => {
                        KdModules::$variant($crate::method::KdMethod::init(c, wiring, device))
                    })+
                }
            }

            /// # Panics
            /// If `modules` were not built from a config of the same method.
            pub fn terms(
                &self,
                modules: &KdModules,
                inputs: &$crate::method::KdInputs,
            ) -> Vec<$crate::method::KdTerm> {
                match (self, modules) {
                    $((Self::$variant(c), KdModules::$variant(m)) => {
                        $crate::method::KdMethod::terms(c, m, inputs)
                    })+
                    #[allow(unreachable_patterns)]
                    _ => unreachable!("an entry's modules are built from its own config"),
                }
            }
        }

        impl serde::Serialize for KdLossConfig {
            /// `type` first, then the config's fields in their order (as serde's
            /// internally tagged enums write it).
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self {
                    $(Self::$variant(c) => serde::Serialize::serialize(
                        &$crate::method::Tagged { kind: self.method(), config: c },
                        serializer,
                    ),)+
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for KdLossConfig {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                use serde::de::Error as _;
                let value = serde_json::Value::deserialize(deserializer)?;
                let serde_json::Value::Object(mut table) = value else {
                    return Err(D::Error::custom(
                        "a loss is a table such as { type = \"pkd\" } with the method's settings",
                    ));
                };
                let method = match table.remove("type") {
                    Some(serde_json::Value::String(s)) => s,
                    _ => return Err(D::Error::custom("a loss needs `type = \"<method>\"`")),
                };
                Self::parse(&method, table).map_err(D::Error::custom)
            }
        }
    };
}
