//! Matched-query KD: distillation between two query-based models (DETR-lite,
//! Mask2Former-lite) whose queries are put in one-to-one correspondence by a Hungarian
//! matcher run from the student's predictions to the teacher's.
//!
//! Spec: `../shared/methods/video-semisup-weak.md` §1.3 item 4, the KD terms of OOKD
//! (arXiv:2302.07516): embedding KD, logit KD `KL(softmax(z_T/τ) ‖ softmax(z_S/τ))` on
//! matched pairs, mask KD (BCE / dice to `σ(teacher mask)`). OOKD has **no public code**
//! and its pairs come from a GT-mediated association (§1.3 item 3); the direct
//! student→teacher matching here, its costs and every reduction below are **kdet's
//! reconstruction**, built from Mask2Former's matcher and criterion (Cheng et al.,
//! CVPR 2022, arXiv:2112.01527), DETR's (Carion et al., ECCV 2020, arXiv:2005.12872) and
//! Hinton's KD (arXiv:1503.02531). OOKD (a later issue) reuses [`match_student_to_teacher`]
//! and [`soft_mask_losses`].
//!
//! **Matching** (host, no gradients; [`match_student_to_teacher`]), per image, a `[Q_S, Q_T]`
//! cost solved scipy-exactly (`kdet_models::ops::matching`; with `Q_S ≠ Q_T`,
//! `min(Q_S, Q_T)` pairs). `ĉ_t` is teacher query `t`'s argmax class over all `K + 1`
//! classes (no-object included), so "no object" must be predicted too:
//!
//! ```text
//! masks (both models):  C[s,t] = 2 · (−p_s(ĉ_t)) + 5 · CE(x_s, σ(y_t)) + 5 · Dice(x_s, σ(y_t))
//! boxes only:           C[s,t] = 1 · (−p_s(ĉ_t)) + 5 · ‖b_s − b_t‖₁ + 2 · (−GIoU(b_s, b_t))
//! ```
//!
//! with `x_s`, `y_t` the mask logits point-sampled at `P` points and the Mask2Former /
//! DETR matcher weights (configurable). matching.rs's `sigmoid_ce_cost` and `dice_cost`
//! are linear in the target / a plain product with it, so they take soft targets in
//! `[0, 1]` unchanged: used as they are.
//!
//! **Points**: `P` uniform points in `[0, 1]²` per image ([`MaskPoints`]), drawn from
//! ChaCha8 keyed by `(seed, step, student layer)` (a resumed run draws the same), shared
//! by matching and loss (Mask2Former's loss uses importance sampling; a KD target has no
//! "uncertain" region to favour, so kdet keeps the uniform draw). Each model's mask logits
//! are sampled on its own grid (detectron2 `point_sample`), so the grids may differ; the
//! teacher's probability at a point is `σ(sampled logit)`, as Mask2Former samples logits.
//!
//! **Terms**, for `M` matched pairs `(s, t)` of the batch and the `F ⊆ M` foreground pairs
//! (teacher no-object probability `p_t(∅) < foreground_threshold`: a no-object query's
//! mask and box mean nothing), each times its weight:
//!
//! ```text
//! cls      = 1/|M| Σ_M τ² Σ_c p_t(c) (ln p_t(c) − ln p_s(c)),  p = softmax(z/τ) over K+1
//! mask     = 1/|F| Σ_F 1/P Σ_p KL_Bern(σ(y) ‖ σ(x))
//!          = 1/|F| Σ_F 1/P Σ_p [BCE(x, σ(y)) − H(σ(y))]
//! dice     = 1/|F| Σ_F 1 − (2 Σ_p σ(x)σ(y) + 1) / (Σ_p σ(x) + Σ_p σ(y) + 1)
//! box_l1   = 5 · 1/|F| Σ_F ‖b_s − b_t‖₁                      (× box_weight)
//! box_giou = 2 · 1/|F| Σ_F (1 − GIoU(b_s, b_t))               (× box_weight)
//! emb      = 1/(|M| D) Σ_M ‖e_s − e_t‖²
//! ```
//!
//! - `cls` is [`super::kd::kl_div_rows`] with `ClassSum`, averaged over pairs.
//! - `mask` is the Bernoulli KL, i.e. the BCE against soft targets minus the teacher's
//!   entropy. It has the BCE's gradient `σ(x) − σ(y)` and is zero at `x = y` (the BCE alone
//!   would equal the teacher's entropy there). Mean over points, as Mask2Former's
//!   `loss_mask`; mean over foreground pairs where Mask2Former divides by `num_masks`.
//! - `dice` is Mask2Former's `dice_loss` against soft targets. It is **not** zero at
//!   `x = y`: `1 − (2Σt² + 1)/(2Σt + 1) > 0` unless the teacher mask is binary. Its
//!   gradient pulls a soft mask towards a harder one; set `dice_weight = 0` to distil
//!   only the probabilities.
//! - `box_l1` / `box_giou` use DETR's loss coefficients 5 and 2 (`bbox_loss_coef`,
//!   `giou_loss_coef`) and reductions (L1 summed over the 4 coordinates, both divided by
//!   the pair count), on normalised `cx, cy, w, h`.
//! - With `aux_layers`, every student decoder layer is matched on its own to the
//!   teacher's last layer and each term is the mean over those layers.
//!
//! Mask terms need mask logits on both sides, box terms boxes on both sides; matching uses
//! the masks when both have them, else the boxes (a pair of models with neither in common
//! is a wiring bug). Empty pair sets give zero terms that keep the student's graph.
//!
//! **Devices**: the student layers on the autodiff device; the teacher's tensors are
//! constants: they are detached and taken off autodiff here, so they may come from the
//! plain device or the autodiff one. Both sides are assumed to live on the same backend
//! device (the caller moves the teacher's outputs there).

use burn::tensor::activation::{log_sigmoid, sigmoid, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kdet_models::ops::matching::{BoxMatcherConfig, MaskMatcherConfig, match_cost};
use kdet_models::ops::sample::point_sample;
use kdet_models::output::QueryLayer;
use kdet_structures::Cxcywh;
use kdet_structures::boxes::BoxTensor;
use kdet_structures::iou::aligned_giou_tensor;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use super::kd::{KlReduction, kl_div_rows};
use crate::method::{KdInputs, KdMethod, KdTerm, NoModules, TapUse, Wiring};
use kdet_models::{Model, ModelFamily};

/// DETR's `bbox_loss_coef` (`main.py`), the L1 box-KD coefficient (times `box_weight`).
pub const BOX_L1_COEF: f32 = 5.0;
/// DETR's `giou_loss_coef` (`main.py`), the GIoU box-KD coefficient (times `box_weight`).
pub const BOX_GIOU_COEF: f32 = 2.0;

/// Matched-query KD settings. TOML / JSON keys are the field names; missing keys take the
/// defaults below, unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchedQueryKdConfig {
    /// Weight of the class-distribution KD `"cls"`. Default 1.0 (kdet's choice).
    pub class_weight: f32,
    /// Temperature `τ` of the class KD (the KL is scaled by `τ²`). Default 1.0 (kdet's
    /// choice; Hinton's KD form).
    pub tau: f32,
    /// Weight of the point-sampled Bernoulli-KL mask KD `"mask"`. Default 1.0 (kdet's
    /// choice).
    pub mask_weight: f32,
    /// Weight of the soft dice mask KD `"dice"`. Default 1.0 (kdet's choice).
    pub dice_weight: f32,
    /// Points sampled per image for mask matching and mask KD. Default 3136 = 56² (kdet's
    /// choice: a quarter of Mask2Former's `TRAIN_NUM_POINTS` = 112², for CPU cost).
    pub num_points: usize,
    /// A matched pair gets mask and box KD only where the teacher query's no-object
    /// probability (softmax at temperature 1) is below this. Default 0.5 (kdet's choice).
    pub foreground_threshold: f32,
    /// Weight of the box KD (`"box_l1"` = 5·L1, `"box_giou"` = 2·(1 − GIoU), DETR's
    /// coefficients). Default 1.0 (kdet's choice).
    pub box_weight: f32,
    /// Weight of the query-embedding MSE `"emb"` (needs equal widths; a connector is the
    /// caller's). Default 0.0 = off (kdet's choice).
    pub embedding_weight: f32,
    /// Distil every student decoder layer against the teacher's last one (terms averaged
    /// over layers) instead of the student's last layer only. Default false (kdet's
    /// choice).
    pub aux_layers: bool,
    /// Matcher weight of the class cost `−p_s(ĉ_t)` with masks. Default 2.0 (Mask2Former
    /// `MODEL.MASK_FORMER.CLASS_WEIGHT`).
    pub match_class_weight: f32,
    /// Matcher weight of the sigmoid-CE mask cost. Default 5.0 (Mask2Former
    /// `MODEL.MASK_FORMER.MASK_WEIGHT`).
    pub match_mask_weight: f32,
    /// Matcher weight of the dice cost. Default 5.0 (Mask2Former
    /// `MODEL.MASK_FORMER.DICE_WEIGHT`).
    pub match_dice_weight: f32,
    /// Matcher weight of the class cost for box-only models. Default 1.0 (DETR
    /// `--set_cost_class`).
    pub match_box_class_weight: f32,
    /// Matcher weight of the L1 box cost. Default 5.0 (DETR `--set_cost_bbox`).
    pub match_box_l1_weight: f32,
    /// Matcher weight of the `−GIoU` box cost. Default 2.0 (DETR `--set_cost_giou`).
    pub match_box_giou_weight: f32,
}

impl Default for MatchedQueryKdConfig {
    fn default() -> Self {
        Self {
            class_weight: 1.0,
            tau: 1.0,
            mask_weight: 1.0,
            dice_weight: 1.0,
            num_points: 3136,
            foreground_threshold: 0.5,
            box_weight: 1.0,
            embedding_weight: 0.0,
            aux_layers: false,
            match_class_weight: 2.0,
            match_mask_weight: 5.0,
            match_dice_weight: 5.0,
            match_box_class_weight: 1.0,
            match_box_l1_weight: 5.0,
            match_box_giou_weight: 2.0,
        }
    }
}

impl MatchedQueryKdConfig {
    /// Checks the values: `tau > 0`, `num_points > 0`, finite non-negative weights. The
    /// message names the field.
    pub fn check(&self) -> Result<(), String> {
        if !(self.tau > 0.0 && self.tau.is_finite()) {
            return Err(format!("tau must be positive, got {}", self.tau));
        }
        if self.num_points == 0 {
            return Err("num_points must be at least 1".into());
        }
        if !self.foreground_threshold.is_finite() {
            return Err(format!(
                "foreground_threshold must be finite, got {}",
                self.foreground_threshold
            ));
        }
        let weights = [
            ("class_weight", self.class_weight),
            ("mask_weight", self.mask_weight),
            ("dice_weight", self.dice_weight),
            ("box_weight", self.box_weight),
            ("embedding_weight", self.embedding_weight),
            ("match_class_weight", self.match_class_weight),
            ("match_mask_weight", self.match_mask_weight),
            ("match_dice_weight", self.match_dice_weight),
            ("match_box_class_weight", self.match_box_class_weight),
            ("match_box_l1_weight", self.match_box_l1_weight),
            ("match_box_giou_weight", self.match_box_giou_weight),
        ];
        for (name, w) in weights {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(format!("{name} must be finite and >= 0, got {w}"));
            }
        }
        Ok(())
    }
}

/// Domain tag in the key of the point stream ("MQKD pts", little-endian), so no other
/// ChaCha stream of kdet keyed by the same numbers can coincide with it.
const POINT_STREAM_TAG: u64 = u64::from_le_bytes(*b"MQKD pts");

/// Uniform points in `[0, 1]²` (`(x, y)` relative to a mask's extent, detectron2
/// `point_sample` convention), `P` per image.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskPoints {
    num_images: usize,
    num_points: usize,
    /// Row-major `[B, P, 2]`.
    coords: Vec<f32>,
}

impl MaskPoints {
    /// The points of one step and student layer: a pure function of `(seed, step, layer,
    /// num_images, num_points)`. ChaCha8 keyed by `(seed, step, layer, tag)` draws, in
    /// row-major `[B, P, 2]` order, `u = (next_u32 >> 8) · 2⁻²⁴ ∈ [0, 1)` (as MGD's masks).
    pub fn draw(seed: u64, step: u64, layer: usize, num_images: usize, num_points: usize) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&step.to_le_bytes());
        key[16..24].copy_from_slice(&(layer as u64).to_le_bytes());
        key[24..].copy_from_slice(&POINT_STREAM_TAG.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(key);
        let coords = (0..num_images * num_points * 2)
            .map(|_| (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32))
            .collect();
        Self {
            num_images,
            num_points,
            coords,
        }
    }

    pub fn num_images(&self) -> usize {
        self.num_images
    }

    pub fn num_points(&self) -> usize {
        self.num_points
    }

    /// Row-major `[B, P, 2]` coordinates.
    pub fn coords(&self) -> &[f32] {
        &self.coords
    }

    /// The points as a `[B, P, 2]` constant on `device`.
    pub fn tensor(&self, device: &Device) -> Tensor<3> {
        Tensor::from_data(
            TensorData::new(self.coords.clone(), [self.num_images, self.num_points, 2]),
            device,
        )
    }

    /// `masks` sampled at the points (bilinear, zero outside), on the masks' device.
    ///
    /// # Shapes
    /// - `masks`: `[B, Q, H, W]` → `[B, Q, P]`
    ///
    /// # Panics
    /// If the batch size differs from the points'.
    pub fn sample(&self, masks: Tensor<4>) -> Tensor<3> {
        let b = masks.dims()[0];
        assert_eq!(
            b, self.num_images,
            "matched-query KD: masks of {b} images, points for {}",
            self.num_images
        );
        let coords = self.tensor(&masks.device());
        point_sample(masks, coords)
    }
}

/// A teacher tensor as a constant: no graph, off autodiff (combined with an autodiff
/// student tensor it is treated as a constant).
fn constant<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.detach().without_autodiff()
}

/// Host values of a float tensor.
fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor reads back as f32")
}

/// What matching and the foreground rule read from the teacher's class logits.
struct TeacherClasses {
    /// `labels[b][t]`: argmax class over `K + 1` (ties: the lowest index).
    labels: Vec<Vec<usize>>,
    /// `foreground[b][t]`: no-object probability below the threshold.
    foreground: Vec<Vec<bool>>,
}

fn teacher_classes(class_logits: &Tensor<3>, threshold: f32) -> TeacherClasses {
    let [b, q, c] = class_logits.dims();
    let probs = host(softmax(constant(class_logits.clone()), 2)); // [B, Q, C]
    let mut labels = vec![Vec::with_capacity(q); b];
    let mut foreground = vec![Vec::with_capacity(q); b];
    for i in 0..b {
        for t in 0..q {
            let row = &probs[(i * q + t) * c..(i * q + t + 1) * c];
            let arg = (1..c).fold(0, |a, k| if row[k] > row[a] { k } else { a });
            labels[i].push(arg);
            foreground[i].push(row[c - 1] < threshold);
        }
    }
    TeacherClasses { labels, foreground }
}

/// Mask or box inputs of the matcher, all constants: `[B, Q, P]` sampled mask logits or
/// `[B, Q, 4]` boxes, student then teacher.
enum MatchGeometry {
    Masks(Tensor<3>, Tensor<3>),
    Boxes(Tensor<3>, Tensor<3>),
}

/// `[Q, X]` row block of image `i` of a `[B, Q, X]` tensor.
fn image_rows(t: &Tensor<3>, i: usize) -> Tensor<2> {
    let [_, q, x] = t.dims();
    t.clone().slice([i..i + 1, 0..q, 0..x]).reshape([q, x])
}

fn match_with(
    cfg: &MatchedQueryKdConfig,
    student_logits: Tensor<3>,
    labels: &[Vec<usize>],
    geometry: &MatchGeometry,
) -> Vec<Vec<(usize, usize)>> {
    let [b, qs, _] = student_logits.dims();
    let mask_matcher = MaskMatcherConfig::new()
        .with_class_weight(cfg.match_class_weight as f64)
        .with_mask_weight(cfg.match_mask_weight as f64)
        .with_dice_weight(cfg.match_dice_weight as f64)
        .with_num_points(cfg.num_points);
    let box_matcher = BoxMatcherConfig::new()
        .with_class_weight(cfg.match_box_class_weight as f64)
        .with_bbox_weight(cfg.match_box_l1_weight as f64)
        .with_giou_weight(cfg.match_box_giou_weight as f64);
    (0..b)
        .map(|i| {
            let qt = labels[i].len();
            if qs == 0 || qt == 0 {
                return Vec::new();
            }
            let logits = image_rows(&student_logits, i);
            let cost = match geometry {
                MatchGeometry::Masks(s, t) => mask_matcher.cost(
                    logits,
                    image_rows(s, i),
                    sigmoid(image_rows(t, i)),
                    &labels[i],
                ),
                MatchGeometry::Boxes(s, t) => {
                    box_matcher.cost(logits, image_rows(s, i), image_rows(t, i), &labels[i])
                }
            };
            match_cost(cost).unwrap_or_else(|e| {
                panic!("matched-query KD: image {i}: {e} (a diverged student or teacher)")
            })
        })
        .collect()
}

/// Checks the shape contract of a student/teacher layer pair; returns `(B, C)`.
fn check_pair(student: &QueryLayer, teacher: &QueryLayer) -> (usize, usize) {
    let [bs, _, cs] = student.class_logits.dims();
    let [bt, _, ct] = teacher.class_logits.dims();
    assert!(
        bs == bt && cs == ct,
        "matched-query KD: student class logits [{bs}, Q_S, {cs}] vs teacher [{bt}, Q_T, {ct}] \
         (batch and K + 1 must agree)"
    );
    assert!(
        (student.mask_logits.is_some() && teacher.mask_logits.is_some())
            || (student.boxes.is_some() && teacher.boxes.is_some()),
        "matched-query KD: student and teacher share neither mask logits nor boxes"
    );
    (bs, cs)
}

/// The Hungarian matching of one student layer's queries to the teacher layer's, per
/// image: `(student query, teacher query)` pairs, student queries ascending,
/// `min(Q_S, Q_T)` of them (see the module doc for the costs). Detached: no gradient.
///
/// `points` are the mask points of this layer (e.g. [`MaskPoints::draw`]); read only when
/// both layers have mask logits (matching then uses masks), else matching uses the boxes.
///
/// # Panics
/// If the batch or class counts differ, the layers share neither masks nor boxes, the
/// points are for another batch size, or a cost is not finite (a diverged model).
pub fn match_student_to_teacher(
    cfg: &MatchedQueryKdConfig,
    student: &QueryLayer,
    teacher: &QueryLayer,
    points: &MaskPoints,
) -> Vec<Vec<(usize, usize)>> {
    check_pair(student, teacher);
    let classes = teacher_classes(&teacher.class_logits, cfg.foreground_threshold);
    let geometry = match (&student.mask_logits, &teacher.mask_logits) {
        (Some(s), Some(t)) => MatchGeometry::Masks(
            points.sample(constant(s.clone())),
            points.sample(constant(t.clone())),
        ),
        _ => box_geometry(student, teacher),
    };
    match_with(
        cfg,
        constant(student.class_logits.clone()),
        &classes.labels,
        &geometry,
    )
}

fn box_geometry(student: &QueryLayer, teacher: &QueryLayer) -> MatchGeometry {
    match (&student.boxes, &teacher.boxes) {
        (Some(s), Some(t)) => MatchGeometry::Boxes(constant(s.clone()), constant(t.clone())),
        _ => unreachable!("check_pair: a pair without common masks has boxes on both sides"),
    }
}

/// Per-pair soft mask KD between `[M, P]` student and teacher mask logits at the same
/// points: `(Bernoulli KL mean over points, soft dice)`, each `[M]`. The teacher is
/// detached. `KL = σ(y)(ln σ(y) − ln σ(x)) + σ(−y)(ln σ(−y) − ln σ(−x))` (the BCE against
/// `σ(y)` minus its entropy); dice `1 − (2Σσ(x)σ(y) + 1)/(Σσ(x) + Σσ(y) + 1)`.
///
/// # Panics
/// If the shapes differ.
pub fn soft_mask_losses(student: Tensor<2>, teacher: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
    assert_eq!(
        student.dims(),
        teacher.dims(),
        "soft_mask_losses: student [M, P] vs teacher shape"
    );
    let [m, _] = student.dims();
    let y = constant(teacher);
    let (log_t, log_1mt) = (log_sigmoid(y.clone()), log_sigmoid(y.clone().neg()));
    let (t, one_minus_t) = (log_t.clone().exp(), log_1mt.clone().exp());
    let kl = (t.clone() * (log_t - log_sigmoid(student.clone()))
        + one_minus_t * (log_1mt - log_sigmoid(student.clone().neg())))
    .mean_dim(1)
    .reshape([m]);
    let p = sigmoid(student);
    let numerator = (p.clone() * t.clone())
        .sum_dim(1)
        .mul_scalar(2.0)
        .add_scalar(1.0);
    let denominator = (p.sum_dim(1) + t.sum_dim(1)).add_scalar(1.0);
    let dice = (numerator / denominator).neg().add_scalar(1.0).reshape([m]);
    (kl, dice)
}

/// `[B·Q, X]` rows of `t` (`[B, Q, X]`) at flat indices `rows` → `[M, X]`.
fn select_rows(t: Tensor<3>, rows: &[usize]) -> Tensor<2> {
    let [b, q, x] = t.dims();
    let device = t.device();
    let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    t.reshape([b * q, x]).select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(index, [rows.len()]), &device),
    )
}

/// The terms of one student layer, by name, each times its weight.
fn layer_terms(
    cfg: &MatchedQueryKdConfig,
    student: &QueryLayer,
    teacher: &QueryLayer,
    classes: &TeacherClasses,
    points: Option<&MaskPoints>,
) -> Vec<(&'static str, Tensor<1>)> {
    let [_, qs, _] = student.class_logits.dims();
    let [_, qt, _] = teacher.class_logits.dims();
    // Sampled student mask logits keep their graph; the teacher's are constants.
    let masks = match (&student.mask_logits, &teacher.mask_logits, points) {
        (Some(s), Some(t), Some(p)) => Some((p.sample(s.clone()), p.sample(constant(t.clone())))),
        _ => None,
    };
    let geometry = match &masks {
        Some((s, t)) => MatchGeometry::Masks(constant(s.clone()), t.clone()),
        None => box_geometry(student, teacher),
    };
    let pairs = match_with(
        cfg,
        constant(student.class_logits.clone()),
        &classes.labels,
        &geometry,
    );
    // Flat rows (b·Q + q) of every matched pair, and of the foreground ones.
    let mut all = (Vec::new(), Vec::new());
    let mut fg = (Vec::new(), Vec::new());
    for (i, image) in pairs.iter().enumerate() {
        for &(s, t) in image {
            all.0.push(i * qs + s);
            all.1.push(i * qt + t);
            if classes.foreground[i][t] {
                fg.0.push(i * qs + s);
                fg.1.push(i * qt + t);
            }
        }
    }
    // Zero with the student's graph kept, for empty pair sets.
    let zero = || student.class_logits.clone().sum().mul_scalar(0.0);
    let mut terms = Vec::new();
    if cfg.class_weight > 0.0 {
        let cls = if all.0.is_empty() {
            zero()
        } else {
            kl_div_rows(
                select_rows(student.class_logits.clone(), &all.0),
                select_rows(constant(teacher.class_logits.clone()), &all.1),
                cfg.tau,
                KlReduction::ClassSum,
            )
            .mean()
        };
        terms.push(("cls", cls.mul_scalar(cfg.class_weight)));
    }
    if let Some((s, t)) = masks
        && (cfg.mask_weight > 0.0 || cfg.dice_weight > 0.0)
    {
        let (kl, dice) = if fg.0.is_empty() {
            (zero(), zero())
        } else {
            let (kl, dice) = soft_mask_losses(select_rows(s, &fg.0), select_rows(t, &fg.1));
            (kl.mean(), dice.mean())
        };
        if cfg.mask_weight > 0.0 {
            terms.push(("mask", kl.mul_scalar(cfg.mask_weight)));
        }
        if cfg.dice_weight > 0.0 {
            terms.push(("dice", dice.mul_scalar(cfg.dice_weight)));
        }
    }
    if let (Some(s), Some(t)) = (&student.boxes, &teacher.boxes)
        && cfg.box_weight > 0.0
    {
        let (l1, giou) = if fg.0.is_empty() {
            (zero(), zero())
        } else {
            let s = select_rows(s.clone(), &fg.0); // [F, 4]
            let t = select_rows(constant(t.clone()), &fg.1);
            let l1 = (s.clone() - t.clone()).abs().sum_dim(1).mean();
            let giou =
                aligned_giou_tensor(&BoxTensor::<Cxcywh>::new(s), &BoxTensor::<Cxcywh>::new(t));
            (l1, giou.neg().add_scalar(1.0).mean())
        };
        terms.push(("box_l1", l1.mul_scalar(BOX_L1_COEF * cfg.box_weight)));
        terms.push(("box_giou", giou.mul_scalar(BOX_GIOU_COEF * cfg.box_weight)));
    }
    if cfg.embedding_weight > 0.0 {
        let ds = student.embeddings.dims()[2];
        let dt = teacher.embeddings.dims()[2];
        assert_eq!(
            ds, dt,
            "matched-query KD: student embeddings are {ds} wide, the teacher's {dt} \
             (project the student's first)"
        );
        let emb = if all.0.is_empty() {
            zero()
        } else {
            let s = select_rows(student.embeddings.clone(), &all.0);
            let t = select_rows(constant(teacher.embeddings.clone()), &all.1);
            (s - t).square().mean()
        };
        terms.push(("emb", emb.mul_scalar(cfg.embedding_weight)));
    }
    terms
}

/// Matched-query KD terms of one step: the student's last layer (or, with `aux_layers`,
/// each of its layers) matched to the teacher's last layer and distilled (module doc).
/// Returns `"cls"`, `"mask"`, `"dice"`, `"box_l1"`, `"box_giou"`, `"emb"`: those whose
/// inputs both models have and whose weight is nonzero, each already times its weight
/// (and the box terms times 5 and 2), `[1]` scalars averaged over the distilled layers.
///
/// `seed` and `step` key the mask points ([`MaskPoints::draw`], with the student layer's
/// index), so a resumed run is bit-exact. The teacher's tensors are detached here.
///
/// # Shapes
/// - `student[l]`: class logits `[B, Q_S, K+1]`, masks `[B, Q_S, H_S, W_S]`, boxes
///   `[B, Q_S, 4]`, embeddings `[B, Q_S, D]`
/// - `teacher`: the same with `Q_T`, `H_T × W_T` (any grid), `D` (equal when
///   `embedding_weight > 0`)
///
/// # Panics
/// If `student` is empty, the batch or class counts differ, the models share neither
/// masks nor boxes, the embedding widths differ with `embedding_weight > 0`, or a matching
/// cost is not finite.
pub fn matched_query_kd(
    cfg: &MatchedQueryKdConfig,
    student: &[QueryLayer],
    teacher: &QueryLayer,
    seed: u64,
    step: u64,
) -> Vec<KdTerm> {
    let last = student
        .len()
        .checked_sub(1)
        .expect("matched-query KD: the student has at least one query layer");
    let first = if cfg.aux_layers { 0 } else { last };
    let (b, _) = check_pair(&student[last], teacher);
    let classes = teacher_classes(&teacher.class_logits, cfg.foreground_threshold);
    let mut sums: Vec<(&'static str, Tensor<1>)> = Vec::new();
    for (l, layer) in student.iter().enumerate().skip(first) {
        check_pair(layer, teacher);
        let points = (layer.mask_logits.is_some() && teacher.mask_logits.is_some())
            .then(|| MaskPoints::draw(seed, step, l, b, cfg.num_points));
        let terms = layer_terms(cfg, layer, teacher, &classes, points.as_ref());
        if sums.is_empty() {
            sums = terms;
        } else {
            let names = |t: &[(&'static str, Tensor<1>)]| -> Vec<&'static str> {
                t.iter().map(|(n, _)| *n).collect()
            };
            assert_eq!(
                names(&sums),
                names(&terms),
                "matched-query KD: student layer {l} predicts other outputs than layer {first}"
            );
            for ((_, acc), (_, t)) in sums.iter_mut().zip(terms) {
                *acc = acc.clone() + t;
            }
        }
    }
    let layers = (last + 1 - first) as f64;
    sums.into_iter()
        .map(|(name, value)| KdTerm::new(name, value.div_scalar(layers)))
        .collect()
}

impl KdMethod for MatchedQueryKdConfig {
    const NAME: &'static str = "matched_query_kd";
    /// No trainable modules: the embedding term needs equal query widths (checked).
    type Modules = NoModules;

    fn defaults() -> Self {
        Self::default()
    }

    fn tap_use(&self) -> TapUse {
        TapUse::Queries
    }

    /// The class term compares the `K + 1` class distributions.
    fn compares_classes(&self) -> bool {
        true
    }

    /// Values in range; both models predict masks (Mask2Former) or both boxes (DETR);
    /// equal query widths for the embedding term.
    fn check(&self, wiring: &Wiring) -> Result<(), String> {
        self.check()?;
        let (s, t) = (wiring.student, wiring.teacher);
        let both = |f: fn(&Model) -> bool| f(s) && f(t);
        if !both(Model::predicts_masks) && !both(|m| matches!(m, Model::Detr(_))) {
            return Err(format!(
                "matched-query KD matches masks (both mask2former) or boxes (both detr); the student is {} and the teacher {}",
                ModelFamily::family(s),
                ModelFamily::family(t)
            ));
        }
        let width = |shapes: &crate::taps::TapShapes| shapes.query_layers.last().map(|q| q[1]);
        let (ws, wt) = (width(wiring.student_shapes), width(wiring.teacher_shapes));
        if self.embedding_weight > 0.0 && ws != wt {
            return Err(format!(
                "embedding_weight > 0 compares query embeddings, but the student's are {} wide and the teacher's {} (set embedding_weight = 0)",
                ws.unwrap_or(0),
                wt.unwrap_or(0)
            ));
        }
        Ok(())
    }

    fn init(&self, _wiring: &Wiring, _device: &Device) -> NoModules {
        NoModules::new()
    }

    fn terms(&self, _modules: &NoModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let teacher = inputs
            .teacher()
            .queries
            .last()
            .expect("the planner checks that the teacher has query layers");
        matched_query_kd(
            self,
            &inputs.student.queries,
            teacher,
            inputs.seed,
            inputs.step,
        )
    }
}

#[cfg(test)]
#[path = "tests/mqkd.rs"]
mod tests;
