#![allow(clippy::unwrap_used)]

use hotcoco::types::{Category, Rle};
use kdet_structures::ytvis::{YtvisAnnotation, YtvisDataset, YtvisResult, YtvisVideo};

use super::*;

/// A `h x w` mask with the pixels `(x, y)` in `pixels` set.
fn mask(h: u32, w: u32, pixels: &[(u32, u32)]) -> Rle {
    let mut m = vec![0u8; (h * w) as usize];
    for &(x, y) in pixels {
        m[(x * h + y) as usize] = 1;
    }
    hotcoco::mask::encode(&m, h, w).unwrap()
}

/// A filled rectangle `[x0, x1) x [y0, y1)`.
fn rect(h: u32, w: u32, x0: u32, y0: u32, x1: u32, y1: u32) -> Rle {
    let px: Vec<(u32, u32)> = (x0..x1)
        .flat_map(|x| (y0..y1).map(move |y| (x, y)))
        .collect();
    mask(h, w, &px)
}

fn seg(r: &Rle) -> Option<Segmentation> {
    Some(Segmentation::CompressedRle {
        size: [r.h, r.w],
        counts: hotcoco::mask::rle_to_string(r),
    })
}

fn video(id: u64, frames: usize, h: u32, w: u32) -> YtvisVideo {
    YtvisVideo {
        id,
        width: w,
        height: h,
        length: frames,
        file_names: (0..frames).map(|t| format!("{id}/{t:05}.jpg")).collect(),
    }
}

fn gt(id: u64, video_id: u64, category_id: u64, masks: &[Option<Rle>]) -> YtvisAnnotation {
    YtvisAnnotation {
        id,
        video_id,
        category_id,
        segmentations: masks.iter().map(|m| m.as_ref().and_then(seg)).collect(),
        bboxes: vec![],
        areas: masks
            .iter()
            .map(|m| m.as_ref().map(|r| hotcoco::mask::area(r) as f64))
            .collect(),
        iscrowd: false,
        width: None,
        height: None,
        length: None,
    }
}

fn track(category_id: u64, score: f64, masks: Vec<Option<Rle>>) -> PredictedTrack {
    PredictedTrack {
        category_id,
        score,
        masks,
    }
}

fn cats(ids: &[u64]) -> Vec<Category> {
    ids.iter()
        .map(|&id| Category {
            id,
            name: format!("c{id}"),
            ..Default::default()
        })
        .collect()
}

/// A small deterministic generator (64-bit LCG) for random masks.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

#[test]
fn intersection_matches_hotcoco_merge() {
    let mut rng = Lcg(7);
    for case in 0..200 {
        let (h, w) = (1 + rng.next() % 9, 1 + rng.next() % 9);
        // Density varies per case so that empty, full and masks starting with a 1 occur.
        let density = rng.next() % 5;
        let mut random = || -> Rle {
            let m: Vec<u8> = (0..h * w)
                .map(|_| u8::from(rng.next() % 4 < density))
                .collect();
            hotcoco::mask::encode(&m, h, w).unwrap()
        };
        let (a, b) = (random(), random());
        let merged = hotcoco::mask::merge(&[a.clone(), b.clone()], true).unwrap();
        assert_eq!(
            rle_intersection_area(&a, &b),
            hotcoco::mask::area(&merged),
            "case {case}: {a:?} {b:?}"
        );
    }
}

#[test]
fn track_iou_by_hand() {
    // GT in frames 0-1, detection in frames 1-2 (§8.4 of the spec):
    // union = |g0| + |g1 ∪ d1| + |d2| = 4 + (4 + 4 - 2) + 3 = 13, intersection = 2.
    let (h, w) = (4, 4);
    let g = vec![
        Some(rect(h, w, 0, 0, 2, 2)),
        Some(rect(h, w, 0, 0, 2, 2)),
        None,
    ];
    let d = vec![
        None,
        Some(rect(h, w, 1, 0, 3, 2)),
        Some(mask(h, w, &[(3, 3), (3, 2), (2, 3)])),
    ];
    assert_eq!(track_iou(&d, &g), 2.0 / 13.0);
    assert_eq!(track_iou(&g, &g), 1.0);
    // Nothing on either side: union 0 gives 0.
    let none: Vec<Option<Rle>> = vec![None, None, None];
    assert_eq!(track_iou(&none, &none), 0.0);
    // Present but empty masks count as present and add nothing.
    let empty = vec![Some(mask(h, w, &[])); 3];
    assert_eq!(track_iou(&empty, &g), 0.0);
}

/// Area ranges are inclusive at both ends (`avg_area < lo or avg_area > hi` is outside), and
/// a ground truth's area is the mean of the non-zero entries of its `areas` field.
#[test]
fn area_binning_at_128_and_256() {
    let (h, w) = (8, 8);
    let v = video(1, 3, h, w);
    let m = |x: u32| Some(rect(h, w, x, 0, x + 1, 1));
    let mut g1 = gt(1, 1, 1, &[m(0), m(0), m(0)]);
    g1.areas = vec![Some(16384.0), None, Some(0.0)]; // avg 16384: small and medium
    let mut g2 = gt(2, 1, 1, &[m(2), m(2), m(2)]);
    g2.areas = vec![Some(70000.0), Some(60000.0), None]; // avg 65000: medium
    let mut g3 = gt(3, 1, 1, &[m(4), m(4), m(4)]);
    g3.areas = vec![Some(65537.0), None, None]; // large
    // Perfect tracks for g1 and g3; g2 is missed.
    let dts = vec![
        track(1, 0.9, vec![m(0), m(0), m(0)]),
        track(1, 0.8, vec![m(4), m(4), m(4)]),
    ];
    let mut ev = VideoEvaluator::new(&cats(&[1]));
    ev.add_video(&v, &[g1, g2, g3], &dts).unwrap();
    let s = ev.finish().stats;
    // A lone leading true positive has precision 1 / (1 + eps) in pycocotools.
    let one = 1.0 / (1.0 + f64::EPSILON);
    assert!((s.get("APs").unwrap() - one).abs() < 1e-15, "{s:?}");
    // Medium: g1 found, g2 missed. Precision 1 up to recall 0.5: 51 of 101 thresholds.
    let half = 51.0 * (1.0 / (1.0 + f64::EPSILON)) / 101.0;
    assert!((s.get("APm").unwrap() - half).abs() < 1e-12, "{s:?}");
    assert!((s.get("APl").unwrap() - one).abs() < 1e-15, "{s:?}");
    assert_eq!(s.get("ARm").unwrap(), 0.5);
    assert!((s.get("AR100").unwrap() - 2.0 / 3.0).abs() < 1e-15);
}

/// Crowd tracks are ignored and absorb any number of detections, but their IoU is the
/// plain track IoU (not COCO's intersection over the detection's area).
#[test]
fn crowd_tracks() {
    let (h, w) = (8, 8);
    let v = video(5, 2, h, w);
    let crowd_mask = Some(rect(h, w, 0, 0, 2, 2));
    let mut crowd = gt(1, 5, 1, &[crowd_mask.clone(), crowd_mask.clone()]);
    crowd.iscrowd = true;
    let person = Some(rect(h, w, 4, 4, 6, 6));
    let normal = gt(2, 5, 1, &[person.clone(), person.clone()]);
    let inside = Some(mask(h, w, &[(0, 0)]));
    let dts = vec![
        // Two copies of the crowd region: both match it (IoU 1) and are ignored.
        track(1, 0.95, vec![crowd_mask.clone(), crowd_mask.clone()]),
        track(1, 0.94, vec![crowd_mask.clone(), crowd_mask]),
        // One pixel inside the crowd: track IoU 2/8 (COCO's crowd IoU would be 1), so a
        // false positive.
        track(1, 0.9, vec![inside.clone(), inside]),
        track(1, 0.5, vec![person.clone(), person]),
    ];
    let mut ev = VideoEvaluator::new(&cats(&[1]));
    ev.add_video(&v, &[crowd, normal], &dts).unwrap();
    let s = ev.finish().stats;
    // Ranked: ignored, ignored, FP, TP → precision 1/2 at recall 1, at every threshold.
    let p = 1.0 / (2.0 + f64::EPSILON);
    assert!((s.ap() - p).abs() < 1e-15, "{s:?}");
    assert_eq!(s.get("AR100").unwrap(), 1.0);
    assert_eq!(
        s.get("AR1").unwrap(),
        0.0,
        "the top detection per video is ignored"
    );
}

#[test]
fn max_dets_and_empty_inputs() {
    let (h, w) = (4, 4);
    let v = video(2, 1, h, w);
    let a = Some(rect(h, w, 0, 0, 2, 2));
    let b = Some(rect(h, w, 2, 2, 4, 4));
    let gts = [
        gt(1, 2, 1, std::slice::from_ref(&a)),
        gt(2, 2, 1, std::slice::from_ref(&b)),
    ];
    // The best-scored detection is wrong: AR1 = 0, AR10 = 1.
    let dts = vec![
        track(1, 0.9, vec![Some(rect(h, w, 0, 2, 1, 3))]),
        track(1, 0.8, vec![a]),
        track(1, 0.7, vec![b]),
    ];
    let mut ev = VideoEvaluator::new(&cats(&[1, 2]));
    ev.add_video(&v, &gts, &dts).unwrap();
    // A video with nothing, and category 2 without ground truth.
    ev.add_video(&video(3, 1, h, w), &[], &[]).unwrap();
    let report = ev.finish();
    assert_eq!(report.num_images, 2);
    assert_eq!(report.num_detections, 3);
    assert_eq!(report.stats.get("AR1").unwrap(), 0.0);
    assert_eq!(report.stats.get("AR10").unwrap(), 1.0);
    assert_eq!(
        report.per_class[1].ap, -1.0,
        "no ground truth for category 2"
    );
    // No video at all: every number is "not computed".
    let empty = VideoEvaluator::new(&cats(&[1])).finish();
    assert!(empty.stats.0.iter().all(|&v| v == -1.0));
}

#[test]
fn bad_inputs_are_errors() {
    let (h, w) = (4, 4);
    let v = video(9, 2, h, w);
    let a = Some(rect(h, w, 0, 0, 2, 2));
    let mut ev = VideoEvaluator::new(&cats(&[1]));
    let short = track(1, 0.5, vec![a.clone()]);
    assert!(matches!(
        ev.add_video(&v, &[], &[short]),
        Err(EvalError::FrameCount {
            expected: 2,
            got: 1,
            ..
        })
    ));
    let big = track(1, 0.5, vec![a.clone(), Some(rect(5, 4, 0, 0, 1, 1))]);
    assert!(matches!(
        ev.add_video(&v, &[], &[big]),
        Err(EvalError::MaskSize {
            frame: 1,
            got_h: 5,
            ..
        })
    ));
    let unknown = track(7, 0.5, vec![a.clone(), None]);
    let err = ev.add_video(&v, &[], &[unknown]).unwrap_err();
    assert!(
        err.to_string()
            .contains("category id(s) not in the ground truth: 7"),
        "{err}"
    );
    let nan = track(1, f64::NAN, vec![a.clone(), None]);
    assert!(matches!(
        ev.add_video(&v, &[], &[nan]),
        Err(EvalError::NonFiniteScore { .. })
    ));
    ev.add_video(&v, &[], &[]).unwrap();
    assert!(matches!(
        ev.add_video(&v, &[], &[]),
        Err(EvalError::DuplicateVideo { video_id: 9 })
    ));
}

#[test]
fn results_with_unknown_ids_name_the_source() {
    let (h, w) = (4, 4);
    let gt_set = YtvisDataset {
        videos: vec![video(1, 1, h, w)],
        categories: cats(&[1]),
        ..Default::default()
    };
    let r = |video_id, category_id| YtvisResult {
        video_id,
        category_id,
        score: 0.5,
        segmentations: vec![None],
    };
    let err = evaluate_ytvis(&gt_set, &[r(1, 1), r(4, 1), r(1, 3)], "dt.json").unwrap_err();
    assert_eq!(
        err.to_string(),
        "dt.json: 1 video id(s) not in the ground truth: 4; 1 category id(s) not in the ground truth: 3"
    );
    let err = evaluate_ytvis(
        &gt_set,
        &[
            r(1, 1),
            YtvisResult {
                segmentations: vec![None, None],
                ..r(1, 1)
            },
        ],
        "dt.json",
    )
    .unwrap_err();
    assert!(err.to_string().contains("dt.json: result 1"), "{err}");
}
