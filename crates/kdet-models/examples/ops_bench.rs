//! Micro-benchmark of the sampling ops (issue #16) on the shapes Mask2Former-lite and a
//! RoI head use on the built-in 128×128 images; `scripts/bench/ops_sampling.py` runs it
//! beside the same ops in PyTorch and writes the table in `docs/benchmarks.md`.
//!
//! Usage: `RAYON_NUM_THREADS=1 ops_bench [WARMUP] [RUNS]` (defaults 5 and 30). Prints one
//! JSON line per (case, mode): the median, min and max milliseconds over RUNS after
//! WARMUP. `fwd` runs on the plain flex device; `fwd+bwd` on the autodiff device, ending
//! with the gradient read back to the host.
//!
//! Shapes (why these):
//! - `point_sample` of class-agnostic mask logits `[32, 1, 32, 32]`: batch 8 × 4 matched
//!   queries, logits at stride 4 of a 128×128 image. At `P = 12544` points (Mask2Former's
//!   `TRAIN_NUM_POINTS`, unchanged) and `P = 196` (the same 19 % of the mask's pixels that
//!   12544 is of a 256×256 COCO mask).
//! - uncertain point selection on the same logits for `P = 12544` (no gradient, as in
//!   Mask2Former).
//! - `roi_align` of 64 RoIs to 7×7 from `[8, 64, 16, 16]` (stride 8), `sampling_ratio 2`.
//! - multi-level RoIAlign of 64 RoIs to 7×7 from P2–P4 of a 128×128 batch of 8 (`[8, 64,
//!   32|16|8, 32|16|8]`), `sampling_ratio 2`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use kdet_models::FeatureMap;
use kdet_models::ops::roi_align::{
    MultiScaleRoiAlignConfig, Roi, RoiAlignConfig, multi_scale_roi_align, roi_align,
};
use kdet_models::ops::sample::{
    PointDraws, UncertainPointsConfig, point_sample, point_sample_grid_decomposed,
    uncertain_point_coords_with_randomness,
};

/// Deterministic RoIs inside a `size`-pixel image of a batch of `batch` (a small LCG so
/// the PyTorch script can make the same boxes).
fn rois(num: usize, batch: usize, size: f32) -> Vec<Roi> {
    let mut state = 16u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..num)
        .map(|i| {
            let (w, h) = (8.0 + next() * (size - 8.0), 8.0 + next() * (size - 8.0));
            let (x, y) = (next() * (size - w), next() * (size - h));
            [(i % batch) as f32, x, y, x + w, y + h]
        })
        .collect()
}

fn median_ms(mut f: impl FnMut(), warmup: usize, runs: usize) -> (f64, f64, f64) {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 1 {
        times[mid]
    } else {
        (times[mid - 1] + times[mid]) / 2.0
    };
    (median, times[0], times[times.len() - 1])
}

fn report(case: &str, path: &str, mode: &str, (median, min, max): (f64, f64, f64)) {
    println!(
        "{{\"framework\":\"kdet\",\"case\":\"{case}\",\"path\":\"{path}\",\"mode\":\"{mode}\",\"median_ms\":{median:.4},\"min_ms\":{min:.4},\"max_ms\":{max:.4}}}"
    );
}

/// Times `op` forward on the plain device and forward + backward (to the map) on the
/// autodiff one; `op(x, autodiff)` gets which, to pick its constants on that device.
fn bench_both<const D: usize>(
    case: &str,
    path: &str,
    forward: bool,
    shape: [usize; 4],
    op: impl Fn(Tensor<4>, bool) -> Tensor<D>,
    warmup: usize,
    runs: usize,
) {
    let plain = Device::flex();
    let autodiff = Device::flex().autodiff();
    plain.seed(0);
    let x = Tensor::<4>::random(shape, Distribution::Default, &plain);
    if forward {
        let fwd = median_ms(
            || {
                let out = op(x.clone(), false);
                let _ = out.sum().into_scalar::<f32>();
            },
            warmup,
            runs,
        );
        report(case, path, "fwd", fwd);
    }
    let xa = Tensor::<4>::from_data(x.to_data(), &autodiff).require_grad();
    let both = median_ms(
        || {
            let out = op(xa.clone(), true);
            let grads = out.sum().backward();
            let g = xa.grad(&grads).expect("input gradient");
            let _ = g.sum().into_scalar::<f32>();
        },
        warmup,
        runs,
    );
    report(case, path, "fwd+bwd", both);
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("WARMUP and RUNS are counts"))
        .collect();
    let warmup = args.first().copied().unwrap_or(5);
    let runs = args.get(1).copied().unwrap_or(30);
    let plain = Device::flex();
    let autodiff = Device::flex().autodiff();

    for points in [12544usize, 196] {
        plain.seed(1);
        let coords = Tensor::<3>::random([32, points, 2], Distribution::Default, &plain);
        let coords_ad = Tensor::<3>::from_data(coords.to_data(), &autodiff);
        let case = format!("point_sample [32,1,32,32] P={points}");
        bench_both(
            &case,
            "dedicated backward",
            true,
            [32, 1, 32, 32],
            |x, ad| {
                let c = if ad { &coords_ad } else { &coords };
                point_sample(x, c.clone())
            },
            warmup,
            runs,
        );
        // burn's own gradient of grid_sample_2d (its reference decomposition)
        let grid_ad = coords_ad.clone().reshape([32, points, 1, 2]);
        bench_both(
            &case,
            "grid_sample_2d autodiff",
            false,
            [32, 1, 32, 32],
            |x, _| point_sample_grid_decomposed(x, grid_ad.clone()),
            warmup,
            runs,
        );
    }

    // uncertain point selection: no gradient in Mask2Former, forward only
    plain.seed(2);
    let logits = Tensor::<4>::random([32, 1, 32, 32], Distribution::Normal(0.0, 2.0), &plain);
    let config = UncertainPointsConfig::new();
    let t = median_ms(
        || {
            let c = uncertain_point_coords_with_randomness(
                logits.clone(),
                &config,
                &mut PointDraws::Device,
            );
            let _ = c.sum().into_scalar::<f32>();
        },
        warmup,
        runs,
    );
    report("uncertain points [32,1,32,32] P=12544", "", "fwd", t);

    let boxes = rois(64, 8, 128.0);
    let config = RoiAlignConfig::new([7, 7])
        .with_spatial_scale(1.0 / 8.0)
        .with_sampling_ratio(2);
    bench_both(
        "roi_align [8,64,16,16] R=64 7x7 sr=2",
        "",
        true,
        [8, 64, 16, 16],
        |x, _| roi_align(x, &boxes, &config),
        warmup,
        runs,
    );

    // multi-level: one [8, 64, 56, 56] tensor is cut into P2 (32x32), P3 (16x16), P4 (8x8)
    let config = MultiScaleRoiAlignConfig::new([7, 7]).with_sampling_ratio(2);
    bench_both(
        "multi-level roi_align P2-P4 of [8,64,128,128] R=64 7x7 sr=2",
        "",
        true,
        [8, 64, 56, 56],
        |x, _| {
            let levels = [(0, 32, 4), (32, 16, 8), (48, 8, 16)]
                .map(|(o, s, stride)| FeatureMap {
                    tensor: x.clone().slice([0..8, 0..64, o..o + s, o..o + s]),
                    stride,
                })
                .to_vec();
            multi_scale_roi_align(&levels, &boxes, &config)
        },
        warmup,
        runs,
    );
}
