//! Box-overlap losses on decoded `[x1, y1, x2, y2]` boxes:
//! - GIoU loss `1 − GIoU` (Rezatofighi et al., CVPR 2019, arXiv:1902.09630), mmdetection
//!   `GIoULoss` (GFL and ATSS use it with weight 2.0);
//! - IoU loss in mmdetection's three modes (`IoULoss`; FCOS uses the default `log`:
//!   `−ln(max(IoU, eps))`, UnitBox, Yu et al. 2016).
//!
//! Overlaps come from `kdet_structures::iou` (denominators clamped at 1e-7; mmdet's
//! `GIoULoss` uses eps 1e-6 — a difference only for degenerate boxes).

use burn::config::Config;
use burn::tensor::Tensor;
use kdet_structures::Xyxy;
use kdet_structures::boxes::BoxTensor;
use kdet_structures::iou::{aligned_giou_tensor, aligned_iou_tensor};

use super::weighted_sum_over;

/// Element-wise `1 − GIoU(pred_i, target_i)`.
///
/// # Shapes
/// - `pred`, `target`: `[N, 4]` → `[N]`
pub fn giou_loss(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    aligned_giou_tensor(
        &BoxTensor::<Xyxy>::new(pred),
        &BoxTensor::<Xyxy>::new(target),
    )
    .neg()
    .add_scalar(1.0)
}

/// How [`iou_loss`] turns an IoU into a loss (mmdet `IoULoss.mode`).
#[derive(Config, Debug, Copy, PartialEq)]
pub enum IouLossMode {
    /// `1 − IoU`.
    Linear,
    /// `1 − IoU²`.
    Square,
    /// `−ln(max(IoU, eps))` (mmdet default; FCOS).
    Log,
}

/// Element-wise IoU loss.
///
/// # Shapes
/// - `pred`, `target`: `[N, 4]` → `[N]`
pub fn iou_loss(pred: Tensor<2>, target: Tensor<2>, mode: IouLossMode, eps: f32) -> Tensor<1> {
    let iou = aligned_iou_tensor(
        &BoxTensor::<Xyxy>::new(pred),
        &BoxTensor::<Xyxy>::new(target),
    )
    .clamp_min(eps);
    match mode {
        IouLossMode::Linear => iou.neg().add_scalar(1.0),
        IouLossMode::Square => iou.powi_scalar(2).neg().add_scalar(1.0),
        IouLossMode::Log => iou.log().neg(),
    }
}

/// Configuration of [`GiouLoss`] (GFL / ATSS configs: `GIoULoss(loss_weight=2.0)`).
#[derive(Config, Debug)]
pub struct GiouLossConfig {
    #[config(default = 2.0)]
    pub loss_weight: f32,
}

impl GiouLossConfig {
    pub fn init(&self) -> GiouLoss {
        GiouLoss {
            loss_weight: self.loss_weight,
        }
    }
}

/// GIoU loss with mmdet's reduction.
#[derive(Debug, Clone, Copy)]
pub struct GiouLoss {
    pub loss_weight: f32,
}

impl GiouLoss {
    /// `loss_weight * Σ_i w_i (1 − GIoU_i) / avg_factor`.
    ///
    /// # Shapes
    /// - `pred`, `target`: `[N, 4]`; `weight`: `[N]` → `[1]`
    pub fn forward(
        &self,
        pred: Tensor<2>,
        target: Tensor<2>,
        weight: Option<Tensor<1>>,
        avg_factor: f32,
    ) -> Tensor<1> {
        weighted_sum_over(giou_loss(pred, target), weight, avg_factor).mul_scalar(self.loss_weight)
    }
}

/// Configuration of [`IouLoss`] (mmdet `IoULoss` defaults: mode `log`, eps 1e-6,
/// weight 1.0 — FCOS's `loss_bbox`).
#[derive(Config, Debug)]
pub struct IouLossConfig {
    #[config(default = "IouLossMode::Log")]
    pub mode: IouLossMode,
    #[config(default = 1e-6)]
    pub eps: f32,
    #[config(default = 1.0)]
    pub loss_weight: f32,
}

impl IouLossConfig {
    pub fn init(&self) -> IouLoss {
        IouLoss {
            mode: self.mode,
            eps: self.eps,
            loss_weight: self.loss_weight,
        }
    }
}

/// IoU loss with mmdet's reduction.
#[derive(Debug, Clone, Copy)]
pub struct IouLoss {
    pub mode: IouLossMode,
    pub eps: f32,
    pub loss_weight: f32,
}

impl IouLoss {
    /// `loss_weight * Σ_i w_i L_i / avg_factor`.
    ///
    /// # Shapes
    /// - `pred`, `target`: `[N, 4]`; `weight`: `[N]` → `[1]`
    pub fn forward(
        &self,
        pred: Tensor<2>,
        target: Tensor<2>,
        weight: Option<Tensor<1>>,
        avg_factor: f32,
    ) -> Tensor<1> {
        weighted_sum_over(
            iou_loss(pred, target, self.mode, self.eps),
            weight,
            avg_factor,
        )
        .mul_scalar(self.loss_weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn hand_values() {
        // A = [0,0,2,2], B = [1,1,3,3]: IoU 1/7, enclosing 9, GIoU = 1/7 - 2/9.
        // Identical boxes: IoU = GIoU = 1. Disjoint [0,0,1,1] vs [2,0,3,1]: IoU 0
        // (log mode clamps to eps 1e-6), GIoU = -1/3.
        let device = Device::flex();
        let p = Tensor::<2>::from_floats(
            [
                [0.0, 0.0, 2.0, 2.0],
                [1.0, 2.0, 5.0, 4.0],
                [0.0, 0.0, 1.0, 1.0],
            ],
            &device,
        );
        let t = Tensor::<2>::from_floats(
            [
                [1.0, 1.0, 3.0, 3.0],
                [1.0, 2.0, 5.0, 4.0],
                [2.0, 0.0, 3.0, 1.0],
            ],
            &device,
        );
        let g: Vec<f32> = giou_loss(p.clone(), t.clone())
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let expected = [1.0 - (1.0 / 7.0 - 2.0 / 9.0), 0.0, 4.0 / 3.0];
        for (a, b) in g.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{g:?}");
        }
        let l: Vec<f32> = iou_loss(p.clone(), t.clone(), IouLossMode::Log, 1e-6)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!(
            (l[0] - 7f32.ln()).abs() < 1e-5
                && l[1].abs() < 1e-6
                && (l[2] - 1e6f32.ln()).abs() < 1e-3,
            "{l:?}"
        );
        let lin: Vec<f32> = iou_loss(p.clone(), t.clone(), IouLossMode::Linear, 1e-6)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!((lin[0] - 6.0 / 7.0).abs() < 1e-5);
        let sq: Vec<f32> = iou_loss(p.clone(), t.clone(), IouLossMode::Square, 1e-6)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert!((sq[0] - (1.0 - 1.0 / 49.0)).abs() < 1e-5);
        // Weighted: weights (1, 1, 0.5), avg_factor 2, loss_weight 2.
        let w = Tensor::<1>::from_floats([1.0, 1.0, 0.5], &device);
        let v: f32 = GiouLossConfig::new()
            .init()
            .forward(p, t, Some(w), 2.0)
            .into_scalar();
        assert!((v - 2.0 * (expected[0] + 0.5 * expected[2]) / 2.0).abs() < 1e-5);
    }
}
