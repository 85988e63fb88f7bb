//! Evaluation for kdet: every number kdet reports comes from here, and each agrees with its
//! reference evaluator to the last digit.
//!
//! - [`coco`]: COCO box and mask AP through hotcoco (pycocotools-exact), from results files
//!   or in-memory [`kdet_structures::Instances`], whole-set or streaming
//!   ([`CocoEvaluator`]), with both mask-area conventions ([`SegmArea`]).
//! - [`ytvis`]: YouTube-VIS (and OVIS) video AP, parity with the youtubevos COCO API fork.
//! - [`mask_metrics`]: FG-ARI and mBO for unsupervised video segmentation (slotcontrast).
//! - [`report`]: the 12 summary numbers, per-class AP and PR curves shared by the above.
//!
//! This crate depends on `kdet-structures` and hotcoco only: no training or autodiff.

pub mod coco;
pub mod error;
pub mod mask_metrics;
pub mod report;
pub mod ytvis;

pub use coco::{CocoEvalConfig, CocoEvaluator, IouKind, LabelMap, SegmArea};
pub use error::EvalError;
pub use mask_metrics::{MaskMetricConfig, MaskMetrics};
pub use report::{Accumulated, ClassAp, EvalKind, EvalReport, PrCurve, STAT_NAMES, Stats};
pub use ytvis::{PredictedTrack, VideoEvalParams, VideoEvaluator};
