//! `kdet export`: a trained model without what only training needs.
//!
//! `--format kdet` writes a weights-only kdet checkpoint: the model record and the header
//! (step, stored experiment) without the optimizer state (a third of an AdamW checkpoint),
//! and, for a `kdet distill` run, the student alone (connectors and other distillation
//! modules dropped). It loads everywhere a checkpoint does (`kdet eval --checkpoint`,
//! `kdet predict`, a recipe's `teacher`), but cannot resume training.
//! Other formats (safetensors, PyTorch, ONNX) belong to the weight import/export work.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use kdet_distill::DistilledStudent;

use crate::eval_cmd::{detector_of, read_checkpoint};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// A weights-only kdet checkpoint (`.ckpt`).
    Kdet,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The checkpoint (or run directory) to export.
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// Output file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "kdet")]
    format: ExportFormat,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let (ckpt, experiment) = read_checkpoint(&args.checkpoint)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match args.format {
        ExportFormat::Kdet => {
            let info = if experiment.distill.is_some() {
                // The student alone, under the `student.` paths its experiment loads from.
                let student = detector_of(&ckpt, &experiment, &Device::flex())?;
                ckpt.write_weights_only(&args.out, Some(DistilledStudent { student }))
            } else {
                ckpt.write_weights_only::<DistilledStudent>(&args.out, None)
            }
            .with_context(|| format!("writing {}", args.out.display()))?;
            println!(
                "wrote {} ({:.1} MB, step {}, crc32 {})",
                args.out.display(),
                info.bytes as f64 / 1e6,
                info.step,
                info.crc32
            );
        }
    }
    Ok(())
}
