//! The family choice: one [`ModelConfig`] (`[model]` of an experiment, tagged by
//! `family`) and one [`Model`] (what a run trains, evaluates and distils), over every
//! model family kdet has. Adding a family = its folder + one variant here.
//!
//! `Model`'s [`Module`] implementation delegates to the variant's model *without* a path
//! component of its own, so a checkpoint of a `Model::Dense` has exactly a [`Detector`]'s
//! parameter paths (checkpoints written before the family choice existed load unchanged),
//! and the run's stored config says which variant to build before loading.

use burn::module::{
    Content, Devices, DisplaySettings, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper,
    ModuleVisitor,
};
use burn::tensor::Device;
use kdet_structures::{ImageBatch, Instances};
use serde::{Deserialize, Serialize};

use crate::assignment::Assignment;
use crate::backbone::{Backbone, BackboneConfig};
use crate::detector::{Detector, DetectorConfig};
use crate::family::{ModelFamily, ModelOutput};
use crate::output::LossDict;
use crate::query::{Detr, DetrConfig, Mask2Former, Mask2FormerConfig};

/// `[model]`: which family, and its settings (`family = "dense"` when absent in a file:
/// the experiment reader fills it in).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "family")]
pub enum ModelConfig {
    /// A dense detector: backbone → FPN → dense head (GFL, ATSS, FCOS, RetinaNet).
    #[serde(rename = "dense")]
    Dense(DetectorConfig),
    /// DETR-lite: a query-based box detector.
    #[serde(rename = "detr")]
    Detr(DetrConfig),
    /// Mask2Former-lite: a query-based instance segmenter.
    #[serde(rename = "mask2former")]
    Mask2Former(Mask2FormerConfig),
}

impl ModelConfig {
    /// Every family's `family` name, in variant order.
    pub const FAMILIES: &'static [&'static str] = &["dense", "detr", "mask2former"];

    /// The `family` name.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Dense(_) => "dense",
            Self::Detr(_) => "detr",
            Self::Mask2Former(_) => "mask2former",
        }
    }

    /// Builds the model.
    ///
    /// # Panics
    /// On a config [`validate`](Self::validate) rejects.
    pub fn init(&self, device: &Device) -> Model {
        match self {
            Self::Dense(c) => Model::Dense(c.init(device)),
            Self::Detr(c) => Model::Detr(c.init(device)),
            Self::Mask2Former(c) => Model::Mask2Former(c.init(device)),
        }
    }

    /// Checks what a config file can get wrong, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Dense(c) => c.validate(),
            Self::Detr(c) => c.validate(),
            Self::Mask2Former(c) => c.validate(),
        }
    }

    /// Object classes `K` (without a no-object class).
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Dense(c) => c.num_classes(),
            Self::Detr(c) => c.num_classes,
            Self::Mask2Former(c) => c.num_classes,
        }
    }

    /// The config key of the class count, for messages.
    pub fn num_classes_key(&self) -> &'static str {
        match self {
            Self::Dense(_) => "model.head.num_classes",
            _ => "model.num_classes",
        }
    }

    /// The backbone's config (what `pretrained` weights load into).
    pub fn backbone(&self) -> &BackboneConfig {
        match self {
            Self::Dense(c) => &c.backbone,
            Self::Detr(c) => &c.backbone,
            Self::Mask2Former(c) => &c.backbone,
        }
    }

    /// Whether the model predicts instance masks (then training data needs them, and
    /// evaluation reports mask AP besides box AP).
    pub fn predicts_masks(&self) -> bool {
        matches!(self, Self::Mask2Former(_))
    }

    /// The dense detector's config, for what only dense detectors have (weights layouts of
    /// mmdetection and torchvision, dense-head KD methods).
    pub fn dense(&self) -> Option<&DetectorConfig> {
        match self {
            Self::Dense(c) => Some(c),
            _ => None,
        }
    }

    /// The dense detector's config, to change it.
    pub fn dense_mut(&mut self) -> Option<&mut DetectorConfig> {
        match self {
            Self::Dense(c) => Some(c),
            _ => None,
        }
    }
}

impl From<DetectorConfig> for ModelConfig {
    fn from(c: DetectorConfig) -> Self {
        Self::Dense(c)
    }
}

/// A model of any family (see the module doc).
#[derive(Debug, Clone)]
pub enum Model {
    Dense(Detector),
    Detr(Detr),
    Mask2Former(Mask2Former),
}

/// `$body` with `$m` bound to the variant's model.
macro_rules! each {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            Model::Dense($m) => $body,
            Model::Detr($m) => $body,
            Model::Mask2Former($m) => $body,
        }
    };
}

/// The same, rebuilding the variant from `$body`'s model.
macro_rules! each_map {
    ($self:expr, $m:ident => $body:expr) => {
        match $self {
            Model::Dense($m) => Model::Dense($body),
            Model::Detr($m) => Model::Detr($body),
            Model::Mask2Former($m) => Model::Mask2Former($body),
        }
    };
}

impl Module for Model {
    fn collect_devices(&self, devices: Devices) -> Devices {
        each!(self, m => m.collect_devices(devices))
    }
    fn fork(self, device: &Device) -> Self {
        each_map!(self, m => m.fork(device))
    }
    fn to_device(self, device: &Device) -> Self {
        each_map!(self, m => m.to_device(device))
    }
    fn train(self) -> Self {
        each_map!(self, m => m.train())
    }
    fn valid(&self) -> Self {
        each_map!(self, m => m.valid())
    }
    fn materialize(self) -> Self {
        each_map!(self, m => m.materialize())
    }
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        each!(self, m => m.visit(visitor))
    }
    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        each_map!(self, m => m.map(mapper))
    }
}

impl ModuleDisplayDefault for Model {
    fn content(&self, content: Content) -> Option<Content> {
        each!(self, m => m.content(content))
    }
    fn num_params(&self) -> usize {
        each!(self, m => Module::num_params(m))
    }
}

impl ModuleDisplay for Model {
    fn format(&self, settings: DisplaySettings) -> String {
        each!(self, m => m.format(settings))
    }
}

impl Model {
    /// The dense detector, for what only dense detectors have.
    pub fn dense(&self) -> Option<&Detector> {
        match self {
            Self::Dense(d) => Some(d),
            _ => None,
        }
    }

    /// The backbone.
    pub fn backbone(&self) -> &Backbone {
        each!(self, m => &m.backbone)
    }

    /// Replaces the backbone (pretrained weights).
    pub fn with_backbone(self, backbone: Backbone) -> Self {
        each_map!(self, m => {
            let mut m = m;
            m.backbone = backbone;
            m
        })
    }

    /// Whether the model predicts instance masks.
    pub fn predicts_masks(&self) -> bool {
        matches!(self, Self::Mask2Former(_))
    }

    /// Forward, assignment and losses in one call (what a supervised step needs).
    pub fn forward_loss(
        &self,
        batch: &ImageBatch,
        targets: &[Instances],
    ) -> (ModelOutput, Assignment, LossDict) {
        let out = ModelFamily::forward(self, batch);
        let assignment = ModelFamily::assign(self, &out, targets);
        let losses = ModelFamily::loss(self, &out, targets, &assignment);
        (out, assignment, losses)
    }

    /// Forward + postprocess: detections in the original images' pixels.
    pub fn predict(&self, batch: &ImageBatch) -> Vec<Instances> {
        let out = ModelFamily::forward(self, batch);
        ModelFamily::postprocess(self, &out, batch)
    }
}

impl From<Detector> for Model {
    fn from(d: Detector) -> Self {
        Self::Dense(d)
    }
}

impl ModelFamily for Model {
    fn forward(&self, batch: &ImageBatch) -> ModelOutput {
        each!(self, m => ModelFamily::forward(m, batch))
    }

    fn assign(&self, out: &ModelOutput, targets: &[Instances]) -> Assignment {
        each!(self, m => ModelFamily::assign(m, out, targets))
    }

    fn loss(&self, out: &ModelOutput, targets: &[Instances], assignment: &Assignment) -> LossDict {
        each!(self, m => ModelFamily::loss(m, out, targets, assignment))
    }

    fn postprocess(&self, out: &ModelOutput, batch: &ImageBatch) -> Vec<Instances> {
        each!(self, m => ModelFamily::postprocess(m, out, batch))
    }

    fn num_classes(&self) -> usize {
        each!(self, m => ModelFamily::num_classes(m))
    }

    fn family(&self) -> &'static str {
        each!(self, m => ModelFamily::family(m))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backbone::SmallResNetConfig;
    use crate::heads::gfl::GflHeadConfig;
    use crate::heads::inference::TestConfig;
    use crate::neck::FpnConfig;
    use crate::{DetectorConfig, HeadConfig};

    fn dense() -> DetectorConfig {
        DetectorConfig::new(
            BackboneConfig::SmallResNet(SmallResNetConfig::student_128()),
            FpnConfig::gfl().with_out_channels(16).with_num_outs(3),
            HeadConfig::Gfl(GflHeadConfig::coco(3)),
            TestConfig::new(),
        )
    }

    /// A `Model::Dense` visits exactly a `Detector`'s parameter paths (checkpoints of
    /// either load into the other).
    #[test]
    fn dense_model_has_the_detectors_parameter_paths() {
        struct Paths(Vec<String>, Vec<String>);
        impl ModuleVisitor for Paths {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.1.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.1.pop();
            }
            fn visit_float<const D: usize>(&mut self, _: &burn::module::Param<burn::Tensor<D>>) {
                self.0.push(self.1.join("."));
            }
        }
        let device = Device::flex();
        let detector = dense().init(&device);
        let mut a = Paths(Vec::new(), Vec::new());
        detector.visit(&mut a);
        let mut b = Paths(Vec::new(), Vec::new());
        Model::Dense(detector).visit(&mut b);
        assert!(!a.0.is_empty());
        assert_eq!(a.0, b.0);
    }

    #[test]
    fn family_tag_round_trips_for_every_family() {
        let configs = [
            ModelConfig::Dense(dense()),
            ModelConfig::Detr(DetrConfig::lite_128(3)),
            ModelConfig::Mask2Former(Mask2FormerConfig::lite_128(3)),
        ];
        for (config, name) in configs.iter().zip(ModelConfig::FAMILIES) {
            assert_eq!(config.family(), *name);
            let json = serde_json::to_value(config).unwrap();
            assert_eq!(json["family"], *name, "{json}");
            let back: ModelConfig = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(serde_json::to_value(&back).unwrap(), json);
            assert_eq!(back.num_classes(), 3);
            back.validate().unwrap();
        }
        let err = serde_json::from_value::<ModelConfig>(serde_json::json!({"family": "yolo"}))
            .unwrap_err();
        assert!(err.to_string().contains("yolo"), "{err}");
    }
}
