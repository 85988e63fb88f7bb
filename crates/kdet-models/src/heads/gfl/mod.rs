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

use burn::tensor::{Device, Tensor};

use crate::assignment::Priors;
use crate::family::{
    DenseHeadFamily, DenseHeadFamilyConfig, delegate_dense_head, shared_channels_and_strides,
};
use crate::output::{FeatureSpec, HeadLevel};

impl DenseHeadFamily for GflHead {
    const NAME: &'static str = "gfl";

    fn num_classes(&self) -> usize {
        GflHead::num_classes(self)
    }

    fn reg_max(&self) -> Option<usize> {
        Some(GflHead::reg_max(self))
    }

    fn decode_boxes(&self, levels: &[HeadLevel], priors: &Priors) -> Tensor<3> {
        inference::decode_boxes(levels, priors, GflHead::reg_max(self))
    }

    delegate_dense_head!(GflHead);
}

impl DenseHeadFamilyConfig for GflHeadConfig {
    type Head = GflHead;

    fn init(&self, device: &Device) -> GflHead {
        GflHeadConfig::init(self, device)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn strides(&self) -> Vec<usize> {
        self.anchor.strides.clone()
    }

    fn fit_to_neck(&mut self, specs: &[FeatureSpec]) {
        (self.in_channels, self.anchor.strides) = shared_channels_and_strides(specs);
    }
}
