//! Errors raised by the structures when an invariant would be broken.

/// An invariant of a structure would be violated by the requested construction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StructuresError {
    /// A per-instance field has a different length from the number of boxes.
    #[error("Instances field `{field}` has {got} entries but there are {expected} boxes")]
    LengthMismatch {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    /// A mask's canvas differs from the image it belongs to.
    #[error("mask {index} is {got_h}x{got_w} but the image is {expected_h}x{expected_w}")]
    MaskSize {
        index: usize,
        expected_h: u32,
        expected_w: u32,
        got_h: u32,
        got_w: u32,
    },
    /// A value that must be finite is not (a NaN or infinite coordinate or score).
    #[error("non-finite value in `{field}` at index {index}")]
    NonFinite { field: &'static str, index: usize },
    /// An image batch was built from inconsistent parts.
    #[error("image batch: {0}")]
    Batch(String),
    /// hotcoco rejected a mask operation (e.g. an RLE whose runs overrun its size).
    #[error("mask codec: {0}")]
    Mask(#[from] hotcoco::error::Error),
}
