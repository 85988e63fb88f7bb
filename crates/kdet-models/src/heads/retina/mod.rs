//! RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
//! arXiv:1708.02002) as mmdetection's `RetinaHead` with
//! `configs/retinanet/retinanet_r50_fpn_1x_coco.py`: [`head`] (towers, `forward`, anchors,
//! max-IoU assignment), [`loss`] (focal + L1 on deltas), [`inference`] (delta decoding,
//! NMS).

pub mod head;
pub mod inference;
pub mod loss;

pub use head::{RetinaHead, RetinaHeadConfig};

use burn::tensor::{Device, Tensor};

use crate::assignment::Priors;
use crate::family::{
    DenseHeadFamily, DenseHeadFamilyConfig, delegate_dense_head, shared_channels_and_strides,
};
use crate::output::{FeatureSpec, HeadLevel};

impl DenseHeadFamily for RetinaHead {
    const NAME: &'static str = "retina";

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn decode_boxes(&self, levels: &[HeadLevel], priors: &Priors) -> Tensor<3> {
        crate::heads::inference::decode_on_anchors(
            &self.config.coder,
            crate::heads::inference::flat_box_regression(levels, 4, priors),
            priors,
        )
    }

    delegate_dense_head!(RetinaHead);
}

impl DenseHeadFamilyConfig for RetinaHeadConfig {
    type Head = RetinaHead;

    fn init(&self, device: &Device) -> RetinaHead {
        RetinaHeadConfig::init(self, device)
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
