//! FCOS label assignment: scale ranges per level plus optional centre sampling
//! (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019,
//! arXiv:1904.01355, Sec. 3.1–3.2), as mmdetection's `FCOSHead._get_targets_single`
//! (`mmdet/models/dense_heads/fcos_head.py`).
//!
//! A point `(x, y)` of level `l` (stride `s`) and a GT box give the distances
//! `(l, t, r, b) = (x − x1, y − y1, x2 − x, y2 − y)`. The GT is a *candidate* for the point
//! when
//! 1. the point lies strictly inside the box (`min(l, t, r, b) > 0`), or, with
//!    `center_sampling`, strictly inside the box's centre region: the square of half-side
//!    `center_sample_radius · s` around the box centre, clipped to the box;
//! 2. the largest distance lies in the level's regression range:
//!    `lo <= max(l, t, r, b) <= hi` (both ends inclusive, as mmdet).
//!
//! Among candidates the point takes the GT of minimal area (`(x2 − x1)(y2 − y1)`); equal
//! areas go to the lower GT index (`torch.min` returns the first minimum). Points without a
//! candidate are negative. FCOS ignores nothing: `ignore` is all `false`.
//!
//! Crowd GTs are never candidates (mmdet hands crowd boxes to the head as
//! `batch_gt_instances_ignore`, which FCOS does not read), so points inside them are
//! negatives. `max_iou` is 0 everywhere: a point prior has no IoU with a box.

use burn::config::Config;
use kdet_structures::Instances;

use super::{assign_batch, split_crowd};
use crate::assignment::{Assignment, ImageAssignment, Priors};

/// mmdetection's `INF` for the open end of the last regression range (finite so that
/// the config survives JSON).
pub const FCOS_INF: f32 = 1e8;

/// Configuration of the FCOS assigner.
#[derive(Config, Debug, PartialEq)]
pub struct FcosAssignerConfig {
    /// `[lo, hi]` of `max(l, t, r, b)` (input pixels) per pyramid level, fine to coarse
    /// (mmdet `FCOSHead` default `((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))`,
    /// the paper's `m_2..m_7 = 0, 64, 128, 256, 512, ∞`).
    #[config(
        default = "vec![[-1.0, 64.0], [64.0, 128.0], [128.0, 256.0], [256.0, 512.0], [512.0, FCOS_INF]]"
    )]
    pub regress_ranges: Vec<[f32; 2]>,
    /// Positives only near the GT centre (mmdet default `center_sampling=False`; `True` in
    /// the `fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou` variant).
    #[config(default = false)]
    pub center_sampling: bool,
    /// Half-side of the centre region in units of the level's stride (mmdet default
    /// `center_sample_radius=1.5`).
    #[config(default = 1.5)]
    pub center_sample_radius: f32,
}

impl FcosAssignerConfig {
    pub fn init(&self) -> FcosAssigner {
        FcosAssigner {
            regress_ranges: self.regress_ranges.clone(),
            center_sampling: self.center_sampling,
            center_sample_radius: self.center_sample_radius,
        }
    }
}

/// The FCOS assigner (see the module docs; fields as in [`FcosAssignerConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FcosAssigner {
    pub regress_ranges: Vec<[f32; 2]>,
    pub center_sampling: bool,
    pub center_sample_radius: f32,
}

impl FcosAssigner {
    /// Assigns every image of a batch (the points are shared).
    pub fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment {
        assign_batch(priors, targets, |p, t| self.assign_image(p, t))
    }

    /// Assigns the points of one image.
    ///
    /// `priors.centers` are the points (input pixels), grouped by level as
    /// `priors.level_offsets` says; `gt` boxes are in the same pixels.
    ///
    /// # Panics
    /// If the number of regression ranges differs from the number of levels (a
    /// configuration invariant checked when the head is built).
    pub fn assign_image(&self, priors: &Priors, gt: &Instances) -> ImageAssignment {
        assert_eq!(
            self.regress_ranges.len(),
            priors.num_levels(),
            "FCOS assigner: {} regress ranges for {} levels",
            self.regress_ranges.len(),
            priors.num_levels()
        );
        let n = priors.len();
        let boxes = gt.boxes().as_slice();
        let (regular, _crowd) = split_crowd(gt);
        let mut matched_gt: Vec<Option<usize>> = vec![None; n];

        for level in 0..priors.num_levels() {
            let [lo, hi] = self.regress_ranges[level];
            let radius = priors.strides[level] as f32 * self.center_sample_radius;
            let range = priors.level_offsets[level]..priors.level_offsets[level + 1];
            for (matched, &[x, y]) in matched_gt[range.clone()]
                .iter_mut()
                .zip(&priors.centers[range])
            {
                let mut best: Option<(usize, f32)> = None;
                for &g in &regular {
                    let b = boxes[g];
                    let ltrb = [x - b[0], y - b[1], b[2] - x, b[3] - y];
                    let inside = if self.center_sampling {
                        let (cx, cy) = (0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3]));
                        let region = [
                            (cx - radius).max(b[0]),
                            (cy - radius).max(b[1]),
                            (cx + radius).min(b[2]),
                            (cy + radius).min(b[3]),
                        ];
                        min4([x - region[0], y - region[1], region[2] - x, region[3] - y]) > 0.0
                    } else {
                        min4(ltrb) > 0.0
                    };
                    let max_distance = max4(ltrb);
                    if !inside || max_distance < lo || max_distance > hi {
                        continue;
                    }
                    let area = (b[2] - b[0]) * (b[3] - b[1]);
                    // Strict `<`: the first GT wins equal areas.
                    if best.is_none_or(|(_, a)| area < a) {
                        best = Some((g, area));
                    }
                }
                *matched = best.map(|(g, _)| g);
            }
        }

        ImageAssignment {
            matched_gt,
            ignore: vec![false; n],
            max_iou: vec![0.0; n],
        }
    }
}

fn min4(v: [f32; 4]) -> f32 {
    v[0].min(v[1]).min(v[2]).min(v[3])
}

fn max4(v: [f32; 4]) -> f32 {
    v[0].max(v[1]).max(v[2]).max(v[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdet_structures::{Boxes, ImageSize};

    /// Hand-made point priors: `levels[i] = (stride, points)`.
    fn points(levels: &[(usize, Vec<[f32; 2]>)]) -> Priors {
        let mut centers = Vec::new();
        let mut level_offsets = vec![0];
        for (_, pts) in levels {
            centers.extend_from_slice(pts);
            level_offsets.push(centers.len());
        }
        Priors {
            boxes: centers.iter().map(|&[x, y]| [x, y, x, y]).collect(),
            centers,
            level_offsets,
            strides: levels.iter().map(|(s, _)| *s).collect(),
            level_sizes: levels.iter().map(|(_, p)| (1, p.len())).collect(),
            num_per_location: 1,
        }
    }

    fn gt(boxes: Vec<[f32; 4]>) -> Instances {
        let n = boxes.len();
        Instances::new(ImageSize::new(512, 512), Boxes::new(boxes), vec![0; n])
            .expect("valid test GT")
    }

    fn two_levels() -> FcosAssignerConfig {
        FcosAssignerConfig::new().with_regress_ranges(vec![[-1.0, 16.0], [16.0, FCOS_INF]])
    }

    #[test]
    fn zero_gt_gives_all_negative() {
        let priors = points(&[(8, vec![[4.0, 4.0], [12.0, 4.0]]), (16, vec![[8.0, 8.0]])]);
        let a = two_levels().init().assign_image(&priors, &gt(vec![]));
        assert_eq!(a.matched_gt, vec![None, None, None]);
        assert_eq!(a.ignore, vec![false; 3]);
        assert_eq!(a.max_iou, vec![0.0; 3]);
    }

    #[test]
    fn inside_box_and_regress_range() {
        // GT [0,0,40,20]. Level 0 (range [-1,16]) and level 1 (range [16,INF]) both hold the
        // points (10,10) and (20,10):
        //   (10,10): ltrb = (10,10,30,10), max 30 -> level 1 only;
        //   (20,10): ltrb = (20,10,20,10), max 20 -> level 1 only;
        // and (45,10) lies outside the box. A smaller GT [4,4,20,20] catches (10,10) on
        // level 0 (ltrb (6,6,10,10), max 10).
        let priors = points(&[
            (8, vec![[10.0, 10.0], [20.0, 10.0], [45.0, 10.0]]),
            (16, vec![[10.0, 10.0], [20.0, 10.0], [45.0, 10.0]]),
        ]);
        let a = two_levels()
            .init()
            .assign_image(&priors, &gt(vec![[0.0, 0.0, 40.0, 20.0]]));
        assert_eq!(a.matched_gt, vec![None, None, None, Some(0), Some(0), None]);
        let a = two_levels().init().assign_image(
            &priors,
            &gt(vec![[0.0, 0.0, 40.0, 20.0], [4.0, 4.0, 20.0, 20.0]]),
        );
        // Level 1's (10,10): GT 0 (max 30, area 800) is a candidate, GT 1 (max 10 < 16) is not.
        assert_eq!(
            a.matched_gt,
            vec![Some(1), None, None, Some(0), Some(0), None]
        );
        // Range ends are inclusive: max distance exactly 16 matches both levels' ranges.
        // Point (16,8) in GT [0,0,32,16]: ltrb (16,8,16,8), max 16.
        let priors = points(&[(8, vec![[16.0, 8.0]]), (16, vec![[16.0, 8.0]])]);
        let a = two_levels()
            .init()
            .assign_image(&priors, &gt(vec![[0.0, 0.0, 32.0, 16.0]]));
        assert_eq!(a.matched_gt, vec![Some(0), Some(0)]);
        // A point on the box border (distance 0) is not inside.
        let priors = points(&[(8, vec![[0.0, 8.0]]), (16, vec![])]);
        let a = two_levels()
            .init()
            .assign_image(&priors, &gt(vec![[0.0, 0.0, 32.0, 16.0]]));
        assert_eq!(a.matched_gt, vec![None]);
    }

    #[test]
    fn ambiguity_goes_to_the_minimal_area() {
        // The point (10,10) lies in three nested GTs; with one range covering all, the
        // smallest box (area 12*12 = 144) wins regardless of its index.
        let cfg = FcosAssignerConfig::new().with_regress_ranges(vec![[-1.0, FCOS_INF]]);
        let priors = points(&[(8, vec![[10.0, 10.0]])]);
        let boxes = vec![
            [0.0, 0.0, 30.0, 30.0],
            [4.0, 4.0, 16.0, 16.0],
            [2.0, 2.0, 20.0, 20.0],
        ];
        assert_eq!(
            cfg.init().assign_image(&priors, &gt(boxes)).matched_gt,
            vec![Some(1)]
        );
        // Equal areas: the first GT.
        let boxes = vec![[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 25.0, 25.0]];
        assert_eq!(
            cfg.init().assign_image(&priors, &gt(boxes)).matched_gt,
            vec![Some(0)]
        );
        // The minimal area is taken among candidates only: the small box is out of range.
        let cfg = FcosAssignerConfig::new().with_regress_ranges(vec![[8.0, FCOS_INF]]);
        let boxes = vec![[0.0, 0.0, 30.0, 30.0], [6.0, 6.0, 14.0, 14.0]];
        assert_eq!(
            cfg.init().assign_image(&priors, &gt(boxes)).matched_gt,
            vec![Some(0)]
        );
    }

    #[test]
    fn center_sampling_radius() {
        // GT [0,0,100,100] (centre 50,50), stride 8, radius 1.5 -> centre region
        // [38,38,62,62]. Points along y = 50:
        //   x = 40: inside the region -> positive;
        //   x = 37: inside the box, outside the region -> negative;
        //   x = 61.9: inside; x = 62: on the region's edge (distance 0) -> negative.
        let cfg = FcosAssignerConfig::new()
            .with_regress_ranges(vec![[-1.0, FCOS_INF]])
            .with_center_sampling(true);
        let priors = points(&[(
            8,
            vec![[40.0, 50.0], [37.0, 50.0], [61.9, 50.0], [62.0, 50.0]],
        )]);
        let g = gt(vec![[0.0, 0.0, 100.0, 100.0]]);
        assert_eq!(
            cfg.init().assign_image(&priors, &g).matched_gt,
            vec![Some(0), None, Some(0), None]
        );
        // Without centre sampling all four are inside the box.
        let plain = FcosAssignerConfig::new().with_regress_ranges(vec![[-1.0, FCOS_INF]]);
        assert_eq!(
            plain.init().assign_image(&priors, &g).matched_gt,
            vec![Some(0); 4]
        );
        // The region is clipped to the box: GT [0,0,10,100] (centre 5,50) with half-side 12
        // gives region [0,38,10,62]; (9,50) is inside, (11,50) is not (outside the box).
        let priors = points(&[(8, vec![[9.0, 50.0], [11.0, 50.0]])]);
        let g = gt(vec![[0.0, 0.0, 10.0, 100.0]]);
        assert_eq!(
            cfg.init().assign_image(&priors, &g).matched_gt,
            vec![Some(0), None]
        );
        // The radius scales with the level's stride: at stride 32 the half-side is 48, so
        // (37,50) in the 100-px box is inside the region.
        let priors = points(&[(32, vec![[37.0, 50.0]])]);
        let g = gt(vec![[0.0, 0.0, 100.0, 100.0]]);
        assert_eq!(
            cfg.init().assign_image(&priors, &g).matched_gt,
            vec![Some(0)]
        );
    }

    #[test]
    fn zero_points_and_degenerate_gt() {
        // No points: empty result.
        let priors = points(&[(8, vec![]), (16, vec![])]);
        let a = two_levels()
            .init()
            .assign_image(&priors, &gt(vec![[0.0, 0.0, 10.0, 10.0]]));
        assert!(a.matched_gt.is_empty() && a.ignore.is_empty());
        // A zero-width GT contains no point strictly: nothing is positive.
        let priors = points(&[(8, vec![[4.0, 4.0]]), (16, vec![[4.0, 4.0]])]);
        let a = two_levels()
            .init()
            .assign_image(&priors, &gt(vec![[4.0, 0.0, 4.0, 10.0]]));
        assert_eq!(a.matched_gt, vec![None, None]);
    }

    #[test]
    fn crowd_gt_is_never_a_candidate() {
        let cfg = FcosAssignerConfig::new().with_regress_ranges(vec![[-1.0, FCOS_INF]]);
        let priors = points(&[(8, vec![[10.0, 10.0]])]);
        // The crowd box is the smaller one; the point still goes to the normal GT.
        let g = gt(vec![[0.0, 0.0, 40.0, 40.0], [5.0, 5.0, 15.0, 15.0]])
            .with_crowd(vec![false, true])
            .expect("one flag per box");
        assert_eq!(
            cfg.init().assign_image(&priors, &g).matched_gt,
            vec![Some(0)]
        );
    }

    #[test]
    #[should_panic(expected = "regress ranges")]
    fn range_count_must_match_levels() {
        let priors = points(&[(8, vec![[4.0, 4.0]])]);
        let _ = FcosAssignerConfig::new()
            .init()
            .assign_image(&priors, &gt(vec![]));
    }
}
