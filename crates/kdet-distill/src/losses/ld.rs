//! LD: Localization Distillation (Zheng et al., "Localization Distillation for Dense
//! Object Detection", CVPR 2022, arXiv:2102.12252), with the valuable localization region
//! (VLR) and the main-region class KD, as the official `HikariTJU/LD` `LDHead.loss_single`
//! and `ATSSAssigner.get_vlr_region`.
//!
//! Spec: `../shared/methods/kd-detection.md` §1 (§1.2 losses, §1.3 defaults, §1.7 gotchas).
//!
//! The primitive is [`kl_div_rows`] with [`KlReduction::ClassMean`]:
//! `ℓ(z^S, z^T) = T² · (1/D) Σ_j p^T_j (ln p^T_j − ln p^S_j)`, `p = softmax(z/T)`, the
//! teacher detached. GFL's `box_regression` holds, per prior, 4 edges (l, t, r, b) of
//! `reg_max + 1` bin logits (edge-major channels `e·(reg_max+1) + i`); one edge = one row.
//! Per pyramid level, over all images of the batch (the official code flattens a level's
//! `[N, ·, H, W]` map), and then summed over levels:
//!
//! ```text
//! L_LD  = ld_weight  · Σ_{pos} Σ_{e=1..4} w_pos · ℓ_{T=10}(edge rows)  / 4
//!         w_pos = max_k sigmoid(student cls logit)_k, detached (the DFL weight)
//! L_VLR = vlr_weight · Σ_{vlr>0} Σ_{e=1..4} v · ℓ_{T=10}(edge rows)    / 16
//!         v = the prior's VLR value (its IoU, see vlr_weights)
//! L_KD  = kd_weight  · Σ_{pos} ℓ_{T=2}(K class logits, softmax over K) / P_l
//!         P_l = positives of this level (all images); 0 when P_l = 0
//! ```
//!
//! Official reductions, deliberately kept: main LD is normalised by the constant 4 (not by
//! the positives or Σw), VLR by the constant 16, class KD by the *per-level* positive count;
//! the class KD takes a softmax over GFL's sigmoid-trained class logits (spec §1.7). The
//! VLR rows do *not* exclude positives (the official `remain_inds = vlr_region > 0`), and
//! the VLR class-KD term of the official code is multiplied by 0, hence omitted. The
//! feature-imitation term `loss_im` (off in the CVPR "Main KD + Main LD + VLR LD" row) is
//! not part of this file. A level without rows contributes `0 · Σ box_regression` (mmdet's
//! `bbox_pred.sum() * 0`), so the graph always reaches the student's head.
//!
//! VLR ([`vlr_weights`], official `get_vlr_region`, run on each image's valid priors):
//! per ground truth `g`, the ATSS candidate step (`vlr_topk` nearest priors per level) gives
//! `t_g = mean + std` of the candidates' IoU; every valid prior of every level with
//! `α·t_g ≤ DIoU(prior, g) < t_g` is in the VLR of `g` (no centre-inside test); the VLR
//! value is the prior's IoU with `g`, max over the ground truths whose VLR holds it, 0
//! elsewhere.
//!
//! Official behaviours kept in [`vlr_weights`]:
//! - only the image's valid priors take part (`inside_flags` with GFL's
//!   `allowed_border = -1` are the valid flags); priors on the batch padding are 0 and
//!   never candidates ([`kdet_models::priors::valid_flags`]);
//! - crowd boxes are not ground truths here (mmdet passes them as `gt_bboxes_ignore`, and
//!   `ignore_iof_thr = -1` in the LD config leaves the candidates alone);
//! - the "DIoU" of the official `bbox_overlaps(mode='diou')` divides the intersection by the
//!   *prior's* area, not by the union (its `union = area1` branch for non-IoU modes), so it
//!   is `IoF(prior, g) − ρ²/c²`: [`VlrDiou::AnchorIof`], the default. [`VlrDiou::Iou`] is
//!   the DIoU of the paper (Zheng et al., AAAI 2020). This changes which priors are in the
//!   VLR (an anchor well inside a large box has IoF 1) but not the VLR value (true IoU).
//!
//! Deviations: an image without (non-crowd) ground truth has an all-zero VLR (the official
//! `get_vlr_region` returns an `AssignResult` there, which its caller cannot use; mmdet
//! filters such images out of training); with a single ATSS candidate the std is 0
//! ([`kdet_models::assigners::atss`]), where `torch.std` gives NaN.
//!
//! Defaults: official R50 config `configs/ld/ld_r50_gflv1_r101_fpn_coco_1x.py` (spec §1.3).
//! The weights live in [`LdConfig`] because LD has three terms with their own weights;
//! the returned terms are already weighted.

use burn::config::Config;
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use kdet_models::assigners::{atss_statistics, iof_xyxy, split_crowd};
use kdet_models::heads::{flatten_level, index_tensor};
use kdet_models::priors::valid_flags;
use kdet_models::{Assignment, HeadLevel, Priors};
use kdet_structures::iou::{diou_xyxy, iou_xyxy};
use serde::{Deserialize, Serialize};

use super::KdTargets;
use super::kd::{KlReduction, kl_div_rows};
use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use crate::taps::Tap;

/// Which overlap the VLR's DIoU is built on (see the module docs).
///
/// TOML / JSON: `"anchor_iof"` or `"iou"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VlrDiou {
    /// `intersection / area(prior) − ρ²/c²`: what the official `bbox_overlaps(mode='diou')`
    /// computes (`HikariTJU/LD` `mmdet/core/bbox/iou_calculators/iou2d_calculator.py`,
    /// read at commit `67020e66`).
    AnchorIof,
    /// `IoU − ρ²/c²`, the DIoU of the paper.
    Iou,
}

/// Configuration of LD (defaults: official `ld_r50_gflv1_r101_fpn_coco_1x.py`, spec §1.3).
#[derive(Config, Debug, PartialEq)]
pub struct LdConfig {
    /// Temperature of the main-region LD (official config `loss_ld` T = 10).
    #[config(default = 10.0)]
    pub ld_temperature: f32,
    /// Weight of the main-region LD (official config `loss_ld` loss_weight = 0.25).
    #[config(default = 0.25)]
    pub ld_weight: f32,
    /// Temperature of the VLR LD (official config `loss_ld_vlr` T = 10).
    #[config(default = 10.0)]
    pub vlr_temperature: f32,
    /// Weight of the VLR LD (official config `loss_ld_vlr` loss_weight = 0.25).
    #[config(default = 0.25)]
    pub vlr_weight: f32,
    /// Temperature of the main-region class KD (official config `loss_kd` T = 2).
    #[config(default = 2.0)]
    pub kd_temperature: f32,
    /// Weight of the main-region class KD (official config `loss_kd` loss_weight = 10).
    #[config(default = 10.0)]
    pub kd_weight: f32,
    /// The VLR's lower bound `α·t_g` (official `get_vlr_region`: the hard-coded 0.25).
    #[config(default = 0.25)]
    pub vlr_alpha: f32,
    /// ATSS candidates per level for `t_g` (official config `ATSSAssigner(topk=9)`).
    #[config(default = 9)]
    pub vlr_topk: usize,
    /// The overlap inside the VLR's DIoU (official code: [`VlrDiou::AnchorIof`]).
    #[config(default = "VlrDiou::AnchorIof")]
    pub vlr_diou: VlrDiou,
}

/// The three LD terms, each multiplied by its weight and summed over levels (`[1]` each).
#[derive(Debug, Clone)]
pub struct LdTerms {
    /// Main-region LD (`loss_ld`).
    pub ld: Tensor<1>,
    /// VLR LD (`loss_ld_vlr`).
    pub vlr: Tensor<1>,
    /// Main-region class KD (`loss_kd`).
    pub kd: Tensor<1>,
}

/// The official "DIoU" of the VLR: `overlap(prior, g) − ρ²/c²` with `ρ` the centre distance
/// and `c` the diagonal of the enclosing box (mmdet eps 1e-6 on `c²`).
fn vlr_diou(kind: VlrDiou, prior: [f32; 4], gt: [f32; 4]) -> f32 {
    match kind {
        VlrDiou::Iou => diou_xyxy(prior, gt),
        VlrDiou::AnchorIof => {
            let cw = (prior[2].max(gt[2]) - prior[0].min(gt[0])).max(0.0);
            let ch = (prior[3].max(gt[3]) - prior[1].min(gt[1])).max(0.0);
            let dx = 0.5 * ((gt[0] + gt[2]) - (prior[0] + prior[2]));
            let dy = 0.5 * ((gt[1] + gt[3]) - (prior[1] + prior[3]));
            iof_xyxy(prior, gt) - (dx * dx + dy * dy) / (cw * cw + ch * ch).max(1e-6)
        }
    }
}

/// The VLR value of every prior of each image (0 outside the VLR), see the module docs.
///
/// Returns `[image][prior]`, priors in the order of [`Priors`].
///
/// # Panics
/// If `targets.image_sizes` and `targets.gt` differ in length (a caller invariant).
pub fn vlr_weights(config: &LdConfig, priors: &Priors, targets: &KdTargets) -> Vec<Vec<f32>> {
    assert_eq!(
        targets.gt.len(),
        targets.image_sizes.len(),
        "vlr_weights: {} ground-truth sets vs {} image sizes",
        targets.gt.len(),
        targets.image_sizes.len()
    );
    targets
        .gt
        .iter()
        .zip(targets.image_sizes)
        .map(|(gt, &size)| {
            let mut out = vec![0.0f32; priors.len()];
            let (kept, _crowd) = split_crowd(gt);
            if kept.is_empty() || priors.is_empty() {
                return out;
            }
            let all = gt.boxes().as_slice();
            let gt_boxes: Vec<[f32; 4]> = kept.iter().map(|&g| all[g]).collect();
            let valid = valid_flags(priors, size);
            let stats = atss_statistics(priors, &valid, &gt_boxes, config.vlr_topk);
            for (i, value) in out.iter_mut().enumerate() {
                if !valid[i] {
                    continue;
                }
                let prior = priors.boxes[i];
                for (g, &gt_box) in gt_boxes.iter().enumerate() {
                    let t = stats.iou_threshold[g];
                    let d = vlr_diou(config.vlr_diou, prior, gt_box);
                    if d >= config.vlr_alpha * t && d < t {
                        *value = value.max(iou_xyxy(prior, gt_box));
                    }
                }
            }
            out
        })
        .collect()
}

/// Rows of one level: `[N, C, H, W]` → `[N*H*W*A, per_prior]`, row `n*L + p` for the
/// level's local prior `p` of image `n` (`L = H*W*A`).
fn level_rows(map: Tensor<4>, per_prior: usize) -> Tensor<2> {
    let flat = flatten_level(map, per_prior); // [N, H*W*A, per_prior]
    let [n, p, _] = flat.dims();
    flat.reshape([n * p, per_prior])
}

/// `rows` of `t` (on `t`'s device).
fn select_rows(t: Tensor<2>, rows: &[usize]) -> Tensor<2> {
    let idx: Tensor<1, Int> = index_tensor(rows, &t.device());
    t.select(0, idx)
}

/// The LD terms (see the module docs).
///
/// `student` / `teacher`: GFL head levels (`cls_logits` `[N, K, H, W]`, `box_regression`
/// `[N, 4(reg_max+1), H, W]`, edge-major channels `e*(reg_max+1) + i`); the student on the
/// autodiff device, the teacher on the plain one. `assignment`: the student's ATSS
/// assignment (its positives). `vlr`: from [`vlr_weights`] (`[image][prior]`).
///
/// # Shapes
/// - `student[l].cls_logits`, `teacher[l].cls_logits`: `[N, A*K, H_l, W_l]`
/// - `student[l].box_regression`, `teacher[l].box_regression`: `[N, A*4(reg_max+1), H_l, W_l]`
/// - returns three `[1]` scalars
///
/// # Panics
/// If the levels, the priors of `assignment`, the images or `vlr` disagree in size
/// (shape contracts).
pub fn ld_loss(
    config: &LdConfig,
    student: &[HeadLevel],
    teacher: &[HeadLevel],
    assignment: &Assignment,
    vlr: &[Vec<f32>],
    num_classes: usize,
    reg_max: usize,
) -> LdTerms {
    let priors = assignment.priors();
    let bins = reg_max + 1;
    assert!(!student.is_empty(), "ld_loss: no level");
    assert_eq!(
        (student.len(), teacher.len()),
        (priors.num_levels(), priors.num_levels()),
        "ld_loss: student/teacher levels vs prior levels"
    );
    let n = student[0].cls_logits.dims()[0];
    assert_eq!(
        (assignment.images.len(), vlr.len()),
        (n, n),
        "ld_loss: assignment images / VLR images vs batch {n}"
    );
    for (a, v) in assignment.images.iter().zip(vlr) {
        assert_eq!(
            (a.matched_gt.len(), v.len()),
            (priors.len(), priors.len()),
            "ld_loss: per-image assignment / VLR length vs {} priors",
            priors.len()
        );
    }
    let device = student[0].box_regression.device();
    let mut ld = Vec::new();
    let mut vlr_terms = Vec::new();
    let mut kd = Vec::new();
    for (l, (s, t)) in student.iter().zip(teacher).enumerate() {
        assert_eq!(
            (s.cls_logits.dims(), s.box_regression.dims()),
            (t.cls_logits.dims(), t.box_regression.dims()),
            "ld_loss: level {l}: student vs teacher shapes"
        );
        let (start, end) = (priors.level_offsets[l], priors.level_offsets[l + 1]);
        let len = end - start;
        let s_cls = level_rows(s.cls_logits.clone(), num_classes); // [N*L, K]
        let t_cls = level_rows(t.cls_logits.clone(), num_classes);
        let s_reg = level_rows(s.box_regression.clone(), 4 * bins); // [N*L, 4(n+1)]
        let t_reg = level_rows(t.box_regression.clone(), 4 * bins);
        assert_eq!(
            s_cls.dims()[0],
            n * len,
            "ld_loss: level {l} holds {} rows, the priors {n} x {len}",
            s_cls.dims()[0]
        );
        let zero = s.box_regression.clone().sum().mul_scalar(0.0); // [1], keeps the graph

        // Positives and VLR priors of this level, over all images: row n*L + p for the
        // level's local prior p.
        let mut pos_rows = Vec::new();
        let mut vlr_rows = Vec::new();
        let mut vlr_values = Vec::new();
        for (img, (a, v)) in assignment.images.iter().zip(vlr).enumerate() {
            let level_priors = a.matched_gt[start..end].iter().zip(&v[start..end]);
            for (p, (matched, &value)) in level_priors.enumerate() {
                let row = img * len + p;
                if matched.is_some() {
                    pos_rows.push(row);
                }
                if value > 0.0 {
                    vlr_rows.push(row);
                    vlr_values.push(value);
                }
            }
        }

        let p = pos_rows.len();
        if p > 0 {
            // w = max_k sigmoid(student cls), detached (official `weight_targets`).
            let w = sigmoid(select_rows(s_cls.clone().detach(), &pos_rows))
                .max_dim(1)
                .reshape([p, 1])
                .repeat_dim(1, 4)
                .reshape([p * 4]); // [P*4], edge-major per positive
            let s_edges = select_rows(s_reg.clone(), &pos_rows).reshape([p * 4, bins]);
            let t_edges = select_rows(t_reg.clone(), &pos_rows).reshape([p * 4, bins]);
            let rows = kl_div_rows(
                s_edges,
                t_edges,
                config.ld_temperature,
                KlReduction::ClassMean,
            ); // [P*4]
            ld.push((rows * w).sum().div_scalar(4.0));
            let rows = kl_div_rows(
                select_rows(s_cls, &pos_rows),
                select_rows(t_cls, &pos_rows),
                config.kd_temperature,
                KlReduction::ClassMean,
            ); // [P]
            kd.push(rows.sum().div_scalar(p as f64));
        } else {
            ld.push(zero.clone());
            kd.push(zero.clone());
        }

        let r = vlr_rows.len();
        if r > 0 {
            let weights: Vec<f32> = vlr_values.iter().flat_map(|&v| [v; 4]).collect();
            let weights = Tensor::<1>::from_data(TensorData::new(weights, [r * 4]), &device);
            let s_edges = select_rows(s_reg, &vlr_rows).reshape([r * 4, bins]);
            let t_edges = select_rows(t_reg, &vlr_rows).reshape([r * 4, bins]);
            let rows = kl_div_rows(
                s_edges,
                t_edges,
                config.vlr_temperature,
                KlReduction::ClassMean,
            ); // [R*4]
            vlr_terms.push((rows * weights).sum().div_scalar(16.0));
        } else {
            vlr_terms.push(zero);
        }
    }
    let total = |terms: Vec<Tensor<1>>, weight: f32| {
        terms
            .into_iter()
            .reduce(|a, b| a + b)
            .expect("at least one level (asserted above)")
            .mul_scalar(weight)
    };
    LdTerms {
        ld: total(ld, config.ld_weight),
        vlr: total(vlr_terms, config.vlr_weight),
        kd: total(kd, config.kd_weight),
    }
}

impl KdMethod for LdConfig {
    const NAME: &'static str = "ld";
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::new()
    }

    fn tap_use(&self) -> TapUse {
        TapUse::Fixed(&[Tap::ClsLogits, Tap::BoxRegression])
    }

    fn compares_classes(&self) -> bool {
        true
    }

    /// GFL heads with equal `reg_max` on both sides; every head level.
    fn check(&self, wiring: &Wiring) -> Result<(), String> {
        let (student, teacher) = wiring.dense();
        let (student, teacher) = (&student.head, &teacher.head);
        let (rs, rt) = (student.reg_max(), teacher.reg_max());
        if rs.is_none() || rt.is_none() {
            return Err(format!(
                "LD distils GFL box-edge distributions: the student head is {} and the teacher head {} (both must be gfl)",
                student.family(),
                teacher.family()
            ));
        }
        if rs != rt {
            return Err(format!(
                "LD needs equal reg_max: student {rs:?}, teacher {rt:?}"
            ));
        }
        if wiring.entry.levels.is_some() {
            return Err("LD uses every head level; remove `levels`".into());
        }
        Ok(())
    }

    fn init(&self, _wiring: &Wiring, _device: &Device) -> NoModules {
        NoModules::new()
    }

    fn terms(&self, _modules: &NoModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let vlr = vlr_weights(self, inputs.assignment.priors(), inputs.targets);
        let head = &inputs.dense_models().0.head;
        let reg_max = head.reg_max().expect("LD is planned for GFL heads");
        let terms = ld_loss(
            self,
            &inputs.student.head,
            &inputs.teacher().head,
            inputs.assignment,
            &vlr,
            head.num_classes(),
            reg_max,
        );
        vec![
            KdTerm::new("ld", terms.ld),
            KdTerm::new("vlr", terms.vlr),
            KdTerm::new("kd", terms.kd),
        ]
    }
}

#[cfg(test)]
#[path = "tests/ld.rs"]
mod tests;
