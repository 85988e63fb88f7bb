//! Contiguous class labels for COCO category ids, and predictions as COCO result records.
//!
//! COCO category ids are not contiguous (1..90 with gaps). As in detectron2 and
//! mmdetection, label `i` is the `i`-th category in ascending id order. The reader, the
//! evaluator and the results writer all use this one mapping.

use std::collections::HashMap;

use hotcoco::types::{Category, Segmentation};

use crate::instances::Instances;

/// Contiguous labels `0..K` ↔ COCO category ids (ascending) and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    category_ids: Vec<u64>,
    names: Vec<String>,
    by_id: HashMap<u64, usize>,
}

impl LabelMap {
    /// Label `i` is `category_ids[i]` (in the order given); names are hotcoco's
    /// placeholders `cat_<id>`.
    pub fn new(category_ids: Vec<u64>) -> Self {
        let names = category_ids
            .iter()
            .map(|&id| hotcoco::types::placeholder_cat_name(id))
            .collect();
        Self::build(category_ids, names)
    }

    /// From COCO categories, sorted by id; duplicate ids are an error.
    pub fn from_categories(categories: &[Category]) -> Result<Self, String> {
        let mut cats: Vec<&Category> = categories.iter().collect();
        cats.sort_by_key(|c| c.id);
        if let Some(w) = cats.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(format!("category id {} appears twice", w[0].id));
        }
        Ok(Self::build(
            cats.iter().map(|c| c.id).collect(),
            cats.iter().map(|c| c.name.clone()).collect(),
        ))
    }

    /// The categories of a loaded ground truth in ascending id order (ids are unique there).
    pub fn contiguous(gt: &hotcoco::COCO) -> Self {
        let ids = gt.get_cat_ids(&[], &[], &[]);
        let names = ids.iter().map(|&id| gt.cat_name(id)).collect();
        Self::build(ids, names)
    }

    fn build(category_ids: Vec<u64>, names: Vec<String>) -> Self {
        let by_id = category_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();
        Self {
            category_ids,
            names,
            by_id,
        }
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.category_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.category_ids.is_empty()
    }

    /// The contiguous label of a COCO category id.
    pub fn label(&self, category_id: u64) -> Option<usize> {
        self.by_id.get(&category_id).copied()
    }

    /// The COCO category id of a label.
    pub fn category_id(&self, label: usize) -> Option<u64> {
        self.category_ids.get(label).copied()
    }

    /// The category name of a label.
    pub fn name(&self, label: usize) -> Option<&str> {
        self.names.get(label).map(String::as_str)
    }

    /// Category names in label order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Category ids in label order.
    pub fn category_ids(&self) -> &[u64] {
        &self.category_ids
    }
}

/// One detection as a COCO results record (what pycocotools' `loadRes` reads).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResultRecord {
    pub image_id: u64,
    pub category_id: u64,
    /// `[x, y, w, h]` in the image's pixels.
    pub bbox: [f64; 4],
    pub score: f64,
    /// Compressed RLE, when masks were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segmentation: Option<Segmentation>,
}

/// Why predictions cannot become result records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultsError {
    #[error("predictions for image id {image_id} have no scores")]
    MissingScores { image_id: u64 },
    #[error("predictions for image id {image_id} have no masks (needed for mask results)")]
    MissingMasks { image_id: u64 },
    #[error("image id {image_id}: label {label} has no category (the label map has {num_labels})")]
    UnknownLabel {
        image_id: u64,
        label: usize,
        num_labels: usize,
    },
    #[error("image id {image_id}: {source}")]
    Mask {
        image_id: u64,
        #[source]
        source: crate::StructuresError,
    },
}

/// Converts per-image predictions (`(image_id, Instances)`, scores required, boxes in the
/// image's pixels) to COCO result records; with `with_masks` every instance needs a mask,
/// written as compressed RLE.
pub fn to_result_records(
    predictions: &[(u64, Instances)],
    labels: &LabelMap,
    with_masks: bool,
) -> Result<Vec<ResultRecord>, ResultsError> {
    let mut out = Vec::with_capacity(predictions.iter().map(|(_, p)| p.len()).sum());
    for (image_id, inst) in predictions {
        let image_id = *image_id;
        if inst.is_empty() {
            continue;
        }
        let scores = inst
            .scores()
            .ok_or(ResultsError::MissingScores { image_id })?;
        let segms: Option<Vec<Segmentation>> = if with_masks {
            let masks = inst
                .masks()
                .ok_or(ResultsError::MissingMasks { image_id })?;
            let rles = masks
                .to_rles()
                .map_err(|source| ResultsError::Mask { image_id, source })?;
            Some(
                rles.iter()
                    .map(|rle| Segmentation::CompressedRle {
                        size: [rle.h, rle.w],
                        counts: hotcoco::mask::rle_to_string(rle),
                    })
                    .collect(),
            )
        } else {
            None
        };
        for (i, (&label, b)) in inst
            .classes()
            .iter()
            .zip(inst.boxes().to_xywh().iter())
            .enumerate()
        {
            let category_id = labels
                .category_id(label)
                .ok_or(ResultsError::UnknownLabel {
                    image_id,
                    label,
                    num_labels: labels.len(),
                })?;
            out.push(ResultRecord {
                image_id,
                category_id,
                bbox: b.map(f64::from),
                score: f64::from(scores[i]),
                segmentation: segms.as_ref().map(|s| s[i].clone()),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Boxes, ImageSize, Xyxy};

    #[test]
    fn labels_follow_ascending_ids() {
        let cats = [
            Category {
                id: 90,
                name: "z".into(),
                ..Default::default()
            },
            Category {
                id: 3,
                name: "c".into(),
                ..Default::default()
            },
        ];
        let m = LabelMap::from_categories(&cats).unwrap();
        assert_eq!(m.category_ids(), &[3, 90]);
        assert_eq!(m.label(90), Some(1));
        assert_eq!(m.label(4), None);
        assert_eq!(m.name(0), Some("c"));
        let dup = [cats[0].clone(), cats[0].clone()];
        assert!(
            LabelMap::from_categories(&dup)
                .unwrap_err()
                .contains("90 appears twice")
        );
    }

    #[test]
    fn records_map_labels_and_boxes() {
        let m = LabelMap::new(vec![5, 7]);
        let inst = Instances::new(
            ImageSize::new(10, 10),
            Boxes::<Xyxy>::new(vec![[1.0, 2.0, 4.0, 6.0]]),
            vec![1],
        )
        .unwrap()
        .with_scores(vec![0.5])
        .unwrap();
        let r = to_result_records(&[(3, inst.clone())], &m, false).unwrap();
        assert_eq!(
            (r[0].image_id, r[0].category_id, r[0].bbox, r[0].score),
            (3, 7, [1.0, 2.0, 3.0, 4.0], 0.5)
        );
        assert!(matches!(
            to_result_records(&[(3, inst.clone())], &m, true),
            Err(ResultsError::MissingMasks { image_id: 3 })
        ));
        let bad = Instances::new(
            ImageSize::new(10, 10),
            Boxes::<Xyxy>::new(vec![[0.0; 4]]),
            vec![2],
        )
        .unwrap()
        .with_scores(vec![0.1])
        .unwrap();
        assert!(matches!(
            to_result_records(&[(1, bad)], &m, false),
            Err(ResultsError::UnknownLabel { label: 2, .. })
        ));
        let unscored = Instances::new(
            ImageSize::new(10, 10),
            Boxes::<Xyxy>::new(vec![[0.0; 4]]),
            vec![0],
        )
        .unwrap();
        assert!(matches!(
            to_result_records(&[(1, unscored)], &m, false),
            Err(ResultsError::MissingScores { .. })
        ));
    }
}
