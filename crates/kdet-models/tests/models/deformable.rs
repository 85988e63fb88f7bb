//! Multi-scale deformable attention against the PyTorch path of transformers' port of
//! Deformable DETR's `MSDeformAttn` (`tests/fixtures/ops/deformable.json`, made by
//! `scripts/fixtures/deformable.py`).

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use kdet_models::ops::deformable::MsDeformAttnConfig;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ops/deformable.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture")).expect("JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn count(v: &Value, key: &str) -> usize {
    v[key].as_u64().expect("a count") as usize
}

fn tensor<const D: usize>(v: &Value, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(floats(v), shape), &Device::flex())
}

fn set_linear(l: &mut Linear, params: &Value, name: &str) {
    let w = &params[format!("{name}.weight")];
    let shape: Vec<usize> = w["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|x| x.as_u64().expect("dim") as usize)
        .collect();
    l.weight = Param::from_tensor(tensor::<2>(&w["values"], [shape[0], shape[1]]));
    let b = &params[format!("{name}.bias")]["values"];
    l.bias = Some(Param::from_tensor(tensor::<1>(b, [shape[1]])));
}

#[test]
fn init_offsets_point_in_each_heads_direction() {
    let f = fixture();
    let m = MsDeformAttnConfig::new(count(&f, "d_model"), count(&f, "n_levels"))
        .with_n_heads(count(&f, "n_heads"))
        .with_n_points(count(&f, "n_points"))
        .init(&Device::flex());
    let bias: Vec<f32> = m
        .sampling_offsets
        .bias
        .expect("a bias")
        .val()
        .into_data()
        .try_into_vec::<f32>()
        .expect("floats");
    let want = floats(&f["init_offsets_bias"]);
    assert_eq!(bias.len(), want.len());
    for (i, (g, w)) in bias.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-6, "bias {i}: {g} vs {w}");
    }
}

#[test]
fn deformable_attention_equals_deformable_detrs() {
    let f = fixture();
    let (d, b, q) = (
        count(&f, "d_model"),
        count(&f, "batch"),
        count(&f, "queries"),
    );
    let levels = count(&f, "n_levels");
    let shapes: Vec<(usize, usize)> = f["shapes"]
        .as_array()
        .expect("shapes")
        .iter()
        .map(|p| {
            let p = floats(p);
            (p[0] as usize, p[1] as usize)
        })
        .collect();
    let s: usize = shapes.iter().map(|(h, w)| h * w).sum();
    let mut m = MsDeformAttnConfig::new(d, levels)
        .with_n_heads(count(&f, "n_heads"))
        .with_n_points(count(&f, "n_points"))
        .init(&Device::flex());
    let p = &f["params"];
    set_linear(&mut m.sampling_offsets, p, "sampling_offsets");
    set_linear(&mut m.attention_weights, p, "attention_weights");
    set_linear(&mut m.value_proj, p, "value_proj");
    set_linear(&mut m.output_proj, p, "output_proj");
    for case in f["cases"].as_array().expect("cases") {
        let coords = count(case, "coords");
        let padding: Option<Tensor<2, Bool>> = case["padding"]
            .as_array()
            .map(|_| tensor::<2>(&case["padding"], [b, s]).greater_elem(0.5));
        let out = m.forward(
            tensor::<3>(&case["query"], [b, q, d]),
            tensor::<4>(&case["reference_points"], [b, q, levels, coords]),
            tensor::<3>(&case["input"], [b, s, d]),
            &shapes,
            padding,
        );
        let got: Vec<f32> = out.into_data().try_into_vec::<f32>().expect("floats");
        let want = floats(&case["out"]);
        let err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{coords}-coordinate references: {err}");
    }
}
