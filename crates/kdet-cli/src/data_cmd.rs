//! `kdet data …`: the built-in synthetic generator, noisy boxes (NDet's noise model,
//! `kdet_data::noise`) and dataset statistics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use kdet_data::stats::SplitStats;
use kdet_data::synth::{SynthConfig, write_dataset};
use kdet_data::{CocoDataset, CocoOptions};

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write the built-in synthetic dataset (COCO images, or YouTube-VIS videos with
    /// --video) as `train/` and `val/` splits under --out.
    Synth(SynthArgs),
    /// Print images, instances per class and the small/medium/large histogram of a
    /// dataset: a `kdet data synth` output folder, one split folder, or a COCO JSON file.
    Stats(StatsArgs),
    /// Write a copy of a COCO instances file with noisy boxes (the noisy-box setting of
    /// NDet: each corner moved by N(0,1)·gamma·side, the clean box kept as `_bbox`), and
    /// print the mean IoU of the noisy boxes with the clean ones.
    Noise(NoiseArgs),
    /// Measure NDet's self-correction on a noisy split: a teacher (a dense detector
    /// trained on the noisy boxes) fuses every noisy box with its predictions as
    /// `[distill] box_correction` does in training; prints the mean IoU of the boxes with
    /// the clean ones before and after (images through the teacher's test transforms).
    Correct(CorrectArgs),
}

#[derive(Args, Debug)]
pub struct CorrectArgs {
    /// The noisy COCO instances JSON (`kdet data noise` output).
    noisy: PathBuf,
    /// The clean file it was made from (same images and annotations).
    #[arg(long)]
    clean: PathBuf,
    /// The images folder of both files.
    #[arg(long)]
    images: PathBuf,
    /// The teacher: a kdet checkpoint or run folder of a dense detector.
    #[arg(long)]
    teacher: PathBuf,
    /// A distillation config whose `[distill] box_correction` sets the fusion [default:
    /// NDet's official step weights, IoU > 0.7, score threshold 0.05, no top-k].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    device: crate::device::DeviceArg,
}

#[derive(Args, Debug)]
pub struct NoiseArgs {
    /// The clean COCO instances JSON.
    input: PathBuf,
    /// Where the noisy copy goes (must not be the input).
    #[arg(long)]
    out: PathBuf,
    /// The noise level gamma (NDet: 0.05, 0.1; the 0.1, 0.2, 0.4).
    #[arg(long)]
    gamma: f64,
    /// Seed of the draws: the same seed writes the same file.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (created; existing files of the same names are replaced).
    #[arg(long)]
    out: PathBuf,
    /// Training images (videos with --video).
    #[arg(long, default_value_t = SynthConfig::default().train_images)]
    images: usize,
    /// Validation images (videos with --video); default: a quarter of --images, at least 1.
    #[arg(long)]
    val_images: Option<usize>,
    /// Image side in pixels.
    #[arg(long, default_value_t = SynthConfig::default().image_size)]
    size: u32,
    /// Seed: the same seed writes byte-identical files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Multiply every object's side (1: the COCO-like mix, mostly small; 2-3: objects
    /// large enough that mask quality decides mask AP). In [0.25, 4].
    #[arg(long, default_value_t = SynthConfig::default().object_scale)]
    object_scale: f32,
    /// Write YouTube-VIS videos with object tracks instead of COCO images.
    #[arg(long)]
    video: bool,
    /// Frames per video (with --video).
    #[arg(long, default_value_t = SynthConfig::default().frames_per_video)]
    frames: usize,
    /// Also write the training split with noisy boxes at this gamma (repeatable), as
    /// `train/annotations.noise-<gamma>.json` beside the clean file (`kdet data noise`,
    /// seed --seed); the validation split stays clean.
    #[arg(long, value_name = "GAMMA")]
    box_noise: Vec<f64>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// A `kdet data synth` output folder, a split folder, or a COCO annotation JSON.
    path: PathBuf,
    /// Also write the statistics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Synth(a) => synth(a),
        DataCommand::Stats(a) => stats(a),
        DataCommand::Noise(a) => noise(a),
        DataCommand::Correct(a) => correct(a),
    }
}

fn correct(a: CorrectArgs) -> Result<()> {
    let config = match &a.config {
        Some(path) => {
            let file = kdet_run::ConfigFile::find(path)?;
            let e = kdet_run::Experiment::load_file(&file, &[])?;
            e.distill
                .and_then(|d| d.box_correction)
                .with_context(|| format!("{file}: no `[distill] box_correction`"))?
        }
        None => kdet_distill::correction::BoxCorrectionConfig::default(),
    };
    let device = a.device.choice.plain()?;
    let (teacher, experiment, _) = kdet_run::models::load_model(&a.teacher, &device)?;
    let r = kdet_run::noisy::correction_iou(
        &teacher,
        &config,
        &experiment,
        &a.noisy,
        &a.clean,
        &a.images,
        &device,
    )?;
    println!(
        "{} boxes: mean IoU with the clean boxes {:.3} before correction, {:.3} after (mean fusion weight {:.3})",
        r.boxes, r.before, r.after, r.mean_weight
    );
    if let Some(path) = &a.json {
        kdet_data::image_io::write_atomic(path, &serde_json::to_vec_pretty(&r)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_noise(out: &Path, gamma: f64, r: &kdet_data::noise::NoiseReport) {
    println!(
        "wrote {} (gamma {gamma}): {} boxes noised, {} kept (ignore or invalid); mean IoU with the clean boxes {:.3}",
        out.display(),
        r.noised,
        r.kept,
        r.mean_iou
    );
}

fn noise(a: NoiseArgs) -> Result<()> {
    let report = kdet_run::data::write_noisy_annotations(&a.input, &a.out, a.gamma, a.seed)?;
    print_noise(&a.out, a.gamma, &report);
    Ok(())
}

fn synth(a: SynthArgs) -> Result<()> {
    let cfg = SynthConfig {
        seed: a.seed,
        image_size: a.size,
        train_images: a.images,
        val_images: a.val_images.unwrap_or((a.images / 4).max(1)),
        object_scale: a.object_scale,
        video: a.video,
        frames_per_video: a.frames,
        ..SynthConfig::default()
    };
    if !a.box_noise.is_empty() && cfg.video {
        bail!("--box-noise is for COCO images, not --video");
    }
    let t0 = Instant::now();
    let summary = write_dataset(&a.out, &cfg)
        .with_context(|| format!("writing the synthetic dataset to {}", a.out.display()))?;
    let unit = if cfg.video {
        ("videos", "tracks")
    } else {
        ("images", "instances")
    };
    for (split, n, inst) in &summary.splits {
        println!("{split:>6}: {n:>6} {} {inst:>8} {}", unit.0, unit.1);
    }
    println!(
        "wrote {} ({}x{} px, seed {}) in {:.1} s",
        a.out.display(),
        cfg.image_size,
        cfg.image_size,
        cfg.seed,
        t0.elapsed().as_secs_f64()
    );
    let clean = a.out.join("train").join("annotations.json");
    for &gamma in &a.box_noise {
        let out = kdet_run::data::noisy_train_file(&a.out, gamma);
        let report = kdet_run::data::write_noisy_annotations(&clean, &out, gamma, a.seed)?;
        print_noise(&out, gamma, &report);
    }
    Ok(())
}

/// The COCO splits found at `path`: `(name, annotation json, image dir)`.
fn coco_splits(path: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    if path.is_file() {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![(name, path.to_path_buf(), dir)]);
    }
    if !path.is_dir() {
        bail!("{}: no such file or folder", path.display());
    }
    let split = |dir: &Path, name: &str| {
        let json = dir.join("annotations.json");
        json.is_file()
            .then(|| (name.to_string(), json, dir.join("images")))
    };
    if let Some(s) = split(
        path,
        &path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    ) {
        return Ok(vec![s]);
    }
    let found: Vec<_> = ["train", "val", "test"]
        .iter()
        .filter_map(|n| split(&path.join(n), n))
        .collect();
    Ok(found)
}

fn stats(a: StatsArgs) -> Result<()> {
    let splits = coco_splits(&a.path)?;
    let mut all = Vec::new();
    if splits.is_empty() {
        let videos = crate::data_cmd::video_stats(&a.path)?;
        if videos.is_empty() {
            bail!(
                "{}: found no dataset (expected annotations.json or instances.json in it or in its train/ and val/ folders)",
                a.path.display()
            );
        }
        for v in &videos {
            print!("{v}");
        }
        return Ok(());
    }
    for (name, json, images) in splits {
        let ds = CocoDataset::load(&json, &images, &CocoOptions::default())
            .with_context(|| format!("reading split {name}"))?;
        for w in &ds.report().warnings {
            eprintln!("warning: {w}");
        }
        let s = SplitStats::from_coco(&name, &ds)?;
        print!("{s}");
        all.push(s);
    }
    if let Some(out) = a.json {
        let bytes = serde_json::to_vec_pretty(&all)?;
        std::fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Statistics of YouTube-VIS splits (`instances.json` in the folder or its split folders).
fn video_stats(path: &Path) -> Result<Vec<kdet_data::stats::VideoStats>> {
    let mut out = Vec::new();
    for (name, dir) in [
        ("train", path.join("train")),
        ("val", path.join("val")),
        ("", path.to_path_buf()),
    ] {
        let json = dir.join("instances.json");
        if json.is_file() {
            let name = if name.is_empty() {
                path.file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                name.to_string()
            };
            let data = kdet_data::ytvis::load_ytvis(&json, &dir.join("JPEGImages"))
                .with_context(|| format!("reading split {name}"))?;
            out.push(kdet_data::stats::VideoStats::from_ytvis(&name, &data));
        }
    }
    Ok(out)
}
