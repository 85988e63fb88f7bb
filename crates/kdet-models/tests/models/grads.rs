//! Per-parameter gradients of a module after one backward pass, for the query models'
//! "gradients reach every parameter group" tests (`detr.rs`, `mask2former.rs`).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Per parameter (path, whether it has a gradient, the largest absolute gradient), for every
/// trainable float tensor of a module (BatchNorm running statistics are not trained).
pub(crate) fn gradients<M: Module>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<(String, bool, f32)> {
    struct Visit<'a> {
        grads: &'a GradientsParams,
        path: Vec<String>,
        out: Vec<(String, bool, f32)>,
    }
    impl ModuleVisitor for Visit<'_> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            if path.contains("running_") {
                return;
            }
            let grad = self.grads.get::<D>(param.id);
            let max = grad
                .as_ref()
                .map_or(0.0, |g| g.clone().abs().max().into_scalar::<f32>());
            self.out.push((path, grad.is_some(), max));
        }
    }
    let mut v = Visit {
        grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}
