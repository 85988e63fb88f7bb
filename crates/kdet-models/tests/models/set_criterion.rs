//! The set criterion's terms and their gradients against transformers' ports of DETR's
//! `ImageLoss` and Mask2Former's mask losses (`tests/fixtures/ops/set_criterion.json`, made
//! by `scripts/fixtures/set_criterion.py`).

use burn::tensor::{Device, Tensor, TensorData};
use kdet_models::Assignment;
use kdet_models::query::loss::{box_losses, class_loss, mask_losses};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ops/set_criterion.json"
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

/// A tracked leaf on the autodiff device.
fn leaf<const D: usize>(v: &Value, shape: [usize; D]) -> Tensor<D> {
    Tensor::<D>::from_data(
        TensorData::new(floats(v), shape),
        &Device::flex().autodiff(),
    )
    .require_grad()
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(err < 1e-5, "{what}: {err}");
}

/// The loss's value and its gradient with respect to `x`.
fn value_and_grad<const D: usize>(loss: Tensor<1>, x: &Tensor<D>) -> (f32, Vec<f32>) {
    let grads = loss.backward();
    let g = x.grad(&grads).expect("a gradient").into_data();
    let value = loss.into_scalar();
    (value, g.try_into_vec::<f32>().expect("floats"))
}

#[test]
fn detr_class_and_box_losses_and_gradients() {
    let f = fixture();
    let (b, q, k) = (
        count(&f, "batch"),
        count(&f, "queries"),
        count(&f, "classes"),
    );
    let matches: Vec<Vec<(usize, usize)>> = f["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .map(|img| {
            img.as_array()
                .expect("pairs")
                .iter()
                .map(|p| {
                    let p = floats(p);
                    (p[0] as usize, p[1] as usize)
                })
                .collect()
        })
        .collect();
    let assignment = Assignment::from_matches(q, &matches);
    let labels: Vec<Vec<usize>> = f["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| floats(l).into_iter().map(|x| x as usize).collect())
        .collect();
    let targets: Vec<Vec<[f32; 4]>> = f["target_boxes"]
        .as_array()
        .expect("boxes")
        .iter()
        .map(|t| {
            floats(t)
                .chunks(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect()
        })
        .collect();
    let num_boxes = f["num_boxes"].as_f64().expect("num_boxes") as f32;
    let eos = f["eos_coef"].as_f64().expect("eos") as f32;

    let logits = leaf::<3>(&f["logits"], [b, q, k + 1]);
    let (ce, g) = value_and_grad(
        class_loss(logits.clone(), &assignment, &labels, eos),
        &logits,
    );
    close(
        &[ce],
        &[f["loss_ce"].as_f64().expect("ce") as f32],
        "loss_ce",
    );
    close(&g, &floats(&f["grad_ce"]), "grad of loss_ce");

    // One forward per gradient (a backward consumes burn's tape).
    let boxes = leaf::<3>(&f["boxes"], [b, q, 4]);
    let (l1, _) = box_losses(boxes.clone(), &assignment, &targets, num_boxes);
    let (l1, g) = value_and_grad(l1, &boxes);
    close(
        &[l1],
        &[f["loss_bbox"].as_f64().expect("l1") as f32],
        "loss_bbox",
    );
    close(&g, &floats(&f["grad_bbox"]), "grad of loss_bbox");
    let boxes = leaf::<3>(&f["boxes"], [b, q, 4]);
    let (_, giou) = box_losses(boxes.clone(), &assignment, &targets, num_boxes);
    let (giou, g) = value_and_grad(giou, &boxes);
    close(
        &[giou],
        &[f["loss_giou"].as_f64().expect("giou") as f32],
        "loss_giou",
    );
    close(&g, &floats(&f["grad_giou"]), "grad of loss_giou");
}

#[test]
fn mask2former_mask_losses_and_gradients() {
    let f = &fixture()["masks"];
    let (m, p) = (count(f, "m"), count(f, "points"));
    let num = f["num_masks"].as_f64().expect("num_masks") as f32;
    let targets = Tensor::<2>::from_data(
        TensorData::new(floats(&f["targets"]), [m, p]),
        &Device::flex().autodiff(),
    );
    let logits = leaf::<2>(&f["logits"], [m, p]);
    let (ce, _) = mask_losses(logits.clone(), targets.clone(), num);
    let (ce, g) = value_and_grad(ce, &logits);
    close(
        &[ce],
        &[f["loss_ce"].as_f64().expect("ce") as f32],
        "mask loss_ce",
    );
    close(&g, &floats(&f["grad_ce"]), "grad of mask loss_ce");
    let logits = leaf::<2>(&f["logits"], [m, p]);
    let (_, dice) = mask_losses(logits.clone(), targets, num);
    let (dice, g) = value_and_grad(dice, &logits);
    close(
        &[dice],
        &[f["loss_dice"].as_f64().expect("dice") as f32],
        "loss_dice",
    );
    close(&g, &floats(&f["grad_dice"]), "grad of loss_dice");
}
