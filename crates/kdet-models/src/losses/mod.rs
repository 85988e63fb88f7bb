//! Task losses shared by the dense heads, one file per loss: sigmoid focal loss
//! ([`focal`]), Quality Focal Loss ([`qfl`]), Distribution Focal Loss ([`dfl`]) and the
//! IoU / GIoU box losses ([`giou`]).
//!
//! Each loss has an element-wise function (no reduction, for KD code that needs its own)
//! and a `XLossConfig` / `XLoss` pair whose `forward` applies mmdetection's
//! `weight_reduce_loss(reduction="mean", avg_factor)`: `loss_weight * sum(w * loss) /
//! avg_factor`. The heads pass the avg factors their mmdetection heads use.

pub mod dfl;
pub mod focal;
pub mod giou;
pub mod qfl;

pub use dfl::{DistributionFocalLoss, DistributionFocalLossConfig, distribution_focal_loss};
pub use focal::{FocalLoss, FocalLossConfig, sigmoid_focal_loss};
pub use giou::{
    GiouLoss, GiouLossConfig, IouLoss, IouLossConfig, IouLossMode, giou_loss, iou_loss,
};
pub use qfl::{QualityFocalLoss, QualityFocalLossConfig, quality_focal_loss};

use burn::tensor::Tensor;
use burn::tensor::activation::{relu, softplus};

/// Element-wise binary cross-entropy on logits (PyTorch
/// `binary_cross_entropy_with_logits`, `reduction='none'`), in the stable form
/// `max(z, 0) - z * t + ln(1 + exp(-|z|))`.
pub fn binary_cross_entropy_with_logits<const D: usize>(
    logits: Tensor<D>,
    targets: Tensor<D>,
) -> Tensor<D> {
    relu(logits.clone()) - logits.clone() * targets + softplus(logits.abs().neg(), 1.0)
}

/// mmdetection's `weight_reduce_loss(loss, weight, reduction='mean', avg_factor)`:
/// `sum(weight * loss) / avg_factor`, as a `[1]` tensor.
///
/// # Shapes
/// - `loss`: `[N]`, `weight`: `[N]` → `[1]`
pub fn weighted_sum_over(loss: Tensor<1>, weight: Option<Tensor<1>>, avg_factor: f32) -> Tensor<1> {
    let loss = match weight {
        Some(w) => loss * w,
        None => loss,
    };
    loss.sum().div_scalar(avg_factor)
}
