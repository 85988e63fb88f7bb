//! Mask2Former-lite: a Mask2Former-style instance segmenter (Cheng et al., "Masked-attention
//! Mask Transformer for Universal Image Segmentation", CVPR 2022, arXiv 2112.01527; official
//! code `facebookresearch/Mask2Former`: `modeling/transformer_decoder/
//! mask2former_transformer_decoder.py`, `modeling/pixel_decoder/{msdeformattn,fpn}.py`,
//! `modeling/{criterion,matcher}.py`, `maskformer_model.py`; settings in
//! `../shared/methods/video-semisup-weak.md` §3.2).
//!
//! backbone (every stage, strides 4–32) → **pixel decoder** ([`pixel_decoder`]: the
//! official default `MSDeformAttnPixelDecoder`, multi-scale deformable self-attention over
//! the three coarsest stages then an FPN step down to the finest; or the FPN-only
//! `BasePixelDecoder`), giving the per-pixel embeddings at the finest stride and the three
//! coarsest outputs as the decoder's multi-scale memory → **masked-attention decoder**
//! over `num_queries` learned query features (`query_feat`) with learned positional
//! embeddings (`query_embed`): layer `i` attends to level `i mod 3` (round-robin from the
//! coarsest), masked cross-attention → self-attention → FFN (post-norm), with a level
//! embedding added to each level's memory and the 2-D sine encoding as key positions. A
//! **prediction head** runs before the first layer and after every layer: the shared
//! `decoder_norm`, `class_embed` (`K + 1` logits, the last "no object") and `mask_embed`
//! (3-layer MLP) whose output is dotted with the per-pixel embeddings into mask logits. The
//! next layer's attention mask is that mask bilinearly resized to the next level's size,
//! hidden where `sigmoid < 0.5`, a query hidden everywhere attending everywhere
//! (`crate::ops::transformer::masked_attention_mask`), detached.
//!
//! The split follows the official one: model and forward ([`head`], [`pixel_decoder`]),
//! matcher and set criterion ([`loss`]), instance inference ([`inference`]).
//!
//! **Official defaults** ([`Mask2FormerConfig::new`], `Base-COCO-InstanceSegmentation.yaml`
//! and `maskformer2_R50_bs16_50ep.yaml`): hidden 256, 100 queries, 9 decoder layers
//! (`DEC_LAYERS: 10` counts the prediction on the learnable queries), 8 heads, FFN 2048,
//! dropout 0, post-norm, pixel decoder `MSDeformAttnPixelDecoder` (6 encoder layers, 8
//! heads, 4 points, FFN 1024) with `CONVS_DIM` = `MASK_DIM` = 256 and GN(32), 3 feature
//! levels; criterion: class weight 2, mask (sigmoid CE) 5, dice 5, no-object 0.1,
//! the same weights as matching costs, 12544 points, oversample 3, importance 0.75, deep
//! supervision; inference: top 100 (query, class) pairs per image.
//! [`Mask2FormerConfig::lite_128`] is the preset for kdet's 128×128 images, each change
//! beside its value. The training recipe (AdamW 1e-4, weight decay 0.05, backbone × 0.1,
//! clipping 0.01, poly schedule) belongs to the trainer.
//!
//! **Geometry and padding.** As the official model, mask logits live on the stride-4 grid
//! of the *padded* batch, target masks are zero-padded to the padded canvas
//! (`prepare_targets`), and points are sampled in `[0, 1]²` of that canvas for both. The
//! pixel decoder and the decoder see no padding mask (the official all-false `masks` of
//! the deformable encoder, `pe_layer(x, None)` and no key mask in the decoder): padded
//! pixels are background to be learnt. Inference upsamples to the padded canvas, crops each
//! image and resizes it to its original size (`sem_seg_postprocess`).
//!
//! **Assignment and auxiliary losses.** [`ModelFamily::assign`] matches the last
//! prediction (shared with KD); every earlier prediction, including the one on the
//! learnable queries before the first layer, is matched on its own inside
//! [`ModelFamily::loss`], as the official `SetCriterion`. The matcher samples
//! `matcher.num_points` uniform points per image (the same for predictions and targets);
//! the mask losses use importance-sampled points of each matched prediction. Losses are
//! normalised by the batch's number of non-crowd objects, at least 1 (the official COCO
//! mapper drops crowd annotations; one process: no all-reduce).
//!
//! **Taps** ([`ModelOutput`]): `queries` holds `num_decoder_layers + 1`
//! [`QueryLayer`](crate::QueryLayer)s
//! (the learnable queries' prediction first, the last layer's last): normed embeddings,
//! class logits, mask logits `[B, Q, H/4, W/4]`, no boxes; `pixel_embeddings` the
//! `[B, mask_dim, H/4, W/4]` per-pixel embeddings (stride of the finest backbone level);
//! `neck` the pixel decoder's per-level outputs, fine to coarse; `backbone` the stages.
//!
//! **Deviations from the official model.**
//! - None in the network or the criterion that we know of: the deformable pixel decoder,
//!   the decoder and the set criterion follow the official code (the FPN-only pixel decoder
//!   is the official `BasePixelDecoder` option). Random draws (points) come from burn's
//!   generator, so values match the official code in distribution, not draw for draw.
//! - Inference keeps the best `test_topk_per_image` (query, class) pairs sorted by their
//!   final score (the official `topk(sorted=False)` order is arbitrary), and boxes are the
//!   masks' bounding boxes (the official code leaves them zero, boxes from masks being its
//!   commented-out option).
//! - Target masks without an instance mask are an error, not boxes filled in.

pub mod head;
pub mod inference;
pub mod loss;
pub mod pixel_decoder;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2dConfig;
use burn::nn::{EmbeddingConfig, Initializer, LayerNormConfig, LinearConfig};
use burn::tensor::{Device, Tensor};
use kdet_structures::{ImageBatch, Instances};

use crate::assignment::Assignment;
use crate::backbone::{Backbone, BackboneConfig, BackboneNorm, ResNetConfig, SmallResNetConfig};
use crate::family::{ModelFamily, ModelOutput};
use crate::ops::matching::MaskMatcherConfig;
use crate::ops::sample::UncertainPointsConfig;
use crate::ops::transformer::MaskedDecoderLayerConfig;
use crate::output::{LossDict, QueryLayer};
use crate::query::detr::Mlp;

pub use head::MaskedTransformerDecoder;
pub use pixel_decoder::{
    MsDeformAttnEncoderConfig, PixelDecoder, PixelDecoderConfig, PixelDecoderWidths,
};

/// Mask2Former's set criterion: matcher, no-object weight, loss weights, point sampling.
#[derive(Config, Debug, PartialEq)]
pub struct Mask2FormerCriterionConfig {
    /// Matching costs and points (`CLASS_WEIGHT 2`, `MASK_WEIGHT 5`, `DICE_WEIGHT 5`,
    /// `TRAIN_NUM_POINTS 12544`: the matcher uses the loss weights as costs).
    #[config(default = "MaskMatcherConfig::new()")]
    pub matcher: MaskMatcherConfig,
    /// Weight of the no-object class in the class loss (`NO_OBJECT_WEIGHT 0.1`).
    #[config(default = 0.1)]
    pub eos_coef: f32,
    /// `loss_ce` weight (`CLASS_WEIGHT 2.0`).
    #[config(default = 2.0)]
    pub class_loss_weight: f32,
    /// `loss_mask` weight, sigmoid cross-entropy on points (`MASK_WEIGHT 5.0`).
    #[config(default = 5.0)]
    pub mask_loss_weight: f32,
    /// `loss_dice` weight (`DICE_WEIGHT 5.0`).
    #[config(default = 5.0)]
    pub dice_loss_weight: f32,
    /// Points of the mask losses (`TRAIN_NUM_POINTS 12544`, `OVERSAMPLE_RATIO 3.0`,
    /// `IMPORTANCE_SAMPLE_RATIO 0.75`).
    #[config(default = "UncertainPointsConfig::new()")]
    pub points: UncertainPointsConfig,
    /// Losses on every prediction, each matched on its own (`DEEP_SUPERVISION True`).
    #[config(default = true)]
    pub deep_supervision: bool,
}

impl Mask2FormerCriterionConfig {
    /// The criterion with `num_points` points for both the matcher and the losses.
    pub fn with_num_points(self, num_points: usize) -> Self {
        Self {
            matcher: self.matcher.with_num_points(num_points),
            points: self.points.with_num_points(num_points),
            ..self
        }
    }
}

/// A Mask2Former-style instance segmenter.
#[derive(Config, Debug)]
pub struct Mask2FormerConfig {
    /// The backbone; every returned stage feeds the pixel decoder, the finest gives the
    /// mask resolution (official: ResNet res2–res5, strides 4–32).
    pub backbone: BackboneConfig,
    /// Object classes `K` (the class head has `K + 1` outputs).
    pub num_classes: usize,
    /// Which pixel decoder (`SEM_SEG_HEAD.PIXEL_DECODER_NAME "MSDeformAttnPixelDecoder"`, 6
    /// encoder layers).
    #[config(default = "PixelDecoderConfig::MsDeformAttn(MsDeformAttnEncoderConfig::new())")]
    pub pixel_decoder: PixelDecoderConfig,
    /// Pixel decoder width (`SEM_SEG_HEAD.CONVS_DIM 256`).
    #[config(default = 256)]
    pub conv_dim: usize,
    /// Per-pixel embedding width (`SEM_SEG_HEAD.MASK_DIM 256`).
    #[config(default = 256)]
    pub mask_dim: usize,
    /// GroupNorm groups of the pixel decoder (`SEM_SEG_HEAD.NORM "GN"`: 32 groups).
    #[config(default = 32)]
    pub norm_groups: usize,
    /// Decoder width (`MASK_FORMER.HIDDEN_DIM 256`).
    #[config(default = 256)]
    pub hidden_dim: usize,
    /// Attention heads (`MASK_FORMER.NHEADS 8`).
    #[config(default = 8)]
    pub n_heads: usize,
    /// FFN hidden width (`MASK_FORMER.DIM_FEEDFORWARD 2048`).
    #[config(default = 2048)]
    pub dim_feedforward: usize,
    /// Decoder layers (`MASK_FORMER.DEC_LAYERS 10`, minus the prediction on the learnable
    /// queries: 9).
    #[config(default = 9)]
    pub num_decoder_layers: usize,
    /// Learned queries (`MASK_FORMER.NUM_OBJECT_QUERIES 100`).
    #[config(default = 100)]
    pub num_queries: usize,
    /// Pixel-decoder levels the decoder cycles over, coarsest first (official 3: res5,
    /// res4, res3).
    #[config(default = 3)]
    pub num_feature_levels: usize,
    /// The set criterion.
    #[config(default = "Mask2FormerCriterionConfig::new()")]
    pub criterion: Mask2FormerCriterionConfig,
    /// (query, class) pairs kept per image (`TEST.DETECTIONS_PER_IMAGE 100`).
    #[config(default = 100)]
    pub test_topk_per_image: usize,
}

impl Mask2FormerConfig {
    /// The official Mask2Former-R50 (COCO instance): ResNet-50 res2–res5 with detectron2's
    /// default frozen BatchNorm and nothing else frozen (`FREEZE_AT: 0`), the rest
    /// [`Mask2FormerConfig::new`]'s defaults.
    pub fn r50(num_classes: usize) -> Self {
        let backbone = ResNetConfig::resnet50()
            .with_norm(BackboneNorm::FrozenBatch)
            .with_out_indices(vec![0, 1, 2, 3])
            .with_frozen_stages(None);
        Self::new(BackboneConfig::ResNet(backbone), num_classes)
    }

    /// Mask2Former-lite for the built-in 128×128 images (6–118-pixel objects, up to 12 per
    /// image), on the student backbone of the synthetic GFL pair. Changes from
    /// Mask2Former-R50, with reasons:
    pub fn lite_128(num_classes: usize) -> Self {
        // SmallResNet student_128 (0.31 M parameters, trainable BatchNorm, from scratch)
        // instead of ResNet-50, read at all four stages as the official res2-res5: masks at
        // stride 4 (32×32 for a 128-pixel image), memory levels 4×4, 8×8 and 16×16.
        let backbone = SmallResNetConfig::student_128().with_out_indices(vec![0, 1, 2, 3]);
        Self::new(BackboneConfig::SmallResNet(backbone), num_classes)
            // 64 instead of 256 for the pixel decoder, the masks and the decoder: the
            // synthetic pair's FPN width, a 2-core CPU budget. GN keeps 32 groups (2
            // channels each; 32 divides 64).
            .with_conv_dim(64)
            .with_mask_dim(64)
            .with_hidden_dim(64)
            // 4 heads of 16 channels instead of 8 of 32.
            .with_n_heads(4)
            // 4 × hidden (the usual ratio) instead of 2048 = 8 × 256.
            .with_dim_feedforward(256)
            // 3 layers instead of 9: one round over the 3 levels (4 supervised
            // predictions with the learnable queries'), CPU budget.
            .with_num_decoder_layers(3)
            // 24 queries instead of 100: twice the generator's 12 objects at most (DETR-lite
            // has the same reason).
            .with_num_queries(24)
            // The deformable pixel decoder with 2 encoder layers of 4 heads and FFN 256
            // instead of 6 of 8 heads and FFN 1024: the same widths as the decoder's, CPU
            // budget. 4 sampling points per head and level stay.
            .with_pixel_decoder(PixelDecoderConfig::MsDeformAttn(
                MsDeformAttnEncoderConfig::new()
                    .with_num_layers(2)
                    .with_n_heads(4)
                    .with_dim_feedforward(256),
            ))
            // 56² = 3136 points instead of 112² = 12544: the mask logits are a 32×32 map
            // (1024 cells), so 3 points per cell already sample every cell several times
            // (the official 12544 is ~19 % of a 1024-pixel crop's 256² cells), while a
            // 6-pixel object (0.2 % of the image) still gets ~7 of the matcher's uniform
            // points. Oversampling 3 and importance 0.75 stay.
            .with_criterion(Mask2FormerCriterionConfig::new().with_num_points(3136))
    }

    /// Checks what a config file can get wrong, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.backbone
            .validate()
            .map_err(|e| format!("model.backbone: {e}"))?;
        let levels = self.backbone.out_specs().len();
        let checks = [
            (
                levels < self.num_feature_levels + 1,
                "the backbone must return at least num_feature_levels + 1 stages (the finest gives the masks)",
            ),
            (
                self.num_feature_levels == 0,
                "num_feature_levels must be at least 1",
            ),
            (self.num_classes == 0, "num_classes must be at least 1"),
            (
                self.hidden_dim == 0 || !self.hidden_dim.is_multiple_of(2),
                "hidden_dim must be even and positive (the sine encoding has hidden_dim / 2 channels per axis)",
            ),
            (
                self.n_heads == 0 || !self.hidden_dim.is_multiple_of(self.n_heads),
                "n_heads must divide hidden_dim",
            ),
            (
                self.norm_groups == 0 || !self.conv_dim.is_multiple_of(self.norm_groups),
                "norm_groups must divide conv_dim",
            ),
            (self.mask_dim == 0, "mask_dim must be at least 1"),
            (self.num_queries == 0, "num_queries must be at least 1"),
            (
                self.criterion.matcher.num_points == 0 || self.criterion.points.num_points == 0,
                "criterion num_points must be at least 1",
            ),
            (
                self.criterion.points.oversample_ratio < 1.0
                    || !(0.0..=1.0).contains(&self.criterion.points.importance_sample_ratio),
                "criterion points need oversample_ratio >= 1 and importance_sample_ratio in [0, 1]",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(format!("model: {msg}"));
        }
        self.pixel_decoder
            .validate(self.conv_dim)
            .map_err(|e| format!("model.{e}"))
    }

    /// Builds the model. Initialisation as the official code: `c2_xavier_fill` (Kaiming
    /// uniform, `a = 1`, zero bias) for the pixel decoder's convs, Xavier-uniform attention
    /// and FFN weights, PyTorch's defaults for the heads and embeddings.
    ///
    /// # Panics
    /// On a config [`validate`](Self::validate) rejects.
    pub fn init(&self, device: &Device) -> Mask2Former {
        if let Err(e) = self.validate() {
            panic!("invalid Mask2Former config: {e}");
        }
        let specs = self.backbone.out_specs();
        let c = self.conv_dim;
        let pixel_decoder = self.pixel_decoder.init(
            &specs,
            PixelDecoderWidths {
                conv_dim: c,
                mask_dim: self.mask_dim,
                norm_groups: self.norm_groups,
                num_feature_levels: self.num_feature_levels,
            },
            device,
        );
        let d = self.hidden_dim;
        let layer = MaskedDecoderLayerConfig::new(d, self.n_heads, self.dim_feedforward);
        let input_proj = if c == d {
            Vec::new()
        } else {
            (0..self.num_feature_levels)
                .map(|_| {
                    // c2_xavier_fill, as the pixel decoder's convs.
                    let mut proj = Conv2dConfig::new([c, d], [1, 1])
                        .with_initializer(Initializer::KaimingUniform {
                            gain: 1.0,
                            fan_out_only: false,
                        })
                        .init(device);
                    proj.bias = Some(Initializer::Zeros.init([d], device));
                    proj
                })
                .collect()
        };
        let decoder = MaskedTransformerDecoder {
            input_proj,
            level_embed: EmbeddingConfig::new(self.num_feature_levels, d).init(device),
            query_feat: EmbeddingConfig::new(self.num_queries, d).init(device),
            query_embed: EmbeddingConfig::new(self.num_queries, d).init(device),
            layers: (0..self.num_decoder_layers)
                .map(|_| layer.init(device))
                .collect(),
            decoder_norm: LayerNormConfig::new(d).init(device),
            class_embed: LinearConfig::new(d, self.num_classes + 1).init(device),
            mask_embed: Mlp {
                layers: vec![
                    LinearConfig::new(d, d).init(device),
                    LinearConfig::new(d, d).init(device),
                    LinearConfig::new(d, self.mask_dim).init(device),
                ],
            },
        };
        Mask2Former {
            backbone: self.backbone.init(device),
            pixel_decoder,
            decoder,
            num_classes: self.num_classes,
            criterion: self.criterion.clone(),
            test_topk_per_image: self.test_topk_per_image,
        }
    }
}

/// A query layer's `[B, Q, H, W]` mask logits, detached and off autodiff: what the matcher
/// and the instance inference read.
///
/// # Panics
/// If the layer has no mask logits.
fn detached_mask_logits(layer: &QueryLayer) -> Tensor<4> {
    layer
        .mask_logits
        .clone()
        .expect("a Mask2Former query layer predicts masks")
        .detach()
        .without_autodiff()
}

/// Mask2Former: backbone, pixel decoder, masked-attention transformer decoder with its
/// prediction heads (see the module doc).
#[derive(Module, Debug)]
pub struct Mask2Former {
    pub backbone: Backbone,
    /// `sem_seg_head.pixel_decoder`.
    pub pixel_decoder: PixelDecoder,
    /// `sem_seg_head.predictor`.
    pub decoder: MaskedTransformerDecoder,
    #[module(skip)]
    pub num_classes: usize,
    #[module(skip)]
    pub criterion: Mask2FormerCriterionConfig,
    #[module(skip)]
    pub test_topk_per_image: usize,
}

impl Mask2Former {
    /// The family's name.
    pub const NAME: &'static str = "mask2former";

    /// Learned queries `Q`.
    pub fn num_queries(&self) -> usize {
        self.decoder.query_feat.weight.dims()[0]
    }

    /// Forward + postprocess.
    pub fn predict(&self, batch: &ImageBatch) -> Vec<Instances> {
        let out = self.forward(batch);
        ModelFamily::postprocess(self, &out, batch)
    }
}

impl ModelFamily for Mask2Former {
    fn forward(&self, batch: &ImageBatch) -> ModelOutput {
        Mask2Former::forward(self, batch)
    }

    /// Hungarian matching of the last prediction (see the module doc).
    fn assign(&self, out: &ModelOutput, targets: &[Instances]) -> Assignment {
        let layer = out
            .queries
            .last()
            .expect("a Mask2Former output has one query layer per prediction");
        let set = loss::MaskTargets::new(targets, out.padded_size, &layer.class_logits.device());
        loss::match_layer(&self.criterion.matcher, layer, &set)
    }

    fn loss(&self, out: &ModelOutput, targets: &[Instances], assignment: &Assignment) -> LossDict {
        loss::set_criterion(&self.criterion, out, targets, assignment)
    }

    fn postprocess(&self, out: &ModelOutput, batch: &ImageBatch) -> Vec<Instances> {
        let layer = out
            .queries
            .last()
            .expect("a Mask2Former output has one query layer per prediction");
        inference::instance_inference(
            layer,
            batch.resized_sizes(),
            batch.padded_size(),
            batch.original_sizes(),
            self.test_topk_per_image,
        )
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

    #[test]
    fn presets_validate_and_have_the_documented_shapes() {
        let r50 = Mask2FormerConfig::r50(80);
        r50.validate().unwrap();
        let strides: Vec<usize> = r50.backbone.out_specs().iter().map(|s| s.stride).collect();
        assert_eq!(strides, [4, 8, 16, 32]);
        assert_eq!(
            (
                r50.hidden_dim,
                r50.num_queries,
                r50.num_decoder_layers,
                r50.n_heads,
                r50.dim_feedforward,
                r50.criterion.matcher.num_points,
                r50.criterion.points.num_points,
            ),
            (256, 100, 9, 8, 2048, 12544, 12544)
        );
        assert_eq!(
            (
                r50.criterion.class_loss_weight,
                r50.criterion.mask_loss_weight,
                r50.criterion.dice_loss_weight,
                r50.criterion.eos_coef
            ),
            (2.0, 5.0, 5.0, 0.1)
        );
        let lite = Mask2FormerConfig::lite_128(8);
        lite.validate().unwrap();
        assert_eq!(lite.criterion.matcher.num_points, 3136);
        assert_eq!(lite.criterion.points.num_points, 3136);
        let model = lite.init(&Device::flex());
        assert_eq!(model.num_queries(), 24);
        assert_eq!(model.decoder.class_embed.weight.dims(), [64, 9]);
        assert_eq!(model.decoder.layers.len(), 3);
        let PixelDecoder::MsDeformAttn(pixels) = &model.pixel_decoder else {
            panic!("the lite preset has the deformable pixel decoder");
        };
        // Three encoder levels (strides 8-32), the FPN step for stride 4.
        assert_eq!((pixels.input_proj.len(), pixels.layers.len()), (3, 2));
        assert_eq!(pixels.lateral_convs.len(), 1);
        // conv_dim = hidden_dim: no input projection (the official `nn.Sequential()`).
        assert!(model.decoder.input_proj.is_empty());
        assert_eq!(ModelFamily::family(&model), "mask2former");
    }

    #[test]
    fn invalid_settings_are_errors_naming_them() {
        let lite = Mask2FormerConfig::lite_128(8);
        let err = lite.clone().with_n_heads(3).validate().unwrap_err();
        assert!(err.contains("n_heads"), "{err}");
        let err = lite.clone().with_norm_groups(7).validate().unwrap_err();
        assert!(err.contains("norm_groups"), "{err}");
        let err = lite
            .clone()
            .with_num_feature_levels(4)
            .validate()
            .unwrap_err();
        assert!(err.contains("num_feature_levels"), "{err}");
        let err = lite
            .clone()
            .with_pixel_decoder(PixelDecoderConfig::MsDeformAttn(
                MsDeformAttnEncoderConfig::new().with_n_heads(5),
            ))
            .validate()
            .unwrap_err();
        assert!(err.contains("pixel_decoder.n_heads"), "{err}");
        let err = lite.with_num_queries(0).validate().unwrap_err();
        assert!(err.contains("num_queries"), "{err}");
    }
}
