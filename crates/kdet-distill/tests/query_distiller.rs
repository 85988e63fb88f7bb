//! The Distiller with query models (Mask2Former-lite): matched-query KD and a feature
//! method on the pixel decoder's outputs train the student and never the teacher; the
//! planner refuses dense-head methods, `inherit` and matched-query KD on the wrong
//! families with errors naming the entry.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use kdet_distill::distiller::Distiller;

use kdet_models::backbone::{BackboneConfig, SmallResNetConfig};
use kdet_models::heads::gfl::GflHeadConfig;
use kdet_models::heads::inference::TestConfig;
use kdet_models::neck::FpnConfig;
use kdet_models::query::{Mask2FormerConfig, Mask2FormerCriterionConfig};
use kdet_models::{DetectorConfig, HeadConfig, Model, ModelConfig};
use kdet_structures::{Boxes, ImageBatch, ImageSize, Instances, Mask, Masks};

mod common;
use common::{assert_logged, crc, recipe};

const SIZE: u32 = 64;

/// A tiny Mask2Former of `width` (pixel decoder and decoder), 6 queries, 3 classes.
fn mask2former(width: usize) -> ModelConfig {
    let backbone =
        SmallResNetConfig::new(8, [8, 8, 16, 16], [1, 1, 1, 1]).with_out_indices(vec![0, 1, 2, 3]);
    let mut config = Mask2FormerConfig::lite_128(3);
    config.backbone = BackboneConfig::SmallResNet(backbone);
    let config = config
        .with_conv_dim(width)
        .with_mask_dim(width)
        .with_hidden_dim(width)
        .with_norm_groups(4)
        .with_n_heads(2)
        .with_dim_feedforward(2 * width)
        .with_num_queries(6)
        .with_criterion(Mask2FormerCriterionConfig::new().with_num_points(64));
    config.validate().expect("the test config is valid");
    ModelConfig::Mask2Former(config)
}

/// A rectangle's box and polygon mask.
fn rect(x0: f64, y0: f64, x1: f64, y1: f64) -> ([f32; 4], Mask) {
    (
        [x0 as f32, y0 as f32, x1 as f32, y1 as f32],
        Mask::Polygons(vec![vec![x0, y0, x1, y0, x1, y1, x0, y1]]),
    )
}

/// Two 64x64 images with 2 and 1 rectangular objects and their masks.
fn batch(device: &Device) -> (ImageBatch, Vec<Instances>) {
    let images = Tensor::<4>::random(
        [2, 3, SIZE as usize, SIZE as usize],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let size = ImageSize::new(SIZE, SIZE);
    let batch = ImageBatch::new(images, vec![size; 2], vec![size; 2]).expect("batch");
    let image = |objects: Vec<(([f32; 4], Mask), usize)>| {
        let (geometry, classes): (Vec<_>, Vec<_>) = objects.into_iter().unzip();
        let (boxes, masks): (Vec<_>, Vec<_>) = geometry.into_iter().unzip();
        Instances::new(size, Boxes::new(boxes), classes)
            .expect("targets")
            .with_masks(Masks::new(SIZE, SIZE, masks).expect("masks"))
            .expect("masks fit")
    };
    let targets = vec![
        image(vec![
            (rect(4.0, 6.0, 30.0, 40.0), 0),
            (rect(36.0, 30.0, 60.0, 62.0), 2),
        ]),
        image(vec![(rect(10.0, 8.0, 40.0, 28.0), 1)]),
    ];
    (batch, targets)
}

fn size() -> ImageSize {
    ImageSize::new(SIZE, SIZE)
}

const QUERY_RECIPE: &str = r#"
[[losses]]
loss = { type = "matched_query_kd", class_weight = 2.0, mask_weight = 5.0, dice_weight = 5.0, num_points = 64 }
[[losses]]
loss = { type = "pkd" }
student = "neck"
connector = "conv1x1"
"#;

#[test]
fn matched_query_kd_and_pkd_train_a_mask2former_student_and_never_its_teacher() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    device.seed(5);
    let teacher = mask2former(16).init(&plain);
    let student = mask2former(8).init(&device);
    let teacher_before = crc(&teacher);
    let mut distiller =
        Distiller::new(student, teacher, &recipe(QUERY_RECIPE), size()).expect("valid recipe");
    let student_before = crc(&distiller.student);
    let connectors_before = crc(&distiller.entries);
    let mut optim = AdamWConfig::new().init();
    let (images, targets) = batch(&device);
    let mut logged = Vec::new();
    for step in 0..2u64 {
        let losses = distiller.step_losses(&images, &targets, step);
        let scalars = losses.scalars();
        for (name, v) in &scalars {
            assert!(v.is_finite(), "step {step}: {name} = {v}");
        }
        logged = scalars.iter().map(|(n, _)| n.clone()).collect();
        let grads = losses.total().expect("losses").backward();
        let grads = GradientsParams::from_grads(grads, &distiller);
        distiller = optim.step(1e-3, distiller, grads);
    }
    assert_logged(
        &logged,
        &[
            "kd.matched_query_kd.cls",
            "kd.matched_query_kd.mask",
            "kd.matched_query_kd.dice",
            "kd.pkd",
            "loss_ce",
            "loss_mask",
            "loss_dice",
        ],
    );
    assert_ne!(
        crc(&distiller.student),
        student_before,
        "the student trained"
    );
    assert_ne!(
        crc(&distiller.entries),
        connectors_before,
        "the PKD connector trained"
    );
    assert_eq!(
        crc(distiller.teacher().unwrap()),
        teacher_before,
        "the teacher's weights are bitwise unchanged"
    );
}

#[test]
fn the_planner_names_what_a_query_model_cannot_do() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let dense = || {
        DetectorConfig::new(
            BackboneConfig::SmallResNet(SmallResNetConfig::new(8, [8, 8, 16, 16], [1, 1, 1, 1])),
            FpnConfig::gfl().with_out_channels(8).with_num_outs(3),
            HeadConfig::Gfl(GflHeadConfig::coco(3)),
            TestConfig::new(),
        )
    };
    let err_of = |student: Model, teacher: Model, text: &str| {
        Distiller::new(student, teacher, &recipe(text), size())
            .expect_err("invalid wiring")
            .to_string()
    };
    let e = err_of(
        mask2former(8).init(&device),
        mask2former(16).init(&plain),
        "[[losses]]\nloss = { type = \"logit_kd\" }\n",
    );
    assert!(
        e.contains("losses[0] (logit_kd)") && e.contains("dense detector's head"),
        "{e}"
    );
    let e = err_of(
        mask2former(8).init(&device),
        mask2former(16).init(&plain),
        "inherit = true\n[[losses]]\nloss = { type = \"matched_query_kd\" }\n",
    );
    assert!(e.contains("inherit") && e.contains("mask2former"), "{e}");
    let e = err_of(
        ModelConfig::Dense(dense()).init(&device),
        mask2former(16).init(&plain),
        "[[losses]]\nloss = { type = \"matched_query_kd\" }\n",
    );
    assert!(
        e.contains("losses[0] (matched_query_kd)") && e.contains("no queries"),
        "{e}"
    );
    let e = err_of(
        mask2former(8).init(&device),
        mask2former(16).init(&plain),
        "[[losses]]\nloss = { type = \"matched_query_kd\", embedding_weight = 1.0 }\n",
    );
    assert!(e.contains("embedding_weight") && e.contains("8"), "{e}");
}
