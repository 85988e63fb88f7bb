//! Max-IoU label assignment (RetinaNet): mmdetection's `MaxIoUAssigner`
//! (`mmdet/models/task_modules/assigners/max_iou_assigner.py`), with the values of
//! `configs/retinanet/retinanet_r50_fpn_1x_coco.py` (`train_cfg.assigner`) as defaults.
//!
//! For one image, with IoU computed between every prior (anchor box) and every non-crowd
//! ground-truth box:
//! 1. each prior takes the GT it overlaps most (the lowest GT index among ties, as
//!    `torch.max` returns the first maximum);
//! 2. best IoU `< neg_iou_threshold` → negative; `>= pos_iou_threshold` → positive;
//!    in between → ignored (neither positive nor negative: left out of the classification
//!    loss);
//! 3. `match_low_quality`: every GT whose best IoU is `>= min_pos_iou` also takes its best
//!    prior — every prior tying for that maximum when `gt_max_assign_all` — overriding step
//!    2. GTs are visited in index order, so a later GT wins a prior that is the best of
//!    several GTs (mmdet's loop order).
//!
//! Crowd ground truth (`Instances::is_crowd`) is never matched. With
//! `ignore_iof_threshold = Some(t)`, priors whose IoF (intersection over the *prior's*
//! area, mmdet `ignore_wrt_candidates=True`) with some crowd box exceeds `t` are ignored
//! and do not count as any GT's best prior. RetinaNet's config has `ignore_iof_thr=-1`
//! (crowd boxes unused): that is the `None` default. Priors on the padding of a batched
//! image ([`crate::priors::valid_flags`]) are ignored the same way (mmdet drops them before
//! assigning: `inside_flags`, `allowed_border=-1`).
//!
//! Deviations from mmdetection, both only in degenerate cases:
//! - a GT whose best IoU is exactly 0 (a zero-area box, or one no prior touches) takes no
//!   prior in step 3. mmdet with `min_pos_iou=0` would assign it *every* prior of IoU 0,
//!   i.e. nearly the whole image;
//! - crowd-ignored priors stay ignored when the image has no non-crowd GT (mmdet then
//!   returns every prior as negative).

use burn::config::Config;
use kdet_structures::Instances;
use kdet_structures::iou::iou_xyxy;

use super::{assign_batch, split_crowd, usable_priors};
use crate::assignment::{Assignment, ImageAssignment, Priors};
use crate::priors::valid_flags;

/// Configuration of the [`MaxIouAssigner`].
#[derive(Config, Debug, PartialEq)]
pub struct MaxIouAssignerConfig {
    /// A prior whose best IoU reaches this is positive (RetinaNet config `pos_iou_thr=0.5`).
    #[config(default = 0.5)]
    pub pos_iou_threshold: f32,
    /// A prior whose best IoU is below this is negative (RetinaNet config `neg_iou_thr=0.4`).
    #[config(default = 0.4)]
    pub neg_iou_threshold: f32,
    /// Least IoU for a GT to take its best prior in the low-quality step (RetinaNet config
    /// `min_pos_iou=0`).
    #[config(default = 0.0)]
    pub min_pos_iou: f32,
    /// Whether every GT takes its best prior(s) even below `pos_iou_threshold`
    /// (mmdet default `match_low_quality=True`).
    #[config(default = true)]
    pub match_low_quality: bool,
    /// In the low-quality step, give a GT all priors tying for its best IoU rather than the
    /// first one (mmdet default `gt_max_assign_all=True`).
    #[config(default = true)]
    pub gt_max_assign_all: bool,
    /// Ignore priors whose IoF with a crowd box exceeds this (mmdet `ignore_iof_thr`;
    /// RetinaNet config `-1`, i.e. disabled: `None`).
    #[config(default = "None")]
    pub ignore_iof_threshold: Option<f32>,
}

impl MaxIouAssignerConfig {
    pub fn init(&self) -> MaxIouAssigner {
        MaxIouAssigner {
            pos_iou_threshold: self.pos_iou_threshold,
            neg_iou_threshold: self.neg_iou_threshold,
            min_pos_iou: self.min_pos_iou,
            match_low_quality: self.match_low_quality,
            gt_max_assign_all: self.gt_max_assign_all,
            ignore_iof_threshold: self.ignore_iof_threshold,
        }
    }
}

/// The max-IoU assigner (see the module docs; fields as in [`MaxIouAssignerConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MaxIouAssigner {
    pub pos_iou_threshold: f32,
    pub neg_iou_threshold: f32,
    pub min_pos_iou: f32,
    pub match_low_quality: bool,
    pub gt_max_assign_all: bool,
    pub ignore_iof_threshold: Option<f32>,
}

impl MaxIouAssigner {
    /// Assigns every image of a batch (the priors are shared).
    pub fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment {
        assign_batch(priors, targets, |p, t| self.assign_image(p, t))
    }

    /// Assigns the priors of one image.
    ///
    /// Priors on the padding of the batch ([`valid_flags`] for `gt.image_size()`) are
    /// ignored and take part in nothing, as mmdet drops them before assigning
    /// (`inside_flags` with RetinaNet's `allowed_border=-1`). The result has one entry per
    /// prior; `matched_gt` indexes `gt` (crowd instances included in the numbering), and
    /// `max_iou` is the IoU with the matched GT for positives, the best IoU over non-crowd
    /// GTs otherwise (0 without GT and for padding or crowd-ignored priors).
    pub fn assign_image(&self, priors: &Priors, gt: &Instances) -> ImageAssignment {
        let valid = valid_flags(priors, gt.image_size());
        self.assign_boxes(&priors.boxes, &valid, gt)
    }

    /// [`Self::assign_image`] on plain prior boxes: `valid[p] = false` marks a prior as
    /// padding (ignored).
    ///
    /// # Panics
    /// If `valid` and `priors` differ in length (a caller invariant).
    pub fn assign_boxes(
        &self,
        priors: &[[f32; 4]],
        valid: &[bool],
        gt: &Instances,
    ) -> ImageAssignment {
        let n = priors.len();
        assert_eq!(valid.len(), n, "one validity flag per prior");
        let boxes = gt.boxes().as_slice();
        let (regular, crowd) = split_crowd(gt);

        // Priors that take part in the assignment; the others end up ignored.
        let usable = usable_priors(priors, valid, boxes, &crowd, self.ignore_iof_threshold);

        let mut matched_gt: Vec<Option<usize>> = vec![None; n];
        let mut ignore: Vec<bool> = usable.iter().map(|&u| !u).collect();
        let mut max_iou = vec![0.0f32; n];
        // Best IoU of each regular GT over the usable priors (mmdet sets the crowd-ignored
        // columns to -1 and drops padding priors before this maximum).
        let mut gt_best = vec![f32::NEG_INFINITY; regular.len()];

        for (p, &prior) in priors.iter().enumerate() {
            if !usable[p] {
                continue;
            }
            let mut best: Option<(usize, f32)> = None;
            for (j, &g) in regular.iter().enumerate() {
                let iou = iou_xyxy(prior, boxes[g]);
                // Strict `>`: the first GT wins ties.
                if best.is_none_or(|(_, b)| iou > b) {
                    best = Some((g, iou));
                }
                if iou > gt_best[j] {
                    gt_best[j] = iou;
                }
            }
            // No regular GT: negative.
            let Some((g, iou)) = best else { continue };
            max_iou[p] = iou;
            if iou >= self.pos_iou_threshold {
                matched_gt[p] = Some(g);
            } else if iou >= self.neg_iou_threshold {
                ignore[p] = true;
            }
        }

        if self.match_low_quality {
            for (j, &g) in regular.iter().enumerate() {
                let best = gt_best[j];
                // `best > 0`: see the module docs (degenerate GTs take nothing).
                if !(best >= self.min_pos_iou && best > 0.0) {
                    continue;
                }
                for (p, &prior) in priors.iter().enumerate() {
                    // Recomputed with the same function, so the equality is exact.
                    if !usable[p] || iou_xyxy(prior, boxes[g]) != best {
                        continue;
                    }
                    matched_gt[p] = Some(g);
                    ignore[p] = false;
                    max_iou[p] = best;
                    if !self.gt_max_assign_all {
                        break;
                    }
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
    use kdet_structures::{Boxes, ImageSize};

    impl MaxIouAssigner {
        /// `assign_boxes` with every prior on the image.
        fn all_valid(&self, priors: &[[f32; 4]], gt: &Instances) -> ImageAssignment {
            self.assign_boxes(priors, &vec![true; priors.len()], gt)
        }
    }

    fn gt(boxes: Vec<[f32; 4]>) -> Instances {
        let n = boxes.len();
        Instances::new(ImageSize::new(100, 100), Boxes::new(boxes), vec![0; n])
            .expect("valid test GT")
    }

    #[test]
    fn zero_gt_gives_all_negative() {
        let priors = [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]];
        let a = MaxIouAssignerConfig::new()
            .init()
            .all_valid(&priors, &gt(vec![]));
        assert_eq!(a.matched_gt, vec![None, None]);
        assert_eq!(a.ignore, vec![false, false]);
        assert_eq!(a.max_iou, vec![0.0, 0.0]);
        // Zero priors: empty result.
        let a = MaxIouAssignerConfig::new()
            .init()
            .all_valid(&[], &gt(vec![[0.0, 0.0, 10.0, 10.0]]));
        assert!(a.matched_gt.is_empty() && a.ignore.is_empty() && a.max_iou.is_empty());
    }

    #[test]
    fn positive_ignore_and_negative_bands() {
        // GT [0,0,10,10] (area 100). Priors sharing its left/top edge, width w, height 10:
        // IoU = min(w,10)*10 / (100 + w*10 - min(w,10)*10).
        //   w = 16 -> 100/160 = 0.625  (>= 0.5: positive)
        //   w = 22 -> 100/220 = 0.4545 (in [0.4, 0.5): ignored)
        //   w = 30 -> 100/300 = 0.333  (< 0.4: negative)
        // A fourth prior, [0,0,10,10], is the GT's best (IoU 1), so the low-quality step
        // changes nothing else.
        let priors = [
            [0.0, 0.0, 16.0, 10.0],
            [0.0, 0.0, 22.0, 10.0],
            [0.0, 0.0, 30.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
        ];
        let a = MaxIouAssignerConfig::new()
            .init()
            .all_valid(&priors, &gt(vec![[0.0, 0.0, 10.0, 10.0]]));
        assert_eq!(a.matched_gt, vec![Some(0), None, None, Some(0)]);
        assert_eq!(a.ignore, vec![false, true, false, false]);
        let expected = [0.625, 100.0 / 220.0, 100.0 / 300.0, 1.0];
        for (got, want) in a.max_iou.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert_eq!(a.num_positives(), 2);
    }

    #[test]
    fn low_quality_match_takes_the_best_prior_below_the_threshold() {
        // GT [0,0,10,10]; priors of IoU 0.333 ([0,0,30,10]) and 0.25 ([0,0,40,10]):
        // both below neg_iou_threshold, but min_pos_iou = 0 gives the GT its best one.
        let priors = [[0.0, 0.0, 30.0, 10.0], [0.0, 0.0, 40.0, 10.0]];
        let g = gt(vec![[0.0, 0.0, 10.0, 10.0]]);
        let a = MaxIouAssignerConfig::new().init().all_valid(&priors, &g);
        assert_eq!(a.matched_gt, vec![Some(0), None]);
        assert_eq!(a.ignore, vec![false, false]);
        assert!((a.max_iou[0] - 1.0 / 3.0).abs() < 1e-6);
        // Raising min_pos_iou above 1/3 disables it.
        let a = MaxIouAssignerConfig::new()
            .with_min_pos_iou(0.34)
            .init()
            .all_valid(&priors, &g);
        assert_eq!(a.matched_gt, vec![None, None]);
        // So does match_low_quality = false.
        let a = MaxIouAssignerConfig::new()
            .with_match_low_quality(false)
            .init()
            .all_valid(&priors, &g);
        assert_eq!(a.matched_gt, vec![None, None]);
    }

    #[test]
    fn low_quality_match_overrides_the_ignore_band() {
        // Prior IoU 0.4545 with the GT (the ignore band) and the GT's best: positive.
        let a = MaxIouAssignerConfig::new()
            .init()
            .all_valid(&[[0.0, 0.0, 22.0, 10.0]], &gt(vec![[0.0, 0.0, 10.0, 10.0]]));
        assert_eq!(a.matched_gt, vec![Some(0)]);
        assert_eq!(a.ignore, vec![false]);
    }

    #[test]
    fn ties() {
        // Two priors tie for the GT's best IoU (both 1/3): gt_max_assign_all gives both,
        // otherwise only the first.
        let priors = [[0.0, 0.0, 30.0, 10.0], [-20.0, 0.0, 10.0, 10.0]];
        let g = gt(vec![[0.0, 0.0, 10.0, 10.0]]);
        let a = MaxIouAssignerConfig::new().init().all_valid(&priors, &g);
        assert_eq!(a.matched_gt, vec![Some(0), Some(0)]);
        let a = MaxIouAssignerConfig::new()
            .with_gt_max_assign_all(false)
            .init()
            .all_valid(&priors, &g);
        assert_eq!(a.matched_gt, vec![Some(0), None]);

        // A prior equally good for two GTs (IoU 0.5 with each half of it): the first GT wins
        // the threshold step ...
        let a = MaxIouAssignerConfig::new()
            .with_match_low_quality(false)
            .init()
            .all_valid(
                &[[0.0, 0.0, 20.0, 10.0]],
                &gt(vec![[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]]),
            );
        assert_eq!(a.matched_gt, vec![Some(0)]);
        // ... but it is also both GTs' best prior, and the low-quality step visits GTs in
        // order, so the later GT ends up with it (mmdet's loop).
        let a = MaxIouAssignerConfig::new().init().all_valid(
            &[[0.0, 0.0, 20.0, 10.0]],
            &gt(vec![[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]]),
        );
        assert_eq!(a.matched_gt, vec![Some(1)]);
    }

    #[test]
    fn degenerate_gt_takes_nothing() {
        // A zero-area GT has IoU 0 with everything: no prior is matched to it (mmdet would
        // give it every prior).
        let priors = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
        let a = MaxIouAssignerConfig::new()
            .init()
            .all_valid(&priors, &gt(vec![[5.0, 5.0, 5.0, 5.0]]));
        assert_eq!(a.matched_gt, vec![None, None]);
        assert_eq!(a.ignore, vec![false, false]);
    }

    #[test]
    fn crowd_is_never_positive_and_can_ignore() {
        // GT 0 is a crowd box covering prior 0 entirely (IoF 1); GT 1 is a normal box equal
        // to prior 1.
        let priors = [
            [0.0, 0.0, 10.0, 10.0],
            [50.0, 50.0, 60.0, 60.0],
            [80.0, 80.0, 90.0, 90.0],
        ];
        let g = gt(vec![[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 60.0, 60.0]])
            .with_crowd(vec![true, false])
            .expect("one flag per box");
        let a = MaxIouAssignerConfig::new().init().all_valid(&priors, &g);
        assert_eq!(a.matched_gt, vec![None, Some(1), None]);
        assert_eq!(a.ignore, vec![false, false, false]);
        let a = MaxIouAssignerConfig::new()
            .with_ignore_iof_threshold(Some(0.5))
            .init()
            .all_valid(&priors, &g);
        assert_eq!(a.matched_gt, vec![None, Some(1), None]);
        assert_eq!(a.ignore, vec![true, false, false]);
        // Only crowd GT: still no positive, the covered prior is ignored.
        let only_crowd = gt(vec![[0.0, 0.0, 40.0, 40.0]])
            .with_crowd(vec![true])
            .expect("one flag");
        let a = MaxIouAssignerConfig::new()
            .with_ignore_iof_threshold(Some(0.5))
            .init()
            .all_valid(&priors, &only_crowd);
        assert_eq!(a.matched_gt, vec![None, None, None]);
        assert_eq!(a.ignore, vec![true, false, false]);
    }

    #[test]
    fn padding_priors_are_ignored_and_never_a_gts_best() {
        // One level of stride 8, a 1x3 map: priors at x = 0, 8, 16 (8x8 boxes). The image is
        // 8 high and 16 wide, so x = 16 (column 2 = ceil(16/8)) is padding. The GT equals the
        // padding prior: the low-quality step must fall back to the best *valid* prior
        // ([8,0,16,8], IoU 0 -> nothing, since 0 is not > 0) and the padding prior is ignored.
        let priors = Priors {
            boxes: vec![
                [0.0, 0.0, 8.0, 8.0],
                [8.0, 0.0, 16.0, 8.0],
                [16.0, 0.0, 24.0, 8.0],
            ],
            centers: vec![[4.0, 4.0], [12.0, 4.0], [20.0, 4.0]],
            level_offsets: vec![0, 3],
            strides: vec![8],
            level_sizes: vec![(1, 3)],
            num_per_location: 1,
        };
        let g = Instances::new(
            ImageSize::new(8, 16),
            Boxes::new(vec![[16.0, 0.0, 24.0, 8.0]]),
            vec![0],
        )
        .expect("valid");
        let a = MaxIouAssignerConfig::new()
            .init()
            .assign(&priors, std::slice::from_ref(&g));
        assert_eq!(a.images.len(), 1);
        assert_eq!(a.images[0].matched_gt, vec![None, None, None]);
        assert_eq!(a.images[0].ignore, vec![false, false, true]);
        // The same GT on a 24-wide image: the prior is valid and an exact match.
        let g = Instances::new(
            ImageSize::new(8, 24),
            Boxes::new(vec![[16.0, 0.0, 24.0, 8.0]]),
            vec![0],
        )
        .expect("valid");
        let a = MaxIouAssignerConfig::new().init().assign_image(&priors, &g);
        assert_eq!(a.matched_gt, vec![None, None, Some(0)]);
        assert_eq!(a.ignore, vec![false; 3]);
    }
}
