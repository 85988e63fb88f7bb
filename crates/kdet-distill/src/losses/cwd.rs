//! Channel-wise distillation, CWD (Shu et al., "Channel-wise Knowledge Distillation for Dense
//! Prediction", ICCV 2021, arXiv:2011.13256), as MMRazor's `ChannelWiseDivergence`
//! (`mmrazor/models/losses/cwd.py`), spec `../shared/methods/kd-detection.md` §11.1.
//!
//! Each channel map of each image becomes a distribution over its `H*W` locations:
//!
//! ```text
//! phi(F)_{n,c} = softmax_{hw}(F_{n,c,:,:} / tau)
//! L_level = tau^2 / (N*C) * sum_{n,c} KL(phi(F^T)_{n,c} || phi(F^S)_{n,c})
//!         = tau^2 / (N*C) * sum_{n,c,hw} p^T (log p^T - log p^S)
//! L = sum over levels of L_level
//! ```
//!
//! Official reduction: the KL is summed over locations, channels and images, multiplied by
//! `tau^2` and divided by `N*C` (not by `H*W`); one loss per FPN level, summed. The recipe
//! weight (MMRazor FPN configs: 10 per level; GFL cls-head: 5) is not applied here.
//! Defaults: `tau = 1` (MMRazor CWD FPN and GFL cls-head configs).
//!
//! Both log-distributions come from `log_softmax`, so large activations cannot overflow;
//! this is the same value as the official `softmax * logsoftmax` form. No deviation.

use super::sum_over_levels;
use burn::config::Config;
use burn::tensor::{Device, Tensor};

use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use crate::taps::Tap;
use burn::tensor::activation::log_softmax;

/// Configuration of [`cwd_loss`] (MMRazor `ChannelWiseDivergence`).
#[derive(Config, Debug, PartialEq)]
pub struct CwdConfig {
    /// Softmax temperature `tau` (MMRazor `ChannelWiseDivergence(tau=1)` in the
    /// `cwd_fpn_*` and `cwd_cls_head_gfl_*` configs; also its default).
    #[config(default = 1.0)]
    pub temperature: f32,
}

/// CWD (MMRazor `ChannelWiseDivergence`) summed over levels, without the recipe weight.
///
/// Student levels are on the autodiff device (after the connector), teacher levels on the
/// plain device; level `l` of both must have the same shape.
///
/// # Shapes
/// - `students`, `teachers`: `L` levels (fine to coarse, `L >= 1`), each `[N, C, H_l, W_l]`
/// - returns `[1]`
///
/// # Panics
/// If the level counts differ, there are no levels, a level's student and teacher
/// shapes differ, or `temperature <= 0` (the distiller should validate recipe values).
pub fn cwd_loss(config: &CwdConfig, students: &[Tensor<4>], teachers: &[Tensor<4>]) -> Tensor<1> {
    assert!(
        config.temperature > 0.0,
        "cwd_loss: expected a positive temperature, got {}",
        config.temperature
    );
    let tau = config.temperature;
    sum_over_levels(
        "cwd_loss",
        students,
        teachers,
        true,
        |_, student, teacher| {
            let [n, c, h, w] = student.dims();
            // [N*C, H*W]: one spatial distribution per (image, channel).
            let s: Tensor<2> = student.clone().reshape([n * c, h * w]).div_scalar(tau);
            let t: Tensor<2> = teacher.clone().reshape([n * c, h * w]).div_scalar(tau);
            let log_p_s = log_softmax(s, 1);
            let log_p_t = log_softmax(t, 1);
            let p_t = log_p_t.clone().exp();
            let kl = (p_t * (log_p_t - log_p_s)).sum();
            kl.mul_scalar(tau * tau / (n * c) as f32)
        },
    )
}

impl KdMethod for CwdConfig {
    const NAME: &'static str = "cwd";
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// FPN features by default; MMRazor's GFL config applies it to the class logits (`cls_logits`).
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
        KdTerm::single(cwd_loss(
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
        assert_level_grads, assert_rel, grad_levels, kl_f64, level_tensors, level_values, scalar,
        tensor, to_f64, vals,
    };
    use burn::config::config_to_json;
    use burn::tensor::Device;

    /// N = 2, C = 3, two levels of different, non-square sizes (3x5 and 2x3).
    const SHAPES: [[usize; 4]; 2] = [[2, 3, 3, 5], [2, 3, 2, 3]];

    fn inputs() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        (level_values(21, &SHAPES), level_values(201, &SHAPES))
    }

    fn levels(values: &[Vec<f32>], device: &Device) -> Vec<Tensor<4>> {
        level_tensors(values, &SHAPES, device)
    }

    /// The spec formula in plain f64 loops. In NCHW-contiguous data the (n, c) map is the
    /// slice `[(n*C + c)*HW, (n*C + c + 1)*HW)`. For each map: p = exp(x/tau) / sum exp(x/tau)
    /// for teacher and student (max-shifted for stability), KL = sum p_T ln(p_T / p_S); sum
    /// all maps, times tau^2 / (N*C); sum levels.
    fn reference(tau: f64, students: &[Vec<f32>], teachers: &[Vec<f32>]) -> f64 {
        let mut total = 0.0;
        for ((s, t), [n, c, h, w]) in students.iter().zip(teachers).zip(SHAPES) {
            let hw = h * w;
            let kl: f64 = (0..n * c)
                .map(|map| {
                    let range = map * hw..(map + 1) * hw;
                    kl_f64(&to_f64(&s[range.clone()]), &to_f64(&t[range]), tau)
                })
                .sum();
            total += kl / (n * c) as f64;
        }
        total
    }

    #[test]
    fn golden_value_matches_f64_reference() {
        let device = Device::flex();
        let (sv, tv) = inputs();
        let (students, teachers) = (levels(&sv, &device), levels(&tv, &device));
        for tau in [1.0f32, 2.0, 0.5] {
            let config = CwdConfig::new().with_temperature(tau);
            let got = scalar(cwd_loss(&config, &students, &teachers));
            let want = reference(tau as f64, &sv, &tv);
            assert_rel(got, want, 1e-4, &format!("tau={tau}"));
        }
    }

    #[test]
    fn hand_value_two_locations() {
        // N = C = H = 1, W = 2. Teacher (0, ln 3) -> p_T = (1/4, 3/4); student (0, 0) ->
        // p_S = (1/2, 1/2). KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308120...
        // With tau = 2 and teacher (0, 2 ln 3) the distributions are the same, so the loss is
        // tau^2 * KL = 4 * 0.1308120 = 0.5232481.
        let device = Device::flex();
        let kl = f64::from(0.25 * 0.5f32.ln() + 0.75 * 1.5f32.ln());
        let s = [tensor(&[0.0, 0.0], [1, 1, 1, 2], &device)];
        let t = [tensor(&[0.0, 3f32.ln()], [1, 1, 1, 2], &device)];
        let got = scalar(cwd_loss(&CwdConfig::new(), &s, &t));
        assert!(
            (got - kl).abs() < 1e-6 && (got - 0.130_812).abs() < 1e-5,
            "{got}"
        );
        let t2 = [tensor(&[0.0, 2.0 * 3f32.ln()], [1, 1, 1, 2], &device)];
        let got = scalar(cwd_loss(&CwdConfig::new().with_temperature(2.0), &s, &t2));
        assert!((got - 4.0 * kl).abs() < 1e-5, "{got}");
    }

    #[test]
    fn zero_when_student_equals_teacher_or_shifted_per_channel() {
        // KL(p || p) = 0. The spatial softmax is invariant to adding a constant to a whole
        // (n, c) map, so a per-(image, channel) shift of the student keeps the loss zero
        // (up to rounding); a per-location change does not.
        let device = Device::flex();
        let (sv, _) = inputs();
        let teachers = levels(&sv, &device);
        let config = CwdConfig::new();
        assert!(scalar(cwd_loss(&config, &teachers, &teachers)).abs() < 1e-6);
        let shift = tensor(&[1.0f32, -2.0, 0.5, 3.0, 0.0, -1.0], [2, 3, 1, 1], &device);
        let shifted: Vec<Tensor<4>> = teachers.iter().map(|t| t.clone() + shift.clone()).collect();
        assert!(scalar(cwd_loss(&config, &shifted, &teachers)).abs() < 1e-5);
        let scaled: Vec<Tensor<4>> = teachers.iter().map(|t| t.clone().mul_scalar(2.0)).collect();
        assert!(scalar(cwd_loss(&config, &scaled, &teachers)) > 1e-2);
    }

    #[test]
    fn gradient_reaches_student_and_is_finite() {
        let (sv, tv) = inputs();
        let (students, teachers) = grad_levels(&sv, &SHAPES, &tv, &SHAPES);
        let grads = cwd_loss(&CwdConfig::new(), &students, &teachers).backward();
        assert_level_grads(&students, &grads);
    }

    #[test]
    fn single_location_and_large_activations_are_finite() {
        // A 1x1 map is a one-point distribution for both sides: KL = 0 exactly (the official
        // code gives 0 as well). Activations of +-500 overflow a naive exp in f32 but not
        // log_softmax: teacher (500, -500) vs student (-500, 500) has p_T ~ (1, 0) and
        // log p_S ~ (-1000, 0), so KL ~ 1000.
        let plain = Device::flex();
        let autodiff = Device::flex().autodiff();
        let s = [Tensor::<4>::ones([2, 3, 1, 1], &autodiff).require_grad()];
        let t = [Tensor::<4>::zeros([2, 3, 1, 1], &plain)];
        let loss = cwd_loss(&CwdConfig::new(), &s, &t);
        let grads = loss.clone().backward();
        assert_eq!(scalar(loss), 0.0);
        let g = vals(s[0].grad(&grads).expect("student has a gradient"));
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        let s = [tensor(&[-500.0, 500.0], [1, 1, 1, 2], &plain)];
        let t = [tensor(&[500.0, -500.0], [1, 1, 1, 2], &plain)];
        let got = scalar(cwd_loss(&CwdConfig::new(), &s, &t));
        assert!((got - 1000.0).abs() < 1e-2, "{got}");
    }

    #[test]
    #[should_panic(expected = "level 1")]
    fn mismatched_shapes_panic() {
        let device = Device::flex();
        let s = [
            Tensor::<4>::zeros([1, 2, 3, 3], &device),
            Tensor::<4>::zeros([1, 2, 2, 2], &device),
        ];
        let t = [
            Tensor::<4>::zeros([1, 2, 3, 3], &device),
            Tensor::<4>::zeros([1, 2, 2, 3], &device),
        ];
        let _ = cwd_loss(&CwdConfig::new(), &s, &t);
    }

    #[test]
    fn config_defaults_and_serde_round_trip() {
        let config = CwdConfig::new();
        assert_eq!(config.temperature, 1.0);
        let json = config_to_json(&config.clone().with_temperature(4.0));
        let back = CwdConfig::load_binary(json.as_bytes()).expect("round trip");
        assert_eq!(back, config.with_temperature(4.0));
    }
}
