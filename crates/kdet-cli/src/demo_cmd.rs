//! `kdet demo`: the main job on the built-in data, end to end.
//!
//! 1. writes the synthetic dataset (`data/synth`, as every shipped config) when missing;
//! 2. takes the shipped teacher (`assets/teacher/`, produced by `kdet train --config
//!    configs/gfl_synth_teacher.toml`, see its README) or, with `--train-teacher`, trains it;
//! 3. trains the student alone (`configs/distill/baseline_gfl_synth.toml`) and distils it
//!    with `--method` (`configs/distill/<method>_gfl_synth.toml`), same seed, schedule and
//!    data order: the setting of the distillation benchmark (`docs/benchmarks.md`);
//! 4. evaluates the three on the validation split, times their inference, prints the
//!    comparison table and writes `summary.json` and `report.html` (`kdet report`).
//!
//! Rerunning with the same `--out` reuses finished stages and resumes interrupted ones
//! (the runs checkpoint every epoch; Ctrl-C loses at most an epoch). A stage folder whose
//! stored experiment differs from the current configs (a shipped weight changed since, or
//! another `--data`) is neither reused nor resumed: the error names the differing fields. `--quick` runs every
//! stage on a 60-step schedule (into `OUT/quick/`): it proves the pipeline in a couple of
//! minutes; its numbers mean nothing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use clap::Args;
use kdet_data::results::write_coco_results;
use kdet_distill::KdLossConfig;
use kdet_train::config::{DecayConfig, Duration, WarmupConfig};
use serde_json::json;

use crate::bench_cmd::{median, random_batch, time_inference};
use crate::device::DeviceArg;
use crate::eval_cmd::{EvalSplit, detector_of, read_checkpoint};
use crate::experiment::Experiment;
use crate::train_cmd::{
    EVAL_FILE, PREDICTIONS_FILE, TrainArgs, distill_experiment, train_experiment,
};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the runs, the summary and the report go.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    out: PathBuf,
    /// Every stage on a 60-step schedule (under 3 minutes): proves the pipeline; the
    /// numbers mean nothing.
    #[arg(long)]
    quick: bool,
    /// The distillation method (a recipe `configs/distill/<method>_gfl_synth.toml`).
    #[arg(long, default_value = "ld", value_parser = clap::builder::PossibleValuesParser::new(KdLossConfig::METHODS))]
    method: String,
    /// Seed of the student runs (initialisation, data order); the benchmark has 0, 1, 2.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train the teacher (configs/gfl_synth_teacher.toml, seed 0; about 50 minutes on 2
    /// cores) instead of using the shipped checkpoint.
    #[arg(long)]
    train_teacher: bool,
    /// Where the built-in dataset is (written there when missing) [default: the configs'
    /// `data/synth`].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArg,
}

/// Points an experiment's synthetic data at `--data`.
fn set_data(e: &mut Experiment, data: &Option<PathBuf>) {
    if let (Some(dir), Some(s)) = (data, e.data.synth.as_mut()) {
        s.root = dir.clone();
    }
}

/// The repository's folder of that name (`configs`, `assets`): the demo runs from a
/// checkout (`cargo run --release -- demo`).
fn repo_dir(name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    if !dir.is_dir() {
        bail!(
            "{} not found: `kdet demo` runs from a kdet checkout (cargo run --release -- demo)",
            dir.display()
        );
    }
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// The shipped teacher checkpoint.
pub const SHIPPED_TEACHER: &str = "teacher/gfl_synth_teacher-seed0.ckpt";

/// `--quick`: 60 steps, evaluation at the end only.
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

/// Runs (or resumes, or reuses) one stage into `run`.
fn stage(
    name: &str,
    run: &Path,
    device: &DeviceArg,
    experiment: Experiment,
    go: impl FnOnce(&TrainArgs, Experiment, PathBuf) -> Result<()>,
) -> Result<()> {
    check_same_experiment(run, &experiment).with_context(|| format!("demo stage `{name}`"))?;
    if run.join(EVAL_FILE).is_file() {
        println!("== {name}: finished earlier, reusing {}", run.display());
        return Ok(());
    }
    let resume = run.join(kdet_train::checkpoint::LAST).is_file();
    println!(
        "== {name}: {} {}",
        if resume { "resuming" } else { "running" },
        run.display()
    );
    let args = TrainArgs {
        resume,
        device: device.clone(),
        ..TrainArgs::default()
    };
    go(&args, experiment, run.to_path_buf()).with_context(|| format!("demo stage `{name}`"))
}

/// Refuses a stage folder made from another experiment than `experiment` (its
/// `experiment.json`, written when the stage started): reusing or resuming it would report
/// a run of other settings under the current configs' name.
fn check_same_experiment(run: &Path, experiment: &Experiment) -> Result<()> {
    let path = run.join(kdet_train::run_dir::EXPERIMENT_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let stored: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid experiment JSON", path.display()))?;
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
fn json_differences(
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

/// One row of the comparison table.
struct Row {
    label: String,
    run: PathBuf,
    params: usize,
    ms_per_image: f64,
    stats: Vec<f64>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let configs = repo_dir("configs")?;
    let out = if args.quick {
        args.out.join("quick")
    } else {
        args.out.clone()
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    // The teacher.
    let teacher_run = out.join("teacher");
    let teacher_ckpt = if args.train_teacher {
        let mut e = Experiment::load(&configs.join("gfl_synth_teacher.toml"))?;
        set_data(&mut e, &args.data);
        if args.quick {
            shorten(&mut e);
        }
        e.absolutize_paths()?;
        stage("teacher", &teacher_run, &args.device, e, train_experiment)?;
        teacher_run.join(kdet_train::checkpoint::LAST)
    } else {
        let shipped = repo_dir("assets")?.join(SHIPPED_TEACHER);
        if !shipped.is_file() {
            bail!(
                "the shipped teacher {} is missing: run `kdet demo --train-teacher` to train one",
                shipped.display()
            );
        }
        shipped
    };

    // Baseline and distilled students.
    let mut runs = Vec::new();
    let mut student_exp = None;
    for (label, file) in [
        ("student".to_string(), "baseline".to_string()),
        (format!("student + {}", args.method), args.method.clone()),
    ] {
        let mut e = Experiment::load(&configs.join(format!("distill/{file}_gfl_synth.toml")))?;
        e.train.seed = args.seed;
        e.teacher = Some(teacher_ckpt.clone());
        set_data(&mut e, &args.data);
        if args.quick {
            shorten(&mut e);
        }
        e.absolutize_paths()?;
        student_exp.get_or_insert_with(|| e.clone());
        let run = out.join(format!("{file}-seed{}", args.seed));
        stage(&label, &run, &args.device, e, distill_experiment)?;
        runs.push((label, run));
    }

    // The teacher on the students' validation split (its eval.json / predictions.json, so
    // the report can show it beside them). The students' experiment gives the data: the
    // teacher's stored one names the folders of the machine it was trained on.
    let data = student_exp.expect("two student stages ran");
    let (ckpt, teacher_exp) = read_checkpoint(&teacher_ckpt)?;
    let device = args.device.choice.plain()?;
    let teacher = detector_of(&ckpt, &teacher_exp, &device)?;
    if !teacher_run.join(EVAL_FILE).is_file() {
        println!("== teacher: evaluating {}", teacher_ckpt.display());
        std::fs::create_dir_all(&teacher_run)?;
        let paths = data.split_paths()?;
        let val = EvalSplit::load(
            &paths.val_json,
            &paths.val_images,
            &data,
            data.eval.batch_size,
        )?;
        let evaluated = val.evaluate(&teacher, None, true)?;
        let predictions = teacher_run.join(PREDICTIONS_FILE);
        write_coco_results(&predictions, &evaluated.predictions, val.dataset().labels())
            .with_context(|| format!("writing {}", predictions.display()))?;
        crate::eval_cmd::write_json(
            &teacher_run.join(EVAL_FILE),
            json!({"checkpoint": teacher_ckpt.display().to_string(), "step": ckpt.meta.step}),
            json!({"protocol": "coco", "iou_type": "bbox"}),
            &evaluated.report,
        )?;
        // The teacher's training log and experiment, when shipped beside the checkpoint,
        // for the report's curves and parameter count.
        for file in ["metrics.jsonl", "config.toml"] {
            let from = teacher_ckpt.with_file_name(file);
            if from.is_file() && !teacher_run.join(file).is_file() {
                std::fs::copy(&from, teacher_run.join(file))?;
            }
        }
    }

    // Parameters, inference time and AP of the three.
    let side = data.data.synth.as_ref().map_or(128, |s| s.image_size);
    let batch = random_batch(1, side, data.data.size_divisor as u32, &device)?;
    let iters = if args.quick { 10 } else { 30 };
    let mut rows = Vec::new();
    let mut entries = vec![("teacher".to_string(), teacher_run.clone())];
    entries.extend(runs.iter().cloned());
    for (label, run) in entries {
        let model = if label == "teacher" {
            teacher.clone()
        } else {
            let (ckpt, e) = read_checkpoint(&run)?;
            detector_of(&ckpt, &e, &device)?
        };
        let mut timings = time_inference(&model, &batch, 3, iters)?;
        let eval = std::fs::read_to_string(run.join(EVAL_FILE))
            .with_context(|| format!("reading {}", run.join(EVAL_FILE).display()))?;
        let eval: serde_json::Value = serde_json::from_str(&eval)
            .with_context(|| format!("parsing {}", run.join(EVAL_FILE).display()))?;
        let stats = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
            .iter()
            .map(|k| eval["stats"][*k].as_f64().unwrap_or(f64::NAN))
            .collect();
        rows.push(Row {
            label,
            run,
            params: model.num_params(),
            ms_per_image: median(&mut timings.total),
            stats,
        });
    }
    print_table(&rows, args.quick);
    let summary = json!({
        "method": args.method,
        "seed": args.seed,
        "quick": args.quick,
        "teacher": teacher_ckpt.display().to_string(),
        "rows": rows.iter().map(|r| json!({
            "label": r.label,
            "run": r.run.display().to_string(),
            "parameters": r.params,
            "ms_per_image": r.ms_per_image,
            "AP": r.stats[0], "AP50": r.stats[1], "AP75": r.stats[2],
            "APs": r.stats[3], "APm": r.stats[4], "APl": r.stats[5],
        })).collect::<Vec<_>>(),
        "gain_AP": rows[2].stats[0] - rows[1].stats[0],
        "wall_s": t0.elapsed().as_secs_f64(),
    });
    let path = out.join("summary.json");
    kdet_data::image_io::write_atomic(
        &path,
        format!("{}\n", serde_json::to_string_pretty(&summary)?).as_bytes(),
    )?;
    let report = out.join("report.html");
    crate::report::run(crate::report::ReportArgs {
        runs: rows.iter().map(|r| r.run.clone()).collect(),
        labels: Some(rows.iter().map(|r| r.label.clone()).collect()),
        out: Some(report.clone()),
        images: 8,
        data: data.data.synth.as_ref().map(|s| s.root.clone()),
    })
    .context("writing the report")?;
    println!(
        "wrote {} and {} ({:.1} min)",
        path.display(),
        report.display(),
        t0.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn print_table(rows: &[Row], quick: bool) {
    let base = rows[1].stats[0];
    println!();
    println!("| model | params | ms/image | AP | AP50 | AP75 | APs | APm | APl | gain |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rows.iter().enumerate() {
        let s: Vec<String> = r
            .stats
            .iter()
            .map(|v| format!("{:.1}", v * 100.0))
            .collect();
        let gain = if i == 2 {
            format!("{:+.1}", (r.stats[0] - base) * 100.0)
        } else {
            String::new()
        };
        println!(
            "| {} | {:.2} M | {:.1} | {} | {gain} |",
            r.label,
            r.params as f64 / 1e6,
            r.ms_per_image,
            s.join(" | ")
        );
    }
    println!();
    println!(
        "box AP x100 on the 250 validation images; ms/image = forward + post-processing, batch 1, 128x128, this machine; gain = distilled - baseline student AP{}",
        if quick {
            " (--quick: 60-step runs, the numbers mean nothing)"
        } else {
            ""
        }
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ld_experiment() -> Experiment {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        Experiment::load(&configs.join("distill/ld_gfl_synth.toml")).unwrap()
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
