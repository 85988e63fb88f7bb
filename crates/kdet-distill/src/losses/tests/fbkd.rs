//! Tests of [`super`] (fbkd.rs), kept apart to keep the loss file readable.
use super::*;
use crate::losses::test_util::{
    Lcg, assert_rel, entry, max_rel, param1, param4, scalar, tensor, tensor_data, tensor4, vals,
};
use burn::module::Param;
use burn::tensor::Gradients;
use serde_json::Value;

/// MMRazor's own `FBKDStudentConnector`, `FBKDTeacherConnector` and `FBKDLoss` on fixed
/// inputs and parameters, made by `scripts/fixtures/mgd_fbkd.py` (see its docstring) from
/// the `mmrazor==1.0.0` wheel.
const FIXTURE: &str = include_str!("../../../../../tests/fixtures/distill/fbkd.json");

/// `(shape, values)` of a fixture tensor entry `{"shape": [...], "data": [...]}`.
/// Sets a conv's weight (and bias, when the state dict has one) from `prefix.weight` /
/// `prefix.bias`.
fn set_conv(conv: &mut Conv2d, params: &Value, prefix: &str, device: &Device) {
    conv.weight = param4(&params[format!("{prefix}.weight")], device);
    if let Some(b) = params.get(format!("{prefix}.bias")) {
        conv.bias = Some(param1(b, device));
    }
}

/// A non-local block from the official names under `prefix` (`student_non_local` /
/// `teacher_non_local`), per the state-dict mapping of the module docs.
fn set_block(block: &mut NonLocal2d, params: &Value, prefix: &str, device: &Device) {
    set_conv(
        &mut block.g,
        params,
        &format!("{prefix}.g.0.0.conv"),
        device,
    );
    set_conv(
        &mut block.theta,
        params,
        &format!("{prefix}.theta.conv"),
        device,
    );
    set_conv(
        &mut block.phi,
        params,
        &format!("{prefix}.phi.0.0.conv"),
        device,
    );
    set_conv(
        &mut block.conv_out,
        params,
        &format!("{prefix}.conv_out.conv"),
        device,
    );
    block.conv_out_norm.gamma = param1(&params[format!("{prefix}.conv_out.bn.weight")], device);
    block.conv_out_norm.beta = param1(&params[format!("{prefix}.conv_out.bn.bias")], device);
}

/// PyTorch's Linear weight is `[out, in]`, burn's `[in, out]`.
fn transpose(values: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| values[i * cols + j]))
        .collect()
}

/// The level's modules holding the fixture's parameters.
fn level_from(level: &Value, channels: usize, config: &FbkdConfig, device: &Device) -> FbkdLevel {
    let mut modules = config.init(&[channels], device).levels.remove(0);
    let sp = &level["params"]["student"];
    let st = &mut modules.student;
    let (s, w) = entry(&sp["channel_wise_adaptation.weight"]);
    st.channel_wise_adaptation.weight = Param::from_data(
        tensor_data(&transpose(&w, s[0], s[1]), [s[1], s[0]]),
        device,
    );
    st.channel_wise_adaptation.bias = Some(param1(&sp["channel_wise_adaptation.bias"], device));
    set_conv(
        &mut st.spatial_wise_adaptation,
        sp,
        "spatial_wise_adaptation",
        device,
    );
    set_conv(&mut st.adaptation_layers, sp, "adaptation_layers", device);
    set_conv(
        &mut st.non_local_adaptation,
        sp,
        "non_local_adaptation",
        device,
    );
    set_block(&mut st.student_non_local, sp, "student_non_local", device);
    set_block(
        &mut modules.teacher.teacher_non_local,
        &level["params"]["teacher"],
        "teacher_non_local",
        device,
    );
    modules
}

/// The gradient of an official parameter name, in PyTorch layout.
fn official_grad(level: &FbkdLevel, name: &str, grads: &Gradients) -> Vec<f32> {
    let block_grad = |block: &NonLocal2d, rest: &str| -> Vec<f32> {
        match rest {
            "g.0.0.conv.weight" => vals(block.g.weight.grad(grads).expect("grad")),
            "theta.conv.weight" => vals(block.theta.weight.grad(grads).expect("grad")),
            "phi.0.0.conv.bias" => vals(
                block
                    .phi
                    .bias
                    .as_ref()
                    .expect("bias")
                    .grad(grads)
                    .expect("grad"),
            ),
            "conv_out.conv.weight" => vals(block.conv_out.weight.grad(grads).expect("grad")),
            "conv_out.bn.weight" => vals(block.conv_out_norm.gamma.grad(grads).expect("grad")),
            "conv_out.bn.bias" => vals(block.conv_out_norm.beta.grad(grads).expect("grad")),
            other => panic!("unexpected non-local gradient {other}"),
        }
    };
    let st = &level.student;
    if let Some(rest) = name.strip_prefix("student_non_local.") {
        return block_grad(&st.student_non_local, rest);
    }
    if let Some(rest) = name.strip_prefix("teacher_non_local.") {
        return block_grad(&level.teacher.teacher_non_local, rest);
    }
    match name {
        "channel_wise_adaptation.weight" => {
            let g = vals(st.channel_wise_adaptation.weight.grad(grads).expect("grad"));
            let [i, o] = st.channel_wise_adaptation.weight.dims();
            let g: Vec<f64> = g.iter().map(|&v| v as f64).collect();
            // burn [in, out] -> PyTorch [out, in]
            transpose(&g, i, o).iter().map(|&v| v as f32).collect()
        }
        "spatial_wise_adaptation.weight" => {
            vals(st.spatial_wise_adaptation.weight.grad(grads).expect("grad"))
        }
        "adaptation_layers.weight" => vals(st.adaptation_layers.weight.grad(grads).expect("grad")),
        "non_local_adaptation.weight" => {
            vals(st.non_local_adaptation.weight.grad(grads).expect("grad"))
        }
        other => panic!("unexpected gradient {other}"),
    }
}

/// `max_i |got_i − want_i| / max_i |want_i|`: the error relative to the tensor's scale
/// (elements near zero carry the cancellation error of their larger neighbours).
fn term_values(terms: &FbkdTerms) -> [(&'static str, f64); 4] {
    [
        ("mask_feature", scalar(terms.mask_feature.clone())),
        ("channel", scalar(terms.channel.clone())),
        ("spatial", scalar(terms.spatial.clone())),
        ("nonlocal", scalar(terms.nonlocal.clone())),
    ]
}

/// Parity with the official code: every term per level and summed over the two levels
/// (values at 1e-5 relative), and the gradients of the total w.r.t. the student features
/// and one parameter of every trainable module on both sides (max error ≤ 1e-5 of the
/// tensor's largest magnitude).
///
/// Exception, at 1e-4: the weight `W_out` (`conv_out.conv.weight`) right before a
/// batch-statistics BN. BN makes the loss invariant to the scale of each output channel
/// of `W_out`, so its gradient is the small remainder of cancelling terms and f32 loses
/// digits there: the official code itself, rerun in float32 on these inputs, is off the
/// float64 reference by 3.5e-5 (level 0, student side); kdet's f32 error is ≈ 2e-5.
///
/// Level 0: 8×8 map, reduction 4, pool 2 (8 → 4 → 2);
/// level 1: 7×13, reduction 2, pool 3 (7 → 3 → 1, 13 → 6 → 2: floors in both pools).
/// All connector parameters, BN ones included, are random (the official init would make
/// both non-local blocks identities).
#[test]
fn parity_with_mmrazor() {
    let doc: Value = serde_json::from_str(FIXTURE).expect("fixture JSON");
    let levels = doc["levels"].as_array().expect("levels");
    let config = FbkdConfig::new()
        .with_reductions(
            levels
                .iter()
                .map(|l| l["reduction"].as_u64().expect("reduction") as usize)
                .collect(),
        )
        .with_maxpool_strides(
            levels
                .iter()
                .map(|l| l["maxpool_stride"].as_u64().expect("stride") as usize)
                .collect(),
        );
    let w = &doc["weights"];
    assert_eq!(
        w["mask_feature"].as_f64().map(|v| v as f32),
        Some(config.mask_feature_weight)
    );
    assert_eq!(
        w["channel"].as_f64().map(|v| v as f32),
        Some(config.channel_weight)
    );
    assert_eq!(
        w["spatial"].as_f64().map(|v| v as f32),
        Some(config.spatial_weight)
    );
    assert_eq!(
        w["nonlocal"].as_f64().map(|v| v as f32),
        Some(config.nonlocal_weight)
    );
    assert_eq!(
        doc["temperature"].as_f64().map(|v| v as f32),
        Some(config.temperature)
    );

    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let students: Vec<_> = levels
        .iter()
        .map(|l| tensor4(&l["student"], &device).require_grad())
        .collect();
    let teachers: Vec<_> = levels
        .iter()
        .map(|l| tensor4(&l["teacher"], &plain))
        .collect();
    let modules = FbkdModules {
        levels: levels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let one = FbkdConfig {
                    reductions: vec![config.reductions[i]],
                    maxpool_strides: vec![config.maxpool_strides[i]],
                    ..config.clone()
                };
                level_from(l, students[i].dims()[1], &one, &device)
            })
            .collect(),
    };

    let mut worst = 0.0f64;
    let mut check = |got: f64, want: &Value, what: &str| {
        let want = want.as_f64().unwrap_or_else(|| panic!("{what} missing"));
        assert_rel(got, want, 1e-5, what);
        worst = worst.max((got - want).abs() / want.abs());
    };
    for (l, level) in levels.iter().enumerate() {
        let one_config = FbkdConfig {
            reductions: vec![config.reductions[l]],
            maxpool_strides: vec![config.maxpool_strides[l]],
            ..config.clone()
        };
        let one = FbkdModules {
            levels: vec![modules.levels[l].clone()],
        };
        let terms = one.forward(&one_config, &students[l..=l], &teachers[l..=l]);
        for (name, got) in term_values(&terms) {
            check(got, &level["terms"][name], &format!("level {l} {name}"));
        }
        check(
            scalar(terms.total()),
            &level["total"],
            &format!("level {l} total"),
        );
    }
    let terms = modules.forward(&config, &students, &teachers);
    for (name, got) in term_values(&terms) {
        check(got, &doc["terms"][name], name);
    }
    let total = terms.total();
    check(scalar(total.clone()), &doc["total"], "total");

    let grads = total.backward();
    let (mut worst_grad, mut worst_before_bn) = (0.0f64, 0.0f64);
    for (l, level) in levels.iter().enumerate() {
        let g = vals(students[l].grad(&grads).expect("student gradient"));
        let err = max_rel(&g, &entry(&level["grad_student"]).1);
        assert!(err < 1e-5, "level {l} student gradient: rel err {err}");
        worst_grad = worst_grad.max(err);
        for side in ["student", "teacher"] {
            for (name, want) in level["grads"][side].as_object().expect("grads") {
                let got = official_grad(&modules.levels[l], name, &grads);
                let err = max_rel(&got, &entry(want).1);
                eprintln!("level {l} {name}: gradient rel err {err:.3e}");
                if name.ends_with("conv_out.conv.weight") {
                    assert!(err < 1e-4, "level {l} {name} gradient: rel err {err}");
                    worst_before_bn = worst_before_bn.max(err);
                } else {
                    assert!(err < 1e-5, "level {l} {name} gradient: rel err {err}");
                    worst_grad = worst_grad.max(err);
                }
            }
        }
    }
    eprintln!(
        "FBKD parity: max rel err values {worst:.3e}, gradients {worst_grad:.3e}, \
         W_out gradients {worst_before_bn:.3e}"
    );
}

/// The official sub-sampling is a 2×2 max pool followed by an `s×s` one (floor rounding
/// each): on a 16×16 map with `s = 8` a single value remains (not 2×2 as an 8×8 pool
/// alone would give), and a 13-wide map with `s = 3` keeps `floor(floor(13/2)/3) = 2`
/// columns. Values `v(r, c) = 100 r + c` make each pooled maximum the bottom-right corner
/// of its window: `(2k+1)·s` rows/columns → `v = 100 (2s·i + 2s − 1) + (2s·j + 2s − 1)`.
#[test]
fn subsampling_cascades_two_pools() {
    let device = Device::flex();
    let map = |h: usize, w: usize| {
        let v: Vec<f64> = (0..h * w).map(|i| (100 * (i / w) + i % w) as f64).collect();
        tensor(&v, [1, 1, h, w], &device)
    };
    let block = NonLocal2d::new(1, 1, Some(8), &device);
    let out = block.subsample(map(16, 16));
    assert_eq!(out.dims(), [1, 1, 1, 1]);
    assert_eq!(vals(out), vec![1515.0]);

    let block = NonLocal2d::new(1, 1, Some(3), &device);
    let out = block.subsample(map(7, 13));
    assert_eq!(out.dims(), [1, 1, 1, 2]);
    // Rows 0..6 and columns 0..6 / 6..12 (the pooled 2×2 cells cover 6×6 pixels).
    assert_eq!(vals(out), vec![505.0, 511.0]);

    let block = NonLocal2d::new(1, 1, None, &device);
    assert_eq!(block.subsample(map(7, 13)).dims(), [1, 1, 7, 13]);
}

/// The batch-statistics BN on one channel `[1, 2, 3, 4]` (N = 1, 1×4 map): mean 2.5,
/// biased variance 1.25, so `(x − 2.5)/sqrt(1.25 + 1e-5)·γ + β` with `γ = 2, β = 1`.
#[test]
fn batch_stat_norm_hand_values() {
    for device in [Device::flex(), Device::flex().autodiff()] {
        let norm = BatchStatNorm {
            gamma: Param::from_data(tensor_data(&[2.0], [1]), &device),
            beta: Param::from_data(tensor_data(&[1.0], [1]), &device),
        };
        let out = vals(norm.forward(tensor(&[1.0, 2.0, 3.0, 4.0], [1, 1, 1, 4], &device)));
        let sd = (1.25f64 + 1e-5).sqrt();
        for (got, x) in out.iter().zip([1.0, 2.0, 3.0, 4.0]) {
            let want = (x - 2.5) / sd * 2.0 + 1.0;
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}

/// At the official init both non-local blocks are identities (BN weight and bias are 0).
#[test]
fn nonlocal_is_identity_at_init() {
    let device = Device::flex();
    let modules = FbkdConfig::new().init(&[8, 8, 8, 8], &device);
    let mut rng = Lcg::new(4);
    let x = tensor(&rng.vec_f64(2 * 8 * 32 * 32, 2.0), [2, 8, 32, 32], &device);
    for level in &modules.levels {
        for block in [
            &level.student.student_non_local,
            &level.teacher.teacher_non_local,
        ] {
            assert_eq!(vals(block.forward(x.clone())), vals(x.clone()));
        }
    }
}

/// Zero where it truly holds: student == teacher, identity adaptation layers
/// (`adaptation_layers`, `channel_wise_adaptation`, `non_local_adaptation` = identity,
/// `spatial_wise_adaptation` = centre tap 1, biases 0) and non-local blocks at init
/// (identities): every difference is exactly zero, so each term is its weight times
/// `sqrt(1e-24) = 1e-12` (the clamp), i.e. at most `4e-3 · 1e-12` (plus f32 rounding).
#[test]
fn zero_when_identical_with_identity_adaptations() {
    let device = Device::flex();
    let c = 4;
    let config = FbkdConfig::new()
        .with_reductions(vec![2])
        .with_maxpool_strides(vec![2]);
    let mut modules = config.init(&[c], &device);
    let eye: Vec<f64> = (0..c * c)
        .map(|i| if i / c == i % c { 1.0 } else { 0.0 })
        .collect();
    let zeros = || Some(Param::from_data(tensor_data(&vec![0.0; c], [c]), &device));
    let st = &mut modules.levels[0].student;
    st.channel_wise_adaptation.weight = Param::from_data(tensor_data(&eye, [c, c]), &device);
    st.channel_wise_adaptation.bias = zeros();
    for conv in [&mut st.adaptation_layers, &mut st.non_local_adaptation] {
        conv.weight = Param::from_data(tensor_data(&eye, [c, c, 1, 1]), &device);
        conv.bias = zeros();
    }
    let mut centre = vec![0.0; 9];
    centre[4] = 1.0;
    st.spatial_wise_adaptation.weight =
        Param::from_data(tensor_data(&centre, [1, 1, 3, 3]), &device);
    st.spatial_wise_adaptation.bias = Some(Param::from_data(tensor_data(&[0.0], [1]), &device));

    let mut rng = Lcg::new(8);
    let f = tensor(&rng.vec_f64(2 * c * 8 * 8, 2.0), [2, c, 8, 8], &device);
    let terms = modules.forward(&config, std::slice::from_ref(&f), std::slice::from_ref(&f));
    for (name, v) in term_values(&terms) {
        assert!((0.0..=5e-15).contains(&v), "{name} = {v}");
    }
}

fn grad_norm<const D: usize>(g: Option<Tensor<D>>) -> f64 {
    g.map(|g| vals(g).iter().map(|v| (*v as f64).abs()).sum())
        .unwrap_or(0.0)
}

/// Gradients reach the student feature and every trainable module of both sides; the
/// teacher feature is a plain-device constant.
///
/// At the official init each BN weight is 0, so inside the non-local blocks only the BN
/// parameters get a gradient (everything before them is multiplied by `γ = 0`); with a
/// non-zero `γ` (second stage) `g`, `θ`, `φ` and `W_out` get one too, on both sides.
#[test]
fn gradients_reach_student_and_both_connectors() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let config = FbkdConfig::new()
        .with_reductions(vec![2])
        .with_maxpool_strides(vec![2]);
    let mut rng = Lcg::new(12);
    let shape = [2, 4, 8, 8];
    let s_vals = rng.vec_f64(2 * 4 * 64, 2.0);
    let t_vals = rng.vec_f64(2 * 4 * 64, 2.0);
    let teacher = tensor(&t_vals, shape, &plain);
    assert!(!teacher.is_autodiff());

    for stage in 0..2 {
        let mut modules = config.init(&[4], &device);
        if stage == 1 {
            let level = &mut modules.levels[0];
            for block in [
                &mut level.student.student_non_local,
                &mut level.teacher.teacher_non_local,
            ] {
                block.conv_out_norm.gamma =
                    Param::from_data(tensor_data(&[0.5, 1.0, 1.5, 2.0], [4]), &device);
            }
        }
        let student = tensor(&s_vals, shape, &device).require_grad();
        let terms = modules.forward(
            &config,
            std::slice::from_ref(&student),
            std::slice::from_ref(&teacher),
        );
        let grads = terms.total().backward();
        let g = vals(student.grad(&grads).expect("student gradient"));
        assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));

        let st = &modules.levels[0].student;
        for (name, g) in [
            (
                "channel_wise_adaptation",
                grad_norm(st.channel_wise_adaptation.weight.grad(&grads)),
            ),
            (
                "spatial_wise_adaptation",
                grad_norm(st.spatial_wise_adaptation.weight.grad(&grads)),
            ),
            (
                "adaptation_layers",
                grad_norm(st.adaptation_layers.weight.grad(&grads)),
            ),
            (
                "non_local_adaptation",
                grad_norm(st.non_local_adaptation.weight.grad(&grads)),
            ),
        ] {
            assert!(g.is_finite() && g > 0.0, "stage {stage}: {name} grad {g}");
        }
        for (side, block) in [
            ("student", &st.student_non_local),
            ("teacher", &modules.levels[0].teacher.teacher_non_local),
        ] {
            for (name, g) in [
                (
                    "bn.weight",
                    grad_norm(block.conv_out_norm.gamma.grad(&grads)),
                ),
                ("bn.bias", grad_norm(block.conv_out_norm.beta.grad(&grads))),
            ] {
                assert!(
                    g.is_finite() && g > 0.0,
                    "stage {stage}: {side} {name} grad {g}"
                );
            }
            for (name, g) in [
                ("g", grad_norm(block.g.weight.grad(&grads))),
                ("theta", grad_norm(block.theta.weight.grad(&grads))),
                ("phi", grad_norm(block.phi.weight.grad(&grads))),
                ("conv_out", grad_norm(block.conv_out.weight.grad(&grads))),
            ] {
                if stage == 0 {
                    assert_eq!(g, 0.0, "{side} {name}: gradient behind γ = 0 at init");
                } else {
                    assert!(g.is_finite() && g > 0.0, "stage 1: {side} {name} grad {g}");
                }
            }
        }
    }
}

/// The attention mask is detached (official): the student's gradient from the masked
/// feature term alone equals the one computed with the mask held fixed. Checked via a
/// finite-difference-free identity: with `adaptation_layers` = identity, `∂/∂S sqrt(Σ M
/// (T − S)²) = −M (T − S) / L_feat`, which would gain a term `Σ (∂M/∂S)(T − S)²/(2 L_feat)`
/// if the mask were not detached.
#[test]
fn mask_is_detached() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let c = 3;
    let config = FbkdConfig::new()
        .with_reductions(vec![1])
        .with_maxpool_strides(vec![1])
        .with_channel_weight(0.0)
        .with_spatial_weight(0.0)
        .with_nonlocal_weight(0.0)
        .with_mask_feature_weight(1.0);
    let mut modules = config.init(&[c], &device);
    let eye: Vec<f64> = (0..c * c)
        .map(|i| if i / c == i % c { 1.0 } else { 0.0 })
        .collect();
    let st = &mut modules.levels[0].student;
    st.adaptation_layers.weight = Param::from_data(tensor_data(&eye, [c, c, 1, 1]), &device);
    st.adaptation_layers.bias = Some(Param::from_data(tensor_data(&vec![0.0; c], [c]), &device));
    let mut rng = Lcg::new(21);
    let (n, h, w) = (2, 4, 4);
    let s_vals = rng.vec_f64(n * c * h * w, 2.0);
    let t_vals = rng.vec_f64(n * c * h * w, 2.0);
    let student = tensor(&s_vals, [n, c, h, w], &device).require_grad();
    let teacher = tensor(&t_vals, [n, c, h, w], &plain);
    let terms = modules.forward(
        &config,
        std::slice::from_ref(&student),
        std::slice::from_ref(&teacher),
    );
    let loss = scalar(terms.mask_feature.clone());
    let grads = terms.mask_feature.backward();
    let got = vals(student.grad(&grads).expect("student gradient"));

    let mask = vals(
        (spatial_attention(tensor(&s_vals, [n, c, h, w], &plain), 0.5)
            + spatial_attention(teacher, 0.5))
        .mul_scalar(0.5),
    );
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                let k = (i * c + ch) * h * w + p;
                let want = -(mask[i * h * w + p] as f64) * (t_vals[k] - s_vals[k]) / loss;
                assert!(
                    (got[k] as f64 - want).abs() < 1e-5 * want.abs().max(1e-3),
                    "{k}: {} vs {want}",
                    got[k]
                );
            }
        }
    }
}

/// Defaults equal the official config (four levels P2–P5), the level check rejects a
/// mismatched level count, and the config survives a serde round trip.
#[test]
fn config_defaults_check_and_serde() {
    let config = FbkdConfig::new();
    assert_eq!(
        (
            config.mask_feature_weight,
            config.channel_weight,
            config.spatial_weight,
            config.nonlocal_weight,
            config.temperature,
            config.sub_sample,
        ),
        (7e-5, 4e-3, 4e-3, 7e-5, 0.5, true)
    );
    assert_eq!(config.reductions, vec![4, 4, 2, 2]);
    assert_eq!(config.maxpool_strides, vec![8, 4, 2, 2]);
    assert!(config.check(4).is_ok());
    assert!(config.check(5).is_err());
    assert!(config.check(0).is_err());
    assert!(
        config
            .clone()
            .with_maxpool_strides(vec![8, 4, 0, 2])
            .check(4)
            .is_err()
    );
    let modules = config.init(&[256; 4], &Device::flex());
    let inter: Vec<usize> = modules
        .levels
        .iter()
        .map(|l| l.student.student_non_local.g.weight.dims()[0])
        .collect();
    assert_eq!(inter, vec![64, 64, 128, 128]);
    let json = config.to_string();
    let back = FbkdConfig::load_binary(json.as_bytes()).expect("round trip");
    assert_eq!(back, config);
}
