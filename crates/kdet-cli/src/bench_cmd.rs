//! `kdet bench`: measurements that belong in `docs/benchmarks.md`, never in tests.
//!
//! `kdet bench infer` times a detector's inference on the default backend (`flex`, CPU):
//! the network forward alone and forward + post-processing (decode, top-k, NMS), per image,
//! as medians over repeated batches after warm-up, on a fixed random batch of the given
//! size. A checkpoint's weights are used when given (post-processing time depends on how
//! many boxes pass the score threshold, so trained weights are the honest input); an
//! experiment file times freshly initialised weights.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use clap::{Args, Subcommand};
use kdet_models::Detector;
use kdet_structures::{ImageBatch, ImageSize};
use serde_json::json;

use crate::eval_cmd::{detector_of, read_checkpoint};
use crate::experiment::Experiment;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Inference latency of a detector (forward, forward + post-processing) per image.
    Infer(InferArgs),
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
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Infer(a) => infer(a),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn infer(args: InferArgs) -> Result<()> {
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let device = Device::flex();
    let (model, experiment, what): (Detector, Experiment, String) =
        match (&args.checkpoint, &args.config) {
            (Some(c), _) => {
                let (ckpt, experiment) = read_checkpoint(c)?;
                let model = detector_of(&ckpt, &experiment, &device)?;
                (model, experiment, ckpt.path.display().to_string())
            }
            (None, Some(c)) => {
                let experiment = Experiment::load(c)?;
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
        .unwrap_or_else(|| experiment.data.synth.as_ref().map_or(800, |s| s.image_size));
    let divisor = experiment.data.size_divisor.max(1) as u32;
    let padded = side.div_ceil(divisor) * divisor;
    let size = ImageSize::new(padded, padded);
    let images = Tensor::<4>::random(
        [args.batch, 3, padded as usize, padded as usize],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let batch = ImageBatch::new(images, vec![size; args.batch], vec![size; args.batch])
        .context("building the benchmark batch")?;
    let params = model.num_params();
    let (mut forward, mut total) = (Vec::new(), Vec::new());
    let mut detections = 0usize;
    for i in 0..args.warmup + args.iters {
        let t0 = Instant::now();
        let out = model.forward(&batch);
        device.sync().context("waiting for the device")?;
        let t1 = t0.elapsed().as_secs_f64();
        let dets = model.postprocess(&out, &batch);
        let t2 = t0.elapsed().as_secs_f64();
        if i >= args.warmup {
            forward.push(t1 * 1e3 / args.batch as f64);
            total.push(t2 * 1e3 / args.batch as f64);
            detections += dets.iter().map(|d| d.len()).sum::<usize>();
        }
    }
    let (fwd, all) = (median(&mut forward), median(&mut total));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{what}");
    println!(
        "{params} parameters; input {}x{padded}x{padded}; {} warm-up + {} timed batches; {threads} CPU threads (flex)",
        args.batch, args.warmup, args.iters
    );
    println!(
        "forward {fwd:.2} ms/image (min {:.2}, max {:.2}); forward + post-processing {all:.2} ms/image (min {:.2}, max {:.2}); {:.1} detections/image",
        forward[0],
        forward[forward.len() - 1],
        total[0],
        total[total.len() - 1],
        detections as f64 / (args.iters * args.batch) as f64
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
            "backend": "flex",
            "forward_ms_per_image": {"median": fwd, "min": forward[0], "max": forward[forward.len() - 1]},
            "total_ms_per_image": {"median": all, "min": total[0], "max": total[total.len() - 1]},
        });
        let text = serde_json::to_string_pretty(&doc).context("serialising the timings")?;
        kdet_data::image_io::write_atomic(out, format!("{text}\n").as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
