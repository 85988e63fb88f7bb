//! ICD: Instance-Conditional knowledge Distillation (Kang et al., NeurIPS 2021,
//! arXiv:2110.12724). Spec: `../shared/methods/kd-detection.md` §8. Official code:
//! `megvii-research/ICD`, `pytorch_release/` (`models/utils.py`: `InstanceEncoder`,
//! `DecoderWrapper`, `OfficialDecoderLayer`, `mask_out_padding`, `PositionEmbeddingSine`;
//! `models/layers/transformer.py`: its `MultiheadAttention`, which also returns the
//! pre-softmax attention logits and the per-head values; `models/teacher.py`:
//! `ModelTeacher_II`; `models/distiller.py`: `InstanceConditionalDistillation`;
//! `utils/build.py`: the defaults; `train_distill.py`), read whole.
//!
//! **Instance queries** (per image, official `InstanceEncoder.get_initial_descriptor`):
//! the `n` ground-truth objects first, then fake ones up to
//! `Q = min(max(1, ⌊n (r + 1)⌋), max(300, n))` (`NUM_NEG_POS_RATIO` r = 5,
//! `MAX_LABELS` 300). A fake object draws its class uniformly, its centre uniformly in
//! `[0, 1)` clipped to `[0.03, 0.97]`, its width and height from `N(0.2, 0.2)` clipped to
//! `[−0.2, 0.6]` then to `[0.002, 0.7]` (the official's own prior when the class count is not
//! COCO's 80), as fractions of the image. Every query (real or fake) gets a reference point,
//! its box centre jittered by `U(−0.3, 0.3)` times the box extent, and a descriptor
//! `[onehot_K(class), sine(ref_x) (128), sine(ref_y) (128), scale (10)]`: the sine part is
//! `[sin(2π p / T_i) for even i, cos(2π p / T_i) for odd i]` over `i < 128`,
//! `T_i = 10000^(2⌊i/2⌋/128)`, sines first; the scale part one-hot encodes
//! `clamp(⌊1.44 ln(w_px) − 5⌋, 0, 4)` and the same of the height. A 3-layer MLP (ReLU
//! between) maps it to a query of the teacher's FPN width `C`.
//!
//! **Conditional decoder** (teacher side, `OfficialDecoderLayer`, one layer): keys are the
//! teacher's selected FPN levels flattened and concatenated (`S` positions) plus a linear
//! projection of their 2-D sine positional encoding (DETR's, padding excluded), values the
//! features themselves; 8-head attention with the query scaled by `d^−½` (`d = C / 8`),
//! padded positions masked; then `LN(q + attn)`, `LN(q + W₂ ReLU(W₁ q))` (`W₁`: `C → 4C`).
//! It returns the attention logits `[8, Q, S]` and the per-head values `V^T = W_v F^T + b_v`
//! (`[S, 8, d]`).
//!
//! **Auxiliary task** (trains the encoder, the decoder and the predictor only; teacher
//! features are constants): a 3-layer MLP gives 5 numbers per decoded query;
//! identification: BCE-with-logits of the first against "is real", averaged over every
//! query of the batch (weight `CONFIDENCE_LOSS_WEIGHT` = 1); localisation: the sigmoid of the
//! other four regresses the distances from the reference point to the box's left, top,
//! right and bottom edges (fractions of the image), `|·|` divided by the box's width or
//! height, summed over the four, averaged over the real objects.
//!
//! **Distillation** (`InstanceConditionalDistillation`, `LOSS_FORM = 'mse'`): the student's
//! values `V^S = W^S_v F^S + b^S_v` (a separate projection, the student-side decoder with
//! `proj_only=True`), and per image, head `h`, channel `c`:
//!
//! ```text
//! m_{h,s}  = Σ_{i real} softmax_s(logit_{h,i,s} / τ)                         (no gradient)
//! L        = w · mean_{n,h,c} Σ_s m_{h,s} (LN(V^S)_{s,h,c} − LN(V^T)_{s,h,c})² / max(Σ_s m_{h,s}, 1e-6)
//! ```
//!
//! `LN` a LayerNorm over the head's `d` channels without affine, `V^T` detached, `w = 8`
//! (`WEIGHT_VALUE`, RetinaNet/FCOS), `τ = 1`. For the first `bypass_steps` optimizer steps
//! (`BYPASS_DISTILL` = 1000 of 90k) the student's features are detached in this term (only
//! its value projection trains).
//!
//! Terms: `value` (the distillation, times the recipe weight), `identification` and
//! `localization` (the auxiliary task, never weighted by the recipe: the official adds them
//! with no coefficient).
//!
//! **Two optimizers**, as the official (`train_distill.py`: `teacher_opt` beside the
//! student's): every ICD module (encoder, decoder, predictor and the student-side value
//! projection) trains with its own AdamW, lr 1e-4, weight decay 1e-4, cosine-decayed over
//! the run ([`KdMethod::own_optimizer`]; the training loop keeps its state in every
//! checkpoint), and none of them is clipped with the student's gradients. `own_optimizer =
//! false` trains them with the run's optimizer instead.
//!
//! **Deliberate deviations** (say them in every result):
//! - The fake objects always use the official's non-COCO prior (uniform class, the boxes
//!   above); its COCO-80 class and box statistics (`configs/coco_obj.json`) are not shipped.
//! - The random numbers (fake objects, jitter) come from ChaCha8 keyed by
//!   `(seed, step, image)` ([`icd_queries`]), not PyTorch's and NumPy's global generators: a
//!   resumed run draws the same ones.
//! - Queries are decoded image by image without padding: the official pads every image to
//!   the longest query list, and its decoder has no self-attention, so the real and fake
//!   queries see the same computation either way.
//! - Initialisation: the attention's projections as PyTorch's `nn.MultiheadAttention`
//!   (Xavier-uniform over the packed `3C × C` input projection, zero biases, default-init
//!   output weight with a zero bias); every other layer PyTorch's default (burn's
//!   `LinearConfig` default is the same).
//! - Crowd regions are not objects (as every kdet method).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid, softmax};
use burn::tensor::{Bool, Device, Tensor, TensorData};
use kdet_models::losses::binary_cross_entropy_with_logits;
use kdet_models::ops::transformer::SinePositionEncodingConfig;
use kdet_structures::{ImageSize, Instances};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::{KdTargets, non_crowd, normalize_last};
use crate::method::{KdInputs, KdMethod, KdTerm, OwnOptimizer, TapUse, Wiring};
use crate::taps::Tap;

/// ICD's settings. Defaults: `pytorch_release/utils/build.py` and the RetinaNet R50 config.
#[derive(Config, Debug, PartialEq)]
pub struct IcdConfig {
    /// `WEIGHT_VALUE` (8 for RetinaNet and FCOS, 3 for the R-CNNs), applied inside.
    #[config(default = 8.0)]
    pub value_weight: f32,
    /// Softmax temperature of the attention mask (`TEMP_VALUE`).
    #[config(default = 1.0)]
    pub temperature: f32,
    /// Fake objects per real one (`NUM_NEG_POS_RATIO`).
    #[config(default = 5.0)]
    pub neg_pos_ratio: f32,
    /// Cap of the query count (`MAX_LABELS`; 100 in the R-CNN configs).
    #[config(default = 300)]
    pub max_labels: usize,
    /// Reference-point jitter, a fraction of the box extent (`SAMPLE_RANGE`).
    #[config(default = 0.3)]
    pub sample_range: f32,
    /// Attention heads (`ATT_HEADS`); must divide the teacher's FPN width.
    #[config(default = 8)]
    pub heads: usize,
    /// Weight of the identification loss (`CONFIDENCE_LOSS_WEIGHT`).
    #[config(default = 1.0)]
    pub confidence_weight: f32,
    /// Optimizer steps during which the student's features are detached in the
    /// distillation term (`BYPASS_DISTILL`, 1000 of 90k).
    #[config(default = 1000)]
    pub bypass_steps: u64,
    /// Train ICD's modules with their own AdamW (the official `teacher_opt`) instead of
    /// the run's optimizer.
    #[config(default = true)]
    pub own_optimizer: bool,
    /// Their AdamW's learning rate (official `build_tea_optimizer`: 1e-4), decayed by a
    /// cosine over the run (`WarmupCosineLR`; its 10 warm-up steps have factor 1).
    #[config(default = 1e-4)]
    pub module_lr: f64,
    /// Their AdamW's weight decay (official 1e-4).
    #[config(default = 1e-4)]
    pub module_weight_decay: f64,
}

/// Width of the sine encoding of each reference coordinate (`num_pos_feats = 128`).
const POS_FEATS: usize = 128;
/// Scale-indicator width: 5 bins for the width, 5 for the height.
const SCALE_FEATS: usize = 10;
/// A masked attention logit (PyTorch uses −∞; after the softmax both are 0 in f32).
const MASKED: f32 = -1.0e9;

/// The queries of one image, built on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageQueries {
    /// `[Q, K + 266]` row-major.
    pub descriptors: Vec<f32>,
    /// Per query the localisation target: reference point to the box's left, top, right
    /// and bottom edges, fractions of the image.
    pub edges: Vec<[f32; 4]>,
    /// Per query the box extent `[w, h, w, h]` the L1 errors are divided by.
    pub extents: Vec<[f32; 4]>,
    /// How many of the queries (the first ones) are real objects.
    pub real: usize,
}

impl ImageQueries {
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }
}

/// The number of queries of an image with `real` objects (official `'relative'` rule).
pub fn query_count(real: usize, neg_pos_ratio: f32, max_labels: usize) -> usize {
    let wanted = ((real as f32 * (neg_pos_ratio + 1.0)) as usize).max(1);
    wanted.min(max_labels.max(real))
}

/// Domain tag of the random stream ("ICD fake").
const STREAM_TAG: u64 = u64::from_le_bytes(*b"ICD fake");

/// A uniform `f32` in `[0, 1)` (24 bits).
fn uniform(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// A standard normal draw (Box–Muller on two uniforms).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = 1.0 - uniform(rng); // (0, 1]
    let u2 = uniform(rng);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// The sine encoding of one coordinate in `[0, 1]` (see the module docs).
fn sine(p: f32, out: &mut Vec<f32>) {
    let angle = |i: usize| {
        let t = 10000f32.powf(2.0 * (i / 2) as f32 / POS_FEATS as f32);
        p * 2.0 * std::f32::consts::PI / t
    };
    out.extend((0..POS_FEATS).step_by(2).map(|i| angle(i).sin()));
    out.extend((1..POS_FEATS).step_by(2).map(|i| angle(i).cos()));
}

/// The scale bin of a box side of `pixels`.
fn scale_bin(pixels: f32) -> usize {
    (pixels.ln() * 1.44 - 5.0).clamp(0.0, 4.0) as usize
}

/// The queries of every image of a batch for optimizer step `step` (see the module docs).
/// A pure function of `(gt, sizes, config, seed, step)`: fake objects and jitters come from
/// ChaCha8 keyed by `(seed, step, image)`.
///
/// # Panics
/// If a class is not below `num_classes`.
pub fn icd_queries(
    config: &IcdConfig,
    gt: &[Instances],
    image_sizes: &[ImageSize],
    num_classes: usize,
    seed: u64,
    step: u64,
) -> Vec<ImageQueries> {
    gt.iter()
        .zip(image_sizes)
        .enumerate()
        .map(|(image, (instances, size))| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            key[8..16].copy_from_slice(&step.to_le_bytes());
            key[16..24].copy_from_slice(&(image as u64).to_le_bytes());
            key[24..].copy_from_slice(&STREAM_TAG.to_le_bytes());
            let mut rng = ChaCha8Rng::from_seed(key);
            let (w, h) = (size.width as f32, size.height as f32);
            let objects = non_crowd(instances);
            let count = query_count(objects.len(), config.neg_pos_ratio, config.max_labels);
            let mut rows: Vec<([f32; 4], usize)> = objects
                .iter()
                .map(|&g| {
                    let b = instances.boxes().as_slice()[g];
                    let class = instances.classes()[g];
                    assert!(
                        class < num_classes,
                        "ICD: class {class} is not below the {num_classes} classes"
                    );
                    ([b[0] / w, b[1] / h, b[2] / w, b[3] / h], class)
                })
                .collect();
            while rows.len() < count {
                let class = (rng.next_u32() as usize) % num_classes;
                let cx = uniform(&mut rng).clamp(0.03, 0.97);
                let cy = uniform(&mut rng).clamp(0.03, 0.97);
                let side = |rng: &mut ChaCha8Rng| {
                    (0.2 + 0.2 * normal(rng)).clamp(-0.2, 0.6).clamp(2e-3, 0.7)
                };
                let (bw, bh) = (side(&mut rng), side(&mut rng));
                let b = [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0]
                    .map(|v| v.clamp(0.0, 1.0));
                rows.push((b, class));
            }
            let width = num_classes + 2 * POS_FEATS + SCALE_FEATS;
            let mut q = ImageQueries {
                descriptors: Vec::with_capacity(count * width),
                edges: Vec::with_capacity(count),
                extents: Vec::with_capacity(count),
                real: objects.len(),
            };
            for (b, class) in rows {
                let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
                let jitter =
                    |rng: &mut ChaCha8Rng| (uniform(rng) - 0.5) * config.sample_range * 2.0;
                let rx = (b[0] + b[2]) / 2.0 + jitter(&mut rng) * bw;
                let ry = (b[1] + b[3]) / 2.0 + jitter(&mut rng) * bh;
                q.descriptors
                    .extend((0..num_classes).map(|k| if k == class { 1.0 } else { 0.0 }));
                sine(rx, &mut q.descriptors);
                sine(ry, &mut q.descriptors);
                let mut scale = [0.0f32; SCALE_FEATS];
                scale[scale_bin(bw * w)] = 1.0;
                scale[5 + scale_bin(bh * h)] = 1.0;
                q.descriptors.extend(scale);
                q.edges.push([rx - b[0], ry - b[1], b[2] - rx, b[3] - ry]);
                q.extents.push([bw, bh, bw, bh]);
            }
            q
        })
        .collect()
}

/// Padding of one FPN level, row-major `[N, H_l, W_l]`, `true` on padding (official
/// `mask_out_padding`: the level's stride is the mean of the two axes' ratios, and an
/// image's valid extent is `⌈size / stride⌉`).
pub fn level_padding(targets: &KdTargets, height: usize, width: usize) -> Vec<bool> {
    let pad = targets.padded_size;
    let stride = (pad.height as f64 / height as f64 + pad.width as f64 / width as f64) / 2.0;
    let mut out = vec![true; targets.image_sizes.len() * height * width];
    for (size, mask) in targets
        .image_sizes
        .iter()
        .zip(out.chunks_mut(height * width))
    {
        let (vh, vw) = (
            (size.height as f64 / stride).ceil() as usize,
            (size.width as f64 / stride).ceil() as usize,
        );
        for y in 0..vh.min(height) {
            for x in 0..vw.min(width) {
                mask[y * width + x] = false;
            }
        }
    }
    out
}

/// A multi-layer perceptron with ReLU between its layers (official `MLP`).
#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Linear>,
}

impl Mlp {
    pub fn new(dims: &[usize], device: &Device) -> Self {
        Self {
            layers: dims
                .windows(2)
                .map(|d| LinearConfig::new(d[0], d[1]).init(device))
                .collect(),
        }
    }

    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }
}

/// A `C → C` projection of PyTorch's `nn.MultiheadAttention` input: Xavier-uniform with the
/// bound of the packed `3C × C` weight, zero bias.
fn in_projection(channels_in: usize, channels: usize, device: &Device) -> Linear {
    let bound = (6.0 / (channels_in + 3 * channels) as f64).sqrt();
    let mut linear = LinearConfig::new(channels_in, channels)
        .with_initializer(Initializer::Uniform {
            min: -bound,
            max: bound,
        })
        .init(device);
    linear.bias = Some(Param::from_tensor(Tensor::zeros([channels], device)));
    linear
}

/// The teacher-side conditional decoder (official `OfficialDecoderLayer` with its
/// `MultiheadAttention`).
#[derive(Module, Debug)]
pub struct ConditionalDecoder {
    pub pos_projector: Linear,
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub out: Linear,
    pub linear_in: Linear,
    pub linear_out: Linear,
    pub norm1: LayerNorm,
    pub norm2: LayerNorm,
}

/// What the decoder gives for one image.
pub struct Decoded {
    /// The decoded queries `[Q, C]`.
    pub queries: Tensor<2>,
    /// Attention logits `[heads, Q, S]`, padded positions at a large negative value.
    pub logits: Tensor<3>,
    /// Per-head values `[S, heads, d]`.
    pub values: Tensor<3>,
}

impl ConditionalDecoder {
    pub fn new(channels: usize, device: &Device) -> Self {
        let mut out = LinearConfig::new(channels, channels).init(device);
        out.bias = Some(Param::from_tensor(Tensor::zeros([channels], device)));
        Self {
            pos_projector: LinearConfig::new(channels, channels).init(device),
            query: in_projection(channels, channels, device),
            key: in_projection(channels, channels, device),
            value: in_projection(channels, channels, device),
            out,
            linear_in: LinearConfig::new(channels, 4 * channels).init(device),
            linear_out: LinearConfig::new(4 * channels, channels).init(device),
            norm1: LayerNormConfig::new(channels).init(device),
            norm2: LayerNormConfig::new(channels).init(device),
        }
    }

    /// Decodes the queries `[Q, C]` of one image against its features `[S, C]` with their
    /// positional encoding `[S, C]` and padding `[S]` (1 on padding).
    pub fn forward(
        &self,
        queries: Tensor<2>,
        features: Tensor<2>,
        positions: Tensor<2>,
        padding: Tensor<1>,
        heads: usize,
    ) -> Decoded {
        let [q_len, c] = queries.dims();
        let s = features.dims()[0];
        let d = c / heads;
        let keys = self
            .key
            .forward(features.clone() + self.pos_projector.forward(positions));
        let values = self.value.forward(features).reshape([s, heads, d]);
        let q = self
            .query
            .forward(queries.clone())
            .mul_scalar((d as f32).powf(-0.5))
            .reshape([q_len, heads, d])
            .swap_dims(0, 1);
        let k = keys.reshape([s, heads, d]).permute([1, 2, 0]);
        let masked = padding.reshape([1, 1, s]).mul_scalar(MASKED);
        let logits = q.matmul(k) + masked;
        let attended = softmax(logits.clone(), 2)
            .matmul(values.clone().swap_dims(0, 1))
            .swap_dims(0, 1)
            .reshape([q_len, c]);
        let x = self.norm1.forward(queries + self.out.forward(attended));
        let y = self
            .linear_out
            .forward(relu(self.linear_in.forward(x.clone())));
        Decoded {
            queries: self.norm2.forward(x + y),
            logits,
            values,
        }
    }
}

/// ICD's trainable modules (all dropped on export).
#[derive(Module, Debug)]
pub struct IcdModules {
    /// Descriptor → query (`InstanceEncoder.encoder`).
    pub encoder: Mlp,
    /// Decoded query → identification logit and four edges (`InstanceEncoder.predictor`).
    pub predictor: Mlp,
    /// The teacher-side decoder.
    pub decoder: ConditionalDecoder,
    /// The student-side value projection (the student decoder's `proj_only` path),
    /// `C_S → C`.
    pub student_value: Linear,
}

impl IcdModules {
    /// Modules for `num_classes`, student width `student` and teacher width `teacher`.
    pub fn new(num_classes: usize, student: usize, teacher: usize, device: &Device) -> Self {
        let descriptor = num_classes + 2 * POS_FEATS + SCALE_FEATS;
        Self {
            encoder: Mlp::new(&[descriptor, teacher, teacher, teacher], device),
            predictor: Mlp::new(&[teacher, teacher, teacher, 5], device),
            decoder: ConditionalDecoder::new(teacher, device),
            student_value: in_projection(student, teacher, device),
        }
    }
}

/// Rows `[N·S, C]` of levels `[N, C, H_l, W_l]`, image by image: image `n`'s positions are
/// rows `n·S..(n+1)·S`, each level's `H_l·W_l` in row-major order, levels in order.
fn image_rows(levels: &[Tensor<4>]) -> Vec<Tensor<2>> {
    let n = levels[0].dims()[0];
    (0..n)
        .map(|i| {
            let rows: Vec<Tensor<2>> = levels
                .iter()
                .map(|l| {
                    let [_, c, h, w] = l.dims();
                    l.clone().narrow(0, i, 1).reshape([c, h * w]).transpose()
                })
                .collect();
            Tensor::cat(rows, 0)
        })
        .collect()
}

/// The distillation term (without `value_weight`): per image `[S, heads, d]` student and
/// teacher values (both already layer-normed; the teacher's constant) and `[heads, S]`
/// masks (constants), `mean_{n,h,c} Σ_s m (V^S − V^T)² / max(Σ_s m, 1e-6)`.
///
/// # Panics
/// If there is no image or the shapes disagree.
pub fn value_mimic_loss(
    students: &[Tensor<3>],
    teachers: &[Tensor<3>],
    masks: &[Tensor<2>],
) -> Tensor<1> {
    assert!(!students.is_empty(), "ICD: no image");
    let per_image: Vec<Tensor<3>> = students
        .iter()
        .zip(teachers)
        .zip(masks)
        .map(|((s, t), m)| {
            let [len, heads, d] = s.dims();
            assert_eq!(t.dims(), [len, heads, d], "ICD: student vs teacher values");
            assert_eq!(m.dims(), [heads, len], "ICD: mask vs values");
            let weight = m.clone().transpose().reshape([len, heads, 1]);
            let total = weight.clone().sum_dim(0).clamp_min(1e-6); // [1, heads, 1]
            ((s.clone() - t.clone()).square() * weight).sum_dim(0) / total
        })
        .collect();
    Tensor::cat(per_image, 0).mean()
}

impl KdMethod for IcdConfig {
    const NAME: &'static str = "icd";
    type Modules = IcdModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// The FPN levels (official P3–P7 for RetinaNet and FCOS).
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        false
    }

    /// The class count of the descriptors is the student head's.
    fn needs_dense_head(&self) -> bool {
        true
    }

    fn own_optimizer(&self) -> Option<OwnOptimizer> {
        self.own_optimizer.then_some(OwnOptimizer {
            lr: self.module_lr,
            weight_decay: self.module_weight_decay,
        })
    }

    fn check(&self, wiring: &Wiring) -> Result<(), String> {
        let c = super::attention_width(&wiring.teacher_levels(), self.heads, "the teacher's")?;
        if !c.is_multiple_of(2) {
            return Err(format!(
                "the teacher's FPN width {c} must be even (half of it per axis of the positional encoding)"
            ));
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 {
            return Err(format!(
                "temperature must be positive, got {}",
                self.temperature
            ));
        }
        Ok(())
    }

    fn init(&self, wiring: &Wiring, device: &Device) -> IcdModules {
        let classes = wiring.dense().0.head.num_classes();
        // The student features reach the method after the entry's connector, so with the
        // teacher's width (the planner checks it).
        let c = wiring.teacher_levels()[0].channels;
        IcdModules::new(classes, c, c, device)
    }

    fn terms(&self, modules: &IcdModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let students = &inputs.student_features;
        let teachers = &inputs.teacher_features;
        let device = students[0].device();
        let student_model = inputs
            .student_model
            .dense()
            .expect("the planner checks ICD's student is a dense detector");
        let queries = icd_queries(
            self,
            inputs.targets.gt,
            inputs.targets.image_sizes,
            student_model.head.num_classes(),
            inputs.seed,
            inputs.step,
        );
        let c = teachers[0].dims()[1];
        // Keys: teacher features, their positional encoding and padding, image by image.
        let encoding = SinePositionEncodingConfig::new(c / 2);
        let mut positions = Vec::with_capacity(teachers.len());
        let mut paddings = Vec::with_capacity(teachers.len());
        for t in teachers {
            let [b, _, h, w] = t.dims();
            let pad = level_padding(inputs.targets, h, w);
            let pad_f: Vec<f32> = pad.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
            paddings.push(Tensor::<4>::from_data(
                TensorData::new(pad_f, [b, 1, h, w]),
                &t.device(),
            ));
            let mask = Tensor::<3, Bool>::from_data(TensorData::new(pad, [b, h, w]), &t.device());
            positions.push(encoding.encode(b, h, w, Some(mask), &t.device()));
        }
        let teacher_rows = image_rows(teachers);
        let position_rows = image_rows(&positions);
        let padding_rows = image_rows(&paddings);
        let student_features: Vec<Tensor<4>> = if inputs.step < self.bypass_steps {
            students.iter().map(|s| s.clone().detach()).collect()
        } else {
            students.clone()
        };
        let student_rows = image_rows(&student_features);

        let heads = self.heads;
        let d = c / heads;
        let (mut s_values, mut t_values, mut masks) = (Vec::new(), Vec::new(), Vec::new());
        let (mut conf_sum, mut reg_sum): (Option<Tensor<1>>, Option<Tensor<1>>) = (None, None);
        let (mut query_total, mut real_total) = (0usize, 0usize);
        let add = |acc: &mut Option<Tensor<1>>, x: Tensor<1>| {
            *acc = Some(match acc.take() {
                Some(a) => a + x,
                None => x,
            });
        };
        for (i, q) in queries.iter().enumerate() {
            let width = q.descriptors.len() / q.len();
            let descriptors = Tensor::<2>::from_data(
                TensorData::new(q.descriptors.clone(), [q.len(), width]),
                &device,
            );
            let encoded = modules.encoder.forward(descriptors);
            let decoded = modules.decoder.forward(
                encoded,
                teacher_rows[i].clone(),
                position_rows[i].clone(),
                padding_rows[i].clone().reshape([teacher_rows[i].dims()[0]]),
                heads,
            );
            // The auxiliary task.
            let predicted = modules.predictor.forward(decoded.queries);
            let real: Vec<f32> = (0..q.len())
                .map(|r| if r < q.real { 1.0 } else { 0.0 })
                .collect();
            let real = Tensor::<1>::from_data(TensorData::new(real, [q.len()]), &device);
            let confidence = predicted.clone().narrow(1, 0, 1).reshape([q.len()]);
            add(
                &mut conf_sum,
                binary_cross_entropy_with_logits(confidence, real).sum(),
            );
            query_total += q.len();
            if q.real > 0 {
                let edges: Vec<f32> = q.edges[..q.real].iter().flatten().copied().collect();
                let extents: Vec<f32> = q.extents[..q.real]
                    .iter()
                    .flatten()
                    .map(|e| e.max(1e-7))
                    .collect();
                let edges = Tensor::<2>::from_data(TensorData::new(edges, [q.real, 4]), &device);
                let extents =
                    Tensor::<2>::from_data(TensorData::new(extents, [q.real, 4]), &device);
                let boxes = sigmoid(predicted.narrow(0, 0, q.real).narrow(1, 1, 4));
                add(&mut reg_sum, ((boxes - edges).abs() / extents).sum());
                real_total += q.real;
            }
            // The distillation.
            let s = decoded.values.dims()[0];
            let mask = if q.real > 0 {
                softmax(
                    decoded
                        .logits
                        .detach()
                        .narrow(1, 0, q.real)
                        .div_scalar(self.temperature),
                    2,
                )
                .sum_dim(1)
                .reshape([heads, s])
            } else {
                Tensor::<2>::zeros([heads, s], &device)
            };
            masks.push(mask);
            t_values.push(normalize_last(decoded.values.detach()));
            s_values.push(normalize_last(
                modules
                    .student_value
                    .forward(student_rows[i].clone())
                    .reshape([s, heads, d]),
            ));
        }
        let value = value_mimic_loss(&s_values, &t_values, &masks).mul_scalar(self.value_weight);
        let identification = conf_sum
            .expect("a batch has images")
            .div_scalar(query_total as f32)
            .mul_scalar(self.confidence_weight);
        let localization = match reg_sum {
            Some(sum) => sum.div_scalar(real_total as f32),
            None => Tensor::<1>::zeros([1], &device),
        };
        vec![
            KdTerm::new("value", value),
            KdTerm::unweighted("identification", identification),
            KdTerm::unweighted("localization", localization),
        ]
    }
}

#[cfg(test)]
#[path = "tests/icd.rs"]
mod tests;
