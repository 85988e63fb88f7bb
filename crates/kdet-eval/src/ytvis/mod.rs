//! YouTube-VIS video AP (also used for OVIS), which hotcoco does not have.
//!
//! The reference is the youtubevos fork of the COCO API (`ytvos.py`, `ytvoseval.py`; the
//! copy in mmdet 3.3.0 is `mmdet/evaluation/functional/ytvis{,eval}.py`), specified in
//! `../shared/methods/video-semisup-weak.md` §5.2. It is COCO's `COCOeval` with a video in
//! place of an image:
//! - the unit is a (video, category) pair; ground truths and detections are tracks with one
//!   mask (or none) per frame;
//! - IoU of tracks `d`, `g` = Σ_t |d_t ∩ g_t| / Σ_t |d_t ∪ g_t|: a frame where only one side
//!   has a mask adds that mask to the union only; 0 when the union is empty. Crowd tracks
//!   get no special IoU (they are still ignored and may absorb many detections);
//! - a track's area is the mean of its non-zero per-frame areas (`avg_area`): the `areas`
//!   field of a ground-truth track, the mask areas of a predicted one;
//! - area ranges all / small < 128² / medium 128²–256² / large > 256²; max 1/10/100
//!   detections per video.
//!
//! Matching is hotcoco's pycocotools greedy matcher ([`greedy_match_masked`]) and the
//! precision/recall accumulation hotcoco's ([`precision_recall_curve_of_order_into`]);
//! only the per-video evaluate step and the track IoU are new here. The summary is
//! [`Accumulated::summarize`], numpy's summation order included, so the numbers equal the
//! reference's to the last bit (checked to 1e-9 on a committed fixture).
//!
//! Deliberate differences from the reference, all on inputs it mishandles:
//! - a track whose number of frame entries differs from its video's frame count, or a mask
//!   whose size differs from the video's, is an error (the reference zips the shorter list,
//!   or merges mismatched RLEs into empty masks and prints a warning);
//! - results naming a video or category the ground truth lacks are an error (the reference
//!   asserts on videos and silently drops unknown categories);
//! - a ground-truth track without an `areas` field takes its areas from its masks (the
//!   reference raises `KeyError`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hotcoco::metrics::counts::{PrCurveScratch, precision_recall_curve_of_order_into};
use hotcoco::params::IouType;
use hotcoco::primitives::greedy::{GtMasks, coco_match_floor, greedy_match_masked};
use hotcoco::types::{Category, Rle, Segmentation};
use kdet_structures::ytvis::{YtvisAnnotation, YtvisVideo};

use crate::error::{EvalError, unknown_ids};
use crate::report::{Accumulated, EvalKind, EvalReport, pairwise_sum};

mod files;
mod iou;

pub use files::{
    evaluate_ytvis, evaluate_ytvis_files, read_ytvis_ground_truth, read_ytvis_results,
};
use iou::track_iou_with_areas;
pub use iou::{rle_intersection_area, track_iou};

/// Area-range bounds of YouTube-VIS (`ytvoseval.Params.setDetParams`): 128² and 256², with
/// `1e5²` as the open end.
pub const YTVIS_AREA_RANGES: [(&str, [f64; 2]); 4] = [
    ("all", [0.0, 1e10]),
    ("small", [0.0, 128.0 * 128.0]),
    ("medium", [128.0 * 128.0, 256.0 * 256.0]),
    ("large", [256.0 * 256.0, 1e10]),
];

/// Thresholds and limits of a video evaluation. The default is the reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoEvalParams {
    /// `np.linspace(.5, .95, 10)`, bit for bit (hotcoco's grid).
    pub iou_thresholds: Vec<f64>,
    /// `np.linspace(0, 1, 101)`.
    pub recall_thresholds: Vec<f64>,
    /// Max detections per video, ascending.
    pub max_dets: Vec<usize>,
    pub area_ranges: Vec<(String, [f64; 2])>,
}

impl Default for VideoEvalParams {
    fn default() -> Self {
        // hotcoco's default grids are numpy's `linspace` bit for bit, which pycocotools
        // and the youtubevos fork both use.
        let coco = hotcoco::Params::new(IouType::Segm);
        Self {
            iou_thresholds: coco.iou_thrs,
            recall_thresholds: coco.rec_thrs,
            max_dets: vec![1, 10, 100],
            area_ranges: YTVIS_AREA_RANGES
                .iter()
                .map(|(l, r)| ((*l).to_string(), *r))
                .collect(),
        }
    }
}

/// A predicted track of one video, as a model or a results file gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictedTrack {
    pub category_id: u64,
    pub score: f64,
    /// One entry per frame of the video; `None` where the track predicts no mask.
    pub masks: Vec<Option<Rle>>,
}

/// One video's tracks of one category, ready to match.
struct Track {
    /// Ground truth: the annotation id (a match to id 0 does not count, as in the
    /// reference, which stores matches as ids with 0 for "none").
    id: u64,
    masks: Vec<Option<Rle>>,
    /// Pixel count per frame (0 where there is no mask).
    areas: Vec<u64>,
    avg_area: f64,
    crowd: bool,
    score: f64,
}

/// Per (video, category, area range): what `accumulate()` reads, as in pycocotools'
/// `evalImgs` entries.
#[derive(Debug, Clone)]
struct Cell {
    /// Scores of the kept detections, highest first.
    scores: Vec<f64>,
    /// `[T][D]` flattened: matched to a ground truth (`dtMatches != 0`).
    matched: Vec<bool>,
    /// `[T][D]` flattened: `dtIgnore`.
    ignored: Vec<bool>,
    /// Ground truths not ignored in this area range.
    num_gt: usize,
}

/// Video AP over videos fed one at a time ([`add_video`](Self::add_video)), so a model's
/// predictions can be evaluated as each video is processed.
#[derive(Debug, Clone)]
pub struct VideoEvaluator {
    params: VideoEvalParams,
    /// The K axis: category ids, ascending.
    category_ids: Vec<u64>,
    names: HashMap<u64, String>,
    /// `(k, video_id)` → one cell per area range. Absent when the video has neither ground
    /// truth nor detections of that category (the reference's `None`).
    cells: BTreeMap<(usize, u64), Vec<Cell>>,
    videos: BTreeSet<u64>,
    num_detections: usize,
}

impl VideoEvaluator {
    /// An evaluator over `categories` (every category of the ground truth) with the
    /// reference parameters.
    pub fn new(categories: &[Category]) -> Self {
        Self::with_params(categories, VideoEvalParams::default())
    }

    pub fn with_params(categories: &[Category], params: VideoEvalParams) -> Self {
        let mut category_ids: Vec<u64> = categories.iter().map(|c| c.id).collect();
        category_ids.sort_unstable();
        category_ids.dedup();
        Self {
            params,
            category_ids,
            names: categories.iter().map(|c| (c.id, c.name.clone())).collect(),
            cells: BTreeMap::new(),
            videos: BTreeSet::new(),
            num_detections: 0,
        }
    }

    /// Matches one video: its ground-truth tracks (as in the annotation file; tracks of
    /// other videos or of unknown categories are skipped, as the reference's category
    /// filter does) and its predicted tracks. Predictions of a category the evaluator
    /// does not know are an error.
    pub fn add_video(
        &mut self,
        video: &YtvisVideo,
        gt: &[YtvisAnnotation],
        predictions: &[PredictedTrack],
    ) -> Result<(), EvalError> {
        if self.videos.contains(&video.id) {
            return Err(EvalError::DuplicateVideo { video_id: video.id });
        }
        let unknown = unknown_ids(predictions.iter().map(|p| p.category_id), |c| {
            self.category_ids.binary_search(&c).is_ok()
        });
        if !unknown.is_empty() {
            return Err(EvalError::UnknownIds {
                source_name: format!("predictions for video {}", video.id),
                unit: "video",
                unit_ids: Vec::new(),
                category_ids: unknown,
            });
        }
        let frames = frame_count(video);
        let mut gt_tracks: BTreeMap<usize, Vec<Track>> = BTreeMap::new();
        for ann in gt.iter().filter(|a| a.video_id == video.id) {
            let Ok(k) = self.category_ids.binary_search(&ann.category_id) else {
                continue;
            };
            gt_tracks
                .entry(k)
                .or_default()
                .push(gt_track(video, frames, ann)?);
        }
        let mut dt_tracks: BTreeMap<usize, Vec<Track>> = BTreeMap::new();
        for (i, p) in predictions.iter().enumerate() {
            let k = self
                .category_ids
                .binary_search(&p.category_id)
                .expect("unknown categories were rejected above");
            dt_tracks
                .entry(k)
                .or_default()
                .push(dt_track(video, frames, i, p)?);
        }
        let ks: BTreeSet<usize> = gt_tracks.keys().chain(dt_tracks.keys()).copied().collect();
        for k in ks {
            let gts = gt_tracks.remove(&k).unwrap_or_default();
            let dts = dt_tracks.remove(&k).unwrap_or_default();
            let cells = self.evaluate_video_category(gts, dts);
            self.cells.insert((k, video.id), cells);
        }
        self.videos.insert(video.id);
        self.num_detections += predictions.len();
        Ok(())
    }

    /// `evaluateVid` for every area range, from `computeIoU`'s matrix.
    fn evaluate_video_category(&self, gts: Vec<Track>, mut dts: Vec<Track>) -> Vec<Cell> {
        // Highest score first; a stable sort keeps ties in file order, as numpy's
        // mergesort on `-score` does.
        dts.sort_by(|a, b| descending(a.score, b.score));
        let max_det = self.params.max_dets.iter().copied().max().unwrap_or(100);
        dts.truncate(max_det);
        let (nd, ng) = (dts.len(), gts.len());
        let ious: Vec<f64> = dts
            .iter()
            .flat_map(|d| {
                gts.iter()
                    .map(move |g| track_iou_with_areas(&d.masks, &d.areas, &g.masks, &g.areas))
            })
            .collect();
        let floors: Vec<f64> = self
            .params
            .iou_thresholds
            .iter()
            .map(|&t| coco_match_floor(t))
            .collect();
        let nt = floors.len();
        self.params
            .area_ranges
            .iter()
            .map(|(_, [lo, hi])| {
                let outside = |area: f64| area < *lo || area > *hi;
                // Ground truths not ignored first (stable), as `np.argsort(_ignore, kind='mergesort')`.
                let gt_ignore: Vec<bool> =
                    gts.iter().map(|g| g.crowd || outside(g.avg_area)).collect();
                let mut order: Vec<usize> = (0..ng).collect();
                order.sort_by_key(|&j| gt_ignore[j]);
                let num_gt = gt_ignore.iter().filter(|&&ig| !ig).count();
                let crowd: Vec<bool> = order.iter().map(|&j| gts[j].crowd).collect();
                let iou_flat: Vec<f64> = (0..nd)
                    .flat_map(|d| order.iter().map(move |&j| (d, j)))
                    .map(|(d, j)| ious[d * ng + j])
                    .collect();
                let matches = greedy_match_masked(
                    &iou_flat,
                    nd,
                    ng,
                    num_gt,
                    GtMasks {
                        rematchable: Some(&crowd),
                        phase2_eligible: None,
                    },
                    &floors,
                );
                let mut matched = vec![false; nt * nd];
                let mut ignored = vec![false; nt * nd];
                for t in 0..nt {
                    for (d, dt) in dts.iter().enumerate() {
                        let (is_matched, mut is_ignored) = match matches.dt_gt[(t, d)] {
                            Some(j) => (gts[order[j]].id != 0, gt_ignore[order[j]]),
                            None => (false, false),
                        };
                        if !is_matched && outside(dt.avg_area) {
                            is_ignored = true;
                        }
                        matched[t * nd + d] = is_matched;
                        ignored[t * nd + d] = is_ignored;
                    }
                }
                Cell {
                    scores: dts.iter().map(|d| d.score).collect(),
                    matched,
                    ignored,
                    num_gt,
                }
            })
            .collect()
    }

    /// pycocotools' `accumulate()` over the videos added so far.
    pub fn accumulate(&self) -> Accumulated {
        let p = &self.params;
        let (nt, nr, nk, na, nm) = (
            p.iou_thresholds.len(),
            p.recall_thresholds.len(),
            self.category_ids.len(),
            p.area_ranges.len(),
            p.max_dets.len(),
        );
        let mut acc = Accumulated {
            iou_thresholds: p.iou_thresholds.clone(),
            recall_thresholds: p.recall_thresholds.clone(),
            category_ids: self.category_ids.clone(),
            area_ranges: p.area_ranges.clone(),
            max_dets: p.max_dets.clone(),
            precision: vec![-1.0; nt * nr * nk * na * nm],
            recall: vec![-1.0; nt * nk * na * nm],
        };
        let mut scratch = PrCurveScratch::default();
        let mut points = Vec::new();
        for k in 0..nk {
            // Videos ascending, as `p.vidIds` is sorted.
            let cells: Vec<&Vec<Cell>> = self
                .cells
                .range((k, 0)..=(k, u64::MAX))
                .map(|(_, c)| c)
                .collect();
            if cells.is_empty() {
                continue;
            }
            for a in 0..na {
                for (m, &max_det) in p.max_dets.iter().enumerate() {
                    let mut scores = Vec::new();
                    let mut matched: Vec<Vec<bool>> = vec![Vec::new(); nt];
                    let mut ignored: Vec<Vec<bool>> = vec![Vec::new(); nt];
                    let mut num_gt = 0;
                    for cell in cells.iter().map(|c| &c[a]) {
                        let nd = cell.scores.len();
                        let keep = nd.min(max_det);
                        scores.extend_from_slice(&cell.scores[..keep]);
                        for t in 0..nt {
                            matched[t].extend_from_slice(&cell.matched[t * nd..t * nd + keep]);
                            ignored[t].extend_from_slice(&cell.ignored[t * nd..t * nd + keep]);
                        }
                        num_gt += cell.num_gt;
                    }
                    if num_gt == 0 {
                        continue;
                    }
                    let mut order: Vec<usize> = (0..scores.len()).collect();
                    order.sort_by(|&i, &j| descending(scores[i], scores[j]));
                    for t in 0..nt {
                        let recall = precision_recall_curve_of_order_into(
                            order.iter().copied(),
                            &matched[t],
                            Some(&ignored[t]),
                            num_gt,
                            &p.recall_thresholds,
                            &mut scratch,
                            &mut points,
                        );
                        let i = acc.recall_index(t, k, a, m);
                        acc.recall[i] = recall;
                        for r in 0..nr {
                            let i = acc.precision_index(t, r, k, a, m);
                            acc.precision[i] = 0.0;
                        }
                        for &(r, precision, _) in &points {
                            let i = acc.precision_index(t, r, k, a, m);
                            acc.precision[i] = precision;
                        }
                    }
                }
            }
        }
        acc
    }

    /// Accumulates and summarizes.
    pub fn finish(&self) -> EvalReport {
        let acc = self.accumulate();
        let stats = acc.summarize();
        EvalReport::from_accumulated(
            EvalKind::Video,
            self.videos.len(),
            self.num_detections,
            stats,
            &acc,
            |id| {
                self.names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            },
        )
    }
}

/// Score order, highest first, for a stable sort: `-0.0` and `0.0` tie, as they do under
/// numpy's `argsort(-scores, kind="mergesort")`. Scores are checked finite on entry.
fn descending(a: f64, b: f64) -> std::cmp::Ordering {
    b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal)
}

/// Frames of a video: its `length`, or the number of file names when `length` is 0.
pub(super) fn frame_count(video: &YtvisVideo) -> usize {
    if video.length > 0 {
        video.length
    } else {
        video.file_names.len()
    }
}

/// The RLE of one frame entry, `None` for no mask (`null`, or an empty polygon list, which
/// the reference's `if seg:` also skips).
pub(super) fn frame_rle(
    seg: Option<&Segmentation>,
    video: &YtvisVideo,
    frame: usize,
    what: &dyn Fn() -> String,
) -> Result<Option<Rle>, EvalError> {
    let Some(seg) = seg else {
        return Ok(None);
    };
    if seg.polygons().is_some_and(|p| p.is_empty()) {
        return Ok(None);
    }
    let rle = seg.to_rle(video.height, video.width)?;
    check_size(&rle, video, frame, what)?;
    Ok(Some(rle))
}

fn check_size(
    rle: &Rle,
    video: &YtvisVideo,
    frame: usize,
    what: &dyn Fn() -> String,
) -> Result<(), EvalError> {
    if (rle.h, rle.w) != (video.height, video.width) {
        return Err(EvalError::MaskSize {
            what: what(),
            video_id: video.id,
            frame,
            expected_h: video.height,
            expected_w: video.width,
            got_h: rle.h,
            got_w: rle.w,
        });
    }
    Ok(())
}

pub(super) fn check_frames(
    len: usize,
    frames: usize,
    video: &YtvisVideo,
    what: &dyn Fn() -> String,
) -> Result<(), EvalError> {
    if len != frames {
        return Err(EvalError::FrameCount {
            what: what(),
            video_id: video.id,
            expected: frames,
            got: len,
        });
    }
    Ok(())
}

/// `np.array([a for a in areas if a]).mean()`, 0 when no frame has a non-zero area.
fn avg_area(areas: impl Iterator<Item = f64>) -> f64 {
    let kept: Vec<f64> = areas.filter(|&a| a != 0.0).collect();
    if kept.is_empty() {
        0.0
    } else {
        pairwise_sum(&kept) / kept.len() as f64
    }
}

fn gt_track(video: &YtvisVideo, frames: usize, ann: &YtvisAnnotation) -> Result<Track, EvalError> {
    let what = || format!("ground-truth track {}", ann.id);
    check_frames(ann.segmentations.len(), frames, video, &what)?;
    let masks = ann
        .segmentations
        .iter()
        .enumerate()
        .map(|(t, s)| frame_rle(s.as_ref(), video, t, &what))
        .collect::<Result<Vec<_>, _>>()?;
    let areas: Vec<u64> = masks
        .iter()
        .map(|m| m.as_ref().map_or(0, hotcoco::mask::area))
        .collect();
    let avg = if ann.areas.is_empty() {
        avg_area(areas.iter().map(|&a| a as f64))
    } else {
        // The reference averages the file's `areas`, not the masks' pixel counts.
        avg_area(ann.areas.iter().flatten().copied())
    };
    Ok(Track {
        id: ann.id,
        masks,
        areas,
        avg_area: avg,
        crowd: ann.iscrowd,
        score: 0.0,
    })
}

fn dt_track(
    video: &YtvisVideo,
    frames: usize,
    index: usize,
    p: &PredictedTrack,
) -> Result<Track, EvalError> {
    let what = || format!("predicted track {index}");
    check_frames(p.masks.len(), frames, video, &what)?;
    if !p.score.is_finite() {
        return Err(EvalError::NonFiniteScore {
            what: format!("predicted track {index} of video {}", video.id),
            score: p.score,
        });
    }
    for (t, m) in p.masks.iter().enumerate() {
        if let Some(rle) = m {
            check_size(rle, video, t, &what)?;
        }
    }
    let areas: Vec<u64> = p
        .masks
        .iter()
        .map(|m| m.as_ref().map_or(0, hotcoco::mask::area))
        .collect();
    Ok(Track {
        // Results get ids 1, 2, ... in file order in `loadRes`; only "not 0" matters.
        id: index as u64 + 1,
        masks: p.masks.clone(),
        avg_area: avg_area(areas.iter().map(|&a| a as f64)),
        areas,
        crowd: false,
        score: p.score,
    })
}

#[cfg(test)]
mod tests;
