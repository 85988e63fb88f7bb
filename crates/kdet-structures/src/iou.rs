//! IoU, GIoU and DIoU between boxes, pairwise (every box of `a` against every box of `b`)
//! and aligned (`a[i]` against `b[i]`), on plain slices and on tensors.
//!
//! Definitions (boxes in `[x1, y1, x2, y2]`):
//! - IoU  = |A ∩ B| / |A ∪ B|; 0 when the union is empty (two degenerate boxes), as in
//!   detectron2's `pairwise_iou`, rather than torchvision's NaN.
//! - GIoU = IoU − (|C| − |A ∪ B|) / |C|, C the smallest enclosing box (Rezatofighi et al.,
//!   CVPR 2019, Alg. 1); the penalty is 0 when |C| = 0.
//! - DIoU = IoU − ρ²(centres) / c², c the diagonal of C (Zheng et al., AAAI 2020, Eq. 6);
//!   the penalty is 0 when c = 0.
//!
//! The tensor versions divide by `max(denominator, EPS)` with `EPS = 1e-7` (torchvision's
//! `_loss_inter_union` eps) so that gradients stay finite for degenerate boxes while
//! non-degenerate values are exact (identical boxes give exactly 1).

use burn::tensor::Tensor;

use crate::boxes::{BoxFormat, BoxTensor, Boxes};

/// Guard for denominators in the tensor versions.
pub const EPS: f32 = 1e-7;

/// Intersection and union of two `[x1, y1, x2, y2]` boxes.
#[inline]
fn inter_union(a: [f32; 4], b: [f32; 4]) -> (f32, f32) {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    (inter, area(a) + area(b) - inter)
}

/// IoU of two `[x1, y1, x2, y2]` boxes.
#[inline]
pub fn iou_xyxy(a: [f32; 4], b: [f32; 4]) -> f32 {
    let (inter, union) = inter_union(a, b);
    if union > 0.0 { inter / union } else { 0.0 }
}

/// GIoU of two `[x1, y1, x2, y2]` boxes, in `[-1, 1]`.
#[inline]
pub fn giou_xyxy(a: [f32; 4], b: [f32; 4]) -> f32 {
    let (inter, union) = inter_union(a, b);
    let iou = if union > 0.0 { inter / union } else { 0.0 };
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    let enclose = cw.max(0.0) * ch.max(0.0);
    if enclose > 0.0 {
        iou - (enclose - union) / enclose
    } else {
        iou
    }
}

/// DIoU of two `[x1, y1, x2, y2]` boxes, in `[-1, 1]`.
#[inline]
pub fn diou_xyxy(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iou = iou_xyxy(a, b);
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    let diag2 = cw * cw + ch * ch;
    let dx = 0.5 * (a[0] + a[2]) - 0.5 * (b[0] + b[2]);
    let dy = 0.5 * (a[1] + a[3]) - 0.5 * (b[1] + b[3]);
    if diag2 > 0.0 {
        iou - (dx * dx + dy * dy) / diag2
    } else {
        iou
    }
}

fn pairwise<F: BoxFormat, G: BoxFormat>(
    a: &Boxes<F>,
    b: &Boxes<G>,
    f: fn([f32; 4], [f32; 4]) -> f32,
) -> Vec<Vec<f32>> {
    let a = a.to_xyxy();
    let b = b.to_xyxy();
    a.iter()
        .map(|&x| b.iter().map(|&y| f(x, y)).collect())
        .collect()
}

/// Pairwise IoU: `result[i][j] = IoU(a[i], b[j])`.
pub fn pairwise_iou<F: BoxFormat, G: BoxFormat>(a: &Boxes<F>, b: &Boxes<G>) -> Vec<Vec<f32>> {
    pairwise(a, b, iou_xyxy)
}

/// Pairwise GIoU: `result[i][j] = GIoU(a[i], b[j])`.
pub fn pairwise_giou<F: BoxFormat, G: BoxFormat>(a: &Boxes<F>, b: &Boxes<G>) -> Vec<Vec<f32>> {
    pairwise(a, b, giou_xyxy)
}

/// Pairwise DIoU: `result[i][j] = DIoU(a[i], b[j])`.
pub fn pairwise_diou<F: BoxFormat, G: BoxFormat>(a: &Boxes<F>, b: &Boxes<G>) -> Vec<Vec<f32>> {
    pairwise(a, b, diou_xyxy)
}

/// Columns of an `[N, 4]` tensor as `[N, 1]` tensors.
fn cols(t: Tensor<2>) -> [Tensor<2>; 4] {
    let mut it = t.split(1, 1).into_iter();
    let mut next = || it.next().expect("a [N, 4] tensor splits into 4 columns");
    [next(), next(), next(), next()]
}

/// Pairwise IoU on tensors.
///
/// # Shapes
/// - `a`: `[N, 4]`, `b`: `[M, 4]` → `[N, M]`
pub fn pairwise_iou_tensor<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Tensor<2> {
    pairwise_terms(a, b).iou()
}

/// Pairwise GIoU on tensors.
///
/// # Shapes
/// - `a`: `[N, 4]`, `b`: `[M, 4]` → `[N, M]`
pub fn pairwise_giou_tensor<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Tensor<2> {
    pairwise_terms(a, b).giou()
}

/// Pairwise DIoU on tensors.
///
/// # Shapes
/// - `a`: `[N, 4]`, `b`: `[M, 4]` → `[N, M]`
pub fn pairwise_diou_tensor<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Tensor<2> {
    pairwise_terms(a, b).diou()
}

/// Aligned IoU (`a[i]` vs `b[i]`) on tensors.
///
/// # Shapes
/// - `a`, `b`: `[N, 4]` → `[N]`
pub fn aligned_iou_tensor<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Tensor<1> {
    aligned_terms(a, b).iou().squeeze_dim(1)
}

/// Aligned GIoU on tensors (the quantity behind the GIoU loss `1 - GIoU`).
///
/// # Shapes
/// - `a`, `b`: `[N, 4]` → `[N]`
pub fn aligned_giou_tensor<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Tensor<1> {
    aligned_terms(a, b).giou().squeeze_dim(1)
}

/// Aligned DIoU on tensors.
///
/// # Shapes
/// - `a`, `b`: `[N, 4]` → `[N]`
pub fn aligned_diou_tensor<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Tensor<1> {
    aligned_terms(a, b).diou().squeeze_dim(1)
}

/// The coordinates of two box sets broadcast against each other: either `[N, 1]` vs
/// `[1, M]` (pairwise) or `[N, 1]` vs `[N, 1]` (aligned).
struct Terms {
    a: [Tensor<2>; 4],
    b: [Tensor<2>; 4],
}

fn pairwise_terms<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Terms {
    let a = cols(a.clone().to_xyxy().into_tensor()); // each [N, 1]
    // [M, 4] -> [4, M] -> four [1, M] rows, which broadcast against [N, 1] to [N, M].
    let mut it = b
        .clone()
        .to_xyxy()
        .into_tensor()
        .transpose()
        .split(1, 0)
        .into_iter();
    let mut next = || it.next().expect("a [4, M] tensor splits into 4 rows");
    let b = [next(), next(), next(), next()];
    Terms { a, b }
}

fn aligned_terms<F: BoxFormat>(a: &BoxTensor<F>, b: &BoxTensor<F>) -> Terms {
    assert_eq!(
        a.len(),
        b.len(),
        "aligned IoU needs equally many boxes, got {} and {}",
        a.len(),
        b.len()
    );
    Terms {
        a: cols(a.clone().to_xyxy().into_tensor()),
        b: cols(b.clone().to_xyxy().into_tensor()),
    }
}

impl Terms {
    fn inter_union(&self) -> (Tensor<2>, Tensor<2>) {
        let [ax1, ay1, ax2, ay2] = self.a.clone();
        let [bx1, by1, bx2, by2] = self.b.clone();
        let iw =
            (ax2.clone().min_pair(bx2.clone()) - ax1.clone().max_pair(bx1.clone())).clamp_min(0.0);
        let ih =
            (ay2.clone().min_pair(by2.clone()) - ay1.clone().max_pair(by1.clone())).clamp_min(0.0);
        let inter = iw * ih;
        let area_a = (ax2 - ax1).clamp_min(0.0) * (ay2 - ay1).clamp_min(0.0);
        let area_b = (bx2 - bx1).clamp_min(0.0) * (by2 - by1).clamp_min(0.0);
        let union = area_a + area_b - inter.clone();
        (inter, union)
    }

    fn enclosing_wh(&self) -> (Tensor<2>, Tensor<2>) {
        let [ax1, ay1, ax2, ay2] = self.a.clone();
        let [bx1, by1, bx2, by2] = self.b.clone();
        let cw = ax2.max_pair(bx2) - ax1.min_pair(bx1);
        let ch = ay2.max_pair(by2) - ay1.min_pair(by1);
        (cw, ch)
    }

    fn iou(&self) -> Tensor<2> {
        let (inter, union) = self.inter_union();
        inter / union.clamp_min(EPS)
    }

    fn giou(&self) -> Tensor<2> {
        let (inter, union) = self.inter_union();
        let iou = inter / union.clone().clamp_min(EPS);
        let (cw, ch) = self.enclosing_wh();
        let enclose = cw.clamp_min(0.0) * ch.clamp_min(0.0);
        iou - (enclose.clone() - union) / enclose.clamp_min(EPS)
    }

    fn diou(&self) -> Tensor<2> {
        let iou = self.iou();
        let (cw, ch) = self.enclosing_wh();
        let diag2 = cw.powi_scalar(2) + ch.powi_scalar(2);
        let [ax1, ay1, ax2, ay2] = self.a.clone();
        let [bx1, by1, bx2, by2] = self.b.clone();
        let dx = (ax1 + ax2 - bx1 - bx2).mul_scalar(0.5);
        let dy = (ay1 + ay2 - by1 - by2).mul_scalar(0.5);
        iou - (dx.powi_scalar(2) + dy.powi_scalar(2)) / diag2.clamp_min(EPS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boxes::Xyxy;
    use burn::tensor::Device;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn identical_boxes_have_iou_one() {
        let b = [1.0, 2.0, 7.0, 5.0];
        assert_eq!(iou_xyxy(b, b), 1.0);
        assert_eq!(giou_xyxy(b, b), 1.0);
        assert_eq!(diou_xyxy(b, b), 1.0);
    }

    #[test]
    fn hand_computed_values() {
        // A = [0,0,2,2] (area 4), B = [1,1,3,3] (area 4): inter 1, union 7, IoU 1/7.
        // Enclosing C = [0,0,3,3], |C| = 9: GIoU = 1/7 - (9-7)/9 = 1/7 - 2/9.
        // Centres (1,1) and (2,2): rho^2 = 2; diagonal^2 = 18: DIoU = 1/7 - 1/9.
        let a = [0.0, 0.0, 2.0, 2.0];
        let b = [1.0, 1.0, 3.0, 3.0];
        assert!(close(iou_xyxy(a, b), 1.0 / 7.0));
        assert!(close(giou_xyxy(a, b), 1.0 / 7.0 - 2.0 / 9.0));
        assert!(close(diou_xyxy(a, b), 1.0 / 7.0 - 1.0 / 9.0));
        // Disjoint: A = [0,0,1,1], B = [2,0,3,1]; C = [0,0,3,1], |C| = 3, union 2.
        // GIoU = 0 - 1/3. Centres 2 apart: DIoU = -4 / (9 + 1).
        let a = [0.0, 0.0, 1.0, 1.0];
        let b = [2.0, 0.0, 3.0, 1.0];
        assert_eq!(iou_xyxy(a, b), 0.0);
        assert!(close(giou_xyxy(a, b), -1.0 / 3.0));
        assert!(close(diou_xyxy(a, b), -0.4));
    }

    #[test]
    fn degenerate_boxes_give_zero_not_nan() {
        let p = [3.0, 3.0, 3.0, 3.0];
        assert_eq!(iou_xyxy(p, p), 0.0);
        assert_eq!(giou_xyxy(p, p), 0.0);
        assert_eq!(diou_xyxy(p, p), 0.0);
        let inverted = [5.0, 5.0, 1.0, 1.0];
        assert_eq!(iou_xyxy(inverted, [0.0, 0.0, 10.0, 10.0]), 0.0);
    }

    #[test]
    fn pairwise_shapes_and_formats() {
        let a = Boxes::<Xyxy>::new(vec![[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]]);
        let b = a.to_xywh();
        let m = pairwise_iou(&a, &b);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0], vec![1.0, 1.0 / 7.0]);
        assert!(pairwise_iou(&Boxes::<Xyxy>::empty(), &a).is_empty());
        assert_eq!(
            pairwise_iou(&a, &Boxes::<Xyxy>::empty()),
            vec![Vec::<f32>::new(); 2]
        );
    }

    #[test]
    fn tensor_versions_match_slice_versions() {
        let device = Device::flex();
        // N = 3, M = 2 with overlapping, disjoint, degenerate and contained boxes.
        let a = Boxes::<Xyxy>::new(vec![
            [0.0, 0.0, 2.0, 2.0],
            [4.0, 4.0, 4.0, 4.0],
            [0.5, 1.0, 6.0, 3.5],
        ]);
        let b = Boxes::<Xyxy>::new(vec![[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 7.0]]);
        let (ta, tb) = (a.to_tensor(&device), b.to_tensor(&device));
        for (t, s) in [
            (pairwise_iou_tensor(&ta, &tb), pairwise_iou(&a, &b)),
            (pairwise_giou_tensor(&ta, &tb), pairwise_giou(&a, &b)),
            (pairwise_diou_tensor(&ta, &tb), pairwise_diou(&a, &b)),
        ] {
            assert_eq!(t.dims(), [3, 2]);
            let v: Vec<f32> = t.to_data().try_to_vec().unwrap();
            let s: Vec<f32> = s.into_iter().flatten().collect();
            for (x, y) in v.iter().zip(&s) {
                assert!((x - y).abs() < 1e-5, "{v:?} vs {s:?}");
            }
        }
        let b3 = Boxes::<Xyxy>::new(vec![
            [1.0, 1.0, 3.0, 3.0],
            [2.0, 0.0, 3.0, 7.0],
            [0.5, 1.0, 6.0, 3.5],
        ]);
        let tb3 = b3.to_tensor(&device);
        let al: Vec<f32> = aligned_giou_tensor(&ta, &tb3)
            .to_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(al.len(), 3);
        assert!((al[0] - giou_xyxy(a.as_slice()[0], b3.as_slice()[0])).abs() < 1e-6);
        assert_eq!(al[2], 1.0, "identical boxes: exactly 1");
        let ad: Vec<f32> = aligned_diou_tensor(&ta, &tb3)
            .to_data()
            .try_to_vec()
            .unwrap();
        assert!((ad[1] - diou_xyxy(a.as_slice()[1], b3.as_slice()[1])).abs() < 1e-5);
        let ai: Vec<f32> = aligned_iou_tensor(&ta, &tb3)
            .to_data()
            .try_to_vec()
            .unwrap();
        assert!(ai.iter().all(|v| v.is_finite()));
    }
}
