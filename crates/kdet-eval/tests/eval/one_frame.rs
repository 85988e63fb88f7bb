//! On one-frame videos, video AP is COCO mask AP with YouTube-VIS's area ranges (128² and
//! 256²): checked against hotcoco on the real COCO masks of coco_tiny and on every frame of
//! the synthetic video fixture, whole precision/recall tensors included.
//!
//! Crowd ground truth is left out: the two protocols differ there on purpose (COCO's crowd
//! IoU divides by the detection's area, the video IoU does not).

use std::sync::Arc;

use hotcoco::COCO;
use hotcoco::types::{Annotation, Dataset, Image, Segmentation};
use kdet_eval::coco::{self, CocoEvalConfig, SegmArea};
use kdet_eval::ytvis::{self, YTVIS_AREA_RANGES};
use kdet_structures::ytvis::{YtvisAnnotation, YtvisDataset, YtvisResult, YtvisVideo};

use super::common::coco_tiny;
use super::ytvis_parity::{Fixture, load_fixture};

/// COCO ground truth (crowds dropped) and compressed-RLE results as one-frame videos.
fn to_one_frame_videos(gt: &Dataset, results: &[Annotation]) -> (YtvisDataset, Vec<YtvisResult>) {
    let videos = gt
        .images
        .iter()
        .map(|img| YtvisVideo {
            id: img.id,
            width: img.width,
            height: img.height,
            length: 1,
            file_names: vec![img.file_name.clone()],
        })
        .collect();
    let annotations = gt
        .annotations
        .iter()
        .filter(|a| !a.iscrowd)
        .map(|a| YtvisAnnotation {
            id: a.id,
            video_id: a.image_id,
            category_id: a.category_id,
            segmentations: vec![a.segmentation.clone()],
            bboxes: vec![a.bbox],
            areas: vec![a.area],
            iscrowd: false,
            width: None,
            height: None,
            length: None,
        })
        .collect();
    let results = results
        .iter()
        .map(|r| YtvisResult {
            video_id: r.image_id,
            category_id: r.category_id,
            score: r.score.unwrap_or(0.0),
            segmentations: vec![r.segmentation.clone()],
        })
        .collect();
    (
        YtvisDataset {
            videos,
            annotations,
            categories: gt.categories.clone(),
            ..Default::default()
        },
        results,
    )
}

/// Video AP of the one-frame videos equals hotcoco's mask AP with 128²/256² area ranges,
/// stats and tensors bit for bit.
fn assert_one_frame_equals_coco(gt: Dataset, results: Vec<Annotation>, what: &str) {
    let (videos, tracks) = to_one_frame_videos(&gt, &results);
    let mut coco_gt = gt;
    coco_gt.annotations.retain(|a| !a.iscrowd);
    let coco_gt = Arc::new(COCO::from_dataset(coco_gt));
    let (coco_stats, coco_acc) = coco::evaluate_results_with_area_ranges(
        &coco_gt,
        results,
        CocoEvalConfig::segm(SegmArea::Mask),
        &YTVIS_AREA_RANGES,
    )
    .unwrap();
    let mut ev = ytvis::VideoEvaluator::new(&videos.categories);
    let by_video = |id: u64| tracks.iter().filter(move |t| t.video_id == id);
    for v in &videos.videos {
        let preds: Vec<ytvis::PredictedTrack> = by_video(v.id)
            .map(|t| ytvis::PredictedTrack {
                category_id: t.category_id,
                score: t.score,
                masks: t
                    .segmentations
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.to_rle(v.height, v.width).unwrap()))
                    .collect(),
            })
            .collect();
        ev.add_video(v, &videos.annotations, &preds).unwrap();
    }
    let acc = ev.accumulate();
    assert_eq!(acc.shape(), coco_acc.shape(), "{what}");
    assert_eq!(acc.category_ids, coco_acc.category_ids, "{what}");
    let diff = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count()
    };
    assert_eq!(
        diff(&acc.recall, &coco_acc.recall),
        0,
        "{what}: recall differs"
    );
    assert_eq!(
        diff(&acc.precision, &coco_acc.precision),
        0,
        "{what}: precision differs"
    );
    assert_eq!(acc.summarize(), coco_stats, "{what}");
    // The file path (results grouped per video) gives the same.
    let report = ytvis::evaluate_ytvis(&videos, &tracks, what).unwrap();
    assert_eq!(report.stats, coco_stats, "{what}");
    // Something was measured in several area ranges.
    assert!(
        coco_stats.0.iter().filter(|&&s| s > 0.0).count() >= 8,
        "{what}: {coco_stats:?}"
    );
}

#[test]
fn coco_tiny_as_one_frame_videos() {
    let gt =
        coco::load_ground_truth(&coco_tiny().join("annotations/instances_val2017.json")).unwrap();
    let results =
        coco::read_results(&coco_tiny().join("derived/dets_val2017_perturbed_seed0.json")).unwrap();
    assert_one_frame_equals_coco(gt.dataset.clone(), results, "coco_tiny");
}

/// Every frame of the synthetic video fixture as a one-frame video (frames where a track
/// has no mask drop that track).
#[test]
fn synthetic_video_frames_as_one_frame_videos() {
    let Fixture { gt, results, .. } = load_fixture();
    let frames = gt.videos.iter().map(|v| v.length).max().unwrap();
    let mut images = Vec::new();
    let mut anns = Vec::new();
    let mut dets = Vec::new();
    for t in 0..frames {
        for v in gt.videos.iter().filter(|v| t < v.length) {
            let image_id = v.id * 1000 + t as u64;
            images.push(Image {
                id: image_id,
                file_name: v.file_names[t].clone(),
                height: v.height,
                width: v.width,
                ..Default::default()
            });
            for a in gt
                .annotations
                .iter()
                .filter(|a| a.video_id == v.id && !a.iscrowd)
            {
                let Some(seg) = a.segmentations[t].clone() else {
                    continue;
                };
                let area = a.areas.get(t).copied().flatten();
                if area.is_none_or(|x| x == 0.0) {
                    // COCO reads a ground truth's area as is; the video protocol would
                    // average it away. Keep the two comparable.
                    continue;
                }
                anns.push(Annotation {
                    id: a.id * 1000 + t as u64,
                    image_id,
                    category_id: a.category_id,
                    segmentation: Some(seg),
                    area,
                    ..Default::default()
                });
            }
            for r in results.iter().filter(|r| r.video_id == v.id) {
                let Some(seg @ Segmentation::CompressedRle { .. }) = r.segmentations[t].clone()
                else {
                    continue;
                };
                dets.push(Annotation {
                    image_id,
                    category_id: r.category_id,
                    segmentation: Some(seg),
                    score: Some(r.score),
                    ..Default::default()
                });
            }
        }
    }
    let dataset = Dataset {
        images,
        annotations: anns,
        categories: gt.categories.clone(),
        ..Default::default()
    };
    assert_one_frame_equals_coco(dataset, dets, "synthetic frames");
}
