//! Knowledge distillation for kdet.
//!
//! - [`losses`]: the KD loss zoo (logit KD, FitNets, CWD, PKD, FGD, LD + VLR, FRS, PGD),
//!   one file per method, each citing `../shared/methods/kd-detection.md`;
//! - [`connector`]: student-side connectors (1×1 / 3×3 convs);
//! - [`recipe`]: recipe entries (loss, taps, connector, weight, schedule);
//! - [`distiller`]: the [`Distiller`] (student + distillation modules on the autodiff
//!   device, teacher on a plain device) and [`DistilledStudent`].

pub mod connector;
pub mod distiller;
pub mod error;
pub mod losses;
pub mod recipe;

pub use distiller::{DistilledStudent, Distiller};
pub use error::DistillError;
pub use recipe::{KdLossConfig, RecipeConfig, RecipeEntry, Tap};
