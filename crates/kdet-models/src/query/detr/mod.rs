//! DETR-lite: a DETR-style set detector (Carion et al., "End-to-End Object Detection with
//! Transformers", ECCV 2020, arXiv 2005.12872; official code `facebookresearch/detr`,
//! `models/{detr,transformer,matcher}.py`, `main.py` for the defaults).
//!
//! backbone (one level) → 1×1 `input_proj` to `d_model` → transformer encoder (self-attention,
//! 2-D sine positions on queries and keys) → decoder over `num_queries` learned query
//! embeddings (self-attention, cross-attention to the encoder memory, FFN; post-norm) with
//! one shared final LayerNorm applied to *every* layer's output → shared heads: `class_embed`
//! `Linear(d, K + 1)` (the last class "no object") and `bbox_embed`, a 3-layer MLP + sigmoid
//! giving normalised `(cx, cy, w, h)`. The split follows DETR's: the model and its forward
//! ([`head`]), the matcher and set criterion ([`loss`], on `crate::ops::matching` and
//! `crate::query::loss`), the post-processor ([`inference`]).
//!
//! **Official defaults** ([`DetrConfig::new`], `main.py`): `hidden_dim` 256, 6 encoder + 6
//! decoder layers, 8 heads, FFN 2048, dropout 0.1, 100 queries, `eos_coef` 0.1, matching costs
//! class 1 / L1 5 / GIoU 2, loss weights `loss_ce` 1 / `loss_bbox` 5 / `loss_giou` 2,
//! auxiliary losses at every decoder layer (`--aux_loss`, on by default); ResNet-50 C5 with
//! frozen BatchNorm and the stem and `layer1` frozen ([`DetrConfig::r50`]). The training
//! recipe (AdamW 1e-4, backbone 1e-5, weight decay 1e-4, gradient clipping 0.1) belongs to
//! the trainer, not to this config. [`DetrConfig::lite_128`] is the preset for kdet's
//! built-in 128×128 images, each change written beside its value.
//!
//! **Geometry and padding.** As DETR, boxes (targets and predictions) are normalised by each
//! image's *own* size before padding (`ImageBatch::resized_sizes`, DETR's `Normalize`
//! transform), not by the padded canvas: padding is invisible to the box parametrisation.
//! Padded pixels are masked out of attention instead: DETR's pixel mask resized to the
//! feature map by nearest interpolation ([`head::padding_mask`]) is the key-padding mask of
//! the encoder's self-attention and the decoder's cross-attention, and keeps padding out of
//! the sine encoding's cumulative counts. The backbone's convolutions still see the padded
//! pixels near an image's border, as in DETR. When no image of the batch is padded at the
//! feature level, no mask is built at all (the same result, less work).
//!
//! **Assignment and auxiliary losses.** [`ModelFamily::assign`] runs the Hungarian matcher
//! on the *last* decoder layer: that is the assignment the distiller shares with KD methods
//! and that the last layer's loss uses. The auxiliary layers are each matched separately
//! inside [`ModelFamily::loss`], as DETR's `SetCriterion` (`indices = self.matcher(
//! aux_outputs, targets)` per layer). Every layer's losses are normalised by the number of
//! ground-truth boxes in the batch, clamped to at least 1 (one process: no all-reduce).
//! Crowd instances are left out of matching and of that count (DETR's COCO loader drops
//! `iscrowd` annotations); their indices still refer to the image's `Instances`.
//!
//! **Taps** ([`ModelOutput`]): `queries` holds one [`QueryLayer`](crate::QueryLayer) per
//! decoder layer (embeddings after the shared final norm, class logits, boxes); `backbone`
//! the backbone's returned stages; `neck` the encoder memory as one `[B, d_model, h, w]` map
//! at the backbone level's stride (DETR's `Transformer.forward` returns it in that shape too):
//! the tap the feature KD methods read, as they read an FPN level.
//!
//! **Deviation.** The shared attention and FFN layers (`crate::ops::transformer`) apply
//! `dropout` to the attention weights only (PyTorch `nn.MultiheadAttention(dropout=...)`,
//! which DETR also sets); DETR's residual and FFN dropouts (`dropout1..3`, `dropout`, also
//! 0.1) are not in those layers.
//!
//! **What the query core will carry next** (`../shared/methods/video-semisup-weak.md`):
//! DE-DETR (§4.5) replaces the cross-attention's keys and values by features sampled around
//! each query's current box (multi-scale RoIAlign, `crate::ops::roi_align`) and DELA-DETR
//! repeats every ground truth `k` times before matching (one-to-many) with NMS at inference;
//! BoxeR (§4.7) attends to a grid sampled in a query-predicted box; Featurized Query R-CNN
//! (§4.8) and dynamic proposals (§4.9) initialise or vary the queries. Hence the decoder takes
//! its queries and memory as tensors, the matcher takes the targets as plain lists (a
//! repeated target list is a caller's choice), and every decoder layer's boxes are exposed.

pub mod head;
pub mod inference;
pub mod loss;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Device;
use kdet_structures::{ImageBatch, Instances};

use crate::assignment::Assignment;
use crate::backbone::{Backbone, BackboneConfig, BackboneNorm, ResNetConfig, SmallResNetConfig};
use crate::family::{ModelFamily, ModelOutput};
use crate::ops::matching::BoxMatcherConfig;
use crate::ops::transformer::{AttentionLayerConfig, FfnLayerConfig};
use crate::output::LossDict;

pub use head::{
    DetrDecoder, DetrDecoderLayer, DetrEncoder, DetrEncoderLayer, DetrTransformer, Mlp,
};

/// DETR's set criterion: matcher costs, no-object weight, loss weights, auxiliary losses.
#[derive(Config, Debug, PartialEq)]
pub struct DetrCriterionConfig {
    /// Matching costs (`--set_cost_class 1`, `--set_cost_bbox 5`, `--set_cost_giou 2`).
    #[config(default = "BoxMatcherConfig::new()")]
    pub matcher: BoxMatcherConfig,
    /// Weight of the no-object class in the classification loss (`--eos_coef 0.1`).
    #[config(default = 0.1)]
    pub eos_coef: f32,
    /// `weight_dict['loss_ce']` (1 in `detr.py` `build`).
    #[config(default = 1.0)]
    pub class_loss_weight: f32,
    /// `--bbox_loss_coef` (L1 on normalised `cx, cy, w, h`).
    #[config(default = 5.0)]
    pub bbox_loss_weight: f32,
    /// `--giou_loss_coef`.
    #[config(default = 2.0)]
    pub giou_loss_weight: f32,
    /// Losses at every decoder layer, each matched on its own (`--aux_loss`, default on).
    #[config(default = true)]
    pub aux_loss: bool,
}

/// A DETR-style detector.
#[derive(Config, Debug)]
pub struct DetrConfig {
    /// The backbone; its *last* returned stage feeds the transformer (DETR: ResNet C5).
    pub backbone: BackboneConfig,
    /// Object classes `K` (the class head has `K + 1` outputs).
    pub num_classes: usize,
    /// Transformer width (`--hidden_dim 256`).
    #[config(default = 256)]
    pub d_model: usize,
    /// Attention heads (`--nheads 8`).
    #[config(default = 8)]
    pub n_heads: usize,
    /// Encoder layers (`--enc_layers 6`).
    #[config(default = 6)]
    pub num_encoder_layers: usize,
    /// Decoder layers (`--dec_layers 6`).
    #[config(default = 6)]
    pub num_decoder_layers: usize,
    /// FFN hidden width (`--dim_feedforward 2048`).
    #[config(default = 2048)]
    pub dim_feedforward: usize,
    /// Attention-weight dropout (`--dropout 0.1`; see the module doc's deviation).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Learned queries, the most objects an image can yield (`--num_queries 100`).
    #[config(default = 100)]
    pub num_queries: usize,
    /// The set criterion.
    #[config(default = "DetrCriterionConfig::new()")]
    pub criterion: DetrCriterionConfig,
    /// Detections kept per image after sorting by score: COCO's `maxDets` 100 (DETR's
    /// `PostProcess` returns all of its 100 queries).
    #[config(default = 100)]
    pub max_detections: usize,
}

impl DetrConfig {
    /// The official DETR-R50: ResNet-50 C5 (stride 32, 2048 channels) with frozen BatchNorm
    /// and the stem and `layer1` frozen (`backbone.py`: `FrozenBatchNorm2d`, only
    /// `layer2..4` train), the rest [`DetrConfig::new`]'s defaults.
    pub fn r50(num_classes: usize) -> Self {
        let backbone = ResNetConfig::resnet50()
            .with_norm(BackboneNorm::FrozenBatch)
            .with_out_indices(vec![3])
            .with_frozen_stages(Some(1));
        Self::new(BackboneConfig::ResNet(backbone), num_classes)
    }

    /// DETR-lite for the built-in 128×128 images (6–118-pixel objects, up to 12 per image by
    /// default), on the student backbone of the synthetic GFL pair. Changes from DETR-R50
    /// (reasons beside each value): SmallResNet `student_128` read at C4 (stride 16) instead
    /// of ResNet-50 C5, `d_model` 64, 4 heads, FFN 256, 2 encoder + 3 decoder layers, 24
    /// queries. The criterion, matcher, dropout and post-processing are DETR's.
    ///
    /// The ResNet always builds its four stages; read at C4, `layer4` never runs, so its
    /// weights (about 0.23 M of the backbone's 0.31 M) get no gradients and stay as
    /// initialised. They cost memory, not time.
    pub fn lite_128(num_classes: usize) -> Self {
        // SmallResNet student_128 (trainable BatchNorm, trained from scratch) at C4, stride 16:
        // C5 of a 128-pixel image is a 4×4 map, too coarse to tell 6-pixel objects apart;
        // C4 gives 8×8 = 64 tokens (DETR's DC5 variant halves the C5 stride for the same
        // reason, small objects), still cheap for attention.
        let backbone = SmallResNetConfig::student_128().with_out_indices(vec![2]);
        Self::new(BackboneConfig::SmallResNet(backbone), num_classes)
            // 64 instead of 256: the width of the synthetic pair's FPN, a 2-core CPU budget.
            .with_d_model(64)
            // 4 heads of 16 channels instead of 8 of 32.
            .with_n_heads(4)
            // 4 × d_model (the usual transformer ratio) instead of 2048 = 8 × 256.
            .with_dim_feedforward(256)
            // 2 + 3 layers instead of 6 + 6: CPU budget; three decoder layers keep two
            // auxiliary losses.
            .with_num_encoder_layers(2)
            .with_num_decoder_layers(3)
            // 24 queries instead of 100: twice the generator's 12 objects at most, as DETR's
            // 100 is about 1.6× COCO's most crowded training images.
            .with_num_queries(24)
    }

    /// Checks what a config file can get wrong, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.backbone
            .validate()
            .map_err(|e| format!("model.backbone: {e}"))?;
        if self.backbone.out_specs().is_empty() {
            return Err("model.backbone returns no stage for DETR to read".into());
        }
        let checks = [
            (self.num_classes == 0, "num_classes must be at least 1"),
            (self.d_model == 0, "d_model must be at least 1"),
            (
                !self.d_model.is_multiple_of(2),
                "d_model must be even (the sine encoding has d_model / 2 channels per axis)",
            ),
            (
                self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads),
                "n_heads must divide d_model",
            ),
            (
                self.num_decoder_layers == 0,
                "num_decoder_layers must be at least 1",
            ),
            (self.num_queries == 0, "num_queries must be at least 1"),
            (
                !(0.0..1.0).contains(&self.dropout),
                "dropout must be in [0, 1)",
            ),
        ];
        match checks.iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(format!("model: {msg}")),
            None => Ok(()),
        }
    }

    /// Builds the detector (initialisation as DETR's: Xavier-uniform transformer weights,
    /// PyTorch's defaults for the projection, the heads and the query embeddings).
    ///
    /// # Panics
    /// On a config [`validate`](Self::validate) rejects.
    pub fn init(&self, device: &Device) -> Detr {
        if let Err(e) = self.validate() {
            panic!("invalid DETR config: {e}");
        }
        let in_channels = self
            .backbone
            .out_specs()
            .last()
            .expect("validate checked the backbone returns a stage")
            .channels;
        let attention =
            AttentionLayerConfig::new(self.d_model, self.n_heads).with_dropout(self.dropout);
        let ffn = FfnLayerConfig::new(self.d_model, self.dim_feedforward);
        let encoder = DetrEncoder {
            layers: (0..self.num_encoder_layers)
                .map(|_| DetrEncoderLayer {
                    self_attn: attention.init(device),
                    ffn: ffn.init(device),
                })
                .collect(),
        };
        let decoder = DetrDecoder {
            layers: (0..self.num_decoder_layers)
                .map(|_| DetrDecoderLayer {
                    self_attn: attention.init(device),
                    multihead_attn: attention.init(device),
                    ffn: ffn.init(device),
                })
                .collect(),
            norm: LayerNormConfig::new(self.d_model).init(device),
        };
        let d = self.d_model;
        Detr {
            backbone: self.backbone.init(device),
            input_proj: Conv2dConfig::new([in_channels, d], [1, 1]).init(device),
            transformer: DetrTransformer { encoder, decoder },
            query_embed: EmbeddingConfig::new(self.num_queries, d).init(device),
            class_embed: LinearConfig::new(d, self.num_classes + 1).init(device),
            bbox_embed: Mlp {
                layers: vec![
                    LinearConfig::new(d, d).init(device),
                    LinearConfig::new(d, d).init(device),
                    LinearConfig::new(d, 4).init(device),
                ],
            },
            num_classes: self.num_classes,
            criterion: self.criterion.clone(),
            max_detections: self.max_detections,
        }
    }
}

/// DETR: backbone, input projection, transformer, query embeddings and shared heads
/// (parameter names as the official state dict's where Rust allows).
#[derive(Module, Debug)]
pub struct Detr {
    pub backbone: Backbone,
    /// 1×1 conv from the backbone level's channels to `d_model`.
    pub input_proj: Conv2d,
    pub transformer: DetrTransformer,
    /// `[num_queries, d_model]`: the decoder's query positions (its input is zeros).
    pub query_embed: Embedding,
    /// `Linear(d_model, K + 1)`, shared by every decoder layer.
    pub class_embed: Linear,
    /// 3-layer MLP `d → d → d → 4` (ReLU between), then sigmoid; shared by every layer.
    pub bbox_embed: Mlp,
    #[module(skip)]
    pub num_classes: usize,
    #[module(skip)]
    pub criterion: DetrCriterionConfig,
    #[module(skip)]
    pub max_detections: usize,
}

impl Detr {
    /// The family's name.
    pub const NAME: &'static str = "detr";

    /// Learned queries `Q`.
    pub fn num_queries(&self) -> usize {
        self.query_embed.weight.dims()[0]
    }

    /// Forward + postprocess.
    pub fn predict(&self, batch: &ImageBatch) -> Vec<Instances> {
        let out = self.forward(batch);
        ModelFamily::postprocess(self, &out, batch)
    }
}

impl ModelFamily for Detr {
    fn forward(&self, batch: &ImageBatch) -> ModelOutput {
        Detr::forward(self, batch)
    }

    /// Hungarian matching of the last decoder layer (see the module doc).
    fn assign(&self, out: &ModelOutput, targets: &[Instances]) -> Assignment {
        let layer = out
            .queries
            .last()
            .expect("a DETR output has one query layer per decoder layer");
        let set = loss::SetTargets::new(targets, &out.image_sizes);
        loss::match_layer(&self.criterion.matcher, layer, &set)
    }

    fn loss(&self, out: &ModelOutput, targets: &[Instances], assignment: &Assignment) -> LossDict {
        loss::set_criterion(&self.criterion, out, targets, assignment)
    }

    fn postprocess(&self, out: &ModelOutput, batch: &ImageBatch) -> Vec<Instances> {
        let layer = out
            .queries
            .last()
            .expect("a DETR output has one query layer per decoder layer");
        inference::postprocess(layer, batch.original_sizes(), self.max_detections)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn family(&self) -> &'static str {
        Self::NAME
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::output::FeatureSpec;

    #[test]
    fn presets_validate_and_read_the_documented_level() {
        let r50 = DetrConfig::r50(91);
        r50.validate().unwrap();
        assert_eq!(
            r50.backbone.out_specs(),
            [FeatureSpec {
                channels: 2048,
                stride: 32
            }]
        );
        assert_eq!(
            (
                r50.d_model,
                r50.num_encoder_layers,
                r50.num_decoder_layers,
                r50.num_queries
            ),
            (256, 6, 6, 100)
        );
        let lite = DetrConfig::lite_128(8);
        lite.validate().unwrap();
        assert_eq!(lite.backbone.out_specs().last().unwrap().stride, 16);
        let model = lite.init(&Device::flex());
        assert_eq!(model.num_queries(), 24);
        assert_eq!(model.class_embed.weight.dims(), [64, 9]);
        assert_eq!(model.transformer.decoder.layers.len(), 3);
        assert_eq!(ModelFamily::family(&model), "detr");
    }

    #[test]
    fn invalid_settings_are_errors_naming_them() {
        let lite = DetrConfig::lite_128(8);
        let err = lite.clone().with_n_heads(3).validate().unwrap_err();
        assert!(err.contains("n_heads"), "{err}");
        let err = lite
            .clone()
            .with_num_decoder_layers(0)
            .validate()
            .unwrap_err();
        assert!(err.contains("num_decoder_layers"), "{err}");
        let err = lite.with_d_model(9).with_n_heads(3).validate().unwrap_err();
        assert!(err.contains("even"), "{err}");
    }
}
