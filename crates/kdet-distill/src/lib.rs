//! Knowledge distillation for kdet.
//!
//! - [`method`]: the KD-method contract ([`KdMethod`]): taps, wiring check, trainable
//!   modules and terms of one method;
//! - [`methods`]: the method list, one line per method, from which the recipe's loss enum
//!   ([`KdLossConfig`]), its parser and the dispatch are generated;
//! - [`losses`]: the KD loss zoo (logit KD, FitNets, CWD, PKD, FGD, LD + VLR, FRS, PGD,
//!   MGD, FBKD),
//!   one file per method implementing [`KdMethod`], each citing
//!   `../shared/methods/kd-detection.md`;
//! - [`taps`]: the typed places of a detector's output a method reads, and their shapes;
//! - [`connector`]: student-side connectors (1×1 / 3×3 convs);
//! - [`recipe`]: recipe entries (loss, taps, connector, weight, schedule);
//! - [`plan`]: checking a recipe against the two detectors (generic checks + each
//!   method's own);
//! - [`inherit`]: copying the teacher's neck and head into the student;
//! - [`distiller`]: the [`Distiller`] (student + distillation modules on the autodiff
//!   device, teacher on a plain device) and [`DistilledStudent`].

pub mod connector;
pub mod correction;
pub mod distiller;
pub mod error;
pub mod inherit;
pub mod losses;
pub mod method;
pub mod methods;
pub mod plan;
pub mod recipe;
pub mod taps;

pub use distiller::{DistilledStudent, Distiller, KdTimings};
pub use error::DistillError;
pub use method::{KdInputs, KdMethod, KdTerm, OwnOptimizer, TapUse, Wiring};
pub use methods::{KdLossConfig, KdModules};
pub use recipe::{RecipeConfig, RecipeEntry};
pub use taps::Tap;
