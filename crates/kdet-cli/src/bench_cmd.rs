//! `kdet bench`: measurements that belong in `docs/benchmarks.md`, never in tests.
//! `kdet bench train` is in [`crate::bench_train`].
//!
//! `kdet bench infer` times a detector's inference on `--device` (default `flex`, CPU):
//! the network forward alone and forward + post-processing (decode, top-k, NMS), per image,
//! as medians over repeated batches after warm-up, on a fixed random batch of the given
//! size. A checkpoint's weights are used when given (post-processing time depends on how
//! many boxes pass the score threshold, so trained weights are the honest input); an
//! experiment file times freshly initialised weights.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::{Args, Subcommand};
use kdet_models::Model;
use kdet_run::Experiment;
use kdet_run::models::load_model;
use kdet_run::timing::{median, random_batch, time_inference};
use serde_json::json;

use crate::config_cmd::SetArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Inference latency of a detector (forward, forward + post-processing) per image.
    Infer(InferArgs),
    /// Distillation step vs student step + teacher forward, loader throughput, peak memory.
    Train(crate::bench_train::TrainBenchArgs),
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// A checkpoint (or run directory) to time, with its trained weights.
    #[arg(
        long,
        value_name = "CKPT",
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    checkpoint: Option<PathBuf>,
    /// An experiment file to time with freshly initialised weights.
    #[arg(long, value_name = "EXPERIMENT.toml")]
    config: Option<PathBuf>,
    /// Images per batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Square input side in pixels [default: the built-in data's size, else 800].
    #[arg(long)]
    size: Option<u32>,
    /// Untimed batches first.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed batches.
    #[arg(long, default_value_t = 30)]
    iters: usize,
    /// Also write the numbers as JSON here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// (With --config.)
    #[command(flatten)]
    set: SetArgs,
    #[command(flatten)]
    device: crate::device::DeviceArg,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Infer(a) => infer(a),
        BenchCommand::Train(a) => crate::bench_train::run(a),
    }
}

fn infer(args: InferArgs) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let device = args.device.choice.plain()?;
    let (model, experiment, what): (Model, Experiment, String) =
        match (&args.checkpoint, &args.config) {
            (Some(c), _) => {
                let (model, experiment, ckpt) = load_model(c, &device)?;
                (model, experiment, ckpt.path.display().to_string())
            }
            (None, Some(c)) => {
                let experiment = Experiment::load_with(c, &args.set.overrides()?)?;
                let model = experiment.model.init(&device);
                (
                    model,
                    experiment,
                    format!("{} (initial weights)", c.display()),
                )
            }
            (None, None) => bail!("--checkpoint or --config is required"),
        };
    let side = args
        .size
        .unwrap_or_else(|| experiment.synth().map_or(800, |s| s.image_size));
    let divisor = experiment.data.size_divisor.max(1) as u32;
    let batch = random_batch(args.batch, side, divisor, &device)?;
    let padded = batch.padded_size().height;
    let params = model.num_params();
    let t = time_inference(&model, &batch, args.warmup, args.iters)?;
    let (mut forward, mut total) = (t.forward, t.total);
    let detections = t.detections;
    let (fwd, all) = (median(&mut forward), median(&mut total));
    let parts: Vec<(&str, f64)> = t
        .parts
        .into_iter()
        .map(|(name, mut times)| (name, median(&mut times)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{what}");
    println!(
        "{params} parameters; input {}x{padded}x{padded}; {} warm-up + {} timed batches; {threads} CPU threads; --device {} ({})",
        args.batch,
        args.warmup,
        args.iters,
        args.device.choice,
        args.device.choice.backend()
    );
    println!(
        "forward {fwd:.2} ms/image (min {:.2}, max {:.2}); forward + post-processing {all:.2} ms/image (min {:.2}, max {:.2}); {:.1} detections/image",
        forward[0],
        forward[forward.len() - 1],
        total[0],
        total[total.len() - 1],
        detections as f64 / (args.iters * args.batch) as f64
    );
    let by_part: Vec<String> = parts.iter().map(|(n, v)| format!("{n} {v:.2}")).collect();
    println!(
        "forward by part (ms/image, medians): {}",
        by_part.join(", ")
    );
    if let Some(out) = &args.out {
        let doc = json!({
            "model": what,
            "parameters": params,
            "batch": args.batch,
            "input_size": padded,
            "warmup": args.warmup,
            "iters": args.iters,
            "threads": threads,
            "backend": args.device.choice.backend(),
            "device": args.device.choice.to_string(),
            "forward_ms_per_image": {"median": fwd, "min": forward[0], "max": forward[forward.len() - 1]},
            "total_ms_per_image": {"median": all, "min": total[0], "max": total[total.len() - 1]},
            "parts_ms_per_image": parts.iter().map(|(n, v)| (n.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        write_report(out, &doc)?;
    }
    Ok(())
}

/// Writes a benchmark's JSON (atomically) and says where.
pub(crate) fn write_report(out: &std::path::Path, doc: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(doc).context("serialising the timings")?;
    kdet_data::image_io::write_atomic(out, format!("{text}\n").as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
