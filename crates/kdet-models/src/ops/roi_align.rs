//! RoIAlign (He et al., "Mask R-CNN", ICCV 2017, arXiv:1703.06870, Sec. 3) and FPN level
//! assignment (Lin et al., "Feature Pyramid Networks", CVPR 2017, arXiv:1612.03144,
//! Eq. 1), with torchvision's and detectron2's semantics.
//!
//! References (reproduced here in kdet's words):
//! - torchvision `torchvision/csrc/ops/cpu/roi_align_kernel.cpp` (`roi_align_forward_kernel_impl`,
//!   `pre_calc_for_bilinear_interpolate`) and the Python reference
//!   `torchvision/ops/roi_align.py` (`_roi_align`, `_bilinear_interpolate`): with
//!   `aligned = true` the box is shifted by half a pixel (`x·scale − 0.5`), so that a box
//!   edge on a pixel edge samples that pixel's centre; with `aligned = false` it is not
//!   shifted and its size is at least one pixel. Each of the `oh × ow` bins averages a
//!   `gh × gw` grid of bilinear samples at the centres of its sub-cells, `gh = sampling_ratio`,
//!   or `⌈roi_h / oh⌉` when `sampling_ratio ≤ 0` (adaptive, per RoI). A sample with
//!   `y < −1` or `y > H` (likewise `x`) contributes 0 but still counts in the average;
//!   otherwise `y ≤ 0` reads row 0, and `y ≥ H − 1` reads row `H − 1` alone.
//! - detectron2 `detectron2/modeling/poolers.py`, `assign_boxes_to_levels`:
//!   `level = ⌊k0 + log2(√area / 224 + 1e-8)⌋` clamped to the pyramid's levels (`k0 = 4`,
//!   canonical box size 224), and `ROIPooler.forward`, which pools each box from its level.
//!
//! How: the sampling plan (which input pixels, with which weights, make each output cell)
//! is computed on the host from the RoIs, which carry no gradient (torchvision's op has
//! none for them either). The device work is one `select` of the input pixels and one
//! `select_assign` (scatter-add) into the output cells, so the gradient to the input is
//! burn's own (scatter-add / gather) and exact. The multi-level form gathers from all the
//! levels at once. Checked against torchvision on `tests/fixtures/ops/roi_align.json`.

use burn::config::Config;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::output::FeatureMap;

/// Configuration of [`roi_align`] (torchvision `roi_align` arguments; the defaults are
/// detectron2's `ROIAlignV2` pooler: `aligned=True`, `POOLER_SAMPLING_RATIO: 0`).
#[derive(Config, Debug, PartialEq)]
pub struct RoiAlignConfig {
    /// `[oh, ow]` bins (Mask R-CNN box head 7×7, mask head 14×14).
    pub output_size: [usize; 2],
    /// Input pixels per box unit (`1 / stride` when boxes are in image pixels).
    #[config(default = 1.0)]
    pub spatial_scale: f64,
    /// Samples per bin side; `≤ 0` is adaptive, `⌈roi_size / output_size⌉` per RoI
    /// (detectron2 `POOLER_SAMPLING_RATIO: 0`).
    #[config(default = 0)]
    pub sampling_ratio: i32,
    /// The half-pixel shift of Detectron2's `ROIAlignV2` / torchvision `aligned=True`.
    #[config(default = true)]
    pub aligned: bool,
}

/// One RoI: batch index, then `x1, y1, x2, y2` in the units `spatial_scale` maps to input
/// pixels.
pub type Roi = [f32; 5];

/// Host sampling plan: output cell `dst[k]` gets `weight[k] · table[src[k]]`.
#[derive(Debug, Default)]
struct Plan {
    src: Vec<i32>,
    dst: Vec<i32>,
    weight: Vec<f32>,
}

/// Geometry of one map in the gather table (all maps stacked as rows `[N·H·W, C]`).
#[derive(Debug, Clone, Copy)]
struct Level {
    offset: usize,
    batch: usize,
    height: usize,
    width: usize,
}

impl Plan {
    /// Adds RoI `r` (writing output rows `r·oh·ow ..`) sampled from `level`, torchvision's
    /// `roi_align_forward_kernel_impl` / `pre_calc_for_bilinear_interpolate` sample by
    /// sample (computed in f64; weights summed per input pixel and output cell).
    fn add_roi(&mut self, r: usize, roi: &Roi, level: Level, config: &RoiAlignConfig, scale: f64) {
        let [oh, ow] = config.output_size;
        let b = roi[0] as usize;
        assert!(
            roi[0] >= 0.0 && b < level.batch,
            "roi {r}: batch index {} outside the batch of {}",
            roi[0],
            level.batch
        );
        let offset = if config.aligned { 0.5 } else { 0.0 };
        let start_w = roi[1] as f64 * scale - offset;
        let start_h = roi[2] as f64 * scale - offset;
        let mut roi_w = roi[3] as f64 * scale - offset - start_w;
        let mut roi_h = roi[4] as f64 * scale - offset - start_h;
        if !config.aligned {
            // Mask R-CNN's original RoIAlign: boxes are at least one pixel
            roi_w = roi_w.max(1.0);
            roi_h = roi_h.max(1.0);
        }
        let bin_h = roi_h / oh as f64;
        let bin_w = roi_w / ow as f64;
        let (grid_h, grid_w) = if config.sampling_ratio > 0 {
            (config.sampling_ratio as i64, config.sampling_ratio as i64)
        } else {
            (
                (roi_h / oh as f64).ceil() as i64,
                (roi_w / ow as f64).ceil() as i64,
            )
        };
        // torchvision: count = max(gh·gw, 1); a non-positive grid samples nothing
        let count = (grid_h * grid_w).max(1) as f64;
        let (h, w) = (level.height as f64, level.width as f64);
        let base = level.offset + b * level.height * level.width;
        let mut cell: Vec<(i32, f64)> = Vec::new();
        for ph in 0..oh {
            for pw in 0..ow {
                cell.clear();
                for iy in 0..grid_h.max(0) {
                    let y = start_h + ph as f64 * bin_h + (iy as f64 + 0.5) * bin_h / grid_h as f64;
                    for ix in 0..grid_w.max(0) {
                        let x =
                            start_w + pw as f64 * bin_w + (ix as f64 + 0.5) * bin_w / grid_w as f64;
                        if y < -1.0 || y > h || x < -1.0 || x > w {
                            continue; // outside: contributes 0, still counted
                        }
                        let (y_low, y_high, ly) = corner(y, level.height);
                        let (x_low, x_high, lx) = corner(x, level.width);
                        let (hy, hx) = (1.0 - ly, 1.0 - lx);
                        for (yy, xx, wt) in [
                            (y_low, x_low, hy * hx),
                            (y_low, x_high, hy * lx),
                            (y_high, x_low, ly * hx),
                            (y_high, x_high, ly * lx),
                        ] {
                            let idx = (base + yy * level.width + xx) as i32;
                            match cell.iter_mut().find(|(i, _)| *i == idx) {
                                Some((_, acc)) => *acc += wt,
                                None => cell.push((idx, wt)),
                            }
                        }
                    }
                }
                let out = ((r * oh + ph) * ow + pw) as i32;
                for &(idx, wt) in &cell {
                    if wt != 0.0 {
                        self.src.push(idx);
                        self.dst.push(out);
                        self.weight.push((wt / count) as f32);
                    }
                }
            }
        }
    }

    /// `[R, C, oh, ow]` from the gather table `[rows, C]`.
    fn apply(mut self, table: Tensor<2>, num_rois: usize, output_size: [usize; 2]) -> Tensor<4> {
        let [_, c] = table.dims();
        let [oh, ow] = output_size;
        let device = table.device();
        let cells = num_rois * oh * ow;
        if self.src.is_empty() {
            // Every sample fell outside: keep the output connected to the input (zero
            // gradient rather than none) with one zero-weight term.
            self.src.push(0);
            self.dst.push(0);
            self.weight.push(0.0);
        }
        let k = self.src.len();
        // i32 indices: burn-flex's integer type, no conversion on upload
        let src = int_tensor(self.src, &device);
        let dst = int_tensor(self.dst, &device);
        let weight = Tensor::<1>::from_data(TensorData::new(self.weight, [k]), &device);
        let values = table.select(0, src) * weight.reshape([k, 1]); // [K, C]
        let out = Tensor::<2>::zeros([cells.max(1), c], &device).select_assign(
            0,
            dst,
            values,
            IndexingUpdateOp::Add,
        ); // [R·oh·ow, C]
        let out = if cells == 0 {
            out.slice([0..0, 0..c])
        } else {
            out
        };
        out.reshape([num_rois, oh, ow, c]).permute([0, 3, 1, 2])
    }
}

/// The plan's indices are i32: rows of the table and output cells must fit.
fn check_i32(table: &Tensor<2>, num_rois: usize, [oh, ow]: [usize; 2]) {
    let rows = table.dims()[0];
    assert!(
        rows <= i32::MAX as usize && num_rois * oh * ow <= i32::MAX as usize,
        "RoIAlign indices must fit in i32: {rows} map positions, {num_rois}x{oh}x{ow} cells"
    );
}

fn int_tensor(values: Vec<i32>, device: &Device) -> Tensor<1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

/// torchvision's `bilinear_interpolate` index rules for a coordinate already known to be
/// in `[−1, size]`: `(low, high, fraction)`.
fn corner(v: f64, size: usize) -> (usize, usize, f64) {
    let v = v.max(0.0);
    let low = v as usize; // truncation of a non-negative value, like C's (int)
    if low >= size - 1 {
        (size - 1, size - 1, 0.0)
    } else {
        (low, low + 1, v - low as f64)
    }
}

/// The stacked gather table `[Σ N·H·W, C]` of `maps` and each map's place in it.
fn table(maps: &[&Tensor<4>]) -> (Tensor<2>, Vec<Level>) {
    let mut levels = Vec::with_capacity(maps.len());
    let mut rows = Vec::with_capacity(maps.len());
    let mut offset = 0;
    let channels = maps[0].dims()[1];
    for map in maps {
        let [n, c, h, w] = map.dims();
        assert_eq!(
            c, channels,
            "multi-level RoIAlign needs equal channels, got {channels} and {c}"
        );
        levels.push(Level {
            offset,
            batch: n,
            height: h,
            width: w,
        });
        offset += n * h * w;
        // [N, C, H, W] -> [N, H, W, C] -> [N·H·W, C]
        rows.push((*map).clone().permute([0, 2, 3, 1]).reshape([n * h * w, c]));
    }
    (Tensor::cat(rows, 0), levels)
}

/// The RoIs of an `[R, 5]` tensor, on the host.
pub fn rois_to_host(rois: Tensor<2>) -> Vec<Roi> {
    let [r, five] = rois.dims();
    assert_eq!(five, 5, "rois must be [R, 5], got [{r}, {five}]");
    let data = rois
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data after convert");
    data.chunks(5)
        .map(|c| [c[0], c[1], c[2], c[3], c[4]])
        .collect()
}

/// RoIAlign of torchvision (`torchvision.ops.roi_align`), gradient to `input` only.
///
/// # Shapes
/// - `input`: `[N, C, H, W]`, `rois`: `R` RoIs (batch index, `x1, y1, x2, y2`)
///   → `[R, C, oh, ow]`
///
/// # Panics
/// If a batch index is not in `0..N`.
pub fn roi_align(input: Tensor<4>, rois: &[Roi], config: &RoiAlignConfig) -> Tensor<4> {
    let mut plan = Plan::default();
    let (table, levels) = table(&[&input]);
    check_i32(&table, rois.len(), config.output_size);
    for (r, roi) in rois.iter().enumerate() {
        plan.add_roi(r, roi, levels[0], config, config.spatial_scale);
    }
    plan.apply(table, rois.len(), config.output_size)
}

/// Configuration of [`multi_scale_roi_align`] (detectron2 `ROIPooler`).
#[derive(Config, Debug, PartialEq)]
pub struct MultiScaleRoiAlignConfig {
    /// `[oh, ow]` bins.
    pub output_size: [usize; 2],
    /// Samples per bin side, `≤ 0` adaptive (detectron2 `POOLER_SAMPLING_RATIO: 0`).
    #[config(default = 0)]
    pub sampling_ratio: i32,
    /// Detectron2 `POOLER_TYPE: ROIAlignV2`.
    #[config(default = true)]
    pub aligned: bool,
    /// `k0` of FPN Eq. 1 (detectron2 `canonical_level=4`).
    #[config(default = 4)]
    pub canonical_level: i32,
    /// The 224 of FPN Eq. 1 (detectron2 `canonical_box_size=224`).
    #[config(default = 224.0)]
    pub canonical_box_size: f64,
}

/// detectron2's `assign_boxes_to_levels`: `⌊k0 + log2(√area / s0 + 1e-8)⌋`, clamped to
/// `[min_level, max_level]`, returned relative to `min_level` (an index into the levels).
/// Boxes are `x1, y1, x2, y2` in image pixels; area `(x2 − x1)(y2 − y1)` as `Boxes.area()`.
pub fn assign_boxes_to_levels(
    boxes: &[[f32; 4]],
    min_level: i32,
    max_level: i32,
    canonical_box_size: f64,
    canonical_level: i32,
) -> Vec<usize> {
    boxes
        .iter()
        .map(|b| {
            let area = (b[2] as f64 - b[0] as f64) * (b[3] as f64 - b[1] as f64);
            let size = area.sqrt();
            let level = (canonical_level as f64 + (size / canonical_box_size + 1e-8).log2())
                .floor()
                .clamp(min_level as f64, max_level as f64);
            // NaN (negative area) clamps to NaN in Rust; detectron2's torch.clamp keeps NaN
            // too and its long cast gives an undefined level: kdet sends it to the finest.
            if level.is_nan() {
                0
            } else {
                (level as i32 - min_level) as usize
            }
        })
        .collect()
}

/// The FPN level of a stride: `log2(stride)`, which must be an integer.
fn level_of(stride: usize) -> i32 {
    assert!(
        stride.is_power_of_two(),
        "FPN strides must be powers of two, got {stride}"
    );
    stride.trailing_zeros() as i32
}

/// Multi-level RoIAlign (detectron2 `ROIPooler.forward` with `ROIAlignV2`): each RoI is
/// pooled from the level [`assign_boxes_to_levels`] picks, with `spatial_scale = 1 /
/// stride`; the output keeps the RoIs' order. The levels must be consecutive powers of
/// two (detectron2 asserts the same).
///
/// # Shapes
/// - `levels[l].tensor`: `[N, C, H_l, W_l]`, `rois`: `R` RoIs in image pixels
///   → `[R, C, oh, ow]`
pub fn multi_scale_roi_align(
    levels: &[FeatureMap],
    rois: &[Roi],
    config: &MultiScaleRoiAlignConfig,
) -> Tensor<4> {
    assert!(!levels.is_empty(), "multi-level RoIAlign needs a level");
    let min_level = level_of(levels[0].stride);
    let max_level = level_of(levels[levels.len() - 1].stride);
    for (i, l) in levels.iter().enumerate() {
        assert_eq!(
            level_of(l.stride),
            min_level + i as i32,
            "levels must have consecutive strides 2^k, got stride {} at index {i}",
            l.stride
        );
    }
    let boxes: Vec<[f32; 4]> = rois.iter().map(|r| [r[1], r[2], r[3], r[4]]).collect();
    let assigned = assign_boxes_to_levels(
        &boxes,
        min_level,
        max_level,
        config.canonical_box_size,
        config.canonical_level,
    );
    let maps: Vec<&Tensor<4>> = levels.iter().map(|l| &l.tensor).collect();
    let (table, geometry) = table(&maps);
    check_i32(&table, rois.len(), config.output_size);
    let single = RoiAlignConfig::new(config.output_size)
        .with_sampling_ratio(config.sampling_ratio)
        .with_aligned(config.aligned);
    let mut plan = Plan::default();
    for (r, (roi, &l)) in rois.iter().zip(&assigned).enumerate() {
        let scale = 1.0 / levels[l].stride as f64;
        plan.add_roi(r, roi, geometry[l], &single, scale);
    }
    plan.apply(table, rois.len(), config.output_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    /// `[1, 1, 4, 4]` with value `10·y + x` at pixel `(y, x)`: bilinear sampling of it
    /// returns `10·y + x` exactly inside the map.
    fn ramp(device: &Device) -> Tensor<4> {
        let v: Vec<f32> = (0..16).map(|i| (10 * (i / 4) + i % 4) as f32).collect();
        Tensor::from_data(TensorData::new(v, [1, 1, 4, 4]), device)
    }

    #[test]
    fn aligned_box_on_pixel_edges_averages_pixel_centres() {
        let device = Device::flex();
        // Box [1, 1, 3, 3] covers pixels 1..3; aligned, 2x2 bins of one pixel each, one
        // sample per bin at the pixel centres: the pixel values themselves.
        let config = RoiAlignConfig::new([2, 2]).with_sampling_ratio(1);
        let got = vals(roi_align(
            ramp(&device),
            &[[0.0, 1.0, 1.0, 3.0, 3.0]],
            &config,
        ));
        assert_eq!(got, vec![11.0, 12.0, 21.0, 22.0]);
        // Unaligned, the same box samples half a pixel further: (1.5, 1.5) etc.
        let config = config.with_aligned(false);
        let got = vals(roi_align(
            ramp(&device),
            &[[0.0, 1.0, 1.0, 3.0, 3.0]],
            &config,
        ));
        assert_eq!(got, vec![16.5, 17.5, 26.5, 27.5]);
    }

    #[test]
    fn border_rules() {
        let device = Device::flex();
        let config = RoiAlignConfig::new([1, 1]).with_sampling_ratio(1);
        // Sample at (x, y) = (−0.75, 0.5): inside [−1, W], clamped to x = 0 → 10·0.5 + 0.
        let got = vals(roi_align(
            ramp(&device),
            &[[0.0, -1.0, 0.0, 0.5, 2.0]],
            &config,
        ));
        assert!((got[0] - 5.0).abs() < 1e-6, "{got:?}");
        // Sample at x = −1.25 < −1: zero.
        let got = vals(roi_align(
            ramp(&device),
            &[[0.0, -1.5, 0.0, 0.0, 2.0]],
            &config,
        ));
        assert_eq!(got, vec![0.0]);
        // Sample at (x, y) = (3.75, 3.75): in (H − 1, H], reads pixel (3, 3) alone.
        let got = vals(roi_align(
            ramp(&device),
            &[[0.0, 3.5, 3.5, 4.5, 4.5]],
            &config,
        ));
        assert_eq!(got, vec![33.0]);
    }

    #[test]
    fn adaptive_grid_and_batch_index() {
        let device = Device::flex();
        let input = Tensor::cat(vec![ramp(&device), ramp(&device).mul_scalar(2.0)], 0);
        // A 4 px box at a 1x1 output: adaptive grid ⌈4/1⌉ = 4 samples per side, aligned, at
        // −0.5 + (i + 0.5) = 0, 1, 2, 3: mean 1.5 per axis, so 10·1.5 + 1.5 = 16.5, read
        // from image 1 (twice the ramp).
        let config = RoiAlignConfig::new([1, 1]);
        let got = vals(roi_align(input, &[[1.0, 0.0, 0.0, 4.0, 4.0]], &config));
        assert!((got[0] - 33.0).abs() < 1e-4, "{got:?}");
    }

    /// No RoIs: an empty `[0, C, oh, ow]`; only samples outside the map: zeros, and a zero
    /// (not a missing) gradient.
    #[test]
    fn empty_and_all_outside() {
        let device = Device::flex().autodiff();
        let input = ramp(&device).require_grad();
        let config = RoiAlignConfig::new([2, 3]).with_sampling_ratio(2);
        assert_eq!(roi_align(input.clone(), &[], &config).dims(), [0, 1, 2, 3]);
        let out = roi_align(input.clone(), &[[0.0, -20.0, -20.0, -10.0, -12.0]], &config);
        assert_eq!(out.dims(), [1, 1, 2, 3]);
        assert!(vals(out.clone()).iter().all(|&v| v == 0.0));
        let grads = out.sum().backward();
        let g = vals(input.grad(&grads).expect("a zero gradient"));
        assert!(g.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn gradient_is_the_transposed_plan() {
        let device = Device::flex().autodiff();
        let input =
            Tensor::<4>::random([2, 3, 5, 6], Distribution::Default, &device).require_grad();
        let config = RoiAlignConfig::new([2, 3]).with_sampling_ratio(2);
        let rois = [[1.0, 0.3, 0.2, 4.1, 3.9], [0.0, -2.0, 1.0, 7.0, 6.0]];
        let out = roi_align(input.clone(), &rois, &config);
        assert_eq!(out.dims(), [2, 3, 2, 3]);
        // Each output cell averages weights summing to ≤ 1 (= 1 when all samples are in).
        let grads = out.slice([0..1, 0..1, 0..1, 0..1]).sum().backward();
        let g = vals(input.grad(&grads).expect("input grad"));
        let total: f32 = g.iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        // and all of it lands in image 1, channel 0
        let image1_c0: f32 = g[90..120].iter().sum();
        assert!((image1_c0 - 1.0).abs() < 1e-5, "{image1_c0}");
    }

    #[test]
    fn levels_follow_fpn_eq1() {
        // √area 224 → k0 = 4; 112 → 3; 448 → 5; tiny → clamped to 2; huge → 5.
        let boxes = [
            [0.0, 0.0, 224.0, 224.0],
            [0.0, 0.0, 112.0, 112.0],
            [0.0, 0.0, 448.0, 448.0],
            [0.0, 0.0, 2.0, 2.0],
            [0.0, 0.0, 5000.0, 5000.0],
            [10.0, 10.0, 121.0, 121.0],
        ];
        let got = assign_boxes_to_levels(&boxes, 2, 5, 224.0, 4);
        assert_eq!(got, vec![2, 1, 3, 0, 3, 0]);
    }

    #[test]
    fn multi_level_pools_each_roi_from_its_level() {
        let device = Device::flex();
        let p2 = Tensor::<4>::random([1, 2, 16, 16], Distribution::Default, &device);
        let p3 = Tensor::<4>::random([1, 2, 8, 8], Distribution::Default, &device);
        let levels = vec![
            FeatureMap {
                tensor: p2.clone(),
                stride: 4,
            },
            FeatureMap {
                tensor: p3.clone(),
                stride: 8,
            },
        ];
        // canonical 16 px at level 3: a 16 px box → level 3 (index 1), an 8 px box → 2
        let config = MultiScaleRoiAlignConfig::new([2, 2])
            .with_canonical_box_size(16.0)
            .with_canonical_level(3)
            .with_sampling_ratio(2);
        let rois = [[0.0, 10.0, 12.0, 26.0, 28.0], [0.0, 4.0, 4.0, 12.0, 12.0]];
        let got = vals(multi_scale_roi_align(&levels, &rois, &config));
        let single = |map: Tensor<4>, roi: Roi, stride: f64| {
            let c = RoiAlignConfig::new([2, 2])
                .with_sampling_ratio(2)
                .with_spatial_scale(1.0 / stride);
            vals(roi_align(map, &[roi], &c))
        };
        let want = [single(p3, rois[0], 8.0), single(p2, rois[1], 4.0)].concat();
        assert_eq!(got, want);
    }
}
