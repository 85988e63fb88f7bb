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
//! load hits all three alike, as medians after warm-up (`kdet_run::bench` measures; this
//! file prints and writes the numbers). The **overhead** is
//! `distill / (student + teacher)`: 1 means the distillation machinery costs nothing beyond
//! the two networks. It also reports the KD loss time logged inside the distill step, the
//! data loader's throughput on its own (the same workers and transforms as training), and
//! the peak resident memory of each phase (Linux: `VmHWM`, reset through
//! `/proc/self/clear_refs` before each phase; absent elsewhere).
//!
//! Single-process medians vary by several percent between processes on a shared machine;
//! `scripts/bench-train.sh` runs several processes and pools them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use kdet_run::bench::{PHASES, TrainBenchOptions, train_bench};
use kdet_run::timing::median;
use kdet_run::{Experiment, TeacherConfig};
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

/// Median, min and max of `v` as JSON (`null` when empty).
fn stats(v: &[f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    let mut s = v.to_vec();
    let m = median(&mut s);
    json!({"median": m, "min": s[0], "max": s[s.len() - 1], "n": s.len()})
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
    let choice = args.device.choice;
    let options = TrainBenchOptions {
        warmup: args.warmup,
        iters: args.iters,
        loader_batches: args.loader_batches,
    };
    let b = train_bench(&experiment, &choice.autodiff()?, options)
        .with_context(|| args.config.display().to_string())?;
    let teacher_path = experiment
        .teacher
        .as_ref()
        .map(|t| t.path().display().to_string())
        .unwrap_or_default();
    let (times, peaks, reserved) = (&b.times, &b.peaks, &b.reserved);
    let (teacher_inside, kd_inside) = (&b.teacher_inside, &b.kd_inside);
    let (batch_size, side, loader_rate) = (b.batch_size, b.input_size, b.loader_rate);
    let (student_params, teacher_params) = (b.student_params, b.teacher_params);
    let med = |v: &[f64]| median(&mut v.to_vec());
    let (s, t, d) = (med(&times[0]), med(&times[1]), med(&times[2]));
    let overhead = d / (s + t);
    println!(
        "{} (teacher {}): batch {batch_size} of {}x{}, {} warm-up + {} timed iterations, {threads} CPU threads, --device {choice} ({})",
        args.config.display(),
        teacher_path,
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
            med(teacher_inside),
            med(kd_inside)
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
                "teacher": teacher_path,
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
                    "distill_teacher_inside": stats(teacher_inside),
                    "distill_kd_terms": stats(kd_inside),
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
