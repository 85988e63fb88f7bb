//! The query models' overfitting loop and their task loss on one batch (`detr.rs`,
//! `mask2former.rs`): forward, assignment and criterion as `ModelFamily` defines them.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Tensor;
use kdet_data::DetectionBatch;
use kdet_models::ModelFamily;
use kdet_models::output::LossDict;

/// One step's objective: forward, assignment and the criterion's terms, and their total.
pub(crate) fn task_loss<M: ModelFamily>(
    model: &M,
    batch: &DetectionBatch,
) -> (Tensor<1>, LossDict) {
    let out = model.forward(&batch.images);
    let assignment = model.assign(&out, &batch.targets);
    let losses = model.loss(&out, &batch.targets, &assignment);
    let total = losses
        .total()
        .unwrap_or_else(|| panic!("{} has task losses", model.family()));
    (total, losses)
}

/// `steps` Adam steps at `lr` on `batch` (the terms printed every `log_every` steps, with
/// the time since `start`); the trained model and the first and last total loss. Panics on
/// a non-finite loss, naming the terms.
pub(crate) fn fit<M>(
    mut model: M,
    batch: &DetectionBatch,
    steps: usize,
    lr: f64,
    log_every: usize,
    start: Instant,
) -> (M, f32, f32)
where
    M: ModelFamily + Module,
{
    let mut optim = AdamConfig::new().init();
    let mut first = None;
    let mut last = 0.0;
    for step in 0..steps {
        let (total, losses) = task_loss(&model, batch);
        last = total.clone().into_scalar::<f32>();
        assert!(
            last.is_finite(),
            "loss became {last}: {:?}",
            losses.scalars()
        );
        first.get_or_insert(last);
        if step % log_every == 0 {
            eprintln!(
                "step {step} ({:.1} s): {:?}",
                start.elapsed().as_secs_f64(),
                losses.scalars()
            );
        }
        let grads = GradientsParams::from_grads(total.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    (model, first.expect("at least one step ran"), last)
}
