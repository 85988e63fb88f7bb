//! Integration tests of kdet-models (one test binary for the crate).

mod matching;
mod ops_sampling;
mod overfit;
mod transformer;
mod weights;
