//! What a model provides to be trained: [`TrainStep`].

use burn::module::Module;
use kdet_data::DetectionBatch;
use kdet_distill::Distiller;
use kdet_models::LossDict;

/// A model the loop can train: a burn [`Module`] on the autodiff device whose losses on a
/// batch come back as a [`LossDict`]. The detector implements it with
/// `forward` -> `assign` -> `loss`; the distiller adds its KD terms.
pub trait TrainStep: Module + 'static {
    /// Forward + losses on one batch (on the autodiff device). Terms pushed with
    /// `push_logged` are logged but not optimised. `step` is the 0-based index of the
    /// optimizer step this batch is for (KD schedules: warm-up, stop-at).
    fn losses(&self, batch: &DetectionBatch, step: u64) -> LossDict;
}

/// Distillation: the student's task losses plus the recipe's KD terms (the teacher runs on
/// its plain device inside).
impl TrainStep for Distiller {
    fn losses(&self, batch: &DetectionBatch, step: u64) -> LossDict {
        self.step_losses(&batch.images, &batch.targets, step)
    }
}
