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
        assert!(!self.levels.is_empty(), "FGD needs at least one level");
        assert_eq!(
            students.len(),
            self.levels.len(),
            "FGD: {} student levels for {} module levels",
            students.len(),
            self.levels.len()
        );
        assert_eq!(
            teachers.len(),
            self.levels.len(),
            "FGD: {} teacher levels for {} module levels",
            teachers.len(),
            self.levels.len()
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
            let gl = (modules.student.forward(s) - modules.teacher.forward(t))
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use kdet_structures::{Boxes, ImageSize, Instances};

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().expect("f32 data")
    }

    fn scalar(t: Tensor<1>) -> f64 {
        vals(t)[0] as f64
    }

    fn assert_rel(actual: f64, expected: f64, tol: f64, what: &str) {
        let err = (actual - expected).abs() / expected.abs().max(1e-12);
        assert!(
            err < tol,
            "{what}: got {actual}, expected {expected} (rel err {err})"
        );
    }

    /// A small LCG giving reproducible values in [-1, 1).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
        fn vec(&mut self, len: usize) -> Vec<f64> {
            (0..len).map(|_| self.next()).collect()
        }
    }

    fn instances(size: ImageSize, boxes: Vec<[f32; 4]>, classes: Vec<usize>) -> Instances {
        Instances::new(size, Boxes::new(boxes), classes).expect("valid test instances")
    }

    fn tensor4(v: &[f64], shape: [usize; 4], device: &Device) -> Tensor<4> {
        let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(data, shape), device)
    }

    // ---------------------------------------------------------------- f64 reference

    /// Spec §2.2 masks in f64, written independently of `fgd_masks`.
    fn ref_masks(
        boxes: &[Vec<[f32; 4]>],
        sizes: &[(f64, f64)],
        h: usize,
        w: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut fg = vec![0.0; boxes.len() * h * w];
        let mut bg = vec![0.0; boxes.len() * h * w];
        for (i, (bs, &(ih, iw))) in boxes.iter().zip(sizes).enumerate() {
            for b in bs {
                let x1 = (b[0] as f64 / iw * w as f64).floor() as i64;
                let x2 = (b[2] as f64 / iw * w as f64).ceil() as i64;
                let y1 = (b[1] as f64 / ih * h as f64).floor() as i64;
                let y2 = (b[3] as f64 / ih * h as f64).ceil() as i64;
                let v = 1.0 / ((y2 - y1 + 1) * (x2 - x1 + 1)) as f64;
                for r in y1..=y2 {
                    for c in x1..=x2 {
                        if r >= 0 && (r as usize) < h && c >= 0 && (c as usize) < w {
                            let k = i * h * w + r as usize * w + c as usize;
                            fg[k] = f64::max(fg[k], v);
                        }
                    }
                }
            }
            let zeros = (0..h * w).filter(|&k| fg[i * h * w + k] == 0.0).count();
            for k in 0..h * w {
                if fg[i * h * w + k] == 0.0 {
                    bg[i * h * w + k] = 1.0 / zeros as f64;
                }
            }
        }
        (fg, bg)
    }

    /// `(A^sp [n*h*w], A^ch [n*c])` of an `[n, c, h, w]` row-major feature.
    fn ref_attention(f: &[f64], [n, c, h, w]: [usize; 4], t: f64) -> (Vec<f64>, Vec<f64>) {
        let idx = |i: usize, ch: usize, p: usize| ((i * c + ch) * h * w) + p;
        let mut sp = vec![0.0; n * h * w];
        let mut chv = vec![0.0; n * c];
        for i in 0..n {
            // G(h,w) = mean_c |F|; softmax over the h*w positions, times h*w.
            let g: Vec<f64> = (0..h * w)
                .map(|p| (0..c).map(|ch| f[idx(i, ch, p)].abs()).sum::<f64>() / c as f64 / t)
                .collect();
            let z: f64 = g.iter().map(|x| x.exp()).sum();
            for p in 0..h * w {
                sp[i * h * w + p] = (h * w) as f64 * g[p].exp() / z;
            }
            // g(c) = mean_{hw} |F|; softmax over channels, times C.
            let g: Vec<f64> = (0..c)
                .map(|ch| {
                    (0..h * w).map(|p| f[idx(i, ch, p)].abs()).sum::<f64>() / (h * w) as f64 / t
                })
                .collect();
            let z: f64 = g.iter().map(|x| x.exp()).sum();
            for ch in 0..c {
                chv[i * c + ch] = c as f64 * g[ch].exp() / z;
            }
        }
        (sp, chv)
    }

    /// GcBlock parameters as plain numbers.
    struct GcParams {
        wk: Vec<f64>, // [C]
        bk: f64,
        w1: Vec<f64>, // [C/2, C]
        b1: Vec<f64>, // [C/2]
        gamma: Vec<f64>,
        beta: Vec<f64>,
        w2: Vec<f64>, // [C, C/2]
        b2: Vec<f64>, // [C]
    }

    impl GcParams {
        fn random(rng: &mut Lcg, c: usize) -> Self {
            let m = c / 2;
            Self {
                wk: rng.vec(c),
                bk: rng.next(),
                w1: rng.vec(m * c),
                b1: rng.vec(m),
                gamma: rng.vec(m).iter().map(|x| 1.0 + 0.5 * x).collect(),
                beta: rng.vec(m).iter().map(|x| 0.5 * x).collect(),
                w2: rng.vec(c * m),
                b2: rng.vec(c),
            }
        }

        /// A [`GcBlock`] holding these parameters.
        fn block(&self, c: usize, device: &Device) -> GcBlock {
            let m = c / 2;
            let p4 = |v: &[f64], shape: [usize; 4]| {
                Param::from_data(
                    TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape),
                    device,
                )
            };
            let p1 = |v: &[f64]| {
                Param::from_data(
                    TensorData::new(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), [v.len()]),
                    device,
                )
            };
            let mut b = GcBlock::new(c, device);
            b.conv_mask.weight = p4(&self.wk, [1, c, 1, 1]);
            b.conv_mask.bias = Some(p1(&[self.bk]));
            b.channel_add_conv_0.weight = p4(&self.w1, [m, c, 1, 1]);
            b.channel_add_conv_0.bias = Some(p1(&self.b1));
            b.channel_add_conv_1.gamma = p1(&self.gamma);
            b.channel_add_conv_1.beta = Some(p1(&self.beta));
            b.channel_add_conv_3.weight = p4(&self.w2, [c, m, 1, 1]);
            b.channel_add_conv_3.bias = Some(p1(&self.b2));
            b
        }

        /// `R(F)` in f64, straight from spec §2.2.
        fn apply(&self, f: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
            let m = c / 2;
            let hw = h * w;
            let mut out = f.to_vec();
            for i in 0..n {
                let x = |ch: usize, p: usize| f[(i * c + ch) * hw + p];
                // Context attention: softmax_p(W_k F + b_k).
                let logits: Vec<f64> = (0..hw)
                    .map(|p| self.bk + (0..c).map(|ch| self.wk[ch] * x(ch, p)).sum::<f64>())
                    .collect();
                let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
                let a: Vec<f64> = logits.iter().map(|l| (l - mx).exp() / z).collect();
                let ctx: Vec<f64> = (0..c)
                    .map(|ch| (0..hw).map(|p| x(ch, p) * a[p]).sum())
                    .collect();
                // W_1 c + b_1, LayerNorm over the m values (biased variance, eps 1e-5), ReLU.
                let y: Vec<f64> = (0..m)
                    .map(|j| {
                        self.b1[j] + (0..c).map(|ch| self.w1[j * c + ch] * ctx[ch]).sum::<f64>()
                    })
                    .collect();
                let mean = y.iter().sum::<f64>() / m as f64;
                let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m as f64;
                let y: Vec<f64> = (0..m)
                    .map(|j| {
                        let v = (y[j] - mean) / (var + 1e-5).sqrt() * self.gamma[j] + self.beta[j];
                        v.max(0.0)
                    })
                    .collect();
                // W_2 y + b_2, broadcast over the positions.
                for ch in 0..c {
                    let add = self.b2[ch] + (0..m).map(|j| self.w2[ch * m + j] * y[j]).sum::<f64>();
                    for p in 0..hw {
                        out[(i * c + ch) * hw + p] += add;
                    }
                }
            }
            out
        }
    }

    // ---------------------------------------------------------------- tests

    /// Hand-derived masks on a 3×4 map (H=3, W=4) of a 24×32 image (no padding), stride 8:
    /// - box A = [8, 8, 32, 24] touches the right and bottom border: x' = 8/32·4 = 1 ..
    ///   32/32·4 = 4 → columns 1..=4 (4 columns, column 4 is outside the map);
    ///   y' = 8/24·3 = 1 .. 3 → rows 1..=3 (3 rows, row 3 outside). Weight 1/(3·4) = 1/12,
    ///   filled on the 2×3 = 6 cells inside (spec §2.6 gotcha);
    /// - box B = [4, 2, 12, 10]: x' = 0.5 .. 1.5 → columns 0..=2; y' = 0.25 .. 1.25 → rows
    ///   0..=2 (clipped to 0..=2 anyway): weight 1/9 on 9 cells; where A and B overlap
    ///   (rows 1-2, columns 1-2) the max 1/9 wins.
    ///
    /// Row-major fg:   row 0: 1/9 1/9 1/9  0
    ///                 row 1: 1/9 1/9 1/9 1/12
    ///                 row 2: 1/9 1/9 1/9 1/12
    /// bg: the one zero cell (0, 3) gets 1/1 = 1.
    #[test]
    fn masks_hand_values_with_border_box() {
        let device = Device::flex();
        let size = ImageSize::new(24, 32);
        let gt = [instances(
            size,
            vec![[8.0, 8.0, 32.0, 24.0], [4.0, 2.0, 12.0, 10.0]],
            vec![0, 1],
        )];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &[size],
            padded_size: size,
        };
        let (fg, bg) = fgd_masks(&targets, 3, 4, &device);
        assert_eq!(fg.dims(), [1, 3, 4]);
        let (a, b) = (1.0 / 12.0, 1.0 / 9.0);
        let expected_fg = [b, b, b, 0.0, b, b, b, a, b, b, b, a];
        let expected_bg = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        for (got, want) in vals(fg).iter().zip(expected_fg) {
            assert!((*got as f64 - want).abs() < 1e-7, "fg {got} vs {want}");
        }
        for (got, want) in vals(bg).iter().zip(expected_bg) {
            assert!((*got as f64 - want).abs() < 1e-7, "bg {got} vs {want}");
        }

        // Only the border box: 1/12 on exactly 6 cells (sum 1/2, not 1).
        let gt = [instances(size, vec![[8.0, 8.0, 32.0, 24.0]], vec![0])];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &[size],
            padded_size: size,
        };
        let fg = vals(fgd_masks(&targets, 3, 4, &device).0);
        assert_eq!(
            fg.iter().filter(|&&v| (v as f64 - a).abs() < 1e-7).count(),
            6
        );
        assert!((fg.iter().sum::<f32>() as f64 - 0.5).abs() < 1e-6);
    }

    /// A case small enough to do by hand: N = 1, C = 2 with two identical channels, a 1×2
    /// map of an 8×16 image, `F^T = [1, 3]` in each channel, `F^S = 0`, τ = 0.5, one box
    /// [0, 0, 4, 4].
    /// - Mask: x' = 0 .. 4/16·2 = 0.5 → columns 0..=1; y' = 0 .. 4/8·1 = 0.5 → rows 0..=1
    ///   (row 1 outside the map): 1/4 on both cells; no zero cell, so bg stays 0.
    /// - `A^sp_T = 2·softmax([1, 3]/0.5) = [2/(1+e⁴), 2e⁴/(1+e⁴)] = [0.0359724, 1.9640276]`;
    ///   `A^ch_T = A^ch_S = [1, 1]` (equal channels; all-zero student); `A^sp_S = [1, 1]`.
    /// - `L_fg = 2 channels · ¼ (0.0359724·1 + 1.9640276·9) = 8.8561103`, `L_bg = 0`,
    ///   `L_at = |1 − 0.0359724| + |1 − 1.9640276| = 1.9280552`,
    ///   `L_gl = 2 · (1 + 9) = 20` (both GcBlocks are identities at init).
    /// - Terms: `1e-3·8.8561103`, 0, `5e-4·1.9280552`, `5e-6·20`.
    #[test]
    fn hand_derived_tiny_case() {
        let device = Device::flex();
        let size = ImageSize::new(8, 16);
        let gt = [instances(size, vec![[0.0, 0.0, 4.0, 4.0]], vec![0])];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &[size],
            padded_size: size,
        };
        let (fg_mask, bg_mask) = fgd_masks(&targets, 1, 2, &device);
        assert_eq!(vals(fg_mask), vec![0.25, 0.25]);
        assert_eq!(vals(bg_mask), vec![0.0, 0.0]);
        let t = tensor4(&[1.0, 3.0, 1.0, 3.0], [1, 2, 1, 2], &device);
        let s = tensor4(&[0.0; 4], [1, 2, 1, 2], &device);
        let sp = vals(spatial_attention(t.clone(), 0.5));
        assert!((sp[0] as f64 - 0.0359724).abs() < 1e-6, "{sp:?}");
        assert!((sp[1] as f64 - 1.9640276).abs() < 1e-6, "{sp:?}");
        assert_eq!(vals(channel_attention(t.clone(), 0.5)), vec![1.0, 1.0]);

        let config = FgdConfig::new();
        let terms = config
            .init(&[2], &device)
            .forward(&config, &[s], &[t], &targets);
        assert_rel(scalar(terms.fg), 1e-3 * 8.8561103, 1e-5, "fg");
        assert_eq!(scalar(terms.bg), 0.0);
        assert_rel(scalar(terms.attention), 5e-4 * 1.9280552, 1e-5, "attention");
        assert_rel(scalar(terms.global), 5e-6 * 20.0, 1e-5, "global");
    }

    /// Padding stretches boxes: an image of 16×16 inside a 16×32 padded batch, map 2×4
    /// (stride 8). Box [0, 0, 8, 8] scales by img_w = 16 but the map width 4:
    /// x' = 0 .. 8/16·4 = 2 → columns 0..=2 (3 columns, 24 px of feature for an 8-px box),
    /// y' = 0 .. 8/16·2 = 1 → rows 0..=1: weight 1/6 on 6 cells.
    #[test]
    fn masks_use_img_shape_not_padded_size() {
        let device = Device::flex();
        let gt = [instances(
            ImageSize::new(16, 16),
            vec![[0.0, 0.0, 8.0, 8.0]],
            vec![0],
        )];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &[ImageSize::new(16, 16)],
            padded_size: ImageSize::new(16, 32),
        };
        let fg = vals(fgd_masks(&targets, 2, 4, &device).0);
        let s = 1.0 / 6.0;
        let expected = [s, s, s, 0.0, s, s, s, 0.0];
        for (got, want) in fg.iter().zip(expected) {
            assert!((*got as f64 - want).abs() < 1e-7, "{fg:?}");
        }
    }

    /// An image without ground truth: fg all zero, bg uniform 1/(H·W), and the loss stays
    /// finite with fg exactly 0 (the official code gives the same: an all-zero fg mask).
    #[test]
    fn no_gt_image() {
        let device = Device::flex();
        let size = ImageSize::new(24, 40);
        let gt = [Instances::empty(size)];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &[size],
            padded_size: size,
        };
        let (fg, bg) = fgd_masks(&targets, 3, 5, &device);
        assert!(vals(fg).iter().all(|&v| v == 0.0));
        assert!(vals(bg).iter().all(|&v| (v - 1.0 / 15.0).abs() < 1e-7));

        let mut rng = Lcg(7);
        let s = tensor4(&rng.vec(4 * 15), [1, 4, 3, 5], &device);
        let t = tensor4(&rng.vec(4 * 15), [1, 4, 3, 5], &device);
        let modules = FgdConfig::new().init(&[4], &device);
        let terms = modules.forward(&FgdConfig::new(), &[s], &[t], &targets);
        assert_eq!(scalar(terms.fg), 0.0);
        for v in [terms.bg, terms.attention, terms.global] {
            let v = scalar(v);
            assert!(v.is_finite() && v > 0.0, "{v}");
        }
    }

    /// Golden value of each term: N=2, C=4, levels 6×8 and 3×4 of a 48×64 padded batch;
    /// image 0 is 48×64 with two overlapping boxes, one touching the right and bottom border;
    /// image 1 is 40×56 (padded, so img_shape ≠ padded size) with one box. The GcBlocks have
    /// random non-zero parameters (the zero-init last conv would make `R` the identity).
    ///
    /// Expected values: spec §2.2 in f64 loops (`ref_masks`, `ref_attention`,
    /// `GcParams::apply`):
    /// `fg = α Σ_l 1/N Σ M^fg A^sp_T A^ch_T (T−S)²`, `bg` likewise, `attention = γ Σ_l 1/N
    /// (Σ|ΔA^ch| + Σ|ΔA^sp|)`, `global = λ Σ_l 1/N Σ (R_S(S) − R_T(T))²`.
    #[test]
    fn golden_terms() {
        let device = Device::flex();
        let (n, c) = (2, 4);
        let sizes = [ImageSize::new(48, 64), ImageSize::new(40, 56)];
        let boxes = vec![
            vec![[5.0, 7.0, 45.0, 25.0], [40.0, 20.0, 64.0, 48.0]],
            vec![[10.0, 12.0, 50.0, 36.0]],
        ];
        let gt = [
            instances(sizes[0], boxes[0].clone(), vec![0, 1]),
            instances(sizes[1], boxes[1].clone(), vec![2]),
        ];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &sizes,
            padded_size: ImageSize::new(48, 64),
        };
        let config = FgdConfig::new();
        let mut rng = Lcg(2022);
        let shapes = [[n, c, 6, 8], [n, c, 3, 4]];
        let mut modules = config.init(&[c, c], &device);
        let mut params = Vec::new();
        for level in modules.levels.iter_mut() {
            let ps = GcParams::random(&mut rng, c);
            let pt = GcParams::random(&mut rng, c);
            level.student = ps.block(c, &device);
            level.teacher = pt.block(c, &device);
            params.push((ps, pt));
        }
        let mut students = Vec::new();
        let mut teachers = Vec::new();
        let mut expected = [0.0f64; 4];
        for (shape, (ps, pt)) in shapes.iter().zip(&params) {
            let [_, _, h, w] = *shape;
            let len = shape.iter().product();
            let s: Vec<f64> = rng.vec(len);
            let t: Vec<f64> = rng.vec(len).iter().map(|x| 1.5 * x).collect();
            students.push(tensor4(&s, *shape, &device));
            teachers.push(tensor4(&t, *shape, &device));

            let (fg, bg) = ref_masks(&boxes, &[(48.0, 64.0), (40.0, 56.0)], h, w);
            let tau = config.temperature as f64;
            let (sp_t, ch_t) = ref_attention(&t, *shape, tau);
            let (sp_s, ch_s) = ref_attention(&s, *shape, tau);
            let (mut lfg, mut lbg) = (0.0, 0.0);
            for i in 0..n {
                for ch in 0..c {
                    for p in 0..h * w {
                        let k = (i * c + ch) * h * w + p;
                        let wgt = sp_t[i * h * w + p] * ch_t[i * c + ch] * (t[k] - s[k]).powi(2);
                        lfg += fg[i * h * w + p] * wgt;
                        lbg += bg[i * h * w + p] * wgt;
                    }
                }
            }
            let lat: f64 = ch_s
                .iter()
                .zip(&ch_t)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                + sp_s
                    .iter()
                    .zip(&sp_t)
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f64>();
            let rs = ps.apply(&s, *shape);
            let rt = pt.apply(&t, *shape);
            let lgl: f64 = rs.iter().zip(&rt).map(|(a, b)| (a - b).powi(2)).sum();
            let nf = n as f64;
            expected[0] += config.alpha_fg as f64 * lfg / nf;
            expected[1] += config.beta_bg as f64 * lbg / nf;
            expected[2] += config.gamma_attention as f64 * lat / nf;
            expected[3] += config.lambda_global as f64 * lgl / nf;
        }
        let terms = modules.forward(&config, &students, &teachers, &targets);
        assert_rel(scalar(terms.fg), expected[0], 1e-4, "fg");
        assert_rel(scalar(terms.bg), expected[1], 1e-4, "bg");
        assert_rel(scalar(terms.attention), expected[2], 1e-4, "attention");
        assert_rel(scalar(terms.global), expected[3], 1e-4, "global");
        assert!(expected.iter().all(|&v| v > 0.0));
    }

    /// Student == teacher: fg, bg and attention are 0 (zero feature difference, identical
    /// attention maps); global is 0 too because at init both GcBlocks are identity maps
    /// (their last conv is zero-initialised, so `R_S(F) = R_T(F) = F`), even though the two
    /// blocks have different random `conv_mask` / `W_1` parameters.
    #[test]
    fn zero_when_student_equals_teacher() {
        let device = Device::flex();
        let size = ImageSize::new(32, 48);
        let gt = [
            instances(size, vec![[4.0, 4.0, 20.0, 30.0]], vec![0]),
            instances(size, vec![[10.0, 2.0, 40.0, 16.0]], vec![1]),
        ];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &[size, size],
            padded_size: size,
        };
        let mut rng = Lcg(3);
        let f0 = tensor4(&rng.vec(2 * 4 * 4 * 6), [2, 4, 4, 6], &device);
        let f1 = tensor4(&rng.vec(2 * 4 * 2 * 3), [2, 4, 2, 3], &device);
        let config = FgdConfig::new();
        let modules = config.init(&[4, 4], &device);
        let terms = modules.forward(&config, &[f0.clone(), f1.clone()], &[f0, f1], &targets);
        for (name, v) in [
            ("fg", terms.fg),
            ("bg", terms.bg),
            ("attention", terms.attention),
            ("global", terms.global),
        ] {
            let v = scalar(v);
            assert!(v.abs() < 1e-12, "{name} = {v}");
        }
    }

    fn grad_norm<const D: usize>(g: Option<Tensor<D>>) -> Option<f64> {
        g.map(|g| vals(g).iter().map(|v| (*v as f64).abs()).sum())
    }

    /// Gradients reach the student feature and the GcBlocks of both sides; the teacher
    /// feature is a plain-device constant.
    ///
    /// At init the last conv `W_2` is zero, so `∂L/∂W_2 = Σ g · ReLU(LN(W_1 c))` and
    /// `∂L/∂b_2 = Σ g` are non-zero, while everything before `W_2` (`W_k`, `W_1`, the
    /// LayerNorm) only receives gradient through `W_2` and therefore gets exactly zero
    /// (or none). Once `W_2` is non-zero every GcBlock parameter gets a non-zero gradient;
    /// that is checked on a second module with a non-zero `W_2`.
    #[test]
    fn gradients_reach_student_and_both_gcblocks() {
        let plain = Device::flex();
        let device = Device::flex().autodiff();
        let size = ImageSize::new(32, 40);
        let gt = [
            instances(size, vec![[3.0, 5.0, 22.0, 28.0]], vec![0]),
            instances(size, vec![[12.0, 1.0, 40.0, 18.0]], vec![1]),
        ];
        let targets = KdTargets {
            gt: &gt,
            image_sizes: &[size, size],
            padded_size: size,
        };
        let mut rng = Lcg(11);
        let shape = [2, 4, 4, 5];
        let s_vals = rng.vec(2 * 4 * 20);
        let t_vals = rng.vec(2 * 4 * 20);
        let config = FgdConfig::new();

        // Stage 1: official init.
        let student = tensor4(&s_vals, shape, &device).require_grad();
        let teacher = tensor4(&t_vals, shape, &plain);
        assert!(!teacher.is_autodiff());
        let modules = config.init(&[4], &device);
        let loss = modules
            .forward(
                &config,
                std::slice::from_ref(&student),
                std::slice::from_ref(&teacher),
                &targets,
            )
            .total();
        let grads = loss.backward();
        let gs = vals(student.grad(&grads).expect("student gradient"));
        assert!(gs.iter().all(|v| v.is_finite()));
        assert!(gs.iter().any(|&v| v != 0.0));
        for block in [&modules.levels[0].student, &modules.levels[0].teacher] {
            let w2 = grad_norm(block.channel_add_conv_3.weight.grad(&grads)).expect("W_2 grad");
            assert!(w2.is_finite() && w2 > 0.0, "W_2 grad {w2}");
            let b2 = block.channel_add_conv_3.bias.as_ref().expect("bias");
            let b2 = vals(b2.grad(&grads).expect("b_2 grad"));
            assert!(b2.iter().any(|&v| v != 0.0));
            for g in [
                grad_norm(block.conv_mask.weight.grad(&grads)),
                grad_norm(block.channel_add_conv_0.weight.grad(&grads)),
                grad_norm(block.channel_add_conv_1.gamma.grad(&grads)),
            ] {
                assert!(
                    g.is_none_or(|g| g == 0.0),
                    "gradient before W_2 at init: {g:?}"
                );
            }
        }

        // Stage 2: non-zero W_2 on both sides: every parameter gets a gradient.
        let mut modules = config.init(&[4], &device);
        modules.levels[0].student = GcParams::random(&mut rng, 4).block(4, &device);
        modules.levels[0].teacher = GcParams::random(&mut rng, 4).block(4, &device);
        let student = tensor4(&s_vals, shape, &device).require_grad();
        let loss = modules
            .forward(
                &config,
                std::slice::from_ref(&student),
                &[teacher],
                &targets,
            )
            .total();
        let grads = loss.backward();
        assert!(student.grad(&grads).is_some());
        for block in [&modules.levels[0].student, &modules.levels[0].teacher] {
            for (name, g) in [
                ("conv_mask", grad_norm(block.conv_mask.weight.grad(&grads))),
                (
                    "W_1",
                    grad_norm(block.channel_add_conv_0.weight.grad(&grads)),
                ),
                (
                    "W_2",
                    grad_norm(block.channel_add_conv_3.weight.grad(&grads)),
                ),
            ] {
                let g = g.unwrap_or(0.0);
                assert!(g.is_finite() && g > 0.0, "{name} grad {g}");
            }
            let gamma = vals(
                block
                    .channel_add_conv_1
                    .gamma
                    .grad(&grads)
                    .expect("LN gamma grad"),
            );
            assert!(gamma.iter().all(|v| v.is_finite()) && gamma.iter().any(|&v| v != 0.0));
        }
    }

    /// Defaults equal the official RetinaNet/GFL config and survive a serde round trip.
    #[test]
    fn config_defaults_and_serde() {
        let config = FgdConfig::new();
        assert_eq!(
            (
                config.temperature,
                config.alpha_fg,
                config.beta_bg,
                config.gamma_attention,
                config.lambda_global
            ),
            (0.5, 1e-3, 5e-4, 5e-4, 5e-6)
        );
        let json = config.to_string();
        let back = FgdConfig::load_binary(json.as_bytes()).expect("round trip");
        assert_eq!(back, config);
    }
}
