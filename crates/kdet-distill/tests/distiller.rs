//! The Distiller end to end on tiny detectors: every method trains the student and its
//! distillation modules and never the teacher; wiring errors name the entry; the student
//! of a distillation record loads alone.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use kdet_distill::distiller::{DistilledStudent, Distiller};
use kdet_distill::recipe::RecipeConfig;
use kdet_models::heads::fcos::FcosHeadConfig;
use kdet_models::{Detector, DetectorConfig, HeadConfig, ModelFamily};
use kdet_structures::{Boxes, ImageBatch, ImageSize, Instances};

mod common;
use common::{assert_logged, crc, recipe};

const SIZE: u32 = 64;

/// A tiny GFL detector: SmallResNet of `width`, FPN P3-P5 of `neck` channels, a GFL head
/// of 16 channels (reg_max 4), 3 classes.
fn config(width: usize, neck: usize) -> DetectorConfig {
    let text = format!(
        r#"
[backbone]
type = "small_resnet"
stem_channels = {width}
widths = [{width}, {width}, {w2}, {w2}]
depths = [1, 1, 1, 1]
norm = "batch"
out_indices = [1, 2, 3]

[neck]
out_channels = {neck}
num_outs = 3
extra_from = "output"
relu_before_extra_convs = false

[head]
type = "gfl"
num_classes = 3
in_channels = {neck}
feat_channels = 16
stacked_convs = 2
reg_max = 4
prior_prob = 0.01
init_std = 0.01
norm = {{ Group = 4 }}
anchor = {{ strides = [8, 16, 32], ratios = [1.0], octave_base_scale = 2.0, scales_per_octave = 1, center_offset = 0.0 }}
assigner = {{ topk = 9 }}
loss_cls = {{ beta = 2.0, loss_weight = 1.0 }}
loss_dfl = {{ loss_weight = 0.25 }}
loss_bbox = {{ loss_weight = 2.0 }}

[test]
score_threshold = 0.05
pre_nms_top_k = 1000
iou_threshold = 0.6
max_detections = 100
"#,
        w2 = 2 * width
    );
    let config: DetectorConfig = toml::from_str(&text).expect("the test config parses");
    config.validate().expect("the test config is valid");
    config
}

/// The dense detector of a distiller's student.
fn dense(model: &kdet_models::Model) -> &Detector {
    model.dense().expect("a dense student")
}

fn size() -> ImageSize {
    ImageSize::new(SIZE, SIZE)
}

/// Two 64x64 images (the second padded: its content is 48 wide) with 2 and 1 objects.
fn batch(device: &Device) -> (ImageBatch, Vec<Instances>) {
    let images = Tensor::<4>::random(
        [2, 3, SIZE as usize, SIZE as usize],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let sizes = vec![size(), ImageSize::new(SIZE, 48)];
    let batch = ImageBatch::new(images, sizes.clone(), sizes.clone()).expect("batch");
    let targets = vec![
        Instances::new(
            sizes[0],
            Boxes::new(vec![[4.0, 6.0, 30.0, 40.0], [36.0, 30.0, 60.0, 62.0]]),
            vec![0, 2],
        )
        .expect("targets"),
        Instances::new(sizes[1], Boxes::new(vec![[10.0, 8.0, 40.0, 28.0]]), vec![1])
            .expect("targets"),
    ];
    (batch, targets)
}

/// Sum of |grad| over a module's parameters that have one, and how many have one.
fn grad_mass<M: Module>(m: &M, grads: &burn::tensor::Gradients) -> (f64, usize) {
    struct G<'a>(&'a burn::tensor::Gradients, f64, usize);
    impl ModuleVisitor for G<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = param.val().grad(self.0) {
                self.1 += g.abs().sum().into_scalar::<f32>() as f64;
                self.2 += 1;
            }
        }
    }
    let mut g = G(grads, 0.0, 0);
    m.visit(&mut g);
    (g.1, g.2)
}

const ALL_METHODS: &str = r#"
inherit = true
[[losses]]
loss = { type = "logit_kd" }
[[losses]]
loss = { type = "fitnet" }
connector = "conv1x1"
[[losses]]
loss = { type = "cwd" }
student = "cls_tower"
[[losses]]
loss = { type = "pkd" }
levels = [0, 2]
[[losses]]
loss = { type = "fgd" }
[[losses]]
loss = { type = "ld" }
[[losses]]
loss = { type = "frs" }
connector = "conv3x3"
schedule = { warmup_iterations = 2 }
[[losses]]
loss = { type = "pgd", topk = 5 }
[[losses]]
loss = { type = "mgd" }
connector = "conv1x1"
[[losses]]
loss = { type = "fbkd", reductions = [2, 2, 2], maxpool_strides = [2, 1, 1] }
[[losses]]
loss = { type = "rm_pfi" }
[[losses]]
loss = { type = "tbd" }
[[losses]]
loss = { type = "lgd", heads = 4 }
[[losses]]
loss = { type = "icd", heads = 4 }
"#;

/// LGD runs without a teacher: no teacher forward, its dynamic teacher's detection loss
/// is not scaled by the recipe weight (the distillation term is), the backbone freeze
/// follows the step, and a recipe needing a teacher is refused by a teacher-free
/// distiller, naming the entry.
#[test]
fn lgd_runs_without_a_teacher() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let lgd = |weight: f32| {
        recipe(&format!(
            "[[losses]]\nloss = {{ type = \"lgd\", heads = 4, freeze_backbone_steps = 2 }}\nweight = {weight}"
        ))
    };
    let student = config(8, 16).init(&device);
    let one = Distiller::teacher_free(student.clone(), &lgd(1.0), size()).expect("lgd alone");
    let mut three = Distiller::teacher_free(student.clone(), &lgd(3.0), size()).expect("lgd alone");
    // The same modules in both: only the recipe weight differs.
    three.entries = one.entries.clone();
    assert!(one.teacher().is_none());
    assert!(one.student_backbone_frozen(1) && !one.student_backbone_frozen(2));
    let (images, targets) = batch(&device);
    let terms = |d: &Distiller| {
        let (losses, timings) = d.step_losses_timed(&images, &targets, 0);
        assert_eq!(timings.expect("active").teacher_ms, 0.0);
        let scalars = losses.scalars();
        let get = |name: &str| {
            scalars
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} in {scalars:?}"))
                .1
        };
        (get("kd.lgd.distill"), get("kd.lgd.teacher"))
    };
    // The recipe weight scales the distillation term only.
    let (d1, t1) = terms(&one);
    assert!(d1.is_finite() && d1 > 0.0 && t1.is_finite() && t1 > 0.0);
    let (d3, t3) = terms(&three);
    assert!((d3 - 3.0 * d1).abs() <= 1e-4 * d3.abs(), "{d3} vs 3 x {d1}");
    assert!((t3 - t1).abs() <= 1e-5 * t1.abs(), "{t3} vs {t1}");

    let err = Distiller::teacher_free(
        student,
        &recipe("[[losses]]\nloss = { type = \"cwd\" }"),
        size(),
    )
    .expect_err("cwd needs a teacher");
    let msg = err.to_string();
    assert!(msg.contains("cwd") && msg.contains("teacher"), "{msg}");
}

/// ICD's value-mimic term trains the student (after its bypass steps) and its value
/// projection, never the teacher-side decoder, encoder or predictor; the auxiliary task
/// trains those and never the student.
#[test]
fn icd_terms_train_what_the_official_trains() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    device.seed(4);
    let teacher = config(16, 16).init(&plain);
    let student = config(8, 16).init(&device);
    let recipe = recipe("[[losses]]\nloss = { type = \"icd\", heads = 4, bypass_steps = 1 }");
    let distiller = Distiller::new(student, teacher, &recipe, size()).expect("icd");
    let (images, targets) = batch(&device);
    let kdet_distill::KdModules::Icd(icd) = &distiller.entries[0].method else {
        panic!("the ICD entry");
    };
    let term = |step: u64, name: &str| {
        let losses = distiller.step_losses(&images, &targets, step);
        losses
            .terms
            .into_iter()
            .find(|t| t.key.to_string() == name)
            .unwrap_or_else(|| panic!("{name}"))
            .value
    };
    let value = term(1, "kd.icd.value");
    assert!(value.clone().into_scalar::<f32>() > 0.0);
    let grads = value.backward();
    assert!(grad_mass(&icd.student_value, &grads).0 > 0.0);
    assert!(grad_mass(&distiller.student, &grads).0 > 0.0);
    for (name, part) in [
        ("decoder", grad_mass(&icd.decoder, &grads)),
        ("encoder", grad_mass(&icd.encoder, &grads)),
        ("predictor", grad_mass(&icd.predictor, &grads)),
    ] {
        assert_eq!(part.1, 0, "{name} gets a gradient from the value term");
    }
    // Inside the bypass steps the student's features are detached.
    let grads = term(0, "kd.icd.value").backward();
    assert_eq!(grad_mass(&distiller.student, &grads).1, 0);
    assert!(grad_mass(&icd.student_value, &grads).0 > 0.0);
    for name in ["kd.icd.identification", "kd.icd.localization"] {
        let grads = term(1, name).backward();
        for (part, mass) in [
            ("decoder", grad_mass(&icd.decoder, &grads)),
            ("encoder", grad_mass(&icd.encoder, &grads)),
            ("predictor", grad_mass(&icd.predictor, &grads)),
        ] {
            assert!(mass.0 > 0.0, "{name}: {part} gets no gradient");
        }
        assert_eq!(grad_mass(&distiller.student, &grads).1, 0, "{name}");
        assert_eq!(grad_mass(&icd.student_value, &grads).1, 0, "{name}");
    }
}

#[test]
fn every_method_trains_the_student_and_its_modules_and_never_the_teacher() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    device.seed(3);
    let teacher = config(16, 16).init(&plain);
    let student = config(8, 16).init(&device);
    let teacher_before = crc(&teacher);
    let mut distiller =
        Distiller::new(student, teacher, &recipe(ALL_METHODS), size()).expect("valid recipe");
    let student_before = crc(&distiller.student);
    let mut optim = AdamWConfig::new().init();
    let (images, targets) = batch(&device);
    let mut logged = Vec::new();
    for step in 0..3u64 {
        let (losses, timings) = distiller.step_losses_timed(&images, &targets, step);
        // Timings travel beside the losses, never among them.
        let timings = timings.expect("every entry is active");
        assert!(timings.teacher_ms >= 0.0 && timings.kd_ms >= 0.0);
        let scalars = losses.scalars();
        for (name, v) in &scalars {
            assert!(v.is_finite(), "step {step}: {name} = {v}");
        }
        if step == 1 {
            logged = scalars.iter().map(|(n, _)| n.clone()).collect();
        }
        let total = losses.total().expect("losses");
        let grads = total.backward();
        if step == 1 {
            // Every entry's trainable modules get gradients: connectors (FitNets 1x1,
            // FRS 3x3) and FGD's GcBlocks on both sides (at init only their zero-initialised
            // last convs can: R(F) = F + W2(...) with W2 = 0).
            for (i, entry) in distiller.entries.iter().enumerate() {
                let (mass, count) = grad_mass(entry, &grads);
                let (_, params) = crc(entry);
                assert_eq!(
                    count > 0,
                    params > 0,
                    "entry {i}: {count} of {params} with grads"
                );
                if params > 0 {
                    assert!(mass > 0.0, "entry {i}: zero gradients");
                }
            }
            let kdet_distill::KdModules::Fgd(fgd) = &distiller.entries[4].method else {
                panic!("entry 4 is the FGD entry");
            };
            for level in &fgd.levels {
                for side in [&level.student, &level.teacher] {
                    let (mass, _) = grad_mass(side, &grads);
                    assert!(mass > 0.0, "a GcBlock has no gradient");
                }
            }
            let (mass, _) = grad_mass(&distiller.student, &grads);
            assert!(mass > 0.0);
        }
        let grads = GradientsParams::from_grads(grads, &distiller);
        distiller = optim.step(1e-3, distiller, grads);
    }
    assert_logged(
        &logged,
        &[
            "kd.logit_kd",
            "kd.fitnet",
            "kd.cwd",
            "kd.pkd",
            "kd.fgd.fg",
            "kd.fgd.bg",
            "kd.fgd.attention",
            "kd.fgd.global",
            "kd.ld.ld",
            "kd.ld.vlr",
            "kd.ld.kd",
            "kd.frs.feature",
            "kd.frs.cls",
            "kd.pgd.cls_fg",
            "kd.pgd.reg",
            "kd.mgd",
            "kd.fbkd.mask_feature",
            "kd.fbkd.channel",
            "kd.fbkd.spatial",
            "kd.fbkd.nonlocal",
            "kd.rm_pfi.rm",
            "kd.rm_pfi.pfi",
            "kd.tbd.hd",
            "kd.tbd.tfd",
            "kd.lgd.distill",
            "kd.lgd.teacher",
            "kd.icd.value",
            "kd.icd.identification",
            "kd.icd.localization",
        ],
    );
    assert_ne!(
        crc(&distiller.student),
        student_before,
        "the student trained"
    );
    let teacher = distiller.teacher().expect("a teacher run");
    assert_eq!(
        crc(teacher),
        teacher_before,
        "the teacher's weights are bitwise unchanged"
    );
}

#[test]
fn inherit_copies_neck_and_head_and_keeps_them_trainable() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let teacher = config(16, 16).init(&plain);
    let (neck, head) = (crc(&teacher.neck), crc(&teacher.head));
    let student = config(8, 16).init(&device);
    assert_ne!(crc(&student.neck), neck);
    let r = recipe("inherit = true\n[[losses]]\nloss = { type = \"pkd\" }\n");
    let d = Distiller::new(student, teacher, &r, size()).expect("valid");
    assert_eq!(crc(&dense(&d.student).head), head);
    // The FPN lateral convs read backbones of different widths (8/16 vs 16/32 channels):
    // they stay at their initial values and are reported; the rest of the neck is copied.
    let skipped = d.not_inherited();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped.iter().all(|p| p.starts_with("neck.lateral")),
        "{skipped:?}"
    );
    assert_ne!(crc(&dense(&d.student).neck), neck);
    let teacher2 = config(16, 16).init(&plain);
    let neck2 = crc(&teacher2.neck);
    let same = Distiller::new(config(16, 16).init(&device), teacher2, &r, size()).expect("valid");
    assert!(same.not_inherited().is_empty());
    assert_eq!(crc(&dense(&same.student).neck), neck2);
    let (images, targets) = batch(&device);
    let grads = d
        .step_losses(&images, &targets, 0)
        .total()
        .expect("loss")
        .backward();
    let (mass, count) = grad_mass(&dense(&d.student).neck, &grads);
    assert!(count > 0 && mass > 0.0, "inherited neck trains");

    // A head of another width cannot be inherited.
    let other = config(8, 32).init(&device);
    let r =
        recipe("inherit = true\n[[losses]]\nloss = { type = \"pkd\" }\nconnector = \"conv1x1\"\n");
    let err = Distiller::new(other, config(16, 16).init(&plain), &r, size())
        .expect_err("mismatched head");
    assert!(
        err.to_string().contains("inherit") && err.to_string().contains("head"),
        "{err}"
    );
}

#[test]
fn wiring_errors_name_the_entry() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let err_of = |student: Detector, teacher: Detector, text: &str| {
        Distiller::new(student, teacher, &recipe(text), size())
            .expect_err("invalid wiring")
            .to_string()
    };
    // Channel mismatch without a connector.
    let e = err_of(
        config(8, 8).init(&device),
        config(16, 16).init(&plain),
        "[[losses]]\nname = \"feat\"\nloss = { type = \"fitnet\" }\n",
    );
    assert!(
        e.contains("losses[0] (feat)") && e.contains("connector"),
        "{e}"
    );
    // A level that does not exist.
    let e = err_of(
        config(8, 16).init(&device),
        config(16, 16).init(&plain),
        "[[losses]]\nloss = { type = \"pkd\" }\nlevels = [0, 5]\n",
    );
    assert!(
        e.contains("losses[0] (pkd)") && e.contains("level 5"),
        "{e}"
    );
    // FBKD's per-level settings must cover the selected levels (defaults: P2-P5).
    let e = err_of(
        config(8, 16).init(&device),
        config(16, 16).init(&plain),
        "[[losses]]\nloss = { type = \"fbkd\" }\n",
    );
    assert!(
        e.contains("losses[0] (fbkd)") && e.contains("reductions has 4 entries for 3 levels"),
        "{e}"
    );
    // ... and every level must survive its non-local sub-sampling (P5 is 2x2 here).
    let e = err_of(
        config(8, 16).init(&device),
        config(16, 16).init(&plain),
        "[[losses]]\nloss = { type = \"fbkd\", reductions = [2, 2, 2], maxpool_strides = [2, 2, 2] }\n",
    );
    assert!(
        e.contains("losses[0] (fbkd)") && e.contains("level 2 is 2x2"),
        "{e}"
    );
    // LD needs GFL heads on both sides.
    let mut fcos = config(16, 16);
    fcos.head = HeadConfig::Fcos(FcosHeadConfig::synth_128(3, 16));
    let e = err_of(
        config(8, 16).init(&device),
        fcos.init(&plain),
        "[[losses]]\nloss = { type = \"ld\" }\n",
    );
    assert!(e.contains("losses[0] (ld)") && e.contains("gfl"), "{e}");
    // RM + PFI reads every level and pairs FPN features with class logits of the same
    // level: no `levels`, both taps `neck`.
    for (text, says) in [
        ("levels = [0, 1]", "remove `levels`"),
        (
            "student = \"cls_tower\"\nteacher = \"cls_tower\"",
            "must be `neck`",
        ),
    ] {
        let e = err_of(
            config(8, 16).init(&device),
            config(16, 16).init(&plain),
            &format!("[[losses]]\nloss = {{ type = \"rm_pfi\" }}\n{text}\n"),
        );
        assert!(e.contains("losses[0] (rm_pfi)") && e.contains(says), "{e}");
    }
    // Fixed-tap methods refuse tap settings.
    let bad: Result<RecipeConfig, _> =
        toml::from_str("[[losses]]\nloss = { type = \"ld\" }\nstudent = \"neck\"\n");
    let e = bad.expect("parses").validate().expect_err("fixed taps");
    assert!(e.contains("remove `student`"), "{e}");
    // Unknown settings of a loss are named; left-out ones take the paper defaults.
    let bad: Result<RecipeConfig, _> =
        toml::from_str("[[losses]]\nloss = { type = \"ld\", ld_temprature = 3 }\n");
    let e = bad.expect_err("unknown key").to_string();
    assert!(
        e.contains("ld_temprature") && e.contains("ld_temperature"),
        "{e}"
    );
    let ok = recipe("[[losses]]\nloss = { type = \"ld\", kd_weight = 3 }\n");
    match &ok.losses[0].loss {
        kdet_distill::recipe::KdLossConfig::Ld(c) => {
            assert_eq!((c.kd_weight, c.ld_temperature), (3.0, 10.0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_distillation_record_loads_into_the_student_alone() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let r = recipe(
        "[[losses]]\nloss = { type = \"fgd\" }\n[[losses]]\nloss = { type = \"fitnet\" }\nconnector = \"conv1x1\"\n",
    );
    let d = Distiller::new(
        config(8, 16).init(&device),
        config(16, 16).init(&plain),
        &r,
        size(),
    )
    .expect("valid");
    let expected = crc(&d.student);
    let record = d.into_record();
    let loaded = DistilledStudent {
        student: config(8, 16).init(&plain).into(),
    }
    .try_load_record(record.clone().allow_unused(true))
    .expect("the student's parameters are all there");
    assert_eq!(crc(&loaded.student), expected);
    // Without allow_unused the distillation modules' parameters are reported.
    assert!(
        DistilledStudent {
            student: config(8, 16).init(&plain).into(),
        }
        .try_load_record(record)
        .is_err()
    );
}

/// `box_correction` (NDet): the student's task losses are its losses on the ground truth
/// fused with the teacher's predictions on the same batch, the boxes move, classes stay,
/// and the teacher does not train.
#[test]
fn box_correction_trains_the_student_on_the_teachers_fused_boxes() {
    use kdet_distill::correction::correct_targets;
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    device.seed(3);
    // An untrained teacher scores about 0.01: no score threshold and any overlap, so
    // that its boxes take part.
    let r = recipe(
        "box_correction = { score_threshold = 0.0, weight = { type = \"step\", iou_threshold = 0.0 } }\n",
    );
    let d = Distiller::new(
        config(8, 16).init(&device),
        config(16, 16).init(&plain),
        &r,
        size(),
    )
    .expect("valid recipe");
    let teacher_before = crc(d.teacher().unwrap());
    let (images, targets) = batch(&device);
    let (losses, timings) = d.step_losses_timed(&images, &targets, 0);
    assert!(timings.is_some_and(|t| t.teacher_ms >= 0.0 && t.kd_ms == 0.0));

    let plain_batch = ImageBatch::new(
        images.images().clone().inner(),
        images.original_sizes().to_vec(),
        images.resized_sizes().to_vec(),
    )
    .expect("batch");
    let out = d.teacher().unwrap().forward(&plain_batch);
    let config = r.box_correction.as_ref().expect("set");
    let (corrected, stats) = correct_targets(config, dense(d.teacher().unwrap()), &out, &targets);
    assert!(stats.boxes > 0 && stats.mean_weight > 0.0, "{stats:?}");
    for (c, t) in corrected.iter().zip(&targets) {
        assert_eq!(c.classes(), t.classes());
        assert_ne!(c.boxes().as_slice(), t.boxes().as_slice());
    }
    let student_out = d.student.forward(&images);
    let assignment = d.student.assign(&student_out, &corrected);
    let want = d.student.loss(&student_out, &corrected, &assignment);
    assert_eq!(losses.scalars(), want.scalars());
    let grads = losses.total().expect("losses").backward();
    let (mass, _) = grad_mass(&d.student, &grads);
    assert!(mass > 0.0);
    assert_eq!(crc(d.teacher().unwrap()), teacher_before);
}
