//! The detector: backbone → FPN → dense head, with the typed taps KD needs.

use burn::module::Module;
use burn::tensor::Device;
use kdet_structures::{ImageBatch, Instances};
use serde::{Deserialize, Serialize};

use crate::assignment::{Assignment, Priors};
use crate::backbone::{Backbone, BackboneConfig};
use crate::heads::atss::{AtssHead, AtssHeadConfig};
use crate::heads::fcos::{FcosHead, FcosHeadConfig};
use crate::heads::gfl::{GflHead, GflHeadConfig};
use crate::heads::inference::TestConfig;
use crate::heads::retina::{RetinaHead, RetinaHeadConfig};
use crate::neck::{Fpn, FpnConfig};
use crate::output::{DetectorOutput, FeatureSpec, LossDict};

crate::family::dense_heads! {
    /// GFL (Li et al., NeurIPS 2020), mmdetection `GFLHead`.
    Gfl(GflHeadConfig => GflHead),
    /// ATSS (Zhang et al., CVPR 2020), mmdetection `ATSSHead`.
    Atss(AtssHeadConfig => AtssHead),
    /// FCOS (Tian et al., ICCV 2019), mmdetection `FCOSHead`.
    Fcos(FcosHeadConfig => FcosHead),
    /// RetinaNet (Lin et al., ICCV 2017), mmdetection `RetinaHead`.
    Retina(RetinaHeadConfig => RetinaHead),
}

/// A whole detector: backbone → FPN → dense head, plus its test-time settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorConfig {
    pub backbone: BackboneConfig,
    pub neck: FpnConfig,
    pub head: HeadConfig,
    pub test: TestConfig,
}

impl DetectorConfig {
    /// A detector whose head takes its input channels and level strides from the neck's
    /// outputs (the backbone's reported shapes through the neck), so no config repeats
    /// them. Config files get the same through kdet-run's defaults.
    ///
    /// # Panics
    /// On an invalid backbone config, or a neck whose levels differ in channels.
    pub fn new(
        backbone: BackboneConfig,
        neck: FpnConfig,
        mut head: HeadConfig,
        test: TestConfig,
    ) -> Self {
        head.fit_to_neck(&neck.out_specs(&backbone.out_specs()));
        Self {
            backbone,
            neck,
            head,
            test,
        }
    }

    /// What the neck outputs, level by level (channels and strides), from the backbone's
    /// reported shapes.
    pub fn neck_specs(&self) -> Vec<FeatureSpec> {
        self.neck.out_specs(&self.backbone.out_specs())
    }

    /// Builds the detector; the neck is built from the backbone's reported shapes.
    ///
    /// # Panics
    /// On an invalid backbone config (call [`DetectorConfig::validate`] where it is loaded).
    pub fn init(&self, device: &Device) -> Detector {
        let backbone = self.backbone.init(device);
        let neck = self.neck.init(&self.backbone.out_specs(), device);
        Detector {
            backbone,
            neck,
            head: self.head.init(device),
            test: self.test.clone(),
        }
    }

    /// Checks what a user can get wrong in a config file, with a message naming the part.
    pub fn validate(&self) -> Result<(), String> {
        self.backbone
            .validate()
            .map_err(|e| format!("model.backbone: {e}"))?;
        let neck_out = self.neck_specs();
        let head_in = self.head.in_channels();
        if let Some(s) = neck_out.iter().find(|s| s.channels != head_in) {
            return Err(format!(
                "model.head.in_channels is {head_in} but the neck outputs {} channels",
                s.channels
            ));
        }
        let head_strides = self.head.strides();
        let neck_strides: Vec<usize> = neck_out.iter().map(|s| s.stride).collect();
        if head_strides != neck_strides {
            return Err(format!(
                "model.head strides {head_strides:?} differ from the neck's output strides {neck_strides:?} (check neck.num_outs)"
            ));
        }
        Ok(())
    }

    /// Number of classes the head predicts.
    pub fn num_classes(&self) -> usize {
        self.head.num_classes()
    }
}

/// Backbone, neck and head of a dense detector.
#[derive(Module, Debug)]
pub struct Detector {
    pub backbone: Backbone,
    pub neck: Fpn,
    pub head: DenseHead,
    #[module(skip)]
    pub test: TestConfig,
}

impl Detector {
    /// Runs the network on a padded batch. Pure: no mode flag (BatchNorm statistics follow
    /// the device: batch statistics on an autodiff device, running ones on a plain one).
    pub fn forward(&self, batch: &ImageBatch) -> DetectorOutput {
        let backbone = self.backbone.forward(batch.images().clone());
        let neck = self.neck.forward(backbone.clone());
        let head = self.head.forward(&neck);
        DetectorOutput::dense(
            backbone,
            neck,
            head,
            batch.resized_sizes().to_vec(),
            batch.padded_size(),
        )
    }

    /// The priors of an output (a pure function of its map sizes and strides).
    pub fn priors(&self, out: &DetectorOutput) -> Priors {
        self.head.priors(&out.head)
    }

    /// Label assignment on plain numbers; `targets` are in the batch's resized pixels.
    pub fn assign(&self, out: &DetectorOutput, targets: &[Instances]) -> Assignment {
        let priors = self.priors(out);
        self.head.assign(&priors, targets)
    }

    /// The task losses.
    pub fn loss(
        &self,
        out: &DetectorOutput,
        targets: &[Instances],
        assignment: &Assignment,
    ) -> LossDict {
        self.head.loss(&out.head, targets, assignment)
    }

    /// Forward, assignment and losses in one call (what a supervised step needs).
    pub fn forward_loss(
        &self,
        batch: &ImageBatch,
        targets: &[Instances],
    ) -> (DetectorOutput, Assignment, LossDict) {
        let out = self.forward(batch);
        let assignment = self.assign(&out, targets);
        let losses = self.loss(&out, targets, &assignment);
        (out, assignment, losses)
    }

    /// Detections per image in the *original* image's pixels.
    pub fn postprocess(&self, out: &DetectorOutput, batch: &ImageBatch) -> Vec<Instances> {
        let priors = self.priors(out);
        let dets = self
            .head
            .predict(&out.head, &priors, &out.image_sizes, &self.test);
        dets.into_iter()
            .zip(batch.original_sizes())
            .map(|(d, &orig)| {
                d.resize(orig)
                    .expect("resizing instances with box-only or valid masks cannot fail")
            })
            .collect()
    }

    /// Forward + postprocess.
    pub fn predict(&self, batch: &ImageBatch) -> Vec<Instances> {
        let out = self.forward(batch);
        self.postprocess(&out, batch)
    }
}

impl crate::family::ModelFamily for Detector {
    fn forward(&self, batch: &ImageBatch) -> DetectorOutput {
        Detector::forward(self, batch)
    }

    fn assign(&self, out: &DetectorOutput, targets: &[Instances]) -> Assignment {
        Detector::assign(self, out, targets)
    }

    fn loss(
        &self,
        out: &DetectorOutput,
        targets: &[Instances],
        assignment: &Assignment,
    ) -> LossDict {
        Detector::loss(self, out, targets, assignment)
    }

    fn postprocess(&self, out: &DetectorOutput, batch: &ImageBatch) -> Vec<Instances> {
        Detector::postprocess(self, out, batch)
    }

    fn num_classes(&self) -> usize {
        self.head.num_classes()
    }

    fn family(&self) -> &'static str {
        self.head.family()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backbone::SmallResNetConfig;

    #[test]
    fn new_fits_every_head_family_to_the_neck() {
        // COCO heads expect 256 channels and P3-P7; this neck gives 24 channels, P3-P6.
        let heads = [
            HeadConfig::Gfl(GflHeadConfig::coco(8)),
            HeadConfig::Atss(AtssHeadConfig::coco(8)),
            HeadConfig::Fcos(FcosHeadConfig::coco(8)),
            HeadConfig::Retina(RetinaHeadConfig::coco(8)),
        ];
        for head in heads {
            let config = DetectorConfig::new(
                BackboneConfig::SmallResNet(SmallResNetConfig::student_128()),
                FpnConfig::gfl().with_out_channels(24).with_num_outs(4),
                head,
                TestConfig::new(),
            );
            assert_eq!(config.head.in_channels(), 24);
            assert_eq!(config.head.strides(), vec![8, 16, 32, 64]);
            config.validate().unwrap();
        }
    }
}
