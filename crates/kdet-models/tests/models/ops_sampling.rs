//! Parity of the sampling ops with PyTorch / torchvision on fixtures made by
//! `scripts/fixtures/sampling.py` (see its docstring; committed under
//! `tests/fixtures/ops/`, these tests never run Python): forward outputs and the
//! gradients of `sum(output * upstream)` w.r.t. the map (and the point coordinates).
//!
//! Tolerance: `max |got − want| / max |want| ≤ 1e-5` per tensor (the error relative to
//! the tensor's largest magnitude, as the distill fixture tests measure it); the max
//! absolute error is printed beside it (`cargo test … -- --nocapture`).

use burn::tensor::{Device, Tensor, TensorData};
use kdet_models::FeatureMap;
use kdet_models::ops::roi_align::{
    MultiScaleRoiAlignConfig, Roi, RoiAlignConfig, multi_scale_roi_align, roi_align,
};
use kdet_models::ops::sample::{
    PointDraws, UncertainPointsConfig, point_sample, point_sample_grid,
    point_sample_grid_decomposed, uncertain_point_coords_with_randomness,
};
use serde_json::Value;

const POINT_SAMPLE: &str = include_str!("../fixtures/ops/point_sample.json");
const ROI_ALIGN: &str = include_str!("../fixtures/ops/roi_align.json");
const TOLERANCE: f64 = 1e-5;

/// `(shape, values)` of a fixture tensor `{"shape": [...], "data": [...]}`.
fn entry(v: &Value) -> (Vec<usize>, Vec<f64>) {
    let shape = v["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("no shape in {v}"))
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect();
    (shape, data)
}

fn tensor<const D: usize>(v: &Value, device: &Device) -> Tensor<D> {
    let (shape, data) = entry(v);
    let data: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    let shape: [usize; D] = shape.try_into().expect("fixture rank");
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 data")
}

/// Compares `got` with the fixture tensor `want` (same shape), prints and returns the
/// `(max abs, max abs / max |want|)` errors, and asserts the relative one.
fn check<const D: usize>(what: &str, got: Tensor<D>, want: &Value) -> (f64, f64) {
    let (shape, want) = entry(want);
    assert_eq!(got.dims().to_vec(), shape, "{what}: shape");
    let got = vals(got);
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let abs = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max);
    let rel = if scale > 0.0 { abs / scale } else { abs };
    eprintln!("{what}: max abs {abs:.2e}, max rel {rel:.2e} (scale {scale:.3})");
    assert!(
        rel <= TOLERANCE,
        "{what}: max error {abs:e} is {rel:e} of the largest magnitude {scale}"
    );
    (abs, rel)
}

/// A fixture tensor `[N, P, 2]` or `[N, Hg, Wg, 2]` as a grid `[N, Hg, Wg, 2]` (P x 1).
fn grid(v: &Value, device: &Device) -> Tensor<4> {
    let (shape, _) = entry(v);
    if shape.len() == 3 {
        tensor::<3>(v, device).reshape([shape[0], shape[1], 1, 2])
    } else {
        tensor::<4>(v, device)
    }
}

/// `v` (`[N, C, P]` or `[N, C, Hg, Wg]`) with the shape `[N, C, Hg, Wg]` of a grid result.
fn as_grid(v: &Value) -> Value {
    let (shape, _) = entry(v);
    let shape = if shape.len() == 3 {
        vec![shape[0], shape[1], shape[2], 1]
    } else {
        shape
    };
    serde_json::json!({"shape": shape, "data": v["data"]})
}

/// Each case three ways: the plain device (burn-flex's `grid_sample_2d` kernel, forward
/// only), burn's autodiff decomposition of `grid_sample_2d`
/// (`point_sample_grid_decomposed`), and kdet's dedicated autodiff path
/// (`point_sample` / `point_sample_grid` on an autodiff device).
#[test]
fn point_sample_matches_grid_sample() {
    let doc: Value = serde_json::from_str(POINT_SAMPLE).expect("fixture JSON");
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let out = point_sample_grid(
            tensor::<4>(&case["input"], &plain),
            grid(&case["coords"], &plain),
        );
        check(
            &format!("point_sample {name}: output, plain device"),
            out,
            &as_grid(&case["output"]),
        );
        for (path, op) in [
            (
                "dedicated",
                point_sample_grid as fn(Tensor<4>, Tensor<4>) -> Tensor<4>,
            ),
            ("decomposed", point_sample_grid_decomposed),
        ] {
            let input = tensor::<4>(&case["input"], &device).require_grad();
            let coords = grid(&case["coords"], &device).require_grad();
            let out = op(input.clone(), coords.clone());
            let upstream = grid_shaped(&case["upstream"], &device);
            let grads = (out.clone() * upstream).sum().backward();
            check(
                &format!("point_sample {name}: output, {path}"),
                out,
                &as_grid(&case["output"]),
            );
            check(
                &format!("point_sample {name}: grad input, {path}"),
                input.grad(&grads).expect("input grad"),
                &case["grad_input"],
            );
            let gc = coords.grad(&grads).expect("coords grad");
            let [n, hg, wg, _] = gc.dims();
            let (gshape, _) = entry(&case["grad_coords"]);
            assert_eq!(gshape.iter().product::<usize>(), n * hg * wg * 2);
            check(
                &format!("point_sample {name}: grad coords, {path}"),
                gc.reshape([n, hg * wg, 2]),
                &serde_json::json!({"shape": [n, hg * wg, 2], "data": case["grad_coords"]["data"]}),
            );
        }
        // the [N, P, 2] form is a reshape of the grid form
        let (cshape, _) = entry(&case["coords"]);
        if cshape.len() == 3 {
            let input = tensor::<4>(&case["input"], &device);
            let out = point_sample(input, tensor::<3>(&case["coords"], &device));
            check(
                &format!("point_sample {name}: [N, P, 2] form"),
                out,
                &case["output"],
            );
        }
    }
}

/// A fixture upstream gradient `[N, C, P]` or `[N, C, Hg, Wg]` as `[N, C, Hg, Wg]`.
fn grid_shaped(v: &Value, device: &Device) -> Tensor<4> {
    let (shape, _) = entry(v);
    if shape.len() == 3 {
        tensor::<3>(v, device).reshape([shape[0], shape[1], shape[2], 1])
    } else {
        tensor::<4>(v, device)
    }
}

/// The uncertain points with PyTorch's own draws replayed: the selection (top-k of
/// `−|logit|` of sampled logits) and the order must equal detectron2's exactly (the
/// fixture's uncertainties are at least `min_gap_at_cut` apart around the cut).
#[test]
fn uncertain_points_match_mask2former() {
    let doc: Value = serde_json::from_str(POINT_SAMPLE).expect("fixture JSON");
    let case = &doc["uncertain"];
    let device = Device::flex();
    let config = UncertainPointsConfig::new()
        .with_num_points(case["num_points"].as_u64().expect("num_points") as usize)
        .with_oversample_ratio(case["oversample_ratio"].as_f64().expect("ratio"))
        .with_importance_sample_ratio(case["importance_sample_ratio"].as_f64().expect("ratio"));
    let logits = tensor::<4>(&case["logits"], &device);
    let (_, draws) = entry(&case["draws"]);
    let mut replay = draws.iter().map(|&d| d as f32);
    let mut next = || replay.next().expect("the fixture holds every draw");
    let got = vals(uncertain_point_coords_with_randomness(
        logits,
        &config,
        &mut PointDraws::Host(&mut next),
    ));
    assert!(replay.next().is_none(), "every recorded draw is used");
    let (shape, want) = entry(&case["coords"]);
    assert_eq!(shape, vec![3, 10, 2]);
    let want: Vec<f32> = want.iter().map(|&w| w as f32).collect();
    assert_eq!(got, want);
}

fn rois(v: &Value) -> Vec<Roi> {
    let (shape, data) = entry(v);
    assert_eq!(shape[1], 5);
    data.chunks(5)
        .map(|c| {
            [
                c[0] as f32,
                c[1] as f32,
                c[2] as f32,
                c[3] as f32,
                c[4] as f32,
            ]
        })
        .collect()
}

#[test]
fn roi_align_matches_torchvision() {
    let doc: Value = serde_json::from_str(ROI_ALIGN).expect("fixture JSON");
    let device = Device::flex().autodiff();
    let cases = doc["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 4);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let size = entry(&serde_json::json!({"shape": [2], "data": case["output_size"]})).1;
        let config = RoiAlignConfig::new([size[0] as usize, size[1] as usize])
            .with_spatial_scale(case["spatial_scale"].as_f64().expect("scale"))
            .with_sampling_ratio(case["sampling_ratio"].as_i64().expect("ratio") as i32)
            .with_aligned(case["aligned"].as_bool().expect("aligned"));
        let input = tensor::<4>(&doc["input"], &device).require_grad();
        let out = roi_align(input.clone(), &rois(&case["rois"]), &config);
        let upstream = tensor::<4>(&case["upstream"], &device);
        let grads = (out.clone() * upstream).sum().backward();
        check(&format!("roi_align {name}: output"), out, &case["output"]);
        check(
            &format!("roi_align {name}: grad input"),
            input.grad(&grads).expect("input grad"),
            &case["grad_input"],
        );
    }
}

#[test]
fn multi_scale_roi_align_matches_detectron2_levels() {
    let doc: Value = serde_json::from_str(ROI_ALIGN).expect("fixture JSON");
    let case = &doc["multi_level"];
    let device = Device::flex().autodiff();
    let strides: Vec<usize> = case["strides"]
        .as_array()
        .expect("strides")
        .iter()
        .map(|s| s.as_u64().expect("stride") as usize)
        .collect();
    let maps: Vec<Tensor<4>> = case["maps"]
        .as_array()
        .expect("maps")
        .iter()
        .map(|m| tensor::<4>(m, &device).require_grad())
        .collect();
    let levels: Vec<FeatureMap> = maps
        .iter()
        .zip(&strides)
        .map(|(m, &stride)| FeatureMap {
            tensor: m.clone(),
            stride,
        })
        .collect();
    let size = &case["output_size"];
    let config = MultiScaleRoiAlignConfig::new([
        size[0].as_u64().expect("oh") as usize,
        size[1].as_u64().expect("ow") as usize,
    ])
    .with_sampling_ratio(case["sampling_ratio"].as_i64().expect("ratio") as i32)
    .with_aligned(case["aligned"].as_bool().expect("aligned"))
    .with_canonical_box_size(case["canonical_box_size"].as_f64().expect("size"))
    .with_canonical_level(case["canonical_level"].as_i64().expect("level") as i32);
    let rois = rois(&case["rois"]);
    let boxes: Vec<[f32; 4]> = rois.iter().map(|r| [r[1], r[2], r[3], r[4]]).collect();
    let assigned = kdet_models::ops::roi_align::assign_boxes_to_levels(
        &boxes,
        2,
        4,
        config.canonical_box_size,
        config.canonical_level,
    );
    let want_levels: Vec<usize> = case["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| l.as_u64().expect("level") as usize)
        .collect();
    assert_eq!(assigned, want_levels);
    let out = multi_scale_roi_align(&levels, &rois, &config);
    let upstream = tensor::<4>(&case["upstream"], &device);
    let grads = (out.clone() * upstream).sum().backward();
    check("multi-level roi_align: output", out, &case["output"]);
    for (l, (map, want)) in maps
        .iter()
        .zip(case["grad_maps"].as_array().expect("grad_maps"))
        .enumerate()
    {
        check(
            &format!("multi-level roi_align: grad level {l}"),
            map.grad(&grads).expect("map grad"),
            want,
        );
    }
}
