//! Data for kdet: COCO and YouTube-VIS readers with validation and clear errors, the
//! built-in synthetic generators (images and videos, seeded), transforms, burn
//! `Dataset`/`Batcher` implementations and a multi-threaded loader.

pub mod coco;
pub mod error;
pub mod image_io;
pub mod loader;
pub mod noise;
pub mod results;
pub mod stats;
pub mod synth;
pub mod transforms;
pub mod ytvis;

pub use coco::{CocoDataset, CocoOptions, ImageRecord, LabelMap, LoadReport};
pub use error::DataError;
pub use loader::{DetectionBatch, DetectionBatcher, Loader, LoaderConfig};
pub use transforms::{Normalize, Pipeline, Sample, TransformConfig};
