//! The files of a run directory that later stages read, typed, each with one strict
//! reader (a file kdet wrote that does not parse is an error naming it, never a silent
//! gap), shared by `kdet report`, `kdet demo` and the benchmarks:
//!
//! ```text
//! run_dir/
//!   config.toml        the resolved experiment, TOML (Experiment::to_toml; read with
//!                      Experiment::load, which also reads earlier versions' files)
//!   experiment.json    the same, JSON, written when the run starts (kdet-train;
//!                      read_stored_experiment)
//!   metrics.jsonl      the training log (kdet-train writes it; MetricsFile reads it)
//!   eval.json          the final evaluation (EvalFile)
//!   predictions.json   COCO results of that evaluation
//!   last.ckpt, ...     checkpoints (kdet-train)
//! demo_dir/summary.json   the demo's table (DemoSummary)
//! ```
//!
//! The formats are the ones earlier kdet versions wrote: old run folders read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kdet_eval::{EvalReport, SegmArea, Stats};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::experiment::Experiment;

/// The resolved experiment of a run, TOML.
pub const CONFIG_FILE: &str = "config.toml";
/// The final evaluation.
pub const EVAL_FILE: &str = "eval.json";
/// COCO results of the final evaluation.
pub const PREDICTIONS_FILE: &str = "predictions.json";
/// The demo's comparison.
pub const SUMMARY_FILE: &str = "summary.json";
pub use kdet_train::metrics::METRICS_FILE;
pub use kdet_train::run_dir::EXPERIMENT_FILE;

/// `null` (serde_json's NaN) as NaN.
fn nan_for_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The 12 COCO summary numbers by name (`COCOeval.stats` order), written as
/// `{"AP": .., "AP50": .., ...}`. `-1` means "not computed" (no ground truth in that
/// slice), as in pycocotools.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CocoStats {
    /// AP over IoU 0.50:0.95, all areas, 100 detections.
    #[serde(rename = "AP", deserialize_with = "nan_for_null")]
    pub ap: f64,
    #[serde(rename = "AP50", deserialize_with = "nan_for_null")]
    pub ap50: f64,
    #[serde(rename = "AP75", deserialize_with = "nan_for_null")]
    pub ap75: f64,
    /// Area < 32² (COCO) or 128² (YouTube-VIS).
    #[serde(rename = "APs", deserialize_with = "nan_for_null")]
    pub ap_small: f64,
    #[serde(rename = "APm", deserialize_with = "nan_for_null")]
    pub ap_medium: f64,
    #[serde(rename = "APl", deserialize_with = "nan_for_null")]
    pub ap_large: f64,
    /// Recall with 1 detection per image.
    #[serde(rename = "AR1", deserialize_with = "nan_for_null")]
    pub ar1: f64,
    #[serde(rename = "AR10", deserialize_with = "nan_for_null")]
    pub ar10: f64,
    #[serde(rename = "AR100", deserialize_with = "nan_for_null")]
    pub ar100: f64,
    #[serde(rename = "ARs", deserialize_with = "nan_for_null")]
    pub ar_small: f64,
    #[serde(rename = "ARm", deserialize_with = "nan_for_null")]
    pub ar_medium: f64,
    #[serde(rename = "ARl", deserialize_with = "nan_for_null")]
    pub ar_large: f64,
}

impl From<&Stats> for CocoStats {
    fn from(s: &Stats) -> Self {
        let [
            ap,
            ap50,
            ap75,
            ap_small,
            ap_medium,
            ap_large,
            ar1,
            ar10,
            ar100,
            ar_small,
            ar_medium,
            ar_large,
        ] = s.0;
        CocoStats {
            ap,
            ap50,
            ap75,
            ap_small,
            ap_medium,
            ap_large,
            ar1,
            ar10,
            ar100,
            ar_small,
            ar_medium,
            ar_large,
        }
    }
}

impl CocoStats {
    /// The six AP numbers of the tables (AP, AP50, AP75, APs, APm, APl).
    pub fn headline(&self) -> [f64; 6] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
        ]
    }

    /// `(name, value)` in `COCOeval.stats` order.
    pub fn named(&self) -> [(&'static str, f64); 12] {
        let v = [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ];
        std::array::from_fn(|i| (kdet_eval::STAT_NAMES[i], v[i]))
    }
}

/// What an evaluation matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// `coco` or `youtube-vis`.
    pub protocol: String,
    /// `bbox` or `segm`.
    pub iou_type: String,
    /// Mask AP: where a detection's area comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segm_area: Option<SegmArea>,
}

impl EvalSettings {
    /// COCO box AP.
    pub fn coco_bbox() -> Self {
        EvalSettings {
            protocol: "coco".into(),
            iou_type: "bbox".into(),
            segm_area: None,
        }
    }

    /// COCO mask AP, a detection's area from its mask (detectron2).
    pub fn coco_segm() -> Self {
        EvalSettings {
            protocol: "coco".into(),
            iou_type: "segm".into(),
            segm_area: Some(SegmArea::Mask),
        }
    }
}

/// `eval.json` (and `kdet eval --out`): what was evaluated, how, the 12 stats and the
/// whole report (per-class table, PR curves).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalFile {
    /// The evaluated checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
    /// Its optimizer step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// CRC-32 of the evaluated weights, 8 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_crc32: Option<String>,
    /// Ground truth JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<PathBuf>,
    /// The detections file (`kdet eval --dt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dt: Option<PathBuf>,
    /// The image folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    /// The predictions written beside (a run's `predictions.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<PathBuf>,
    /// Parameters of the evaluated model, if an evaluation wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<u64>,
    pub settings: EvalSettings,
    pub stats: CocoStats,
    pub report: EvalReport,
    /// Mask AP beside the box AP above, for a model that predicts masks (its settings,
    /// stats and report; inputs as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segm: Option<Box<EvalFile>>,
}

impl EvalFile {
    /// An evaluation file of `report` with nothing said about its inputs yet.
    pub fn new(settings: EvalSettings, report: EvalReport) -> Self {
        EvalFile {
            checkpoint: None,
            step: None,
            weights_crc32: None,
            gt: None,
            dt: None,
            images: None,
            predictions: None,
            params: None,
            settings,
            segm: None,
            stats: CocoStats::from(&report.stats),
            report,
        }
    }

    /// Writes the file (atomically, creating its folder).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    /// Reads `path` strictly.
    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// `(class name, AP)`; `None` for a class without ground truth (pycocotools' -1).
    pub fn per_class_ap(&self) -> Vec<(String, Option<f64>)> {
        self.report
            .per_class
            .iter()
            .map(|c| (c.name.clone(), Some(c.ap).filter(|a| *a >= 0.0)))
            .collect()
    }
}

/// Writes `value` as pretty JSON with a final newline, atomically, creating the folder.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .with_context(|| format!("serialising {}", path.display()))?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    kdet_data::image_io::write_atomic(path, format!("{text}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a kdet {} file",
            path.display(),
            path.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        )
    })
}

/// A logged loss name, structured: kdet-models' key type (task loss or KD entry and term),
/// which also reads the text form back.
pub use kdet_models::LossKey;

/// The prefix earlier kdet versions gave step timings logged among the losses
/// (`time.teacher_ms`); [`MetricsFile`] moves them to [`TrainPoint::timings`].
const OLD_TIMING_PREFIX: &str = "time.";

/// A training line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPoint {
    pub step: u64,
    /// Every logged loss term by the text form of its [`LossKey`] (task losses, `kd.*`);
    /// `None` where the value was not a number (serde_json writes NaN as `null`).
    pub losses: BTreeMap<String, Option<f64>>,
    /// Step timings in milliseconds (`teacher_ms`, `kd_ms`), not losses; also read from
    /// the `time.*` terms of earlier versions' files.
    pub timings: BTreeMap<String, Option<f64>>,
    pub total: Option<f64>,
    pub elapsed_s: Option<f64>,
}

/// An evaluation line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    pub step: u64,
    pub metrics: BTreeMap<String, Option<f64>>,
}

/// `metrics.jsonl`, read strictly: the log is kdet's, so a malformed line is an error
/// naming the file and line (1-based); blank lines are skipped, and so is an unterminated
/// last line that does not parse (a writer killed mid-line; `--resume` drops it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsFile {
    pub train: Vec<TrainPoint>,
    pub evals: Vec<EvalPoint>,
    /// The file ended in an unterminated line that does not parse, skipped.
    pub torn_last_line: bool,
}

impl MetricsFile {
    /// Reads `path`; `Ok(None)` when there is no such file.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(path, &String::from_utf8_lossy(&bytes)).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Parses the text of `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let mut metrics = MetricsFile::default();
        let lines: Vec<&str> = text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(line) {
                Ok(Line::Train(p)) => metrics.train.push(p),
                Ok(Line::Eval(p)) => metrics.evals.push(p),
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

    /// The mean of a logged loss term over the training lines that have it.
    pub fn mean(&self, term: &str) -> Option<f64> {
        mean(
            self.train
                .iter()
                .filter_map(|p| p.losses.get(term).copied().flatten()),
        )
    }

    /// The mean of a step timing (`teacher_ms`, `kd_ms`) over the training lines that
    /// have it.
    pub fn mean_timing(&self, name: &str) -> Option<f64> {
        mean(
            self.train
                .iter()
                .filter_map(|p| p.timings.get(name).copied().flatten()),
        )
    }

    /// The last step logged (training or evaluation).
    pub fn last_step(&self) -> Option<u64> {
        let t = self.train.iter().map(|p| p.step);
        t.chain(self.evals.iter().map(|p| p.step)).max()
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let values: Vec<f64> = values.collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

enum Line {
    Train(TrainPoint),
    Eval(EvalPoint),
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

fn parse_line(line: &str) -> Result<Line> {
    let v: Value = serde_json::from_str(line).context("not JSON")?;
    let Value::Object(obj) = &v else {
        bail!("not a JSON object");
    };
    let step = obj
        .get("step")
        .and_then(Value::as_u64)
        .context("no `step` (a whole number)")?;
    if let Some(eval) = obj.get("eval") {
        return Ok(Line::Eval(EvalPoint {
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
    let mut losses = number_map(losses, "losses")?;
    let mut timings = match obj.get("timings") {
        Some(t) => number_map(t, "timings")?,
        None => BTreeMap::new(),
    };
    // Earlier versions logged the timings among the losses.
    let old: Vec<String> = losses
        .keys()
        .filter(|k| k.starts_with(OLD_TIMING_PREFIX))
        .cloned()
        .collect();
    for key in old {
        let value = losses.remove(&key).flatten();
        timings.insert(key[OLD_TIMING_PREFIX.len()..].to_string(), value);
    }
    Ok(Line::Train(TrainPoint {
        step,
        losses,
        timings,
        total: optional("total")?,
        elapsed_s: optional("elapsed_s")?,
    }))
}

/// The experiment a run stored when it started (`experiment.json`); `Ok(None)` when the
/// folder has none (not started yet).
pub fn read_stored_experiment(run_dir: &Path) -> Result<Option<Experiment>> {
    let path = run_dir.join(EXPERIMENT_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid experiment JSON", path.display()))?;
    Experiment::from_stored(value)
        .with_context(|| format!("{}: not an experiment this kdet reads", path.display()))
        .map(Some)
}

/// One row of the demo's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub label: String,
    pub run: PathBuf,
    pub parameters: usize,
    pub ms_per_image: f64,
    #[serde(rename = "AP")]
    pub ap: f64,
    #[serde(rename = "AP50")]
    pub ap50: f64,
    #[serde(rename = "AP75")]
    pub ap75: f64,
    #[serde(rename = "APs")]
    pub ap_small: f64,
    #[serde(rename = "APm")]
    pub ap_medium: f64,
    #[serde(rename = "APl")]
    pub ap_large: f64,
    /// Mask AP, AP50, AP75 (a mask model's row).
    #[serde(rename = "mask_AP", default, skip_serializing_if = "Option::is_none")]
    pub mask_ap: Option<f64>,
    #[serde(rename = "mask_AP50", default, skip_serializing_if = "Option::is_none")]
    pub mask_ap50: Option<f64>,
    #[serde(rename = "mask_AP75", default, skip_serializing_if = "Option::is_none")]
    pub mask_ap75: Option<f64>,
}

impl SummaryRow {
    /// AP, AP50, AP75, APs, APm, APl.
    pub fn headline(&self) -> [f64; 6] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
        ]
    }
}

/// The demo's `summary.json`: teacher, student and distilled student side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoSummary {
    /// `det`, `segm` or `noisy-boxes` (`kdet demo --task`; `det` in files of earlier
    /// versions).
    #[serde(default = "det_task")]
    pub task: String,
    pub method: String,
    pub seed: u64,
    pub quick: bool,
    /// The teacher checkpoint.
    pub teacher: PathBuf,
    /// Teacher, student, distilled student (`noisy-boxes`: the student on clean boxes, on
    /// noisy boxes (the teacher), on corrected boxes).
    pub rows: Vec<SummaryRow>,
    /// Distilled minus baseline student AP (`noisy-boxes`: corrected minus noisy).
    #[serde(rename = "gain_AP")]
    pub gain_ap: f64,
    /// Distilled minus baseline student mask AP (the mask pair).
    #[serde(
        rename = "gain_mask_AP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub gain_mask_ap: Option<f64>,
    /// `noisy-boxes`: NDet's gamma of the noisy training boxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_noise: Option<f64>,
    /// `noisy-boxes`: the mean IoU of the training boxes with the clean ones, before and
    /// after the teacher's correction (`crate::noisy::correction_iou`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_iou: Option<crate::noisy::CorrectionIou>,
    pub wall_s: f64,
}

fn det_task() -> String {
    "det".to_string()
}

impl DemoSummary {
    pub fn write(&self, path: &Path) -> Result<()> {
        write_json(path, self)
    }

    pub fn read(path: &Path) -> Result<Self> {
        read_json(path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TRAIN: &str = r#"{"step":2,"epoch":0,"lr":0.1,"losses":{"loss_cls":1.5,"kd.ld.kd":0.01},"timings":{"kd_ms":3.0},"total":1.51,"images_per_s":9.0,"elapsed_s":1.0}"#;
    const EVAL: &str = r#"{"step":2,"epoch":0,"eval":{"bbox_AP":0.25}}"#;

    #[test]
    fn train_and_eval_lines_are_read() {
        let m = MetricsFile::parse(Path::new("m.jsonl"), &format!("{TRAIN}\n\n{EVAL}\n")).unwrap();
        assert_eq!(m.train.len(), 1);
        assert_eq!(m.train[0].losses["kd.ld.kd"], Some(0.01));
        assert_eq!(m.evals[0].metrics["bbox_AP"], Some(0.25));
        assert_eq!(m.mean_timing("kd_ms"), Some(3.0));
        assert_eq!(m.last_step(), Some(2));
        assert!(!m.torn_last_line);
    }

    #[test]
    fn timings_of_earlier_files_leave_the_losses() {
        // Earlier versions logged `time.*` among the losses.
        let line = r#"{"step":2,"epoch":0,"lr":0.1,"losses":{"loss_cls":1.5,"time.kd_ms":3.0,"time.teacher_ms":null},"total":1.5,"images_per_s":9.0,"elapsed_s":1.0}"#;
        let m = MetricsFile::parse(Path::new("m.jsonl"), &format!("{line}\n")).unwrap();
        let p = &m.train[0];
        assert_eq!(p.losses.keys().collect::<Vec<_>>(), ["loss_cls"]);
        assert_eq!(p.timings["kd_ms"], Some(3.0));
        assert_eq!(p.timings["teacher_ms"], None);
        assert_eq!(m.mean_timing("kd_ms"), Some(3.0));
        assert_eq!(m.mean("time.kd_ms"), None);
    }

    #[test]
    fn nan_logged_as_null_is_a_gap_not_an_error() {
        let line = TRAIN.replace("\"loss_cls\":1.5", "\"loss_cls\":null");
        let m = MetricsFile::parse(Path::new("m.jsonl"), &format!("{line}\n")).unwrap();
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
            let err = MetricsFile::parse(Path::new("run/metrics.jsonl"), &text)
                .expect_err(bad)
                .to_string();
            assert_eq!(err, "run/metrics.jsonl:2: malformed metrics line", "{bad}");
        }
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_flagged() {
        let text = format!("{TRAIN}\n{EVAL}\n{{\"step\":4,\"ep");
        let m = MetricsFile::parse(Path::new("m.jsonl"), &text).unwrap();
        assert!(m.torn_last_line);
        assert_eq!((m.train.len(), m.evals.len()), (1, 1));
        let m = MetricsFile::parse(Path::new("m.jsonl"), &format!("{TRAIN}\n{EVAL}")).unwrap();
        assert_eq!((m.evals.len(), m.torn_last_line), (1, false));
    }

    /// The eval.json of an earlier kdet (its stats written as a name -> value map,
    /// alphabetically) reads, and writing it again gives the same JSON value.
    #[test]
    fn an_earlier_eval_json_reads_and_round_trips() {
        let names = kdet_eval::STAT_NAMES;
        let stats: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), serde_json::json!(i as f64 / 100.0)))
            .collect();
        let report = serde_json::json!({
            "kind": "bbox", "num_images": 2, "num_detections": 3,
            "stats": (0..12).map(|i| i as f64 / 100.0).collect::<Vec<_>>(),
            "per_class": [
                {"category_id": 1, "name": "circle", "ap": 0.25, "ap50": 0.5, "ap75": 0.2, "ar": 0.3},
                {"category_id": 2, "name": "ring", "ap": -1.0, "ap50": -1.0, "ap75": -1.0, "ar": -1.0}
            ],
            "recall_thresholds": [0.0, 1.0],
            "pr_curves": []
        });
        let old = serde_json::json!({
            "checkpoint": "/r/last.ckpt", "gt": "/d/val/annotations.json",
            "predictions": "/r/predictions.json", "step": 60, "weights_crc32": "0badf00d",
            "settings": {"protocol": "coco", "iou_type": "bbox"},
            "stats": stats, "report": report
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.json");
        std::fs::write(&path, old.to_string()).unwrap();
        let e = EvalFile::read(&path).unwrap();
        assert_eq!(e.stats.ap75, 0.02);
        assert_eq!(e.stats.ar_large, 0.11);
        assert_eq!(e.step, Some(60));
        assert_eq!(
            e.per_class_ap(),
            vec![
                ("circle".to_string(), Some(0.25)),
                ("ring".to_string(), None)
            ]
        );
        e.write(&path).unwrap();
        let again: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(again, old);
        std::fs::write(&path, r#"{"stats": {"AP": 0.5}}"#).unwrap();
        let err = format!("{:#}", EvalFile::read(&path).unwrap_err());
        assert!(
            err.contains("eval.json: not a kdet eval.json file"),
            "{err}"
        );
    }
}
