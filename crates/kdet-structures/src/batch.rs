//! `ImageBatch`: images padded to a common size and stacked, with each image's original
//! and resized sizes so predictions can be mapped back to original pixels.

use burn::tensor::{Device, Tensor, TensorData};

use crate::StructuresError;
use crate::instances::ImageSize;

/// A batch of images.
///
/// `images` is `[B, C, H, W]`; image `i` occupies the top-left
/// `resized_sizes[i].height x resized_sizes[i].width` region, the rest is padding.
/// `original_sizes[i]` is the size of the file before resizing.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    images: Tensor<4>,
    original_sizes: Vec<ImageSize>,
    resized_sizes: Vec<ImageSize>,
}

/// One image ready for batching: CHW `f32` values (already normalised) and its sizes.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// `channels * height * width` values, channel-major.
    pub chw: Vec<f32>,
    pub channels: usize,
    /// Size of `chw`'s image (after resizing).
    pub size: ImageSize,
    /// Size of the image file before any resizing.
    pub original_size: ImageSize,
}

impl ImageBatch {
    /// Checks that the size lists match the batch and fit inside the padded canvas.
    pub fn new(
        images: Tensor<4>,
        original_sizes: Vec<ImageSize>,
        resized_sizes: Vec<ImageSize>,
    ) -> Result<Self, StructuresError> {
        let [b, _, h, w] = images.dims();
        if original_sizes.len() != b || resized_sizes.len() != b {
            return Err(StructuresError::Batch(format!(
                "{b} images but {} original and {} resized sizes",
                original_sizes.len(),
                resized_sizes.len()
            )));
        }
        if let Some((i, s)) = resized_sizes
            .iter()
            .enumerate()
            .find(|(_, s)| s.height as usize > h || s.width as usize > w)
        {
            return Err(StructuresError::Batch(format!(
                "image {i} is {}x{} but the padded batch is {h}x{w}",
                s.height, s.width
            )));
        }
        Ok(Self {
            images,
            original_sizes,
            resized_sizes,
        })
    }

    /// Pads every item (with `pad_value`) to the largest height and width in the batch,
    /// rounded up to a multiple of `size_divisor` (FPN strides need e.g. 32), and stacks.
    pub fn from_items(
        items: &[BatchItem],
        size_divisor: usize,
        pad_value: f32,
        device: &Device,
    ) -> Result<Self, StructuresError> {
        let first = items
            .first()
            .ok_or_else(|| StructuresError::Batch("cannot batch zero images".into()))?;
        let c = first.channels;
        let div = size_divisor.max(1);
        let round = |v: usize| v.div_ceil(div) * div;
        let h = round(
            items
                .iter()
                .map(|it| it.size.height as usize)
                .max()
                .unwrap_or(0),
        );
        let w = round(
            items
                .iter()
                .map(|it| it.size.width as usize)
                .max()
                .unwrap_or(0),
        );
        let mut data = vec![pad_value; items.len() * c * h * w];
        for (b, it) in items.iter().enumerate() {
            let (ih, iw) = (it.size.height as usize, it.size.width as usize);
            if it.channels != c || it.chw.len() != c * ih * iw {
                return Err(StructuresError::Batch(format!(
                    "item {b}: {} values for {} channels of {ih}x{iw} (batch has {c} channels)",
                    it.chw.len(),
                    it.channels
                )));
            }
            for ch in 0..c {
                for y in 0..ih {
                    let src = &it.chw[(ch * ih + y) * iw..(ch * ih + y + 1) * iw];
                    let dst = ((b * c + ch) * h + y) * w;
                    data[dst..dst + iw].copy_from_slice(src);
                }
            }
        }
        let images = Tensor::<4>::from_data(TensorData::new(data, [items.len(), c, h, w]), device);
        Self::new(
            images,
            items.iter().map(|it| it.original_size).collect(),
            items.iter().map(|it| it.size).collect(),
        )
    }

    /// `[B, C, H, W]`.
    pub fn images(&self) -> &Tensor<4> {
        &self.images
    }

    pub fn into_images(self) -> Tensor<4> {
        self.images
    }

    pub fn original_sizes(&self) -> &[ImageSize] {
        &self.original_sizes
    }

    pub fn resized_sizes(&self) -> &[ImageSize] {
        &self.resized_sizes
    }

    pub fn len(&self) -> usize {
        self.original_sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.original_sizes.is_empty()
    }

    /// The padded canvas size.
    pub fn padded_size(&self) -> ImageSize {
        let [_, _, h, w] = self.images.dims();
        ImageSize::new(h as u32, w as u32)
    }

    /// Moves the pixels to another device (e.g. the teacher's non-autodiff device).
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            images: self.images.clone().to_device(device),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_divisor_and_keeps_pixels() {
        let device = Device::flex();
        let a = BatchItem {
            chw: (0..2 * 3 * 5).map(|v| v as f32).collect(),
            channels: 2,
            size: ImageSize::new(3, 5),
            original_size: ImageSize::new(6, 10),
        };
        let b = BatchItem {
            chw: vec![1.0; 2 * 4 * 2],
            channels: 2,
            size: ImageSize::new(4, 2),
            original_size: ImageSize::new(4, 2),
        };
        let batch = ImageBatch::from_items(&[a, b], 4, -1.0, &device).unwrap();
        assert_eq!(batch.images().dims(), [2, 2, 4, 8]);
        assert_eq!(batch.padded_size(), ImageSize::new(4, 8));
        let v: Vec<f32> = batch.images().to_data().try_to_vec().unwrap();
        // Flat index of (image b, channel c, row y, column x) in the [2, 2, 4, 8] batch.
        let at = |b: usize, c: usize, y: usize, x: usize| ((b * 2 + c) * 4 + y) * 8 + x;
        // Image 0, channel 1, row 2, column 4 = value (1 * 3 + 2) * 5 + 4 = 29.
        assert_eq!(v[at(0, 1, 2, 4)], 29.0);
        // Padding to the right of image 0 and below it; image 1 is all ones.
        assert_eq!(v[at(0, 0, 0, 5)], -1.0);
        assert_eq!(v[at(0, 0, 3, 0)], -1.0);
        assert_eq!(v[at(1, 1, 3, 1)], 1.0);
        assert_eq!(v[at(1, 1, 3, 2)], -1.0);
        assert_eq!(batch.original_sizes()[0], ImageSize::new(6, 10));
    }

    #[test]
    fn inconsistent_batches_are_errors() {
        let device = Device::flex();
        assert!(ImageBatch::from_items(&[], 32, 0.0, &device).is_err());
        let bad = BatchItem {
            chw: vec![0.0; 5],
            channels: 3,
            size: ImageSize::new(2, 2),
            original_size: ImageSize::new(2, 2),
        };
        assert!(ImageBatch::from_items(&[bad], 1, 0.0, &device).is_err());
        let t = Tensor::<4>::zeros([1, 3, 4, 4], &device);
        assert!(ImageBatch::new(t.clone(), vec![ImageSize::new(4, 4)], vec![]).is_err());
        assert!(
            ImageBatch::new(t, vec![ImageSize::new(4, 4)], vec![ImageSize::new(5, 4)]).is_err()
        );
    }
}
