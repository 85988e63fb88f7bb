//! Tests of [`super`] (ld.rs), kept apart to keep the loss file readable.
use super::*;
use crate::losses::test_util::{GtBatch, Lcg, assert_rel, instances, kl_f64, scalar, tensor, vals};
use burn::tensor::Device;
use kdet_models::ImageAssignment;
use kdet_models::priors::AnchorGeneratorConfig;
use kdet_structures::{ImageSize, Instances};

const K: usize = 3;
const REG_MAX: usize = 4;
const BINS: usize = REG_MAX + 1;
/// `(H, W)` of the two levels (strides 8 and 16): 6 + 2 priors per image.
const LEVELS: [(usize, usize); 2] = [(2, 3), (1, 2)];

fn head_level(cls: Tensor<4>, reg: Tensor<4>, stride: usize) -> HeadLevel {
    let [n, _, h, w] = cls.dims();
    let device = cls.device();
    HeadLevel {
        stride,
        cls_logits: cls,
        box_regression: reg,
        centerness: None,
        cls_tower: Tensor::zeros([n, 1, h, w], &device),
        reg_tower: Tensor::zeros([n, 1, h, w], &device),
    }
}

/// `T² KL(softmax(t/T) ‖ softmax(s/T)) / D` of one row in f64 (mmdet's class mean).
fn kl_mean_f64(s: &[f64], t: &[f64], temp: f64) -> f64 {
    kl_f64(s, t, temp) / s.len() as f64
}

/// Priors of [`LEVELS`]: anchors of side 8·stride (GFL), offsets `[0, 6, 8]`.
fn two_level_priors() -> Priors {
    AnchorGeneratorConfig::new()
        .with_strides(vec![8, 16])
        .grid_priors(&LEVELS)
}

fn assignment(priors: Priors, positives: &[&[usize]]) -> Assignment {
    let n = priors.len();
    let images = positives
        .iter()
        .map(|pos| {
            let mut matched_gt = vec![None; n];
            for &i in *pos {
                matched_gt[i] = Some(0);
            }
            ImageAssignment {
                matched_gt,
                ignore: vec![false; n],
                max_iou: vec![0.0; n],
            }
        })
        .collect();
    Assignment::dense(priors, images)
}

fn vlr_map(n: usize, entries: &[(usize, usize, f32)]) -> Vec<Vec<f32>> {
    let mut v = vec![vec![0.0f32; n]; 2];
    for &(img, i, value) in entries {
        v[img][i] = value;
    }
    v
}

/// Raw NCHW values of both levels: `(cls, reg)` per level.
type Raw = Vec<(Vec<f64>, Vec<f64>)>;

fn raw(seed: u64) -> Raw {
    LEVELS
        .iter()
        .enumerate()
        .map(|(l, &(h, w))| {
            (
                Lcg::new(seed + 10 * l as u64).vec_f64(2 * K * h * w, 3.0),
                Lcg::new(seed + 10 * l as u64 + 5).vec_f64(2 * 4 * BINS * h * w, 6.0),
            )
        })
        .collect()
}

fn levels(raw: &Raw, device: &Device) -> Vec<HeadLevel> {
    raw.iter()
        .zip(LEVELS)
        .zip([8, 16])
        .map(|(((c, r), (h, w)), stride)| {
            head_level(
                tensor(c, [2, K, h, w], device),
                tensor(r, [2, 4 * BINS, h, w], device),
                stride,
            )
        })
        .collect()
}

// Golden layout: positives img0 {1 (level 0), 7 (level 1)}, img1 {4, 5} (level 0);
// VLR img0 {1: 0.4 (also a positive), 2: 0.3, 7: 0.2}, img1 {0: 0.5, 6: 0.35}.
const POSITIVES: [&[usize]; 2] = [&[1, 7], &[4, 5]];
const VLR: [(usize, usize, f32); 5] = [
    (0, 1, 0.4),
    (0, 2, 0.3),
    (0, 7, 0.2),
    (1, 0, 0.5),
    (1, 6, 0.35),
];

#[test]
fn golden_values_of_the_three_terms() {
    // Straight from spec §1.2 in f64, reading the NCHW arrays: prior i of level l
    // (local p = i − offset_l, (y, x) = (p / W, p % W)) of image n has class logit k at
    // cls[((n·K + k)·H + y)·W + x] and bin b of edge e at reg[((n·20 + 5e + b)·H + y)·W + x].
    //   ld  = 0.25 · Σ_l Σ_pos Σ_e w · KLmean_{T=10}(edge) / 4, w = max_k σ(cls_k)
    //   vlr = 0.25 · Σ_l Σ_vlr Σ_e v · KLmean_{T=10}(edge) / 16
    //   kd  = 10   · Σ_l Σ_pos KLmean_{T=2}(cls row) / P_l
    let config = LdConfig::new();
    let priors = two_level_priors();
    let offsets = priors.level_offsets.clone();
    let (s_raw, t_raw) = (raw(1), raw(2));
    let vlr = vlr_map(priors.len(), &VLR);
    let mut exp = [0.0f64; 3];
    for (l, &(h, w)) in LEVELS.iter().enumerate() {
        let cls = |r: &Raw, n: usize, p: usize| -> Vec<f64> {
            (0..K)
                .map(|k| r[l].0[((n * K + k) * h + p / w) * w + p % w])
                .collect()
        };
        let edge = |r: &Raw, n: usize, p: usize, e: usize| -> Vec<f64> {
            (0..BINS)
                .map(|b| r[l].1[((n * 4 * BINS + e * BINS + b) * h + p / w) * w + p % w])
                .collect()
        };
        let (mut kd_sum, mut pos_count) = (0.0, 0usize);
        for (n, (positives, vlr_n)) in POSITIVES.iter().zip(&vlr).enumerate() {
            let level = offsets[l]..offsets[l + 1];
            for (i, &v) in vlr_n.iter().enumerate().take(level.end).skip(level.start) {
                let p = i - offsets[l];
                if positives.contains(&i) {
                    pos_count += 1;
                    let sig = cls(&s_raw, n, p)
                        .iter()
                        .map(|z| 1.0 / (1.0 + (-z).exp()))
                        .fold(0.0, f64::max);
                    for e in 0..4 {
                        let kl = kl_mean_f64(&edge(&s_raw, n, p, e), &edge(&t_raw, n, p, e), 10.0);
                        exp[0] += 0.25 * sig * kl / 4.0;
                    }
                    kd_sum += kl_mean_f64(&cls(&s_raw, n, p), &cls(&t_raw, n, p), 2.0);
                }
                let v = v as f64;
                if v > 0.0 {
                    for e in 0..4 {
                        let kl = kl_mean_f64(&edge(&s_raw, n, p, e), &edge(&t_raw, n, p, e), 10.0);
                        exp[1] += 0.25 * v * kl / 16.0;
                    }
                }
            }
        }
        assert!(pos_count > 0, "both levels hold positives in this layout");
        exp[2] += 10.0 * kd_sum / pos_count as f64;
    }
    let a = assignment(priors, &POSITIVES);
    let terms = ld_loss(
        &config,
        &levels(&s_raw, &Device::flex().autodiff()),
        &levels(&t_raw, &Device::flex()),
        &a,
        &vlr,
        K,
        REG_MAX,
    );
    let got = [scalar(terms.ld), scalar(terms.vlr), scalar(terms.kd)];
    for ((g, e), name) in got.iter().zip(exp).zip(["ld", "vlr", "kd"]) {
        assert!(e > 0.0, "{name}: {exp:?}");
        assert_rel(*g, e, 1e-4, name);
    }
}

#[test]
fn hand_derived_single_prior() {
    // One image, one 1×1 level, K = 2, reg_max = 1 (2 bins), the prior positive and
    // in the VLR with value 0.5; all temperatures set to T (below).
    // Student: all logits 0 -> uniform (1/2, 1/2) rows, w = σ(0) = 0.5.
    // Teacher: every row [T ln 3, 0] -> p^T = (3/4, 1/4) at temperature T.
    // KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 − ln 2; ℓ = T² KL / 2 (class mean, D = 2).
    // With T = 2: ℓ = 2 KL.
    //   ld  = 0.25 · 4 edges · 0.5 · ℓ / 4  = 0.125 ℓ
    //   vlr = 0.25 · 4 edges · 0.5 · ℓ / 16 = 0.03125 ℓ
    //   kd  = 10 · ℓ / 1 = 10 ℓ
    let temp = 2.0f32;
    let config = LdConfig::new()
        .with_ld_temperature(temp)
        .with_vlr_temperature(temp)
        .with_kd_temperature(temp);
    let ad = Device::flex().autodiff();
    let pd = Device::flex();
    let l3 = temp as f64 * 3f64.ln();
    let student = vec![head_level(
        tensor(&[0.0; 2], [1, 2, 1, 1], &ad),
        tensor(&[0.0; 8], [1, 8, 1, 1], &ad),
        8,
    )];
    let teacher = vec![head_level(
        tensor(&[l3, 0.0], [1, 2, 1, 1], &pd),
        tensor(&[l3, 0.0, l3, 0.0, l3, 0.0, l3, 0.0], [1, 8, 1, 1], &pd),
        8,
    )];
    let priors = AnchorGeneratorConfig::new()
        .with_strides(vec![8])
        .grid_priors(&[(1, 1)]);
    let a = assignment(priors, &[&[0]]);
    let terms = ld_loss(&config, &student, &teacher, &a, &[vec![0.5]], 2, 1);
    let ell = 2.0 * (0.75 * 3f64.ln() - 2f64.ln());
    let got = [scalar(terms.ld), scalar(terms.vlr), scalar(terms.kd)];
    let exp = [0.125 * ell, 0.03125 * ell, 10.0 * ell];
    for ((g, e), name) in got.iter().zip(exp).zip(["ld", "vlr", "kd"]) {
        assert_rel(*g, e, 1e-5, name);
    }
}

#[test]
fn zero_when_student_equals_teacher() {
    // Every term is a weighted sum of KL(p ‖ p) = 0.
    let priors = two_level_priors();
    let vlr = vlr_map(priors.len(), &VLR);
    let r = raw(3);
    let terms = ld_loss(
        &LdConfig::new(),
        &levels(&r, &Device::flex().autodiff()),
        &levels(&r, &Device::flex()),
        &assignment(priors, &POSITIVES),
        &vlr,
        K,
        REG_MAX,
    );
    for v in [scalar(terms.ld), scalar(terms.vlr), scalar(terms.kd)] {
        assert!(v.abs() < 1e-6, "{v}");
    }
}

#[test]
fn no_positives_and_no_vlr_give_zero_and_a_connected_graph() {
    let priors = two_level_priors();
    let n = priors.len();
    let ad = Device::flex().autodiff();
    let student = levels(&raw(4), &ad);
    let reg = student[0].box_regression.clone().require_grad();
    let student = vec![
        head_level(student[0].cls_logits.clone(), reg.clone(), 8),
        student[1].clone(),
    ];
    let terms = ld_loss(
        &LdConfig::new(),
        &student,
        &levels(&raw(5), &Device::flex()),
        &assignment(priors, &[&[], &[]]),
        &vlr_map(n, &[]),
        K,
        REG_MAX,
    );
    let total = terms.ld.clone() + terms.vlr.clone() + terms.kd.clone();
    for v in [scalar(terms.ld), scalar(terms.vlr), scalar(terms.kd)] {
        assert_eq!(v, 0.0);
    }
    let grads = total.backward();
    let g = vals(reg.grad(&grads).expect("the zero term keeps the graph"));
    assert!(g.iter().all(|&v| v == 0.0));
}

#[test]
fn gradients_reach_student_cls_and_box_regression() {
    let priors = two_level_priors();
    let vlr = vlr_map(priors.len(), &VLR);
    let ad = Device::flex().autodiff();
    let student = levels(&raw(6), &ad);
    let cls = student[0].cls_logits.clone().require_grad();
    let reg = student[1].box_regression.clone().require_grad();
    let student = vec![
        head_level(cls.clone(), student[0].box_regression.clone(), 8),
        head_level(student[1].cls_logits.clone(), reg.clone(), 16),
    ];
    let terms = ld_loss(
        &LdConfig::new(),
        &student,
        &levels(&raw(7), &Device::flex()),
        &assignment(priors, &POSITIVES),
        &vlr,
        K,
        REG_MAX,
    );
    let grads = (terms.ld + terms.vlr + terms.kd).backward();
    for g in [cls.grad(&grads), reg.grad(&grads)] {
        let g = vals(g.expect("a gradient"));
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(g.iter().any(|&v| v != 0.0));
    }
}

/// One level, stride 8, 4×4 map, anchors of side 16 centred on `(8x, 8y)` (index
/// `y·4 + x`); a 32×32 batch.
fn grid_priors() -> Priors {
    AnchorGeneratorConfig::new()
        .with_strides(vec![8])
        .with_octave_base_scale(2.0)
        .grid_priors(&[(4, 4)])
}

#[test]
fn vlr_matches_hand_computed_bounds() {
    // GT [0, 0, 16, 16], topk 3: candidates 5 (IoU 1), 1 and 4 (IoU 1/3 each), so
    // t_g = mean + unbiased std = (5 + √12)/9 ≈ 0.9405, α t_g ≈ 0.2351
    // (the same statistics as the ATSS assigner test).
    // - anchor 5 = [0,0,16,16]: DIoU = 1 ≥ t_g -> out (it is the ATSS positive).
    // - anchor 1 = [0,-8,16,8]: IoU = 128/384 = 1/3, IoF = 128/256 = 1/2, centre
    //   distance² 64, enclosing [0,-8,16,16] diagonal² 16² + 24² = 832:
    //   DIoU = 1/3 − 64/832 ≈ 0.2564 (IoF variant 1/2 − 64/832 ≈ 0.4231), both in
    //   [α t_g, t_g) -> in, value IoU = 1/3. Same for 4, 6 and 9 by symmetry.
    // - anchor 0 = [-8,-8,8,8]: IoU = 64/448 = 1/7, IoF = 1/4, distance² 128,
    //   enclosing diagonal² 2·24² = 1152: DIoU = 1/7 − 1/9 ≈ 0.0317 (IoF 1/4 − 1/9 ≈
    //   0.1389) < α t_g -> out. Same for 2, 8 and 10; the rest do not overlap (DIoU < 0).
    let p = grid_priors();
    let gt = [0.0, 0.0, 16.0, 16.0];
    let t = ((5.0 + 12f64.sqrt()) / 9.0) as f32;
    assert!((vlr_diou(VlrDiou::Iou, p.boxes[1], gt) - (1.0 / 3.0 - 64.0 / 832.0)).abs() < 1e-6);
    assert!((vlr_diou(VlrDiou::AnchorIof, p.boxes[1], gt) - (0.5 - 64.0 / 832.0)).abs() < 1e-6);
    assert!((vlr_diou(VlrDiou::Iou, p.boxes[0], gt) - (1.0 / 7.0 - 1.0 / 9.0)).abs() < 1e-6);
    assert!((vlr_diou(VlrDiou::AnchorIof, p.boxes[0], gt) - (0.25 - 1.0 / 9.0)).abs() < 1e-6);
    assert!(vlr_diou(VlrDiou::Iou, p.boxes[0], gt) < 0.25 * t);
    assert!(vlr_diou(VlrDiou::AnchorIof, p.boxes[5], gt) >= t);
    let size = ImageSize::new(32, 32);
    let gts = GtBatch::new(vec![instances(size, vec![gt], vec![0])], size);
    let targets = gts.targets();
    for kind in [VlrDiou::AnchorIof, VlrDiou::Iou] {
        let config = LdConfig::new().with_vlr_topk(3).with_vlr_diou(kind);
        let v = vlr_weights(&config, &p, &targets);
        let mut expected = vec![0.0f32; 16];
        for i in [1, 4, 6, 9] {
            expected[i] = 1.0 / 3.0;
        }
        assert_eq!(v.len(), 1);
        for (i, (&g, &e)) in v[0].iter().zip(&expected).enumerate() {
            assert!((g - e).abs() < 1e-6, "{kind:?} prior {i}: {g} vs {e}");
        }
    }
}

#[test]
fn official_diou_uses_the_anchor_area() {
    // GT [4, 4, 20, 20], topk 4: candidates 5, 6, 9, 10 all with IoU 9/23 -> std 0,
    // t_g = 9/23 ≈ 0.3913. Anchor 5 = [0,0,16,16]: intersection 144, centre distance²
    // 32, enclosing [0,0,20,20] diagonal² 800:
    //   DIoU (IoU)  = 9/23 − 0.04 ≈ 0.3513 < t_g -> in the VLR (value 9/23),
    //   DIoU (IoF)  = 144/256 − 0.04 = 0.5225 ≥ t_g -> out (the official code).
    let p = grid_priors();
    let size = ImageSize::new(32, 32);
    let gts = GtBatch::new(
        vec![instances(size, vec![[4.0, 4.0, 20.0, 20.0]], vec![0])],
        size,
    );
    let targets = gts.targets();
    let base = LdConfig::new().with_vlr_topk(4);
    let paper = vlr_weights(&base.clone().with_vlr_diou(VlrDiou::Iou), &p, &targets);
    let official = vlr_weights(&base, &p, &targets);
    assert!((paper[0][5] - 9.0 / 23.0).abs() < 1e-6, "{}", paper[0][5]);
    assert_eq!(official[0][5], 0.0);
}

#[test]
fn vlr_skips_padding_crowd_and_empty_images() {
    // Image 0: 16×16 inside the 32×32 batch -> valid priors 0, 1, 4, 5 only. GT
    // [0,0,16,16] with topk 3 keeps the candidates 5, 1, 4 (t_g as above): VLR {1, 4}
    // with 1/3; 6 and 9 (in the VLR on a full image) lie on the padding -> 0.
    // A crowd box is no ground truth: same result as without it (and the same box as a
    // plain ground truth does change it, so the check can fail).
    // Image 1: no ground truth -> all zero.
    let p = grid_priors();
    let small = ImageSize::new(16, 16);
    let boxes = vec![[0.0, 0.0, 16.0, 16.0], [2.0, 2.0, 14.0, 10.0]];
    let crowd = instances(small, boxes.clone(), vec![0; 2])
        .with_crowd(vec![false, true])
        .expect("one flag per box");
    let padded = ImageSize::new(32, 32);
    let gts = GtBatch::new(vec![crowd, Instances::empty(small)], padded);
    let targets = gts.targets();
    let config = LdConfig::new().with_vlr_topk(3);
    let v = vlr_weights(&config, &p, &targets);
    let mut expected = vec![0.0f32; 16];
    expected[1] = 1.0 / 3.0;
    expected[4] = 1.0 / 3.0;
    for (i, (&g, &e)) in v[0].iter().zip(&expected).enumerate() {
        assert!((g - e).abs() < 1e-6, "prior {i}: {g} vs {e}");
    }
    assert!(v[1].iter().all(|&x| x == 0.0));
    let plain = GtBatch::new(vec![instances(small, boxes, vec![0; 2])], padded);
    let with_box = vlr_weights(&config, &p, &plain.targets());
    assert_ne!(with_box[0], v[0]);
}

#[test]
fn config_defaults_and_serde() {
    let c = LdConfig::new();
    assert_eq!(
        (
            c.ld_temperature,
            c.ld_weight,
            c.vlr_temperature,
            c.vlr_weight
        ),
        (10.0, 0.25, 10.0, 0.25)
    );
    assert_eq!(
        (c.kd_temperature, c.kd_weight, c.vlr_alpha, c.vlr_topk),
        (2.0, 10.0, 0.25, 9)
    );
    let json = burn::config::config_to_json(&c);
    assert!(json.contains("\"anchor_iof\""), "{json}");
    let back = LdConfig::load_binary(json.replace("anchor_iof", "iou").as_bytes())
        .expect("valid JSON config");
    assert_eq!(back.vlr_diou, VlrDiou::Iou);
}
