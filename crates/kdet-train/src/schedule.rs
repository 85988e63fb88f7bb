//! The learning rate as a pure function of the step.
//!
//! burn-optim's `LrScheduler`s are stateful iterators (`step()` advances them) whose state
//! would have to go into the checkpoint; a function of the step number cannot drift on
//! resume and is what mmcv's `LrUpdaterHook` computes too (`get_lr(runner, base_lr)` from
//! `runner.iter` / `runner.epoch`).

use serde::{Deserialize, Serialize};

use crate::config::{DecayConfig, ScheduleConfig};

/// A [`ScheduleConfig`] with every length converted to optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub total_steps: u64,
    /// `(iterations, ratio)` of the linear warm-up.
    pub warmup: Option<(u64, f64)>,
    pub decay: ResolvedDecay,
}

/// [`DecayConfig`] in steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResolvedDecay {
    Constant,
    Step { milestones: Vec<u64>, gamma: f64 },
    Cosine { min_lr_ratio: f64 },
}

impl LrSchedule {
    /// Resolves `config` for a loader with `batches_per_epoch` batches.
    pub fn new(config: &ScheduleConfig, base_lr: f64, batches_per_epoch: usize) -> Self {
        let decay = match &config.decay {
            DecayConfig::Constant => ResolvedDecay::Constant,
            DecayConfig::Step { milestones, gamma } => {
                let mut m: Vec<u64> = milestones
                    .iter()
                    .map(|d| d.to_iterations(batches_per_epoch))
                    .collect();
                m.sort_unstable();
                ResolvedDecay::Step {
                    milestones: m,
                    gamma: *gamma,
                }
            }
            DecayConfig::Cosine { min_lr_ratio } => ResolvedDecay::Cosine {
                min_lr_ratio: *min_lr_ratio,
            },
        };
        Self {
            base_lr,
            total_steps: config.total.to_iterations(batches_per_epoch),
            warmup: config
                .warmup
                .as_ref()
                .filter(|w| w.iterations > 0)
                .map(|w| (w.iterations, w.ratio)),
            decay,
        }
    }

    /// The learning rate of the step with 0-based index `step` (the one about to run).
    pub fn lr_at(&self, step: u64) -> f64 {
        let regular = match &self.decay {
            ResolvedDecay::Constant => self.base_lr,
            ResolvedDecay::Step { milestones, gamma } => {
                // mmcv StepLrUpdaterHook: exponent = number of milestones already reached.
                let passed = milestones.iter().filter(|&&m| step >= m).count();
                self.base_lr * gamma.powi(passed as i32)
            }
            ResolvedDecay::Cosine { min_lr_ratio } => {
                let target = self.base_lr * min_lr_ratio;
                let progress = step as f64 / self.total_steps.max(1) as f64;
                // mmcv annealing_cos(start, end, factor).
                target
                    + 0.5
                        * (self.base_lr - target)
                        * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        match self.warmup {
            Some((iterations, ratio)) if step < iterations => {
                let k = (1.0 - step as f64 / iterations as f64) * (1.0 - ratio);
                regular * (1.0 - k)
            }
            _ => regular,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Duration, WarmupConfig};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn mmdet_1x_warmup_and_steps() {
        // 100 batches per epoch: milestones at steps 800 and 1100, total 1200.
        let s = LrSchedule::new(&ScheduleConfig::default(), 0.01, 100);
        assert_eq!(s.total_steps, 1200);
        // Step 0: lr * ratio (mmcv: k = 1 - ratio at iter 0).
        assert!(close(s.lr_at(0), 0.01 * 0.001));
        // Step 250: k = 0.5 * 0.999 -> 0.01 * 0.5005.
        assert!(close(s.lr_at(250), 0.01 * 0.5005));
        assert!(close(s.lr_at(500), 0.01));
        assert!(close(s.lr_at(799), 0.01));
        assert!(close(s.lr_at(800), 0.001));
        assert!(close(s.lr_at(1100), 0.0001));
    }

    #[test]
    fn cosine_ends_at_min_and_warmup_scales_it() {
        let config = ScheduleConfig {
            total: Duration::Iterations(100),
            warmup: Some(WarmupConfig {
                iterations: 10,
                ratio: 0.1,
            }),
            decay: DecayConfig::Cosine { min_lr_ratio: 0.0 },
        };
        let s = LrSchedule::new(&config, 1.0, 7);
        assert!(close(s.lr_at(50), 0.5));
        assert!(close(s.lr_at(100), 0.0));
        // Warm-up multiplies the cosine value (mmcv applies it to the regular lr).
        let regular = 0.5 * (1.0 + (std::f64::consts::PI * 0.05).cos());
        assert!(close(s.lr_at(5), regular * (1.0 - 0.5 * 0.9)));
        // Monotone non-increasing after warm-up.
        assert!((10..100).all(|i| s.lr_at(i + 1) <= s.lr_at(i)));
    }
}
