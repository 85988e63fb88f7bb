//! Tests of [`super`] (rm_pfi.rs). The references are the formulas of the module docs
//! (spec §7, MMRazor PR #107's `rank_mimic.py` / `pgfi.py`) written as f64 loops; the PR
//! needs mmdetection 2.x and mmcv-full to run, which have no CPU wheels for the PyTorch
//! PyPI ships, so no fixture comes from it.
use super::*;
use crate::losses::test_util::{Lcg, assert_rel, instances, scalar, tensor, vals};
use burn::tensor::Device;
use kdet_models::ImageAssignment;
use kdet_models::priors::AnchorGeneratorConfig;
use kdet_structures::ImageSize;

const K: usize = 3;
/// Priors per image.
const P: usize = 8;

fn sig(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `KL(softmax(t) ‖ softmax(s))` of two score vectors, in f64.
fn kl(t: &[f64], s: &[f64]) -> f64 {
    let sm = |x: &[f64]| {
        let z: f64 = x.iter().map(|v| v.exp()).sum();
        x.iter().map(|v| v.exp() / z).collect::<Vec<_>>()
    };
    let (p, q) = (sm(t), sm(s));
    p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum()
}

/// An assignment of `P` priors per image: `matched[i][prior]` = the object of that prior.
fn assignment(matched: &[[Option<usize>; P]]) -> Assignment {
    let priors = AnchorGeneratorConfig::new()
        .with_strides(vec![8, 16])
        .grid_priors(&[(2, 3), (1, 2)]);
    assert_eq!(priors.len(), P);
    let images = matched
        .iter()
        .map(|m| ImageAssignment {
            matched_gt: m.to_vec(),
            ignore: vec![false; P],
            max_iou: vec![0.0; P],
        })
        .collect();
    Assignment::dense(priors, images)
}

/// Image 0: objects of class 2 (priors 0, 1, 5), 0 (priors 2, 6) and 1 (no prior: it
/// counts in M but adds nothing); image 1: one object of class 1 (priors 3, 4, 7) and a
/// crowd region (not an object, assigned nothing); image 2: no object.
struct Case {
    matched: Vec<[Option<usize>; P]>,
    gt: Vec<Instances>,
}

fn case() -> Case {
    let size = ImageSize::new(32, 32);
    let b = [0.0, 0.0, 8.0, 8.0];
    let (s, n) = (Some, None);
    let crowd = instances(size, vec![b, b], vec![1, 0])
        .with_crowd(vec![false, true])
        .expect("crowd flags");
    Case {
        matched: vec![
            [s(0), s(0), s(1), n, n, s(0), s(1), n],
            [n, n, n, s(0), s(0), n, n, s(0)],
            [n; P],
        ],
        gt: vec![
            instances(size, vec![b, b, b], vec![2, 0, 1]),
            crowd,
            instances(size, vec![], vec![]),
        ],
    }
}

/// RM from the module docs in f64: per image the KLs of its objects over their count,
/// averaged over the images.
fn rm_expected(c: &Case, s: &[f64], t: &[f64], sorted: bool) -> f64 {
    let n = c.matched.len();
    let mut total = 0.0;
    for (img, (m, gt)) in c.matched.iter().zip(&c.gt).enumerate() {
        let objects: Vec<usize> = (0..gt.len())
            .filter(|&g| !gt.crowd().is_some_and(|cr| cr[g]))
            .collect();
        if objects.is_empty() {
            continue;
        }
        let mut sum = 0.0;
        for &g in &objects {
            let class = gt.classes()[g];
            let at = |v: &[f64], prior: usize| sig(v[(img * P + prior) * K + class]);
            let priors: Vec<usize> = (0..P).filter(|&p| m[p] == Some(g)).collect();
            let mut ts: Vec<f64> = priors.iter().map(|&p| at(t, p)).collect();
            let mut ss: Vec<f64> = priors.iter().map(|&p| at(s, p)).collect();
            if sorted {
                ts.sort_by(f64::total_cmp);
                ss.sort_by(f64::total_cmp);
            }
            if !priors.is_empty() {
                sum += kl(&ts, &ss);
            }
        }
        total += sum / objects.len() as f64;
    }
    total / n as f64
}

fn rm(c: &Case, s: &[f64], t: &[f64], sorted: bool) -> f64 {
    let n = c.matched.len();
    let (ad, pd) = (Device::flex().autodiff(), Device::flex());
    scalar(rank_mimic_loss(
        tensor(s, [n, P, K], &ad),
        tensor(t, [n, P, K], &pd),
        &assignment(&c.matched),
        &c.gt,
        sorted,
    ))
}

#[test]
fn rank_mimicking_golden_values_in_both_forms() {
    let c = case();
    let len = c.matched.len() * P * K;
    for seed in 0..3 {
        let s = Lcg::new(10 + seed).vec_f64(len, 4.0);
        let t = Lcg::new(20 + seed).vec_f64(len, 4.0);
        for sorted in [false, true] {
            let want = rm_expected(&c, &s, &t, sorted);
            assert!(want > 0.0);
            assert_rel(
                rm(&c, &s, &t, sorted),
                want,
                1e-4,
                &format!("sorted {sorted}"),
            );
        }
    }
}

#[test]
fn rank_mimicking_by_hand() {
    // One image, one object of class 0 on priors 0 and 1. Teacher logits 0, 0: scores
    // 1/2, 1/2, P^T = (1/2, 1/2). Student logits 0, ln 3: scores 1/2, 3/4, so
    // P^S = (1, e^{1/4}) / (1 + e^{1/4}) and
    // KL = ½ ln(½ (1 + e^{1/4})) + ½ ln(½ (1 + e^{1/4}) / e^{1/4}) = ln(½ (1 + e^{1/4})) − 1/8.
    let size = ImageSize::new(32, 32);
    let mut m = [None; P];
    m[0] = Some(0);
    m[1] = Some(0);
    let c = Case {
        matched: vec![m],
        gt: vec![instances(size, vec![[0.0, 0.0, 8.0, 8.0]], vec![0])],
    };
    let mut s = vec![-9.0; P * K];
    let mut t = vec![-9.0; P * K];
    (s[0], s[K]) = (0.0, 3f64.ln());
    (t[0], t[K]) = (0.0, 0.0);
    let want = (0.5 * (1.0 + 0.25f64.exp())).ln() - 0.125;
    for sorted in [false, true] {
        assert!((rm(&c, &s, &t, sorted) - want).abs() < 1e-6);
    }
}

#[test]
fn identical_scores_cost_nothing_and_sorting_forgives_a_permutation() {
    let c = case();
    let len = c.matched.len() * P * K;
    let t = Lcg::new(5).vec_f64(len, 4.0);
    for sorted in [false, true] {
        assert!(rm(&c, &t, &t, sorted).abs() < 1e-7);
    }
    // The student has image 1's object's scores on its three priors (3, 4, 7) in another
    // order: the same ranking values, the PR's sorted form sees no difference, the
    // prior-by-prior form does.
    let mut s = t.clone();
    let at = |prior: usize| (P + prior) * K + 1;
    let (a, b, d) = (t[at(3)], t[at(4)], t[at(7)]);
    (s[at(3)], s[at(4)], s[at(7)]) = (b, d, a);
    assert!(rm(&c, &s, &t, true).abs() < 1e-7);
    assert!(rm(&c, &s, &t, false) > 1e-4);
}

#[test]
fn nothing_to_rank_is_a_zero_that_keeps_the_graph() {
    let size = ImageSize::new(32, 32);
    let c = Case {
        matched: vec![[None; P]],
        gt: vec![instances(size, vec![], vec![])],
    };
    let ad = Device::flex().autodiff();
    let s = tensor(&[0.5; P * K], [1, P, K], &ad).require_grad();
    let loss = rank_mimic_loss(
        s.clone(),
        tensor(&[0.0; P * K], [1, P, K], &Device::flex()),
        &assignment(&c.matched),
        &c.gt,
        false,
    );
    assert_eq!(scalar(loss.clone()), 0.0);
    let g = vals(s.grad(&loss.backward()).expect("a gradient"));
    assert!(g.iter().all(|&v| v == 0.0));
}

const LEVELS: [(usize, usize); 2] = [(2, 3), (3, 2)];
const N: usize = 2;
const C: usize = 4;
const CH: usize = 3;

fn maps(seed: u64, ch: usize) -> Vec<Vec<f64>> {
    LEVELS
        .iter()
        .enumerate()
        .map(|(l, &(h, w))| Lcg::new(seed * 10 + l as u64).vec_f64(N * ch * h * w, 2.0))
        .collect()
}

fn level_tensors(v: &[Vec<f64>], ch: usize, device: &Device) -> Vec<Tensor<4>> {
    v.iter()
        .zip(LEVELS)
        .map(|(v, (h, w))| tensor(v, [N, ch, h, w], device))
        .collect()
}

/// PFI from the module docs in f64 loops over the NCHW arrays.
fn pfi_expected(sf: &[Vec<f64>], tf: &[Vec<f64>], sc: &[Vec<f64>], tc: &[Vec<f64>]) -> f64 {
    let mut total = 0.0;
    for (l, &(h, w)) in LEVELS.iter().enumerate() {
        let idx =
            |n: usize, c: usize, ch: usize, y: usize, x: usize| ((n * ch + c) * h + y) * w + x;
        let mut sum = 0.0;
        for n in 0..N {
            for y in 0..h {
                for x in 0..w {
                    let p: f64 = (0..CH)
                        .map(|c| (sc[l][idx(n, c, CH, y, x)] - tc[l][idx(n, c, CH, y, x)]).powi(2))
                        .sum::<f64>()
                        / CH as f64;
                    let f: f64 = (0..C)
                        .map(|c| (sf[l][idx(n, c, C, y, x)] - tf[l][idx(n, c, C, y, x)]).powi(2))
                        .sum::<f64>()
                        / C as f64;
                    sum += p * f;
                }
            }
        }
        total += sum / (N * h * w) as f64;
    }
    total / LEVELS.len() as f64
}

#[test]
fn pfi_golden_values_and_zero() {
    let (sf, tf, sc, tc) = (maps(1, C), maps(2, C), maps(3, CH), maps(4, CH));
    let (ad, pd) = (Device::flex().autodiff(), Device::flex());
    let got = pfi_loss(
        &level_tensors(&sf, C, &ad),
        &level_tensors(&tf, C, &pd),
        &level_tensors(&sc, CH, &ad),
        &level_tensors(&tc, CH, &pd),
    );
    assert_rel(scalar(got), pfi_expected(&sf, &tf, &sc, &tc), 1e-4, "pfi");
    // Equal predictions or equal features: nothing to imitate.
    for (a, b) in [(&tf, &sc), (&sf, &tc)] {
        let got = pfi_loss(
            &level_tensors(a, C, &ad),
            &level_tensors(&tf, C, &pd),
            &level_tensors(b, CH, &ad),
            &level_tensors(&tc, CH, &pd),
        );
        assert!(scalar(got).abs() < 1e-9);
    }
}

#[test]
fn gradients_reach_the_student_features_and_logits() {
    let (ad, pd) = (Device::flex().autodiff(), Device::flex());
    let (sf, tf, sc, tc) = (maps(5, C), maps(6, C), maps(7, CH), maps(8, CH));
    let feats: Vec<Tensor<4>> = level_tensors(&sf, C, &ad)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let logits: Vec<Tensor<4>> = level_tensors(&sc, CH, &ad)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let pfi = pfi_loss(
        &feats,
        &level_tensors(&tf, C, &pd),
        &logits,
        &level_tensors(&tc, CH, &pd),
    );
    // RM on the same logits, flattened to [N, 12 priors, CH] level by level.
    let flat_s = flatten_levels(logits.clone(), CH);
    let flat_t = flatten_levels(level_tensors(&tc, CH, &pd), CH);
    let priors = flat_s.dims()[1];
    let mut matched = vec![None; priors];
    (matched[0], matched[4], matched[7]) = (Some(0), Some(0), Some(0));
    let a = Assignment::dense(
        AnchorGeneratorConfig::new()
            .with_strides(vec![8, 16])
            .grid_priors(&LEVELS),
        (0..N)
            .map(|_| ImageAssignment {
                matched_gt: matched.clone(),
                ignore: vec![false; priors],
                max_iou: vec![0.0; priors],
            })
            .collect(),
    );
    let size = ImageSize::new(32, 32);
    let gt: Vec<Instances> = (0..N)
        .map(|_| instances(size, vec![[0.0, 0.0, 8.0, 8.0]], vec![2]))
        .collect();
    let rm = rank_mimic_loss(flat_s.clone(), flat_t.clone(), &a, &gt, false);
    let grads = (pfi + rm).backward();
    for x in feats.iter().chain(&logits) {
        let g = vals(x.grad(&grads).expect("a gradient"));
        assert!(g.iter().all(|v| v.is_finite()));
        assert!(g.iter().any(|&v| v != 0.0));
    }
    // RM alone (a fresh graph) reaches exactly the ranked scores: class 2 of priors 0, 4
    // (level 0) and 7 (level 1).
    let logits: Vec<Tensor<4>> = level_tensors(&sc, CH, &ad)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let rm = rank_mimic_loss(flatten_levels(logits.clone(), CH), flat_t, &a, &gt, false);
    let grads = rm.backward();
    let g0 = vals(logits[0].grad(&grads).expect("a gradient")); // [N, CH, 2, 3]
    let hw = 6;
    for (i, v) in g0.iter().enumerate() {
        let (c, pos) = ((i / hw) % CH, i % hw);
        let ranked = c == 2 && (pos == 0 || pos == 4);
        assert_eq!(*v != 0.0, ranked, "element {i}: {v}");
    }
}

#[test]
fn config_defaults_and_serde() {
    let c = RmPfiConfig::new();
    assert_eq!((c.rm_weight, c.pfi_weight, c.rm_sorted), (4.0, 1.5, false));
    let json = burn::config::config_to_json(&c);
    assert_eq!(
        RmPfiConfig::load_binary(json.as_bytes()).expect("valid JSON"),
        c
    );
}
