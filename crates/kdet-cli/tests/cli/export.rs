//! `kdet export` end to end: a 4-step trained detector exported as SafeTensors (kdet
//! layout, BatchNorm running statistics included, read back equal by the command itself
//! and here by kdet's importer), and the formats burn cannot write refused with the reason.

use kdet_models::weights::StateDict;

use crate::train::{fails, ok, s, tiny_config};

#[test]
fn safetensors_export_holds_every_tensor_and_unsupported_formats_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let run = dir.path().join("run");
    ok(&["train", "--config", &s(&config), "--out", &s(&run)]);
    let out = dir.path().join("export/student.safetensors");
    let printed = ok(&[
        "export",
        "--checkpoint",
        &s(&run),
        "--format",
        "safetensors",
        "--out",
        &s(&out),
    ]);
    assert!(
        printed.contains("every tensor equal") && printed.contains("gfl detector"),
        "{printed}"
    );
    let state = StateDict::open(&out).expect("the export reads back");
    let keys: Vec<String> = state.keys().into_iter().map(|(k, _)| k).collect();
    assert!(
        printed.contains(&format!("{} tensors", keys.len())),
        "{printed}"
    );
    for part in ["backbone.", "neck.", "head."] {
        assert!(
            keys.iter().any(|k| k.starts_with(part)),
            "{part} in {keys:?}"
        );
    }
    // Trained BatchNorm running statistics, under PyTorch's names, with values off their
    // initial 0 / 1.
    let running: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with("running_mean"))
        .collect();
    assert!(!running.is_empty(), "{keys:?}");
    let moved = running.iter().any(|k| {
        let data = state.tensor_data(k).expect("listed").expect("readable");
        data.iter::<f32>().any(|v| v != 0.0)
    });
    assert!(moved, "running means were updated by training");
    assert!(
        !keys
            .iter()
            .any(|k| k.ends_with(".gamma") || k.contains("ResNet.")),
        "{keys:?}"
    );
    // Replacing an earlier export is fine.
    ok(&[
        "export",
        "--checkpoint",
        &s(&run.join("last.ckpt")),
        "--format",
        "safetensors",
        "--out",
        &s(&out),
    ]);

    let err = fails(&[
        "export",
        "--checkpoint",
        &s(&run),
        "--format",
        "pytorch",
        "--out",
        &s(&dir.path().join("x.pth")),
    ]);
    assert!(
        err.contains("burn-store 0.22.1 cannot write PyTorch") && err.contains("safetensors"),
        "{err}"
    );
    let err = fails(&[
        "export",
        "--checkpoint",
        &s(&run),
        "--format",
        "onnx",
        "--out",
        &s(&dir.path().join("x.onnx")),
    ]);
    assert!(
        err.contains("burn-onnx 0.22.0") && err.contains("mean_dim"),
        "{err}"
    );
    assert!(!dir.path().join("x.onnx").exists());
}
