//! Training and test transforms on (image, instances) samples.
//!
//! Geometric steps change the image and its `Instances` together (boxes and masks), so
//! they can never drift apart. Padding to a size divisor happens when a batch is built
//! (`kdet_structures::ImageBatch::from_items`), normalisation when an image becomes a
//! `BatchItem`.
//!
//! Randomness comes from the `rng` passed in; the loader seeds it from (seed, epoch,
//! index), so augmentation is reproducible and independent of thread scheduling.

use image::RgbImage;
use image::imageops::{self, FilterType};
use kdet_structures::{BatchItem, ImageSize, Instances};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// An image with its ground truth.
#[derive(Debug, Clone)]
pub struct Sample {
    pub image_id: u64,
    pub image: RgbImage,
    /// In `image`'s pixels.
    pub instances: Instances,
    /// Size of the image file before any transform.
    pub original_size: ImageSize,
}

/// One transform step (a tagged enum: one `match` in [`TransformConfig::apply`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransformConfig {
    /// Resize keeping the aspect ratio so that the shorter side is `short_side`, unless
    /// the longer side would then exceed `max_size` (detectron2's `ResizeShortestEdge`,
    /// mmdet's `Resize(keep_ratio=True)`). Bilinear for the image.
    Resize { short_side: u32, max_size: u32 },
    /// Mirror left-right with probability `prob` (mmdet `RandomFlip`, default 0.5).
    HorizontalFlip { prob: f64 },
    /// Multiply brightness, contrast and saturation by factors drawn uniformly from
    /// `[1 - x, 1 + x]` (torchvision `ColorJitter` semantics), in random order.
    ColorJitter {
        brightness: f32,
        contrast: f32,
        saturation: f32,
    },
}

impl TransformConfig {
    /// Applies the step.
    pub fn apply(&self, sample: Sample, rng: &mut impl Rng) -> Result<Sample, DataError> {
        match *self {
            TransformConfig::Resize {
                short_side,
                max_size,
            } => resize(sample, short_side, max_size),
            TransformConfig::HorizontalFlip { prob } => {
                if rng.random_bool(prob.clamp(0.0, 1.0)) {
                    flip(sample)
                } else {
                    Ok(sample)
                }
            }
            TransformConfig::ColorJitter {
                brightness,
                contrast,
                saturation,
            } => Ok(color_jitter(sample, brightness, contrast, saturation, rng)),
        }
    }
}

fn structures_err(
    image_id: u64,
    what: &str,
) -> impl FnOnce(kdet_structures::StructuresError) -> DataError + '_ {
    move |e| DataError::Structures {
        context: format!("image id {image_id}: {what}"),
        source: e,
    }
}

/// The output size of a keep-ratio resize of `(h, w)`.
pub fn resized_size(size: ImageSize, short_side: u32, max_size: u32) -> ImageSize {
    let (h, w) = (f64::from(size.height), f64::from(size.width));
    let short = h.min(w).max(1.0);
    let long = h.max(w).max(1.0);
    let mut scale = f64::from(short_side) / short;
    if long * scale > f64::from(max_size) {
        scale = f64::from(max_size) / long;
    }
    ImageSize::new(
        ((h * scale).round() as u32).max(1),
        ((w * scale).round() as u32).max(1),
    )
}

fn resize(s: Sample, short_side: u32, max_size: u32) -> Result<Sample, DataError> {
    let size = ImageSize::new(s.image.height(), s.image.width());
    let new = resized_size(size, short_side, max_size);
    if new == size {
        return Ok(s);
    }
    let image = imageops::resize(&s.image, new.width, new.height, FilterType::Triangle);
    let instances = s
        .instances
        .resize(new)
        .map_err(structures_err(s.image_id, "resize"))?;
    Ok(Sample {
        image,
        instances,
        ..s
    })
}

fn flip(s: Sample) -> Result<Sample, DataError> {
    let image = imageops::flip_horizontal(&s.image);
    let instances = s
        .instances
        .flip_horizontal()
        .map_err(structures_err(s.image_id, "flip"))?;
    Ok(Sample {
        image,
        instances,
        ..s
    })
}

fn color_jitter(
    mut s: Sample,
    brightness: f32,
    contrast: f32,
    saturation: f32,
    rng: &mut impl Rng,
) -> Sample {
    let mut factor = |x: f32| {
        if x > 0.0 {
            rng.random_range(1.0 - x..=1.0 + x).max(0.0)
        } else {
            1.0
        }
    };
    let fb = factor(brightness);
    let fc = factor(contrast);
    let fs = factor(saturation);
    let mut order = [0u8, 1, 2];
    for i in (1..3).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let gray = |p: [f32; 3]| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
    let mut px: Vec<[f32; 3]> = s.image.pixels().map(|p| p.0.map(f32::from)).collect();
    for op in order {
        match op {
            0 => px.iter_mut().for_each(|p| *p = p.map(|v| v * fb)),
            1 => {
                // torchvision blends with the mean of the grayscale image.
                let mean = px.iter().map(|&p| gray(p)).sum::<f32>() / px.len().max(1) as f32;
                px.iter_mut()
                    .for_each(|p| *p = p.map(|v| mean + fc * (v - mean)));
            }
            _ => px.iter_mut().for_each(|p| {
                let g = gray(*p);
                *p = p.map(|v| g + fs * (v - g));
            }),
        }
        px.iter_mut()
            .for_each(|p| *p = p.map(|v| v.clamp(0.0, 255.0)));
    }
    for (dst, src) in s.image.pixels_mut().zip(px) {
        dst.0 = src.map(|v| v.round() as u8);
    }
    s
}

/// Per-channel normalisation `(pixel - mean) / std` on 0..255 RGB values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalize {
    /// ImageNet statistics on the 0..255 scale, as detectron2 and mmdetection configs use.
    fn default() -> Self {
        Self {
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        }
    }
}

impl Normalize {
    /// The sample's image as normalised CHW floats ready for batching.
    pub fn to_batch_item(&self, sample: &Sample) -> BatchItem {
        let (w, h) = sample.image.dimensions();
        let n = (w * h) as usize;
        let mut chw = vec![0.0f32; 3 * n];
        for (i, p) in sample.image.pixels().enumerate() {
            for c in 0..3 {
                chw[c * n + i] = (f32::from(p.0[c]) - self.mean[c]) / self.std[c];
            }
        }
        BatchItem {
            chw,
            channels: 3,
            size: ImageSize::new(h, w),
            original_size: sample.original_size,
        }
    }
}

/// A list of transform steps applied in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub steps: Vec<TransformConfig>,
}

impl Pipeline {
    pub fn new(steps: Vec<TransformConfig>) -> Self {
        Self { steps }
    }

    /// Applies every step in order.
    pub fn apply(&self, mut sample: Sample, rng: &mut impl Rng) -> Result<Sample, DataError> {
        for step in &self.steps {
            sample = step.apply(sample, rng)?;
        }
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdet_structures::{BitMask, Boxes, Mask, Masks, Xyxy};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn sample() -> Sample {
        // 6 wide, 4 high; one object covering x in [1, 3), y in [0, 2).
        let mut img = RgbImage::new(6, 4);
        let mut m = vec![0u8; 24];
        for y in 0..2 {
            for x in 1..3 {
                img.put_pixel(x, y, image::Rgb([200, 10, 10]));
                m[(y * 6 + x) as usize] = 1;
            }
        }
        let size = ImageSize::new(4, 6);
        let masks = Masks::new(4, 6, vec![Mask::Bitmap(BitMask::new(4, 6, m).unwrap())]).unwrap();
        let instances = Instances::new(
            size,
            Boxes::<Xyxy>::new(vec![[1.0, 0.0, 3.0, 2.0]]),
            vec![0],
        )
        .unwrap()
        .with_masks(masks)
        .unwrap();
        Sample {
            image_id: 1,
            image: img,
            instances,
            original_size: size,
        }
    }

    #[test]
    fn resize_keeps_aspect_and_caps_long_side() {
        assert_eq!(
            resized_size(ImageSize::new(480, 640), 800, 1333),
            ImageSize::new(800, 1067)
        );
        assert_eq!(
            resized_size(ImageSize::new(100, 1000), 800, 1333),
            ImageSize::new(133, 1333)
        );
        assert_eq!(
            resized_size(ImageSize::new(128, 128), 128, 128),
            ImageSize::new(128, 128)
        );
        let s = TransformConfig::Resize {
            short_side: 8,
            max_size: 100,
        }
        .apply(sample(), &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap();
        assert_eq!(s.image.dimensions(), (12, 8));
        assert_eq!(s.instances.image_size(), ImageSize::new(8, 12));
        assert_eq!(s.instances.boxes().as_slice()[0], [2.0, 0.0, 6.0, 4.0]);
        assert_eq!(s.instances.masks().unwrap().areas().unwrap(), vec![16]);
        assert_eq!(s.original_size, ImageSize::new(4, 6));
    }

    #[test]
    fn flip_moves_pixels_boxes_and_masks_together() {
        let s = TransformConfig::HorizontalFlip { prob: 1.0 }
            .apply(sample(), &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(s.instances.boxes().as_slice()[0], [3.0, 0.0, 5.0, 2.0]);
        assert_eq!(s.image.get_pixel(3, 0).0, [200, 10, 10]);
        assert_eq!(s.image.get_pixel(1, 0).0, [0, 0, 0]);
        let bm = s.instances.masks().unwrap().to_bitmaps().unwrap();
        for y in 0..4 {
            for x in 0..6 {
                assert_eq!(
                    bm[0].get(x, y),
                    s.image.get_pixel(x, y).0[0] == 200,
                    "({x},{y})"
                );
            }
        }
        let kept = TransformConfig::HorizontalFlip { prob: 0.0 }
            .apply(sample(), &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(kept.instances, sample().instances);
    }

    #[test]
    fn jitter_is_seeded_and_keeps_geometry() {
        let cfg = TransformConfig::ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
        };
        let a = cfg
            .apply(sample(), &mut ChaCha8Rng::seed_from_u64(5))
            .unwrap();
        let b = cfg
            .apply(sample(), &mut ChaCha8Rng::seed_from_u64(5))
            .unwrap();
        assert_eq!(a.image, b.image);
        assert_ne!(a.image, sample().image);
        assert_eq!(a.instances, sample().instances);
    }

    #[test]
    fn normalize_layout() {
        let n = Normalize {
            mean: [100.0, 0.0, 0.0],
            std: [2.0, 1.0, 1.0],
        };
        let item = n.to_batch_item(&sample());
        assert_eq!(item.size, ImageSize::new(4, 6));
        // Channel 0 at (x=1, y=0): (200 - 100) / 2.
        assert_eq!(item.chw[1], 50.0);
        // Channel 1 at (x=1, y=0) = 10.
        assert_eq!(item.chw[24 + 1], 10.0);
    }
}
