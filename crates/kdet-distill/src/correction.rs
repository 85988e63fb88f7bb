//! Noisy-box self-correction (NDet, "Narrowing the Gap"; official `wangsr126/NDet`,
//! `mmdet_noise/models/dense_heads/fcos_noise_head.py`, `_adapt_gt_bboxes_single`; spec
//! `../shared/methods/video-semisup-weak.md` §4.3): a frozen teacher trained on the noisy
//! boxes runs on the student's augmented batch, and every ground-truth box `g` (class
//! `c`) is replaced, for the student's task loss, by the precision-weighted fusion
//!
//! ```text
//! g′ = (g + Σ_i w_i b_i) / (1 + Σ_i w_i)
//! ```
//!
//! over the teacher's decoded boxes `b_i` (every prior), a Bayesian-filter update with the
//! annotation as the unit-precision prior. The weights, as the official:
//!
//! - `s_i` = the teacher's class-`c` sigmoid score (times its sigmoid centerness for heads
//!   that have one: FCOS, ATSS), zeroed below `score_threshold` (0.05);
//! - `step` (the official configs'): `w_i = [IoU(b_i, g) > iou_threshold] · ratio² · s_i`
//!   (0.7, 1.0);
//! - `exp`: `w_i = [IoU(b_i, g) > iou_threshold] · exp(−(1 − IoU)² / σ) · s_i` (0.01,
//!   0.025);
//! - optionally only each box's `topk` largest weights.
//!
//! Crowd regions keep their boxes (they are ignore regions, not objects to correct).

use burn::tensor::Tensor;
use kdet_models::heads::inference::{centerness_factors, class_scores};
use kdet_models::{Detector, DetectorOutput};
use kdet_structures::iou::iou_xyxy;
use kdet_structures::{Boxes, Instances, Xyxy};
use serde::{Deserialize, Serialize};

/// How a teacher box's weight grows with its overlap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CorrectionWeight {
    /// `[IoU > iou_threshold] · ratio² · s` (the official configs: 0.7, 1.0).
    Step {
        #[serde(default = "step_iou")]
        iou_threshold: f32,
        #[serde(default = "one")]
        ratio: f32,
    },
    /// `[IoU > iou_threshold] · exp(−(1 − IoU)² / sigma) · s` (official defaults 0.01,
    /// 0.025).
    Exp {
        #[serde(default = "exp_iou")]
        iou_threshold: f32,
        #[serde(default = "exp_sigma")]
        sigma: f32,
    },
}

fn step_iou() -> f32 {
    0.7
}
fn one() -> f32 {
    1.0
}
fn exp_iou() -> f32 {
    0.01
}
fn exp_sigma() -> f32 {
    0.025
}
fn score_threshold() -> f32 {
    0.05
}

impl Default for CorrectionWeight {
    fn default() -> Self {
        CorrectionWeight::Step {
            iou_threshold: step_iou(),
            ratio: one(),
        }
    }
}

/// `[distill.box_correction]`: the student trains on boxes corrected by the teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxCorrectionConfig {
    #[serde(default)]
    pub weight: CorrectionWeight,
    /// Teacher scores below this count as 0 (official 0.05).
    #[serde(default = "score_threshold")]
    pub score_threshold: f32,
    /// Keep only each box's `topk` largest weights (official: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk: Option<usize>,
}

impl Default for BoxCorrectionConfig {
    fn default() -> Self {
        Self {
            weight: CorrectionWeight::default(),
            score_threshold: score_threshold(),
            topk: None,
        }
    }
}

impl BoxCorrectionConfig {
    /// Checks the values (finite, thresholds in range, `topk >= 1`).
    pub fn validate(&self) -> Result<(), String> {
        let at = "distill.box_correction";
        let (iou, other, name) = match self.weight {
            CorrectionWeight::Step {
                iou_threshold,
                ratio,
            } => (iou_threshold, ratio, "ratio"),
            CorrectionWeight::Exp {
                iou_threshold,
                sigma,
            } => (iou_threshold, sigma, "sigma"),
        };
        if !(0.0..1.0).contains(&iou) {
            return Err(format!("{at}: iou_threshold must be in [0, 1), got {iou}"));
        }
        if !(other.is_finite() && other > 0.0) {
            return Err(format!("{at}: {name} must be finite and > 0, got {other}"));
        }
        if !(0.0..1.0).contains(&self.score_threshold) {
            return Err(format!(
                "{at}: score_threshold must be in [0, 1), got {}",
                self.score_threshold
            ));
        }
        if self.topk == Some(0) {
            return Err(format!("{at}: topk must be at least 1"));
        }
        Ok(())
    }

    /// The weight of one teacher box of overlap `iou` and score `s` (before the threshold
    /// on `s` and the top-k).
    pub fn weight_of(&self, iou: f32, s: f32) -> f32 {
        match self.weight {
            CorrectionWeight::Step {
                iou_threshold,
                ratio,
            } => {
                if iou > iou_threshold {
                    ratio * ratio * s
                } else {
                    0.0
                }
            }
            CorrectionWeight::Exp {
                iou_threshold,
                sigma,
            } => {
                if iou > iou_threshold {
                    (-(1.0 - iou).powi(2) / sigma).exp() * s
                } else {
                    0.0
                }
            }
        }
    }
}

/// What a correction did to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CorrectionStats {
    /// Boxes corrected (non-crowd objects).
    pub boxes: usize,
    /// Their mean `Σ_i w_i` (0: the annotation kept; 1: half teacher, half annotation).
    pub mean_weight: f32,
}

/// The corrected ground truth of one image: `boxes[i]` / `scores[i·K + k]` the teacher's
/// decoded boxes and class scores of its priors (`K` classes). Classes, crowd flags and
/// masks are kept; only the non-crowd boxes move. Returns the image and `Σ w` per
/// corrected box.
///
/// # Panics
/// If `scores` is not `boxes.len() · K` long or a class is `>= K`.
pub fn correct_image(
    config: &BoxCorrectionConfig,
    gt: &Instances,
    boxes: &[[f32; 4]],
    scores: &[f32],
    num_classes: usize,
) -> (Instances, Vec<f32>) {
    assert_eq!(
        scores.len(),
        boxes.len() * num_classes,
        "correct_image: scores"
    );
    let crowd = gt.crowd();
    let mut out_boxes = gt.boxes().as_slice().to_vec();
    let mut sums = Vec::new();
    for (g, target) in out_boxes.iter_mut().enumerate() {
        if crowd.is_some_and(|c| c[g]) {
            continue;
        }
        let class = gt.classes()[g];
        assert!(class < num_classes, "correct_image: class {class}");
        let mut weights: Vec<(usize, f32)> = boxes
            .iter()
            .enumerate()
            .filter_map(|(i, &b)| {
                let s = scores[i * num_classes + class];
                let s = if s < config.score_threshold { 0.0 } else { s };
                let w = config.weight_of(iou_xyxy(b, *target), s);
                (w > 0.0).then_some((i, w))
            })
            .collect();
        if let Some(k) = config.topk
            && weights.len() > k
        {
            // Largest first; ties by prior order (a stable sort), as torch.topk's values.
            weights.sort_by(|a, b| b.1.total_cmp(&a.1));
            weights.truncate(k);
        }
        let total: f32 = weights.iter().map(|&(_, w)| w).sum();
        let mut fused = *target;
        for &(i, w) in &weights {
            for (f, v) in fused.iter_mut().zip(boxes[i]) {
                *f += w * v;
            }
        }
        *target = fused.map(|v| v / (1.0 + total));
        sums.push(total);
    }
    let mut corrected = Instances::new(
        gt.image_size(),
        Boxes::<Xyxy>::new(out_boxes),
        gt.classes().to_vec(),
    )
    .expect("the same number of boxes and classes");
    if let Some(c) = crowd {
        corrected = corrected.with_crowd(c.to_vec()).expect("one flag per box");
    }
    if let Some(m) = gt.masks() {
        corrected = corrected.with_masks(m.clone()).expect("one mask per box");
    }
    (corrected, sums)
}

/// The batch's ground truth corrected by `teacher`'s predictions `out` on the same
/// (augmented, padded) batch: decoded boxes of every prior and the class scores (times
/// the centerness of heads that have one).
pub fn correct_targets(
    config: &BoxCorrectionConfig,
    teacher: &Detector,
    out: &DetectorOutput,
    targets: &[Instances],
) -> (Vec<Instances>, CorrectionStats) {
    let priors = teacher.priors(out);
    let k = teacher.head.num_classes();
    let mut scores: Tensor<3> = class_scores(&out.head, k); // [B, P, K]
    if out.head.iter().all(|l| l.centerness.is_some()) {
        scores = scores * centerness_factors(&out.head).unsqueeze_dim::<3>(2);
    }
    let [b, p, _] = scores.dims();
    let scores: Vec<f32> = scores.into_data().try_to_vec().expect("scores are f32");
    let boxes: Vec<f32> = teacher
        .head
        .decode_boxes(&out.head, &priors)
        .into_data()
        .try_to_vec()
        .expect("boxes are f32");
    assert_eq!(targets.len(), b, "correct_targets: images");
    let mut all = Vec::new();
    let mut corrected = Vec::with_capacity(b);
    for (i, gt) in targets.iter().enumerate() {
        let image_boxes: Vec<[f32; 4]> = boxes[i * p * 4..(i + 1) * p * 4]
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect();
        let (c, sums) = correct_image(
            config,
            gt,
            &image_boxes,
            &scores[i * p * k..(i + 1) * p * k],
            k,
        );
        corrected.push(c);
        all.extend(sums);
    }
    let stats = CorrectionStats {
        boxes: all.len(),
        mean_weight: if all.is_empty() {
            0.0
        } else {
            all.iter().sum::<f32>() / all.len() as f32
        },
    };
    (corrected, stats)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kdet_structures::ImageSize;

    fn gt() -> Instances {
        Instances::new(
            ImageSize::new(64, 64),
            Boxes::<Xyxy>::new(vec![[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 64.0, 64.0]]),
            vec![1, 0],
        )
        .unwrap()
        .with_crowd(vec![false, true])
        .unwrap()
    }

    /// Teacher boxes: b0 = [12, 10, 32, 30] (IoU 18·20 / (2·400 − 360) = 360/440 ≈ 0.818),
    /// b1 = [10, 10, 30, 28] (IoU 0.9), b2 = [40, 40, 60, 60] (IoU 0); scores of class 1:
    /// 0.5, 0.8 (b1 also 0.04 for class 0), 0.9.
    fn teacher() -> (Vec<[f32; 4]>, Vec<f32>) {
        (
            vec![
                [12.0, 10.0, 32.0, 30.0],
                [10.0, 10.0, 30.0, 28.0],
                [40.0, 40.0, 60.0, 60.0],
            ],
            vec![0.0, 0.5, 0.04, 0.8, 0.0, 0.9],
        )
    }

    #[test]
    fn step_fusion_by_hand() {
        // Both overlapping boxes pass IoU > 0.7: w = 0.5 and 0.8, Σw = 1.3;
        // g' = (g + 0.5 b0 + 0.8 b1) / 2.3.
        let (boxes, scores) = teacher();
        let (c, sums) = correct_image(&BoxCorrectionConfig::default(), &gt(), &boxes, &scores, 2);
        assert_eq!(sums.len(), 1);
        assert!((sums[0] - 1.3).abs() < 1e-6);
        let g = [10.0, 10.0, 30.0, 30.0];
        let want: Vec<f32> = (0..4)
            .map(|j| (g[j] + 0.5 * boxes[0][j] + 0.8 * boxes[1][j]) / 2.3)
            .collect();
        let got = c.boxes().as_slice()[0];
        for j in 0..4 {
            assert!((got[j] - want[j]).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        // The crowd region is untouched; classes and flags kept.
        assert_eq!(c.boxes().as_slice()[1], [0.0, 0.0, 64.0, 64.0]);
        assert_eq!(c.classes(), [1, 0]);
        assert_eq!(c.crowd(), Some(&[false, true][..]));
    }

    #[test]
    fn thresholds_ratio_topk_and_exp() {
        let (boxes, scores) = teacher();
        let run =
            |config: BoxCorrectionConfig| correct_image(&config, &gt(), &boxes, &scores, 2).1[0];
        // IoU threshold 0.85 keeps b1 only; ratio 2 multiplies by 4.
        let strict = BoxCorrectionConfig {
            weight: CorrectionWeight::Step {
                iou_threshold: 0.85,
                ratio: 2.0,
            },
            ..Default::default()
        };
        assert!((run(strict) - 3.2).abs() < 1e-5);
        // Scores below the threshold count as 0.
        let high = BoxCorrectionConfig {
            score_threshold: 0.6,
            ..Default::default()
        };
        assert!((run(high) - 0.8).abs() < 1e-6);
        // Top-1 keeps the largest weight.
        let top = BoxCorrectionConfig {
            topk: Some(1),
            ..Default::default()
        };
        assert!((run(top) - 0.8).abs() < 1e-6);
        // exp: e^{-(1-IoU)²/σ} s for both.
        let exp = BoxCorrectionConfig {
            weight: CorrectionWeight::Exp {
                iou_threshold: 0.01,
                sigma: 0.025,
            },
            ..Default::default()
        };
        let iou0 = 360.0f32 / 440.0;
        let want =
            (-(1.0 - iou0).powi(2) / 0.025).exp() * 0.5 + (-(0.1f32).powi(2) / 0.025).exp() * 0.8;
        assert!((run(exp) - want).abs() < 1e-5);
    }

    #[test]
    fn no_confident_overlap_keeps_the_annotation() {
        let (boxes, _) = teacher();
        let (c, sums) = correct_image(&BoxCorrectionConfig::default(), &gt(), &boxes, &[0.0; 6], 2);
        assert_eq!(sums, [0.0]);
        assert_eq!(c.boxes().as_slice(), gt().boxes().as_slice());
    }

    #[test]
    fn config_parses_with_official_defaults_and_checks_values() {
        let c: BoxCorrectionConfig = toml::from_str("").unwrap();
        assert_eq!(c, BoxCorrectionConfig::default());
        let c: BoxCorrectionConfig =
            toml::from_str("weight = { type = \"exp\" }\ntopk = 3").unwrap();
        assert_eq!(
            c.weight,
            CorrectionWeight::Exp {
                iou_threshold: 0.01,
                sigma: 0.025
            }
        );
        assert!(c.validate().is_ok());
        let bad: BoxCorrectionConfig = toml::from_str("topk = 0").unwrap();
        assert!(bad.validate().unwrap_err().contains("topk"));
        assert!(toml::from_str::<BoxCorrectionConfig>("iou = 0.5").is_err());
    }
}
