//! COCO-format results files (the list of detections pycocotools' `loadRes` reads).
//!
//! Boxes are written as `[x, y, w, h]` in the original image's pixels, labels are mapped
//! back to the dataset's category ids, and masks are written as compressed RLE.

use std::path::Path;

use hotcoco::types::Segmentation;
use kdet_structures::Instances;
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::coco::LabelMap;
use crate::image_io::write_atomic;

/// One detection in a COCO results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CocoDetection {
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<Segmentation>,
}

/// Converts predictions to COCO detections.
///
/// `predictions` pairs an image id with that image's predicted `Instances` (scores
/// required; masks written when present). An unknown label or missing scores is an error.
pub fn to_coco_detections(
    predictions: &[(u64, Instances)],
    labels: &LabelMap,
) -> Result<Vec<CocoDetection>, DataError> {
    let mut out = Vec::new();
    for (image_id, inst) in predictions {
        let scores = inst.scores().ok_or_else(|| {
            DataError::invalid(
                "<results>",
                format!("predictions for image id {image_id} have no scores"),
            )
        })?;
        let segms: Option<Vec<Segmentation>> = match inst.masks() {
            Some(m) => Some(
                m.iter()
                    .map(|mask| mask.to_compressed_segmentation(m.height(), m.width()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| DataError::Structures {
                        context: format!("results for image id {image_id}"),
                        source: e,
                    })?,
            ),
            None => None,
        };
        let xywh = inst.boxes().to_xywh();
        for (i, b) in xywh.iter().enumerate() {
            let label = inst.classes()[i];
            let category_id = labels.category_id(label).ok_or_else(|| {
                DataError::invalid(
                    "<results>",
                    format!(
                        "image id {image_id}: label {label} has no category (dataset has {})",
                        labels.len()
                    ),
                )
            })?;
            out.push(CocoDetection {
                image_id: *image_id,
                category_id,
                bbox: b.map(f64::from),
                score: f64::from(scores[i]),
                segmentation: segms.as_ref().map(|s| s[i].clone()),
            });
        }
    }
    Ok(out)
}

/// Writes predictions as a COCO results JSON file (atomically).
pub fn write_coco_results(
    path: &Path,
    predictions: &[(u64, Instances)],
    labels: &LabelMap,
) -> Result<usize, DataError> {
    let dets = to_coco_detections(predictions, labels)?;
    let bytes = serde_json::to_vec(&dets).map_err(|e| DataError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)?;
    Ok(dets.len())
}
