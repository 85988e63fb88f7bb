//! The query family (issue #16): learned queries decoded by a transformer into a set of
//! predictions, matched one-to-one to the ground truth (Hungarian matching,
//! `crate::ops::matching`) and trained with a set criterion at every decoder layer.
//!
//! - [`loss`]: the set criterion's terms shared by the family (class cross-entropy with a
//!   no-object weight, L1 + GIoU boxes, sigmoid cross-entropy + dice masks);
//! - [`detr`]: DETR-lite, the first member: a box detector (backbone → transformer encoder
//!   → decoder over learned queries → class and box heads), the base the data-efficient
//!   DETR family will extend. Its folder keeps DETR's split: model and forward (`head`),
//!   matcher and criterion (`loss`), post-processor (`inference`).
//!
//! - [`mask2former`]: Mask2Former-lite, the second member: an instance segmenter (backbone
//!   → deformable or FPN pixel decoder → masked-attention decoder cycling over three
//!   scales → class logits and masks from query embeddings dotted with per-pixel
//!   embeddings), with the point-sampled Hungarian matcher and criterion and the top-k
//!   instance inference, in the same split.

pub mod detr;
pub mod loss;
pub mod mask2former;

pub use detr::{Detr, DetrConfig, DetrCriterionConfig};
pub use mask2former::{Mask2Former, Mask2FormerConfig, Mask2FormerCriterionConfig};
