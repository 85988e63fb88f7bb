//! Label assigners on plain numbers: they turn priors and ground truth into an
//! [`crate::ImageAssignment`] per image. One file per assigner.

pub mod atss;
pub mod fcos;
pub mod max_iou;

pub use atss::{AtssAssigner, AtssAssignerConfig, AtssStatistics, atss_statistics};

use kdet_structures::Instances;

use crate::assignment::{Assignment, ImageAssignment, Priors};

/// Assigns every image of a batch with `assign_image`; the priors are shared by the
/// padded batch and travel with the result.
pub fn assign_batch(
    priors: &Priors,
    targets: &[Instances],
    assign_image: impl Fn(&Priors, &Instances) -> ImageAssignment,
) -> Assignment {
    Assignment::dense(
        priors.clone(),
        targets.iter().map(|t| assign_image(priors, t)).collect(),
    )
}

/// Which priors may take part in an image's assignment: those on the image (`valid`,
/// see [`crate::priors::valid_flags`]) that no crowd box covers by more than
/// `ignore_iof_threshold` (IoF over the prior's area; mmdet `ignore_iof_thr` with
/// `ignore_wrt_candidates=True`, `None` = off). The others end up ignored.
///
/// `crowd` indexes `gt_boxes`.
pub fn usable_priors(
    prior_boxes: &[[f32; 4]],
    valid: &[bool],
    gt_boxes: &[[f32; 4]],
    crowd: &[usize],
    ignore_iof_threshold: Option<f32>,
) -> Vec<bool> {
    match ignore_iof_threshold {
        Some(threshold) if !crowd.is_empty() => prior_boxes
            .iter()
            .zip(valid)
            .map(|(&p, &v)| v && !crowd.iter().any(|&c| iof_xyxy(p, gt_boxes[c]) > threshold))
            .collect(),
        _ => valid.to_vec(),
    }
}

/// Indices of an image's non-crowd and crowd instances. Crowd instances (COCO
/// `iscrowd`) are never positives; mmdetection passes them as `gt_bboxes_ignore`.
pub fn split_crowd(targets: &Instances) -> (Vec<usize>, Vec<usize>) {
    (0..targets.len()).partition(|&g| !targets.is_crowd(g))
}

/// Intersection over the area of `a` (mmdet `bbox_overlaps(mode='iof')`): the part of
/// prior `a` covered by `b`; 0 for a degenerate `a`.
pub fn iof_xyxy(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = (a[2] - a[0]).max(0.0) * (a[3] - a[1]).max(0.0);
    if area > 0.0 { iw * ih / area } else { 0.0 }
}
