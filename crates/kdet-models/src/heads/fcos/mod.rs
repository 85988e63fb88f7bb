//! FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019,
//! arXiv:1904.01355) as mmdetection's `FCOSHead` with
//! `configs/fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py`, and the options of the
//! `…-center-normbbox-centeronreg-giou` variant as flags:
//! [`head`] (towers, `forward`, points, assignment), [`loss`] (focal / IoU / centerness),
//! [`inference`] (distance decoding, score × centerness, NMS).
//!
//! Not implemented: `dcn_on_last_conv` (deformable conv in the last tower block) of some
//! FCOS configs.

pub mod head;
pub mod inference;
pub mod loss;

pub use head::{FcosBoxLossConfig, FcosHead, FcosHeadConfig};
pub use loss::centerness_target;
