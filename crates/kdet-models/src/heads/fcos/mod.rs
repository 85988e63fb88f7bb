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

use burn::tensor::{Device, Tensor};

use crate::assignment::Priors;
use crate::family::{
    DenseHeadFamily, DenseHeadFamilyConfig, delegate_dense_head, shared_channels_and_strides,
};
use crate::output::{FeatureSpec, HeadLevel};

impl DenseHeadFamily for FcosHead {
    const NAME: &'static str = "fcos";

    fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    fn decode_boxes(&self, levels: &[HeadLevel], priors: &Priors) -> Tensor<3> {
        crate::heads::inference::decode_from_points(
            crate::heads::inference::flat_box_regression(levels, 4, priors),
            priors,
        )
    }

    delegate_dense_head!(FcosHead);
}

impl DenseHeadFamilyConfig for FcosHeadConfig {
    type Head = FcosHead;

    fn init(&self, device: &Device) -> FcosHead {
        FcosHeadConfig::init(self, device)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn in_channels(&self) -> usize {
        self.in_channels
    }

    fn strides(&self) -> Vec<usize> {
        self.strides.clone()
    }

    fn fit_to_neck(&mut self, specs: &[FeatureSpec]) {
        (self.in_channels, self.strides) = shared_channels_and_strides(specs);
    }
}
