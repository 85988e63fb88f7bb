//! Transformer blocks shaped for detection (DETR, Mask2Former): positional embeddings are
//! added to queries and keys, never to values; residual + post-LayerNorm blocks; the 2-D
//! sine positional encoding; Mask2Former's masked attention.
//!
//! - [`SinePositionEncodingConfig`]: DETR's `PositionEmbeddingSine` (`models/
//!   position_encoding.py`; Mask2Former's copy is the same): per position the cumulative
//!   count of valid rows `y` and columns `x` (so padding, when given, is skipped),
//!   normalised as `(y + offset) / (y_last + 1e-6) · 2π`, then for `i` in `0..F`
//!   `y / T^{2⌊i/2⌋/F}`, sine on even `i`, cosine on odd `i`; channels `[y-part, x-part]`
//!   (`2F` in all). `offset` is 0 for DETR and Mask2Former, −0.5 for Deformable DETR's
//!   `DeformableDetrSinePositionEmbedding`.
//! - [`AttentionLayer`]: `x + Attn(q = x + pos_q, k = m + pos_k, v = m)`, then LayerNorm
//!   (DETR/Mask2Former `forward_post`, `normalize_before = False`); self-attention when the
//!   memory is `x` itself. Built on burn's `MultiHeadAttention` (separate q/k/v
//!   projections with biases; PyTorch's `in_proj_weight` rows split three ways, transposed).
//! - [`FfnLayer`]: `x + W₂ ReLU(W₁ x)`, then LayerNorm.
//! - [`MaskedDecoderLayer`]: Mask2Former's decoder layer: masked cross-attention to one
//!   pixel-decoder level, then self-attention among the queries, then the FFN
//!   (`mask2former_transformer_decoder.py`: `CrossAttentionLayer`, `SelfAttentionLayer`,
//!   `FFNLayer` in that order).
//! - [`masked_attention_mask`]: from the previous layer's mask logits (already resized to
//!   the level), `sigmoid < 0.5` is masked out, and a query whose mask would hide every
//!   position attends everywhere instead (the official
//!   `attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = False`).
//!
//! Dropout is the official configs' 0.0 for Mask2Former (`MODEL.MASK_FORMER.DROPOUT`) and
//! left to the caller's config otherwise. A masked score is burn's `min_float` (−1e4)
//! rather than −∞: after the softmax both are exactly 0 in f32 for scores of ordinary size.
//! Reference values: `scripts/fixtures/transformer.py` (Hugging Face `transformers`' ports
//! of Mask2Former's decoder layer and of both sine encodings, random weights) into
//! `tests/fixtures/ops/transformer.json`.

use std::f64::consts::PI;

use burn::config::Config;
use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Bool, Device, Tensor};

/// The 2-D sine positional encoding.
#[derive(Config, Debug, PartialEq)]
pub struct SinePositionEncodingConfig {
    /// Channels per axis `F` (the encoding has `2F`): half the model width (DETR
    /// `hidden_dim // 2`, Mask2Former `N_steps = hidden_dim // 2`).
    pub num_pos_feats: usize,
    /// `T` (10000).
    #[config(default = 10000.0)]
    pub temperature: f64,
    /// Divide the cumulative counts by the last one and scale by `scale` (DETR and
    /// Mask2Former: true).
    #[config(default = true)]
    pub normalize: bool,
    /// `2π`.
    #[config(default = "2.0 * PI")]
    pub scale: f64,
    /// Added to the counts before normalising: 0 (DETR, Mask2Former) or −0.5 (Deformable
    /// DETR).
    #[config(default = 0.0)]
    pub offset: f64,
}

impl SinePositionEncodingConfig {
    /// The encoding `[B, 2F, H, W]` of `B` maps of `H × W`; `padding` (`[B, H, W]`, true on
    /// padded positions) keeps padding out of the counts, as DETR's mask does.
    pub fn encode(
        &self,
        batch: usize,
        height: usize,
        width: usize,
        padding: Option<Tensor<3, Bool>>,
        device: &Device,
    ) -> Tensor<4> {
        let valid = match padding {
            Some(p) => p.bool_not().float(),
            None => Tensor::<3>::ones([batch, height, width], device),
        };
        let mut y = valid.clone().cumsum(1);
        let mut x = valid.cumsum(2);
        if self.normalize {
            let eps = 1e-6;
            let y_last = y.clone().slice([0..batch, height - 1..height, 0..width]);
            let x_last = x.clone().slice([0..batch, 0..height, width - 1..width]);
            y = y.add_scalar(self.offset) / y_last.add_scalar(eps) * self.scale;
            x = x.add_scalar(self.offset) / x_last.add_scalar(eps) * self.scale;
        }
        let f = self.num_pos_feats;
        let dims: Vec<f32> = (0..f)
            .map(|i| self.temperature.powf(2.0 * (i / 2) as f64 / f as f64) as f32)
            .collect();
        let dims = Tensor::<1>::from_floats(dims.as_slice(), device).reshape([1, 1, 1, f]);
        let axis = |t: Tensor<3>| -> Tensor<4> {
            let t = t.reshape([batch, height, width, 1]) / dims.clone();
            // Even channels sine, odd cosine, interleaved as torch.stack(..., dim=4).flatten(3).
            let sin = t.clone().sin();
            let cos = t.cos();
            let parity = Tensor::<1>::from_floats(
                (0..f)
                    .map(|i| if i % 2 == 0 { 1.0 } else { 0.0 })
                    .collect::<Vec<f32>>()
                    .as_slice(),
                device,
            )
            .reshape([1, 1, 1, f]);
            sin * parity.clone() + cos * parity.neg().add_scalar(1.0)
        };
        Tensor::cat(vec![axis(y), axis(x)], 3).permute([0, 3, 1, 2])
    }
}

/// Attention with residual and post-LayerNorm.
#[derive(Config, Debug)]
pub struct AttentionLayerConfig {
    pub d_model: usize,
    pub n_heads: usize,
    /// Attention-weight dropout (Mask2Former 0.0).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl AttentionLayerConfig {
    /// Projections Xavier-uniform (the official `_reset_parameters`), LayerNorm ε 1e-5.
    pub fn init(&self, device: &Device) -> AttentionLayer {
        AttentionLayer {
            attn: MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
                .with_dropout(self.dropout)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device),
            norm: LayerNormConfig::new(self.d_model).init(device),
        }
    }
}

/// `LayerNorm(x + Attn(x + pos_q, memory + pos_k, memory))`.
#[derive(Module, Debug)]
pub struct AttentionLayer {
    pub attn: MultiHeadAttention,
    pub norm: LayerNorm,
}

impl AttentionLayer {
    /// `x` `[B, Q, C]`, `memory` `[B, S, C]`, positions of the same shapes (added to query
    /// and key only), `mask` `[B, Q, S]` (true = not attended).
    pub fn forward(
        &self,
        x: Tensor<3>,
        memory: Tensor<3>,
        query_pos: Option<Tensor<3>>,
        key_pos: Option<Tensor<3>>,
        mask: Option<Tensor<3, Bool>>,
    ) -> Tensor<3> {
        let q = with_pos(x.clone(), query_pos);
        let k = with_pos(memory.clone(), key_pos);
        let mut input = MhaInput::new(q, k, memory);
        if let Some(mask) = mask {
            input = input.mask_attn(mask);
        }
        let out = self.attn.forward(input).context;
        self.norm.forward(x + out)
    }

    /// Self-attention: `x` attends to itself, with `pos` on queries and keys.
    pub fn forward_self(&self, x: Tensor<3>, pos: Option<Tensor<3>>) -> Tensor<3> {
        self.forward(x.clone(), x, pos.clone(), pos, None)
    }
}

fn with_pos(x: Tensor<3>, pos: Option<Tensor<3>>) -> Tensor<3> {
    match pos {
        Some(p) => x + p,
        None => x,
    }
}

/// The feed-forward block.
#[derive(Config, Debug)]
pub struct FfnLayerConfig {
    pub d_model: usize,
    /// Hidden width (Mask2Former `DIM_FEEDFORWARD` 2048; DETR 2048).
    pub dim_feedforward: usize,
}

impl FfnLayerConfig {
    /// Xavier-uniform weights (the official `_reset_parameters`); biases PyTorch's
    /// `Linear` default.
    pub fn init(&self, device: &Device) -> FfnLayer {
        let linear = |i, o| {
            LinearConfig::new(i, o)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device)
        };
        FfnLayer {
            linear1: linear(self.d_model, self.dim_feedforward),
            linear2: linear(self.dim_feedforward, self.d_model),
            norm: LayerNormConfig::new(self.d_model).init(device),
        }
    }
}

/// `LayerNorm(x + W₂ ReLU(W₁ x))`.
#[derive(Module, Debug)]
pub struct FfnLayer {
    pub linear1: Linear,
    pub linear2: Linear,
    pub norm: LayerNorm,
}

impl FfnLayer {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.linear2.forward(relu(self.linear1.forward(x.clone())));
        self.norm.forward(x + h)
    }
}

/// Mask2Former's decoder layer.
#[derive(Config, Debug)]
pub struct MaskedDecoderLayerConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub dim_feedforward: usize,
}

impl MaskedDecoderLayerConfig {
    pub fn init(&self, device: &Device) -> MaskedDecoderLayer {
        let attn = AttentionLayerConfig::new(self.d_model, self.n_heads);
        MaskedDecoderLayer {
            cross: attn.init(device),
            self_attn: attn.init(device),
            ffn: FfnLayerConfig::new(self.d_model, self.dim_feedforward).init(device),
        }
    }
}

/// Masked cross-attention → self-attention → FFN.
#[derive(Module, Debug)]
pub struct MaskedDecoderLayer {
    pub cross: AttentionLayer,
    pub self_attn: AttentionLayer,
    pub ffn: FfnLayer,
}

impl MaskedDecoderLayer {
    /// `queries` `[B, Q, C]` with their embeddings `query_pos`; `memory` `[B, S, C]` (one
    /// level, flattened) with its positional encoding `memory_pos`; `mask` `[B, Q, S]` from
    /// [`masked_attention_mask`].
    pub fn forward(
        &self,
        queries: Tensor<3>,
        query_pos: Tensor<3>,
        memory: Tensor<3>,
        memory_pos: Tensor<3>,
        mask: Option<Tensor<3, Bool>>,
    ) -> Tensor<3> {
        let x = self.cross.forward(
            queries,
            memory,
            Some(query_pos.clone()),
            Some(memory_pos),
            mask,
        );
        let x = self.self_attn.forward_self(x, Some(query_pos));
        self.ffn.forward(x)
    }
}

/// Mask2Former's attention mask from mask logits `[B, Q, H, W]` (already at the level's
/// size): `[B, Q, H·W]`, true where `sigmoid(logit) < 0.5`, except that a query masked
/// everywhere is masked nowhere.
pub fn masked_attention_mask(mask_logits: Tensor<4>) -> Tensor<3, Bool> {
    let [b, q, h, w] = mask_logits.dims();
    let masked = sigmoid(mask_logits.reshape([b, q, h * w])).lower_elem(0.5);
    let hidden = masked.clone().float().sum_dim(2).equal_elem((h * w) as f32);
    // hidden: [B, Q, 1]; a fully hidden row becomes all false.
    masked.bool_and(hidden.bool_not().expand([b, q, h * w]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn a_query_masked_everywhere_attends_everywhere() {
        let device = Device::flex();
        // Query 0: logits [-1, 1, -1, 1] → masked at 0 and 2; query 1: all negative.
        let logits = Tensor::<4>::from_data(
            TensorData::new(
                vec![-1.0f32, 1.0, -1.0, 1.0, -2.0, -2.0, -2.0, -2.0],
                [1, 2, 2, 2],
            ),
            &device,
        );
        let mask: Vec<bool> = masked_attention_mask(logits)
            .into_data()
            .try_into_vec::<bool>()
            .unwrap();
        assert_eq!(mask, [true, false, true, false, false, false, false, false]);
    }

    #[test]
    fn sine_encoding_at_the_last_position_is_the_full_turn() {
        // Normalised, offset 0: the last row/column has count/last = 1 → angle 2π for
        // channel 0 (divisor T^0 = 1): sin(2π) ≈ 0, and channel 1 cos(2π) = 1.
        let device = Device::flex();
        let pe = SinePositionEncodingConfig::new(4).encode(1, 3, 5, None, &device);
        assert_eq!(pe.dims(), [1, 8, 3, 5]);
        let v: Vec<f32> = pe.into_data().try_into_vec::<f32>().unwrap();
        let at = |c: usize, y: usize, x: usize| v[(c * 3 + y) * 5 + x];
        assert!(at(0, 2, 0).abs() < 1e-5 && (at(1, 2, 0) - 1.0).abs() < 1e-5);
        assert!(at(4, 0, 4).abs() < 1e-5 && (at(5, 0, 4) - 1.0).abs() < 1e-5);
        // The y-part does not depend on x.
        assert_eq!(at(0, 1, 0), at(0, 1, 3));
    }

    #[test]
    fn attention_layer_keeps_the_shape_and_positions_reach_only_queries_and_keys() {
        let device = Device::flex();
        let layer = AttentionLayerConfig::new(8, 2).init(&device);
        let x = Tensor::<3>::ones([2, 3, 8], &device);
        let m = Tensor::<3>::ones([2, 5, 8], &device);
        assert_eq!(
            layer.forward(x.clone(), m.clone(), None, None, None).dims(),
            [2, 3, 8]
        );
        // With identical memory rows, any key position gives the same value average: the
        // output cannot depend on key positions (they only move the weights).
        let pos = Tensor::<3>::random([2, 5, 8], burn::tensor::Distribution::Default, &device);
        let a = layer.forward(x.clone(), m.clone(), None, None, None);
        let b = layer.forward(x, m, None, Some(pos), None);
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }
}
