//! Experiments and runs for kdet, as a library: what `kdet train`, `kdet distill`, `kdet
//! eval --checkpoint` and `kdet demo` do, callable from any program.
//!
//! - [`experiment`]: the experiment schema (`configs/*.toml`), its tagged teacher and data
//!   sources; [`document`]: how files become experiments (`extends`, `--set` overrides,
//!   defaults under every section, unknown keys named, earlier versions' files read);
//!   [`presets`]: the named experiments the shipped configs are written from; [`shipped`]:
//!   the configs and the teacher embedded in the binary.
//! - [`models`]: the student, the teacher (checkpoint or weights file), the distiller, the
//!   detector of a checkpoint.
//! - [`data`], [`run`]: the built-in data, starting / resuming / reusing a run;
//!   [`evaluate`]: scoring a detector on a labelled split; [`timing`]: inference speed.
//! - [`files`]: the typed run files (`eval.json`, `metrics.jsonl`, `summary.json`, the
//!   stored experiment), each with one strict reader.
//! - [`demo`]: teacher, student and distilled student on the built-in data, compared.
//!
//! Libraries take a `&Device`: the caller decides where a run computes. A minimal
//! distillation (`examples/distill_minimal.rs`):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use kdet_run::{Experiment, RunOptions, TeacherConfig};
//! let mut e = Experiment::load(std::path::Path::new("builtin:distill/ld_gfl_synth.toml"))?;
//! e.teacher = Some(TeacherConfig::Checkpoint(kdet_run::shipped::teacher("runs/t".as_ref())?));
//! e.absolutize_paths()?;
//! let device = burn::tensor::Device::flex().autodiff();
//! let outcome = kdet_run::run::train(e, "runs/ld".as_ref(), &device, RunOptions::default())?;
//! # Ok(()) }
//! ```

pub mod bench;
pub mod data;
pub mod demo;
pub mod document;
pub mod evaluate;
pub mod experiment;
pub mod files;
pub mod models;
pub mod noisy;
pub mod presets;
pub mod run;
pub mod shipped;
pub mod timing;

pub use document::{ConfigFile, Override};
pub use experiment::{DataSource, Experiment, TeacherConfig};
pub use files::{CocoStats, EvalFile};
pub use run::{RunOptions, RunOutcome};
