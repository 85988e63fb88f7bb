//! `kdet train` / `kdet distill`: trains a detector (or distils a student with the
//! experiment's `[distill]` recipe) from an experiment file, or resumes a killed run from
//! its directory. The work is `kdet_run::run::train`'s; the run directory's files are
//! described there.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use kdet_run::run::{RunOptions, default_run_dir, stored_experiment, train};
use kdet_run::{ConfigFile, Experiment, TeacherConfig};

use crate::config_cmd::SetArgs;
use crate::device::DeviceArg;

#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// The experiment file (`configs/*.toml`; a shipped config's name works from any
    /// folder). With --resume it only names the default run directory; the run's stored
    /// experiment is used.
    #[arg(
        long,
        value_name = "EXPERIMENT.toml",
        required_unless_present = "resume"
    )]
    config: Option<PathBuf>,
    /// Run directory [default: runs/<config stem>-seed<seed>].
    #[arg(long, value_name = "RUN_DIR")]
    out: Option<PathBuf>,
    /// Continue the run in the run directory from its `last.ckpt` (same data order,
    /// optimizer state and schedule position: the result equals an uninterrupted run).
    #[arg(long)]
    resume: bool,
    /// Training seed (backend RNG and data order / augmentation) [default: `train.seed`].
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many optimizer steps in total (with a checkpoint), as a clean
    /// interruption; `--resume` continues.
    #[arg(long, value_name = "N")]
    max_steps: Option<u64>,
    /// `kdet distill`: the teacher checkpoint (or weights file), instead of the
    /// experiment's `teacher`.
    #[arg(long, value_name = "CKPT")]
    teacher: Option<PathBuf>,
    #[command(flatten)]
    set: SetArgs,
    #[command(flatten)]
    device: DeviceArg,
}

/// The experiment and run directory of a new run or of the run to resume.
fn experiment_and_run_dir(args: &TrainArgs) -> Result<(Experiment, PathBuf)> {
    let overrides = args.set.overrides()?;
    let stem = |path: &PathBuf| ConfigFile::find(path).map(|f| f.stem());
    if args.resume {
        if !overrides.is_empty() {
            bail!("--set cannot change a run being resumed (it keeps its stored experiment)");
        }
        let run_dir = match (&args.out, &args.config) {
            (Some(out), _) => out.clone(),
            (None, Some(config)) => {
                let seed = match args.seed {
                    Some(s) => s,
                    None => Experiment::load(config)?.train.seed,
                };
                default_run_dir(&stem(config)?, seed)
            }
            (None, None) => bail!("--resume needs --out RUN_DIR (or --config to derive it)"),
        };
        let experiment = stored_experiment(&run_dir)?;
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
    let mut experiment = Experiment::load_with(config, &overrides)?;
    if let Some(seed) = args.seed {
        experiment.train.seed = seed;
    }
    if let Some(teacher) = &args.teacher {
        match &experiment.distill {
            None => {
                bail!("--teacher is for `kdet distill` experiments (with a `[distill]` section)")
            }
            Some(recipe) if recipe.teacher_free() => bail!(
                "--teacher: the `[distill]` recipe is teacher-free (lgd builds its teacher from the labels) and reads no teacher"
            ),
            Some(_) => {}
        }
        experiment.teacher = Some(TeacherConfig::with_path(
            experiment.teacher.as_ref(),
            teacher,
        )?);
    }
    experiment.absolutize_paths()?;
    let run_dir = match &args.out {
        Some(out) => out.clone(),
        None => default_run_dir(&stem(config)?, experiment.train.seed),
    };
    Ok((experiment, run_dir))
}

/// `kdet train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let (experiment, run_dir) = experiment_and_run_dir(&args)?;
    if experiment.distill.is_some() {
        bail!(
            "the experiment has a `[distill]` section: run it with `kdet distill` (or remove the section and `teacher` to train without a teacher)"
        );
    }
    go(&args, experiment, run_dir)
}

/// `kdet distill`: trains the experiment's student with its `[distill]` recipe.
pub fn run_distill(args: TrainArgs) -> Result<()> {
    let (experiment, run_dir) = experiment_and_run_dir(&args)?;
    let Some(recipe) = &experiment.distill else {
        bail!(
            "`kdet distill` needs a `[distill]` section in the experiment (use `kdet train` without it)"
        );
    };
    if experiment.teacher.is_none() && !recipe.teacher_free() {
        bail!(
            "`kdet distill` needs a `teacher` in the experiment (only a recipe of teacher-free methods, lgd, runs without one)"
        );
    }
    go(&args, experiment, run_dir)
}

fn go(args: &TrainArgs, experiment: Experiment, run_dir: PathBuf) -> Result<()> {
    let device = args.device.choice.autodiff()?;
    let options = RunOptions {
        resume: args.resume,
        max_steps: args.max_steps,
    };
    train(experiment, &run_dir, &device, options)?;
    Ok(())
}
