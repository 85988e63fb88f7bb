//! Tests of [`super`] (lgd.rs), kept apart to keep the method file readable.
use super::*;
use crate::losses::test_util::{Lcg, assert_rel, instances, scalar, tensor, to_f64, vals};
use burn::module::Param;

fn size(height: u32, width: u32) -> ImageSize {
    ImageSize { height, width }
}

/// Descriptors by hand from the official `box_descriptor_encode`: padded batch 48 × 64
/// (H × W), K = 3. Image 0: an object of class 2 at [8, 4, 40, 70] (y2 clamps to
/// H − 1 = 47), a crowd region (skipped), then the context row [0, 0, 64, 48] clamped to
/// [0, 0, 63, 47] with a zero class part. Image 1 has no object: one dummy row [0, 0, 1, 1],
/// zero class part, no context row. Every value v becomes 2v − 1.
#[test]
fn descriptors_follow_the_official_layout() {
    let padded = size(48, 64);
    let gt = vec![
        instances(
            size(48, 64),
            vec![[8.0, 4.0, 40.0, 70.0], [0.0, 0.0, 10.0, 10.0]],
            vec![2, 0],
        )
        .with_crowd(vec![false, true])
        .unwrap(),
        instances(size(40, 64), vec![], vec![]),
    ];
    let labels = encode_labels(&gt, 3, padded, true);
    assert_eq!(labels.counts, vec![2, 1]);
    assert_eq!(labels.width(), 7);
    assert_eq!(
        labels.boxes,
        vec![
            [8.0, 4.0, 40.0, 47.0],
            [0.0, 0.0, 63.0, 47.0],
            [0.0, 0.0, 1.0, 1.0]
        ]
    );
    let s = |v: f32| 2.0 * v - 1.0;
    let want = [
        // object
        s(8.0 / 64.0),
        s(4.0 / 48.0),
        s(40.0 / 64.0),
        s(47.0 / 48.0),
        -1.0,
        -1.0,
        1.0,
        // context
        -1.0,
        -1.0,
        s(63.0 / 64.0),
        s(47.0 / 48.0),
        -1.0,
        -1.0,
        -1.0,
        // dummy
        -1.0,
        -1.0,
        s(1.0 / 64.0),
        s(1.0 / 48.0),
        -1.0,
        -1.0,
        -1.0,
    ];
    for (i, (&g, &w)) in labels.descriptors.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-6, "value {i}: {g} vs {w}");
    }
    // Without the context box: the object row alone, and the dummy row.
    let plain = encode_labels(&gt, 3, padded, false);
    assert_eq!(plain.counts, vec![1, 1]);
}

/// The official inside rule on a 4 × 4 map of a 32 × 32 batch (scale 1/8): the box
/// [0, 0, 16, 16] becomes [0, 0, 2, 2], centre (1, 1), extent 2, so pixels with
/// |1 − y| / 2 ≤ 0.5 and |1 − x| / 2 ≤ 0.5, i.e. y, x ∈ {0, 1, 2}; the box [8, 16, 24, 24]
/// becomes [1, 2, 3, 3], centre (x 2, y 2.5), extents 2 and 1: x ∈ {1, 2, 3}, y ∈ {2, 3};
/// a zero-width box covers nothing (0/0 and x/0 are not ≤ 0.5).
#[test]
fn inside_masks_follow_the_official_rule() {
    let m = inside_masks(
        &[
            [0.0, 0.0, 16.0, 16.0],
            [8.0, 16.0, 24.0, 24.0],
            [8.0, 8.0, 8.0, 20.0],
        ],
        size(32, 32),
        4,
        4,
    );
    let pixels = |b: usize| -> Vec<(usize, usize)> {
        (0..16)
            .filter(|i| m[b * 16 + i] == 1.0)
            .map(|i| (i / 4, i % 4))
            .collect()
    };
    let square: Vec<(usize, usize)> = (0..3).flat_map(|y| (0..3).map(move |x| (y, x))).collect();
    assert_eq!(pixels(0), square);
    assert_eq!(
        pixels(1),
        vec![(2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3)]
    );
    assert!(pixels(2).is_empty());
    assert!(m.iter().all(|&v| v == 0.0 || v == 1.0));
}

/// An adapter that is the identity on non-negative maps: each conv3x3 the identity kernel
/// (1 at the centre of its own channel), zero bias, so ReLU between them changes nothing.
fn identity_adapter(modules: &mut LgdModules, channels: usize, device: &Device) {
    let mut w = vec![0.0f32; channels * channels * 9];
    for c in 0..channels {
        w[(c * channels + c) * 9 + 4] = 1.0;
    }
    for conv in &mut modules.adapter {
        conv.weight = Param::from_tensor(tensor(&w, [channels, channels, 3, 3], device));
        conv.bias = Some(Param::from_tensor(Tensor::zeros([channels], device)));
    }
}

/// `IN(x)` of one `[N, C, H, W]` map in f64 (per sample and channel over H·W, biased
/// variance, ε 1e-5).
fn instance_norm_f64(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    let hw = h * w;
    let mut out = Vec::with_capacity(x.len());
    for plane in x.chunks(hw) {
        let mean = plane.iter().sum::<f64>() / hw as f64;
        let var = plane.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / hw as f64;
        out.extend(plane.iter().map(|v| (v - mean) / (var + 1e-5).sqrt()));
    }
    assert_eq!(out.len(), n * c * hw);
    out
}

/// Golden value of the distillation term with an identity adapter (so `adapter(F^S) = F^S`
/// for the positive inputs used): `Σ_l Σ (IN(F^S_l) − IN(T_l))² / Σ_l N·C·H_l·W_l`, the
/// official `F.mse_loss` of the concatenated, instance-normed levels, in f64.
#[test]
fn distill_term_golden_value_and_zero() {
    let device = Device::flex();
    let channels = 8;
    let mut modules = LgdModules::new(7, channels, 8, &device);
    identity_adapter(&mut modules, channels, &device);
    let shapes = [[2, channels, 4, 4], [2, channels, 2, 3]];
    let mut rng = Lcg::new(7);
    let students: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| {
            rng.vec_f32(s.iter().product(), 1.0)
                .into_iter()
                .map(|v| v + 1.5)
                .collect()
        })
        .collect();
    let teachers: Vec<Vec<f32>> = shapes
        .iter()
        .map(|s| rng.vec_f32(s.iter().product(), 2.0))
        .collect();
    let mk = |vals: &[Vec<f32>]| -> Vec<Tensor<4>> {
        vals.iter()
            .zip(&shapes)
            .map(|(v, &s)| tensor(v, s, &device))
            .collect()
    };
    let got = scalar(modules.distill_loss(&mk(&students), &mk(&teachers), false));
    let (mut sum, mut count) = (0.0, 0usize);
    for ((s, t), &shape) in students.iter().zip(&teachers).zip(&shapes) {
        let (s, t) = (
            instance_norm_f64(&to_f64(s), shape),
            instance_norm_f64(&to_f64(t), shape),
        );
        sum += s.iter().zip(&t).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
        count += s.len();
    }
    assert_rel(got, sum / count as f64, 1e-4, "LGD distillation term");
    // Zero: a teacher that is a positive affine map of each student channel has the same
    // instance-normed map.
    let affine: Vec<Vec<f32>> = students
        .iter()
        .map(|s| s.iter().map(|v| 3.0 * v - 2.0).collect())
        .collect();
    let zero = scalar(modules.distill_loss(&mk(&students), &mk(&affine), true));
    assert!(zero.abs() < 1e-8, "{zero}");
}

/// A two-image batch of neck levels (requiring gradients on an autodiff device) and its
/// labels.
fn batch(device: &Device, seed: u64) -> (Vec<Tensor<4>>, LabelBatch, ImageSize) {
    let padded = size(32, 32);
    let gt = vec![
        instances(
            padded,
            vec![[2.0, 3.0, 20.0, 18.0], [10.0, 12.0, 30.0, 31.0]],
            vec![0, 2],
        ),
        instances(padded, vec![[4.0, 4.0, 12.0, 28.0]], vec![1]),
    ];
    let labels = encode_labels(&gt, 3, padded, true);
    let mut rng = Lcg::new(seed);
    let students = [[2, 8, 8, 8], [2, 8, 4, 4]]
        .iter()
        .map(|&s| {
            let t = tensor(&rng.vec_f32(s.iter().product(), 1.0), s, device);
            if device.is_autodiff() {
                t.require_grad()
            } else {
                t
            }
        })
        .collect();
    (students, labels, padded)
}

fn has_grad<const D: usize>(p: &Param<Tensor<D>>, grads: &burn::tensor::Gradients) -> bool {
    p.grad(grads)
        .is_some_and(|g| vals(g).iter().any(|v| v.abs() > 0.0))
}

/// The distillation term trains the adapter and (after the pre phase) the student's
/// features, never the dynamic teacher (its features are detached); the teacher features
/// train every part of the dynamic teacher and, unless `detach_appearance`, the student's
/// features through the appearance embeddings.
#[test]
fn gradients_reach_what_each_term_trains() {
    let device = Device::flex().autodiff();
    let config = LgdConfig::new();
    let modules = LgdModules::new(7, 8, 8, &device);
    let (students, labels, padded) = batch(&device, 3);
    let teachers = modules.teacher_features(&config, &students, &labels, padded);
    assert_eq!(teachers[0].dims(), [2, 8, 8, 8]);
    assert_eq!(teachers[1].dims(), [2, 8, 4, 4]);

    let grads = modules.distill_loss(&students, &teachers, false).backward();
    assert!(has_grad(&modules.adapter[0].weight, &grads));
    assert!(students.iter().all(|s| s.grad(&grads).is_some()));
    assert!(!has_grad(&modules.refine[0].weight, &grads));
    assert!(!has_grad(
        &modules.label_encoder.stn_desc.conv1.weight,
        &grads
    ));
    assert!(!has_grad(&modules.student_proj.weight, &grads));

    let grads = modules.distill_loss(&students, &teachers, true).backward();
    assert!(has_grad(&modules.adapter[2].weight, &grads));
    assert!(students.iter().all(|s| {
        s.grad(&grads)
            .is_none_or(|g| vals(g).iter().all(|v| *v == 0.0))
    }));

    // A stand-in for the head's loss on the teacher features.
    let proxy = |ts: &[Tensor<4>]| {
        ts.iter()
            .map(|t| (t.clone() * t.clone().sin()).sum())
            .reduce(|a, b| a + b)
            .unwrap()
    };
    let grads = proxy(&teachers).backward();
    for (name, reached) in [
        (
            "stn_desc",
            has_grad(&modules.label_encoder.stn_desc.conv1.weight, &grads),
        ),
        (
            "stn_feat",
            has_grad(&modules.label_encoder.stn_feat.fc3.weight, &grads),
        ),
        (
            "conv4",
            has_grad(&modules.label_encoder.conv4.weight, &grads),
        ),
        ("canoni", has_grad(&modules.canoni_proj.weight, &grads)),
        (
            "student_proj",
            has_grad(&modules.student_proj.weight, &grads),
        ),
        (
            "attention",
            has_grad(&modules.attention.value.weight, &grads),
        ),
        (
            "local_1d",
            has_grad(&modules.local_inst_proj_1d.weight, &grads),
        ),
        (
            "local_2d",
            has_grad(&modules.local_inst_proj_2d.weight, &grads),
        ),
        ("context", has_grad(&modules.global_ctx_proj.weight, &grads)),
        ("refine", has_grad(&modules.refine[2].weight, &grads)),
    ] {
        assert!(reached, "{name} gets no gradient from the teacher features");
    }
    assert!(!has_grad(&modules.adapter[0].weight, &grads));
    assert!(students.iter().all(|s| s.grad(&grads).is_some()));

    let detached = LgdConfig::new().with_detach_appearance(true);
    let teachers = modules.teacher_features(&detached, &students, &labels, padded);
    let grads = proxy(&teachers).backward();
    assert!(students.iter().all(|s| s.grad(&grads).is_none()));
}

/// Attention and rendering stay within an image: changing image 1's labels leaves image
/// 0's teacher features unchanged, and changes image 1's.
#[test]
fn images_do_not_see_each_other() {
    let device = Device::flex();
    let config = LgdConfig::new();
    let modules = LgdModules::new(7, 8, 8, &device);
    let (students, labels, padded) = batch(&device, 5);
    let image = |t: &Tensor<4>, n: usize| vals(t.clone().narrow(0, n, 1));
    let a = modules.teacher_features(&config, &students, &labels, padded);
    let gt = vec![
        instances(
            padded,
            vec![[2.0, 3.0, 20.0, 18.0], [10.0, 12.0, 30.0, 31.0]],
            vec![0, 2],
        ),
        instances(padded, vec![[1.0, 1.0, 30.0, 9.0]], vec![0]),
    ];
    let b = modules.teacher_features(
        &config,
        &students,
        &encode_labels(&gt, 3, padded, true),
        padded,
    );
    for (ta, tb) in a.iter().zip(&b) {
        let (a0, b0) = (image(ta, 0), image(tb, 0));
        assert!(a0.iter().zip(&b0).all(|(x, y)| (x - y).abs() < 1e-5));
        let (a1, b1) = (image(ta, 1), image(tb, 1));
        assert!(a1.iter().zip(&b1).any(|(x, y)| (x - y).abs() > 1e-3));
    }
}

#[test]
fn phases_and_checks() {
    let c = LgdConfig::new()
        .with_freeze_backbone_steps(3)
        .with_pre_nondistill_steps(5);
    assert!(c.freezes_student_backbone(2));
    assert!(!c.freezes_student_backbone(3));
    assert!(c.teacher_free());
    let defaults = LgdConfig::defaults();
    assert_eq!(
        (
            defaults.pre_nondistill_steps,
            defaults.freeze_backbone_steps
        ),
        (30000, 20000)
    );
    assert!(defaults.context_box && !defaults.detach_appearance && defaults.heads == 8);
}
