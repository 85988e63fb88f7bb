//! Files: atomic writes, PNG encoding, the COCO split writer.

use super::{CLASS_NAMES, Split, SynthConfig, SynthError, SynthObject, generate_image};
use hotcoco::types::{Annotation, Category, Dataset, Image, Info, Rle, Segmentation};
use image::ImageEncoder;
use rayon::prelude::*;
use std::path::Path;

pub(crate) fn create_dir(path: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(path).map_err(|source| SynthError::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Atomic write (temporary file, then rename) with the synth error type.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    crate::image_io::write_atomic_io(path, bytes)
        .map_err(|(path, source)| SynthError::Write { path, source })
}

/// Encode as PNG (deterministic: fixed compression and filter) and write atomically.
pub(crate) fn write_png(path: &Path, rgb: &image::RgbImage) -> Result<(), SynthError> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut bytes,
        image::codecs::png::CompressionType::Fast,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(
        rgb.as_raw(),
        rgb.width(),
        rgb.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|source| SynthError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// Serialize compact JSON (annotation files are large) and write it atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), SynthError> {
    let bytes = serde_json::to_vec(value).map_err(|source| SynthError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)
}

/// RLE of a column-major mask of the generator's own making.
pub(crate) fn encode_mask(mask: &[u8], height: u32, width: u32) -> Rle {
    hotcoco::mask::encode(mask, height, width).expect("generated masks have height * width pixels")
}

pub(crate) fn compressed(rle: &Rle) -> Segmentation {
    Segmentation::CompressedRle {
        size: [rle.h, rle.w],
        counts: hotcoco::mask::rle_to_string(rle),
    }
}

pub(crate) fn categories() -> Vec<Category> {
    CLASS_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| Category {
            id: i as u64 + 1,
            name: (*name).to_string(),
            supercategory: Some("shape".to_string()),
            ..Default::default()
        })
        .collect()
}

pub(crate) fn info(cfg: &SynthConfig, split: Split, what: &str) -> Info {
    Info {
        year: None,
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        description: Some(format!(
            "kdet synthetic shapes ({what}), split {}, seed {}",
            split.name(),
            cfg.seed
        )),
        contributor: Some("kdet-data synth generator".to_string()),
        url: None,
        date_created: None,
    }
}

/// Generate and write `n` images of `split` into `dir` (`images/` and
/// `annotations.json`); returns `(images, instances)`.
pub(crate) fn write_coco_split(
    dir: &Path,
    cfg: &SynthConfig,
    split: Split,
    n: usize,
) -> Result<(usize, usize), SynthError> {
    let images_dir = dir.join("images");
    create_dir(&images_dir)?;
    let size = cfg.image_size;
    // Render and encode in parallel; only the RLEs come back, in index order.
    let per_image: Vec<Vec<(usize, Rle)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let img = generate_image(cfg, split, i);
            write_png(&images_dir.join(file_name(i)), &img.rgb)?;
            Ok(img
                .objects
                .iter()
                .map(|o: &SynthObject| (o.label, encode_mask(&o.mask, size, size)))
                .collect())
        })
        .collect::<Result<_, SynthError>>()?;

    let mut dataset = Dataset {
        info: Some(info(cfg, split, "images")),
        categories: categories(),
        ..Default::default()
    };
    for (i, objects) in per_image.iter().enumerate() {
        let image_id = i as u64 + 1;
        dataset.images.push(Image {
            id: image_id,
            file_name: file_name(i),
            height: size,
            width: size,
            ..Default::default()
        });
        for (label, rle) in objects {
            dataset.annotations.push(Annotation {
                id: dataset.annotations.len() as u64 + 1,
                image_id,
                category_id: *label as u64 + 1,
                bbox: Some(hotcoco::mask::to_bbox(rle)),
                area: Some(hotcoco::mask::area(rle) as f64),
                segmentation: Some(compressed(rle)),
                iscrowd: false,
                ..Default::default()
            });
        }
    }
    write_json(&dir.join("annotations.json"), &dataset)?;
    Ok((n, dataset.annotations.len()))
}

/// `000001.png` for index 0.
pub(crate) fn file_name(index: usize) -> String {
    format!("{:06}.png", index + 1)
}
