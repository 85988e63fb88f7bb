//! Box coders: the `(dx, dy, dw, dh)` delta coder of R-CNN / RetinaNet / ATSS
//! (mmdetection `DeltaXYWHBBoxCoder`) and the point-to-edge distance coder of FCOS / GFL
//! (mmdetection `DistancePointBBoxCoder`, `bbox2distance` / `distance2bbox`).
//!
//! Each has a slice version (targets and tests, plain numbers) and a tensor version
//! (decoding predictions inside the loss, differentiable). Boxes are `[x1, y1, x2, y2]`.
//! Clipping to the image is left to post-processing (`heads::inference`).

use burn::config::Config;
use burn::tensor::Tensor;

/// mmdet's `wh_ratio_clip` default: `|log(16 / 1000)|` bounds `dw`, `dh` when decoding.
pub const WH_RATIO_CLIP: f32 = 16.0 / 1000.0;

/// mmdet `DeltaXYWHBBoxCoder`: with prior centre `(px, py)`, size `(pw, ph)` and target
/// `(gx, gy, gw, gh)`,
/// `d = ((gx - px) / pw, (gy - py) / ph, ln(gw / pw), ln(gh / ph))`, then
/// `(d - means) / stds`.
#[derive(Config, Debug, Copy, PartialEq)]
pub struct DeltaXywhCoder {
    /// mmdet default `target_means = (0, 0, 0, 0)` (ATSS/RetinaNet configs keep it).
    #[config(default = "[0.0; 4]")]
    pub means: [f32; 4],
    /// mmdet default `target_stds = (1, 1, 1, 1)`; ATSS and RetinaNet configs use
    /// `[0.1, 0.1, 0.2, 0.2]` (RetinaNet: `[1, 1, 1, 1]`).
    #[config(default = "[1.0; 4]")]
    pub stds: [f32; 4],
    /// Decoded `dw`, `dh` are clamped to `±|ln(wh_ratio_clip)|` (mmdet default 16/1000).
    #[config(default = 0.016)]
    pub wh_ratio_clip: f32,
}

fn center_size(b: [f32; 4]) -> [f32; 4] {
    [
        0.5 * (b[0] + b[2]),
        0.5 * (b[1] + b[3]),
        b[2] - b[0],
        b[3] - b[1],
    ]
}

impl DeltaXywhCoder {
    /// ATSS's coder: means 0, stds `[0.1, 0.1, 0.2, 0.2]` (`atss_r50_fpn_1x_coco`).
    pub fn atss() -> Self {
        Self::new().with_stds([0.1, 0.1, 0.2, 0.2])
    }

    /// Deltas that turn `prior` into `gt` (mmdet `bbox2delta`).
    pub fn encode(&self, prior: [f32; 4], gt: [f32; 4]) -> [f32; 4] {
        let [px, py, pw, ph] = center_size(prior);
        let [gx, gy, gw, gh] = center_size(gt);
        let d = [
            (gx - px) / pw,
            (gy - py) / ph,
            (gw / pw).ln(),
            (gh / ph).ln(),
        ];
        std::array::from_fn(|i| (d[i] - self.means[i]) / self.stds[i])
    }

    /// The box that `delta` makes of `prior` (mmdet `delta2bbox` without `max_shape`).
    pub fn decode(&self, prior: [f32; 4], delta: [f32; 4]) -> [f32; 4] {
        let d: [f32; 4] = std::array::from_fn(|i| delta[i] * self.stds[i] + self.means[i]);
        let max_ratio = self.wh_ratio_clip.ln().abs();
        let [px, py, pw, ph] = center_size(prior);
        let gx = px + pw * d[0];
        let gy = py + ph * d[1];
        let gw = pw * d[2].clamp(-max_ratio, max_ratio).exp();
        let gh = ph * d[3].clamp(-max_ratio, max_ratio).exp();
        [gx - 0.5 * gw, gy - 0.5 * gh, gx + 0.5 * gw, gy + 0.5 * gh]
    }

    /// Tensor version of [`Self::encode`].
    ///
    /// # Shapes
    /// - `priors`, `gts`: `[N, 4]` → `[N, 4]`
    pub fn encode_tensor(&self, priors: Tensor<2>, gts: Tensor<2>) -> Tensor<2> {
        let device = priors.device();
        let [px, py, pw, ph] = center_size_tensor(priors);
        let [gx, gy, gw, gh] = center_size_tensor(gts);
        let d = Tensor::cat(
            vec![
                (gx - px) / pw.clone(),
                (gy - py) / ph.clone(),
                (gw / pw).log(),
                (gh / ph).log(),
            ],
            1,
        );
        let means = Tensor::<1>::from_floats(self.means, &device).reshape([1, 4]);
        let stds = Tensor::<1>::from_floats(self.stds, &device).reshape([1, 4]);
        (d - means) / stds
    }

    /// Tensor version of [`Self::decode`] (differentiable in `deltas`).
    ///
    /// # Shapes
    /// - `priors`, `deltas`: `[N, 4]` → `[N, 4]`
    pub fn decode_tensor(&self, priors: Tensor<2>, deltas: Tensor<2>) -> Tensor<2> {
        let device = priors.device();
        let means = Tensor::<1>::from_floats(self.means, &device).reshape([1, 4]);
        let stds = Tensor::<1>::from_floats(self.stds, &device).reshape([1, 4]);
        let d = deltas * stds + means;
        let max_ratio = self.wh_ratio_clip.ln().abs();
        let [dx, dy, dw, dh] = columns(d);
        let [px, py, pw, ph] = center_size_tensor(priors);
        let gx = px + pw.clone() * dx;
        let gy = py + ph.clone() * dy;
        let gw = pw * dw.clamp(-max_ratio, max_ratio).exp();
        let gh = ph * dh.clamp(-max_ratio, max_ratio).exp();
        Tensor::cat(
            vec![
                gx.clone() - gw.clone().mul_scalar(0.5),
                gy.clone() - gh.clone().mul_scalar(0.5),
                gx + gw.mul_scalar(0.5),
                gy + gh.mul_scalar(0.5),
            ],
            1,
        )
    }
}

/// The four columns of an `[N, 4]` tensor, each `[N, 1]`.
pub(crate) fn columns(t: Tensor<2>) -> [Tensor<2>; 4] {
    let mut it = t.split(1, 1).into_iter();
    let mut next = || it.next().expect("an [N, 4] tensor splits into 4 columns");
    [next(), next(), next(), next()]
}

/// `[cx, cy, w, h]` columns of `[N, 4]` xyxy boxes, each `[N, 1]`.
fn center_size_tensor(b: Tensor<2>) -> [Tensor<2>; 4] {
    let [x1, y1, x2, y2] = columns(b);
    [
        (x1.clone() + x2.clone()).mul_scalar(0.5),
        (y1.clone() + y2.clone()).mul_scalar(0.5),
        x2 - x1,
        y2 - y1,
    ]
}

/// Distances `(l, t, r, b)` from `point` to the edges of `gt` (mmdet `bbox2distance`).
/// With `max_distance = Some(m)` each is clamped to `[0, m - 0.1]` (GFL passes
/// `reg_max`, so the DFL target's right bin `floor(d) + 1` stays within `0..=reg_max`).
pub fn encode_distances(point: [f32; 2], gt: [f32; 4], max_distance: Option<f32>) -> [f32; 4] {
    let d = [
        point[0] - gt[0],
        point[1] - gt[1],
        gt[2] - point[0],
        gt[3] - point[1],
    ];
    match max_distance {
        Some(m) => d.map(|v| v.clamp(0.0, m - 0.1)),
        None => d,
    }
}

/// The box with edges `(l, t, r, b)` away from `point` (mmdet `distance2bbox` without
/// `max_shape`).
pub fn decode_distances(point: [f32; 2], distances: [f32; 4]) -> [f32; 4] {
    [
        point[0] - distances[0],
        point[1] - distances[1],
        point[0] + distances[2],
        point[1] + distances[3],
    ]
}

/// Tensor version of [`encode_distances`].
///
/// # Shapes
/// - `points`: `[N, 2]`, `gts`: `[N, 4]` → `[N, 4]`
pub fn encode_distances_tensor(
    points: Tensor<2>,
    gts: Tensor<2>,
    max_distance: Option<f32>,
) -> Tensor<2> {
    let [n, _] = points.dims();
    let px = points.clone().slice([0..n, 0..1]);
    let py = points.slice([0..n, 1..2]);
    let [x1, y1, x2, y2] = columns(gts);
    let d = Tensor::cat(vec![px.clone() - x1, py.clone() - y1, x2 - px, y2 - py], 1);
    match max_distance {
        Some(m) => d.clamp(0.0, m - 0.1),
        None => d,
    }
}

/// Tensor version of [`decode_distances`] (differentiable in `distances`).
///
/// # Shapes
/// - `points`: `[N, 2]`, `distances`: `[N, 4]` → `[N, 4]`
pub fn decode_distances_tensor(points: Tensor<2>, distances: Tensor<2>) -> Tensor<2> {
    let [n, _] = points.dims();
    let px = points.clone().slice([0..n, 0..1]);
    let py = points.slice([0..n, 1..2]);
    let [l, t, r, b] = columns(distances);
    Tensor::cat(vec![px.clone() - l, py.clone() - t, px + r, py + b], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn close4(a: [f32; 4], b: [f32; 4], tol: f32) -> bool {
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < tol)
    }

    fn rows(t: Tensor<2>) -> Vec<[f32; 4]> {
        let v: Vec<f32> = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 data");
        v.chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect()
    }

    #[test]
    fn delta_hand_values() {
        // Prior [0,0,10,10] (centre 5,5; size 10), gt [2,4,22,14] (centre 12,9; size 20x10):
        // raw d = (0.7, 0.4, ln 2, ln 1); with stds (0.1, 0.1, 0.2, 0.2) -> (7, 4, 5 ln2, 0).
        let c = DeltaXywhCoder::atss();
        let d = c.encode([0.0, 0.0, 10.0, 10.0], [2.0, 4.0, 22.0, 14.0]);
        assert!(close4(d, [7.0, 4.0, 5.0 * 2f32.ln(), 0.0], 1e-5), "{d:?}");
    }

    #[test]
    fn delta_round_trip() {
        let c = DeltaXywhCoder::atss().with_means([0.1, -0.2, 0.0, 0.05]);
        let priors = [
            [0.0, 0.0, 10.0, 10.0],
            [-32.0, -32.0, 32.0, 32.0],
            [5.0, 7.0, 6.0, 30.0],
        ];
        let gts = [
            [2.0, 4.0, 22.0, 14.0],
            [-3.0, 1.0, 40.0, 9.0],
            [4.5, 8.0, 7.0, 25.0],
        ];
        for (p, g) in priors.iter().zip(&gts) {
            let back = c.decode(*p, c.encode(*p, *g));
            assert!(close4(back, *g, 1e-4), "{back:?} vs {g:?}");
        }
        // Tensor versions agree with the slice versions and round-trip too.
        let device = Device::flex();
        let tp = Tensor::<2>::from_floats(priors, &device);
        let tg = Tensor::<2>::from_floats(gts, &device);
        let enc = c.encode_tensor(tp.clone(), tg);
        for (i, e) in rows(enc.clone()).into_iter().enumerate() {
            assert!(close4(e, c.encode(priors[i], gts[i]), 1e-4));
        }
        for (i, b) in rows(c.decode_tensor(tp, enc)).into_iter().enumerate() {
            assert!(close4(b, gts[i], 1e-3), "{b:?}");
        }
    }

    #[test]
    fn delta_decode_clamps_extreme_sizes() {
        // dw = 100 would overflow; it is clamped to |ln(0.016)| ~= 4.135.
        let c = DeltaXywhCoder::new();
        let b = c.decode([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 100.0, 0.0]);
        assert!((b[2] - b[0] - 1000.0 / 16.0).abs() < 1e-2, "{b:?}");
    }

    #[test]
    fn distance_round_trip_and_clamp() {
        let p = [10.0, 20.0];
        let g = [4.0, 18.0, 13.0, 40.0];
        let d = encode_distances(p, g, None);
        assert_eq!(d, [6.0, 2.0, 3.0, 20.0]);
        assert_eq!(decode_distances(p, d), g);
        // Clamped to [0, reg_max - 0.1]: 20 -> 15.9 with reg_max 16; negative -> 0.
        assert_eq!(encode_distances(p, g, Some(16.0)), [6.0, 2.0, 3.0, 15.9]);
        assert_eq!(
            encode_distances([0.0, 0.0], [1.0, 1.0, 2.0, 2.0], Some(16.0))[0],
            0.0
        );
        let device = Device::flex();
        let tp = Tensor::<2>::from_floats([p, [0.0, 0.0]], &device);
        let tg = Tensor::<2>::from_floats([g, [-1.0, -2.0, 3.0, 4.0]], &device);
        let enc = encode_distances_tensor(tp.clone(), tg, None);
        assert_eq!(rows(enc.clone()), vec![d, [1.0, 2.0, 3.0, 4.0]]);
        assert_eq!(
            rows(decode_distances_tensor(tp, enc)),
            vec![g, [-1.0, -2.0, 3.0, 4.0]]
        );
    }
}
