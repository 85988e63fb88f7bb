//! What a model provides to be trained: [`TrainStep`].

use burn::module::Module;
use kdet_data::DetectionBatch;
use kdet_models::LossDict;

/// A model the loop can train: a burn [`Module`] on the autodiff device whose losses on a
/// batch come back as a [`LossDict`]. The detector implements it with
/// `forward` -> `assign` -> `loss`; the distiller adds its KD terms.
pub trait TrainStep: Module + 'static {
    /// Forward + losses on one batch (on the autodiff device). Terms pushed with
    /// `push_logged` are logged but not optimised.
    fn losses(&self, batch: &DetectionBatch) -> LossDict;
}
