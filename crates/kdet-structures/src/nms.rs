//! Greedy non-maximum suppression, plain and class-aware.
//!
//! Written here rather than taken from `burn::vision::Nms` because post-processing runs on
//! host-side `Instances` (a few hundred boxes per image) where a slice loop has no tensor
//! round trip, and because the class-aware variant and the tie rule must be pinned down:
//! boxes are visited by descending score, ties by ascending index (a stable sort), and a
//! box is suppressed when its IoU with a kept box is **greater than** `iou_threshold`
//! (torchvision's rule). NaN scores sort last.

use crate::boxes::{Boxes, Xyxy};
use crate::iou::iou_xyxy;

/// Indices of `scores` sorted by descending score, stable, NaN last.
fn order_by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| {
        let (a, b) = (scores[i], scores[j]);
        match (a.is_nan(), b.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => b.total_cmp(&a),
        }
    });
    order
}

/// Greedy NMS over all boxes regardless of class.
///
/// Returns the kept indices by descending score.
///
/// # Panics
/// If `boxes` and `scores` differ in length (a caller invariant).
pub fn nms(boxes: &Boxes<Xyxy>, scores: &[f32], iou_threshold: f32) -> Vec<usize> {
    batched_nms(boxes, scores, &vec![0; scores.len()], iou_threshold)
}

/// Class-aware greedy NMS: boxes of different classes never suppress each other.
///
/// Returns the kept indices by descending score (across classes).
///
/// # Panics
/// If `boxes`, `scores` and `classes` differ in length (a caller invariant).
pub fn batched_nms(
    boxes: &Boxes<Xyxy>,
    scores: &[f32],
    classes: &[usize],
    iou_threshold: f32,
) -> Vec<usize> {
    assert_eq!(
        boxes.len(),
        scores.len(),
        "nms: {} boxes but {} scores",
        boxes.len(),
        scores.len()
    );
    assert_eq!(
        boxes.len(),
        classes.len(),
        "nms: {} boxes but {} classes",
        boxes.len(),
        classes.len()
    );
    let b = boxes.as_slice();
    let mut keep: Vec<usize> = Vec::new();
    // Kept boxes per class, so each candidate is compared only with its own class.
    let mut kept_by_class: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for i in order_by_score(scores) {
        let kept = kept_by_class.entry(classes[i]).or_default();
        if kept.iter().all(|&k| iou_xyxy(b[k], b[i]) <= iou_threshold) {
            kept.push(i);
            keep.push(i);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_of_each_cluster() {
        // Two clusters of near-duplicates plus an isolated box.
        let boxes = Boxes::<Xyxy>::new(vec![
            [0.0, 0.0, 10.0, 10.0],   // 0: cluster A, score 0.8
            [1.0, 1.0, 11.0, 11.0],   // 1: cluster A, score 0.9 (best)
            [50.0, 50.0, 60.0, 60.0], // 2: cluster B, score 0.3
            [51.0, 50.0, 61.0, 60.0], // 3: cluster B, score 0.7 (best)
            [30.0, 0.0, 35.0, 5.0],   // 4: alone, score 0.1
        ]);
        let scores = [0.8, 0.9, 0.3, 0.7, 0.1];
        assert_eq!(nms(&boxes, &scores, 0.5), vec![1, 3, 4]);
        // A threshold above every overlap keeps everything, by score.
        assert_eq!(nms(&boxes, &scores, 0.99), vec![1, 0, 3, 2, 4]);
    }

    #[test]
    fn classes_do_not_suppress_each_other() {
        let boxes = Boxes::<Xyxy>::new(vec![
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
        ]);
        let scores = [0.5, 0.9, 0.7];
        assert_eq!(batched_nms(&boxes, &scores, &[0, 1, 0], 0.5), vec![1, 2]);
        assert_eq!(nms(&boxes, &scores, 0.5), vec![1]);
    }

    #[test]
    fn ties_and_edge_cases() {
        let boxes = Boxes::<Xyxy>::new(vec![[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]);
        // Equal scores: the lower index wins.
        assert_eq!(nms(&boxes, &[0.5, 0.5], 0.5), vec![0]);
        // IoU exactly at the threshold is kept (suppression needs IoU > threshold).
        let half = Boxes::<Xyxy>::new(vec![[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]]);
        assert_eq!(nms(&half, &[0.9, 0.8], 0.5), vec![0, 1]);
        assert!(nms(&Boxes::<Xyxy>::empty(), &[], 0.5).is_empty());
        // NaN scores go last and degenerate boxes suppress nothing.
        let deg = Boxes::<Xyxy>::new(vec![[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]);
        assert_eq!(nms(&deg, &[f32::NAN, 0.2], 0.5), vec![1, 0]);
    }
}
