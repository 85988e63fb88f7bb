//! Inference timing of a model (`kdet bench infer`, the demo's ms/image column): the
//! network forward alone and forward + post-processing (decode, top-k, NMS; masks for a mask model), per image,
//! on a fixed random batch.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::{Device, Distribution, Tensor};
use kdet_models::{Model, ModelFamily};
use kdet_structures::{ImageBatch, ImageSize};

/// Per-image milliseconds of each timed batch.
pub struct Timings {
    /// Forward (synchronised).
    pub forward: Vec<f64>,
    /// Forward + post-processing, as `kdet eval` runs them.
    pub total: Vec<f64>,
    /// The forward part by part, in order: a dense detector's `backbone`, `neck`, `head`;
    /// a query model's `backbone` and `rest` (pixel decoder or encoder, decoder, heads:
    /// the forward minus the backbone, timed again).
    pub parts: Vec<(&'static str, Vec<f64>)>,
    /// Detections summed over the timed batches.
    pub detections: usize,
}

/// Runs `model` on `batch` `warmup + iters` times and times the last `iters`: the whole
/// pipeline, then the forward again part by part (each synchronised).
pub fn time_inference(
    model: &Model,
    batch: &ImageBatch,
    warmup: usize,
    iters: usize,
) -> Result<Timings> {
    let device = batch.images().device();
    let n = batch.len() as f64;
    let per_image = |t: f64| t * 1e3 / n;
    let sync = || device.sync().context("waiting for the device");
    let names: &[&'static str] = match model {
        Model::Dense(_) => &["backbone", "neck", "head"],
        _ => &["backbone", "rest"],
    };
    let mut t = Timings {
        forward: Vec::new(),
        total: Vec::new(),
        parts: names.iter().map(|&p| (p, Vec::new())).collect(),
        detections: 0,
    };
    for i in 0..warmup + iters {
        let t0 = Instant::now();
        let out = model.forward(batch);
        sync()?;
        let t1 = t0.elapsed().as_secs_f64();
        let dets = model.postprocess(&out, batch);
        let t2 = t0.elapsed().as_secs_f64();
        let t3 = Instant::now();
        let features = model.backbone().forward(batch.images().clone());
        sync()?;
        let backbone = t3.elapsed().as_secs_f64();
        let parts = match model {
            Model::Dense(d) => {
                let levels = d.neck.forward(features);
                sync()?;
                let neck = t3.elapsed().as_secs_f64();
                let _ = d.head.forward(&levels);
                sync()?;
                let head = t3.elapsed().as_secs_f64();
                vec![backbone, neck - backbone, head - neck]
            }
            _ => {
                let t4 = Instant::now();
                let _ = model.forward(batch);
                sync()?;
                let whole = t4.elapsed().as_secs_f64();
                vec![backbone, (whole - backbone).max(0.0)]
            }
        };
        if i >= warmup {
            t.forward.push(per_image(t1));
            t.total.push(per_image(t2));
            for ((_, times), part) in t.parts.iter_mut().zip(parts) {
                times.push(per_image(part));
            }
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
