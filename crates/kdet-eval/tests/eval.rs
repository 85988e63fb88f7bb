//! Integration tests of kdet-eval (one test binary; the parts live in `tests/eval/`).
//!
//! Tests that read `../shared` (the repository's sibling data folder, or `$KDET_SHARED`) fail
//! when it is missing rather than skip, so a green run always means they ran.

#![allow(clippy::unwrap_used)]

mod eval {
    pub mod coco_tiny;
    pub mod common;
    pub mod one_frame;
    pub mod ytvis_parity;
}
