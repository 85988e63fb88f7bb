//! Tests of [`super`] (tbd.rs). TBD is kdet's reconstruction from the abstract, so the
//! references are its own formulas (module docs) written out by hand or as f64 loops.
use super::*;
use crate::losses::test_util::{Lcg, assert_rel, instances, scalar, tensor, vals};
use burn::tensor::Device;
use kdet_models::ImageAssignment;
use kdet_models::priors::AnchorGeneratorConfig;
use kdet_structures::ImageSize;

fn sig(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `BCE(σ(z), t)` in f64.
fn bce(z: f64, t: f64) -> f64 {
    let p = sig(z);
    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
}

/// One image, 3 priors, 2 classes. Object 0 (class 1) at [0, 0, 10, 10]; object 1 is a
/// crowd region. Prior 0 → object 0, its teacher box [0, 0, 10, 5] (IoU 1/2), scores
/// (0.1, 0.8); prior 1 negative; prior 2 → the crowd region.
fn hand_case() -> (TeacherPredictions, Assignment, Vec<Instances>) {
    let teacher = TeacherPredictions {
        scores: vec![vec![0.1, 0.8, 0.3, 0.2, 0.6, 0.9]],
        boxes: vec![vec![
            [0.0, 0.0, 10.0, 5.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 10.0],
        ]],
        num_classes: 2,
    };
    let priors = AnchorGeneratorConfig::new()
        .with_strides(vec![8])
        .grid_priors(&[(1, 3)]);
    let assignment = Assignment::dense(
        priors,
        vec![ImageAssignment {
            matched_gt: vec![Some(0), None, Some(1)],
            ignore: vec![false; 3],
            max_iou: vec![0.0; 3],
        }],
    );
    let gt = instances(
        ImageSize::new(32, 32),
        vec![[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]],
        vec![1, 0],
    )
    .with_crowd(vec![false, true])
    .expect("crowd flags");
    (teacher, assignment, vec![gt])
}

#[test]
fn harmony_is_agreement_of_score_and_quality() {
    assert_eq!(harmony(0.8, 0.8), 1.0);
    assert!((harmony(0.9, 0.1) - 0.2).abs() < 1e-6);
    assert!((harmony(0.1, 0.9) - 0.2).abs() < 1e-6);
}

#[test]
fn harmony_entries_by_hand() {
    // Prior 0 only (prior 1 negative, prior 2 on a crowd region): s = 0.8 (class 1),
    // u = 1/2, HS = 1 − 0.3 = 0.7, t = √0.4; index (0·3 + 0)·2 + 1 = 1.
    let (teacher, assignment, gt) = hand_case();
    let e = harmony_entries(&teacher, &assignment, &gt);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].index, 1);
    assert!((e[0].harmony - 0.7).abs() < 1e-6);
    assert!((e[0].target - 0.4f32.sqrt()).abs() < 1e-6);
}

#[test]
fn harmony_distillation_golden_values_and_its_zero() {
    let (n, p, k) = (2, 5, 3);
    let z = Lcg::new(3).vec_f64(n * p * k, 3.0);
    let raw = Lcg::new(4).vec_f64(12, 1.0);
    let entries: Vec<HarmonyEntry> = [1usize, 7, 13, 16, 29, 22]
        .iter()
        .enumerate()
        .map(|(i, &index)| HarmonyEntry {
            index,
            target: (0.5 + 0.5 * raw[2 * i]) as f32,
            harmony: (0.5 + 0.5 * raw[2 * i + 1]) as f32,
        })
        .collect();
    let (mut num, mut den) = (0.0, 0.0);
    for e in &entries {
        let (zi, t, w) = (z[e.index], e.target as f64, e.harmony as f64);
        num += w * (sig(zi) - t).abs().powi(2) * bce(zi, t);
        den += w;
    }
    let ad = Device::flex().autodiff();
    let got = harmony_distillation(tensor(&z, [n, p, k], &ad), &entries, 2.0);
    assert_rel(scalar(got), num / den, 1e-4, "hd");
    // A student that outputs the targets: the modulation |σ(z) − t|^β is 0 everywhere.
    let mut exact = z.clone();
    for e in &entries {
        let t = e.target as f64;
        exact[e.index] = (t / (1.0 - t)).ln();
    }
    let got = harmony_distillation(tensor(&exact, [n, p, k], &ad), &entries, 2.0);
    assert!(scalar(got).abs() < 1e-9);
}

#[test]
fn task_masks_by_hand() {
    // One level of 1×3 cells, one anchor each. Cell 0: max score 0.8, best IoU with the
    // (non-crowd) object 1/2; cell 1: 0.3 and 0 (no overlap); cell 2: 0.9 and 1 (the crowd
    // region does not count, but its box is object 0's too).
    let (teacher, assignment, gt) = hand_case();
    let config = TbdConfig::new()
        .with_cls_task_weight(0.25)
        .with_reg_task_weight(0.75);
    let masks = task_masks(&config, &teacher, assignment.priors(), &gt, &Device::flex());
    assert_eq!(masks.len(), 1);
    let m = vals(masks[0].clone());
    let want = [0.25 * 0.8 + 0.75 * 0.5, 0.25 * 0.3, 0.25 * 0.9 + 0.75];
    for (g, w) in m.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{m:?} vs {want:?}");
    }
}

const LEVELS: [(usize, usize); 2] = [(2, 3), (3, 2)];
const N: usize = 2;
const C: usize = 4;

#[test]
fn tfd_golden_values_zero_and_gradients() {
    let make = |seed: u64, ch: usize, amp: f64| -> Vec<Vec<f64>> {
        LEVELS
            .iter()
            .enumerate()
            .map(|(l, &(h, w))| Lcg::new(seed * 10 + l as u64).vec_f64(N * ch * h * w, amp))
            .collect()
    };
    let (sf, tf) = (make(1, C, 2.0), make(2, C, 2.0));
    let masks: Vec<Vec<f64>> = make(3, 1, 0.5)
        .into_iter()
        .map(|v| v.into_iter().map(|x| x + 0.5).collect())
        .collect();
    let mut want = 0.0;
    for (l, &(h, w)) in LEVELS.iter().enumerate() {
        let (mut num, mut den) = (0.0, 0.0);
        for n in 0..N {
            for y in 0..h {
                for x in 0..w {
                    let m = masks[l][(n * h + y) * w + x];
                    den += m;
                    for c in 0..C {
                        let i = ((n * C + c) * h + y) * w + x;
                        num += m * (tf[l][i] - sf[l][i]).powi(2);
                    }
                }
            }
        }
        want += num / den;
    }
    let (ad, pd) = (Device::flex().autodiff(), Device::flex());
    let feats = |v: &[Vec<f64>], d: &Device| -> Vec<Tensor<4>> {
        v.iter()
            .zip(LEVELS)
            .map(|(v, (h, w))| tensor(v, [N, C, h, w], d))
            .collect()
    };
    let mask_tensors: Vec<Tensor<3>> = masks
        .iter()
        .zip(LEVELS)
        .map(|(v, (h, w))| tensor(v, [N, h, w], &pd))
        .collect();
    let student: Vec<Tensor<4>> = feats(&sf, &ad)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let got = tfd_loss(&student, &feats(&tf, &pd), &mask_tensors);
    assert_rel(scalar(got.clone()), want, 1e-4, "tfd");
    let grads = got.backward();
    for s in &student {
        let g = vals(s.grad(&grads).expect("a gradient"));
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
    }
    let same = tfd_loss(&feats(&tf, &ad), &feats(&tf, &pd), &mask_tensors);
    assert!(scalar(same).abs() < 1e-9);
}

#[test]
fn harmony_gradients_reach_only_the_distilled_logits() {
    let (n, p, k) = (1, 4, 3);
    let ad = Device::flex().autodiff();
    let z = tensor(&Lcg::new(9).vec_f64(n * p * k, 2.0), [n, p, k], &ad).require_grad();
    let entries = [
        HarmonyEntry {
            index: 2,
            target: 0.7,
            harmony: 0.9,
        },
        HarmonyEntry {
            index: 7,
            target: 0.2,
            harmony: 0.4,
        },
    ];
    let g = vals(
        z.grad(&harmony_distillation(z.clone(), &entries, 2.0).backward())
            .expect("a gradient"),
    );
    for (i, v) in g.iter().enumerate() {
        assert_eq!(*v != 0.0, i == 2 || i == 7, "logit {i}: {v}");
    }
    // Nothing to distil: zero, the graph kept.
    let none = harmony_distillation(z.clone(), &[], 2.0);
    assert_eq!(scalar(none.clone()), 0.0);
    assert!(z.grad(&none.backward()).is_some());
}

#[test]
fn config_defaults_and_serde() {
    let c = TbdConfig::new();
    assert_eq!(
        (
            c.hd_weight,
            c.tfd_weight,
            c.cls_task_weight,
            c.reg_task_weight,
            c.beta
        ),
        (1.0, 1.0, 0.5, 0.5, 2.0)
    );
    let json = burn::config::config_to_json(&c);
    assert_eq!(
        TbdConfig::load_binary(json.as_bytes()).expect("valid JSON"),
        c
    );
}
