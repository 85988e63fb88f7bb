//! Prior generators: square/ratio anchors (mmdetection's `AnchorGenerator`) for
//! GFL / ATSS / RetinaNet, and grid points (mmdetection's `MlvlPointGenerator`) for FCOS.
//!
//! Both produce a [`Priors`] in the order of the flattened head outputs: level-major, then
//! row-major `(y, x, a)` — `a` the anchor index within a location, ratio-major then
//! scale (`a = r * num_scales + s`, mmdet's `base_anchors` order).
//!
//! Sources: mmdetection 2.x `mmdet/core/anchor/anchor_generator.py`
//! (`AnchorGenerator.gen_single_level_base_anchors`, `single_level_grid_priors`,
//! `single_level_valid_flags`) and `point_generator.py` (`MlvlPointGenerator`).
//! The legacy "v1" anchors (`- 1` pixel convention) are not implemented.

use burn::config::Config;
use kdet_structures::ImageSize;

use crate::assignment::Priors;

/// Configuration of the anchor generator (mmdet `AnchorGenerator` with
/// `octave_base_scale` / `scales_per_octave`).
///
/// Level `l` has base size `strides[l]` (mmdet: `base_sizes = strides` when not given);
/// each location gets `ratios.len() * scales_per_octave` anchors with
/// `scale_s = octave_base_scale * 2^(s / scales_per_octave)`,
/// `w = base * scale / sqrt(ratio)`, `h = base * scale * sqrt(ratio)` (ratio = h / w),
/// centred at `((x + center_offset) * stride, (y + center_offset) * stride)`.
#[derive(Config, Debug, PartialEq)]
pub struct AnchorGeneratorConfig {
    /// Stride of each level (mmdet GFL/ATSS/RetinaNet configs: `[8, 16, 32, 64, 128]`).
    #[config(default = "vec![8, 16, 32, 64, 128]")]
    pub strides: Vec<usize>,
    /// Height / width ratios (GFL/ATSS: `[1.0]`; RetinaNet: `[0.5, 1.0, 2.0]`).
    #[config(default = "vec![1.0]")]
    pub ratios: Vec<f32>,
    /// Anchor side in units of the stride at the first octave scale (GFL/ATSS: 8;
    /// RetinaNet: 4).
    #[config(default = 8.0)]
    pub octave_base_scale: f32,
    /// Scales per octave (GFL/ATSS: 1; RetinaNet: 3).
    #[config(default = 1)]
    pub scales_per_octave: usize,
    /// Offset of the anchor centre inside its cell, in strides (mmdet default 0.0: the
    /// anchor of cell `(x, y)` is centred on the cell's top-left corner `(x*s, y*s)`).
    #[config(default = 0.0)]
    pub center_offset: f32,
}

impl AnchorGeneratorConfig {
    /// Anchors per location (`A`).
    pub fn num_base_anchors(&self) -> usize {
        self.ratios.len() * self.scales_per_octave
    }

    /// The octave scales `octave_base_scale * 2^(i / scales_per_octave)`.
    pub fn scales(&self) -> Vec<f32> {
        (0..self.scales_per_octave)
            .map(|i| self.octave_base_scale * 2f32.powf(i as f32 / self.scales_per_octave as f32))
            .collect()
    }

    /// The `A` anchors of level `level` at the origin cell, `[x1, y1, x2, y2]`
    /// (mmdet `gen_single_level_base_anchors`).
    pub fn base_anchors(&self, level: usize) -> Vec<[f32; 4]> {
        let base = self.strides[level] as f32;
        let center = self.center_offset * base;
        let scales = self.scales();
        let mut out = Vec::with_capacity(self.num_base_anchors());
        for &ratio in &self.ratios {
            let h_ratio = ratio.sqrt();
            let w_ratio = 1.0 / h_ratio;
            for &scale in &scales {
                let w = base * w_ratio * scale;
                let h = base * h_ratio * scale;
                out.push([
                    center - 0.5 * w,
                    center - 0.5 * h,
                    center + 0.5 * w,
                    center + 0.5 * h,
                ]);
            }
        }
        out
    }

    /// Anchors of all levels for feature maps of `level_sizes[l] = (H_l, W_l)`
    /// (mmdet `grid_priors`), in the head's flattening order.
    ///
    /// # Panics
    /// If `level_sizes` has a different length than `strides` (a caller invariant).
    pub fn grid_priors(&self, level_sizes: &[(usize, usize)]) -> Priors {
        let base: Vec<Vec<[f32; 4]>> = (0..self.strides.len())
            .map(|level| self.base_anchors(level))
            .collect();
        grid_priors(
            "anchor generator",
            &self.strides,
            level_sizes,
            self.num_base_anchors(),
            |level, x, y, boxes| {
                let stride = self.strides[level] as f32;
                let (sx, sy) = (x as f32 * stride, y as f32 * stride);
                boxes.extend(
                    base[level]
                        .iter()
                        .map(|b| [b[0] + sx, b[1] + sy, b[2] + sx, b[3] + sy]),
                );
            },
        )
    }
}

/// Configuration of the point generator (mmdet `MlvlPointGenerator`): one point per
/// location at `((x + offset) * stride, (y + offset) * stride)`.
#[derive(Config, Debug, PartialEq)]
pub struct PointGeneratorConfig {
    /// Stride of each level (mmdet FCOS config: `[8, 16, 32, 64, 128]`).
    #[config(default = "vec![8, 16, 32, 64, 128]")]
    pub strides: Vec<usize>,
    /// Offset of the point inside its cell, in strides (mmdet `MlvlPointGenerator`
    /// default 0.5, i.e. the cell centre — the same as the older FCOS `stride // 2` for
    /// even strides).
    #[config(default = 0.5)]
    pub offset: f32,
}

impl PointGeneratorConfig {
    /// Points of all levels as zero-size boxes `[px, py, px, py]`, `A = 1`.
    ///
    /// # Panics
    /// If `level_sizes` has a different length than `strides` (a caller invariant).
    pub fn grid_priors(&self, level_sizes: &[(usize, usize)]) -> Priors {
        grid_priors(
            "point generator",
            &self.strides,
            level_sizes,
            1,
            |level, x, y, boxes| {
                let stride = self.strides[level] as f32;
                let px = (x as f32 + self.offset) * stride;
                let py = (y as f32 + self.offset) * stride;
                boxes.push([px, py, px, py]);
            },
        )
    }
}

/// The walk both generators share: levels in order, each row-major `(y, x)`, and at every
/// location the `num_per_location` boxes `cell(level, x, y, boxes)` appends. A prior's
/// centre is its box's centre (exactly the point for the zero-size point boxes).
///
/// # Panics
/// If `level_sizes` has a different length than `strides` (a caller invariant).
fn grid_priors(
    generator: &str,
    strides: &[usize],
    level_sizes: &[(usize, usize)],
    num_per_location: usize,
    mut cell: impl FnMut(usize, usize, usize, &mut Vec<[f32; 4]>),
) -> Priors {
    assert_eq!(
        level_sizes.len(),
        strides.len(),
        "{generator} has {} strides but got {} level sizes",
        strides.len(),
        level_sizes.len()
    );
    let total: usize = level_sizes
        .iter()
        .map(|(h, w)| h * w * num_per_location)
        .sum();
    let mut boxes = Vec::with_capacity(total);
    let mut level_offsets = vec![0];
    for (level, &(h, w)) in level_sizes.iter().enumerate() {
        for y in 0..h {
            for x in 0..w {
                cell(level, x, y, &mut boxes);
            }
        }
        level_offsets.push(boxes.len());
    }
    let centers = boxes
        .iter()
        .map(|b| [0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])])
        .collect();
    Priors {
        boxes,
        centers,
        level_offsets,
        strides: strides.to_vec(),
        level_sizes: level_sizes.to_vec(),
        num_per_location,
    }
}

/// Which priors lie on an image's own area of a padded batch (mmdet `valid_flags`): a
/// location `(x, y)` of level `l` is valid when `x < ceil(W / s_l)` and
/// `y < ceil(H / s_l)`.
///
/// mmdet computes this from each image's `pad_shape` (its size rounded up to the
/// `size_divisor`, usually 32); we use the image size itself, so a few more border
/// locations of a non-multiple-of-32 image count as padding. Identical for images whose
/// sides are multiples of the largest stride.
pub fn valid_flags(priors: &Priors, image_size: ImageSize) -> Vec<bool> {
    let a = priors.num_per_location.max(1);
    let mut out = Vec::with_capacity(priors.len());
    for (level, &(h, w)) in priors.level_sizes.iter().enumerate() {
        let stride = priors.strides[level];
        let valid_h = (image_size.height as usize).div_ceil(stride).min(h);
        let valid_w = (image_size.width as usize).div_ceil(stride).min(w);
        for y in 0..h {
            for x in 0..w {
                let v = y < valid_h && x < valid_w;
                out.extend(std::iter::repeat_n(v, a));
            }
        }
    }
    debug_assert_eq!(out.len(), priors.len());
    out
}

/// `(H, W)` of each level's map from a head's `[B, C, H, W]` outputs.
pub fn level_sizes_of(maps: &[&burn::tensor::Tensor<4>]) -> Vec<(usize, usize)> {
    maps.iter()
        .map(|t| {
            let [_, _, h, w] = t.dims();
            (h, w)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two levels of 3×5 (stride 8) and 2×3 (stride 16) maps.
    const SIZES: [(usize, usize); 2] = [(3, 5), (2, 3)];

    #[test]
    fn gfl_anchors_counts_centres_and_sizes() {
        // GFL/ATSS: one square anchor of side 8 * stride centred on (x*s, y*s).
        let g = AnchorGeneratorConfig::new().with_strides(vec![8, 16]);
        assert_eq!(g.num_base_anchors(), 1);
        let p = g.grid_priors(&SIZES);
        // 3*5 + 2*3 = 21 priors, level 1 starts at 15.
        assert_eq!(p.len(), 21);
        assert_eq!(p.level_offsets, vec![0, 15, 21]);
        assert_eq!(p.level_of(14), 0);
        assert_eq!(p.level_of(15), 1);
        // Level 0, (y=0, x=0): centre (0, 0), side 64 -> [-32, -32, 32, 32].
        assert_eq!(p.boxes[0], [-32.0, -32.0, 32.0, 32.0]);
        // Level 0, (y=1, x=2): index 1*5 + 2 = 7, centre (16, 8).
        assert_eq!(p.centers[7], [16.0, 8.0]);
        assert_eq!(
            p.boxes[7],
            [16.0 - 32.0, 8.0 - 32.0, 16.0 + 32.0, 8.0 + 32.0]
        );
        // Level 1, (y=1, x=2): index 15 + 1*3 + 2 = 20, centre (32, 16), side 128.
        assert_eq!(p.centers[20], [32.0, 16.0]);
        assert_eq!(p.boxes[20], [-32.0, -48.0, 96.0, 80.0]);
    }

    #[test]
    fn retina_anchors_follow_ratio_major_order() {
        // RetinaNet: ratios [0.5, 1, 2], octave base 4, 3 scales per octave -> A = 9.
        let g = AnchorGeneratorConfig::new()
            .with_strides(vec![8, 16])
            .with_ratios(vec![0.5, 1.0, 2.0])
            .with_octave_base_scale(4.0)
            .with_scales_per_octave(3);
        assert_eq!(g.num_base_anchors(), 9);
        let p = g.grid_priors(&SIZES);
        assert_eq!(p.len(), 21 * 9);
        assert_eq!(p.num_per_location, 9);
        let base = g.base_anchors(0);
        // a = 0: ratio 0.5, scale 4: w = 8*4/sqrt(0.5) = 32*sqrt2, h = 32/sqrt2.
        let (w, h) = (base[0][2] - base[0][0], base[0][3] - base[0][1]);
        assert!((w - 32.0 * 2f32.sqrt()).abs() < 1e-4 && (h - 32.0 / 2f32.sqrt()).abs() < 1e-4);
        // a = 4: ratio 1, scale 4 * 2^(1/3).
        let side = 32.0 * 2f32.powf(1.0 / 3.0);
        assert!((base[4][2] - base[4][0] - side).abs() < 1e-4);
        assert!((base[4][3] - base[4][1] - side).abs() < 1e-4);
        // Location (y=0, x=1) of level 0 holds priors 9..18, all centred at (8, 0).
        for i in 9..18 {
            assert!((p.centers[i][0] - 8.0).abs() < 1e-5 && p.centers[i][1].abs() < 1e-5);
        }
    }

    #[test]
    fn center_offset_moves_the_centre() {
        let g = AnchorGeneratorConfig::new()
            .with_strides(vec![8, 16])
            .with_center_offset(0.5);
        let p = g.grid_priors(&SIZES);
        assert_eq!(p.centers[0], [4.0, 4.0]);
        assert_eq!(p.centers[15], [8.0, 8.0]);
    }

    #[test]
    fn fcos_points() {
        let g = PointGeneratorConfig::new().with_strides(vec![8, 16]);
        let p = g.grid_priors(&SIZES);
        assert_eq!(p.len(), 21);
        assert_eq!(p.num_per_location, 1);
        // Level 0 (y=1, x=2): ((2+0.5)*8, (1+0.5)*8) = (20, 12).
        assert_eq!(p.centers[7], [20.0, 12.0]);
        assert_eq!(p.boxes[7], [20.0, 12.0, 20.0, 12.0]);
        // Level 1 (y=1, x=0): (8, 24).
        assert_eq!(p.centers[18], [8.0, 24.0]);
    }

    #[test]
    fn valid_flags_mark_padding() {
        let g = AnchorGeneratorConfig::new().with_strides(vec![8, 16]);
        let p = g.grid_priors(&SIZES);
        // Image 17 high, 24 wide in a 24x40 batch: level 0 keeps ceil(17/8)=3 rows and
        // ceil(24/8)=3 columns of 5; level 1 keeps ceil(17/16)=2 rows, ceil(24/16)=2 cols.
        let v = valid_flags(&p, ImageSize::new(17, 24));
        assert_eq!(v.iter().filter(|&&b| b).count(), 3 * 3 + 2 * 2);
        assert!(v[2] && !v[3] && !v[4]);
        assert!(v[15] && v[16] && !v[17]);
        assert!(valid_flags(&p, ImageSize::new(24, 40)).iter().all(|&b| b));
    }
}
