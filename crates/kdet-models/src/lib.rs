//! Models of kdet, teacher and student alike: backbones that report their
//! [`FeatureSpec`]s, the FPN neck, and the dense head families (GFL, FCOS, RetinaNet,
//! ATSS), each as `head.rs` (modules, forward) / `loss.rs` (targets, losses) /
//! `inference.rs` (decode, NMS). A [`Detector`] ties them together.
//! [`weights`] imports PyTorch / SafeTensors state dicts (torchvision, deep-sort) into the
//! backbones, with one remap table per source.
//!
//! Contracts (see `../shared/ARCHITECTURE.md`):
//! - `Detector::forward(&ImageBatch) -> DetectorOutput` is pure; the output has a typed
//!   field for every tap a KD method needs (backbone stages, neck levels, head towers,
//!   raw per-level head maps).
//! - `Detector::assign` runs on plain numbers (no gradients) and returns an
//!   [`Assignment`] shared by the task loss and the KD losses.
//! - `Detector::loss` returns a [`LossDict`]; `Detector::postprocess` returns
//!   `Instances` in original-image pixels.

pub mod assigners;
pub mod assignment;
pub mod backbone;
pub mod coders;
pub mod detector;
pub mod family;
pub mod heads;
pub mod layers;
pub mod losses;
pub mod model;
pub mod neck;
pub mod ops;
pub mod output;
pub mod priors;
pub mod query;
pub mod weights;

pub use assignment::{Assignment, ImageAssignment, Priors};
pub use detector::{DenseHead, Detector, DetectorConfig, HeadConfig};
pub use family::{DenseHeadFamily, DenseHeadFamilyConfig, ModelFamily, ModelOutput};
pub use model::{Model, ModelConfig};
pub use output::{
    DetectorOutput, FeatureMap, FeatureSpec, HeadLevel, LossDict, LossKey, LossTerm, QueryLayer,
    RoiOutput, SlotOutput,
};
