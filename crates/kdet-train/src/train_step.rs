//! What a model provides to be trained: [`TrainStep`].

use burn::module::Module;
use burn::optim::GradientsParams;
use kdet_data::DetectionBatch;
use kdet_distill::{Distiller, OwnOptimizer};
use kdet_models::LossDict;

/// A model the loop can train: a burn [`Module`] on the autodiff device whose losses on a
/// batch come back as a [`LossDict`]. The detector implements it with
/// `forward` -> `assign` -> `loss`; the distiller adds its KD terms.
pub trait TrainStep: Module + 'static {
    /// Forward + losses on one batch (on the autodiff device). Terms pushed with
    /// `push_logged` are logged but not optimised. `step` is the 0-based index of the
    /// optimizer step this batch is for (KD schedules: warm-up, stop-at).
    fn losses(&self, batch: &DetectionBatch, step: u64) -> LossDict;

    /// [`losses`](Self::losses) and the timings of parts of the step the model measures
    /// itself (the trainer logs them apart from the losses); none by default.
    fn losses_timed(&self, batch: &DetectionBatch, step: u64) -> StepLosses {
        StepLosses {
            losses: self.losses(batch, step),
            timings: Vec::new(),
        }
    }

    /// Removes, before clipping and the update, the gradients of parameters that must not
    /// change at optimizer step `step` (a frozen phase of a method); none by default.
    fn drop_frozen_grads(&self, _grads: &mut GradientsParams, _step: u64) {}

    /// The optimizer of the parameters that train apart from the rest (a distillation
    /// method's own modules, [`OwnOptimizer`]); none by default.
    fn own_optimizer(&self) -> Option<OwnOptimizer> {
        None
    }

    /// Moves the gradients of the parameters [`own_optimizer`](Self::own_optimizer)
    /// trains out of `grads` (before clipping, which is the rest's).
    fn take_own_grads(&self, _grads: &mut GradientsParams) -> GradientsParams {
        GradientsParams::new()
    }
}

/// A step's losses and its timings (milliseconds, by name: `metrics.jsonl`'s `timings`,
/// never loss terms).
#[derive(Debug, Clone)]
pub struct StepLosses {
    pub losses: LossDict,
    pub timings: Vec<(&'static str, f64)>,
}

/// Distillation: the student's task losses plus the recipe's KD terms (the teacher runs on
/// its plain device inside); times the teacher's forward and the KD terms.
impl TrainStep for Distiller {
    fn losses(&self, batch: &DetectionBatch, step: u64) -> LossDict {
        self.step_losses(&batch.images, &batch.targets, step)
    }

    fn losses_timed(&self, batch: &DetectionBatch, step: u64) -> StepLosses {
        let (losses, timings) = self.step_losses_timed(&batch.images, &batch.targets, step);
        StepLosses {
            losses,
            timings: timings.map_or_else(Vec::new, |t| t.named().to_vec()),
        }
    }

    fn own_optimizer(&self) -> Option<OwnOptimizer> {
        Distiller::own_optimizer(self)
    }

    fn take_own_grads(&self, grads: &mut GradientsParams) -> GradientsParams {
        let mut own = GradientsParams::new();
        for modules in self.own_optimizer_modules() {
            crate::optim::take_grads(modules, grads, &mut own);
        }
        own
    }

    /// LGD's first phase: the student's backbone keeps its weights.
    fn drop_frozen_grads(&self, grads: &mut GradientsParams, step: u64) {
        if self.student_backbone_frozen(step) {
            crate::optim::drop_grads(self.student.backbone(), grads);
        }
    }
}
