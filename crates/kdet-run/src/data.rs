//! The data of a run: the built-in dataset written on first use, the training split and
//! its loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kdet_data::synth::{SynthConfig, write_dataset};
use kdet_data::{CocoDataset, CocoOptions, DetectionBatcher, Loader, Normalize, Pipeline};

use crate::experiment::{Experiment, SplitPaths, SynthData};

/// `train/annotations.noise-<gamma>.json` of a synthetic dataset at `root`: its training
/// annotations with noisy boxes (`kdet data synth --box-noise`, `data.synth.box_noise`).
pub fn noisy_train_file(root: &Path, gamma: f64) -> PathBuf {
    root.join("train")
        .join(format!("annotations.noise-{gamma}.json"))
}

/// `input` (a COCO file) with NDet's box noise at `gamma` (`kdet_data::noise`, drawn from
/// `seed`) written atomically to `out`; the clean boxes are kept under `_bbox`. Refuses to
/// overwrite the input.
pub fn write_noisy_annotations(
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

/// Writes the synthetic dataset when `root` has none (and its noisy training boxes when
/// `box_noise` asks for them); refuses one made with other settings.
pub fn ensure_synth(s: &SynthData) -> Result<()> {
    ensure_clean_synth(s)?;
    if let Some(gamma) = s.box_noise()? {
        let noisy = noisy_train_file(&s.root, gamma);
        if !noisy.is_file() {
            let clean = s.root.join("train").join("annotations.json");
            let r = write_noisy_annotations(&clean, &noisy, gamma, s.seed)?;
            println!(
                "wrote {} (box noise {gamma}): mean IoU of the noisy boxes with the clean ones {:.3}",
                noisy.display(),
                r.mean_iou
            );
        }
    }
    Ok(())
}

fn ensure_clean_synth(s: &SynthData) -> Result<()> {
    let wanted = s.synth_config();
    let provenance = s.root.join("synth.json");
    if provenance.is_file() {
        let text = std::fs::read_to_string(&provenance)
            .with_context(|| format!("reading {}", provenance.display()))?;
        let found: SynthConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a synth.json", provenance.display()))?;
        if found != wanted {
            bail!(
                "`data.synth`: {} holds a dataset made with other settings (seed {}, {} / {} images of {} px, object scale {}; the config asks for seed {}, {} / {} of {} px, object scale {}): point `root` elsewhere or remove the folder",
                s.root.display(),
                found.seed,
                found.train_images,
                found.val_images,
                found.image_size,
                found.object_scale,
                wanted.seed,
                wanted.train_images,
                wanted.val_images,
                wanted.image_size,
                wanted.object_scale
            );
        }
        return Ok(());
    }
    if s.root.join("train/annotations.json").exists() {
        bail!(
            "`data.synth`: {} holds a dataset without synth.json; point `root` elsewhere or remove the folder",
            s.root.display()
        );
    }
    println!(
        "writing the synthetic dataset ({} train / {} val images, seed {}) to {}",
        wanted.train_images,
        wanted.val_images,
        wanted.seed,
        s.root.display()
    );
    write_dataset(&s.root, &wanted)
        .with_context(|| format!("writing the synthetic dataset to {}", s.root.display()))?;
    Ok(())
}

/// The experiment's splits, the built-in data written first when needed; every path
/// checked (errors name the key).
pub fn prepare_data(experiment: &Experiment) -> Result<SplitPaths> {
    if let Some(s) = experiment.synth() {
        ensure_synth(s)?;
    }
    let paths = experiment.split_paths();
    let key = |k: &str| match experiment.synth() {
        Some(_) => "data.synth.root".to_string(),
        None => format!("data.coco.{k}"),
    };
    for (path, k, what) in [
        (&paths.train_json, "train_json", "training annotations"),
        (&paths.train_images, "train_images", "training images"),
        (&paths.val_json, "val_json", "validation annotations"),
        (&paths.val_images, "val_images", "validation images"),
    ] {
        require(path, &key(k), what)?;
    }
    Ok(paths)
}

/// Checks that a configured data path exists, naming the key.
fn require(path: &Path, key: &str, what: &str) -> Result<()> {
    if !path.exists() {
        bail!("`{key}`: {} does not exist ({what})", path.display());
    }
    Ok(())
}

/// The training split, without images that have no objects (mmdet's
/// `filter_empty_gt=True`); the reader's warnings go to stderr.
pub fn load_train_split(paths: &SplitPaths) -> Result<CocoDataset> {
    let train = CocoDataset::load(
        &paths.train_json,
        &paths.train_images,
        &CocoOptions { filter_empty: true },
    )
    .with_context(|| format!("reading the training split {}", paths.train_json.display()))?;
    for w in &train.report().warnings {
        eprintln!("warning: {w}");
    }
    Ok(train)
}

/// A model that predicts masks learns them from the data: every training image with
/// objects must carry their segmentations. An error names the file and the first image
/// without, never a silent empty mask.
pub fn check_masks(train: &CocoDataset) -> Result<()> {
    let missing = train
        .records()
        .iter()
        .filter(|r| !r.instances.is_empty() && r.instances.masks().is_none())
        .collect::<Vec<_>>();
    if let Some(first) = missing.first() {
        bail!(
            "{}: the model predicts masks, but {} of {} training images have annotations without `segmentation` (first: image id {}, `{}`, annotation ids {:?})",
            train.json_path().display(),
            missing.len(),
            train.len(),
            first.image_id,
            first.file_name,
            first.annotation_ids
        );
    }
    Ok(())
}

/// The experiment's training loader over `train`: its train transforms, batch size,
/// workers and shuffling (seeded with `train.seed`).
pub fn train_loader(
    experiment: &Experiment,
    train: Arc<CocoDataset>,
) -> Result<Loader<CocoDataset>> {
    Loader::new(
        train,
        Pipeline::new(experiment.data.train_transforms.clone().unwrap_or_default()),
        DetectionBatcher {
            normalize: Normalize::default(),
            size_divisor: experiment.data.size_divisor,
        },
        experiment.data.loader.loader_config(experiment.train.seed),
    )
    .context("starting the training loader")
}
