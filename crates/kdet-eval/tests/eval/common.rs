//! Paths to the vendored real samples and the committed fixtures.

use std::path::PathBuf;

/// `tests/data/` at the repository root (the vendored real samples); panics (fails the
/// test) when absent.
pub fn test_data() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    assert!(
        dir.join("coco_tiny_val2017").is_dir(),
        "the vendored test data {} is missing: it is part of the repository (git checkout -- tests/data)",
        dir.display()
    );
    dir
}

pub fn coco_tiny() -> PathBuf {
    test_data().join("coco_tiny_val2017")
}

/// `tests/fixtures/eval/` at the repository root.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval")
}
