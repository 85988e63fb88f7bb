//! What `kdet report` reads from a run directory: `metrics.jsonl` (strictly: the log is
//! ours, so a malformed line is an error naming the file and line), `eval.json` (absent
//! while the run trains), `config.toml` (the resolved experiment: parameter count and
//! validation data) and whether `predictions.json` is there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use kdet_models::backbone::num_parameters;
use serde_json::Value;

use crate::experiment::Experiment;
use crate::train_cmd::{CONFIG_FILE, EVAL_FILE, PREDICTIONS_FILE};

/// A training line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPoint {
    pub step: u64,
    /// Every logged term (`loss_*`, `kd.*`, `time.*`); `None` where the value was not a
    /// number (serde_json writes NaN as `null`).
    pub losses: BTreeMap<String, Option<f64>>,
    pub total: Option<f64>,
    pub elapsed_s: Option<f64>,
}

/// An evaluation line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    pub step: u64,
    pub metrics: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub train: Vec<TrainPoint>,
    pub evals: Vec<EvalPoint>,
    /// The file ended in an unterminated line that does not parse (a writer killed
    /// mid-line; `--resume` drops it), skipped.
    pub torn_last_line: bool,
}

impl Metrics {
    /// The mean of a logged term over the training lines that have it.
    pub fn mean(&self, term: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .train
            .iter()
            .filter_map(|p| p.losses.get(term).copied().flatten())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// The last step logged (training or evaluation).
    pub fn last_step(&self) -> Option<u64> {
        let t = self.train.iter().map(|p| p.step);
        t.chain(self.evals.iter().map(|p| p.step)).max()
    }
}

/// A number, or `None` for `null`; anything else is an error.
fn number(v: &Value, what: &str) -> Result<Option<f64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        other => bail!("{what} is not a number: {other}"),
    }
}

/// `{name: number}`.
fn number_map(v: &Value, what: &str) -> Result<BTreeMap<String, Option<f64>>> {
    let Value::Object(map) = v else {
        bail!("`{what}` is not an object");
    };
    map.iter()
        .map(|(k, v)| Ok((k.clone(), number(v, &format!("`{what}.{k}`"))?)))
        .collect()
}

fn parse_line(line: &str) -> Result<LineKind> {
    let v: Value = serde_json::from_str(line).context("not JSON")?;
    let Value::Object(obj) = &v else {
        bail!("not a JSON object");
    };
    let step = obj
        .get("step")
        .and_then(Value::as_u64)
        .context("no `step` (a whole number)")?;
    if let Some(eval) = obj.get("eval") {
        return Ok(LineKind::Eval(EvalPoint {
            step,
            metrics: number_map(eval, "eval")?,
        }));
    }
    let Some(losses) = obj.get("losses") else {
        bail!("neither `losses` (a training line) nor `eval` (an evaluation line)");
    };
    let optional = |key: &str| -> Result<Option<f64>> {
        obj.get(key)
            .map_or(Ok(None), |v| number(v, &format!("`{key}`")))
    };
    Ok(LineKind::Train(TrainPoint {
        step,
        losses: number_map(losses, "losses")?,
        total: optional("total")?,
        elapsed_s: optional("elapsed_s")?,
    }))
}

enum LineKind {
    Train(TrainPoint),
    Eval(EvalPoint),
}

/// Parses the text of `path` (named in errors, with the 1-based line number). Blank lines
/// are skipped; so is an unterminated last line that does not parse (see
/// [`Metrics::torn_last_line`]).
pub fn parse_metrics(path: &Path, text: &str) -> Result<Metrics> {
    let mut metrics = Metrics::default();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(LineKind::Train(p)) => metrics.train.push(p),
            Ok(LineKind::Eval(p)) => metrics.evals.push(p),
            // The last piece of a split has no '\n' after it.
            Err(_) if i + 1 == lines.len() => metrics.torn_last_line = true,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("{}:{}: malformed metrics line", path.display(), i + 1)
                });
            }
        }
    }
    Ok(metrics)
}

/// The final evaluation of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalFile {
    /// The 12 COCO stats by name (`AP`, `AP50`, ...).
    pub stats: BTreeMap<String, f64>,
    /// `(class name, AP)`; `None` for a class without ground truth.
    pub per_class: Vec<(String, Option<f64>)>,
    pub step: Option<u64>,
    /// A `params` field, if an evaluation wrote one.
    pub params: Option<u64>,
}

pub fn parse_eval(path: &Path, text: &str) -> Result<EvalFile> {
    let wrap = |what: &str| format!("{}: {what}", path.display());
    let v: Value = serde_json::from_str(text).with_context(|| wrap("not JSON"))?;
    let stats = v
        .get("stats")
        .with_context(|| wrap("no `stats`"))
        .and_then(|s| number_map(s, "stats").with_context(|| wrap("bad `stats`")))?
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let mut per_class = Vec::new();
    if let Some(classes) = v.pointer("/report/per_class") {
        let list = classes
            .as_array()
            .with_context(|| wrap("`report.per_class` is not a list"))?;
        for (i, c) in list.iter().enumerate() {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .with_context(|| wrap(&format!("`report.per_class[{i}].name` is not a string")))?;
            let ap = match c.get("ap") {
                Some(ap) => number(ap, "ap")
                    .with_context(|| wrap(&format!("`report.per_class[{i}].ap`")))?,
                None => None,
            };
            // pycocotools marks "no ground truth" with -1.
            per_class.push((name.to_string(), ap.filter(|a| *a >= 0.0)));
        }
    }
    Ok(EvalFile {
        stats,
        per_class,
        step: v.get("step").and_then(Value::as_u64),
        params: v.get("params").and_then(Value::as_u64),
    })
}

/// One run directory, read.
pub struct Run {
    pub label: String,
    pub dir: PathBuf,
    pub metrics: Option<Metrics>,
    pub eval: Option<EvalFile>,
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

    /// The mean of a logged term (e.g. `time.teacher_ms`).
    pub fn mean(&self, term: &str) -> Option<f64> {
        self.metrics.as_ref().and_then(|m| m.mean(term))
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
    let metrics_path = dir.join(kdet_train::metrics::METRICS_FILE);
    let metrics = match std::fs::read(&metrics_path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let m = parse_metrics(&metrics_path, &text)?;
            if m.torn_last_line {
                notes.push(format!(
                    "the unterminated last line of {} does not parse (a killed writer?); skipped",
                    metrics_path.display()
                ));
            }
            Some(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            notes.push(format!("no {}: no curves", metrics_path.display()));
            None
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", metrics_path.display())),
    };
    let eval_path = dir.join(EVAL_FILE);
    let eval = match std::fs::read_to_string(&eval_path) {
        Ok(text) => Some(parse_eval(&eval_path, &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            notes.push("no eval.json yet: still training (or stopped early)".to_string());
            None
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", eval_path.display())),
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

#[cfg(test)]
mod tests {
    use super::*;

    const TRAIN: &str = r#"{"step":2,"epoch":0,"lr":0.1,"losses":{"loss_cls":1.5,"kd.ld.kd":0.01,"time.kd_ms":3.0},"total":1.51,"images_per_s":9.0,"elapsed_s":1.0}"#;
    const EVAL: &str = r#"{"step":2,"epoch":0,"eval":{"bbox_AP":0.25}}"#;

    #[test]
    fn reads_training_and_evaluation_lines() {
        let text = format!("{TRAIN}\n{EVAL}\n\n");
        let m = parse_metrics(Path::new("m.jsonl"), &text).expect("parses");
        assert_eq!(m.train.len(), 1);
        assert_eq!(m.train[0].losses["kd.ld.kd"], Some(0.01));
        assert_eq!(m.train[0].total, Some(1.51));
        assert_eq!(m.evals[0].metrics["bbox_AP"], Some(0.25));
        assert_eq!(m.mean("time.kd_ms"), Some(3.0));
        assert_eq!(m.mean("time.teacher_ms"), None);
        assert!(!m.torn_last_line);
    }

    #[test]
    fn nan_logged_as_null_is_a_gap_not_an_error() {
        let line = TRAIN.replace("\"loss_cls\":1.5", "\"loss_cls\":null");
        let m = parse_metrics(Path::new("m.jsonl"), &format!("{line}\n")).expect("parses");
        assert_eq!(m.train[0].losses["loss_cls"], None);
    }

    #[test]
    fn a_malformed_line_names_file_and_line() {
        for bad in [
            "{\"step\":3,",
            "[1,2]",
            "{\"epoch\":0,\"losses\":{}}",
            "{\"step\":3,\"losses\":{\"a\":\"x\"}}",
            "{\"step\":3,\"lr\":0.1}",
        ] {
            let text = format!("{TRAIN}\n{bad}\n{EVAL}\n");
            let err = parse_metrics(Path::new("run/metrics.jsonl"), &text)
                .expect_err(bad)
                .to_string();
            assert_eq!(err, "run/metrics.jsonl:2: malformed metrics line", "{bad}");
        }
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_flagged() {
        let text = format!("{TRAIN}\n{EVAL}\n{{\"step\":4,\"ep");
        let m = parse_metrics(Path::new("m.jsonl"), &text).expect("parses");
        assert!(m.torn_last_line);
        assert_eq!((m.train.len(), m.evals.len()), (1, 1));
        // A complete last line without '\n' is read.
        let m = parse_metrics(Path::new("m.jsonl"), &format!("{TRAIN}\n{EVAL}")).expect("parses");
        assert_eq!((m.evals.len(), m.torn_last_line), (1, false));
    }

    #[test]
    fn eval_json_stats_and_per_class_ap() {
        let text = r#"{"step":4,"stats":{"AP":0.5,"AP50":0.75},
            "report":{"per_class":[{"name":"circle","ap":0.25},{"name":"ring","ap":-1.0}]}}"#;
        let e = parse_eval(Path::new("eval.json"), text).expect("parses");
        assert_eq!(e.stats["AP50"], 0.75);
        assert_eq!(
            e.per_class,
            vec![
                ("circle".to_string(), Some(0.25)),
                ("ring".to_string(), None)
            ]
        );
        assert_eq!((e.step, e.params), (Some(4), None));
        let err = parse_eval(Path::new("r/eval.json"), "{}").expect_err("no stats");
        assert_eq!(err.to_string(), "r/eval.json: no `stats`");
    }
}
