//! Adaptive Training Sample Selection (Zhang et al., "Bridging the Gap Between
//! Anchor-based and Anchor-free Detection via ATSS", CVPR 2020, arXiv:1912.02424, Alg. 1),
//! as mmdetection 2.x `ATSSAssigner.assign` (used by ATSS and GFL):
//!
//! 1. per ground truth `g` and level, the `topk` priors whose centres are closest to `g`'s
//!    centre are candidates (`min(topk, priors on the level)`);
//! 2. `t_g = mean + std` of the candidates' IoU with `g` (std unbiased, `torch.std`);
//! 3. a candidate is positive for `g` when `IoU ≥ t_g` and its centre lies inside `g` by
//!    more than 0.01 px on every side;
//! 4. a prior positive for several ground truths takes the one of highest IoU (the first
//!    on ties, as `torch.max` on CPU).
//!
//! Crowd instances are never positives: like mmdetection (where they arrive as
//! `gt_bboxes_ignore` and `ignore_iof_thr = -1` in the ATSS/GFL configs) they are left
//! out; with `ignore_iof_threshold = Some(t)` priors covered by a crowd box by more than
//! `t` (intersection over the prior's area) are ignored and never candidates.
//! Priors on the padding of a batched image ([`crate::priors::valid_flags`]) are
//! ignored and never candidates (mmdet drops them before assigning, `inside_flags`).
//!
//! Deviation: with a single candidate mmdet's unbiased std is NaN and the ground truth gets
//! no positive; we use std 0 there (the candidate's own IoU is the threshold).
//!
//! [`atss_statistics`] exposes steps 1–2 on their own: LD's valuable localization region
//! (`ATSSAssigner.get_vlr_region`) reuses the per-GT threshold `t_g`.

use burn::config::Config;
use kdet_structures::Instances;
use kdet_structures::iou::iou_xyxy;

use super::{assign_batch, split_crowd, usable_priors};
use crate::assignment::{Assignment, ImageAssignment, Priors};
use crate::priors::valid_flags;

/// Configuration of the [`AtssAssigner`].
#[derive(Config, Debug, PartialEq)]
pub struct AtssAssignerConfig {
    /// Candidates per level and ground truth (ATSS paper Sec. 3.1, `k = 9`; mmdet
    /// `ATSSAssigner(topk=9)` in the ATSS and GFL configs).
    #[config(default = 9)]
    pub topk: usize,
    /// Ignore priors whose intersection-over-prior-area with a crowd box exceeds this
    /// (mmdet `ignore_iof_thr`, default −1 = off, hence `None`).
    #[config(default = "None")]
    pub ignore_iof_threshold: Option<f32>,
}

impl AtssAssignerConfig {
    pub fn init(&self) -> AtssAssigner {
        AtssAssigner {
            topk: self.topk,
            ignore_iof_threshold: self.ignore_iof_threshold,
        }
    }
}

/// The ATSS assigner (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct AtssAssigner {
    pub topk: usize,
    pub ignore_iof_threshold: Option<f32>,
}

/// Steps 1–2 of ATSS for every ground truth of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct AtssStatistics {
    /// Per ground truth: the candidate priors (indices into `Priors::boxes`), level by
    /// level, each level's by increasing centre distance.
    pub candidates: Vec<Vec<usize>>,
    /// Per ground truth: the IoU of each candidate with it.
    pub candidate_ious: Vec<Vec<f32>>,
    /// Per ground truth: mean of `candidate_ious`.
    pub iou_mean: Vec<f32>,
    /// Per ground truth: unbiased standard deviation of `candidate_ious` (0 with fewer
    /// than two candidates).
    pub iou_std: Vec<f32>,
    /// Per ground truth: `iou_mean + iou_std`, the ATSS IoU threshold `t_g`.
    pub iou_threshold: Vec<f32>,
}

/// ATSS candidate selection and IoU statistics (steps 1–2).
///
/// `selectable[i]` says whether prior `i` may be a candidate (valid, not ignored); the
/// per-level `topk` counts only selectable priors.
///
/// # Panics
/// If `selectable.len() != priors.len()` (a caller invariant).
pub fn atss_statistics(
    priors: &Priors,
    selectable: &[bool],
    gt_boxes: &[[f32; 4]],
    topk: usize,
) -> AtssStatistics {
    assert_eq!(
        selectable.len(),
        priors.len(),
        "one selectable flag per prior"
    );
    let mut stats = AtssStatistics {
        candidates: Vec::with_capacity(gt_boxes.len()),
        candidate_ious: Vec::with_capacity(gt_boxes.len()),
        iou_mean: Vec::with_capacity(gt_boxes.len()),
        iou_std: Vec::with_capacity(gt_boxes.len()),
        iou_threshold: Vec::with_capacity(gt_boxes.len()),
    };
    let mut scratch: Vec<(f32, usize)> = Vec::new();
    for gt in gt_boxes {
        let (gx, gy) = (0.5 * (gt[0] + gt[2]), 0.5 * (gt[1] + gt[3]));
        let mut cands = Vec::new();
        for level in 0..priors.num_levels() {
            let range = priors.level_offsets[level]..priors.level_offsets[level + 1];
            scratch.clear();
            scratch.extend(range.filter(|&i| selectable[i]).map(|i| {
                let [cx, cy] = priors.centers[i];
                ((cx - gx).powi(2) + (cy - gy).powi(2), i)
            }));
            let k = topk.min(scratch.len());
            if k == 0 {
                continue;
            }
            // Total order (distance, index): deterministic ties.
            let cmp = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if k < scratch.len() {
                scratch.select_nth_unstable_by(k - 1, cmp);
            }
            scratch[..k].sort_unstable_by(cmp);
            cands.extend(scratch[..k].iter().map(|&(_, i)| i));
        }
        let ious: Vec<f32> = cands
            .iter()
            .map(|&i| iou_xyxy(priors.boxes[i], *gt))
            .collect();
        // In f64 so that equal IoUs give std exactly 0 and a threshold equal to them.
        let n = ious.len();
        let mean = if n > 0 {
            ious.iter().map(|&v| v as f64).sum::<f64>() / n as f64
        } else {
            0.0
        };
        let std = if n > 1 {
            (ious.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        stats.candidates.push(cands);
        stats.candidate_ious.push(ious);
        stats.iou_mean.push(mean as f32);
        stats.iou_std.push(std as f32);
        stats.iou_threshold.push((mean + std) as f32);
    }
    stats
}

impl AtssAssigner {
    /// Assigns every image of a batch; `priors` are shared by the padded batch.
    pub fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment {
        assign_batch(priors, targets, |p, t| self.assign_image(p, t))
    }

    /// Assigns one image. `targets` are in input pixels; `targets.image_size()` is the
    /// image's extent inside the padded batch.
    pub fn assign_image(&self, priors: &Priors, targets: &Instances) -> ImageAssignment {
        let n = priors.len();
        let (kept, crowd) = split_crowd(targets);
        let all_boxes = targets.boxes().as_slice();
        let selectable = usable_priors(
            &priors.boxes,
            &valid_flags(priors, targets.image_size()),
            all_boxes,
            &crowd,
            self.ignore_iof_threshold,
        );
        let ignore: Vec<bool> = selectable.iter().map(|&s| !s).collect();
        let gt_boxes: Vec<[f32; 4]> = kept.iter().map(|&g| all_boxes[g]).collect();
        let mut matched_gt: Vec<Option<usize>> = vec![None; n];
        let mut max_iou = vec![0.0f32; n];
        if gt_boxes.is_empty() || n == 0 {
            return ImageAssignment {
                matched_gt,
                ignore,
                max_iou,
            };
        }
        let stats = atss_statistics(priors, &selectable, &gt_boxes, self.topk);
        // Best positive IoU per prior and its ground truth (index into `gt_boxes`).
        let mut best: Vec<Option<(f32, usize)>> = vec![None; n];
        for (g, gt) in gt_boxes.iter().enumerate() {
            let thr = stats.iou_threshold[g];
            for (&i, &iou) in stats.candidates[g].iter().zip(&stats.candidate_ious[g]) {
                let [cx, cy] = priors.centers[i];
                let inside = (cx - gt[0]).min(cy - gt[1]).min(gt[2] - cx).min(gt[3] - cy) > 0.01;
                if iou >= thr && inside && best[i].is_none_or(|(b, _)| iou > b) {
                    best[i] = Some((iou, g));
                }
            }
        }
        for i in 0..n {
            match best[i] {
                Some((iou, g)) => {
                    matched_gt[i] = Some(kept[g]);
                    max_iou[i] = iou;
                }
                None => {
                    max_iou[i] = gt_boxes
                        .iter()
                        .map(|gt| iou_xyxy(priors.boxes[i], *gt))
                        .fold(0.0, f32::max);
                }
            }
        }
        ImageAssignment {
            matched_gt,
            ignore,
            max_iou,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::priors::AnchorGeneratorConfig;
    use kdet_structures::{Boxes, ImageSize};

    /// One level, stride 8, 4×4 map, anchors of side 16 (octave base 2) centred on
    /// `(8x, 8y)`; image 32×32.
    fn priors() -> Priors {
        AnchorGeneratorConfig::new()
            .with_strides(vec![8])
            .with_octave_base_scale(2.0)
            .grid_priors(&[(4, 4)])
    }

    fn gt(boxes: Vec<[f32; 4]>) -> Instances {
        let n = boxes.len();
        Instances::new(ImageSize::new(32, 32), Boxes::new(boxes), vec![0; n])
            .expect("valid instances")
    }

    #[test]
    fn zero_ground_truth_is_all_negative() {
        let p = priors();
        let a = AtssAssignerConfig::new()
            .init()
            .assign_image(&p, &gt(vec![]));
        assert_eq!(a.num_positives(), 0);
        assert!(a.ignore.iter().all(|&i| !i));
        assert!(a.max_iou.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn single_box_selects_the_overlapping_candidates() {
        // GT [4, 4, 20, 20] (centre 12, 12) with topk 4: the 4 nearest anchor centres are
        // (8,8), (16,8), (8,16), (16,16), all at distance sqrt(32); anchors of side 16 centred
        // there overlap the GT by 12×12 = 144 of union 256 + 256 − 144 = 368: IoU 9/23
        // each, so std = 0, t = 9/23 and all four pass (centres inside the GT).
        let p = priors();
        let a = AtssAssignerConfig::new()
            .with_topk(4)
            .init()
            .assign_image(&p, &gt(vec![[4.0, 4.0, 20.0, 20.0]]));
        // Indices y*4 + x: (1,1) = 5, (2,1) = 6, (1,2) = 9, (2,2) = 10.
        assert_eq!(a.positives(), vec![5, 6, 9, 10]);
        for i in [5, 6, 9, 10] {
            assert!((a.max_iou[i] - 9.0 / 23.0).abs() < 1e-6);
        }
        let s = atss_statistics(&p, &[true; 16], &[[4.0, 4.0, 20.0, 20.0]], 4);
        assert_eq!(s.candidates[0], vec![5, 6, 9, 10]);
        assert!((s.iou_threshold[0] - 9.0 / 23.0).abs() < 1e-6 && s.iou_std[0] == 0.0);
    }

    #[test]
    fn mean_plus_std_threshold_drops_weak_candidates() {
        // GT [0, 0, 16, 16] (centre 8, 8), topk 3: candidates by distance are (8,8)
        // at 0, then the ties (16,8) and (0,8)... at distance 8 -> by index: (8,0) = 1,
        // (0,8) = 4; so [5, 1, 4]. IoU: anchor (8,8) is [0,0,16,16] -> 1; anchor (8,0)
        // = [0,-8,16,8] -> 128 / 384 = 1/3; same for (0,8). mean = 5/9, unbiased
        // std = sqrt(((4/9)^2 + 2 (2/9)^2) / 2) = sqrt(24/81 / 2) = sqrt(12)/9;
        // t = (5 + sqrt 12) / 9 ~= 0.940: only the exact anchor is positive.
        let p = priors();
        let s = atss_statistics(&p, &[true; 16], &[[0.0, 0.0, 16.0, 16.0]], 3);
        assert_eq!(s.candidates[0], vec![5, 1, 4]);
        assert!((s.iou_threshold[0] - (5.0 + 12f32.sqrt()) / 9.0).abs() < 1e-6);
        let a = AtssAssignerConfig::new()
            .with_topk(3)
            .init()
            .assign_image(&p, &gt(vec![[0.0, 0.0, 16.0, 16.0]]));
        assert_eq!(a.positives(), vec![5]);
        // Negatives still report their best IoU.
        assert!((a.max_iou[1] - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn ground_truth_without_a_centre_inside_gets_no_positive() {
        // A 2×2 GT between anchor centres: [10, 10, 12, 12]. Every candidate passes the
        // IoU threshold test for some, but no anchor centre (multiples of 8) lies inside.
        let p = priors();
        let a = AtssAssignerConfig::new()
            .init()
            .assign_image(&p, &gt(vec![[10.0, 10.0, 12.0, 12.0]]));
        assert_eq!(a.num_positives(), 0);
        // A degenerate (zero-area) GT: all IoUs 0, t = 0, but no centre strictly inside.
        let a = AtssAssignerConfig::new()
            .init()
            .assign_image(&p, &gt(vec![[8.0, 8.0, 8.0, 8.0]]));
        assert_eq!(a.num_positives(), 0);
    }

    #[test]
    fn competing_ground_truths_take_the_higher_iou() {
        // GT 0 = [0,0,16,16] matches anchor 5 ([0,0,16,16]) with IoU 1; GT 1 = [2,2,20,18]
        // overlaps anchor 5 by 14×14 = 196 of union 256 + 288 − 196 = 348 (IoU ~0.563) and
        // anchor 10 ([8,8,24,24]) by 12×10 = 120 of 256 + 288 − 120 = 424 (~0.283).
        // With topk 1 each GT has its nearest anchor as its only candidate: GT 0 -> 5,
        // GT 1 (centre 11, 10) -> 5 as well; anchor 5 is positive for both and keeps GT 0.
        let p = priors();
        let a = AtssAssignerConfig::new().with_topk(1).init().assign_image(
            &p,
            &gt(vec![[0.0, 0.0, 16.0, 16.0], [2.0, 2.0, 20.0, 18.0]]),
        );
        assert_eq!(a.positives(), vec![5]);
        assert_eq!(a.matched_gt[5], Some(0));
        // Order of the ground truths does not matter: the higher IoU wins either way.
        let b = AtssAssignerConfig::new().with_topk(1).init().assign_image(
            &p,
            &gt(vec![[2.0, 2.0, 20.0, 18.0], [0.0, 0.0, 16.0, 16.0]]),
        );
        assert_eq!(b.matched_gt[5], Some(1));
    }

    #[test]
    fn crowd_is_never_positive_and_may_ignore() {
        let p = priors();
        let t = gt(vec![[0.0, 0.0, 16.0, 16.0], [10.0, 10.0, 30.0, 30.0]])
            .with_crowd(vec![false, true])
            .expect("one flag per box");
        let a = AtssAssignerConfig::new().init().assign_image(&p, &t);
        assert!(a.matched_gt.iter().all(|m| *m != Some(1)));
        assert!(a.num_positives() > 0);
        assert!(a.ignore.iter().all(|&i| !i));
        // With ignore_iof_threshold 0.5: anchor 15 ([16,16,32,32]) lies 14×14/256 = 0.77
        // inside the crowd box -> ignored; anchor 0 ([-8,-8,8,8]) is not covered.
        let a = AtssAssignerConfig::new()
            .with_ignore_iof_threshold(Some(0.5))
            .init()
            .assign_image(&p, &t);
        assert!(a.ignore[15] && !a.ignore[0]);
        assert!(
            a.matched_gt
                .iter()
                .zip(&a.ignore)
                .all(|(m, &ig)| !(ig && m.is_some()))
        );
    }

    #[test]
    fn padding_priors_are_ignored() {
        // Image 16×16 in the 32×32 batch: only locations x, y < 2 are valid.
        let p = priors();
        let t = Instances::new(
            ImageSize::new(16, 16),
            Boxes::new(vec![[0.0, 0.0, 16.0, 16.0]]),
            vec![0],
        )
        .expect("valid instances");
        let a = AtssAssignerConfig::new().init().assign_image(&p, &t);
        assert_eq!(a.ignore.iter().filter(|&&i| !i).count(), 4);
        assert!(a.positives().iter().all(|&i| !a.ignore[i]));
    }
}
