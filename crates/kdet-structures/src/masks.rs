//! Instance masks in the three COCO encodings: a bitmap, an RLE, or polygons.
//!
//! The codecs (polygon rasterisation, RLE encode/decode, compressed strings, area, bbox)
//! are hotcoco's, which is a port of pycocotools' `maskApi.c` and matches it bit for bit.
//! This module only adds the per-image container and the geometric transforms the data
//! pipeline needs. `BitMask` is row-major (`data[y * width + x]`), the layout images use;
//! hotcoco's masks are column-major, and the conversion happens at that boundary.

use hotcoco::mask as codec;
use hotcoco::types::{Rle, Segmentation};

use crate::StructuresError;

/// A binary mask, row-major, one byte per pixel (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitMask {
    height: u32,
    width: u32,
    data: Vec<u8>,
}

impl BitMask {
    /// Wraps row-major bytes; every nonzero byte counts as foreground.
    pub fn new(height: u32, width: u32, data: Vec<u8>) -> Result<Self, StructuresError> {
        if data.len() != height as usize * width as usize {
            return Err(StructuresError::Batch(format!(
                "bitmask of {height}x{width} needs {} bytes, got {}",
                height as usize * width as usize,
                data.len()
            )));
        }
        let data = data.into_iter().map(|v| u8::from(v != 0)).collect();
        Ok(Self {
            height,
            width,
            data,
        })
    }

    /// An all-background mask.
    pub fn zeros(height: u32, width: u32) -> Self {
        Self {
            height,
            width,
            data: vec![0; height as usize * width as usize],
        }
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    /// Row-major 0/1 bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Pixel at column `x`, row `y`.
    pub fn get(&self, x: u32, y: u32) -> bool {
        self.data[(y * self.width + x) as usize] != 0
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> u64 {
        self.data.iter().map(|&v| u64::from(v)).sum()
    }

    /// From hotcoco's column-major RLE.
    pub fn from_rle(rle: &Rle) -> Self {
        let (h, w) = (rle.h as usize, rle.w as usize);
        let col = codec::decode(rle);
        let mut data = vec![0u8; h * w];
        for x in 0..w {
            for y in 0..h {
                data[y * w + x] = col[x * h + y];
            }
        }
        Self {
            height: rle.h,
            width: rle.w,
            data,
        }
    }

    /// To hotcoco's column-major RLE.
    pub fn to_rle(&self) -> Result<Rle, StructuresError> {
        let (h, w) = (self.height as usize, self.width as usize);
        let mut col = vec![0u8; h * w];
        for y in 0..h {
            for x in 0..w {
                col[x * h + y] = self.data[y * w + x];
            }
        }
        Ok(codec::encode(&col, self.height, self.width)?)
    }

    /// Mirrored left-right.
    pub fn flip_horizontal(&self) -> Self {
        let w = self.width as usize;
        let mut data = self.data.clone();
        for row in data.chunks_exact_mut(w.max(1)) {
            row.reverse();
        }
        Self { data, ..*self }
    }

    /// Nearest-neighbour resize: output pixel `(x, y)` takes the input pixel that contains
    /// its centre, `floor((x + 0.5) * w_in / w_out)`.
    pub fn resize(&self, height: u32, width: u32) -> Self {
        let (hi, wi) = (self.height as usize, self.width as usize);
        let (ho, wo) = (height as usize, width as usize);
        let mut data = vec![0u8; ho * wo];
        if hi > 0 && wi > 0 {
            let xs: Vec<usize> = (0..wo)
                .map(|x| (((x as f64 + 0.5) * wi as f64 / wo as f64) as usize).min(wi - 1))
                .collect();
            for y in 0..ho {
                let sy = (((y as f64 + 0.5) * hi as f64 / ho as f64) as usize).min(hi - 1);
                let src = &self.data[sy * wi..(sy + 1) * wi];
                let dst = &mut data[y * wo..(y + 1) * wo];
                for (d, &sx) in dst.iter_mut().zip(&xs) {
                    *d = src[sx];
                }
            }
        }
        Self {
            height,
            width,
            data,
        }
    }

    /// Pads with background to `height x width` (content stays at the top-left).
    ///
    /// # Panics
    /// If the target is smaller than the mask (a caller invariant).
    pub fn pad(&self, height: u32, width: u32) -> Self {
        assert!(
            height >= self.height && width >= self.width,
            "pad target is smaller than the mask"
        );
        let mut out = Self::zeros(height, width);
        let (wi, wo) = (self.width as usize, width as usize);
        for y in 0..self.height as usize {
            out.data[y * wo..y * wo + wi].copy_from_slice(&self.data[y * wi..(y + 1) * wi]);
        }
        out
    }
}

/// One instance mask in any COCO encoding. Polygons are in pixel coordinates of the image
/// (`[x0, y0, x1, y1, ...]` per ring, COCO's layout).
#[derive(Debug, Clone, PartialEq)]
pub enum Mask {
    Bitmap(BitMask),
    Rle(Rle),
    Polygons(Vec<Vec<f64>>),
}

impl Mask {
    /// From a COCO `segmentation` on an `height x width` image.
    pub fn from_segmentation(
        seg: &Segmentation,
        height: u32,
        width: u32,
    ) -> Result<Self, StructuresError> {
        if let Some(polys) = seg.polygons() {
            return Ok(Mask::Polygons(polys.into_owned()));
        }
        Ok(Mask::Rle(seg.to_rle(height, width)?))
    }

    /// As an RLE on an `height x width` canvas (polygons are rasterised as pycocotools does).
    pub fn to_rle(&self, height: u32, width: u32) -> Result<Rle, StructuresError> {
        match self {
            Mask::Bitmap(b) => b.to_rle(),
            Mask::Rle(r) => Ok(r.clone()),
            Mask::Polygons(p) => Ok(codec::fr_polys(p, height, width)?),
        }
    }

    /// As a bitmap on an `height x width` canvas.
    pub fn to_bitmap(&self, height: u32, width: u32) -> Result<BitMask, StructuresError> {
        match self {
            Mask::Bitmap(b) => Ok(b.clone()),
            other => Ok(BitMask::from_rle(&other.to_rle(height, width)?)),
        }
    }

    /// As a compressed-RLE COCO segmentation (the results-file encoding).
    pub fn to_compressed_segmentation(
        &self,
        height: u32,
        width: u32,
    ) -> Result<Segmentation, StructuresError> {
        let rle = self.to_rle(height, width)?;
        Ok(Segmentation::CompressedRle {
            size: [rle.h, rle.w],
            counts: codec::rle_to_string(&rle),
        })
    }
}

/// The masks of one image's instances, all on the same `height x width` canvas.
#[derive(Debug, Clone, PartialEq)]
pub struct Masks {
    height: u32,
    width: u32,
    masks: Vec<Mask>,
}

impl Masks {
    /// Checks that every bitmap and RLE has the canvas size.
    pub fn new(height: u32, width: u32, masks: Vec<Mask>) -> Result<Self, StructuresError> {
        for (index, m) in masks.iter().enumerate() {
            let (got_h, got_w) = match m {
                Mask::Bitmap(b) => (b.height, b.width),
                Mask::Rle(r) => (r.h, r.w),
                Mask::Polygons(_) => continue,
            };
            if (got_h, got_w) != (height, width) {
                return Err(StructuresError::MaskSize {
                    index,
                    expected_h: height,
                    expected_w: width,
                    got_h,
                    got_w,
                });
            }
        }
        Ok(Self {
            height,
            width,
            masks,
        })
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn len(&self) -> usize {
        self.masks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    pub fn as_slice(&self) -> &[Mask] {
        &self.masks
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Mask> {
        self.masks.iter()
    }

    /// Every mask as an RLE.
    pub fn to_rles(&self) -> Result<Vec<Rle>, StructuresError> {
        self.masks
            .iter()
            .map(|m| m.to_rle(self.height, self.width))
            .collect()
    }

    /// Every mask as a bitmap.
    pub fn to_bitmaps(&self) -> Result<Vec<BitMask>, StructuresError> {
        self.masks
            .iter()
            .map(|m| m.to_bitmap(self.height, self.width))
            .collect()
    }

    /// Foreground pixel counts.
    pub fn areas(&self) -> Result<Vec<u64>, StructuresError> {
        Ok(self.to_rles()?.iter().map(codec::area).collect())
    }

    /// Tight `[x, y, w, h]` boxes of the masks (`[0, 0, 0, 0]` for an empty mask).
    pub fn bboxes_xywh(&self) -> Result<Vec<[f64; 4]>, StructuresError> {
        Ok(self.to_rles()?.iter().map(codec::to_bbox).collect())
    }

    /// The masks at `indices`.
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            masks: indices.iter().map(|&i| self.masks[i].clone()).collect(),
            ..*self
        }
    }

    /// Mirrored left-right: polygons map `x -> width - x` (pixel `i` covers `[i, i+1)`,
    /// so this is exactly the bitmap flip); RLEs are flipped as bitmaps and stay RLEs.
    pub fn flip_horizontal(&self) -> Result<Self, StructuresError> {
        let w = f64::from(self.width);
        let masks = self
            .masks
            .iter()
            .map(|m| {
                Ok(match m {
                    Mask::Bitmap(b) => Mask::Bitmap(b.flip_horizontal()),
                    Mask::Rle(r) => Mask::Rle(BitMask::from_rle(r).flip_horizontal().to_rle()?),
                    Mask::Polygons(p) => Mask::Polygons(
                        p.iter()
                            .map(|ring| {
                                ring.iter()
                                    .enumerate()
                                    .map(|(k, &v)| if k % 2 == 0 { w - v } else { v })
                                    .collect()
                            })
                            .collect(),
                    ),
                })
            })
            .collect::<Result<Vec<_>, StructuresError>>()?;
        Ok(Self { masks, ..*self })
    }

    /// Resized to `height x width`: polygons are scaled exactly, bitmaps and RLEs are
    /// resampled nearest-neighbour (an RLE comes back as an RLE).
    pub fn resize(&self, height: u32, width: u32) -> Result<Self, StructuresError> {
        let sx = f64::from(width) / f64::from(self.width.max(1));
        let sy = f64::from(height) / f64::from(self.height.max(1));
        let masks = self
            .masks
            .iter()
            .map(|m| {
                Ok(match m {
                    Mask::Bitmap(b) => Mask::Bitmap(b.resize(height, width)),
                    Mask::Rle(r) => Mask::Rle(BitMask::from_rle(r).resize(height, width).to_rle()?),
                    Mask::Polygons(p) => Mask::Polygons(
                        p.iter()
                            .map(|ring| {
                                ring.iter()
                                    .enumerate()
                                    .map(|(k, &v)| if k % 2 == 0 { v * sx } else { v * sy })
                                    .collect()
                            })
                            .collect(),
                    ),
                })
            })
            .collect::<Result<Vec<_>, StructuresError>>()?;
        Ok(Self {
            height,
            width,
            masks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square_bitmap() -> BitMask {
        // 4 rows x 5 columns, foreground at x in 1..3, y in 0..2.
        let mut d = vec![0u8; 20];
        for y in 0..2 {
            for x in 1..3 {
                d[y * 5 + x] = 1;
            }
        }
        BitMask::new(4, 5, d).unwrap()
    }

    #[test]
    fn bitmap_rle_round_trip_and_layout() {
        let b = square_bitmap();
        let rle = b.to_rle().unwrap();
        assert_eq!((rle.h, rle.w), (4, 5));
        // Column-major: column 0 is all background (4), then columns 1 and 2 each have 2
        // foreground on top followed by 2 background.
        assert_eq!(rle.counts, vec![4, 2, 2, 2, 10]);
        assert_eq!(codec::to_bbox(&rle), [1.0, 0.0, 2.0, 2.0]);
        assert_eq!(BitMask::from_rle(&rle), b);
        assert_eq!(b.area(), 4);
    }

    #[test]
    fn polygon_and_rle_agree_after_flip() {
        // A rectangle polygon covering x in [1, 3), y in [0, 2) of a 4x5 image.
        let poly = Mask::Polygons(vec![vec![1.0, 0.0, 3.0, 0.0, 3.0, 2.0, 1.0, 2.0]]);
        let bitmap = Mask::Bitmap(square_bitmap());
        let masks = Masks::new(
            4,
            5,
            vec![
                poly,
                bitmap.clone(),
                Mask::Rle(square_bitmap().to_rle().unwrap()),
            ],
        )
        .unwrap();
        let flipped = masks.flip_horizontal().unwrap();
        let bm = flipped.to_bitmaps().unwrap();
        assert_eq!(bm[1], square_bitmap().flip_horizontal());
        assert_eq!(bm[2], bm[1]);
        // The rasterised flipped polygon covers the same pixels as the flipped bitmap.
        assert_eq!(bm[0].as_slice(), bm[1].as_slice());
        assert!(bm[1].get(2, 0) && bm[1].get(3, 1) && !bm[1].get(1, 0));
    }

    #[test]
    fn sizes_are_checked() {
        let err = Masks::new(4, 6, vec![Mask::Bitmap(square_bitmap())]).unwrap_err();
        assert!(
            err.to_string()
                .contains("mask 0 is 4x5 but the image is 4x6"),
            "{err}"
        );
        assert!(BitMask::new(2, 2, vec![1, 0, 1]).is_err());
    }

    #[test]
    fn resize_and_pad() {
        let b = square_bitmap();
        let up = b.resize(8, 10);
        assert_eq!(up.area(), 16);
        assert_eq!(up.resize(4, 5), b);
        let p = b.pad(6, 7);
        assert_eq!(p.area(), 4);
        assert!(p.get(1, 0) && !p.get(5, 5));
        let empty = Masks::new(4, 5, vec![]).unwrap();
        assert!(empty.resize(2, 2).unwrap().is_empty());
    }
}
