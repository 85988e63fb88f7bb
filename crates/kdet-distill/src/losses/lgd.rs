//! LGD: Label-Guided self-Distillation for object detection (Zhang et al., AAAI 2022,
//! arXiv:2109.11496): a *teacher-free* method. The "teacher" is built on the fly from the
//! ground-truth labels and the student's own FPN features by a small trainable module, the
//! dynamic teacher, which trains with the student's own detection losses; the student
//! imitates its features. Spec: `../shared/methods/kd-detection.md` §9. Official code:
//! `megvii-research/LGD` (`models/customized_detectors/dynamic_teacher/{dynamic_teacher,
//! label_encoder,spatial_transformer,utils,layers}.py`, `models/base_distillator.py`,
//! `models/adapters/sequential_convs.py`, the RetinaNet R50 2x config
//! `retinanet_R_50_2xMS_stuGuided_addCtxBox=YES_detachAppearanceEmbed=NO_...yaml`), read
//! whole; this file follows it step by step.
//!
//! **Label descriptors.** Per image, every non-crowd object gives a row
//! `[x1/W, y1/H, x2/W, y2/H, onehot_K(class)]`, `W × H` the padded batch size, boxes clamped to
//! `[0, W−1] × [0, H−1]`; with `context_box` (official `ADD_CONTEXT_BOX=True` for RetinaNet)
//! the box `[0, 0, W, H]` with an all-zero class part is appended (the "context" row). An
//! image without objects gets one dummy row, box `[0, 0, 1, 1]`, zero class part, and no
//! context row (the official `box_descriptor_encode`). Every value `v ∈ [0, 1]` is mapped to
//! `2v − 1`.
//!
//! **Label encoder** (official `LabelEncoder`, a PointNet over the rows of one image; all
//! "1-D convolutions" have length 1, so they are linear layers, and every norm is a
//! LayerNorm over the channels without affine parameters, ε 1e-5):
//!
//! ```text
//! STN_k(x)  = fc3 ∘ LNR(fc2) ∘ LNR(fc1) ∘ LNR(c3) ∘ LNR(c2) ∘ LNR(c1) (x)  → k×k   (no identity added)
//!             widths k→64→128→1024→512→256→k²; LNR(f)(x) = ReLU(LN(f x))
//! x₁ = x · STN_k(x);   h = LNR(conv1)(x₁)  (64);   f = h · STN_64(h)
//! g  = LNR(conv3) ∘ LNR(conv2) (f)  (1024);   ĝ = max over the rows of the same image
//! e  = LNR(conv4)([f, ĝ])  (1088 → C)                         label embedding of the row
//! ```
//!
//! **Dynamic teacher** (official `DynamicTeacher`, `interact_pattern = 'stuGuided'`), per FPN
//! level `l` of the student (`[N, C, H_l, W_l]`):
//!
//! ```text
//! ê  = LNR(canoni_proj)(e)                                      (C → C, rows)
//! P  = ReLU(GN₁(conv3x3(F^S_l)))                                student_proj_2D (GN one group, no affine)
//! M  = inside masks: pixel (y, x) belongs to a box scaled by (H_l/H, W_l/W) when
//!      |c_y − y| / h ≤ 0.5 and |c_x − x| / w ≤ 0.5                (official get_inside_gt_mask)
//! a  = M P^T / max(Σ M, 1)                                      appearance embedding per row
//! o  = MHA(query = a, key = value = ê), within each image       (8 heads, dropout 0)
//! R  = conv3x3(Σ_rows local_inst_proj(o_row) ⊗ M_row) + global_ctx_proj(o_context)   (context rows only with context_box)
//! T_l = GN₁ conv ∘ ReLU GN₁ conv ∘ ReLU GN₁ conv (ReLU(R))      refinement_module
//! ```
//!
//! **Terms.** `teacher` (not weighted by the recipe, as the official adds it with no
//! coefficient): the student's own dense head run on the teacher features `T_l`, its task
//! losses against the ground truth with the step's assignment (the grids are the student's,
//! so its assignment is the teacher's); it trains the dynamic teacher, the student's head
//! and, through the appearance embeddings, the student's FPN. `distill` (times the recipe
//! weight, official `LAMBDA = 1`):
//!
//! ```text
//! L_distill = mean over (n, all levels' C·H_l·W_l) of ( IN(adapter(F^S_l)) − IN(T_l) )²
//! ```
//!
//! `IN` an instance norm without affine (ε 1e-5), `adapter` one shared
//! `conv3x3 → ReLU → conv3x3 → ReLU → conv3x3` (official `SequentialConvs`), `T_l` detached.
//! For the first `pre_nondistill_steps` optimizer steps the student features are detached
//! in this term (it trains the adapter only; official `PRE_NONDISTILL_ITERS`), and for the
//! first `freeze_backbone_steps` the student's backbone does not train at all
//! ([`KdMethod::freezes_student_backbone`]; official `PRE_FREEZE_STUDENT_BACKBONE_ITERS`,
//! there by setting the backbone's gradients to `None`). The official trains the dynamic
//! teacher and the student with two SGD optimizers of identical settings, the same as one.
//!
//! **Defaults**: the RetinaNet R50 2x config: context box on, appearance not detached, 8
//! heads, `PRE_NONDISTILL_ITERS = 30000`, `PRE_FREEZE_STUDENT_BACKBONE_ITERS = 20000` of a
//! 180k-step schedule (a recipe for a shorter schedule scales both).
//!
//! **Deliberate deviations / kdet choices**
//! - The official asserts 256 FPN channels and 80 classes; here the width is the student's
//!   neck width (every level the same) and `K` its head's class count.
//! - Initialisation: linear layers and convolutions keep PyTorch's default (burn's
//!   `LinearConfig` / `Conv2dConfig` default is the same Kaiming-uniform `a = √5`); the
//!   attention is burn's `MultiHeadAttention` with Xavier-uniform projections, as kdet's
//!   other transformer blocks (PyTorch's `nn.MultiheadAttention` draws its packed `3C × C`
//!   input projection with one Xavier bound, `√(6 / 4C)`, against `√(6 / 2C)` per
//!   projection here, and keeps its output projection's default init).
//! - Attention within each image is run image by image rather than as one sequence with a
//!   block mask: the same result.
//! - Crowd regions are not objects (as every kdet method); the official reads all boxes.
//! - The segmentation-mask variant (`LOAD_LABELMAP`) and the other interaction patterns
//!   (`labelGuided`, `student_fill`, `teacher_fill`) are not implemented.

use burn::config::Config;
use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use kdet_models::output::FeatureMap;
use kdet_structures::{ImageSize, Instances};

use super::non_crowd;
use crate::connector::ConnectorKind;
use crate::method::{KdInputs, KdMethod, KdTerm, TapUse, Wiring};
use crate::plan::check_neck_beside_head;
use crate::taps::Tap;

/// LGD's switches and its two phases. Defaults: the official RetinaNet R50 2x config.
#[derive(Config, Debug, PartialEq)]
pub struct LgdConfig {
    /// Append the whole-image context row to each image's labels (`ADD_CONTEXT_BOX`).
    #[config(default = true)]
    pub context_box: bool,
    /// Detach the student features the appearance embeddings are pooled from
    /// (`DETACH_APPEARANCE_EMBED`).
    #[config(default = false)]
    pub detach_appearance: bool,
    /// Attention heads (`NR_TRANSFORMER_HEADS`); must divide the neck width.
    #[config(default = 8)]
    pub heads: usize,
    /// Optimizer steps during which the distillation term trains the adapter only
    /// (`PRE_NONDISTILL_ITERS`, 30k of 180k).
    #[config(default = 30000)]
    pub pre_nondistill_steps: u64,
    /// Optimizer steps during which the student's backbone is frozen
    /// (`PRE_FREEZE_STUDENT_BACKBONE_ITERS`, 20k of 180k).
    #[config(default = 20000)]
    pub freeze_backbone_steps: u64,
}

/// Each row standardised over its columns (LayerNorm without affine, ε 1e-5, as every norm
/// of LGD).
fn standardize_rows(x: Tensor<2>) -> Tensor<2> {
    super::normalize_last(x)
}

/// `GroupNorm(1, C)` without affine on `[N, C, H, W]`: per sample over `C·H·W`.
fn group_norm_1(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    standardize_rows(x.reshape([n, c * h * w])).reshape([n, c, h, w])
}

/// `InstanceNorm2d` without affine on `[N, C, H, W]`: per sample and channel over `H·W`.
pub fn instance_norm(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    standardize_rows(x.reshape([n * c, h * w])).reshape([n, c, h, w])
}

/// `ReLU(LayerNorm(linear(x)))`, the unit of the label encoder.
fn lnr(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    relu(standardize_rows(linear.forward(x)))
}

fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).init(device)
}

fn conv3x3(channels: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([channels, channels], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// The label descriptors of a batch and the boxes they were made from.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelBatch {
    /// `[T, 4 + K]` row-major, every value in `[−1, 1]`.
    pub descriptors: Vec<f32>,
    /// Each row's box in padded-batch pixels, clamped (for the inside masks).
    pub boxes: Vec<[f32; 4]>,
    /// Rows per image (`T` in all; every image has at least one: the dummy row of an
    /// image without objects, which with `context_box` stands in as its context row).
    pub counts: Vec<usize>,
}

impl LabelBatch {
    /// The descriptor width `4 + K`.
    pub fn width(&self) -> usize {
        self.descriptors.len() / self.boxes.len()
    }
}

/// The label descriptors of a batch (official `box_descriptor_encode`, `x1y1x2y2`,
/// `one_hot`; see the module docs). Crowd regions are skipped.
///
/// # Panics
/// If a class is not below `num_classes` (the data loader validates classes first).
pub fn encode_labels(
    gt: &[Instances],
    num_classes: usize,
    padded: ImageSize,
    context_box: bool,
) -> LabelBatch {
    let (w, h) = (padded.width as f32, padded.height as f32);
    let mut out = LabelBatch {
        descriptors: Vec::new(),
        boxes: Vec::new(),
        counts: Vec::new(),
    };
    for image in gt {
        let objects = non_crowd(image);
        let mut rows: Vec<([f32; 4], Option<usize>)> = objects
            .iter()
            .map(|&g| {
                let class = image.classes()[g];
                assert!(
                    class < num_classes,
                    "LGD: class {class} of an object is not below the head's {num_classes} classes"
                );
                (image.boxes().as_slice()[g], Some(class))
            })
            .collect();
        let context = context_box && !rows.is_empty();
        if rows.is_empty() {
            rows.push(([0.0, 0.0, 1.0, 1.0], None));
        } else if context {
            rows.push(([0.0, 0.0, w, h], None));
        }
        out.counts.push(rows.len());
        for (b, class) in rows {
            let clamped = [
                b[0].clamp(0.0, w - 1.0),
                b[1].clamp(0.0, h - 1.0),
                b[2].clamp(0.0, w - 1.0),
                b[3].clamp(0.0, h - 1.0),
            ];
            let unit = [
                clamped[0] / w,
                clamped[1] / h,
                clamped[2] / w,
                clamped[3] / h,
            ];
            out.descriptors.extend(unit.iter().map(|v| 2.0 * v - 1.0));
            out.descriptors
                .extend((0..num_classes).map(|k| if Some(k) == class { 1.0 } else { -1.0 }));
            out.boxes.push(clamped);
        }
    }
    out
}

/// Inside masks of `boxes` (padded-batch pixels) on a `height × width` map of a batch padded
/// to `padded`, row-major `[boxes, height · width]` of 0/1 (official `get_inside_gt_mask`:
/// the box is scaled to the map, and a pixel is inside when its distance to the box centre
/// is at most half the box's extent on both axes, in f32 as the official).
pub fn inside_masks(
    boxes: &[[f32; 4]],
    padded: ImageSize,
    height: usize,
    width: usize,
) -> Vec<f32> {
    let rh = height as f32 / padded.height as f32;
    let rw = width as f32 / padded.width as f32;
    let mut out = vec![0.0f32; boxes.len() * height * width];
    for (b, mask) in boxes.iter().zip(out.chunks_mut(height * width)) {
        let (x1, y1, x2, y2) = (b[0] * rw, b[1] * rh, b[2] * rw, b[3] * rh);
        let (xc, yc) = ((x1 + x2) * 0.5, (y1 + y2) * 0.5);
        let (bw, bh) = (x2 - x1, y2 - y1);
        for y in 0..height {
            // A NaN distance (0/0, a degenerate box) is outside, as `dist <= 0.5` is false
            // there in the official.
            let inside_row = (yc - y as f32).abs() / bh <= 0.5;
            if !inside_row {
                continue;
            }
            for x in 0..width {
                let d = (xc - x as f32).abs() / bw;
                if d <= 0.5 {
                    mask[y * width + x] = 1.0;
                }
            }
        }
    }
    out
}

/// A spatial transformer of the label encoder (official `STN(k)`): rows `[T, k]` →
/// transforms `[T, k, k]`.
#[derive(Module, Debug)]
pub struct Stn {
    pub conv1: Linear,
    pub conv2: Linear,
    pub conv3: Linear,
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl Stn {
    pub fn new(k: usize, device: &Device) -> Self {
        Self {
            conv1: linear(k, 64, device),
            conv2: linear(64, 128, device),
            conv3: linear(128, 1024, device),
            fc1: linear(1024, 512, device),
            fc2: linear(512, 256, device),
            fc3: linear(256, k * k, device),
        }
    }

    /// `[T, k]` → `[T, k, k]` (the official's max over the length-1 axis is the identity).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<3> {
        let [t, k] = x.dims();
        let x = lnr(&self.conv3, lnr(&self.conv2, lnr(&self.conv1, x)));
        let x = lnr(&self.fc2, lnr(&self.fc1, x));
        self.fc3.forward(x).reshape([t, k, k])
    }
}

/// `x · m` row by row: `[T, k]` × `[T, k, k]` → `[T, k]`.
fn transform(x: Tensor<2>, m: Tensor<3>) -> Tensor<2> {
    let [t, k] = x.dims();
    x.reshape([t, 1, k]).matmul(m).reshape([t, k])
}

/// The label encoder (official `LabelEncoder`, see the module docs).
#[derive(Module, Debug)]
pub struct LabelEncoder {
    pub stn_desc: Stn,
    pub stn_feat: Stn,
    pub conv1: Linear,
    pub conv2: Linear,
    pub conv3: Linear,
    pub conv4: Linear,
}

impl LabelEncoder {
    /// An encoder of `descriptor`-wide rows into `channels`-wide embeddings.
    pub fn new(descriptor: usize, channels: usize, device: &Device) -> Self {
        Self {
            stn_desc: Stn::new(descriptor, device),
            stn_feat: Stn::new(64, device),
            conv1: linear(descriptor, 64, device),
            conv2: linear(64, 128, device),
            conv3: linear(128, 1024, device),
            conv4: linear(64 + 1024, channels, device),
        }
    }

    /// Label embeddings `[T, C]` of descriptors `[T, k]`, `counts` rows per image (the
    /// global feature is a max over each image's rows).
    ///
    /// # Panics
    /// If `counts` does not sum to `T` or holds a zero.
    pub fn forward(&self, descriptors: Tensor<2>, counts: &[usize]) -> Tensor<2> {
        let t = descriptors.dims()[0];
        assert_eq!(
            counts.iter().sum::<usize>(),
            t,
            "LGD label encoder: rows per image vs rows"
        );
        let x = transform(descriptors.clone(), self.stn_desc.forward(descriptors));
        let h = lnr(&self.conv1, x);
        let feat = transform(h.clone(), self.stn_feat.forward(h));
        let g = lnr(&self.conv3, lnr(&self.conv2, feat.clone()));
        let mut start = 0;
        let global: Vec<Tensor<2>> = counts
            .iter()
            .map(|&n| {
                assert!(n > 0, "LGD label encoder: an image without rows");
                let m = g.clone().narrow(0, start, n).max_dim(0).repeat_dim(0, n);
                start += n;
                m
            })
            .collect();
        lnr(
            &self.conv4,
            Tensor::cat(vec![feat, Tensor::cat(global, 0)], 1),
        )
    }
}

/// LGD's trainable modules: the dynamic teacher and the student-side adapter (all dropped on
/// export). Field names follow the official modules.
#[derive(Module, Debug)]
pub struct LgdModules {
    pub label_encoder: LabelEncoder,
    /// `canoni_proj_1D`: linear + LayerNorm + ReLU on the label embeddings.
    pub canoni_proj: Linear,
    /// `student_proj_2D`: conv3x3 + GroupNorm(1) + ReLU on the student's FPN levels.
    pub student_proj: Conv2d,
    /// `multi_head_attn`.
    pub attention: MultiHeadAttention,
    /// `local_inst_proj_1D`, on the instance rows before rendering.
    pub local_inst_proj_1d: Linear,
    /// `local_inst_proj_2D`, on the rendered map.
    pub local_inst_proj_2d: Conv2d,
    /// `global_ctx_proj_1D`, on the context row.
    pub global_ctx_proj: Linear,
    /// `refinement_module`: three conv3x3, each followed by GroupNorm(1), ReLU between.
    pub refine: Vec<Conv2d>,
    /// The distillation adapter (`SequentialConvs`): three conv3x3, ReLU between; one for
    /// every level.
    pub adapter: Vec<Conv2d>,
}

impl LgdModules {
    /// Modules for a neck of `channels` and label descriptors of `descriptor` values.
    ///
    /// # Panics
    /// If `heads` does not divide `channels`.
    pub fn new(descriptor: usize, channels: usize, heads: usize, device: &Device) -> Self {
        assert!(
            heads > 0 && channels.is_multiple_of(heads),
            "LGD: {heads} attention heads do not divide {channels} channels"
        );
        Self {
            label_encoder: LabelEncoder::new(descriptor, channels, device),
            canoni_proj: linear(channels, channels, device),
            student_proj: conv3x3(channels, device),
            attention: MultiHeadAttentionConfig::new(channels, heads)
                .with_dropout(0.0)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device),
            local_inst_proj_1d: linear(channels, channels, device),
            local_inst_proj_2d: conv3x3(channels, device),
            global_ctx_proj: linear(channels, channels, device),
            refine: (0..3).map(|_| conv3x3(channels, device)).collect(),
            adapter: (0..3).map(|_| conv3x3(channels, device)).collect(),
        }
    }

    /// The dynamic teacher's features, one per student level (same shapes).
    ///
    /// `students[l]` are the student's FPN levels (autodiff device; detached here with
    /// `config.detach_appearance`), `labels` from [`encode_labels`] for the same batch.
    ///
    /// # Shapes
    /// - `students[l]`: `[N, C, H_l, W_l]` → `[N, C, H_l, W_l]`
    ///
    /// # Panics
    /// If there is no level or `labels` is not of `N` images.
    pub fn teacher_features(
        &self,
        config: &LgdConfig,
        students: &[Tensor<4>],
        labels: &LabelBatch,
        padded: ImageSize,
    ) -> Vec<Tensor<4>> {
        assert!(!students.is_empty(), "LGD: no level");
        let device = students[0].device();
        let t = labels.boxes.len();
        let descriptors = Tensor::<2>::from_data(
            TensorData::new(labels.descriptors.clone(), [t, labels.width()]),
            &device,
        );
        let embeddings = self.label_encoder.forward(descriptors, &labels.counts);
        let canonical = lnr(&self.canoni_proj, embeddings);
        students
            .iter()
            .map(|student| {
                let [n, c, h, w] = student.dims();
                assert_eq!(
                    labels.counts.len(),
                    n,
                    "LGD: labels of {} images for a batch of {n}",
                    labels.counts.len()
                );
                let feature = if config.detach_appearance {
                    student.clone().detach()
                } else {
                    student.clone()
                };
                let projected = relu(group_norm_1(self.student_proj.forward(feature)));
                let masks = Tensor::<2>::from_data(
                    TensorData::new(inside_masks(&labels.boxes, padded, h, w), [t, h * w]),
                    &device,
                );
                let mut rendered = Vec::with_capacity(n);
                let mut contexts = Vec::with_capacity(n);
                let mut start = 0;
                for (image, &rows) in labels.counts.iter().enumerate() {
                    let mask = masks.clone().narrow(0, start, rows);
                    let map = projected.clone().narrow(0, image, 1).reshape([c, h * w]);
                    let pixels = mask.clone().sum_dim(1).clamp_min(1.0);
                    let appearance = mask.clone().matmul(map.transpose()) / pixels;
                    let label = canonical
                        .clone()
                        .narrow(0, start, rows)
                        .reshape([1, rows, c]);
                    let attended = self
                        .attention
                        .forward(MhaInput::new(
                            appearance.reshape([1, rows, c]),
                            label.clone(),
                            label,
                        ))
                        .context
                        .reshape([rows, c]);
                    // With `context_box` the last row is the context (the official takes
                    // it so even for an image with the dummy row only).
                    let instances = if config.context_box { rows - 1 } else { rows };
                    let local = if instances == 0 {
                        Tensor::<2>::zeros([c, h * w], &device)
                    } else {
                        self.local_inst_proj_1d
                            .forward(attended.clone().narrow(0, 0, instances))
                            .transpose()
                            .matmul(mask.narrow(0, 0, instances))
                    };
                    rendered.push(local.reshape([1, c, h, w]));
                    if config.context_box {
                        contexts.push(attended.narrow(0, rows - 1, 1));
                    }
                    start += rows;
                }
                let mut x = self.local_inst_proj_2d.forward(Tensor::cat(rendered, 0));
                if config.context_box {
                    let context = self
                        .global_ctx_proj
                        .forward(Tensor::cat(contexts, 0))
                        .reshape([n, c, 1, 1])
                        .expand([n, c, h, w]);
                    x = x + context;
                }
                let x = relu(x);
                let x = relu(group_norm_1(self.refine[0].forward(x)));
                let x = relu(group_norm_1(self.refine[1].forward(x)));
                group_norm_1(self.refine[2].forward(x))
            })
            .collect()
    }

    /// The shared adapter on one student level.
    pub fn adapt(&self, student: Tensor<4>) -> Tensor<4> {
        let x = relu(self.adapter[0].forward(student));
        let x = relu(self.adapter[1].forward(x));
        self.adapter[2].forward(x)
    }

    /// `mean((IN(adapter(F^S_l)) − IN(T_l))²)` over every level's elements together (the
    /// official `F.mse_loss` of the concatenated levels), `T_l` detached, the student
    /// detached too with `detach_student` (the pre-distillation phase). `[1]`, unweighted.
    ///
    /// # Panics
    /// If there is no level or the levels disagree in count or shape.
    pub fn distill_loss(
        &self,
        students: &[Tensor<4>],
        teachers: &[Tensor<4>],
        detach_student: bool,
    ) -> Tensor<1> {
        let mut elements = 0usize;
        let total = super::sum_over_levels("LGD", students, teachers, true, |_, s, t| {
            elements += s.dims().iter().product::<usize>();
            let s = if detach_student {
                s.clone().detach()
            } else {
                s.clone()
            };
            (instance_norm(self.adapt(s)) - instance_norm(t.clone().detach()))
                .square()
                .sum()
        });
        total / elements as f32
    }
}

impl KdMethod for LgdConfig {
    const NAME: &'static str = "lgd";
    type Modules = LgdModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// Every FPN level of the student.
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        false
    }

    /// The teacher features run through the student's dense head.
    fn needs_dense_head(&self) -> bool {
        true
    }

    fn teacher_free(&self) -> bool {
        true
    }

    fn freezes_student_backbone(&self, step: u64) -> bool {
        step < self.freeze_backbone_steps
    }

    fn check(&self, wiring: &Wiring) -> Result<(), String> {
        check_neck_beside_head(wiring, "LGD")?;
        if wiring.entry.connector != ConnectorKind::None {
            return Err(
                "LGD's adapter maps the student's features; remove `connector`".to_string(),
            );
        }
        super::attention_width(&wiring.student_levels(), self.heads, "the neck's")?;
        Ok(())
    }

    fn init(&self, wiring: &Wiring, device: &Device) -> LgdModules {
        let classes = wiring.dense().0.head.num_classes();
        let channels = wiring.student_levels()[0].channels;
        LgdModules::new(4 + classes, channels, self.heads, device)
    }

    fn terms(&self, modules: &LgdModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let student = inputs
            .student_model
            .dense()
            .expect("the planner checks LGD's student is a dense detector");
        let padded = inputs.targets.padded_size;
        let labels = encode_labels(
            inputs.targets.gt,
            student.head.num_classes(),
            padded,
            self.context_box,
        );
        let teachers = modules.teacher_features(self, &inputs.student_features, &labels, padded);
        let maps: Vec<FeatureMap> = teachers
            .iter()
            .zip(inputs.levels)
            .map(|(t, &l)| FeatureMap {
                tensor: t.clone(),
                stride: inputs.student.neck[l].stride,
            })
            .collect();
        let head_levels = student.head.forward(&maps);
        let teacher_loss = student
            .head
            .loss(&head_levels, inputs.targets.gt, inputs.assignment)
            .total()
            .expect("a dense head has task losses");
        let distill = modules.distill_loss(
            &inputs.student_features,
            &teachers,
            inputs.step < self.pre_nondistill_steps,
        );
        vec![
            KdTerm::new("distill", distill),
            KdTerm::unweighted("teacher", teacher_loss),
        ]
    }
}

#[cfg(test)]
#[path = "tests/lgd.rs"]
mod tests;
