//! Errors of kdet-distill.

/// A recipe that does not fit its detectors, or models on the wrong devices.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistillError {
    /// The recipe names a missing tap or level, mismatched shapes without a connector, a
    /// method the heads cannot serve, ... The message names the entry.
    #[error("{0}")]
    Recipe(String),
    /// The student is not on an autodiff device or the teacher is.
    #[error("{0}")]
    Device(String),
}
