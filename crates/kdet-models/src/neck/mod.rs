//! Necks: turn backbone stages into the pyramid levels the heads run on.

pub mod fpn;

pub use fpn::{ExtraFrom, Fpn, FpnConfig};
