//! YouTube-VIS (2019/2021, also OVIS) JSON schema.
//!
//! The layout follows the official YouTube-VIS release and the youtubevos fork of the
//! COCO API (`ytvos.py`): a video lists its frames' file names; an annotation is one
//! object track with one entry per frame in `segmentations`, `bboxes` and `areas`,
//! `null` where the object is not visible in that frame. Masks use the COCO
//! segmentation encodings, so they reuse `hotcoco::types::Segmentation`.

use hotcoco::types::{Category, Segmentation};
use serde::{Deserialize, Serialize};

/// A whole YouTube-VIS annotation file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct YtvisDataset {
    /// Free-form metadata (kept verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    /// License records (kept verbatim).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub licenses: Vec<serde_json::Value>,
    pub videos: Vec<YtvisVideo>,
    #[serde(default)]
    pub annotations: Vec<YtvisAnnotation>,
    pub categories: Vec<Category>,
}

/// One video: its frames in temporal order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct YtvisVideo {
    pub id: u64,
    pub width: u32,
    pub height: u32,
    /// Number of frames; equals `file_names.len()` in a valid file.
    pub length: usize,
    /// Frame paths relative to the image root, e.g. `"0043f083b5/00000.jpg"`.
    pub file_names: Vec<String>,
}

/// One object track: per-frame masks, boxes and areas (`None` = not visible).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct YtvisAnnotation {
    pub id: u64,
    pub video_id: u64,
    pub category_id: u64,
    /// One entry per frame of the video.
    pub segmentations: Vec<Option<Segmentation>>,
    /// `[x, y, w, h]` per frame.
    #[serde(default)]
    pub bboxes: Vec<Option<[f64; 4]>>,
    /// Mask area per frame.
    #[serde(default)]
    pub areas: Vec<Option<f64>>,
    #[serde(default, with = "int_bool")]
    pub iscrowd: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
}

/// One predicted track in a YouTube-VIS results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct YtvisResult {
    pub video_id: u64,
    pub category_id: u64,
    pub score: f64,
    /// One entry per frame of the video; `None` where the track predicts no mask.
    pub segmentations: Vec<Option<Segmentation>>,
}

/// `iscrowd` is written as 0/1 in the official files; accept booleans too.
mod int_bool {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(u8::from(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrBool {
            Int(u64),
            Bool(bool),
        }
        Ok(match IntOrBool::deserialize(d)? {
            IntOrBool::Int(i) => i != 0,
            IntOrBool::Bool(b) => b,
        })
    }
}
