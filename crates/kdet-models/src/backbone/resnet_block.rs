//! The residual blocks of torchvision's ResNet (`torchvision/models/resnet.py`):
//! `BasicBlock` (two 3x3 convs, ResNet-18/34) and `Bottleneck` (1x1 -> strided 3x3 ->
//! 1x1, expansion 4, ResNet-50), each with an optional projection shortcut
//! (`downsample`). Field names are torchvision's.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::kaiming_normal_fan_out;
use super::norm::{BackboneNorm, Norm};
use super::resnet::BlockKind;

/// One residual block (torchvision `BasicBlock` or `Bottleneck`).
// burn modules cannot be boxed (no `Module` impl for `Box`); built once, so the size
// difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ResNetBlock {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl ResNetBlock {
    /// `width` is torchvision's `planes`; the block outputs `width * expansion` channels.
    pub fn new(
        kind: BlockKind,
        in_channels: usize,
        width: usize,
        stride: usize,
        norm: BackboneNorm,
        device: &Device,
    ) -> Self {
        let out_channels = width * kind.expansion();
        let downsample = (stride != 1 || in_channels != out_channels).then(|| Downsample {
            conv: conv(in_channels, out_channels, 1, stride, device),
            bn: norm.init(out_channels, device),
        });
        match kind {
            BlockKind::Basic => ResNetBlock::Basic(BasicBlock {
                conv1: conv(in_channels, width, 3, stride, device),
                bn1: norm.init(width, device),
                conv2: conv(width, width, 3, 1, device),
                bn2: norm.init(width, device),
                downsample,
            }),
            BlockKind::Bottleneck => ResNetBlock::Bottleneck(Bottleneck {
                conv1: conv(in_channels, width, 1, 1, device),
                bn1: norm.init(width, device),
                conv2: conv(width, width, 3, stride, device),
                bn2: norm.init(width, device),
                conv3: conv(width, out_channels, 1, 1, device),
                bn3: norm.init(out_channels, device),
                downsample,
            }),
        }
    }

    /// # Shapes
    /// `[B, C_in, H, W] -> [B, width * expansion, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            ResNetBlock::Basic(b) => b.forward(x),
            ResNetBlock::Bottleneck(b) => b.forward(x),
        }
    }
}

/// torchvision `BasicBlock`: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: Norm,
    pub conv2: Conv2d,
    pub bn2: Norm,
    pub downsample: Option<Downsample>,
}

impl BasicBlock {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        let out = relu(self.bn1.forward(self.conv1.forward(x)));
        let out = self.bn2.forward(self.conv2.forward(out));
        relu(out + identity)
    }
}

/// torchvision `Bottleneck` (stride on `conv2`, the 3x3).
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub bn1: Norm,
    pub conv2: Conv2d,
    pub bn2: Norm,
    pub conv3: Conv2d,
    pub bn3: Norm,
    pub downsample: Option<Downsample>,
}

impl Bottleneck {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x.clone()),
            None => x.clone(),
        };
        let out = relu(self.bn1.forward(self.conv1.forward(x)));
        let out = relu(self.bn2.forward(self.conv2.forward(out)));
        let out = self.bn3.forward(self.conv3.forward(out));
        relu(out + identity)
    }
}

/// The projection shortcut: 1x1 conv (strided) + norm (torchvision `downsample`).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: Norm,
}

impl Downsample {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// A bias-free `k x k` conv with padding `k / 2` and torchvision's ResNet init
/// (`kaiming_normal_(mode="fan_out", nonlinearity="relu")`).
pub(crate) fn conv(
    in_channels: usize,
    out_channels: usize,
    k: usize,
    stride: usize,
    device: &Device,
) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([in_channels, out_channels], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .with_initializer(kaiming_normal_fan_out(out_channels, k))
        .init(device)
}
