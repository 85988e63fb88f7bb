//! Paths to the shared data and the committed fixtures.

use std::path::PathBuf;

/// `../shared` beside the repository, or `$KDET_SHARED`; panics (fails the test) when absent.
pub fn shared() -> PathBuf {
    let dir = match std::env::var_os("KDET_SHARED") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    assert!(
        dir.join("data/coco_tiny_val2017").is_dir(),
        "shared data not found at {} (set KDET_SHARED to the folder holding data/coco_tiny_val2017)",
        dir.display()
    );
    dir
}

pub fn coco_tiny() -> PathBuf {
    shared().join("data/coco_tiny_val2017")
}

/// `tests/fixtures/eval/` at the repository root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval")
}
