//! Errors of the training crate. Each variant names the file, the step or the field a user
//! needs to find the problem.

use std::path::PathBuf;

/// An error from a caller-supplied callback (evaluation).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration that does not parse or breaks a rule (the message names the field).
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },
    /// A checkpoint that is truncated, has a wrong checksum or a malformed header. Nothing of
    /// it was loaded.
    #[error("{path}: corrupt checkpoint ({reason}); it was not loaded")]
    CorruptCheckpoint { path: PathBuf, reason: String },
    /// burn could not (de)serialize or apply a model / optimizer record.
    #[error("{path}: {what}: {message}")]
    Record {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{run_dir}: no checkpoint to resume from (expected {file})")]
    NoCheckpoint { run_dir: PathBuf, file: PathBuf },
    /// The checkpoint was written by a run whose data or model differ from this one.
    #[error("{path}: cannot resume: {what}")]
    Incompatible { path: PathBuf, what: String },
    #[error("step {step}: loading data: {source}")]
    Data {
        step: u64,
        #[source]
        source: kdet_data::DataError,
    },
    /// The loader yields no batch (dataset smaller than one batch with `drop_last`).
    #[error("the training loader has no batch (dataset smaller than one batch?)")]
    EmptyLoader,
    /// A loss term (or the total, or the gradient norm) is NaN or infinite. The step was not
    /// applied and no checkpoint was written.
    #[error(
        "step {step} (epoch {epoch}): loss term `{term}` is {value}; stopping (the last checkpoint is left untouched)"
    )]
    NonFinite {
        step: u64,
        epoch: u64,
        term: String,
        value: f64,
    },
    /// The model's `LossDict` has no back-propagated term.
    #[error("step {step}: the loss dictionary has no back-propagated term")]
    NoLoss { step: u64 },
    #[error("step {step}: evaluation failed: {source}")]
    Eval {
        step: u64,
        #[source]
        source: BoxError,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(origin: impl Into<String>, message: impl Into<String>) -> Self {
        TrainError::Config {
            origin: origin.into(),
            message: message.into(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        TrainError::CorruptCheckpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
