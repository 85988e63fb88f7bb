//! MGD: Masked Generative Distillation (Yang et al., ECCV 2022, arXiv:2205.01529), as
//! MMRazor's `MGDConnector` + `MGDLoss` (`mmrazor/models/architectures/connectors/
//! mgd_connector.py`, `mmrazor/models/losses/mgd_loss.py`, read at `open-mmlab/mmrazor`
//! `90c7af1f`; identical in the `mmrazor==1.0.0` wheel); spec
//! `../shared/methods/kd-detection.md` §11.1 (MGD), §13.
//!
//! Per FPN level, with student feature `F^S` (`[N, C_S, H, W]`), teacher feature `F^T`
//! (`[N, C_T, H, W]`) and a random 0/1 spatial mask `M` (`[N, 1, H, W]`):
//!
//! ```text
//! A   = W_align F^S            (1x1 conv C_S -> C_T, only when C_S != C_T; else A = F^S)
//! G   = W_2 * ReLU(W_1 * (M ⊙ A) + b_1) + b_2        (two 3x3 convs, padding 1, C_T -> C_T)
//! L_l = α · 1/N · Σ_{n,c,h,w} (G − F^T)²
//! L   = Σ_l L_l
//! ```
//!
//! The mask: MMRazor draws `u ~ U[0, 1)` per image and position, fresh every step, and
//! zeroes the position where `u > 1 − λ` (so a fraction `λ` of the positions is dropped;
//! the same mask for every channel). Here the mask is an explicit input of
//! [`MgdModules::forward`], so parity tests can feed the official mask and training can
//! draw it deterministically with [`mgd_masks`] from `(seed, step, level)` alone: a run
//! killed and resumed at step `k` draws the same masks as an uninterrupted one.
//!
//! **Official reduction**: sum over all elements divided by the batch size `N`
//! (`nn.MSELoss(reduction='sum') / N`), times `α` inside the loss. That is why `α` is as
//! small as 2e-5.
//!
//! **Defaults** (`MgdConfig::new()`): the only MMRazor detection config,
//! `configs/distill/mmdet/mgd/mgd_fpn_retina_x101_retina_r50_2x_coco.py`: `α = 2e-5`
//! (`MGDLoss(alpha_mgd=0.00002)`, also the class default), `λ = 0.65`
//! (`MGDConnector(lambda_mgd=0.65)`, also the class default), on all five FPN outputs
//! `neck.fpn_convs.{0..4}.conv` with 256 channels on both sides (so no `align`). That
//! config also initialises the student's neck and bbox head from the teacher checkpoint
//! (`init_cfg=Pretrained`, spec §13.3): a recipe switch, not part of this file.
//!
//! **Trainable modules** ([`MgdModules`], student side; dropped on export): per level the
//! optional `align` conv and the generation block. Init as the official: the connector has
//! `init_cfg=None` and sits in the distiller's `nn.ModuleDict`, which mmengine's
//! `init_weights` does not descend into, so every conv keeps PyTorch's default init
//! (Kaiming-uniform `a=√5` weights, `U(±1/√fan_in)` biases), which burn's `Conv2dConfig`
//! default reproduces. The teacher has no module here; `F^T` is a constant.
//!
//! **Gradients**: to the student feature (through `M ⊙ A`: zero at dropped positions),
//! `align` and both generation convs. The mask is a constant (host-drawn, no gradient,
//! as `torch.rand` in the official code).
//!
//! **Deliberate deviations / notes**
//! - The mask is drawn from ChaCha8 keyed by `(seed, step, level)` ([`mgd_masks`]) instead
//!   of PyTorch's global generator; only its distribution (i.i.d. `U[0,1)` with 24-bit
//!   resolution, zero where `u > 1 − λ`) matches the official one, not its values.
//! - MMRazor's `mask_on_channel=True` variant (mask `[N, C, 1, 1]`, used by its
//!   classification configs only) is not implemented: the mask must be `[N, 1, H, W]`.
//!
//! State-dict names (MMRazor connector `s_fpn{l}_connector`): `align.{weight,bias}` →
//! `levels[l].align`, `generation.0.{weight,bias}` → `levels[l].generation_0`,
//! `generation.2.{weight,bias}` → `levels[l].generation_2` (`.1` is the ReLU).

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::sum_over_levels;
use crate::method::{KdInputs, KdMethod, KdTerm, TapUse, Wiring};
use crate::taps::Tap;

/// MGD coefficient and mask ratio. Defaults: MMRazor
/// `configs/distill/mmdet/mgd/mgd_fpn_retina_x101_retina_r50_2x_coco.py` (= the class
/// defaults of `MGDLoss` and `MGDConnector`).
#[derive(Config, Debug, PartialEq)]
pub struct MgdConfig {
    /// Loss coefficient `α` (config `alpha_mgd=0.00002`), applied inside the loss.
    #[config(default = 2e-5)]
    pub alpha: f32,
    /// Fraction `λ` of the positions that are masked out (config `lambda_mgd=0.65`).
    #[config(default = 0.65)]
    pub lambda: f32,
}

/// The trainable MGD modules of one level (official `MGDConnector`).
#[derive(Module, Debug)]
pub struct MgdLevel {
    /// 1×1 conv `C_S → C_T` with bias, present only when the channel counts differ
    /// (official `align`; applied before masking).
    pub align: Option<Conv2d>,
    /// First generation conv, 3×3, padding 1, `C_T → C_T`, with bias (official
    /// `generation.0`).
    pub generation_0: Conv2d,
    /// Second generation conv, after a ReLU, 3×3, padding 1, `C_T → C_T`, with bias
    /// (official `generation.2`).
    pub generation_2: Conv2d,
}

impl MgdLevel {
    /// A level mapping `student_channels` to `teacher_channels`, PyTorch-default init.
    ///
    /// # Panics
    /// If a channel count is zero.
    pub fn new(student_channels: usize, teacher_channels: usize, device: &Device) -> Self {
        assert!(
            student_channels > 0 && teacher_channels > 0,
            "MGD: channel counts must be positive, got {student_channels} -> {teacher_channels}"
        );
        let align = (student_channels != teacher_channels)
            .then(|| Conv2dConfig::new([student_channels, teacher_channels], [1, 1]).init(device));
        let generation = || {
            Conv2dConfig::new([teacher_channels, teacher_channels], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            align,
            generation_0: generation(),
            generation_2: generation(),
        }
    }

    /// The generated feature `G(M ⊙ align(F^S))`.
    ///
    /// # Shapes
    /// - `student`: `[N, C_S, H, W]`
    /// - `mask`: `[N, 1, H, W]`, 0/1 (1 = keep)
    /// - output: `[N, C_T, H, W]`
    pub fn generate(&self, student: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
        let aligned = match &self.align {
            Some(align) => align.forward(student),
            None => student,
        };
        let [n, c, h, w] = aligned.dims();
        assert_eq!(
            mask.dims(),
            [n, 1, h, w],
            "MGD: the mask must be [N, 1, H, W] = [{n}, 1, {h}, {w}]"
        );
        let masked = aligned * mask.expand([n, c, h, w]);
        self.generation_2
            .forward(relu(self.generation_0.forward(masked)))
    }
}

/// The trainable MGD modules: one [`MgdLevel`] per distilled level (student side,
/// dropped on export).
#[derive(Module, Debug)]
pub struct MgdModules {
    pub levels: Vec<MgdLevel>,
}

impl MgdConfig {
    /// One [`MgdLevel`] per distilled level: `student_channels[l] → teacher_channels[l]`
    /// (an `align` conv only where they differ, as the official connector).
    ///
    /// # Panics
    /// If the two lists differ in length or a channel count is zero.
    pub fn init(
        &self,
        student_channels: &[usize],
        teacher_channels: &[usize],
        device: &Device,
    ) -> MgdModules {
        assert_eq!(
            student_channels.len(),
            teacher_channels.len(),
            "MGD: {} student channel counts for {} teacher levels",
            student_channels.len(),
            teacher_channels.len()
        );
        MgdModules {
            levels: student_channels
                .iter()
                .zip(teacher_channels)
                .map(|(&s, &t)| MgdLevel::new(s, t, device))
                .collect(),
        }
    }
}

impl MgdModules {
    /// `α Σ_l 1/N Σ (G_l(M_l ⊙ align(F^S_l)) − F^T_l)²`, a `[1]` scalar without the recipe
    /// weight.
    ///
    /// `students[l]` lives on the autodiff device; `teachers[l]` and `masks[l]` are
    /// constants (plain device), e.g. from [`mgd_masks`].
    ///
    /// # Shapes
    /// - `students[l]`: `[N, C_S_l, H_l, W_l]`
    /// - `teachers[l]`: `[N, C_T_l, H_l, W_l]`
    /// - `masks[l]`: `[N, 1, H_l, W_l]`, 0 = masked out, 1 = kept
    /// - returns `[1]`
    ///
    /// # Panics
    /// If there is no level, the level counts differ, or a shape disagrees.
    pub fn forward(
        &self,
        config: &MgdConfig,
        students: &[Tensor<4>],
        teachers: &[Tensor<4>],
        masks: &[Tensor<4>],
    ) -> Tensor<1> {
        super::assert_level_counts(
            "MGD",
            self.levels.len(),
            &[("student", students.len()), ("mask", masks.len())],
        );
        sum_over_levels("MGD", students, teachers, false, |l, student, teacher| {
            let generated = self.levels[l].generate(student.clone(), masks[l].clone());
            assert_eq!(
                generated.dims(),
                teacher.dims(),
                "MGD: level {l}: generated [N, C_T, H, W] (expected) vs teacher shape"
            );
            let n = teacher.dims()[0];
            assert!(n > 0, "MGD: empty batch");
            (generated - teacher.clone())
                .square()
                .sum()
                .mul_scalar(config.alpha / n as f32)
        })
    }
}

/// Domain tag in the key of the mask stream ("MGD mask", little-endian), so no other
/// ChaCha stream of kdet keyed by the same numbers can coincide with it.
const MASK_STREAM_TAG: u64 = u64::from_le_bytes(*b"MGD mask");

/// The keep/drop values of one MGD mask, row-major `[N, H, W]`: `1.0` = kept, `0.0` =
/// masked out.
///
/// A pure function of `(lambda, seed, step, level, shape)`: the values come from ChaCha8
/// keyed by `(seed, step, level, tag)` (no state carried between steps), each position
/// draws `u = (next_u32 >> 8) · 2⁻²⁴ ∈ [0, 1)` in row-major order and is dropped when
/// `u > 1 − λ` (the official rule), so a fraction `λ` is dropped on average.
pub fn mgd_mask_values(
    lambda: f32,
    seed: u64,
    step: u64,
    level: usize,
    [n, h, w]: [usize; 3],
) -> Vec<f32> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&step.to_le_bytes());
    key[16..24].copy_from_slice(&(level as u64).to_le_bytes());
    key[24..].copy_from_slice(&MASK_STREAM_TAG.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    let threshold = 1.0 - lambda;
    (0..n * h * w)
        .map(|_| {
            let u = (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
            if u > threshold { 0.0 } else { 1.0 }
        })
        .collect()
}

/// The MGD mask of one level for one step, as a tensor ready for
/// [`MgdModules::forward`] (see [`mgd_mask_values`] for how it is drawn).
///
/// `level` is any stable id of the level (its position in the method's level list);
/// `step` the optimizer step. Build it on the teacher's (plain) device: it is a constant.
///
/// # Shapes
/// - `shape`: `[N, H, W]`
/// - output: `[N, 1, H, W]`
pub fn mgd_masks(
    lambda: f32,
    seed: u64,
    step: u64,
    level: usize,
    shape: [usize; 3],
    device: &Device,
) -> Tensor<4> {
    let [n, h, w] = shape;
    let values = mgd_mask_values(lambda, seed, step, level, shape);
    Tensor::from_data(TensorData::new(values, [n, 1, h, w]), device)
}

impl KdMethod for MgdConfig {
    const NAME: &'static str = "mgd";
    type Modules = MgdModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// FPN outputs (the official config taps `neck.fpn_convs.{0..4}.conv`).
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        false
    }

    /// One generation block per selected level. The official connector's `align` 1×1 conv
    /// is the entry's `connector = "conv1x1"` here (the same conv, on the student side),
    /// so the student feature reaching MGD already has the teacher's channels and no
    /// second `align` is built.
    fn init(&self, wiring: &Wiring, device: &Device) -> MgdModules {
        let channels: Vec<usize> = wiring.teacher_levels().iter().map(|l| l.channels).collect();
        MgdConfig::init(self, &channels, &channels, device)
    }

    /// A fresh mask per level and step, drawn from `(seed, step, level)` on the teacher's
    /// (plain) device: a constant in the student's graph, the same after a resume.
    fn terms(&self, modules: &MgdModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let masks: Vec<Tensor<4>> = inputs
            .teacher_features
            .iter()
            .enumerate()
            .map(|(level, t)| {
                let [n, _, h, w] = t.dims();
                mgd_masks(
                    self.lambda,
                    inputs.seed,
                    inputs.step,
                    level,
                    [n, h, w],
                    &t.device(),
                )
            })
            .collect();
        KdTerm::single(modules.forward(
            self,
            &inputs.student_features,
            &inputs.teacher_features,
            &masks,
        ))
    }
}

#[cfg(test)]
#[path = "tests/mgd.rs"]
mod tests;
