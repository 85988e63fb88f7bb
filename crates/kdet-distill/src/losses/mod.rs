//! The KD loss zoo, one file per method. Each file holds the pure tensor functions of its
//! method (student tap, teacher tap, context -> scalar terms) with its golden-value,
//! zero-when-identical and gradient tests; the [`crate::Distiller`] wires them to taps
//! according to a recipe.
//!
//! Conventions shared by every loss here:
//! - Student tensors live on the autodiff device; teacher tensors on the plain device
//!   (`Device::flex()`), so they are constants in the student's graph by construction
//!   (burn treats a non-autodiff operand as a constant). The functions never call
//!   `backward` and never build anything on the teacher's side that needs a gradient,
//!   except where a method has trainable teacher-side modules (FGD's GcBlock), which take
//!   the teacher feature as a constant input.
//! - Returned values are `[1]` scalars *without* the recipe weight; the distiller
//!   multiplies by the entry's weight and schedule factor. Methods with several terms
//!   (FGD, LD, FRS, PGD) apply their own paper coefficients inside (their configs hold
//!   them), so each term keeps the paper's balance and the recipe weight scales them all.
//! - Geometry (`KdTargets`) is in the batch's resized input pixels, as the task loss.

pub mod cwd;
pub mod fbkd;
pub mod fgd;
pub mod fitnet;
pub mod frs;
pub mod icd;
pub mod kd;
pub mod ld;
pub mod lgd;
pub mod mgd;
pub mod mqkd;
pub mod pgd;
pub mod pkd;
pub mod rm_pfi;
pub mod tbd;
#[cfg(test)]
pub(crate) mod test_util;

use burn::tensor::Tensor;
use kdet_structures::{ImageSize, Instances};

/// Ground truth and batch geometry a KD loss may need (FGD/PGD masks, LD's VLR).
#[derive(Debug, Clone, Copy)]
pub struct KdTargets<'a> {
    /// Ground truth per image, boxes xyxy in the resized image's pixels (the same
    /// coordinates as the task loss and the priors).
    pub gt: &'a [Instances],
    /// Each image's resized extent inside the padded batch (mmdet `img_shape`).
    pub image_sizes: &'a [ImageSize],
    /// The padded batch size (mmdet `batch_input_shape`).
    pub padded_size: ImageSize,
}

/// `x` standardised over its last axis, biased variance, ε 1e-5, no affine parameters:
/// PyTorch's `LayerNorm(elementwise_affine=False)` over the last axis (and, reshaped, its
/// `GroupNorm(1)` / `InstanceNorm2d` without affine).
pub(crate) fn normalize_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean) / var.add_scalar(1e-5).sqrt()
}

/// The one width of `levels`, which a method's attention over all of them needs, and that
/// `heads` divides; `what` names the levels in the errors ("the neck's", ...).
pub(crate) fn attention_width(
    levels: &[crate::taps::LevelShape],
    heads: usize,
    what: &str,
) -> Result<usize, String> {
    let c = levels[0].channels;
    if levels.iter().any(|l| l.channels != c) {
        return Err(format!(
            "its attention modules are shared by every level: {what} levels must have equal widths, got {:?}",
            levels.iter().map(|l| l.channels).collect::<Vec<_>>()
        ));
    }
    if heads == 0 || !c.is_multiple_of(heads) {
        return Err(format!("heads = {heads} must divide {what} {c} channels"));
    }
    Ok(c)
}

/// The objects of `gt` a distillation term ranks or weighs: the non-crowd instances
/// (mmdet's `gt_bboxes_ignore` are not objects), by index.
pub(crate) fn non_crowd(gt: &Instances) -> Vec<usize> {
    let crowd = gt.crowd();
    (0..gt.len())
        .filter(|&g| !crowd.is_some_and(|c| c[g]))
        .collect()
}

/// Sums `per_level(level, student, teacher)` over the levels of a feature loss, after
/// checking the shape contract every such loss shares: at least one level, as many teacher
/// levels as student levels, and (with `same_shape`) equal `[N, C, H, W]` on each level.
///
/// # Panics
/// On a violated contract (the distiller's recipe validation rules these out).
pub(crate) fn sum_over_levels(
    loss: &str,
    students: &[Tensor<4>],
    teachers: &[Tensor<4>],
    same_shape: bool,
    mut per_level: impl FnMut(usize, &Tensor<4>, &Tensor<4>) -> Tensor<1>,
) -> Tensor<1> {
    assert!(
        !students.is_empty(),
        "{loss}: expected at least one level, got none"
    );
    assert_eq!(
        students.len(),
        teachers.len(),
        "{loss}: expected as many teacher levels as student levels"
    );
    students
        .iter()
        .zip(teachers)
        .enumerate()
        .map(|(level, (student, teacher))| {
            if same_shape {
                assert_eq!(
                    student.dims(),
                    teacher.dims(),
                    "{loss}: level {level}: student [N, C, H, W] (expected) vs teacher shape"
                );
            }
            per_level(level, student, teacher)
        })
        .reduce(|a, b| a + b)
        .expect("at least one level, asserted above")
}

/// The level-count contract of a method with per-level modules: at least one level, and
/// each named input list (`("student", n)`, `("teacher", n)`, ...) has one entry per
/// module level.
///
/// # Panics
/// On a violated contract (the planner builds the modules for the selected levels).
pub(crate) fn assert_level_counts(method: &str, module_levels: usize, inputs: &[(&str, usize)]) {
    assert!(module_levels > 0, "{method} needs at least one level");
    for &(what, n) in inputs {
        assert_eq!(
            n, module_levels,
            "{method}: {n} {what} levels for {module_levels} module levels"
        );
    }
}
