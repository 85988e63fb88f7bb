//! `kdet predict`: detect objects in a folder of images (or one image) with a trained
//! checkpoint, and write what a user (or `kdet eval`) needs:
//!
//! - `OUT/predictions.json`: COCO results (`image_id`, `category_id`, `bbox` xywh in the
//!   original image's pixels, `score`): every detection the model returns, i.e. filtered by
//!   the model's own test config (`model.test.score_threshold`), not by `--score-threshold`;
//! - `OUT/images.json`: the COCO `images` entries (`id` 1..N in sorted file-name order,
//!   `file_name`, `width`, `height`) the results refer to;
//! - `OUT/classes.json`: the classes as drawn (`label`, `category_id`, `name`, `color`), a
//!   legend for the pictures;
//! - `OUT/<file stem>.png`: the image with its detections of score >= `--score-threshold`
//!   drawn (`crate::draw`); `<file name>.png` for inputs whose stems collide
//!   (`a.png`, `a.jpg`).
//!
//! Images go through the experiment's `data.test_transforms` and are padded to
//! `data.size_divisor`, exactly as in evaluation: the loader of `kdet eval`, over a list of
//! files instead of an annotation file. A model trained on the built-in 128-px data has no
//! resize step, so a larger photo is run at its own size. Images are decoded on the
//! loader's threads a few batches ahead, so memory holds a few batches whatever the folder
//! size.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::data::dataset::Dataset;
use clap::Args;
use hotcoco::types::Category;
use image::RgbImage;
use kdet_data::image_io::{read_rgb, write_atomic};
use kdet_data::results::write_coco_results;
use kdet_data::synth::CLASS_NAMES;
use kdet_data::{DataError, DetectionBatcher, Loader, LoaderConfig, Normalize, Pipeline, Sample};
use kdet_structures::{ImageSize, Instances, LabelMap};
use serde_json::json;

use crate::draw::{class_color, draw_detections, png_bytes};
use kdet_run::models::{model_of, read_checkpoint};
use kdet_run::{DataSource, Experiment};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A `kdet train` / `kdet distill` checkpoint, or a run directory (its `last.ckpt`).
    /// The model and its test-time settings come from the experiment stored in it.
    #[arg(long, value_name = "CKPT|RUN_DIR")]
    checkpoint: PathBuf,
    /// A folder (every .png / .jpg / .jpeg in it, not recursive, in file-name order) or one
    /// image file.
    #[arg(long, value_name = "DIR|FILE")]
    images: PathBuf,
    /// Output folder (created if needed; must not be the image folder).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Draw detections scoring at least this much. predictions.json keeps every detection
    /// the model returns.
    #[arg(long, value_name = "SCORE", default_value_t = 0.3)]
    score_threshold: f32,
    /// Images per forward pass [default: the experiment's `eval.batch_size`].
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    #[command(flatten)]
    device: crate::device::DeviceArg,
}

/// One input image: its COCO id and where it is read from and drawn to.
#[derive(Debug, Clone)]
struct ImageFile {
    id: u64,
    path: PathBuf,
    /// The name in `images.json` (relative to the image folder).
    file_name: String,
    /// The drawn image's name in the output folder.
    out_name: String,
}

pub fn run(args: PredictArgs) -> Result<()> {
    if !args.score_threshold.is_finite() {
        bail!(
            "--score-threshold must be a number (got {})",
            args.score_threshold
        );
    }
    if args.batch_size == Some(0) {
        bail!("--batch-size must be at least 1");
    }
    let files = list_images(&args.images)?;
    check_out_dir(&args.out, &args.images)?;
    // Headers only: a file that is not an image stops the command before the model runs.
    for f in &files {
        image_header_size(&f.path)?;
    }

    let (ckpt, experiment) = read_checkpoint(&args.checkpoint)?;
    let labels = class_labels(&experiment)?;
    let class_names = labels.names().to_vec();
    let device = args.device.choice.plain()?;
    let model = model_of(&ckpt, &experiment, &device)?;
    let batch_size = args.batch_size.unwrap_or(experiment.eval.batch_size);
    let model_threshold = match experiment.model.dense() {
        Some(d) => format!("model threshold {}", d.test.score_threshold),
        None => "the model's top-k".to_string(),
    };
    println!(
        "{}: step {} (epoch {}), {} image{}, batch {batch_size}; drawing scores >= {} \
         (predictions.json: every detection, {model_threshold})",
        ckpt.path.display(),
        ckpt.meta.step,
        ckpt.meta.epoch,
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        args.score_threshold,
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output folder {}", args.out.display()))?;

    let originals = Arc::new(Mutex::new(HashMap::new()));
    let dataset = Arc::new(ImageFiles {
        files: files.clone(),
        originals: originals.clone(),
    });
    let loader = Loader::new(
        dataset,
        Pipeline::new(experiment.data.test_transforms.clone().unwrap_or_default()),
        DetectionBatcher {
            normalize: Normalize::default(),
            size_divisor: experiment.data.size_divisor,
        },
        LoaderConfig {
            batch_size,
            shuffle: false,
            seed: 0,
            num_workers: experiment.data.loader.num_workers,
            drop_last: false,
            prefetch: 2,
        },
    )
    .context("starting the image loader")?;

    let t0 = Instant::now();
    let by_id: HashMap<u64, &ImageFile> = files.iter().map(|f| (f.id, f)).collect();
    let mut predictions: Vec<(u64, Instances)> = Vec::with_capacity(files.len());
    let mut sizes: HashMap<u64, ImageSize> = HashMap::with_capacity(files.len());
    let (mut num_detections, mut num_drawn) = (0, 0);
    for batch in loader.iter(0, 0, &device) {
        let batch = batch.context("reading the images")?;
        let detections = model.predict(&batch.images);
        for (id, dets) in batch.image_ids.iter().copied().zip(detections) {
            let file = by_id[&id];
            let mut image = originals
                .lock()
                .map_err(|_| anyhow::anyhow!("an image loader thread panicked"))?
                .remove(&id)
                .expect("the loader stashed every image it batched");
            let drawn = draw_detections(&mut image, &dets, &class_names, args.score_threshold);
            let out_path = args.out.join(&file.out_name);
            write_atomic(&out_path, &png_bytes(&image)?)
                .with_context(|| format!("writing the drawn image {}", out_path.display()))?;
            println!(
                "{}: {drawn} drawn / {} detections -> {}",
                file.file_name,
                dets.len(),
                out_path.display()
            );
            num_detections += dets.len();
            num_drawn += drawn;
            sizes.insert(id, ImageSize::new(image.height(), image.width()));
            predictions.push((id, dets));
        }
    }

    let results_path = args.out.join("predictions.json");
    write_coco_results(&results_path, &predictions, &labels)
        .with_context(|| format!("writing {}", results_path.display()))?;
    let images_path = args.out.join("images.json");
    let images: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            let size = sizes[&f.id];
            json!({"id": f.id, "file_name": f.file_name, "width": size.width, "height": size.height})
        })
        .collect();
    write_json(&images_path, &json!(images))?;
    let classes_path = args.out.join("classes.json");
    let classes: Vec<serde_json::Value> = (0..labels.len())
        .map(|k| {
            json!({
                "label": k,
                "category_id": labels.category_id(k),
                "name": labels.name(k),
                "color": class_color(k).0,
            })
        })
        .collect();
    write_json(&classes_path, &json!(classes))?;
    println!(
        "{} image{} in {:.1} s: {num_detections} detections ({num_drawn} drawn); wrote {}, {} and {}",
        files.len(),
        if files.len() == 1 { "" } else { "s" },
        t0.elapsed().as_secs_f64(),
        results_path.display(),
        images_path.display(),
        classes_path.display()
    );
    Ok(())
}

/// The images to predict: `path` itself if it is a file, else its .png / .jpg / .jpeg
/// files (any letter case) in file-name order, numbered from 1.
fn list_images(path: &Path) -> Result<Vec<ImageFile>> {
    let paths: Vec<PathBuf> = if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        let mut paths = Vec::new();
        let entries = std::fs::read_dir(path)
            .with_context(|| format!("--images {}: listing the folder", path.display()))?;
        for entry in entries {
            let entry = entry
                .with_context(|| format!("--images {}: listing the folder", path.display()))?;
            let p = entry.path();
            let is_image = p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["png", "jpg", "jpeg"]
                    .iter()
                    .any(|x| e.eq_ignore_ascii_case(x))
            });
            if is_image && p.is_file() {
                paths.push(p);
            }
        }
        paths.sort();
        if paths.is_empty() {
            bail!(
                "--images {}: no .png, .jpg or .jpeg files in this folder",
                path.display()
            );
        }
        paths
    } else {
        bail!("--images {}: no such file or folder", path.display());
    };
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    let stem = |p: &Path| {
        p.file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name(p))
    };
    let mut seen = HashSet::new();
    let colliding: HashSet<String> = paths
        .iter()
        .map(|p| stem(p))
        .filter(|s| !seen.insert(s.clone()))
        .collect();
    Ok(paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = stem(p);
            let out_name = if colliding.contains(&s) {
                format!("{}.png", name(p))
            } else {
                format!("{s}.png")
            };
            ImageFile {
                id: i as u64 + 1,
                path: p.clone(),
                file_name: name(p),
                out_name,
            }
        })
        .collect())
}

/// Refuses an output folder that is the image folder (the drawn PNGs would replace or mix
/// with the inputs).
fn check_out_dir(out: &Path, images: &Path) -> Result<()> {
    let image_dir = if images.is_file() {
        images.parent().unwrap_or(Path::new("."))
    } else {
        images
    };
    let image_dir = if image_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        image_dir
    };
    if let (Ok(a), Ok(b)) = (out.canonicalize(), image_dir.canonicalize())
        && a == b
    {
        bail!(
            "--out {} is the image folder: the drawn images would overwrite or mix with the inputs; choose another folder",
            out.display()
        );
    }
    Ok(())
}

/// Width and height from an image file's header (the format guessed from its bytes).
fn image_header_size(path: &Path) -> Result<(u32, u32)> {
    image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .with_context(|| format!("{}: cannot read the file", path.display()))?
        .into_dimensions()
        .with_context(|| format!("{}: not a readable PNG or JPEG image", path.display()))
}

/// Contiguous labels ↔ category ids and names of the data the model was trained on: the
/// built-in data's classes (ids 1..=8), or the categories of the experiment's COCO
/// annotation files (val, else train). When neither is readable (or its class count
/// differs from the model's), labels are named `class <k>` with category id `k + 1`, with
/// a warning.
fn class_labels(experiment: &Experiment) -> Result<LabelMap> {
    let num_classes = experiment.model.num_classes();
    if experiment.synth().is_some() {
        let cats: Vec<Category> = CLASS_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| Category {
                id: i as u64 + 1,
                name: (*name).to_string(),
                ..Default::default()
            })
            .collect();
        return LabelMap::from_categories(&cats).map_err(anyhow::Error::msg);
    }
    let mut problems = Vec::new();
    let jsons = match &experiment.data.source {
        DataSource::Coco(c) => vec![&c.val_json, &c.train_json],
        DataSource::Synth(_) => Vec::new(),
    };
    for json in jsons {
        match read_categories(json) {
            Ok(labels) if labels.len() == num_classes => return Ok(labels),
            Ok(labels) => problems.push(format!(
                "{} has {} categories but the model predicts {num_classes}",
                json.display(),
                labels.len()
            )),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    eprintln!(
        "warning: no class names ({}); naming the classes `class <k>` and writing category ids k + 1",
        if problems.is_empty() {
            "the experiment names no annotation file".to_string()
        } else {
            problems.join("; ")
        }
    );
    let cats: Vec<Category> = (0..num_classes)
        .map(|k| Category {
            id: k as u64 + 1,
            name: format!("class {k}"),
            ..Default::default()
        })
        .collect();
    LabelMap::from_categories(&cats).map_err(anyhow::Error::msg)
}

/// The categories of a COCO annotation file as a label map (ascending ids).
fn read_categories(path: &Path) -> Result<LabelMap> {
    #[derive(serde::Deserialize)]
    struct Categories {
        categories: Vec<Category>,
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let parsed: Categories = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{}: reading its categories", path.display()))?;
    let cats: Vec<Category> = parsed
        .categories
        .into_iter()
        .map(|mut c| {
            if c.name.is_empty() {
                c.name = hotcoco::types::placeholder_cat_name(c.id);
            }
            c
        })
        .collect();
    LabelMap::from_categories(&cats).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .with_context(|| format!("serialising {}", path.display()))?;
    write_atomic(path, (text + "\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The input files as a dataset without annotations. Each decoded image is also kept in
/// `originals` until the command has drawn on it: the loader hands out only the
/// transformed, normalised batch. Entries are taken out batch by batch, so the map holds
/// at most the batches the loader has prepared ahead.
struct ImageFiles {
    files: Vec<ImageFile>,
    originals: Arc<Mutex<HashMap<u64, RgbImage>>>,
}

impl Dataset<Sample, DataError> for ImageFiles {
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let f = &self.files[index];
        let image = read_rgb(&f.path, f.id)?;
        let size = ImageSize::new(image.height(), image.width());
        if let Ok(mut originals) = self.originals.lock() {
            originals.insert(f.id, image.clone());
        }
        Ok(Sample {
            image_id: f.id,
            image,
            instances: Instances::empty(size),
            original_size: size,
        })
    }

    fn len(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_images_sorted_and_names_colliding_stems_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.png", "a.JPG", "a.png", "c.jpeg", "notes.txt", "d.gif"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        std::fs::create_dir(dir.path().join("sub.png")).expect("mkdir");
        let files = list_images(dir.path()).expect("lists");
        let names: Vec<(&str, &str, u64)> = files
            .iter()
            .map(|f| (f.file_name.as_str(), f.out_name.as_str(), f.id))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a.JPG", "a.JPG.png", 1),
                ("a.png", "a.png.png", 2),
                ("b.png", "b.png", 3),
                ("c.jpeg", "c.png", 4),
            ]
        );
    }

    #[test]
    fn refuses_the_image_folder_as_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_out_dir(dir.path(), dir.path()).expect_err("same folder");
        assert!(err.to_string().contains("is the image folder"), "{err}");
        check_out_dir(&dir.path().join("out"), dir.path()).expect("another folder");
    }
}
