//! End-to-end tests of the `kdet` binary: one test binary for the CLI crate, a module per
//! command group. Tests that read `../shared` fail, never skip, when it is missing.

mod bench;
mod data;
mod demo;
mod distill;
mod eval;
mod export;
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

/// `../shared` beside the repository (or `$KDET_SHARED`); panics when missing.
pub fn shared() -> PathBuf {
    let dir = match std::env::var_os("KDET_SHARED") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    assert!(
        dir.join("data/coco_tiny_val2017").is_dir(),
        "shared data not found at {} (set KDET_SHARED)",
        dir.display()
    );
    dir
}
