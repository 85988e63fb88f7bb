//! The shape classes: geometry, size sampling and rasterization to exact masks.
//!
//! Every class is an implicit region in a *unit frame* (circumradius 1 along the
//! major axis) that is rotated, stretched and scaled into the image. Look-alike
//! groups are deliberate:
//! - circle / hexagon / pentagon: regular polygons approach the circle, so they only
//!   differ at the corners, which small objects resolve poorly;
//! - pentagon / star: a fat star shrinks to a pentagon-like blob when small;
//! - circle / ring: the hole is only a few pixels wide on small rings;
//! - circle / ellipse: the ellipse aspect ratio is at least 1.6, while every other
//!   class gets a mild stretch of at most 1.15, so the two are separable with
//!   enough resolution but not at 6 px.
//!
//! Sizes are drawn as the square root of the shape's *area* (not its radius), the
//! same for all classes, so that size carries no class information.

use rand::Rng;
use std::f32::consts::PI;

/// The eight shape classes in label order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShapeClass {
    Circle,
    Ellipse,
    Triangle,
    Square,
    Pentagon,
    Hexagon,
    Star,
    Ring,
}

impl ShapeClass {
    /// All classes; the index is the 0-based label.
    pub(crate) const ALL: [ShapeClass; 8] = [
        ShapeClass::Circle,
        ShapeClass::Ellipse,
        ShapeClass::Triangle,
        ShapeClass::Square,
        ShapeClass::Pentagon,
        ShapeClass::Hexagon,
        ShapeClass::Star,
        ShapeClass::Ring,
    ];

    #[cfg(test)]
    pub(crate) fn name(self) -> &'static str {
        match self {
            ShapeClass::Circle => "circle",
            ShapeClass::Ellipse => "ellipse",
            ShapeClass::Triangle => "triangle",
            ShapeClass::Square => "square",
            ShapeClass::Pentagon => "pentagon",
            ShapeClass::Hexagon => "hexagon",
            ShapeClass::Star => "star",
            ShapeClass::Ring => "ring",
        }
    }

    pub(crate) fn label(self) -> usize {
        Self::ALL
            .iter()
            .position(|&c| c == self)
            .expect("every class is listed in ShapeClass::ALL")
    }

    /// Number of sides of a regular polygon class.
    fn sides(self) -> Option<usize> {
        match self {
            ShapeClass::Triangle => Some(3),
            ShapeClass::Square => Some(4),
            ShapeClass::Pentagon => Some(5),
            ShapeClass::Hexagon => Some(6),
            _ => None,
        }
    }
}

/// Ellipse aspect ratio range: at least 1.6 so that it stays distinguishable from a
/// (slightly stretched, at most 1.15) circle.
const ELLIPSE_ASPECT: (f32, f32) = (1.6, 2.4);
/// Mild anisotropic stretch of every other class (a hint of perspective).
const OTHER_ASPECT: (f32, f32) = (1.0, 1.15);
/// Ring hole radius relative to the outer radius.
const RING_INNER: (f32, f32) = (0.45, 0.62);
/// Star inner (valley) radius relative to the tips: fat stars resemble pentagons.
const STAR_INNER: (f32, f32) = (0.38, 0.55);
/// Number of star tips.
const STAR_TIPS: usize = 5;
/// Subsamples per pixel side: a pixel belongs to the shape when at least half of
/// its `SUB * SUB` subsamples are inside.
const SUB: usize = 3;

/// One placed shape in image coordinates (pixel `(x, y)` covers `[x, x+1) × [y, y+1)`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub class: ShapeClass,
    pub cx: f32,
    pub cy: f32,
    /// Circumradius along the major (local x) axis, in pixels.
    pub radius: f32,
    /// Major over minor axis scale, ≥ 1.
    pub aspect: f32,
    /// Rotation in radians.
    pub angle: f32,
    /// Ring hole / star valley radius ratio (unused by the other classes).
    pub inner: f32,
}

/// Class-specific parameters that do not change when the shape moves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShapeForm {
    pub class: ShapeClass,
    pub aspect: f32,
    pub inner: f32,
}

impl ShapeForm {
    pub(crate) fn sample<R: Rng>(class: ShapeClass, rng: &mut R) -> Self {
        let (lo, hi) = if class == ShapeClass::Ellipse {
            ELLIPSE_ASPECT
        } else {
            OTHER_ASPECT
        };
        let aspect = rng.random_range(lo..=hi);
        let inner = match class {
            ShapeClass::Ring => rng.random_range(RING_INNER.0..=RING_INNER.1),
            ShapeClass::Star => rng.random_range(STAR_INNER.0..=STAR_INNER.1),
            _ => 0.0,
        };
        ShapeForm {
            class,
            aspect,
            inner,
        }
    }

    /// Area of the shape with circumradius 1 (before the aspect squeeze).
    fn unit_area(&self) -> f32 {
        match self.class {
            ShapeClass::Circle | ShapeClass::Ellipse => PI,
            ShapeClass::Ring => PI * (1.0 - self.inner * self.inner),
            ShapeClass::Star => STAR_TIPS as f32 * self.inner * (PI / STAR_TIPS as f32).sin(),
            c => {
                let n = c.sides().expect("the remaining classes are polygons") as f32;
                0.5 * n * (2.0 * PI / n).sin()
            }
        }
    }

    /// Circumradius giving an area of `sqrt_area²` pixels.
    pub(crate) fn radius_for(&self, sqrt_area: f32) -> f32 {
        sqrt_area * (self.aspect / self.unit_area()).sqrt()
    }

    pub(crate) fn place(&self, cx: f32, cy: f32, radius: f32, angle: f32) -> Shape {
        Shape {
            class: self.class,
            cx,
            cy,
            radius,
            aspect: self.aspect,
            angle,
            inner: self.inner,
        }
    }
}

/// The pixels of a shape on a `width × height` image.
#[derive(Debug, Clone)]
pub(crate) struct Raster {
    /// Column-major `h * w` mask (pixel `(x, y)` at `y + h * x`), clipped to the image.
    pub mask: Vec<u8>,
    /// Pixels of the unclipped shape (including the parts outside the image).
    pub full_area: usize,
}

/// Precomputed inside test in the unit frame.
struct UnitTest {
    class: ShapeClass,
    inner: f32,
    /// Edge normals of a regular polygon (`cos`, `sin`) and the apothem.
    normals: Vec<(f32, f32)>,
    apothem: f32,
    /// Star: tip `O`, valley `I`, and `(I - O) × (0 - O)` sign reference.
    star: (f32, f32, f32, f32),
}

impl UnitTest {
    fn new(shape: &Shape) -> Self {
        let mut normals = Vec::new();
        let mut apothem = 1.0;
        if let Some(n) = shape.class.sides() {
            let step = 2.0 * PI / n as f32;
            // Vertices at -π/2 + k·step (one pointing "up"), edge normals halfway.
            normals = (0..n)
                .map(|k| {
                    let a = -PI / 2.0 + (k as f32 + 0.5) * step;
                    (a.cos(), a.sin())
                })
                .collect();
            apothem = (PI / n as f32).cos();
        }
        let half = PI / STAR_TIPS as f32;
        let star = (1.0, 0.0, shape.inner * half.cos(), shape.inner * half.sin());
        UnitTest {
            class: shape.class,
            inner: shape.inner,
            normals,
            apothem,
            star,
        }
    }

    #[inline]
    fn contains(&self, u: f32, v: f32) -> bool {
        match self.class {
            ShapeClass::Circle | ShapeClass::Ellipse => u * u + v * v <= 1.0,
            ShapeClass::Ring => {
                let q = u * u + v * v;
                q <= 1.0 && q >= self.inner * self.inner
            }
            ShapeClass::Star => {
                let q = (u * u + v * v).sqrt();
                if q > 1.0 {
                    return false;
                }
                if q <= self.inner * (PI / STAR_TIPS as f32).cos() {
                    return true;
                }
                // Fold the angle into the sector [0, π/5] between a tip and a valley.
                let sector = 2.0 * PI / STAR_TIPS as f32;
                let mut b = v.atan2(u).rem_euclid(sector);
                if b > sector / 2.0 {
                    b = sector - b;
                }
                let (px, py) = (q * b.cos(), q * b.sin());
                let (ox, oy, ix, iy) = self.star;
                // Inside when P lies on the origin's side of the tip–valley edge.
                let ex = ix - ox;
                let ey = iy - oy;
                let cross_p = ex * (py - oy) - ey * (px - ox);
                let cross_o = ex * (-oy) - ey * (-ox);
                cross_p * cross_o >= 0.0
            }
            _ => self
                .normals
                .iter()
                .all(|&(c, s)| u * c + v * s <= self.apothem),
        }
    }
}

impl Shape {
    /// Rasterize onto a `width × height` image: a pixel belongs to the shape when at
    /// least half of its subsamples are inside. `full_area` counts the pixels the
    /// shape would cover on an unbounded canvas, so that truncation by the border
    /// counts as occlusion.
    pub(crate) fn rasterize(&self, width: u32, height: u32) -> Raster {
        let (w, h) = (width as i64, height as i64);
        let mut mask = vec![0u8; (w * h) as usize];
        let test = UnitTest::new(self);
        let (sin, cos) = self.angle.sin_cos();
        let inv_r = 1.0 / self.radius.max(1e-3);
        let r = self.radius.ceil() as i64 + 1;
        let x0 = (self.cx.floor() as i64) - r;
        let x1 = (self.cx.floor() as i64) + r;
        let y0 = (self.cy.floor() as i64) - r;
        let y1 = (self.cy.floor() as i64) + r;
        let need = SUB * SUB / 2 + 1;
        let mut full_area = 0;
        for x in x0..=x1 {
            for y in y0..=y1 {
                let mut hits = 0;
                for sx in 0..SUB {
                    let dx = x as f32 + (sx as f32 + 0.5) / SUB as f32 - self.cx;
                    for sy in 0..SUB {
                        let dy = y as f32 + (sy as f32 + 0.5) / SUB as f32 - self.cy;
                        // Rotate into the shape frame, then squeeze the minor axis.
                        let u = (dx * cos + dy * sin) * inv_r;
                        let v = (-dx * sin + dy * cos) * inv_r * self.aspect;
                        if test.contains(u, v) {
                            hits += 1;
                        }
                    }
                }
                if hits >= need {
                    full_area += 1;
                    if (0..w).contains(&x) && (0..h).contains(&y) {
                        mask[(y + h * x) as usize] = 1;
                    }
                }
            }
        }
        Raster { mask, full_area }
    }

    /// Map an image point into the shape's unit frame (`u` along the major axis).
    pub(crate) fn unit_coords(&self, x: f32, y: f32) -> (f32, f32) {
        let (sin, cos) = self.angle.sin_cos();
        let dx = x - self.cx;
        let dy = y - self.cy;
        let inv_r = 1.0 / self.radius.max(1e-3);
        (
            (dx * cos + dy * sin) * inv_r,
            (-dx * sin + dy * cos) * inv_r * self.aspect,
        )
    }
}

/// Size buckets as `(probability, min, max)` of `sqrt(area)` in pixels at 128×128
/// (scaled with the image side). Chosen for COCO's area ranges (small < 32²,
/// large ≥ 96²): most objects are small, many tiny (6–16 px across), some medium,
/// and a few large ones, which at 128×128 nearly fill the frame.
pub(crate) const SIZE_BUCKETS: [(f32, f32, f32); 4] = [
    (0.55, 5.5, 16.0),
    (0.25, 16.0, 32.0),
    (0.17, 32.0, 72.0),
    (0.03, 96.0, 118.0),
];

/// Draw `sqrt(area)` in pixels for an image of side `image_size`: a bucket by its
/// probability, then log-uniform inside it (favouring the smaller end), times
/// `object_scale` (`SynthConfig::object_scale`; above 1 capped at the largest bucket's
/// side, so that no object outgrows the frame). The flag: drawn from the large bucket.
pub(crate) fn sample_sqrt_area<R: Rng>(
    rng: &mut R,
    image_size: u32,
    object_scale: f32,
) -> (f32, bool) {
    let scale = image_size as f32 / 128.0;
    let mut p = rng.random::<f32>();
    let mut bucket = SIZE_BUCKETS[SIZE_BUCKETS.len() - 1];
    for b in SIZE_BUCKETS {
        if p < b.0 {
            bucket = b;
            break;
        }
        p -= b.0;
    }
    let (lo, hi) = (bucket.1.ln(), bucket.2.ln());
    // `* 1.0` is exact and the cap applies above 1 only: the default data is unchanged.
    let mut s = rng.random_range(lo..=hi).exp() * scale * object_scale;
    if object_scale > 1.0 {
        s = s.min(SIZE_BUCKETS[SIZE_BUCKETS.len() - 1].2 * scale);
    }
    let large = bucket.1 >= 96.0;
    (s.max(5.0), large)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn object_scale_multiplies_each_drawn_side_up_to_the_largest_bucket() {
        let cap = SIZE_BUCKETS[SIZE_BUCKETS.len() - 1].2;
        let mut capped = 0;
        for seed in 0..400 {
            let draw = |scale| sample_sqrt_area(&mut ChaCha8Rng::seed_from_u64(seed), 128, scale);
            let ((s1, l1), (s3, l3), (q, _)) = (draw(1.0), draw(3.0), draw(0.25));
            assert_eq!(l1, l3, "the bucket does not depend on the scale");
            let want = (s1 * 3.0).min(cap);
            assert!(
                (s3 - want).abs() <= 1e-4 * want,
                "seed {seed}: {s1} -> {s3}"
            );
            assert!(q >= 5.0 && (q - (s1 * 0.25).max(5.0)).abs() <= 1e-4 * s1);
            capped += usize::from(s1 * 3.0 > cap);
        }
        assert!(capped > 0, "some draws reach the cap at scale 3");
    }

    fn shape(class: ShapeClass, radius: f32, aspect: f32, inner: f32) -> Shape {
        ShapeForm {
            class,
            aspect,
            inner,
        }
        .place(32.0, 32.0, radius, 0.3)
    }

    fn area(r: &Raster) -> usize {
        r.mask.iter().map(|&m| m as usize).sum()
    }

    #[test]
    fn rasterized_area_matches_the_requested_area() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for class in ShapeClass::ALL {
            let form = ShapeForm::sample(class, &mut rng);
            let r = form.radius_for(30.0);
            let raster = form.place(64.0, 64.0, r, 0.7).rasterize(128, 128);
            let rel = raster.full_area as f32 / 900.0;
            assert!(
                (0.9..1.1).contains(&rel),
                "{class:?}: area {} for 900 requested",
                raster.full_area
            );
            assert_eq!(area(&raster), raster.full_area, "{class:?} fits the image");
        }
    }

    #[test]
    fn ring_has_a_hole_and_star_has_valleys() {
        let ring = shape(ShapeClass::Ring, 20.0, 1.0, 0.5).rasterize(64, 64);
        // The centre pixel (32, 32) is in the hole.
        assert_eq!(ring.mask[32 + 64 * 32], 0);
        let circle = shape(ShapeClass::Circle, 20.0, 1.0, 0.0).rasterize(64, 64);
        assert_eq!(circle.mask[32 + 64 * 32], 1);
        let star = shape(ShapeClass::Star, 20.0, 1.0, 0.45).rasterize(64, 64);
        let pentagon = shape(ShapeClass::Pentagon, 20.0, 1.0, 0.0).rasterize(64, 64);
        assert!(area(&star) < area(&pentagon) * 3 / 4, "valleys remove area");
    }

    #[test]
    fn clipping_keeps_the_full_area() {
        let s = ShapeForm {
            class: ShapeClass::Square,
            aspect: 1.0,
            inner: 0.0,
        }
        .place(0.0, 16.0, 8.0, 0.0);
        let r = s.rasterize(32, 32);
        assert!(area(&r) < r.full_area);
        assert!(area(&r) > r.full_area / 3, "about half of it is inside");
    }

    #[test]
    fn size_buckets_sum_to_one() {
        let total: f32 = SIZE_BUCKETS.iter().map(|b| b.0).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
