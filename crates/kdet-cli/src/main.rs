//! `kdet`: knowledge distillation for dense vision models — command-line entry point.
//!
//! Thin by design: argument parsing, backend choice and printing; the work lives in the
//! library crates. Errors are printed with their whole chain and exit with status 1.

mod bench_cmd;
mod data_cmd;
mod eval_cmd;
mod experiment;
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
    /// Measure inference speed (results for docs/benchmarks.md).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Print experiment presets and resolved experiment files.
    #[command(subcommand)]
    Config(experiment::ConfigCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Eval(a) => eval_cmd::run(a),
        Command::Train(a) => train_cmd::run(a),
        Command::Distill(a) => train_cmd::run_distill(a),
        Command::Config(c) => experiment::run(c),
        Command::Bench(c) => bench_cmd::run(c),
    };
    if let Err(err) = result {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
