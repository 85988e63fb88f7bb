//! The files of a run directory besides checkpoints and the metrics log.
//!
//! ```text
//! run_dir/
//!   train_config.toml      the resolved TrainConfig
//!   experiment.json        the caller's experiment (Trainer::with_experiment)
//!   metrics.jsonl          crate::metrics
//!   last.ckpt, last.json   crate::checkpoint (+ step_NNNNNNNN.ckpt/.json copies)
//! ```

use std::path::{Path, PathBuf};

use crate::TrainError;
use crate::config::TrainConfig;

/// The resolved training config a run writes beside its checkpoints.
pub const CONFIG_FILE: &str = "train_config.toml";
/// The caller's experiment description, when given.
pub const EXPERIMENT_FILE: &str = "experiment.json";

/// Writes `train_config.toml` (and `experiment.json`) into `run_dir`, atomically.
pub fn write_run_files(
    run_dir: &Path,
    config: &TrainConfig,
    experiment: Option<&serde_json::Value>,
) -> Result<(), TrainError> {
    let io = |(p, e): (PathBuf, std::io::Error)| TrainError::io(p, e);
    let mut text =
        String::from("# The resolved training config of this run (written by kdet-train).\n");
    text.push_str(&config.to_toml_string()?);
    kdet_data::image_io::write_atomic_io(&run_dir.join(CONFIG_FILE), text.as_bytes())
        .map_err(io)?;
    if let Some(exp) = experiment {
        let mut json = serde_json::to_vec_pretty(exp)
            .map_err(|e| TrainError::config("<experiment>", e.to_string()))?;
        json.push(b'\n');
        kdet_data::image_io::write_atomic_io(&run_dir.join(EXPERIMENT_FILE), &json).map_err(io)?;
    }
    Ok(())
}

/// Reads the experiment a run was started with, from its `last.ckpt` (authoritative) —
/// what a CLI needs to rebuild the model before [`crate::Trainer::resume`].
pub fn read_experiment(run_dir: &Path) -> Result<Option<serde_json::Value>, TrainError> {
    let path = crate::checkpoint::last_checkpoint_path(run_dir);
    if !path.exists() {
        return Err(TrainError::NoCheckpoint {
            run_dir: run_dir.to_path_buf(),
            file: path,
        });
    }
    Ok(crate::Checkpoint::read(&path)?.meta.experiment)
}

/// Removes the `.NAME.PID.tmp` files an atomic write killed half-way leaves behind
/// (`kdet_data::image_io::write_atomic_io`'s naming). Best effort: a file that cannot be
/// removed is harmless.
pub(crate) fn remove_stale_temporaries(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
