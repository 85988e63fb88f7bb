//! Tests of [`super`] (mgd.rs), kept apart to keep the loss file readable.
use super::*;
use crate::losses::test_util::{
    Lcg, assert_rel, entry, max_rel, param1, param4, scalar, tensor, tensor_data, tensor4, vals,
};
use burn::module::Param;
use serde_json::Value;

/// MMRazor's own `MGDConnector` + `MGDLoss` on fixed inputs, made by
/// `scripts/fixtures/mgd_fbkd.py` (see its docstring) from the `mmrazor==1.0.0` wheel.
const FIXTURE: &str = include_str!("../../../../../tests/fixtures/distill/mgd.json");

/// `(shape, values)` of a fixture tensor entry `{"shape": [...], "data": [...]}`.
/// The level's modules holding the fixture's (official state-dict) parameters.
fn level_from(params: &Value, device: &Device) -> MgdLevel {
    let (align_shape, _) = entry(&params["generation.0.weight"]);
    let teacher_channels = align_shape[0];
    let student_channels = match params.get("align.weight") {
        Some(w) => entry(w).0[1],
        None => teacher_channels,
    };
    let mut level = MgdLevel::new(student_channels, teacher_channels, device);
    if let Some(align) = level.align.as_mut() {
        align.weight = param4(&params["align.weight"], device);
        align.bias = Some(param1(&params["align.bias"], device));
    }
    for (conv, name) in [
        (&mut level.generation_0, "generation.0"),
        (&mut level.generation_2, "generation.2"),
    ] {
        conv.weight = param4(&params[format!("{name}.weight")], device);
        conv.bias = Some(param1(&params[format!("{name}.bias")], device));
    }
    level
}

/// `max_i |got_i − want_i| / max_i |want_i|`: the error relative to the tensor's scale
/// (elements near zero carry the cancellation error of their larger neighbours).
/// Parity with the official code: the loss of each level and of the sum (values at 1e-5
/// relative), and the gradients of the sum w.r.t. the student features and the stored
/// connector parameters (max error ≤ 1e-5 of the tensor's largest magnitude). Level 0
/// has `C_S = C_T = 8` (no `align`), level 1 `C_S = 4 → C_T = 8` (with `align`). The masks
/// are the official draws, recorded by the fixture script.
#[test]
fn parity_with_mmrazor() {
    let doc: Value = serde_json::from_str(FIXTURE).expect("fixture JSON");
    let config = MgdConfig::new();
    assert_eq!(doc["alpha"].as_f64().map(|v| v as f32), Some(config.alpha));
    assert_eq!(
        doc["lambda"].as_f64().map(|v| v as f32),
        Some(config.lambda)
    );
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let levels = doc["levels"].as_array().expect("levels");
    let modules = MgdModules {
        levels: levels
            .iter()
            .map(|l| level_from(&l["params"], &device))
            .collect(),
    };
    assert!(modules.levels[0].align.is_none() && modules.levels[1].align.is_some());
    let students: Vec<_> = levels
        .iter()
        .map(|l| tensor4(&l["student"], &device).require_grad())
        .collect();
    let teachers: Vec<_> = levels
        .iter()
        .map(|l| tensor4(&l["teacher"], &plain))
        .collect();
    let masks: Vec<_> = levels.iter().map(|l| tensor4(&l["mask"], &plain)).collect();

    let mut worst = 0.0f64;
    for (l, level) in levels.iter().enumerate() {
        let one = MgdModules {
            levels: vec![modules.levels[l].clone()],
        };
        let got = scalar(one.forward(&config, &students[l..=l], &teachers[l..=l], &masks[l..=l]));
        let want = level["loss"].as_f64().expect("level loss");
        assert_rel(got, want, 1e-5, &format!("level {l} loss"));
        worst = worst.max((got - want).abs() / want.abs());
    }
    let loss = modules.forward(&config, &students, &teachers, &masks);
    let want = doc["loss"].as_f64().expect("loss");
    let got = scalar(loss.clone());
    assert_rel(got, want, 1e-5, "total loss");
    worst = worst.max((got - want).abs() / want.abs());

    let grads = loss.backward();
    let mut worst_grad = 0.0f64;
    for (l, level) in levels.iter().enumerate() {
        let g = vals(students[l].grad(&grads).expect("student gradient"));
        let err = max_rel(&g, &entry(&level["grad_student"]).1);
        assert!(err < 1e-5, "level {l} student gradient: rel err {err}");
        worst_grad = worst_grad.max(err);
        let m = &modules.levels[l];
        for (name, want) in level["grads"].as_object().expect("grads") {
            let got = match name.as_str() {
                "generation.0.weight" => vals(m.generation_0.weight.grad(&grads).expect("grad")),
                "generation.2.bias" => vals(
                    m.generation_2
                        .bias
                        .as_ref()
                        .expect("bias")
                        .grad(&grads)
                        .expect("grad"),
                ),
                "align.weight" => vals(
                    m.align
                        .as_ref()
                        .expect("align")
                        .weight
                        .grad(&grads)
                        .expect("grad"),
                ),
                other => panic!("unexpected gradient {other} in the fixture"),
            };
            let err = max_rel(&got, &entry(want).1);
            assert!(err < 1e-5, "level {l} {name} gradient: rel err {err}");
            worst_grad = worst_grad.max(err);
        }
    }
    eprintln!("MGD parity: max rel err values {worst:.3e}, gradients {worst_grad:.3e}");
}

/// A case small enough to do by hand: `C = 1` on a 1×1 map, so each 3×3 conv (padding 1)
/// only sees its centre tap. `W_1 = 0.5, b_1 = −0.25, W_2 = 2, b_2 = 0.5`, student `2` in
/// both images, teacher `3`; image 0 is kept (`M = 1`), image 1 masked (`M = 0`):
/// - image 0: `G = 2·ReLU(0.5·2 − 0.25) + 0.5 = 2`, `(G − 3)² = 1`;
/// - image 1: `G = 2·ReLU(−0.25) + 0.5 = 0.5`, `(G − 3)² = 6.25`;
/// - loss `= α (1 + 6.25) / N = 2e-5 · 7.25 / 2 = 7.25e-5`.
#[test]
fn hand_derived_tiny_case() {
    let device = Device::flex();
    let mut level = MgdLevel::new(1, 1, &device);
    let centre = |v: f64| {
        let mut w = vec![0.0; 9];
        w[4] = v;
        Param::from_data(tensor_data(&w, [1, 1, 3, 3]), &device)
    };
    let bias = |v: f64| Some(Param::from_data(tensor_data(&[v], [1]), &device));
    level.generation_0.weight = centre(0.5);
    level.generation_0.bias = bias(-0.25);
    level.generation_2.weight = centre(2.0);
    level.generation_2.bias = bias(0.5);
    let modules = MgdModules {
        levels: vec![level],
    };
    let s = tensor(&[2.0, 2.0], [2, 1, 1, 1], &device);
    let t = tensor(&[3.0, 3.0], [2, 1, 1, 1], &device);
    let m = tensor(&[1.0, 0.0], [2, 1, 1, 1], &device);
    let loss = scalar(modules.forward(&MgdConfig::new(), &[s], &[t], &[m]));
    assert_rel(loss, 7.25e-5, 1e-6, "hand value");
}

/// Zero where it truly holds: with `W_2 = 0` the generator outputs its bias `b_2`
/// everywhere, whatever the (masked) student; a teacher equal to `b_2` in every position
/// then gives exactly 0 (any mask, any student).
#[test]
fn zero_when_generation_reproduces_teacher() {
    let device = Device::flex();
    let (n, c, h, w) = (2, 3, 4, 5);
    let b2 = [0.75, -1.5, 0.25];
    let mut level = MgdLevel::new(c, c, &device);
    level.generation_2.weight =
        Param::from_data(tensor_data(&vec![0.0; c * c * 9], [c, c, 3, 3]), &device);
    level.generation_2.bias = Some(Param::from_data(tensor_data(&b2, [c]), &device));
    let modules = MgdModules {
        levels: vec![level],
    };
    let mut rng = Lcg::new(5);
    let s = tensor(&rng.vec_f64(n * c * h * w, 2.0), [n, c, h, w], &device);
    let t_vals: Vec<f64> = (0..n * c * h * w).map(|i| b2[(i / (h * w)) % c]).collect();
    let t = tensor(&t_vals, [n, c, h, w], &device);
    let m = mgd_masks(0.65, 1, 2, 0, [n, h, w], &device);
    let loss = scalar(modules.forward(&MgdConfig::new(), &[s], &[t], &[m]));
    assert_eq!(loss, 0.0);
}

/// Gradients reach the student feature, `align` and both generation convs; the teacher
/// and the mask are plain-device constants. With a 1×1 `align`, a masked-out position
/// gets exactly zero gradient in every student channel, a kept one not.
#[test]
fn gradients_reach_student_and_modules_only() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let (n, cs, ct, h, w) = (2, 3, 4, 5, 6);
    let config = MgdConfig::new();
    let modules = config.init(&[cs], &[ct], &device);
    assert!(modules.levels[0].align.is_some());
    let mut rng = Lcg::new(9);
    let student = tensor(&rng.vec_f64(n * cs * h * w, 2.0), [n, cs, h, w], &device).require_grad();
    let teacher = tensor(&rng.vec_f64(n * ct * h * w, 2.0), [n, ct, h, w], &plain);
    let mask = mgd_masks(config.lambda, 7, 3, 0, [n, h, w], &plain);
    assert!(!teacher.is_autodiff() && !mask.is_autodiff());
    let keep = vals(mask.clone());
    assert!(keep.contains(&0.0) && keep.contains(&1.0));

    let loss = modules.forward(&config, std::slice::from_ref(&student), &[teacher], &[mask]);
    let grads = loss.backward();
    let g = vals(student.grad(&grads).expect("student gradient"));
    assert!(g.iter().all(|v| v.is_finite()));
    for i in 0..n {
        for c in 0..cs {
            for p in 0..h * w {
                let v = g[(i * cs + c) * h * w + p];
                if keep[i * h * w + p] == 0.0 {
                    assert_eq!(v, 0.0, "masked position got gradient");
                }
            }
        }
    }
    assert!(g.iter().any(|&v| v != 0.0));
    let level = &modules.levels[0];
    let align = level.align.as_ref().expect("align");
    for (name, g) in [
        ("align", align.weight.grad(&grads)),
        ("generation.0", level.generation_0.weight.grad(&grads)),
        ("generation.2", level.generation_2.weight.grad(&grads)),
    ] {
        let g = vals(g.unwrap_or_else(|| panic!("{name} has no gradient")));
        assert!(
            g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0),
            "{name}"
        );
    }
}

/// The mask is a pure function of `(seed, step, level)`: redrawing gives the same mask
/// (a resumed run draws what the uninterrupted one drew); another step, level or seed
/// gives another one; values are 0/1 with shape `[N, 1, H, W]`.
#[test]
fn masks_depend_only_on_seed_step_level() {
    let device = Device::flex();
    let shape = [2, 16, 16];
    let base = mgd_mask_values(0.65, 42, 100, 1, shape);
    assert_eq!(base, mgd_mask_values(0.65, 42, 100, 1, shape));
    for other in [
        mgd_mask_values(0.65, 42, 101, 1, shape),
        mgd_mask_values(0.65, 42, 100, 2, shape),
        mgd_mask_values(0.65, 43, 100, 1, shape),
    ] {
        assert_ne!(base, other);
    }
    assert!(base.iter().all(|&v| v == 0.0 || v == 1.0));
    let t = mgd_masks(0.65, 42, 100, 1, shape, &device);
    assert_eq!(t.dims(), [2, 1, 16, 16]);
    assert_eq!(vals(t), base);
}

/// On a large map the dropped fraction is `λ`: 2·512·512 = 524288 positions, binomial
/// standard deviation `sqrt(0.65·0.35/524288) ≈ 6.6e-4`, so ±0.005 is over 7 σ. `λ = 0`
/// drops nothing (`u < 1` always).
#[test]
fn mask_zero_fraction_is_lambda() {
    for lambda in [0.65f32, 0.3] {
        let m = mgd_mask_values(lambda, 2022, 5, 0, [2, 512, 512]);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!(
            (dropped - lambda as f64).abs() < 0.005,
            "lambda {lambda}: dropped fraction {dropped}"
        );
    }
    assert!(
        mgd_mask_values(0.0, 1, 1, 0, [1, 64, 64])
            .iter()
            .all(|&v| v == 1.0)
    );
}

/// `align` exists only when the channel counts differ; the generation convs are 3×3
/// `C_T → C_T`.
#[test]
fn init_shapes() {
    let device = Device::flex();
    let modules = MgdConfig::new().init(&[256, 128], &[256, 256], &device);
    assert!(modules.levels[0].align.is_none());
    let align = modules.levels[1].align.as_ref().expect("align");
    assert_eq!(align.weight.dims(), [256, 128, 1, 1]);
    for level in &modules.levels {
        assert_eq!(level.generation_0.weight.dims(), [256, 256, 3, 3]);
        assert_eq!(level.generation_2.weight.dims(), [256, 256, 3, 3]);
    }
}

/// Defaults equal the official config and survive a serde round trip.
#[test]
fn config_defaults_and_serde() {
    let config = MgdConfig::new();
    assert_eq!((config.alpha, config.lambda), (2e-5, 0.65));
    let json = config.to_string();
    let back = MgdConfig::load_binary(json.as_bytes()).expect("round trip");
    assert_eq!(back, config);
}
