use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real samples vendored in the repository, `tests/data/`; panics when missing.
pub fn test_data() -> PathBuf {
    let dir = repo_root().join("tests/data");
    assert!(
        dir.join("coco_tiny_val2017").is_dir(),
        "the vendored test data {} is missing: it is part of the repository (git checkout -- tests/data)",
        dir.display()
    );
    dir
}

pub fn coco_tiny() -> (PathBuf, PathBuf) {
    let root = test_data().join("coco_tiny_val2017");
    (
        root.join("annotations/instances_val2017.json"),
        root.join("val2017"),
    )
}
