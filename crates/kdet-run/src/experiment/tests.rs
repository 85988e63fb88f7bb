use super::*;
use crate::presets::preset;

fn student_toml() -> String {
    preset("gfl_synth_student")
        .unwrap()
        .resolve()
        .unwrap()
        .to_toml()
        .unwrap()
}

#[test]
fn unknown_keys_are_named_at_any_depth() {
    let text = student_toml();
    for (from, to, key) in [
        (
            "[data.loader]\n",
            "[data.loader]\nbatch_sise = 3\n",
            // serde's own message names the key.
            "batch_sise",
        ),
        (
            "[model.neck]\n",
            "[model.neck]\nout_chanels = 3\n",
            "model.neck.out_chanels",
        ),
        ("[train]\n", "[train]\nlog_evry = 3\n", "log_evry"),
        ("[eval]\n", "[eval]\nmax_imgs = 3\n", "max_imgs"),
        ("[data]\n", "[data]\nsize_divisr = 3\n", "data.size_divisr"),
    ] {
        assert!(text.contains(from), "{from:?} not in\n{text}");
        let bad = text.replacen(from, to, 1);
        let err = format!("{:#}", Experiment::from_toml_str(&bad).unwrap_err());
        assert!(err.contains(key), "{key}: {err}");
    }
}

/// `--set` changes any key, and a misspelt one is named with the override.
#[test]
fn overrides_change_keys_and_unknown_ones_are_named() {
    let file = ConfigFile::Shipped("distill/ld_gfl_synth.toml");
    let sets: Vec<Override> = [
        "distill.losses.0.weight=0.5",
        "train.seed=3",
        "data.synth.root=\"x\"",
        "model.neck.out_channels=32",
        "model.head.in_channels=32",
        "model.head.feat_channels=32",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let e = Experiment::load_file(&file, &sets).unwrap();
    assert_eq!(e.distill.as_ref().unwrap().losses[0].weight, 0.5);
    assert_eq!(e.train.seed, 3);
    assert_eq!(e.synth().unwrap().root, PathBuf::from("x"));
    assert_eq!(e.model.dense().unwrap().neck.out_channels, 32);
    let bad: Override = "train.sed=3".parse().unwrap();
    let err = format!("{:#}", Experiment::load_file(&file, &[bad]).unwrap_err());
    assert!(
        err.contains("`--set train.sed=3` adds `train.sed`") && err.contains("at `train.sed`"),
        "{err}"
    );
}

/// A file lists only what differs: the model's sections default to the official
/// configs, the data to the built-in set.
#[test]
fn defaults_fill_every_section() {
    let text = "[data]\nsynth = {}\n[model.head]\nnum_classes = 8\n[model.backbone]\ntype = \"resnet\"\ndepth = 18\n";
    let e = Experiment::from_toml_str(text).unwrap_or_else(|e| panic!("{e:#}"));
    let s = e.synth().unwrap();
    assert_eq!(
        (s.train_images, s.val_images, s.image_size),
        (1000, 250, 128)
    );
    assert_eq!(e.model.num_classes(), 8);
    assert_eq!(e.model.dense().unwrap().neck.out_channels, 256);
    assert_eq!(e.model.dense().unwrap().test.max_detections, 100);
    let BackboneConfig::ResNet(r) = e.model.backbone() else {
        panic!("a ResNet")
    };
    assert_eq!(r.out_indices, vec![1, 2, 3]);
}

/// The student preset with the backbone of the known-value fixture
/// `tests/fixtures/weights/tiny_resnet_basic.*` (scripts/weights/known_values.py).
fn tiny_resnet_student(pretrained: &str) -> Experiment {
    let mut e = preset("gfl_synth_student").unwrap();
    e.model.dense_mut().unwrap().backbone = BackboneConfig::SmallResNet(
        kdet_models::backbone::SmallResNetConfig::new(8, [8, 16, 16, 24], [2, 1, 1, 1]),
    );
    e.pretrained = Some(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/weights")
            .join(pretrained),
    );
    e.resolve().unwrap()
}

#[test]
fn pretrained_weights_initialise_the_backbone() {
    let device = Device::flex();
    let e = tiny_resnet_student("tiny_resnet_basic_nested_state_dict.pth");
    let (model, report) = e.init_model(&device, true).unwrap();
    let report = report.expect("pretrained was loaded");
    assert_eq!(report.nested_under, Some("state_dict"));
    assert_eq!(
        report.loaded.len(),
        kdet_models::backbone::tensor_paths(model.backbone()).len()
    );
    // known_values.py: bn1.running_var is key 3 of the sorted list, value
    // 0.75 + 0.25 * u with u = ((0 * 2654435761 + 3 * 40503 + 12345) mod 2^32) / 2^31 - 1.
    let Backbone::ResNet(r) = model.backbone() else {
        panic!("a ResNet backbone")
    };
    let kdet_models::backbone::Norm::Batch(bn) = &r.bn1 else {
        panic!("BatchNorm")
    };
    let first = bn
        .running_var
        .value()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()[0];
    let u = (3.0 * 40503.0 + 12345.0) / 2f64.powi(31) - 1.0;
    assert!((first as f64 - (0.75 + 0.25 * u)).abs() < 1e-6, "{first}");
    // A resumed run does not read the file; without `pretrained` nothing is read.
    assert!(e.init_model(&device, false).unwrap().1.is_none());
}

#[test]
fn pretrained_weights_of_another_shape_are_one_error() {
    let mut e = tiny_resnet_student("tiny_resnet_basic.safetensors");
    e.model.dense_mut().unwrap().backbone = BackboneConfig::SmallResNet(
        kdet_models::backbone::SmallResNetConfig::new(8, [8, 16, 16, 32], [2, 1, 1, 1]),
    );
    let err = format!("{:#}", e.init_model(&Device::flex(), true).unwrap_err());
    assert!(
        err.contains("pretrained") && err.contains("layer4.0.conv1.weight"),
        "{err}"
    );
}

#[test]
fn teachers_are_tagged_and_the_earlier_keys_still_read() {
    let text = student_toml();
    let recipe = "\n[distill]\n[[distill.losses]]\nloss = { type = \"pkd\" }\n";
    let parse = |head: &str| Experiment::from_toml_str(&format!("{head}\n{text}{recipe}"));
    let want = TeacherConfig::Weights(TeacherWeights {
        path: "t.PTH".into(),
        model: "t.toml".into(),
        source: WeightSource::MmdetGfl,
    });
    for head in [
        "teacher = { weights = { path = \"t.PTH\", model = \"t.toml\", source = \"mmdet-gfl\" } }",
        "teacher = \"t.PTH\"\nteacher_model = \"t.toml\"\nteacher_source = \"mmdet-gfl\"",
    ] {
        assert_eq!(parse(head).unwrap().teacher, Some(want.clone()), "{head}");
    }
    for head in [
        "teacher = { checkpoint = \"run/last.ckpt\" }",
        "teacher = \"run/last.ckpt\"",
    ] {
        assert_eq!(
            parse(head).unwrap().teacher,
            Some(TeacherConfig::Checkpoint("run/last.ckpt".into()))
        );
    }
    for (head, needle) in [
        ("teacher = { checkpoint = \"t.pth\" }", "[teacher.weights]"),
        (
            "teacher = { weights = { path = \"t.pth\", model = \"m.toml\", source = \"torchvision-resnet\" } }",
            "backbone's layout",
        ),
        (
            "teacher = { checkpoint = \"a.ckpt\", weights = { path = \"t.pth\", model = \"m.toml\", source = \"kdet\" } }",
            "exclusive",
        ),
        (
            "teacher = \"t.pt\"\nteacher_source = \"kdet\"",
            "`teacher_model",
        ),
    ] {
        let err = format!("{:#}", parse(head).unwrap_err());
        assert!(err.contains(needle), "{head}: {err}");
    }
    // --teacher replaces the path and keeps a weights teacher's architecture.
    let t = TeacherConfig::with_path(Some(&want), Path::new("u.pt")).unwrap();
    assert_eq!(t.path(), Path::new("u.pt"));
    assert!(matches!(t, TeacherConfig::Weights(_)));
    let err = TeacherConfig::with_path(None, Path::new("u.pt")).unwrap_err();
    assert!(err.to_string().contains("weights file"), "{err}");
}

#[test]
fn reserved_keys_unpaired_distill_keys_and_bad_sources_are_refused() {
    let text = student_toml();
    let e = Experiment::from_toml_str(&format!("pretrained = \"r50.pth\"\n{text}"))
        .expect("`pretrained` alone is accepted");
    assert_eq!(e.pretrained, Some(PathBuf::from("r50.pth")));
    let err = format!(
        "{:#}",
        Experiment::from_toml_str(&format!(
            "pretrained_source = \"torchvision-resnet\"\n{text}"
        ))
        .unwrap_err()
    );
    assert!(err.contains("needs `pretrained"), "{err}");
    let err = format!(
        "{:#}",
        Experiment::from_toml_str(&format!(
            "pretrained = \"m.pt\"\npretrained_source = \"deepsort-mobilenet-v2\"\n{text}"
        ))
        .unwrap_err()
    );
    assert!(err.contains("not for the `[model.backbone]`"), "{err}");
    let err = format!(
        "{:#}",
        Experiment::from_toml_str(&format!("teacher = \"t.ckpt\"\n{text}")).unwrap_err()
    );
    assert!(
        err.contains("teacher") && err.contains("[distill]"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        Experiment::from_toml_str(&format!(
            "{text}\n[distill]\n[[distill.losses]]\nloss = {{ type = \"pkd\" }}\n"
        ))
        .unwrap_err()
    );
    assert!(
        err.contains("[distill]") && err.contains("teacher"),
        "{err}"
    );
    // The COCO paths: all four, earlier versions' layout included.
    let coco = preset("gfl_r50_fpn_1x_coco").unwrap().to_toml().unwrap();
    let err = format!(
        "{:#}",
        Experiment::from_toml_str(&coco.replacen("val_images = ", "val_imagez = ", 1)).unwrap_err()
    );
    assert!(err.contains("data.coco.val_images"), "{err}");
    let old = coco.replace("[data.coco]\n", "");
    let e = Experiment::from_toml_str(&old).unwrap_or_else(|e| panic!("{e:#}\n{old}"));
    assert!(matches!(e.data.source, DataSource::Coco(_)));
    let err = format!(
        "{:#}",
        Experiment::from_toml_str(&text.replacen(
            "[data]\n",
            "[data]\ntrain_json = \"a.json\"\n",
            1
        ))
        .unwrap_err()
    );
    assert!(err.contains("exclusive"), "{err}");
}

/// `model.family` picks the family: a query family starts from its official config, keys
/// it does not have are named, an unknown family names the known ones, and a file without
/// `family` is a dense detector.
#[test]
fn model_family_chooses_the_defaults_and_is_checked() {
    let file = ConfigFile::Shipped("m2f_synth_student.toml");
    let e = Experiment::load_file(&file, &[]).unwrap();
    let ModelConfig::Mask2Former(m) = &e.model else {
        panic!("m2f_synth_student is a Mask2Former: {:?}", e.model.family());
    };
    assert_eq!(
        (m.hidden_dim, m.num_decoder_layers, m.num_queries),
        (64, 3, 24)
    );
    // Not in the file: the official Mask2Former-R50 values.
    assert_eq!(
        (m.criterion.eos_coef, m.criterion.class_loss_weight),
        (0.1, 2.0)
    );
    assert!(e.model.predicts_masks());
    let bad: Override = "model.hiden_dim=3".parse().unwrap();
    let err = format!("{:#}", Experiment::load_file(&file, &[bad]).unwrap_err());
    assert!(err.contains("model.hiden_dim"), "{err}");
    let bad: Override = "model.family=\"yolo\"".parse().unwrap();
    let err = format!("{:#}", Experiment::load_file(&file, &[bad]).unwrap_err());
    assert!(err.contains("yolo") && err.contains("mask2former"), "{err}");
    let dense = Experiment::load_file(&ConfigFile::Shipped("gfl_synth_student.toml"), &[]).unwrap();
    assert_eq!(dense.model.family(), "dense");
    assert!(!dense.model.predicts_masks());
    // The resolved experiment writes its family and reads back to the same one.
    let again = Experiment::from_toml_str(&e.to_toml().unwrap()).unwrap();
    assert_eq!(again.model.family(), "mask2former");
}

/// `data.synth.box_noise`: the training split reads the noisy file of that gamma, the
/// validation split stays clean, a file without the key keeps its resolved form (no
/// `box_noise` written), and a gamma that is not a positive number is refused by name.
#[test]
fn box_noise_trains_on_the_noisy_file_and_is_checked() {
    let clean = Experiment::load_file(&ConfigFile::Shipped("distill/baseline_gfl_synth.toml"), &[])
        .unwrap();
    assert!(!clean.to_toml().unwrap().contains("box_noise"));
    let file = ConfigFile::Shipped("noisy/noisy_gfl_synth.toml");
    let set: Override = "data.synth.box_noise=0.4".parse().unwrap();
    let noisy = Experiment::load_file(&file, &[set]).unwrap();
    let (a, b) = (clean.split_paths(), noisy.split_paths());
    assert_eq!(
        b.train_json,
        PathBuf::from("data/synth/train/annotations.noise-0.4.json")
    );
    assert_eq!(
        (&a.train_images, &a.val_json, &a.val_images),
        (&b.train_images, &b.val_json, &b.val_images)
    );
    assert_eq!(noisy.synth().unwrap().box_noise().unwrap(), Some(0.4));
    for bad in ["0.0", "-0.1"] {
        let set: Override = format!("data.synth.box_noise={bad}").parse().unwrap();
        let e = Experiment::load_file(&file, &[set]).unwrap();
        let err = e.synth().unwrap().box_noise().unwrap_err().to_string();
        assert!(err.contains("data.synth.box_noise"), "{err}");
    }
    // The corrected student: the same data, NDet's official fusion settings.
    let corrected =
        Experiment::load_file(&ConfigFile::Shipped("noisy/corrected_gfl_synth.toml"), &[]).unwrap();
    assert_eq!(
        corrected.synth(),
        Experiment::load_file(&file, &[]).unwrap().synth()
    );
    let fusion = corrected.distill.unwrap().box_correction.unwrap();
    assert_eq!(
        fusion,
        kdet_distill::correction::BoxCorrectionConfig::default()
    );
}
