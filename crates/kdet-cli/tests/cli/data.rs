//! `kdet data …` end to end.

use std::path::Path;

use crate::{kdet, test_data};

fn ok(args: &[&str]) -> String {
    let out = kdet(args);
    assert!(
        out.status.success(),
        "kdet {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` with its bytes, sorted by relative path.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("the folder lists") {
            let p = e.expect("a folder entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(dir)
                    .expect("under the folder")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&p).expect("the file reads")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn synth_is_byte_identical_for_a_seed_and_stats_reads_it() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let args = |d: &Path, seed: &str| {
        vec![
            "data",
            "synth",
            "--out",
            d.to_str().unwrap(),
            "--images",
            "12",
            "--size",
            "64",
            "--seed",
            seed,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let printed = run(args(a.path(), "7"));
    assert!(
        printed.contains("train") && printed.contains("val"),
        "{printed}"
    );
    run(args(b.path(), "7"));
    run(args(c.path(), "8"));
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    assert!(ta.iter().any(|(p, _)| p.ends_with("annotations.json")));
    assert_eq!(
        ta.len(),
        12 + 3 + 3,
        "12 train + 3 val PNGs, 2 JSON, synth.json"
    );
    assert!(ta == tb, "same seed, same bytes");
    assert!(ta != tc, "another seed, other data");

    let stats = ok(&["data", "stats", a.path().to_str().unwrap()]);
    assert!(
        stats.contains("split train") && stats.contains("split val"),
        "{stats}"
    );
    assert!(stats.contains("images       12"), "{stats}");
    assert!(
        stats.contains("circle") && stats.contains("small"),
        "{stats}"
    );
}

#[test]
fn stats_reads_real_coco_json_and_video_splits() {
    let json = test_data().join("coco_tiny_val2017/annotations/instances_val2017.json");
    let out = ok(&["data", "stats", json.to_str().unwrap()]);
    assert!(out.contains("images       80"), "{out}");
    assert!(out.contains("crowd 11"), "{out}");

    let v = tempfile::tempdir().unwrap();
    ok(&[
        "data",
        "synth",
        "--out",
        v.path().to_str().unwrap(),
        "--images",
        "2",
        "--size",
        "48",
        "--video",
        "--frames",
        "4",
    ]);
    let out = ok(&["data", "stats", v.path().to_str().unwrap()]);
    assert!(out.contains("videos") && out.contains("tracks"), "{out}");
}

#[test]
fn user_errors_exit_non_zero_with_a_message() {
    let out = kdet(&["data", "stats", "/nonexistent/kdet-data"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/kdet-data"), "{err}");

    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("annotations.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let out = kdet(&["data", "stats", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("annotations.json") && err.contains("malformed JSON"),
        "{err}"
    );

    let out = kdet(&[
        "data",
        "synth",
        "--out",
        d.path().join("s").to_str().unwrap(),
        "--size",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("image_size"));
}

/// `kdet data synth --box-noise` writes noisy training files beside the clean one (the
/// loader reads them: `kdet data stats` on the file), noisier at a larger gamma;
/// `kdet data noise` does the same for any COCO file, the same bytes for the same seed,
/// and refuses to overwrite its input or to noise a noised file.
#[test]
fn noisy_boxes_for_synth_and_any_coco_file() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("synth");
    let printed = ok(&[
        "data",
        "synth",
        "--out",
        root.to_str().unwrap(),
        "--images",
        "12",
        "--size",
        "64",
        "--box-noise",
        "0.1",
        "--box-noise",
        "0.4",
    ]);
    let iou = |gamma: &str| -> f64 {
        let line = printed
            .lines()
            .find(|l| l.contains(&format!("(gamma {gamma})")))
            .unwrap_or_else(|| panic!("no gamma {gamma} line in\n{printed}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(iou("0.1") > iou("0.4") && iou("0.4") > 0.0, "{printed}");
    let noisy = root.join("train/annotations.noise-0.1.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&noisy).unwrap()).unwrap();
    let first = &json["annotations"][0];
    assert!(
        first["_bbox"].is_array() && first["bbox"] != first["_bbox"],
        "{first}"
    );
    let stats = ok(&["data", "stats", noisy.to_str().unwrap()]);
    assert!(stats.contains("images       12"), "{stats}");

    // Any COCO file: the same seed gives the same bytes as synth's own noising.
    let clean = root.join("train/annotations.json");
    let copy = d.path().join("copy.json");
    let out = ok(&[
        "data",
        "noise",
        clean.to_str().unwrap(),
        "--out",
        copy.to_str().unwrap(),
        "--gamma",
        "0.1",
    ]);
    assert!(out.contains("mean IoU with the clean boxes"), "{out}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&noisy).unwrap()
    );
    for (input, out, says) in [
        (&clean, &clean, "is the input file"),
        (&noisy, &copy, "already has a clean `_bbox`"),
    ] {
        let res = crate::kdet(&[
            "data",
            "noise",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--gamma",
            "0.1",
        ]);
        assert!(!res.status.success());
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains(says), "{err}");
    }
}
