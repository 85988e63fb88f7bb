//! Distils a GFL student from the shipped teacher with LD on the built-in data, with
//! kdet-run's library calls only, and compares it with the teacher:
//!
//! ```sh
//! cargo run --release --example distill_minimal -p kdet-run -- [STEPS] [OUT_DIR]
//! ```
//!
//! STEPS (default 100) shortens the shipped 1250-step recipe so that the example finishes
//! in a few minutes on a CPU (2 cores: about 0.35 s per step); the built-in data is
//! written to `data/synth` when missing; the run goes to OUT_DIR (default
//! `runs/distill_minimal`) and can be looked at with `kdet report OUT_DIR`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;
use kdet_run::evaluate::EvalSplit;
use kdet_run::models::load_model;
use kdet_run::{Experiment, Override, RunOptions, TeacherConfig, run, shipped};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: u64 = args
        .next()
        .map_or(Ok(100), |s| s.parse())
        .context("STEPS")?;
    let out = PathBuf::from(args.next().unwrap_or_else(|| "runs/distill_minimal".into()));

    // The shipped LD recipe (student, schedule, data, KD terms), shortened to `steps`.
    let shorter: Vec<Override> = [
        format!("train.schedule.total={{ iterations = {steps} }}"),
        format!("train.schedule.warmup.iterations={}", (steps / 10).max(1)),
        format!(
            "train.schedule.decay={{ type = \"step\", milestones = [{{ iterations = {} }}] }}",
            steps * 3 / 4
        ),
        format!("train.eval_every={{ iterations = {steps} }}"),
        "train.log_every=10".into(),
    ]
    .iter()
    .map(|s| s.parse())
    .collect::<Result<_>>()?;
    let mut experiment =
        Experiment::load_with(Path::new("builtin:distill/ld_gfl_synth.toml"), &shorter)?;
    // The teacher: the shipped checkpoint (from the checkout, or the binary's own copy).
    let teacher = shipped::teacher(&out.join("shipped-teacher"))?;
    experiment.teacher = Some(TeacherConfig::Checkpoint(teacher.clone()));
    experiment.absolutize_paths()?;

    // Train the student with the teacher's LD terms on burn's CPU backend, with autodiff.
    let device = Device::flex().autodiff();
    let outcome = run::train(experiment.clone(), &out, &device, RunOptions::default())?;
    let student = outcome.finished.context("the run stopped early")?;

    // The teacher on the same validation split, for comparison.
    let (teacher, _, _) = load_model(&teacher, &Device::flex())?;
    let paths = experiment.split_paths();
    let val = EvalSplit::load(&paths.val_json, &paths.val_images, &experiment, 8)?;
    let teacher_ap = val.evaluate(&teacher, None, false)?.eval_file().stats.ap;
    println!(
        "box AP after {steps} steps: student + LD {:.1}, teacher {:.1} (weights crc32 {:08x})",
        student.eval.stats.ap * 100.0,
        teacher_ap * 100.0,
        student.weights_crc32
    );
    Ok(())
}
