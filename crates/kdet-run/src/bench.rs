//! What a distillation step costs, next to what it is made of (`kdet bench train`).
//!
//! For one distillation experiment (student, teacher, recipe, data, optimizer) it times,
//! on the same real training batches:
//! - the **student step** alone (forward, task losses, backward, update: `kdet train`'s
//!   step),
//! - the **teacher forward** alone (plain device, eval norms),
//! - the **distill step** (`kdet distill`'s step: teacher forward, student step, KD terms),
//!
//! interleaved in a rotating order within every iteration so that a change of machine
//! load hits all three alike. Both steps go through [`Trainer::bench_step`], the code the
//! training loop runs. It also measures the KD loss time logged inside the distill step,
//! the data loader's throughput on its own (the same workers and transforms as training),
//! and the peak resident memory of each phase (Linux: `VmHWM`, reset through
//! `/proc/self/clear_refs` before each phase; absent elsewhere).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use kdet_data::DetectionBatch;
use kdet_models::{Model, ModelFamily};
use kdet_structures::{ImageBatch, ImageSize};
use kdet_train::Trainer;

use crate::data::{ensure_synth, load_train_split, train_loader};
use crate::experiment::Experiment;
use crate::models::{TrainableModel, distiller_of, load_teacher, student_model};

/// How much to time.
#[derive(Debug, Clone, Copy)]
pub struct TrainBenchOptions {
    /// Untimed iterations first (each runs all three phases).
    pub warmup: usize,
    /// Timed iterations (at least 1).
    pub iters: usize,
    /// Batches read from a fresh loader to time the data pipeline alone (0: skip).
    pub loader_batches: usize,
}

/// What [`train_bench`] measured; phases in [`PHASES`] order.
#[derive(Debug, Clone)]
pub struct TrainBench {
    /// Milliseconds of each timed iteration, per phase.
    pub times: [Vec<f64>; 3],
    /// Peak resident memory per phase, MiB (Linux).
    pub peaks: [Option<f64>; 3],
    /// What the device's allocator held after each phase, MiB (GPU backends).
    pub reserved: [Option<f64>; 3],
    /// Inside the distill step: the teacher forward and the KD terms, ms per step.
    pub teacher_inside: Vec<f64>,
    pub kd_inside: Vec<f64>,
    /// `(images, images per second)` of the loader alone.
    pub loader_rate: Option<(usize, f64)>,
    pub batch_size: usize,
    pub input_size: ImageSize,
    pub student_params: usize,
    pub teacher_params: usize,
}

/// The three timed phases, in the order of the first iteration.
pub const PHASES: [&str; 3] = ["student_step", "teacher_forward", "distill_step"];

/// A scratch directory for the two trainers' run files, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Peak resident memory of this process since the last [`reset_peak_rss`], in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak resident memory to the current one (Linux `clear_refs` value 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn plain_batch(batch: &DetectionBatch) -> Result<ImageBatch> {
    let images = &batch.images;
    ImageBatch::new(
        images.images().clone().inner(),
        images.original_sizes().to_vec(),
        images.resized_sizes().to_vec(),
    )
    .context("moving the batch to the teacher's device")
}

/// Times the experiment's distillation step against its parts on `device` (autodiff).
pub fn train_bench(
    experiment: &Experiment,
    device: &Device,
    options: TrainBenchOptions,
) -> Result<TrainBench> {
    if options.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let (Some(teacher_config), Some(recipe)) = (&experiment.teacher, &experiment.distill) else {
        bail!(
            "`kdet bench train` needs a distillation experiment (`teacher` and a `[distill]` section)"
        );
    };
    if let Some(s) = experiment.synth() {
        ensure_synth(s)?;
    }
    let paths = experiment.split_paths();
    let train = Arc::new(load_train_split(&paths)?);

    let plain = device.clone().inner();
    device.seed(experiment.train.seed);
    let teacher: Model = load_teacher(teacher_config, experiment, &plain)?;
    let student = student_model(experiment, device, true)?;
    device.seed(experiment.train.seed);
    let distilled = student_model(experiment, device, true)?;
    let distiller = distiller_of(distilled, Some(teacher.clone()), recipe, experiment)?;

    // The data pipeline alone, from a cold start of its workers.
    let loader_rate = if options.loader_batches > 0 {
        let loader = train_loader(experiment, train.clone())?;
        let t0 = Instant::now();
        let mut images = 0usize;
        for (i, item) in loader.iter(0, 0, device).enumerate() {
            images += item.context("reading a training batch")?.images.len();
            if i + 1 >= options.loader_batches {
                break;
            }
        }
        Some((images, images as f64 / t0.elapsed().as_secs_f64()))
    } else {
        None
    };

    // The timed batches, read up front: loading is not part of a step here.
    let needed = options.warmup + options.iters;
    let reader = train_loader(experiment, train.clone())?;
    let mut batches: Vec<DetectionBatch> = Vec::with_capacity(needed);
    let mut epoch = 0u64;
    while batches.len() < needed {
        let before = batches.len();
        for item in reader.iter(epoch, 0, device) {
            batches.push(item.context("reading a training batch")?);
            if batches.len() >= needed {
                break;
            }
        }
        if batches.len() == before {
            bail!("the training loader yields no batch");
        }
        epoch += 1;
    }
    let batch_size = batches[0].images.len();
    let side = batches[0].images.padded_size();

    let scratch = Scratch(std::env::temp_dir().join(format!(
        "kdet-bench-train-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    let (student_params, teacher_params) = (student.num_params(), teacher.num_params());
    let mut student_trainer = Trainer::new(
        experiment.train.clone(),
        scratch.0.join("student"),
        TrainableModel(student),
        train_loader(experiment, train.clone())?,
        device,
    )
    .context("setting up the student step")?;
    let mut distill_trainer = Trainer::new(
        experiment.train.clone(),
        scratch.0.join("distill"),
        distiller,
        train_loader(experiment, train)?,
        device,
    )
    .context("setting up the distill step")?;

    let mut times: [Vec<f64>; 3] = Default::default();
    let mut peaks: [Option<f64>; 3] = [None; 3];
    // What the device's allocator holds after each phase (GPU backends; flex reports none).
    let mut reserved: [Option<f64>; 3] = [None; 3];
    let (mut teacher_inside, mut kd_inside) = (Vec::new(), Vec::new());
    for (i, batch) in batches.into_iter().enumerate() {
        let timed = i >= options.warmup;
        for k in 0..3 {
            let phase = (i + k) % 3;
            reset_peak_rss();
            let t0 = Instant::now();
            match phase {
                0 => {
                    student_trainer
                        .bench_step(batch.clone())
                        .context("student step")?;
                    device.sync().context("waiting for the device")?;
                }
                1 => {
                    let out = teacher.forward(&plain_batch(&batch)?);
                    plain.sync().context("waiting for the device")?;
                    drop(out);
                }
                _ => {
                    let step = distill_trainer
                        .bench_step(batch.clone())
                        .context("distill step")?;
                    device.sync().context("waiting for the device")?;
                    if timed {
                        for (name, v) in step.timings {
                            match name {
                                "teacher_ms" => teacher_inside.push(v),
                                "kd_ms" => kd_inside.push(v),
                                _ => {}
                            }
                        }
                    }
                }
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if timed {
                times[phase].push(ms);
                if let Some(p) = peak_rss_mib() {
                    peaks[phase] = Some(peaks[phase].map_or(p, |q: f64| q.max(p)));
                }
                if let Some(u) = plain.memory_pool_usage() {
                    let mib = u.bytes_reserved as f64 / (1024.0 * 1024.0);
                    reserved[phase] = Some(reserved[phase].map_or(mib, |q: f64| q.max(mib)));
                }
            }
        }
    }
    drop(scratch);
    Ok(TrainBench {
        times,
        peaks,
        reserved,
        teacher_inside,
        kd_inside,
        loader_rate,
        batch_size,
        input_size: side,
        student_params,
        teacher_params,
    })
}
