//! Integration tests of kdet-models (one test binary for the crate).

mod deformable;
mod detr;
mod fit;
mod grads;
mod mask2former;
mod matching;
mod ops_sampling;
mod overfit;
mod set_criterion;
mod transformer;
mod weights;
