//! Quality Focal Loss (Li et al., "Generalized Focal Loss", NeurIPS 2020,
//! arXiv:2006.04388, Eq. 5), as mmdetection's `QualityFocalLoss(use_sigmoid=True)`:
//! with `σ = sigmoid(z)` and soft target `y ∈ [0, 1]` (the IoU at the positive's class,
//! 0 elsewhere), `QFL = BCE(z, y) · |y − σ|^β`.
//!
//! mmdet writes it as two cases (negatives: `BCE(z, 0) σ^β`; the positive's class:
//! `BCE(z, y) |y − σ|^β`); both are this one formula with `y = 0` off the label column.

use burn::config::Config;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

use super::{binary_cross_entropy_with_logits, weighted_sum_over};

/// Element-wise QFL.
///
/// # Shapes
/// - `logits`, `soft_targets`: `[N, K]` → `[N, K]`
pub fn quality_focal_loss(logits: Tensor<2>, soft_targets: Tensor<2>, beta: f32) -> Tensor<2> {
    let scale = (soft_targets.clone() - sigmoid(logits.clone()))
        .abs()
        .powf_scalar(beta);
    binary_cross_entropy_with_logits(logits, soft_targets) * scale
}

/// Configuration of [`QualityFocalLoss`] (mmdet `gfl_r50_fpn_1x_coco`:
/// `QualityFocalLoss(use_sigmoid=True, beta=2.0, loss_weight=1.0)`).
#[derive(Config, Debug)]
pub struct QualityFocalLossConfig {
    /// β (GFL paper Sec. 3.3 and config: 2.0).
    #[config(default = 2.0)]
    pub beta: f32,
    #[config(default = 1.0)]
    pub loss_weight: f32,
}

impl QualityFocalLossConfig {
    pub fn init(&self) -> QualityFocalLoss {
        QualityFocalLoss {
            beta: self.beta,
            loss_weight: self.loss_weight,
        }
    }
}

/// QFL with mmdet's reduction (summed over classes, weighted per row, / `avg_factor`).
#[derive(Debug, Clone, Copy)]
pub struct QualityFocalLoss {
    pub beta: f32,
    pub loss_weight: f32,
}

impl QualityFocalLoss {
    /// `loss_weight * Σ_n w_n Σ_k QFL(z_nk, y_nk) / avg_factor`.
    ///
    /// # Shapes
    /// - `logits`, `soft_targets`: `[N, K]`; `weight`: `[N]` → `[1]`
    pub fn forward(
        &self,
        logits: Tensor<2>,
        soft_targets: Tensor<2>,
        weight: Option<Tensor<1>>,
        avg_factor: f32,
    ) -> Tensor<1> {
        let per_row = quality_focal_loss(logits, soft_targets, self.beta)
            .sum_dim(1)
            .squeeze_dim(1); // [N]
        weighted_sum_over(per_row, weight, avg_factor).mul_scalar(self.loss_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn hand_values() {
        // Row 0, positive with IoU target 0.5 at class 0 (z = 0, σ = 0.5): BCE(0, 0.5) = ln 2,
        //   |0.5 - 0.5|^2 = 0 -> 0. Class 1 (negative, z = 0): BCE(0, 0) = ln 2, σ^2 = 0.25.
        // Row 1, positive with target 1 at class 1, z = ln 3 (σ = 0.75):
        //   BCE = -ln 0.75, |1 - 0.75|^2 = 1/16. Class 0, z = 0: ln2 / 4.
        let device = Device::flex();
        let z = Tensor::<2>::from_floats([[0.0, 0.0], [0.0, 3f32.ln()]], &device);
        let y = Tensor::<2>::from_floats([[0.5, 0.0], [0.0, 1.0]], &device);
        let v: Vec<f32> = quality_focal_loss(z.clone(), y.clone(), 2.0)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let ln2 = 2f32.ln();
        let expected = [0.0, ln2 / 4.0, ln2 / 4.0, -(0.75f32.ln()) / 16.0];
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        // avg_factor 2, no weights: the sum / 2.
        let l: f32 = QualityFocalLossConfig::new()
            .init()
            .forward(z, y, None, 2.0)
            .into_scalar();
        assert!((l - expected.iter().sum::<f32>() / 2.0).abs() < 1e-6);
    }
}
