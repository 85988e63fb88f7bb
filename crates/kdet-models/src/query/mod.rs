//! The query family (DETR-lite, Mask2Former-lite; issue #16): learned queries decoded by a
//! transformer into a set of predictions, matched one-to-one to the ground truth
//! (`crate::ops::matching`). So far: the set criterion's terms ([`loss`]); the models, their
//! heads and post-processing come next.

pub mod loss;
