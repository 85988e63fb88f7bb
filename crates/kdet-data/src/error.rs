//! Errors of the data crate. Every variant names the file and, where one exists, the
//! image / annotation / video id, so a user can find the bad record.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON or does not fit the schema (serde's message gives line and column).
    #[error("{path}: malformed JSON: {message}")]
    Json { path: PathBuf, message: String },
    /// A record breaks the format's rules (unknown id, wrong size, bad box...).
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: image file for image id {image_id} does not exist")]
    MissingImage { path: PathBuf, image_id: u64 },
    #[error("{path}: cannot decode image id {image_id}: {message}")]
    CorruptImage {
        path: PathBuf,
        image_id: u64,
        message: String,
    },
    #[error(
        "{path}: image id {image_id} is {got_w}x{got_h} pixels but the annotation file says {expected_w}x{expected_h}"
    )]
    ImageSize {
        path: PathBuf,
        image_id: u64,
        expected_w: u32,
        expected_h: u32,
        got_w: u32,
        got_h: u32,
    },
    #[error("{context}: {source}")]
    Structures {
        context: String,
        #[source]
        source: kdet_structures::StructuresError,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        DataError::Invalid {
            path: path.into(),
            what: what.into(),
        }
    }
}
