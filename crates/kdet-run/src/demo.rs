//! The main job on the built-in data, end to end (`kdet demo`), for one [`DemoTask`]'s
//! teacher / student pair (`PAIR`: `gfl_synth` for boxes, `m2f_synth` for masks):
//!
//! 1. writes the synthetic dataset (the pair's configs' `data.synth`) when missing;
//! 2. takes the pair's shipped teacher ([`crate::shipped::GFL_TEACHER`],
//!    [`crate::shipped::MASK_TEACHER`]) or, with `train_teacher`, trains it
//!    (`configs/PAIR_teacher.toml`);
//! 3. trains the student alone (`configs/distill/baseline_PAIR.toml`) and distils it
//!    with the method (`configs/distill/<method>_PAIR.toml`), same seed, schedule and
//!    data order: the setting of the distillation benchmark (`docs/benchmarks.md`);
//! 4. evaluates the three on the validation split (box AP, and mask AP for the mask
//!    pair), times their inference and writes `summary.json`.
//!
//! `noisy-boxes` (NDet's self-correction, [`DemoTask::NoisyBoxes`]) trains three GFL
//! students instead, same seed and schedule: on the clean boxes
//! (`configs/distill/baseline_gfl_synth.toml`), on noisy boxes
//! (`configs/noisy/noisy_gfl_synth.toml`: the teacher), and on the noisy boxes corrected
//! by that teacher (`configs/noisy/corrected_gfl_synth.toml`); all scored on the clean
//! validation boxes, with the mean IoU of the training boxes with the clean ones before
//! and after correction ([`crate::noisy::correction_iou`]).
//!
//! The configs are the ones shipped in the binary. Every stage is a [`crate::run::stage`]:
//! rerunning with the same `out` reuses finished stages and resumes interrupted ones, and
//! refuses a stage folder made from other settings. `quick` runs every stage on a 60-step
//! schedule (into `OUT/quick/`): it proves the pipeline in a couple of minutes; its numbers
//! mean nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use kdet_train::config::{DecayConfig, Duration, WarmupConfig};

use crate::document::{ConfigFile, Override};
use crate::evaluate::EvalSplit;
use crate::experiment::{DataSource, Experiment, TeacherConfig};
use crate::files::{CocoStats, DemoSummary, EVAL_FILE, EvalFile, SUMMARY_FILE, SummaryRow};
use crate::models::load_model;
use crate::noisy::{CorrectionIou, correction_iou};
use crate::run::stage;
use crate::shipped::{GFL_TEACHER, MASK_TEACHER, ShippedTeacher};
use crate::timing::{median, random_batch, time_inference};

/// Which wing of kdet the demo shows: its teacher / student pair and recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DemoTask {
    /// Box detection: the GFL pair (`configs/gfl_synth_*.toml`).
    #[default]
    Det,
    /// Instance segmentation: the Mask2Former-lite pair (`configs/m2f_synth_*.toml`).
    Segm,
    /// Noisy training boxes and NDet's self-correction, with the GFL student
    /// (`configs/noisy/*_gfl_synth.toml`).
    NoisyBoxes,
}

impl DemoTask {
    /// Every task, by [`name`](Self::name).
    pub const ALL: [DemoTask; 3] = [DemoTask::Det, DemoTask::Segm, DemoTask::NoisyBoxes];

    /// `det`, `segm`, `noisy-boxes` (`kdet demo --task`).
    pub fn name(self) -> &'static str {
        match self {
            DemoTask::Det => "det",
            DemoTask::Segm => "segm",
            DemoTask::NoisyBoxes => "noisy-boxes",
        }
    }

    /// The task named `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .with_context(|| {
                format!(
                    "unknown demo task `{name}`; one of {}",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }

    /// The pair's config suffix: `configs/PAIR_teacher.toml`, `configs/distill/<method>_PAIR.toml`.
    pub fn pair(self) -> &'static str {
        match self {
            DemoTask::Det | DemoTask::NoisyBoxes => "gfl_synth",
            DemoTask::Segm => "m2f_synth",
        }
    }

    /// The method the demo distils with unless told.
    pub fn default_method(self) -> &'static str {
        match self {
            DemoTask::Det => "ld",
            DemoTask::Segm => "mqkd",
            DemoTask::NoisyBoxes => NDET,
        }
    }

    /// The shipped teacher of the pair (`noisy-boxes` trains its own, on the noisy boxes).
    pub fn shipped_teacher(self) -> Option<ShippedTeacher> {
        match self {
            DemoTask::Det => Some(GFL_TEACHER),
            DemoTask::Segm => Some(MASK_TEACHER),
            DemoTask::NoisyBoxes => None,
        }
    }

    /// Whether the pair predicts masks (its table leads with mask AP).
    pub fn masks(self) -> bool {
        self == DemoTask::Segm
    }

    /// The methods with a shipped recipe for this pair (`configs/distill/<method>_PAIR.toml`,
    /// the baseline and the teacher-free schedule it extends left out), sorted.
    pub fn methods(self) -> Vec<&'static str> {
        if self == DemoTask::NoisyBoxes {
            return vec![NDET];
        }
        let suffix = format!("_{}.toml", self.pair());
        crate::shipped::config_names()
            .filter_map(|n| n.strip_prefix("distill/")?.strip_suffix(suffix.as_str()))
            .filter(|m| !["baseline", "schedule"].contains(m))
            .collect()
    }
}

/// The one method of `noisy-boxes`: NDet's box correction
/// (`configs/noisy/corrected_gfl_synth.toml`).
pub const NDET: &str = "ndet";

/// `noisy-boxes`' gamma unless told: the middle of issue #20's 0.1, 0.2, 0.4.
pub const DEFAULT_BOX_NOISE: f64 = 0.2;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Which pair.
    pub task: DemoTask,
    /// Where the runs, the summary and the report go.
    pub out: PathBuf,
    /// Every stage on a 60-step schedule, into `out/quick`.
    pub quick: bool,
    /// The distillation method (`configs/distill/<method>_PAIR.toml`).
    pub method: String,
    /// Seed of the student runs.
    pub seed: u64,
    /// Train the teacher instead of using the shipped one.
    pub train_teacher: bool,
    /// Where the built-in dataset is [default: the configs' `data/synth`].
    pub data: Option<PathBuf>,
    /// `noisy-boxes`: NDet's gamma of the noisy training boxes.
    pub box_noise: f64,
    /// `--set` overrides: every one applies to both students except `distill.*` (the
    /// distilled student's only); the trained teacher takes the `data.*` ones.
    pub overrides: Vec<Override>,
}

/// One row of the comparison.
#[derive(Debug, Clone)]
pub struct DemoRow {
    pub label: String,
    pub run: PathBuf,
    pub params: usize,
    pub ms_per_image: f64,
    /// Box AP.
    pub stats: CocoStats,
    /// Mask AP (the mask pair).
    pub segm: Option<CocoStats>,
}

/// What the demo computed.
#[derive(Debug, Clone)]
pub struct DemoResult {
    /// The folder of the runs (`out`, or `out/quick`).
    pub dir: PathBuf,
    /// Teacher, student, distilled student.
    pub rows: Vec<DemoRow>,
    /// What `summary.json` holds.
    pub summary: DemoSummary,
    /// The built-in data's root (the validation images of the report).
    pub data_root: Option<PathBuf>,
}

/// `quick`: 60 steps, evaluation at the end only.
fn shorten(e: &mut Experiment) {
    let t = &mut e.train;
    t.schedule.total = Duration::Iterations(60);
    t.schedule.warmup = Some(WarmupConfig {
        iterations: 10,
        ratio: 0.001,
    });
    t.schedule.decay = DecayConfig::Step {
        milestones: vec![Duration::Iterations(45)],
        gamma: 0.1,
    };
    t.log_every = 10;
    t.eval_every = Some(Duration::Iterations(60));
    t.checkpoint.every = Duration::Iterations(30);
}

/// The first segment of an override's key.
fn first_key(o: &Override) -> Option<&str> {
    o.key.first().map(String::as_str)
}

/// A shipped config with the overrides that `keep` selects.
fn shipped(
    name: &str,
    options: &DemoOptions,
    keep: impl Fn(&Override) -> bool,
) -> Result<Experiment> {
    let overrides: Vec<Override> = options
        .overrides
        .iter()
        .filter(|o| keep(o))
        .cloned()
        .collect();
    let file = ConfigFile::find(Path::new(&format!("{}{name}", crate::document::BUILTIN)))?;
    let mut e = Experiment::load_file(&file, &overrides)?;
    if let (Some(dir), DataSource::Synth(s)) = (&options.data, &mut e.data.source) {
        s.root = dir.clone();
    }
    if options.quick {
        shorten(&mut e);
    }
    e.absolutize_paths()?;
    Ok(e)
}

/// Runs the demo on `device` (autodiff; models are evaluated and timed on the plain device
/// beneath it).
pub fn run_demo(options: &DemoOptions, device: &Device) -> Result<DemoResult> {
    let t0 = Instant::now();
    let task = options.task;
    let methods = task.methods();
    if !methods.contains(&options.method.as_str()) {
        bail!(
            "`--method {}` has no recipe for `--task {}` (configs/distill/{}_{}.toml); the task's methods: {}",
            options.method,
            task.name(),
            options.method,
            task.pair(),
            methods.join(", ")
        );
    }
    let out = if options.quick {
        options.out.join("quick")
    } else {
        options.out.clone()
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let staged = match task {
        DemoTask::NoisyBoxes => noisy_students(options, &out, device)?,
        DemoTask::Det | DemoTask::Segm => distilled_students(options, &out, device)?,
    };
    let Staged {
        teacher: teacher_ckpt,
        entries,
        data,
        box_iou,
    } = staged;
    let plain = device.clone().inner();

    // Parameters, inference time and AP of the three.
    let side = data.synth().map_or(128, |s| s.image_size);
    let batch = random_batch(1, side, data.data.size_divisor as u32, &plain)?;
    let iters = if options.quick { 10 } else { 30 };
    let mut rows = Vec::new();
    for Entry {
        label,
        run,
        eval,
        model,
    } in entries
    {
        let model = load_model(&model, &plain)?.0;
        let mut timings = time_inference(&model, &batch, 3, iters)?;
        rows.push(DemoRow {
            label,
            run,
            params: model.num_params(),
            ms_per_image: median(&mut timings.total),
            stats: eval.stats,
            segm: eval.segm.map(|s| s.stats),
        });
    }
    let summary = DemoSummary {
        task: task.name().to_string(),
        method: options.method.clone(),
        seed: options.seed,
        quick: options.quick,
        teacher: teacher_ckpt,
        rows: rows
            .iter()
            .map(|r| SummaryRow {
                label: r.label.clone(),
                run: r.run.clone(),
                parameters: r.params,
                ms_per_image: r.ms_per_image,
                ap: r.stats.ap,
                ap50: r.stats.ap50,
                ap75: r.stats.ap75,
                ap_small: r.stats.ap_small,
                ap_medium: r.stats.ap_medium,
                ap_large: r.stats.ap_large,
                mask_ap: r.segm.as_ref().map(|s| s.ap),
                mask_ap50: r.segm.as_ref().map(|s| s.ap50),
                mask_ap75: r.segm.as_ref().map(|s| s.ap75),
            })
            .collect(),
        gain_ap: rows[2].stats.ap - rows[1].stats.ap,
        gain_mask_ap: match (&rows[1].segm, &rows[2].segm) {
            (Some(base), Some(kd)) => Some(kd.ap - base.ap),
            _ => None,
        },
        box_noise: (task == DemoTask::NoisyBoxes).then_some(options.box_noise),
        box_iou,
        wall_s: t0.elapsed().as_secs_f64(),
    };
    summary.write(&out.join(SUMMARY_FILE))?;
    Ok(DemoResult {
        dir: out,
        rows,
        summary,
        data_root: data.synth().map(|s| s.root.clone()),
    })
}

/// One row of the comparison before it is timed.
struct Entry {
    label: String,
    /// The run folder (`eval.json`, `predictions.json` for the report).
    run: PathBuf,
    eval: EvalFile,
    /// Its model: a checkpoint or run folder.
    model: PathBuf,
}

/// What the training stages of a task produced.
struct Staged {
    /// The teacher's checkpoint.
    teacher: PathBuf,
    /// The three rows, in table order (the baseline second, the method third).
    entries: Vec<Entry>,
    /// The students' experiment: the data of the validation split.
    data: Experiment,
    /// `noisy-boxes`: the correction diagnostic.
    box_iou: Option<CorrectionIou>,
}

/// One student stage of the demo.
struct StudentStage {
    /// Its row in the table.
    label: String,
    /// The shipped config (`distill/baseline_gfl_synth.toml`).
    config: String,
    /// Its run folder.
    run: PathBuf,
    /// Whether the `distill.*` overrides apply (the method's stage only).
    method: bool,
    /// `noisy-boxes`: train on boxes with this noise (`data.synth.box_noise`).
    box_noise: Option<f64>,
}

/// Trains `s` (its shipped config with the demo's overrides, seed and `teacher`).
fn student(
    options: &DemoOptions,
    s: StudentStage,
    teacher: &Path,
    device: &Device,
) -> Result<(Entry, Experiment)> {
    let mut e = shipped(&s.config, options, |o| {
        s.method || first_key(o) != Some("distill")
    })?;
    e.train.seed = options.seed;
    // A teacher-free recipe (LGD) reads no teacher and refuses one.
    if !e.distill.as_ref().is_some_and(|r| r.teacher_free()) {
        e.teacher = Some(TeacherConfig::Checkpoint(teacher.to_path_buf()));
    }
    if let (Some(gamma), DataSource::Synth(synth)) = (s.box_noise, &mut e.data.source) {
        synth.box_noise = Some(gamma);
    }
    e.absolutize_paths()?;
    let outcome = stage(&s.label, e.clone(), &s.run, device).context("demo")?;
    Ok((
        Entry {
            label: s.label,
            model: s.run.clone(),
            run: s.run,
            eval: outcome.eval,
        },
        e,
    ))
}

/// `det` / `segm`: the teacher (shipped or trained), the student alone and distilled.
fn distilled_students(options: &DemoOptions, out: &Path, device: &Device) -> Result<Staged> {
    let task = options.task;
    let teacher_run = out.join("teacher");
    let teacher_ckpt = match task.shipped_teacher() {
        Some(_) if options.train_teacher => {
            let mut e = shipped(&format!("{}_teacher.toml", task.pair()), options, |o| {
                first_key(o) == Some("data")
            })?;
            if e.pretrained.is_some() {
                // The mask teacher's backbone starts from the shipped GFL teacher's
                // (`configs/m2f_synth_teacher.toml`), found wherever the demo runs.
                e.pretrained = Some(GFL_TEACHER.find(&options.out.join("shipped-teacher"))?);
            }
            stage("teacher", e, &teacher_run, device).context("demo")?;
            teacher_run.join(kdet_train::checkpoint::LAST)
        }
        Some(shipped_teacher) => {
            let cache = match task {
                DemoTask::Segm => "shipped-mask-teacher",
                _ => "shipped-teacher",
            };
            shipped_teacher.find(&options.out.join(cache))?
        }
        None => bail!("`--task {}` has no shipped teacher", task.name()),
    };

    // Baseline and distilled students.
    let seed = options.seed;
    let (baseline, data) = student(
        options,
        StudentStage {
            label: "student".to_string(),
            config: format!("distill/baseline_{}.toml", task.pair()),
            run: out.join(format!("baseline-seed{seed}")),
            method: false,
            box_noise: None,
        },
        &teacher_ckpt,
        device,
    )?;
    let (distilled, distilled_experiment) = student(
        options,
        StudentStage {
            label: format!("student + {}", options.method),
            config: format!("distill/{}_{}.toml", options.method, task.pair()),
            run: out.join(format!("{}-seed{seed}", options.method)),
            method: true,
            box_noise: None,
        },
        &teacher_ckpt,
        device,
    )?;

    // The teacher on the students' validation split (its eval.json / predictions.json, so
    // the report can show it beside them). The students' experiment gives the data: the
    // teacher's stored one names the folders of the machine it was trained on.
    let teacher_eval_path = teacher_run.join(EVAL_FILE);
    let teacher_eval = if teacher_eval_path.is_file() {
        EvalFile::read(&teacher_eval_path)?
    } else {
        println!("== teacher: evaluating {}", teacher_ckpt.display());
        let plain = device.clone().inner();
        let (teacher, _, ckpt) = load_model(&teacher_ckpt, &plain)?;
        std::fs::create_dir_all(&teacher_run)?;
        let paths = data.split_paths();
        let val = EvalSplit::load(
            &paths.val_json,
            &paths.val_images,
            &data,
            data.eval.batch_size,
        )?;
        let evaluated = val.evaluate(&teacher, None, true)?;
        let mut file = evaluated.eval_file();
        file.checkpoint = Some(teacher_ckpt.clone());
        file.step = Some(ckpt.meta.step);
        evaluated.write_run_files(&teacher_run, &val, &file)?;
        // The teacher's training log and experiment, when shipped beside the checkpoint,
        // for the report's curves and parameter count.
        for name in ["metrics.jsonl", "config.toml"] {
            let from = teacher_ckpt.with_file_name(name);
            if from.is_file() && !teacher_run.join(name).is_file() {
                std::fs::copy(&from, teacher_run.join(name))?;
            }
        }
        file
    };
    // A teacher-free method (LGD) never reads the teacher: its row is a reference only.
    let teacher_label = if distilled_experiment
        .distill
        .as_ref()
        .is_some_and(|r| r.teacher_free())
    {
        format!("teacher (reference; {} uses none)", options.method)
    } else {
        "teacher".to_string()
    };
    Ok(Staged {
        entries: vec![
            Entry {
                label: teacher_label,
                run: teacher_run,
                eval: teacher_eval,
                model: teacher_ckpt.clone(),
            },
            baseline,
            distilled,
        ],
        teacher: teacher_ckpt,
        data,
        box_iou: None,
    })
}

/// `noisy-boxes`: the GFL student on clean boxes, on noisy boxes (the teacher), and on the
/// noisy boxes corrected by that teacher; then the correction diagnostic on the training
/// split.
fn noisy_students(options: &DemoOptions, out: &Path, device: &Device) -> Result<Staged> {
    let gamma = options.box_noise;
    let seed = options.seed;
    // The students' shipped configs carry a teacher for the KD stage's sake; the clean and
    // the noisy student use none of it (empty recipes), as the benchmark's baseline.
    let shipped_teacher = GFL_TEACHER.find(&options.out.join("shipped-teacher"))?;
    let (clean, _) = student(
        options,
        StudentStage {
            label: "student (clean boxes)".to_string(),
            config: "distill/baseline_gfl_synth.toml".to_string(),
            run: out.join(format!("clean-seed{seed}")),
            method: false,
            box_noise: None,
        },
        &shipped_teacher,
        device,
    )?;
    let (noisy_entry, _) = student(
        options,
        StudentStage {
            label: format!("student (noisy boxes, gamma {gamma})"),
            config: "noisy/noisy_gfl_synth.toml".to_string(),
            run: out.join(format!("noisy-seed{seed}")),
            method: false,
            box_noise: Some(gamma),
        },
        &shipped_teacher,
        device,
    )?;
    let teacher = noisy_entry.run.join(kdet_train::checkpoint::LAST);
    let (corrected, data) = student(
        options,
        StudentStage {
            label: "student (corrected boxes)".to_string(),
            config: "noisy/corrected_gfl_synth.toml".to_string(),
            run: out.join(format!("{NDET}-seed{seed}")),
            method: true,
            box_noise: Some(gamma),
        },
        &teacher,
        device,
    )?;
    let config = data
        .distill
        .as_ref()
        .and_then(|d| d.box_correction.clone())
        .context("configs/noisy/corrected_gfl_synth.toml has no `[distill] box_correction`")?;
    let DataSource::Synth(synth) = &data.data.source else {
        bail!("`--task noisy-boxes` runs on the built-in data");
    };
    let paths = data.split_paths();
    let plain = device.clone().inner();
    let (model, _, _) = load_model(&teacher, &plain)?;
    println!("== correction: the teacher's fusion over the training boxes");
    let iou = correction_iou(
        &model,
        &config,
        &data,
        &paths.train_json,
        &synth.root.join("train").join("annotations.json"),
        &paths.train_images,
        &plain,
    )?;
    println!(
        "mean IoU of the {} training boxes with the clean ones: {:.3} noisy, {:.3} corrected",
        iou.boxes, iou.before, iou.after
    );
    Ok(Staged {
        teacher,
        entries: vec![clean, noisy_entry, corrected],
        data,
        box_iou: Some(iou),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Each task's methods are its shipped recipes, its default among them, and each
    /// names its teacher and configs.
    #[test]
    fn tasks_find_their_recipes_and_teachers() {
        assert_eq!(DemoTask::Segm.methods(), ["mqkd", "pkd"]);
        let det = DemoTask::Det.methods();
        for m in ["ld", "pkd", "mgd", "fgd", "lgd"] {
            assert!(det.contains(&m), "{det:?}");
        }
        assert!(!det.contains(&"baseline") && !det.contains(&"schedule") && !det.contains(&"mqkd"));
        for task in DemoTask::ALL {
            assert_eq!(DemoTask::from_name(task.name()).unwrap(), task);
            assert!(task.methods().contains(&task.default_method()));
            for name in [
                format!("{}_teacher.toml", task.pair()),
                format!("distill/baseline_{}.toml", task.pair()),
            ] {
                assert!(crate::shipped::config(&name).is_some(), "{name}");
            }
        }
        assert_eq!(DemoTask::Segm.shipped_teacher(), Some(MASK_TEACHER));
        assert_eq!(DemoTask::NoisyBoxes.methods(), [NDET]);
        assert_eq!(DemoTask::NoisyBoxes.shipped_teacher(), None);
        for name in [
            "noisy/noisy_gfl_synth.toml",
            "noisy/corrected_gfl_synth.toml",
        ] {
            assert!(crate::shipped::config(name).is_some(), "{name}");
        }
        assert!(DemoTask::masks(DemoTask::Segm) && !DemoTask::Det.masks());
        let err = DemoTask::from_name("video").unwrap_err().to_string();
        assert!(err.contains("det, segm"), "{err}");
    }
}
