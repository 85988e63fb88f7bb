//! COCO-format results files (the list of detections pycocotools' `loadRes` reads).
//!
//! Boxes are written as `[x, y, w, h]` in the original image's pixels, labels are mapped
//! back to the dataset's category ids, and masks (when the predictions carry them; then every image must)
//! are written as compressed RLE. The conversion is `kdet_structures::to_result_records`,
//! shared with the evaluator.

use std::path::Path;

use kdet_structures::{Instances, LabelMap, to_result_records};

use crate::DataError;
use crate::image_io::write_atomic;

/// Writes predictions as a COCO results JSON file (atomically).
pub fn write_coco_results(
    path: &Path,
    predictions: &[(u64, Instances)],
    labels: &LabelMap,
) -> Result<usize, DataError> {
    let with_masks = predictions.iter().any(|(_, p)| p.masks().is_some());
    let dets = to_result_records(predictions, labels, with_masks)
        .map_err(|e| DataError::invalid(path, e.to_string()))?;
    let bytes = serde_json::to_vec(&dets).map_err(|e| DataError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)?;
    Ok(dets.len())
}
