//! `kdet distill` end to end on tiny generated data: a 4-step teacher, a student distilled
//! from it with LD + FGD + PKD + MGD + ICD (KD terms and timings logged, the final evaluation and
//! `kdet eval --checkpoint` agree on the student's weights), exact resume, the errors a
//! user meets, every shipped recipe parses, and a teacher read from an exported
//! SafeTensors file (`teacher_source = "kdet"`) distils exactly as its checkpoint.

use std::path::{Path, PathBuf};

use crate::train::{crc, fails, metrics, ok, read_json, s, table, tiny_config};

/// `tiny.toml` + a teacher checkpoint + a recipe, as `distill.toml` in `dir`.
pub(crate) fn distill_config(dir: &Path, teacher: &Path, recipe: &str) -> PathBuf {
    let path = dir.join("distill.toml");
    let text = format!(
        "extends = \"tiny.toml\"\nteacher = {:?}\n\n[distill]\n{recipe}",
        s(teacher)
    );
    std::fs::write(&path, text).expect("write the recipe");
    path
}

const RECIPE: &str = r#"inherit = false

[[distill.losses]]
loss = { type = "ld", ld_weight = 0.1 }

[[distill.losses]]
loss = { type = "fgd" }

[[distill.losses]]
loss = { type = "pkd" }
weight = 6.0
schedule = { warmup_iterations = 2 }

# Random masks drawn from (seed, step, level): the resume test below proves a resumed run
# draws the same ones.
[[distill.losses]]
loss = { type = "mgd" }

# Random fake objects drawn from (seed, step, image), and a second optimizer (ICD's own
# AdamW) whose state the resume test below proves is checkpointed.
[[distill.losses]]
loss = { type = "icd", bypass_steps = 1 }
"#;

/// A trained 4-step teacher in `dir/teacher`.
pub(crate) fn teacher(dir: &Path) -> PathBuf {
    let config = tiny_config(dir);
    let run = dir.join("teacher");
    ok(&["train", "--config", &s(&config), "--out", &s(&run)]);
    run.join("last.ckpt")
}

#[test]
fn distill_logs_kd_terms_and_eval_checkpoint_scores_the_student() {
    let dir = tempfile::tempdir().expect("tempdir");
    let teacher = teacher(dir.path());
    let config = distill_config(dir.path(), &teacher, RECIPE);
    let run = dir.path().join("run");
    let out = ok(&["distill", "--config", &s(&config), "--out", &s(&run)]);
    let (train, evals) = metrics(&run);
    assert_eq!(evals, vec![2, 4]);
    for (step, losses, _) in &train {
        for term in [
            "loss_cls",
            "kd.ld.ld",
            "kd.ld.vlr",
            "kd.ld.kd",
            "kd.fgd.fg",
            "kd.fgd.bg",
            "kd.fgd.attention",
            "kd.fgd.global",
            "kd.mgd",
            "kd.icd.value",
            "kd.icd.identification",
            "kd.icd.localization",
        ] {
            assert!(
                losses[term].as_f64().is_some(),
                "step {step}: {term} in {losses}"
            );
        }
        // PKD warms up over 2 steps: factor 0 at step index 0, so not computed there.
        assert_eq!(
            losses.get("kd.pkd").is_some(),
            *step > 1,
            "step {step}: {losses}"
        );
        assert!(
            losses
                .as_object()
                .expect("losses")
                .keys()
                .all(|k| !k.starts_with("time.")),
            "step {step}: timings are not losses: {losses}"
        );
    }
    // The step timings are logged apart from the losses.
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
    for line in text.lines().filter(|l| l.contains("\"losses\"")) {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        for name in ["teacher_ms", "kd_ms"] {
            assert!(v["timings"][name].as_f64().is_some(), "{name} in {line}");
        }
    }
    let trained = crc(&out);
    assert_eq!(
        read_json(&run.join("eval.json"))["weights_crc32"],
        trained.as_str()
    );
    // The checkpoint holds the distillation modules too; eval loads the student alone.
    let printed = ok(&[
        "eval",
        "--checkpoint",
        &s(&run.join("last.ckpt")),
        "--data",
        &s(&dir.path().join("synth")),
    ]);
    assert_eq!(crc(&printed), trained);
    // The stored config names the teacher and the recipe.
    let resolved = std::fs::read_to_string(run.join("config.toml")).expect("config.toml");
    assert!(
        resolved.contains("kdet distill") && resolved.contains("[distill]"),
        "{resolved}"
    );
    assert!(resolved.contains(&s(&teacher)), "{resolved}");
}

#[test]
fn a_resumed_distillation_ends_with_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let teacher = teacher(dir.path());
    let config = distill_config(dir.path(), &teacher, RECIPE);
    let straight = dir.path().join("straight");
    let want = crc(&ok(&[
        "distill",
        "--config",
        &s(&config),
        "--out",
        &s(&straight),
    ]));
    let run = dir.path().join("stopped");
    let first = ok(&[
        "distill",
        "--config",
        &s(&config),
        "--out",
        &s(&run),
        "--max-steps",
        "1",
    ]);
    assert!(first.contains("kdet distill --resume"), "{first}");
    let last = ok(&["distill", "--resume", "--out", &s(&run)]);
    assert_eq!(crc(&last), want);
    let strip = |m: (Vec<crate::train::TrainLine>, Vec<u64>)| -> Vec<(u64, serde_json::Value)> {
        // Losses and totals must not differ between runs (timings do: they are logged
        // apart, under `timings`, and left out here).
        m.0.into_iter()
            .map(|(step, losses, total)| {
                (step, serde_json::json!({"losses": losses, "total": total}))
            })
            .collect()
    };
    assert_eq!(strip(metrics(&run)), strip(metrics(&straight)));
}

#[test]
fn distill_errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = tiny_config(dir.path());
    let missing = dir.path().join("nowhere/last.ckpt");
    let config = distill_config(dir.path(), &missing, RECIPE);
    let run = s(&dir.path().join("run"));
    // `kdet train` refuses a recipe; `kdet distill` needs one.
    let e = fails(&["train", "--config", &s(&config), "--out", &run]);
    assert!(e.contains("kdet distill"), "{e}");
    let e = fails(&["distill", "--config", &s(&base), "--out", &run]);
    assert!(e.contains("[distill]"), "{e}");
    // A missing teacher checkpoint is named.
    let e = fails(&["distill", "--config", &s(&config), "--out", &run]);
    assert!(e.contains("`teacher`") && e.contains("nowhere"), "{e}");
    // A recipe that does not fit the detectors names its entry.
    let teacher = teacher(dir.path());
    let bad = distill_config(
        dir.path(),
        &teacher,
        "[[distill.losses]]\nloss = { type = \"pkd\" }\nlevels = [7]\n",
    );
    let e = fails(&["distill", "--config", &s(&bad), "--out", &run]);
    assert!(
        e.contains("distill.losses[0] (pkd)") && e.contains("level 7"),
        "{e}"
    );
    // Unknown loss settings are named.
    let bad = distill_config(
        dir.path(),
        &teacher,
        "[[distill.losses]]\nloss = { type = \"fgd\", alpha = 1.0 }\n",
    );
    let e = fails(&["distill", "--config", &s(&bad), "--out", &run]);
    assert!(e.contains("`alpha`") && e.contains("alpha_fg"), "{e}");
}

#[test]
fn shipped_recipes_parse_and_validate() {
    let configs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/distill");
    let mut n = 0;
    for entry in std::fs::read_dir(&configs).expect("configs/distill") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let printed = ok(&["config", "print", "--config", &s(&path)]);
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if name.starts_with("schedule_") {
            // The teacher-free schedule the recipes extend: a plain training run.
            assert!(!printed.contains("[distill]"), "{name}");
            continue;
        }
        // Every recipe has a teacher but the teacher-free ones (LGD), which refuse one.
        let teacher_free = printed.contains("type = \"lgd\"");
        assert!(
            printed.contains("[distill]") && printed.contains("[teacher]") != teacher_free,
            "{name}"
        );
        n += 1;
    }
    assert!(n >= 8, "{n} recipes");
}

/// LGD distils without a teacher (its dynamic teacher's detection loss and the
/// distillation term logged every step) and refuses one, from `--teacher` or the file.
#[test]
fn lgd_distils_without_a_teacher_and_refuses_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    tiny_config(dir.path());
    let recipe = "[[distill.losses]]\nloss = { type = \"lgd\", pre_nondistill_steps = 2, freeze_backbone_steps = 2 }\n";
    let config = dir.path().join("lgd.toml");
    std::fs::write(
        &config,
        format!("extends = \"tiny.toml\"\n\n[distill]\n{recipe}"),
    )
    .expect("write the recipe");
    let run = dir.path().join("run");
    ok(&["distill", "--config", &s(&config), "--out", &s(&run)]);
    let (train, evals) = metrics(&run);
    assert_eq!(evals, vec![2, 4]);
    assert_eq!(train.len(), 4);
    for (step, losses, _) in &train {
        for term in ["loss_cls", "kd.lgd.distill", "kd.lgd.teacher"] {
            assert!(
                losses[term].as_f64().is_some_and(f64::is_finite),
                "step {step}: {term} in {losses}"
            );
        }
    }
    let other = s(&dir.path().join("other"));
    let e = fails(&[
        "distill",
        "--config",
        &s(&config),
        "--teacher",
        &s(&dir.path().join("t/last.ckpt")),
        "--out",
        &other,
    ]);
    assert!(e.contains("teacher-free"), "{e}");
    let with_teacher = distill_config(dir.path(), &dir.path().join("t/last.ckpt"), recipe);
    let e = fails(&["distill", "--config", &s(&with_teacher), "--out", &other]);
    assert!(
        e.contains("teacher-free") && e.contains("remove `teacher`"),
        "{e}"
    );
}

/// `tiny.toml` + a weights-file teacher with the top-level `keys` + [`RECIPE`], as
/// `NAME.toml` in `dir`.
fn weights_teacher_config(dir: &Path, name: &str, teacher: &Path, keys: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "extends = \"tiny.toml\"\nteacher = {:?}\n{keys}\n\n[distill]\n{RECIPE}",
        s(teacher)
    );
    std::fs::write(&path, text).expect("write the experiment");
    path
}

/// The `[model]` of `tiny.toml` alone, with `edit` applied to its head, as `NAME.toml`.
fn teacher_model(dir: &Path, name: &str, edit: impl Fn(&mut toml::Table)) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("tiny.toml")).expect("tiny.toml");
    let mut t: toml::Table = toml::from_str(&text).expect("TOML");
    edit(table(table(&mut t, "model"), "head"));
    let mut only_model = toml::Table::new();
    only_model.insert("model".into(), t["model"].clone());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml::to_string(&only_model).expect("serialise")).expect("write");
    path
}

#[test]
fn a_safetensors_teacher_distils_as_its_checkpoint_and_errors_name_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = teacher(dir.path());
    let weights = dir.path().join("teacher.safetensors");
    ok(&[
        "export",
        "--checkpoint",
        &s(&ckpt),
        "--format",
        "safetensors",
        "--out",
        &s(&weights),
    ]);
    let tiny = s(&dir.path().join("tiny.toml"));
    let from_ckpt = distill_config(dir.path(), &ckpt, RECIPE);
    let want = crc(&ok(&[
        "distill",
        "--config",
        &s(&from_ckpt),
        "--out",
        &s(&dir.path().join("from_ckpt")),
    ]));
    // The same teacher from the exported file: the same distilled student, bit for bit.
    let keys = format!("teacher_model = {tiny:?}\nteacher_source = \"kdet\"");
    let config = weights_teacher_config(dir.path(), "from_weights", &weights, &keys);
    let run = dir.path().join("from_weights");
    let out = ok(&["distill", "--config", &s(&config), "--out", &s(&run)]);
    assert!(
        out.contains("teacher: ") && out.contains("(kdet)") && out.contains("tensors loaded"),
        "{out}"
    );
    assert_eq!(crc(&out), want);
    let resolved = std::fs::read_to_string(run.join("config.toml")).expect("config.toml");
    assert!(
        resolved.contains("[teacher.weights]")
            && resolved.contains("source = \"kdet\"")
            && resolved.contains(&tiny),
        "{resolved}"
    );
    let fail = |name: &str, keys: &str| {
        let config = weights_teacher_config(dir.path(), name, &weights, keys);
        fails(&[
            "distill",
            "--config",
            &s(&config),
            "--out",
            &s(&dir.path().join(name)),
        ])
    };
    // A weights file needs both keys.
    let e = fail("bare", "");
    assert!(
        e.contains("teacher_model") && e.contains("teacher_source") && e.contains("weights file"),
        "{e}"
    );
    let e = fail("no_source", &format!("teacher_model = {tiny:?}"));
    assert!(
        e.contains("`teacher_source") && !e.contains("`teacher_model"),
        "{e}"
    );
    // An unknown layout is named, with the key.
    let e = fail(
        "unknown",
        &format!("teacher_model = {tiny:?}\nteacher_source = \"mmdet-yolox\""),
    );
    assert!(
        e.contains("at `teacher.weights.source = \"mmdet-yolox\"`"),
        "{e}"
    );
    // A backbone's layout, another head family's layout.
    let e = fail(
        "backbone",
        &format!("teacher_model = {tiny:?}\nteacher_source = \"torchvision-resnet\""),
    );
    assert!(e.contains("backbone's layout"), "{e}");
    let e = fail(
        "atss",
        &format!("teacher_model = {tiny:?}\nteacher_source = \"mmdet-atss\""),
    );
    assert!(e.contains("mmdet-atss") && e.contains("GFL"), "{e}");
    // Another architecture: every tensor that does not fit is named, with the file.
    let deeper = teacher_model(dir.path(), "deeper_model", |head| {
        head.insert("stacked_convs".into(), toml::Value::Integer(3));
    });
    let e = fail(
        "deeper",
        &format!(
            "teacher_model = {:?}\nteacher_source = \"kdet\"",
            s(&deeper)
        ),
    );
    for part in [
        "teacher.safetensors",
        "teacher.weights",
        "missing (in the model, not in the file): head.cls_convs.2.conv.weight",
        "head.reg_convs.2.norm.gamma",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }
    // A teacher of other classes.
    let other = teacher_model(dir.path(), "other_classes_model", |head| {
        head.insert("num_classes".into(), toml::Value::Integer(7));
    });
    let e = fail(
        "other_classes",
        &format!("teacher_model = {:?}\nteacher_source = \"kdet\"", s(&other)),
    );
    assert!(e.contains("predicts 7 classes"), "{e}");
    // A checkpoint teacher stores its architecture: the keys are refused.
    let path = dir.path().join("ckpt_keys.toml");
    std::fs::write(
        &path,
        format!(
            "extends = \"tiny.toml\"\nteacher = {:?}\nteacher_source = \"kdet\"\n\n[distill]\n{RECIPE}",
            s(&ckpt)
        ),
    )
    .expect("write");
    let e = fails(&[
        "distill",
        "--config",
        &s(&path),
        "--out",
        &s(&dir.path().join("x")),
    ]);
    assert!(e.contains("kdet checkpoint"), "{e}");
}

/// The noisy-box setting end to end: `kdet data synth --box-noise` writes noisy training
/// boxes, a model trained on them is the teacher, and `kdet distill` with
/// `[distill] box_correction` trains a student on the corrected boxes (clean validation
/// boxes score it).
#[test]
fn a_student_trains_on_boxes_corrected_by_a_noisy_teacher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("noisy");
    ok(&[
        "data",
        "synth",
        "--out",
        &s(&root),
        "--images",
        "4",
        "--val-images",
        "2",
        "--size",
        "64",
        "--box-noise",
        "0.2",
    ]);
    let config =
        crate::train::tiny_preset(dir.path(), "gfl_synth_student", "", "noisy.toml", |t| {
            let data = table(t, "data");
            data.remove("synth");
            data.insert(
                "coco".into(),
                crate::train::inline(&format!(
                    "train_json = {:?}\ntrain_images = {:?}\nval_json = {:?}\nval_images = {:?}",
                    s(&root.join("train/annotations.noise-0.2.json")),
                    s(&root.join("train/images")),
                    s(&root.join("val/annotations.json")),
                    s(&root.join("val/images")),
                )),
            );
        });
    let teacher = dir.path().join("teacher");
    ok(&["train", "--config", &s(&config), "--out", &s(&teacher)]);
    let mut t: toml::Table =
        toml::from_str(&std::fs::read_to_string(&config).expect("config")).expect("TOML");
    t.insert(
        "teacher".into(),
        crate::train::inline(&format!("checkpoint = {:?}", s(&teacher.join("last.ckpt")))),
    );
    t.insert(
        "distill".into(),
        crate::train::inline(
            "box_correction = { score_threshold = 0.0, weight = { type = \"step\", iou_threshold = 0.0 } }",
        ),
    );
    let recipe = dir.path().join("corrected.toml");
    std::fs::write(&recipe, toml::to_string(&t).expect("serialise")).expect("write");
    let student = dir.path().join("student");
    let out = ok(&["distill", "--config", &s(&recipe), "--out", &s(&student)]);
    assert!(
        read_json(&student.join("eval.json"))["stats"].is_object(),
        "{out}"
    );
    // The recipe is stored with the run; a bad value is an error naming the section.
    let stored = std::fs::read_to_string(student.join("config.toml")).expect("config.toml");
    assert!(stored.contains("box_correction"), "{stored}");

    // `kdet data correct`: the teacher's fusion over the training boxes, with the recipe's
    // settings (every prediction counts here, so the boxes move).
    let noisy = root.join("train/annotations.noise-0.2.json");
    let clean = root.join("train/annotations.json");
    let images = root.join("train/images");
    let json = dir.path().join("correction.json");
    let printed = ok(&[
        "data",
        "correct",
        &s(&noisy),
        "--clean",
        &s(&clean),
        "--images",
        &s(&images),
        "--teacher",
        &s(&teacher),
        "--config",
        &s(&recipe),
        "--json",
        &s(&json),
    ]);
    let r = read_json(&json);
    let (before, after) = (
        r["before"].as_f64().expect("f64"),
        r["after"].as_f64().expect("f64"),
    );
    assert!(r["boxes"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert!(before > 0.0 && before < 1.0, "{r}");
    assert!(
        after != before && r["mean_weight"].as_f64().is_some_and(|w| w > 0.0),
        "{r}"
    );
    assert!(printed.contains("before correction"), "{printed}");
    // The clean file against itself: IoU 1 before any correction.
    ok(&[
        "data",
        "correct",
        &s(&clean),
        "--clean",
        &s(&clean),
        "--images",
        &s(&images),
        "--teacher",
        &s(&teacher),
        "--json",
        &s(&json),
    ]);
    assert_eq!(read_json(&json)["before"], 1.0);
    // Files of different images are refused, naming both.
    let err = fails(&[
        "data",
        "correct",
        &s(&noisy),
        "--clean",
        &s(&root.join("val/annotations.json")),
        "--images",
        &s(&images),
        "--teacher",
        &s(&teacher),
    ]);
    assert!(
        err.contains("annotations.noise-0.2.json") && err.contains("val/annotations.json"),
        "{err}"
    );
    t.insert(
        "distill".into(),
        crate::train::inline("box_correction = { topk = 0 }"),
    );
    std::fs::write(&recipe, toml::to_string(&t).expect("serialise")).expect("write");
    let err = fails(&[
        "distill",
        "--config",
        &s(&recipe),
        "--out",
        &s(&dir.path().join("bad")),
    ]);
    assert!(
        err.contains("distill.box_correction") && err.contains("topk"),
        "{err}"
    );
}
