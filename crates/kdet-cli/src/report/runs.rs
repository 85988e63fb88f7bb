//! What `kdet report` reads from a run directory, through kdet-run's typed readers:
//! `metrics.jsonl` (`MetricsFile`: a malformed line is an error naming the file and line),
//! `eval.json` (`EvalFile`, absent while the run trains), `config.toml` (the resolved
//! experiment: parameter count and validation data) and whether `predictions.json` is
//! there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::Device;
use kdet_models::backbone::num_parameters;
use kdet_run::Experiment;
use kdet_run::files::{
    CONFIG_FILE, EVAL_FILE, EvalFile, METRICS_FILE, MetricsFile, PREDICTIONS_FILE,
};

pub use kdet_run::files::MetricsFile as Metrics;

/// The final evaluation of a run, as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEval {
    /// The 12 COCO stats by name (`AP`, `AP50`, ...).
    pub stats: BTreeMap<String, f64>,
    /// The 12 COCO mask stats, for a model that predicts masks (`eval.json`'s `segm`).
    pub segm: Option<BTreeMap<String, f64>>,
    /// `(class name, AP)`; `None` for a class without ground truth.
    pub per_class: Vec<(String, Option<f64>)>,
    pub step: Option<u64>,
    /// A `params` field, if an evaluation wrote one.
    pub params: Option<u64>,
}

impl From<&EvalFile> for RunEval {
    fn from(e: &EvalFile) -> Self {
        let named = |stats: &kdet_run::files::CocoStats| -> BTreeMap<String, f64> {
            stats
                .named()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect()
        };
        RunEval {
            stats: named(&e.stats),
            segm: e.segm.as_ref().map(|s| named(&s.stats)),
            per_class: e.per_class_ap(),
            step: e.step,
            params: e.params,
        }
    }
}

/// One run directory, read.
pub struct Run {
    pub label: String,
    pub dir: PathBuf,
    pub metrics: Option<Metrics>,
    pub eval: Option<RunEval>,
    pub experiment: Option<Experiment>,
    /// Parameters of the evaluated model (torch's count: no BatchNorm statistics).
    pub params: Option<u64>,
    /// `predictions.json`, when there.
    pub predictions: Option<PathBuf>,
    /// What is missing or was skipped, for the page.
    pub notes: Vec<String>,
}

impl Run {
    /// `running` when there is no `eval.json` yet.
    pub fn is_running(&self) -> bool {
        self.eval.is_none()
    }

    /// The mean of a logged step timing (e.g. `teacher_ms`).
    pub fn mean_timing(&self, name: &str) -> Option<f64> {
        self.metrics.as_ref().and_then(|m| m.mean_timing(name))
    }
}

/// Reads a run directory. Missing files degrade to notes; files that exist but do not
/// parse are errors (kdet wrote them), except `config.toml`, which older kdet versions
/// may have written differently (a note: no parameter count, no validation images).
pub fn load_run(dir: &Path, label: String) -> Result<Run> {
    if !dir.is_dir() {
        bail!(
            "{}: not a directory (give run directories of `kdet train` / `kdet distill`)",
            dir.display()
        );
    }
    let mut notes = Vec::new();
    let metrics_path = dir.join(METRICS_FILE);
    let metrics = MetricsFile::read(&metrics_path)?;
    match &metrics {
        Some(m) if m.torn_last_line => notes.push(format!(
            "the unterminated last line of {} does not parse (a killed writer?); skipped",
            metrics_path.display()
        )),
        Some(_) => {}
        None => notes.push(format!("no {}: no curves", metrics_path.display())),
    }
    let eval_path = dir.join(EVAL_FILE);
    let eval = if eval_path.is_file() {
        Some(RunEval::from(&EvalFile::read(&eval_path)?))
    } else {
        notes.push("no eval.json yet: still training (or stopped early)".to_string());
        None
    };
    let config_path = dir.join(CONFIG_FILE);
    let experiment = if config_path.is_file() {
        match Experiment::load(&config_path) {
            Ok(e) => Some(e),
            Err(e) => {
                notes.push(format!(
                    "{} does not parse ({e:#}): no parameter count, no validation images",
                    config_path.display()
                ));
                None
            }
        }
    } else {
        notes.push(format!("no {}", config_path.display()));
        None
    };
    if metrics.is_none() && eval.is_none() && experiment.is_none() {
        bail!(
            "{}: not a run directory (no metrics.jsonl, eval.json or config.toml)",
            dir.display()
        );
    }
    let params = eval.as_ref().and_then(|e| e.params).or_else(|| {
        experiment
            .as_ref()
            .map(|e| num_parameters(&e.model.init(&Device::flex())) as u64)
    });
    let predictions = Some(dir.join(PREDICTIONS_FILE)).filter(|p| p.is_file());
    Ok(Run {
        label,
        dir: dir.to_path_buf(),
        metrics,
        eval,
        experiment,
        params,
        predictions,
        notes,
    })
}
