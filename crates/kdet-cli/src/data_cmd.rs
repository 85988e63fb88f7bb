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
    }
}

/// `file` with noisy boxes written to `out` (kdet_data::noise); returns the report.
fn write_noisy(
    input: &Path,
    out: &Path,
    gamma: f64,
    seed: u64,
) -> Result<kdet_data::noise::NoiseReport> {
    let same = match (input.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "--out {} is the input file: the clean boxes would be lost",
            out.display()
        );
    }
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let mut coco: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", input.display()))?;
    let report =
        kdet_data::noise::add_box_noise(&mut coco, gamma, seed, &input.display().to_string())
            .map_err(anyhow::Error::msg)?;
    let bytes = serde_json::to_vec(&coco)?;
    kdet_data::image_io::write_atomic(out, &bytes)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(report)
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
    let report = write_noisy(&a.input, &a.out, a.gamma, a.seed)?;
    print_noise(&a.out, a.gamma, &report);
    Ok(())
}

/// `train/annotations.noise-<gamma>.json` of a synthetic dataset at `root`.
fn noisy_train_file(root: &Path, gamma: f64) -> PathBuf {
    root.join("train")
        .join(format!("annotations.noise-{gamma}.json"))
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
        let out = noisy_train_file(&a.out, gamma);
        let report = write_noisy(&clean, &out, gamma, a.seed)?;
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
