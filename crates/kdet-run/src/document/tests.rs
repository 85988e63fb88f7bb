use super::*;
use serde_json::json;

fn doc(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("an object"),
    }
}

fn set(d: &mut Map<String, Value>, s: &str) -> Result<()> {
    s.parse::<Override>()?.apply(d)
}

#[test]
fn values_are_toml_and_bare_words_are_strings() {
    let cases = [
        ("a=3", json!(3)),
        ("a=0.5", json!(0.5)),
        ("a=true", json!(true)),
        ("a=\"x y\"", json!("x y")),
        ("a=data/x", json!("data/x")),
        ("a=[1, 2]", json!([1, 2])),
        ("a={ type = \"ld\" }", json!({"type": "ld"})),
        ("a=1e-3", json!(0.001)),
    ];
    for (text, want) in cases {
        assert_eq!(text.parse::<Override>().unwrap().value, want, "{text}");
    }
    for bad in ["a", "=3", "a..b=1", "a=", "a=[1,", "a=\"open"] {
        assert!(bad.parse::<Override>().is_err(), "{bad}");
    }
}

#[test]
fn set_walks_tables_and_lists_and_names_what_it_cannot_enter() {
    let mut d = doc(json!({
        "train": {"seed": 0},
        "distill": {"losses": [{"loss": {"type": "ld"}, "weight": 1.0}]}
    }));
    set(&mut d, "train.seed=3").unwrap();
    set(&mut d, "distill.losses.0.weight=0.5").unwrap();
    set(&mut d, "distill.losses.1.loss.type=pkd").unwrap();
    set(&mut d, "model.neck.out_channels=32").unwrap();
    assert_eq!(
        Value::Object(d.clone()),
        json!({
            "train": {"seed": 3},
            "distill": {"losses": [
                {"loss": {"type": "ld"}, "weight": 0.5},
                {"loss": {"type": "pkd"}}
            ]},
            "model": {"neck": {"out_channels": 32}}
        })
    );
    let err = format!(
        "{:#}",
        set(&mut d, "distill.losses.5.weight=1").unwrap_err()
    );
    assert!(err.contains("`distill.losses` has 2 elements"), "{err}");
    let err = format!("{:#}", set(&mut d, "distill.losses.x=1").unwrap_err());
    assert!(err.contains("index it with a number"), "{err}");
    let err = format!("{:#}", set(&mut d, "train.seed.x=1").unwrap_err());
    assert!(err.contains("`train.seed` is a number"), "{err}");
}

#[test]
fn a_variant_of_a_tagged_choice_replaces_the_others() {
    let mut d = doc(json!({"data": {"synth": {"root": "a"}, "size_divisor": 32}}));
    set(&mut d, "data.coco.train_json=t.json").unwrap();
    assert_eq!(
        d["data"],
        json!({"coco": {"train_json": "t.json"}, "size_divisor": 32})
    );
    let mut base = doc(json!({"teacher": {"checkpoint": "t.ckpt"}, "x": {"type": "a", "k": 1}}));
    base.insert("total".into(), json!({"epochs": 16}));
    merge(
        &mut base,
        doc(json!({
            "teacher": {"weights": {"path": "t.pth"}}, "x": {"type": "b"},
            "total": {"iterations": 60}
        })),
        "",
    );
    assert_eq!(
        Value::Object(base),
        json!({
            "teacher": {"weights": {"path": "t.pth"}}, "x": {"type": "b"},
            "total": {"iterations": 60}
        })
    );
}

#[test]
fn earlier_files_are_upgraded() {
    let d = upgrade(doc(json!({
        "teacher": "t.pth", "teacher_model": "m.toml", "teacher_source": "mmdet-gfl",
        "data": {"train_json": "a", "train_images": "b", "val_json": "c", "val_images": "d"}
    })))
    .unwrap();
    assert_eq!(
        Value::Object(d),
        json!({
            "teacher": {"weights": {"path": "t.pth", "model": "m.toml", "source": "mmdet-gfl"}},
            "data": {"coco": {"train_json": "a", "train_images": "b", "val_json": "c", "val_images": "d"}}
        })
    );
    let d = upgrade(doc(json!({"teacher": "run/last.ckpt"}))).unwrap();
    assert_eq!(d["teacher"], json!({"checkpoint": "run/last.ckpt"}));
    for (bad, needle) in [
        (
            json!({"teacher": "t.pt", "teacher_source": "kdet"}),
            "`teacher_model",
        ),
        (
            json!({"teacher": "t.ckpt", "teacher_model": "t.toml"}),
            "kdet checkpoint",
        ),
        (json!({"teacher_source": "kdet"}), "need `teacher"),
    ] {
        let err = format!("{:#}", upgrade(doc(bad)).unwrap_err());
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn shipped_configs_extend_each_other_by_relative_names() {
    let file = ConfigFile::find(Path::new("configs/distill/ld_gfl_synth.toml")).unwrap();
    // The checkout's file exists when the tests run from the crate folder's parent;
    // the shipped one is found by name either way.
    let shipped = ConfigFile::find(Path::new("builtin:distill/ld_gfl_synth.toml")).unwrap();
    assert_eq!(shipped, ConfigFile::Shipped("distill/ld_gfl_synth.toml"));
    let d = load(&shipped, &[]).unwrap();
    assert!(
        d["model"]["backbone"].is_object(),
        "merged from ../gfl_synth_student.toml"
    );
    assert!(matches!(file, ConfigFile::Disk(_) | ConfigFile::Shipped(_)));
    let err = format!(
        "{:#}",
        ConfigFile::find(Path::new("builtin:nope.toml")).unwrap_err()
    );
    assert!(err.contains("no shipped config `nope.toml`"), "{err}");
}

/// A `[model]` of the built-in data's shape: SmallResNet C3-C5, a `channels`-wide FPN
/// P3-P5 and the given head table.
fn synth_model(channels: usize, head: Value) -> Map<String, Value> {
    doc(json!({"model": {
        "backbone": {"type": "small_resnet", "stem_channels": 24, "widths": [16, 32, 64, 128],
                     "depths": [1, 1, 1, 1], "norm": "batch", "out_indices": [1, 2, 3]},
        "neck": {"out_channels": channels, "num_outs": 3},
        "head": head,
    }}))
}

#[test]
fn the_head_takes_its_channels_and_strides_from_the_neck() {
    for (head, strides_at) in [
        (
            json!({"type": "gfl", "num_classes": 8}),
            "/model/head/anchor/strides",
        ),
        (
            json!({"type": "fcos", "num_classes": 8}),
            "/model/head/strides",
        ),
    ] {
        let mut d = synth_model(48, head);
        fill_defaults(&mut d).unwrap();
        let d = Value::Object(d);
        // Not the COCO head's 256 channels and P3-P7 strides the defaults start from.
        assert_eq!(d.pointer("/model/head/in_channels"), Some(&json!(48)));
        assert_eq!(
            d.pointer(strides_at),
            Some(&json!([8, 16, 32])),
            "{strides_at}"
        );
    }
}

#[test]
fn channels_a_file_sets_stay_and_are_checked_against_the_neck() {
    let mut d = synth_model(
        48,
        json!({"type": "gfl", "num_classes": 8, "in_channels": 32}),
    );
    fill_defaults(&mut d).unwrap();
    let model = d["model"].clone();
    assert_eq!(model.pointer("/head/in_channels"), Some(&json!(32)));
    assert_eq!(
        model.pointer("/head/anchor/strides"),
        Some(&json!([8, 16, 32]))
    );
    let config: DetectorConfig = serde_json::from_value(model).unwrap();
    let err = config.validate().unwrap_err();
    assert!(err.contains("model.head.in_channels is 32"), "{err}");
}

#[test]
fn a_neck_that_does_not_parse_leaves_the_head_alone() {
    let mut d = synth_model(48, json!({"type": "gfl", "num_classes": 8}));
    d["model"]["neck"]["num_outs"] = json!("three");
    fill_defaults(&mut d).unwrap();
    // The COCO default stays; parsing the experiment reports the neck.
    assert_eq!(
        Value::Object(d).pointer("/model/head/in_channels"),
        Some(&json!(256))
    );
}
