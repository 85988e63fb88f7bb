//! Integration tests of kdet-data (one test binary for the crate; see the modules).
//!
//! Tests that read `../shared/data` fail, never skip, when it is missing: it is always
//! present beside the checkout, in CI too. `KDET_SHARED` may point elsewhere.

mod bad_input;
mod common;
mod loader;
mod real_coco;
mod round_trip;
