//! Mask2Former's network and forward pass: the masked-attention transformer decoder with
//! its prediction heads (`MultiScaleMaskedTransformerDecoder`,
//! `modeling/transformer_decoder/mask2former_transformer_decoder.py`) and the model's
//! forward (the pixel decoders are in `pixel_decoder.rs`).
//!
//! Parameter names follow the official modules where Rust allows. Remap for a weight
//! import: the official decoder keeps three parallel lists
//! (`transformer_cross_attention_layers.{i}`, `transformer_self_attention_layers.{i}`,
//! `transformer_ffn_layers.{i}`) that are `layers.{i}.{cross,self_attn,ffn}` here.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Bool, Tensor};
use kdet_structures::ImageBatch;

use super::Mask2Former;
use crate::ops::transformer::{
    MaskedDecoderLayer, SinePositionEncodingConfig, masked_attention_mask,
};
use crate::output::{DetectorOutput, FeatureMap, QueryLayer};
use crate::query::detr::Mlp;

/// The masked-attention decoder and its prediction heads.
#[derive(Module, Debug)]
pub struct MaskedTransformerDecoder {
    /// 1×1 projections of the levels to `hidden_dim`; empty when the pixel decoder already
    /// has that width (the official `nn.Sequential()` identity).
    pub input_proj: Vec<Conv2d>,
    /// `[num_feature_levels, D]`, added to each level's memory.
    pub level_embed: Embedding,
    /// `[Q, D]` learnable query features (the decoder's input).
    pub query_feat: Embedding,
    /// `[Q, D]` learnable query positional embeddings.
    pub query_embed: Embedding,
    /// Masked cross-attention → self-attention → FFN.
    pub layers: Vec<MaskedDecoderLayer>,
    /// Shared LayerNorm before the heads.
    pub decoder_norm: LayerNorm,
    /// `Linear(D, K + 1)`.
    pub class_embed: Linear,
    /// 3-layer MLP `D → D → D → mask_dim`.
    pub mask_embed: Mlp,
}

/// The attention mask of the next layer from mask logits `[B, Q, H, W]`: bilinearly
/// resized (`align_corners = False`) to `size`, `sigmoid < 0.5` hidden, a query hidden
/// everywhere attending everywhere, no gradient (`attn_mask.detach()`).
///
/// # Shapes
/// - `mask_logits`: `[B, Q, H, W]` → `[B, Q, size.0 · size.1]`
pub fn attention_mask(mask_logits: Tensor<4>, size: [usize; 2]) -> Tensor<3, Bool> {
    let resized = interpolate(
        mask_logits.detach(),
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size(size),
    );
    masked_attention_mask(resized)
}

impl MaskedTransformerDecoder {
    /// One prediction (`forward_prediction_heads`): the query layer and the attention
    /// mask at `next_size`.
    ///
    /// # Shapes
    /// - `output`: `[B, Q, D]`, `mask_features`: `[B, M, H, W]`
    pub fn predict(
        &self,
        output: Tensor<3>,
        mask_features: &Tensor<4>,
        next_size: [usize; 2],
    ) -> (QueryLayer, Tensor<3, Bool>) {
        let [b, m, h, w] = mask_features.dims();
        let q = output.dims()[1];
        let embeddings = self.decoder_norm.forward(output);
        let class_logits = self.class_embed.forward(embeddings.clone());
        let mask_embed = self.mask_embed.forward(embeddings.clone());
        // einsum("bqc,bchw->bqhw"): [B, Q, M] x [B, M, H*W]
        let mask_logits = mask_embed
            .matmul(mask_features.clone().reshape([b, m, h * w]))
            .reshape([b, q, h, w]);
        let mask = attention_mask(mask_logits.clone(), next_size);
        let layer = QueryLayer {
            embeddings,
            class_logits,
            mask_logits: Some(mask_logits),
            boxes: None,
        };
        (layer, mask)
    }

    /// Every prediction: the learnable queries' first, then one per layer. Layer `i`
    /// attends to `multi_scale[i mod L]`.
    ///
    /// # Shapes
    /// - `multi_scale`: `L` maps `[B, C, H_l, W_l]`, coarsest first
    /// - `mask_features`: `[B, M, H, W]`
    pub fn forward(
        &self,
        multi_scale: &[FeatureMap],
        mask_features: &Tensor<4>,
    ) -> Vec<QueryLayer> {
        let levels = self.level_embed.weight.dims()[0];
        assert_eq!(
            multi_scale.len(),
            levels,
            "the decoder was built for {levels} levels, got {}",
            multi_scale.len()
        );
        let [b, _, _, _] = mask_features.dims();
        let device = mask_features.device();
        let d = self.level_embed.weight.dims()[1];
        let level_embed = self.level_embed.weight.val();
        let mut sizes = Vec::with_capacity(levels);
        let mut src = Vec::with_capacity(levels);
        let mut pos = Vec::with_capacity(levels);
        for (l, level) in multi_scale.iter().enumerate() {
            let [_, _, h, w] = level.tensor.dims();
            sizes.push([h, w]);
            let x = match self.input_proj.get(l) {
                Some(proj) => proj.forward(level.tensor.clone()),
                None => level.tensor.clone(),
            };
            // [B, D, h, w] -> [B, h*w, D], plus the level's embedding
            let tokens = x.reshape([b, d, h * w]).swap_dims(1, 2)
                + level_embed
                    .clone()
                    .slice([l..l + 1, 0..d])
                    .reshape([1, 1, d]);
            src.push(tokens);
            let pe = SinePositionEncodingConfig::new(d / 2).encode(b, h, w, None, &device);
            pos.push(pe.reshape([b, d, h * w]).swap_dims(1, 2));
        }
        let batched = |e: &Embedding| e.weight.val().unsqueeze_dim::<3>(0).repeat_dim(0, b);
        let query_pos = batched(&self.query_embed);
        let mut output = batched(&self.query_feat);
        let mut predictions = Vec::with_capacity(self.layers.len() + 1);
        let (first, mut mask) = self.predict(output.clone(), mask_features, sizes[0]);
        predictions.push(first);
        for (i, layer) in self.layers.iter().enumerate() {
            let l = i % levels;
            output = layer.forward(
                output,
                query_pos.clone(),
                src[l].clone(),
                pos[l].clone(),
                Some(mask),
            );
            let (prediction, next) =
                self.predict(output.clone(), mask_features, sizes[(i + 1) % levels]);
            predictions.push(prediction);
            mask = next;
        }
        predictions
    }
}

impl Mask2Former {
    /// The network on a padded batch. Pure (BatchNorm statistics follow the device).
    pub fn forward(&self, batch: &ImageBatch) -> DetectorOutput {
        let backbone = self.backbone.forward(batch.images().clone());
        let pixels = self.pixel_decoder.forward(&backbone);
        let queries = self
            .decoder
            .forward(&pixels.multi_scale, &pixels.mask_features.tensor);
        DetectorOutput {
            queries,
            pixel_embeddings: Some(pixels.mask_features),
            ..DetectorOutput::dense(
                backbone,
                pixels.outputs,
                Vec::new(),
                batch.resized_sizes().to_vec(),
                batch.padded_size(),
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backbone::{BackboneConfig, SmallResNetConfig};
    use crate::query::mask2former::Mask2FormerConfig;
    use crate::query::mask2former::pixel_decoder::{MsDeformAttnEncoderConfig, PixelDecoderConfig};
    use burn::tensor::{Device, Distribution, TensorData};
    use kdet_structures::ImageSize;

    /// A tiny Mask2Former: 2 classes, width 8 (GN 2 groups), 2 heads, 4 decoder layers (so
    /// the round-robin wraps), 3 queries, a 1-layer deformable pixel decoder, on a 4-stage
    /// SmallResNet of width 8.
    pub(crate) fn tiny(device: &Device) -> Mask2Former {
        let backbone = SmallResNetConfig::new(8, [8, 8, 8, 8], [1, 1, 1, 1])
            .with_out_indices(vec![0, 1, 2, 3]);
        Mask2FormerConfig::new(BackboneConfig::SmallResNet(backbone), 2)
            .with_conv_dim(8)
            .with_mask_dim(6)
            .with_norm_groups(2)
            .with_hidden_dim(8)
            .with_n_heads(2)
            .with_dim_feedforward(16)
            .with_num_decoder_layers(4)
            .with_num_queries(3)
            .with_pixel_decoder(PixelDecoderConfig::MsDeformAttn(
                MsDeformAttnEncoderConfig::new()
                    .with_num_layers(1)
                    .with_n_heads(2)
                    .with_n_points(2)
                    .with_dim_feedforward(16),
            ))
            .init(device)
    }

    fn batch(device: &Device) -> ImageBatch {
        let images = Tensor::<4>::random([2, 3, 64, 96], Distribution::Normal(0.0, 1.0), device);
        let sizes = vec![ImageSize::new(64, 96), ImageSize::new(48, 64)];
        ImageBatch::new(images, sizes.clone(), sizes).unwrap()
    }

    #[test]
    fn every_prediction_has_a_query_tap_of_the_documented_shapes() {
        let device = Device::flex();
        let model = tiny(&device);
        let out = model.forward(&batch(&device));
        // The learnable queries' prediction + one per layer.
        assert_eq!(out.queries.len(), 5);
        for layer in &out.queries {
            assert_eq!(layer.embeddings.dims(), [2, 3, 8]);
            assert_eq!(layer.class_logits.dims(), [2, 3, 3]);
            assert_eq!(layer.mask_logits.as_ref().unwrap().dims(), [2, 3, 16, 24]);
            assert!(layer.boxes.is_none());
        }
        // The shared decoder_norm: zero mean per query.
        let mean: f32 = out.queries[2]
            .embeddings
            .clone()
            .mean_dim(2)
            .abs()
            .max()
            .into_scalar();
        assert!(mean < 1e-4, "{mean}");
        let pixels = out.pixel_embeddings.as_ref().unwrap();
        assert_eq!((pixels.tensor.dims(), pixels.stride), ([2, 6, 16, 24], 4));
        let neck: Vec<([usize; 4], usize)> = out
            .neck
            .iter()
            .map(|f| (f.tensor.dims(), f.stride))
            .collect();
        assert_eq!(
            neck,
            [
                ([2, 8, 16, 24], 4),
                ([2, 8, 8, 12], 8),
                ([2, 8, 4, 6], 16),
                ([2, 8, 2, 3], 32)
            ]
        );
        assert_eq!(out.backbone.len(), 4);
        assert!(out.head.is_empty());
        // Masks are the mask embeddings dotted with the per-pixel embeddings.
        let last = out.queries.last().unwrap();
        let embed = model.decoder.mask_embed.forward(last.embeddings.clone());
        let want = embed.matmul(pixels.tensor.clone().reshape([2, 6, 16 * 24]));
        let got = last.mask_logits.clone().unwrap().reshape([2, 3, 16 * 24]);
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn the_attention_mask_is_the_resized_mask_below_one_half_unless_all_hidden() {
        let device = Device::flex();
        // Query 0: +4 in the top-left 2×2 block of a 4×4 map, −4 elsewhere; resized to
        // 2×2 (bilinear, align_corners = False, a plain 2×2 average at this ratio) only
        // the top-left cell is visible. Query 1: −4 everywhere, hidden everywhere, so it
        // attends everywhere.
        let mut q0 = vec![-4.0f32; 16];
        for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            q0[y * 4 + x] = 4.0;
        }
        let mut values = q0;
        values.extend(vec![-4.0f32; 16]);
        let logits = Tensor::<4>::from_data(TensorData::new(values, [1, 2, 4, 4]), &device);
        let mask: Vec<bool> = attention_mask(logits.clone(), [2, 2])
            .into_data()
            .try_into_vec::<bool>()
            .unwrap();
        assert_eq!(mask, [false, true, true, true, false, false, false, false]);
        // At the map's own size the rule reads the logits directly.
        let mask: Vec<bool> = attention_mask(logits, [4, 4])
            .into_data()
            .try_into_vec::<bool>()
            .unwrap();
        assert_eq!(mask[..16].iter().filter(|&&m| !m).count(), 4);
    }

    #[test]
    fn hidden_keys_do_not_reach_a_query() {
        // The mask built from query 0's prediction hides level cells: changing the memory
        // there does not change query 0's cross-attention output, changing a visible one
        // does.
        let device = Device::flex();
        let model = tiny(&device);
        let layer = &model.decoder.layers[0];
        let x = Tensor::<3>::random([1, 3, 8], Distribution::Normal(0.0, 1.0), &device);
        let pos = Tensor::<3>::random([1, 3, 8], Distribution::Normal(0.0, 1.0), &device);
        let memory = Tensor::<3>::random([1, 4, 8], Distribution::Normal(0.0, 1.0), &device);
        let mpos = Tensor::<3>::random([1, 4, 8], Distribution::Normal(0.0, 1.0), &device);
        // Every query sees only cell 0.
        let logits = Tensor::<4>::from_data(
            TensorData::new([4.0f32, -4.0, -4.0, -4.0].repeat(3), [1, 3, 2, 2]),
            &device,
        );
        let mask = attention_mask(logits, [2, 2]);
        let cross = |m: Tensor<3>| {
            layer.cross.forward(
                x.clone(),
                m,
                Some(pos.clone()),
                Some(mpos.clone()),
                Some(mask.clone()),
            )
        };
        let base = cross(memory.clone());
        let noise = Tensor::<3>::random([1, 3, 8], Distribution::Normal(0.0, 5.0), &device);
        let hidden_changed = cross(memory.clone().slice_assign([0..1, 1..4, 0..8], noise));
        let diff = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
        assert!(diff(base.clone(), hidden_changed) < 1e-5);
        let noise = Tensor::<3>::random([1, 1, 8], Distribution::Normal(0.0, 5.0), &device);
        let visible_changed = cross(memory.slice_assign([0..1, 0..1, 0..8], noise));
        assert!(diff(base, visible_changed) > 1e-3);
    }
}
