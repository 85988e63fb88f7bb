//! RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
//! arXiv:1708.02002) as mmdetection's `RetinaHead` with
//! `configs/retinanet/retinanet_r50_fpn_1x_coco.py`: [`head`] (towers, `forward`, anchors,
//! max-IoU assignment), [`loss`] (focal + L1 on deltas), [`inference`] (delta decoding,
//! NMS).

pub mod head;
pub mod inference;
pub mod loss;

pub use head::{RetinaHead, RetinaHeadConfig};
