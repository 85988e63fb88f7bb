//! Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021), with the
//! semantics of its PyTorch reference `ms_deform_attn_core_pytorch`
//! (`models/ops/functions/ms_deform_attn_func.py`; Mask2Former's pixel decoder uses the
//! same module): each query attends, per head, to `P` sampled points on each of `L`
//! levels, at its reference point plus learned offsets, with softmax weights over the
//! `L·P` samples.
//!
//! - [`ms_deform_attn_core`]: values `[B, S, heads, d]` (the `L` levels flattened and
//!   concatenated), sampling locations `[B, Q, heads, L, P, 2]` as `(x, y)` in `[0, 1]` of
//!   each level, weights `[B, Q, heads, L, P]` → `[B, Q, heads·d]`. Each level is sampled
//!   with `grid_sample` (bilinear, zero padding, `align_corners = False`, grid `2·loc − 1`):
//!   burn's `grid_sample_2d` has those semantics (checked against PyTorch in `sample.rs`).
//! - [`MsDeformAttn`]: the module (`MSDeformAttn`): `value_proj`, offsets and weights
//!   predicted from the query by `sampling_offsets` / `attention_weights`, locations =
//!   reference point plus offset / (W_l, H_l) (2-coordinate reference points) or plus
//!   offset / P · (w, h) / 2 (4-coordinate boxes), `output_proj`. Padded positions of
//!   the input are zeroed in the values (`input_padding_mask`). Init as the official
//!   `_reset_parameters`: offsets' weight 0 and bias the `heads` directions on the unit
//!   square's border scaled by `1..=P`, attention weights 0 (uniform), value and output
//!   projections Xavier-uniform with zero bias.
//!
//! The query is taken with its positional embedding already added (the official encoder
//! and decoder layers add it before the call). Reference values:
//! `scripts/fixtures/deformable.py` (Hugging Face `transformers`' port,
//! `DeformableDetrMultiscaleDeformableAttention` with its PyTorch path) into
//! `tests/fixtures/ops/deformable.json`.

use std::f64::consts::PI;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::ops::{GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
use burn::tensor::{Bool, Device, Tensor};

/// The sampling core: see the module docs.
///
/// # Panics
/// If `shapes` does not cover the `S` values, or the tensors disagree in `B`, `heads`, `L`
/// or `P`.
pub fn ms_deform_attn_core(
    value: Tensor<4>,
    shapes: &[(usize, usize)],
    sampling_locations: Tensor<6>,
    attention_weights: Tensor<5>,
) -> Tensor<3> {
    let [b, s, heads, d] = value.dims();
    let [_, q, _, levels, points, _] = sampling_locations.dims();
    assert_eq!(
        shapes.iter().map(|(h, w)| h * w).sum::<usize>(),
        s,
        "deformable attention: the level shapes {shapes:?} do not cover {s} values"
    );
    assert_eq!(
        shapes.len(),
        levels,
        "deformable attention: {levels} levels sampled"
    );
    let options = GridSampleOptions::new(InterpolateMode::Bilinear)
        .with_padding_mode(GridSamplePaddingMode::Zeros)
        .with_align_corners(false);
    let grids = sampling_locations.mul_scalar(2.0).sub_scalar(1.0);
    let mut start = 0;
    let mut sampled = Vec::with_capacity(levels);
    for (l, &(h, w)) in shapes.iter().enumerate() {
        let value_l = value
            .clone()
            .slice([0..b, start..start + h * w, 0..heads, 0..d])
            .permute([0, 2, 3, 1])
            .reshape([b * heads, d, h, w]);
        start += h * w;
        let grid_l = grids
            .clone()
            .slice([0..b, 0..q, 0..heads, l..l + 1, 0..points, 0..2])
            .reshape([b, q, heads, points, 2])
            .swap_dims(1, 2)
            .reshape([b * heads, q, points, 2]);
        // [B·heads, d, Q, P]
        sampled.push(value_l.grid_sample_2d(grid_l, options.clone()));
    }
    // [B·heads, d, Q, L, P] → [B·heads, d, Q, L·P]
    let sampled = Tensor::stack::<5>(sampled, 3).reshape([b * heads, d, q, levels * points]);
    let weights = attention_weights
        .swap_dims(1, 2)
        .reshape([b * heads, 1, q, levels * points]);
    (sampled * weights)
        .sum_dim(3)
        .reshape([b, heads * d, q])
        .swap_dims(1, 2)
}

/// Multi-scale deformable attention.
#[derive(Config, Debug)]
pub struct MsDeformAttnConfig {
    /// Model width (Mask2Former's pixel decoder: `CONVS_DIM` 256).
    pub d_model: usize,
    /// Feature levels (Mask2Former: 3, the strides 8/16/32).
    pub n_levels: usize,
    /// Heads (8).
    #[config(default = 8)]
    pub n_heads: usize,
    /// Sampling points per head and level (4).
    #[config(default = 4)]
    pub n_points: usize,
}

impl MsDeformAttnConfig {
    /// The module with the official initialisation (module docs).
    ///
    /// # Panics
    /// If `d_model` is not a multiple of `n_heads`.
    pub fn init(&self, device: &Device) -> MsDeformAttn {
        let (c, heads, levels, points) = (self.d_model, self.n_heads, self.n_levels, self.n_points);
        assert!(
            c % heads == 0,
            "deformable attention: d_model {c} is not a multiple of {heads} heads"
        );
        let zeros = |o| {
            LinearConfig::new(c, o)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        let xavier = || {
            let mut l = LinearConfig::new(c, c)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device);
            l.bias = Some(Param::from_tensor(Tensor::zeros([c], device)));
            l
        };
        let mut sampling_offsets = zeros(heads * levels * points * 2);
        let mut bias = Vec::with_capacity(heads * levels * points * 2);
        for h in 0..heads {
            let theta = h as f64 * (2.0 * PI / heads as f64);
            let (x, y) = (theta.cos(), theta.sin());
            let m = x.abs().max(y.abs());
            for _ in 0..levels {
                for p in 0..points {
                    let k = (p + 1) as f64;
                    bias.push((x / m * k) as f32);
                    bias.push((y / m * k) as f32);
                }
            }
        }
        sampling_offsets.bias = Some(Param::from_tensor(Tensor::from_floats(
            bias.as_slice(),
            device,
        )));
        MsDeformAttn {
            sampling_offsets,
            attention_weights: zeros(heads * levels * points),
            value_proj: xavier(),
            output_proj: xavier(),
            n_heads: heads,
            n_levels: levels,
            n_points: points,
        }
    }
}

/// See the module docs.
#[derive(Module, Debug)]
pub struct MsDeformAttn {
    pub sampling_offsets: Linear,
    pub attention_weights: Linear,
    pub value_proj: Linear,
    pub output_proj: Linear,
    #[module(skip)]
    pub n_heads: usize,
    #[module(skip)]
    pub n_levels: usize,
    #[module(skip)]
    pub n_points: usize,
}

impl MsDeformAttn {
    /// `query` `[B, Q, C]` (positional embedding added), `reference_points` `[B, Q, L, 2]`
    /// (`x, y` in `[0, 1]`) or `[B, Q, L, 4]` (`cx, cy, w, h`), `input` `[B, S, C]` the levels
    /// of `shapes` flattened and concatenated, `padding` `[B, S]` (true = padded) →
    /// `[B, Q, C]`.
    ///
    /// # Panics
    /// On shapes that disagree (see [`ms_deform_attn_core`]) or a last reference-point
    /// dimension other than 2 or 4.
    pub fn forward(
        &self,
        query: Tensor<3>,
        reference_points: Tensor<4>,
        input: Tensor<3>,
        shapes: &[(usize, usize)],
        padding: Option<Tensor<2, Bool>>,
    ) -> Tensor<3> {
        let [b, q, c] = query.dims();
        let s = input.dims()[1];
        let (heads, levels, points) = (self.n_heads, self.n_levels, self.n_points);
        let device = query.device();
        let mut value = self.value_proj.forward(input);
        if let Some(pad) = padding {
            value = value.mask_fill(pad.reshape([b, s, 1]).expand([b, s, c]), 0.0);
        }
        let value = value.reshape([b, s, heads, c / heads]);
        let offsets = self
            .sampling_offsets
            .forward(query.clone())
            .reshape([b, q, heads, levels, points, 2]);
        let weights = softmax(
            self.attention_weights
                .forward(query)
                .reshape([b, q, heads, levels * points]),
            3,
        )
        .reshape([b, q, heads, levels, points]);
        let coords = reference_points.dims()[3];
        let locations = match coords {
            2 => {
                let norm: Vec<f32> = shapes
                    .iter()
                    .flat_map(|&(h, w)| [w as f32, h as f32])
                    .collect();
                let norm = Tensor::<1>::from_floats(norm.as_slice(), &device)
                    .reshape([1, 1, 1, levels, 1, 2]);
                reference_points.reshape([b, q, 1, levels, 1, 2]) + offsets / norm
            }
            4 => {
                let centre = reference_points
                    .clone()
                    .slice([0..b, 0..q, 0..levels, 0..2])
                    .reshape([b, q, 1, levels, 1, 2]);
                let size = reference_points
                    .slice([0..b, 0..q, 0..levels, 2..4])
                    .reshape([b, q, 1, levels, 1, 2]);
                centre + offsets.div_scalar(points as f32) * size.mul_scalar(0.5)
            }
            other => panic!(
                "deformable attention: reference points have {other} coordinates, not 2 or 4"
            ),
        };
        let out = ms_deform_attn_core(value, shapes, locations, weights);
        self.output_proj.forward(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn a_sample_on_a_pixel_centre_reads_that_pixel() {
        // One level 2x2, one head of width 1, one query, one point with weight 1 at the
        // centre of pixel (x=1, y=0): (1.5 / 2, 0.5 / 2).
        let device = Device::flex();
        let value = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 4, 1, 1]),
            &device,
        );
        let loc = Tensor::<6>::from_data(
            TensorData::new(vec![0.75f32, 0.25], [1, 1, 1, 1, 1, 2]),
            &device,
        );
        let w = Tensor::<5>::ones([1, 1, 1, 1, 1], &device);
        let out: Vec<f32> = ms_deform_attn_core(value, &[(2, 2)], loc, w)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!((out[0] - 2.0).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn at_init_the_output_is_the_projected_mean_of_the_samples() {
        // Attention weights start uniform (zero logits): shapes hold and values are finite.
        let device = Device::flex();
        let m = MsDeformAttnConfig::new(16, 2)
            .with_n_heads(4)
            .with_n_points(2)
            .init(&device);
        let shapes = [(4, 4), (2, 2)];
        let query = Tensor::<3>::random([2, 3, 16], Distribution::Default, &device);
        let input = Tensor::<3>::random([2, 20, 16], Distribution::Default, &device);
        let refs = Tensor::<4>::random([2, 3, 2, 2], Distribution::Default, &device);
        let out = m.forward(query, refs, input, &shapes, None);
        assert_eq!(out.dims(), [2, 3, 16]);
        let v: Vec<f32> = out.into_data().try_into_vec::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()));
    }
}
