//! FGD: Focal and Global Knowledge Distillation for Detectors (Yang et al., CVPR 2022,
//! arXiv:2111.11837), as the official `yzd-v/FGD` `FeatureLoss`
//! (`mmdet/distillation/losses/fgd.py`); spec: `../shared/methods/kd-detection.md` §2.
//!
//! Per FPN level, with student / teacher features `F^S, F^T` of shape `[N, C, H, W]` and
//! temperature `τ`:
//!
//! - spatial attention `A^sp(n,h,w) = H·W · softmax_{(h,w)}( mean_c |F(n,c,h,w)| / τ )`;
//! - channel attention `A^ch(n,c) = C · softmax_c( mean_{h,w} |F(n,c,h,w)| / τ )`;
//! - masks per image ([`fgd_masks`]): each GT box is scaled to the feature grid by
//!   `x' = x / img_w · W`, `y' = y / img_h · H` (`img_*` = the resized image before padding,
//!   mmdet `img_shape`; `W, H` = the padded feature size), rows `floor(y1')..=ceil(y2')` and
//!   columns `floor(x1')..=ceil(x2')` (inclusive) get `1 / ((rows)·(cols))` with the
//!   *unclipped* extent, the max over overlapping boxes: `M^fg`. `M^bg = 1[M^fg = 0]`,
//!   divided by its sum when that is positive;
//! - focal loss (teacher attention only):
//!   `L_fg = 1/N Σ_{n,c,h,w} M^fg A^sp_T A^ch_T (F^T − F^S)²`, `L_bg` likewise with `M^bg`;
//! - attention loss `L_at = 1/N [ Σ_{n,c} |A^ch_S − A^ch_T| + Σ_{n,h,w} |A^sp_S − A^sp_T| ]`;
//! - global loss `L_gl = 1/N Σ (R_S(F^S) − R_T(F^T))²` with a GcBlock per side ([`GcBlock`]):
//!   `R(F) = F + W_2 ReLU(LN(W_1 c))`, `c(n) = Σ_{hw} F(n,·,hw) softmax_{hw}(W_k F)(n,hw)`.
//!
//! Total per level `α L_fg + β L_bg + γ L_at + λ L_gl`, summed over levels. [`FgdTerms`]
//! returns the four terms separately, each already multiplied by its coefficient.
//!
//! **Official reduction**: every term is a *sum* divided by the batch size `N` (not a mean),
//! which is why the coefficients are as small as 1e-3 … 5e-6.
//!
//! **Defaults** (`FgdConfig::new()`): the official RetinaNet / GFL / SOLO configs
//! (`configs/distillers/fgd/*`): `τ = 0.5, α = 1e-3, β = 5e-4, γ = 5e-4, λ = 5e-6`
//! (the Python class default has γ = 1e-3, but every config passes 5e-4).
//!
//! **Trainable modules**: the student-side and the teacher-side GcBlock of every level
//! ([`FgdModules`]); both train with the student (the teacher-side one gets its gradient
//! through `L_gl`; only the teacher *feature* is a constant) and both are dropped on export.
//! `teacher_gcblock_trains = false` (an ablation, issue #21) keeps the teacher side at init.
//! Init as the official `reset_parameters`: `conv_mask` Kaiming-normal fan_in (mmcv
//! `kaiming_init(mode='fan_in')`: ReLU gain, bias 0), the last conv of `channel_add_conv`
//! zero (weight and bias), the rest PyTorch defaults. Hence `R(F) = F` at init.
//!
//! **Deliberate deviations / notes**
//! - The official code slices the mask with Python ranges; a box with a negative scaled
//!   corner would wrap around there. Boxes are clipped to the image in mmdet's pipeline so
//!   this never happens; here the ranges are clamped to the map instead (no wrap-around).
//!   A box whose scaled extent is empty (`x2' < x1'` after floor/ceil) fills nothing.
//! - The student-to-teacher `align` 1×1 conv (when `C_S ≠ C_T`) is not part of this file:
//!   the student feature must already have the teacher's channels (a connector, on the
//!   student side, does that).
//! - An early version of the official code indexed the mask as `[w, h]` (transposed); this
//!   follows the fixed version, rows = `h`, columns = `w`.
//!
//! State-dict names: `conv_mask_{s,t}` → `levels[l].{student,teacher}.conv_mask`;
//! `channel_add_conv_{s,t}.{0,1,3}` → `channel_add_conv_{0,1,3}` (the LayerNorm `.1` has
//! shape `[C/2, 1, 1]` in PyTorch and `[C/2]` here, `weight`/`bias` ↔ `gamma`/`beta`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use super::KdTargets;
use crate::method::{KdInputs, KdMethod, KdTerm, TapUse, Wiring};
use crate::taps::Tap;

/// FGD coefficients and temperature. Defaults: official RetinaNet/GFL configs
/// (`configs/distillers/fgd/fgd_retina_rx101_64x4d_distill_retina_r50_fpn_2x_coco.py` and
/// the GFL one).
#[derive(Config, Debug, PartialEq)]
pub struct FgdConfig {
    /// Attention temperature `τ` (config `temp=0.5`; FCOS configs use 0.8).
    #[config(default = 0.5)]
    pub temperature: f32,
    /// Weight `α` of the foreground focal loss (config `alpha_fgd=0.001`).
    #[config(default = 1e-3)]
    pub alpha_fg: f32,
    /// Weight `β` of the background focal loss (config `beta_fgd=0.0005`).
    #[config(default = 5e-4)]
    pub beta_bg: f32,
    /// Weight `γ` of the attention loss (config `gamma_fgd=0.0005`; class default 1e-3).
    #[config(default = 5e-4)]
    pub gamma_attention: f32,
    /// Weight `λ` of the global (relation) loss (config `lambda_fgd=0.000005`).
    #[config(default = 5e-6)]
    pub lambda_global: f32,
    /// Whether the teacher-side GcBlocks train (official: yes, with the student's
    /// optimizer). `false` keeps them at their init, an identity map (`W_2 = 0`), so the
    /// global loss compares `R_S(F^S)` with the teacher feature itself: an ablation of
    /// issue #21, not an official setting.
    #[config(default = true)]
    pub teacher_gcblock_trains: bool,
}

/// GCNet's context block as FGD uses it for the global loss:
/// `R(F) = F + W_2 ReLU(LN(W_1 c))` with the attention-pooled context
/// `c = Σ_{hw} F(·, hw) softmax_{hw}(W_k F)`.
#[derive(Module, Debug)]
pub struct GcBlock {
    /// `W_k`: 1×1 conv `C → 1` giving the context attention logits (official `conv_mask_*`).
    pub conv_mask: Conv2d,
    /// `W_1`: 1×1 conv `C → C/2` (official `channel_add_conv_*.0`).
    pub channel_add_conv_0: Conv2d,
    /// LayerNorm over the `C/2` context channels, with affine (official
    /// `channel_add_conv_*.1`, `nn.LayerNorm([C/2, 1, 1])`, eps 1e-5).
    pub channel_add_conv_1: LayerNorm,
    /// `W_2`: 1×1 conv `C/2 → C`, zero-initialised (official `channel_add_conv_*.3`).
    pub channel_add_conv_3: Conv2d,
}

impl GcBlock {
    /// A block for `channels` channels with the official initialisation.
    ///
    /// # Panics
    /// If `channels < 2` (the bottleneck has `channels / 2` channels).
    pub fn new(channels: usize, device: &Device) -> Self {
        assert!(
            channels >= 2,
            "a GcBlock needs at least 2 channels (bottleneck C/2), got {channels}"
        );
        let hidden = channels / 2;
        // mmcv kaiming_init(mode='fan_in', nonlinearity='relu', distribution='normal'):
        // N(0, 2 / fan_in), bias 0.
        let mut conv_mask = Conv2dConfig::new([channels, 1], [1, 1])
            .with_initializer(Initializer::KaimingNormal {
                gain: std::f64::consts::SQRT_2,
                fan_out_only: false,
            })
            .init(device);
        conv_mask.bias = Some(Initializer::Zeros.init([1], device));
        // PyTorch's default Conv2d init (burn's default initializer matches it).
        let channel_add_conv_0 = Conv2dConfig::new([channels, hidden], [1, 1]).init(device);
        let channel_add_conv_1 = LayerNormConfig::new(hidden).init(device);
        // mmcv constant_init(m[-1], val=0): weight and bias zero.
        let channel_add_conv_3 = Conv2dConfig::new([hidden, channels], [1, 1])
            .with_initializer(Initializer::Zeros)
            .init(device);
        Self {
            conv_mask,
            channel_add_conv_0,
            channel_add_conv_1,
            channel_add_conv_3,
        }
    }

    /// `R(F) = F + W_2 ReLU(LN(W_1 c(F)))`.
    ///
    /// # Shapes
    /// - `x`: `[N, C, H, W]`
    /// - output: `[N, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        let [_, c_in, _, _] = self.conv_mask.weight.dims();
        assert_eq!(
            c, c_in,
            "GcBlock input has {c} channels, the block expects {c_in}"
        );
        let hidden = c / 2;
        // Context attention over the positions: [N, 1, H, W] -> [N, H*W, 1].
        let logits = self.conv_mask.forward(x.clone()).reshape([n, h * w]);
        let attention = softmax(logits, 1).reshape([n, h * w, 1]);
        // [N, C, H*W] x [N, H*W, 1] -> [N, C, 1]
        let context = x.clone().reshape([n, c, h * w]).matmul(attention);
        let y = self
            .channel_add_conv_0
            .forward(context.reshape([n, c, 1, 1])); // [N, C/2, 1, 1]
        // LayerNorm([C/2, 1, 1]) normalises the C/2 values of each image: the last axis here.
        let y = self
            .channel_add_conv_1
            .forward(y.reshape([n, hidden]))
            .reshape([n, hidden, 1, 1]);
        let y = self.channel_add_conv_3.forward(relu(y)); // [N, C, 1, 1]
        x + y.expand([n, c, h, w])
    }
}

/// The trainable FGD modules: per level a GcBlock for the student side and one for the
/// teacher side (separate parameters; both train with the student; dropped on export).
#[derive(Module, Debug)]
pub struct FgdModules {
    pub levels: Vec<FgdLevel>,
}

/// The two GcBlocks of one level.
#[derive(Module, Debug)]
pub struct FgdLevel {
    /// Applied to the student feature (official `*_s`).
    pub student: GcBlock,
    /// Applied to the (constant) teacher feature; its parameters train (official `*_t`).
    pub teacher: GcBlock,
}

impl FgdConfig {
    /// One [`FgdLevel`] per distilled level, `channels[l]` = the teacher's channels there.
    pub fn init(&self, channels: &[usize], device: &Device) -> FgdModules {
        FgdModules {
            levels: channels
                .iter()
                .map(|&c| FgdLevel {
                    student: GcBlock::new(c, device),
                    teacher: GcBlock::new(c, device),
                })
                .collect(),
        }
    }
}

/// The four FGD terms, each already multiplied by its coefficient and summed over levels;
/// `[1]` scalars.
#[derive(Debug, Clone)]
pub struct FgdTerms {
    /// `α Σ_l L_fg`.
    pub fg: Tensor<1>,
    /// `β Σ_l L_bg`.
    pub bg: Tensor<1>,
    /// `γ Σ_l L_at`.
    pub attention: Tensor<1>,
    /// `λ Σ_l L_gl`.
    pub global: Tensor<1>,
}

impl FgdTerms {
    /// The sum of the four terms (the official per-level `loss`, summed over levels).
    pub fn total(&self) -> Tensor<1> {
        self.fg.clone() + self.bg.clone() + self.attention.clone() + self.global.clone()
    }
}

impl FgdModules {
    /// The FGD terms over all levels.
    ///
    /// `students[l]` lives on the autodiff device, `teachers[l]` is a constant (plain
    /// device); the masks are built on the teacher's device.
    ///
    /// # Shapes
    /// - `students[l]`, `teachers[l]`: `[N, C_l, H_l, W_l]`, equal shapes
    /// - `targets`: `N` images
    ///
    /// # Panics
    /// If the level counts, shapes or batch sizes disagree, or there is no level.
    pub fn forward(
        &self,
        config: &FgdConfig,
        students: &[Tensor<4>],
        teachers: &[Tensor<4>],
        targets: &KdTargets,
    ) -> FgdTerms {
        super::assert_level_counts(
            "FGD",
            self.levels.len(),
            &[("student", students.len()), ("teacher", teachers.len())],
        );
        let temp = config.temperature;
        let mut sums: Option<[Tensor<1>; 4]> = None;
        for ((student, teacher), modules) in students.iter().zip(teachers).zip(&self.levels) {
            assert_eq!(
                student.dims(),
                teacher.dims(),
                "FGD: student and teacher features differ in shape"
            );
            let [n, c, h, w] = student.dims();
            assert!(n > 0, "FGD: empty batch");
            assert_eq!(
                targets.gt.len(),
                n,
                "FGD: {} ground-truth images for a batch of {n}",
                targets.gt.len()
            );
            let s = student.clone();
            let t = teacher.clone();

            let sp_t = spatial_attention(t.clone(), temp); // [N, H, W]
            let ch_t = channel_attention(t.clone(), temp); // [N, C]
            let sp_s = spatial_attention(s.clone(), temp);
            let ch_s = channel_attention(s.clone(), temp);

            let (mask_fg, mask_bg) = fgd_masks(targets, h, w, &t.device());
            // Teacher attention as one weight per element: [N, C, H, W].
            let att = sp_t.clone().reshape([n, 1, h, w]).expand([n, c, h, w])
                * ch_t.clone().reshape([n, c, 1, 1]).expand([n, c, h, w]);
            let sq = (s.clone() - t.clone()).square(); // [N, C, H, W]
            let inv_n = 1.0 / n as f32;
            let fg = (sq.clone()
                * (att.clone() * mask_fg.reshape([n, 1, h, w]).expand([n, c, h, w])))
            .sum()
            .mul_scalar(inv_n);
            let bg = (sq * (att * mask_bg.reshape([n, 1, h, w]).expand([n, c, h, w])))
                .sum()
                .mul_scalar(inv_n);
            let at = ((ch_s - ch_t).abs().sum() + (sp_s - sp_t).abs().sum()).mul_scalar(inv_n);
            let r_t = if config.teacher_gcblock_trains {
                modules.teacher.forward(t)
            } else {
                modules.teacher.clone().no_grad().forward(t)
            };
            let gl = (modules.student.forward(s) - r_t)
                .square()
                .sum()
                .mul_scalar(inv_n);

            let level = [
                fg.mul_scalar(config.alpha_fg),
                bg.mul_scalar(config.beta_bg),
                at.mul_scalar(config.gamma_attention),
                gl.mul_scalar(config.lambda_global),
            ];
            sums = Some(match sums {
                None => level,
                Some(acc) => {
                    let [a0, a1, a2, a3] = acc;
                    let [l0, l1, l2, l3] = level;
                    [a0 + l0, a1 + l1, a2 + l2, a3 + l3]
                }
            });
        }
        let [fg, bg, attention, global] = sums.expect("at least one level (asserted above)");
        FgdTerms {
            fg,
            bg,
            attention,
            global,
        }
    }
}

/// Spatial attention `H·W · softmax_{(h,w)}(mean_c |F| / τ)`.
///
/// # Shapes
/// - `f`: `[N, C, H, W]`
/// - output: `[N, H, W]`
pub fn spatial_attention(f: Tensor<4>, temperature: f32) -> Tensor<3> {
    let [n, _, h, w] = f.dims();
    let g = f
        .abs()
        .mean_dim(1)
        .reshape([n, h * w])
        .div_scalar(temperature); // [N, H*W]
    softmax(g, 1).mul_scalar((h * w) as f32).reshape([n, h, w])
}

/// Channel attention `C · softmax_c(mean_{h,w} |F| / τ)`.
///
/// # Shapes
/// - `f`: `[N, C, H, W]`
/// - output: `[N, C]`
pub fn channel_attention(f: Tensor<4>, temperature: f32) -> Tensor<2> {
    let [n, c, h, w] = f.dims();
    let g = f
        .abs()
        .reshape([n, c, h * w])
        .mean_dim(2)
        .reshape([n, c])
        .div_scalar(temperature); // [N, C]
    softmax(g, 1).mul_scalar(c as f32)
}

/// Host-built masks for one level: `(fg [N,H,W], bg [N,H,W])` per the spec (boxes scaled by
/// `img_shape` but multiplied by the padded feature size, inclusive floor/ceil ranges,
/// `1/area` with the unclipped extent, max over overlapping boxes, bg normalised to sum 1).
///
/// The arithmetic is `f32` in the official order (`x / img_w * W`) so that floor/ceil
/// agree with the Python at exact boundaries.
///
/// # Shapes
/// - output: two `[N, height, width]` tensors, `N = targets.gt.len()`
///
/// # Panics
/// If `targets.image_sizes` does not have one entry per image.
pub fn fgd_masks(
    targets: &KdTargets,
    height: usize,
    width: usize,
    device: &Device,
) -> (Tensor<3>, Tensor<3>) {
    let n = targets.gt.len();
    assert_eq!(
        targets.image_sizes.len(),
        n,
        "FGD masks: {} image sizes for {n} images",
        targets.image_sizes.len()
    );
    let cells = height * width;
    let mut fg = vec![0f32; n * cells];
    let mut bg = vec![0f32; n * cells];
    for (i, (gt, size)) in targets.gt.iter().zip(targets.image_sizes).enumerate() {
        let fg_i = &mut fg[i * cells..(i + 1) * cells];
        // A zero-sized image has no meaningful scale; its boxes fill nothing.
        if size.width > 0 && size.height > 0 {
            let (img_w, img_h) = (size.width as f32, size.height as f32);
            let (fw, fh) = (width as f32, height as f32);
            for b in gt.boxes().as_slice() {
                let wmin = (b[0] / img_w * fw).floor() as i64;
                let wmax = (b[2] / img_w * fw).ceil() as i64;
                let hmin = (b[1] / img_h * fh).floor() as i64;
                let hmax = (b[3] / img_h * fh).ceil() as i64;
                let (rows, cols) = (hmax + 1 - hmin, wmax + 1 - wmin);
                if rows <= 0 || cols <= 0 {
                    continue;
                }
                // The unclipped extent: cells outside the map count in the area.
                let value = 1.0 / rows as f32 / cols as f32;
                let (r0, r1) = (hmin.max(0), hmax.min(height as i64 - 1));
                let (c0, c1) = (wmin.max(0), wmax.min(width as i64 - 1));
                for r in r0..=r1 {
                    for col in c0..=c1 {
                        let cell = &mut fg_i[r as usize * width + col as usize];
                        *cell = cell.max(value);
                    }
                }
            }
        }
        let bg_i = &mut bg[i * cells..(i + 1) * cells];
        let mut total = 0f32;
        for (b, f) in bg_i.iter_mut().zip(fg_i.iter()) {
            *b = if *f > 0.0 { 0.0 } else { 1.0 };
            total += *b;
        }
        if total > 0.0 {
            bg_i.iter_mut().for_each(|b| *b /= total);
        }
    }
    (
        Tensor::from_data(TensorData::new(fg, [n, height, width]), device),
        Tensor::from_data(TensorData::new(bg, [n, height, width]), device),
    )
}

impl KdMethod for FgdConfig {
    const NAME: &'static str = "fgd";
    type Modules = FgdModules;

    fn defaults() -> Self {
        Self::new()
    }

    /// FPN outputs (the official code hooks `neck.fpn_convs.*.conv`).
    fn tap_use(&self) -> TapUse {
        TapUse::Feature { default: Tap::Neck }
    }

    fn compares_classes(&self) -> bool {
        false
    }

    /// One GcBlock pair per selected level, for the teacher's channels there.
    fn init(&self, wiring: &Wiring, device: &Device) -> FgdModules {
        let channels: Vec<usize> = wiring.teacher_levels().iter().map(|l| l.channels).collect();
        FgdConfig::init(self, &channels, device)
    }

    fn terms(&self, modules: &FgdModules, inputs: &KdInputs) -> Vec<KdTerm> {
        let terms = modules.forward(
            self,
            &inputs.student_features,
            &inputs.teacher_features,
            inputs.targets,
        );
        vec![
            KdTerm::new("fg", terms.fg),
            KdTerm::new("bg", terms.bg),
            KdTerm::new("attention", terms.attention),
            KdTerm::new("global", terms.global),
        ]
    }
}

#[cfg(test)]
#[path = "tests/fgd.rs"]
mod tests;
