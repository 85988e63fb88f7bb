//! Optimizers from burn-optim, configured the way torch / mmdetection configure theirs, and
//! clipping by the global gradient norm.
//!
//! burn's `GradientClipping::Norm` clips every parameter's gradient by *its own* norm
//! (`burn-optim/src/grad_clipping/base.rs`), which is not what mmdet's
//! `grad_clip=dict(max_norm=35, norm_type=2)` does: `torch.nn.utils.clip_grad_norm_` takes
//! the norm of all gradients together and scales them all by one factor. That is written
//! here ([`clip_global_norm`]).

use std::collections::HashSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::config::OptimizerConfig;
use kdet_distill::OwnOptimizer;

/// Builds the burn optimizer for `config` (without clipping: see [`clip_global_norm`]).
pub fn build_optimizer(config: &OptimizerConfig) -> ModuleOptimizer {
    match config {
        OptimizerConfig::Sgd(c) => {
            let momentum = (c.momentum > 0.0).then_some(MomentumConfig {
                momentum: c.momentum,
                // torch.optim.SGD's default; burn's MomentumConfig defaults to 0.1.
                dampening: 0.0,
                nesterov: c.nesterov,
            });
            let weight_decay = (c.weight_decay > 0.0).then_some(WeightDecayConfig {
                penalty: c.weight_decay as f32,
            });
            burn::optim::SgdConfig::new()
                .with_momentum(momentum)
                .with_weight_decay(weight_decay)
                .init()
        }
        OptimizerConfig::AdamW(c) => burn::optim::AdamWConfig::new()
            .with_beta_1(c.beta_1 as f32)
            .with_beta_2(c.beta_2 as f32)
            .with_epsilon(c.epsilon as f32)
            .with_weight_decay(c.weight_decay as f32)
            .init(),
    }
}

/// Sums the squares of every gradient of `module`'s float parameters (each id once).
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    seen: HashSet<ParamId>,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.get::<D>(param.id) {
            // Reduce in f32 whatever the parameter dtype (f16 squares overflow past ~256).
            let s = g.cast(burn::tensor::FloatDType::F32).square().sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Removes the gradients of `module`'s parameters.
struct Drop<'a> {
    grads: &'a mut GradientsParams,
}

impl ModuleVisitor for Drop<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = self.grads.remove::<D>(param.id);
    }
}

/// Removes every gradient of `module`'s parameters, so the optimizer step leaves them and
/// their state (momentum) alone, as PyTorch does for a parameter whose `grad` is `None`
/// (LGD zeroes the student backbone's gradients that way in its first iterations).
pub fn drop_grads<M: Module>(module: &M, grads: &mut GradientsParams) {
    module.visit(&mut Drop { grads });
}

/// Moves the gradients of `module`'s parameters out of `from` into `to`.
struct Take<'a> {
    from: &'a mut GradientsParams,
    to: &'a mut GradientsParams,
}

impl ModuleVisitor for Take<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.from.remove::<D>(param.id) {
            self.to.register(param.id, g);
        }
    }
}

/// Moves every gradient of `module`'s parameters out of `from` into `to` (the share of a
/// second optimizer, see [`build_own_optimizer`]).
pub fn take_grads<M: Module>(module: &M, from: &mut GradientsParams, to: &mut GradientsParams) {
    module.visit(&mut Take { from, to });
}

/// The optimizer of a distillation method's own modules ([`OwnOptimizer`]): PyTorch's
/// AdamW defaults (β 0.9 / 0.999, ε 1e-8) with the method's weight decay.
pub fn build_own_optimizer(own: &OwnOptimizer) -> ModuleOptimizer {
    burn::optim::AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(own.weight_decay as f32)
        .init()
}

/// The L2 norm of all of `module`'s gradients taken together (0 when there are none).
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorm {
        grads,
        seen: HashSet::new(),
        sum: None,
    };
    module.visit(&mut v);
    v.sum
        .map(|s| f64::from(s.into_scalar::<f32>()).sqrt())
        .unwrap_or(0.0)
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2)`: when the global norm
/// exceeds `max_norm`, scales every gradient by `max_norm / (norm + 1e-6)`. Returns the norm
/// before clipping (what mmdet logs as `grad_norm`).
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_grad_norm(module, grads);
    let factor = max_norm / (norm + 1e-6);
    // A non-finite norm is reported by the caller; scaling would only spread the NaN.
    if norm.is_finite() && factor < 1.0 {
        module.visit(&mut Scale {
            grads,
            seen: HashSet::new(),
            factor,
        });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::{Device, TensorData};

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<1>>,
        b: Param<Tensor<2>>,
    }

    fn setup() -> (Two, GradientsParams) {
        let device = Device::flex().autodiff();
        let m = Two {
            a: Param::from_tensor(Tensor::from_data(TensorData::from([1.0f32, 2.0]), &device)),
            b: Param::from_tensor(Tensor::from_data(
                TensorData::from([[1.0f32, 1.0], [1.0, 1.0]]),
                &device,
            )),
        };
        // loss = 3 * sum(a) + 4 * b[0][0] -> grad a = [3, 3], grad b = [[4, 0], [0, 0]]
        // global norm = sqrt(9 + 9 + 16) = sqrt(34).
        let mask = Tensor::<2>::from_data(TensorData::from([[4.0f32, 0.0], [0.0, 0.0]]), &device);
        let loss = m.a.val().sum().mul_scalar(3.0) + (m.b.val() * mask).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        (m, grads)
    }

    #[test]
    fn global_norm_scales_all_gradients_by_one_factor() {
        let (m, mut grads) = setup();
        let norm = clip_global_norm(&m, &mut grads, 1.0);
        assert!((norm - 34f64.sqrt()).abs() < 1e-5, "{norm}");
        let a: Vec<f32> = grads
            .get::<1>(m.a.id)
            .expect("grad a")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let b: Vec<f32> = grads
            .get::<2>(m.b.id)
            .expect("grad b")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let f = 1.0 / (34f64.sqrt() + 1e-6);
        assert!((f64::from(a[0]) - 3.0 * f).abs() < 1e-6);
        assert!((f64::from(b[0]) - 4.0 * f).abs() < 1e-6);
        // Per-parameter clipping (burn's GradientClipping::Norm) would give b[0] = 1.0.
        assert!(b[0] < 0.7);
        assert!((global_grad_norm(&m, &grads) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn taken_gradients_move_and_the_others_stay() {
        let (two, mut grads) = setup();
        let mut taken = GradientsParams::new();
        take_grads(&two.a, &mut grads, &mut taken);
        assert!(grads.get::<1>(two.a.id).is_none());
        assert!(taken.get::<1>(two.a.id).is_some());
        assert!(grads.get::<2>(two.b.id).is_some());
        assert!(taken.get::<2>(two.b.id).is_none());
    }

    #[test]
    fn dropped_gradients_are_gone_and_the_others_kept() {
        let (m, mut grads) = setup();
        drop_grads(&m.a, &mut grads);
        assert!(grads.get::<1>(m.a.id).is_none());
        assert!(grads.get::<2>(m.b.id).is_some());
        assert!((global_grad_norm(&m, &grads) - 4.0).abs() < 1e-6);
    }

    #[test]
    fn small_gradients_are_left_alone() {
        let (m, mut grads) = setup();
        let norm = clip_global_norm(&m, &mut grads, 35.0);
        assert!((norm - 34f64.sqrt()).abs() < 1e-5);
        let b: Vec<f32> = grads
            .get::<2>(m.b.id)
            .expect("grad b")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert_eq!(b[0], 4.0);
    }
}
