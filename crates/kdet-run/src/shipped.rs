//! What kdet ships inside its binary, so that an installed `kdet` works from any folder:
//! every `configs/**/*.toml` (build.rs embeds them; [`config`] finds one by name) and the
//! shipped teachers of the built-in data (`assets/teacher/`, the GFL teacher, see
//! [`teacher`]; `assets/mask-teacher/`, the Mask2Former-lite one, [`MASK_TEACHER`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

include!(concat!(env!("OUT_DIR"), "/shipped_configs.rs"));

/// The shipped config of that name under `configs/` (`gfl_synth_student.toml`,
/// `distill/ld_gfl_synth.toml`): its name and text.
pub fn config(name: &str) -> Option<(&'static str, &'static str)> {
    CONFIGS.iter().copied().find(|(n, _)| *n == name)
}

/// The names of the shipped configs, sorted.
pub fn config_names() -> impl Iterator<Item = &'static str> {
    CONFIGS.iter().map(|(n, _)| *n)
}

/// A teacher shipped with kdet: its folder under `assets/` and its checkpoint's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippedTeacher {
    /// The folder under `assets/` (checkpoint, `metrics.jsonl`, `config.toml`, README).
    pub dir: &'static str,
    pub checkpoint: &'static str,
    /// What it is, for messages.
    pub what: &'static str,
    /// How to train one instead, for messages.
    pub train_instead: &'static str,
    /// The files embedded in the binary (feature `shipped-teacher`): the checkpoint and,
    /// for the report, its training log and resolved experiment.
    embedded: Option<[(&'static str, &'static [u8]); 3]>,
}

/// The shipped teacher's checkpoint file name.
pub const TEACHER_CHECKPOINT: &str = "gfl_synth_teacher-seed0.ckpt";
/// The shipped mask teacher's checkpoint file name.
pub const MASK_TEACHER_CHECKPOINT: &str = "m2f_synth_teacher-seed0.ckpt";

/// The GFL teacher of the main synthetic pair (box AP 0.211 on the built-in val split).
pub const GFL_TEACHER: ShippedTeacher = ShippedTeacher {
    dir: "teacher",
    checkpoint: TEACHER_CHECKPOINT,
    what: "the shipped teacher",
    train_instead: "`kdet demo --train-teacher`, about 50 minutes on 2 cores",
    #[cfg(feature = "shipped-teacher")]
    embedded: Some([
        (
            TEACHER_CHECKPOINT,
            include_bytes!("../../../assets/teacher/gfl_synth_teacher-seed0.ckpt") as &[u8],
        ),
        (
            "metrics.jsonl",
            include_bytes!("../../../assets/teacher/metrics.jsonl") as &[u8],
        ),
        (
            "config.toml",
            include_bytes!("../../../assets/teacher/config.toml") as &[u8],
        ),
    ]),
    #[cfg(not(feature = "shipped-teacher"))]
    embedded: None,
};

/// The Mask2Former-lite teacher of the synthetic mask pair (`configs/m2f_synth_teacher.toml`;
/// numbers in `assets/mask-teacher/README.md`).
pub const MASK_TEACHER: ShippedTeacher = ShippedTeacher {
    dir: "mask-teacher",
    checkpoint: MASK_TEACHER_CHECKPOINT,
    what: "the shipped mask teacher",
    train_instead: "`kdet demo --task segm --train-teacher`, about 40 minutes on 2 cores",
    #[cfg(feature = "shipped-teacher")]
    embedded: Some([
        (
            MASK_TEACHER_CHECKPOINT,
            include_bytes!("../../../assets/mask-teacher/m2f_synth_teacher-seed0.ckpt") as &[u8],
        ),
        (
            "metrics.jsonl",
            include_bytes!("../../../assets/mask-teacher/metrics.jsonl") as &[u8],
        ),
        (
            "config.toml",
            include_bytes!("../../../assets/mask-teacher/config.toml") as &[u8],
        ),
    ]),
    #[cfg(not(feature = "shipped-teacher"))]
    embedded: None,
};

/// The shipped GFL teacher's checkpoint ([`GFL_TEACHER`], [`ShippedTeacher::find`]).
pub fn teacher(cache: &Path) -> Result<PathBuf> {
    GFL_TEACHER.find(cache)
}

impl ShippedTeacher {
    /// `assets/<dir>/` of the checkout this crate was built from (it may be gone).
    fn checkout_dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets")
            .join(self.dir)
    }

    /// The checkpoint, looked up in this order:
    /// 1. `assets/<dir>/` of the checkout kdet was built from, when it is still there;
    /// 2. the copy embedded in the binary (the default feature `shipped-teacher`), written
    ///    once to `cache/` (with its `metrics.jsonl` and `config.toml`, for the report);
    /// 3. otherwise an error naming both places and the ways to get one.
    pub fn find(&self, cache: &Path) -> Result<PathBuf> {
        let checkout = self.checkout_dir().join(self.checkpoint);
        if checkout.is_file() {
            return checkout
                .canonicalize()
                .with_context(|| format!("resolving {}", checkout.display()));
        }
        let Some(files) = self.embedded else {
            bail!(
                "{} is not in this build (built without the `shipped-teacher` feature) and {} is gone: copy assets/{}/{} from the kdet repository there, rebuild with the default features, or train one ({})",
                self.what,
                checkout.display(),
                self.dir,
                self.checkpoint,
                self.train_instead
            );
        };
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        for (name, bytes) in files {
            let path = cache.join(name);
            let same = std::fs::read(&path).is_ok_and(|b| b == bytes);
            if !same {
                kdet_data::image_io::write_atomic(&path, bytes)
                    .with_context(|| format!("writing {} to {}", self.what, path.display()))?;
            }
        }
        let path = cache.join(self.checkpoint);
        std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every file under `configs/` is shipped, with the same text.
    #[test]
    fn every_config_of_the_checkout_is_shipped() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    let name = path
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    assert_eq!(
                        config(&name).map(|(_, t)| t.to_string()),
                        Some(std::fs::read_to_string(&path).unwrap()),
                        "{name}"
                    );
                    on_disk.push(name);
                }
            }
        }
        assert_eq!(on_disk.len(), CONFIGS.len());
        assert!(config("distill/ld_gfl_synth.toml").is_some());
    }
}
