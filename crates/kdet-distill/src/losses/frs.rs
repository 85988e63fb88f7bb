//! FRS: Feature-Richness Score distillation (Du et al., "Distilling Object Detectors with
//! Feature Richness", NeurIPS 2021, arXiv:2111.00674), as the official `duzhixing/FRS`
//! `Distilling_FRS_Single.forward_train` (`detectors/distill_frs_single.py`).
//!
//! Spec: `../shared/methods/kd-detection.md` §4 (§4.1 formulas, §4.2 defaults).
//!
//! Per pyramid level `l`, with the teacher's class logits `s^T_l` `[N, A*K, H, W]`, the
//! student's `s^S_l`, the teacher feature `F^T_l` and the *adapted* student feature
//! `Adap_l(F^S_l)` (`[N, C, H, W]`):
//!
//! ```text
//! M_l(n,h,w) = max_ch σ(s^T_l)(n,ch,h,w)                        (detached; frs_mask)
//! L^feat_l   = Σ_{n,c,h,w} M_l (F^T_l − Adap_l(F^S_l))² / Σ_{n,h,w} M_l
//! L^cls_l    = Σ_{n,ch,h,w} M_l · BCE(σ(s^S_l), σ(s^T_l))  / Σ_{n,h,w} M_l
//! BCE(p, t)  = −(t · max(ln p, −100) + (1 − t) · max(ln(1 − p), −100))
//! L          = w_f Σ_l L^feat_l + w_c Σ_l L^cls_l
//! ```
//!
//! Official reduction: the sums over every element (channels summed, not averaged) divided
//! by the mask sum of the level, then summed over levels. The BCE is PyTorch's
//! `F.binary_cross_entropy` on probabilities with the soft teacher probability as target,
//! including its clamp of each log at −100; it is not 0 when student == teacher (it is then
//! the teacher's binary entropy).
//!
//! Not in this file: the student adapter (`ADAP`, one 3×3 conv per level) is the
//! distiller's connector (the student features arrive already adapted), and the official
//! linear warm-up `iter / 500` over the first 500 iterations is the distiller's schedule.
//!
//! Deliberate deviations:
//! - gradient of the class term: PyTorch's BCE backward is `(p − t) / max(p(1 − p), 1e-12)`
//!   which, through the sigmoid, is `σ(s) − t` wherever `p(1 − p) ≥ 1e-12`. We compute the
//!   forward value exactly as PyTorch (on probabilities, clamped logs) but take the
//!   gradient of the equivalent BCE-with-logits, `σ(s) − t`, everywhere: the clamped log
//!   of a saturated f32 sigmoid would otherwise back-propagate `0 / 0 = NaN`, and where
//!   PyTorch's gradient vanishes on saturation (`|s| ≳ 17`) ours stays `σ(s) − t`;
//! - the mask sum is clamped to the smallest positive f32, so a level whose teacher
//!   sigmoids all underflow gives 0 instead of `0/0` (the official code has no guard; the
//!   mask sum is otherwise always positive).

use burn::config::Config;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use kdet_models::losses::binary_cross_entropy_with_logits;

use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use crate::plan::check_same_grid;
use crate::taps::Tap;

/// Configuration of FRS (loss weights of the official GFL config
/// `config/distill_frs/resnet50_resnet101_gfl_frs.py`, spec §4.2).
#[derive(Config, Debug, PartialEq)]
pub struct FrsConfig {
    /// `w_f`, weight of the feature term (official GFL config `distill_feat_weight=0.1`;
    /// RetinaNet config 0.005, Faster R-CNN 0.002).
    #[config(default = 0.1)]
    pub feature_weight: f32,
    /// `w_c`, weight of the class term (official GFL config `distill_cls_weight=0.05`;
    /// RetinaNet config 0.02, Faster R-CNN 0.1).
    #[config(default = 0.05)]
    pub cls_weight: f32,
}

/// The two FRS terms, each multiplied by its weight and summed over levels (`[1]` each).
#[derive(Debug, Clone)]
pub struct FrsTerms {
    /// `w_f Σ_l L^feat_l`.
    pub feature: Tensor<1>,
    /// `w_c Σ_l L^cls_l`.
    pub cls: Tensor<1>,
}

/// The feature-richness mask `M_l = max over channels of σ(teacher cls logits)`, detached
/// (a constant; on the teacher's device).
///
/// # Shapes
/// - `teacher_cls`: `[N, A*K, H, W]` → `[N, H, W]`
pub fn frs_mask(teacher_cls: &Tensor<4>) -> Tensor<3> {
    sigmoid(teacher_cls.clone().detach())
        .max_dim(1)
        .squeeze_dim::<3>(1)
}

/// PyTorch's `F.binary_cross_entropy(σ(s), t, reduction='none')` in value, with the
/// gradient of `binary_cross_entropy_with_logits(s, t)` (see the module docs).
///
/// # Shapes
/// - `student_logits`, `targets`: `[N, C, H, W]` → `[N, C, H, W]`
fn bce_on_probabilities(student_logits: Tensor<4>, targets: Tensor<4>) -> Tensor<4> {
    let p = sigmoid(student_logits.clone().detach());
    let log_p = p.clone().log().clamp_min(-100.0);
    let log_1mp = p.neg().add_scalar(1.0).log().clamp_min(-100.0);
    let value = (log_p * targets.clone() + log_1mp * targets.clone().neg().add_scalar(1.0)).neg();
    // `surrogate − surrogate.detach()` is exactly 0 in value and carries σ(s) − t.
    let surrogate = binary_cross_entropy_with_logits(student_logits, targets);
    value + surrogate.clone() - surrogate.detach()
}

/// The FRS terms (see the module docs).
///
/// `student_feats`: the adapted student features (autodiff device); `teacher_feats`,
/// `teacher_cls`: the teacher's (plain device); `student_cls`: the student's class logits.
///
/// # Shapes
/// - `student_feats[l]`, `teacher_feats[l]`: `[N, C, H_l, W_l]`
/// - `student_cls[l]`, `teacher_cls[l]`: `[N, A*K, H_l, W_l]`
/// - returns two `[1]` scalars
///
/// # Panics
/// If there is no level or the level counts or shapes disagree (shape contracts).
pub fn frs_loss(
    config: &FrsConfig,
    student_feats: &[Tensor<4>],
    teacher_feats: &[Tensor<4>],
    student_cls: &[Tensor<4>],
    teacher_cls: &[Tensor<4>],
) -> FrsTerms {
    let levels = student_feats.len();
    assert!(levels > 0, "frs_loss: no level");
    assert_eq!(
        [teacher_feats.len(), student_cls.len(), teacher_cls.len()],
        [levels; 3],
        "frs_loss: teacher features / student cls / teacher cls levels vs {levels} student levels"
    );
    let mut feature: Option<Tensor<1>> = None;
    let mut cls: Option<Tensor<1>> = None;
    for l in 0..levels {
        let [n, _, h, w] = student_feats[l].dims();
        assert_eq!(
            student_feats[l].dims(),
            teacher_feats[l].dims(),
            "frs_loss: level {l}: student feature vs teacher feature"
        );
        assert_eq!(
            student_cls[l].dims(),
            teacher_cls[l].dims(),
            "frs_loss: level {l}: student cls vs teacher cls"
        );
        let [cn, _, ch, cw] = teacher_cls[l].dims();
        assert_eq!(
            [cn, ch, cw],
            [n, h, w],
            "frs_loss: level {l}: cls map [N, H, W] vs feature [N, H, W]"
        );
        let mask = frs_mask(&teacher_cls[l]); // [N, H, W]
        let mask_sum = mask.clone().sum().clamp_min(f32::MIN_POSITIVE); // [1]
        let mask = mask.unsqueeze_dim::<4>(1); // [N, 1, H, W]

        let diff = student_feats[l].clone() - teacher_feats[l].clone(); // [N, C, H, W]
        let feat = (diff.powi_scalar(2) * mask.clone()).sum() / mask_sum.clone();

        let targets = sigmoid(teacher_cls[l].clone().detach()); // [N, A*K, H, W]
        let bce = bce_on_probabilities(student_cls[l].clone(), targets);
        let cls_l = (bce * mask).sum() / mask_sum;

        feature = Some(match feature {
            Some(acc) => acc + feat,
            None => feat,
        });
        cls = Some(match cls {
            Some(acc) => acc + cls_l,
            None => cls_l,
        });
    }
    FrsTerms {
        feature: feature
            .expect("at least one level (asserted above)")
            .mul_scalar(config.feature_weight),
        cls: cls
            .expect("at least one level (asserted above)")
            .mul_scalar(config.cls_weight),
    }
}

impl KdMethod for FrsConfig {
    const NAME: &'static str = "frs";
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// An adapted FPN feature (mask KD) plus the class logits of the same levels (cls KD).
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        true
    }

    /// FRS weights the features by the dense head's class scores.
    fn needs_dense_head(&self) -> bool {
        true
    }

    /// Both taps `neck`, and the class-logit maps of the selected levels on equal grids.
    fn check(&self, wiring: &Wiring) -> Result<(), String> {
        if wiring.taps != Some((Tap::Neck, Tap::Neck)) {
            return Err(
                "FRS weights FPN features by the class scores of the same level: both taps must be `neck`".into(),
            );
        }
        check_same_grid(
            wiring.levels,
            wiring.student_shapes,
            wiring.teacher_shapes,
            &[Tap::ClsLogits],
        )
    }

    fn init(&self, _wiring: &Wiring, _device: &Device) -> NoModules {
        NoModules::new()
    }

    fn terms(&self, _modules: &NoModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let terms = frs_loss(
            self,
            &inputs.student_features,
            &inputs.teacher_features,
            &inputs.student_tap(Tap::ClsLogits),
            &inputs.teacher_tap(Tap::ClsLogits),
        );
        vec![
            KdTerm::new("feature", terms.feature),
            KdTerm::new("cls", terms.cls),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::test_util::{Lcg, assert_rel, scalar, tensor, vals};
    use burn::tensor::Device;

    fn sig(z: f64) -> f64 {
        1.0 / (1.0 + (-z).exp())
    }

    /// PyTorch `binary_cross_entropy(p, t)` with logs clamped at −100, in f64.
    fn bce_f64(p: f64, t: f64) -> f64 {
        -(t * p.ln().max(-100.0) + (1.0 - t) * (1.0 - p).ln().max(-100.0))
    }

    const N: usize = 2;
    const C: usize = 4;
    const CLS: usize = 3;
    /// `(H, W)` of the two levels.
    const LEVELS: [(usize, usize); 2] = [(2, 3), (3, 2)];

    struct Raw {
        sf: Vec<Vec<f64>>,
        tf: Vec<Vec<f64>>,
        sc: Vec<Vec<f64>>,
        tc: Vec<Vec<f64>>,
    }

    fn raw(seed: u64) -> Raw {
        let make = |off: u64, ch: usize, amp: f64| -> Vec<Vec<f64>> {
            LEVELS
                .iter()
                .enumerate()
                .map(|(l, &(h, w))| {
                    Lcg::new(seed * 100 + off + l as u64).vec_f64(N * ch * h * w, amp)
                })
                .collect()
        };
        Raw {
            sf: make(0, C, 2.0),
            tf: make(10, C, 2.0),
            sc: make(20, CLS, 4.0),
            tc: make(30, CLS, 4.0),
        }
    }

    fn tensors(v: &[Vec<f64>], ch: usize, device: &Device) -> Vec<Tensor<4>> {
        v.iter()
            .zip(LEVELS)
            .map(|(v, (h, w))| tensor(v, [N, ch, h, w], device))
            .collect()
    }

    /// `(feature, cls)` straight from spec §4.1 in f64 loops over the NCHW arrays, before
    /// the weights.
    fn expected(r: &Raw) -> (f64, f64) {
        let (mut feat, mut cls) = (0.0, 0.0);
        for (l, &(h, w)) in LEVELS.iter().enumerate() {
            let idx =
                |n: usize, c: usize, ch: usize, y: usize, x: usize| ((n * ch + c) * h + y) * w + x;
            let (mut num_f, mut num_c, mut den) = (0.0, 0.0, 0.0);
            for n in 0..N {
                for y in 0..h {
                    for x in 0..w {
                        let m = (0..CLS)
                            .map(|c| sig(r.tc[l][idx(n, c, CLS, y, x)]))
                            .fold(f64::NEG_INFINITY, f64::max);
                        den += m;
                        for c in 0..C {
                            let d = r.tf[l][idx(n, c, C, y, x)] - r.sf[l][idx(n, c, C, y, x)];
                            num_f += m * d * d;
                        }
                        for c in 0..CLS {
                            let i = idx(n, c, CLS, y, x);
                            num_c += m * bce_f64(sig(r.sc[l][i]), sig(r.tc[l][i]));
                        }
                    }
                }
            }
            feat += num_f / den;
            cls += num_c / den;
        }
        (feat, cls)
    }

    fn run(config: &FrsConfig, r: &Raw) -> FrsTerms {
        let (ad, pd) = (Device::flex().autodiff(), Device::flex());
        frs_loss(
            config,
            &tensors(&r.sf, C, &ad),
            &tensors(&r.tf, C, &pd),
            &tensors(&r.sc, CLS, &ad),
            &tensors(&r.tc, CLS, &pd),
        )
    }

    #[test]
    fn mask_is_the_channel_max_of_teacher_sigmoids() {
        // One image, 2 channels, 1×2 map: location 0 has logits (0, ln 3) -> max(1/2, 3/4);
        // location 1 has (−ln 3, −ln 3) -> 1/4.
        let l3 = 3f64.ln();
        let t = tensor(&[0.0, -l3, l3, -l3], [1, 2, 1, 2], &Device::flex());
        let m = vals(frs_mask(&t));
        assert_eq!(m.len(), 2);
        assert!(
            (m[0] - 0.75).abs() < 1e-6 && (m[1] - 0.25).abs() < 1e-6,
            "{m:?}"
        );
    }

    #[test]
    fn golden_values() {
        let r = raw(1);
        let (feat, cls) = expected(&r);
        let terms = run(&FrsConfig::new(), &r);
        let got = (scalar(terms.feature), scalar(terms.cls));
        let exp = (0.1 * feat, 0.05 * cls);
        assert_rel(got.0, exp.0, 1e-4, "feature");
        assert_rel(got.1, exp.1, 1e-4, "cls");
    }

    #[test]
    fn hand_derived_single_location() {
        // One image, 1×1 map, 2 feature channels, 1 class. Teacher logit 0: M = σ(0) = 1/2.
        // Features: teacher (1, 1), student (0, 0): Σ M · (1 + 1) / Σ M = 2 -> ×0.1 = 0.2.
        // Class: student logit ln 3 (p = 3/4) vs target 1/2:
        //   BCE = −(½ ln ¾ + ½ ln ¼) = ln 4 − ½ ln 3; / M · M -> ×0.05.
        let (ad, pd) = (Device::flex().autodiff(), Device::flex());
        let terms = frs_loss(
            &FrsConfig::new(),
            &[tensor(&[0.0, 0.0], [1, 2, 1, 1], &ad)],
            &[tensor(&[1.0, 1.0], [1, 2, 1, 1], &pd)],
            &[tensor(&[3f64.ln()], [1, 1, 1, 1], &ad)],
            &[tensor(&[0.0], [1, 1, 1, 1], &pd)],
        );
        let cls = 0.05 * (4f64.ln() - 0.5 * 3f64.ln());
        assert!((scalar(terms.feature) - 0.2).abs() < 1e-6);
        assert!((scalar(terms.cls) - cls).abs() < 1e-6);
    }

    #[test]
    fn identical_inputs_leave_the_teacher_entropy() {
        // Student == teacher: the feature term is Σ M · 0 = 0; the class term is
        // Σ M · BCE(t, t) / Σ M with BCE(t, t) = −(t ln t + (1 − t) ln(1 − t)) = H(t), the
        // binary entropy of the teacher probability (> 0 for 0 < t < 1, not 0).
        let mut r = raw(2);
        r.sf = r.tf.clone();
        r.sc = r.tc.clone();
        let mut entropy = 0.0;
        for (l, &(h, w)) in LEVELS.iter().enumerate() {
            let hw = h * w;
            let (mut num, mut den) = (0.0, 0.0);
            for n in 0..N {
                for p in 0..hw {
                    let t: Vec<f64> = (0..CLS)
                        .map(|c| sig(r.tc[l][(n * CLS + c) * hw + p]))
                        .collect();
                    let m = t.iter().cloned().fold(0.0, f64::max);
                    den += m;
                    num += m * t
                        .iter()
                        .map(|&t| -(t * t.ln() + (1.0 - t) * (1.0 - t).ln()))
                        .sum::<f64>();
                }
            }
            entropy += num / den;
        }
        let terms = run(&FrsConfig::new(), &r);
        assert!(scalar(terms.feature).abs() < 1e-7);
        let cls = scalar(terms.cls);
        assert!(entropy > 0.0, "{entropy}");
        assert_rel(cls, 0.05 * entropy, 1e-4, "cls (teacher entropy)");
    }

    #[test]
    fn gradients_reach_student_features_and_logits() {
        let r = raw(3);
        let (ad, pd) = (Device::flex().autodiff(), Device::flex());
        let sf: Vec<Tensor<4>> = tensors(&r.sf, C, &ad)
            .into_iter()
            .map(|t| t.require_grad())
            .collect();
        let sc: Vec<Tensor<4>> = tensors(&r.sc, CLS, &ad)
            .into_iter()
            .map(|t| t.require_grad())
            .collect();
        let terms = frs_loss(
            &FrsConfig::new(),
            &sf,
            &tensors(&r.tf, C, &pd),
            &sc,
            &tensors(&r.tc, CLS, &pd),
        );
        let grads = (terms.feature + terms.cls).backward();
        for x in sf.iter().chain(&sc) {
            let g = vals(x.grad(&grads).expect("a gradient"));
            assert!(g.iter().all(|v| v.is_finite()));
            assert!(g.iter().any(|&v| v != 0.0));
        }
    }

    #[test]
    fn saturated_student_logits_follow_the_clamp_without_nan() {
        // Student logits ±40. In f32, σ(40) rounds to exactly 1, so ln(1 − σ(40)) = ln 0 is
        // clamped to −100 (PyTorch's value); σ(−40) ≈ 4e-18 is representable, so
        // ln σ(−40) ≈ −40 is not clamped. Teacher logit 0 (t = 1/2, M = 1/2):
        //   s = +40: BCE = −(½ · ln 1 + ½ · (−100)) = 50,
        //   s = −40: BCE = −(½ · ln σ(−40) + ½ · ln 1) = ½ · 40 = 20 (ln σ(−40) ≈ −40).
        // Gradient σ(s) − t = ±1/2, weighted by M / Σ M = 1/2 per location: ±1/4 × 0.05.
        let (ad, pd) = (Device::flex().autodiff(), Device::flex());
        let s = tensor(&[40.0, -40.0], [1, 1, 1, 2], &ad).require_grad();
        let terms = frs_loss(
            &FrsConfig::new().with_cls_weight(1.0),
            &[tensor(&[0.0, 0.0], [1, 1, 1, 2], &ad)],
            &[tensor(&[0.0, 0.0], [1, 1, 1, 2], &pd)],
            std::slice::from_ref(&s),
            &[tensor(&[0.0, 0.0], [1, 1, 1, 2], &pd)],
        );
        // (½ · 50 + ½ · 20) / (½ + ½) = 35.
        let cls = scalar(terms.cls.clone());
        assert!((cls - 35.0).abs() < 1e-3, "{cls}");
        let g = vals(s.grad(&terms.cls.backward()).expect("a gradient"));
        assert!(
            (g[0] - 0.25).abs() < 1e-6 && (g[1] + 0.25).abs() < 1e-6,
            "{g:?}"
        );
    }

    #[test]
    fn config_defaults_and_serde() {
        let c = FrsConfig::new();
        assert_eq!((c.feature_weight, c.cls_weight), (0.1, 0.05));
        let json = burn::config::config_to_json(&c);
        let back = FrsConfig::load_binary(json.as_bytes()).expect("valid JSON config");
        assert_eq!(back, c);
    }
}
