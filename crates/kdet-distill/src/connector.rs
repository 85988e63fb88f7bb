//! Connectors: the small trainable maps that bring a student tap to the teacher's channel
//! count before a feature loss (FitNets' regressor, FGD's `align`, FRS's `ADAP`, MMRazor's
//! `ConvModuleConnector`). They belong to the student side, train with it, and are
//! dropped when the student is exported.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Which connector a recipe entry puts on each student level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// The student tap is used as is (channels must equal the teacher's).
    #[default]
    None,
    /// A 1×1 convolution with bias, no norm or activation (FGD's `align`, FitNets'
    /// regressor in MMRazor's detection configs).
    Conv1x1,
    /// A 3×3 convolution with bias, no activation (FRS's `ADAP`, one per level).
    Conv3x3,
}

/// One level's connector. `conv` is `None` for [`ConnectorKind::None`].
#[derive(Module, Debug)]
pub struct Connector {
    pub conv: Option<Conv2d>,
}

impl ConnectorKind {
    /// A connector from `student_channels` to `teacher_channels`, initialised as PyTorch's
    /// `nn.Conv2d` (burn's `Conv2dConfig` default: Kaiming-uniform with bound
    /// `1/sqrt(fan_in)`), which the official repos keep.
    pub fn init(
        self,
        student_channels: usize,
        teacher_channels: usize,
        device: &Device,
    ) -> Connector {
        let conv = match self {
            ConnectorKind::None => None,
            ConnectorKind::Conv1x1 | ConnectorKind::Conv3x3 => {
                let k = if self == ConnectorKind::Conv1x1 { 1 } else { 3 };
                let p = k / 2;
                Some(
                    Conv2dConfig::new([student_channels, teacher_channels], [k, k])
                        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                        .init(device),
                )
            }
        };
        Connector { conv }
    }
}

impl Connector {
    /// # Shapes
    /// - `x`: `[N, C_student, H, W]` → `[N, C_teacher, H, W]` (unchanged without a conv)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match &self.conv {
            Some(conv) => conv.forward(x),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectors_map_channels_and_keep_the_grid() {
        let device = Device::flex();
        let x = Tensor::<4>::ones([2, 3, 5, 7], &device);
        for (kind, expected) in [
            (ConnectorKind::Conv1x1, [2, 8, 5, 7]),
            (ConnectorKind::Conv3x3, [2, 8, 5, 7]),
        ] {
            assert_eq!(kind.init(3, 8, &device).forward(x.clone()).dims(), expected);
        }
        let none = ConnectorKind::None.init(3, 3, &device);
        let y = none.forward(x.clone());
        assert_eq!(y.into_data(), x.into_data());
    }
}
