//! `kdet bench`: the commands run on tiny generated data and report what they measured
//! (consistent numbers, every phase timed); speed itself is never asserted in a test.

use crate::distill::{distill_config, teacher};
use crate::train::{fails, ok, read_json, s, tiny_config};

fn samples(doc: &serde_json::Value, phase: &str) -> Vec<f64> {
    doc["samples_ms"][phase]
        .as_array()
        .unwrap_or_else(|| panic!("samples of {phase} in {doc}"))
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

#[test]
fn bench_train_times_student_teacher_and_distill_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let teacher = teacher(dir.path());
    let config = distill_config(
        dir.path(),
        &teacher,
        "[[distill.losses]]\nloss = { type = \"ld\" }\n",
    );
    let json = dir.path().join("bench.json");
    let out = ok(&[
        "bench",
        "train",
        "--config",
        &s(&config),
        "--iters",
        "3",
        "--warmup",
        "1",
        "--loader-batches",
        "2",
        "--out",
        &s(&json),
    ]);
    assert!(
        out.contains("overhead: distill / (student + teacher) = "),
        "{out}"
    );
    let doc = read_json(&json);
    let mut medians = Vec::new();
    for phase in ["student_step", "teacher_forward", "distill_step"] {
        let v = samples(&doc, phase);
        assert_eq!(v.len(), 3, "{phase}: {doc}");
        assert!(
            v.iter().all(|&t| t > 0.0 && t.is_finite()),
            "{phase}: {v:?}"
        );
        let m = median(v);
        assert_eq!(doc["ms"][phase]["median"].as_f64(), Some(m), "{phase}");
        medians.push(m);
    }
    let overhead = doc["overhead"].as_f64().expect("overhead");
    assert!((overhead - medians[2] / (medians[0] + medians[1])).abs() < 1e-12);
    // The KD terms and the teacher were timed inside every timed distill step.
    assert_eq!(doc["ms"]["distill_kd_terms"]["n"], 3, "{doc}");
    assert_eq!(doc["ms"]["distill_teacher_inside"]["n"], 3, "{doc}");
    assert!(doc["loader_images_per_s"].as_f64().expect("loader rate") > 0.0);
    let params = &doc["parameters"];
    assert!(params["teacher"].as_u64() > Some(0) && params["student"].as_u64() > Some(0));

    // A plain training experiment has nothing to distil: refused, naming the file.
    let plain = tiny_config(dir.path());
    let err = fails(&["bench", "train", "--config", &s(&plain)]);
    assert!(
        err.contains("needs a distillation experiment") && err.contains("tiny.toml"),
        "{err}"
    );
}

#[test]
fn bench_infer_times_forward_and_post_processing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let json = dir.path().join("infer.json");
    let out = ok(&[
        "bench",
        "infer",
        "--config",
        &s(&config),
        "--batch",
        "2",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--out",
        &s(&json),
    ]);
    assert!(out.contains("forward by part"), "{out}");
    let doc = read_json(&json);
    assert_eq!(doc["batch"], 2);
    assert_eq!(
        (&doc["backend"], &doc["device"]),
        (&"flex".into(), &"cpu".into())
    );
    let fwd = doc["forward_ms_per_image"]["median"]
        .as_f64()
        .expect("forward");
    let total = doc["total_ms_per_image"]["median"].as_f64().expect("total");
    assert!(fwd > 0.0 && total > 0.0, "{doc}");
    for part in ["backbone", "neck", "head"] {
        assert!(
            doc["parts_ms_per_image"][part].as_f64() > Some(0.0),
            "{doc}"
        );
    }
    let err = fails(&["bench", "infer", "--config", &s(&config), "--iters", "0"]);
    assert!(err.contains("--iters"), "{err}");
}

/// Without `--features vulkan` (CI's build), asking for a GPU is one error that says how to
/// get one, from every command that computes, before any work; a malformed value is
/// refused by the argument parser.
#[cfg(not(feature = "vulkan"))]
#[test]
fn gpu_device_without_the_backend_says_how_to_build_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let run = dir.path().join("run");
    for args in [
        vec![
            "bench",
            "infer",
            "--config",
            &s(&config),
            "--device",
            "gpu:0",
        ],
        vec![
            "train",
            "--config",
            &s(&config),
            "--out",
            &s(&run),
            "--device",
            "gpu",
        ],
    ] {
        let err = fails(&args);
        assert!(
            err.contains("--device gpu") && err.contains("--features vulkan"),
            "{args:?}: {err}"
        );
    }
    assert!(!run.join("last.ckpt").exists());
    // A usage error: clap's exit status 2.
    let out = crate::kdet(&["bench", "infer", "--config", &s(&config), "--device", "tpu"]);
    let err = crate::train::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expected `cpu`, `gpu` or `gpu:N`"), "{err}");
}
