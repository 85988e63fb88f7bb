//! Logit knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a
//! Neural Network", NIPS DL workshop 2014, arXiv:1503.02531), the KD primitive of LD and
//! the dense logit-KD baseline.
//!
//! Spec: `../shared/methods/kd-detection.md` §11.1 (Hinton KD, MMRazor `KLDivergence`) and
//! §1.2 (mmdet `KnowledgeDistillationKLDivLoss`).
//!
//! For logit rows `z^S, z^T ∈ R^{B×D}` and temperature `T`, with `p = softmax(z / T)` over
//! the `D` entries of a row and the teacher detached:
//!
//! ```text
//! KL_i = Σ_j p^T_ij (ln p^T_ij − ln p^S_ij)
//! ClassSum  (Hinton / MMRazor KLDivergence):             ℓ_i = T² · KL_i
//! ClassMean (mmdet KnowledgeDistillationKLDivLoss, LD):  ℓ_i = T² · KL_i / D
//! ```
//!
//! The two differ by the factor `D`; published loss weights only mean something with their
//! reduction (spec §13.1), so the reduction is an explicit parameter ([`KlReduction`]).
//! `ln p^T` comes from `log_softmax`, so an underflowed teacher probability contributes
//! `0 · finite = 0`, as PyTorch's `kl_div` (`xlogy`) does.
//!
//! [`dense_logit_kd`] applies the row KL to the class logits of every prior of a dense
//! head (`K` classes per row) and reduces as MMRazor `KLDivergence(reduction='batchmean')`:
//! the sum over all rows of all levels divided by the batch size `N`. Defaults: `T = 1`,
//! [`KlReduction::ClassSum`] (MMRazor `KLDivergence(tau=1.0, reduction='batchmean')`).
//!
//! Deliberate deviation: MMRazor applied to a `[N, C, H, W]` map takes the softmax over
//! all `C` channels at a location; we take it over the `K` classes of each prior
//! (anchor-major channels `a·K + k`), which is the same for one prior per location (GFL,
//! ATSS, FCOS) and the meaningful distribution otherwise (RetinaNet's `A = 9`).

use burn::config::Config;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};
use kdet_models::heads::flatten_level;
use serde::{Deserialize, Serialize};

use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use crate::taps::Tap;

/// How the per-row KL is reduced over the `D` classes/bins of a row.
///
/// TOML / JSON: `"class_mean"` or `"class_sum"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlReduction {
    /// `T² · mean over D` (mmdet `KnowledgeDistillationKLDivLoss`, used by LD: spec §1.2).
    ClassMean,
    /// `T² · sum over D` (Hinton's KD; MMRazor `KLDivergence`: spec §11.1).
    ClassSum,
}

/// Per-row `T²`-scaled `KL(softmax(t/T) ‖ softmax(s/T))`, the teacher detached (see the
/// module docs for the two reductions over `D`).
///
/// # Shapes
/// - `student`, `teacher`: `[B, D]` logits (rows `B`, classes or bins `D`) → `[B]`
///
/// # Panics
/// If the shapes differ or `temperature` is not positive (caller invariants).
pub fn kl_div_rows(
    student: Tensor<2>,
    teacher: Tensor<2>,
    temperature: f32,
    reduction: KlReduction,
) -> Tensor<1> {
    let [b, d] = student.dims();
    assert_eq!(
        teacher.dims(),
        [b, d],
        "kl_div_rows: teacher shape {:?} != student shape {:?}",
        teacher.dims(),
        [b, d]
    );
    assert!(
        temperature > 0.0,
        "kl_div_rows: temperature must be > 0, got {temperature}"
    );
    if b == 0 {
        return Tensor::zeros([0], &student.device());
    }
    let t = temperature as f64;
    let teacher_log_p = log_softmax(teacher.detach().div_scalar(t), 1); // [B, D]
    let teacher_p = teacher_log_p.clone().exp();
    let student_log_p = log_softmax(student.div_scalar(t), 1); // [B, D]
    // The teacher terms are constants: (ln p^T − ln p^S) keeps the student's graph only.
    let kl = (student_log_p.neg() + teacher_log_p) * teacher_p; // [B, D]
    let scale = match reduction {
        KlReduction::ClassMean => t * t / d as f64,
        KlReduction::ClassSum => t * t,
    };
    kl.sum_dim(1).squeeze_dim::<1>(1).mul_scalar(scale) // [B]
}

/// Configuration of [`dense_logit_kd`].
#[derive(Config, Debug, PartialEq)]
pub struct LogitKdConfig {
    /// Temperature `T` (MMRazor `KLDivergence(tau=1.0)` default).
    #[config(default = 1.0)]
    pub temperature: f32,
    /// Reduction over the classes of a row (MMRazor `KLDivergence`: the sum over classes
    /// of `reduction='batchmean'`).
    #[config(default = "KlReduction::ClassSum")]
    pub reduction: KlReduction,
}

/// Dense logit KD on the class logits of every prior: per level `[N, A*K, H, W]` → rows of
/// `K` (anchor-major channels `a*K + k`, the prior order of [`kdet_models::Priors`]),
/// [`kl_div_rows`] on each row, summed over rows and levels and divided by `N` (MMRazor
/// `batchmean` divides by dim 0 = `N`). Not multiplied by a loss weight.
///
/// # Shapes
/// - `students[l]` (autodiff), `teachers[l]` (plain): `[N, A*K, H_l, W_l]` → `[1]`
///
/// # Panics
/// If there is no level, the level counts or shapes differ, the batch is empty or the
/// channels are not a multiple of `num_classes` (shape contracts).
pub fn dense_logit_kd(
    config: &LogitKdConfig,
    students: &[Tensor<4>],
    teachers: &[Tensor<4>],
    num_classes: usize,
) -> Tensor<1> {
    assert!(!students.is_empty(), "dense_logit_kd: no level");
    assert_eq!(
        students.len(),
        teachers.len(),
        "dense_logit_kd: {} student levels vs {} teacher levels",
        students.len(),
        teachers.len()
    );
    let n = students[0].dims()[0];
    assert!(n > 0, "dense_logit_kd: empty batch");
    let mut total: Option<Tensor<1>> = None;
    for (l, (s, t)) in students.iter().zip(teachers).enumerate() {
        assert_eq!(
            s.dims(),
            t.dims(),
            "dense_logit_kd: level {l}: student {:?} vs teacher {:?}",
            s.dims(),
            t.dims()
        );
        assert_eq!(
            s.dims()[0],
            n,
            "dense_logit_kd: level {l} has batch {} instead of {n}",
            s.dims()[0]
        );
        let s = rows_of(s.clone(), num_classes); // [N*H*W*A, K]
        let t = rows_of(t.clone(), num_classes);
        let level = kl_div_rows(s, t, config.temperature, config.reduction).sum(); // [1]
        total = Some(match total {
            Some(acc) => acc + level,
            None => level,
        });
    }
    total
        .expect("at least one level (asserted above)")
        .div_scalar(n as f64)
}

/// `[N, A*K, H, W]` → `[N*H*W*A, K]` rows in prior order.
fn rows_of(map: Tensor<4>, k: usize) -> Tensor<2> {
    let flat = flatten_level(map, k); // [N, H*W*A, K]
    let [n, p, _] = flat.dims();
    flat.reshape([n * p, k])
}

impl KdMethod for LogitKdConfig {
    const NAME: &'static str = "logit_kd";
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::new()
    }

    fn tap_use(&self) -> TapUse {
        TapUse::Fixed(&[Tap::ClsLogits])
    }

    fn compares_classes(&self) -> bool {
        true
    }

    fn init(&self, _wiring: &Wiring, _device: &Device) -> NoModules {
        NoModules::new()
    }

    fn terms(&self, _modules: &NoModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let students = inputs.student_tap(Tap::ClsLogits);
        let teachers = inputs.teacher_tap(Tap::ClsLogits);
        let k = inputs.dense_models().0.head.num_classes();
        KdTerm::single(dense_logit_kd(self, &students, &teachers, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::test_util::{Lcg, assert_rel, kl_f64, scalar, tensor, vals};
    use burn::tensor::Device;

    #[test]
    fn kl_div_rows_hand_value_for_both_reductions() {
        // Row 0: student [0, 0], teacher [ln 3, 0], T = 1: p^T = (3/4, 1/4), p^S = (1/2, 1/2);
        // KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 − ln 2 ≈ 0.130812.
        // Row 1: identical rows -> 0.
        // With T = 2 the teacher logits are [2 ln 3, 0] so p^T is again (3/4, 1/4), and
        // student [0, 0] is still uniform: KL identical, scaled by T² = 4.
        let device = Device::flex();
        let s = tensor(&[0.0f32, 0.0, 1.0, -1.0], [2, 2], &device);
        let l3 = 3f32.ln();
        let kl = 0.75 * 3f64.ln() - 2f64.ln();
        let t1 = tensor(&[l3, 0.0, 1.0, -1.0], [2, 2], &device);
        let sum = vals(kl_div_rows(
            s.clone(),
            t1.clone(),
            1.0,
            KlReduction::ClassSum,
        ));
        assert!(
            (sum[0] as f64 - kl).abs() < 1e-6 && sum[1].abs() < 1e-7,
            "{sum:?}"
        );
        let mean = vals(kl_div_rows(s.clone(), t1, 1.0, KlReduction::ClassMean));
        assert!((mean[0] as f64 - kl / 2.0).abs() < 1e-6, "{mean:?}");
        let t2 = tensor(&[2.0 * l3, 0.0, 1.0, -1.0], [2, 2], &device);
        let sum2 = vals(kl_div_rows(
            s.clone(),
            t2.clone(),
            2.0,
            KlReduction::ClassSum,
        ));
        assert!((sum2[0] as f64 - 4.0 * kl).abs() < 1e-5, "{sum2:?}");
        let mean2 = vals(kl_div_rows(s, t2, 2.0, KlReduction::ClassMean));
        assert!((mean2[0] as f64 - 2.0 * kl).abs() < 1e-5, "{mean2:?}");
    }

    #[test]
    fn kl_div_rows_with_no_rows_is_empty() {
        let device = Device::flex();
        let e = Tensor::<2>::zeros([0, 5], &device);
        let out = kl_div_rows(e.clone(), e, 2.0, KlReduction::ClassMean);
        assert_eq!(out.dims(), [0]);
    }

    /// Two images, two levels (2×3 and 1×2), A = 2 priors per location, K = 3 classes.
    fn level_shapes() -> [[usize; 4]; 2] {
        [[2, 6, 2, 3], [2, 6, 1, 2]]
    }

    #[test]
    fn dense_logit_kd_golden_value() {
        // Expected = Σ_levels Σ_{n, y, x, a} T² KL_row / N with the row of prior (y, x, a)
        // of image n = channels a*K .. a*K + K at (y, x), read directly from the NCHW
        // arrays in f64 (independent of flatten_level / the tensor code).
        let (k, a, temp) = (3usize, 2usize, 2.0f64);
        let ad = Device::flex().autodiff();
        let pd = Device::flex();
        let config = LogitKdConfig::new().with_temperature(temp as f32);
        let mut students = Vec::new();
        let mut teachers = Vec::new();
        let mut expected = 0.0;
        for (l, shape) in level_shapes().into_iter().enumerate() {
            let len = shape.iter().product();
            let sv = Lcg::new(11 + l as u64).vec_f64(len, 3.0);
            let tv = Lcg::new(97 + l as u64).vec_f64(len, 3.0);
            let [n, c, h, w] = shape;
            let at = |v: &[f64], ni: usize, ch: usize, y: usize, x: usize| {
                v[((ni * c + ch) * h + y) * w + x]
            };
            for ni in 0..n {
                for y in 0..h {
                    for x in 0..w {
                        for ai in 0..a {
                            let s: Vec<f64> =
                                (0..k).map(|j| at(&sv, ni, ai * k + j, y, x)).collect();
                            let t: Vec<f64> =
                                (0..k).map(|j| at(&tv, ni, ai * k + j, y, x)).collect();
                            expected += kl_f64(&s, &t, temp);
                        }
                    }
                }
            }
            students.push(tensor(&sv, shape, &ad));
            teachers.push(tensor(&tv, shape, &pd));
        }
        expected /= 2.0; // batchmean: / N
        let got = scalar(dense_logit_kd(&config, &students, &teachers, k));
        assert_rel(got, expected, 1e-4, "ClassSum");
        // ClassMean is exactly 1/K of ClassSum.
        let mean = scalar(dense_logit_kd(
            &config.clone().with_reduction(KlReduction::ClassMean),
            &students,
            &teachers,
            k,
        ));
        assert!((mean - expected / 3.0).abs() <= 1e-4 * expected);
    }

    #[test]
    fn dense_logit_kd_is_zero_for_identical_logits() {
        // KL(p ‖ p) = 0 for every row.
        let pd = Device::flex();
        let ad = Device::flex().autodiff();
        let [s0, s1] = level_shapes();
        let v0 = Lcg::new(5).vec_f64(s0.iter().product(), 4.0);
        let v1 = Lcg::new(6).vec_f64(s1.iter().product(), 4.0);
        let got = scalar(dense_logit_kd(
            &LogitKdConfig::new(),
            &[tensor(&v0, s0, &ad), tensor(&v1, s1, &ad)],
            &[tensor(&v0, s0, &pd), tensor(&v1, s1, &pd)],
            3,
        ));
        assert!(got.abs() < 1e-6, "{got}");
    }

    #[test]
    fn gradients_reach_the_student_only() {
        let pd = Device::flex();
        let ad = Device::flex().autodiff();
        let [s0, s1] = level_shapes();
        let x0 = tensor(&Lcg::new(1).vec_f64(s0.iter().product(), 2.0), s0, &ad).require_grad();
        let x1 = tensor(&Lcg::new(2).vec_f64(s1.iter().product(), 2.0), s1, &ad).require_grad();
        let t0 = tensor(&Lcg::new(3).vec_f64(s0.iter().product(), 2.0), s0, &pd);
        let t1 = tensor(&Lcg::new(4).vec_f64(s1.iter().product(), 2.0), s1, &pd);
        let loss = dense_logit_kd(
            &LogitKdConfig::new(),
            &[x0.clone(), x1.clone()],
            &[t0, t1],
            3,
        );
        let grads = loss.backward();
        for x in [x0, x1] {
            let g = vals(x.grad(&grads).expect("a gradient for the student"));
            assert!(g.iter().all(|v| v.is_finite()));
            assert!(g.iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn config_round_trips_with_snake_case_reduction() {
        let c = LogitKdConfig::new();
        assert_eq!((c.temperature, c.reduction), (1.0, KlReduction::ClassSum));
        let json = burn::config::config_to_json(&c);
        assert!(json.contains("\"class_sum\""), "{json}");
        let back = LogitKdConfig::load_binary(json.replace("class_sum", "class_mean").as_bytes())
            .expect("valid JSON config");
        assert_eq!(back.reduction, KlReduction::ClassMean);
    }
}
