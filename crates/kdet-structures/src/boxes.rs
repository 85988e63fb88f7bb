//! Axis-aligned boxes whose coordinate format is part of the type.
//!
//! `Boxes<Xyxy>` and `Boxes<Xywh>` cannot be mixed up: every conversion is an explicit
//! method (`to_xyxy`, `to_xywh`, `to_cxcywh`), as in torchvision's `BoundingBoxes` and
//! detectron2's `Boxes`. Coordinates are in pixels of the image the boxes belong to, with
//! the COCO convention that pixel `i` covers `[i, i + 1)`, so a box's width is `x2 - x1`
//! (no "+1").
//!
//! `Boxes` holds plain `[f32; 4]` rows for data handling (readers, transforms, NMS,
//! evaluation); `BoxTensor` is the same idea on a `[N, 4]` tensor for the model side.

use std::fmt;
use std::marker::PhantomData;

use burn::tensor::{Device, Tensor, TensorData};

use crate::StructuresError;

mod sealed {
    pub trait Sealed {}
}

/// A box coordinate format. Implemented by [`Xyxy`], [`Xywh`] and [`Cxcywh`] only.
pub trait BoxFormat: sealed::Sealed + Copy + Default + fmt::Debug + Send + Sync + 'static {
    /// Short name used in messages, e.g. `"xyxy"`.
    const NAME: &'static str;
    /// Converts one box of this format to `[x1, y1, x2, y2]`.
    fn to_xyxy(b: [f32; 4]) -> [f32; 4];
    /// Converts one `[x1, y1, x2, y2]` box to this format.
    fn from_xyxy(b: [f32; 4]) -> [f32; 4];
    /// Tensor version of [`BoxFormat::to_xyxy`] on `[N, 4]`.
    fn tensor_to_xyxy(t: Tensor<2>) -> Tensor<2>;
    /// Tensor version of [`BoxFormat::from_xyxy`] on `[N, 4]`.
    fn tensor_from_xyxy(t: Tensor<2>) -> Tensor<2>;
}

/// Corners: `[x1, y1, x2, y2]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Xyxy;
/// COCO's format: top-left corner and size, `[x, y, w, h]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Xywh;
/// Centre and size: `[cx, cy, w, h]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cxcywh;

impl sealed::Sealed for Xyxy {}
impl sealed::Sealed for Xywh {}
impl sealed::Sealed for Cxcywh {}

/// Splits `[N, 4]` into its four `[N, 1]` columns.
fn columns(t: Tensor<2>) -> [Tensor<2>; 4] {
    let [n, c] = t.dims();
    assert_eq!(c, 4, "boxes tensor must be [N, 4], got [{n}, {c}]");
    let cols = t.split(1, 1);
    let mut it = cols.into_iter();
    let mut next = || it.next().expect("split of a [N, 4] tensor gives 4 columns");
    [next(), next(), next(), next()]
}

impl BoxFormat for Xyxy {
    const NAME: &'static str = "xyxy";
    fn to_xyxy(b: [f32; 4]) -> [f32; 4] {
        b
    }
    fn from_xyxy(b: [f32; 4]) -> [f32; 4] {
        b
    }
    fn tensor_to_xyxy(t: Tensor<2>) -> Tensor<2> {
        t
    }
    fn tensor_from_xyxy(t: Tensor<2>) -> Tensor<2> {
        t
    }
}

impl BoxFormat for Xywh {
    const NAME: &'static str = "xywh";
    fn to_xyxy([x, y, w, h]: [f32; 4]) -> [f32; 4] {
        [x, y, x + w, y + h]
    }
    fn from_xyxy([x1, y1, x2, y2]: [f32; 4]) -> [f32; 4] {
        [x1, y1, x2 - x1, y2 - y1]
    }
    fn tensor_to_xyxy(t: Tensor<2>) -> Tensor<2> {
        let [x, y, w, h] = columns(t);
        Tensor::cat(vec![x.clone(), y.clone(), x + w, y + h], 1)
    }
    fn tensor_from_xyxy(t: Tensor<2>) -> Tensor<2> {
        let [x1, y1, x2, y2] = columns(t);
        Tensor::cat(vec![x1.clone(), y1.clone(), x2 - x1, y2 - y1], 1)
    }
}

impl BoxFormat for Cxcywh {
    const NAME: &'static str = "cxcywh";
    fn to_xyxy([cx, cy, w, h]: [f32; 4]) -> [f32; 4] {
        [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
    }
    fn from_xyxy([x1, y1, x2, y2]: [f32; 4]) -> [f32; 4] {
        [0.5 * (x1 + x2), 0.5 * (y1 + y2), x2 - x1, y2 - y1]
    }
    fn tensor_to_xyxy(t: Tensor<2>) -> Tensor<2> {
        let [cx, cy, w, h] = columns(t);
        let hw = w.mul_scalar(0.5);
        let hh = h.mul_scalar(0.5);
        Tensor::cat(
            vec![
                cx.clone() - hw.clone(),
                cy.clone() - hh.clone(),
                cx + hw,
                cy + hh,
            ],
            1,
        )
    }
    fn tensor_from_xyxy(t: Tensor<2>) -> Tensor<2> {
        let [x1, y1, x2, y2] = columns(t);
        Tensor::cat(
            vec![
                (x1.clone() + x2.clone()).mul_scalar(0.5),
                (y1.clone() + y2.clone()).mul_scalar(0.5),
                x2 - x1,
                y2 - y1,
            ],
            1,
        )
    }
}

/// A list of boxes in format `F` (plain memory).
#[derive(Clone, PartialEq)]
pub struct Boxes<F: BoxFormat = Xyxy> {
    data: Vec<[f32; 4]>,
    _format: PhantomData<F>,
}

impl<F: BoxFormat> fmt::Debug for Boxes<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Boxes<{}>{:?}", F::NAME, self.data)
    }
}

impl<F: BoxFormat> Default for Boxes<F> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<F: BoxFormat> Boxes<F> {
    /// Wraps rows that are already in format `F`.
    pub fn new(data: Vec<[f32; 4]>) -> Self {
        Self {
            data,
            _format: PhantomData,
        }
    }

    /// No boxes.
    pub fn empty() -> Self {
        Self::new(Vec::new())
    }

    /// Number of boxes.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether there are no boxes.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The rows, in format `F`.
    pub fn as_slice(&self) -> &[[f32; 4]] {
        &self.data
    }

    /// The rows, in format `F`.
    pub fn into_vec(self) -> Vec<[f32; 4]> {
        self.data
    }

    /// Iterates over the rows, in format `F`.
    pub fn iter(&self) -> std::slice::Iter<'_, [f32; 4]> {
        self.data.iter()
    }

    /// The index of the first non-finite coordinate's box, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.data
            .iter()
            .position(|b| b.iter().any(|v| !v.is_finite()))
    }

    /// Checks that every coordinate is finite.
    pub fn check_finite(&self) -> Result<(), StructuresError> {
        match self.first_non_finite() {
            Some(index) => Err(StructuresError::NonFinite {
                field: "boxes",
                index,
            }),
            None => Ok(()),
        }
    }

    /// Converts to another format.
    pub fn convert<G: BoxFormat>(&self) -> Boxes<G> {
        Boxes::new(
            self.data
                .iter()
                .map(|&b| G::from_xyxy(F::to_xyxy(b)))
                .collect(),
        )
    }

    /// Converts to `[x1, y1, x2, y2]`.
    pub fn to_xyxy(&self) -> Boxes<Xyxy> {
        self.convert()
    }

    /// Converts to `[x, y, w, h]` (COCO).
    pub fn to_xywh(&self) -> Boxes<Xywh> {
        self.convert()
    }

    /// Converts to `[cx, cy, w, h]`.
    pub fn to_cxcywh(&self) -> Boxes<Cxcywh> {
        self.convert()
    }

    /// Areas; a degenerate box (negative width or height) has area 0.
    pub fn area(&self) -> Vec<f32> {
        self.data
            .iter()
            .map(|&b| {
                let [x1, y1, x2, y2] = F::to_xyxy(b);
                (x2 - x1).max(0.0) * (y2 - y1).max(0.0)
            })
            .collect()
    }

    /// The boxes at `indices`, in that order.
    ///
    /// # Panics
    /// If an index is out of range (an internal invariant of the caller).
    pub fn select(&self, indices: &[usize]) -> Self {
        Self::new(indices.iter().map(|&i| self.data[i]).collect())
    }

    /// Appends `other`'s boxes.
    pub fn extend(&mut self, other: &Self) {
        self.data.extend_from_slice(&other.data);
    }

    /// Appends one box.
    pub fn push(&mut self, b: [f32; 4]) {
        self.data.push(b);
    }

    /// `[N, 4]` tensor of the rows (format `F`).
    pub fn to_tensor(&self, device: &Device) -> BoxTensor<F> {
        let flat: Vec<f32> = self.data.iter().flatten().copied().collect();
        let t = Tensor::<2>::from_data(TensorData::new(flat, [self.data.len(), 4]), device);
        BoxTensor::new(t)
    }
}

impl Boxes<Xyxy> {
    /// Clips every box to the `[0, width] x [0, height]` canvas.
    pub fn clip(&self, height: f32, width: f32) -> Self {
        Self::new(
            self.data
                .iter()
                .map(|&[x1, y1, x2, y2]| {
                    [
                        x1.clamp(0.0, width),
                        y1.clamp(0.0, height),
                        x2.clamp(0.0, width),
                        y2.clamp(0.0, height),
                    ]
                })
                .collect(),
        )
    }

    /// Whether each box has a strictly positive width and height.
    pub fn nonempty(&self) -> Vec<bool> {
        self.data
            .iter()
            .map(|&[x1, y1, x2, y2]| x2 > x1 && y2 > y1)
            .collect()
    }

    /// Scales x coordinates by `sx` and y coordinates by `sy`.
    pub fn scale(&self, sx: f32, sy: f32) -> Self {
        Self::new(
            self.data
                .iter()
                .map(|&[x1, y1, x2, y2]| [x1 * sx, y1 * sy, x2 * sx, y2 * sy])
                .collect(),
        )
    }

    /// Mirrors the boxes left-right on a canvas of width `width` (`x -> width - x`).
    pub fn flip_horizontal(&self, width: f32) -> Self {
        Self::new(
            self.data
                .iter()
                .map(|&[x1, y1, x2, y2]| [width - x2, y1, width - x1, y2])
                .collect(),
        )
    }
}

/// A `[N, 4]` tensor of boxes in format `F`.
#[derive(Debug, Clone)]
pub struct BoxTensor<F: BoxFormat = Xyxy> {
    tensor: Tensor<2>,
    _format: PhantomData<F>,
}

impl<F: BoxFormat> BoxTensor<F> {
    /// Wraps a `[N, 4]` tensor whose rows are in format `F`.
    ///
    /// # Panics
    /// If the tensor is not `[N, 4]` (a shape contract of the caller).
    pub fn new(tensor: Tensor<2>) -> Self {
        let [n, c] = tensor.dims();
        assert_eq!(c, 4, "BoxTensor expects [N, 4], got [{n}, {c}]");
        Self {
            tensor,
            _format: PhantomData,
        }
    }

    /// Number of boxes.
    pub fn len(&self) -> usize {
        self.tensor.dims()[0]
    }

    /// Whether there are no boxes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The underlying `[N, 4]` tensor.
    pub fn tensor(&self) -> &Tensor<2> {
        &self.tensor
    }

    /// The underlying `[N, 4]` tensor.
    pub fn into_tensor(self) -> Tensor<2> {
        self.tensor
    }

    /// Converts to another format.
    pub fn convert<G: BoxFormat>(self) -> BoxTensor<G> {
        BoxTensor::new(G::tensor_from_xyxy(F::tensor_to_xyxy(self.tensor)))
    }

    /// Converts to `[x1, y1, x2, y2]`.
    pub fn to_xyxy(self) -> BoxTensor<Xyxy> {
        self.convert()
    }

    /// Areas `[N]`; degenerate boxes give 0.
    pub fn area(&self) -> Tensor<1> {
        let [x1, y1, x2, y2] = columns(F::tensor_to_xyxy(self.tensor.clone()));
        ((x2 - x1).clamp_min(0.0) * (y2 - y1).clamp_min(0.0)).squeeze_dim(1)
    }

    /// Reads the rows back to memory.
    ///
    /// # Panics
    /// If the tensor is not f32 (boxes are always created as f32 in kdet).
    pub fn to_boxes(&self) -> Boxes<F> {
        let v: Vec<f32> = self
            .tensor
            .to_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("a converted f32 tensor reads back as f32");
        Boxes::new(
            v.chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_on_slices() {
        let b = Boxes::<Xyxy>::new(vec![[1.0, 2.0, 5.0, 10.0], [0.0, 0.0, 0.0, 0.0]]);
        let xywh = b.to_xywh();
        assert_eq!(xywh.as_slice()[0], [1.0, 2.0, 4.0, 8.0]);
        let c = b.to_cxcywh();
        assert_eq!(c.as_slice()[0], [3.0, 6.0, 4.0, 8.0]);
        assert_eq!(c.to_xyxy(), b);
        assert_eq!(xywh.to_xyxy(), b);
        assert_eq!(xywh.to_cxcywh().to_xywh(), xywh);
    }

    #[test]
    fn area_of_degenerate_boxes_is_zero() {
        let b = Boxes::<Xyxy>::new(vec![
            [0.0, 0.0, 2.0, 3.0],
            [5.0, 5.0, 4.0, 9.0],
            [1.0, 1.0, 1.0, 1.0],
        ]);
        assert_eq!(b.area(), vec![6.0, 0.0, 0.0]);
        assert_eq!(b.nonempty(), vec![true, false, false]);
        assert_eq!(
            Boxes::<Xywh>::new(vec![[3.0, 3.0, 2.0, 4.0]]).area(),
            vec![8.0]
        );
        assert!(Boxes::<Xyxy>::empty().area().is_empty());
    }

    #[test]
    fn clip_flip_scale() {
        let b = Boxes::<Xyxy>::new(vec![[-3.0, 2.0, 12.0, 30.0]]);
        assert_eq!(b.clip(20.0, 10.0).as_slice()[0], [0.0, 2.0, 10.0, 20.0]);
        let f = Boxes::<Xyxy>::new(vec![[1.0, 2.0, 4.0, 6.0]]).flip_horizontal(10.0);
        assert_eq!(f.as_slice()[0], [6.0, 2.0, 9.0, 6.0]);
        assert_eq!(f.flip_horizontal(10.0).as_slice()[0], [1.0, 2.0, 4.0, 6.0]);
        assert_eq!(
            Boxes::<Xyxy>::new(vec![[1.0, 2.0, 4.0, 6.0]])
                .scale(2.0, 0.5)
                .as_slice()[0],
            [2.0, 1.0, 8.0, 3.0]
        );
    }

    #[test]
    fn non_finite_is_reported_with_index() {
        let b = Boxes::<Xyxy>::new(vec![[0.0; 4], [0.0, f32::NAN, 1.0, 1.0]]);
        assert_eq!(b.first_non_finite(), Some(1));
        assert!(b.check_finite().is_err());
    }

    #[test]
    fn tensor_conversions_match_slice_conversions() {
        let device = Device::flex();
        let b = Boxes::<Xywh>::new(vec![[1.0, 2.0, 4.0, 8.0], [0.5, 0.25, 3.0, 1.0]]);
        let t = b.to_tensor(&device);
        assert_eq!(t.len(), 2);
        let xyxy = t.clone().to_xyxy();
        assert_eq!(xyxy.to_boxes(), b.to_xyxy());
        let c = xyxy.clone().convert::<Cxcywh>();
        assert_eq!(c.to_boxes(), b.to_cxcywh());
        let area: Vec<f32> = t.area().to_data().try_to_vec().unwrap();
        assert_eq!(area, vec![32.0, 3.0]);
        let empty = Boxes::<Xyxy>::empty().to_tensor(&device);
        assert!(empty.is_empty());
        assert_eq!(empty.area().dims(), [0]);
    }
}
