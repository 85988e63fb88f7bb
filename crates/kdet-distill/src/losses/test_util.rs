//! Test support shared by the unit tests of the loss files: a deterministic value
//! generator, tensor builders and read-back, a relative-error assertion, ground-truth
//! fixtures and the f64 softmax / KL reference used by several golden values.

use burn::module::Param;
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use kdet_structures::{Boxes, ImageSize, Instances};

use super::KdTargets;

/// A 64-bit LCG (Knuth's MMIX constants): reproducible test inputs without a `rand`
/// dependency.
pub(crate) struct Lcg(u64);

impl Lcg {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Advances the state and returns it.
    fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0
    }

    /// One value in `[-amp, amp)` from the top 53 bits of the state.
    pub(crate) fn uniform(&mut self, amp: f64) -> f64 {
        ((self.step() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
    }

    /// `len` values of [`Lcg::uniform`].
    pub(crate) fn vec_f64(&mut self, len: usize, amp: f64) -> Vec<f64> {
        (0..len).map(|_| self.uniform(amp)).collect()
    }

    /// `len` values in `[-amp, amp)` from the top 24 bits of the state (an `f32`
    /// mantissa: no rounding when `amp` is a power of two).
    pub(crate) fn vec_f32(&mut self, len: usize, amp: f32) -> Vec<f32> {
        (0..len)
            .map(|_| (self.step() >> 40) as f32 / (1u64 << 24) as f32 * (2.0 * amp) - amp)
            .collect()
    }
}

/// One `f32` vector in `[-2, 2)` per shape (`len` = its element count), from the seeds
/// `seed`, `seed + 1`, ...: the raw values of a multi-level feature input.
pub(crate) fn level_values(seed: u64, shapes: &[[usize; 4]]) -> Vec<Vec<f32>> {
    shapes
        .iter()
        .zip(seed..)
        .map(|(s, seed)| Lcg::new(seed).vec_f32(s.iter().product(), 2.0))
        .collect()
}

/// The tensors of [`level_values`]-style data, `values[l]` of shape `shapes[l]`.
pub(crate) fn level_tensors(
    values: &[Vec<f32>],
    shapes: &[[usize; 4]],
    device: &Device,
) -> Vec<Tensor<4>> {
    values
        .iter()
        .zip(shapes)
        .map(|(v, &s)| tensor(v, s, device))
        .collect()
}

/// Student levels on the autodiff device, each requiring a gradient, and teacher levels
/// on the plain device (constants in the student's graph), from raw values and shapes.
pub(crate) fn grad_levels(
    students: &[Vec<f32>],
    student_shapes: &[[usize; 4]],
    teachers: &[Vec<f32>],
    teacher_shapes: &[[usize; 4]],
) -> (Vec<Tensor<4>>, Vec<Tensor<4>>) {
    let students = level_tensors(students, student_shapes, &Device::flex().autodiff())
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let teachers = level_tensors(teachers, teacher_shapes, &Device::flex());
    assert!(teachers.iter().all(|t| !t.is_autodiff()));
    (students, teachers)
}

/// `f32` tensor data of `shape` from `f32` or `f64` values (f64 is rounded to f32).
pub(crate) fn tensor_data<E: Copy + Into<f64>, const D: usize>(
    values: &[E],
    shape: [usize; D],
) -> TensorData {
    let data: Vec<f32> = values.iter().map(|&v| v.into() as f32).collect();
    TensorData::new(data, shape)
}

/// An `f32` tensor of `shape` on `device` from `f32` or `f64` values.
pub(crate) fn tensor<E: Copy + Into<f64>, const D: usize>(
    values: &[E],
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(tensor_data(values, shape), device)
}

/// The values of an `f32` tensor, row-major.
pub(crate) fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

/// The value of a `[1]` loss.
pub(crate) fn scalar(t: Tensor<1>) -> f64 {
    vals(t)[0] as f64
}

/// Asserts that every level of `students` got a gradient in `grads`, all finite and not
/// all (near) zero.
pub(crate) fn assert_level_grads(students: &[Tensor<4>], grads: &Gradients) {
    for (level, s) in students.iter().enumerate() {
        let g = vals(s.grad(grads).expect("student level has a gradient"));
        assert!(g.iter().all(|v| v.is_finite()), "level {level}: {g:?}");
        assert!(g.iter().any(|v| v.abs() > 1e-6), "level {level}: all zero");
    }
}

/// `values` widened to f64.
pub(crate) fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

/// Asserts `|actual − expected| / |expected| < tol` (the denominator clamped at 1e-12).
pub(crate) fn assert_rel(actual: f64, expected: f64, tol: f64, what: &str) {
    let err = (actual - expected).abs() / expected.abs().max(1e-12);
    assert!(
        err < tol,
        "{what}: got {actual}, expected {expected} (rel err {err})"
    );
}

/// `softmax(z / temp)` in f64, max-shifted.
pub(crate) fn softmax_f64(z: &[f64], temp: f64) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| ((v - m) / temp).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// `T² KL(softmax(t/T) ‖ softmax(s/T))` of one distribution in f64, straight from the
/// formula.
pub(crate) fn kl_f64(s: &[f64], t: &[f64], temp: f64) -> f64 {
    let (ps, pt) = (softmax_f64(s, temp), softmax_f64(t, temp));
    temp * temp
        * pt.iter()
            .zip(&ps)
            .map(|(a, b)| a * (a.ln() - b.ln()))
            .sum::<f64>()
}

/// Ground truth of one image.
pub(crate) fn instances(size: ImageSize, boxes: Vec<[f32; 4]>, classes: Vec<usize>) -> Instances {
    Instances::new(size, Boxes::new(boxes), classes).expect("valid test instances")
}

/// A batch's ground truth, owned, for [`KdTargets`]: each image's extent is its
/// instances' image size, `padded` the batch's.
pub(crate) struct GtBatch {
    gt: Vec<Instances>,
    sizes: Vec<ImageSize>,
    padded: ImageSize,
}

impl GtBatch {
    pub(crate) fn new(gt: Vec<Instances>, padded: ImageSize) -> Self {
        let sizes = gt.iter().map(Instances::image_size).collect();
        Self { gt, sizes, padded }
    }

    pub(crate) fn targets(&self) -> KdTargets<'_> {
        KdTargets {
            gt: &self.gt,
            image_sizes: &self.sizes,
            padded_size: self.padded,
        }
    }
}

// ------------------------------------------------ fixtures written by project scripts

/// `(shape, values)` of a fixture tensor `{"shape": [...], "data": [...]}` (the JSON files
/// of `scripts/fixtures/*.py`).
pub(crate) fn entry(v: &serde_json::Value) -> (Vec<usize>, Vec<f64>) {
    let shape = v["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("no shape in {v}"))
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    (shape, data)
}

/// A 4-d fixture tensor on `device`.
pub(crate) fn tensor4(v: &serde_json::Value, device: &Device) -> Tensor<4> {
    let (s, data) = entry(v);
    tensor(&data, [s[0], s[1], s[2], s[3]], device)
}

/// A 4-d fixture parameter on `device`.
pub(crate) fn param4(v: &serde_json::Value, device: &Device) -> Param<Tensor<4>> {
    let (s, data) = entry(v);
    Param::from_data(tensor_data(&data, [s[0], s[1], s[2], s[3]]), device)
}

/// A 1-d fixture parameter on `device`.
pub(crate) fn param1(v: &serde_json::Value, device: &Device) -> Param<Tensor<1>> {
    let (_, data) = entry(v);
    Param::from_data(tensor_data(&data, [data.len()]), device)
}

/// The largest absolute error over the reference's largest magnitude.
pub(crate) fn max_rel(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "element count");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    assert!(scale > 0.0, "all-zero reference");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}
