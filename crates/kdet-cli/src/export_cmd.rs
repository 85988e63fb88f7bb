//! `kdet export`: a trained model without what only training needs. For a `kdet distill`
//! run that is the student alone (connectors and other distillation modules dropped); for
//! a `kdet train` run, the trained detector.
//!
//! - `--format kdet`: a weights-only kdet checkpoint (the model record and the header:
//!   step, stored experiment; no optimizer state, a third of an AdamW checkpoint). It
//!   loads everywhere a checkpoint does (`kdet eval --checkpoint`, `kdet predict`, a
//!   recipe's `teacher`), but cannot resume training.
//! - `--format safetensors`: the detector's tensors under kdet's own parameter paths (the
//!   `kdet` layout: enum variants left out, BatchNorm / GroupNorm affine terms named
//!   `weight` / `bias` as in PyTorch, BatchNorm running statistics included), written by
//!   burn-store's `SafetensorsStore`, with metadata `kdet_layout = "kdet"`, `kdet_head`
//!   (the family) and `kdet_experiment` (the stored experiment, JSON as in a checkpoint). kdet reads it back
//!   with source `kdet`; after writing, the command reads the file into a fresh detector
//!   and checks that every tensor is equal. PyTorch reads it with
//!   `safetensors.torch.load_file` (a plain state dict; a PyTorch model of kdet's
//!   architecture with these names is not shipped).
//! - `--format pytorch`: refused. burn-store 0.22.1 cannot write PyTorch files:
//!   `PytorchStore::collect_from` returns "Saving to PyTorch format is not yet supported"
//!   (`burn-store-0.22.1/src/pytorch/store.rs`), and its `pytorch_reader` only reads.
//!   Use `--format safetensors`.
//! - `--format onnx`: refused, because burn cannot export kdet's network today. burn
//!   0.22.1 itself has no ONNX writer (`burn-import` 0.22 and `burn-onnx` 0.22.0 import
//!   ONNX as generated Rust code). `burn-onnx` 0.22.0 has an `export` feature
//!   (`OnnxExporter`: it runs the forward pass on burn's `capture` backend and lowers the
//!   recorded `OperationIr` graph to ONNX opset 18). Its lowering handles conv2d,
//!   batch_norm, max/avg pool, nearest/bilinear interpolate, linear, elementwise
//!   arithmetic, relu/sigmoid/exp/log/sqrt/tanh, sum_dim, reshape/slice/cat/select,
//!   matmul, and nothing else (`burn-onnx-0.22.0/src/export/lower/{numeric,base,module,direct}.rs`).
//!   kdet's heads use GroupNorm (FCOS, ATSS and GFL: GN(32) towers), which burn-nn 0.22.1
//!   computes with `mean_dim` (`NumericOperationIr::MeanDim`): not lowered, so the export
//!   fails with `UnsupportedOperation`. The check (onnxruntime outputs equal to
//!   kdet's within 1e-4) therefore cannot be met for those heads.
//!   The RetinaNet head has no GroupNorm; whether the exporter takes it whole was not
//!   run (checked by reading the lowering tables only), and enabling it would switch
//!   burn's `capture`, `extension` and `ir` features on for the whole build.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use kdet_distill::DistilledStudent;
use kdet_models::ModelFamily;
use kdet_models::weights::detectors::differing_tensors;
use kdet_models::weights::{ImportOptions, StateDict, WeightSource, load_model, save_safetensors};

use kdet_run::models::{model_of, read_checkpoint};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// A weights-only kdet checkpoint (`.ckpt`).
    Kdet,
    /// The detector's tensors, kdet parameter names (`.safetensors`).
    Safetensors,
    /// A PyTorch `.pth` state dict: not supported (burn-store 0.22.1 cannot write one).
    Pytorch,
    /// ONNX: not supported (burn-onnx 0.22.0's exporter cannot lower kdet's network).
    Onnx,
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

/// Why `--format pytorch` is refused.
pub const PYTORCH_UNSUPPORTED: &str = "--format pytorch: burn-store 0.22.1 cannot write PyTorch files (`PytorchStore` only reads: \"Saving to PyTorch format is not yet supported\"); use --format safetensors, which PyTorch reads with `safetensors.torch.load_file`";

/// Why `--format onnx` is refused.
pub const ONNX_UNSUPPORTED: &str = "--format onnx: burn 0.22.1 has no ONNX writer, and burn-onnx 0.22.0's exporter (`export` feature: capture backend -> ONNX opset 18) does not lower `mean_dim`, which burn-nn's GroupNorm uses in the FCOS / ATSS / GFL head towers (nor does kdet depend on burn-onnx); use --format safetensors or --format kdet";

pub fn run(args: ExportArgs) -> Result<()> {
    let safetensors = match args.format {
        ExportFormat::Pytorch => bail!(PYTORCH_UNSUPPORTED),
        ExportFormat::Onnx => bail!(ONNX_UNSUPPORTED),
        ExportFormat::Kdet => false,
        ExportFormat::Safetensors => true,
    };
    let (ckpt, experiment) = read_checkpoint(&args.checkpoint)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let device = Device::flex();
    if !safetensors {
        let info = if experiment.distill.is_some() {
            // The student alone, under the `student.` paths its experiment loads from.
            let student = model_of(&ckpt, &experiment, &device)?;
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
    } else {
        // The student alone for a distillation run (model_of drops the rest).
        let detector = model_of(&ckpt, &experiment, &device)?;
        let stored = serde_json::to_string(&experiment).context("serialising the experiment")?;
        let n = save_safetensors(
            &detector,
            &args.out,
            true,
            &[
                ("kdet_head", ModelFamily::family(&detector).to_string()),
                ("kdet_experiment", stored),
            ],
        )
        .with_context(|| format!("writing {}", args.out.display()))?;
        // Read it back into a fresh detector of the same experiment: every tensor equal.
        let state = StateDict::open(&args.out).context("reading the export back")?;
        let (back, _) = load_model(
            experiment.model.init(&device),
            &state,
            WeightSource::Kdet,
            &ImportOptions::strict(),
        )
        .context("reading the export back into a fresh detector")?;
        let differ = differing_tensors(&detector, &back);
        if !differ.is_empty() {
            bail!(
                "{}: {} tensors read back differently: {}",
                args.out.display(),
                differ.len(),
                differ.join(", ")
            );
        }
        let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
        println!(
            "wrote {} ({:.1} MB, {n} tensors, kdet layout, step {}): read back into a fresh {} detector, every tensor equal",
            args.out.display(),
            bytes as f64 / 1e6,
            ckpt.meta.step,
            ModelFamily::family(&detector)
        );
    }
    Ok(())
}
