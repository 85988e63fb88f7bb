//! `kdet train`: trains a detector from an experiment file with periodic evaluation on the
//! validation split, and resumes a killed run from its directory.
//!
//! A run directory holds, besides kdet-train's files (`train_config.toml`,
//! `experiment.json`, `metrics.jsonl`, `last.ckpt` + `last.json`):
//! - `config.toml`: the fully resolved experiment (every default filled in, paths
//!   absolute); `kdet train --config RUN_DIR/config.toml` repeats the run;
//! - after the last step, `eval.json` (the final evaluation on every validation image:
//!   the 12 stats, per-class AP, PR curves, and the weights' CRC-32) and
//!   `predictions.json` (COCO results of that evaluation).
//!
//! Only this crate picks devices: the model trains on `--device` with autodiff
//! (`Device::flex().autodiff()` by default) and is evaluated as `Module::valid()` on the
//! plain device beneath it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use clap::Args;
use kdet_data::synth::{SynthConfig, write_dataset};
use kdet_data::{CocoDataset, CocoOptions, DetectionBatch, DetectionBatcher, Loader, Normalize};
use kdet_data::{Pipeline, results::write_coco_results};
use kdet_distill::Distiller;
use kdet_eval::EvalReport;
use kdet_models::weights::{ImportOptions, load_detector_file};
use kdet_models::{Detector, LossDict};
use kdet_structures::ImageSize;
use kdet_train::{Checkpoint, EvalSummary, RunSummary, TrainStep, Trainer, read_experiment};
use serde_json::json;

use crate::device::DeviceArg;
use crate::eval_cmd::{EvalSplit, Evaluated, write_json};
use crate::experiment::{Experiment, SplitPaths, SynthData, is_weights_file, load_model_config};

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// The experiment file (`configs/*.toml`). With --resume it only names the default
    /// run directory; the run's stored experiment is used.
    #[arg(
        long,
        value_name = "EXPERIMENT.toml",
        required_unless_present = "resume"
    )]
    pub(crate) config: Option<PathBuf>,
    /// Run directory [default: runs/<config stem>-seed<seed>].
    #[arg(long, value_name = "RUN_DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Continue the run in the run directory from its `last.ckpt` (same data order,
    /// optimizer state and schedule position: the result equals an uninterrupted run).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Training seed (backend RNG and data order / augmentation) [default: `train.seed`].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Stop after this many optimizer steps in total (with a checkpoint), as a clean
    /// interruption; `--resume` continues.
    #[arg(long, value_name = "N")]
    pub(crate) max_steps: Option<u64>,
    /// `kdet distill`: the teacher checkpoint, instead of the experiment's `teacher`.
    #[arg(long, value_name = "CKPT")]
    pub(crate) teacher: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) device: DeviceArg,
}

/// The file a run writes its resolved experiment to.
pub const CONFIG_FILE: &str = "config.toml";
/// The final evaluation.
pub const EVAL_FILE: &str = "eval.json";
/// COCO results of the final evaluation.
pub const PREDICTIONS_FILE: &str = "predictions.json";

/// A [`Detector`] as the training loop sees it. `Module` is delegated field-less, so its
/// records (checkpoints) have exactly the detector's parameter paths and load into a plain
/// `Detector`.
///
/// (The wrapper exists because `TrainStep` and `Detector` live in other crates.)
#[derive(Debug, Clone)]
pub struct TrainableDetector(pub Detector);

impl Module for TrainableDetector {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.0.collect_devices(devices)
    }
    fn fork(self, device: &Device) -> Self {
        Self(self.0.fork(device))
    }
    fn to_device(self, device: &Device) -> Self {
        Self(self.0.to_device(device))
    }
    fn train(self) -> Self {
        Self(self.0.train())
    }
    fn valid(&self) -> Self {
        Self(self.0.valid())
    }
    fn materialize(self) -> Self {
        Self(self.0.materialize())
    }
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.0.visit(visitor)
    }
    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self(self.0.map(mapper))
    }
}

impl TrainStep for TrainableDetector {
    /// Forward, ATSS assignment and the head's task losses.
    fn losses(&self, batch: &DetectionBatch, _step: u64) -> LossDict {
        let (_, _, losses) = self.0.forward_loss(&batch.images, &batch.targets);
        losses
    }
}

/// CRC-32 of every float parameter's bytes in visiting order: equal for bit-identical
/// weights (checkpoint files differ anyway: burn gives parameters random ids).
pub fn weights_crc32<M: Module>(model: &M) -> u32 {
    struct Crc(crc32fast::Hasher);
    impl ModuleVisitor for Crc {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.update(param.val().into_data().as_bytes());
        }
    }
    let mut crc = Crc(crc32fast::Hasher::new());
    model.visit(&mut crc);
    crc.0.finalize()
}

/// `runs/<config stem>-seed<seed>`.
fn default_run_dir(config: &Path, seed: u64) -> PathBuf {
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("runs").join(format!("{stem}-seed{seed}"))
}

/// Writes the synthetic dataset when `root` has none; refuses one made with other settings.
pub(crate) fn ensure_synth(s: &SynthData) -> Result<()> {
    let wanted = s.synth_config();
    let provenance = s.root.join("synth.json");
    if provenance.is_file() {
        let text = std::fs::read_to_string(&provenance)
            .with_context(|| format!("reading {}", provenance.display()))?;
        let found: SynthConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a synth.json", provenance.display()))?;
        if found != wanted {
            bail!(
                "`data.synth`: {} holds a dataset made with other settings (seed {}, {} / {} images of {} px; the config asks for seed {}, {} / {} of {} px): point `root` elsewhere or remove the folder",
                s.root.display(),
                found.seed,
                found.train_images,
                found.val_images,
                found.image_size,
                wanted.seed,
                wanted.train_images,
                wanted.val_images,
                wanted.image_size
            );
        }
        return Ok(());
    }
    if s.root.join("train/annotations.json").exists() {
        bail!(
            "`data.synth`: {} holds a dataset without synth.json; point `root` elsewhere or remove the folder",
            s.root.display()
        );
    }
    println!(
        "writing the synthetic dataset ({} train / {} val images, seed {}) to {}",
        wanted.train_images,
        wanted.val_images,
        wanted.seed,
        s.root.display()
    );
    write_dataset(&s.root, &wanted)
        .with_context(|| format!("writing the synthetic dataset to {}", s.root.display()))?;
    Ok(())
}

/// Checks that a configured data path exists, naming the key.
pub(crate) fn require(path: &Path, key: &str, what: &str) -> Result<()> {
    if !path.exists() {
        bail!("`data.{key}`: {} does not exist ({what})", path.display());
    }
    Ok(())
}

/// The experiment and run directory of a new run or of the run to resume.
fn experiment_and_run_dir(args: &TrainArgs) -> Result<(Experiment, PathBuf)> {
    if args.resume {
        let run_dir = match (&args.out, &args.config) {
            (Some(out), _) => out.clone(),
            (None, Some(config)) => {
                let seed = match args.seed {
                    Some(s) => s,
                    None => Experiment::load(config)?.train.seed,
                };
                default_run_dir(config, seed)
            }
            (None, None) => bail!("--resume needs --out RUN_DIR (or --config to derive it)"),
        };
        let stored = read_experiment(&run_dir)
            .context("reading the run to resume")?
            .with_context(|| {
                format!(
                    "{}: the checkpoint stores no experiment (not written by `kdet train`)",
                    run_dir.display()
                )
            })?;
        let experiment: Experiment = serde_json::from_value(stored).with_context(|| {
            format!(
                "{}: the stored experiment does not parse (written by another kdet version?)",
                run_dir.display()
            )
        })?;
        let experiment = experiment
            .resolve()
            .with_context(|| format!("{}: the stored experiment", run_dir.display()))?;
        if let Some(seed) = args.seed
            && seed != experiment.train.seed
        {
            bail!(
                "--seed {seed} differs from the run's seed {}; a resumed run keeps its seed",
                experiment.train.seed
            );
        }
        if args.teacher.is_some() {
            bail!("--teacher cannot change the teacher of a run being resumed");
        }
        if args.config.is_some() {
            println!(
                "resuming with the experiment stored in {}/last.ckpt (--config only located the run)",
                run_dir.display()
            );
        }
        return Ok((experiment, run_dir));
    }
    let config = args
        .config
        .as_ref()
        .context("--config EXPERIMENT.toml is required for a new run")?;
    let mut experiment = Experiment::load(config)?;
    if let Some(seed) = args.seed {
        experiment.train.seed = seed;
    }
    if let Some(teacher) = &args.teacher {
        if experiment.distill.is_none() {
            bail!("--teacher is for `kdet distill` experiments (with a `[distill]` section)");
        }
        experiment.teacher = Some(teacher.clone());
    }
    experiment.absolutize_paths()?;
    let run_dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_run_dir(config, experiment.train.seed));
    Ok((experiment, run_dir))
}

/// Named metrics for the training log.
fn eval_summary(report: &EvalReport) -> EvalSummary {
    ["AP", "AP50", "AP75", "APs", "APm", "APl"]
        .iter()
        .fold(EvalSummary::new(), |s, name| {
            s.with(
                format!("bbox_{name}"),
                report.stats.get(name).unwrap_or(f64::NAN),
            )
        })
}

/// What the run loop needs of a trained model besides [`TrainStep`]: the detector that is
/// evaluated and exported (the model itself, or a distiller's student).
pub trait RunModel: TrainStep {
    fn detector(&self) -> &Detector;
}

impl RunModel for TrainableDetector {
    fn detector(&self) -> &Detector {
        &self.0
    }
}

impl RunModel for Distiller {
    fn detector(&self) -> &Detector {
        &self.student
    }
}

/// `kdet train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let (experiment, run_dir) = experiment_and_run_dir(&args)?;
    if experiment.distill.is_some() {
        bail!(
            "the experiment has a `[distill]` section: run it with `kdet distill` (or remove the section and `teacher` to train without a teacher)"
        );
    }
    train_experiment(&args, experiment, run_dir)
}

/// `kdet distill`: trains the experiment's student with its `[distill]` recipe, the
/// teacher being the `teacher` checkpoint.
pub fn run_distill(args: TrainArgs) -> Result<()> {
    let (experiment, run_dir) = experiment_and_run_dir(&args)?;
    distill_experiment(&args, experiment, run_dir)
}

/// `kdet train` of an already resolved experiment (what `kdet demo` runs); `args` gives
/// `resume` and `max_steps`.
pub(crate) fn train_experiment(
    args: &TrainArgs,
    experiment: Experiment,
    run_dir: PathBuf,
) -> Result<()> {
    let load_pretrained = !args.resume;
    run_loop(args, experiment, run_dir, "kdet train", move |e, device| {
        Ok(TrainableDetector(student_model(
            e,
            device,
            load_pretrained,
        )?))
    })
}

/// `kdet distill` of an already resolved experiment.
pub(crate) fn distill_experiment(
    args: &TrainArgs,
    experiment: Experiment,
    run_dir: PathBuf,
) -> Result<()> {
    let (Some(teacher_path), Some(recipe)) = (&experiment.teacher, &experiment.distill) else {
        bail!(
            "`kdet distill` needs `teacher = \"RUN_DIR/last.ckpt\"` and a `[distill]` section in the experiment (use `kdet train` without them)"
        );
    };
    let (teacher_path, recipe) = (teacher_path.clone(), recipe.clone());
    let load_pretrained = !args.resume;
    run_loop(
        args,
        experiment,
        run_dir,
        "kdet distill",
        move |e, device| {
            let teacher = load_teacher(&teacher_path, e, &device.clone().inner())?;
            let input = probe_size(e);
            let student = student_model(e, device, load_pretrained)?;
            let distiller = Distiller::new(student, teacher, &recipe, input)
                .context("checking the `[distill]` recipe")?;
            if !distiller.not_inherited().is_empty() {
                println!(
                    "distill.inherit: copied the teacher's head and neck except (shapes differ, initial values kept): {}",
                    distiller.not_inherited().join(", ")
                );
            }
            Ok(distiller)
        },
    )
}

/// The model a run trains, with its `pretrained` backbone weights on a new run (a resumed
/// run reads every weight from its checkpoint).
pub(crate) fn student_model(
    e: &Experiment,
    device: &Device,
    load_pretrained: bool,
) -> Result<Detector> {
    let (model, report) = e.init_model(device, load_pretrained)?;
    if let Some(report) = report {
        println!("pretrained backbone: {report}");
    }
    Ok(model)
}

/// The teacher of a distillation, built on `device`, a plain device (no autodiff,
/// BatchNorm on running statistics): a `kdet train` checkpoint, or a weights
/// file (`.pth` / `.pt` / `.safetensors`) of the experiment's `teacher_model`
/// architecture and `teacher_source` layout, loaded strictly.
pub fn load_teacher(path: &Path, student: &Experiment, device: &Device) -> Result<Detector> {
    if is_weights_file(path) {
        return load_weights_teacher(path, student, device);
    }
    let ckpt =
        Checkpoint::read(path).with_context(|| format!("`teacher`: reading {}", path.display()))?;
    let teacher = crate::eval_cmd::experiment_of(&ckpt).context("`teacher`")?;
    if teacher.distill.is_some() {
        bail!(
            "`teacher`: {} is a distilled student; use a `kdet train` checkpoint",
            path.display()
        );
    }
    if teacher.model.num_classes() != student.model.num_classes() {
        bail!(
            "`teacher`: {} detects {} classes, the student {}",
            path.display(),
            teacher.model.num_classes(),
            student.model.num_classes()
        );
    }
    ckpt.load_model(teacher.model.init(device))
        .with_context(|| format!("`teacher`: loading {}", path.display()))
}

/// [`load_teacher`] of a weights file: the `teacher_model` architecture, every tensor
/// from the file (one error names each missing, unexpected and wrongly-shaped key).
fn load_weights_teacher(path: &Path, student: &Experiment, device: &Device) -> Result<Detector> {
    // `path` may come from `--teacher`, so it is checked here, not only in `resolve`.
    let Some((model_path, source)) = student.teacher_weights_for(path)? else {
        bail!("`teacher = \"{}\"` is not a weights file", path.display());
    };
    let named = format!(
        "`teacher = \"{}\"` (`teacher_source = \"{source}\"`, `teacher_model = \"{}\"`)",
        path.display(),
        model_path.display()
    );
    let config = load_model_config(model_path)
        .with_context(|| format!("{named}: the teacher's architecture"))?;
    if config.num_classes() != student.model.num_classes() {
        bail!(
            "{named}: the teacher detects {} classes, the student {}",
            config.num_classes(),
            student.model.num_classes()
        );
    }
    let (teacher, report) =
        load_detector_file(config.init(device), path, source, &ImportOptions::strict())
            .with_context(|| format!("{named}: loading the teacher's weights"))?;
    println!("teacher: {report}");
    Ok(teacher)
}

/// The padded input size the recipe is checked on: the built-in data's images, or a
/// 320-pixel square for COCO data (strides, not sizes, decide whether levels align),
/// rounded up to `data.size_divisor`.
pub(crate) fn probe_size(e: &Experiment) -> ImageSize {
    let side = e.data.synth.as_ref().map_or(320, |s| s.image_size as usize);
    let d = e.data.size_divisor.max(1);
    let side = side.div_ceil(d) * d;
    ImageSize::new(side as u32, side as u32)
}

/// The training split, without images that have no objects (mmdet's
/// `filter_empty_gt=True`); the reader's warnings go to stderr.
pub(crate) fn load_train_split(paths: &SplitPaths) -> Result<CocoDataset> {
    let train = CocoDataset::load(
        &paths.train_json,
        &paths.train_images,
        &CocoOptions { filter_empty: true },
    )
    .with_context(|| format!("reading the training split {}", paths.train_json.display()))?;
    for w in &train.report().warnings {
        eprintln!("warning: {w}");
    }
    Ok(train)
}

/// The experiment's training loader over `train`: its train transforms, batch size,
/// workers and shuffling (seeded with `train.seed`).
pub(crate) fn train_loader(
    experiment: &Experiment,
    train: Arc<CocoDataset>,
) -> Result<Loader<CocoDataset>> {
    Loader::new(
        train,
        Pipeline::new(experiment.data.train_transforms.clone().unwrap_or_default()),
        DetectionBatcher {
            normalize: Normalize::default(),
            size_divisor: experiment.data.size_divisor,
        },
        experiment.data.loader.loader_config(experiment.train.seed),
    )
    .context("starting the training loader")
}

fn run_loop<M: RunModel>(
    args: &TrainArgs,
    experiment: Experiment,
    run_dir: PathBuf,
    command: &str,
    build: impl FnOnce(&Experiment, &Device) -> Result<M>,
) -> Result<()> {
    if let Some(s) = &experiment.data.synth {
        ensure_synth(s)?;
    }
    let paths = experiment.split_paths()?;
    require(&paths.train_json, "train_json", "training annotations")?;
    require(&paths.train_images, "train_images", "training images")?;
    require(&paths.val_json, "val_json", "validation annotations")?;
    require(&paths.val_images, "val_images", "validation images")?;

    let train = load_train_split(&paths)?;
    let val = EvalSplit::load(
        &paths.val_json,
        &paths.val_images,
        &experiment,
        experiment.eval.batch_size,
    )?;
    val.check_classes(&experiment)?;
    if train.labels().category_ids() != val.dataset().labels().category_ids() {
        bail!(
            "{} and {} have different categories",
            paths.train_json.display(),
            paths.val_json.display()
        );
    }
    if experiment.model.num_classes() != train.labels().len() {
        bail!(
            "`model.head.num_classes` is {} but {} has {} categories",
            experiment.model.num_classes(),
            paths.train_json.display(),
            train.labels().len()
        );
    }

    let seed = experiment.train.seed;
    let device = args.device.choice.autodiff()?;
    device.seed(seed);
    let model = build(&experiment, &device)?;
    let num_train = train.len();
    let loader = train_loader(&experiment, Arc::new(train))?;
    let batches_per_epoch = loader.num_batches();
    let mut trainer = if args.resume {
        Trainer::resume(&run_dir, model, loader, &device)
            .with_context(|| format!("resuming {}", run_dir.display()))?
    } else {
        let json = serde_json::to_value(&experiment).context("serialising the experiment")?;
        Trainer::new(experiment.train.clone(), &run_dir, model, loader, &device)
            .with_context(|| format!("starting a run in {}", run_dir.display()))?
            .with_experiment(json)
    };
    let mut config_text =
        format!("# The fully resolved experiment of this run (written by `{command}`).\n");
    config_text.push_str(&experiment.to_toml()?);
    kdet_data::image_io::write_atomic(&run_dir.join(CONFIG_FILE), config_text.as_bytes())?;
    if let Some(n) = args.max_steps {
        trainer = trainer.stop_at(n);
    }

    let total = trainer.schedule().total_steps;
    let (epoch, batch) = trainer.position();
    println!(
        "{} {}: {} training images, {} steps ({} per epoch), {} validation images; starting at step {} (epoch {epoch}, batch {batch})",
        if args.resume { "resuming" } else { "training" },
        run_dir.display(),
        num_train,
        total,
        batches_per_epoch,
        val.len(),
        trainer.step(),
    );
    let periodic_images = experiment.eval.max_images;
    let mut final_eval: Option<Evaluated> = None;
    let summary = trainer
        .run_with_eval(|model, ctx| {
            let last = ctx.step == total;
            let limit = if last { None } else { periodic_images };
            let evaluated = val.evaluate(model.detector(), limit, last)?;
            let summary = eval_summary(&evaluated.report);
            if last {
                final_eval = Some(evaluated);
            }
            Ok(summary)
        })
        .context("training")?;
    report_run(&summary, &run_dir);
    if !summary.finished {
        println!(
            "stopped after step {} of {}; continue with: {command} --resume --out {}",
            summary.step,
            summary.total_steps,
            run_dir.display()
        );
        return Ok(());
    }
    let valid = trainer.model().detector().valid();
    let evaluated = match final_eval {
        Some(e) => e,
        None => val.evaluate(&valid, None, true)?,
    };
    let crc = weights_crc32(&valid);
    write_final(&run_dir, &summary, &evaluated, &val, &paths.val_json, crc)?;
    print!("{}", evaluated.report);
    println!("weights crc32 {crc:08x}");
    Ok(())
}

fn report_run(summary: &RunSummary, run_dir: &Path) {
    let losses: Vec<String> = summary
        .last_losses
        .iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect();
    println!(
        "step {}/{} in {:.1} s ({:.3} s/step this session); last losses: {}",
        summary.step,
        summary.total_steps,
        summary.elapsed_s,
        summary.mean_step_s,
        losses.join(", ")
    );
    if let Some(c) = &summary.checkpoint {
        println!("checkpoint {}", run_dir.join(&c.file).display());
    }
}

/// `eval.json` and `predictions.json` of a finished run.
fn write_final(
    run_dir: &Path,
    summary: &RunSummary,
    evaluated: &Evaluated,
    val: &EvalSplit,
    val_json: &Path,
    crc: u32,
) -> Result<()> {
    let predictions = run_dir.join(PREDICTIONS_FILE);
    let labels = val.dataset().labels().clone();
    write_coco_results(&predictions, &evaluated.predictions, &labels)
        .with_context(|| format!("writing {}", predictions.display()))?;
    let inputs = json!({
        "checkpoint": run_dir.join(kdet_train::checkpoint::LAST).display().to_string(),
        "step": summary.step,
        "weights_crc32": format!("{crc:08x}"),
        "gt": val_json.display().to_string(),
        "predictions": predictions.display().to_string(),
    });
    let out = run_dir.join(EVAL_FILE);
    write_json(
        &out,
        inputs,
        json!({"protocol": "coco", "iou_type": "bbox"}),
        &evaluated.report,
    )?;
    println!("wrote {} and {}", out.display(), predictions.display());
    Ok(())
}
