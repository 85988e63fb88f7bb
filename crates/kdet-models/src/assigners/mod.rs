//! Label assigners on plain numbers: they turn priors and ground truth into an
//! [`crate::ImageAssignment`] per image. One file per assigner.

pub mod atss;
pub mod fcos;
pub mod max_iou;

pub use atss::{AtssAssigner, AtssAssignerConfig, AtssStatistics, atss_statistics};

use kdet_structures::Instances;

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
