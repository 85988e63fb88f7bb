//! `kdet eval`: COCO box / mask AP of a results file (through hotcoco, pycocotools-exact),
//! or YouTube-VIS video AP with `--video`, or box AP of a trained checkpoint on a dataset
//! split (`--checkpoint`). Prints the 12 summary numbers with 6 decimals and optionally
//! writes them, with the per-class table and PR curves, as JSON.
//!
//! [`EvalSplit`] (predict a split with a detector and score it) is shared with `kdet train`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use kdet_data::{
    CocoDataset, CocoOptions, DataError, DetectionBatcher, Loader, LoaderConfig, Normalize,
    Pipeline, Sample,
};
use kdet_distill::distiller::DistilledStudent;
use kdet_eval::coco::{self, CocoEvalConfig, CocoEvaluator, IouKind, SegmArea};
use kdet_eval::{EvalReport, ytvis};
use kdet_models::Detector;
use kdet_structures::Instances;
use kdet_train::{Checkpoint, last_checkpoint_path};
use serde_json::json;

use crate::experiment::Experiment;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Ground truth: a COCO instances JSON, or a YouTube-VIS JSON with --video.
    #[arg(long, value_name = "GT.json")]
    gt: Option<PathBuf>,
    /// Detections: a COCO results JSON (a list of {image_id, category_id, score, bbox |
    /// segmentation}), or YouTube-VIS results ({video_id, category_id, score,
    /// segmentations}) with --video.
    #[arg(long, value_name = "DT.json")]
    dt: Option<PathBuf>,
    /// Evaluate a `kdet train` checkpoint (`last.ckpt`, `step_N.ckpt`, or a run directory
    /// for its `last.ckpt`): the model is rebuilt from the experiment stored in it, run on
    /// --data DIR (or --gt JSON --images DIR) with the experiment's test transforms, and
    /// scored by box AP.
    #[arg(long, value_name = "CKPT", conflicts_with_all = ["dt", "video", "iou_type", "segm_area"])]
    checkpoint: Option<PathBuf>,
    /// With --checkpoint: a split folder (`annotations.json` + `images/`) or a
    /// `kdet data synth` folder (its `val` split).
    #[arg(long, value_name = "DIR", requires = "checkpoint", conflicts_with_all = ["gt", "images"])]
    data: Option<PathBuf>,
    /// With --checkpoint and --gt: the folder the ground truth's `file_name`s are in.
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    images: Option<PathBuf>,
    /// With --checkpoint: images per forward pass [default: the experiment's
    /// `eval.batch_size`].
    #[arg(long, value_name = "N", requires = "checkpoint")]
    batch_size: Option<usize>,
    /// What to match: boxes or masks [default: bbox; segm with --video].
    #[arg(long, value_enum)]
    iou_type: Option<IouTypeArg>,
    /// Mask AP only: a detection's area (which places it in small/medium/large) is its mask
    /// pixel count (detectron2) or its box w*h (pycocotools with the results' bbox kept)
    /// [default: mask].
    #[arg(long, value_enum)]
    segm_area: Option<SegmAreaArg>,
    /// YouTube-VIS video AP (also OVIS): tracks, 128²/256² area ranges.
    #[arg(long)]
    video: bool,
    /// Write the summary, the per-class table and the PR curves as JSON to this file.
    #[arg(long, value_name = "stats.json")]
    out: Option<PathBuf>,
    /// Also print AP / AP50 / AP75 / AR100 per category.
    #[arg(long)]
    per_class: bool,
    #[command(flatten)]
    device: crate::device::DeviceArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum IouTypeArg {
    Bbox,
    Segm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SegmAreaArg {
    Mask,
    Bbox,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if let Some(checkpoint) = &args.checkpoint {
        return eval_checkpoint(&args, checkpoint);
    }
    let (Some(gt), Some(dt)) = (&args.gt, &args.dt) else {
        bail!(
            "kdet eval needs both --gt GT.json and --dt DT.json (missing: {}), \
             or --checkpoint CKPT with --data DIR or --gt GT.json --images DIR",
            [("--gt", args.gt.is_none()), ("--dt", args.dt.is_none())]
                .iter()
                .filter(|(_, missing)| *missing)
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(" and ")
        );
    };
    let (report, settings) = if args.video {
        if args.iou_type == Some(IouTypeArg::Bbox) {
            bail!("--video evaluates masks only (YouTube-VIS AP is mask AP); drop --iou-type bbox");
        }
        if args.segm_area.is_some() {
            bail!("--segm-area does not apply to --video (a track's area is its mean mask area)");
        }
        let report = ytvis::evaluate_ytvis_files(gt, dt)
            .with_context(|| format!("evaluating {} against {}", dt.display(), gt.display()))?;
        (
            report,
            json!({"protocol": "youtube-vis", "iou_type": "segm"}),
        )
    } else {
        let config = match (args.iou_type.unwrap_or(IouTypeArg::Bbox), args.segm_area) {
            (IouTypeArg::Bbox, Some(_)) => bail!("--segm-area applies to --iou-type segm only"),
            (IouTypeArg::Bbox, None) => CocoEvalConfig::bbox(),
            (IouTypeArg::Segm, area) => {
                CocoEvalConfig::segm(match area.unwrap_or(SegmAreaArg::Mask) {
                    SegmAreaArg::Mask => SegmArea::Mask,
                    SegmAreaArg::Bbox => SegmArea::Bbox,
                })
            }
        };
        let report = coco::evaluate_results_file(gt, dt, config)
            .with_context(|| format!("evaluating {} against {}", dt.display(), gt.display()))?;
        let settings = match config.iou {
            IouKind::Bbox => json!({"protocol": "coco", "iou_type": "bbox"}),
            IouKind::Segm => {
                json!({"protocol": "coco", "iou_type": "segm", "segm_area": config.segm_area})
            }
        };
        (report, settings)
    };

    print!("{report}");
    if args.per_class {
        println!();
        for line in report.class_table_lines() {
            println!("{line}");
        }
    }
    if let Some(out) = &args.out {
        let inputs = json!({
            "gt": gt.display().to_string(),
            "dt": dt.display().to_string(),
        });
        write_json(out, inputs, settings, &report)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// The 12 stats by name.
pub(crate) fn stats_json(report: &EvalReport) -> serde_json::Map<String, serde_json::Value> {
    report
        .stats
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

/// Writes `inputs` (an object: what was evaluated) with `settings`, the 12 stats and the
/// whole report.
pub(crate) fn write_json(
    out: &Path,
    inputs: serde_json::Value,
    settings: serde_json::Value,
    report: &EvalReport,
) -> Result<()> {
    let mut doc = match inputs {
        serde_json::Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("inputs".into(), other);
            map
        }
    };
    doc.insert("settings".into(), settings);
    doc.insert("stats".into(), json!(stats_json(report)));
    doc.insert("report".into(), json!(report));
    let doc = serde_json::Value::Object(doc);
    let text = serde_json::to_string_pretty(&doc).context("serializing the evaluation report")?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))
}

// ------------------------------------------------------------------ checkpoint mode

/// A checkpoint (file or run directory) with its stored experiment.
pub(crate) fn read_checkpoint(checkpoint: &Path) -> Result<(Checkpoint, Experiment)> {
    let path = if checkpoint.is_dir() {
        last_checkpoint_path(checkpoint)
    } else {
        checkpoint.to_path_buf()
    };
    let ckpt = Checkpoint::read(&path).context("reading the checkpoint")?;
    let experiment = experiment_of(&ckpt)?;
    Ok((ckpt, experiment))
}

/// The detector of a checkpoint on `device`: the trained model of a `kdet train` run, the
/// student (without its distillation modules) of a `kdet distill` run.
pub(crate) fn detector_of(
    ckpt: &Checkpoint,
    experiment: &Experiment,
    device: &Device,
) -> Result<Detector> {
    let student = experiment.model.init(device);
    if experiment.distill.is_some() {
        ckpt.load_submodel(DistilledStudent { student })
            .map(|d| d.student)
    } else {
        ckpt.load_model(student)
    }
    .context("loading the checkpoint's weights")
}

/// `kdet eval --checkpoint`.
fn eval_checkpoint(args: &EvalArgs, checkpoint: &Path) -> Result<()> {
    let (ckpt, experiment) = read_checkpoint(checkpoint)?;
    let path = ckpt.path.clone();
    let (json_path, images) = match (&args.data, &args.gt, &args.images) {
        (Some(dir), _, _) => split_folder(dir)?,
        (None, Some(gt), Some(images)) => (gt.clone(), images.clone()),
        (None, Some(_), None) => bail!("--gt with --checkpoint needs --images DIR too"),
        (None, None, _) => {
            bail!(
                "--checkpoint needs the data to evaluate on: --data DIR or --gt GT.json --images DIR"
            )
        }
    };
    let batch_size = args.batch_size.unwrap_or(experiment.eval.batch_size);
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let split = EvalSplit::load(&json_path, &images, &experiment, batch_size)?;
    split.check_classes(&experiment)?;
    let device = args.device.choice.plain()?;
    let model = detector_of(&ckpt, &experiment, &device)?;
    println!(
        "{}: step {} (epoch {}), {} images",
        path.display(),
        ckpt.meta.step,
        ckpt.meta.epoch,
        split.len()
    );
    let t0 = Instant::now();
    let evaluated = split.evaluate(&model, None, false)?;
    let report = evaluated.report;
    print!("{report}");
    println!(
        "evaluated in {:.1} s; weights crc32 {:08x}",
        t0.elapsed().as_secs_f64(),
        crate::train_cmd::weights_crc32(&model)
    );
    if args.per_class {
        println!();
        for line in report.class_table_lines() {
            println!("{line}");
        }
    }
    if let Some(out) = &args.out {
        let inputs = json!({
            "checkpoint": path.display().to_string(),
            "step": ckpt.meta.step,
            "gt": json_path.display().to_string(),
            "images": images.display().to_string(),
        });
        write_json(
            out,
            inputs,
            json!({"protocol": "coco", "iou_type": "bbox"}),
            &report,
        )?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// The experiment a checkpoint was trained with.
pub(crate) fn experiment_of(ckpt: &Checkpoint) -> Result<Experiment> {
    let value = ckpt.meta.experiment.clone().with_context(|| {
        format!(
            "{}: the checkpoint stores no experiment (not written by `kdet train`?)",
            ckpt.path.display()
        )
    })?;
    let experiment: Experiment = serde_json::from_value(value).with_context(|| {
        format!(
            "{}: the stored experiment does not parse (written by another kdet version?)",
            ckpt.path.display()
        )
    })?;
    experiment
        .resolve()
        .with_context(|| format!("{}: the stored experiment", ckpt.path.display()))
}

/// `(annotations.json, images/)` of a split folder, or of a synth folder's `val` split.
pub(crate) fn split_folder(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    for d in [dir.to_path_buf(), dir.join("val")] {
        let json = d.join("annotations.json");
        if json.is_file() {
            return Ok((json, d.join("images")));
        }
    }
    bail!(
        "{}: no annotations.json in it or in its val/ folder (give a split folder, a `kdet data synth` folder, or --gt JSON --images DIR)",
        dir.display()
    )
}

/// The first `len` images of a dataset (a quick periodic evaluation).
struct FirstImages {
    dataset: Arc<CocoDataset>,
    len: usize,
}

impl Dataset<Sample, DataError> for FirstImages {
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        self.dataset.get(index)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A labelled split to predict with a detector and score by COCO box AP.
pub(crate) struct EvalSplit {
    dataset: Arc<CocoDataset>,
    gt: Arc<hotcoco::COCO>,
    labels: coco::LabelMap,
    pipeline: Pipeline,
    batcher: DetectionBatcher,
    batch_size: usize,
    num_workers: usize,
}

/// Predictions of an evaluation and their report.
pub(crate) struct Evaluated {
    pub report: EvalReport,
    /// `(image_id, detections)` in original-image pixels, when asked for.
    pub predictions: Vec<(u64, Instances)>,
}

impl EvalSplit {
    /// Reads the split; images go through the experiment's test transforms.
    pub(crate) fn load(
        json: &Path,
        images: &Path,
        experiment: &Experiment,
        batch_size: usize,
    ) -> Result<Self> {
        let dataset = CocoDataset::load(json, images, &CocoOptions::default())
            .with_context(|| format!("reading the evaluation split {}", json.display()))?;
        for w in &dataset.report().warnings {
            eprintln!("warning: {w}");
        }
        let labels = coco::LabelMap::new(dataset.labels().category_ids().to_vec());
        let gt = Arc::new(dataset.coco().clone());
        Ok(Self {
            dataset: Arc::new(dataset),
            gt,
            labels,
            pipeline: Pipeline::new(experiment.data.test_transforms.clone().unwrap_or_default()),
            batcher: DetectionBatcher {
                normalize: Normalize::default(),
                size_divisor: experiment.data.size_divisor,
            },
            batch_size,
            num_workers: experiment.data.loader.num_workers,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.dataset.len()
    }

    pub(crate) fn dataset(&self) -> &CocoDataset {
        &self.dataset
    }

    /// The model must predict one score per category of the split.
    pub(crate) fn check_classes(&self, experiment: &Experiment) -> Result<()> {
        let (model, data) = (experiment.model.num_classes(), self.labels.len());
        if model != data {
            bail!(
                "the model predicts {model} classes (`model.head.num_classes`) but {} has {data} categories",
                self.dataset.json_path().display()
            );
        }
        Ok(())
    }

    /// Predicts the first `max_images` images (all with `None`) with `model` (on a plain
    /// device: `Module::valid` of a training model, or a model built on `--device`) and
    /// scores them; the images are loaded onto the model's device.
    pub(crate) fn evaluate(
        &self,
        model: &Detector,
        max_images: Option<usize>,
        keep_predictions: bool,
    ) -> Result<Evaluated> {
        let len = max_images.map_or(self.len(), |m| m.min(self.len()));
        let loader = Loader::new(
            Arc::new(FirstImages {
                dataset: self.dataset.clone(),
                len,
            }),
            self.pipeline.clone(),
            self.batcher.clone(),
            LoaderConfig {
                batch_size: self.batch_size,
                shuffle: false,
                seed: 0,
                num_workers: self.num_workers,
                drop_last: false,
                prefetch: 2,
            },
        )
        .context("starting the evaluation loader")?;
        let mut evaluator =
            CocoEvaluator::new(self.gt.clone(), self.labels.clone(), CocoEvalConfig::bbox())?;
        let mut kept = Vec::new();
        let device = burn::module::Module::devices(model)
            .into_iter()
            .next()
            .unwrap_or_else(Device::flex);
        for batch in loader.iter(0, 0, &device) {
            let batch = batch.context("loading evaluation images")?;
            let detections = model.predict(&batch.images);
            let predictions: Vec<(u64, Instances)> =
                batch.image_ids.iter().copied().zip(detections).collect();
            evaluator
                .update(&predictions)
                .context("matching predictions to the ground truth")?;
            if keep_predictions {
                kept.extend(predictions);
            }
        }
        let report = evaluator.finish().context("accumulating the evaluation")?;
        Ok(Evaluated {
            report,
            predictions: kept,
        })
    }
}
