//! `kdet bench train`: what a distillation step costs, next to what it is made of.
//!
//! For one distillation experiment (student, teacher, recipe, data, optimizer), on the
//! `--device` (default `flex`, CPU), it times on the same real training batches:
//! - the **student step** alone (forward, task losses, backward, update: `kdet train`'s
//!   step),
//! - the **teacher forward** alone (plain device, eval norms),
//! - the **distill step** (`kdet distill`'s step: teacher forward, student step, KD terms),
//!
//! interleaved in a rotating order within every iteration so that a change of machine
//! load hits all three alike, as medians after warm-up. Both steps go through
//! [`Trainer::bench_step`], the code the training loop runs. The **overhead** is
//! `distill / (student + teacher)`: 1 means the distillation machinery costs nothing beyond
//! the two networks. It also reports the KD loss time logged inside the distill step, the
//! data loader's throughput on its own (the same workers and transforms as training), and
//! the peak resident memory of each phase (Linux: `VmHWM`, reset through
//! `/proc/self/clear_refs` before each phase; absent elsewhere).
//!
//! Single-process medians vary by several percent between processes on a shared machine;
//! `scripts/bench-train.sh` runs several processes and pools them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::Args;
use kdet_data::DetectionBatch;
use kdet_models::Detector;
use kdet_run::data::{ensure_synth, load_train_split, train_loader};
use kdet_run::models::{TrainableDetector, distiller_of, load_teacher, student_model};
use kdet_run::timing::median;
use kdet_run::{Experiment, TeacherConfig};
use kdet_structures::ImageBatch;
use kdet_train::Trainer;
use serde_json::json;

use crate::bench_cmd::write_report;
use crate::config_cmd::SetArgs;

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// A distillation experiment (`configs/distill/*.toml`): student, `teacher`, `[distill]`
    /// recipe, training data and optimizer.
    #[arg(long, value_name = "EXPERIMENT.toml")]
    config: PathBuf,
    /// The teacher checkpoint [default: the experiment's `teacher`].
    #[arg(long, value_name = "CKPT")]
    teacher: Option<PathBuf>,
    /// Untimed iterations first (each runs all three phases).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed iterations.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Batches read from a fresh loader to time the data pipeline alone (0: skip).
    #[arg(long, default_value_t = 40)]
    loader_batches: usize,
    /// Seed of the weights' initialisation and the data order [default: `train.seed`].
    #[arg(long)]
    seed: Option<u64>,
    /// Run on a pool of this many threads [default: one per core]. With 1, every op runs
    /// on the calling thread, so a sampling profiler sees which op each sample belongs to
    /// (scripts/bench-profile.sh).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Also write the numbers as JSON here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    set: SetArgs,
    #[command(flatten)]
    device: crate::device::DeviceArg,
}

/// The three timed phases, in the order of the first iteration.
const PHASES: [&str; 3] = ["student_step", "teacher_forward", "distill_step"];

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

/// Median, min and max of `v` as JSON (`null` when empty).
fn stats(v: &[f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    let mut s = v.to_vec();
    let m = median(&mut s);
    json!({"median": m, "min": s[0], "max": s[s.len() - 1], "n": s.len()})
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

pub fn run(args: TrainBenchArgs) -> Result<()> {
    match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .context("starting the thread pool")?
            .install(|| bench(args, n)),
        None => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            bench(args, n)
        }
    }
}

fn bench(args: TrainBenchArgs, threads: usize) -> Result<()> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let mut experiment = Experiment::load_with(&args.config, &args.set.overrides()?)?;
    if let Some(seed) = args.seed {
        experiment.train.seed = seed;
    }
    if let Some(t) = &args.teacher {
        experiment.teacher = Some(TeacherConfig::with_path(experiment.teacher.as_ref(), t)?);
    }
    experiment.absolutize_paths()?;
    let (Some(teacher_config), Some(recipe)) = (&experiment.teacher, &experiment.distill) else {
        bail!(
            "{}: `kdet bench train` needs a distillation experiment (`teacher` and a `[distill]` section)",
            args.config.display()
        );
    };
    let teacher_path = teacher_config.path();
    if let Some(s) = experiment.synth() {
        ensure_synth(s)?;
    }
    let paths = experiment.split_paths();
    let train = Arc::new(load_train_split(&paths)?);

    let choice = args.device.choice;
    let device = choice.autodiff()?;
    let plain = device.clone().inner();
    device.seed(experiment.train.seed);
    let teacher: Detector = load_teacher(teacher_config, &experiment, &plain)?;
    let student = student_model(&experiment, &device, true)?;
    device.seed(experiment.train.seed);
    let distilled = student_model(&experiment, &device, true)?;
    let distiller = distiller_of(distilled, teacher.clone(), recipe, &experiment)?;

    // The data pipeline alone, from a cold start of its workers.
    let loader_rate = if args.loader_batches > 0 {
        let loader = train_loader(&experiment, train.clone())?;
        let t0 = Instant::now();
        let mut images = 0usize;
        for (i, item) in loader.iter(0, 0, &device).enumerate() {
            images += item.context("reading a training batch")?.images.len();
            if i + 1 >= args.loader_batches {
                break;
            }
        }
        Some((images, images as f64 / t0.elapsed().as_secs_f64()))
    } else {
        None
    };

    // The timed batches, read up front: loading is not part of a step here.
    let needed = args.warmup + args.iters;
    let reader = train_loader(&experiment, train.clone())?;
    let mut batches: Vec<DetectionBatch> = Vec::with_capacity(needed);
    let mut epoch = 0u64;
    while batches.len() < needed {
        let before = batches.len();
        for item in reader.iter(epoch, 0, &device) {
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
        TrainableDetector(student),
        train_loader(&experiment, train.clone())?,
        &device,
    )
    .context("setting up the student step")?;
    let mut distill_trainer = Trainer::new(
        experiment.train.clone(),
        scratch.0.join("distill"),
        distiller,
        train_loader(&experiment, train)?,
        &device,
    )
    .context("setting up the distill step")?;

    let mut times: [Vec<f64>; 3] = Default::default();
    let mut peaks: [Option<f64>; 3] = [None; 3];
    // What the device's allocator holds after each phase (GPU backends; flex reports none).
    let mut reserved: [Option<f64>; 3] = [None; 3];
    let (mut teacher_inside, mut kd_inside) = (Vec::new(), Vec::new());
    for (i, batch) in batches.into_iter().enumerate() {
        let timed = i >= args.warmup;
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
                    let losses = distill_trainer
                        .bench_step(batch.clone())
                        .context("distill step")?;
                    device.sync().context("waiting for the device")?;
                    if timed {
                        for (name, v) in losses {
                            match name.as_str() {
                                "time.teacher_ms" => teacher_inside.push(v),
                                "time.kd_ms" => kd_inside.push(v),
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

    let med = |v: &[f64]| median(&mut v.to_vec());
    let (s, t, d) = (med(&times[0]), med(&times[1]), med(&times[2]));
    let overhead = d / (s + t);
    println!(
        "{} (teacher {}): batch {batch_size} of {}x{}, {} warm-up + {} timed iterations, {threads} CPU threads, --device {choice} ({})",
        args.config.display(),
        teacher_path.display(),
        side.height,
        side.width,
        args.warmup,
        args.iters,
        choice.backend()
    );
    println!("student {student_params} parameters, teacher {teacher_params}");
    println!(
        "{:<18} {:>10} {:>9} {:>9} {:>14} {:>18}",
        "phase", "median ms", "min", "max", "peak RSS MiB", "device pool MiB"
    );
    for (k, name) in PHASES.iter().enumerate() {
        let mut v = times[k].clone();
        let m = median(&mut v);
        println!(
            "{name:<18} {m:>10.1} {:>9.1} {:>9.1} {:>14} {:>18}",
            v[0],
            v[v.len() - 1],
            peaks[k].map_or("-".to_string(), |p| format!("{p:.0}")),
            reserved[k].map_or("-".to_string(), |p| format!("{p:.0}"))
        );
    }
    if !kd_inside.is_empty() {
        println!(
            "inside the distill step (medians): teacher forward {:.1} ms, KD terms {:.1} ms",
            med(&teacher_inside),
            med(&kd_inside)
        );
    }
    println!(
        "overhead: distill / (student + teacher) = {overhead:.3} ({:+.1} ms per step)",
        d - s - t
    );
    if let Some((n, rate)) = loader_rate {
        println!("data loader alone: {rate:.1} images/s ({n} images, cold start)");
    }
    if let Some(out) = &args.out {
        write_report(
            out,
            &json!({
                "config": args.config.display().to_string(),
                "teacher": teacher_path.display().to_string(),
                "backend": choice.backend(),
                "device": choice.to_string(),
                "threads": threads,
                "batch": batch_size,
                "input_size": [side.height, side.width],
                "warmup": args.warmup,
                "iters": args.iters,
                "parameters": {"student": student_params, "teacher": teacher_params},
                "ms": {
                    "student_step": stats(&times[0]),
                    "teacher_forward": stats(&times[1]),
                    "distill_step": stats(&times[2]),
                    "distill_teacher_inside": stats(&teacher_inside),
                    "distill_kd_terms": stats(&kd_inside),
                },
                "samples_ms": {
                    "student_step": times[0],
                    "teacher_forward": times[1],
                    "distill_step": times[2],
                },
                "overhead": overhead,
                "peak_rss_mib": {
                    "student_step": peaks[0],
                    "teacher_forward": peaks[1],
                    "distill_step": peaks[2],
                },
                "device_pool_reserved_mib": {
                    "student_step": reserved[0],
                    "teacher_forward": reserved[1],
                    "distill_step": reserved[2],
                },
                "loader_images_per_s": loader_rate.map(|(_, r)| r),
            }),
        )?;
    }
    Ok(())
}
