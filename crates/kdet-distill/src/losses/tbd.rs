//! TBD: Task-Balanced Distillation (Tang et al., arXiv:2208.03006, Pattern Recognition
//! 137:109320, 2023). **A reconstruction from the abstract**: no code is public and the
//! paper's formulas were not available, so every formula below is kdet's design, built to
//! the three things the abstract states (spec `../shared/methods/kd-detection.md` §6, whose
//! placeholder design this follows). Its numbers must not be read as the paper's.
//!
//! What the abstract states: dense heads' classification scores and localisation quality
//! disagree in space; a **harmony score** (HS) measures their agreement and guides a
//! **harmony distillation** (HD) that makes the student's predictions harmonious; a
//! **task-decoupled feature distillation** (TFD) balances the classification and regression
//! tasks when choosing where to imitate features. Headline: RetinaNet-R50 41.0 COCO AP.
//!
//! kdet's design (all of it a reconstruction):
//!
//! ```text
//! positive prior a of object j (class c), from the teacher:
//!   s_a  = σ(z^T_{a,c})                       the teacher's class score
//!   u_a  = IoU(box^T_a, gt_j)                 its localisation quality
//!   HS_a = 1 − |s_a − u_a|                    harmony: 1 where score and quality agree
//!   t_a  = √(s_a u_a)                         the harmonious target
//! HD  = Σ_a HS_a |σ(z^S_{a,c}) − t_a|^β BCE(z^S_{a,c}, t_a) / Σ_a HS_a     (β = 2, GFL's QFL)
//!
//! every cell (h, w) of level l, the max over its anchors, from the teacher:
//!   M_cls = max_{a,k} σ(z^T_{a,k})            where the teacher sees an object
//!   M_reg = max_a max_j IoU(box^T_a, gt_j)    where its boxes fit one
//!   M     = λ_cls M_cls + λ_reg M_reg         the task-balanced mask (λ 0.5 / 0.5)
//! TFD = Σ_l Σ_{n,c,h,w} M (F^T − F^S)² / Σ_{n,h,w} M
//! ```
//!
//! Total `hd_weight · HD + tfd_weight · TFD`. The harmonious target lowers a confident but
//! badly placed teacher score and raises nothing above the teacher's own score or IoU;
//! the weight trusts the priors where the teacher is already harmonious. The mask
//! normalisation and the channel sum are FRS's (§4), the closest published relative. As
//! in RM + PFI, the priors of an object are the student's assignment of the step (equal
//! to the teacher's for assigners that read only prior geometry, checked by the wiring);
//! crowd regions are not objects.

use burn::config::Config;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use kdet_models::Priors;
use kdet_models::assignment::Assignment;
use kdet_models::heads::flatten_levels;
use kdet_models::losses::binary_cross_entropy_with_logits;
use kdet_structures::Instances;
use kdet_structures::iou::iou_xyxy;

use super::non_crowd as objects;
use super::pgd::{TeacherPredictions, teacher_predictions};
use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use crate::plan::check_neck_beside_head;
use crate::taps::{Tap, tap_tensors};

/// Configuration of TBD (kdet's reconstruction; see the module docs).
#[derive(Config, Debug, PartialEq)]
pub struct TbdConfig {
    /// Weight of harmony distillation.
    #[config(default = 1.0)]
    pub hd_weight: f32,
    /// Weight of task-decoupled feature distillation.
    #[config(default = 1.0)]
    pub tfd_weight: f32,
    /// `λ_cls`, the classification task's share of the feature mask.
    #[config(default = 0.5)]
    pub cls_task_weight: f32,
    /// `λ_reg`, the regression task's share of the feature mask.
    #[config(default = 0.5)]
    pub reg_task_weight: f32,
    /// `β` of the quality-focal modulation of HD (GFL's QFL: 2).
    #[config(default = 2.0)]
    pub beta: f32,
}

/// The harmony score of a class score `s` and a localisation quality `u`, both in [0, 1].
pub fn harmony(s: f32, u: f32) -> f32 {
    1.0 - (s - u).abs()
}

/// One positive prior's harmony distillation: where in the `[N·P·K]` logits, the target
/// `t` and the weight `HS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HarmonyEntry {
    pub index: usize,
    pub target: f32,
    pub harmony: f32,
}

/// Harmony entries of every positive prior of the batch (teacher side, host values).
///
/// # Panics
/// If the assignment, the teacher predictions and the ground truth disagree in size.
pub fn harmony_entries(
    teacher: &TeacherPredictions,
    assignment: &Assignment,
    gt: &[Instances],
) -> Vec<HarmonyEntry> {
    let k = teacher.num_classes;
    assert_eq!(
        (assignment.images.len(), gt.len()),
        (teacher.boxes.len(), teacher.boxes.len()),
        "TBD: assignment images / ground truths vs teacher images"
    );
    let mut out = Vec::new();
    for (img, (a, instances)) in assignment.images.iter().zip(gt).enumerate() {
        let p = teacher.boxes[img].len();
        assert_eq!(a.matched_gt.len(), p, "TBD: image {img}: priors");
        let boxes = instances.boxes().as_slice();
        let crowd = instances.crowd();
        for (prior, m) in a.matched_gt.iter().enumerate() {
            let Some(g) = *m else { continue };
            if crowd.is_some_and(|c| c[g]) {
                continue;
            }
            let class = instances.classes()[g];
            let s = teacher.scores[img][prior * k + class];
            let u = iou_xyxy(teacher.boxes[img][prior], boxes[g]).max(0.0);
            out.push(HarmonyEntry {
                index: (img * p + prior) * k + class,
                target: (s * u).sqrt(),
                harmony: harmony(s, u),
            });
        }
    }
    out
}

/// Harmony distillation, unweighted: the HS-weighted quality-focal BCE of the student's
/// logits at `entries` towards their targets, over `Σ HS` (0 with the graph kept when
/// there is nothing to distil).
///
/// # Shapes
/// - `student_logits`: `[N, P, K]` → `[1]`
pub fn harmony_distillation(
    student_logits: Tensor<3>,
    entries: &[HarmonyEntry],
    beta: f32,
) -> Tensor<1> {
    let total: f32 = entries.iter().map(|e| e.harmony).sum();
    if entries.is_empty() || total <= 0.0 {
        return student_logits.sum().mul_scalar(0.0);
    }
    let [n, p, k] = student_logits.dims();
    let device = student_logits.device();
    let m = entries.len();
    let idx: Vec<i64> = entries.iter().map(|e| e.index as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [m]), &device);
    let z = student_logits.reshape([n * p * k]).select(0, idx);
    let constant = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [m]), &device);
    let t = constant(entries.iter().map(|e| e.target).collect());
    let w = constant(entries.iter().map(|e| e.harmony).collect());
    let modulation = (sigmoid(z.clone()) - t.clone()).abs().powf_scalar(beta);
    (binary_cross_entropy_with_logits(z, t) * modulation * w)
        .sum()
        .div_scalar(total)
}

/// The task-balanced feature masks `λ_cls M_cls + λ_reg M_reg`, one `[N, H_l, W_l]` per
/// head level (constants on `device`).
///
/// # Panics
/// If the priors and the teacher predictions disagree.
pub fn task_masks(
    config: &TbdConfig,
    teacher: &TeacherPredictions,
    priors: &Priors,
    gt: &[Instances],
    device: &Device,
) -> Vec<Tensor<3>> {
    let (n, k, a) = (
        teacher.boxes.len(),
        teacher.num_classes,
        priors.num_per_location,
    );
    let per_prior: Vec<Vec<f32>> = (0..n)
        .map(|img| {
            assert_eq!(
                teacher.boxes[img].len(),
                priors.len(),
                "TBD: image {img}: priors"
            );
            let objs = objects(&gt[img]);
            let boxes = gt[img].boxes().as_slice();
            (0..priors.len())
                .map(|prior| {
                    let cls = teacher.scores[img][prior * k..(prior + 1) * k]
                        .iter()
                        .copied()
                        .fold(0.0f32, f32::max);
                    let reg = objs
                        .iter()
                        .map(|&g| iou_xyxy(teacher.boxes[img][prior], boxes[g]))
                        .fold(0.0f32, f32::max);
                    config.cls_task_weight * cls + config.reg_task_weight * reg
                })
                .collect()
        })
        .collect();
    priors
        .level_sizes
        .iter()
        .enumerate()
        .map(|(level, &(h, w))| {
            let (start, end) = (priors.level_offsets[level], priors.level_offsets[level + 1]);
            assert_eq!(end - start, h * w * a, "TBD: level {level} priors");
            let mut map = vec![0f32; n * h * w];
            for (img, values) in per_prior.iter().enumerate() {
                // Priors are (y, x, a) row-major: the cell is local / A, the max over anchors.
                for (local, &v) in values[start..end].iter().enumerate() {
                    let cell = &mut map[img * h * w + local / a];
                    *cell = cell.max(v);
                }
            }
            Tensor::<3>::from_data(TensorData::new(map, [n, h, w]), device)
        })
        .collect()
}

/// Task-decoupled feature distillation, unweighted: per level the mask-weighted squared
/// difference summed over channels and positions over the mask's sum, summed over levels.
///
/// # Shapes
/// - `student_feats[l]`, `teacher_feats[l]`: `[N, C, H_l, W_l]`; `masks[l]`: `[N, H_l, W_l]`
///
/// # Panics
/// If the levels or shapes disagree.
pub fn tfd_loss(
    student_feats: &[Tensor<4>],
    teacher_feats: &[Tensor<4>],
    masks: &[Tensor<3>],
) -> Tensor<1> {
    assert!(!student_feats.is_empty(), "tfd_loss: no level");
    assert_eq!(
        (teacher_feats.len(), masks.len()),
        (student_feats.len(), student_feats.len()),
        "tfd_loss: teacher / mask levels vs student levels"
    );
    let mut total: Option<Tensor<1>> = None;
    for (l, ((s, t), m)) in student_feats
        .iter()
        .zip(teacher_feats)
        .zip(masks)
        .enumerate()
    {
        assert_eq!(
            s.dims(),
            t.dims(),
            "tfd_loss: level {l}: student vs teacher"
        );
        let [n, _, h, w] = s.dims();
        assert_eq!(m.dims(), [n, h, w], "tfd_loss: level {l}: mask");
        let mask_sum: f32 = m.clone().sum().into_scalar();
        let diff = (t.clone() - s.clone()).powi_scalar(2).sum_dim(1); // [N, 1, H, W]
        let level = (diff * m.clone().unsqueeze_dim::<4>(1).to_device(&s.device()))
            .sum()
            .div_scalar(mask_sum.max(f32::MIN_POSITIVE));
        total = Some(match total {
            Some(acc) => acc + level,
            None => level,
        });
    }
    total.expect("at least one level")
}

impl KdMethod for TbdConfig {
    const NAME: &'static str = "tbd";
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// TFD's FPN features; HD and the masks read the dense head on every level.
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        true
    }

    fn needs_dense_head(&self) -> bool {
        true
    }

    fn check(&self, wiring: &Wiring) -> Result<(), String> {
        check_neck_beside_head(wiring, "TBD")
    }

    fn init(&self, _wiring: &Wiring, _device: &Device) -> NoModules {
        NoModules::new()
    }

    fn terms(&self, _modules: &NoModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let priors = inputs.assignment.priors();
        let teacher = teacher_predictions(inputs.dense_models().1, inputs.teacher(), priors);
        let k = teacher.num_classes;
        let entries = harmony_entries(&teacher, inputs.assignment, inputs.targets.gt);
        let hd = harmony_distillation(
            flatten_levels(tap_tensors(inputs.student, Tap::ClsLogits), k),
            &entries,
            self.beta,
        );
        let device = inputs.student_features[0].device();
        let masks = task_masks(self, &teacher, priors, inputs.targets.gt, &device);
        let tfd = tfd_loss(&inputs.student_features, &inputs.teacher_features, &masks);
        vec![
            KdTerm::new("hd", hd.mul_scalar(self.hd_weight)),
            KdTerm::new("tfd", tfd.mul_scalar(self.tfd_weight)),
        ]
    }
}

#[cfg(test)]
#[path = "tests/tbd.rs"]
mod tests;
