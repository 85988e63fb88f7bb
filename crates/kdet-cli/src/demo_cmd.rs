//! `kdet demo`: the main job on the built-in data, end to end (`kdet_run::demo`: the
//! shipped teacher or a trained one, the student alone and distilled with `--method`, the
//! three evaluated and timed), then the comparison table and `report.html`. `--task det`
//! (the default) runs the GFL box-detection pair, `--task segm` the Mask2Former-lite
//! instance-segmentation pair (mask AP beside box AP, masks in the report), `--task
//! noisy-boxes` NDet's self-correction of noisy training boxes with the GFL student (clean,
//! noisy and corrected students; the mean IoU of the training boxes with the clean ones
//! before and after correction).
//!
//! The configs are the ones shipped in the binary, the teacher is found as
//! `kdet_run::shipped::ShippedTeacher::find` says: an installed `kdet demo` runs from any
//! folder.
//! Rerunning with the same `--out` reuses finished stages and resumes interrupted ones; a
//! stage folder made from other settings is refused with the differing fields named.
//! `--quick` runs every stage on a 60-step schedule (into `OUT/quick/`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use kdet_run::demo::{DemoOptions, DemoRow, DemoTask, run_demo};
use kdet_run::files::SUMMARY_FILE;

use crate::config_cmd::SetArgs;
use crate::device::DeviceArg;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the runs, the summary and the report go.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    out: PathBuf,
    /// The pair: `det`, box detection with the GFL pair (configs/gfl_synth_*.toml);
    /// `segm`, instance segmentation with the Mask2Former-lite pair
    /// (configs/m2f_synth_*.toml), mask AP beside box AP; `noisy-boxes`, the GFL student
    /// on clean boxes, on boxes with NDet's noise (--box-noise; the teacher) and on those
    /// boxes corrected by the teacher (configs/noisy/*.toml), box AP on clean validation
    /// boxes.
    #[arg(long, default_value = "det", value_parser = clap::builder::PossibleValuesParser::new(DemoTask::ALL.map(DemoTask::name)))]
    task: String,
    /// Every stage on a 60-step schedule (a few minutes): proves the pipeline; the numbers
    /// mean nothing.
    #[arg(long)]
    quick: bool,
    /// The distillation method: a recipe `configs/distill/<method>_<pair>.toml` [default:
    /// ld for det, mqkd for segm]. det: box AP gained over the student alone on the
    /// built-in data, 3 seeds (docs/benchmarks.md): frs +7.1, mgd +6.3, cwd +5.6, icd
    /// +5.3, tbd +5.2 (a reconstruction from the abstract), pkd +5.0, ld +3.8, fitnet +3.8,
    /// fgd +3.7, fbkd +3.4, logit_kd +3.1, rm_pfi +2.9, pgd +2.0, lgd -0.4 (teacher-free:
    /// the teacher row is only a reference). segm: mqkd (matched-query KD)
    /// or pkd, see docs/benchmarks.md. noisy-boxes: ndet only.
    #[arg(long)]
    method: Option<String>,
    /// `--task noisy-boxes`: NDet's noise level gamma of the training boxes (each corner
    /// moved by N(0,1)·gamma·side).
    #[arg(long, value_name = "GAMMA", default_value_t = kdet_run::demo::DEFAULT_BOX_NOISE)]
    box_noise: f64,
    /// Seed of the student runs (initialisation, data order); the benchmark has 0, 1, 2.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train the teacher (configs/<pair>_teacher.toml, seed 0; about 50 minutes on 2 cores
    /// for det, 40 for segm) instead of using the shipped checkpoint (noisy-boxes always
    /// trains its teacher: the student on the noisy boxes).
    #[arg(long)]
    train_teacher: bool,
    /// Where the built-in dataset is (written there when missing) [default: the configs'
    /// `data/synth` for det, `data/synth-large` for segm].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// (`--set`: both students take every override but `distill.*`, which only the
    /// distilled one takes; a trained teacher takes the `data.*` ones.)
    #[command(flatten)]
    set: SetArgs,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let task = DemoTask::from_name(&args.task)?;
    let options = DemoOptions {
        task,
        out: args.out.clone(),
        quick: args.quick,
        method: args
            .method
            .clone()
            .unwrap_or_else(|| task.default_method().to_string()),
        seed: args.seed,
        train_teacher: args.train_teacher,
        data: args.data.clone(),
        box_noise: args.box_noise,
        overrides: args.set.overrides()?,
    };
    let device = args.device.choice.autodiff()?;
    let result = run_demo(&options, &device)?;
    print_table(&result.rows, task, args.quick);
    if let (Some(iou), Some(gamma)) = (result.summary.box_iou, result.summary.box_noise) {
        println!(
            "training boxes (gamma {gamma}): mean IoU with the clean boxes {:.3} as given, {:.3} after the teacher's correction ({} boxes, test transforms, no flip)",
            iou.before, iou.after, iou.boxes
        );
    }
    let report = result.dir.join("report.html");
    let runs: Vec<PathBuf> = result.rows.iter().map(|r| r.run.clone()).collect();
    let labels: Vec<String> = result.rows.iter().map(|r| r.label.clone()).collect();
    crate::report::write_report(
        &runs,
        Some(&labels),
        Some(&report),
        8,
        result.data_root.as_deref(),
    )
    .context("writing the report")?;
    println!(
        "wrote {} and {} ({:.1} min)",
        result.dir.join(SUMMARY_FILE).display(),
        report.display(),
        t0.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn print_table(rows: &[DemoRow], task: DemoTask, quick: bool) {
    let pct = |v: f64| format!("{:.1}", v * 100.0);
    println!();
    if task.masks() {
        println!(
            "| model | params | ms/image | mask AP | mask AP50 | mask AP75 | box AP | box AP50 | gain (mask AP) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    } else {
        println!("| model | params | ms/image | AP | AP50 | AP75 | APs | APm | APl | gain |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    let headline = |r: &DemoRow| match (&r.segm, task.masks()) {
        (Some(m), true) => m.ap,
        _ => r.stats.ap,
    };
    let base = headline(&rows[1]);
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = match (&r.segm, task.masks()) {
            (Some(m), true) => [m.ap, m.ap50, m.ap75, r.stats.ap, r.stats.ap50]
                .into_iter()
                .map(pct)
                .collect(),
            _ => r.stats.headline().into_iter().map(pct).collect(),
        };
        let gain = if i == 2 {
            format!("{:+.1}", (headline(r) - base) * 100.0)
        } else {
            String::new()
        };
        println!(
            "| {} | {:.2} M | {:.1} | {} | {gain} |",
            r.label,
            r.params as f64 / 1e6,
            r.ms_per_image,
            cells.join(" | ")
        );
    }
    println!();
    println!(
        "{} x100 on the {} validation images; ms/image = forward + post-processing, batch 1, 128x128, this machine; gain = {} {}{}",
        if task.masks() {
            "mask and box AP"
        } else {
            "box AP"
        },
        if task == DemoTask::NoisyBoxes {
            "clean"
        } else {
            "250"
        },
        if task == DemoTask::NoisyBoxes {
            "corrected - noisy student"
        } else {
            "distilled - baseline student"
        },
        if task.masks() { "mask AP" } else { "AP" },
        if quick {
            " (--quick: 60-step runs, the numbers mean nothing)"
        } else {
            ""
        }
    );
}
