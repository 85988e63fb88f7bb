//! The spatio-temporal IoU of two tracks.

use hotcoco::types::Rle;

/// Pixels set in both `a` and `b` (same canvas), walking both run lists at once without
/// allocating. (hotcoco has the same routine but keeps it crate-private; `hotcoco::mask::merge`
/// followed by `area` gives the same count with an allocation per frame pair, and the unit
/// tests check the two agree.)
pub fn rle_intersection_area(a: &Rle, b: &Rle) -> u64 {
    let (ca, cb) = (&a.counts, &b.counts);
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut ra, mut rb) = (
        ca.first().copied().unwrap_or(0),
        cb.first().copied().unwrap_or(0),
    );
    let mut inter = 0u64;
    while ia < ca.len() && ib < cb.len() {
        if ra == 0 {
            ia += 1;
            ra = ca.get(ia).copied().unwrap_or(0);
            continue;
        }
        if rb == 0 {
            ib += 1;
            rb = cb.get(ib).copied().unwrap_or(0);
            continue;
        }
        let step = ra.min(rb);
        // Odd-indexed runs are 1s.
        if ia % 2 == 1 && ib % 2 == 1 {
            inter += u64::from(step);
        }
        ra -= step;
        rb -= step;
    }
    inter
}

/// Spatio-temporal IoU of a detected and a ground-truth track (`ytvoseval.computeIoU`'s
/// `iou_seq`): Σ_t |d_t ∩ g_t| / Σ_t |d_t ∪ g_t| over the frames both lists have, a frame
/// with one mask adding it to the union only; 0 when the union is empty.
pub fn track_iou(d: &[Option<Rle>], g: &[Option<Rle>]) -> f64 {
    let areas = |t: &[Option<Rle>]| -> Vec<u64> {
        t.iter()
            .map(|m| m.as_ref().map_or(0, hotcoco::mask::area))
            .collect()
    };
    track_iou_with_areas(d, &areas(d), g, &areas(g))
}

pub(super) fn track_iou_with_areas(
    d: &[Option<Rle>],
    d_areas: &[u64],
    g: &[Option<Rle>],
    g_areas: &[u64],
) -> f64 {
    let (mut inter, mut union) = (0u64, 0u64);
    for (t, (dm, gm)) in d.iter().zip(g).enumerate() {
        match (dm, gm) {
            (Some(dm), Some(gm)) => {
                let i = rle_intersection_area(dm, gm);
                inter += i;
                union += d_areas[t] + g_areas[t] - i;
            }
            (None, Some(_)) => union += g_areas[t],
            (Some(_), None) => union += d_areas[t],
            (None, None) => {}
        }
    }
    // The reference sums areas as floats; integers below 2^53 sum exactly either way.
    if union > 0 {
        inter as f64 / union as f64
    } else {
        0.0
    }
}
