//! Integration tests of kdet-eval (one test binary; the parts live in `tests/eval/`).
//!
//! Tests that read the real samples vendored in `tests/data/` at the repository root fail
//! when they are missing rather than skip, so a green run always means they ran.

#![allow(clippy::unwrap_used)]

mod eval {
    pub mod coco_tiny;
    pub mod common;
    pub mod one_frame;
    pub mod ytvis_parity;
}
