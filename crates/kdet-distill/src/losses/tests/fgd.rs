//! Tests of [`super`] (fgd.rs), kept apart to keep the loss file readable.
use super::*;
use crate::losses::test_util::{
    GtBatch, Lcg, assert_rel, instances, scalar, tensor, tensor_data, vals,
};
use burn::module::Param;
use kdet_structures::{ImageSize, Instances};

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
            .map(|ch| (0..h * w).map(|p| f[idx(i, ch, p)].abs()).sum::<f64>() / (h * w) as f64 / t)
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
            wk: rng.vec_f64(c, 1.0),
            bk: rng.uniform(1.0),
            w1: rng.vec_f64(m * c, 1.0),
            b1: rng.vec_f64(m, 1.0),
            gamma: rng.vec_f64(m, 1.0).iter().map(|x| 1.0 + 0.5 * x).collect(),
            beta: rng.vec_f64(m, 1.0).iter().map(|x| 0.5 * x).collect(),
            w2: rng.vec_f64(c * m, 1.0),
            b2: rng.vec_f64(c, 1.0),
        }
    }

    /// A [`GcBlock`] holding these parameters.
    fn block(&self, c: usize, device: &Device) -> GcBlock {
        let m = c / 2;
        let p4 = |v: &[f64], shape: [usize; 4]| Param::from_data(tensor_data(v, shape), device);
        let p1 = |v: &[f64]| Param::from_data(tensor_data(v, [v.len()]), device);
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
                .map(|j| self.b1[j] + (0..c).map(|ch| self.w1[j * c + ch] * ctx[ch]).sum::<f64>())
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
    let gt = GtBatch::new(
        vec![instances(
            size,
            vec![[8.0, 8.0, 32.0, 24.0], [4.0, 2.0, 12.0, 10.0]],
            vec![0, 1],
        )],
        size,
    );
    let targets = gt.targets();
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
    let gt = GtBatch::new(
        vec![instances(size, vec![[8.0, 8.0, 32.0, 24.0]], vec![0])],
        size,
    );
    let targets = gt.targets();
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
    let gt = GtBatch::new(
        vec![instances(size, vec![[0.0, 0.0, 4.0, 4.0]], vec![0])],
        size,
    );
    let targets = gt.targets();
    let (fg_mask, bg_mask) = fgd_masks(&targets, 1, 2, &device);
    assert_eq!(vals(fg_mask), vec![0.25, 0.25]);
    assert_eq!(vals(bg_mask), vec![0.0, 0.0]);
    let t = tensor(&[1.0, 3.0, 1.0, 3.0], [1, 2, 1, 2], &device);
    let s = tensor(&[0.0; 4], [1, 2, 1, 2], &device);
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
    let gt = GtBatch::new(
        vec![instances(
            ImageSize::new(16, 16),
            vec![[0.0, 0.0, 8.0, 8.0]],
            vec![0],
        )],
        ImageSize::new(16, 32),
    );
    let targets = gt.targets();
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
    let gt = GtBatch::new(vec![Instances::empty(size)], size);
    let targets = gt.targets();
    let (fg, bg) = fgd_masks(&targets, 3, 5, &device);
    assert!(vals(fg).iter().all(|&v| v == 0.0));
    assert!(vals(bg).iter().all(|&v| (v - 1.0 / 15.0).abs() < 1e-7));

    let mut rng = Lcg::new(7);
    let s = tensor(&rng.vec_f64(4 * 15, 1.0), [1, 4, 3, 5], &device);
    let t = tensor(&rng.vec_f64(4 * 15, 1.0), [1, 4, 3, 5], &device);
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
    let gt = GtBatch::new(
        vec![
            instances(sizes[0], boxes[0].clone(), vec![0, 1]),
            instances(sizes[1], boxes[1].clone(), vec![2]),
        ],
        ImageSize::new(48, 64),
    );
    let targets = gt.targets();
    let config = FgdConfig::new();
    let mut rng = Lcg::new(2022);
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
        let s: Vec<f64> = rng.vec_f64(len, 1.0);
        let t: Vec<f64> = rng.vec_f64(len, 1.0).iter().map(|x| 1.5 * x).collect();
        students.push(tensor(&s, *shape, &device));
        teachers.push(tensor(&t, *shape, &device));

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
    let gt = GtBatch::new(
        vec![
            instances(size, vec![[4.0, 4.0, 20.0, 30.0]], vec![0]),
            instances(size, vec![[10.0, 2.0, 40.0, 16.0]], vec![1]),
        ],
        size,
    );
    let targets = gt.targets();
    let mut rng = Lcg::new(3);
    let f0 = tensor(&rng.vec_f64(2 * 4 * 4 * 6, 1.0), [2, 4, 4, 6], &device);
    let f1 = tensor(&rng.vec_f64(2 * 4 * 2 * 3, 1.0), [2, 4, 2, 3], &device);
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
    let gt = GtBatch::new(
        vec![
            instances(size, vec![[3.0, 5.0, 22.0, 28.0]], vec![0]),
            instances(size, vec![[12.0, 1.0, 40.0, 18.0]], vec![1]),
        ],
        size,
    );
    let targets = gt.targets();
    let mut rng = Lcg::new(11);
    let shape = [2, 4, 4, 5];
    let s_vals = rng.vec_f64(2 * 4 * 20, 1.0);
    let t_vals = rng.vec_f64(2 * 4 * 20, 1.0);
    let config = FgdConfig::new();

    // Stage 1: official init.
    let student = tensor(&s_vals, shape, &device).require_grad();
    let teacher = tensor(&t_vals, shape, &plain);
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
    let student = tensor(&s_vals, shape, &device).require_grad();
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

/// `teacher_gcblock_trains = false`: the teacher-side GcBlock gets no gradient (it stays
/// at init), the student side and the student feature still do; the global term equals
/// the trained-teacher one at init, where the teacher block is an identity either way.
#[test]
fn a_frozen_teacher_gcblock_gets_no_gradient() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let size = ImageSize::new(32, 40);
    let gt = GtBatch::new(
        vec![instances(size, vec![[3.0, 5.0, 22.0, 28.0]], vec![0])],
        size,
    );
    let targets = gt.targets();
    let mut rng = Lcg::new(5);
    let shape = [1, 4, 4, 5];
    let s_vals = rng.vec_f64(4 * 20, 1.0);
    let t_vals = rng.vec_f64(4 * 20, 1.0);
    let trained = FgdConfig::new();
    let frozen = FgdConfig::new().with_teacher_gcblock_trains(false);
    let mut modules = trained.init(&[4], &device);
    modules.levels[0].student = GcParams::random(&mut rng, 4).block(4, &device);
    let teacher = tensor(&t_vals, shape, &plain);
    let global = |config: &FgdConfig| {
        let student = tensor(&s_vals, shape, &device).require_grad();
        let terms = modules.forward(
            config,
            std::slice::from_ref(&student),
            std::slice::from_ref(&teacher),
            &targets,
        );
        let value = vals(terms.global.clone())[0];
        let grads = terms.total().backward();
        (value, student.grad(&grads).is_some(), grads)
    };
    let (v_trained, _, _) = global(&trained);
    let (v_frozen, student_grad, grads) = global(&frozen);
    assert!(student_grad);
    assert!((v_trained - v_frozen).abs() <= 1e-6 * v_trained.abs().max(1.0));
    let t = &modules.levels[0].teacher;
    assert!(t.channel_add_conv_3.weight.grad(&grads).is_none());
    assert!(t.conv_mask.weight.grad(&grads).is_none());
    let s = &modules.levels[0].student;
    let g = grad_norm(s.channel_add_conv_3.weight.grad(&grads)).unwrap_or(0.0);
    assert!(g > 0.0, "student-side W_2 grad {g}");
}
