//! `kdet`: knowledge distillation for dense vision models — command-line entry point.
//!
//! Thin by design: argument parsing, backend choice and printing; the work lives in the
//! library crates. Errors are printed with their whole chain and exit with status 1.

mod bench_cmd;
mod bench_train;
mod config_cmd;
mod convert_cmd;
mod data_cmd;
mod demo_cmd;
mod device;
mod draw;
mod eval_cmd;
mod export_cmd;
mod predict_cmd;
mod report;
mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kdet",
    version,
    about = "Knowledge distillation for object detectors and segmenters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job on the built-in data: teacher, student, distilled student, compared.
    Demo(demo_cmd::DemoArgs),
    /// Generate, inspect and validate datasets.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Evaluate detections against COCO / YouTube-VIS ground truth, or a trained
    /// checkpoint on a dataset split.
    Eval(eval_cmd::EvalArgs),
    /// Train a detector from an experiment file (`configs/*.toml`), or resume a run.
    Train(train_cmd::TrainArgs),
    /// Distil a student from a trained teacher with the experiment's `[distill]` recipe
    /// (`teacher = "RUN_DIR/last.ckpt"`), or resume a distillation run.
    Distill(train_cmd::TrainArgs),
    /// Detect objects in images with a trained checkpoint: COCO results and drawn images.
    Predict(predict_cmd::PredictArgs),
    /// Write (or rebuild) the HTML report of one or more runs from their logs.
    Report(report::ReportArgs),
    /// Check a PyTorch / SafeTensors backbone checkpoint (torchvision, deep-sort MobileNetV2)
    /// and rewrite it in kdet's layout, for `pretrained = "..."`.
    Convert(convert_cmd::ConvertArgs),
    /// Write a trained model for use elsewhere (weights only, distillation modules dropped).
    Export(export_cmd::ExportArgs),
    /// Measure inference speed (results for docs/benchmarks.md).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Print resolved experiments (presets, files, with `--set`), the shipped configs and
    /// the distillation methods.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo_cmd::run(a),
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Eval(a) => eval_cmd::run(a),
        Command::Train(a) => train_cmd::run(a),
        Command::Distill(a) => train_cmd::run_distill(a),
        Command::Config(c) => config_cmd::run(c),
        Command::Bench(c) => bench_cmd::run(c),
        Command::Convert(a) => convert_cmd::run(a),
        Command::Export(a) => export_cmd::run(a),
        Command::Predict(a) => predict_cmd::run(a),
        Command::Report(a) => report::run(a),
    };
    if let Err(err) = result {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
