//! PKD: Pearson-correlation feature imitation (Cao et al., "PKD: General Distillation
//! Framework for Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022,
//! arXiv:2207.02039), as MMRazor's `PKDLoss` (`mmrazor/models/losses/pkd_loss.py`, the
//! official code), spec `../shared/methods/kd-detection.md` §3.
//!
//! Per level, after bringing both maps to one spatial size (bilinear resize of the student
//! to the teacher's size by default), each channel is standardised with statistics over the
//! whole batch, `M = N*H*W` entries per channel:
//!
//! ```text
//! mu_c    = mean over (n, h, w) of F_{n,c,h,w}
//! sigma_c = sqrt( sum_{n,h,w} (F_{n,c,h,w} - mu_c)^2 / (M - 1) )      (unbiased)
//! F^_{n,c,h,w} = (F_{n,c,h,w} - mu_c) / (sigma_c + 1e-6)
//! L_level = 1/2 * mean over (n, c, h, w) of (F^S - F^T)^2
//! L = sum over levels of L_level
//! ```
//!
//! For standardised vectors `1/2 MSE = (1 - rho_c)(M - 1)/M` averaged over channels, with
//! `rho_c` the Pearson correlation of channel `c`: the loss only sees the shape of each
//! channel, not its scale or offset.
//!
//! Official reduction: element mean (`F.mse_loss`, `reduction='mean'`) halved, per level,
//! summed over levels. The recipe weight (MMRazor configs: 6 for Faster R-CNN R101->R50 and
//! Swin Mask R-CNN->RetinaNet, 10 for RetinaNet X101->R50) is not applied here. The
//! statistics are per batch, so the loss depends on the batch composition (as official).
//!
//! Resizing: `burn::tensor::module::interpolate` with `InterpolateMode::Bilinear` defaults
//! to `align_corners = true` (`InterpolateOptions::new`); this module sets it to `false`,
//! which is PyTorch's `F.interpolate(mode='bilinear')` default used by MMRazor:
//! source coordinate `max((dst + 0.5) * in / out - 0.5, 0)`, the upper neighbour clamped
//! to the last row/column, no anti-aliasing when downsampling (checked against
//! `burn-flex` 0.22.1 `interpolate_bilinear_impl` and by a test).
//!
//! Deliberate deviations, none of which changes a value on ordinary inputs:
//! - MMRazor resizes only when the *heights* differ (a width-only mismatch fails its
//!   assertion); here either a height or a width mismatch triggers the resize (spec §3).
//! - The variance is clamped to at least `1e-24` before the square root, so a constant
//!   student channel (official: NaN gradient from `std`'s backward at 0) gets a finite
//!   gradient; its forward value changes by a relative `1e-6` at most.
//! - With `M = 1` (one image of a 1x1 map) the unbiased divisor `M - 1` is replaced by 1
//!   (official: NaN); both standardised maps are then zero and the level contributes 0.

use super::sum_over_levels;
use burn::config::Config;
use burn::tensor::{Device, Tensor};

use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use crate::taps::Tap;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Configuration of [`pkd_loss`] (MMRazor `PKDLoss`).
#[derive(Config, Debug, PartialEq)]
pub struct PkdConfig {
    /// When the spatial sizes differ, resize the student to the teacher's size (`true`) or
    /// the teacher to the student's (`false`). MMRazor `PKDLoss(resize_stu=True)`, its
    /// default and the value of every shipped PKD config.
    #[config(default = true)]
    pub resize_student: bool,
}

/// Added to the standard deviation before dividing (MMRazor `PKDLoss.norm`: `std + 1e-6`).
const STD_EPS: f32 = 1e-6;
/// Lower bound on the variance before the square root (finite gradient for a constant
/// channel; see the module docs).
const VAR_MIN: f32 = 1e-24;

/// PKD (MMRazor `PKDLoss`) summed over levels, without the recipe weight.
///
/// Student levels are on the autodiff device (no connector is used by the official
/// configs, so channel counts must already match), teacher levels on the plain device.
/// Level `l` of both must agree in `N` and `C`; spatial sizes may differ (bilinear resize,
/// see [`PkdConfig::resize_student`]).
///
/// # Shapes
/// - `students`: `L` levels (fine to coarse, `L >= 1`), each `[N, C, Hs_l, Ws_l]`
/// - `teachers`: `L` levels, each `[N, C, Ht_l, Wt_l]`
/// - returns `[1]`
///
/// # Panics
/// If the level counts differ, there are no levels, or a level's `N` or `C` differ.
pub fn pkd_loss(config: &PkdConfig, students: &[Tensor<4>], teachers: &[Tensor<4>]) -> Tensor<1> {
    sum_over_levels(
        "pkd_loss",
        students,
        teachers,
        false,
        |level, student, teacher| {
            let [n_s, c_s, h_s, w_s] = student.dims();
            let [n_t, c_t, h_t, w_t] = teacher.dims();
            assert_eq!(
                [n_s, c_s],
                [n_t, c_t],
                "pkd_loss: level {level}: student [N, C] (expected) vs teacher [N, C]"
            );
            let (mut student, mut teacher) = (student.clone(), teacher.clone());
            if [h_s, w_s] != [h_t, w_t] {
                if config.resize_student {
                    student = resize_bilinear(student, [h_t, w_t]);
                } else {
                    teacher = resize_bilinear(teacher, [h_s, w_s]);
                }
            }
            let norm_s = standardize_channels(student);
            let norm_t = standardize_channels(teacher);
            (norm_s - norm_t).square().mean().div_scalar(2.0)
        },
    )
}

/// PyTorch `F.interpolate(x, size, mode='bilinear', align_corners=False)`.
///
/// # Shapes
/// `[N, C, H, W]` -> `[N, C, size[0], size[1]]`
fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size(size),
    )
}

/// Standardises each channel over `(N, H, W)` jointly (unbiased std, `+ 1e-6`), returned
/// channel-major; the loss is an element mean, so the layout needs no permuting back.
///
/// # Shapes
/// `[N, C, H, W]` -> `[C, N*H*W]`
fn standardize_channels(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    let m = n * h * w;
    // [C, N*H*W], as MMRazor's `feat.permute(1, 0, 2, 3).reshape(C, -1)`.
    let x: Tensor<2> = x.swap_dims(0, 1).reshape([c, m]);
    let centered = x.clone() - x.mean_dim(1);
    // [C, 1]
    let std = centered
        .clone()
        .square()
        .sum_dim(1)
        .div_scalar(m.saturating_sub(1).max(1) as f32)
        .clamp_min(VAR_MIN)
        .sqrt();
    centered / std.add_scalar(STD_EPS)
}

impl KdMethod for PkdConfig {
    const NAME: &'static str = "pkd";
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// FPN features by default (MMRazor's detection configs).
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        false
    }

    /// PKD resizes the student map to the teacher's (bilinear), so strides may differ.
    fn resizes_student(&self) -> bool {
        true
    }

    fn init(&self, _wiring: &Wiring, _device: &Device) -> NoModules {
        NoModules::new()
    }

    fn terms(&self, _modules: &NoModules, inputs: &KdInputs) -> Vec<KdTerm> {
        KdTerm::single(pkd_loss(
            self,
            &inputs.student_features,
            &inputs.teacher_features,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::test_util::{
        Lcg, assert_level_grads, assert_rel, grad_levels, level_tensors, level_values, scalar,
        tensor, to_f64, vals,
    };
    use burn::config::config_to_json;
    use burn::tensor::Device;

    /// N = 2, C = 3, two levels of different, non-square sizes (3x5 and 2x3).
    const SHAPES: [[usize; 4]; 2] = [[2, 3, 3, 5], [2, 3, 2, 3]];

    fn inputs() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        (level_values(31, &SHAPES), level_values(301, &SHAPES))
    }

    /// Index of (n, c, h, w) in NCHW-contiguous data.
    fn at([_, c, h, w]: [usize; 4], ni: usize, ci: usize, hi: usize, wi: usize) -> usize {
        ((ni * c + ci) * h + hi) * w + wi
    }

    /// One level of the spec formula in plain f64 loops, both inputs of `shape`: per
    /// channel c, collect the N*H*W entries, mu = their mean, sigma = sqrt(sum (x-mu)^2 /
    /// (M-1)), x^ = (x - mu) / (sigma + 1e-6); then 1/2 * sum (s^ - t^)^2 / (N*C*H*W).
    fn reference_level(shape: [usize; 4], s: &[f64], t: &[f64]) -> f64 {
        let [n, c, h, w] = shape;
        let m = n * h * w;
        let standardize = |x: &[f64], ci: usize| -> Vec<f64> {
            let mut v = Vec::with_capacity(m);
            for ni in 0..n {
                for hi in 0..h {
                    for wi in 0..w {
                        v.push(x[at(shape, ni, ci, hi, wi)]);
                    }
                }
            }
            let mu = v.iter().sum::<f64>() / m as f64;
            let sigma = (v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (m - 1) as f64).sqrt();
            v.iter().map(|x| (x - mu) / (sigma + 1e-6)).collect()
        };
        let mut sum = 0.0;
        for ci in 0..c {
            let (ss, tt) = (standardize(s, ci), standardize(t, ci));
            sum += ss
                .iter()
                .zip(&tt)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>();
        }
        0.5 * sum / (n * c * h * w) as f64
    }

    /// PyTorch bilinear, `align_corners=False`, in f64: source coordinate
    /// `max((dst + 0.5) * in / out - 0.5, 0)`, lower neighbour `floor`, upper neighbour
    /// clamped to the last index, weight = fractional part.
    fn reference_resize(shape: [usize; 4], x: &[f64], out: [usize; 2]) -> Vec<f64> {
        let [n, c, h, w] = shape;
        let src = |dst: usize, in_size: usize, out_size: usize| -> (usize, usize, f64) {
            let s = ((dst as f64 + 0.5) * in_size as f64 / out_size as f64 - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(in_size - 1);
            let i1 = (i0 + 1).min(in_size - 1);
            (i0, i1, s - i0 as f64)
        };
        let mut y = Vec::with_capacity(n * c * out[0] * out[1]);
        for ni in 0..n {
            for ci in 0..c {
                for oh in 0..out[0] {
                    let (h0, h1, lh) = src(oh, h, out[0]);
                    for ow in 0..out[1] {
                        let (w0, w1, lw) = src(ow, w, out[1]);
                        let v = |hi, wi| x[at(shape, ni, ci, hi, wi)];
                        y.push(
                            (1.0 - lh) * ((1.0 - lw) * v(h0, w0) + lw * v(h0, w1))
                                + lh * ((1.0 - lw) * v(h1, w0) + lw * v(h1, w1)),
                        );
                    }
                }
            }
        }
        y
    }

    #[test]
    fn golden_value_matches_f64_reference() {
        let device = Device::flex();
        let (sv, tv) = inputs();
        let got = scalar(pkd_loss(
            &PkdConfig::new(),
            &level_tensors(&sv, &SHAPES, &device),
            &level_tensors(&tv, &SHAPES, &device),
        ));
        let want: f64 = SHAPES
            .iter()
            .zip(sv.iter().zip(&tv))
            .map(|(&shape, (s, t))| reference_level(shape, &to_f64(s), &to_f64(t)))
            .sum();
        assert_rel(got, want, 1e-4, "golden");
    }

    #[test]
    fn hand_value_anticorrelated_pair() {
        // N = C = H = 1, W = 2, M = 2. Student (0, 2): mu = 1, sigma = sqrt((1 + 1) / 1) =
        // sqrt 2, s^ = (-1, 1)/sqrt 2. Teacher (1, 0): t^ = (1, -1)/sqrt 2. Differences
        // -+sqrt 2, squares 2 and 2, mean 2, halved: 1 (= (1 - rho)(M-1)/M with rho = -1),
        // times (sqrt 2 / (sqrt 2 + 1e-6))^2 = 1 - 1.4e-6 from the epsilon.
        let device = Device::flex();
        let s = [tensor(&[0.0, 2.0], [1, 1, 1, 2], &device)];
        let t = [tensor(&[1.0, 0.0], [1, 1, 1, 2], &device)];
        let got = scalar(pkd_loss(&PkdConfig::new(), &s, &t));
        assert!((got - 1.0).abs() < 1e-5, "{got}");
    }

    #[test]
    fn zero_when_student_equals_teacher() {
        // Identical inputs standardise identically, so every difference is exactly zero.
        let device = Device::flex();
        let (sv, _) = inputs();
        let x = level_tensors(&sv, &SHAPES, &device);
        assert_eq!(scalar(pkd_loss(&PkdConfig::new(), &x, &x)), 0.0);
    }

    #[test]
    fn invariant_to_positive_per_channel_affine_teacher() {
        // t'_c = a_c t_c + b_c with a_c > 0 has mu' = a mu + b and sigma' = a sigma, so the
        // standardised map is unchanged (up to the 1e-6 epsilon): the Pearson form only sees
        // each channel's shape. A negative a_c flips the channel's sign and must change it.
        let device = Device::flex();
        let (sv, tv) = inputs();
        let students = level_tensors(&sv, &SHAPES, &device);
        let teachers = level_tensors(&tv, &SHAPES, &device);
        let affine = |a: [f32; 3], b: [f32; 3]| -> Vec<Tensor<4>> {
            let (a, b) = (
                tensor(&a, [1, 3, 1, 1], &device),
                tensor(&b, [1, 3, 1, 1], &device),
            );
            teachers
                .iter()
                .map(|t| t.clone() * a.clone() + b.clone())
                .collect()
        };
        let base = scalar(pkd_loss(&PkdConfig::new(), &students, &teachers));
        let moved = scalar(pkd_loss(
            &PkdConfig::new(),
            &students,
            &affine([5.0, 0.2, 1.5], [3.0, -7.0, 0.25]),
        ));
        assert_rel(moved, base, 1e-4, "positive affine teacher");
        let flipped = scalar(pkd_loss(
            &PkdConfig::new(),
            &students,
            &affine([-1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
        ));
        assert!((base - flipped).abs() > 1e-2 * base, "{base} vs {flipped}");
    }

    #[test]
    fn resize_matches_pytorch_bilinear_align_corners_false() {
        // torch: F.interpolate([[1, 2]], size=(1, 4), mode='bilinear') = [1, 1.25, 1.75, 2]
        // (source x = (dst + 0.5)/2 - 0.5 = -0.25 -> 0, 0.25, 0.75, 1.25 -> clamped).
        // With align_corners=True it would be [1, 4/3, 5/3, 2].
        let device = Device::flex();
        let x = tensor(&[1.0, 2.0], [1, 1, 1, 2], &device);
        let y = vals(resize_bilinear(x, [1, 4]));
        let want = [1.0, 1.25, 1.75, 2.0];
        assert!(
            y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{y:?}"
        );
        // Random 2x3 -> 4x6 and 3x5 -> 2x3 against the f64 reference.
        for (shape, out) in [([2, 3, 2, 3], [4, 6]), ([2, 3, 3, 5], [2, 3])] {
            let v = Lcg::new(7).vec_f32(shape.iter().product(), 2.0);
            let got = vals(resize_bilinear(tensor(&v, shape, &device), out));
            let want = reference_resize(shape, &to_f64(&v), out);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn student_half_size_is_resized_to_teacher() {
        // Level 1: student 2x3, teacher 4x6 (2x larger). The student is upsampled to 4x6
        // (reference: f64 bilinear above), then the usual formula. With resize_student =
        // false the teacher is downsampled to 2x3 instead: finite and different.
        let device = Device::flex();
        let shapes_s = [[2, 3, 3, 5], [2, 3, 2, 3]];
        let shapes_t = [[2, 3, 3, 5], [2, 3, 4, 6]];
        let (sv, tv) = (level_values(41, &shapes_s), level_values(401, &shapes_t));
        let students = level_tensors(&sv, &shapes_s, &device);
        let teachers = level_tensors(&tv, &shapes_t, &device);
        let got = scalar(pkd_loss(&PkdConfig::new(), &students, &teachers));
        assert!(got.is_finite() && got > 0.0, "{got}");
        let up = reference_resize(shapes_s[1], &to_f64(&sv[1]), [4, 6]);
        let want = reference_level(shapes_t[0], &to_f64(&sv[0]), &to_f64(&tv[0]))
            + reference_level(shapes_t[1], &up, &to_f64(&tv[1]));
        assert_rel(got, want, 1e-4, "resized student");
        let other = scalar(pkd_loss(
            &PkdConfig::new().with_resize_student(false),
            &students,
            &teachers,
        ));
        assert!(
            other.is_finite() && (other - got).abs() > 1e-4,
            "{other} vs {got}"
        );
        // A width-only mismatch (official code: assertion failure) is resized as well.
        let s = [tensor(
            &Lcg::new(3).vec_f32(2 * 3 * 2 * 3, 2.0),
            [2, 3, 2, 3],
            &device,
        )];
        let t = [tensor(
            &Lcg::new(4).vec_f32(2 * 3 * 2 * 5, 2.0),
            [2, 3, 2, 5],
            &device,
        )];
        assert!(scalar(pkd_loss(&PkdConfig::new(), &s, &t)).is_finite());
    }

    #[test]
    fn gradient_reaches_student_through_resize() {
        let shapes_s = [[2, 3, 3, 5], [2, 3, 1, 2]];
        let shapes_t = [[2, 3, 3, 5], [2, 3, 2, 3]];
        let (students, teachers) = grad_levels(
            &level_values(51, &shapes_s),
            &shapes_s,
            &level_values(501, &shapes_t),
            &shapes_t,
        );
        let grads = pkd_loss(&PkdConfig::new(), &students, &teachers).backward();
        assert_level_grads(&students, &grads);
    }

    #[test]
    fn constant_channels_and_single_entry_are_finite() {
        // A constant student standardises to 0; the teacher's standardised channel has
        // sum of squares (M-1) sigma^2/(sigma+1e-6)^2 ~ M-1, so 1/2 MSE = (M-1)/(2M) per
        // channel = 11/24 for M = 2*2*3 = 12. Official: same value, NaN gradient; here the
        // gradient is finite. The constant is 2.0 so that the f32 mean is exact: a rounding
        // residue of ~1e-8 would be amplified by 1 / (sigma + 1e-6) (as in the official code).
        let plain = Device::flex();
        let autodiff = Device::flex().autodiff();
        let shape = [2, 3, 2, 3];
        let s = [Tensor::<4>::ones(shape, &autodiff)
            .mul_scalar(2.0)
            .require_grad()];
        let t = [tensor(
            &Lcg::new(9).vec_f32(shape.iter().product(), 2.0),
            shape,
            &plain,
        )];
        let loss = pkd_loss(&PkdConfig::new(), &s, &t);
        let grads = loss.clone().backward();
        let v = scalar(loss);
        assert!((v - 11.0 / 24.0).abs() < 1e-5, "{v}");
        let g = vals(s[0].grad(&grads).expect("student has a gradient"));
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        // M = 1 (one image, 1x1 map): official NaN (unbiased std of one value); here both
        // standardised maps are 0 and the loss is 0.
        let s = [tensor(&[1.0, 2.0], [1, 2, 1, 1], &plain)];
        let t = [tensor(&[3.0, -1.0], [1, 2, 1, 1], &plain)];
        assert_eq!(scalar(pkd_loss(&PkdConfig::new(), &s, &t)), 0.0);
    }

    #[test]
    #[should_panic(expected = "level 0")]
    fn mismatched_channels_panic() {
        let device = Device::flex();
        let s = [Tensor::<4>::zeros([1, 2, 3, 3], &device)];
        let t = [Tensor::<4>::zeros([1, 3, 3, 3], &device)];
        let _ = pkd_loss(&PkdConfig::new(), &s, &t);
    }

    #[test]
    fn config_defaults_and_serde_round_trip() {
        let config = PkdConfig::new();
        assert!(config.resize_student);
        let json = config_to_json(&config.clone().with_resize_student(false));
        let back = PkdConfig::load_binary(json.as_bytes()).expect("round trip");
        assert_eq!(back, config.with_resize_student(false));
    }
}
