//! ATSS (Zhang et al., "Bridging the Gap Between Anchor-based and Anchor-free Detection
//! via Adaptive Training Sample Selection", CVPR 2020, arXiv:1912.02424) as mmdetection's
//! `ATSSHead` with `configs/atss/atss_r50_fpn_1x_coco.py`: [`head`] (towers, `forward`,
//! anchors, assignment), [`loss`] (focal, GIoU weighted by centerness, centerness BCE),
//! [`inference`] (delta decoding, score × centerness, NMS).
//!
//! The assigner itself is [`crate::assigners::atss`] (shared with GFL).

pub mod head;
pub mod inference;
pub mod loss;

pub use head::{AtssHead, AtssHeadConfig};
