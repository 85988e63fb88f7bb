//! Integration tests of kdet-models (one test binary for the crate).

mod ops_sampling;
mod overfit;
mod weights;
