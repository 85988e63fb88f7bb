//! `kdet report`: one self-contained HTML page comparing runs, rebuilt from their logs at
//! any time (also while they train):
//!
//! 1. a table of the runs: parameters, the final COCO box AP (`eval.json`) in percent, the
//!    AP gain over the baseline (the run labelled `student`, else the second run), the
//!    mean teacher / KD time per step of distillation runs, the training time;
//! 2. the loss curves of each run (`metrics.jsonl`: task terms `loss_*`, KD terms `kd.*`
//!    dashed, the total thick; log scale past two decades);
//! 3. AP over training (the periodic evaluations), one line per run;
//! 4. per-class AP bars;
//! 5. a grid of validation images with each run's final predictions drawn.
//!
//! Inline SVG (written by hand, [`chart`]) and base64 PNG only: no network, no files beside
//! the page. A missing `eval.json` (a run still training) or `predictions.json` degrades to
//! "running" and a note; a malformed `metrics.jsonl` line is an error naming file and line.

mod chart;
mod grid;
mod page;
mod runs;
mod svg;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use runs::load_run;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories of `kdet train` / `kdet distill` (finished or still training).
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// One label per run, comma-separated (e.g. `teacher,student,distilled`) [default: the
    /// directory names]. Gains are over the run labelled `student`, else the second run.
    #[arg(long, value_delimiter = ',', value_name = "LABEL,...")]
    labels: Option<Vec<String>>,
    /// The HTML file [default: `report.html` in the run directory, or in the first run
    /// directory's parent when several runs are given].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Validation images in the prediction grid (0: no grid).
    #[arg(long, value_name = "N", default_value_t = 8)]
    images: usize,
    /// Validation data for the grid, instead of the first run's `config.toml`: a split
    /// folder (`annotations.json` + `images/`) or a `kdet data synth` folder (its `val`).
    #[arg(long, value_name = "DATA_DIR")]
    data: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let labels = labels(&args)?;
    write_report(
        &args.runs,
        Some(&labels),
        args.out.as_deref(),
        args.images,
        args.data.as_deref(),
    )
}

/// Writes the report of `run_dirs` (labelled `labels`, default: the directory names) to
/// `out` (default: see `--out`), with `images` validation images from `data` (default:
/// the first run's experiment).
pub fn write_report(
    run_dirs: &[PathBuf],
    labels: Option<&[String]>,
    out: Option<&Path>,
    images: usize,
    data: Option<&Path>,
) -> Result<()> {
    let mut runs = Vec::new();
    for (i, dir) in run_dirs.iter().enumerate() {
        let label = match labels {
            Some(l) => l[i].clone(),
            None => dir_label(dir),
        };
        runs.push(load_run(dir, label)?);
    }
    let out = match out {
        Some(p) => p.to_path_buf(),
        None if runs.len() == 1 => run_dirs[0].join("report.html"),
        None => match run_dirs[0].parent() {
            Some(p) if !p.as_os_str().is_empty() => p.join("report.html"),
            _ => PathBuf::from("report.html"),
        },
    };
    let mut notes: Vec<String> = runs
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| format!("{}: {n}", r.label)))
        .collect();
    let grid = grid::image_grid(&runs, images, data, &mut notes)?;
    let page = page::page(&runs, &notes, &grid);
    kdet_data::image_io::write_atomic(&out, page.as_bytes())
        .with_context(|| format!("writing the report {}", out.display()))?;
    for n in &notes {
        println!("note: {n}");
    }
    println!(
        "wrote {} ({} KB): {} run{}, {} validation image{}",
        out.display(),
        page.len().div_ceil(1024),
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        grid.rows.len(),
        if grid.rows.len() == 1 { "" } else { "s" },
    );
    Ok(())
}

/// A run's directory name.
fn dir_label(d: &Path) -> String {
    d.file_name().map_or_else(
        || d.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `--labels`, or the directory names.
fn labels(args: &ReportArgs) -> Result<Vec<String>> {
    let Some(labels) = &args.labels else {
        return Ok(args.runs.iter().map(|d| dir_label(d)).collect());
    };
    if labels.len() != args.runs.len() {
        bail!(
            "--labels has {} label{} for {} run director{}",
            labels.len(),
            if labels.len() == 1 { "" } else { "s" },
            args.runs.len(),
            if args.runs.len() == 1 { "y" } else { "ies" }
        );
    }
    if let Some(i) = labels.iter().position(|l| l.trim().is_empty()) {
        bail!("--labels: label {} is empty", i + 1);
    }
    Ok(labels.iter().map(|l| l.trim().to_string()).collect())
}
