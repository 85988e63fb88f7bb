//! `Instances`: the objects of one image (ground truth or predictions).
//!
//! Every per-instance field has exactly one entry per box; the constructors and `with_*`
//! builders are the only way in, and they enforce that invariant (and finite coordinates
//! and scores), so code downstream can index all fields with the same `i`.

use serde::{Deserialize, Serialize};

use crate::StructuresError;
use crate::boxes::{Boxes, Xyxy};
use crate::masks::Masks;

/// Height and width of an image in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageSize {
    pub height: u32,
    pub width: u32,
}

impl ImageSize {
    pub fn new(height: u32, width: u32) -> Self {
        Self { height, width }
    }
}

/// Objects of one image: boxes (`[x1, y1, x2, y2]` in that image's pixels), contiguous
/// class labels, and optional scores, masks, track ids and crowd flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Instances {
    image_size: ImageSize,
    boxes: Boxes<Xyxy>,
    classes: Vec<usize>,
    scores: Option<Vec<f32>>,
    masks: Option<Masks>,
    track_ids: Option<Vec<u64>>,
    crowd: Option<Vec<bool>>,
}

fn check_len(field: &'static str, expected: usize, got: usize) -> Result<(), StructuresError> {
    if expected == got {
        Ok(())
    } else {
        Err(StructuresError::LengthMismatch {
            field,
            expected,
            got,
        })
    }
}

impl Instances {
    /// Boxes and their class labels; the lengths must agree and coordinates be finite.
    pub fn new(
        image_size: ImageSize,
        boxes: Boxes<Xyxy>,
        classes: Vec<usize>,
    ) -> Result<Self, StructuresError> {
        check_len("classes", boxes.len(), classes.len())?;
        boxes.check_finite()?;
        Ok(Self {
            image_size,
            boxes,
            classes,
            scores: None,
            masks: None,
            track_ids: None,
            crowd: None,
        })
    }

    /// No objects.
    pub fn empty(image_size: ImageSize) -> Self {
        Self {
            image_size,
            boxes: Boxes::empty(),
            classes: Vec::new(),
            scores: None,
            masks: None,
            track_ids: None,
            crowd: None,
        }
    }

    /// Adds confidence scores (predictions); must be one finite score per box.
    pub fn with_scores(mut self, scores: Vec<f32>) -> Result<Self, StructuresError> {
        check_len("scores", self.len(), scores.len())?;
        if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
            return Err(StructuresError::NonFinite {
                field: "scores",
                index,
            });
        }
        self.scores = Some(scores);
        Ok(self)
    }

    /// Adds instance masks; one per box, on this image's canvas.
    pub fn with_masks(mut self, masks: Masks) -> Result<Self, StructuresError> {
        check_len("masks", self.len(), masks.len())?;
        if (masks.height(), masks.width()) != (self.image_size.height, self.image_size.width) {
            return Err(StructuresError::MaskSize {
                index: 0,
                expected_h: self.image_size.height,
                expected_w: self.image_size.width,
                got_h: masks.height(),
                got_w: masks.width(),
            });
        }
        self.masks = Some(masks);
        Ok(self)
    }

    /// Adds track ids (video); one per box.
    pub fn with_track_ids(mut self, track_ids: Vec<u64>) -> Result<Self, StructuresError> {
        check_len("track_ids", self.len(), track_ids.len())?;
        self.track_ids = Some(track_ids);
        Ok(self)
    }

    /// Adds COCO `iscrowd` flags; one per box.
    pub fn with_crowd(mut self, crowd: Vec<bool>) -> Result<Self, StructuresError> {
        check_len("crowd", self.len(), crowd.len())?;
        self.crowd = Some(crowd);
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    pub fn image_size(&self) -> ImageSize {
        self.image_size
    }

    pub fn boxes(&self) -> &Boxes<Xyxy> {
        &self.boxes
    }

    pub fn classes(&self) -> &[usize] {
        &self.classes
    }

    pub fn scores(&self) -> Option<&[f32]> {
        self.scores.as_deref()
    }

    pub fn masks(&self) -> Option<&Masks> {
        self.masks.as_ref()
    }

    pub fn track_ids(&self) -> Option<&[u64]> {
        self.track_ids.as_deref()
    }

    pub fn crowd(&self) -> Option<&[bool]> {
        self.crowd.as_deref()
    }

    /// Whether instance `i` is a crowd region (false when no flags were given).
    pub fn is_crowd(&self, i: usize) -> bool {
        self.crowd.as_ref().is_some_and(|c| c[i])
    }

    /// The instances at `indices`, in that order, with every field kept aligned.
    ///
    /// # Panics
    /// If an index is out of range (a caller invariant).
    pub fn select(&self, indices: &[usize]) -> Self {
        Self {
            image_size: self.image_size,
            boxes: self.boxes.select(indices),
            classes: indices.iter().map(|&i| self.classes[i]).collect(),
            scores: self
                .scores
                .as_ref()
                .map(|v| indices.iter().map(|&i| v[i]).collect()),
            masks: self.masks.as_ref().map(|m| m.select(indices)),
            track_ids: self
                .track_ids
                .as_ref()
                .map(|v| indices.iter().map(|&i| v[i]).collect()),
            crowd: self
                .crowd
                .as_ref()
                .map(|v| indices.iter().map(|&i| v[i]).collect()),
        }
    }

    /// The instances for which `keep(i)` is true.
    pub fn filter(&self, keep: impl Fn(usize) -> bool) -> Self {
        let idx: Vec<usize> = (0..self.len()).filter(|&i| keep(i)).collect();
        self.select(&idx)
    }

    /// The same objects on an image resized to `size` (boxes scaled, masks resampled).
    pub fn resize(&self, size: ImageSize) -> Result<Self, StructuresError> {
        let sx = size.width as f32 / self.image_size.width.max(1) as f32;
        let sy = size.height as f32 / self.image_size.height.max(1) as f32;
        Ok(Self {
            image_size: size,
            boxes: self.boxes.scale(sx, sy),
            masks: match &self.masks {
                Some(m) => Some(m.resize(size.height, size.width)?),
                None => None,
            },
            ..self.clone()
        })
    }

    /// The same objects on the image mirrored left-right.
    pub fn flip_horizontal(&self) -> Result<Self, StructuresError> {
        Ok(Self {
            boxes: self.boxes.flip_horizontal(self.image_size.width as f32),
            masks: match &self.masks {
                Some(m) => Some(m.flip_horizontal()?),
                None => None,
            },
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masks::{BitMask, Mask};

    fn two() -> Instances {
        Instances::new(
            ImageSize::new(4, 6),
            Boxes::new(vec![[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 6.0, 4.0]]),
            vec![3, 1],
        )
        .unwrap()
    }

    #[test]
    fn lengths_are_enforced() {
        let err =
            Instances::new(ImageSize::new(4, 6), Boxes::new(vec![[0.0; 4]]), vec![]).unwrap_err();
        assert!(matches!(
            err,
            StructuresError::LengthMismatch {
                field: "classes",
                expected: 1,
                got: 0
            }
        ));
        assert!(two().with_scores(vec![0.5]).is_err());
        assert!(two().with_track_ids(vec![1, 2, 3]).is_err());
        assert!(two().with_crowd(vec![false]).is_err());
        assert!(two().with_scores(vec![0.5, f32::NAN]).is_err());
        let masks = Masks::new(4, 6, vec![Mask::Bitmap(BitMask::zeros(4, 6))]).unwrap();
        assert!(two().with_masks(masks).is_err());
        let wrong_canvas = Masks::new(5, 6, vec![Mask::Bitmap(BitMask::zeros(5, 6)); 2]).unwrap();
        assert!(two().with_masks(wrong_canvas).is_err());
        let nan_box = Instances::new(
            ImageSize::new(4, 6),
            Boxes::new(vec![[0.0, f32::INFINITY, 1.0, 1.0]]),
            vec![0],
        );
        assert!(nan_box.is_err());
    }

    #[test]
    fn select_keeps_fields_aligned() {
        let masks = Masks::new(
            4,
            6,
            vec![
                Mask::Bitmap(BitMask::zeros(4, 6)),
                Mask::Polygons(vec![vec![1.0, 1.0, 5.0, 1.0, 5.0, 3.0]]),
            ],
        )
        .unwrap();
        let i = two()
            .with_scores(vec![0.1, 0.9])
            .unwrap()
            .with_masks(masks)
            .unwrap()
            .with_track_ids(vec![7, 8])
            .unwrap()
            .with_crowd(vec![false, true])
            .unwrap();
        let s = i.select(&[1]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.classes(), &[1]);
        assert_eq!(s.scores(), Some(&[0.9][..]));
        assert_eq!(s.track_ids(), Some(&[8][..]));
        assert!(s.is_crowd(0));
        assert!(matches!(
            s.masks().unwrap().as_slice()[0],
            Mask::Polygons(_)
        ));
        let f = i.filter(|k| i.scores().unwrap()[k] > 0.5);
        assert_eq!(f, s);
        let none = i.select(&[]);
        assert!(none.is_empty() && none.masks().unwrap().is_empty());
    }

    #[test]
    fn geometry_transforms() {
        let i = two();
        let r = i.resize(ImageSize::new(8, 12)).unwrap();
        assert_eq!(r.boxes().as_slice()[1], [2.0, 2.0, 12.0, 8.0]);
        let f = i.flip_horizontal().unwrap();
        assert_eq!(f.boxes().as_slice()[0], [4.0, 0.0, 6.0, 2.0]);
        assert_eq!(f.flip_horizontal().unwrap(), i);
        let e = Instances::empty(ImageSize::new(3, 3));
        assert!(e.is_empty() && e.resize(ImageSize::new(6, 6)).unwrap().is_empty());
    }
}
