//! Painting: the canvas, backgrounds, object fills, and the final illumination and
//! sensor noise (clutter is in `clutter.rs`).
//!
//! All colours (objects and clutter alike) come from one distribution, so colour
//! never identifies a class.

use super::shapes::{Raster, Shape};
use image::RgbImage;
use rand::Rng;
use std::f32::consts::PI;

/// A float RGB image, row-major, values nominally in `[0, 255]`.
#[derive(Debug, Clone)]
pub(crate) struct Canvas {
    pub width: u32,
    pub height: u32,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    pub(crate) fn new(width: u32, height: u32) -> Self {
        Canvas {
            width,
            height,
            px: vec![[0.0; 3]; (width * height) as usize],
        }
    }

    #[inline]
    pub(super) fn at(&mut self, x: u32, y: u32) -> &mut [f32; 3] {
        &mut self.px[(y * self.width + x) as usize]
    }

    #[inline]
    pub(super) fn blend(&mut self, x: u32, y: u32, colour: [f32; 3], alpha: f32) {
        let p = self.at(x, y);
        for c in 0..3 {
            p[c] += (colour[c] - p[c]) * alpha;
        }
    }

    /// Mean colour under a column-major mask, or of the whole canvas when empty.
    fn mean_under(&self, mask: &[u8]) -> [f32; 3] {
        let h = self.height as usize;
        let mut sum = [0.0f64; 3];
        let mut n = 0usize;
        for (i, &m) in mask.iter().enumerate() {
            if m != 0 {
                let (x, y) = (i / h, i % h);
                let p = self.px[y * self.width as usize + x];
                for c in 0..3 {
                    sum[c] += f64::from(p[c]);
                }
                n += 1;
            }
        }
        if n == 0 {
            for p in &self.px {
                for c in 0..3 {
                    sum[c] += f64::from(p[c]);
                }
            }
            n = self.px.len().max(1);
        }
        sum.map(|s| (s / n as f64) as f32)
    }
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let rgb = match i as i32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    rgb.map(|c| c * 255.0)
}

/// The colour distribution of objects and clutter (shared, so colour is no cue).
pub(crate) fn random_colour<R: Rng>(rng: &mut R) -> [f32; 3] {
    hsv(
        rng.random(),
        rng.random_range(0.15..=1.0),
        rng.random_range(0.2..=1.0),
    )
}

fn background_colour<R: Rng>(rng: &mut R) -> [f32; 3] {
    hsv(
        rng.random(),
        rng.random_range(0.0..=0.6),
        rng.random_range(0.12..=0.95),
    )
}

fn lerp3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Smooth value noise in `[0, 1]` on a `grid × grid` lattice, row-major.
fn value_noise<R: Rng>(width: u32, height: u32, grid: u32, rng: &mut R) -> Vec<f32> {
    let g = grid.max(1) as usize + 1;
    let lattice: Vec<f32> = (0..g * g).map(|_| rng.random()).collect();
    let mut out = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        let fy = (y as f32 + 0.5) / height as f32 * grid as f32;
        let (iy, ty) = (fy.floor() as usize, fy.fract());
        let ty = ty * ty * (3.0 - 2.0 * ty);
        for x in 0..width {
            let fx = (x as f32 + 0.5) / width as f32 * grid as f32;
            let (ix, tx) = (fx.floor() as usize, fx.fract());
            let tx = tx * tx * (3.0 - 2.0 * tx);
            let (ix1, iy1) = ((ix + 1).min(g - 1), (iy + 1).min(g - 1));
            let a = lattice[iy * g + ix] + (lattice[iy * g + ix1] - lattice[iy * g + ix]) * tx;
            let b = lattice[iy1 * g + ix] + (lattice[iy1 * g + ix1] - lattice[iy1 * g + ix]) * tx;
            out.push(a + (b - a) * ty);
        }
    }
    out
}

/// Gradient or cloudy base, then zero to two low-contrast textures.
pub(crate) fn paint_background<R: Rng>(canvas: &mut Canvas, rng: &mut R) {
    let (w, h) = (canvas.width, canvas.height);
    let c1 = background_colour(rng);
    let c2 = background_colour(rng);
    let size = w.max(h) as f32;
    let kind = rng.random_range(0..3);
    let theta: f32 = rng.random_range(0.0..2.0 * PI);
    let (ox, oy) = (
        rng.random_range(0.0..w as f32),
        rng.random_range(0.0..h as f32),
    );
    let clouds = value_noise(w, h, rng.random_range(2..=6), rng);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let t = match kind {
                0 => {
                    let d =
                        (fx - w as f32 / 2.0) * theta.cos() + (fy - h as f32 / 2.0) * theta.sin();
                    d / size + 0.5
                }
                1 => ((fx - ox).hypot(fy - oy) / (0.9 * size)).min(1.0),
                _ => clouds[(y * w + x) as usize],
            };
            *canvas.at(x, y) = lerp3(c1, c2, t.clamp(0.0, 1.0));
        }
    }
    for _ in 0..rng.random_range(0..=2) {
        paint_texture(canvas, rng);
    }
}

/// An additive grey-level texture over the whole canvas.
fn paint_texture<R: Rng>(canvas: &mut Canvas, rng: &mut R) {
    let (w, h) = (canvas.width, canvas.height);
    let theta: f32 = rng.random_range(0.0..PI);
    let (cos, sin) = (theta.cos(), theta.sin());
    let kind = rng.random_range(0..4);
    let amp = rng.random_range(5.0..=22.0);
    let period = rng.random_range(3.0..=14.0);
    let noise = match kind {
        2 => value_noise(w, h, (w / rng.random_range(2..=4)).max(2), rng),
        3 => value_noise(w, h, rng.random_range(3..=8), rng),
        _ => Vec::new(),
    };
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32, y as f32);
            let t = match kind {
                0 => (2.0 * PI * (fx * cos + fy * sin) / period).sin(),
                1 => {
                    let cell = ((fx / period).floor() + (fy / period).floor()) as i64;
                    if cell.rem_euclid(2) == 0 { 1.0 } else { -1.0 }
                }
                _ => 2.0 * noise[(y * w + x) as usize] - 1.0,
            };
            let p = canvas.at(x, y);
            for v in p.iter_mut() {
                *v += amp * t;
            }
        }
    }
}

/// How an object's pixels are coloured. Patterns live in the object's frame so
/// they move and rotate with it.
#[derive(Debug, Clone, Copy)]
enum Fill {
    Solid,
    /// Linear shading along a direction of the unit frame.
    Gradient {
        dir: (f32, f32),
        amp: f32,
    },
    /// Low-contrast stripes in the unit frame.
    Stripes {
        dir: (f32, f32),
        amp: f32,
        cycles: f32,
    },
}

/// Colour, fill and optional 1-pixel outline of one object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appearance {
    colour: [f32; 3],
    fill: Fill,
    outline: Option<[f32; 3]>,
}

/// Minimum RGB distance between an object's colour and what lies under it.
const MIN_CONTRAST: f32 = 60.0;

impl Appearance {
    /// Sample an appearance that stands out from the canvas under `mask`
    /// (column-major; an empty mask compares with the whole canvas).
    pub(crate) fn sample<R: Rng>(rng: &mut R, canvas: &Canvas, mask: &[u8]) -> Self {
        let under = canvas.mean_under(mask);
        let mut best = random_colour(rng);
        let dist = |c: [f32; 3]| {
            ((c[0] - under[0]).powi(2) + (c[1] - under[1]).powi(2) + (c[2] - under[2]).powi(2))
                .sqrt()
        };
        for _ in 0..12 {
            if dist(best) >= MIN_CONTRAST {
                break;
            }
            let c = random_colour(rng);
            if dist(c) > dist(best) {
                best = c;
            }
        }
        let a: f32 = rng.random_range(0.0..2.0 * PI);
        let dir = (a.cos(), a.sin());
        let fill = match rng.random_range(0..20) {
            0..9 => Fill::Solid,
            9..16 => Fill::Gradient {
                dir,
                amp: rng.random_range(15.0..45.0),
            },
            _ => Fill::Stripes {
                dir,
                amp: rng.random_range(10.0..30.0),
                cycles: rng.random_range(1.5..4.0),
            },
        };
        let outline = rng.random_bool(0.3).then(|| {
            if rng.random_bool(0.5) {
                best.map(|c| c * 0.45)
            } else {
                best.map(|c| c + (255.0 - c) * 0.55)
            }
        });
        Appearance {
            colour: best,
            fill,
            outline,
        }
    }

    /// Paint every pixel of `raster` (and nothing else).
    pub(crate) fn paint(&self, canvas: &mut Canvas, shape: &Shape, raster: &Raster) {
        let (w, h) = (canvas.width as usize, canvas.height as usize);
        let inside = |x: i64, y: i64| {
            // Outside the image counts as inside, so truncation draws no outline.
            x < 0
                || y < 0
                || x >= w as i64
                || y >= h as i64
                || raster.mask[y as usize + h * x as usize] != 0
        };
        for x in 0..w {
            for y in 0..h {
                if raster.mask[y + h * x] == 0 {
                    continue;
                }
                let (xi, yi) = (x as i64, y as i64);
                let edge = !(inside(xi - 1, yi)
                    && inside(xi + 1, yi)
                    && inside(xi, yi - 1)
                    && inside(xi, yi + 1));
                let colour = match (edge, self.outline) {
                    (true, Some(o)) => o,
                    _ => {
                        let (u, v) = shape.unit_coords(x as f32 + 0.5, y as f32 + 0.5);
                        let shade = match self.fill {
                            Fill::Solid => 0.0,
                            Fill::Gradient { dir, amp } => amp * (u * dir.0 + v * dir.1),
                            Fill::Stripes { dir, amp, cycles } => {
                                amp * (PI * cycles * (u * dir.0 + v * dir.1)).sin()
                            }
                        };
                        self.colour.map(|c| c + shade)
                    }
                };
                *canvas.at(x as u32, y as u32) = colour;
            }
        }
    }
}

/// Scene-wide illumination and sensor noise, applied last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finish {
    dir: (f32, f32),
    slope: f32,
    gain: f32,
    noise_std: f32,
}

impl Finish {
    pub(crate) fn sample<R: Rng>(rng: &mut R, max_noise_std: f32) -> Self {
        let a: f32 = rng.random_range(0.0..2.0 * PI);
        Finish {
            dir: (a.cos(), a.sin()),
            slope: rng.random_range(-0.25..=0.25),
            gain: rng.random_range(0.85..=1.1),
            noise_std: if max_noise_std > 1.0 {
                rng.random_range(1.0..=max_noise_std)
            } else {
                max_noise_std.max(0.0)
            },
        }
    }

    /// Illumination gradient, Gaussian noise and rare salt-and-pepper pixels; `rng`
    /// only drives the noise, so frames of one video share the illumination.
    pub(crate) fn apply<R: Rng>(&self, canvas: &Canvas, rng: &mut R) -> RgbImage {
        let (w, h) = (canvas.width, canvas.height);
        let size = w.max(h) as f32;
        let mut out = RgbImage::new(w, h);
        for (y, row) in canvas.px.chunks(w as usize).enumerate() {
            for (x, p) in row.iter().enumerate() {
                let d = ((x as f32 - w as f32 / 2.0) * self.dir.0
                    + (y as f32 - h as f32 / 2.0) * self.dir.1)
                    / size;
                let g = self.gain * (1.0 + self.slope * d);
                let rgb = if rng.random_bool(0.002) {
                    let v = if rng.random_bool(0.5) { 0.0 } else { 255.0 };
                    [v; 3]
                } else {
                    let n = gaussian3(rng);
                    [0, 1, 2].map(|c| p[c] * g + self.noise_std * n[c])
                };
                out.put_pixel(
                    x as u32,
                    y as u32,
                    image::Rgb(rgb.map(|v| v.round().clamp(0.0, 255.0) as u8)),
                );
            }
        }
        out
    }
}

/// Three standard normal samples (Box–Muller, one pair and a half).
fn gaussian3<R: Rng>(rng: &mut R) -> [f32; 3] {
    let mut pair = || {
        let u1: f32 = rng.random::<f32>().max(1e-7);
        let u2: f32 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        (r * (2.0 * PI * u2).cos(), r * (2.0 * PI * u2).sin())
    };
    let (a, b) = pair();
    let (c, _) = pair();
    [a, b, c]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_primaries() {
        assert_eq!(hsv(0.0, 1.0, 1.0), [255.0, 0.0, 0.0]);
        assert_eq!(
            hsv(1.0 / 3.0, 1.0, 1.0).map(|v| v.round()),
            [0.0, 255.0, 0.0]
        );
        assert_eq!(hsv(0.5, 0.0, 0.5), [127.5; 3]);
    }
}
