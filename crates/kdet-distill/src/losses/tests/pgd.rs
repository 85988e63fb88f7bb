//! Tests of [`super`] (pgd.rs), kept apart to keep the loss file readable.
use super::*;
use crate::losses::test_util::{GtBatch, Lcg, assert_rel, instances, scalar, tensor, vals};
use kdet_structures::{ImageSize, Instances};

/// Priors of `levels` = `(H, W, stride)`, `a` per cell, in `(y, x, a)` order; anchor `j`
/// of a cell is a square of side `stride · (j + 1)` around the cell centre.
fn make_priors(levels: &[(usize, usize, usize)], a: usize) -> Priors {
    let mut priors = Priors {
        boxes: Vec::new(),
        centers: Vec::new(),
        level_offsets: vec![0],
        strides: Vec::new(),
        level_sizes: Vec::new(),
        num_per_location: a,
    };
    for &(h, w, s) in levels {
        for y in 0..h {
            for x in 0..w {
                for j in 0..a {
                    let (cx, cy) = ((x as f32 + 0.5) * s as f32, (y as f32 + 0.5) * s as f32);
                    let half = 0.5 * (s * (j + 1)) as f32;
                    priors
                        .boxes
                        .push([cx - half, cy - half, cx + half, cy + half]);
                    priors.centers.push([cx, cy]);
                }
            }
        }
        priors.level_offsets.push(priors.boxes.len());
        priors.strides.push(s);
        priors.level_sizes.push((h, w));
    }
    priors
}

// ---------------------------------------------------------------- masks

/// Hand-checkable case: one 3×4 level (stride 8, centres (4 + 8x, 4 + 8y)), K = 2, one GT
/// g = [0, 0, 20, 20] of class 0. Every teacher box equals g (IoU 1), so the quality is
/// σ^(1−α_q) of the class-0 score, monotone in the score for both maps. Class-0 scores:
/// 0.9 at (y0, x0), 0.8 at (y1, x0), 0.7 at (y2, x3), 0.1 elsewhere; class 1 is 0.95
/// everywhere (a wrong "max over classes" quality would rank by index instead).
///
/// Top-3 centres: (4, 4), (4, 12), (28, 20), a non-degenerate triangle. For 3 points in
/// 2-D the ML covariance makes every point's Mahalanobis distance exactly 2 (affine
/// invariance: Σ_j m_j = tr(Σ⁻¹ · kΣ) = 2k = 6, and for an equilateral triangle all m_j
/// are equal), so each candidate's weight is exp(−1) ≈ 0.3679, up to the ±0.05 px noise
/// (≈1 % here). (28, 20) is outside g → 0. Centres strictly inside g: (4,4), (12,4),
/// (4,12), (12,12) — (20, ·) lies on the border, not inside — so bg is 0 there, 1 elsewhere.
#[test]
fn masks_hand_case() {
    let device = Device::flex();
    let priors = make_priors(&[(3, 4, 8)], 1);
    let g = [0.0, 0.0, 20.0, 20.0];
    let size = ImageSize::new(24, 32);
    let gt = GtBatch::new(vec![instances(size, vec![g], vec![0])], size);
    let targets = gt.targets();
    let mut scores = vec![0.0f32; 12 * 2];
    for a in 0..12 {
        scores[a * 2] = 0.1;
        scores[a * 2 + 1] = 0.95;
    }
    scores[0] = 0.9; // (y0, x0)
    scores[4 * 2] = 0.8; // (y1, x0)
    scores[11 * 2] = 0.7; // (y2, x3)
    let teacher = TeacherPredictions {
        scores: vec![scores],
        boxes: vec![vec![g; 12]],
        num_classes: 2,
    };
    let e1 = (-1.0f64).exp();
    let config = PgdConfig::new().with_topk(3);
    let masks = pgd_masks(&config, &priors, &teacher, &targets, None, 0, &device);
    for map in [&masks.cls_fg[0], &masks.reg_fg[0]] {
        assert_eq!(map.dims(), [1, 3, 4]);
        let v = vals(map.clone());
        for (i, &x) in v.iter().enumerate() {
            if i == 0 || i == 4 {
                assert_rel(x as f64, e1, 0.03, "candidate weight");
            } else {
                assert_eq!(x, 0.0, "cell {i}: {v:?}");
            }
        }
    }
    let bg = vals(masks.bg[0].clone());
    let expected_bg = [0., 0., 1., 1., 0., 0., 1., 1., 1., 1., 1., 1.];
    assert_eq!(bg, expected_bg);

    // k = 1: the best candidate gets exactly 1.
    let masks = pgd_masks(
        &config.clone().with_topk(1),
        &priors,
        &teacher,
        &targets,
        None,
        0,
        &device,
    );
    let v = vals(masks.cls_fg[0].clone());
    assert_eq!(v[0], 1.0);
    assert!(v[1..].iter().all(|&x| x == 0.0), "{v:?}");

    // Ignoring the best prior zeroes it (the others keep their weight; bg unchanged).
    let mut flags = vec![false; 12];
    flags[0] = true;
    let ignore = [flags];
    let masks = pgd_masks(
        &config,
        &priors,
        &teacher,
        &targets,
        Some(&ignore),
        0,
        &device,
    );
    let v = vals(masks.cls_fg[0].clone());
    assert_eq!(v[0], 0.0);
    assert_rel(v[4] as f64, e1, 0.03, "non-ignored candidate");
    assert_eq!(vals(masks.bg[0].clone()), expected_bg);
}

/// f64 IoU, written out for the reference.
fn ref_iou(a: [f32; 4], b: [f32; 4]) -> f64 {
    let [a0, a1, a2, a3] = a.map(|v| v as f64);
    let [b0, b1, b2, b3] = b.map(|v| v as f64);
    let iw = (a2.min(b2) - a0.max(b0)).max(0.0);
    let ih = (a3.min(b3) - a1.max(b1)).max(0.0);
    let inter = iw * ih;
    let union = (a2 - a0) * (a3 - a1) + (b2 - b0) * (b3 - b1) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Spec §5.2 for one image and one quality exponent, in f64 (per prior).
#[allow(clippy::too_many_arguments)]
fn ref_weights(
    alpha: f64,
    topk: usize,
    priors: &Priors,
    scores: &[f32],
    boxes: &[[f32; 4]],
    num_classes: usize,
    gts: &[([f32; 4], usize)],
    noise: impl Fn(usize, usize, usize) -> f64,
) -> Vec<f64> {
    let p = priors.len();
    let mut out = vec![0.0f64; p];
    for (g, &(gt, class)) in gts.iter().enumerate() {
        // 1. quality; 2. top-k (ties by index).
        let mut q: Vec<(f64, usize)> = (0..p)
            .map(|a| {
                let s = scores[a * num_classes + class] as f64;
                (s.powf(1.0 - alpha) * ref_iou(boxes[a], gt).powf(alpha), a)
            })
            .collect();
        q.sort_by(|x, y| y.0.partial_cmp(&x.0).expect("finite").then(x.1.cmp(&y.1)));
        let cand: Vec<usize> = q[..topk].iter().map(|&(_, a)| a).collect();
        // 3. MLE Gaussian of the noisy centres.
        let pts: Vec<[f64; 2]> = cand
            .iter()
            .enumerate()
            .map(|(j, &a)| {
                let c = priors.centers[a];
                [c[0] as f64 + noise(g, j, 0), c[1] as f64 + noise(g, j, 1)]
            })
            .collect();
        let k = topk as f64;
        let mx = pts.iter().map(|p| p[0]).sum::<f64>() / k;
        let my = pts.iter().map(|p| p[1]).sum::<f64>() / k;
        let mut cov = [[0.0f64; 2]; 2];
        for p in &pts {
            let d = [p[0] - mx, p[1] - my];
            for r in 0..2 {
                for c in 0..2 {
                    cov[r][c] += d[r] * d[c] / k;
                }
            }
        }
        let det = cov[0][0] * cov[1][1] - cov[0][1] * cov[1][0] + 1e-10;
        let inv = [
            [cov[1][1] / det, -cov[0][1] / det],
            [-cov[1][0] / det, cov[0][0] / det],
        ];
        // 4. weight at the noise-free candidate centres, if strictly inside the GT.
        for &a in &cand {
            let c = priors.centers[a];
            let d = [c[0] as f64 - mx, c[1] as f64 - my];
            let m = d[0] * (inv[0][0] * d[0] + inv[0][1] * d[1])
                + d[1] * (inv[1][0] * d[0] + inv[1][1] * d[1]);
            let (cx, cy) = (c[0] as f64, c[1] as f64);
            let inside = cx - gt[0] as f64 > 1e-10
                && cy - gt[1] as f64 > 1e-10
                && gt[2] as f64 - cx > 1e-10
                && gt[3] as f64 - cy > 1e-10;
            if inside {
                out[a] = out[a].max((-0.5 * m).exp());
            }
        }
    }
    out
}

/// Golden masks: N = 2, levels 4×6 (stride 8) and 2×3 (stride 16), A = 2 anchors per
/// cell (so the `[N, H, W]` map is the max over a cell's anchors), K = 4, two GTs in
/// image 0 and one in image 1, random teacher scores and boxes, top-5. Expected: spec
/// §5.2 in f64 (`ref_weights`) with the same hash noise, then the max over each cell's
/// anchors; bg = 1 where the centre is inside no GT.
#[test]
fn masks_golden_two_levels_two_anchors() {
    let device = Device::flex();
    let levels = [(4, 6, 8), (2, 3, 16)];
    let a_per = 2;
    let priors = make_priors(&levels, a_per);
    let p = priors.len();
    let k = 4;
    let size = ImageSize::new(32, 48);
    let gts: [Vec<([f32; 4], usize)>; 2] = [
        vec![([6.0, 5.0, 30.0, 26.0], 1), ([20.0, 2.0, 46.0, 20.0], 3)],
        vec![([3.0, 8.0, 25.0, 30.0], 0)],
    ];
    let gt = GtBatch::new(
        gts.iter()
            .map(|g| {
                instances(
                    size,
                    g.iter().map(|x| x.0).collect(),
                    g.iter().map(|x| x.1).collect(),
                )
            })
            .collect(),
        size,
    );
    let targets = gt.targets();
    let mut rng = Lcg::new(5);
    let mut scores = Vec::new();
    let mut boxes = Vec::new();
    for _ in 0..2 {
        scores.push(
            rng.vec_f64(p * k, 1.0)
                .iter()
                .map(|v| (0.5 + 0.49 * v) as f32)
                .collect::<Vec<_>>(),
        );
        boxes.push(
            priors
                .centers
                .iter()
                .map(|c| {
                    let (hw, hh) = (
                        6.0 + 8.0 * rng.uniform(1.0).abs(),
                        6.0 + 8.0 * rng.uniform(1.0).abs(),
                    );
                    let (dx, dy) = (3.0 * rng.uniform(1.0), 3.0 * rng.uniform(1.0));
                    let (cx, cy) = (c[0] as f64 + dx, c[1] as f64 + dy);
                    [
                        (cx - hw) as f32,
                        (cy - hh) as f32,
                        (cx + hw) as f32,
                        (cy + hh) as f32,
                    ]
                })
                .collect::<Vec<_>>(),
        );
    }
    let teacher = TeacherPredictions {
        scores: scores.clone(),
        boxes: boxes.clone(),
        num_classes: k,
    };
    let config = PgdConfig::new().with_topk(5);
    let seed = 42;
    let masks = pgd_masks(&config, &priors, &teacher, &targets, None, seed, &device);

    let mut nonzero = [0usize; 2];
    for i in 0..2 {
        for (kind, alpha, got_maps) in [
            (0u64, config.cls_quality_alpha, &masks.cls_fg),
            (1u64, config.reg_quality_alpha, &masks.reg_fg),
        ] {
            let w = ref_weights(
                alpha as f64,
                5,
                &priors,
                &scores[i],
                &boxes[i],
                k,
                &gts[i],
                |g, j, c| position_noise(seed, kind, i, g, j, c),
            );
            for (l, &(h, wd, _)) in levels.iter().enumerate() {
                let got = vals(got_maps[l].clone());
                let start = priors.level_offsets[l];
                for cell in 0..h * wd {
                    let want = (0..a_per)
                        .map(|j| w[start + cell * a_per + j])
                        .fold(0.0, f64::max);
                    let got = got[i * h * wd + cell] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "image {i} kind {kind} level {l} cell {cell}: {got} vs {want}"
                    );
                    if want > 0.0 {
                        nonzero[kind as usize] += 1;
                    }
                }
            }
        }
        for (l, &(h, wd, _)) in levels.iter().enumerate() {
            let got = vals(masks.bg[l].clone());
            let start = priors.level_offsets[l];
            for cell in 0..h * wd {
                let c = priors.centers[start + cell * a_per];
                let inside_any = gts[i]
                    .iter()
                    .any(|(b, _)| c[0] > b[0] && c[1] > b[1] && c[0] < b[2] && c[1] < b[3]);
                assert_eq!(got[i * h * wd + cell], if inside_any { 0.0 } else { 1.0 });
            }
        }
    }
    // The case is not trivial: each map has weights, and the two maps differ.
    assert!(nonzero[0] >= 3 && nonzero[1] >= 3, "{nonzero:?}");
    assert_ne!(vals(masks.cls_fg[0].clone()), vals(masks.reg_fg[0].clone()));
    // Reproducible from the seed; another seed moves the noise, hence the weights.
    let again = pgd_masks(&config, &priors, &teacher, &targets, None, seed, &device);
    assert_eq!(vals(again.cls_fg[0].clone()), vals(masks.cls_fg[0].clone()));
    let other = pgd_masks(
        &config,
        &priors,
        &teacher,
        &targets,
        None,
        seed + 1,
        &device,
    );
    assert_ne!(vals(other.cls_fg[0].clone()), vals(masks.cls_fg[0].clone()));
}

/// No ground truth: both foreground maps are 0 and the background is 1 everywhere (the
/// official `assign` returns zeros and `get_back_weight` ones); the loss then has
/// cls_fg = reg = reg_attention = 0 exactly and finite cls_bg / cls_attention.
#[test]
fn no_gt_images() {
    let device = Device::flex();
    let priors = make_priors(&[(2, 3, 8), (1, 2, 16)], 1);
    let size = ImageSize::new(16, 24);
    let gt = GtBatch::new(vec![Instances::empty(size), Instances::empty(size)], size);
    let targets = gt.targets();
    let p = priors.len();
    let teacher = TeacherPredictions {
        scores: vec![vec![0.5; p * 3]; 2],
        boxes: vec![vec![[0.0, 0.0, 8.0, 8.0]; p]; 2],
        num_classes: 3,
    };
    let masks = pgd_masks(
        &PgdConfig::new(),
        &priors,
        &teacher,
        &targets,
        None,
        1,
        &device,
    );
    for l in 0..2 {
        assert!(vals(masks.cls_fg[l].clone()).iter().all(|&v| v == 0.0));
        assert!(vals(masks.reg_fg[l].clone()).iter().all(|&v| v == 0.0));
        assert!(vals(masks.bg[l].clone()).iter().all(|&v| v == 1.0));
    }
    let mut rng = Lcg::new(9);
    let feats = |rng: &mut Lcg| {
        vec![
            tensor(&rng.vec_f64(2 * 4 * 6, 1.0), [2, 4, 2, 3], &device),
            tensor(&rng.vec_f64(2 * 4 * 2, 1.0), [2, 4, 1, 2], &device),
        ]
    };
    let (sc, tc, sr, tr) = (
        feats(&mut rng),
        feats(&mut rng),
        feats(&mut rng),
        feats(&mut rng),
    );
    for mixing in [false, true] {
        let config = PgdConfig::new().with_official_batch_mixing(mixing);
        let terms = pgd_loss(&config, &sc, &tc, &sr, &tr, &masks);
        assert_eq!(scalar(terms.cls_fg), 0.0);
        assert_eq!(scalar(terms.reg), 0.0);
        assert_eq!(scalar(terms.reg_attention), 0.0);
        for v in [terms.cls_bg, terms.cls_attention] {
            let v = scalar(v);
            assert!(v.is_finite() && v > 0.0, "{v}");
        }
    }
}

// ---------------------------------------------------------------- losses

/// Random masks for levels `shapes` (`[N, H, W]`): cls_fg in [0, 1) with about half
/// zeros, bg binary, reg_fg sparse (about a quarter non-zero); `reg_empty_level` gets an
/// all-zero reg map (the "no pixel" path).
fn random_masks(
    rng: &mut Lcg,
    shapes: &[[usize; 3]],
    reg_empty_level: Option<usize>,
) -> (Vec<[Vec<f64>; 3]>, PgdMasks) {
    let device = Device::flex();
    let mut raw = Vec::new();
    let mut masks = PgdMasks {
        cls_fg: Vec::new(),
        reg_fg: Vec::new(),
        bg: Vec::new(),
    };
    for (l, shape) in shapes.iter().enumerate() {
        let len = shape.iter().product();
        let cls: Vec<f64> = rng
            .vec_f64(len, 1.0)
            .iter()
            .map(|v| if *v > 0.0 { *v } else { 0.0 })
            .collect();
        let bg: Vec<f64> = rng
            .vec_f64(len, 1.0)
            .iter()
            .map(|v| if *v > -0.2 { 1.0 } else { 0.0 })
            .collect();
        let reg: Vec<f64> = rng
            .vec_f64(len, 1.0)
            .iter()
            .map(|v| {
                if *v > 0.5 && reg_empty_level != Some(l) {
                    2.0 * (v - 0.5)
                } else {
                    0.0
                }
            })
            .collect();
        masks.cls_fg.push(tensor(&cls, *shape, &device));
        masks.reg_fg.push(tensor(&reg, *shape, &device));
        masks.bg.push(tensor(&bg, *shape, &device));
        raw.push([cls, reg, bg]);
    }
    (raw, masks)
}

/// Spec §5.3 in f64 for one level: `[L_fg, L_bg, L_at, L_reg, L_reg_at]` before
/// coefficients. `s`, `t`: cls features `[n, c, h, w]`; `sr`, `tr`: reg features
/// `[n, cr, h, w]`.
#[allow(clippy::too_many_arguments)]
fn ref_level(
    s: &[f64],
    t: &[f64],
    sr: &[f64],
    tr: &[f64],
    [n, c, h, w]: [usize; 4],
    cr: usize,
    masks: &[Vec<f64>; 3],
    temp: f64,
    mixing: bool,
) -> [f64; 5] {
    let hw = h * w;
    let [cls, reg, bg] = masks;
    // Per-image normalisation by the non-zero count.
    let norm = |m: &Vec<f64>| -> Vec<f64> {
        let mut out = m.clone();
        for i in 0..n {
            let cnt = (0..hw).filter(|&p| m[i * hw + p] != 0.0).count() as f64;
            for p in 0..hw {
                out[i * hw + p] = m[i * hw + p] / cnt.max(1e-10);
            }
        }
        if mixing {
            // Every image weighted by Σ_m M_m.
            let summed: Vec<f64> = (0..hw)
                .map(|p| (0..n).map(|m| out[m * hw + p]).sum())
                .collect();
            for i in 0..n {
                out[i * hw..(i + 1) * hw].copy_from_slice(&summed);
            }
        }
        out
    };
    let (fg, bgn) = (norm(cls), norm(bg));
    // Spatial attention HW·softmax_hw(mean_c|F|/T) and per-pixel C·softmax_c(|F|/T).
    let spatial = |f: &[f64], i: usize| -> Vec<f64> {
        let g: Vec<f64> = (0..hw)
            .map(|p| (0..c).map(|ch| f[(i * c + ch) * hw + p].abs()).sum::<f64>() / c as f64 / temp)
            .collect();
        let z: f64 = g.iter().map(|v| v.exp()).sum();
        g.iter().map(|v| hw as f64 * v.exp() / z).collect()
    };
    let channel = |col: &[f64]| -> Vec<f64> {
        let z: f64 = col.iter().map(|v| (v.abs() / temp).exp()).sum();
        col.iter()
            .map(|v| col.len() as f64 * (v.abs() / temp).exp() / z)
            .collect()
    };
    let (mut lfg, mut lbg, mut at_c, mut at_s) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..n {
        let (sp_t, sp_s) = (spatial(t, i), spatial(s, i));
        for p in 0..hw {
            let col_t: Vec<f64> = (0..c).map(|ch| t[(i * c + ch) * hw + p]).collect();
            let col_s: Vec<f64> = (0..c).map(|ch| s[(i * c + ch) * hw + p]).collect();
            let (ch_t, ch_s) = (channel(&col_t), channel(&col_s));
            for ch in 0..c {
                let e = sp_t[p] * ch_t[ch] * (col_t[ch] - col_s[ch]).powi(2);
                lfg += fg[i * hw + p] * e;
                lbg += bgn[i * hw + p] * e;
                at_c += (ch_s[ch] - ch_t[ch]).abs();
            }
            at_s += (sp_s[p] - sp_t[p]).abs();
        }
    }
    let nf = n as f64;
    let (mut fea, mut at_r, mut count) = (0.0, 0.0, 0usize);
    for i in 0..n {
        for p in 0..hw {
            let wgt = reg[i * hw + p];
            if wgt == 0.0 {
                continue;
            }
            count += 1;
            let col_t: Vec<f64> = (0..cr).map(|ch| tr[(i * cr + ch) * hw + p]).collect();
            let col_s: Vec<f64> = (0..cr).map(|ch| sr[(i * cr + ch) * hw + p]).collect();
            let (ch_t, ch_s) = (channel(&col_t), channel(&col_s));
            let mean_c: f64 = (0..cr)
                .map(|ch| ch_t[ch] * (col_s[ch] - col_t[ch]).powi(2))
                .sum::<f64>()
                / cr as f64;
            fea += wgt * mean_c;
            at_r += (0..cr).map(|ch| (ch_s[ch] - ch_t[ch]).abs()).sum::<f64>();
        }
    }
    let (reg_l, reg_at) = if count == 0 {
        (0.0, 0.0)
    } else {
        (fea / count as f64, at_r / count as f64)
    };
    [
        lfg / nf,
        lbg / nf,
        at_c / (nf * hw as f64) + at_s / nf,
        reg_l,
        reg_at,
    ]
}

/// Golden value of every term in both batch-mixing modes: N = 2, levels 4×6 and 2×3,
/// C = 4 (cls tower), C' = 6 (reg tower), random features and masks, the second level's
/// reg map empty. Expected: spec §5.3 in f64 (`ref_level`) with the coefficients
/// `ω_l α, ω_l β, δ, γ, δ` (ω = 1, 1.25) and summed over levels. The two modes must
/// differ in cls_fg / cls_bg (different masks per image) and agree elsewhere.
#[test]
fn loss_golden_both_mixing_modes() {
    let device = Device::flex();
    let (n, c, cr) = (2, 4, 6);
    let dims = [(4, 6), (2, 3)];
    let mut rng = Lcg::new(17);
    let (raw, masks) = random_masks(&mut rng, &[[n, 4, 6], [n, 2, 3]], Some(1));
    let mut feats: [Vec<Vec<f64>>; 4] = Default::default();
    for &(h, w) in &dims {
        for (f, (len, scale)) in feats
            .iter_mut()
            .zip([(c, 1.0), (c, 1.5), (cr, 1.0), (cr, 1.5)])
        {
            f.push(
                rng.vec_f64(n * len * h * w, 1.0)
                    .iter()
                    .map(|v| scale * v)
                    .collect(),
            );
        }
    }
    let to_tensors = |which: usize, ch: usize| -> Vec<Tensor<4>> {
        dims.iter()
            .zip(&feats[which])
            .map(|(&(h, w), v)| tensor(v, [n, ch, h, w], &device))
            .collect()
    };
    let (sc, tc, sr, tr) = (
        to_tensors(0, c),
        to_tensors(1, c),
        to_tensors(2, cr),
        to_tensors(3, cr),
    );
    let mut results = Vec::new();
    for mixing in [false, true] {
        let config = PgdConfig::new().with_official_batch_mixing(mixing);
        let mut expected = [0.0f64; 5];
        for (l, &(h, w)) in dims.iter().enumerate() {
            let r = ref_level(
                &feats[0][l],
                &feats[1][l],
                &feats[2][l],
                &feats[3][l],
                [n, c, h, w],
                cr,
                &raw[l],
                config.temperature as f64,
                mixing,
            );
            let omega = [1.0, 1.25][l];
            let coef = [
                omega * config.alpha as f64,
                omega * config.beta as f64,
                config.delta as f64,
                config.gamma as f64,
                config.delta as f64,
            ];
            for (e, (v, k)) in expected.iter_mut().zip(r.iter().zip(coef)) {
                *e += v * k;
            }
        }
        let terms = pgd_loss(&config, &sc, &tc, &sr, &tr, &masks);
        let got = [
            terms.cls_fg,
            terms.cls_bg,
            terms.cls_attention,
            terms.reg,
            terms.reg_attention,
        ]
        .map(scalar);
        for (name, (g, e)) in ["cls_fg", "cls_bg", "cls_attention", "reg", "reg_attention"]
            .iter()
            .zip(got.iter().zip(expected))
        {
            assert!(e > 0.0, "{name}: degenerate expected value");
            assert_rel(*g, e, 1e-4, name);
        }
        results.push(got);
    }
    // Mixing weights each image by both images' masks: cls_fg / cls_bg change, the
    // attention and reg terms do not.
    for t in 0..2 {
        let rel = (results[1][t] - results[0][t]).abs() / results[0][t];
        assert!(rel > 0.01, "term {t}: modes agree ({:?})", results);
    }
    for (mixed, per_image) in results[1][2..].iter().zip(&results[0][2..]) {
        assert_rel(*mixed, *per_image, 1e-6, "mode-independent term");
    }
}

/// A case small enough to do by hand: N = 1, C = 1 (so the per-pixel channel attention
/// is exactly 1), one 1×2 level, `F^T = [1, 3]`, `F^S = 0` in both towers, T = 0.8.
/// - `A^sp_T = 2·softmax([1, 3]/0.8) = [2/(1+e^2.5), 2e^2.5/(1+e^2.5)]
///   = [0.1517164, 1.8482836]`, `A^sp_S = [1, 1]`.
/// - cls fg mask [0.5, 0] → normalised by its 1 non-zero cell → [0.5, 0]:
///   `L_fg = 0.5·0.1517164·1 = 0.0758582`; bg mask [0, 1] → [0, 1]:
///   `L_bg = 1.8482836·9 = 16.634553`; `L_at = 0 + |1 − 0.1517164| + |1 − 1.8482836|
///   = 1.6965673`.
/// - reg mask [0, 0.5]: one pixel, `0.5 · mean_c(1·(0 − 3)²) / 1 = 4.5`; attention 0.
/// - Terms (ω_0 = 1): `0.04·0.0758582 = 0.00303433`, `0.02·16.634553 = 0.33269106`,
///   `8e-4·1.6965673 = 0.00135725`, `0.064·4.5 = 0.288`, 0.
#[test]
fn hand_derived_tiny_case() {
    let device = Device::flex();
    let feat = |v: [f64; 2]| vec![tensor(&v, [1, 1, 1, 2], &device)];
    let map = |v: [f64; 2]| vec![tensor(&v, [1, 1, 2], &device)];
    let masks = PgdMasks {
        cls_fg: map([0.5, 0.0]),
        reg_fg: map([0.0, 0.5]),
        bg: map([0.0, 1.0]),
    };
    let terms = pgd_loss(
        &PgdConfig::new(),
        &feat([0.0, 0.0]),
        &feat([1.0, 3.0]),
        &feat([0.0, 0.0]),
        &feat([1.0, 3.0]),
        &masks,
    );
    assert_rel(scalar(terms.cls_fg), 0.003_034_327, 1e-5, "cls_fg");
    assert_rel(scalar(terms.cls_bg), 0.332_691_06, 1e-5, "cls_bg");
    assert_rel(
        scalar(terms.cls_attention),
        0.001_357_254,
        1e-5,
        "cls_attention",
    );
    assert_rel(scalar(terms.reg), 0.288, 1e-6, "reg");
    assert_eq!(scalar(terms.reg_attention), 0.0);
}

/// Student == teacher: every term is 0 (zero feature differences and identical
/// attention maps, whatever the masks).
#[test]
fn zero_when_student_equals_teacher() {
    let device = Device::flex();
    let mut rng = Lcg::new(23);
    let (_, masks) = random_masks(&mut rng, &[[2, 3, 5], [2, 2, 3]], None);
    let cls = vec![
        tensor(&rng.vec_f64(2 * 4 * 15, 1.0), [2, 4, 3, 5], &device),
        tensor(&rng.vec_f64(2 * 4 * 6, 1.0), [2, 4, 2, 3], &device),
    ];
    let reg = vec![
        tensor(&rng.vec_f64(2 * 4 * 15, 1.0), [2, 4, 3, 5], &device),
        tensor(&rng.vec_f64(2 * 4 * 6, 1.0), [2, 4, 2, 3], &device),
    ];
    for mixing in [false, true] {
        let config = PgdConfig::new().with_official_batch_mixing(mixing);
        let terms = pgd_loss(&config, &cls, &cls, &reg, &reg, &masks);
        for (name, v) in [
            ("cls_fg", terms.cls_fg),
            ("cls_bg", terms.cls_bg),
            ("cls_attention", terms.cls_attention),
            ("reg", terms.reg),
            ("reg_attention", terms.reg_attention),
        ] {
            let v = scalar(v);
            assert!(v.abs() < 1e-12, "{name} = {v}");
        }
    }
}

/// Gradients reach both student inputs (cls and reg towers), finite and non-zero; the
/// teacher inputs are plain-device constants. Masks come from `pgd_masks` (the real
/// path), built on the plain device.
#[test]
fn gradients_reach_student() {
    let plain = Device::flex();
    let device = Device::flex().autodiff();
    let priors = make_priors(&[(3, 4, 8), (2, 2, 16)], 1);
    let p = priors.len();
    let size = ImageSize::new(24, 32);
    let gt = GtBatch::new(
        vec![
            instances(size, vec![[2.0, 1.0, 22.0, 18.0]], vec![0]),
            instances(size, vec![[9.0, 6.0, 31.0, 23.0]], vec![1]),
        ],
        size,
    );
    let targets = gt.targets();
    let mut rng = Lcg::new(31);
    let teacher = TeacherPredictions {
        scores: (0..2)
            .map(|_| {
                rng.vec_f64(p * 2, 1.0)
                    .iter()
                    .map(|v| (0.5 + 0.4 * v) as f32)
                    .collect()
            })
            .collect(),
        boxes: vec![
            priors
                .centers
                .iter()
                .map(|c| [c[0] - 9.0, c[1] - 8.0, c[0] + 9.0, c[1] + 8.0])
                .collect();
            2
        ],
        num_classes: 2,
    };
    let masks = pgd_masks(
        &PgdConfig::new().with_topk(4),
        &priors,
        &teacher,
        &targets,
        None,
        3,
        &plain,
    );
    let shapes = [[2, 4, 3, 4], [2, 4, 2, 2]];
    let make = |dev: &Device, rng: &mut Lcg| -> Vec<Tensor<4>> {
        shapes
            .iter()
            .map(|s| tensor(&rng.vec_f64(s.iter().product(), 1.0), *s, dev))
            .collect()
    };
    let sc: Vec<Tensor<4>> = make(&device, &mut rng)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let sr: Vec<Tensor<4>> = make(&device, &mut rng)
        .into_iter()
        .map(|t| t.require_grad())
        .collect();
    let tc = make(&plain, &mut rng);
    let tr = make(&plain, &mut rng);
    assert!(tc.iter().chain(&tr).all(|t| !t.is_autodiff()));
    let config = PgdConfig::new();
    let terms = pgd_loss(&config, &sc, &tc, &sr, &tr, &masks);
    assert!(
        scalar(terms.reg.clone()) > 0.0,
        "the reg branch must have pixels here"
    );
    let grads = terms.total().backward();
    for (name, x) in [("cls", &sc), ("reg", &sr)] {
        for (l, t) in x.iter().enumerate() {
            let g = vals(t.grad(&grads).expect("student gradient"));
            assert!(g.iter().all(|v| v.is_finite()), "{name} level {l}");
            assert!(
                g.iter().any(|&v| v != 0.0),
                "{name} level {l}: zero gradient"
            );
        }
    }
}

/// Defaults equal the official GFL config, `ω_l` beyond the list reuses the last, and
/// the config survives a serde round trip.
#[test]
fn config_defaults_and_serde() {
    let config = PgdConfig::new();
    assert_eq!(config.temperature, 0.8);
    assert_eq!(
        (config.alpha, config.beta, config.gamma, config.delta),
        (0.04, 0.02, 0.064, 8e-4)
    );
    assert_eq!(config.level_weights, vec![1.0, 1.25, 1.5, 1.75, 2.0]);
    assert_eq!(
        (
            config.topk,
            config.cls_quality_alpha,
            config.reg_quality_alpha
        ),
        (30, 0.8, 0.6)
    );
    assert!(config.official_batch_mixing);
    assert_eq!(config.level_weight(1), 1.25);
    assert_eq!(config.level_weight(7), 2.0);
    assert_eq!(
        config.clone().with_level_weights(vec![]).level_weight(0),
        1.0
    );
    let back = PgdConfig::load_binary(config.to_string().as_bytes()).expect("round trip");
    assert_eq!(back, config);
}
