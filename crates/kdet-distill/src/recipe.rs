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
//! student = "neck"          # tap (default per method, see `KdLossConfig::default_tap`)
//! teacher = "neck"
//! levels = [0, 1, 2]        # default: every level both sides have
//! connector = "none"        # none | conv1x1 | conv3x3
//! schedule = { warmup_iterations = 0 }
//! ```
//!
//! Wiring is validated against the two detectors before the first step
//! ([`crate::Distiller::new`]); every error names the entry.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::connector::ConnectorKind;
use crate::losses::cwd::CwdConfig;
use crate::losses::fgd::FgdConfig;
use crate::losses::fitnet::FitnetConfig;
use crate::losses::frs::FrsConfig;
use crate::losses::kd::LogitKdConfig;
use crate::losses::ld::LdConfig;
use crate::losses::pgd::PgdConfig;
use crate::losses::pkd::PkdConfig;

/// A typed place in [`kdet_models::DetectorOutput`] a loss reads from (no hooks, no
/// string paths into modules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tap {
    /// Backbone stages handed to the neck (C3..C5), shallow to deep.
    Backbone,
    /// FPN outputs (P3..), before any activation (FGD hooks `fpn_convs.*.conv`).
    Neck,
    /// The classification tower after its first conv block (PGD).
    ClsTower,
    /// The regression tower after its first conv block (PGD).
    RegTower,
    /// Raw per-level class logits `[N, A*K, H, W]`.
    ClsLogits,
    /// Raw per-level box outputs (GFL: edge-distribution logits).
    BoxRegression,
}

impl Tap {
    pub fn name(self) -> &'static str {
        match self {
            Tap::Backbone => "backbone",
            Tap::Neck => "neck",
            Tap::ClsTower => "cls_tower",
            Tap::RegTower => "reg_tower",
            Tap::ClsLogits => "cls_logits",
            Tap::BoxRegression => "box_regression",
        }
    }
}

/// The KD losses of the zoo, each with its paper-default config.
///
/// In TOML a loss is a table with `type` and any of its config's fields; fields left out
/// keep the config's defaults (the paper's), unknown fields are errors naming the field
/// (see the `Deserialize` impl below).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KdLossConfig {
    /// Hinton logit KD on every prior's class logits (MMRazor `KLDivergence`).
    LogitKd(LogitKdConfig),
    /// FitNets feature imitation (MMRazor `L2Loss`).
    Fitnet(FitnetConfig),
    /// Channel-wise distillation (MMRazor `ChannelWiseDivergence`).
    Cwd(CwdConfig),
    /// Pearson-correlation feature imitation (MMRazor `PKDLoss`).
    Pkd(PkdConfig),
    /// Focal and global distillation (yzd-v/FGD).
    Fgd(FgdConfig),
    /// Localization distillation with VLR and class KD (HikariTJU/LD); GFL heads only.
    Ld(LdConfig),
    /// Feature-richness score distillation (duzhixing/FRS).
    Frs(FrsConfig),
    /// Prediction-guided distillation on the head towers (ChenhongyiYang/PGD).
    Pgd(PgdConfig),
}

/// Fills `user` keys over the serialised defaults; an unknown key is an error.
fn with_defaults<T: Serialize + DeserializeOwned>(
    method: &str,
    defaults: T,
    user: serde_json::Map<String, serde_json::Value>,
) -> Result<T, String> {
    let mut base = serde_json::to_value(defaults).map_err(|e| e.to_string())?;
    let fields = base
        .as_object_mut()
        .expect("loss configs serialise to tables");
    for (k, v) in user {
        if !fields.contains_key(&k) {
            let known: Vec<&str> = fields.keys().map(String::as_str).collect();
            return Err(format!(
                "`{k}` is not a setting of the {method} loss (its settings: {})",
                known.join(", ")
            ));
        }
        fields.insert(k, v);
    }
    serde_json::from_value(base).map_err(|e| format!("{method} loss: {e}"))
}

impl<'de> Deserialize<'de> for KdLossConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let serde_json::Value::Object(mut table) = value else {
            return Err(D::Error::custom(
                "a loss is a table such as { type = \"pkd\" } with the method's settings",
            ));
        };
        let method = match table.remove("type") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(D::Error::custom("a loss needs `type = \"<method>\"`")),
        };
        let config = match method.as_str() {
            "logit_kd" => with_defaults(&method, LogitKdConfig::new(), table).map(Self::LogitKd),
            "fitnet" => with_defaults(&method, FitnetConfig::new(), table).map(Self::Fitnet),
            "cwd" => with_defaults(&method, CwdConfig::new(), table).map(Self::Cwd),
            "pkd" => with_defaults(&method, PkdConfig::new(), table).map(Self::Pkd),
            "fgd" => with_defaults(&method, FgdConfig::new(), table).map(Self::Fgd),
            "ld" => with_defaults(&method, LdConfig::new(), table).map(Self::Ld),
            "frs" => with_defaults(&method, FrsConfig::new(), table).map(Self::Frs),
            "pgd" => with_defaults(&method, PgdConfig::new(), table).map(Self::Pgd),
            other => Err(format!(
                "unknown loss type `{other}` (known: {})",
                KdLossConfig::METHODS.join(", ")
            )),
        };
        config.map_err(D::Error::custom)
    }
}

/// How a loss uses taps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapUse {
    /// One feature tap on each side, chosen by the entry (default given); a connector may
    /// map the student's channels; strides must match (PKD resizes instead).
    Feature { default: Tap },
    /// Fixed head outputs; `student`/`teacher`/`connector` must not be set.
    Fixed(&'static [Tap]),
}

impl KdLossConfig {
    /// Every method's `type` name.
    pub const METHODS: [&'static str; 8] = [
        "logit_kd", "fitnet", "cwd", "pkd", "fgd", "ld", "frs", "pgd",
    ];

    /// The method's name, used as the log prefix (`kd.<name>.<term>`).
    pub fn method(&self) -> &'static str {
        match self {
            KdLossConfig::LogitKd(_) => "logit_kd",
            KdLossConfig::Fitnet(_) => "fitnet",
            KdLossConfig::Cwd(_) => "cwd",
            KdLossConfig::Pkd(_) => "pkd",
            KdLossConfig::Fgd(_) => "fgd",
            KdLossConfig::Ld(_) => "ld",
            KdLossConfig::Frs(_) => "frs",
            KdLossConfig::Pgd(_) => "pgd",
        }
    }

    /// Which taps the method reads.
    pub fn tap_use(&self) -> TapUse {
        match self {
            KdLossConfig::LogitKd(_) => TapUse::Fixed(&[Tap::ClsLogits]),
            KdLossConfig::Fitnet(_) | KdLossConfig::Pkd(_) | KdLossConfig::Fgd(_) => {
                TapUse::Feature { default: Tap::Neck }
            }
            // CWD is applied to FPN features or, in MMRazor's GFL config, to the class logits.
            KdLossConfig::Cwd(_) => TapUse::Feature { default: Tap::Neck },
            // FRS: an adapted FPN feature plus the class logits (mask and cls KD).
            KdLossConfig::Frs(_) => TapUse::Feature { default: Tap::Neck },
            KdLossConfig::Ld(_) => TapUse::Fixed(&[Tap::ClsLogits, Tap::BoxRegression]),
            KdLossConfig::Pgd(_) => TapUse::Fixed(&[Tap::ClsTower, Tap::RegTower]),
        }
    }
}

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
}

impl RecipeConfig {
    /// Checks what can be checked without the models: unique names, weights, schedules,
    /// tap fields only on feature methods.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.losses.iter().enumerate() {
            let name = e.name();
            let at = format!("distill.losses[{i}] ({name})");
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
}
