//! The loader: deterministic order and augmentation, resumable mid-epoch, errors surface.

use std::sync::Arc;

use burn::tensor::Device;
use kdet_data::synth::{SynthConfig, write_dataset};
use kdet_data::{
    CocoDataset, CocoOptions, DetectionBatcher, Loader, LoaderConfig, Normalize, Pipeline,
    TransformConfig,
};

fn dataset(dir: &std::path::Path) -> Arc<CocoDataset> {
    let cfg = SynthConfig {
        seed: 1,
        image_size: 32,
        train_images: 7,
        val_images: 1,
        ..SynthConfig::default()
    };
    write_dataset(dir, &cfg).expect("the synthetic dataset is written");
    let root = dir.join("train");
    Arc::new(
        CocoDataset::load(
            &root.join("annotations.json"),
            &root.join("images"),
            &CocoOptions::default(),
        )
        .expect("the synthetic dataset loads"),
    )
}

fn loader(ds: Arc<CocoDataset>, drop_last: bool) -> Loader<CocoDataset> {
    let pipeline = Pipeline::new(vec![
        TransformConfig::HorizontalFlip { prob: 0.5 },
        TransformConfig::ColorJitter {
            brightness: 0.3,
            contrast: 0.3,
            saturation: 0.3,
        },
    ]);
    let batcher = DetectionBatcher {
        normalize: Normalize::default(),
        size_divisor: 32,
    };
    let config = LoaderConfig {
        batch_size: 2,
        shuffle: true,
        seed: 42,
        num_workers: 2,
        drop_last,
        prefetch: 2,
    };
    Loader::new(ds, pipeline, batcher, config).expect("a valid loader")
}

fn epoch(l: &Loader<CocoDataset>, e: u64, start: usize) -> Vec<(Vec<u64>, Vec<f32>)> {
    let device = Device::flex();
    l.iter(e, start, &device)
        .map(|b| {
            let b = b.expect("a batch");
            (
                b.image_ids,
                b.images
                    .images()
                    .to_data()
                    .try_to_vec()
                    .expect("f32 pixels"),
            )
        })
        .collect()
}

#[test]
fn batches_are_deterministic_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let l = loader(ds.clone(), true);
    assert_eq!(l.num_batches(), 3);
    let a = epoch(&l, 0, 0);
    let b = epoch(&l, 0, 0);
    assert_eq!(a.len(), 3);
    assert_eq!(a, b, "same seed and epoch give identical batches");
    assert_eq!(
        epoch(&l, 0, 1),
        a[1..].to_vec(),
        "resuming at batch 1 gives the rest of the epoch"
    );
    let other = epoch(&l, 1, 0);
    assert_ne!(other, a, "another epoch reshuffles / re-augments");
    let mut ids: Vec<u64> = a.iter().flat_map(|(i, _)| i.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "drop_last: 3 full batches of distinct images");
    let keep = loader(ds, false);
    assert_eq!(keep.num_batches(), 4);
}

#[test]
fn a_missing_image_stops_the_epoch_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let victim = ds.image_path(3);
    std::fs::remove_file(&victim).unwrap();
    let l = loader(ds, true);
    let device = Device::flex();
    let results: Vec<_> = l.iter(0, 0, &device).collect();
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("the missing file is reported");
    assert!(
        err.to_string()
            .contains(&victim.file_name().unwrap().to_string_lossy().to_string()),
        "{err}"
    );
    assert!(
        results.last().unwrap().is_err(),
        "nothing is produced after the error"
    );
}
