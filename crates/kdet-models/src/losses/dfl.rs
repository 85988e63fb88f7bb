//! Distribution Focal Loss (Li et al., "Generalized Focal Loss", NeurIPS 2020,
//! arXiv:2006.04388, Eq. 6), as mmdetection's `DistributionFocalLoss`: for an edge
//! distance target `y` (in strides, `0 ≤ y < reg_max`) between bins `y_i = ⌊y⌋` and
//! `y_{i+1} = y_i + 1`, with `S = softmax(z)` over the `reg_max + 1` bins,
//! `DFL = −((y_{i+1} − y) ln S_i + (y − y_i) ln S_{i+1})`.

use burn::config::Config;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use super::weighted_sum_over;

/// Element-wise DFL, one value per distribution.
///
/// `targets` must lie in `[0, n)` for `n + 1` bins (GFL clamps them to `reg_max − 0.1`),
/// so that the right bin exists.
///
/// # Shapes
/// - `logits`: `[M, n + 1]`, `targets`: `[M]` → `[M]`
pub fn distribution_focal_loss(logits: Tensor<2>, targets: Tensor<1>) -> Tensor<1> {
    let [m, bins] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let left_f = targets.clone().floor();
    let left: Tensor<1, Int> = left_f.clone().int().clamp(0, bins as i64 - 2);
    let right = left.clone().add_scalar(1);
    let w_left = left_f.clone().add_scalar(1.0) - targets.clone();
    let w_right = targets - left_f;
    let lp_left = log_p.clone().gather(1, left.reshape([m, 1])).reshape([m]);
    let lp_right = log_p.gather(1, right.reshape([m, 1])).reshape([m]);
    (lp_left * w_left + lp_right * w_right).neg()
}

/// Configuration of [`DistributionFocalLoss`] (mmdet `gfl_r50_fpn_1x_coco`:
/// `DistributionFocalLoss(loss_weight=0.25)`).
#[derive(Config, Debug)]
pub struct DistributionFocalLossConfig {
    /// GFL config: 0.25.
    #[config(default = 0.25)]
    pub loss_weight: f32,
}

impl DistributionFocalLossConfig {
    pub fn init(&self) -> DistributionFocalLoss {
        DistributionFocalLoss {
            loss_weight: self.loss_weight,
        }
    }
}

/// DFL with mmdet's reduction.
#[derive(Debug, Clone, Copy)]
pub struct DistributionFocalLoss {
    pub loss_weight: f32,
}

impl DistributionFocalLoss {
    /// `loss_weight * Σ_m w_m DFL_m / avg_factor`.
    ///
    /// # Shapes
    /// - `logits`: `[M, n + 1]`, `targets`, `weight`: `[M]` → `[1]`
    pub fn forward(
        &self,
        logits: Tensor<2>,
        targets: Tensor<1>,
        weight: Option<Tensor<1>>,
        avg_factor: f32,
    ) -> Tensor<1> {
        weighted_sum_over(distribution_focal_loss(logits, targets), weight, avg_factor)
            .mul_scalar(self.loss_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn hand_values() {
        // 3 bins, uniform logits: ln S_i = -ln 3 for every bin, so DFL = (w_l + w_r) ln 3 = ln 3
        // for any target. Logits (0, ln 3, 0): S = (0.2, 0.6, 0.2); target 0.25 ->
        //   -(0.75 ln 0.2 + 0.25 ln 0.6). Target 1.5 -> -(0.5 ln 0.6 + 0.5 ln 0.2).
        let device = Device::flex();
        let z = Tensor::<2>::from_floats(
            [
                [0.0, 0.0, 0.0],
                [0.0, 3f32.ln(), 0.0],
                [0.0, 3f32.ln(), 0.0],
            ],
            &device,
        );
        let y = Tensor::<1>::from_floats([1.7, 0.25, 1.5], &device);
        let v: Vec<f32> = distribution_focal_loss(z.clone(), y.clone())
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let expected = [
            3f32.ln(),
            -(0.75 * 0.2f32.ln() + 0.25 * 0.6f32.ln()),
            -(0.5 * 0.6f32.ln() + 0.5 * 0.2f32.ln()),
        ];
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{v:?}");
        }
        // An integer target puts all weight on its own bin: target 1 -> -ln 0.6.
        let one = distribution_focal_loss(
            z.clone().slice([1..2, 0..3]),
            Tensor::from_floats([1.0], &device),
        );
        assert!((one.into_scalar::<f32>() + 0.6f32.ln()).abs() < 1e-5);
        let l: f32 = DistributionFocalLossConfig::new()
            .init()
            .forward(
                z,
                y,
                Some(Tensor::from_floats([1.0, 2.0, 0.0], &device)),
                4.0,
            )
            .into_scalar();
        assert!((l - 0.25 * (expected[0] + 2.0 * expected[1]) / 4.0).abs() < 1e-5);
    }
}
