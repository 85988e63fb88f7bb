//! The built-in dataset's content, pinned: every benchmark table in the repository
//! (`docs/benchmarks.md`, the README's demo table, the shipped teacher) was measured on the
//! data `kdet data synth` and the demo write with the default settings and seed 0. A
//! platform whose generator draws even one pixel differently (another libm's `sin`, a
//! changed dependency) trains on other data, so its numbers differ; this test makes that
//! loud instead of silent.
//!
//! What is hashed: the whole default dataset (`SynthConfig::default()`: seed 0, 1000
//! training and 250 validation images of 128x128, the settings of `kdet data synth`, of
//! the demo and of every `configs/*synth*.toml`), written by [`write_dataset`] (the code
//! path behind them) into a temporary folder and read back. Per image, in file order:
//! - the pixels: FNV-1a 64 of the decoded RGB8 buffer (not the PNG bytes, which another
//!   encoder version may lay out differently without changing an image);
//! - the annotations: FNV-1a 64 of the image record (`id file_name width height`) and, in
//!   file order, each of its annotations as `id category_id iscrowd bbox area size counts`
//!   (numbers in Rust's shortest round-trip form, `counts` the compressed RLE string).
//!
//! The JSON's `info` (it holds the crate version) and the categories (checked against
//! `CLASS_NAMES` separately) are not hashed. [`DIGEST`] is FNV-1a 64 over every image's
//! `split file_name pixels annotations` line, train then val; the per-image hashes are in
//! `tests/fixtures/synth_default_seed0.tsv`, which only serves to name the first differing
//! image when the digest differs.
//!
//! Why the whole set rather than a prefix: writing and reading it back took 11-19 s in the
//! test profile on the reference 2-core machine while other jobs loaded it (load average
//! 6-7; about 90% of it is generation), under the 20 s we allow. A prefix would be a fair
//! sample (image `i` depends only on `(seed, split, i)`, not on how many images are
//! written: `write_dataset` alone reads the counts), but would miss a difference further on.
//!
//! How the values were derived: on the reference platform (x86-64 Linux, rustc 1.95, the
//! committed `Cargo.lock`), `KDET_WRITE_SYNTH_HASHES=1 cargo test -p kdet-data --test data
//! synth_hash` wrote the fixture and printed the digest, copied into [`DIGEST`]. Do the same
//! only after an intended change of the generator, and rerun the benchmarks with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kdet_data::synth::{CLASS_NAMES, Split, SynthConfig, write_dataset};
use serde_json::Value;

use crate::common::repo_root;

/// FNV-1a 64 of the per-image lines (see the module docs), on the reference platform.
const DIGEST: u64 = 0xc687_8713_6564_50f4;

/// Set to write the fixture and print the digest instead of checking them.
const WRITE_ENV: &str = "KDET_WRITE_SYNTH_HASHES";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

fn fixture_path() -> PathBuf {
    repo_root().join("tests/fixtures/synth_default_seed0.tsv")
}

/// One image's line: `split file_name pixels annotations` (hashes as 16 hex digits).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageHash {
    split: String,
    file_name: String,
    pixels: u64,
    annotations: u64,
}

impl ImageHash {
    fn line(&self) -> String {
        format!(
            "{}\t{}\t{:016x}\t{:016x}",
            self.split, self.file_name, self.pixels, self.annotations
        )
    }

    fn parse(line: &str) -> Self {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 4, "fixture line {line:?}: 4 tab-separated fields");
        let hex = |s: &str| u64::from_str_radix(s, 16).expect("a fixture hash is 16 hex digits");
        ImageHash {
            split: f[0].to_string(),
            file_name: f[1].to_string(),
            pixels: hex(f[2]),
            annotations: hex(f[3]),
        }
    }
}

fn digest(hashes: &[ImageHash]) -> u64 {
    let mut text = String::new();
    for h in hashes {
        text.push_str(&h.line());
        text.push('\n');
    }
    fnv1a(text.as_bytes())
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::Number(n) => format!("{}", n.as_f64().expect("a JSON number")),
        other => panic!("expected a number, got {other}"),
    }
}

/// The per-image hashes of one written split, in file order.
fn hash_split(root: &Path, split: Split) -> Vec<ImageHash> {
    let path = root.join("annotations.json");
    let json: Value = serde_json::from_slice(&std::fs::read(&path).expect("annotations.json"))
        .expect("the written annotations are JSON");
    let categories: Vec<(u64, &str)> = json["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .map(|c| {
            (
                c["id"].as_u64().expect("id"),
                c["name"].as_str().expect("name"),
            )
        })
        .collect();
    let want: Vec<(u64, &str)> = (1..).zip(CLASS_NAMES.iter().copied()).collect();
    assert_eq!(categories, want, "{}: categories", path.display());

    let mut by_image: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for a in json["annotations"].as_array().expect("annotations") {
        by_image
            .entry(a["image_id"].as_u64().expect("image_id"))
            .or_default()
            .push(a);
    }
    let mut out = Vec::new();
    for im in json["images"].as_array().expect("images") {
        let id = im["id"].as_u64().expect("id");
        let file_name = im["file_name"].as_str().expect("file_name");
        let rgb = image::open(root.join("images").join(file_name))
            .expect("a written image decodes")
            .to_rgb8();
        let mut text = format!(
            "{id} {file_name} {} {}\n",
            num(&im["width"]),
            num(&im["height"])
        );
        for a in by_image.get(&id).into_iter().flatten() {
            let seg = &a["segmentation"];
            let list = |v: &Value| -> Vec<String> {
                v.as_array().expect("a list").iter().map(num).collect()
            };
            writeln!(
                text,
                "{} {} {} {:?} {} {:?} {}",
                num(&a["id"]),
                num(&a["category_id"]),
                a["iscrowd"],
                list(&a["bbox"]),
                num(&a["area"]),
                list(&seg["size"]),
                seg["counts"].as_str().expect("compressed RLE counts"),
            )
            .expect("writing to a String");
        }
        out.push(ImageHash {
            split: split.name().to_string(),
            file_name: file_name.to_string(),
            pixels: fnv1a(rgb.as_raw()),
            annotations: fnv1a(text.as_bytes()),
        });
    }
    out
}

#[test]
fn default_synth_dataset_matches_the_reference_platform() {
    let cfg = SynthConfig::default();
    assert_eq!(
        (cfg.seed, cfg.train_images, cfg.val_images, cfg.image_size),
        (0, 1000, 250, 128),
        "the default settings changed: the pinned hashes are for seed 0, 1000 + 250 images of 128 px"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    write_dataset(dir.path(), &cfg).expect("writing the default synthetic dataset");
    let mut got = Vec::new();
    for split in [Split::Train, Split::Val] {
        got.extend(hash_split(&dir.path().join(split.name()), split));
    }
    assert_eq!(got.len(), 1250);
    let got_digest = digest(&got);

    if std::env::var_os(WRITE_ENV).is_some() {
        let mut text = String::from(
            "# Per-image hashes of the default synthetic dataset (seed 0), written by\n\
             # crates/kdet-data/tests/data/synth_hash.rs: split, file, FNV-1a 64 of the RGB8\n\
             # pixels, FNV-1a 64 of the image's annotation records.\n",
        );
        for h in &got {
            text.push_str(&h.line());
            text.push('\n');
        }
        std::fs::write(fixture_path(), text).expect("writing the fixture");
        panic!(
            "{WRITE_ENV} is set: wrote {}; now set DIGEST = 0x{got_digest:016x} in synth_hash.rs and unset {WRITE_ENV}",
            fixture_path().display()
        );
    }

    let text = std::fs::read_to_string(fixture_path())
        .unwrap_or_else(|e| panic!("{}: {e}", fixture_path().display()));
    let reference: Vec<ImageHash> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(ImageHash::parse)
        .collect();
    assert_eq!(
        digest(&reference),
        DIGEST,
        "{} does not match DIGEST: the fixture and the pinned digest were not updated together",
        fixture_path().display()
    );

    if got_digest != DIGEST {
        let first = got
            .iter()
            .zip(&reference)
            .find(|(g, r)| g != r)
            .map_or_else(
                || format!("{} images, {} in the reference", got.len(), reference.len()),
                |(g, r)| {
                    let what = match (g.pixels != r.pixels, g.annotations != r.annotations) {
                        (true, true) => "pixels and annotations",
                        (true, false) => "pixels",
                        _ => "annotations",
                    };
                    format!(
                        "first differing image: {}/{} ({what})",
                        g.split, g.file_name
                    )
                },
            );
        panic!(
            "the built-in synthetic data (seed 0, default settings) differs from the reference \
             platform's, so every benchmark number will differ from the published ones: \
             digest 0x{got_digest:016x}, reference 0x{DIGEST:016x}; {first}"
        );
    }
}
