//! COCO box and mask AP on 80 real COCO val2017 images against the numbers pycocotools
//! 2.0.11 gives (listed in `tests/data/coco_tiny_val2017/README.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use hotcoco::COCO;
use kdet_eval::coco::{self, CocoEvalConfig, CocoEvaluator, LabelMap, SegmArea};
use kdet_eval::{EvalError, EvalReport, Stats};
use kdet_structures::{Boxes, ImageSize, Instances, Mask, Masks};

use super::common::coco_tiny;

/// pycocotools 2.0.11, from the README of the data folder.
const BBOX: [f64; 12] = [
    0.384728, 0.693443, 0.352731, 0.450815, 0.395365, 0.447274, 0.346229, 0.480031, 0.480950,
    0.486930, 0.441006, 0.514424,
];
/// Mask AP the detectron2 way (a detection's area is its mask area).
const SEGM_MASK_AREA: [f64; 12] = [
    0.252154, 0.521820, 0.204483, 0.304283, 0.251479, 0.342014, 0.239506, 0.331900, 0.332848,
    0.353369, 0.287989, 0.398045,
];
/// Mask AP with the results' `bbox` kept (a detection's area is its box area).
const SEGM_BOX_AREA: [f64; 12] = [
    0.252154, 0.521820, 0.204483, 0.319704, 0.252212, 0.330609, 0.239506, 0.331900, 0.332848,
    0.353369, 0.287989, 0.398045,
];

fn gt_path() -> PathBuf {
    coco_tiny().join("annotations/instances_val2017.json")
}

fn dt_path() -> PathBuf {
    coco_tiny().join("derived/dets_val2017_perturbed_seed0.json")
}

/// Each stat printed with 6 decimals equals the reference's printed value.
fn assert_stats(got: &Stats, want: &[f64; 12], what: &str) {
    for ((name, g), w) in got.iter().zip(want) {
        assert_eq!(
            format!("{g:.6}"),
            format!("{w:.6}"),
            "{what} {name}: {g} vs {w}"
        );
        assert!((g - w).abs() <= 5e-7 + 1e-12, "{what} {name}: {g} vs {w}");
    }
}

fn file_report(config: CocoEvalConfig) -> EvalReport {
    coco::evaluate_results_file(&gt_path(), &dt_path(), config).unwrap()
}

#[test]
fn results_file_matches_pycocotools() {
    let cases = [
        (CocoEvalConfig::bbox(), &BBOX, "bbox"),
        (
            CocoEvalConfig::segm(SegmArea::Mask),
            &SEGM_MASK_AREA,
            "segm/mask area",
        ),
        (
            CocoEvalConfig::segm(SegmArea::Bbox),
            &SEGM_BOX_AREA,
            "segm/box area",
        ),
    ];
    for (config, want, what) in cases {
        let report = file_report(config);
        assert_stats(&report.stats, want, what);
        assert_eq!((report.num_images, report.num_detections), (80, 1600));
        // The per-class table and the curves come from the same accumulation: the mean of
        // the per-class APs over classes with ground truth is the headline AP.
        let aps: Vec<f64> = report
            .per_class
            .iter()
            .map(|c| c.ap)
            .filter(|&a| a > -1.0)
            .collect();
        assert_eq!(
            aps.len(),
            80,
            "{what}: every category has ground truth here"
        );
        let mean = aps.iter().sum::<f64>() / aps.len() as f64;
        assert!((mean - report.stats.ap()).abs() < 1e-12, "{what}");
        assert_eq!(report.pr_curves.len(), 10);
        let curve_mean = report
            .pr_curves
            .iter()
            .flat_map(|c| &c.precision)
            .sum::<f64>()
            / (10.0 * 101.0);
        assert!((curve_mean - report.stats.ap()).abs() < 1e-12, "{what}");
        assert_eq!(report.per_class[0].name, "person");
    }
}

/// [`kdet_eval::Accumulated::summarize`], which the video evaluator relies on, gives
/// hotcoco's summary bit for bit from hotcoco's accumulation.
#[test]
fn own_summary_equals_hotcoco_summary() {
    let gt = Arc::new(coco::load_ground_truth(&gt_path()).unwrap());
    for config in [CocoEvalConfig::bbox(), CocoEvalConfig::segm(SegmArea::Mask)] {
        let results = coco::read_results(&dt_path()).unwrap();
        let params = hotcoco::Params::new(hotcoco::IouType::Segm);
        let ranges: Vec<(&str, [f64; 2])> = params
            .area_ranges
            .iter()
            .map(|a| (a.label.as_str(), a.range))
            .collect();
        let (stats, acc) =
            coco::evaluate_results_with_area_ranges(&gt, results, config, &ranges).unwrap();
        assert_eq!(acc.summarize(), stats);
    }
}

/// The results file as in-memory predictions: boxes in f32 xyxy, contiguous labels.
fn predictions(gt: &COCO, labels: &LabelMap) -> Vec<(u64, Instances)> {
    let results = coco::read_results(&dt_path()).unwrap();
    let mut by_image: BTreeMap<u64, Vec<&hotcoco::Annotation>> = BTreeMap::new();
    for r in &results {
        by_image.entry(r.image_id).or_default().push(r);
    }
    gt.dataset
        .images
        .iter()
        .map(|img| {
            let size = ImageSize::new(img.height, img.width);
            let dets = by_image.remove(&img.id).unwrap_or_default();
            let boxes = dets
                .iter()
                .map(|d| {
                    let [x, y, w, h] = d.bbox.unwrap();
                    [x as f32, y as f32, (x + w) as f32, (y + h) as f32]
                })
                .collect();
            let classes = dets
                .iter()
                .map(|d| labels.label(d.category_id).unwrap())
                .collect();
            let masks = dets
                .iter()
                .map(|d| {
                    Mask::from_segmentation(d.segmentation.as_ref().unwrap(), img.height, img.width)
                        .unwrap()
                })
                .collect();
            let inst = Instances::new(size, Boxes::new(boxes), classes)
                .unwrap()
                .with_scores(dets.iter().map(|d| d.score.unwrap() as f32).collect())
                .unwrap()
                .with_masks(Masks::new(img.height, img.width, masks).unwrap())
                .unwrap();
            (img.id, inst)
        })
        .collect()
}

/// In-memory predictions, whole-set and streamed in shuffled batches, give identical
/// numbers, and those equal the results file's up to the f32 rounding of boxes and scores.
#[test]
fn in_memory_and_streaming_agree() {
    let gt = Arc::new(coco::load_ground_truth(&gt_path()).unwrap());
    let labels = LabelMap::contiguous(&gt);
    assert_eq!(labels.len(), 80);
    let preds = predictions(&gt, &labels);
    for (config, want) in [
        (CocoEvalConfig::bbox(), &BBOX),
        (CocoEvalConfig::segm(SegmArea::Mask), &SEGM_MASK_AREA),
        (CocoEvalConfig::segm(SegmArea::Bbox), &SEGM_BOX_AREA),
    ] {
        let whole = coco::evaluate_predictions(&gt, &preds, &labels, config).unwrap();
        assert_stats(&whole.stats, want, &format!("{config:?} in memory"));
        // Batches of 7 in a scrambled order, one image fed twice (the last wins).
        let mut order: Vec<usize> = (0..preds.len()).map(|i| (i * 37) % preds.len()).collect();
        order.push(order[3]);
        let mut ev = CocoEvaluator::new(Arc::clone(&gt), labels.clone(), config).unwrap();
        for chunk in order.chunks(7) {
            let batch: Vec<(u64, Instances)> = chunk.iter().map(|&i| preds[i].clone()).collect();
            ev.update(&batch).unwrap();
        }
        let streamed = ev.finish().unwrap();
        assert_eq!(streamed.stats, whole.stats, "{config:?}");
        assert_eq!(streamed.per_class, whole.per_class, "{config:?}");
        assert_eq!(streamed.num_images, 80);
    }
}

#[test]
fn unknown_ids_are_errors_naming_file_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad_dets.json");
    let mut results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dt_path()).unwrap()).unwrap();
    results[0]["image_id"] = 999_999_999.into();
    results[1]["category_id"] = 91.into();
    results[2]["category_id"] = 0.into();
    std::fs::write(&bad, serde_json::to_vec(&results).unwrap()).unwrap();
    let err = coco::evaluate_results_file(&gt_path(), &bad, CocoEvalConfig::bbox()).unwrap_err();
    assert!(matches!(err, EvalError::UnknownIds { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with(&bad.display().to_string()), "{msg}");
    assert!(
        msg.contains("1 image id(s) not in the ground truth: 999999999"),
        "{msg}"
    );
    assert!(
        msg.contains("2 category id(s) not in the ground truth: 0, 91"),
        "{msg}"
    );

    // A file that is not a results list, and one that does not exist.
    std::fs::write(&bad, b"{\"images\": 3}").unwrap();
    let err = coco::evaluate_results_file(&gt_path(), &bad, CocoEvalConfig::bbox()).unwrap_err();
    assert!(matches!(err, EvalError::Json { .. }), "{err}");
    let err = coco::evaluate_results_file(
        &gt_path(),
        &dir.path().join("missing.json"),
        CocoEvalConfig::bbox(),
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::Io { .. }), "{err}");

    // In memory: an unknown image and a label past the label map.
    let gt = Arc::new(coco::load_ground_truth(&gt_path()).unwrap());
    let inst = Instances::new(
        ImageSize::new(10, 10),
        Boxes::new(vec![[0.0, 0.0, 5.0, 5.0]]),
        vec![80],
    )
    .unwrap()
    .with_scores(vec![0.5])
    .unwrap();
    let labels = LabelMap::contiguous(&gt);
    let err =
        coco::evaluate_predictions(&gt, &[(42, inst.clone())], &labels, CocoEvalConfig::bbox())
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("image id(s) not in the ground truth: 42"),
        "{err}"
    );
    let img = gt.dataset.images[0].id;
    let err = coco::evaluate_predictions(&gt, &[(img, inst)], &labels, CocoEvalConfig::bbox())
        .unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::UnknownLabel {
                label: 80,
                num_labels: 80
            }
        ),
        "{err}"
    );
}
