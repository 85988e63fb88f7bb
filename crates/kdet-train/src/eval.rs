//! The evaluation callback's types: the loop calls the caller's closure with the model and
//! an [`EvalContext`] and logs the [`EvalSummary`] it returns, so this crate needs neither
//! kdet-eval nor a concrete model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Named metrics an evaluation returns (e.g. `"bbox_AP": 0.372`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub metrics: BTreeMap<String, f64>,
}

impl EvalSummary {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }
}

/// What the evaluation callback is told.
#[derive(Debug, Clone)]
pub struct EvalContext {
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch of the next step (0-based): after the last batch of epoch `e` this is `e + 1`.
    pub epoch: u64,
    pub run_dir: PathBuf,
}
