//! `TrainConfig`: optimizer, learning-rate schedule, gradient clipping and the periods of
//! logging, evaluation and checkpointing. TOML-loadable; every default is the mmdetection
//! 1x schedule (`configs/_base_/schedules/schedule_1x.py`, `default_runtime.py`) unless
//! the field's doc says otherwise.
//!
//! ```toml
//! seed = 0
//! log_every = 50
//! eval_every = { epochs = 1 }
//!
//! [optimizer]
//! type = "sgd"
//! lr = 0.01
//! momentum = 0.9
//! weight_decay = 1e-4
//!
//! [grad_clip]
//! max_norm = 35.0
//!
//! [schedule]
//! total = { epochs = 12 }
//! warmup = { iterations = 500, ratio = 0.001 }
//! decay = { type = "step", milestones = [{ epochs = 8 }, { epochs = 11 }], gamma = 0.1 }
//!
//! [checkpoint]
//! every = { epochs = 1 }
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// A length of training, in optimizer steps or in epochs of the training loader.
///
/// TOML: `{ iterations = 500 }` or `{ epochs = 12 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duration {
    Iterations(u64),
    Epochs(u64),
}

impl Duration {
    /// In optimizer steps, with `batches_per_epoch` steps per epoch.
    pub fn to_iterations(self, batches_per_epoch: usize) -> u64 {
        match self {
            Duration::Iterations(n) => n,
            Duration::Epochs(e) => e.saturating_mul(batches_per_epoch as u64),
        }
    }
}

/// Everything the training loop needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub optimizer: OptimizerConfig,
    /// Clip the global gradient norm; `None` = no clipping (mmdet default `grad_clip=None`;
    /// the RetinaNet and FCOS configs set `max_norm=35, norm_type=2`; GFL and ATSS keep none).
    pub grad_clip: Option<GradClipConfig>,
    pub schedule: ScheduleConfig,
    /// Write a `metrics.jsonl` line (mean of the window's losses) every this many steps
    /// (mmdet `LoggerHook(interval=50)`).
    pub log_every: u64,
    /// Run the evaluation callback this often and at the end; `None` = never (mmdet
    /// `EvalHook(interval=1)`, once per epoch).
    pub eval_every: Option<Duration>,
    pub checkpoint: CheckpointConfig,
    /// Seeds the backend's random number generator before every step, mixed with the step
    /// number, so random ops in the forward (dropout, random sampling) are a function of
    /// (seed, step) and a resumed run draws what an uninterrupted one would. The loader has
    /// its own seed (`kdet_data::LoaderConfig::seed`); the CLI sets both from one value.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerConfig::default(),
            grad_clip: None,
            schedule: ScheduleConfig::default(),
            log_every: 50,
            eval_every: Some(Duration::Epochs(1)),
            checkpoint: CheckpointConfig::default(),
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Parses TOML text; `origin` names where it came from in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, TrainError> {
        let config: TrainConfig =
            toml::from_str(text).map_err(|e| TrainError::config(origin, e.to_string()))?;
        config
            .validate()
            .map_err(|m| TrainError::config(origin, m))?;
        Ok(config)
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The config as TOML (what a run writes as its resolved config).
    pub fn to_toml_string(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self).map_err(|e| TrainError::config("<TrainConfig>", e.to_string()))
    }

    /// Checks the rules serde cannot express; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |v: f64, name: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("`{name}` must be a positive number, got {v}"))
            }
        };
        let non_negative = |v: f64, name: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!("`{name}` must be a finite number >= 0, got {v}"))
            }
        };
        match &self.optimizer {
            OptimizerConfig::Sgd(c) => {
                positive(c.lr, "optimizer.lr")?;
                non_negative(c.momentum, "optimizer.momentum")?;
                non_negative(c.weight_decay, "optimizer.weight_decay")?;
                if c.nesterov && c.momentum == 0.0 {
                    return Err("`optimizer.nesterov` needs `optimizer.momentum` > 0".into());
                }
            }
            OptimizerConfig::AdamW(c) => {
                positive(c.lr, "optimizer.lr")?;
                for (v, n) in [
                    (c.beta_1, "optimizer.beta_1"),
                    (c.beta_2, "optimizer.beta_2"),
                ] {
                    if !(0.0..1.0).contains(&v) {
                        return Err(format!("`{n}` must be in [0, 1), got {v}"));
                    }
                }
                positive(c.epsilon, "optimizer.epsilon")?;
                non_negative(c.weight_decay, "optimizer.weight_decay")?;
            }
        }
        if let Some(clip) = &self.grad_clip {
            positive(clip.max_norm, "grad_clip.max_norm")?;
            if clip.norm_type != 2.0 {
                return Err(format!(
                    "`grad_clip.norm_type` = {}: only the L2 norm (2) is implemented",
                    clip.norm_type
                ));
            }
        }
        if self.log_every == 0 {
            return Err("`log_every` must be at least 1".into());
        }
        let nonzero = |d: Duration, name: &str| match d {
            Duration::Iterations(0) | Duration::Epochs(0) => {
                Err(format!("`{name}` must be longer than zero"))
            }
            _ => Ok(()),
        };
        nonzero(self.schedule.total, "schedule.total")?;
        if let Some(e) = self.eval_every {
            nonzero(e, "eval_every")?;
        }
        nonzero(self.checkpoint.every, "checkpoint.every")?;
        if let Some(k) = self.checkpoint.keep_every {
            nonzero(k, "checkpoint.keep_every")?;
        }
        if let Some(w) = &self.schedule.warmup
            && !(w.ratio.is_finite() && w.ratio > 0.0 && w.ratio <= 1.0)
        {
            return Err(format!(
                "`schedule.warmup.ratio` must be in (0, 1], got {}",
                w.ratio
            ));
        }
        match &self.schedule.decay {
            DecayConfig::Constant => {}
            DecayConfig::Step { gamma, .. } => positive(*gamma, "schedule.decay.gamma")?,
            DecayConfig::Cosine { min_lr_ratio } => {
                non_negative(*min_lr_ratio, "schedule.decay.min_lr_ratio")?
            }
        }
        Ok(())
    }
}

/// Which optimizer (a tagged enum: `type = "sgd"` or `type = "adamw"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerConfig {
    Sgd(SgdConfig),
    #[serde(rename = "adamw")]
    AdamW(AdamWConfig),
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd(SgdConfig::default())
    }
}

impl OptimizerConfig {
    /// The base learning rate (before warm-up and decay).
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::AdamW(c) => c.lr,
        }
    }
}

/// SGD with momentum and L2 weight decay added to the gradient, as `torch.optim.SGD`
/// (dampening 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Base learning rate (mmdet `lr=0.01` for a total batch of 16 images; scale linearly
    /// with the batch: Goyal et al. 2017, arXiv:1706.02677).
    pub lr: f64,
    /// mmdet `momentum=0.9`; 0 = plain SGD.
    pub momentum: f64,
    /// L2 penalty added to the gradient (mmdet `weight_decay=0.0001`).
    pub weight_decay: f64,
    /// Nesterov momentum (torch default `False`).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
        }
    }
}

/// AdamW with decoupled weight decay (Loshchilov & Hutter 2019, arXiv:1711.05101).
/// Defaults are `torch.optim.AdamW`'s, not burn's (burn uses eps 1e-5, weight decay 1e-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// torch default 1e-3.
    pub lr: f64,
    /// torch default 0.9.
    pub beta_1: f64,
    /// torch default 0.999.
    pub beta_2: f64,
    /// torch default 1e-8.
    pub epsilon: f64,
    /// Decoupled decay, `p -= lr * weight_decay * p` (torch default 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Gradient clipping by the norm of all gradients together (`torch.nn.utils.clip_grad_norm_`,
/// which mmdet's `OptimizerHook(grad_clip=...)` calls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradClipConfig {
    /// mmdet RetinaNet / FCOS configs: `max_norm=35` (GFL and ATSS do not clip).
    pub max_norm: f64,
    /// Only 2 (the L2 norm) is implemented; mmdet uses `norm_type=2`.
    pub norm_type: f64,
}

impl Default for GradClipConfig {
    fn default() -> Self {
        Self {
            max_norm: 35.0,
            norm_type: 2.0,
        }
    }
}

/// Learning rate over the run: base lr x warm-up factor x decay factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Length of the run (mmdet 1x: 12 epochs).
    pub total: Duration,
    /// Linear warm-up; `None` = none (mmdet `warmup='linear', warmup_iters=500,
    /// warmup_ratio=0.001`).
    pub warmup: Option<WarmupConfig>,
    pub decay: DecayConfig,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            total: Duration::Epochs(12),
            warmup: Some(WarmupConfig::default()),
            decay: DecayConfig::default(),
        }
    }
}

/// mmcv's linear warm-up: at step `i < iterations` the lr is the regular lr times
/// `1 - (1 - i / iterations) * (1 - ratio)`, i.e. from `ratio x lr` up to `lr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmupConfig {
    /// mmdet `warmup_iters=500`.
    pub iterations: u64,
    /// mmdet `warmup_ratio=0.001`.
    pub ratio: f64,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self {
            iterations: 500,
            ratio: 0.001,
        }
    }
}

/// How the lr decays after (and during) warm-up (tagged: `type = "step" | "cosine" |
/// "constant"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecayConfig {
    Constant,
    /// Multiply by `gamma` at each milestone (mmdet 1x: `step=[8, 11]` epochs, `gamma=0.1`).
    Step {
        #[serde(default = "default_milestones")]
        milestones: Vec<Duration>,
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// Cosine annealing over the whole run to `min_lr_ratio x lr` (mmcv
    /// `CosineAnnealingLrUpdaterHook`, progress = step / total).
    Cosine {
        #[serde(default)]
        min_lr_ratio: f64,
    },
}

fn default_milestones() -> Vec<Duration> {
    vec![Duration::Epochs(8), Duration::Epochs(11)]
}

fn default_gamma() -> f64 {
    0.1
}

impl Default for DecayConfig {
    fn default() -> Self {
        DecayConfig::Step {
            milestones: default_milestones(),
            gamma: default_gamma(),
        }
    }
}

/// When checkpoints are written. `last.ckpt` is replaced at every checkpoint and at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Update `last.ckpt` this often (mmdet `CheckpointHook(interval=1)`, every epoch).
    pub every: Duration,
    /// Also keep a copy `step_NNNNNNNN.ckpt` this often; `None` = only `last.ckpt`.
    /// (mmdet keeps every epoch's file; we do not by default: a ResNet-50 detector with
    /// SGD momentum is ~250 MB per checkpoint.)
    pub keep_every: Option<Duration>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: Duration::Epochs(1),
            keep_every: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_is_the_mmdet_1x_schedule() {
        let c = TrainConfig::from_toml_str("", "<test>").expect("valid");
        assert_eq!(c, TrainConfig::default());
        assert_eq!(c.optimizer.lr(), 0.01);
        assert_eq!(c.schedule.total, Duration::Epochs(12));
    }

    #[test]
    fn full_toml_round_trips() {
        let text = r#"
            seed = 3
            log_every = 10
            eval_every = { iterations = 100 }
            [optimizer]
            type = "adamw"
            lr = 0.0002
            [grad_clip]
            max_norm = 35.0
            [schedule]
            total = { iterations = 1000 }
            warmup = { iterations = 50, ratio = 0.01 }
            decay = { type = "cosine", min_lr_ratio = 0.05 }
            [checkpoint]
            every = { iterations = 200 }
            keep_every = { epochs = 2 }
        "#;
        let c = TrainConfig::from_toml_str(text, "<test>").expect("valid");
        match &c.optimizer {
            OptimizerConfig::AdamW(a) => {
                assert_eq!(a.lr, 0.0002);
                assert_eq!(a.epsilon, 1e-8);
            }
            other => panic!("expected adamw, got {other:?}"),
        }
        assert_eq!(c.schedule.decay, DecayConfig::Cosine { min_lr_ratio: 0.05 });
        assert_eq!(c.checkpoint.keep_every, Some(Duration::Epochs(2)));
        let again =
            TrainConfig::from_toml_str(&c.to_toml_string().expect("toml"), "<again>").expect("ok");
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_name_the_field() {
        let err =
            TrainConfig::from_toml_str("log_every = 0", "exp.toml").expect_err("invalid config");
        assert!(err.to_string().contains("exp.toml"), "{err}");
        assert!(err.to_string().contains("log_every"), "{err}");
        let err = TrainConfig::from_toml_str("[optimizer]\ntype = \"sgd\"\nlr = -1.0", "x")
            .expect_err("invalid config");
        assert!(err.to_string().contains("optimizer.lr"), "{err}");
        let err = TrainConfig::from_toml_str("[grad_clip]\nnorm_type = 1.0", "x")
            .expect_err("invalid config");
        assert!(err.to_string().contains("norm_type"), "{err}");
        let err = TrainConfig::from_toml_str("lgo_every = 3", "x").expect_err("invalid config");
        assert!(err.to_string().contains("lgo_every"), "{err}");
        let err = TrainConfig::from_toml_str("[optimizer]\ntype = \"sgd\"\nlrr = 0.1", "x")
            .expect_err("invalid config");
        assert!(err.to_string().contains("lrr"), "{err}");
        let err = TrainConfig::from_toml_str("[optimizer]\ntype = \"lbfgs\"", "x")
            .expect_err("invalid config");
        assert!(err.to_string().contains("lbfgs"), "{err}");
    }
}
