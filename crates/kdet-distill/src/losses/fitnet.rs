//! FitNets feature imitation (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
//! arXiv:1412.6550) with MMRazor's `L2Loss` reduction
//! (`mmrazor/models/losses/l2_loss.py`), spec `../shared/methods/kd-detection.md` §11.1.
//!
//! The paper's hint loss is `L = ||r(F^S) - F^T||^2` with a regressor `r`; here `r` is the
//! student's connector, already applied by the caller. Per level, with `s_n`, `t_n` the
//! flattened `C*H*W` vectors of image `n`:
//!
//! ```text
//! normalize = true :  s_n <- s_n / ||s_n||_2,  t_n <- t_n / ||t_n||_2   (per image)
//! L_level = sum_{n,i} (s_{n,i} - t_{n,i})^2 / D,
//!           D = N (div_element = false)  or  N*C*H*W (div_element = true)
//! L = sum over levels of L_level
//! ```
//!
//! Official reduction: the squared error is *summed* over every element and divided by the
//! batch size `N` (MMRazor defaults `normalize=True`, `div_element=False`); the per-level
//! losses are summed, as MMRazor configures one loss per level. The recipe weight is not
//! applied here.
//!
//! Not exposed: MMRazor's `mult` (a constant factor on the normalised vectors, default 1.0,
//! equivalent to a loss weight of `mult^2`) and `dist` (sqrt of the summed error instead of
//! the division, default `False`); MMRazor ships `L2Loss` only in classification configs
//! (spec §11.2), so its defaults are the reference.
//!
//! Deliberate deviation: MMRazor divides by `||x||_2` unguarded, so an all-zero sample gives
//! NaN. Here the norm is `sqrt(max(sum x^2, 1e-24))` (`F.normalize`'s `eps = 1e-12`), so a
//! zero sample normalises to zero with finite gradients; every sample with a squared norm
//! of at least 1e-24 gives the official value.

use super::sum_over_levels;
use burn::config::Config;
use burn::tensor::{Device, Tensor};

use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use crate::taps::Tap;

/// Configuration of [`fitnet_loss`] (MMRazor `L2Loss`).
#[derive(Config, Debug, PartialEq)]
pub struct FitnetConfig {
    /// L2-normalise each image's flattened `C*H*W` vector before the error (MMRazor
    /// `L2Loss(normalize=True)`, its default).
    #[config(default = true)]
    pub normalize: bool,
    /// Divide the summed squared error by the element count `N*C*H*W` instead of the batch
    /// size `N` (MMRazor `L2Loss(div_element=False)`, its default).
    #[config(default = false)]
    pub div_element: bool,
}

/// Lower bound on the squared L2 norm, `eps^2` with `eps = 1e-12` as torch `F.normalize`.
const NORM_SQ_EPS: f32 = 1e-24;

/// FitNets (MMRazor `L2Loss`) summed over levels, without the recipe weight.
///
/// Student levels are on the autodiff device (after the connector), teacher levels on the
/// plain device; level `l` of both must have the same shape.
///
/// # Shapes
/// - `students`, `teachers`: `L` levels (fine to coarse, `L >= 1`), each `[N, C, H_l, W_l]`
/// - returns `[1]`
///
/// # Panics
/// If the level counts differ, there are no levels, or a level's student and teacher
/// shapes differ.
pub fn fitnet_loss(
    config: &FitnetConfig,
    students: &[Tensor<4>],
    teachers: &[Tensor<4>],
) -> Tensor<1> {
    sum_over_levels(
        "fitnet_loss",
        students,
        teachers,
        true,
        |_, student, teacher| {
            let [n, c, h, w] = student.dims();
            // [N, C*H*W]: one row per image, as MMRazor's `feature.view(N, -1)`.
            let mut s: Tensor<2> = student.clone().reshape([n, c * h * w]);
            let mut t: Tensor<2> = teacher.clone().reshape([n, c * h * w]);
            if config.normalize {
                s = l2_normalize_rows(s);
                t = l2_normalize_rows(t);
            }
            let divisor = if config.div_element { n * c * h * w } else { n };
            (s - t).square().sum().div_scalar(divisor as f32)
        },
    )
}

/// Divides each row by its L2 norm, `sqrt(max(sum x^2, 1e-24))`.
///
/// # Shapes
/// `[N, D]` -> `[N, D]`
fn l2_normalize_rows(x: Tensor<2>) -> Tensor<2> {
    // [N, 1]; clamping before the sqrt keeps the gradient finite for an all-zero row.
    let norm = x.clone().square().sum_dim(1).clamp_min(NORM_SQ_EPS).sqrt();
    x / norm
}

impl KdMethod for FitnetConfig {
    const NAME: &'static str = "fitnet";
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// FPN features by default (any feature tap; a connector maps the student's channels).
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        false
    }

    fn init(&self, _wiring: &Wiring, _device: &Device) -> NoModules {
        NoModules::new()
    }

    fn terms(&self, _modules: &NoModules, inputs: &KdInputs) -> Vec<KdTerm> {
        KdTerm::single(fitnet_loss(
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

    fn levels(values: &[Vec<f32>], device: &Device) -> Vec<Tensor<4>> {
        level_tensors(values, &SHAPES, device)
    }

    /// The spec formula in plain f64 loops over NCHW-contiguous data: per image `n` the
    /// slice `[n*CHW, (n+1)*CHW)` is the flattened sample vector; optionally divide each
    /// by its Euclidean norm; sum the squared differences; divide by N or by N*C*H*W.
    fn reference(
        normalize: bool,
        div_element: bool,
        students: &[Vec<f32>],
        teachers: &[Vec<f32>],
    ) -> f64 {
        let mut total = 0.0;
        for ((s, t), [n, c, h, w]) in students.iter().zip(teachers).zip(SHAPES) {
            let chw = c * h * w;
            let mut sum = 0.0;
            for img in 0..n {
                let sv = to_f64(&s[img * chw..(img + 1) * chw]);
                let tv = to_f64(&t[img * chw..(img + 1) * chw]);
                let (ns, nt) = if normalize {
                    (
                        sv.iter().map(|v| v * v).sum::<f64>().sqrt(),
                        tv.iter().map(|v| v * v).sum::<f64>().sqrt(),
                    )
                } else {
                    (1.0, 1.0)
                };
                for i in 0..chw {
                    let d = sv[i] / ns - tv[i] / nt;
                    sum += d * d;
                }
            }
            total += sum
                / if div_element {
                    (n * chw) as f64
                } else {
                    n as f64
                };
        }
        total
    }

    fn inputs() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        (level_values(11, &SHAPES), level_values(101, &SHAPES))
    }

    #[test]
    fn golden_value_matches_f64_reference_for_every_flag_combination() {
        let device = Device::flex();
        let (sv, tv) = inputs();
        let students = levels(&sv, &device);
        let teachers = levels(&tv, &device);
        for normalize in [true, false] {
            for div_element in [false, true] {
                let config = FitnetConfig::new()
                    .with_normalize(normalize)
                    .with_div_element(div_element);
                let got = scalar(fitnet_loss(&config, &students, &teachers));
                let want = reference(normalize, div_element, &sv, &tv);
                assert_rel(
                    got,
                    want,
                    1e-4,
                    &format!("normalize={normalize} div_element={div_element}"),
                );
            }
        }
    }

    #[test]
    fn hand_value_single_image() {
        // N = C = H = 1, W = 2: s = (3, 4), t = (1, 0).
        // normalize: s/|s| = (0.6, 0.8), t/|t| = (1, 0); (0.6-1)^2 + 0.8^2 = 0.16 + 0.64
        // = 0.8, divided by N = 1 -> 0.8.
        // raw: (3-1)^2 + 4^2 = 20; / N = 20; / numel = 20 / 2 = 10.
        let device = Device::flex();
        let s = [tensor(&[3.0, 4.0], [1, 1, 1, 2], &device)];
        let t = [tensor(&[1.0, 0.0], [1, 1, 1, 2], &device)];
        let cases = [
            (true, false, 0.8),
            (false, false, 20.0),
            (false, true, 10.0),
        ];
        for (normalize, div_element, want) in cases {
            let config = FitnetConfig::new()
                .with_normalize(normalize)
                .with_div_element(div_element);
            let got = scalar(fitnet_loss(&config, &s, &t));
            assert!(
                (got - want).abs() < 1e-5,
                "{normalize} {div_element}: {got}"
            );
        }
    }

    #[test]
    fn zero_when_student_equals_teacher() {
        // Identical inputs give identical (normalised) vectors, so every squared difference
        // is exactly zero.
        let device = Device::flex();
        let (sv, _) = inputs();
        let levels = levels(&sv, &device);
        for normalize in [true, false] {
            let config = FitnetConfig::new().with_normalize(normalize);
            let got = scalar(fitnet_loss(&config, &levels, &levels));
            assert!(got.abs() < 1e-7, "normalize={normalize}: {got}");
        }
    }

    #[test]
    fn normalized_loss_ignores_positive_per_image_scale() {
        // With normalize, t_n / |t_n| is unchanged by t_n -> a_n t_n (a_n > 0), so the loss
        // must not change; without it, it must.
        let device = Device::flex();
        let (sv, tv) = inputs();
        let students = levels(&sv, &device);
        let teachers = levels(&tv, &device);
        // Image 0 scaled by 3, image 1 by 0.5.
        let scale = tensor(&[3.0, 0.5], [2, 1, 1, 1], &device);
        let scaled: Vec<Tensor<4>> = teachers.iter().map(|t| t.clone() * scale.clone()).collect();
        let config = FitnetConfig::new();
        let a = scalar(fitnet_loss(&config, &students, &teachers));
        let b = scalar(fitnet_loss(&config, &students, &scaled));
        assert_rel(b, a, 1e-5, "scaled teacher, normalized");
        let raw = FitnetConfig::new().with_normalize(false);
        let a = scalar(fitnet_loss(&raw, &students, &teachers));
        let b = scalar(fitnet_loss(&raw, &students, &scaled));
        assert!((a - b).abs() > 1e-2 * a, "{a} vs {b}");
    }

    #[test]
    fn gradient_reaches_student_and_is_finite() {
        let (sv, tv) = inputs();
        let (students, teachers) = grad_levels(&sv, &SHAPES, &tv, &SHAPES);
        for normalize in [true, false] {
            let config = FitnetConfig::new().with_normalize(normalize);
            let loss = fitnet_loss(&config, &students, &teachers);
            let grads = loss.backward();
            assert_level_grads(&students, &grads);
        }
    }

    #[test]
    fn all_zero_features_are_finite() {
        // Official MMRazor gives NaN (0 / 0) for an all-zero sample; the guarded norm maps it
        // to the zero vector. Student zero, teacher unit-normalised: each image contributes
        // |t_n / |t_n||^2 = 1, so one level of N = 2 images gives 2 / N = 1.
        let plain = Device::flex();
        let autodiff = Device::flex().autodiff();
        let shape = SHAPES[1];
        let s = [Tensor::<4>::zeros(shape, &autodiff).require_grad()];
        let t = [tensor(
            &Lcg::new(5).vec_f32(shape.iter().product(), 2.0),
            shape,
            &plain,
        )];
        let loss = fitnet_loss(&FitnetConfig::new(), &s, &t);
        let grads = loss.clone().backward();
        let v = scalar(loss);
        assert!((v - 1.0).abs() < 1e-5, "{v}");
        let g = vals(s[0].grad(&grads).expect("student has a gradient"));
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        // Both sides zero: the loss is exactly zero.
        let z = [Tensor::<4>::zeros(shape, &plain)];
        assert_eq!(scalar(fitnet_loss(&FitnetConfig::new(), &z, &z)), 0.0);
    }

    #[test]
    #[should_panic(expected = "level 0")]
    fn mismatched_shapes_panic() {
        let device = Device::flex();
        let s = [Tensor::<4>::zeros([1, 2, 3, 3], &device)];
        let t = [Tensor::<4>::zeros([1, 3, 3, 3], &device)];
        let _ = fitnet_loss(&FitnetConfig::new(), &s, &t);
    }

    #[test]
    fn config_defaults_and_serde_round_trip() {
        let config = FitnetConfig::new();
        assert!(config.normalize);
        assert!(!config.div_element);
        let json = config_to_json(&config.clone().with_div_element(true));
        let back = FitnetConfig::load_binary(json.as_bytes()).expect("round trip");
        assert_eq!(back, config.with_div_element(true));
    }
}
