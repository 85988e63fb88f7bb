//! Errors of the evaluators. Every variant names the file, image, video or field at fault.

use std::fmt;
use std::path::PathBuf;

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not the JSON it should be.
    #[error("{} is not a valid {what}", path.display())]
    Json {
        path: PathBuf,
        /// What the file should have held, e.g. "COCO results file".
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// hotcoco could not load a file (unreadable JSON, a malformed record).
    #[error("cannot load {} as {what}", path.display())]
    Load {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: hotcoco::Error,
    },
    /// Results name images (videos) or categories that the ground truth does not have.
    /// pycocotools only warns here and scores such detections as false positives (or drops
    /// them); that almost always means the wrong split or an off-by-one label map, so it is
    /// an error.
    #[error("{source_name}: {}", unknown_ids_message(.unit, .unit_ids, .category_ids))]
    UnknownIds {
        /// The results file, or a description of in-memory predictions.
        source_name: String,
        /// "image" or "video".
        unit: &'static str,
        /// Image (video) ids not in the ground truth, sorted, without duplicates.
        unit_ids: Vec<u64>,
        /// Category ids not in the ground truth, sorted, without duplicates.
        category_ids: Vec<u64>,
    },
    /// A contiguous class label has no entry in the label map.
    #[error("class label {label} has no category id (the label map has {num_labels} labels)")]
    UnknownLabel { label: usize, num_labels: usize },
    /// Detections need scores to be ranked.
    #[error("{what} has no score")]
    MissingScore { what: String },
    /// A score is NaN or infinite.
    #[error("{what} has a non-finite score ({score})")]
    NonFiniteScore { what: String, score: f64 },
    /// Mask AP was asked for but predictions carry no masks.
    #[error("segm evaluation needs masks, but the predictions for image {image_id} have none")]
    MissingMasks { image_id: u64 },
    /// A track does not have one entry per frame of its video.
    #[error(
        "{what} in video {video_id} has {got} frame entries but the video has {expected} frames"
    )]
    FrameCount {
        what: String,
        video_id: u64,
        expected: usize,
        got: usize,
    },
    /// A mask's canvas differs from its video's frame size.
    #[error(
        "{what} in video {video_id}, frame {frame}: mask is {got_h}x{got_w} but the video is {expected_h}x{expected_w}"
    )]
    MaskSize {
        what: String,
        video_id: u64,
        frame: usize,
        expected_h: u32,
        expected_w: u32,
        got_h: u32,
        got_w: u32,
    },
    /// The same video was given twice to a video evaluator.
    #[error("video {video_id} was already evaluated")]
    DuplicateVideo { video_id: u64 },
    /// Inputs of a mask metric (FG-ARI, mBO) do not fit together.
    #[error("mask metric input: {0}")]
    MaskMetric(String),
    /// A structure (instances, masks) could not be converted.
    #[error(transparent)]
    Structures(#[from] kdet_structures::StructuresError),
    /// hotcoco rejected the data (unreadable ground truth, a malformed RLE, ...).
    #[error(transparent)]
    Hotcoco(#[from] hotcoco::Error),
}

/// At most this many ids are printed per list; the rest are counted.
const MAX_IDS_SHOWN: usize = 20;

/// Writes `ids` as `1, 2, 3` (or `1, 2, ... and 40 more`).
pub(crate) struct IdList<'a>(pub &'a [u64]);

impl fmt::Display for IdList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, id) in self.0.iter().take(MAX_IDS_SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{id}")?;
        }
        if self.0.len() > MAX_IDS_SHOWN {
            write!(f, ", ... and {} more", self.0.len() - MAX_IDS_SHOWN)?;
        }
        Ok(())
    }
}

fn unknown_ids_message(unit: &str, units: &[u64], categories: &[u64]) -> String {
    let mut parts = Vec::new();
    if !units.is_empty() {
        parts.push(format!(
            "{} {unit} id(s) not in the ground truth: {}",
            units.len(),
            IdList(units)
        ));
    }
    if !categories.is_empty() {
        parts.push(format!(
            "{} category id(s) not in the ground truth: {}",
            categories.len(),
            IdList(categories)
        ));
    }
    parts.join("; ")
}

/// The sorted, deduplicated ids of `ids` for which `known` is false.
pub(crate) fn unknown_ids(ids: impl Iterator<Item = u64>, known: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut out: Vec<u64> = ids.filter(|&id| !known(id)).collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_message_names_source_and_ids() {
        let e = EvalError::UnknownIds {
            source_name: "dets.json".into(),
            unit: "image",
            unit_ids: vec![3, 9],
            category_ids: (1..=25).collect(),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("dets.json: 2 image id(s) not in the ground truth: 3, 9; "),
            "{msg}"
        );
        assert!(msg.contains("25 category id(s)"), "{msg}");
        assert!(msg.ends_with("19, 20, ... and 5 more"), "{msg}");
        let only_cats = EvalError::UnknownIds {
            source_name: "x".into(),
            unit: "video",
            unit_ids: vec![],
            category_ids: vec![7],
        };
        assert_eq!(
            only_cats.to_string(),
            "x: 1 category id(s) not in the ground truth: 7"
        );
    }

    #[test]
    fn unknown_ids_sorted_and_deduplicated() {
        let known = [1u64, 2, 3];
        let got = unknown_ids([5u64, 1, 5, 4, 2].into_iter(), |id| known.contains(&id));
        assert_eq!(got, vec![4, 5]);
    }
}
