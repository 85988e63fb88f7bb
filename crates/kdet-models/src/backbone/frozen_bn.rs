//! BatchNorm with frozen statistics and affine terms, as detectron2's
//! `FrozenBatchNorm2d` (`detectron2/layers/batch_norm.py`).
//!
//! `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`, computed as one
//! per-channel scale and shift. All four tensors are fixed: they are stored as `Param`s
//! (so records save and load them under torchvision's state-dict names) that do not
//! require gradients, and `forward` detaches them as well, so no gradient reaches them
//! and no optimizer updates them even after a blanket [`Module::unfreeze`].
//!
//! [`Module::unfreeze`]: burn::module::Module::unfreeze

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

/// A BatchNorm whose statistics and affine parameters never change.
#[derive(Module, Debug)]
pub struct FrozenBatchNorm {
    /// `[C]`, gamma.
    pub weight: Param<Tensor<1>>,
    /// `[C]`, beta.
    pub bias: Param<Tensor<1>>,
    /// `[C]`.
    pub running_mean: Param<Tensor<1>>,
    /// `[C]`.
    pub running_var: Param<Tensor<1>>,
    /// detectron2 `FrozenBatchNorm2d(eps=1e-5)`.
    pub epsilon: f64,
}

impl FrozenBatchNorm {
    /// An identity-initialised frozen BN (`weight = 1, bias = 0, mean = 0, var = 1`), the
    /// state detectron2 starts from before loading pretrained statistics.
    pub fn new(num_features: usize, device: &Device) -> Self {
        let constant = |t: Tensor<1>| Param::from_tensor(t).set_require_grad(false);
        Self {
            weight: constant(Tensor::ones([num_features], device)),
            bias: constant(Tensor::zeros([num_features], device)),
            running_mean: constant(Tensor::zeros([num_features], device)),
            running_var: constant(Tensor::ones([num_features], device)),
            epsilon: 1e-5,
        }
    }

    /// # Shapes
    /// `[B, C, H, W] -> [B, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, c, _, _] = x.dims();
        let [num_features] = self.weight.dims();
        assert_eq!(
            c, num_features,
            "FrozenBatchNorm: expected {num_features} input channels, got {c}"
        );
        let scale = self.weight.val().detach()
            * (self.running_var.val().detach().add_scalar(self.epsilon))
                .sqrt()
                .recip();
        let shift = self.bias.val().detach() - self.running_mean.val().detach() * scale.clone();
        // [C] -> [1, C, 1, 1] to broadcast over batch and space.
        x * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{BackboneNorm, Norm};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    #[test]
    fn applies_the_affine_of_its_statistics() {
        let device = Device::flex();
        let mut bn = FrozenBatchNorm::new(2, &device);
        let set = |v: [f32; 2]| {
            Param::from_tensor(Tensor::<1>::from_floats(v, &device)).set_require_grad(false)
        };
        bn.weight = set([2.0, 0.5]);
        bn.bias = set([1.0, -1.0]);
        bn.running_mean = set([1.0, 0.0]);
        bn.running_var = set([4.0 - 1e-5, 1.0 - 1e-5]);
        // Channel 0: (x - 1) / 2 * 2 + 1 = x; channel 1: x * 0.5 - 1.
        let x = Tensor::<4>::from_floats([[[[3.0f32]], [[4.0]]]], &device);
        let y = bn.forward(x).into_data();
        y.assert_approx_eq::<f32>(
            &TensorData::from([[[[3.0f32]], [[1.0]]]]),
            Tolerance::default(),
        );
    }

    #[test]
    fn frozen_bn_gets_no_gradient_while_batch_norm_does() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
        // A non-uniform loss: `sum(bn(x))` alone has a zero gradient to gamma in train mode.
        let w = Tensor::<4>::random([2, 4, 3, 3], Distribution::Normal(0.0, 1.0), &device);

        let frozen = FrozenBatchNorm::new(4, &device);
        let grads = (frozen.forward(x.clone()) * w.clone()).sum().backward();
        assert!(frozen.weight.grad(&grads).is_none());
        assert!(frozen.bias.grad(&grads).is_none());
        assert!(frozen.running_mean.grad(&grads).is_none());
        assert!(frozen.running_var.grad(&grads).is_none());
        assert!(
            x.grad(&grads).is_some(),
            "gradient still flows to the input"
        );

        // The same check holds after a blanket unfreeze (forward detaches).
        let thawed = frozen.unfreeze();
        let grads = (thawed.forward(x.clone()) * w.clone()).sum().backward();
        assert!(thawed.weight.grad(&grads).is_none());

        let Norm::Batch(bn) = BackboneNorm::Batch.init(4, &device) else {
            panic!("BackboneNorm::Batch builds a BatchNorm");
        };
        let grads = (bn.forward(x) * w).sum().backward();
        assert!(bn.gamma.grad(&grads).is_some());
        assert!(bn.beta.grad(&grads).is_some());
    }
}
