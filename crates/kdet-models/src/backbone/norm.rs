//! The normalisation layer of a backbone: trainable BatchNorm, frozen BatchNorm, or
//! GroupNorm, chosen by one config value.

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::frozen_bn::FrozenBatchNorm;

/// Which normalisation every norm layer of a backbone uses.
///
/// JSON: `"batch"`, `"frozen_batch"`, `{"group": 32}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneNorm {
    /// torchvision's `nn.BatchNorm2d` (eps 1e-5, momentum 0.1): batch statistics on an
    /// autodiff device (training), running statistics on a plain device (so a teacher on
    /// a plain device is in eval mode by construction), trainable affine terms.
    Batch,
    /// detectron2's `FrozenBatchNorm2d`: fixed statistics and affine terms, never trained
    /// (the usual choice when fine-tuning ImageNet weights with small batches).
    FrozenBatch,
    /// GroupNorm with this many groups (trainable affine terms).
    Group(usize),
}

/// A norm layer built from a [`BackboneNorm`].
///
/// Record paths gain the variant name (`bn1.Batch.gamma`); weight import skips enum
/// variants (`burn-store`'s `skip_enum_variants`) so they read `bn1.gamma`.
#[derive(Module, Debug)]
pub enum Norm {
    Batch(BatchNorm),
    FrozenBatch(FrozenBatchNorm),
    Group(GroupNorm),
}

impl BackboneNorm {
    /// # Panics
    /// If `Group(g)` does not divide `num_features` (checked by the backbone configs'
    /// `validate`).
    pub fn init(&self, num_features: usize, device: &Device) -> Norm {
        match *self {
            BackboneNorm::Batch => Norm::Batch(BatchNormConfig::new(num_features).init(device)),
            BackboneNorm::FrozenBatch => {
                Norm::FrozenBatch(FrozenBatchNorm::new(num_features, device))
            }
            BackboneNorm::Group(groups) => {
                assert!(
                    groups > 0 && num_features.is_multiple_of(groups),
                    "GroupNorm: {groups} groups do not divide {num_features} channels"
                );
                Norm::Group(GroupNormConfig::new(groups, num_features).init(device))
            }
        }
    }

    /// Whether this norm can normalise `channels` channels.
    pub fn supports(&self, channels: usize) -> bool {
        match *self {
            BackboneNorm::Batch | BackboneNorm::FrozenBatch => true,
            BackboneNorm::Group(groups) => groups > 0 && channels.is_multiple_of(groups),
        }
    }
}

impl Norm {
    /// # Shapes
    /// `[B, C, H, W] -> [B, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Norm::Batch(n) => n.forward(x),
            Norm::FrozenBatch(n) => n.forward(x),
            Norm::Group(n) => n.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    /// Image 0's output when it is normalised alone and together with other images.
    fn first_image_alone_and_in_batch(device: &Device) -> (Tensor<4>, Tensor<4>) {
        let norm = BackboneNorm::Batch.init(3, device);
        let a = Tensor::<4>::random([1, 3, 4, 4], Distribution::Normal(0.0, 1.0), device);
        let b = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(5.0, 3.0), device);
        let alone = norm.forward(a.clone());
        let batch = norm.forward(Tensor::cat(vec![a, b], 0));
        (alone, batch.narrow(0, 0, 1))
    }

    #[test]
    fn batch_norm_on_a_plain_device_uses_running_statistics() {
        let (alone, in_batch) = first_image_alone_and_in_batch(&Device::flex());
        alone
            .into_data()
            .assert_approx_eq::<f32>(&in_batch.into_data(), Tolerance::default());
    }

    #[test]
    fn batch_norm_on_an_autodiff_device_uses_batch_statistics() {
        let (alone, in_batch) = first_image_alone_and_in_batch(&Device::flex().autodiff());
        let diff = (alone - in_batch).abs().max().into_scalar::<f32>();
        assert!(diff > 0.1, "outputs differ with the batch, max diff {diff}");
    }

    #[test]
    fn group_norm_needs_a_divisor() {
        assert!(BackboneNorm::Group(4).supports(8));
        assert!(!BackboneNorm::Group(3).supports(8));
        assert!(!BackboneNorm::Group(0).supports(8));
    }

    #[test]
    fn serialises_in_snake_case() {
        let json = serde_json::to_string(&[
            BackboneNorm::Batch,
            BackboneNorm::FrozenBatch,
            BackboneNorm::Group(32),
        ])
        .expect("norms serialise");
        assert_eq!(json, r#"["batch","frozen_batch",{"group":32}]"#);
    }
}
