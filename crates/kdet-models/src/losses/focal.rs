//! Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017,
//! arXiv:1708.02002, Eq. 5), as mmdetection's `FocalLoss(use_sigmoid=True)`
//! (`py_sigmoid_focal_loss`): with `p = σ(z)` and binary target `t`,
//! `p_t = p·t + (1 − p)(1 − t)`, `α_t = α·t + (1 − α)(1 − t)`,
//! `FL = α_t (1 − p_t)^γ · BCE(z, t)`.

use burn::config::Config;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;

use super::{binary_cross_entropy_with_logits, weighted_sum_over};

/// Element-wise sigmoid focal loss.
///
/// # Shapes
/// - `logits`, `targets`: `[N, K]` (targets one-hot, 0/1) → `[N, K]`
pub fn sigmoid_focal_loss(
    logits: Tensor<2>,
    targets: Tensor<2>,
    gamma: f32,
    alpha: f32,
) -> Tensor<2> {
    let p = sigmoid(logits.clone());
    // 1 - p_t = p (1 - t) + (1 - p) t
    let one_minus_pt = p.clone() * targets.clone().neg().add_scalar(1.0)
        + p.neg().add_scalar(1.0) * targets.clone();
    // alpha_t = alpha t + (1 - alpha)(1 - t) = (1 - alpha) + (2 alpha - 1) t
    let alpha_t = targets
        .clone()
        .mul_scalar(2.0 * alpha - 1.0)
        .add_scalar(1.0 - alpha);
    let focal_weight = alpha_t * one_minus_pt.powf_scalar(gamma);
    binary_cross_entropy_with_logits(logits, targets) * focal_weight
}

/// Configuration of [`FocalLoss`] (defaults: mmdet RetinaNet / ATSS / FCOS configs
/// `FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)`).
#[derive(Config, Debug)]
pub struct FocalLossConfig {
    /// Focusing parameter γ (paper Sec. 3.2 and configs: 2.0).
    #[config(default = 2.0)]
    pub gamma: f32,
    /// Positive-class balance α (paper Table 1a and configs: 0.25).
    #[config(default = 0.25)]
    pub alpha: f32,
    #[config(default = 1.0)]
    pub loss_weight: f32,
}

impl FocalLossConfig {
    pub fn init(&self) -> FocalLoss {
        FocalLoss {
            gamma: self.gamma,
            alpha: self.alpha,
            loss_weight: self.loss_weight,
        }
    }
}

/// Sigmoid focal loss with mmdet's weighted-sum / `avg_factor` reduction.
#[derive(Debug, Clone, Copy)]
pub struct FocalLoss {
    pub gamma: f32,
    pub alpha: f32,
    pub loss_weight: f32,
}

impl FocalLoss {
    /// `loss_weight * Σ_n w_n Σ_k FL(z_nk, t_nk) / avg_factor`.
    ///
    /// # Shapes
    /// - `logits`, `targets`: `[N, K]`; `weight` (per row, e.g. label weights): `[N]` → `[1]`
    pub fn forward(
        &self,
        logits: Tensor<2>,
        targets: Tensor<2>,
        weight: Option<Tensor<1>>,
        avg_factor: f32,
    ) -> Tensor<1> {
        let per_row = sigmoid_focal_loss(logits, targets, self.gamma, self.alpha)
            .sum_dim(1)
            .squeeze_dim(1); // [N]
        weighted_sum_over(per_row, weight, avg_factor).mul_scalar(self.loss_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32 data")
    }

    #[test]
    fn hand_values() {
        // z = 0 (p = 0.5), t = 1: BCE = ln 2, α_t = 0.25, (1 - p_t)^2 = 0.25 -> ln2 / 16.
        // z = 0, t = 0: α_t = 0.75 -> 0.75 * 0.25 * ln 2 = 3 ln2 / 16.
        // z = ln 3 (p = 0.75), t = 0: BCE = -ln(0.25) = ln 4, α_t = 0.75,
        //   (1 - p_t)^2 = 0.75^2 -> 0.75^3 * ln 4.
        let device = Device::flex();
        let z = Tensor::<2>::from_floats([[0.0, 0.0, 3f32.ln()]], &device);
        let t = Tensor::<2>::from_floats([[1.0, 0.0, 0.0]], &device);
        let v = vals(sigmoid_focal_loss(z.clone(), t.clone(), 2.0, 0.25));
        let ln2 = 2f32.ln();
        let expected = [ln2 / 16.0, 3.0 * ln2 / 16.0, 0.75f32.powi(3) * 4f32.ln()];
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        // Reduction: weight 2 on the single row, avg_factor 4, loss_weight 1.
        let total: f32 = expected.iter().sum();
        let loss = FocalLossConfig::new().init().forward(
            z,
            t,
            Some(Tensor::from_floats([2.0], &device)),
            4.0,
        );
        assert!((vals(loss)[0] - total * 2.0 / 4.0).abs() < 1e-6);
    }
}
