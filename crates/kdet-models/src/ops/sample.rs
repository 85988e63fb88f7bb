//! Point sampling of feature maps at real-valued coordinates, as PointRend and Mask2Former
//! use it to compute mask losses on a few points instead of on every pixel.
//!
//! References (the semantics reproduced here, in kdet's words):
//! - detectron2 `projects/PointRend/point_rend/point_features.py`, `point_sample`:
//!   coordinates in `[0, 1] × [0, 1]` of the map's extent (`(0, 0)` the top-left corner
//!   of the top-left pixel, `(1, 1)` the bottom-right corner of the bottom-right pixel),
//!   mapped to `grid_sample`'s `[-1, 1]` by `2 c − 1`, bilinear, `align_corners=False`,
//!   zero padding: a pixel-centre convention, and a point outside the map sees zeros.
//! - the same file, `get_uncertain_point_coords_with_randomness` (used by Mask2Former's
//!   `mask2former/modeling/criterion.py`, `SetCriterion.loss_masks`, with
//!   `oversample_ratio = 3`, `importance_sample_ratio = 0.75` and `calculate_uncertainty`
//!   `= −|logit|`): draw `⌊P·k⌋` uniform points, keep the `⌊β·P⌋` most uncertain ones
//!   (uncertainty of the *sampled* logit), and fill up with `P − ⌊β·P⌋` fresh uniform
//!   points.
//!
//! Built on burn's `Tensor::grid_sample_2d`, whose bilinear / zero-padding /
//! `align_corners = false` semantics equal PyTorch's `F.grid_sample` (pixel
//! `x = ((g + 1)·W − 1) / 2`, out-of-map corners read as zero): no correction was needed,
//! on burn-flex's kernel (plain device) nor on burn's autodiff path, which differentiates
//! `grid_sample_2d` through its reference decomposition into gather / mask / arithmetic
//! ops ([`point_sample_grid_decomposed`]) and agrees with PyTorch's
//! `grid_sampler_2d_backward` for the map and the grid. That decomposition is a long
//! graph, so when the map or the coordinates are tracked, [`point_sample_grid`] takes a
//! dedicated path with the same values and gradients and a short graph
//! (`bilinear_with_gradient`). All three are checked on
//! `tests/fixtures/ops/point_sample.json`; their speed against PyTorch is in
//! `docs/benchmarks.md` ("Sampling ops against PyTorch").

use burn::config::Config;
use burn::tensor::ops::{GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
use burn::tensor::{Distribution, Int, Tensor, TensorData};

/// `grid_sample` options of detectron2's `point_sample` as Mask2Former calls it.
fn point_sample_options() -> GridSampleOptions {
    GridSampleOptions::new(InterpolateMode::Bilinear)
        .with_padding_mode(GridSamplePaddingMode::Zeros)
        .with_align_corners(false)
}

/// Samples `input` at `coords` (bilinear, zero outside the map), detectron2's
/// `point_sample(input, point_coords, align_corners=False)`.
///
/// `coords[n, p] = (x, y)` in `[0, 1]`, relative to the map's extent; values outside
/// `[0, 1]` are allowed and read zeros beyond the half-pixel border.
///
/// # Shapes
/// - `input`: `[N, C, H, W]`, `coords`: `[N, P, 2]` → `[N, C, P]`
pub fn point_sample(input: Tensor<4>, coords: Tensor<3>) -> Tensor<3> {
    let [n, c, _, _] = input.dims();
    let [nc, p, two] = coords.dims();
    assert!(
        nc == n && two == 2,
        "point_sample: coords must be [{n}, P, 2], got [{nc}, {p}, {two}]"
    );
    // [N, P, 2] -> [N, P, 1, 2]: a P x 1 grid
    let out = point_sample_grid(input, coords.reshape([n, p, 1, 2]));
    out.reshape([n, c, p])
}

/// The grid form of [`point_sample`] (detectron2's 4-d `point_coords`): one sample per
/// grid cell. Without a graph (plain device, or constants) this is burn's
/// `grid_sample_2d`; when the map or the coordinates are tracked on an autodiff device, the
/// dedicated path with the same values and gradients (see the module header).
///
/// # Shapes
/// - `input`: `[N, C, H, W]`, `coords`: `[N, Hg, Wg, 2]` → `[N, C, Hg, Wg]`
pub fn point_sample_grid(input: Tensor<4>, coords: Tensor<4>) -> Tensor<4> {
    let [n, _, _, _] = input.dims();
    let [nc, hg, wg, two] = coords.dims();
    assert!(
        nc == n && two == 2,
        "point_sample_grid: coords must be [{n}, Hg, Wg, 2], got [{nc}, {hg}, {wg}, {two}]"
    );
    if input.is_tracked() || coords.is_tracked() {
        return bilinear_with_gradient(input, coords);
    }
    // [0, 1] -> grid_sample's [-1, 1]
    let grid = coords.mul_scalar(2.0).sub_scalar(1.0);
    input.grid_sample_2d(grid, point_sample_options())
}

/// [`point_sample_grid`] on `grid_sample_2d` alone, through burn's autodiff decomposition
/// on an autodiff device: the reference the dedicated path below is tested against.
pub fn point_sample_grid_decomposed(input: Tensor<4>, coords: Tensor<4>) -> Tensor<4> {
    let grid = coords.mul_scalar(2.0).sub_scalar(1.0);
    input.grid_sample_2d(grid, point_sample_options())
}

/// The autodiff path of [`point_sample_grid`]: the same bilinear sample with a short
/// graph. burn differentiates `grid_sample_2d` through its reference decomposition (about
/// forty tracked float ops over `[N, C, Hg, Wg]`, besides its untracked integer and mask
/// ops; counted in burn-backend 0.22.1 `modules/grid_sample.rs`). Here the
/// corner indices and bilinear weights are computed once on the host from the coordinates
/// (which `floor` makes piecewise constant anyway), and the graph holds one `select` of
/// the four corners of every point (backward: one scatter-add) and one weighting. The
/// coordinates get a zero-valued linear term `A·x + B·y − detach(A·x + B·y)`, with
/// `A = ∂out/∂x` and `B = ∂out/∂y` computed on the host from the map's values: its
/// gradient is PyTorch's `grid_sampler_2d_backward` grid gradient. Both gradients are
/// exact; at integer pixel coordinates they are the same one-sided derivatives as
/// PyTorch's (`floor` picks the corner).
///
/// (Tried and dropped: one row `select` of 2×2 patches of the zero-padded map instead of
/// four scalar ones per point; no faster at 12544 points, 4× slower at 196.)
fn bilinear_with_gradient(input: Tensor<4>, coords: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = input.dims();
    let [_, hg, wg, _] = coords.dims();
    let (p, hw) = (hg * wg, h * w);
    assert!(
        n * c * hw <= i32::MAX as usize,
        "point_sample: {n}x{c}x{h}x{w} is too large for i32 indices"
    );
    let device = input.device();
    let host = |t: Tensor<4>| {
        t.without_autodiff()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 data after convert")
    };
    let xy = host(coords.clone());
    // constant coordinates (Mask2Former's random and uncertain points) need no gradient
    let track_coords = coords.is_tracked();
    let values = if track_coords {
        host(input.clone())
    } else {
        Vec::new()
    };
    // index [N, C, 4, P] into the flat map (i32: burn-flex's integer type, no conversion
    // on upload), weight [N, 1, 4, P]; corner k is 00, 10, 01, 11 as (dx, dy); an
    // outside corner keeps index 0 with weight 0 (zero padding)
    let mut index = vec![0i32; n * c * 4 * p];
    let mut weight = vec![0f32; n * 4 * p];
    let mut d_x = vec![0f32; if track_coords { n * c * p } else { 0 }];
    let mut d_y = vec![0f32; d_x.len()];
    let (wf, hf) = (w as f32, h as f32);
    for b in 0..n {
        for i in 0..p {
            let cx = xy[(b * p + i) * 2];
            let cy = xy[(b * p + i) * 2 + 1];
            // PyTorch's grid_sampler_compute_source_index, align_corners=False, on the
            // grid value 2c − 1 as point_sample forms it
            let px = ((2.0 * cx - 1.0 + 1.0) * wf - 1.0) / 2.0;
            let py = ((2.0 * cy - 1.0 + 1.0) * hf - 1.0) / 2.0;
            let (x0, y0) = (px.floor(), py.floor());
            let (fx, fy) = (px - x0, py - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            // (x, y, weight, ∂weight/∂px, ∂weight/∂py)
            let corners = [
                (x0, y0, (1.0 - fx) * (1.0 - fy), fy - 1.0, fx - 1.0),
                (x0 + 1, y0, fx * (1.0 - fy), 1.0 - fy, -fx),
                (x0, y0 + 1, (1.0 - fx) * fy, -fy, 1.0 - fx),
                (x0 + 1, y0 + 1, fx * fy, fy, fx),
            ];
            for (k, &(xi, yi, wt, dwx, dwy)) in corners.iter().enumerate() {
                if xi < 0 || xi >= w as i64 || yi < 0 || yi >= h as i64 {
                    continue;
                }
                let pixel = yi as usize * w + xi as usize;
                weight[(b * 4 + k) * p + i] = wt;
                for ch in 0..c {
                    let plane = b * c + ch;
                    index[(plane * 4 + k) * p + i] = (plane * hw + pixel) as i32;
                    if track_coords {
                        // ∂px/∂cx = W, ∂py/∂cy = H
                        let v = values[plane * hw + pixel];
                        d_x[plane * p + i] += v * dwx * wf;
                        d_y[plane * p + i] += v * dwy * hf;
                    }
                }
            }
        }
    }
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [n * c * 4 * p]), &device);
    let weight = Tensor::<4>::from_data(TensorData::new(weight, [n, 1, 4, p]), &device);
    // the four corners of every point, [N, C, 4, P], weighted and summed
    let corners = input
        .reshape([n * c * hw])
        .select(0, index)
        .reshape([n, c, 4, p]);
    let out = (corners * weight).sum_dim(2).reshape([n, c, hg, wg]);
    if !track_coords {
        return out;
    }
    let constant =
        |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [n, c, hg, wg]), &device);
    let cx = coords.clone().slice_dim(3, 0..1).reshape([n, 1, hg, wg]);
    let cy = coords.slice_dim(3, 1..2).reshape([n, 1, hg, wg]);
    let linear = cx * constant(d_x) + cy * constant(d_y);
    let zero = linear.clone() - linear.detach();
    out + zero
}

/// Mask2Former's `calculate_uncertainty`: `−|logit|` of a class-agnostic mask logit, so
/// points on the decision boundary (logit 0) are the most uncertain.
///
/// # Shapes
/// - `logits`: any → same
pub fn calculate_uncertainty<const D: usize>(logits: Tensor<D>) -> Tensor<D> {
    logits.abs().neg()
}

/// Configuration of [`uncertain_point_coords_with_randomness`] (Mask2Former
/// `configs/coco/instance-segmentation/Base-COCO-InstanceSegmentation.yaml`:
/// `TRAIN_NUM_POINTS: 12544`, `OVERSAMPLE_RATIO: 3.0`, `IMPORTANCE_SAMPLE_RATIO: 0.75`).
#[derive(Config, Debug, PartialEq)]
pub struct UncertainPointsConfig {
    /// Points returned per mask (Mask2Former: `112 * 112 = 12544`).
    #[config(default = 12544)]
    pub num_points: usize,
    /// `k ≥ 1`: `⌊k · num_points⌋` candidates are drawn (Mask2Former: 3.0).
    #[config(default = 3.0)]
    pub oversample_ratio: f64,
    /// `β ∈ [0, 1]`: `⌊β · num_points⌋` points are the most uncertain candidates, the rest
    /// fresh uniform draws (Mask2Former: 0.75).
    #[config(default = 0.75)]
    pub importance_sample_ratio: f64,
}

impl UncertainPointsConfig {
    /// `(candidates, uncertain, random)` point counts, with Python's `int()` truncation.
    ///
    /// # Panics
    /// If `oversample_ratio < 1` or `importance_sample_ratio ∉ [0, 1]` (detectron2's
    /// asserts).
    pub fn counts(&self) -> (usize, usize, usize) {
        assert!(
            self.oversample_ratio >= 1.0,
            "oversample_ratio must be >= 1, got {}",
            self.oversample_ratio
        );
        assert!(
            (0.0..=1.0).contains(&self.importance_sample_ratio),
            "importance_sample_ratio must lie in [0, 1], got {}",
            self.importance_sample_ratio
        );
        let sampled = (self.num_points as f64 * self.oversample_ratio) as usize;
        let uncertain = (self.importance_sample_ratio * self.num_points as f64) as usize;
        (sampled, uncertain, self.num_points - uncertain)
    }
}

/// Where [`uncertain_point_coords_with_randomness`] takes its uniform `[0, 1)` numbers.
pub enum PointDraws<'a> {
    /// `Tensor::random` on the logits' device: reproducible after `device.seed(s)`
    /// (`tests/seeded_draws.rs`, alone in its process: the seed is the device's, shared by
    /// every thread).
    Device,
    /// A host generator, called once per number in the order PyTorch draws them: first
    /// the `[N, ⌊k·P⌋, 2]` candidates, then the `[N, P − ⌊β·P⌋, 2]` random points, each
    /// row-major with `x` before `y`.
    Host(&'a mut dyn FnMut() -> f32),
}

impl PointDraws<'_> {
    fn uniform(&mut self, shape: [usize; 3], device: &burn::tensor::Device) -> Tensor<3> {
        match self {
            PointDraws::Device => Tensor::random(shape, Distribution::Default, device),
            PointDraws::Host(next) => {
                let values: Vec<f32> = (0..shape.iter().product()).map(|_| next()).collect();
                Tensor::from_data(TensorData::new(values, shape), device)
            }
        }
    }
}

/// Mask2Former's point selection for the mask losses (detectron2
/// `get_uncertain_point_coords_with_randomness` with `calculate_uncertainty`): draws
/// `⌊k·P⌋` uniform candidates per mask, samples the logits there, keeps the `⌊β·P⌋`
/// candidates of highest uncertainty `−|logit|` (in decreasing order, as `torch.topk`),
/// then appends `P − ⌊β·P⌋` fresh uniform points.
///
/// Runs without gradients (the reference runs under `torch.no_grad()`): the logits are
/// read off their graph, and the coordinates are constants.
///
/// # Shapes
/// - `coarse_logits`: `[N, 1, H, W]` → `[N, P, 2]` coordinates in `[0, 1)`
pub fn uncertain_point_coords_with_randomness(
    coarse_logits: Tensor<4>,
    config: &UncertainPointsConfig,
    draws: &mut PointDraws<'_>,
) -> Tensor<3> {
    let [n, one, _, _] = coarse_logits.dims();
    assert_eq!(
        one, 1,
        "uncertain points need class-agnostic logits [N, 1, H, W], got {one} channels"
    );
    let (sampled, uncertain, random) = config.counts();
    // No graph: sample on the plain device (burn-flex's kernel), hand the coordinates back
    // on the logits' kind of device.
    let autodiff = coarse_logits.is_autodiff();
    let coarse_logits = coarse_logits.without_autodiff();
    let device = coarse_logits.device();
    let candidates = draws.uniform([n, sampled, 2], &device);
    let mut parts = Vec::with_capacity(2);
    if uncertain > 0 {
        let logits = point_sample(coarse_logits, candidates.clone()); // [N, 1, S]
        let uncertainty = calculate_uncertainty(logits).reshape([n, sampled]);
        let (_, idx) = uncertainty.topk_with_indices(uncertain, 1); // [N, U]
        let idx: Tensor<3, Int> = idx.reshape([n, uncertain, 1]).expand([n, uncertain, 2]);
        parts.push(candidates.gather(1, idx));
    }
    if random > 0 {
        parts.push(draws.uniform([n, random, 2], &device));
    }
    let coords = Tensor::cat(parts, 1);
    if autodiff { coords.autodiff() } else { coords }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    /// A 1×1×2×2 map [[1, 2], [3, 4]].
    fn map(device: &Device) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]),
            device,
        )
    }

    #[test]
    fn pixel_centres_corners_and_outside() {
        let device = Device::flex();
        // Pixel centres are at (i + 0.5) / 2; the map's centre averages all four; the
        // top-left corner (0, 0) lies half a pixel outside both borders: 1/4 of pixel (0,0);
        // (2, 0.25) is 1.5 maps to the right: zero.
        let coords = Tensor::<3>::from_data(
            TensorData::new(
                vec![
                    0.25f32, 0.25, 0.75, 0.25, 0.25, 0.75, 0.5, 0.5, 0.0, 0.0, 2.0, 0.25,
                ],
                [1, 6, 2],
            ),
            &device,
        );
        let got = vals(point_sample(map(&device), coords));
        let want = [1.0, 2.0, 3.0, 2.5, 0.25, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn grid_form_equals_point_form() {
        let device = Device::flex();
        let input = Tensor::<4>::random([2, 3, 5, 4], Distribution::Default, &device);
        let coords = Tensor::<4>::random([2, 3, 2, 2], Distribution::Uniform(-0.2, 1.2), &device);
        let grid = vals(point_sample_grid(input.clone(), coords.clone()));
        let points = vals(point_sample(input, coords.reshape([2, 6, 2])));
        assert_eq!(grid, points);
    }

    #[test]
    fn gradient_reaches_input_and_coords() {
        let device = Device::flex().autodiff();
        let input = map(&device).require_grad();
        // (x, y) = (0.6, 0.5) is pixel (x_pix, y_pix) = (2x − 0.5, 2y − 0.5) = (0.7, 0.5), inside
        // the four pixels, where the map is 1 + x_pix + 2·y_pix: d/dx = 2, d/dy = 4.
        let coords = Tensor::<3>::from_data(TensorData::new(vec![0.6f32, 0.5], [1, 1, 2]), &device)
            .require_grad();
        let out = point_sample(input.clone(), coords.clone());
        let grads = out.sum().backward();
        let g_coords = vals(coords.grad(&grads).expect("coords grad"));
        assert!((g_coords[0] - 2.0).abs() < 1e-5 && (g_coords[1] - 4.0).abs() < 1e-5);
        let g_input = vals(input.grad(&grads).expect("input grad"));
        // weights of the four pixels at (x_pix, y_pix) = (0.7, 0.5)
        let want = [0.15, 0.35, 0.15, 0.35];
        for (g, w) in g_input.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g_input:?}");
        }
    }

    /// The dedicated autodiff path against burn's decomposition of `grid_sample_2d`:
    /// same values, same gradients to the map and to the coordinates, with points inside,
    /// straddling the border and fully outside, on a non-square map with 3 channels.
    #[test]
    fn dedicated_gradient_equals_the_decomposition() {
        let device = Device::flex().autodiff();
        let input = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let coords = Tensor::<4>::random([2, 4, 3, 2], Distribution::Uniform(-0.3, 1.3), &device);
        let upstream = Tensor::<4>::random([2, 3, 4, 3], Distribution::Default, &device);
        let run = |f: fn(Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let x = input.clone().detach().require_grad();
            let c = coords.clone().detach().require_grad();
            let out = f(x.clone(), c.clone());
            let grads = (out.clone() * upstream.clone()).sum().backward();
            (
                vals(out),
                vals(x.grad(&grads).expect("input grad")),
                vals(c.grad(&grads).expect("coords grad")),
            )
        };
        let (out, gx, gc) = run(point_sample_grid);
        let (out_ref, gx_ref, gc_ref) = run(point_sample_grid_decomposed);
        for (what, got, want) in [
            ("output", out, out_ref),
            ("grad input", gx, gx_ref),
            ("grad coords", gc, gc_ref),
        ] {
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-4, "{what}: {err}\n{got:?}\n{want:?}");
        }
    }

    /// Constant coordinates (Mask2Former's sampled points) on an autodiff device: the map's
    /// gradient is the decomposition's, and the coordinates get none.
    #[test]
    fn constant_coordinates_get_no_gradient() {
        let device = Device::flex().autodiff();
        let input = Tensor::<4>::random([1, 2, 4, 5], Distribution::Normal(0.0, 1.0), &device);
        let coords = Tensor::<4>::random([1, 3, 2, 2], Distribution::Uniform(-0.2, 1.2), &device);
        assert!(!coords.is_tracked());
        let run = |f: fn(Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let x = input.clone().require_grad();
            let grads = f(x.clone(), coords.clone()).sum().backward();
            assert!(coords.grad(&grads).is_none());
            vals(x.grad(&grads).expect("input grad"))
        };
        let got = run(point_sample_grid);
        let want = run(point_sample_grid_decomposed);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{got:?} vs {want:?}");
    }

    #[test]
    fn counts_truncate_like_python() {
        let c = UncertainPointsConfig::new();
        assert_eq!(c.counts(), (37632, 9408, 3136));
        let c = UncertainPointsConfig::new().with_num_points(7);
        // int(7 * 3.0) = 21, int(0.75 * 7) = 5
        assert_eq!(c.counts(), (21, 5, 2));
    }

    #[test]
    fn uncertain_points_pick_the_boundary() {
        let device = Device::flex();
        // Logits −x·10 + 5 along x: the boundary is the column x = 0.5 (logit 0).
        let w = 16;
        let row: Vec<f32> = (0..w)
            .map(|i| 5.0 - 10.0 * (i as f32 + 0.5) / w as f32)
            .collect();
        let logits = Tensor::<4>::from_data(TensorData::new(row.repeat(w), [1, 1, w, w]), &device);
        let config = UncertainPointsConfig::new()
            .with_num_points(8)
            .with_oversample_ratio(4.0)
            .with_importance_sample_ratio(0.5);
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let coords = vals(uncertain_point_coords_with_randomness(
            logits,
            &config,
            &mut PointDraws::Host(&mut next),
        ));
        assert_eq!(coords.len(), 16);
        // The 4 chosen points are the 4 candidates closest to x = 0.5, in order.
        let chosen: Vec<f32> = coords[..8].chunks(2).map(|p| (p[0] - 0.5).abs()).collect();
        assert!(chosen.windows(2).all(|d| d[0] <= d[1]), "{chosen:?}");
        assert!(chosen[3] < 0.2, "{chosen:?}");
        assert!(coords.iter().all(|&c| (0.0..1.0).contains(&c)));
    }

    /// Logits on an autodiff device (as in training) give the same points, as constants on
    /// that kind of device.
    #[test]
    fn uncertain_points_of_tracked_logits() {
        let plain = Device::flex();
        let logits = Tensor::<4>::random([2, 1, 6, 6], Distribution::Normal(0.0, 1.0), &plain);
        let tracked = logits.clone().autodiff().require_grad();
        let config = UncertainPointsConfig::new().with_num_points(12);
        let draws = |seed: u32| {
            let mut i = seed;
            move || {
                i = i.wrapping_mul(1103515245).wrapping_add(12345);
                (i >> 8) as f32 / (1u32 << 24) as f32
            }
        };
        let mut a = draws(3);
        let mut b = draws(3);
        let from_plain =
            uncertain_point_coords_with_randomness(logits, &config, &mut PointDraws::Host(&mut a));
        let from_tracked =
            uncertain_point_coords_with_randomness(tracked, &config, &mut PointDraws::Host(&mut b));
        assert!(from_tracked.is_autodiff() && !from_plain.is_autodiff());
        assert_eq!(vals(from_plain), vals(from_tracked));
    }
}
