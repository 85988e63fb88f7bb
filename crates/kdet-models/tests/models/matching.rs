//! Hungarian matching against scipy and the PyTorch ports of DETR's and Mask2Former's
//! matchers (`tests/fixtures/ops/matching.json`, made by `scripts/fixtures/matching.py`).

use burn::tensor::{Device, Tensor, TensorData};
use kdet_models::ops::matching::{
    BoxMatcherConfig, MaskMatcherConfig, class_cost, dice_cost, giou_cost, l1_cost,
    linear_sum_assignment, sigmoid_ce_cost,
};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ops/matching.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture")).expect("JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    floats(v).into_iter().map(|x| x as usize).collect()
}

fn pairs(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .expect("pairs")
        .iter()
        .map(|p| {
            let p = usizes(p);
            (p[0], p[1])
        })
        .collect()
}

fn tensor(v: &Value, rows: usize, cols: usize) -> Tensor<2> {
    let data: Vec<f32> = floats(v).into_iter().map(|x| x as f32).collect();
    Tensor::from_data(TensorData::new(data, [rows, cols]), &Device::flex())
}

/// Max |a − b| / max(1, |b|) between a cost tensor and the reference values.
fn max_err(got: Tensor<2>, want: &Value) -> f64 {
    let got: Vec<f32> = got.into_data().try_into_vec::<f32>().expect("floats");
    let want = floats(want);
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs() / w.abs().max(1.0))
        .fold(0.0, f64::max)
}

#[test]
fn the_solver_returns_scipys_pairs_ties_included() {
    for case in fixture()["lsap"].as_array().expect("cases") {
        let n = |k: &str| case[k].as_u64().expect("a count") as usize;
        let (rows, cols) = (n("rows"), n("cols"));
        let got = linear_sum_assignment(&floats(&case["cost"]), rows, cols).expect("finite");
        assert_eq!(got, pairs(&case["pairs"]), "{rows}x{cols} {}", case["kind"]);
    }
}

#[test]
fn mask_costs_and_matches_equal_mask2formers() {
    let m = MaskMatcherConfig::new();
    for case in fixture()["mask"].as_array().expect("cases") {
        let n = |k: &str| case[k].as_u64().expect("a count") as usize;
        let (q, k, p, g) = (n("queries"), n("classes"), n("points"), n("objects"));
        let logits = tensor(&case["class_logits"], q, k + 1);
        let masks = tensor(&case["mask_logits"], q, p);
        let targets = tensor(&case["targets"], g, p);
        let labels = usizes(&case["labels"]);
        let errs = [
            max_err(class_cost(logits.clone(), &labels), &case["cost_class"]),
            max_err(
                sigmoid_ce_cost(masks.clone(), targets.clone()),
                &case["cost_mask"],
            ),
            max_err(
                dice_cost(masks.clone(), targets.clone()),
                &case["cost_dice"],
            ),
            max_err(
                m.cost(logits.clone(), masks.clone(), targets.clone(), &labels),
                &case["cost"],
            ),
        ];
        assert!(errs.iter().all(|e| *e < 1e-5), "{q}x{g}: {errs:?}");
        let got = m
            .match_image(logits, masks, targets, &labels)
            .expect("finite");
        assert_eq!(got, pairs(&case["pairs"]), "{q} queries, {g} objects");
    }
}

#[test]
fn box_costs_and_matches_equal_detrs() {
    let m = BoxMatcherConfig::new();
    for case in fixture()["box"].as_array().expect("cases") {
        let q = case["queries"].as_u64().expect("queries") as usize;
        let k = case["classes"].as_u64().expect("classes") as usize;
        for image in case["images"].as_array().expect("images") {
            let g = image["objects"].as_u64().expect("objects") as usize;
            let logits = tensor(&image["class_logits"], q, k + 1);
            let boxes = tensor(&image["boxes"], q, 4);
            let labels = usizes(&image["labels"]);
            let want = pairs(&image["pairs"]);
            if g == 0 {
                let none = Tensor::<2>::zeros([0, 4], &Device::flex());
                let got = m.match_image(logits, boxes, none, &labels).expect("finite");
                assert!(got.is_empty() && want.is_empty());
                continue;
            }
            let targets = tensor(&image["target_boxes"], g, 4);
            let errs = [
                max_err(class_cost(logits.clone(), &labels), &image["cost_class"]),
                max_err(l1_cost(boxes.clone(), targets.clone()), &image["cost_bbox"]),
                max_err(
                    giou_cost(boxes.clone(), targets.clone()),
                    &image["cost_giou"],
                ),
                max_err(
                    m.cost(logits.clone(), boxes.clone(), targets.clone(), &labels),
                    &image["cost"],
                ),
            ];
            assert!(errs.iter().all(|e| *e < 1e-5), "{q}x{g}: {errs:?}");
            let got = m
                .match_image(logits, boxes, targets, &labels)
                .expect("finite");
            assert_eq!(got, want, "{q} queries, {g} objects");
        }
    }
}
