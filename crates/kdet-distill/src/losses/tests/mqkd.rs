use super::*;
use crate::losses::test_util::{Lcg, assert_rel, scalar, tensor, vals};
use burn::tensor::Device;

/// The raw values of one query layer, `B` images × `Q` queries, per-query blocks in
/// query order: class logits `[B, Q, C]`, masks `[B, Q, H, W]`, boxes `[B, Q, 4]`,
/// embeddings `[B, Q, D]`.
#[derive(Debug, Clone)]
struct Raw {
    b: usize,
    q: usize,
    c: usize,
    cls: Vec<f32>,
    masks: Option<([usize; 2], Vec<f32>)>,
    boxes: Option<Vec<f32>>,
    d: usize,
    emb: Vec<f32>,
}

fn mk<const D: usize>(v: &[f32], shape: [usize; D], device: &Device, grad: bool) -> Tensor<D> {
    let t = tensor(v, shape, device);
    if grad { t.require_grad() } else { t }
}

/// Query `j` of each image of the result is query `perm[j]` of the input's.
fn pick(v: &[f32], b: usize, q: usize, block: usize, perm: &[usize]) -> Vec<f32> {
    (0..b)
        .flat_map(|i| {
            perm.iter()
                .flat_map(move |&j| v[(i * q + j) * block..(i * q + j + 1) * block].iter())
        })
        .copied()
        .collect()
}

impl Raw {
    fn layer(&self, device: &Device, grad: bool) -> QueryLayer {
        let (b, q) = (self.b, self.q);
        QueryLayer {
            embeddings: mk(&self.emb, [b, q, self.d], device, grad),
            class_logits: mk(&self.cls, [b, q, self.c], device, grad),
            mask_logits: self
                .masks
                .as_ref()
                .map(|([h, w], v)| mk(v, [b, q, *h, *w], device, grad)),
            boxes: self.boxes.as_ref().map(|v| mk(v, [b, q, 4], device, grad)),
        }
    }

    fn plain(&self) -> QueryLayer {
        self.layer(&Device::flex(), false)
    }

    fn tracked(&self) -> QueryLayer {
        self.layer(&Device::flex().autodiff(), true)
    }

    /// The queries `perm` of every image, in that order.
    fn permuted(&self, perm: &[usize]) -> Raw {
        let (b, q) = (self.b, self.q);
        Raw {
            q: perm.len(),
            cls: pick(&self.cls, b, q, self.c, perm),
            masks: self
                .masks
                .as_ref()
                .map(|([h, w], v)| ([*h, *w], pick(v, b, q, h * w, perm))),
            boxes: self.boxes.as_ref().map(|v| pick(v, b, q, 4, perm)),
            emb: pick(&self.emb, b, q, self.d, perm),
            ..self.clone()
        }
    }
}

/// Three well-separated queries per image, `C = 3` (K = 2 + no object), 4×4 masks, 4-d
/// embeddings: q0 class 0 (mask: left half), q1 class 1 (top half), q2 "no object"
/// (background, mask all −4). Image 1 swaps q0's and q1's masks. Boxes too when `boxes`.
fn separated(b: usize, boxes: bool) -> Raw {
    let (h, w) = (4, 4);
    let left: Vec<f32> = (0..h * w)
        .map(|k| if k % w < w / 2 { 4.0 } else { -4.0 })
        .collect();
    let top: Vec<f32> = (0..h * w)
        .map(|k| if k / w < h / 2 { 4.0 } else { -4.0 })
        .collect();
    let none = vec![-4.0; h * w];
    let mut cls = Vec::new();
    let mut masks = Vec::new();
    let mut bx = Vec::new();
    let mut emb = Vec::new();
    for i in 0..b {
        cls.extend([4.0, -1.0, -2.0, -1.0, 4.0, -2.0, -2.0, -1.0, 4.0]);
        let (m0, m1) = if i == 0 { (&left, &top) } else { (&top, &left) };
        masks.extend(m0.iter().chain(m1).chain(&none));
        bx.extend([0.3, 0.5, 0.2, 0.4, 0.5, 0.3, 0.4, 0.2, 0.7, 0.7, 0.1, 0.1]);
        let o = i as f32 * 0.5;
        emb.extend([1.0 + o, 0.0, 0.0, o, 0.0, 1.0, 0.0, o, 0.0, 0.0, 1.0, o]);
    }
    Raw {
        b,
        q: 3,
        c: 3,
        cls,
        masks: Some(([h, w], masks)),
        boxes: boxes.then_some(bx),
        d: 4,
        emb,
    }
}

/// Random layer values: `B = 2`, `Q = 3`, `C = 3`, 4×4 masks, boxes, `D = 4`; the
/// no-object logit of query 2 is +3 (background), of queries 0, 1 it is −3.
fn random(seed: u64, masks: bool, boxes: bool) -> Raw {
    let (b, q, c, d) = (2, 3, 3, 4);
    let mut rng = Lcg::new(seed);
    let mut cls = rng.vec_f32(b * q * c, 2.0);
    for i in 0..b {
        for t in 0..q {
            cls[(i * q + t) * c + c - 1] = if t == 2 { 3.0 } else { -3.0 };
        }
    }
    let bx: Vec<f32> = (0..b * q)
        .flat_map(|_| {
            let u = rng.vec_f32(4, 1.0);
            [
                0.5 + 0.2 * u[0],
                0.5 + 0.2 * u[1],
                0.2 + 0.1 * u[2],
                0.2 + 0.1 * u[3],
            ]
        })
        .collect();
    Raw {
        b,
        q,
        c,
        cls,
        masks: masks.then(|| ([4, 4], rng.vec_f32(b * q * 16, 3.0))),
        boxes: boxes.then_some(bx),
        d,
        emb: rng.vec_f32(b * q * d, 1.0),
    }
}

fn values(terms: Vec<KdTerm>) -> Vec<(&'static str, f64)> {
    terms
        .into_iter()
        .map(|t| (t.name, scalar(t.value)))
        .collect()
}

fn get(terms: &[(&'static str, f64)], name: &str) -> f64 {
    terms
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no term {name} in {terms:?}"))
        .1
}

fn names(terms: &[(&'static str, f64)]) -> Vec<&'static str> {
    terms.iter().map(|(n, _)| *n).collect()
}

fn with_emb() -> MatchedQueryKdConfig {
    MatchedQueryKdConfig {
        embedding_weight: 1.0,
        num_points: 64,
        ..Default::default()
    }
}

#[test]
fn identical_layers_give_zero_except_soft_dice() {
    // Student = teacher: the matching is the identity, so cls (KL), mask (Bernoulli KL),
    // emb (MSE) and the box terms (L1, 1 − GIoU) are 0. Dice against a soft mask is
    // 1 − (2Σt² + 1)/(2Σt + 1) > 0 at equality (module doc): only checked positive here,
    // and equal to its value under a query permutation in `swapped_student_queries_...`.
    let cfg = with_emb();
    let teacher = random(1, true, true);
    let pairs = match_student_to_teacher(
        &cfg,
        &teacher.tracked(),
        &teacher.plain(),
        &MaskPoints::draw(0, 0, 0, 2, 64),
    );
    assert_eq!(pairs, vec![vec![(0, 0), (1, 1), (2, 2)]; 2]);
    let got = values(matched_query_kd(
        &cfg,
        &[teacher.tracked()],
        &teacher.plain(),
        3,
        5,
    ));
    assert_eq!(
        names(&got),
        ["cls", "mask", "dice", "box_l1", "box_giou", "emb"]
    );
    for (name, v) in &got {
        if *name == "dice" {
            assert!(*v > 0.01 && v.is_finite(), "dice {v}");
        } else {
            assert!(v.abs() < 1e-6, "{name}: {v}");
        }
    }
    // Box-only models (matching on boxes).
    let teacher = random(2, false, true);
    let got = values(matched_query_kd(
        &cfg,
        &[teacher.tracked()],
        &teacher.plain(),
        3,
        5,
    ));
    assert_eq!(names(&got), ["cls", "box_l1", "box_giou", "emb"]);
    for (name, v) in &got {
        assert!(v.abs() < 1e-6, "{name}: {v}");
    }
}

/// The hand-made case: 1 image, 2 queries, K = 1 (C = 2). Teacher t0 logits [ln 3, 0]
/// (p = (3/4, 1/4): class 0, no-object 1/4 → foreground), t1 [0, ln 3] (p = (1/4, 3/4):
/// no object → background). Student s0 = [0, ln 3] (as t1), s1 = [0, 0] (p = (1/2, 1/2)).
fn hand_classes() -> (Vec<f32>, Vec<f32>) {
    let l3 = 3f32.ln();
    (vec![0.0, l3, 0.0, 0.0], vec![l3, 0.0, 0.0, l3])
}

/// KL((3/4, 1/4) ‖ (1/2, 1/2)) = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 − ln 2.
fn kl_hand() -> f64 {
    0.75 * 3f64.ln() - 2f64.ln()
}

#[test]
fn golden_values_on_the_hand_made_mask_case() {
    // Class cost −p_s(ĉ_t) with ĉ = (0, no-object = 1):
    //   s0: −1/4 (t0), −3/4 (t1);  s1: −1/2 (t0), −1/2 (t1).
    // Masks: every teacher mask and s1's are logit 0 (σ = 1/2 at every point, zero padding
    // included), s0's is 5 everywhere, so each student row has equal mask costs for both
    // teachers: the matching follows the class cost, 2·(−3/4 − 1/2) < 2·(−1/4 − 1/2):
    // s0 → t1, s1 → t0.
    // cls  = mean over both pairs of KL: (0 + (3/4 ln 3 − ln 2)) / 2, × class_weight 3.
    // mask = only the foreground pair (s1, t0): σ(0) vs σ(0) → 0 (s0's mask 5 is ignored).
    // dice = 1 − (2·P·1/4 + 1)/(P/2 + P/2 + 1) with P = 4 points: 1 − 3/5 = 0.4.
    // emb  = pairs (s0, t1): e = [0, 1] vs [0, 1] → 0; (s1, t0): [1, 2] vs [1, 0] → 0, 4;
    //        mean over 2 pairs × 2 channels: 4/4 = 1.
    let (s_cls, t_cls) = hand_classes();
    let mut s_mask = vec![5.0; 4];
    s_mask.extend([0.0; 4]);
    let student = Raw {
        b: 1,
        q: 2,
        c: 2,
        cls: s_cls,
        masks: Some(([2, 2], s_mask)),
        boxes: None,
        d: 2,
        emb: vec![0.0, 1.0, 1.0, 2.0],
    };
    let teacher = Raw {
        cls: t_cls,
        masks: Some(([2, 2], vec![0.0; 8])),
        emb: vec![1.0, 0.0, 0.0, 1.0],
        ..student.clone()
    };
    let cfg = MatchedQueryKdConfig {
        class_weight: 3.0,
        embedding_weight: 1.0,
        num_points: 4,
        ..Default::default()
    };
    let points = MaskPoints::draw(1, 2, 0, 1, 4);
    let pairs = match_student_to_teacher(&cfg, &student.plain(), &teacher.plain(), &points);
    assert_eq!(pairs, [vec![(0, 1), (1, 0)]]);
    let got = values(matched_query_kd(
        &cfg,
        &[student.tracked()],
        &teacher.plain(),
        1,
        2,
    ));
    assert_eq!(names(&got), ["cls", "mask", "dice", "emb"]);
    assert_rel(get(&got, "cls"), 3.0 * kl_hand() / 2.0, 1e-5, "cls");
    assert!(get(&got, "mask").abs() < 1e-7, "{got:?}");
    assert_rel(get(&got, "dice"), 0.4, 1e-5, "dice");
    assert_rel(get(&got, "emb"), 1.0, 1e-6, "emb");
}

#[test]
fn golden_values_on_the_hand_made_box_case() {
    // Classes as the mask case. Boxes (cx, cy, w, h): t0 = [0.5, 0.5, 0.2, 0.2],
    // t1 = [0.2, 0.2, 0.1, 0.1]; s0 = [0.3, 0.3, 0.1, 0.1], s1 = [0.6, 0.5, 0.2, 0.2].
    // Matching cost 1·class + 5·L1 − 2·GIoU: L1 s0–t0 0.6, s0–t1 0.2, s1–t0 0.1,
    // s1–t1 0.9, so the swap (s0 → t1, s1 → t0) wins on class and L1 alike.
    // Box KD only on the foreground pair (s1, t0): L1 0.1; IoU = 0.02/0.06 = 1/3 with the
    // enclosing box 0.3 × 0.2 = 0.06 = the union, so GIoU = 1/3.
    // box_l1 = 5 · 0.1 = 0.5; box_giou = 2 · (1 − 1/3) = 4/3; cls = KL/2 (weight 1).
    let (s_cls, t_cls) = hand_classes();
    let student = Raw {
        b: 1,
        q: 2,
        c: 2,
        cls: s_cls,
        masks: None,
        boxes: Some(vec![0.3, 0.3, 0.1, 0.1, 0.6, 0.5, 0.2, 0.2]),
        d: 2,
        emb: vec![0.0; 4],
    };
    let teacher = Raw {
        cls: t_cls,
        boxes: Some(vec![0.5, 0.5, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1]),
        ..student.clone()
    };
    let cfg = MatchedQueryKdConfig::default();
    let pairs = match_student_to_teacher(
        &cfg,
        &student.plain(),
        &teacher.plain(),
        &MaskPoints::draw(0, 0, 0, 1, 1),
    );
    assert_eq!(pairs, [vec![(0, 1), (1, 0)]]);
    let got = values(matched_query_kd(
        &cfg,
        &[student.tracked()],
        &teacher.plain(),
        0,
        0,
    ));
    assert_eq!(names(&got), ["cls", "box_l1", "box_giou"]);
    assert_rel(get(&got, "cls"), kl_hand() / 2.0, 1e-5, "cls");
    assert_rel(get(&got, "box_l1"), 0.5, 1e-5, "box_l1");
    assert_rel(get(&got, "box_giou"), 4.0 / 3.0, 1e-5, "box_giou");
    // box_weight scales both box terms; zero weights drop their terms.
    let cfg = MatchedQueryKdConfig {
        box_weight: 2.0,
        class_weight: 0.0,
        ..cfg
    };
    let got = values(matched_query_kd(
        &cfg,
        &[student.tracked()],
        &teacher.plain(),
        0,
        0,
    ));
    assert_eq!(names(&got), ["box_l1", "box_giou"]);
    assert_rel(get(&got, "box_l1"), 1.0, 1e-5, "box_l1 x2");
}

#[test]
fn soft_mask_losses_by_hand() {
    // Student logits [0, 0] (p = 1/2), teacher [ln 3, −ln 3] (t = 3/4, 1/4):
    // KL per point = 3/4 ln(3/2) + 1/4 ln(1/2) = 3/4 ln 3 − ln 2 at both points (by
    // symmetry), mean 3/4 ln 3 − ln 2. Dice: Σpt = 1/2, Σp = Σt = 1:
    // 1 − (2·1/2 + 1)/(1 + 1 + 1) = 1/3. Row 2: equal logits [2, −1] → KL 0.
    let device = Device::flex();
    let l3 = 3f32.ln();
    let s = tensor(&[0.0f32, 0.0, 2.0, -1.0], [2, 2], &device);
    let t = tensor(&[l3, -l3, 2.0, -1.0], [2, 2], &device);
    let (kl, dice) = soft_mask_losses(s, t);
    let (kl, dice) = (vals(kl), vals(dice));
    assert_rel(kl[0] as f64, kl_hand(), 1e-5, "kl");
    assert!(kl[1].abs() < 1e-7, "{kl:?}");
    assert_rel(dice[0] as f64, 1.0 / 3.0, 1e-6, "dice");
}

#[test]
fn swapped_student_queries_match_back_and_lose_nothing() {
    // Student = teacher with the queries in another order: the matching undoes the
    // permutation and every term equals its value at identity (0 but for dice).
    let cfg = with_emb();
    let teacher = separated(2, true);
    let identity = teacher.permuted(&[0, 1, 2]);
    let swapped = teacher.permuted(&[2, 0, 1]);
    let points = MaskPoints::draw(4, 9, 0, 2, cfg.num_points);
    let pairs = match_student_to_teacher(&cfg, &swapped.plain(), &teacher.plain(), &points);
    assert_eq!(pairs, vec![vec![(0, 2), (1, 0), (2, 1)]; 2]);
    let at = |s: &Raw| {
        values(matched_query_kd(
            &cfg,
            &[s.tracked()],
            &teacher.plain(),
            4,
            9,
        ))
    };
    let (a, b) = (at(&identity), at(&swapped));
    assert_eq!(names(&a), names(&b));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6, "{name}: {x} vs {y}");
        if *name != "dice" {
            assert!(x.abs() < 1e-6, "{name}: {x}");
        }
    }
}

#[test]
fn gradients_reach_the_student_only() {
    // Every student tensor of both layers (aux_layers) gets a finite, nonzero gradient;
    // the teacher's tensors, tracked on the same autodiff device, get none (detached).
    for (masks, boxes) in [(true, false), (false, true)] {
        let cfg = MatchedQueryKdConfig {
            aux_layers: true,
            ..with_emb()
        };
        let students = [
            random(3, masks, boxes).tracked(),
            random(4, masks, boxes).tracked(),
        ];
        let teacher = random(5, masks, boxes).tracked();
        let terms = matched_query_kd(&cfg, &students, &teacher, 0, 1);
        let total = terms
            .into_iter()
            .map(|t| t.value)
            .reduce(|a, b| a + b)
            .expect("terms");
        let grads = total.backward();
        for (l, s) in students.iter().enumerate() {
            let mut tracked = vec![
                ("cls", s.class_logits.grad(&grads).map(vals)),
                ("emb", s.embeddings.grad(&grads).map(vals)),
            ];
            if let Some(m) = &s.mask_logits {
                tracked.push(("masks", m.grad(&grads).map(vals)));
            }
            if let Some(b) = &s.boxes {
                tracked.push(("boxes", b.grad(&grads).map(vals)));
            }
            for (what, g) in tracked {
                let g = g.unwrap_or_else(|| panic!("layer {l} {what}: no gradient"));
                assert!(g.iter().all(|v| v.is_finite()), "layer {l} {what}");
                assert!(g.iter().any(|v| v.abs() > 1e-7), "layer {l} {what}: zero");
            }
        }
        assert!(teacher.class_logits.grad(&grads).is_none());
        assert!(teacher.embeddings.grad(&grads).is_none());
        assert!(teacher.mask_logits.iter().all(|m| m.grad(&grads).is_none()));
        assert!(teacher.boxes.iter().all(|b| b.grad(&grads).is_none()));
    }
}

#[test]
fn different_query_counts_and_grids_match_min_pairs() {
    let cfg = with_emb();
    let teacher = separated(2, false);
    // Q_S = 3 > Q_T = 2: the teacher is queries (0, 1); student q0 (the background
    // query) stays unmatched and the distillation is exact.
    let small = teacher.permuted(&[0, 1]);
    let student = teacher.permuted(&[2, 0, 1]);
    let points = MaskPoints::draw(0, 0, 0, 2, cfg.num_points);
    let pairs = match_student_to_teacher(&cfg, &student.plain(), &small.plain(), &points);
    assert_eq!(pairs, vec![vec![(1, 0), (2, 1)]; 2]);
    let got = values(matched_query_kd(
        &cfg,
        &[student.tracked()],
        &small.plain(),
        0,
        0,
    ));
    for name in ["cls", "mask", "emb"] {
        assert!(get(&got, name).abs() < 1e-6, "{name}: {got:?}");
    }
    // Q_S = 2 < Q_T = 3: both student queries matched, teacher q2 left over.
    let student = teacher.permuted(&[1, 0]);
    let pairs = match_student_to_teacher(&cfg, &student.plain(), &teacher.plain(), &points);
    assert_eq!(pairs, vec![vec![(0, 1), (1, 0)]; 2]);
    let got = values(matched_query_kd(
        &cfg,
        &[student.tracked()],
        &teacher.plain(),
        0,
        0,
    ));
    for name in ["cls", "mask", "emb"] {
        assert!(get(&got, name).abs() < 1e-6, "{name}: {got:?}");
    }
    // A teacher on an 8×8 grid (each 4×4 cell repeated 2×2) against the 4×4 student: the
    // same regions, so the same matching; terms finite.
    let ([h, w], m) = teacher.masks.clone().expect("masks");
    let up: Vec<f32> = m
        .chunks(h * w)
        .flat_map(|mask| {
            (0..4 * h * w).map(move |k| mask[(k / (2 * w)) / 2 * w + (k % (2 * w)) / 2])
        })
        .collect();
    let fine = Raw {
        masks: Some(([2 * h, 2 * w], up)),
        ..teacher.clone()
    };
    let pairs = match_student_to_teacher(&cfg, &student.plain(), &fine.plain(), &points);
    assert_eq!(pairs, vec![vec![(0, 1), (1, 0)]; 2]);
    let got = values(matched_query_kd(
        &cfg,
        &[student.tracked()],
        &fine.plain(),
        0,
        0,
    ));
    assert!(got.iter().all(|(_, v)| v.is_finite()), "{got:?}");
    assert!(get(&got, "cls").abs() < 1e-6, "{got:?}");
}

#[test]
fn no_foreground_pair_zeroes_mask_terms_and_keeps_the_graph() {
    // Every teacher query predicts "no object": class KD only; the mask terms are zero
    // and the total still back-propagates.
    let mut teacher = random(6, true, true);
    for row in teacher.cls.chunks_mut(3) {
        row[2] = 9.0;
    }
    let student = random(7, true, true).tracked();
    let terms = values(matched_query_kd(
        &MatchedQueryKdConfig::default(),
        std::slice::from_ref(&student),
        &teacher.plain(),
        0,
        0,
    ));
    assert!(get(&terms, "cls") > 0.0, "{terms:?}");
    for name in ["mask", "dice", "box_l1", "box_giou"] {
        assert_eq!(get(&terms, name), 0.0, "{name}");
    }
    let total = matched_query_kd(
        &MatchedQueryKdConfig::default(),
        std::slice::from_ref(&student),
        &teacher.plain(),
        0,
        0,
    )
    .into_iter()
    .map(|t| t.value)
    .reduce(|a, b| a + b)
    .expect("terms");
    let grads = total.backward();
    assert!(student.class_logits.grad(&grads).is_some());
}

#[test]
fn aux_layers_average_over_student_layers() {
    // aux_layers = false reads the last student layer only: a bad first layer is ignored.
    // aux_layers = true averages: [bad, exact] gives half of [bad] alone for cls and mask
    // (the exact layer adds 0; layer 0's points are the same in both calls).
    let teacher = random(8, true, false);
    let bad = random(9, true, false);
    let cfg = with_emb();
    let run = |cfg: &MatchedQueryKdConfig, layers: &[&Raw]| {
        let layers: Vec<QueryLayer> = layers.iter().map(|r| r.tracked()).collect();
        values(matched_query_kd(cfg, &layers, &teacher.plain(), 2, 3))
    };
    let last_only = run(&cfg, &[&bad, &teacher]);
    for name in ["cls", "mask", "emb"] {
        assert!(get(&last_only, name).abs() < 1e-6, "{name}: {last_only:?}");
    }
    let aux = MatchedQueryKdConfig {
        aux_layers: true,
        ..cfg.clone()
    };
    let alone = run(&cfg, &[&bad]);
    let both = run(&aux, &[&bad, &teacher]);
    for name in ["cls", "mask", "emb"] {
        assert!(get(&alone, name) > 1e-3, "{name}: {alone:?}");
        assert_rel(get(&both, name), get(&alone, name) / 2.0, 1e-5, name);
    }
}

#[test]
fn points_are_a_function_of_seed_step_and_layer() {
    let a = MaskPoints::draw(7, 3, 1, 2, 16);
    assert_eq!(a, MaskPoints::draw(7, 3, 1, 2, 16));
    assert_eq!(a.coords().len(), 2 * 16 * 2);
    assert!(a.coords().iter().all(|&u| (0.0..1.0).contains(&u)));
    for other in [
        MaskPoints::draw(7, 4, 1, 2, 16),
        MaskPoints::draw(7, 3, 2, 2, 16),
        MaskPoints::draw(8, 3, 1, 2, 16),
    ] {
        assert_ne!(a.coords(), other.coords());
    }
    // The loss reads them: another step moves the dice (and only points-dependent terms).
    let cfg = with_emb();
    let teacher = random(10, true, false);
    let student = random(11, true, false);
    let at = |step| {
        values(matched_query_kd(
            &cfg,
            &[student.tracked()],
            &teacher.plain(),
            7,
            step,
        ))
    };
    let (s3, s3b, s4) = (at(3), at(3), at(4));
    assert_eq!(s3, s3b);
    assert_ne!(get(&s3, "dice"), get(&s4, "dice"));
}

#[test]
fn config_defaults_round_trip_and_reject_bad_values() {
    let d = MatchedQueryKdConfig::default();
    assert_eq!(
        (
            d.class_weight,
            d.tau,
            d.num_points,
            d.embedding_weight,
            d.aux_layers
        ),
        (1.0, 1.0, 3136, 0.0, false)
    );
    assert_eq!(
        (
            d.match_class_weight,
            d.match_mask_weight,
            d.match_dice_weight
        ),
        (2.0, 5.0, 5.0)
    );
    let json = serde_json::to_string(&d).expect("serialises");
    let back: MatchedQueryKdConfig = serde_json::from_str(&json).expect("parses");
    assert_eq!(back, d);
    let partial: MatchedQueryKdConfig =
        serde_json::from_str(r#"{"tau": 2.0, "aux_layers": true}"#).expect("parses");
    assert_eq!(
        (partial.tau, partial.aux_layers, partial.mask_weight),
        (2.0, true, 1.0)
    );
    let err = serde_json::from_str::<MatchedQueryKdConfig>(r#"{"temperature": 2.0}"#)
        .expect_err("unknown key");
    assert!(err.to_string().contains("temperature"), "{err}");
    assert!(d.check().is_ok());
    let bad = MatchedQueryKdConfig {
        tau: 0.0,
        ..d.clone()
    };
    assert!(bad.check().expect_err("tau").contains("tau"));
    let bad = MatchedQueryKdConfig {
        dice_weight: -1.0,
        ..d.clone()
    };
    assert!(bad.check().expect_err("dice").contains("dice_weight"));
    let bad = MatchedQueryKdConfig { num_points: 0, ..d };
    assert!(bad.check().is_err());
}
