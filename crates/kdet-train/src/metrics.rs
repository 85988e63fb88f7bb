//! `metrics.jsonl`: one JSON object per line, appended as training goes.
//!
//! Two kinds of lines (both carry `step`, the number of optimizer steps completed, and
//! `epoch`, 0-based):
//! - [`TrainLog`]: `{"step", "epoch", "lr", "losses": {name: value}, "timings"?: {name:
//!   ms}, "total", "grad_norm"?, "images_per_s", "elapsed_s"}`; losses and timings are the
//!   means over the steps since the previous line (mmdet's `LoggerHook` averages the same
//!   way).
//! - [`EvalLog`]: `{"step", "epoch", "eval": {metric: value}}`.
//!
//! On resume the file is cut back to the lines with `step <= checkpoint step` (and a torn
//! last line from a killed writer is dropped), so the log always matches the weights.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The file name inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// A training line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    pub step: u64,
    pub epoch: u64,
    /// The lr of the line's last step.
    pub lr: f64,
    /// Mean of each loss term over the window (weighted terms, as in `LossDict`), by the
    /// text form of its key (`loss_cls`, `kd.<entry>.<term>`: `kdet_models::LossKey`).
    pub losses: BTreeMap<String, f64>,
    /// Mean of each step timing the model measures (milliseconds: a distiller's
    /// `teacher_ms` and `kd_ms`) over the window's steps that had it. Absent when none;
    /// files of earlier versions logged these among the losses as `time.<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timings: BTreeMap<String, f64>,
    /// Mean of the sum of the back-propagated terms.
    pub total: f64,
    /// Mean global gradient norm before clipping (only when clipping is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    pub images_per_s: f64,
    /// Training wall time since the run started (summed over resumed sessions).
    pub elapsed_s: f64,
}

/// An evaluation line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    pub step: u64,
    pub epoch: u64,
    pub eval: BTreeMap<String, f64>,
}

/// Any line of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogLine {
    Eval(EvalLog),
    Train(TrainLog),
}

/// Appends lines to a run's `metrics.jsonl`, one `write` per line.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

#[derive(Deserialize)]
struct StepOnly {
    step: u64,
}

impl MetricsLog {
    /// Starts an empty log (replacing any file of that name).
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        kdet_data::image_io::write_atomic_io(path, b"").map_err(|(p, e)| TrainError::io(p, e))?;
        Self::open_append(path)
    }

    /// Keeps the lines with `step <= step` (dropping unparsable ones, e.g. a line torn by a
    /// kill) and opens the file for appending. A missing file starts empty.
    pub fn resume(path: &Path, step: u64) -> Result<Self, TrainError> {
        let text = match std::fs::read(path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(TrainError::io(path, e)),
        };
        let mut kept = String::with_capacity(text.len());
        for line in text.lines() {
            if let Ok(s) = serde_json::from_str::<StepOnly>(line)
                && s.step <= step
            {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        kdet_data::image_io::write_atomic_io(path, kept.as_bytes())
            .map_err(|(p, e)| TrainError::io(p, e))?;
        Self::open_append(path)
    }

    fn open_append(path: &Path) -> Result<Self, TrainError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one line.
    pub fn append<T: Serialize>(&mut self, line: &T) -> Result<(), TrainError> {
        let mut bytes = serde_json::to_vec(line)
            .map_err(|e| TrainError::config("<metrics line>", e.to_string()))?;
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .map_err(|e| TrainError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every well-formed line of a `metrics.jsonl` (malformed lines are skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<LogLine>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(step: u64) -> TrainLog {
        TrainLog {
            step,
            epoch: 0,
            lr: 0.1,
            losses: BTreeMap::from([("a".to_string(), 1.0)]),
            timings: BTreeMap::new(),
            total: 1.0,
            grad_norm: None,
            images_per_s: 3.0,
            elapsed_s: 0.5,
        }
    }

    #[test]
    fn resume_drops_lines_after_the_checkpoint_and_torn_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(METRICS_FILE);
        let mut log = MetricsLog::create(&path).expect("create");
        for s in 1..=4 {
            log.append(&train(s)).expect("append");
        }
        log.append(&EvalLog {
            step: 4,
            epoch: 0,
            eval: BTreeMap::from([("AP".to_string(), 0.25)]),
        })
        .expect("append");
        log.append(&train(5)).expect("append");
        drop(log);
        // A kill in the middle of a write leaves a partial line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"step\": 6, \"epo").expect("write");
        drop(f);

        let mut log = MetricsLog::resume(&path, 4).expect("resume");
        log.append(&train(5)).expect("append");
        let lines = read_metrics(&path).expect("read");
        let steps: Vec<u64> = lines
            .iter()
            .map(|l| match l {
                LogLine::Train(t) => t.step,
                LogLine::Eval(e) => e.step,
            })
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 4, 5]);
        assert!(matches!(lines[4], LogLine::Eval(_)));
    }
}
