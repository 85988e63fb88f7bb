//! `kdet eval`: COCO box / mask AP of a results file (through hotcoco, pycocotools-exact),
//! or YouTube-VIS video AP with `--video`, or box AP of a trained checkpoint on a dataset
//! split (`--checkpoint`, `kdet_run::evaluate`). Prints the 12 summary numbers with 6
//! decimals and optionally writes them, with the per-class table and PR curves, as JSON
//! (`kdet_run::files::EvalFile`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use kdet_eval::coco::{self, CocoEvalConfig, IouKind, SegmArea};
use kdet_eval::ytvis;
use kdet_run::evaluate::{EvalSplit, split_folder};
use kdet_run::files::{EvalFile, EvalSettings};
use kdet_run::models::{load_model, weights_crc32};

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
        let settings = EvalSettings {
            protocol: "youtube-vis".into(),
            iou_type: "segm".into(),
            segm_area: None,
        };
        (report, settings)
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
            IouKind::Bbox => EvalSettings::coco_bbox(),
            IouKind::Segm => EvalSettings {
                protocol: "coco".into(),
                iou_type: "segm".into(),
                segm_area: Some(config.segm_area),
            },
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
        let mut file = EvalFile::new(settings, report);
        file.gt = Some(gt.clone());
        file.dt = Some(dt.clone());
        file.write(out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

// ------------------------------------------------------------------ checkpoint mode

/// `kdet eval --checkpoint`.
fn eval_checkpoint(args: &EvalArgs, checkpoint: &Path) -> Result<()> {
    let device = args.device.choice.plain()?;
    let (model, experiment, ckpt) = load_model(checkpoint, &device)?;
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
    println!(
        "{}: step {} (epoch {}), {} images",
        path.display(),
        ckpt.meta.step,
        ckpt.meta.epoch,
        split.len()
    );
    let t0 = Instant::now();
    let evaluated = split.evaluate(&model, None, false)?;
    let file = evaluated.eval_file();
    let report = evaluated.report;
    print!("{report}");
    if let Some(segm) = &evaluated.segm {
        print!("{segm}");
    }
    println!(
        "evaluated in {:.1} s; weights crc32 {:08x}",
        t0.elapsed().as_secs_f64(),
        weights_crc32(&model)
    );
    if args.per_class {
        println!();
        for line in report.class_table_lines() {
            println!("{line}");
        }
        if let Some(segm) = &evaluated.segm {
            println!();
            for line in segm.class_table_lines() {
                println!("{line}");
            }
        }
    }
    if let Some(out) = &args.out {
        let mut file = file;
        file.checkpoint = Some(path);
        file.step = Some(ckpt.meta.step);
        file.gt = Some(json_path);
        file.images = Some(images);
        file.write(out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
