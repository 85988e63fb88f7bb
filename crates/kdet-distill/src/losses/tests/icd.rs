//! Tests of [`super`] (icd.rs), kept apart to keep the method file readable.
use super::*;
use crate::losses::test_util::{GtBatch, Lcg, assert_rel, instances, scalar, tensor, to_f64};

fn size(height: u32, width: u32) -> ImageSize {
    ImageSize { height, width }
}

/// `min(max(1, ⌊n (r + 1)⌋), max(300, n))` with r = 5.
#[test]
fn query_counts_follow_the_official_rule() {
    for (real, want) in [(0, 1), (1, 6), (3, 18), (50, 300), (60, 300), (400, 400)] {
        assert_eq!(query_count(real, 5.0, 300), want, "{real} objects");
    }
}

/// Real objects first with their class, extents and edges; the fake ones inside the image
/// with the official extent range; the same numbers for the same (seed, step), others for
/// another step; the scale bins and the sine encoding by hand.
#[test]
fn queries_follow_the_official_layout() {
    let config = IcdConfig::new();
    let gt = vec![
        instances(
            size(100, 200),
            vec![[10.0, 20.0, 74.0, 60.0], [0.0, 0.0, 200.0, 100.0]],
            vec![2, 0],
        ),
        instances(size(100, 120), vec![], vec![]),
    ];
    let sizes = [size(100, 200), size(100, 120)];
    let q = icd_queries(&config, &gt, &sizes, 3, 7, 11);
    assert_eq!(q.len(), 2);
    assert_eq!((q[0].len(), q[0].real), (12, 2));
    assert_eq!((q[1].len(), q[1].real), (1, 0));
    let width = 3 + 2 * 128 + 10;
    assert_eq!(q[0].descriptors.len(), 12 * width);
    // The first object: class 2, 64 x 40 px of a 200 x 100 image.
    let row = &q[0].descriptors[..width];
    assert_eq!(&row[..3], &[0.0, 0.0, 1.0]);
    let (w, h) = (64.0 / 200.0, 40.0 / 100.0);
    for (got, want) in q[0].extents[0].iter().zip([w, h, w, h]) {
        assert!((got - want).abs() < 1e-6, "{:?}", q[0].extents[0]);
    }
    let e = q[0].edges[0];
    assert!((e[0] + e[2] - w).abs() < 1e-6 && (e[1] + e[3] - h).abs() < 1e-6);
    // Reference point within ±0.3 of the extent around the centre.
    assert!((e[0] - w / 2.0).abs() <= 0.3 * w + 1e-6, "{e:?}");
    assert!((e[1] - h / 2.0).abs() <= 0.3 * h + 1e-6, "{e:?}");
    // Sine of the reference x: element 0 is sin(2π x), element 64 cos(2π x).
    let rx = 10.0 / 200.0 + e[0];
    assert!((row[3] - (2.0 * std::f32::consts::PI * rx).sin()).abs() < 1e-5);
    assert!((row[3 + 64] - (2.0 * std::f32::consts::PI * rx).cos()).abs() < 1e-5);
    // Scale bins: ⌊1.44 ln 64 − 5⌋ = ⌊0.989⌋ = 0 and ⌊1.44 ln 40 − 5⌋ → clamped to 0;
    // the whole image: ⌊1.44 ln 200 − 5⌋ = 2, ⌊1.44 ln 100 − 5⌋ = 1.
    let scale = |r: usize| &q[0].descriptors[r * width + 3 + 256..(r + 1) * width];
    assert_eq!(
        scale(0),
        &[1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(
        scale(1),
        &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    );
    // Fake objects: inside the image, extents in the official range, one class each.
    for r in 2..12 {
        let ext = q[0].extents[r];
        assert!(ext[0] <= 0.7 + 1e-6 && ext[1] <= 0.7 + 1e-6, "{ext:?}");
        let classes = &q[0].descriptors[r * width..r * width + 3];
        assert_eq!(classes.iter().sum::<f32>(), 1.0);
    }
    assert_eq!(q, icd_queries(&config, &gt, &sizes, 3, 7, 11));
    assert_ne!(q, icd_queries(&config, &gt, &sizes, 3, 7, 12));
}

/// Official `mask_out_padding`: a 64 × 64 batch, images 64 × 64 and 64 (h) × 44 (w); on the
/// 8 × 8 level (stride 8) the second image is valid on ⌈44 / 8⌉ = 6 columns.
#[test]
fn padding_follows_mask_out_padding() {
    let gt = GtBatch::new(
        vec![
            instances(size(64, 64), vec![], vec![]),
            instances(size(64, 44), vec![], vec![]),
        ],
        size(64, 64),
    );
    let pad = level_padding(&gt.targets(), 8, 8);
    assert!(pad[..64].iter().all(|p| !p));
    for y in 0..8 {
        for x in 0..8 {
            assert_eq!(pad[64 + y * 8 + x], x >= 6, "({y}, {x})");
        }
    }
}

/// Golden value of the value-mimic term from the formula in f64 (two images, the second
/// without objects, so a zero mask), and zero when the student's values are the
/// teacher's.
#[test]
fn value_mimic_golden_value_and_zero() {
    let device = Device::flex();
    let (len, heads, d) = (5, 2, 3);
    let mut rng = Lcg::new(3);
    let s: Vec<Vec<f32>> = (0..2).map(|_| rng.vec_f32(len * heads * d, 2.0)).collect();
    let t: Vec<Vec<f32>> = (0..2).map(|_| rng.vec_f32(len * heads * d, 2.0)).collect();
    let m: Vec<Vec<f32>> = vec![
        rng.vec_f32(heads * len, 1.0)
            .into_iter()
            .map(|v| v.abs())
            .collect(),
        vec![0.0; heads * len],
    ];
    let mk3 = |v: &[Vec<f32>]| -> Vec<Tensor<3>> {
        v.iter()
            .map(|x| tensor(x, [len, heads, d], &device))
            .collect()
    };
    let masks: Vec<Tensor<2>> = m.iter().map(|x| tensor(x, [heads, len], &device)).collect();
    let got = scalar(value_mimic_loss(&mk3(&s), &mk3(&t), &masks));
    let mut sum = 0.0;
    for n in 0..2 {
        let (s, t, m) = (to_f64(&s[n]), to_f64(&t[n]), to_f64(&m[n]));
        for h in 0..heads {
            let total: f64 = (0..len).map(|i| m[h * len + i]).sum::<f64>().max(1e-6);
            for c in 0..d {
                let num: f64 = (0..len)
                    .map(|i| {
                        let k = (i * heads + h) * d + c;
                        m[h * len + i] * (s[k] - t[k]).powi(2)
                    })
                    .sum();
                sum += num / total;
            }
        }
    }
    assert_rel(got, sum / (2 * heads * d) as f64, 1e-5, "ICD value mimic");
    let zero = scalar(value_mimic_loss(&mk3(&s), &mk3(&s), &masks));
    assert_eq!(zero, 0.0);
}

/// The decoder's logits are the scaled query-key products with padded positions at the
/// masked value, so the softmax gives them no weight; its values are the per-head value
/// projection.
#[test]
fn decoder_masks_padding_and_returns_per_head_values() {
    let device = Device::flex();
    let decoder = ConditionalDecoder::new(8, &device);
    let mut rng = Lcg::new(9);
    let queries = tensor(&rng.vec_f32(3 * 8, 1.0), [3, 8], &device);
    let features = tensor(&rng.vec_f32(6 * 8, 1.0), [6, 8], &device);
    let positions = tensor(&rng.vec_f32(6 * 8, 1.0), [6, 8], &device);
    let padding = tensor(&[0.0f32, 0.0, 0.0, 0.0, 1.0, 1.0], [6], &device);
    let out = decoder.forward(queries, features.clone(), positions, padding, 2);
    assert_eq!(out.queries.dims(), [3, 8]);
    assert_eq!(out.logits.dims(), [2, 3, 6]);
    assert_eq!(out.values.dims(), [6, 2, 4]);
    let weights = crate::losses::test_util::vals(softmax(out.logits, 2));
    for row in weights.chunks(6) {
        assert!(row[4] == 0.0 && row[5] == 0.0, "{row:?}");
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let values = crate::losses::test_util::vals(out.values);
    let want = crate::losses::test_util::vals(decoder.value.forward(features));
    assert_eq!(values, want);
}
