//! `kdet train`, `kdet eval --checkpoint` and `kdet config` end to end, on tiny generated
//! data (4 training and 2 validation images of 64x64) and the narrow synthetic student
//! preset: the run directory's files, exact resume, checkpoint evaluation, and the errors a
//! user meets (unknown keys, missing data, reserved keys, corrupt checkpoints). Every shipped
//! `configs/*.toml` parses, validates and equals its preset.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::kdet;

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `kdet ARGS`, asserts success, returns stdout.
pub(crate) fn ok(args: &[&str]) -> String {
    let out = kdet(args);
    assert!(
        out.status.success(),
        "kdet {args:?} failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `kdet ARGS`, asserts failure with exit code 1, returns stderr.
pub(crate) fn fails(args: &[&str]) -> String {
    let out = kdet(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "kdet {args:?} should fail:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

pub(crate) fn s(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.get_mut(key)
        .and_then(|v| v.as_table_mut())
        .unwrap_or_else(|| panic!("no table `{key}`"))
}

pub(crate) fn inline(text: &str) -> toml::Value {
    toml::Value::Table(toml::from_str(text).expect("a TOML table"))
}

/// The narrow student preset shrunk to a test: synthetic data generated under
/// `dir/synth`, batch 2, 4 steps (2 per epoch), evaluation and checkpoints every 2 steps.
pub(crate) fn tiny_config(dir: &Path) -> PathBuf {
    tiny_preset(dir, "gfl_synth_student_narrow", "", "tiny.toml", |_| {})
}

/// A preset shrunk to a test, written to `dir/file`: 4 training and 2 validation
/// synthetic images of 64x64 under `dir/synth` (plus the `synth_extra` keys), batch 2,
/// 4 steps (2 per epoch), evaluation and checkpoints every 2 steps; `edit` changes the
/// rest.
pub(crate) fn tiny_preset(
    dir: &Path,
    preset: &str,
    synth_extra: &str,
    file: &str,
    edit: impl FnOnce(&mut toml::Table),
) -> PathBuf {
    let printed = ok(&["config", "print", "--preset", preset]);
    let mut t: toml::Table = toml::from_str(&printed).expect("printed TOML parses");
    let data = table(&mut t, "data");
    data.insert(
        "synth".into(),
        inline(&format!(
            "root = {:?}\nseed = 0\ntrain_images = 4\nval_images = 2\nimage_size = 64\n{synth_extra}",
            s(&dir.join("synth"))
        )),
    );
    table(data, "loader").insert("batch_size".into(), toml::Value::Integer(2));
    let train = table(&mut t, "train");
    train.insert("log_every".into(), toml::Value::Integer(1));
    train.insert("eval_every".into(), inline("iterations = 2"));
    table(train, "checkpoint").insert("every".into(), inline("iterations = 2"));
    let schedule = table(train, "schedule");
    schedule.insert("total".into(), inline("iterations = 4"));
    schedule.insert("warmup".into(), inline("iterations = 2\nratio = 0.1"));
    schedule.insert(
        "decay".into(),
        inline("type = \"step\"\ngamma = 0.1\nmilestones = [{ iterations = 3 }]"),
    );
    let eval = table(&mut t, "eval");
    eval.insert("batch_size".into(), toml::Value::Integer(2));
    eval.insert("max_images".into(), toml::Value::Integer(1));
    edit(&mut t);
    let path = dir.join(file);
    std::fs::write(&path, toml::to_string(&t).expect("serialise")).expect("write config");
    path
}

/// The `weights crc32 XXXXXXXX` value printed at the end of a run or an evaluation.
pub(crate) fn crc(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split("weights crc32 ").nth(1))
        .unwrap_or_else(|| panic!("no weights crc32 in\n{stdout}"))
        .trim()
        .to_string()
}

/// The 12 printed stats.
pub(crate) fn printed_stats(stdout: &str) -> Vec<f64> {
    let v: Vec<f64> = stdout
        .lines()
        .filter(|l| l.contains("maxDets="))
        .map(|l| {
            l.rsplit("= ")
                .next()
                .and_then(|v| v.trim().parse().ok())
                .expect("a number after '= '")
        })
        .collect();
    assert_eq!(v.len(), 12, "{stdout}");
    v
}

pub(crate) fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

/// `(step, losses, total)` of the training lines of `metrics.jsonl`, and the steps of the
/// evaluation lines.
pub(crate) type TrainLine = (u64, serde_json::Value, serde_json::Value);

pub(crate) fn metrics(run: &Path) -> (Vec<TrainLine>, Vec<u64>) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    let mut train = Vec::new();
    let mut evals = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let step = v["step"].as_u64().expect("step");
        if v.get("eval").is_some() {
            evals.push(step);
        } else {
            train.push((step, v["losses"].clone(), v["total"].clone()));
        }
    }
    (train, evals)
}

#[test]
fn train_writes_the_run_and_eval_checkpoint_reproduces_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let run = dir.path().join("run");
    let out = ok(&["train", "--config", &s(&config), "--out", &s(&run)]);
    assert!(out.contains("writing the synthetic dataset"), "{out}");
    for file in [
        "last.ckpt",
        "last.json",
        "metrics.jsonl",
        "config.toml",
        "train_config.toml",
        "experiment.json",
        "eval.json",
        "predictions.json",
    ] {
        assert!(run.join(file).is_file(), "{file} missing in the run dir");
    }
    let (train, evals) = metrics(&run);
    assert_eq!(
        train.iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(evals, vec![2, 4]);
    for (_, losses, _) in &train {
        for term in ["loss_cls", "loss_bbox", "loss_dfl"] {
            assert!(losses[term].as_f64().is_some(), "{term} in {losses}");
        }
    }

    // The resolved config is complete, absolute and loads as an experiment.
    let resolved = ok(&["config", "print", "--config", &s(&run.join("config.toml"))]);
    assert!(
        resolved.contains(&s(&dir.path().join("synth"))),
        "{resolved}"
    );
    assert!(resolved.contains("horizontal_flip"), "{resolved}");

    let eval_json = read_json(&run.join("eval.json"));
    let stats = eval_json["stats"].as_object().expect("stats");
    assert_eq!(stats.len(), 12);
    assert_eq!(eval_json["step"], 4);
    assert_eq!(eval_json["report"]["num_images"], 2);
    let trained_crc = crc(&out);
    assert_eq!(eval_json["weights_crc32"], trained_crc.as_str());

    // The checkpoint rebuilt from its stored experiment: same weights (BatchNorm running
    // statistics included), same numbers as the final evaluation.
    let stats_path = dir.path().join("out/stats.json");
    let synth = dir.path().join("synth");
    let printed = ok(&[
        "eval",
        "--checkpoint",
        &s(&run.join("last.ckpt")),
        "--data",
        &s(&synth),
        "--out",
        &s(&stats_path),
    ]);
    assert_eq!(crc(&printed), trained_crc);
    let want: Vec<f64> = STAT_NAMES
        .iter()
        .map(|n| stats[*n].as_f64().expect("a number"))
        .collect();
    let got = printed_stats(&printed);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 5e-7, "printed {got:?}, eval.json {want:?}");
    }
    assert_eq!(read_json(&stats_path)["stats"], eval_json["stats"]);
    // A run directory and --gt/--images name the same thing.
    let by_dir = ok(&[
        "eval",
        "--checkpoint",
        &s(&run),
        "--gt",
        &s(&synth.join("val/annotations.json")),
        "--images",
        &s(&synth.join("val/images")),
    ]);
    assert_eq!(printed_stats(&by_dir), got);
}

/// COCO's 12 stats in `eval.json` order.
const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

#[test]
fn resumed_runs_end_with_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let straight = dir.path().join("straight");
    let out = ok(&["train", "--config", &s(&config), "--out", &s(&straight)]);
    let want = crc(&out);

    // Stopped after step 1 (mid-epoch, between checkpoints), again after step 3, resumed.
    let run = dir.path().join("stopped");
    let first = ok(&[
        "train",
        "--config",
        &s(&config),
        "--out",
        &s(&run),
        "--max-steps",
        "1",
    ]);
    assert!(first.contains("stopped after step 1 of 4"), "{first}");
    assert!(!run.join("eval.json").exists());
    let second = ok(&["train", "--resume", "--out", &s(&run), "--max-steps", "3"]);
    assert!(
        second.contains("starting at step 1 (epoch 0, batch 1)"),
        "{second}"
    );
    let last = ok(&["train", "--resume", "--out", &s(&run)]);
    assert_eq!(crc(&last), want, "resumed run:\n{first}\n{second}\n{last}");
    assert_eq!(metrics(&run), metrics(&straight));
    assert_eq!(
        read_json(&run.join("eval.json"))["stats"],
        read_json(&straight.join("eval.json"))["stats"]
    );

    // A finished run resumes to itself; a fresh run refuses an existing run directory.
    let again = ok(&["train", "--resume", "--out", &s(&run)]);
    assert_eq!(crc(&again), want);
    let err = fails(&["train", "--config", &s(&config), "--out", &s(&run)]);
    assert!(err.contains("last.ckpt") && err.contains("resume"), "{err}");
    let err = fails(&["train", "--resume", "--out", &s(&run), "--seed", "5"]);
    assert!(err.contains("--seed 5"), "{err}");
}

#[test]
fn config_errors_name_the_key_or_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let text = std::fs::read_to_string(&config).expect("config");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        s(&p)
    };

    // Unknown keys, in a burn `Config` section and in a section of our own.
    let typo = write(
        "typo.toml",
        &text.replacen("[model.neck]\n", "[model.neck]\nout_chanels = 16\n", 1),
    );
    let err = fails(&[
        "train",
        "--config",
        &typo,
        "--out",
        &s(&dir.path().join("r1")),
    ]);
    assert!(err.contains("model.neck.out_chanels"), "{err}");
    assert!(err.contains("typo.toml"), "{err}");
    let typo = write(
        "typo2.toml",
        &text.replacen("[data.loader]\n", "[data.loader]\nbatch_sise = 2\n", 1),
    );
    let err = fails(&["config", "print", "--config", &typo]);
    assert!(err.contains("batch_sise"), "{err}");

    // Reserved keys.
    let reserved = write("reserved.toml", &format!("teacher = \"t.ckpt\"\n{text}"));
    let err = fails(&["config", "print", "--config", &reserved]);
    assert!(
        err.contains("teacher") && err.contains("[distill]"),
        "{err}"
    );

    // A missing COCO file is named with its key.
    let mut t: toml::Table = toml::from_str(&text).expect("toml");
    let data = table(&mut t, "data");
    data.remove("synth");
    let missing = dir.path().join("nowhere/instances.json");
    data.insert("train_json".into(), toml::Value::String(s(&missing)));
    for key in ["train_images", "val_json", "val_images"] {
        data.insert(key.into(), toml::Value::String(s(dir.path())));
    }
    let coco = write("coco.toml", &toml::to_string(&t).expect("toml"));
    let err = fails(&[
        "train",
        "--config",
        &coco,
        "--out",
        &s(&dir.path().join("r2")),
    ]);
    assert!(
        err.contains("data.coco.train_json") && err.contains(&s(&missing)),
        "{err}"
    );
    // A missing config file and a missing run are named too.
    let err = fails(&["train", "--config", "no/such.toml"]);
    assert!(err.contains("no/such.toml"), "{err}");
    let err = fails(&["train", "--resume", "--out", &s(&dir.path().join("r3"))]);
    assert!(err.contains("last.ckpt"), "{err}");
}

#[test]
fn corrupt_and_missing_checkpoints_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let run = dir.path().join("run");
    ok(&[
        "train",
        "--config",
        &s(&config),
        "--out",
        &s(&run),
        "--max-steps",
        "2",
    ]);
    let synth = s(&dir.path().join("synth"));
    let mut bytes = std::fs::read(run.join("last.ckpt")).expect("checkpoint");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let bad = dir.path().join("bad.ckpt");
    std::fs::write(&bad, &bytes).expect("write");
    let err = fails(&["eval", "--checkpoint", &s(&bad), "--data", &synth]);
    assert!(err.contains("bad.ckpt") && err.contains("corrupt"), "{err}");
    let gone = dir.path().join("gone.ckpt");
    let err = fails(&["eval", "--checkpoint", &s(&gone), "--data", &synth]);
    assert!(err.contains("gone.ckpt"), "{err}");
    let err = fails(&["eval", "--checkpoint", &s(&run)]);
    assert!(err.contains("--data"), "{err}");
}

/// Every shipped experiment parses, validates (model wiring, schedule, data source) and
/// prints exactly as the preset of its name.
#[test]
fn shipped_configs_parse_validate_and_equal_their_presets() {
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let presets = ok(&["config", "presets"]);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&configs).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let from_file = ok(&["config", "print", "--config", &s(&path)]);
        let from_preset = ok(&["config", "print", "--preset", &name]);
        assert_eq!(
            from_file,
            from_preset,
            "{} drifted from its preset",
            path.display()
        );
        found.push(name);
    }
    found.sort();
    let mut want: Vec<String> = presets.lines().map(str::to_string).collect();
    want.sort();
    assert_eq!(found, want);
}

/// `--set` overrides keys of any section (lists indexed by number), names unknown keys,
/// and `kdet config methods` lists the methods the scripts use.
#[test]
fn set_overrides_keys_and_names_unknown_ones() {
    let printed = ok(&[
        "config",
        "print",
        "--config",
        "configs/distill/ld_gfl_synth.toml",
        "--set",
        "distill.losses.0.weight=0.5",
        "--set",
        "train.seed=3",
        "--set",
        "data.synth.root=\"elsewhere\"",
        "--set",
        "eval.max_images=7",
    ]);
    let t: toml::Table = toml::from_str(&printed).expect("TOML");
    assert_eq!(t["distill"]["losses"][0]["weight"].as_float(), Some(0.5));
    assert_eq!(t["train"]["seed"].as_integer(), Some(3));
    assert_eq!(t["data"]["synth"]["root"].as_str(), Some("elsewhere"));
    assert_eq!(t["eval"]["max_images"].as_integer(), Some(7));
    let err = fails(&[
        "config",
        "print",
        "--config",
        "configs/gfl_synth_student.toml",
        "--set",
        "train.sed=3",
    ]);
    assert!(
        err.contains("`--set train.sed=3` adds `train.sed`"),
        "{err}"
    );
    let err = fails(&[
        "config",
        "print",
        "--config",
        "configs/gfl_synth_student.toml",
        "--set",
        "train.seed",
    ]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let methods = ok(&["config", "methods"]);
    for m in ["ld", "fgd", "pkd"] {
        assert!(methods.lines().any(|l| l == m), "{m} in {methods}");
    }
}

/// The shipped configs are inside the binary: from an empty folder, `--config
/// configs/NAME` still resolves (and equals the checkout's file).
#[test]
fn shipped_configs_are_found_from_any_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let here = ok(&[
        "config",
        "print",
        "--config",
        "configs/distill/pkd_gfl_synth.toml",
    ]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kdet"))
        .args([
            "config",
            "print",
            "--config",
            "configs/distill/pkd_gfl_synth.toml",
        ])
        .current_dir(dir.path())
        .output()
        .expect("kdet runs");
    assert!(out.status.success(), "{}", stderr(&out));
    // Relative paths resolve against the working directory, which differs.
    let there = stdout(&out);
    assert_eq!(here.lines().count(), there.lines().count());
    assert!(there.contains("pkd"), "{there}");
    let shipped = ok(&["config", "shipped"]);
    assert!(
        shipped.lines().any(|l| l == "distill/ld_gfl_synth.toml"),
        "{shipped}"
    );
}
