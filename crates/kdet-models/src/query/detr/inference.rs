//! DETR's post-processor (`PostProcess` in `models/detr.py`): a softmax over the `K + 1`
//! classes, the no-object column dropped, each query's score the largest remaining
//! probability and its label that class; boxes from normalised `(cx, cy, w, h)` to
//! `x1, y1, x2, y2` in the *original* image's pixels (the boxes are normalised by the
//! image's own size, so they scale by the original size directly). No threshold and no NMS,
//! as DETR. kdet's additions: queries sorted by score and the best `max_detections` kept
//! (COCO's 100; DETR returns all queries), boxes clipped to the image (mmdetection's
//! `DETRHead` clamps them too), and non-finite predictions dropped.

use burn::tensor::activation::softmax;
use kdet_structures::{Boxes, ImageSize, Instances};

use crate::output::QueryLayer;

/// Detections per image from one decoder layer's predictions (the last, at inference).
///
/// # Panics
/// If the layer has no boxes, or `original_sizes` does not have one size per image.
pub fn postprocess(
    layer: &QueryLayer,
    original_sizes: &[ImageSize],
    max_detections: usize,
) -> Vec<Instances> {
    let [b, q, c] = layer.class_logits.dims();
    assert_eq!(
        original_sizes.len(),
        b,
        "one original size per image of the batch"
    );
    let read = |t: burn::tensor::Tensor<3>| -> Vec<f32> {
        t.detach()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("a converted f32 tensor reads back as f32")
    };
    let probs = read(softmax(layer.class_logits.clone(), 2));
    let boxes = read(
        layer
            .boxes
            .clone()
            .expect("a DETR query layer predicts boxes"),
    );
    let num_classes = c - 1;
    original_sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let (w, h) = (size.width as f32, size.height as f32);
            let mut dets: Vec<(f32, usize, [f32; 4])> = (0..q)
                .filter_map(|j| {
                    let row = &probs[(i * q + j) * c..(i * q + j) * c + num_classes];
                    // The first of equal maxima, as torch.max.
                    let (label, &score) = row
                        .iter()
                        .enumerate()
                        .reduce(|best, x| if x.1 > best.1 { x } else { best })?;
                    let [cx, cy, bw, bh]: [f32; 4] = boxes[(i * q + j) * 4..(i * q + j + 1) * 4]
                        .try_into()
                        .expect("four box coordinates");
                    let xyxy = [
                        ((cx - bw / 2.0) * w).clamp(0.0, w),
                        ((cy - bh / 2.0) * h).clamp(0.0, h),
                        ((cx + bw / 2.0) * w).clamp(0.0, w),
                        ((cy + bh / 2.0) * h).clamp(0.0, h),
                    ];
                    (score.is_finite() && [cx, cy, bw, bh].iter().all(|v| v.is_finite()))
                        .then_some((score, label, xyxy))
                })
                .collect();
            // Stable: equal scores keep query order.
            dets.sort_by(|a, b| b.0.total_cmp(&a.0));
            dets.truncate(max_detections);
            Instances::new(
                size,
                Boxes::new(dets.iter().map(|d| d.2).collect()),
                dets.iter().map(|d| d.1).collect(),
            )
            .and_then(|inst| inst.with_scores(dets.iter().map(|d| d.0).collect()))
            .expect("finite boxes and scores, one class and score per box")
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor, TensorData};

    fn layer(logits: Vec<f32>, boxes: Vec<f32>, q: usize, c: usize) -> QueryLayer {
        let device = Device::flex();
        QueryLayer {
            embeddings: Tensor::zeros([1, q, 2], &device),
            class_logits: Tensor::from_data(TensorData::new(logits, [1, q, c]), &device),
            mask_logits: None,
            boxes: Some(Tensor::from_data(
                TensorData::new(boxes, [1, q, 4]),
                &device,
            )),
        }
    }

    #[test]
    fn boxes_scale_to_the_original_image_and_scores_skip_no_object() {
        // Two classes + no object. Query 0 is most likely "no object" (ln 6 vs ln 3 and 0):
        // its score is still its best real class, 3 / 10, label 1. Query 1: (ln 4, 0, 0)
        // → 4 / 6 for class 0.
        let (l3, l4, l6) = (3f32.ln(), 4f32.ln(), 6f32.ln());
        let logits = vec![0.0, l3, l6, l4, 0.0, 0.0];
        // Original image 200 high × 100 wide. Query 0: centre (0.5, 0.25), 0.2 × 0.1 →
        // x 40–60, y 30–70. Query 1 (x 70–110, y 80–120) is clipped to the right edge.
        let boxes = vec![0.5, 0.25, 0.2, 0.2, 0.9, 0.5, 0.4, 0.2];
        let out = postprocess(
            &layer(logits, boxes, 2, 3),
            &[ImageSize::new(200, 100)],
            100,
        );
        let det = &out[0];
        assert_eq!(det.image_size(), ImageSize::new(200, 100));
        assert_eq!(det.classes(), [0, 1], "sorted by score: query 1 first");
        let s = det.scores().unwrap();
        assert!(
            (s[0] - 4.0 / 6.0).abs() < 1e-6 && (s[1] - 0.3).abs() < 1e-6,
            "{s:?}"
        );
        let b = det.boxes().as_slice();
        let close = |a: [f32; 4], e: [f32; 4]| a.iter().zip(e).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(close(b[0], [70.0, 80.0, 100.0, 120.0]), "{b:?}");
        assert!(close(b[1], [40.0, 30.0, 60.0, 70.0]), "{b:?}");
    }

    #[test]
    fn only_the_best_max_detections_are_kept() {
        // One class + no object: queries (0, 1), (3, 0), (2, 0).
        let logits = vec![0.0, 1.0, 3.0, 0.0, 2.0, 0.0];
        let boxes = vec![0.5; 12];
        let out = postprocess(&layer(logits, boxes, 3, 2), &[ImageSize::new(10, 10)], 2);
        assert_eq!(out[0].len(), 2);
        let s = out[0].scores().unwrap();
        assert!(s[0] > s[1], "{s:?}");
        // Query 1 (logit 3 on class 0, 0 on no object) scores highest.
        assert!(
            (s[0] - 3f32.exp() / (3f32.exp() + 1.0)).abs() < 1e-5,
            "{s:?}"
        );
    }
}
