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

use burn::tensor::{Device, Tensor};

use crate::assignment::Priors;
use crate::family::{
    DenseHeadFamily, DenseHeadFamilyConfig, delegate_dense_head, shared_channels_and_strides,
};
use crate::output::{FeatureSpec, HeadLevel};

impl DenseHeadFamily for AtssHead {
    const NAME: &'static str = "atss";

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn decode_boxes(&self, levels: &[HeadLevel], priors: &Priors) -> Tensor<3> {
        inference::decode_boxes(self, levels, priors)
    }

    delegate_dense_head!(AtssHead);
}

impl DenseHeadFamilyConfig for AtssHeadConfig {
    type Head = AtssHead;

    fn init(&self, device: &Device) -> AtssHead {
        AtssHeadConfig::init(self, device)
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
