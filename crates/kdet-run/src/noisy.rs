//! Noisy-box self-correction (NDet, `../shared/methods/video-semisup-weak.md` §4.3) as a
//! diagnostic outside training: how close a teacher's fusion
//! ([`kdet_distill::correction`]) brings noisy training boxes to the clean ones.
//!
//! NDet's code logs the mean IoU of the training boxes with the clean ones, before and after
//! correction, when the annotations keep the clean box (`_bbox`). kdet's training loader
//! does not carry the clean boxes, so this pass measures it over a whole split instead: the
//! noisy file and the clean file are read side by side (same images, same annotations in the
//! same order: what `kdet data noise` / `data.synth.box_noise` write), every image goes
//! through the experiment's *test* transforms (no flip: the training batches differ only by
//! their random flips), the teacher predicts on it, and each noisy box is fused with the
//! teacher's predictions exactly as `[distill] box_correction` does in training. IoU is
//! invariant to the resize, so it is measured in the network's pixels.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use kdet_data::{
    CocoDataset, CocoOptions, DetectionBatcher, Loader, LoaderConfig, Normalize, Pipeline,
};
use kdet_distill::correction::{BoxCorrectionConfig, correct_targets};
use kdet_models::Model;
use kdet_structures::iou::iou_xyxy;
use serde::{Deserialize, Serialize};

use crate::experiment::Experiment;

/// Mean IoU of the training boxes with the clean ones, before and after correction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CorrectionIou {
    /// Boxes compared (non-crowd annotations of the split).
    pub boxes: usize,
    /// Mean IoU of the noisy boxes with the clean ones.
    pub before: f64,
    /// Mean IoU of the corrected boxes with the clean ones.
    pub after: f64,
    /// Mean `Σ w` of the fusion (0: the annotation kept).
    pub mean_weight: f64,
}

/// [`CorrectionIou`] of `teacher` (a dense detector, on a plain device) correcting the
/// boxes of `noisy_json` against those of `clean_json` (both over `images`), with
/// `config`; images batched and transformed as `experiment`'s evaluation.
pub fn correction_iou(
    teacher: &Model,
    config: &BoxCorrectionConfig,
    experiment: &Experiment,
    noisy_json: &Path,
    clean_json: &Path,
    images: &Path,
    device: &Device,
) -> Result<CorrectionIou> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("box correction: {e}"))?;
    let Some(detector) = teacher.dense() else {
        bail!("box correction needs a dense detector as the teacher (its priors and scores)");
    };
    let load = |json: &Path| {
        CocoDataset::load(
            json,
            images,
            &CocoOptions {
                filter_empty: false,
            },
        )
        .with_context(|| format!("reading {}", json.display()))
    };
    let (noisy, clean) = (load(noisy_json)?, load(clean_json)?);
    if noisy.len() != clean.len() {
        bail!(
            "{} has {} images, {} has {}: the noisy and the clean file must list the same images",
            noisy_json.display(),
            noisy.len(),
            clean_json.display(),
            clean.len()
        );
    }
    for (n, c) in noisy.records().iter().zip(clean.records()) {
        if n.image_id != c.image_id || n.annotation_ids != c.annotation_ids {
            bail!(
                "image id {} of {}: its annotations ({:?}) are not those of {} (image id {}, {:?}); the noisy file must be the clean one with its boxes moved",
                n.image_id,
                noisy_json.display(),
                n.annotation_ids,
                clean_json.display(),
                c.image_id,
                c.annotation_ids
            );
        }
    }
    let loader = |dataset: CocoDataset| {
        Loader::new(
            Arc::new(dataset),
            Pipeline::new(experiment.data.test_transforms.clone().unwrap_or_default()),
            DetectionBatcher {
                normalize: Normalize::default(),
                size_divisor: experiment.data.size_divisor,
            },
            LoaderConfig {
                batch_size: experiment.eval.batch_size,
                shuffle: false,
                seed: 0,
                num_workers: experiment.data.loader.num_workers,
                drop_last: false,
                prefetch: 2,
            },
        )
        .context("starting the loader")
    };
    let (noisy_loader, clean_loader) = (loader(noisy)?, loader(clean)?);
    let (mut before, mut after, mut weight, mut boxes) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for (n, c) in noisy_loader
        .iter(0, 0, device)
        .zip(clean_loader.iter(0, 0, device))
    {
        let (n, c) = (n.context("loading images")?, c.context("loading images")?);
        let out = detector.forward(&n.images);
        let (corrected, stats) = correct_targets(config, detector, &out, &n.targets);
        weight += f64::from(stats.mean_weight) * stats.boxes as f64;
        for ((noisy, fixed), clean) in n.targets.iter().zip(&corrected).zip(&c.targets) {
            let crowd = clean.crowd();
            let triples = noisy
                .boxes()
                .as_slice()
                .iter()
                .zip(fixed.boxes().as_slice())
                .zip(clean.boxes().as_slice())
                .enumerate();
            for (i, ((&a, &b), &g)) in triples {
                if crowd.is_some_and(|c| c[i]) {
                    continue;
                }
                before += f64::from(iou_xyxy(a, g));
                after += f64::from(iou_xyxy(b, g));
                boxes += 1;
            }
        }
    }
    let mean = |v: f64| if boxes == 0 { 0.0 } else { v / boxes as f64 };
    Ok(CorrectionIou {
        boxes,
        before: mean(before),
        after: mean(after),
        mean_weight: mean(weight),
    })
}
