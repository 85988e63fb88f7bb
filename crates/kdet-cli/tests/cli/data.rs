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
