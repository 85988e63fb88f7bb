//! Integration tests of kdet-data (one test binary for the crate; see the modules).
//!
//! Tests that read the real samples vendored in `tests/data/` (see its README) fail, never
//! skip, when they are missing.

mod bad_input;
mod common;
mod loader;
mod real_coco;
mod round_trip;
mod synth_hash;
