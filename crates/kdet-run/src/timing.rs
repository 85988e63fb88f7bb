//! Inference timing of a detector (`kdet bench infer`, the demo's ms/image column): the
//! network forward alone and forward + post-processing (decode, top-k, NMS), per image,
//! on a fixed random batch.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Device, Distribution, Tensor};
use kdet_models::Detector;
use kdet_structures::{ImageBatch, ImageSize};

/// Per-image milliseconds of each timed batch.
pub struct Timings {
    /// Forward (synchronised).
    pub forward: Vec<f64>,
    /// Forward + post-processing, as `kdet eval` runs them.
    pub total: Vec<f64>,
    pub backbone: Vec<f64>,
    pub neck: Vec<f64>,
    pub head: Vec<f64>,
    /// Detections summed over the timed batches.
    pub detections: usize,
}

/// Runs `model` on `batch` `warmup + iters` times and times the last `iters`: the whole
/// pipeline, then the forward again part by part (each synchronised).
pub fn time_inference(
    model: &Detector,
    batch: &ImageBatch,
    warmup: usize,
    iters: usize,
) -> Result<Timings> {
    let device = batch.images().device();
    let n = batch.len() as f64;
    let per_image = |t: f64| t * 1e3 / n;
    let mut t = Timings {
        forward: Vec::new(),
        total: Vec::new(),
        backbone: Vec::new(),
        neck: Vec::new(),
        head: Vec::new(),
        detections: 0,
    };
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        let out = model.forward(batch);
        device.sync().context("waiting for the device")?;
        let t1 = t0.elapsed().as_secs_f64();
        let dets = model.postprocess(&out, batch);
        let t2 = t0.elapsed().as_secs_f64();
        let t3 = Instant::now();
        let features = model.backbone.forward(batch.images().clone());
        device.sync().context("waiting for the device")?;
        let t4 = t3.elapsed().as_secs_f64();
        let levels = model.neck.forward(features);
        device.sync().context("waiting for the device")?;
        let t5 = t3.elapsed().as_secs_f64();
        let _ = model.head.forward(&levels);
        device.sync().context("waiting for the device")?;
        let t6 = t3.elapsed().as_secs_f64();
        if i >= warmup {
            t.forward.push(per_image(t1));
            t.total.push(per_image(t2));
            t.backbone.push(per_image(t4));
            t.neck.push(per_image(t5 - t4));
            t.head.push(per_image(t6 - t5));
            t.detections += dets.iter().map(|d| d.len()).sum::<usize>();
        }
    }
    Ok(t)
}

/// A random batch of `batch` square images of `side` pixels (padded to `divisor`).
pub fn random_batch(batch: usize, side: u32, divisor: u32, device: &Device) -> Result<ImageBatch> {
    let padded = side.div_ceil(divisor.max(1)) * divisor.max(1);
    let size = ImageSize::new(padded, padded);
    let images = Tensor::<4>::random(
        [batch, 3, padded as usize, padded as usize],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    ImageBatch::new(images, vec![size; batch], vec![size; batch])
        .context("building the benchmark batch")
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}
