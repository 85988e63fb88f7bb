//! Video AP against the reference evaluator (the youtubevos COCO API fork, as shipped in
//! mmdet 3.3.0) on the committed fixture made by `scripts/eval/make-ytvis-fixture.sh`:
//! synthetic YouTube-VIS ground truth (`kdet data synth --video`, plus a crowd track and a
//! video with large tracks) and perturbed predictions (shifted, eroded and dilated masks,
//! dropped frames, masks where the ground truth has none, wrong classes, duplicates, tied
//! scores, false and empty tracks).

use kdet_eval::ytvis;
use kdet_structures::ytvis::{YtvisDataset, YtvisResult};
use serde::Deserialize;

use super::common::fixtures;

#[derive(Deserialize)]
pub struct Reference {
    pub stats: [f64; 12],
    pub category_ids: Vec<u64>,
    /// `[T, R, K, A, M]`.
    pub shape: [usize; 5],
    /// `eval['recall']`, `[T, K, A, M]`, C order.
    pub recall: Vec<f64>,
    /// `eval['precision'].mean(axis=1)`, `[T, K, A, M]`, C order.
    pub precision_mean_over_recall: Vec<f64>,
    pub num_videos: usize,
    pub num_predictions: usize,
}

pub struct Fixture {
    pub gt: YtvisDataset,
    pub results: Vec<YtvisResult>,
    pub reference: Reference,
}

pub fn load_fixture() -> Fixture {
    let read = |name: &str| std::fs::read(fixtures().join(name)).unwrap();
    Fixture {
        gt: serde_json::from_slice(&read("ytvis_synth_gt.json")).unwrap(),
        results: serde_json::from_slice(&read("ytvis_synth_dt.json")).unwrap(),
        reference: serde_json::from_slice(&read("ytvis_synth_reference.json")).unwrap(),
    }
}

#[test]
fn video_ap_equals_reference() {
    let Fixture {
        gt,
        results,
        reference,
    } = load_fixture();
    let gt_path = fixtures().join("ytvis_synth_gt.json");
    let dt_path = fixtures().join("ytvis_synth_dt.json");
    let report = ytvis::evaluate_ytvis_files(&gt_path, &dt_path).unwrap();
    assert_eq!(report.num_images, reference.num_videos);
    assert_eq!(report.num_detections, reference.num_predictions);
    for ((name, got), want) in report.stats.iter().zip(reference.stats) {
        assert!(
            (got - want).abs() <= 1e-9,
            "{name}: {got} vs reference {want}"
        );
    }
    // Every range was exercised.
    assert!(
        reference.stats.iter().all(|&s| s > 0.0),
        "{:?}",
        reference.stats
    );

    // The whole recall tensor and the precision tensor averaged over recall thresholds.
    let mut ev = ytvis::VideoEvaluator::new(&gt.categories);
    let by_video = ytvis::evaluate_ytvis(&gt, &results, "fixture").unwrap();
    assert_eq!(by_video.stats, report.stats);
    for v in &gt.videos {
        let preds: Vec<ytvis::PredictedTrack> = results
            .iter()
            .filter(|r| r.video_id == v.id)
            .map(|r| ytvis::PredictedTrack {
                category_id: r.category_id,
                score: r.score,
                masks: r
                    .segmentations
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.to_rle(v.height, v.width).unwrap()))
                    .collect(),
            })
            .collect();
        ev.add_video(v, &gt.annotations, &preds).unwrap();
    }
    let acc = ev.accumulate();
    assert_eq!(acc.shape(), reference.shape);
    assert_eq!(acc.category_ids, reference.category_ids);
    let [nt, nr, nk, na, nm] = acc.shape();
    let mut i = 0;
    for t in 0..nt {
        for k in 0..nk {
            for a in 0..na {
                for m in 0..nm {
                    let recall = acc.recall[acc.recall_index(t, k, a, m)];
                    assert!(
                        (recall - reference.recall[i]).abs() <= 1e-9,
                        "recall[{t},{k},{a},{m}]"
                    );
                    let mean = (0..nr)
                        .map(|r| acc.precision[acc.precision_index(t, r, k, a, m)])
                        .sum::<f64>()
                        / nr as f64;
                    let want = reference.precision_mean_over_recall[i];
                    assert!(
                        (mean - want).abs() <= 1e-9,
                        "precision[{t},:,{k},{a},{m}]: {mean} vs {want}"
                    );
                    i += 1;
                }
            }
        }
    }
    assert_eq!(i, reference.recall.len());
}

/// Evaluating videos in any order, one at a time, gives the same numbers.
#[test]
fn video_order_does_not_matter() {
    let Fixture { gt, results, .. } = load_fixture();
    let whole = ytvis::evaluate_ytvis(&gt, &results, "fixture").unwrap();
    let mut ev = ytvis::VideoEvaluator::new(&gt.categories);
    for v in gt.videos.iter().rev() {
        let preds: Vec<ytvis::PredictedTrack> = results
            .iter()
            .filter(|r| r.video_id == v.id)
            .map(|r| ytvis::PredictedTrack {
                category_id: r.category_id,
                score: r.score,
                masks: r
                    .segmentations
                    .iter()
                    .map(|s| s.as_ref().map(|s| s.to_rle(v.height, v.width).unwrap()))
                    .collect(),
            })
            .collect();
        ev.add_video(v, &gt.annotations, &preds).unwrap();
    }
    assert_eq!(ev.finish(), whole);
}
