//! `kdet eval`: COCO box / mask AP of a results file (through hotcoco, pycocotools-exact),
//! or YouTube-VIS video AP with `--video`. Prints the 12 summary numbers with 6 decimals and
//! optionally writes them, with the per-class table and PR curves, as JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use kdet_eval::coco::{self, CocoEvalConfig, IouKind, SegmArea};
use kdet_eval::{EvalReport, ytvis};
use serde_json::json;

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
    let (Some(gt), Some(dt)) = (&args.gt, &args.dt) else {
        bail!(
            "kdet eval needs both --gt GT.json and --dt DT.json (missing: {}); \
             evaluating a checkpoint on a dataset directly is not available yet",
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
        write_json(out, gt, dt, settings, &report)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn write_json(
    out: &Path,
    gt: &Path,
    dt: &Path,
    settings: serde_json::Value,
    report: &EvalReport,
) -> Result<()> {
    let stats: serde_json::Map<String, serde_json::Value> = report
        .stats
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let doc = json!({
        "gt": gt.display().to_string(),
        "dt": dt.display().to_string(),
        "settings": settings,
        "stats": stats,
        "report": report,
    });
    let text = serde_json::to_string_pretty(&doc).context("serializing the evaluation report")?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))
}
