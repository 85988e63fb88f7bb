//! Drawing detections on images: a 2-px outline per box in its class colour and a filled
//! tag with the class name and score in 8x8 bitmap text (font8x8, no font files).
//!
//! Used by `kdet predict` (one PNG per image) and by the HTML report. Everything is
//! integer pixel work with fixed rules, so the same inputs give the same pixels on every
//! machine:
//!
//! - A box `[x1, y1, x2, y2]` (continuous pixel coordinates, pixel `i` covers `[i, i+1)`)
//!   covers the pixel columns `round(x1) ..= round(x2) - 1` and rows
//!   `round(y1) ..= round(y2) - 1` (`f32::round`, halves away from zero), clipped to the
//!   image and at least one pixel wide and high ([`outline_rect`]). Its outline is the
//!   2-px band along the inside of that rectangle, so a box touching the border keeps its
//!   whole outline in the image.
//! - The tag (`"<class name> <score 0.00>"`, 10 px high, 8 px per character plus 1 px of
//!   padding each side) sits just above the box, left-aligned with it and shifted left if
//!   it would leave the image; a box too close to the top gets it just inside, under its
//!   top outline.
//! - Detections are drawn in ascending score order (ties in input order), the most
//!   confident last, on top. All tags are drawn first and all outlines over them, so every
//!   outline is complete where no later outline crosses it: a tag never hides a box.

use std::cmp::Ordering;

use anyhow::{Context, Result};
use image::{ImageEncoder, Rgb, RgbImage};
use kdet_structures::Instances;

/// Width of a box outline in pixels.
pub const OUTLINE_WIDTH: u32 = 2;
/// Glyph size of the 8x8 bitmap font.
const GLYPH: u32 = 8;
/// Tag padding around the text, each side.
const TAG_PADDING: u32 = 1;
/// Tag height: one line of text plus padding.
pub const TAG_HEIGHT: u32 = GLYPH + 2 * TAG_PADDING;

/// The first ten classes: Tableau 10 (matplotlib's `tab10`), chosen to be told apart at a
/// glance; further classes step the hue by the golden angle.
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// A distinct, fixed colour per class index (a palette; deterministic).
pub fn class_color(class: usize) -> Rgb<u8> {
    if let Some(c) = PALETTE.get(class) {
        return Rgb(*c);
    }
    // Golden-angle hue steps never repeat; saturation and value alternate between cycles
    // of ten so that neighbours in hue also differ in tone.
    let k = class - PALETTE.len();
    let hue = (k as f64 * 0.618_033_988_749_895).fract();
    let saturation = [0.85, 0.6, 0.95][(k / 10) % 3];
    let value = [0.9, 0.75, 0.6][(k / 30) % 3];
    Rgb(hsv_to_rgb(hue, saturation, value))
}

/// HSV (each in `[0, 1]`) to 8-bit RGB.
fn hsv_to_rgb(h: f64, s: f64, v: f64) -> [u8; 3] {
    let h6 = h * 6.0;
    let sector = h6.floor() as i64 % 6;
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match sector {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r, g, b].map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// The pixel rectangle `[x0, y0, x1, y1]` (inclusive) a box's outline is drawn on, in an
/// image of `width` x `height`; `None` for a non-finite box or an empty image.
pub fn outline_rect(b: [f32; 4], width: u32, height: u32) -> Option<[u32; 4]> {
    if width == 0 || height == 0 || b.iter().any(|v| !v.is_finite()) {
        return None;
    }
    // `as` saturates: far-out coordinates clamp to the image like near ones.
    let clamp = |v: f32, max: u32| (v.round() as i64).clamp(0, i64::from(max) - 1) as u32;
    let x0 = clamp(b[0], width);
    let y0 = clamp(b[1], height);
    let x1 = clamp(b[2] - 1.0, width).max(x0);
    let y1 = clamp(b[3] - 1.0, height).max(y0);
    Some([x0, y0, x1, y1])
}

/// The label of a detection: `"<class name> <score 0.00>"` (just the name without a score).
pub fn tag_text(class: usize, score: Option<f32>, class_names: &[String]) -> String {
    let name = class_names
        .get(class)
        .cloned()
        .unwrap_or_else(|| format!("class {class}"));
    match score {
        Some(s) => format!("{name} {s:.2}"),
        None => name,
    }
}

/// Draws each detection with score >= min_score: a 2-px rectangle outline in the class colour
/// (box in the image's pixels, xyxy, clipped to the image), and a filled label tag with
/// "<class name> <score 0.00>" in 8x8 bitmap text (font8x8) above the box (inside the image).
/// Detections with masks (of the image's size) also get their mask filled with the class
/// colour at half opacity, under every tag and outline.
/// Deterministic: the same inputs give the same pixels. Returns how many were drawn.
///
/// Detections without scores are all drawn, labelled with the class name only; non-finite
/// boxes are skipped (and not counted). Class indices past `class_names` are labelled
/// `class <k>`. See the module documentation for the exact pixel rules.
pub fn draw_detections(
    image: &mut RgbImage,
    dets: &Instances,
    class_names: &[String],
    min_score: f32,
) -> usize {
    let (width, height) = image.dimensions();
    let scores = dets.scores();
    let mut drawn: Vec<(usize, Option<f32>, [u32; 4])> = dets
        .boxes()
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let score = scores.map(|s| s[i]);
            if score.is_some_and(|s| s.partial_cmp(&min_score).is_none_or(Ordering::is_lt)) {
                return None;
            }
            outline_rect(*b, width, height).map(|r| (i, score, r))
        })
        .collect();
    // Stable: ties keep the input order. Scores here are not NaN (filtered above).
    drawn.sort_by(|a, b| {
        a.1.unwrap_or(0.0)
            .partial_cmp(&b.1.unwrap_or(0.0))
            .expect("drawn scores are comparable (NaN scores are filtered out)")
    });
    let classes = dets.classes();
    // Masks first (under every tag and outline), in the same order: the class colour
    // blended half over each mask pixel of the image.
    if let Some(bitmaps) = dets
        .masks()
        .filter(|m| (m.height(), m.width()) == (height, width))
        .and_then(|m| m.to_bitmaps().ok())
    {
        for &(i, _, _) in &drawn {
            blend_mask(image, &bitmaps[i], class_color(classes[i]));
        }
    }
    for &(i, score, rect) in &drawn {
        let text = tag_text(classes[i], score, class_names);
        draw_tag(image, rect, &text, class_color(classes[i]));
    }
    for &(i, _, rect) in &drawn {
        draw_outline(image, rect, class_color(classes[i]));
    }
    drawn.len()
}

/// The colour blended half over every pixel of `mask` (the image's size).
fn blend_mask(image: &mut RgbImage, mask: &kdet_structures::BitMask, color: Rgb<u8>) {
    for y in 0..image.height() {
        for x in 0..image.width() {
            if mask.get(x, y) {
                let p = image.get_pixel_mut(x, y);
                for c in 0..3 {
                    p.0[c] = ((u16::from(p.0[c]) + u16::from(color.0[c])) / 2) as u8;
                }
            }
        }
    }
}

/// Sets a pixel when it is inside the image.
fn put(image: &mut RgbImage, x: u32, y: u32, color: Rgb<u8>) {
    if x < image.width() && y < image.height() {
        image.put_pixel(x, y, color);
    }
}

/// The 2-px band along the inside of the inclusive rectangle `[x0, y0, x1, y1]`.
fn draw_outline(image: &mut RgbImage, [x0, y0, x1, y1]: [u32; 4], color: Rgb<u8>) {
    let w = OUTLINE_WIDTH - 1;
    for y in y0..=y1 {
        let edge_row = y <= y0 + w || y + w >= y1;
        if edge_row {
            for x in x0..=x1 {
                put(image, x, y, color);
            }
        } else {
            for x in (x0..=(x0 + w).min(x1)).chain(x1.saturating_sub(w).max(x0)..=x1) {
                put(image, x, y, color);
            }
        }
    }
}

/// A filled tag in `color` with `text` in black or white (whichever reads better on it),
/// placed as the module documentation says.
fn draw_tag(image: &mut RgbImage, [x0, y0, _, _]: [u32; 4], text: &str, color: Rgb<u8>) {
    let (width, height) = image.dimensions();
    let chars: Vec<char> = text.chars().collect();
    let tag_width = GLYPH * chars.len() as u32 + 2 * TAG_PADDING;
    let tx = x0.min(width.saturating_sub(tag_width));
    let ty = if y0 >= TAG_HEIGHT {
        y0 - TAG_HEIGHT
    } else {
        (y0 + OUTLINE_WIDTH).min(height.saturating_sub(TAG_HEIGHT))
    };
    for y in ty..ty + TAG_HEIGHT {
        for x in tx..tx + tag_width {
            put(image, x, y, color);
        }
    }
    let [r, g, b] = color.0.map(f32::from);
    let ink = if 0.299 * r + 0.587 * g + 0.114 * b > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    };
    for (k, c) in chars.iter().enumerate() {
        // Outside ASCII the legacy font has no glyph: show '?'.
        let glyph = font8x8::legacy::BASIC_LEGACY[if c.is_ascii() {
            *c as usize
        } else {
            '?' as usize
        }];
        let gx = tx + TAG_PADDING + GLYPH * k as u32;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH {
                // Bit 0 is the leftmost pixel of a font8x8 row.
                if bits & (1 << col) != 0 {
                    put(image, gx + col, ty + TAG_PADDING + row as u32, ink);
                }
            }
        }
    }
}

/// Encodes an RGB image as PNG bytes.
pub fn png_bytes(image: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .context("encoding a PNG")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdet_structures::{Boxes, ImageSize, Xyxy};

    const GRAY: Rgb<u8> = Rgb([50, 60, 70]);

    fn names() -> Vec<String> {
        vec!["circle".into(), "square".into()]
    }

    fn dets(boxes: Vec<[f32; 4]>, classes: Vec<usize>, scores: Vec<f32>) -> Instances {
        Instances::new(ImageSize::new(64, 64), Boxes::<Xyxy>::new(boxes), classes)
            .expect("as many classes as boxes")
            .with_scores(scores)
            .expect("as many scores as boxes")
    }

    fn canvas() -> RgbImage {
        RgbImage::from_pixel(64, 64, GRAY)
    }

    #[test]
    fn palette_is_fixed_and_distinct() {
        assert_eq!(class_color(0), Rgb([31, 119, 180]));
        let colors: Vec<Rgb<u8>> = (0..300).map(class_color).collect();
        for (i, a) in colors.iter().enumerate() {
            for b in &colors[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(class_color(123), class_color(123));
    }

    #[test]
    fn outline_is_exactly_the_class_colour_and_nothing_else_inside_or_outside() {
        let mut img = canvas();
        // Pixels 20..=39 x 30..=49; the tag sits above (y 20..=29).
        let n = draw_detections(
            &mut img,
            &dets(vec![[20.0, 30.0, 40.0, 50.0]], vec![1], vec![0.9]),
            &names(),
            0.3,
        );
        assert_eq!(n, 1);
        let color = class_color(1);
        for y in 30..50 {
            for x in 20..40 {
                let band = !(22..=37).contains(&x) || !(32..=47).contains(&y);
                if band {
                    assert_eq!(*img.get_pixel(x, y), color, "outline at ({x}, {y})");
                } else {
                    assert_eq!(*img.get_pixel(x, y), GRAY, "inside at ({x}, {y})");
                }
            }
        }
        // Outside the box and its tag: untouched.
        for (x, y) in [(19, 35), (40, 35), (30, 50), (5, 5), (63, 63), (30, 19)] {
            assert_eq!(*img.get_pixel(x, y), GRAY, "outside at ({x}, {y})");
        }
    }

    #[test]
    fn rounding_follows_the_documented_rule() {
        assert_eq!(
            outline_rect([10.4, 10.5, 20.5, 20.49], 64, 64),
            Some([10, 11, 20, 19])
        );
        // Degenerate boxes still cover one pixel; non-finite ones are not drawn.
        assert_eq!(
            outline_rect([5.0, 5.0, 5.0, 5.0], 64, 64),
            Some([5, 5, 5, 5])
        );
        assert_eq!(outline_rect([f32::NAN, 0.0, 1.0, 1.0], 64, 64), None);
        assert_eq!(outline_rect([0.0, 0.0, 1.0, 1.0], 0, 64), None);
    }

    #[test]
    fn boxes_are_clipped_to_the_image() {
        let mut img = canvas();
        let n = draw_detections(
            &mut img,
            &dets(vec![[-10.0, -5.0, 100.0, 30.0]], vec![0], vec![0.5]),
            &names(),
            0.0,
        );
        assert_eq!(n, 1);
        let color = class_color(0);
        // The clipped rectangle is 0..=63 x 0..=29: its outline runs along the image edges.
        for x in 0..64 {
            assert_eq!(*img.get_pixel(x, 29), color, "bottom edge at x {x}");
            assert_eq!(*img.get_pixel(x, 0), color, "top edge at x {x}");
        }
        for y in 0..30 {
            assert_eq!(*img.get_pixel(0, y), color);
            assert_eq!(*img.get_pixel(63, y), color);
        }
        // The tag (no room above) went inside, under the top outline; below the box all
        // is untouched.
        assert_ne!(*img.get_pixel(5, 5), GRAY);
        for y in 30..64 {
            for x in 0..64 {
                assert_eq!(*img.get_pixel(x, y), GRAY, "below the box at ({x}, {y})");
            }
        }
    }

    #[test]
    fn below_threshold_detections_are_not_drawn() {
        let boxes = vec![[10.0, 20.0, 30.0, 40.0], [40.0, 40.0, 60.0, 60.0]];
        let mut img = canvas();
        let below = dets(boxes.clone(), vec![0, 1], vec![0.29, 0.0]);
        assert_eq!(draw_detections(&mut img, &below, &names(), 0.3), 0);
        assert!(img.pixels().all(|p| *p == GRAY));
        // A score equal to the threshold is drawn.
        let at = dets(boxes, vec![0, 1], vec![0.29, 0.3]);
        assert_eq!(draw_detections(&mut img, &at, &names(), 0.3), 1);
        assert_eq!(*img.get_pixel(40, 40), class_color(1));
        assert_eq!(*img.get_pixel(10, 25), GRAY, "the 0.29 box");
    }

    #[test]
    fn text_renders_on_the_tag() {
        let mut img = canvas();
        draw_detections(
            &mut img,
            &dets(vec![[4.0, 30.0, 60.0, 60.0]], vec![0], vec![0.87]),
            &names(),
            0.3,
        );
        // "circle 0.87" is 11 characters: an 90 x 10 tag, shifted left to fit: x 0..=63
        // (clipped), y 20..=29.
        let color = class_color(0);
        let tag: Vec<Rgb<u8>> = (20..30)
            .flat_map(|y| (0..64).map(move |x| (x, y)))
            .map(|(x, y)| *img.get_pixel(x, y))
            .collect();
        let background = tag.iter().filter(|p| **p == color).count();
        let ink = tag.iter().filter(|p| **p == Rgb([255, 255, 255])).count();
        assert!(
            background > 0 && ink > 20,
            "background {background}, ink {ink}"
        );
        assert_eq!(background + ink, tag.len(), "only tag colour and ink");
        // The first glyph, 'c', starts one pixel in: its column 0 is empty, its row 2
        // (".XXXX..." in font8x8: 0x1E) has ink at x 2..=5.
        assert_eq!(tag_text(0, Some(0.87), &names()), "circle 0.87");
        let row = 20 + TAG_PADDING + 2;
        let inked: Vec<u32> = (0..10)
            .filter(|&x| *img.get_pixel(x, row) == Rgb([255, 255, 255]))
            .collect();
        assert_eq!(inked, vec![2, 3, 4, 5]);
    }

    #[test]
    fn drawing_is_deterministic_and_the_most_confident_is_on_top() {
        let d = dets(
            vec![[10.0, 20.0, 30.0, 40.0], [10.0, 20.0, 30.0, 40.0]],
            vec![1, 0],
            vec![0.9, 0.4],
        );
        let mut a = canvas();
        let mut b = canvas();
        assert_eq!(draw_detections(&mut a, &d, &names(), 0.3), 2);
        draw_detections(&mut b, &d, &names(), 0.3);
        assert_eq!(a, b);
        // Same box for both classes: the 0.9 one (class 1) is drawn last.
        assert_eq!(*a.get_pixel(10, 20), class_color(1));
        // Unknown class indices get a generic name.
        assert_eq!(tag_text(7, None, &names()), "class 7");
    }

    #[test]
    fn png_round_trips() {
        let mut img = canvas();
        img.put_pixel(3, 4, Rgb([1, 2, 3]));
        let bytes = png_bytes(&img).expect("encodes");
        let back = image::load_from_memory(&bytes).expect("decodes").to_rgb8();
        assert_eq!(back, img);
    }
}
