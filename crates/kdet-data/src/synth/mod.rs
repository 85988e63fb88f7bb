//! The built-in synthetic dataset: seeded shapes on cluttered backgrounds, written
//! as a real COCO dataset (or, in video mode, as YouTube-VIS).
//!
//! The data is designed so that capacity matters, which is what a distillation
//! toolkit needs to show a gap between a small student and a large teacher:
//! - eight classes in look-alike groups (circle / hexagon / pentagon, pentagon /
//!   star, circle / ring, circle / ellipse; see `shapes.rs` for details) that
//!   differ only at fine detail;
//! - mostly small objects (about 80% have COCO area < 32², many only 6–16 px
//!   across), some medium ones and a few large ones (rare at 128×128);
//! - colours drawn from one distribution for every class (colour is no cue);
//! - gradient, cloudy and textured backgrounds, unannotated clutter that is none of
//!   the classes (strokes, arcs, scribbles, speckles, small blobs, textured
//!   patches), illumination gradients and sensor noise;
//! - rotation, mild stretch, occlusion and truncation by the border.
//!
//! Masks are exact: an instance mask is the set of pixels painted for that object
//! and not covered later (by another object or by thin foreground clutter).
//! Instances that keep less than `min_visible_fraction` of their full area (or
//! fewer than `min_visible_pixels` pixels) are dropped *and not painted*, so no
//! unannotated fragment of a class is left behind in still images. In videos,
//! objects are physical and always painted; a track's frame is `None` where it is
//! below the same thresholds.
//!
//! Everything is a pure function of `(seed, split, index)`: each image (or video)
//! has its own ChaCha8 stream, so generation runs in parallel and the files are
//! byte-identical for the same configuration.
//!
//! Layout written by [`write_dataset`]:
//! ```text
//! OUT/train/annotations.json       COCO, RLE masks
//! OUT/train/images/000001.png ...  file_name "000001.png"
//! OUT/val/...
//! OUT/synth.json                   the SynthConfig used
//! ```
//! and in video mode:
//! ```text
//! OUT/train/instances.json                      YouTube-VIS
//! OUT/train/JPEGImages/vid0001/00000.png ...    file_names "vid0001/00000.png"
//! OUT/val/...
//! OUT/synth.json
//! ```

mod clutter;
mod render;
mod scene;
mod shapes;
mod video;
mod write;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use video::{SynthVideo, generate_video};

/// Category names in label order (label `i` has COCO category id `i + 1`).
pub const CLASS_NAMES: &[&str] = &[
    "circle", "ellipse", "triangle", "square", "pentagon", "hexagon", "star", "ring",
];

/// Generator settings; written to `OUT/synth.json` for provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthConfig {
    /// Master seed; every image derives its own stream from `(seed, split, index)`.
    pub seed: u64,
    /// Side of the square images in pixels. Object sizes scale with it (they are
    /// specified at 128).
    pub image_size: u32,
    /// Training images (videos in video mode).
    pub train_images: usize,
    /// Validation images (videos in video mode).
    pub val_images: usize,
    /// Objects placed per image (tracks per video), inclusive range; occlusion may
    /// drop some.
    pub min_objects: usize,
    pub max_objects: usize,
    /// Unannotated clutter pieces behind the objects, inclusive range.
    pub min_distractors: usize,
    pub max_distractors: usize,
    /// An instance is kept only if at least this fraction of its full (unclipped,
    /// unoccluded) area is visible...
    pub min_visible_fraction: f32,
    /// ...and at least this many pixels are.
    pub min_visible_pixels: usize,
    /// Upper bound of the per-image Gaussian noise standard deviation (0–255 scale);
    /// each image draws its own from `[1, max_noise_std]`.
    pub max_noise_std: f32,
    /// Multiplies every object's side (`sqrt(area)`) drawn from the size buckets, capped at
    /// the largest bucket's side (118/128 of the image). 1 (default): the COCO-like mix,
    /// mostly small objects, where detection decides AP; 2–3: objects large enough that
    /// mask quality, not only finding the object, decides mask AP (issue #16). In
    /// `[0.25, 4]`; the 5-pixel floor stays.
    pub object_scale: f32,
    /// Write YouTube-VIS videos instead of COCO images.
    pub video: bool,
    /// Frames per video (video mode).
    pub frames_per_video: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            image_size: 128,
            train_images: 1000,
            val_images: 250,
            min_objects: 3,
            max_objects: 12,
            min_distractors: 4,
            max_distractors: 12,
            min_visible_fraction: 0.3,
            min_visible_pixels: 6,
            max_noise_std: 8.0,
            object_scale: 1.0,
            video: false,
            frames_per_video: 12,
        }
    }
}

impl SynthConfig {
    /// Check the ranges; [`write_dataset`] calls it, [`generate_image`] assumes it.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad =
            |field: &'static str, reason: String| Err(SynthError::InvalidConfig { field, reason });
        if !(16..=4096).contains(&self.image_size) {
            return bad(
                "image_size",
                format!("{} is outside 16..=4096", self.image_size),
            );
        }
        if self.min_objects > self.max_objects || self.max_objects > 200 {
            return bad(
                "min_objects/max_objects",
                format!(
                    "need min <= max <= 200, got {}..={}",
                    self.min_objects, self.max_objects
                ),
            );
        }
        if self.min_distractors > self.max_distractors || self.max_distractors > 1000 {
            return bad(
                "min_distractors/max_distractors",
                format!(
                    "need min <= max <= 1000, got {}..={}",
                    self.min_distractors, self.max_distractors
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.min_visible_fraction) {
            return bad(
                "min_visible_fraction",
                format!("{} is outside [0, 1]", self.min_visible_fraction),
            );
        }
        if !(0.0..=255.0).contains(&self.max_noise_std) {
            return bad(
                "max_noise_std",
                format!("{} is outside [0, 255]", self.max_noise_std),
            );
        }
        if !(self.object_scale.is_finite() && (0.25..=4.0).contains(&self.object_scale)) {
            return bad(
                "object_scale",
                format!("{} is outside [0.25, 4]", self.object_scale),
            );
        }
        if self.video && !(1..=10_000).contains(&self.frames_per_video) {
            return bad(
                "frames_per_video",
                format!("{} is outside 1..=10000", self.frames_per_video),
            );
        }
        Ok(())
    }
}

/// Which half of the dataset; part of every image's seed, so the splits are disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Val => 2,
        }
    }
}

/// One generated image with its visible instances.
#[derive(Debug, Clone)]
pub struct SynthImage {
    pub rgb: image::RgbImage,
    /// Back to front; masks are pairwise disjoint.
    pub objects: Vec<SynthObject>,
}

/// One visible instance.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthObject {
    /// 0-based label into [`CLASS_NAMES`].
    pub label: usize,
    /// Column-major `h * w` mask of 0/1 (pixel `(x, y)` at `y + h * x`, hotcoco's
    /// layout): exactly the pixels painted for the object and not covered later.
    pub mask: Vec<u8>,
    /// Video mode: the track's index within its video (0-based, stable over
    /// frames). `None` for still images.
    pub track_id: Option<u64>,
}

/// What [`write_dataset`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// `(split, images or videos, instances or tracks)`.
    pub splits: Vec<(String, usize, usize)>,
}

/// Errors of [`write_dataset`]; every I/O message names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    #[error("invalid synthetic dataset config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode image {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("cannot serialize {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Generate image `index` of `split`: a pure function of `(cfg, split, index)`.
///
/// # Panics
/// If `cfg` fails [`SynthConfig::validate`].
pub fn generate_image(cfg: &SynthConfig, split: Split, index: usize) -> SynthImage {
    assert!(
        cfg.validate().is_ok(),
        "generate_image needs a valid SynthConfig: {cfg:?}"
    );
    scene::generate(cfg, split, index)
}

/// Write the train and val splits (COCO images, or YouTube-VIS videos when
/// `cfg.video`) and `synth.json` under `out`.
pub fn write_dataset(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary, SynthError> {
    cfg.validate()?;
    write::create_dir(out)?;
    let mut splits = Vec::new();
    for (split, n) in [
        (Split::Train, cfg.train_images),
        (Split::Val, cfg.val_images),
    ] {
        let dir = out.join(split.name());
        let (items, instances) = if cfg.video {
            video::write_split(&dir, cfg, split, n)?
        } else {
            write::write_coco_split(&dir, cfg, split, n)?
        };
        splits.push((split.name().to_string(), items, instances));
    }
    let path = out.join("synth.json");
    let json = serde_json::to_vec_pretty(cfg).map_err(|source| SynthError::Json {
        path: path.clone(),
        source,
    })?;
    write::write_atomic(&path, &json)?;
    Ok(SynthSummary { splits })
}

/// The ChaCha8 stream of one item: the 256-bit key spells out every coordinate, so
/// distinct `(seed, split, index, stream)` never share a stream.
fn rng_for(seed: u64, split: Split, index: u64, stream: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&split.tag().to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(&stream.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests;
