//! GFL (Li et al., "Generalized Focal Loss: Learning Qualified and Distributed Bounding
//! Boxes for Dense Object Detection", NeurIPS 2020, arXiv:2006.04388) as mmdetection's
//! `GFLHead` with `configs/gfl/gfl_r50_fpn_1x_coco.py`: [`head`] (towers, `forward`,
//! anchors, ATSS assignment, the integral), [`loss`] (QFL, DFL, GIoU), [`inference`]
//! (integral decoding, NMS).
//!
//! What distillation reads from here: the edge-distribution logits
//! (`HeadLevel::box_regression`, `[B, 4(reg_max+1), H, W]`, edge-major), [`integral`],
//! the per-positive geometry [`GflPositives`] and the ATSS statistics
//! ([`crate::assigners::atss_statistics`]) for LD's VLR.

pub mod head;
pub mod inference;
pub mod loss;

pub use head::{GflHead, GflHeadConfig, integral};
pub use inference::decode_boxes;
pub use loss::GflPositives;
