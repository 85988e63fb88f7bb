//! Video mode: moving, rotating, scaling shapes that enter and leave the frame and
//! occlude each other, written as YouTube-VIS.
//!
//! The background and the clutter are static within a video (a fixed camera);
//! sensor noise is drawn afresh for every frame. Objects are always painted (they
//! are physical); a track's frame is annotated only where the same visibility rule
//! as for still images holds, `None` otherwise.

use super::clutter::{FrontClutter, paint_back_clutter};
use super::render::{Appearance, Canvas, Finish, paint_background};
use super::scene::visible_part;
use super::shapes::{Raster, Shape, ShapeClass, ShapeForm, sample_sqrt_area};
use super::write::{categories, compressed, create_dir, encode_mask, write_json, write_png};
use super::{Split, SynthConfig, SynthError, SynthImage, SynthObject, rng_for};
use hotcoco::types::Rle;
use kdet_structures::ytvis::{YtvisAnnotation, YtvisDataset, YtvisVideo};
use rand::Rng;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::f32::consts::PI;
use std::path::Path;

/// Stream of the per-video draws; frame `f` uses stream `FRAME_STREAM + f`.
const VIDEO_STREAM: u64 = 1;
const FRAME_STREAM: u64 = 2;

/// One generated video.
#[derive(Debug, Clone)]
pub struct SynthVideo {
    /// Folder name under `JPEGImages`, e.g. `vid0001`.
    pub name: String,
    /// Frames in order; each object's `track_id` is its track's index in the video.
    pub frames: Vec<SynthImage>,
}

/// A track's motion: straight path from `start` to `end`, constant spin and
/// exponential growth.
#[derive(Debug, Clone, Copy)]
struct Track {
    form: ShapeForm,
    sqrt_area: f32,
    /// Relative size change per frame.
    growth: f32,
    start: (f32, f32),
    end: (f32, f32),
    angle: f32,
    /// Radians per frame.
    spin: f32,
    large: bool,
}

impl Track {
    fn sample<R: Rng>(rng: &mut R, cfg: &SynthConfig) -> Self {
        let class = ShapeClass::ALL[rng.random_range(0..ShapeClass::ALL.len())];
        let form = ShapeForm::sample(class, rng);
        let (sqrt_area, large) = sample_sqrt_area(rng, cfg.image_size, cfg.object_scale);
        let r = form.radius_for(sqrt_area);
        let size = cfg.image_size as f32;
        let margin = (0.6 * r).min(0.45 * size);
        let inside = |rng: &mut R| {
            (
                rng.random_range(margin..=size - margin),
                rng.random_range(margin..=size - margin),
            )
        };
        // A point beyond side `side` (0 left, 1 right, 2 top, 3 bottom), fully out.
        let outside = |rng: &mut R, side: u32| {
            let along = rng.random_range(0.0..size);
            let off = r + rng.random_range(1.0..=0.15 * size);
            match side {
                0 => (-off, along),
                1 => (size + off, along),
                2 => (along, -off),
                _ => (along, size + off),
            }
        };
        let kind = if large { 0 } else { rng.random_range(0..20) };
        let (start, end) = match kind {
            // Stays in view, drifting.
            0..7 => {
                let a = inside(rng);
                let reach = 0.35 * size;
                let b = (
                    (a.0 + rng.random_range(-reach..=reach)).clamp(margin, size - margin),
                    (a.1 + rng.random_range(-reach..=reach)).clamp(margin, size - margin),
                );
                (a, b)
            }
            // Enters.
            7..12 => {
                let side = rng.random_range(0..4);
                (outside(rng, side), inside(rng))
            }
            // Leaves.
            12..17 => {
                let side = rng.random_range(0..4);
                (inside(rng), outside(rng, side))
            }
            // Crosses the frame.
            _ => {
                let side = rng.random_range(0..4);
                (outside(rng, side), outside(rng, side ^ 1))
            }
        };
        Track {
            form,
            sqrt_area,
            growth: rng.random_range(-0.03..=0.03),
            start,
            end,
            angle: rng.random_range(0.0..2.0 * PI),
            spin: rng.random_range(-0.3..=0.3),
            large,
        }
    }

    fn shape_at(&self, frame: usize, frames: usize) -> Shape {
        let t = if frames > 1 {
            frame as f32 / (frames - 1) as f32
        } else {
            0.0
        };
        let cx = self.start.0 + (self.end.0 - self.start.0) * t;
        let cy = self.start.1 + (self.end.1 - self.start.1) * t;
        let s = self.sqrt_area * (1.0 + self.growth).powi(frame as i32);
        self.form.place(
            cx,
            cy,
            self.form.radius_for(s.max(4.0)),
            self.angle + self.spin * frame as f32,
        )
    }
}

/// Generate video `index` of `split`: a pure function of `(cfg, split, index)`.
///
/// # Panics
/// If `cfg` fails [`SynthConfig::validate`].
pub fn generate_video(cfg: &SynthConfig, split: Split, index: usize) -> SynthVideo {
    assert!(
        cfg.validate().is_ok(),
        "generate_video needs a valid SynthConfig: {cfg:?}"
    );
    let mut rng = rng_for(cfg.seed, split, index as u64, VIDEO_STREAM);
    let size = cfg.image_size;
    let num_frames = cfg.frames_per_video.max(1);
    let mut base = Canvas::new(size, size);
    paint_background(&mut base, &mut rng);
    let clutter = rng.random_range(cfg.min_distractors..=cfg.max_distractors);
    paint_back_clutter(&mut base, &mut rng, clutter);
    let front = FrontClutter::sample(&mut rng, size, size);
    let n = rng.random_range(cfg.min_objects..=cfg.max_objects);
    let mut tracks: Vec<Track> = (0..n).map(|_| Track::sample(&mut rng, cfg)).collect();
    // Large objects at the back; the z-order is fixed for the whole video.
    tracks.sort_by_key(|t| !t.large);
    let looks: Vec<Appearance> = tracks
        .iter()
        .map(|t| {
            let mid = t.shape_at(num_frames / 2, num_frames).rasterize(size, size);
            Appearance::sample(&mut rng, &base, &mid.mask)
        })
        .collect();
    let finish = Finish::sample(&mut rng, cfg.max_noise_std);

    let frames = (0..num_frames)
        .map(|f| {
            let shapes: Vec<Shape> = tracks.iter().map(|t| t.shape_at(f, num_frames)).collect();
            let fulls: Vec<Raster> = shapes.iter().map(|s| s.rasterize(size, size)).collect();
            let mut canvas = base.clone();
            for ((shape, raster), look) in shapes.iter().zip(&fulls).zip(&looks) {
                look.paint(&mut canvas, shape, raster);
            }
            front.paint(&mut canvas);
            // Every track is painted, so every track occludes the ones below it.
            let mut occupied = front.mask.clone();
            let mut objects = Vec::new();
            for (k, raster) in fulls.iter().enumerate().rev() {
                if let Some(mask) = visible_part(
                    raster,
                    &occupied,
                    cfg.min_visible_fraction,
                    cfg.min_visible_pixels,
                ) {
                    objects.push(SynthObject {
                        label: tracks[k].form.class.label(),
                        mask,
                        track_id: Some(k as u64),
                    });
                }
                for (o, &m) in occupied.iter_mut().zip(&raster.mask) {
                    *o |= m;
                }
            }
            objects.reverse();
            let mut frame_rng = rng_for(cfg.seed, split, index as u64, FRAME_STREAM + f as u64);
            SynthImage {
                rgb: finish.apply(&canvas, &mut frame_rng),
                objects,
            }
        })
        .collect();
    SynthVideo {
        name: video_name(index),
        frames,
    }
}

/// `vid0001` for index 0.
pub(crate) fn video_name(index: usize) -> String {
    format!("vid{:04}", index + 1)
}

/// `00000.png` for frame 0.
pub(crate) fn frame_name(frame: usize) -> String {
    format!("{frame:05}.png")
}

/// Per-track `(label, per-frame RLE)` of one video, ordered by track index.
type VideoTracks = Vec<(usize, Vec<Option<Rle>>)>;

/// Generate and write `n` videos of `split` into `dir` (`JPEGImages/` and
/// `instances.json`); returns `(videos, tracks)`.
pub(crate) fn write_split(
    dir: &Path,
    cfg: &SynthConfig,
    split: Split,
    n: usize,
) -> Result<(usize, usize), SynthError> {
    let frames_root = dir.join("JPEGImages");
    create_dir(&frames_root)?;
    let size = cfg.image_size;
    let frames = cfg.frames_per_video;
    let per_video: Vec<VideoTracks> = (0..n)
        .into_par_iter()
        .map(|i| {
            let video = generate_video(cfg, split, i);
            let video_dir = frames_root.join(&video.name);
            create_dir(&video_dir)?;
            let mut tracks: BTreeMap<u64, (usize, Vec<Option<Rle>>)> = BTreeMap::new();
            for (f, frame) in video.frames.iter().enumerate() {
                write_png(&video_dir.join(frame_name(f)), &frame.rgb)?;
                for o in &frame.objects {
                    let id = o.track_id.expect("video objects carry their track index");
                    let entry = tracks
                        .entry(id)
                        .or_insert_with(|| (o.label, vec![None; frames]));
                    entry.1[f] = Some(encode_mask(&o.mask, size, size));
                }
            }
            Ok(tracks.into_values().collect())
        })
        .collect::<Result<_, SynthError>>()?;

    let mut dataset = YtvisDataset {
        info: Some(serde_json::json!({
            "description": format!("kdet synthetic shapes (videos), split {}, seed {}", split.name(), cfg.seed),
            "version": env!("CARGO_PKG_VERSION"),
            "contributor": "kdet-data synth generator",
        })),
        categories: categories(),
        ..Default::default()
    };
    for (i, tracks) in per_video.into_iter().enumerate() {
        let video_id = i as u64 + 1;
        let name = video_name(i);
        dataset.videos.push(YtvisVideo {
            id: video_id,
            width: size,
            height: size,
            length: frames,
            file_names: (0..frames)
                .map(|f| format!("{name}/{}", frame_name(f)))
                .collect(),
        });
        for (label, rles) in tracks {
            dataset.annotations.push(YtvisAnnotation {
                id: dataset.annotations.len() as u64 + 1,
                video_id,
                category_id: label as u64 + 1,
                segmentations: rles.iter().map(|r| r.as_ref().map(compressed)).collect(),
                bboxes: rles
                    .iter()
                    .map(|r| r.as_ref().map(hotcoco::mask::to_bbox))
                    .collect(),
                areas: rles
                    .iter()
                    .map(|r| r.as_ref().map(|r| hotcoco::mask::area(r) as f64))
                    .collect(),
                iscrowd: false,
                width: Some(size),
                height: Some(size),
                length: Some(frames),
            });
        }
    }
    write_json(&dir.join("instances.json"), &dataset)?;
    Ok((n, dataset.annotations.len()))
}
