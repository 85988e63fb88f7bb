use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared` beside the checkout (or `$KDET_SHARED`); panics when missing.
pub fn shared_dir() -> PathBuf {
    let dir = std::env::var_os("KDET_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    assert!(
        dir.join("data").is_dir(),
        "the shared data folder {} is missing: it must sit beside the checkout (or set KDET_SHARED)",
        dir.display()
    );
    dir
}

pub fn coco_tiny() -> (PathBuf, PathBuf) {
    let root = shared_dir().join("data/coco_tiny_val2017");
    (
        root.join("annotations/instances_val2017.json"),
        root.join("val2017"),
    )
}
