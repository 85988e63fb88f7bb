use super::shapes::ShapeClass;
use super::*;
use std::collections::BTreeMap;

fn tiny(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        image_size: 64,
        train_images: 3,
        val_images: 2,
        ..Default::default()
    }
}

fn tiny_video(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        image_size: 64,
        train_images: 2,
        val_images: 1,
        video: true,
        frames_per_video: 8,
        ..Default::default()
    }
}

/// Every file under `root`, by relative path.
fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("test dir is readable") {
            let path = entry.expect("test dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, std::fs::read(&path).expect("test file is readable"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write_tree(cfg: &SynthConfig) -> (tempfile::TempDir, BTreeMap<PathBuf, Vec<u8>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_dataset(dir.path(), cfg).expect("writing the tiny dataset");
    let tree = read_tree(dir.path());
    (dir, tree)
}

#[test]
fn class_names_follow_the_label_order() {
    let names: Vec<&str> = ShapeClass::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names, CLASS_NAMES);
    for (i, c) in ShapeClass::ALL.iter().enumerate() {
        assert_eq!(c.label(), i);
    }
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let (_a, first) = write_tree(&tiny(5));
    let (_b, second) = write_tree(&tiny(5));
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &first {
        assert!(
            bytes == &second[path],
            "{} differs between runs",
            path.display()
        );
    }
    // Layout, and no temporaries left behind.
    assert_eq!(first.len(), (3 + 1) + (2 + 1) + 1);
    for p in [
        "train/annotations.json",
        "train/images/000001.png",
        "train/images/000003.png",
        "val/annotations.json",
        "val/images/000002.png",
        "synth.json",
    ] {
        assert!(first.contains_key(Path::new(p)), "{p} is missing");
    }
    let (_c, other) = write_tree(&tiny(6));
    let png = Path::new("train/images/000001.png");
    assert_ne!(first[png], other[png]);
    let json = Path::new("train/annotations.json");
    assert_ne!(first[json], other[json]);
}

#[test]
fn synth_json_reads_back_as_the_config() {
    let cfg = tiny(9);
    let (_d, tree) = write_tree(&cfg);
    let back: SynthConfig =
        serde_json::from_slice(&tree[Path::new("synth.json")]).expect("synth.json parses");
    assert_eq!(back, cfg);
}

#[test]
fn splits_are_disjoint() {
    let cfg = tiny(1);
    let train = generate_image(&cfg, Split::Train, 0);
    let val = generate_image(&cfg, Split::Val, 0);
    assert_ne!(train.rgb.as_raw(), val.rgb.as_raw());
    // Order independence: the same item comes out the same whatever came before.
    let again = generate_image(&cfg, Split::Train, 0);
    assert_eq!(train.rgb.as_raw(), again.rgb.as_raw());
    assert_eq!(train.objects, again.objects);
}

#[test]
fn masks_are_exact_disjoint_and_match_the_json() {
    let cfg = tiny(2);
    let (dir, _tree) = write_tree(&cfg);
    let json = std::fs::read(dir.path().join("train/annotations.json")).expect("annotations.json");
    let ds: hotcoco::types::Dataset = serde_json::from_slice(&json).expect("COCO JSON parses");
    assert_eq!(ds.images.len(), 3);
    assert_eq!(ds.categories.len(), CLASS_NAMES.len());
    let (h, w) = (64usize, 64usize);
    let mut ann = ds.annotations.iter();
    for (i, image) in ds.images.iter().enumerate() {
        assert_eq!(image.id, i as u64 + 1);
        assert_eq!(image.file_name, format!("{:06}.png", i + 1));
        let generated = generate_image(&cfg, Split::Train, i);
        let mut union = vec![0u8; h * w];
        for obj in &generated.objects {
            assert_eq!(obj.mask.len(), h * w);
            let a = ann.next().expect("one annotation per object");
            assert_eq!(a.image_id, image.id);
            assert_eq!(a.category_id, obj.label as u64 + 1);
            assert!(!a.iscrowd);
            let Some(hotcoco::types::Segmentation::CompressedRle { size, counts }) =
                &a.segmentation
            else {
                panic!("annotation {} has no compressed RLE", a.id);
            };
            assert_eq!(*size, [h as u32, w as u32]);
            let rle = hotcoco::mask::rle_from_string(counts, size[0], size[1]).expect("valid RLE");
            assert_eq!(hotcoco::mask::decode(&rle), obj.mask, "RLE round trip");
            // Pairwise disjoint.
            for (u, &m) in union.iter_mut().zip(&obj.mask) {
                assert!(m <= 1);
                assert!(*u + m <= 1, "masks of image {} overlap", image.id);
                *u += m;
            }
            // bbox and area from the mask itself (column-major).
            let pixels: Vec<(usize, usize)> = (0..h * w)
                .filter(|&k| obj.mask[k] != 0)
                .map(|k| (k / h, k % h))
                .collect();
            assert_eq!(a.area, Some(pixels.len() as f64));
            assert!(pixels.len() >= cfg.min_visible_pixels);
            let x0 = pixels.iter().map(|p| p.0).min().expect("non-empty");
            let x1 = pixels.iter().map(|p| p.0).max().expect("non-empty");
            let y0 = pixels.iter().map(|p| p.1).min().expect("non-empty");
            let y1 = pixels.iter().map(|p| p.1).max().expect("non-empty");
            assert_eq!(
                a.bbox,
                Some([
                    x0 as f64,
                    y0 as f64,
                    (x1 - x0 + 1) as f64,
                    (y1 - y0 + 1) as f64
                ])
            );
        }
    }
    assert!(ann.next().is_none(), "no extra annotations");
    let ids: Vec<u64> = ds.annotations.iter().map(|a| a.id).collect();
    assert_eq!(ids, (1..=ds.annotations.len() as u64).collect::<Vec<_>>());
}

#[test]
fn classes_and_sizes_are_spread_as_designed() {
    let cfg = SynthConfig::default();
    let mut per_class = [0usize; 8];
    let (mut small, mut medium, mut large, mut tiny) = (0, 0, 0, 0);
    for i in 0..50 {
        for o in generate_image(&cfg, Split::Train, i).objects {
            per_class[o.label] += 1;
            let area = o.mask.iter().filter(|&&m| m != 0).count();
            match area {
                a if a < 32 * 32 => small += 1,
                a if a < 96 * 96 => medium += 1,
                _ => large += 1,
            }
            if area < 16 * 16 {
                tiny += 1;
            }
        }
    }
    assert!(
        per_class.iter().all(|&n| n > 0),
        "every class occurs: {per_class:?}"
    );
    let total = small + medium + large;
    assert!(
        small * 2 > total,
        "small objects are the majority: {small}/{total}"
    );
    assert!(tiny * 3 > total, "many are tiny (< 16²): {tiny}/{total}");
    assert!(medium > 0, "some medium objects");
}

#[test]
fn invalid_configs_are_rejected_with_the_field() {
    let cfg = SynthConfig {
        min_objects: 5,
        max_objects: 2,
        ..Default::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let err = write_dataset(dir.path(), &cfg).expect_err("min > max");
    assert!(err.to_string().contains("min_objects"), "{err}");
    let cfg = SynthConfig {
        image_size: 4,
        ..Default::default()
    };
    assert!(cfg.validate().is_err());
}

#[test]
fn object_scale_outside_its_range_is_rejected_with_the_field() {
    for bad in [0.0, 0.2, 4.5, f32::NAN, f32::INFINITY] {
        let cfg = SynthConfig {
            object_scale: bad,
            ..Default::default()
        };
        let err = cfg.validate().expect_err("object_scale out of range");
        assert!(err.to_string().contains("object_scale"), "{bad}: {err}");
    }
}

#[test]
fn a_larger_object_scale_gives_larger_objects_with_exact_masks() {
    // The same scenes (seed, split, index) at scale 1 and 2.5: objects grow by about
    // 2.5² in area, less what occlusion and the frame take away.
    let mean_area = |object_scale: f32| {
        let cfg = SynthConfig {
            object_scale,
            ..tiny(5)
        };
        let (mut sum, mut n) = (0usize, 0usize);
        for i in 0..12 {
            for o in generate_image(&cfg, Split::Train, i).objects {
                sum += o.mask.iter().map(|&m| usize::from(m)).sum::<usize>();
                n += 1;
            }
        }
        assert!(n > 0, "scale {object_scale}: no objects");
        sum as f64 / n as f64
    };
    let (a1, a25) = (mean_area(1.0), mean_area(2.5));
    assert!(
        a25 > 2.5 * a1,
        "mean area {a1:.0} at scale 1, {a25:.0} at 2.5"
    );
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").expect("write blocker");
    let err = write_dataset(&blocker.join("out"), &tiny(0)).expect_err("parent is a file");
    assert!(
        err.to_string().contains(&*blocker.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn video_tracks_are_stable_and_some_enter_or_leave() {
    let cfg = tiny_video(4);
    let mut enters_or_leaves = false;
    let mut labels: BTreeMap<u64, usize> = BTreeMap::new();
    for v in 0..2 {
        let video = generate_video(&cfg, Split::Train, v);
        assert_eq!(video.frames.len(), 8);
        let mut seen: BTreeMap<u64, Vec<bool>> = BTreeMap::new();
        labels.clear();
        for (f, frame) in video.frames.iter().enumerate() {
            let mut union = vec![0u8; 64 * 64];
            for o in &frame.objects {
                let id = o.track_id.expect("video objects have track ids");
                // A track keeps its class.
                assert_eq!(*labels.entry(id).or_insert(o.label), o.label);
                seen.entry(id).or_insert_with(|| vec![false; 8])[f] = true;
                for (u, &m) in union.iter_mut().zip(&o.mask) {
                    assert!(*u + m <= 1, "masks overlap in frame {f}");
                    *u += m;
                }
            }
        }
        enters_or_leaves |= seen.values().any(|frames| frames.iter().any(|&s| !s));
    }
    assert!(enters_or_leaves, "some track is missing from some frame");
    let again = generate_video(&cfg, Split::Train, 1);
    let once = generate_video(&cfg, Split::Train, 1);
    assert_eq!(again.frames[3].rgb.as_raw(), once.frames[3].rgb.as_raw());
}

#[test]
fn video_dataset_is_deterministic_and_laid_out() {
    let (_a, first) = write_tree(&tiny_video(8));
    let (_b, second) = write_tree(&tiny_video(8));
    assert!(first == second, "same seed, same bytes");
    for p in [
        "train/instances.json",
        "train/JPEGImages/vid0001/00000.png",
        "train/JPEGImages/vid0002/00007.png",
        "val/instances.json",
        "val/JPEGImages/vid0001/00007.png",
        "synth.json",
    ] {
        assert!(first.contains_key(Path::new(p)), "{p} is missing");
    }
    let ds: kdet_structures::ytvis::YtvisDataset =
        serde_json::from_slice(&first[Path::new("train/instances.json")]).expect("YTVIS parses");
    assert_eq!(ds.videos.len(), 2);
    assert_eq!(ds.videos[0].file_names[0], "vid0001/00000.png");
    for a in &ds.annotations {
        assert_eq!(a.segmentations.len(), 8);
        assert_eq!(a.bboxes.len(), 8);
        assert!(
            a.segmentations.iter().any(Option::is_some),
            "every track is seen once"
        );
    }
}
