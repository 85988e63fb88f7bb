//! COCO instance annotations: reading, validation and label mapping.
//!
//! Parsing, the schema and the RLE/polygon codecs are hotcoco's (`hotcoco::COCO`,
//! `hotcoco::types`, `hotcoco::mask`); this module adds what kdet needs on top:
//!
//! - **Labels**: COCO category ids are not contiguous (1..90 with gaps). Categories are
//!   sorted by id and label `i` is the `i`-th; [`LabelMap`] (from kdet-structures, shared
//!   with the evaluator) maps both ways.
//! - **Validation** with errors naming the file and the record. The rules:
//!   - error: malformed JSON; no categories; duplicate image or category ids; an image
//!     with zero width/height; an annotation whose `image_id` or `category_id` is unknown;
//!     a box with a non-finite value or a negative width/height; an annotation with
//!     neither box nor segmentation; an RLE whose size differs from its image's; a
//!     polygon with fewer than 3 points or an odd number of coordinates.
//!   - skip with a warning (counted in [`LoadReport`]): a box of zero width or height;
//!     a box entirely outside its image.
//!   - fix with a warning (counted): a box that sticks out of its image is clipped to it.
//!   - kept: images without annotations (negatives), unless `CocoOptions::filter_empty`.
//! - **Records**: per image, `Instances` with `[x1, y1, x2, y2]` boxes, labels, crowd
//!   flags and masks (polygons stay polygons; RLEs stay RLEs; uncompressed crowd RLEs
//!   are converted with hotcoco, as pycocotools' `annToRLE` does).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hotcoco::COCO;
use hotcoco::types::Segmentation;
use image::RgbImage;
pub use kdet_structures::LabelMap;
use kdet_structures::{Boxes, ImageSize, Instances, Mask, Masks, Xyxy};

use crate::DataError;
use crate::image_io::read_rgb;

/// Reader options.
#[derive(Debug, Clone, Default)]
pub struct CocoOptions {
    /// Drop images that have no (non-crowd) annotation, as detectron2's
    /// `filter_empty_annotations` does for training. Default: keep them.
    pub filter_empty: bool,
}

/// What the reader skipped or fixed, with the first few examples of each.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub images: usize,
    pub annotations: usize,
    pub crowd_annotations: usize,
    pub images_without_annotations: usize,
    pub filtered_empty_images: usize,
    pub skipped_zero_size: usize,
    pub skipped_outside: usize,
    pub clipped: usize,
    /// Human-readable warnings (at most a few per kind).
    pub warnings: Vec<String>,
}

impl LoadReport {
    fn warn(&mut self, count: usize, msg: String) {
        if count <= 3 {
            self.warnings.push(msg);
        }
    }
}

/// One image of a COCO dataset with its ground truth.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub image_id: u64,
    pub file_name: String,
    pub size: ImageSize,
    /// Ground truth in this image's pixels; crowd regions flagged in `crowd()`.
    pub instances: Instances,
    /// The COCO annotation id of each instance.
    pub annotation_ids: Vec<u64>,
}

/// A validated COCO dataset: records in ascending image id order.
pub struct CocoDataset {
    json_path: PathBuf,
    image_dir: PathBuf,
    coco: COCO,
    labels: LabelMap,
    records: Vec<ImageRecord>,
    report: LoadReport,
}

impl std::fmt::Debug for CocoDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CocoDataset")
            .field("json_path", &self.json_path)
            .field("image_dir", &self.image_dir)
            .field("images", &self.records.len())
            .field("classes", &self.labels.len())
            .finish()
    }
}

/// Parses a COCO JSON file with hotcoco, turning its errors into ones naming the file.
pub fn read_coco_json(path: &Path) -> Result<COCO, DataError> {
    if !path.is_file() {
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "annotation file not found"),
        ));
    }
    COCO::new(path).map_err(|e| match e {
        hotcoco::error::Error::Json(j) => DataError::Json {
            path: path.to_path_buf(),
            message: j.to_string(),
        },
        hotcoco::error::Error::Io(io) => DataError::io(path, io),
        other => DataError::invalid(path, other.to_string()),
    })
}

impl CocoDataset {
    /// Reads `json_path`; image `file_name`s are resolved against `image_dir`.
    pub fn load(
        json_path: &Path,
        image_dir: &Path,
        options: &CocoOptions,
    ) -> Result<Self, DataError> {
        let coco = read_coco_json(json_path)?;
        Self::from_coco(coco, json_path, image_dir, options)
    }

    /// Validates an already parsed dataset (`json_path` is used in messages).
    pub fn from_coco(
        coco: COCO,
        json_path: &Path,
        image_dir: &Path,
        options: &CocoOptions,
    ) -> Result<Self, DataError> {
        let path = json_path;
        let ds = &coco.dataset;
        if ds.categories.is_empty() {
            return Err(DataError::invalid(
                path,
                "no categories: a COCO instances file needs a non-empty `categories` list",
            ));
        }
        let labels =
            LabelMap::from_categories(&ds.categories).map_err(|m| DataError::invalid(path, m))?;
        let mut report = LoadReport {
            images: ds.images.len(),
            ..Default::default()
        };

        let mut images: Vec<&hotcoco::types::Image> = ds.images.iter().collect();
        images.sort_by_key(|i| i.id);
        let mut index_of: HashMap<u64, usize> = HashMap::with_capacity(images.len());
        for (k, img) in images.iter().enumerate() {
            if index_of.insert(img.id, k).is_some() {
                return Err(DataError::invalid(
                    path,
                    format!("image id {} appears twice", img.id),
                ));
            }
            if img.width == 0 || img.height == 0 {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "image id {} ({:?}) has no width/height",
                        img.id, img.file_name
                    ),
                ));
            }
        }

        struct Pending {
            boxes: Vec<[f32; 4]>,
            classes: Vec<usize>,
            crowd: Vec<bool>,
            masks: Vec<Option<Mask>>,
            ids: Vec<u64>,
        }
        let mut pending: Vec<Pending> = images
            .iter()
            .map(|_| Pending {
                boxes: Vec::new(),
                classes: Vec::new(),
                crowd: Vec::new(),
                masks: Vec::new(),
                ids: Vec::new(),
            })
            .collect();

        for ann in &ds.annotations {
            let Some(&k) = index_of.get(&ann.image_id) else {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "annotation id {} refers to image id {}, which is not in `images`",
                        ann.id, ann.image_id
                    ),
                ));
            };
            let Some(label) = labels.label(ann.category_id) else {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "annotation id {} (image id {}) has category id {}, which is not in `categories`",
                        ann.id, ann.image_id, ann.category_id
                    ),
                ));
            };
            let img = images[k];
            let (h, w) = (img.height, img.width);
            let mask = match &ann.segmentation {
                Some(seg) => Some(validate_segmentation(seg, h, w).map_err(|m| {
                    DataError::invalid(
                        path,
                        format!("annotation id {} (image id {}): {m}", ann.id, ann.image_id),
                    )
                })?),
                None => None,
            };
            let bbox = match (ann.bbox, &mask) {
                (Some(b), _) => b,
                (None, Some(m)) => {
                    let rle = m.to_rle(h, w).map_err(|e| DataError::Structures {
                        context: format!("{}: annotation id {}", path.display(), ann.id),
                        source: e,
                    })?;
                    hotcoco::mask::to_bbox(&rle)
                }
                (None, None) => {
                    return Err(DataError::invalid(
                        path,
                        format!(
                            "annotation id {} (image id {}) has neither `bbox` nor `segmentation`",
                            ann.id, ann.image_id
                        ),
                    ));
                }
            };
            if bbox.iter().any(|v| !v.is_finite()) {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "annotation id {} (image id {}) has a non-finite bbox {bbox:?}",
                        ann.id, ann.image_id
                    ),
                ));
            }
            let [x, y, bw, bh] = bbox;
            if bw < 0.0 || bh < 0.0 {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "annotation id {} (image id {}) has a negative-size bbox {bbox:?}",
                        ann.id, ann.image_id
                    ),
                ));
            }
            if bw == 0.0 || bh == 0.0 {
                report.skipped_zero_size += 1;
                report.warn(
                    report.skipped_zero_size,
                    format!(
                        "skipped annotation id {} (image id {}): zero-size bbox {bbox:?}",
                        ann.id, ann.image_id
                    ),
                );
                continue;
            }
            let (fw, fh) = (f64::from(w), f64::from(h));
            let clipped = [
                x.clamp(0.0, fw),
                y.clamp(0.0, fh),
                (x + bw).clamp(0.0, fw),
                (y + bh).clamp(0.0, fh),
            ];
            if clipped[2] <= clipped[0] || clipped[3] <= clipped[1] {
                report.skipped_outside += 1;
                report.warn(
                    report.skipped_outside,
                    format!("skipped annotation id {} (image id {}): bbox {bbox:?} lies outside the {w}x{h} image", ann.id, ann.image_id),
                );
                continue;
            }
            // A pixel of slack: COCO's own boxes sometimes end a fraction past the border.
            if x < -1.0 || y < -1.0 || x + bw > fw + 1.0 || y + bh > fh + 1.0 {
                report.clipped += 1;
                report.warn(
                    report.clipped,
                    format!("clipped annotation id {} (image id {}): bbox {bbox:?} exceeds the {w}x{h} image", ann.id, ann.image_id),
                );
            }
            let p = &mut pending[k];
            p.boxes.push(clipped.map(|v| v as f32));
            p.classes.push(label);
            p.crowd.push(ann.iscrowd);
            p.masks.push(mask);
            p.ids.push(ann.id);
            report.annotations += 1;
            report.crowd_annotations += usize::from(ann.iscrowd);
        }

        let mut records = Vec::with_capacity(images.len());
        for (img, p) in images.iter().zip(pending) {
            let size = ImageSize::new(img.height, img.width);
            let has_objects = p.crowd.iter().any(|c| !c);
            if !has_objects {
                report.images_without_annotations += 1;
                if options.filter_empty {
                    report.filtered_empty_images += 1;
                    continue;
                }
            }
            let ctx = |e| DataError::Structures {
                context: format!("{}: image id {}", path.display(), img.id),
                source: e,
            };
            let mut inst = Instances::new(size, Boxes::<Xyxy>::new(p.boxes), p.classes)
                .and_then(|i| i.with_crowd(p.crowd))
                .map_err(ctx)?;
            // Masks are attached only when every annotation of the image has one, so that
            // the equal-length invariant holds; box-only datasets have none.
            if !p.masks.is_empty() && p.masks.iter().all(Option::is_some) {
                let masks = Masks::new(
                    size.height,
                    size.width,
                    p.masks.into_iter().flatten().collect(),
                )
                .map_err(ctx)?;
                inst = inst.with_masks(masks).map_err(ctx)?;
            }
            records.push(ImageRecord {
                image_id: img.id,
                file_name: img.file_name.clone(),
                size,
                instances: inst,
                annotation_ids: p.ids,
            });
        }
        let mut seen = HashSet::new();
        if let Some(r) = records.iter().find(|r| !seen.insert(r.file_name.as_str())) {
            report.warnings.push(format!(
                "file name {:?} is used by more than one image",
                r.file_name
            ));
        }

        Ok(Self {
            json_path: json_path.to_path_buf(),
            image_dir: image_dir.to_path_buf(),
            coco,
            labels,
            records,
            report,
        })
    }

    /// The annotation file this dataset was read from.
    pub fn json_path(&self) -> &Path {
        &self.json_path
    }

    /// The directory image file names are relative to.
    pub fn image_dir(&self) -> &Path {
        &self.image_dir
    }

    /// The parsed hotcoco dataset (for evaluation against this ground truth).
    pub fn coco(&self) -> &COCO {
        &self.coco
    }

    pub fn labels(&self) -> &LabelMap {
        &self.labels
    }

    pub fn records(&self) -> &[ImageRecord] {
        &self.records
    }

    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Path of record `index`'s image file.
    pub fn image_path(&self, index: usize) -> PathBuf {
        self.image_dir.join(&self.records[index].file_name)
    }

    /// Decodes record `index`'s image and checks its size against the annotation file.
    pub fn load_image(&self, index: usize) -> Result<RgbImage, DataError> {
        let r = &self.records[index];
        let path = self.image_path(index);
        let img = read_rgb(&path, r.image_id)?;
        if (img.width(), img.height()) != (r.size.width, r.size.height) {
            return Err(DataError::ImageSize {
                path,
                image_id: r.image_id,
                expected_w: r.size.width,
                expected_h: r.size.height,
                got_w: img.width(),
                got_h: img.height(),
            });
        }
        Ok(img)
    }
}

/// Checks a segmentation against its image and converts it to a [`Mask`].
fn validate_segmentation(seg: &Segmentation, h: u32, w: u32) -> Result<Mask, String> {
    if let Some(polys) = seg.polygons() {
        for (k, ring) in polys.iter().enumerate() {
            if ring.len() % 2 != 0 || ring.len() < 6 {
                return Err(format!(
                    "polygon {k} has {} coordinates (needs an even number, at least 6)",
                    ring.len()
                ));
            }
            if ring.iter().any(|v| !v.is_finite()) {
                return Err(format!("polygon {k} has a non-finite coordinate"));
            }
        }
        return Ok(Mask::Polygons(polys.into_owned()));
    }
    let rle_ref = seg.rle_ref().ok_or("unsupported segmentation encoding")?;
    let rle = rle_ref.to_rle().map_err(|e| format!("bad RLE: {e}"))?;
    if (rle.h, rle.w) != (h, w) {
        return Err(format!(
            "RLE size is {}x{} (h x w) but the image is {h}x{w}",
            rle.h, rle.w
        ));
    }
    let total: u64 = rle.counts.iter().map(|&c| u64::from(c)).sum();
    if total != u64::from(h) * u64::from(w) {
        return Err(format!(
            "RLE runs cover {total} pixels, the image has {}",
            u64::from(h) * u64::from(w)
        ));
    }
    Ok(Mask::Rle(rle))
}
