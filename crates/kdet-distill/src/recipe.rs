//! Recipes: what to distil, from where to where, how strongly and when.
//!
//! A recipe is a list of entries; each entry is (loss config, student tap, teacher tap,
//! connector, weight, schedule). In an experiment file:
//!
//! ```toml
//! [distill]
//! teacher = "runs/gfl_synth_teacher-seed0/last.ckpt"
//! inherit = false
//!
//! [[distill.losses]]
//! loss = { type = "pkd" }
//! weight = 6.0
//! student = "neck"          # tap (default per method, see `KdMethod::tap_use`)
//! teacher = "neck"
//! levels = [0, 1, 2]        # default: every level both sides have
//! connector = "none"        # none | conv1x1 | conv3x3
//! schedule = { warmup_iterations = 0 }
//! ```
//!
//! Wiring is validated against the two detectors before the first step
//! ([`crate::Distiller::new`]); every error names the entry.

use serde::{Deserialize, Serialize};

use crate::connector::ConnectorKind;
use crate::method::TapUse;
pub use crate::methods::KdLossConfig;
pub use crate::taps::Tap;

/// When an entry is active and how its weight ramps up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySchedule {
    /// Linear warm-up of the weight over this many steps from `start_at`: factor
    /// `(step - start_at) / warmup_iterations`, capped at 1 (FRS: 500, `iter /
    /// distill_warm_step`). 0 = full weight at once.
    #[serde(default)]
    pub warmup_iterations: u64,
    /// First step (0-based) at which the entry is computed.
    #[serde(default)]
    pub start_at: u64,
    /// The entry is not computed from this step on (e.g. RTMDet's distillation switched
    /// off for the last epochs).
    #[serde(default)]
    pub stop_at: Option<u64>,
}

impl EntrySchedule {
    /// The weight factor at `step`; 0 means the entry is skipped.
    pub fn factor(&self, step: u64) -> f32 {
        if step < self.start_at || self.stop_at.is_some_and(|s| step >= s) {
            return 0.0;
        }
        if self.warmup_iterations == 0 {
            return 1.0;
        }
        ((step - self.start_at) as f32 / self.warmup_iterations as f32).min(1.0)
    }
}

/// One recipe entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeEntry {
    /// Log name of the entry [default: the method's name]; must be unique in the recipe.
    #[serde(default)]
    pub name: Option<String>,
    /// The loss and its method-specific settings.
    pub loss: KdLossConfig,
    /// Multiplies every term of the entry.
    #[serde(default = "one")]
    pub weight: f32,
    /// Student tap (feature methods only) [default: the method's].
    #[serde(default)]
    pub student: Option<Tap>,
    /// Teacher tap (feature methods only) [default: the student tap].
    #[serde(default)]
    pub teacher: Option<Tap>,
    /// Level indices into both taps [default: every level both sides have].
    #[serde(default)]
    pub levels: Option<Vec<usize>>,
    /// Connector on each student level (feature methods only).
    #[serde(default)]
    pub connector: ConnectorKind,
    #[serde(default)]
    pub schedule: EntrySchedule,
}

fn one() -> f32 {
    1.0
}

impl RecipeEntry {
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.loss.method().to_string())
    }
}

/// The `[distill]` section of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeConfig {
    /// FGD/PGD's inheriting strategy (`init_student=True`): copy the teacher's neck and
    /// head weights into the student at initialisation. Requires identical neck and head
    /// architectures (checked).
    #[serde(default)]
    pub inherit: bool,
    /// The entries; an empty list trains the student alone (the baseline).
    #[serde(default)]
    pub losses: Vec<RecipeEntry>,
    /// Noisy-box self-correction (NDet): the student's task loss uses each ground-truth
    /// box fused with the teacher's overlapping predictions ([`crate::correction`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_correction: Option<crate::correction::BoxCorrectionConfig>,
}

impl RecipeConfig {
    /// Whether the recipe runs without a teacher: it has entries, every one of a
    /// teacher-free method (LGD), and neither `inherit` nor `box_correction` (both read a
    /// teacher).
    pub fn teacher_free(&self) -> bool {
        !self.losses.is_empty()
            && self.losses.iter().all(|e| e.loss.teacher_free())
            && !self.inherit
            && self.box_correction.is_none()
    }

    /// Checks what can be checked without the models: unique names, weights, schedules,
    /// tap fields only on feature methods.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.box_correction {
            c.validate()?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.losses.iter().enumerate() {
            let name = e.name();
            let at = format!("distill.losses[{i}] ({name})");
            // Logged as `kd.<name>.<term>` (kdet_models::LossKey), which must read back.
            if name.is_empty() || name.contains('.') {
                return Err(format!(
                    "{at}: `name` must be non-empty and hold no `.` (it names the entry's logged terms, kd.<name>.<term>)"
                ));
            }
            if !names.insert(name.clone()) {
                return Err(format!(
                    "{at}: another entry has the same name; set `name` to tell them apart"
                ));
            }
            if !e.weight.is_finite() || e.weight < 0.0 {
                return Err(format!(
                    "{at}: weight must be finite and >= 0, got {}",
                    e.weight
                ));
            }
            if let Some(stop) = e.schedule.stop_at
                && stop <= e.schedule.start_at
            {
                return Err(format!(
                    "{at}: schedule.stop_at ({stop}) must be after schedule.start_at ({})",
                    e.schedule.start_at
                ));
            }
            if let TapUse::Fixed(taps) = e.loss.tap_use()
                && (e.student.is_some()
                    || e.teacher.is_some()
                    || e.connector != ConnectorKind::None)
            {
                let names: Vec<&str> = taps.iter().map(|t| t.name()).collect();
                return Err(format!(
                    "{at}: {} reads fixed taps ({}); remove `student`, `teacher` and `connector`",
                    e.loss.method(),
                    names.join(", ")
                ));
            }
            if e.loss.tap_use() == TapUse::Queries
                && (e.student.is_some()
                    || e.teacher.is_some()
                    || e.levels.is_some()
                    || e.connector != ConnectorKind::None)
            {
                return Err(format!(
                    "{at}: {} matches the models' queries; remove `student`, `teacher`, `levels` and `connector`",
                    e.loss.method()
                ));
            }
            if let Some(levels) = &e.levels
                && levels.is_empty()
            {
                return Err(format!("{at}: `levels` is empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_factor_warms_up_and_stops() {
        let s = EntrySchedule {
            warmup_iterations: 4,
            start_at: 2,
            stop_at: Some(10),
        };
        let f: Vec<f32> = (0..12).map(|i| s.factor(i)).collect();
        assert_eq!(
            f,
            [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(EntrySchedule::default().factor(0), 1.0);
    }

    #[test]
    fn entry_names_must_read_back_from_their_log_keys() {
        let with_name = |name: &str| -> RecipeConfig {
            toml::from_str(&format!(
                "[[losses]]\nname = \"{name}\"\nloss = {{ type = \"pkd\" }}\n"
            ))
            .expect("the recipe parses")
        };
        assert!(with_name("pkd_p3").validate().is_ok());
        for bad in ["pkd.p3", ""] {
            let e = with_name(bad).validate().expect_err(bad);
            assert!(e.contains("hold no `.`"), "{e}");
        }
    }
}
