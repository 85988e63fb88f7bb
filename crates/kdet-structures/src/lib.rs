//! Core data structures of kdet: boxes with their format in the type, IoU family and NMS,
//! instance masks (bitmap / COCO RLE / polygons through hotcoco), per-image `Instances`,
//! padded `ImageBatch`es, and the YouTube-VIS file schema.
//!
//! This crate depends on burn's tensor API only (never on autodiff or training) so that
//! evaluation and data code can use it without pulling a backend choice in.

pub mod batch;
pub mod boxes;
pub mod error;
pub mod instances;
pub mod iou;
pub mod labels;
pub mod masks;
pub mod nms;
pub mod ytvis;

pub use batch::{BatchItem, ImageBatch};
pub use boxes::{BoxFormat, Boxes, Cxcywh, Xywh, Xyxy};
pub use error::StructuresError;
pub use instances::{ImageSize, Instances};
pub use labels::{LabelMap, ResultRecord, ResultsError, to_result_records};
pub use masks::{BitMask, Mask, Masks};
pub use nms::{batched_nms, nms};
