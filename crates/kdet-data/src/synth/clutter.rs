//! Unannotated clutter: primitives that are none of the classes (strokes, open arcs,
//! scribbles, speckles, small irregular blobs, soft textured patches). Some of it is
//! small enough to be mistaken for a tiny object, which is the point.

use super::render::{Canvas, random_colour};
use rand::Rng;
use std::f32::consts::PI;

/// Pixels (row-major indices) within `thickness / 2` of a polyline.
fn stroke(width: u32, height: u32, points: &[(f32, f32)], thickness: f32) -> Vec<usize> {
    let mut hit = vec![false; (width * height) as usize];
    let half = thickness / 2.0;
    for seg in points.windows(2) {
        let ((ax, ay), (bx, by)) = (seg[0], seg[1]);
        let x0 = (ax.min(bx) - half).floor().max(0.0) as u32;
        let x1 = ((ax.max(bx) + half).ceil().max(0.0) as u32).min(width.saturating_sub(1));
        let y0 = (ay.min(by) - half).floor().max(0.0) as u32;
        let y1 = ((ay.max(by) + half).ceil().max(0.0) as u32).min(height.saturating_sub(1));
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-6);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0);
                let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
                if qx * qx + qy * qy <= half * half {
                    hit[(y * width + x) as usize] = true;
                }
            }
        }
    }
    hit.iter()
        .enumerate()
        .filter_map(|(i, &b)| b.then_some(i))
        .collect()
}

/// Pixels of a disc-like blob whose radius wobbles with the angle; `wobble = 0`
/// gives a disc.
fn blob(width: u32, height: u32, cx: f32, cy: f32, r: f32, wobble: [f32; 4]) -> Vec<usize> {
    let mut out = Vec::new();
    let reach = r * (1.0 + wobble[0].abs() + wobble[2].abs()) + 1.0;
    let x0 = (cx - reach).floor().max(0.0) as u32;
    let y0 = (cy - reach).floor().max(0.0) as u32;
    let x1 = ((cx + reach).ceil().max(0.0) as u32).min(width.saturating_sub(1));
    let y1 = ((cy + reach).ceil().max(0.0) as u32).min(height.saturating_sub(1));
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let a = dy.atan2(dx);
            let rr = r
                * (1.0
                    + wobble[0] * (2.0 * a + wobble[1]).sin()
                    + wobble[2] * (3.0 * a + wobble[3]).sin());
            if dx * dx + dy * dy <= rr * rr {
                out.push((y * width + x) as usize);
            }
        }
    }
    out
}

fn random_point<R: Rng>(rng: &mut R, w: u32, h: u32) -> (f32, f32) {
    (
        rng.random_range(0.0..w as f32),
        rng.random_range(0.0..h as f32),
    )
}

/// Random walk polyline of `n` points.
fn scribble<R: Rng>(rng: &mut R, w: u32, h: u32, n: usize) -> Vec<(f32, f32)> {
    let mut p = random_point(rng, w, h);
    let mut heading: f32 = rng.random_range(0.0..2.0 * PI);
    let mut pts = vec![p];
    for _ in 1..n {
        heading += rng.random_range(-1.2..1.2);
        let step = rng.random_range(3.0..10.0);
        p = (p.0 + step * heading.cos(), p.1 + step * heading.sin());
        pts.push(p);
    }
    pts
}

/// One piece of thin clutter: pixels (row-major) of a line, scribble or speckles.
fn thin_clutter<R: Rng>(rng: &mut R, w: u32, h: u32) -> Vec<usize> {
    match rng.random_range(0..3) {
        0 => {
            let a = random_point(rng, w, h);
            let len = rng.random_range(8.0..60.0);
            let t: f32 = rng.random_range(0.0..2.0 * PI);
            let b = (a.0 + len * t.cos(), a.1 + len * t.sin());
            stroke(w, h, &[a, b], rng.random_range(0.8..1.6))
        }
        1 => {
            let n = rng.random_range(3..=7);
            let pts = scribble(rng, w, h, n);
            stroke(w, h, &pts, rng.random_range(0.8..1.4))
        }
        _ => speckles(rng, w, h),
    }
}

fn speckles<R: Rng>(rng: &mut R, w: u32, h: u32) -> Vec<usize> {
    let (cx, cy) = random_point(rng, w, h);
    let spread = rng.random_range(3.0..12.0);
    let mut out = Vec::new();
    for _ in 0..rng.random_range(4..=15) {
        let (x, y) = (
            cx + rng.random_range(-spread..spread),
            cy + rng.random_range(-spread..spread),
        );
        out.extend(blob(w, h, x, y, rng.random_range(0.5..1.3), [0.0; 4]));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Unannotated clutter behind the objects: strokes, arcs, scribbles, speckles,
/// small irregular blobs and soft textured patches.
pub(crate) fn paint_back_clutter<R: Rng>(canvas: &mut Canvas, rng: &mut R, count: usize) {
    let (w, h) = (canvas.width, canvas.height);
    for _ in 0..count {
        let colour = random_colour(rng);
        let alpha = rng.random_range(0.55..=1.0);
        let pixels = match rng.random_range(0..6) {
            0 | 1 => thin_clutter(rng, w, h),
            2 => {
                // An open arc: at most 240° so that it never closes into a ring.
                let (cx, cy) = random_point(rng, w, h);
                let r = rng.random_range(4.0..30.0);
                let start: f32 = rng.random_range(0.0..2.0 * PI);
                let span = rng.random_range(PI / 3.0..4.0 * PI / 3.0);
                let pts: Vec<(f32, f32)> = (0..=16)
                    .map(|i| {
                        let a = start + span * i as f32 / 16.0;
                        (cx + r * a.cos(), cy + r * a.sin())
                    })
                    .collect();
                stroke(w, h, &pts, rng.random_range(0.8..2.2))
            }
            3 => {
                let (cx, cy) = random_point(rng, w, h);
                let wobble = [
                    rng.random_range(0.2..0.4),
                    rng.random_range(0.0..2.0 * PI),
                    rng.random_range(0.15..0.35),
                    rng.random_range(0.0..2.0 * PI),
                ];
                blob(w, h, cx, cy, rng.random_range(1.5..4.5), wobble)
            }
            4 => {
                let a = random_point(rng, w, h);
                let len = rng.random_range(10.0..70.0);
                let t: f32 = rng.random_range(0.0..2.0 * PI);
                let b = (a.0 + len * t.cos(), a.1 + len * t.sin());
                stroke(w, h, &[a, b], rng.random_range(1.0..2.5))
            }
            _ => {
                soft_patch(canvas, rng, colour);
                Vec::new()
            }
        };
        for i in pixels {
            let (x, y) = (i as u32 % w, i as u32 / w);
            canvas.blend(x, y, colour, alpha);
        }
    }
}

/// A textured patch with a Gaussian falloff: texture without a shape outline.
fn soft_patch<R: Rng>(canvas: &mut Canvas, rng: &mut R, colour: [f32; 3]) {
    let (w, h) = (canvas.width, canvas.height);
    let (cx, cy) = random_point(rng, w, h);
    let sigma = rng.random_range(4.0..16.0);
    let squeeze = rng.random_range(1.0..2.5);
    let theta: f32 = rng.random_range(0.0..PI);
    let period = rng.random_range(2.0..6.0);
    let strength = rng.random_range(0.4..0.8);
    let reach = 3.0 * sigma;
    let x0 = (cx - reach).max(0.0) as u32;
    let y0 = (cy - reach).max(0.0) as u32;
    let x1 = ((cx + reach) as u32).min(w - 1);
    let y1 = ((cy + reach) as u32).min(h - 1);
    let (cos, sin) = (theta.cos(), theta.sin());
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let (u, v) = (dx * cos + dy * sin, (-dx * sin + dy * cos) * squeeze);
            let window = (-(u * u + v * v) / (2.0 * sigma * sigma)).exp();
            let stripes = 0.5 + 0.5 * (2.0 * PI * u / period).sin();
            canvas.blend(x, y, colour, strength * window * stripes);
        }
    }
}

/// Thin opaque clutter painted over the objects; its pixels occlude them.
#[derive(Debug, Clone, Default)]
pub(crate) struct FrontClutter {
    /// Column-major occupancy mask (`y + h * x`).
    pub mask: Vec<u8>,
    pieces: Vec<(Vec<usize>, [f32; 3])>,
}

impl FrontClutter {
    pub(crate) fn sample<R: Rng>(rng: &mut R, w: u32, h: u32) -> Self {
        let mut mask = vec![0u8; (w * h) as usize];
        let mut pieces = Vec::new();
        for _ in 0..rng.random_range(0..=2) {
            let colour = random_colour(rng);
            let pixels = thin_clutter(rng, w, h);
            for &i in &pixels {
                let (x, y) = (i % w as usize, i / w as usize);
                mask[y + h as usize * x] = 1;
            }
            pieces.push((pixels, colour));
        }
        FrontClutter { mask, pieces }
    }

    pub(crate) fn paint(&self, canvas: &mut Canvas) {
        let w = canvas.width;
        for (pixels, colour) in &self.pieces {
            for &i in pixels {
                *canvas.at(i as u32 % w, i as u32 / w) = *colour;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn stroke_stays_in_the_image_and_covers_its_endpoints() {
        let px = stroke(16, 8, &[(-5.0, 2.5), (30.0, 2.5)], 1.0);
        assert_eq!(px.len(), 16, "one row of 16 pixels");
        assert!(px.iter().all(|&i| i / 16 == 2));
    }

    #[test]
    fn front_clutter_mask_matches_its_pixels() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let fc = FrontClutter::sample(&mut rng, 20, 10);
            let n: usize = fc.pieces.iter().map(|p| p.0.len()).sum();
            let m = fc.mask.iter().filter(|&&v| v != 0).count();
            assert!(m <= n);
            for (pixels, _) in &fc.pieces {
                for &i in pixels {
                    assert_eq!(fc.mask[i / 20 + 10 * (i % 20)], 1);
                }
            }
        }
    }
}
