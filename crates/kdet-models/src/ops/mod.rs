//! Operators the query, video and slot families build on (ARCHITECTURE.md: `ops/`):
//! sampling (`point_sample`, `roi_align`), attention blocks and positional encodings, and
//! matching. Each is written against a reference implementation (PyTorch, torchvision,
//! detectron2, scipy) and checked on committed fixtures.

pub mod deformable;
pub mod matching;
pub mod roi_align;
pub mod sample;
pub mod transformer;
