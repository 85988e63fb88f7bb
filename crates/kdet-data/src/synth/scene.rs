//! One still image: sample objects, resolve occlusion, paint.

use super::clutter::{FrontClutter, paint_back_clutter};
use super::render::{Appearance, Canvas, Finish, paint_background};
use super::shapes::{Raster, Shape, ShapeClass, ShapeForm, sample_sqrt_area};
use super::{Split, SynthConfig, SynthImage, SynthObject, rng_for};
use rand::Rng;
use std::f32::consts::PI;

/// Stream tag of the per-image RNG (video frames use others, see `video.rs`).
const IMAGE_STREAM: u64 = 0;

/// Visible part of each object given the z-order (`fulls[0]` at the back), or
/// `None` for an object that is too hidden to keep.
///
/// Walks from the front to the back: an object's visible pixels are its in-image
/// pixels not covered by `front` (clutter over everything) nor by any *kept* object
/// above it. Dropped objects are not painted, so they occlude nothing and no
/// unannotated fragment of a class is left in the image.
pub(crate) fn resolve_occlusion(
    fulls: &[Raster],
    front: &[u8],
    min_fraction: f32,
    min_pixels: usize,
) -> Vec<Option<Vec<u8>>> {
    let mut occupied = front.to_vec();
    let mut out = vec![None; fulls.len()];
    for (i, raster) in fulls.iter().enumerate().rev() {
        if let Some(visible) = visible_part(raster, &occupied, min_fraction, min_pixels) {
            for (o, &m) in occupied.iter_mut().zip(&raster.mask) {
                *o |= m;
            }
            out[i] = Some(visible);
        }
    }
    out
}

/// `raster` minus `occupied`, if it keeps at least `min_fraction` of the unclipped
/// area and `min_pixels` pixels.
pub(crate) fn visible_part(
    raster: &Raster,
    occupied: &[u8],
    min_fraction: f32,
    min_pixels: usize,
) -> Option<Vec<u8>> {
    let visible: Vec<u8> = raster
        .mask
        .iter()
        .zip(occupied)
        .map(|(&m, &o)| m & (1 - o.min(1)))
        .collect();
    let n = visible.iter().map(|&v| v as usize).sum::<usize>();
    let keep = n >= min_pixels && n as f32 >= min_fraction * raster.full_area as f32;
    keep.then_some(visible)
}

/// Random class, form, size, position and rotation of one object.
pub(crate) fn sample_shape<R: Rng>(rng: &mut R, cfg: &SynthConfig) -> (Shape, bool) {
    let class = ShapeClass::ALL[rng.random_range(0..ShapeClass::ALL.len())];
    let form = ShapeForm::sample(class, rng);
    let (sqrt_area, large) = sample_sqrt_area(rng, cfg.image_size, cfg.object_scale);
    let radius = form.radius_for(sqrt_area);
    let size = cfg.image_size as f32;
    // Up to 40% of the radius may stick out of the frame; large shapes stay central.
    let margin = (0.6 * radius).min(0.45 * size);
    let cx = rng.random_range(margin..=size - margin);
    let cy = rng.random_range(margin..=size - margin);
    let angle = rng.random_range(0.0..2.0 * PI);
    (form.place(cx, cy, radius, angle), large)
}

pub(crate) fn generate(cfg: &SynthConfig, split: Split, index: usize) -> SynthImage {
    let mut rng = rng_for(cfg.seed, split, index as u64, IMAGE_STREAM);
    let size = cfg.image_size;
    let mut canvas = Canvas::new(size, size);
    paint_background(&mut canvas, &mut rng);
    let clutter = rng.random_range(cfg.min_distractors..=cfg.max_distractors);
    paint_back_clutter(&mut canvas, &mut rng, clutter);
    let front = FrontClutter::sample(&mut rng, size, size);

    let n = rng.random_range(cfg.min_objects..=cfg.max_objects);
    let mut shapes: Vec<(Shape, bool)> = (0..n).map(|_| sample_shape(&mut rng, cfg)).collect();
    // Large objects go to the back (stable), so that they are seldom buried.
    shapes.sort_by_key(|&(_, large)| !large);
    let fulls: Vec<Raster> = shapes
        .iter()
        .map(|(s, _)| s.rasterize(size, size))
        .collect();
    let visible = resolve_occlusion(
        &fulls,
        &front.mask,
        cfg.min_visible_fraction,
        cfg.min_visible_pixels,
    );

    let mut objects = Vec::new();
    for (((shape, _), raster), vis) in shapes.iter().zip(&fulls).zip(visible) {
        let Some(mask) = vis else { continue };
        let look = Appearance::sample(&mut rng, &canvas, &raster.mask);
        look.paint(&mut canvas, shape, raster);
        objects.push(SynthObject {
            label: shape.class.label(),
            mask,
            track_id: None,
        });
    }
    front.paint(&mut canvas);
    let rgb = Finish::sample(&mut rng, cfg.max_noise_std).apply(&canvas, &mut rng);
    SynthImage { rgb, objects }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(mask: Vec<u8>, full_area: usize) -> Raster {
        Raster { mask, full_area }
    }

    #[test]
    fn occlusion_drops_hidden_objects_without_letting_them_occlude() {
        // Four pixels; object 0 at the back, 2 at the front.
        let back = raster(vec![1, 1, 1, 1], 4);
        let middle = raster(vec![1, 1, 1, 0], 3);
        let front_obj = raster(vec![1, 1, 0, 0], 2);
        let front = vec![0, 0, 0, 0];
        let vis = resolve_occlusion(&[back, middle, front_obj], &front, 0.5, 1);
        assert_eq!(vis[2], Some(vec![1, 1, 0, 0]));
        // Middle keeps 1 of 3 pixels (< 50%): dropped, so it hides nothing...
        assert_eq!(vis[1], None);
        // ...and the back object keeps the two pixels the front one leaves.
        assert_eq!(vis[0], Some(vec![0, 0, 1, 1]));
    }

    #[test]
    fn truncation_counts_against_visibility() {
        let clipped = raster(vec![1, 1, 0, 0], 10);
        assert_eq!(visible_part(&clipped, &[0; 4], 0.3, 1), None);
        assert!(visible_part(&clipped, &[0; 4], 0.2, 1).is_some());
        assert_eq!(visible_part(&clipped, &[0; 4], 0.1, 3), None);
        // Front clutter removes pixels from the visible mask.
        assert_eq!(
            visible_part(&clipped, &[1, 0, 0, 0], 0.0, 1),
            Some(vec![0, 1, 0, 0])
        );
    }
}
