//! YouTube-VIS files: reading annotation and results files, and evaluating one against the
//! other.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use kdet_structures::ytvis::{YtvisAnnotation, YtvisDataset, YtvisResult, YtvisVideo};

use super::{PredictedTrack, VideoEvaluator, check_frames, frame_count, frame_rle};
use crate::error::{EvalError, unknown_ids};
use crate::report::EvalReport;

/// Reads a YouTube-VIS annotation file.
pub fn read_ytvis_ground_truth(path: &Path) -> Result<YtvisDataset, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        what: "YouTube-VIS annotation file",
        source,
    })
}

/// Reads a YouTube-VIS results file: a list of `{video_id, category_id, score,
/// segmentations: [RLE | null per frame]}`.
pub fn read_ytvis_results(path: &Path) -> Result<Vec<YtvisResult>, EvalError> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        what: "YouTube-VIS results file (a list of {video_id, category_id, score, segmentations})",
        source,
    })
}

/// Video AP of `results` over every video of `gt`. `source_name` (the results file,
/// usually) names the results in errors.
pub fn evaluate_ytvis(
    gt: &YtvisDataset,
    results: &[YtvisResult],
    source_name: &str,
) -> Result<EvalReport, EvalError> {
    let videos: HashMap<u64, &YtvisVideo> = gt.videos.iter().map(|v| (v.id, v)).collect();
    let categories: BTreeSet<u64> = gt.categories.iter().map(|c| c.id).collect();
    let unit_ids = unknown_ids(results.iter().map(|r| r.video_id), |id| {
        videos.contains_key(&id)
    });
    let category_ids = unknown_ids(results.iter().map(|r| r.category_id), |id| {
        categories.contains(&id)
    });
    if !unit_ids.is_empty() || !category_ids.is_empty() {
        return Err(EvalError::UnknownIds {
            source_name: source_name.to_string(),
            unit: "video",
            unit_ids,
            category_ids,
        });
    }
    let mut gt_by_video: HashMap<u64, Vec<YtvisAnnotation>> = HashMap::new();
    for a in &gt.annotations {
        gt_by_video.entry(a.video_id).or_default().push(a.clone());
    }
    let mut dt_by_video: HashMap<u64, Vec<PredictedTrack>> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        let video = videos[&r.video_id];
        let what = || format!("{source_name}: result {i}");
        check_frames(r.segmentations.len(), frame_count(video), video, &what)?;
        if !r.score.is_finite() {
            return Err(EvalError::NonFiniteScore {
                what: what(),
                score: r.score,
            });
        }
        let masks = r
            .segmentations
            .iter()
            .enumerate()
            .map(|(t, s)| frame_rle(s.as_ref(), video, t, &what))
            .collect::<Result<Vec<_>, _>>()?;
        dt_by_video
            .entry(r.video_id)
            .or_default()
            .push(PredictedTrack {
                category_id: r.category_id,
                score: r.score,
                masks,
            });
    }
    let mut ev = VideoEvaluator::new(&gt.categories);
    let mut ids: Vec<u64> = videos.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let gt_anns = gt_by_video.remove(&id).unwrap_or_default();
        let dts = dt_by_video.remove(&id).unwrap_or_default();
        ev.add_video(videos[&id], &gt_anns, &dts)?;
    }
    Ok(ev.finish())
}

/// Video AP of a results file against an annotation file.
pub fn evaluate_ytvis_files(gt_path: &Path, dt_path: &Path) -> Result<EvalReport, EvalError> {
    let gt = read_ytvis_ground_truth(gt_path)?;
    let results = read_ytvis_results(dt_path)?;
    evaluate_ytvis(&gt, &results, &dt_path.display().to_string())
}
