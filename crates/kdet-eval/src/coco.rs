//! COCO box and mask AP through hotcoco, which is a port of pycocotools' `COCOeval` that
//! matches it bit for bit. This module only turns kdet's data (results files, in-memory
//! [`Instances`]) into hotcoco's, applies the mask-area convention, checks ids, and reads the
//! accumulated tensors back into an [`EvalReport`].
//!
//! Two entry shapes:
//! - whole-set: [`evaluate_results_file`], [`evaluate_results`], [`evaluate_predictions`]
//!   (pycocotools semantics: every ground-truth image is evaluated, with or without
//!   detections);
//! - streaming: [`CocoEvaluator`] matches each batch of images when its predictions exist
//!   (hotcoco's `StreamingEval`), so evaluation during training leaves only the cheap
//!   accumulation for the end. It evaluates the images it was given, as detectron2's
//!   `COCOEvaluator` does.
//!
//! # Mask area conventions (`segm` only)
//! pycocotools' `loadRes` decides a detection's `area`, which places it in an area range,
//! from the first result's keys: with a `bbox` it takes the box area `w * h`, otherwise the
//! mask's pixel count. detectron2 drops `bbox` before `loadRes`, so its mask AP uses the mask
//! area; many other tools keep it. [`SegmArea`] picks one; only APs/APm/APl can differ.

use std::path::Path;
use std::sync::Arc;

use hotcoco::params::IouType;
use hotcoco::types::Annotation;
use hotcoco::{COCO, COCOeval, EvalMode, Params, StreamingEval};
use kdet_structures::{Instances, ResultsError, to_result_records};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, unknown_ids};
use crate::report::{Accumulated, EvalKind, EvalReport, Stats};

/// Which geometry is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IouKind {
    /// Box IoU.
    #[default]
    Bbox,
    /// Mask IoU on RLEs.
    Segm,
}

/// Where a detection's `area` comes from in mask evaluation (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmArea {
    /// The mask's pixel count: results are loaded without their `bbox` (detectron2).
    #[default]
    Mask,
    /// The box's `w * h`: results keep their `bbox` and pycocotools' `loadRes` takes its box
    /// branch.
    Bbox,
}

/// How to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CocoEvalConfig {
    pub iou: IouKind,
    /// Ignored for box AP.
    pub segm_area: SegmArea,
}

impl CocoEvalConfig {
    pub fn bbox() -> Self {
        Self {
            iou: IouKind::Bbox,
            segm_area: SegmArea::Mask,
        }
    }

    pub fn segm(segm_area: SegmArea) -> Self {
        Self {
            iou: IouKind::Segm,
            segm_area,
        }
    }

    fn iou_type(&self) -> IouType {
        match self.iou {
            IouKind::Bbox => IouType::Bbox,
            IouKind::Segm => IouType::Segm,
        }
    }

    fn kind(&self) -> EvalKind {
        match self.iou {
            IouKind::Bbox => EvalKind::Bbox,
            IouKind::Segm => EvalKind::Segm,
        }
    }
}

pub use kdet_structures::LabelMap;

/// Loads a COCO instances file (ground truth).
pub fn load_ground_truth(path: &Path) -> Result<COCO, EvalError> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(EvalError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    COCO::new(path).map_err(|source| EvalError::Load {
        path: path.to_path_buf(),
        what: "COCO ground truth",
        source,
    })
}

/// Reads a COCO results file: a JSON array of `{image_id, category_id, score, bbox |
/// segmentation}` (or an object with such an array under `annotations`).
pub fn read_results(path: &Path) -> Result<Vec<Annotation>, EvalError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ResultsFile {
        List(Vec<Annotation>),
        Object { annotations: Vec<Annotation> },
    }
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parsed: ResultsFile = serde_json::from_slice(&bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        what: "COCO results file (a list of {image_id, category_id, score, bbox|segmentation})",
        source,
    })?;
    Ok(match parsed {
        ResultsFile::List(a) | ResultsFile::Object { annotations: a } => a,
    })
}

/// Checks that every result names an image and a category of `gt`, and has a finite score
/// (pycocotools needs one to rank detections).
/// `source_name` (the file, usually) goes into the error.
pub fn check_results(
    gt: &COCO,
    results: &[Annotation],
    source_name: &str,
) -> Result<(), EvalError> {
    let unit_ids = unknown_ids(results.iter().map(|a| a.image_id), |id| {
        gt.get_img(id).is_some()
    });
    let category_ids = unknown_ids(results.iter().map(|a| a.category_id), |id| {
        gt.get_cat(id).is_some()
    });
    if !unit_ids.is_empty() || !category_ids.is_empty() {
        return Err(EvalError::UnknownIds {
            source_name: source_name.to_string(),
            unit: "image",
            unit_ids,
            category_ids,
        });
    }
    for (i, a) in results.iter().enumerate() {
        let what = || format!("{source_name}: result {i} (image {})", a.image_id);
        match a.score {
            None => return Err(EvalError::MissingScore { what: what() }),
            Some(score) if !score.is_finite() => {
                return Err(EvalError::NonFiniteScore {
                    what: what(),
                    score,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Applies the mask-area convention to results about to be loaded (see [`SegmArea`]).
fn apply_segm_area(results: &mut [Annotation], config: CocoEvalConfig) {
    if config.iou == IouKind::Segm && config.segm_area == SegmArea::Mask {
        for a in results.iter_mut().filter(|a| a.segmentation.is_some()) {
            a.bbox = None;
            a.area = None;
        }
    }
}

/// Evaluates a results file against a ground-truth file; ids in the results that the ground
/// truth lacks are an error naming the file and the ids.
pub fn evaluate_results_file(
    gt_path: &Path,
    dt_path: &Path,
    config: CocoEvalConfig,
) -> Result<EvalReport, EvalError> {
    let gt = Arc::new(load_ground_truth(gt_path)?);
    let results = read_results(dt_path)?;
    check_results(&gt, &results, &dt_path.display().to_string())?;
    evaluate_results(&gt, results, config)
}

/// Evaluates COCO results (as read by [`read_results`]) over every image of `gt`.
pub fn evaluate_results(
    gt: &Arc<COCO>,
    mut results: Vec<Annotation>,
    config: CocoEvalConfig,
) -> Result<EvalReport, EvalError> {
    apply_segm_area(&mut results, config);
    let num_detections = results.len();
    let dt = gt.load_res_anns(results)?;
    let mut ev = COCOeval::new(Arc::clone(gt), dt, config.iou_type());
    ev.evaluate()?;
    finish(ev, gt, config, gt.dataset.images.len(), num_detections)
}

/// Evaluates in-memory predictions, `(image_id, instances)` with contiguous labels, over
/// every image of `gt`.
pub fn evaluate_predictions(
    gt: &Arc<COCO>,
    predictions: &[(u64, Instances)],
    labels: &LabelMap,
    config: CocoEvalConfig,
) -> Result<EvalReport, EvalError> {
    let unknown = unknown_ids(predictions.iter().map(|(id, _)| *id), |id| {
        gt.get_img(id).is_some()
    });
    if !unknown.is_empty() {
        return Err(unknown_images("predictions", unknown));
    }
    let results = predictions_to_results(predictions, labels, config)?;
    check_results(gt, &results, "predictions")?;
    evaluate_results(gt, results, config)
}

fn unknown_images(source_name: &str, unit_ids: Vec<u64>) -> EvalError {
    EvalError::UnknownIds {
        source_name: source_name.to_string(),
        unit: "image",
        unit_ids,
        category_ids: Vec::new(),
    }
}

/// COCO results for in-memory predictions: `bbox` as `[x, y, w, h]`, `score`, category ids
/// through `labels`, and for mask AP a compressed-RLE `segmentation`. The `bbox` is left
/// out for mask AP with [`SegmArea::Mask`], so the area comes from the mask.
pub fn predictions_to_results(
    predictions: &[(u64, Instances)],
    labels: &LabelMap,
    config: CocoEvalConfig,
) -> Result<Vec<Annotation>, EvalError> {
    let with_masks = config.iou == IouKind::Segm;
    let records = to_result_records(predictions, labels, with_masks).map_err(|e| match e {
        ResultsError::MissingScores { image_id } => EvalError::MissingScore {
            what: format!("predictions for image {image_id}"),
        },
        ResultsError::MissingMasks { image_id } => EvalError::MissingMasks { image_id },
        ResultsError::UnknownLabel {
            label, num_labels, ..
        } => EvalError::UnknownLabel { label, num_labels },
        ResultsError::Mask { source, .. } => EvalError::from(source),
        other => EvalError::MissingScore {
            what: other.to_string(),
        },
    })?;
    // pycocotools' loadRes sizes a segm result by its box when `bbox` is present; dropping
    // it selects the mask area (detectron2's convention).
    let keep_bbox = !(config.iou == IouKind::Segm && config.segm_area == SegmArea::Mask);
    Ok(records
        .into_iter()
        .map(|r| Annotation {
            image_id: r.image_id,
            category_id: r.category_id,
            bbox: keep_bbox.then_some(r.bbox),
            segmentation: r.segmentation,
            score: Some(r.score),
            ..Default::default()
        })
        .collect())
}

/// Incremental COCO evaluation for validation during training: call
/// [`update`](Self::update) with each batch of predictions as it is produced (the batch is
/// matched right away and only ~20 bytes per detection are kept), then
/// [`finish`](Self::finish). Exactly the numbers of a whole-set evaluation restricted to the
/// images given (an image given twice keeps its last predictions).
pub struct CocoEvaluator {
    gt: Arc<COCO>,
    labels: LabelMap,
    config: CocoEvalConfig,
    stream: StreamingEval,
    images: std::collections::BTreeSet<u64>,
    num_detections: usize,
}

impl CocoEvaluator {
    pub fn new(gt: Arc<COCO>, labels: LabelMap, config: CocoEvalConfig) -> Result<Self, EvalError> {
        let stream = StreamingEval::new(
            Params::new(config.iou_type()),
            EvalMode::Coco,
            gt.dataset.categories.clone(),
        )?;
        Ok(Self {
            gt,
            labels,
            config,
            stream,
            images: Default::default(),
            num_detections: 0,
        })
    }

    /// Matches one batch: `(image_id, predictions)` per image, every image of the batch
    /// included (an image without predictions still counts its ground truth as missed).
    pub fn update(&mut self, batch: &[(u64, Instances)]) -> Result<(), EvalError> {
        let ids: Vec<u64> = batch.iter().map(|(id, _)| *id).collect();
        let unknown = unknown_ids(ids.iter().copied(), |id| self.gt.get_img(id).is_some());
        if !unknown.is_empty() {
            return Err(unknown_images("predictions", unknown));
        }
        let images = self.gt.load_imgs(&ids).into_iter().cloned().collect();
        let ann_ids = self.gt.get_ann_ids(&ids, &[], None, None);
        let gt_anns = self.gt.load_anns(&ann_ids).into_iter().cloned().collect();
        let results = predictions_to_results(batch, &self.labels, self.config)?;
        let n = results.len();
        self.stream.update(images, gt_anns, results)?;
        self.images.extend(ids);
        self.num_detections += n;
        Ok(())
    }

    /// Accumulates and summarizes what was fed.
    pub fn finish(self) -> Result<EvalReport, EvalError> {
        let ev = self.stream.finalize();
        finish(
            ev,
            &self.gt,
            self.config,
            self.images.len(),
            self.num_detections,
        )
    }
}

/// `accumulate()` + `summarize()` on an evaluated `COCOeval`, read into a report.
fn finish(
    mut ev: COCOeval,
    gt: &COCO,
    config: CocoEvalConfig,
    num_images: usize,
    num_detections: usize,
) -> Result<EvalReport, EvalError> {
    let (stats, acc) = summarize(&mut ev)?;
    Ok(EvalReport::from_accumulated(
        config.kind(),
        num_images,
        num_detections,
        stats,
        &acc,
        |id| gt.cat_name(id),
    ))
}

/// hotcoco's 12 summary numbers and its accumulation of an evaluated `COCOeval`.
fn summarize(ev: &mut COCOeval) -> Result<(Stats, Accumulated), EvalError> {
    ev.accumulate();
    // `summarize_lines` computes and stores the stats without printing (`summarize` prints).
    let _ = ev.summarize_lines();
    let stats = match ev.stats() {
        Some(s) if s.len() == 12 => {
            let mut a = [0.0; 12];
            a.copy_from_slice(s);
            Stats(a)
        }
        _ => return Err(invalid_state("hotcoco produced no 12-number COCO summary")),
    };
    let acc = accumulated_from_hotcoco(ev)
        .ok_or_else(|| invalid_state("accumulate() left no precision tensor"))?;
    Ok((stats, acc))
}

fn invalid_state(what: &str) -> EvalError {
    EvalError::Hotcoco(hotcoco::Error::InvalidState(what.to_string()))
}

/// hotcoco's accumulated precision/recall in kdet's layout.
pub(crate) fn accumulated_from_hotcoco(ev: &COCOeval) -> Option<Accumulated> {
    let e = ev.accumulated()?;
    let p = &ev.params;
    let mut acc = Accumulated {
        iou_thresholds: p.iou_thrs.clone(),
        recall_thresholds: p.rec_thrs.clone(),
        category_ids: e.cat_ids.clone(),
        area_ranges: p
            .area_ranges
            .iter()
            .map(|a| (a.label.clone(), a.range))
            .collect(),
        max_dets: p.max_dets.clone(),
        precision: Vec::new(),
        recall: Vec::new(),
    };
    let s = e.shape;
    if acc.shape() != [s.t, s.r, s.k, s.a, s.m] {
        return None;
    }
    acc.precision = vec![-1.0; s.t * s.r * s.k * s.a * s.m];
    acc.recall = vec![-1.0; s.t * s.k * s.a * s.m];
    for t in 0..s.t {
        for k in 0..s.k {
            for a in 0..s.a {
                for m in 0..s.m {
                    let i = acc.recall_index(t, k, a, m);
                    acc.recall[i] = e.recall[e.recall_idx(t, k, a, m)];
                    for r in 0..s.r {
                        let i = acc.precision_index(t, r, k, a, m);
                        acc.precision[i] = e.precision[e.precision_idx(t, r, k, a, m)];
                    }
                }
            }
        }
    }
    Some(acc)
}

/// [`evaluate_results`] with custom area ranges, returning hotcoco's summary and its
/// accumulation; for checking other evaluators against hotcoco (e.g. video AP on one-frame
/// videos, which uses 128² / 256² area ranges).
pub fn evaluate_results_with_area_ranges(
    gt: &Arc<COCO>,
    mut results: Vec<Annotation>,
    config: CocoEvalConfig,
    area_ranges: &[(&str, [f64; 2])],
) -> Result<(Stats, Accumulated), EvalError> {
    apply_segm_area(&mut results, config);
    let dt = gt.load_res_anns(results)?;
    let mut ev = COCOeval::new(Arc::clone(gt), dt, config.iou_type());
    ev.params.area_ranges = area_ranges
        .iter()
        .map(|(label, range)| hotcoco::AreaRange {
            label: (*label).to_string(),
            range: *range,
        })
        .collect();
    ev.evaluate()?;
    summarize(&mut ev)
}
