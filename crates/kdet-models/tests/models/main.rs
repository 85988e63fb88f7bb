//! Integration tests of kdet-models (one test binary for the crate).

mod overfit;
mod weights;
