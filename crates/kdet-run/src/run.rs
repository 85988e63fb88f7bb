//! Starting, resuming and reusing a run: [`train`] trains the experiment's detector (or,
//! with a `[distill]` recipe, distils its student) into a run directory with periodic
//! evaluation, and after the last step writes `eval.json` and `predictions.json`;
//! [`stage`] is the rerunnable form (`kdet demo`): a finished run is reused, an
//! interrupted one resumed, one made from other settings refused.
//!
//! A run directory holds, besides kdet-train's files (`train_config.toml`,
//! `experiment.json`, `metrics.jsonl`, `last.ckpt` + `last.json`), `config.toml`: the fully
//! resolved experiment (every default filled in, paths absolute); `kdet train --config
//! RUN_DIR/config.toml` repeats the run.
//!
//! The caller picks the device: the model trains on `device` (an autodiff device) and is
//! evaluated as `Module::valid()` on the plain device beneath it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use kdet_train::{EvalSummary, RunSummary, Trainer, read_experiment};

use crate::data::{check_masks, load_train_split, prepare_data, train_loader};
use crate::evaluate::{EvalSplit, Evaluated};
use crate::experiment::Experiment;
use crate::files::{CONFIG_FILE, EVAL_FILE, EvalFile, PREDICTIONS_FILE, read_stored_experiment};
use crate::models::{RunModel, TrainableModel, distiller, student_model, weights_crc32};

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Continue from the run directory's `last.ckpt` (same data order, optimizer state and
    /// schedule position: the result equals an uninterrupted run).
    pub resume: bool,
    /// Stop after this many optimizer steps in total (with a checkpoint), as a clean
    /// interruption.
    pub max_steps: Option<u64>,
}

/// A run that reached its last step.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What `eval.json` holds.
    pub eval: EvalFile,
    /// CRC-32 of the final weights (the evaluated detector's).
    pub weights_crc32: u32,
}

/// What [`train`] did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary: RunSummary,
    /// `None` when the run stopped before its last step (`max_steps`).
    pub finished: Option<Finished>,
}

/// The command that runs an experiment (for messages).
fn command_of(experiment: &Experiment) -> &'static str {
    if experiment.distill.is_some() {
        "kdet distill"
    } else {
        "kdet train"
    }
}

/// `runs/<config stem>-seed<seed>`.
pub fn default_run_dir(stem: &str, seed: u64) -> PathBuf {
    PathBuf::from("runs").join(format!("{stem}-seed{seed}"))
}

/// The experiment stored in the run directory's `last.ckpt` (what a resumed run uses).
pub fn stored_experiment(run_dir: &Path) -> Result<Experiment> {
    let stored = read_experiment(run_dir)
        .context("reading the run to resume")?
        .with_context(|| {
            format!(
                "{}: the checkpoint stores no experiment (not written by `kdet train`)",
                run_dir.display()
            )
        })?;
    Experiment::from_stored(stored).with_context(|| {
        format!(
            "{}: the stored experiment does not parse (written by another kdet version?)",
            run_dir.display()
        )
    })
}

/// Named metrics for the training log.
fn eval_summary(evaluated: &Evaluated) -> EvalSummary {
    let reports = [
        ("bbox", Some(&evaluated.report)),
        ("segm", evaluated.segm.as_ref()),
    ];
    let mut summary = EvalSummary::new();
    for (kind, report) in reports {
        let Some(report) = report else { continue };
        for name in ["AP", "AP50", "AP75", "APs", "APm", "APl"] {
            summary = summary.with(
                format!("{kind}_{name}"),
                report.stats.get(name).unwrap_or(f64::NAN),
            );
        }
    }
    summary
}

/// Trains (or, with a `[distill]` recipe, distils) `experiment` into `run_dir` on
/// `device` (autodiff), or resumes it there; prints its progress and results.
pub fn train(
    experiment: Experiment,
    run_dir: &Path,
    device: &Device,
    options: RunOptions,
) -> Result<RunOutcome> {
    let load_pretrained = !options.resume;
    if experiment.distill.is_some() {
        run_loop(experiment, run_dir, device, options, |e, device| {
            distiller(e, device, load_pretrained)
        })
    } else {
        run_loop(experiment, run_dir, device, options, |e, device| {
            Ok(TrainableModel(student_model(e, device, load_pretrained)?))
        })
    }
}

fn run_loop<M: RunModel>(
    experiment: Experiment,
    run_dir: &Path,
    device: &Device,
    options: RunOptions,
    build: impl FnOnce(&Experiment, &Device) -> Result<M>,
) -> Result<RunOutcome> {
    let command = command_of(&experiment);
    let paths = prepare_data(&experiment)?;
    let train = load_train_split(&paths)?;
    if experiment.model.predicts_masks() {
        check_masks(&train)?;
    }
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
            "`{}` is {} but {} has {} categories",
            experiment.model.num_classes_key(),
            experiment.model.num_classes(),
            paths.train_json.display(),
            train.labels().len()
        );
    }

    device.seed(experiment.train.seed);
    let model = build(&experiment, device)?;
    let num_train = train.len();
    let loader = train_loader(&experiment, Arc::new(train))?;
    let batches_per_epoch = loader.num_batches();
    let mut trainer = if options.resume {
        Trainer::resume(run_dir, model, loader, device)
            .with_context(|| format!("resuming {}", run_dir.display()))?
    } else {
        let json = serde_json::to_value(&experiment).context("serialising the experiment")?;
        Trainer::new(experiment.train.clone(), run_dir, model, loader, device)
            .with_context(|| format!("starting a run in {}", run_dir.display()))?
            .with_experiment(json)
    };
    let mut config_text =
        format!("# The fully resolved experiment of this run (written by `{command}`).\n");
    config_text.push_str(&experiment.to_toml()?);
    kdet_data::image_io::write_atomic(&run_dir.join(CONFIG_FILE), config_text.as_bytes())?;
    if let Some(n) = options.max_steps {
        trainer = trainer.stop_at(n);
    }

    let total = trainer.schedule().total_steps;
    let (epoch, batch) = trainer.position();
    println!(
        "{} {}: {} training images, {} steps ({} per epoch), {} validation images; starting at step {} (epoch {epoch}, batch {batch})",
        if options.resume {
            "resuming"
        } else {
            "training"
        },
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
            let evaluated = val.evaluate(model.model(), limit, last)?;
            let summary = eval_summary(&evaluated);
            if last {
                final_eval = Some(evaluated);
            }
            Ok(summary)
        })
        .context("training")?;
    report_run(&summary, run_dir);
    if !summary.finished {
        println!(
            "stopped after step {} of {}; continue with: {command} --resume --out {}",
            summary.step,
            summary.total_steps,
            run_dir.display()
        );
        return Ok(RunOutcome {
            summary,
            finished: None,
        });
    }
    let valid = trainer.model().model().valid();
    let evaluated = match final_eval {
        Some(e) => e,
        None => val.evaluate(&valid, None, true)?,
    };
    let crc = weights_crc32(&valid);
    let mut eval = evaluated.eval_file();
    eval.checkpoint = Some(run_dir.join(kdet_train::checkpoint::LAST));
    eval.step = Some(summary.step);
    eval.weights_crc32 = Some(format!("{crc:08x}"));
    eval.gt = Some(paths.val_json.clone());
    eval.predictions = Some(run_dir.join(PREDICTIONS_FILE));
    evaluated.write_run_files(run_dir, &val, &eval)?;
    println!(
        "wrote {} and {}",
        run_dir.join(EVAL_FILE).display(),
        run_dir.join(PREDICTIONS_FILE).display()
    );
    print!("{}", evaluated.report);
    if let Some(segm) = &evaluated.segm {
        print!("{segm}");
    }
    println!("weights crc32 {crc:08x}");
    Ok(RunOutcome {
        summary,
        finished: Some(Finished {
            eval,
            weights_crc32: crc,
        }),
    })
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

/// How a [`stage`] ended: the final evaluation, computed now or read from the finished
/// run it reused.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub eval: EvalFile,
    /// The run existed and was finished: nothing ran.
    pub reused: bool,
}

/// Runs `experiment` into `run_dir`, resumes it there, or reuses it when finished
/// (`eval.json` there); refuses a folder started from other settings (its
/// `experiment.json` differs: the error names the fields). `name` labels the messages.
pub fn stage(
    name: &str,
    experiment: Experiment,
    run_dir: &Path,
    device: &Device,
) -> Result<StageOutcome> {
    check_same_experiment(run_dir, &experiment).with_context(|| format!("stage `{name}`"))?;
    let eval_path = run_dir.join(EVAL_FILE);
    if eval_path.is_file() {
        println!("== {name}: finished earlier, reusing {}", run_dir.display());
        return Ok(StageOutcome {
            eval: EvalFile::read(&eval_path).with_context(|| format!("stage `{name}`"))?,
            reused: true,
        });
    }
    let resume = run_dir.join(kdet_train::checkpoint::LAST).is_file();
    println!(
        "== {name}: {} {}",
        if resume { "resuming" } else { "running" },
        run_dir.display()
    );
    let options = RunOptions {
        resume,
        max_steps: None,
    };
    let outcome =
        train(experiment, run_dir, device, options).with_context(|| format!("stage `{name}`"))?;
    let finished = outcome
        .finished
        .with_context(|| format!("stage `{name}`: the run stopped before its last step"))?;
    Ok(StageOutcome {
        eval: finished.eval,
        reused: false,
    })
}

/// Refuses a run folder made from another experiment than `experiment` (its
/// `experiment.json`, written when the run started, read as this kdet reads it): reusing or
/// resuming it would report a run of other settings under the current configs' name.
pub fn check_same_experiment(run: &Path, experiment: &Experiment) -> Result<()> {
    let Some(stored) = read_stored_experiment(run)? else {
        return Ok(());
    };
    let path = run.join(kdet_train::run_dir::EXPERIMENT_FILE);
    let stored = serde_json::to_value(&stored).context("serialising the stored experiment")?;
    let current = serde_json::to_value(experiment).context("serialising the experiment")?;
    let mut changed = Vec::new();
    json_differences(&stored, &current, "", &mut changed);
    if changed.is_empty() {
        return Ok(());
    }
    let shown = changed.len().min(4);
    bail!(
        "{} was made with other settings than the current configs ({}{}); move or remove {} \
         (or pass another --out) to run this stage again",
        path.display(),
        changed[..shown].join("; "),
        if changed.len() > shown {
            format!("; and {} more", changed.len() - shown)
        } else {
            String::new()
        },
        run.display()
    )
}

/// The leaves where `stored` and `current` differ, as `path: stored -> current` (dotted
/// keys, `[i]` for array elements; a missing side is `(none)`). Non-integer numbers are
/// compared as f32s.
pub fn json_differences(
    stored: &serde_json::Value,
    current: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (stored, current) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let none = Value::String("(none)".into());
                json_differences(
                    a.get(key).unwrap_or(&none),
                    b.get(key).unwrap_or(&none),
                    &join(key),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_differences(x, y, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if !same_leaf(a, b) => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// Equal JSON leaves. The configs hold f32s: 0.245 and 0.24500000476837158 (the same f32
/// written through f64) are one value; integers compare exactly.
fn same_leaf(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y))
            if x.is_f64() || y.is_f64() =>
        {
            x.as_f64().map(|v| v as f32) == y.as_f64().map(|v| v as f32)
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ld_experiment() -> Experiment {
        Experiment::load(Path::new("builtin:distill/ld_gfl_synth.toml")).unwrap()
    }

    #[test]
    fn a_stage_made_from_other_settings_is_refused_with_the_fields_named() {
        let dir = tempfile::tempdir().unwrap();
        let experiment = ld_experiment();
        // No experiment.json yet: a new stage.
        check_same_experiment(dir.path(), &experiment).unwrap();
        let stored = serde_json::to_string(&experiment).unwrap();
        std::fs::write(dir.path().join("experiment.json"), stored).unwrap();
        // The same settings, read back from the file: reused.
        check_same_experiment(dir.path(), &experiment).unwrap();

        // A shipped weight changed since the stage ran, and the seed: both named.
        let mut changed = experiment.clone();
        changed.distill.as_mut().unwrap().losses[0].weight *= 4.0;
        changed.train.seed += 1;
        let err = format!(
            "{:#}",
            check_same_experiment(dir.path(), &changed).unwrap_err()
        );
        assert!(err.contains("distill.losses[0].weight: "), "{err}");
        assert!(err.contains("train.seed: 0 -> 1"), "{err}");
        assert!(err.contains("experiment.json"), "{err}");

        // A corrupt experiment.json is an error naming the file, not a silent rerun.
        std::fs::write(dir.path().join("experiment.json"), "{ not json").unwrap();
        let err = format!(
            "{:#}",
            check_same_experiment(dir.path(), &experiment).unwrap_err()
        );
        assert!(err.contains("not a valid experiment JSON"), "{err}");
    }

    /// A stage folder of an earlier kdet (its teacher written as a bare path) is the same
    /// experiment as today's file: reused, not refused.
    #[test]
    fn an_earlier_stage_folder_is_the_same_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let mut experiment = ld_experiment();
        let mut stored = serde_json::to_value(&experiment).unwrap();
        stored["teacher"] = serde_json::json!("/t/last.ckpt");
        std::fs::write(dir.path().join("experiment.json"), stored.to_string()).unwrap();
        experiment.teacher = Some(crate::experiment::TeacherConfig::Checkpoint(PathBuf::from(
            "/t/last.ckpt",
        )));
        check_same_experiment(dir.path(), &experiment).unwrap();
    }

    #[test]
    fn json_differences_walk_objects_and_arrays() {
        let a = serde_json::json!({"a": {"b": [1, 2]}, "c": 0.245, "gone": true});
        let b = serde_json::json!({"a": {"b": [1, 3]}, "c": 0.245_f32 as f64, "new": "x"});
        let mut out = Vec::new();
        json_differences(&a, &b, "", &mut out);
        assert_eq!(
            out,
            [
                "a.b[1]: 2 -> 3",
                "gone: true -> \"(none)\"",
                "new: \"(none)\" -> \"x\""
            ]
        );
    }
}
