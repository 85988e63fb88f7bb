//! The detector: backbone → FPN → dense head, with the typed taps KD needs.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use kdet_structures::{ImageBatch, ImageSize, Instances};
use serde::{Deserialize, Serialize};

use crate::assignment::{Assignment, Priors};
use crate::backbone::{Backbone, BackboneConfig};
use crate::heads::atss::{AtssHead, AtssHeadConfig};
use crate::heads::fcos::{FcosHead, FcosHeadConfig};
use crate::heads::gfl::{GflHead, GflHeadConfig};
use crate::heads::inference::TestConfig;
use crate::heads::retina::{RetinaHead, RetinaHeadConfig};
use crate::neck::{Fpn, FpnConfig};
use crate::output::{DetectorOutput, FeatureMap, HeadLevel, LossDict};

/// Which dense head (one `match` in [`HeadConfig::init`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HeadConfig {
    Gfl(GflHeadConfig),
    Atss(AtssHeadConfig),
    Fcos(FcosHeadConfig),
    Retina(RetinaHeadConfig),
}

/// A dense head of any family.
#[derive(Module, Debug)]
pub enum DenseHead {
    Gfl(GflHead),
    Atss(AtssHead),
    Fcos(FcosHead),
    Retina(RetinaHead),
}

macro_rules! dispatch {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            DenseHead::Gfl($h) => $e,
            DenseHead::Atss($h) => $e,
            DenseHead::Fcos($h) => $e,
            DenseHead::Retina($h) => $e,
        }
    };
}

impl HeadConfig {
    pub fn init(&self, device: &Device) -> DenseHead {
        match self {
            HeadConfig::Gfl(c) => DenseHead::Gfl(c.init(device)),
            HeadConfig::Atss(c) => DenseHead::Atss(c.init(device)),
            HeadConfig::Fcos(c) => DenseHead::Fcos(c.init(device)),
            HeadConfig::Retina(c) => DenseHead::Retina(c.init(device)),
        }
    }
}

impl DenseHead {
    pub fn forward(&self, neck: &[FeatureMap]) -> Vec<HeadLevel> {
        dispatch!(self, h => h.forward(neck))
    }
    pub fn priors(&self, levels: &[HeadLevel]) -> Priors {
        dispatch!(self, h => h.priors(levels))
    }
    pub fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment {
        dispatch!(self, h => h.assign(priors, targets))
    }
    pub fn loss(
        &self,
        levels: &[HeadLevel],
        targets: &[Instances],
        assignment: &Assignment,
    ) -> LossDict {
        dispatch!(self, h => h.loss(levels, targets, assignment))
    }
    pub fn predict(
        &self,
        levels: &[HeadLevel],
        priors: &Priors,
        sizes: &[ImageSize],
        test: &TestConfig,
    ) -> Vec<Instances> {
        dispatch!(self, h => h.predict(levels, priors, sizes, test))
    }

    /// Decoded boxes of every prior (input pixels, not clipped, detached), in prior order;
    /// what post-processing decodes before thresholds and NMS (PGD's teacher boxes).
    ///
    /// # Shapes
    /// - returns `[B, N, 4]` for `N = priors.len()`
    pub fn decode_boxes(&self, levels: &[HeadLevel], priors: &Priors) -> Tensor<3> {
        let levels: Vec<HeadLevel> = levels
            .iter()
            .map(|l| HeadLevel {
                box_regression: l.box_regression.clone().detach(),
                ..l.clone()
            })
            .collect();
        match self {
            DenseHead::Gfl(h) => {
                crate::heads::gfl::inference::decode_boxes(&levels, priors, h.reg_max())
            }
            DenseHead::Atss(h) => crate::heads::atss::inference::decode_boxes(h, &levels, priors),
            DenseHead::Fcos(_) => crate::heads::inference::decode_from_points(
                crate::heads::inference::flat_box_regression(&levels, 4, priors),
                priors,
            ),
            DenseHead::Retina(h) => crate::heads::inference::decode_on_anchors(
                &h.config.coder,
                crate::heads::inference::flat_box_regression(&levels, 4, priors),
                priors,
            ),
        }
    }

    /// Number of object classes (`K`).
    pub fn num_classes(&self) -> usize {
        match self {
            DenseHead::Gfl(h) => h.num_classes(),
            DenseHead::Atss(h) => h.config.num_classes,
            DenseHead::Fcos(h) => h.config.num_classes,
            DenseHead::Retina(h) => h.config.num_classes,
        }
    }

    /// GFL's `reg_max` (bins − 1 of the box-edge distributions); `None` for the families
    /// that regress 4 numbers.
    pub fn reg_max(&self) -> Option<usize> {
        match self {
            DenseHead::Gfl(h) => Some(h.reg_max()),
            _ => None,
        }
    }

    /// The family's name as in configs (`gfl`, `atss`, `fcos`, `retina`).
    pub fn family(&self) -> &'static str {
        match self {
            DenseHead::Gfl(_) => "gfl",
            DenseHead::Atss(_) => "atss",
            DenseHead::Fcos(_) => "fcos",
            DenseHead::Retina(_) => "retina",
        }
    }
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
        let neck_out = self.neck.out_specs(&self.backbone.out_specs());
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

impl HeadConfig {
    /// Input channels of the head (must equal the neck's output channels).
    pub fn in_channels(&self) -> usize {
        match self {
            HeadConfig::Gfl(c) => c.in_channels,
            HeadConfig::Atss(c) => c.in_channels,
            HeadConfig::Fcos(c) => c.in_channels,
            HeadConfig::Retina(c) => c.in_channels,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            HeadConfig::Gfl(c) => c.num_classes,
            HeadConfig::Atss(c) => c.num_classes,
            HeadConfig::Fcos(c) => c.num_classes,
            HeadConfig::Retina(c) => c.num_classes,
        }
    }

    /// Strides of the levels the head expects, fine to coarse.
    pub fn strides(&self) -> Vec<usize> {
        match self {
            HeadConfig::Gfl(c) => c.anchor.strides.clone(),
            HeadConfig::Atss(c) => c.anchor.strides.clone(),
            HeadConfig::Fcos(c) => c.strides.clone(),
            HeadConfig::Retina(c) => c.anchor.strides.clone(),
        }
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
        DetectorOutput {
            backbone,
            neck,
            head,
            image_sizes: batch.resized_sizes().to_vec(),
            padded_size: batch.padded_size(),
        }
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
