//! synth → COCO JSON + PNG → reader → the generator's own instances, exactly.

use hotcoco::mask::{encode, to_bbox};
use kdet_data::synth::{Split, SynthConfig, generate_image, write_dataset};
use kdet_data::{CocoDataset, CocoOptions};
use kdet_structures::{Boxes, ImageSize, Instances, Mask, Masks, Xywh};

fn tiny_config(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        image_size: 64,
        train_images: 6,
        val_images: 3,
        ..SynthConfig::default()
    }
}

#[test]
fn synth_written_and_read_back_gives_identical_instances_and_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(3);
    write_dataset(dir.path(), &cfg).unwrap();
    for (split, n) in [
        (Split::Train, cfg.train_images),
        (Split::Val, cfg.val_images),
    ] {
        let root = dir.path().join(split.name());
        let ds = CocoDataset::load(
            &root.join("annotations.json"),
            &root.join("images"),
            &CocoOptions::default(),
        )
        .unwrap();
        assert_eq!(ds.len(), n);
        for index in 0..n {
            let generated = generate_image(&cfg, split, index);
            let s = cfg.image_size;
            let size = ImageSize::new(s, s);
            let rles: Vec<_> = generated
                .objects
                .iter()
                .map(|o| encode(&o.mask, s, s).unwrap())
                .collect();
            let boxes =
                Boxes::<Xywh>::new(rles.iter().map(|r| to_bbox(r).map(|v| v as f32)).collect())
                    .to_xyxy();
            let expected = Instances::new(
                size,
                boxes,
                generated.objects.iter().map(|o| o.label).collect(),
            )
            .unwrap()
            .with_crowd(vec![false; rles.len()])
            .unwrap()
            .with_masks(Masks::new(s, s, rles.into_iter().map(Mask::Rle).collect()).unwrap())
            .unwrap();
            let record = &ds.records()[index];
            assert_eq!(record.instances, expected, "{} image {index}", split.name());
            assert_eq!(
                ds.load_image(index).unwrap(),
                generated.rgb,
                "{} image {index} pixels",
                split.name()
            );
        }
    }
}

#[test]
fn results_file_maps_labels_back_and_loads_in_hotcoco() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(5);
    write_dataset(dir.path(), &cfg).unwrap();
    let root = dir.path().join("val");
    let ds = CocoDataset::load(
        &root.join("annotations.json"),
        &root.join("images"),
        &CocoOptions::default(),
    )
    .unwrap();
    // Predict the ground truth itself, with scores and masks.
    let preds: Vec<(u64, Instances)> = ds
        .records()
        .iter()
        .map(|r| {
            let n = r.instances.len();
            (
                r.image_id,
                r.instances.clone().with_scores(vec![0.9; n]).unwrap(),
            )
        })
        .collect();
    let out = dir.path().join("results.json");
    let n = kdet_data::results::write_coco_results(&out, &preds, ds.labels()).unwrap();
    assert_eq!(n, ds.report().annotations);
    let loaded = ds.coco().load_res(&out).unwrap();
    assert_eq!(loaded.dataset.annotations.len(), n);
    let first = &loaded.dataset.annotations[0];
    let gt = ds
        .coco()
        .get_ann(ds.records()[0].annotation_ids[0])
        .unwrap();
    assert_eq!(
        (first.image_id, first.category_id),
        (gt.image_id, gt.category_id),
        "label 0-based -> category id"
    );
    assert!(first.segmentation.is_some());
}
