//! DETR's network and forward pass: the encoder and decoder built from the shared
//! attention and FFN layers (`crate::ops::transformer`, post-norm as `forward_post` in
//! `models/transformer.py`), the box MLP, and the feature-level padding mask.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Bool, Tensor, TensorData};
use kdet_structures::{ImageBatch, ImageSize};

use super::Detr;
use crate::ops::transformer::{AttentionLayer, FfnLayer, SinePositionEncodingConfig};
use crate::output::{DetectorOutput, FeatureMap, QueryLayer};

/// DETR's `MLP`: linear layers with ReLU between them (none after the last).
#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let y = layer.forward(x);
            if i < last { relu(y) } else { y }
        })
    }
}

/// One encoder layer: self-attention (positions on queries and keys), then the FFN.
#[derive(Module, Debug)]
pub struct DetrEncoderLayer {
    pub self_attn: AttentionLayer,
    pub ffn: FfnLayer,
}

impl DetrEncoderLayer {
    /// `x`, `pos` `[B, S, D]`; `mask` `[B, S, S]`, true on padded keys.
    pub fn forward(
        &self,
        x: Tensor<3>,
        pos: Tensor<3>,
        mask: Option<Tensor<3, Bool>>,
    ) -> Tensor<3> {
        let x = self
            .self_attn
            .forward(x.clone(), x, Some(pos.clone()), Some(pos), mask);
        self.ffn.forward(x)
    }
}

/// One decoder layer: self-attention among the queries, cross-attention to the encoder
/// memory, FFN (DETR's order; Mask2Former's decoder puts cross-attention first).
#[derive(Module, Debug)]
pub struct DetrDecoderLayer {
    pub self_attn: AttentionLayer,
    /// Cross-attention (the official name).
    pub multihead_attn: AttentionLayer,
    pub ffn: FfnLayer,
}

impl DetrDecoderLayer {
    /// `tgt`, `query_pos` `[B, Q, D]`; `memory`, `pos` `[B, S, D]`; `mask` `[B, Q, S]`,
    /// true on padded keys.
    pub fn forward(
        &self,
        tgt: Tensor<3>,
        query_pos: Tensor<3>,
        memory: Tensor<3>,
        pos: Tensor<3>,
        mask: Option<Tensor<3, Bool>>,
    ) -> Tensor<3> {
        let tgt = self.self_attn.forward_self(tgt, Some(query_pos.clone()));
        let tgt = self
            .multihead_attn
            .forward(tgt, memory, Some(query_pos), Some(pos), mask);
        self.ffn.forward(tgt)
    }
}

/// The encoder (no final norm in DETR's post-norm setting).
#[derive(Module, Debug)]
pub struct DetrEncoder {
    pub layers: Vec<DetrEncoderLayer>,
}

/// The decoder and its final LayerNorm, applied to every layer's output (the next layer
/// reads the un-normalised one), as `TransformerDecoder(return_intermediate=True)`.
#[derive(Module, Debug)]
pub struct DetrDecoder {
    pub layers: Vec<DetrDecoderLayer>,
    pub norm: LayerNorm,
}

/// Encoder + decoder.
#[derive(Module, Debug)]
pub struct DetrTransformer {
    pub encoder: DetrEncoder,
    pub decoder: DetrDecoder,
}

impl DetrTransformer {
    /// Returns the encoder memory `[B, S, D]` and every decoder layer's normalised output
    /// `[B, Q, D]`.
    ///
    /// # Shapes
    /// - `src`, `pos`: `[B, S, D]` (flattened map and its positional encoding)
    /// - `query_pos`: `[B, Q, D]` (the decoder's input is zeros)
    /// - `key_padding`: `[B, S]` host booleans, true on padded positions, or `None`
    pub fn forward(
        &self,
        src: Tensor<3>,
        pos: Tensor<3>,
        query_pos: Tensor<3>,
        key_padding: Option<&[bool]>,
    ) -> (Tensor<3>, Vec<Tensor<3>>) {
        let [b, s, d] = src.dims();
        let q = query_pos.dims()[1];
        let device = src.device();
        let rows_mask = |rows: usize| {
            key_padding.map(|pad| {
                // [B, rows, S]: every row (query) hides the same padded keys.
                let data: Vec<bool> = (0..b)
                    .flat_map(|i| {
                        (0..rows).flat_map(move |_| pad[i * s..(i + 1) * s].iter().copied())
                    })
                    .collect();
                Tensor::<3, Bool>::from_data(TensorData::new(data, [b, rows, s]), &device)
            })
        };
        let encoder_mask = rows_mask(s);
        let memory = self.encoder.layers.iter().fold(src, |x, layer| {
            layer.forward(x, pos.clone(), encoder_mask.clone())
        });
        let decoder_mask = rows_mask(q);
        let mut tgt = Tensor::<3>::zeros([b, q, d], &device);
        let mut outputs = Vec::with_capacity(self.decoder.layers.len());
        for layer in &self.decoder.layers {
            tgt = layer.forward(
                tgt,
                query_pos.clone(),
                memory.clone(),
                pos.clone(),
                decoder_mask.clone(),
            );
            outputs.push(self.decoder.norm.forward(tgt.clone()));
        }
        (memory, outputs)
    }
}

/// DETR's pixel mask at a feature map's size: `[B, h, w]` row-major booleans, true where
/// the cell is padding. The mask of the padded `H × W` batch (true outside each image's
/// `resized_sizes[i]`) is resized as `F.interpolate(mask, size=(h, w))` does (nearest:
/// cell `y` reads pixel row `⌊y · H / h⌋`).
pub fn padding_mask(image_sizes: &[ImageSize], padded: ImageSize, h: usize, w: usize) -> Vec<bool> {
    let source = |cell: usize, cells: usize, pixels: u32| {
        let scale = pixels as f64 / cells as f64;
        ((cell as f64 * scale).floor() as u32).min(pixels.saturating_sub(1))
    };
    image_sizes
        .iter()
        .flat_map(|size| {
            (0..h).flat_map(move |y| {
                let row_padded = source(y, h, padded.height) >= size.height;
                (0..w).map(move |x| row_padded || source(x, w, padded.width) >= size.width)
            })
        })
        .collect()
}

impl Detr {
    /// The network on a padded batch. Pure (BatchNorm statistics and dropout follow the
    /// device: training behaviour on an autodiff device only).
    pub fn forward(&self, batch: &ImageBatch) -> DetectorOutput {
        let images = batch.images().clone();
        let device = images.device();
        let backbone = self.backbone.forward(images);
        let level = backbone
            .last()
            .expect("the backbone returns at least one stage (checked by DetrConfig::validate)");
        let stride = level.stride;
        let [b, _, h, w] = level.tensor.dims();
        let src = self.input_proj.forward(level.tensor.clone());
        let d = src.dims()[1];
        let padding = padding_mask(batch.resized_sizes(), batch.padded_size(), h, w);
        let padding = padding.iter().any(|&p| p).then_some(padding);
        let pos = SinePositionEncodingConfig::new(d / 2).encode(
            b,
            h,
            w,
            padding.as_ref().map(|p| {
                Tensor::<3, Bool>::from_data(TensorData::new(p.clone(), [b, h, w]), &device)
            }),
            &device,
        );
        // [B, D, h, w] -> [B, h*w, D]
        let tokens = |t: Tensor<4>| t.reshape([b, d, h * w]).swap_dims(1, 2);
        let query_pos = self
            .query_embed
            .weight
            .val()
            .unsqueeze_dim::<3>(0)
            .repeat_dim(0, b);
        let (memory, outputs) =
            self.transformer
                .forward(tokens(src), tokens(pos), query_pos, padding.as_deref());
        let queries = outputs
            .into_iter()
            .map(|embeddings| QueryLayer {
                class_logits: self.class_embed.forward(embeddings.clone()),
                boxes: Some(sigmoid(self.bbox_embed.forward(embeddings.clone()))),
                mask_logits: None,
                embeddings,
            })
            .collect();
        // [B, h*w, D] -> [B, D, h, w]
        let memory = memory.swap_dims(1, 2).reshape([b, d, h, w]);
        DetectorOutput {
            queries,
            neck: vec![FeatureMap {
                tensor: memory,
                stride,
            }],
            ..DetectorOutput::dense(
                backbone,
                Vec::new(),
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
    use crate::query::detr::DetrConfig;
    use burn::tensor::{Device, Distribution};

    /// A tiny DETR: 2 classes, d_model 8, 2 heads, 1 encoder and 2 decoder layers, 3
    /// queries, on a 2-stage-wide SmallResNet read at C4 (stride 16).
    fn tiny(device: &Device) -> Detr {
        let backbone =
            SmallResNetConfig::new(8, [8, 8, 8, 8], [1, 1, 1, 1]).with_out_indices(vec![2]);
        DetrConfig::new(BackboneConfig::SmallResNet(backbone), 2)
            .with_d_model(8)
            .with_n_heads(2)
            .with_dim_feedforward(16)
            .with_num_encoder_layers(1)
            .with_num_decoder_layers(2)
            .with_num_queries(3)
            .with_dropout(0.0)
            .init(device)
    }

    fn batch(sizes: &[(u32, u32)], padded: (usize, usize), device: &Device) -> ImageBatch {
        let images = Tensor::<4>::random(
            [sizes.len(), 3, padded.0, padded.1],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let sizes: Vec<ImageSize> = sizes.iter().map(|&(h, w)| ImageSize::new(h, w)).collect();
        ImageBatch::new(images, sizes.clone(), sizes).unwrap()
    }

    #[test]
    fn every_decoder_layer_has_a_query_tap_of_the_documented_shapes() {
        let device = Device::flex();
        let model = tiny(&device);
        // Two 64×96 canvases, the second image padded (48×64 inside): C4 is 4×6.
        let out = model.forward(&batch(&[(64, 96), (48, 64)], (64, 96), &device));
        assert_eq!(out.queries.len(), 2);
        for layer in &out.queries {
            assert_eq!(layer.embeddings.dims(), [2, 3, 8]);
            assert_eq!(layer.class_logits.dims(), [2, 3, 3]);
            assert!(layer.mask_logits.is_none());
            let boxes = layer.boxes.clone().unwrap();
            assert_eq!(boxes.dims(), [2, 3, 4]);
            let v: Vec<f32> = boxes.into_data().try_into_vec().unwrap();
            assert!(v.iter().all(|&x| x > 0.0 && x < 1.0), "{v:?}");
        }
        // The decoder's shared final norm: every layer's embeddings have zero mean per query.
        let mean: f32 = out.queries[0]
            .embeddings
            .clone()
            .mean_dim(2)
            .abs()
            .max()
            .into_scalar();
        assert!(mean < 1e-4, "{mean}");
        assert_eq!(out.backbone.len(), 1);
        assert_eq!(out.backbone[0].stride, 16);
        assert_eq!(out.neck.len(), 1);
        assert_eq!(out.neck[0].tensor.dims(), [2, 8, 4, 6]);
        assert_eq!(out.neck[0].stride, 16);
        assert!(out.head.is_empty() && out.pixel_embeddings.is_none());
        assert_eq!(
            out.image_sizes,
            [ImageSize::new(64, 96), ImageSize::new(48, 64)]
        );
        assert_eq!(out.padded_size, ImageSize::new(64, 96));
    }

    #[test]
    fn the_padding_mask_is_the_nearest_resized_pixel_mask() {
        // A 64×96 canvas at a 4×6 map (16 pixels per cell): an image of 40×70 covers rows
        // whose source pixel 16y < 40 (y ≤ 2) and columns with 16x < 70 (x ≤ 4).
        let mask = padding_mask(
            &[ImageSize::new(64, 96), ImageSize::new(40, 70)],
            ImageSize::new(64, 96),
            4,
            6,
        );
        assert_eq!(mask.len(), 2 * 24);
        assert!(
            mask[..24].iter().all(|&p| !p),
            "a full image has no padding"
        );
        let second = &mask[24..];
        for y in 0..4 {
            for x in 0..6 {
                assert_eq!(second[y * 6 + x], y > 2 || x > 4, "cell ({y}, {x})");
            }
        }
    }

    #[test]
    fn padded_keys_do_not_reach_the_queries() {
        // Memory tokens 2 and 3 of image 1 are padding: whatever they hold, the decoder's
        // outputs and the valid memory tokens stay the same; unmasked, they change.
        let device = Device::flex();
        let model = tiny(&device);
        let shape = [2, 4, 8];
        let src = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let pos = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let query_pos = Tensor::<3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &device);
        let noise = Tensor::<3>::random([1, 2, 8], Distribution::Normal(0.0, 5.0), &device);
        let changed = src.clone().slice_assign([1..2, 2..4, 0..8], noise);
        let padding = [false, false, false, false, false, false, true, true];
        let run = |src: Tensor<3>, pad: Option<&[bool]>| {
            let (memory, outs) =
                model
                    .transformer
                    .forward(src, pos.clone(), query_pos.clone(), pad);
            (memory.slice([0..2, 0..2, 0..8]), outs[1].clone())
        };
        let diff = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
        let (m0, q0) = run(src.clone(), Some(&padding));
        let (m1, q1) = run(changed.clone(), Some(&padding));
        assert!(diff(m0, m1) < 1e-5 && diff(q0, q1) < 1e-5);
        let (_, q0) = run(src, None);
        let (_, q1) = run(changed, None);
        assert!(diff(q0, q1) > 1e-3);
    }
}
