//! Small building blocks shared by backbones, necks and heads.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::norm::{Normalization, NormalizationConfig};
use burn::nn::{BatchNormConfig, GroupNormConfig, Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// Which normalisation a conv block uses.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum NormKind {
    /// No normalisation (the conv gets a bias).
    None,
    /// BatchNorm (train-mode statistics on an autodiff device, running statistics on a
    /// plain device — so a teacher on a plain device is in eval mode by construction).
    Batch,
    /// GroupNorm with this many groups (mmdet heads: GN(32) for FCOS/ATSS/GFL).
    Group(usize),
}

/// `conv -> norm -> ReLU` (ReLU optional).
#[derive(Module, Debug)]
pub struct ConvNormAct {
    pub conv: Conv2d,
    pub norm: Option<Normalization>,
    pub relu: bool,
}

/// Configuration of a [`ConvNormAct`].
#[derive(Config, Debug)]
pub struct ConvNormActConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    #[config(default = 3)]
    pub kernel_size: usize,
    #[config(default = 1)]
    pub stride: usize,
    #[config(default = "NormKind::None")]
    pub norm: NormKind,
    #[config(default = true)]
    pub relu: bool,
    /// Normal(0, std) weight init as mmdet heads use (`normal_init(std=0.01)`); `None`
    /// keeps burn's default (Kaiming uniform).
    #[config(default = "None")]
    pub init_std: Option<f64>,
}

impl ConvNormActConfig {
    pub fn init(&self, device: &Device) -> ConvNormAct {
        let p = self.kernel_size / 2;
        let mut conv = Conv2dConfig::new(
            [self.in_channels, self.out_channels],
            [self.kernel_size, self.kernel_size],
        )
        .with_stride([self.stride, self.stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(matches!(self.norm, NormKind::None));
        if let Some(std) = self.init_std {
            conv = conv.with_initializer(Initializer::Normal { mean: 0.0, std });
        }
        let norm = match self.norm {
            NormKind::None => None,
            NormKind::Batch => Some(
                NormalizationConfig::Batch(BatchNormConfig::new(self.out_channels)).init(device),
            ),
            NormKind::Group(g) => Some(
                NormalizationConfig::Group(GroupNormConfig::new(g, self.out_channels)).init(device),
            ),
        };
        ConvNormAct {
            conv: conv.init(device),
            norm,
            relu: self.relu,
        }
    }
}

impl ConvNormAct {
    /// # Shapes
    /// `[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = self.conv.forward(x);
        if let Some(n) = &self.norm {
            y = n.forward(y);
        }
        if self.relu { relu(y) } else { y }
    }
}

/// A learnable scalar multiplier (FCOS/GFL put one on each level's box branch).
#[derive(Module, Debug)]
pub struct Scale {
    pub scale: Param<Tensor<1>>,
}

impl Scale {
    pub fn new(value: f32, device: &Device) -> Self {
        Self {
            scale: Param::from_tensor(Tensor::<1>::from_floats([value], device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x * self.scale.val().reshape([1, 1, 1, 1])
    }
}
