//! What FGD's attention and masks look like on the built-in data (issue #21): runs the
//! shipped teacher on training batches of the FGD recipe and prints, per FPN level, the
//! feature magnitude that FGD's temperature divides, how peaked the teacher's spatial
//! attention is, and how the focal losses' weight splits between objects and background.
//!
//! ```sh
//! cargo run --release --example fgd_probe -p kdet-run -- [BATCHES] [TEMPERATURE ...]
//! ```
//!
//! BATCHES (default 8) batches of 8 images from the start of the seed-0 data order;
//! TEMPERATURE values (default 0.5, FGD's) are each reported. Per level and temperature:
//! - `mean|F|`: the mean over positions of `mean_c |F|` (what `softmax(· / τ)` sees) and
//!   its spread over positions (std);
//! - `top1%`: the share of the spatial attention's mass `softmax(mean_c|F| / τ)` on the
//!   1% most attended positions (1% of a uniform map would be 0.01);
//! - `fg A`, `bg A`: the attention-weighted mask mass `Σ M · A^sp` of the foreground
//!   (one unit per object) and of the background (one unit per image), averaged over
//!   images: the factors that multiply `α` and `β` in `L_fg` and `L_bg` besides the
//!   feature differences.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use burn::tensor::Device;
use kdet_distill::losses::KdTargets;
use kdet_distill::losses::fgd::{fgd_masks, spatial_attention};
use kdet_models::ModelFamily;
use kdet_run::data::{load_train_split, prepare_data, train_loader};
use kdet_run::models::load_model;
use kdet_run::{Experiment, shipped};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let batches: usize = args
        .next()
        .map_or(Ok(8), |s| s.parse())
        .context("BATCHES")?;
    let temperatures: Vec<f32> = args.map(|s| s.parse()).collect::<Result<_, _>>()?;
    let temperatures = if temperatures.is_empty() {
        vec![0.5]
    } else {
        temperatures
    };

    let mut experiment = Experiment::load(Path::new("builtin:distill/fgd_gfl_synth.toml"))?;
    experiment.absolutize_paths()?;
    let paths = prepare_data(&experiment)?;
    let train = Arc::new(load_train_split(&paths)?);
    let loader = train_loader(&experiment, train)?;
    let device = Device::flex();
    let teacher_path = shipped::teacher(Path::new("runs/fgd_probe/shipped-teacher"))?;
    let (teacher, _, _) = load_model(&teacher_path, &device)?;

    // Per level: sums over images of each statistic, per temperature.
    let mut stats: Vec<Vec<[f64; 5]>> = Vec::new();
    let mut images = 0usize;
    for batch in loader.iter(0, 0, &device).take(batches) {
        let batch = batch.context("loading a batch")?;
        let out = teacher.forward(&batch.images);
        let targets = KdTargets {
            gt: &batch.targets,
            image_sizes: batch.images.resized_sizes(),
            padded_size: batch.images.padded_size(),
        };
        let n = batch.targets.len();
        images += n;
        stats.resize(out.neck.len(), vec![[0.0; 5]; temperatures.len()]);
        for (l, level) in out.neck.iter().enumerate() {
            let f = level.tensor.clone();
            let [_, _, h, w] = f.dims();
            let g: Vec<f32> = f
                .clone()
                .abs()
                .mean_dim(1)
                .into_data()
                .try_into_vec::<f32>()?;
            let (fg, bg) = fgd_masks(&targets, h, w, &device);
            let fg: Vec<f32> = fg.into_data().try_into_vec::<f32>()?;
            let bg: Vec<f32> = bg.into_data().try_into_vec::<f32>()?;
            for (t, &tau) in temperatures.iter().enumerate() {
                let a: Vec<f32> = spatial_attention(f.clone(), tau)
                    .into_data()
                    .try_into_vec::<f32>()?;
                for i in 0..n {
                    let cells = i * h * w..(i + 1) * h * w;
                    let gi = &g[cells.clone()];
                    let mean = gi.iter().map(|&v| v as f64).sum::<f64>() / gi.len() as f64;
                    let var = gi.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()
                        / gi.len() as f64;
                    let mut ai: Vec<f64> = a[cells.clone()].iter().map(|&v| v as f64).collect();
                    let fg_a: f64 = ai
                        .iter()
                        .zip(&fg[cells.clone()])
                        .map(|(a, m)| a * *m as f64)
                        .sum();
                    let bg_a: f64 = ai
                        .iter()
                        .zip(&bg[cells.clone()])
                        .map(|(a, m)| a * *m as f64)
                        .sum();
                    ai.sort_by(|x, y| y.total_cmp(x));
                    let top = ai.len().div_ceil(100);
                    let total: f64 = ai.iter().sum();
                    let top_share = ai[..top].iter().sum::<f64>() / total;
                    let s = &mut stats[l][t];
                    s[0] += mean;
                    s[1] += var.sqrt();
                    s[2] += top_share;
                    s[3] += fg_a;
                    s[4] += bg_a;
                }
            }
        }
    }
    println!("{images} training images (seed-0 order), shipped teacher, FGD's masks");
    println!("level  tau   mean|F|  std|F|  top1%   fg A    bg A");
    for (l, per_t) in stats.iter().enumerate() {
        for (t, s) in per_t.iter().enumerate() {
            let k = images as f64;
            println!(
                "P{}    {:<5} {:7.3}  {:6.3}  {:5.3}  {:6.3}  {:6.3}",
                l + 3,
                temperatures[t],
                s[0] / k,
                s[1] / k,
                s[2] / k,
                s[3] / k,
                s[4] / k
            );
        }
    }
    Ok(())
}
