//! Training for kdet: the loop that drives a detector (and later the distiller) over a
//! resumable [`kdet_data::Loader`], with burn-optim's SGD / AdamW, a global-norm gradient
//! clip, mmdet-style warm-up + step / cosine learning-rate schedules, atomic checksummed
//! checkpoints, a `metrics.jsonl` log and a progress bar.
//!
//! ```text
//! Trainer::new(config, run_dir, model, loader, &Device::flex().autodiff())?
//!     .with_experiment(resolved_experiment_json)
//!     .run_with_eval(|model, ctx| evaluate(model, ctx))?;
//! // after a crash / kill:
//! Trainer::resume(run_dir, fresh_model, same_loader, &device)?.run_with_eval(..)?;
//! ```
//!
//! A run directory holds `train_config.toml` (the resolved [`TrainConfig`]),
//! `experiment.json` (when given), `metrics.jsonl`, `last.ckpt` + `last.json`, and
//! `step_NNNNNNNN.ckpt` copies when `checkpoint.keep_every` is set.
//!
//! Resume is exact: a run interrupted at any point (even `SIGKILL`) and resumed from its
//! last checkpoint ends with the same bits as an uninterrupted run on the CPU backend. That
//! holds because everything a step depends on is either in the checkpoint (weights with
//! their `ParamId`s, optimizer state keyed by them, the loop position) or a pure function
//! of the step number (learning rate, data order and augmentation via
//! `Loader::iter(epoch, batch)`, the backend RNG seed).
//!
//! What comes from burn and what is ours: the optimizers (`burn::optim::{SgdConfig,
//! AdamWConfig}` behind `ModuleOptimizer`), gradients (`GradientsParams::from_grads`) and
//! the record serialisation (`Module::into_record` / `ModuleRecord` and
//! `ModuleOptimizer::into_bytes`, both burnpack) are burn's. The loop, the schedule, the
//! global-norm clip, the checkpoint container and the log are written here: burn-train's
//! `Learner` iterates burn's own `DataLoader` (not our resumable one), reports a single
//! loss (not a `LossDict`), and its `GradientClipping::Norm` clips each parameter
//! separately; its LR schedulers are stateful where a function of the step is enough.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod metrics;
pub mod optim;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod train_step;
pub mod trainer;

pub use checkpoint::{Checkpoint, CheckpointInfo, CheckpointMeta, last_checkpoint_path};
pub use config::{
    AdamWConfig, CheckpointConfig, DecayConfig, Duration, GradClipConfig, OptimizerConfig,
    ScheduleConfig, SgdConfig, TrainConfig, WarmupConfig,
};
pub use error::{BoxError, TrainError};
pub use eval::{EvalContext, EvalSummary};
pub use metrics::{EvalLog, LogLine, MetricsLog, TrainLog, read_metrics};
pub use progress::ProgressMode;
pub use run_dir::read_experiment;
pub use schedule::LrSchedule;
pub use train_step::{StepLosses, TrainStep};
pub use trainer::{RunSummary, StepScalars, Trainer};
