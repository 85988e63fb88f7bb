//! Transformer blocks against the PyTorch ports of Mask2Former's decoder layer and of the
//! DETR / Deformable DETR sine encodings (`tests/fixtures/ops/transformer.json`, made by
//! `scripts/fixtures/transformer.py`).

use burn::module::Param;
use burn::nn::attention::MultiHeadAttention;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Bool, Device, Tensor, TensorData};
use kdet_models::ops::transformer::{
    MaskedDecoderLayerConfig, SinePositionEncodingConfig, masked_attention_mask,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ops/transformer.json"
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

/// Max |a − b| / max(1, |b|).
fn max_err<const D: usize>(got: Tensor<D>, want: &Value) -> f32 {
    let got: Vec<f32> = got.into_data().try_into_vec::<f32>().expect("floats");
    let want = floats(want);
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0, f32::max)
}

#[test]
fn sine_encodings_equal_detrs_and_deformable_detrs() {
    let f = &fixture()["sine"];
    let (b, h, w, n) = (
        count(f, "batch"),
        count(f, "height"),
        count(f, "width"),
        count(f, "num_pos_feats"),
    );
    let device = Device::flex();
    let padding = || -> Tensor<3, Bool> { tensor::<3>(&f["padding"], [b, h, w]).greater_elem(0.5) };
    let m2f = SinePositionEncodingConfig::new(n);
    let errs = [
        max_err(m2f.encode(b, h, w, None, &device), &f["mask2former"]),
        max_err(
            m2f.encode(b, h, w, Some(padding()), &device),
            &f["mask2former_padded"],
        ),
    ];
    assert!(errs.iter().all(|e| *e < 1e-5), "{errs:?}");
    // Deformable DETR's −0.5 offset: compared where the image is valid. On a padded row
    // (or column) the count is 0 and the angle (0 − 0.5) / 1e-6 · 2π ≈ −3e6 rad, whose sine
    // f32 cannot carry (the reference is f64); those positions are masked out of attention.
    let got: Vec<f32> = SinePositionEncodingConfig::new(n)
        .with_offset(-0.5)
        .encode(b, h, w, Some(padding()), &device)
        .into_data()
        .try_into_vec::<f32>()
        .expect("floats");
    let want = floats(&f["deformable_detr_padded"]);
    let pad = floats(&f["padding"]);
    let mut compared = 0;
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        // Index [image, channel, y, x] → the padding entry [image, y, x].
        let (img, rest) = (i / (2 * n * h * w), i % (h * w));
        if pad[img * h * w + rest] == 0.0 {
            assert!((g - r).abs() < 1e-5, "entry {i}: {g} vs {r}");
            compared += 1;
        }
    }
    assert!(compared > 0);
}

fn set_linear(l: &mut Linear, p: &Value, name: &str) {
    let entry = |k: &str| &p[format!("{name}.{k}")];
    let shape: Vec<usize> = entry("w")["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|x| x.as_u64().expect("dim") as usize)
        .collect();
    l.weight = Param::from_tensor(tensor::<2>(&entry("w")["values"], [shape[0], shape[1]]));
    l.bias = Some(Param::from_tensor(tensor::<1>(
        &entry("b")["values"],
        [shape[1]],
    )));
}

fn set_norm(n: &mut LayerNorm, p: &Value, name: &str) {
    let d = p[format!("{name}.g")]["shape"][0].as_u64().expect("dim") as usize;
    n.gamma = Param::from_tensor(tensor::<1>(&p[format!("{name}.g")]["values"], [d]));
    n.beta = Some(Param::from_tensor(tensor::<1>(
        &p[format!("{name}.b")]["values"],
        [d],
    )));
}

fn set_attention(a: &mut MultiHeadAttention, p: &Value, side: &str) {
    set_linear(&mut a.query, p, &format!("{side}.q"));
    set_linear(&mut a.key, p, &format!("{side}.k"));
    set_linear(&mut a.value, p, &format!("{side}.v"));
    set_linear(&mut a.output, p, &format!("{side}.o"));
}

#[test]
fn masked_decoder_layer_equals_mask2formers() {
    let f = &fixture()["decoder"];
    let (d, b, q) = (count(f, "d_model"), count(f, "batch"), count(f, "queries"));
    let (h, w) = (count(f, "height"), count(f, "width"));
    let device = Device::flex();
    let mut layer =
        MaskedDecoderLayerConfig::new(d, count(f, "n_heads"), count(f, "dim_feedforward"))
            .init(&device);
    let p = &f["params"];
    set_attention(&mut layer.cross.attn, p, "cross");
    set_norm(&mut layer.cross.norm, p, "cross.norm");
    set_attention(&mut layer.self_attn.attn, p, "self");
    set_norm(&mut layer.self_attn.norm, p, "self.norm");
    set_linear(&mut layer.ffn.linear1, p, "ffn.1");
    set_linear(&mut layer.ffn.linear2, p, "ffn.2");
    set_norm(&mut layer.ffn.norm, p, "ffn.norm");

    let mask = masked_attention_mask(tensor::<4>(&f["mask_logits"], [b, q, h, w]));
    let mask_values: Vec<f32> = mask
        .clone()
        .float()
        .into_data()
        .try_into_vec::<f32>()
        .expect("floats");
    assert_eq!(mask_values, floats(&f["mask"]), "the attention mask");
    let out = layer.forward(
        tensor::<3>(&f["x"], [b, q, d]),
        tensor::<3>(&f["query_pos"], [b, q, d]),
        tensor::<3>(&f["memory"], [b, h * w, d]),
        tensor::<3>(&f["memory_pos"], [b, h * w, d]),
        Some(mask),
    );
    let err = max_err(out, &f["out"]);
    assert!(err < 1e-5, "{err}");
}
