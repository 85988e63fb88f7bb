//! End-to-end tests of the `kdet` binary: one test binary for the CLI crate, a module per
//! command group. Tests that read the real samples vendored in `tests/data/` fail, never skip,
//! when they are missing.

mod bench;
mod data;
mod demo;
mod distill;
mod eval;
mod export;
mod masks;
mod predict;
mod report;
mod train;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `kdet` binary built for this test run.
pub fn kdet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kdet"))
        .args(args)
        .output()
        .expect("the kdet binary runs")
}

/// `tests/data/` at the repository root (the vendored real samples); panics when missing.
pub fn test_data() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    assert!(
        dir.join("coco_tiny_val2017").is_dir(),
        "the vendored test data {} is missing: it is part of the repository (git checkout -- tests/data)",
        dir.display()
    );
    dir
}
