//! The data of a run: the built-in dataset written on first use, the training split and
//! its loader.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kdet_data::synth::{SynthConfig, write_dataset};
use kdet_data::{CocoDataset, CocoOptions, DetectionBatcher, Loader, Normalize, Pipeline};

use crate::experiment::{Experiment, SplitPaths, SynthData};

/// Writes the synthetic dataset when `root` has none; refuses one made with other settings.
pub fn ensure_synth(s: &SynthData) -> Result<()> {
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
