//! The grid of validation images of `kdet report`: rows are the first N images of the
//! validation split (ascending COCO image id), the first column its ground truth, then
//! one column per run with that run's final predictions (`predictions.json`, score >=
//! [`MIN_SCORE`]) drawn by [`crate::draw`].
//!
//! Boxes are drawn at the display size, so outlines and tags stay crisp: small images
//! (the built-in 128 px data) are shown doubled with nearest neighbour, large ones shrunk
//! to [`MAX_SIDE`]. To keep the page light the picture of a row is embedded once (as the
//! CSS background of its cells) and each cell is a transparent PNG of what was drawn: the
//! built-in images are noisy (~40 KB of PNG each at 128 px), a drawing is ~1 KB.

use kdet_run::evaluate::split_folder;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use hotcoco::types::Segmentation;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage, Rgba, RgbaImage};
use kdet_structures::{Boxes, ImageSize, Instances, Mask, Masks, Xyxy};
use serde::Deserialize;

use super::runs::Run;
use crate::draw::{draw_detections, png_bytes};

/// Predictions below this score are not drawn.
pub const MIN_SCORE: f32 = 0.3;
/// Images with both sides at most this are shown doubled.
pub const SMALL_SIDE: u32 = 160;
/// Larger images are shrunk to this longest side.
pub const MAX_SIDE: u32 = 320;

#[derive(Deserialize)]
struct JsonImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct JsonCategory {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct JsonAnnotation {
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    /// Polygons or RLE (mask models' ground truth is drawn with its masks).
    #[serde(default)]
    segmentation: Option<Segmentation>,
    /// `0`/`1` in COCO files, `false`/`true` in some writers.
    #[serde(default)]
    iscrowd: serde_json::Value,
}

#[derive(Deserialize)]
struct JsonSplit {
    images: Vec<JsonImage>,
    #[serde(default)]
    annotations: Vec<JsonAnnotation>,
    categories: Vec<JsonCategory>,
}

/// A COCO result record (`predictions.json`).
#[derive(Deserialize)]
struct JsonResult {
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    score: f64,
    /// A mask model's RLE.
    #[serde(default)]
    segmentation: Option<Segmentation>,
}

/// One object to draw: its xywh box, category id, score (predictions) and mask (where the
/// file has one).
#[derive(Debug, Clone)]
pub struct Object {
    pub bbox: [f64; 4],
    pub category: u64,
    pub score: Option<f32>,
    pub mask: Option<Segmentation>,
}

/// The objects of an image.
type Objects = Vec<Object>;

/// The validation split the grid shows.
pub struct ValSplit {
    pub json: PathBuf,
    pub images_dir: PathBuf,
    /// Label `i` is the `i`-th category by ascending id (as the evaluator and the results
    /// writer number them); for the built-in data these are `synth::CLASS_NAMES`.
    pub class_names: Vec<String>,
    label_of: HashMap<u64, usize>,
    /// `(image id, file name)` of the images shown.
    pub shown: Vec<(u64, String)>,
    ground_truth: HashMap<u64, Objects>,
}

impl ValSplit {
    /// Reads `json` and keeps the first `count` images by id.
    pub fn load(json: &Path, images_dir: &Path, count: usize) -> Result<Self> {
        let text =
            std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let split: JsonSplit = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a COCO annotations file", json.display()))?;
        let mut categories = split.categories;
        categories.sort_by_key(|c| c.id);
        let label_of = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut images: Vec<(u64, String)> = split
            .images
            .into_iter()
            .map(|i| (i.id, i.file_name))
            .collect();
        images.sort_by_key(|i| i.0);
        images.truncate(count);
        let ids: HashSet<u64> = images.iter().map(|i| i.0).collect();
        let mut ground_truth: HashMap<u64, Objects> = HashMap::new();
        for a in split.annotations {
            let crowd = a.iscrowd == serde_json::json!(1) || a.iscrowd == serde_json::json!(true);
            if ids.contains(&a.image_id) && !crowd {
                ground_truth.entry(a.image_id).or_default().push(Object {
                    bbox: a.bbox,
                    category: a.category_id,
                    score: None,
                    mask: a.segmentation,
                });
            }
        }
        Ok(Self {
            json: json.to_path_buf(),
            images_dir: images_dir.to_path_buf(),
            class_names: categories.into_iter().map(|c| c.name).collect(),
            label_of,
            shown: images,
            ground_truth,
        })
    }

    /// The predictions of `predictions.json` on the shown images.
    pub fn predictions(&self, path: &Path) -> Result<HashMap<u64, Objects>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: Vec<JsonResult> = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a list of COCO results", path.display()))?;
        let ids: HashSet<u64> = self.shown.iter().map(|i| i.0).collect();
        let mut by_image: HashMap<u64, Objects> = HashMap::new();
        for r in results {
            if ids.contains(&r.image_id) {
                if !self.label_of.contains_key(&r.category_id) {
                    bail!(
                        "{}: category id {} is not a category of {}",
                        path.display(),
                        r.category_id,
                        self.json.display()
                    );
                }
                by_image.entry(r.image_id).or_default().push(Object {
                    bbox: r.bbox,
                    category: r.category_id,
                    score: Some(r.score as f32),
                    mask: r.segmentation,
                });
            }
        }
        Ok(by_image)
    }

    pub fn ground_truth(&self) -> &HashMap<u64, Objects> {
        &self.ground_truth
    }
}

/// The display size of an image of `width` x `height`.
pub fn display_size(width: u32, height: u32) -> (u32, u32) {
    let side = width.max(height);
    if side <= SMALL_SIDE {
        (width * 2, height * 2)
    } else if side > MAX_SIDE {
        let f = MAX_SIDE as f64 / side as f64;
        let s = |v: u32| ((v as f64 * f).round() as u32).max(1);
        (s(width), s(height))
    } else {
        (width, height)
    }
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The picture under a row's cells, as base64 PNG, shown at [`display_size`]: small
/// images at their own size (the page doubles them, nearest neighbour), large ones
/// shrunk (a triangle filter).
pub fn base_png(image: &RgbImage) -> Result<String> {
    let (w, h) = display_size(image.width(), image.height());
    let png = if w <= image.width() && (w, h) != image.dimensions() {
        png_bytes(&image::imageops::resize(image, w, h, FilterType::Triangle))?
    } else {
        png_bytes(image)?
    };
    Ok(base64_of(&png))
}

/// One cell: the drawn boxes and tags as a transparent base64 PNG of the display size,
/// and how many objects were drawn.
pub struct Cell {
    pub png_base64: String,
    pub width: u32,
    pub height: u32,
    pub drawn: usize,
}

/// Draws `objects` (boxes and masks in the pixels of an image of size `original`) at the
/// display size with [`draw_detections`] and keeps only what it drew, with its opacity:
/// drawn on black (`b`) and on white (`w`), a pixel's alpha is `255 - (w - b)` and its
/// colour `b · 255 / alpha` (an opaque outline or tag: the same in both, alpha 255; a mask's
/// half-transparent fill: alpha about 128; untouched: alpha 0). The row's picture shows
/// through, so each picture is in the page once however many runs there are. Masks are
/// drawn when every object has one.
pub fn draw_cell(
    original: ImageSize,
    objects: &[Object],
    split: &ValSplit,
    min_score: f32,
) -> Result<Cell> {
    // Ground truth of a category the split does not list cannot be named; skip it.
    let objects: Vec<&Object> = objects
        .iter()
        .filter(|o| split.label_of.contains_key(&o.category))
        .collect();
    let boxes: Vec<[f32; 4]> = objects
        .iter()
        .map(|o| {
            let [x, y, w, h] = o.bbox.map(|v| v as f32);
            [x, y, x + w, y + h]
        })
        .collect();
    let classes: Vec<usize> = objects
        .iter()
        .map(|o| split.label_of[&o.category])
        .collect();
    let mut instances = Instances::new(original, Boxes::<Xyxy>::new(boxes), classes)
        .context("building the instances to draw")?;
    if !objects.is_empty() && objects.iter().all(|o| o.score.is_some()) {
        instances = instances
            .with_scores(objects.iter().map(|o| o.score.unwrap_or(0.0)).collect())
            .context("attaching the scores")?;
    }
    if !objects.is_empty() && objects.iter().all(|o| o.mask.is_some()) {
        let masks = objects
            .iter()
            .filter_map(|o| o.mask.as_ref())
            .map(|seg| Mask::from_segmentation(seg, original.height, original.width))
            .collect::<Result<Vec<_>, _>>()
            .context("reading a segmentation to draw")?;
        instances = instances
            .with_masks(Masks::new(original.height, original.width, masks)?)
            .context("attaching the masks")?;
    }
    let (w, h) = display_size(original.width, original.height);
    let instances = instances
        .resize(ImageSize::new(h, w))
        .context("scaling the boxes")?;
    let mut on_black = RgbImage::from_pixel(w, h, Rgb([0, 0, 0]));
    let mut on_white = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let drawn = draw_detections(&mut on_black, &instances, &split.class_names, min_score);
    draw_detections(&mut on_white, &instances, &split.class_names, min_score);
    let overlay = RgbaImage::from_fn(w, h, |x, y| {
        let (b, wh) = (on_black.get_pixel(x, y), on_white.get_pixel(x, y));
        let clear = (0..3)
            .map(|c| wh[c].saturating_sub(b[c]))
            .max()
            .unwrap_or(0);
        match 255 - clear {
            0 => Rgba([0, 0, 0, 0]),
            alpha => {
                let colour = |c: usize| (u32::from(b[c]) * 255 / u32::from(alpha)).min(255) as u8;
                Rgba([colour(0), colour(1), colour(2), alpha])
            }
        }
    });
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, PngFilter::Adaptive)
        .write_image(overlay.as_raw(), w, h, ExtendedColorType::Rgba8)
        .context("encoding a PNG")?;
    Ok(Cell {
        png_base64: base64_of(&png),
        width: w,
        height: h,
        drawn,
    })
}

/// The drawn validation images: headers (ground truth, then the runs with predictions)
/// and rows of cells.
pub struct Grid {
    pub headers: Vec<String>,
    pub class_names: Vec<String>,
    pub rows: Vec<GridRow>,
}

/// An image of the grid.
pub struct GridRow {
    pub id: u64,
    pub file_name: String,
    /// The picture (base64 PNG), the background of every cell of the row.
    pub picture: String,
    /// Ground truth, then one per run column.
    pub cells: Vec<Cell>,
}

/// Reads the validation split (`data`, else the first run's experiment) and draws the
/// first `count` images with the ground truth and each run's predictions. What cannot be
/// shown (no data, no predictions, another split) becomes a note.
pub fn image_grid(
    runs: &[Run],
    count: usize,
    data: Option<&Path>,
    notes: &mut Vec<String>,
) -> Result<Grid> {
    let mut grid = Grid {
        headers: Vec::new(),
        class_names: Vec::new(),
        rows: Vec::new(),
    };
    if count == 0 {
        return Ok(grid);
    }
    let source = match data {
        Some(dir) => Some(split_folder(dir)?),
        None => runs
            .iter()
            .filter_map(|r| Some(r.experiment.as_ref()?.split_paths()))
            .map(|p| (p.val_json, p.val_images))
            .next(),
    };
    let Some((json, images_dir)) = source else {
        notes.push("no run has a readable config.toml: no image grid (give --data DIR)".into());
        return Ok(grid);
    };
    if !json.is_file() {
        notes.push(format!(
            "{} is not there (data moved or deleted?): no image grid (give --data DIR)",
            json.display()
        ));
        return Ok(grid);
    }
    let split = ValSplit::load(&json, &images_dir, count)?;
    let mut columns = Vec::new();
    for r in runs {
        let Some(path) = &r.predictions else {
            notes.push(format!(
                "{}: no predictions.json: no column in the image grid",
                r.label
            ));
            continue;
        };
        let val_json = r
            .experiment
            .as_ref()
            .map(|e| e.split_paths())
            .map(|p| p.val_json);
        if data.is_none()
            && let Some(v) = val_json
            && v != json
        {
            notes.push(format!(
                "{}: evaluated on {}, not {}: no column in the image grid",
                r.label,
                v.display(),
                json.display()
            ));
            continue;
        }
        columns.push((r.label.clone(), split.predictions(path)?));
    }
    grid.headers = std::iter::once("ground truth".to_string())
        .chain(columns.iter().map(|c| c.0.clone()))
        .collect();
    grid.class_names = split.class_names.clone();
    for (id, file_name) in &split.shown {
        let path = split.images_dir.join(file_name);
        let image = match kdet_data::image_io::read_rgb(&path, *id) {
            Ok(i) => i,
            Err(e) => {
                notes.push(format!("image {id} skipped: {e}"));
                continue;
            }
        };
        let original = kdet_structures::ImageSize::new(image.height(), image.width());
        let none = Vec::new();
        let gt = split.ground_truth().get(id).unwrap_or(&none);
        let mut cells = vec![draw_cell(original, gt, &split, 0.0)?];
        for (_, predictions) in &columns {
            let objects = predictions.get(id).unwrap_or(&none);
            cells.push(draw_cell(original, objects, &split, MIN_SCORE)?);
        }
        grid.rows.push(GridRow {
            id: *id,
            file_name: file_name.clone(),
            picture: base_png(&image)?,
            cells,
        });
    }
    Ok(grid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_images_double_large_ones_shrink() {
        assert_eq!(display_size(128, 128), (256, 256));
        assert_eq!(display_size(64, 48), (128, 96));
        assert_eq!(display_size(300, 200), (300, 200));
        assert_eq!(display_size(640, 480), (320, 240));
    }

    #[test]
    fn boxes_follow_the_resize_and_low_scores_are_not_drawn() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let json = dir.join("a.json");
        std::fs::write(
            &json,
            r#"{"images":[{"id":2,"file_name":"b.png"},{"id":1,"file_name":"a.png"}],
                "annotations":[{"image_id":1,"category_id":7,"bbox":[4,4,20,20]}],
                "categories":[{"id":7,"name":"star"},{"id":3,"name":"triangle"}]}"#,
        )
        .expect("write");
        let split = ValSplit::load(&json, &dir, 1).expect("loads");
        assert_eq!(split.shown, vec![(1, "a.png".to_string())]);
        assert_eq!(split.class_names, vec!["triangle", "star"]);
        let gt = &split.ground_truth()[&1];
        let cell = draw_cell(ImageSize::new(64, 64), gt, &split, 0.0).expect("draws");
        assert_eq!((cell.width, cell.height, cell.drawn), (128, 128, 1));
        let object = |bbox: [f64; 4], category: u64, score: f32| Object {
            bbox,
            category,
            score: Some(score),
            mask: None,
        };
        let preds = vec![
            object([4.0, 4.0, 20.0, 20.0], 3, 0.9),
            object([30.0, 30.0, 10.0, 10.0], 7, 0.5),
            object([1.0, 1.0, 5.0, 5.0], 7, 0.1),
        ];
        let cell = draw_cell(ImageSize::new(64, 64), &preds, &split, MIN_SCORE).expect("draws");
        assert_eq!(cell.drawn, 2);
        let png = base64::engine::general_purpose::STANDARD
            .decode(&cell.png_base64)
            .expect("base64");
        let overlay = image::load_from_memory(&png).expect("a PNG").to_rgba8();
        assert_eq!(overlay.dimensions(), (128, 128));
        // The box [4, 4, 24, 24] becomes [8, 8, 48, 48]: its outline starts at pixel 8.
        assert_eq!(
            overlay.get_pixel(8, 20).0[..3],
            crate::draw::class_color(0).0
        );
        assert_eq!(overlay.get_pixel(6, 20).0[3], 0);
        // Over any picture the overlay gives exactly what drawing on the picture gives.
        let picture = RgbImage::from_fn(128, 128, |x, y| Rgb([(x * 2) as u8, (y * 2) as u8, 128]));
        let mut direct = picture.clone();
        let dets = Instances::new(
            ImageSize::new(128, 128),
            Boxes::<Xyxy>::new(vec![[8.0, 8.0, 48.0, 48.0], [60.0, 60.0, 80.0, 80.0]]),
            vec![0, 1],
        )
        .expect("instances")
        .with_scores(vec![0.9, 0.5])
        .expect("scores");
        draw_detections(&mut direct, &dets, &split.class_names, MIN_SCORE);
        let composed = RgbImage::from_fn(128, 128, |x, y| {
            let o = overlay.get_pixel(x, y).0;
            if o[3] == 255 {
                Rgb([o[0], o[1], o[2]])
            } else {
                *picture.get_pixel(x, y)
            }
        });
        assert!(
            composed == direct,
            "the overlay differs from drawing on the picture"
        );
    }

    /// A mask model's ground truth (polygons) is drawn with its masks, half transparent: the
    /// overlay over any picture gives what drawing on the picture gives, within rounding.
    #[test]
    fn masks_are_drawn_half_transparent_over_any_picture() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let json = tmp.path().join("a.json");
        std::fs::write(
            &json,
            r#"{"images":[{"id":1,"file_name":"a.png"}],
                "annotations":[{"image_id":1,"category_id":3,"bbox":[4,4,20,20],
                  "segmentation":[[4,4,24,4,24,24,4,24]]}],
                "categories":[{"id":3,"name":"triangle"}]}"#,
        )
        .expect("write");
        let split = ValSplit::load(&json, tmp.path(), 1).expect("loads");
        let gt = &split.ground_truth()[&1];
        assert!(gt[0].mask.is_some());
        let cell = draw_cell(ImageSize::new(64, 64), gt, &split, 0.0).expect("draws");
        let png = base64::engine::general_purpose::STANDARD
            .decode(&cell.png_base64)
            .expect("base64");
        let overlay = image::load_from_memory(&png).expect("a PNG").to_rgba8();
        // Inside the mask, away from the outline: half transparent.
        let inside = overlay.get_pixel(30, 30).0;
        assert!((120..=135).contains(&inside[3]), "{inside:?}");
        let picture = RgbImage::from_fn(128, 128, |x, y| Rgb([(x * 2) as u8, (y * 2) as u8, 128]));
        let mut direct = picture.clone();
        let masks = Masks::new(
            128,
            128,
            vec![Mask::Polygons(vec![vec![
                8.0, 8.0, 48.0, 8.0, 48.0, 48.0, 8.0, 48.0,
            ]])],
        )
        .expect("masks");
        let dets = Instances::new(
            ImageSize::new(128, 128),
            Boxes::<Xyxy>::new(vec![[8.0, 8.0, 48.0, 48.0]]),
            vec![0],
        )
        .expect("instances")
        .with_masks(masks)
        .expect("masks fit");
        draw_detections(&mut direct, &dets, &split.class_names, 0.0);
        for (x, y, p) in picture.enumerate_pixels() {
            let o = overlay.get_pixel(x, y).0;
            let a = u32::from(o[3]);
            for c in 0..3 {
                let composed = (u32::from(o[c]) * a + u32::from(p[c]) * (255 - a)) / 255;
                let want = u32::from(direct.get_pixel(x, y)[c]);
                assert!(
                    composed.abs_diff(want) <= 2,
                    "({x}, {y}) channel {c}: composed {composed}, drawn {want}"
                );
            }
        }
    }
}
