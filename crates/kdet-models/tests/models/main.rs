//! Integration tests of kdet-models (one test binary for the crate).

mod matching;
mod overfit;
mod transformer;
mod weights;
