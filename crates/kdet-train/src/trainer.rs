//! [`Trainer`]: drives a [`TrainStep`] model with the optimizer, schedule, clipping,
//! logging, evaluation, checkpoints and resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataset::Dataset;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use kdet_data::{DataError, DetectionBatch, Loader, Sample};

use crate::checkpoint::{
    Checkpoint, CheckpointInfo, CheckpointMeta, fingerprint, last_checkpoint_path,
    write_checkpoints,
};
use crate::config::TrainConfig;
use crate::eval::{EvalContext, EvalSummary};
use crate::metrics::{EvalLog, METRICS_FILE, MetricsLog, TrainLog};
use crate::optim::{build_optimizer, build_own_optimizer, clip_global_norm};
use crate::progress::{Progress, ProgressMode, fmt_num};
use crate::run_dir::{remove_stale_temporaries, write_run_files};
use crate::schedule::LrSchedule;
use crate::train_step::{StepLosses, TrainStep};
use crate::{BoxError, TrainError};
use kdet_distill::OwnOptimizer;

/// How a call to [`Trainer::run`] ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Optimizer steps completed.
    pub step: u64,
    pub total_steps: u64,
    /// `step == total_steps`.
    pub finished: bool,
    pub elapsed_s: f64,
    pub images_seen: u64,
    /// The last step's loss terms.
    pub last_losses: BTreeMap<String, f64>,
    pub last_eval: Option<EvalSummary>,
    /// The last checkpoint written in this call.
    pub checkpoint: Option<CheckpointInfo>,
    /// Mean wall time of a training step in this call (loading, forward, backward, update).
    pub mean_step_s: f64,
}

/// A step's loss terms (by key text) and the timings the model measured, as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct StepScalars {
    pub losses: Vec<(String, f64)>,
    pub timings: Vec<(&'static str, f64)>,
}

/// Means over the steps since the last log line.
#[derive(Default)]
struct Window {
    steps: u64,
    images: u64,
    seconds: f64,
    losses: BTreeMap<String, f64>,
    /// Sum and count of each timing (a model may time some steps only).
    timings: BTreeMap<String, (f64, u64)>,
    total: f64,
    grad_norm: f64,
}

struct StepOutput {
    images: u64,
    lr: f64,
    losses: Vec<(String, f64)>,
    timings: Vec<(&'static str, f64)>,
    total: f64,
    grad_norm: Option<f64>,
}

/// Step periods resolved from the config.
struct Periods {
    log: u64,
    eval: Option<u64>,
    checkpoint: u64,
    keep: Option<u64>,
}

fn due(step: u64, every: u64) -> bool {
    every > 0 && step.is_multiple_of(every)
}

/// Step timings for a progress line: ` [teacher_ms 217 kd_ms 11.3]`, empty when none.
fn fmt_timings<'a>(timings: impl Iterator<Item = (&'a str, f64)>) -> String {
    let parts: Vec<String> = timings.map(|(n, ms)| format!("{n} {ms:.1}")).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(" "))
    }
}

/// Backend seed of step `step`: SplitMix64 of (seed, step).
fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Drives a [`TrainStep`] model over a [`Loader`]: see the crate docs.
pub struct Trainer<M, D> {
    config: TrainConfig,
    schedule: LrSchedule,
    periods: Periods,
    run_dir: PathBuf,
    /// `None` only inside a step (the optimizer takes the model by value).
    model: Option<M>,
    optim: ModuleOptimizer,
    /// The second optimizer, of the parameters the model trains apart
    /// ([`TrainStep::own_optimizer`]), with its settings.
    own: Option<(ModuleOptimizer, OwnOptimizer)>,
    loader: Loader<D>,
    device: Device,
    batches_per_epoch: usize,
    dataset_len: usize,
    step: u64,
    epoch: u64,
    batch_in_epoch: usize,
    images_seen: u64,
    elapsed_before: f64,
    last_lr: f64,
    experiment: Option<serde_json::Value>,
    progress: ProgressMode,
    stop_at: Option<u64>,
    metrics: MetricsLog,
}

impl<M, D> Trainer<M, D>
where
    M: TrainStep,
    D: Dataset<Sample, DataError> + 'static,
{
    /// A new run in `run_dir` (created if needed). Refuses a directory that already holds a
    /// checkpoint: resume it with [`Trainer::resume`] or pick another one.
    ///
    /// `model` must live on `device`, an autodiff device (`Device::flex().autodiff()`); the
    /// loader's batches are put there too.
    pub fn new(
        config: TrainConfig,
        run_dir: impl Into<PathBuf>,
        model: M,
        loader: Loader<D>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let run_dir = run_dir.into();
        config
            .validate()
            .map_err(|m| TrainError::config("<TrainConfig>", m))?;
        let last = last_checkpoint_path(&run_dir);
        if last.exists() {
            return Err(TrainError::config(
                run_dir.display().to_string(),
                format!(
                    "{} already exists: resume that run or choose a new run directory",
                    last.display()
                ),
            ));
        }
        std::fs::create_dir_all(&run_dir).map_err(|e| TrainError::io(&run_dir, e))?;
        let metrics = MetricsLog::create(&run_dir.join(METRICS_FILE))?;
        let optim = build_optimizer(&config.optimizer);
        let own = model.own_optimizer().map(|o| (build_own_optimizer(&o), o));
        Self::assemble(
            config,
            run_dir,
            model,
            (optim, own),
            loader,
            device,
            metrics,
            None,
        )
    }

    /// Continues the run in `run_dir` from `last.ckpt`: model weights (into `model`, which
    /// must have the same structure as the checkpointed one), optimizer state, position in
    /// the data (epoch, batch) and the run's own config. The loader must visit the data in
    /// the checkpointed run's order (same dataset, batch size and seed); that is checked.
    pub fn resume(
        run_dir: impl Into<PathBuf>,
        model: M,
        loader: Loader<D>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let run_dir = run_dir.into();
        let path = last_checkpoint_path(&run_dir);
        if !path.exists() {
            return Err(TrainError::NoCheckpoint {
                run_dir: run_dir.clone(),
                file: path,
            });
        }
        let checkpoint = Checkpoint::read(&path)?;
        Self::from_checkpoint(&checkpoint, run_dir, model, loader, device)
    }

    /// [`Trainer::resume`] from an already read checkpoint (e.g. a kept `step_N.ckpt`);
    /// metrics lines after its step are dropped.
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        run_dir: impl Into<PathBuf>,
        model: M,
        loader: Loader<D>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let run_dir = run_dir.into();
        let meta = &checkpoint.meta;
        let path = checkpoint.path.clone();
        let config = meta.config.clone();
        config.validate().map_err(|m| TrainError::Incompatible {
            path: path.clone(),
            what: format!("its config is invalid: {m}"),
        })?;
        let nb = loader.num_batches();
        let dataset_len = loader.order(0).len();
        if nb != meta.batches_per_epoch || dataset_len != meta.dataset_len {
            return Err(TrainError::Incompatible {
                path,
                what: format!(
                    "the checkpointed run had {} images in {} batches per epoch, this loader has {} in {}",
                    meta.dataset_len, meta.batches_per_epoch, dataset_len, nb
                ),
            });
        }
        if fingerprint(&loader.order(meta.epoch)) != meta.order_fingerprint {
            return Err(TrainError::Incompatible {
                path,
                what: format!(
                    "the loader visits epoch {}'s images in another order than the checkpointed run (different loader seed, shuffle or dataset?)",
                    meta.epoch
                ),
            });
        }
        let model = checkpoint.load_model(model)?;
        let optim = checkpoint.load_optimizer(build_optimizer(&config.optimizer))?;
        let own = match model.own_optimizer() {
            Some(o) => Some((checkpoint.load_own_optimizer(build_own_optimizer(&o))?, o)),
            None => None,
        };
        remove_stale_temporaries(&run_dir);
        let metrics = MetricsLog::resume(&run_dir.join(METRICS_FILE), meta.step)?;
        let mut trainer = Self::assemble(
            config,
            run_dir,
            model,
            (optim, own),
            loader,
            device,
            metrics,
            meta.experiment.clone(),
        )?;
        trainer.step = meta.step;
        trainer.epoch = meta.epoch;
        trainer.batch_in_epoch = meta.batch_in_epoch;
        trainer.images_seen = meta.images_seen;
        trainer.elapsed_before = meta.elapsed_s;
        trainer.last_lr = meta.lr;
        Ok(trainer)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: TrainConfig,
        run_dir: PathBuf,
        model: M,
        (optim, own): (ModuleOptimizer, Option<(ModuleOptimizer, OwnOptimizer)>),
        loader: Loader<D>,
        device: &Device,
        metrics: MetricsLog,
        experiment: Option<serde_json::Value>,
    ) -> Result<Self, TrainError> {
        let nb = loader.num_batches();
        if nb == 0 {
            return Err(TrainError::EmptyLoader);
        }
        let schedule = LrSchedule::new(&config.schedule, config.optimizer.lr(), nb);
        let periods = Periods {
            log: config.log_every,
            eval: config.eval_every.map(|d| d.to_iterations(nb)),
            checkpoint: config.checkpoint.every.to_iterations(nb),
            keep: config.checkpoint.keep_every.map(|d| d.to_iterations(nb)),
        };
        let dataset_len = loader.order(0).len();
        Ok(Self {
            last_lr: schedule.lr_at(0),
            schedule,
            periods,
            config,
            run_dir,
            model: Some(model),
            optim,
            own,
            loader,
            device: device.clone(),
            batches_per_epoch: nb,
            dataset_len,
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            images_seen: 0,
            elapsed_before: 0.0,
            experiment,
            progress: ProgressMode::default(),
            stop_at: None,
            metrics,
        })
    }

    /// Stores the caller's fully resolved experiment (model, data, ...) in every checkpoint
    /// and as `experiment.json`, so the run can be rebuilt from its directory.
    pub fn with_experiment(mut self, experiment: serde_json::Value) -> Self {
        self.experiment = Some(experiment);
        self
    }

    pub fn with_progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// Ends [`Trainer::run`] after step `step` (with a checkpoint), as a clean interruption;
    /// [`Trainer::resume`] continues from there.
    pub fn stop_at(mut self, step: u64) -> Self {
        self.stop_at = Some(step);
        self
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Optimizer steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// `(epoch, batch)` of the next step.
    pub fn position(&self) -> (u64, usize) {
        (self.epoch, self.batch_in_epoch)
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("the model is present between steps")
    }

    pub fn into_model(self) -> M {
        self.model.expect("the model is present between steps")
    }

    /// Trains to the end of the schedule (or [`Trainer::stop_at`]) without evaluation
    /// (`eval_every` is ignored).
    pub fn run(&mut self) -> Result<RunSummary, TrainError> {
        self.run_inner(None::<fn(&M, &EvalContext) -> Result<EvalSummary, BoxError>>)
    }

    /// Trains to the end of the schedule (or [`Trainer::stop_at`]), calling `eval` with the
    /// model in validation mode (`Module::valid`: no autodiff, eval-mode norms) every
    /// `eval_every` and at the end. Its metrics go to `metrics.jsonl`.
    pub fn run_with_eval<F>(&mut self, eval: F) -> Result<RunSummary, TrainError>
    where
        F: FnMut(&M, &EvalContext) -> Result<EvalSummary, BoxError>,
    {
        self.run_inner(Some(eval))
    }

    fn run_inner<F>(&mut self, mut eval: Option<F>) -> Result<RunSummary, TrainError>
    where
        F: FnMut(&M, &EvalContext) -> Result<EvalSummary, BoxError>,
    {
        write_run_files(&self.run_dir, &self.config, self.experiment.as_ref())?;
        let total = self.schedule.total_steps;
        let stop = self.stop_at.map_or(total, |s| s.min(total));
        let progress = Progress::new(self.progress, total, self.step);
        let session = Instant::now();
        let mut window = Window::default();
        let mut summary = RunSummary {
            step: self.step,
            total_steps: total,
            finished: self.step >= total,
            elapsed_s: self.elapsed_before,
            images_seen: self.images_seen,
            last_losses: BTreeMap::new(),
            last_eval: None,
            checkpoint: None,
            mean_step_s: 0.0,
        };
        let (mut steps_here, mut step_time) = (0u64, 0.0f64);
        while self.step < stop {
            let mut advanced = false;
            let mut t0 = Instant::now();
            for item in self
                .loader
                .iter(self.epoch, self.batch_in_epoch, &self.device)
            {
                let batch = item.map_err(|source| TrainError::Data {
                    step: self.step + 1,
                    source,
                })?;
                let out = self.train_step(batch)?;
                advanced = true;
                let seconds = t0.elapsed().as_secs_f64();
                steps_here += 1;
                step_time += seconds;
                window.steps += 1;
                window.images += out.images;
                window.seconds += seconds;
                window.total += out.total;
                window.grad_norm += out.grad_norm.unwrap_or(0.0);
                for (name, v) in &out.losses {
                    *window.losses.entry(name.clone()).or_insert(0.0) += v;
                }
                for &(name, ms) in &out.timings {
                    let (sum, n) = window.timings.entry(name.to_string()).or_default();
                    *sum += ms;
                    *n += 1;
                }
                let elapsed = self.elapsed_before + session.elapsed().as_secs_f64();
                progress.step(self.step, || {
                    let terms: Vec<String> = out
                        .losses
                        .iter()
                        .map(|(n, v)| format!("{n} {}", fmt_num(*v)))
                        .collect();
                    format!(
                        "lr {} loss {} ({}){} {:.1} img/s",
                        fmt_num(out.lr),
                        fmt_num(out.total),
                        terms.join(" "),
                        fmt_timings(out.timings.iter().copied()),
                        out.images as f64 / seconds.max(1e-9)
                    )
                });
                summary.last_losses = out.losses.into_iter().collect();

                let n = self.step;
                let end = n == total;
                if due(n, self.periods.log) || end {
                    self.write_log(&mut window, out.lr, elapsed, &progress)?;
                }
                if let (Some(every), Some(eval)) = (self.periods.eval, eval.as_mut())
                    && (due(n, every) || end)
                {
                    summary.last_eval = Some(self.evaluate(eval, &progress)?);
                }
                if due(n, self.periods.checkpoint) || end || n == stop {
                    let keep = self.periods.keep.is_some_and(|k| due(n, k));
                    summary.checkpoint = Some(self.save(elapsed, keep)?);
                }
                if self.step >= stop {
                    break;
                }
                t0 = Instant::now();
            }
            if !advanced {
                return Err(TrainError::EmptyLoader);
            }
        }
        progress.finish();
        summary.step = self.step;
        summary.finished = self.step >= total;
        summary.elapsed_s = self.elapsed_before + session.elapsed().as_secs_f64();
        summary.images_seen = self.images_seen;
        summary.mean_step_s = step_time / steps_here.max(1) as f64;
        Ok(summary)
    }

    /// One optimizer step on `batch` outside [`Trainer::run`]: the same code as a training
    /// step (forward, losses, backward, clipping, update; the position advances) without
    /// logging, evaluation or checkpoints. For benchmarks (`kdet bench train`); returns the
    /// step's loss terms and timings. The caller waits for the device if it times the step.
    pub fn bench_step(&mut self, batch: DetectionBatch) -> Result<StepScalars, TrainError> {
        let out = self.train_step(batch)?;
        Ok(StepScalars {
            losses: out.losses,
            timings: out.timings,
        })
    }

    /// One optimizer step; advances the position. Nothing is changed when a loss is not
    /// finite.
    fn train_step(&mut self, batch: DetectionBatch) -> Result<StepOutput, TrainError> {
        let index = self.step;
        let number = index + 1;
        let epoch = self.epoch;
        let non_finite = |term: &str, value: f64| TrainError::NonFinite {
            step: number,
            epoch,
            term: term.to_string(),
            value,
        };
        // Random ops in the forward draw from (seed, step): resumable without RNG state.
        self.device.seed(step_seed(self.config.seed, index));
        let model = self
            .model
            .take()
            .expect("the model is present between steps");
        let StepLosses { losses, timings } = model.losses_timed(&batch, index);
        let scalars = losses.scalars();
        let checked = (|| {
            if let Some((name, v)) = scalars.iter().find(|(_, v)| !v.is_finite()) {
                return Err(non_finite(name, *v));
            }
            let total = losses.total().ok_or(TrainError::NoLoss { step: number })?;
            let total_value: f64 = losses
                .terms
                .iter()
                .zip(&scalars)
                .filter(|(t, _)| t.backprop)
                .map(|(_, (_, v))| v)
                .sum();
            Ok((total, total_value))
        })();
        let (total, total_value) = match checked {
            Ok(t) => t,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        drop(losses);
        let mut grads = GradientsParams::from_grads(total.backward(), &model);
        model.drop_frozen_grads(&mut grads, index);
        // The second optimizer's share leaves before clipping (the rest's, as PyTorch
        // clips the student's parameters only).
        let own_grads = self.own.as_ref().map(|_| model.take_own_grads(&mut grads));
        let grad_norm = match &self.config.grad_clip {
            Some(clip) => {
                let norm = clip_global_norm(&model, &mut grads, clip.max_norm);
                if !norm.is_finite() {
                    self.model = Some(model);
                    return Err(non_finite("grad_norm", norm));
                }
                Some(norm)
            }
            None => None,
        };
        let lr = self.schedule.lr_at(index);
        let mut model = self.optim.step(lr, model, grads);
        if let (Some((optim, own)), Some(own_grads)) = (self.own.as_mut(), own_grads) {
            let total = self.schedule.total_steps;
            model = optim.step(own.lr_at(index, total), model, own_grads);
        }
        self.model = Some(model);

        let images = batch.images.len() as u64;
        self.step = number;
        self.images_seen += images;
        self.last_lr = lr;
        self.batch_in_epoch += 1;
        if self.batch_in_epoch >= self.batches_per_epoch {
            self.epoch += 1;
            self.batch_in_epoch = 0;
        }
        Ok(StepOutput {
            images,
            lr,
            losses: scalars,
            timings,
            total: total_value,
            grad_norm,
        })
    }

    fn write_log(
        &mut self,
        window: &mut Window,
        lr: f64,
        elapsed: f64,
        progress: &Progress,
    ) -> Result<(), TrainError> {
        let w = std::mem::take(window);
        let k = w.steps.max(1) as f64;
        // The epoch the logged step belonged to.
        let epoch = (self.step - 1) / self.batches_per_epoch as u64;
        let line = TrainLog {
            step: self.step,
            epoch,
            lr,
            losses: w.losses.iter().map(|(n, v)| (n.clone(), v / k)).collect(),
            timings: w
                .timings
                .iter()
                .map(|(name, &(sum, n))| (name.clone(), sum / n.max(1) as f64))
                .collect(),
            total: w.total / k,
            grad_norm: self.config.grad_clip.as_ref().map(|_| w.grad_norm / k),
            images_per_s: w.images as f64 / w.seconds.max(1e-9),
            elapsed_s: elapsed,
        };
        self.metrics.append(&line)?;
        let terms: Vec<String> = line
            .losses
            .iter()
            .map(|(n, v)| format!("{n} {}", fmt_num(*v)))
            .collect();
        progress.log(
            self.step,
            epoch,
            self.schedule.total_steps as f64 / self.batches_per_epoch as f64,
            &format!(
                "lr {} loss {} ({}){} {:.1} img/s",
                fmt_num(lr),
                fmt_num(line.total),
                terms.join(" "),
                fmt_timings(line.timings.iter().map(|(n, ms)| (n.as_str(), *ms))),
                line.images_per_s
            ),
        );
        Ok(())
    }

    fn evaluate<F>(&mut self, eval: &mut F, progress: &Progress) -> Result<EvalSummary, TrainError>
    where
        F: FnMut(&M, &EvalContext) -> Result<EvalSummary, BoxError>,
    {
        let ctx = EvalContext {
            step: self.step,
            epoch: self.epoch,
            run_dir: self.run_dir.clone(),
        };
        let valid = self.model().valid();
        let summary = eval(&valid, &ctx).map_err(|source| TrainError::Eval {
            step: self.step,
            source,
        })?;
        self.metrics.append(&EvalLog {
            step: self.step,
            epoch: (self.step - 1) / self.batches_per_epoch as u64,
            eval: summary.metrics.clone(),
        })?;
        let parts: Vec<String> = summary
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        progress.note(&format!("eval @ step {}: {}", self.step, parts.join(" ")));
        Ok(summary)
    }

    /// Writes `last.ckpt` (and a kept copy when `keep`).
    fn save(&self, elapsed: f64, keep: bool) -> Result<CheckpointInfo, TrainError> {
        let record_error = |what: &'static str, e: burn::store::RecordError| TrainError::Record {
            path: self.run_dir.clone(),
            what,
            message: e.to_string(),
        };
        // burn 0.22.1's BatchNorm `RunningState` keeps a training forward's update aside
        // until the next forward or `valid()` merges it, and `into_record` reads only the
        // merged value: without this merge a checkpoint misses the last step's running
        // statistics and a resumed run drifts from an uninterrupted one.
        let _ = self.model().valid();
        let model = self
            .model()
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| record_error("serialising the model", e))?;
        let mut optimizer = self
            .optim
            .into_bytes()
            .map_err(|e| record_error("serialising the optimizer", e))?
            .to_vec();
        let own_optimizer_len = match &self.own {
            Some((optim, _)) => {
                let own = optim
                    .into_bytes()
                    .map_err(|e| record_error("serialising the second optimizer", e))?;
                optimizer.extend_from_slice(&own);
                Some(own.len() as u64)
            }
            None => None,
        };
        let meta = CheckpointMeta {
            step: self.step,
            epoch: self.epoch,
            batch_in_epoch: self.batch_in_epoch,
            batches_per_epoch: self.batches_per_epoch,
            dataset_len: self.dataset_len,
            order_fingerprint: fingerprint(&self.loader.order(self.epoch)),
            images_seen: self.images_seen,
            elapsed_s: elapsed,
            lr: self.last_lr,
            config: self.config.clone(),
            schedule: self.schedule.clone(),
            experiment: self.experiment.clone(),
            kdet_train_version: env!("CARGO_PKG_VERSION").to_string(),
            own_optimizer_len,
        };
        let mut paths = Vec::with_capacity(2);
        if keep {
            paths.push(self.run_dir.join(format!("step_{:08}.ckpt", self.step)));
        }
        // `last.ckpt` last: it is what resume reads, so it must never be older than a copy.
        paths.push(last_checkpoint_path(&self.run_dir));
        let info = write_checkpoints(&paths, &meta, &model, &optimizer)?;
        Ok(info.expect("at least one checkpoint path"))
    }
}
