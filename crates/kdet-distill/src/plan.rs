//! Planning a recipe: every entry checked against the student's and teacher's taps before
//! the first step, defaults resolved (taps, levels). The checks here are the generic ones
//! every method shares; each method adds its own ([`crate::method::KdMethod::check`]). No
//! method is named here.

use kdet_models::{Model, ModelFamily};

use crate::connector::ConnectorKind;
use crate::error::DistillError;
use crate::method::{TapUse, Wiring};
use crate::recipe::{EntrySchedule, KdLossConfig, RecipeConfig};
use crate::taps::{Tap, TapShapes};

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

/// Validates a recipe against the student's and teacher's taps and resolves defaults.
///
/// `student_shapes`/`teacher_shapes` come from [`TapShapes::probe`] on the training
/// input size; `teacher` is `None` for a run without a teacher, where every entry must be
/// teacher-free ([`crate::method::KdMethod::teacher_free`]). A teacher-free entry is
/// planned against the student on both sides. Every error names the entry
/// (`distill.losses[i] (name): ...`).
pub fn plan_recipe(
    recipe: &RecipeConfig,
    student: &Model,
    teacher: Option<(&Model, &TapShapes)>,
    student_shapes: &TapShapes,
) -> Result<Vec<PlanEntry>, DistillError> {
    recipe.validate().map_err(DistillError::Recipe)?;
    let mut plan = Vec::with_capacity(recipe.losses.len());
    for (i, e) in recipe.losses.iter().enumerate() {
        let name = e.name();
        let err = |m: String| DistillError::Recipe(format!("distill.losses[{i}] ({name}): {m}"));
        let (teacher, teacher_shapes) = match (e.loss.teacher_free(), teacher) {
            (true, _) => (student, student_shapes),
            (false, Some(pair)) => pair,
            (false, None) => {
                return Err(err(format!(
                    "{} distils a teacher, and this run has none (only teacher-free methods such as lgd run without one)",
                    e.loss.method()
                )));
            }
        };
        let (ks, kt) = (student.num_classes(), teacher.num_classes());
        if e.loss.compares_classes() && ks != kt {
            return Err(err(format!(
                "{} compares class scores, but the student has {ks} classes and the teacher {kt}",
                e.loss.method()
            )));
        }
        if e.loss.needs_dense_head() {
            for (side, model) in [("student", student), ("teacher", teacher)] {
                if model.dense().is_none() {
                    return Err(err(format!(
                        "{} reads a dense detector's head, but the {side} is a {} model",
                        e.loss.method(),
                        model.family()
                    )));
                }
            }
        }
        let (taps, levels, fixed) = match e.loss.tap_use() {
            TapUse::Feature { default } => {
                let st = e.student.unwrap_or(default);
                let tt = e.teacher.unwrap_or(st);
                let levels = feature_levels(
                    e.levels.as_deref(),
                    (st, student_shapes),
                    (tt, teacher_shapes),
                    e.loss.resizes_student(),
                    e.connector,
                )
                .map_err(err)?;
                (Some((st, tt)), levels, None)
            }
            TapUse::Fixed(fixed) => {
                let levels = head_levels(
                    e.levels.as_deref(),
                    student_shapes,
                    teacher_shapes,
                    e.loss.method(),
                )
                .map_err(err)?;
                (None, levels, Some(fixed))
            }
            TapUse::Queries => {
                for (side, shapes, model) in [
                    ("student", student_shapes, student),
                    ("teacher", teacher_shapes, teacher),
                ] {
                    if shapes.query_layers.is_empty() {
                        return Err(err(format!(
                            "{} distils query predictions, but the {side} ({}) has no queries: it needs a query model (detr, mask2former)",
                            e.loss.method(),
                            model.family()
                        )));
                    }
                }
                (None, Vec::new(), None)
            }
        };
        let wiring = Wiring {
            entry: e,
            student,
            teacher,
            student_shapes,
            teacher_shapes,
            taps,
            levels: &levels,
        };
        e.loss.check(&wiring).map_err(err)?;
        if let Some(fixed) = fixed {
            check_same_grid(&levels, student_shapes, teacher_shapes, fixed).map_err(err)?;
        }
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

/// The levels of a feature entry (default: every level both taps have), each existing on
/// both sides, with equal map sizes (unless the method resizes the student's) and equal
/// channels (unless a connector maps them).
fn feature_levels(
    levels: Option<&[usize]>,
    (st, student_shapes): (Tap, &TapShapes),
    (tt, teacher_shapes): (Tap, &TapShapes),
    resizes: bool,
    connector: ConnectorKind,
) -> Result<Vec<usize>, String> {
    let (ss, ts) = (student_shapes.tap(st), teacher_shapes.tap(tt));
    let levels = match levels {
        Some(l) => l.to_vec(),
        None => (0..ss.len().min(ts.len())).collect(),
    };
    for &l in &levels {
        let (Some(s), Some(t)) = (ss.get(l), ts.get(l)) else {
            return Err(format!(
                "level {l} does not exist: the student's {} tap has {} levels, the teacher's {} tap {}",
                st.name(),
                ss.len(),
                tt.name(),
                ts.len()
            ));
        };
        if !resizes && (s.height, s.width) != (t.height, t.width) {
            return Err(format!(
                "level {l}: student {} is {}x{} (stride {}) but teacher {} is {}x{} (stride {}); pick levels with equal strides",
                st.name(),
                s.height,
                s.width,
                s.stride,
                tt.name(),
                t.height,
                t.width,
                t.stride
            ));
        }
        if s.channels != t.channels && connector == ConnectorKind::None {
            return Err(format!(
                "level {l}: student {} has {} channels, teacher {} has {}: set connector = \"conv1x1\" (or \"conv3x3\")",
                st.name(),
                s.channels,
                tt.name(),
                t.channels
            ));
        }
    }
    Ok(levels)
}

/// The head levels of a fixed-tap entry (default: all), existing on both heads, which must
/// have as many levels (fixed-tap methods compare the heads prior by prior).
fn head_levels(
    levels: Option<&[usize]>,
    student_shapes: &TapShapes,
    teacher_shapes: &TapShapes,
    method: &str,
) -> Result<Vec<usize>, String> {
    let (ns, nt) = (
        student_shapes.cls_logits.len(),
        teacher_shapes.cls_logits.len(),
    );
    let n = ns.min(nt);
    let levels: Vec<usize> = match levels {
        Some(l) => l.to_vec(),
        None => (0..n).collect(),
    };
    if let Some(&bad) = levels.iter().find(|&&l| l >= n) {
        return Err(format!(
            "level {bad} does not exist (the heads have {n} levels)"
        ));
    }
    if ns != nt {
        return Err(format!(
            "the student's head has {ns} levels and the teacher's {nt}: {method} compares the heads prior by prior"
        ));
    }
    Ok(levels)
}

/// The wiring of a method that pairs every FPN level with the dense-head level of the same
/// grid and reads the head's class logits on every level (RM + PFI, TBD): both taps
/// `neck`, no `levels`, as many neck as head levels with equal grids, and equal class-logit
/// maps on both heads (so that the student's assignment is the teacher's too). `what`
/// names the method in the errors.
pub fn check_neck_beside_head(wiring: &Wiring, what: &str) -> Result<(), String> {
    if wiring.taps != Some((Tap::Neck, Tap::Neck)) {
        return Err(format!(
            "{what} weights FPN features by the head outputs of the same level: both taps must be `neck`"
        ));
    }
    if wiring.entry.levels.is_some() {
        return Err(format!(
            "{what} reads every level (an object's priors lie across all of them); remove `levels`"
        ));
    }
    let (s, t) = (wiring.student_shapes, wiring.teacher_shapes);
    let (ns, nt) = (s.cls_logits.len(), t.cls_logits.len());
    if ns != nt || wiring.levels.len() != ns {
        return Err(format!(
            "{what} pairs every FPN level with the head level of its grid: the student's neck has {} levels, its head {ns}, the teacher's head {nt}",
            wiring.levels.len()
        ));
    }
    for (&l, c) in wiring.levels.iter().zip(&s.cls_logits) {
        let f = s.neck[l];
        if (f.height, f.width) != (c.height, c.width) {
            return Err(format!(
                "{what}: neck level {l} is {}x{} but the head level beside it {}x{}",
                f.height, f.width, c.height, c.width
            ));
        }
    }
    let all: Vec<usize> = (0..ns).collect();
    check_same_grid(&all, s, t, &[Tap::ClsLogits])
}

/// Equal map sizes and channel counts on `taps` for every level in `levels`.
pub fn check_same_grid(
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
