//! Evaluating a model on a labelled split: predict every image (or the first N) with the
//! experiment's test transforms and score the predictions by COCO box AP, and by mask AP
//! too for a model that predicts masks (hotcoco, pycocotools-exact; a detection's area
//! from its mask, as detectron2).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use kdet_data::results::write_coco_results;
use kdet_data::{
    CocoDataset, CocoOptions, DataError, DetectionBatcher, Loader, LoaderConfig, Normalize,
    Pipeline, Sample,
};
use kdet_eval::EvalReport;
use kdet_eval::coco::{self, CocoEvalConfig, CocoEvaluator, SegmArea};
use kdet_models::Model;
use kdet_structures::Instances;

use crate::experiment::Experiment;
use crate::files::{EVAL_FILE, EvalFile, EvalSettings, PREDICTIONS_FILE};

/// `(annotations.json, images/)` of a split folder, or of a synth folder's `val` split.
pub fn split_folder(dir: &Path) -> Result<(PathBuf, PathBuf)> {
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
pub struct EvalSplit {
    dataset: Arc<CocoDataset>,
    gt: Arc<hotcoco::COCO>,
    labels: coco::LabelMap,
    pipeline: Pipeline,
    batcher: DetectionBatcher,
    batch_size: usize,
    num_workers: usize,
}

/// Predictions of an evaluation and their report.
pub struct Evaluated {
    /// Box AP.
    pub report: EvalReport,
    /// Mask AP, for a model that predicts masks.
    pub segm: Option<EvalReport>,
    /// `(image_id, detections)` in original-image pixels, when asked for.
    pub predictions: Vec<(u64, Instances)>,
}

impl EvalSplit {
    /// Reads the split; images go through the experiment's test transforms.
    pub fn load(
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

    pub fn len(&self) -> usize {
        self.dataset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dataset(&self) -> &CocoDataset {
        &self.dataset
    }

    /// The model must predict one score per category of the split.
    pub fn check_classes(&self, experiment: &Experiment) -> Result<()> {
        let (model, data) = (experiment.model.num_classes(), self.labels.len());
        if model != data {
            bail!(
                "the model predicts {model} classes (`{}`) but {} has {data} categories",
                experiment.model.num_classes_key(),
                self.dataset.json_path().display()
            );
        }
        Ok(())
    }

    /// Predicts the first `max_images` images (all with `None`) with `model` (on a plain
    /// device: `Module::valid` of a training model, or a model built on `--device`) and
    /// scores them; the images are loaded onto the model's device.
    pub fn evaluate(
        &self,
        model: &Model,
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
        let mut masks = match model.predicts_masks() {
            true => Some(CocoEvaluator::new(
                self.gt.clone(),
                self.labels.clone(),
                CocoEvalConfig::segm(SegmArea::Mask),
            )?),
            false => None,
        };
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
            if let Some(m) = &mut masks {
                m.update(&predictions)
                    .context("matching predicted masks to the ground truth")?;
            }
            if keep_predictions {
                kept.extend(predictions);
            }
        }
        let report = evaluator.finish().context("accumulating the evaluation")?;
        let segm = masks
            .map(|m| m.finish().context("accumulating the mask evaluation"))
            .transpose()?;
        Ok(Evaluated {
            report,
            segm,
            predictions: kept,
        })
    }
}

impl Evaluated {
    /// The run files of a final evaluation: `predictions.json` and `eval.json` in
    /// `run_dir` (the latter from `file`, a [`EvalFile`] saying what was evaluated).
    pub fn write_run_files(
        &self,
        run_dir: &Path,
        split: &EvalSplit,
        file: &EvalFile,
    ) -> Result<()> {
        let predictions = run_dir.join(PREDICTIONS_FILE);
        write_coco_results(&predictions, &self.predictions, split.dataset().labels())
            .with_context(|| format!("writing {}", predictions.display()))?;
        file.write(&run_dir.join(EVAL_FILE))
    }

    /// The evaluation file of this report (COCO box AP, and mask AP where evaluated),
    /// inputs unset.
    pub fn eval_file(&self) -> EvalFile {
        let mut file = EvalFile::new(EvalSettings::coco_bbox(), self.report.clone());
        file.segm = self
            .segm
            .as_ref()
            .map(|r| Box::new(EvalFile::new(EvalSettings::coco_segm(), r.clone())));
        file
    }
}
