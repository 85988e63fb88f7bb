//! FG-ARI and mBO for unsupervised (video) object segmentation, as slotcontrast computes
//! them (`slotcontrast/metrics.py`: `AdjustedRandIndex`, `IntersectionOverUnion` with
//! `matching="overlap"`); spec: `../shared/methods/video-semisup-weak.md` §5.6.
//!
//! A *sample* is one point set: for the video metrics (`VideoARI`, `VideoIoU`) all frames of
//! a video flattened together, so a track that switches identity between frames is
//! penalised; for the image metrics each frame on its own. The ground truth is a set of
//! binary channel masks over the points (a point may be in none — it is then ignored — and,
//! with `ignore_overlaps`, in several); the prediction is one label per point (the argmax of
//! the decoder's masks, so one-hot by construction).
//!
//! Values are fractions; papers report them ×100.
//!
//! Special cases, as in the reference:
//! - ARI is 1 when its denominator is 0: both sides put every point in one cluster, or both
//!   put at most one point in each cluster (this includes a sample of one point);
//! - a sample whose ground truth marks no point at all (before the background channel is
//!   dropped) is skipped by FG-ARI; so a video that is all background still scores ARI 1
//!   with `ignore_background` (no foreground points, denominator 0);
//! - mBO skips samples without a non-empty ground-truth channel (after dropping the
//!   background) and averages over the non-empty channels only; an IoU with an empty union
//!   is 0.

use std::collections::HashMap;

use crate::error::EvalError;

/// Options of both metrics. The default (both `false`) is YouTube-VIS-style ground truth,
/// which has no background channel; MOVi sets `ignore_background`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaskMetricConfig {
    /// Channel 0 of the ground truth is the background: drop it (FG-ARI).
    pub ignore_background: bool,
    /// Ignore points in more than one ground-truth channel; otherwise such points are an
    /// error.
    pub ignore_overlaps: bool,
}

/// Checks shapes and overlaps; returns the per-point count of ground-truth channels.
fn check<M: AsRef<[bool]>>(
    true_masks: &[M],
    pred_labels: &[u32],
    config: MaskMetricConfig,
) -> Result<Vec<u32>, EvalError> {
    let n = pred_labels.len();
    if let Some((c, m)) = true_masks
        .iter()
        .enumerate()
        .find(|(_, m)| m.as_ref().len() != n)
    {
        return Err(EvalError::MaskMetric(format!(
            "ground-truth channel {c} has {} points but there are {n} predicted labels",
            m.as_ref().len()
        )));
    }
    let mut per_point = vec![0u32; n];
    for m in true_masks {
        for (count, &set) in per_point.iter_mut().zip(m.as_ref()) {
            *count += u32::from(set);
        }
    }
    if !config.ignore_overlaps
        && let Some(p) = per_point.iter().position(|&c| c > 1)
    {
        return Err(EvalError::MaskMetric(format!(
            "point {p} is in {} ground-truth channels; set ignore_overlaps to skip such points",
            per_point[p]
        )));
    }
    Ok(per_point)
}

/// The ground-truth channels that take part, and whether each point does.
fn active_channels<'a, M: AsRef<[bool]>>(
    true_masks: &'a [M],
    per_point: &[u32],
    config: MaskMetricConfig,
) -> (&'a [M], Vec<bool>) {
    let channels = if config.ignore_background && !true_masks.is_empty() {
        &true_masks[1..]
    } else {
        true_masks
    };
    // With `ignore_overlaps`, points in several channels leave every channel.
    let point_ok = per_point
        .iter()
        .map(|&c| !(config.ignore_overlaps && c > 1))
        .collect();
    (channels, point_ok)
}

/// Dense indices for the predicted labels.
fn dense_labels(pred_labels: &[u32]) -> (Vec<usize>, usize) {
    let mut index: HashMap<u32, usize> = HashMap::new();
    let dense = pred_labels
        .iter()
        .map(|l| {
            let next = index.len();
            *index.entry(*l).or_insert(next)
        })
        .collect();
    (dense, index.len())
}

/// Adjusted Rand index of one sample, or `None` when the sample is skipped (its ground
/// truth marks no point). See the module docs for the special cases.
///
/// With channels `c` (ground truth) and predicted clusters `k`, `n_ck` the number of points
/// in both, `a_c = Σ_k n_ck`, `b_k = Σ_c n_ck`, `N = Σ_c a_c`:
/// `ARI = (Σ n_ck(n_ck-1) - E) / (½[Σ a_c(a_c-1) + Σ b_k(b_k-1)] - E)` with
/// `E = Σ a_c(a_c-1) · Σ b_k(b_k-1) / max(N(N-1), 1)`, in f64 as the reference.
pub fn adjusted_rand_index<M: AsRef<[bool]>>(
    true_masks: &[M],
    pred_labels: &[u32],
    config: MaskMetricConfig,
) -> Result<Option<f64>, EvalError> {
    let per_point = check(true_masks, pred_labels, config)?;
    if per_point.iter().all(|&c| c == 0) {
        return Ok(None);
    }
    let (channels, point_ok) = active_channels(true_masks, &per_point, config);
    let (dense, nk) = dense_labels(pred_labels);
    let mut n = vec![0u64; channels.len() * nk];
    for (c, m) in channels.iter().enumerate() {
        for (p, &set) in m.as_ref().iter().enumerate() {
            if set && point_ok[p] {
                n[c * nk + dense[p]] += 1;
            }
        }
    }
    let pairs = |x: u64| -> f64 {
        let x = x as f64;
        x * (x - 1.0)
    };
    let a: Vec<u64> = (0..channels.len())
        .map(|c| n[c * nk..(c + 1) * nk].iter().sum())
        .collect();
    let b: Vec<u64> = (0..nk)
        .map(|k| (0..channels.len()).map(|c| n[c * nk + k]).sum())
        .collect();
    let num_points: u64 = a.iter().sum();
    let rindex: f64 = n.iter().map(|&x| pairs(x)).sum();
    let aindex: f64 = a.iter().map(|&x| pairs(x)).sum();
    let bindex: f64 = b.iter().map(|&x| pairs(x)).sum();
    let expected = aindex * bindex / pairs(num_points).max(1.0);
    let max_rindex = (aindex + bindex) / 2.0;
    let denominator = max_rindex - expected;
    Ok(Some(if denominator != 0.0 {
        (rindex - expected) / denominator
    } else {
        1.0
    }))
}

/// Mean best overlap of one sample: for each non-empty ground-truth channel the largest IoU
/// with any predicted cluster ("overlap" matching: several channels may pick the same
/// cluster), averaged over those channels. `None` when no channel is non-empty.
pub fn mean_best_overlap<M: AsRef<[bool]>>(
    true_masks: &[M],
    pred_labels: &[u32],
    config: MaskMetricConfig,
) -> Result<Option<f64>, EvalError> {
    let per_point = check(true_masks, pred_labels, config)?;
    let (channels, point_ok) = active_channels(true_masks, &per_point, config);
    let (dense, nk) = dense_labels(pred_labels);
    let mut pred_sizes = vec![0u64; nk];
    for (p, &k) in dense.iter().enumerate() {
        if point_ok[p] {
            pred_sizes[k] += 1;
        }
    }
    let (mut sum, mut active) = (0.0f64, 0usize);
    let mut inter = vec![0u64; nk];
    for m in channels {
        inter.iter_mut().for_each(|x| *x = 0);
        let mut size = 0u64;
        for (p, &set) in m.as_ref().iter().enumerate() {
            if set && point_ok[p] {
                size += 1;
                inter[dense[p]] += 1;
            }
        }
        if size == 0 {
            continue;
        }
        active += 1;
        let best = (0..nk)
            .map(|k| {
                let union = pred_sizes[k] + size - inter[k];
                if union == 0 {
                    0.0
                } else {
                    inter[k] as f64 / union as f64
                }
            })
            .fold(0.0f64, f64::max);
        sum += best;
    }
    Ok((active > 0).then(|| sum / active as f64))
}

/// Running FG-ARI and mBO over samples: the mean over the samples each metric does not
/// skip, as the reference's `values / total`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MaskMetrics {
    pub config: MaskMetricConfig,
    ari_sum: f64,
    ari_count: usize,
    mbo_sum: f64,
    mbo_count: usize,
}

impl MaskMetrics {
    pub fn new(config: MaskMetricConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Adds one sample (a whole video for the video metrics).
    pub fn add<M: AsRef<[bool]>>(
        &mut self,
        true_masks: &[M],
        pred_labels: &[u32],
    ) -> Result<(), EvalError> {
        let ari = adjusted_rand_index(true_masks, pred_labels, self.config)?;
        let mbo = mean_best_overlap(true_masks, pred_labels, self.config)?;
        if let Some(v) = ari {
            self.ari_sum += v;
            self.ari_count += 1;
        }
        if let Some(v) = mbo {
            self.mbo_sum += v;
            self.mbo_count += 1;
        }
        Ok(())
    }

    /// Mean ARI (FG-ARI when the ground truth has no background, or with
    /// `ignore_background`); `None` before any sample counted.
    pub fn fg_ari(&self) -> Option<f64> {
        (self.ari_count > 0).then(|| self.ari_sum / self.ari_count as f64)
    }

    /// Mean best overlap; `None` before any sample counted.
    pub fn mbo(&self) -> Option<f64> {
        (self.mbo_count > 0).then(|| self.mbo_sum / self.mbo_count as f64)
    }

    /// Samples counted by (FG-ARI, mBO).
    pub fn counts(&self) -> (usize, usize) {
        (self.ari_count, self.mbo_count)
    }
}

/// One-hot channel masks from per-point labels (`None` = in no channel), `num_channels`
/// channels.
pub fn one_hot(labels: &[Option<u32>], num_channels: usize) -> Vec<Vec<bool>> {
    let mut out = vec![vec![false; labels.len()]; num_channels];
    for (p, l) in labels.iter().enumerate() {
        if let Some(ch) = l.and_then(|l| out.get_mut(l as usize)) {
            ch[p] = true;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PLAIN: MaskMetricConfig = MaskMetricConfig {
        ignore_background: false,
        ignore_overlaps: false,
    };
    const FG: MaskMetricConfig = MaskMetricConfig {
        ignore_background: true,
        ignore_overlaps: false,
    };

    fn labels(v: &[u32]) -> Vec<Vec<bool>> {
        let n = v.iter().max().map_or(0, |&m| m as usize + 1);
        one_hot(&v.iter().map(|&l| Some(l)).collect::<Vec<_>>(), n)
    }

    fn ari(t: &[u32], p: &[u32]) -> f64 {
        adjusted_rand_index(&labels(t), p, PLAIN).unwrap().unwrap()
    }

    #[test]
    fn ari_hand_cases() {
        // Perfect, and perfect up to a relabelling.
        assert_eq!(ari(&[0, 0, 1, 1], &[0, 0, 1, 1]), 1.0);
        assert_eq!(ari(&[0, 0, 1, 1], &[5, 5, 2, 2]), 1.0);
        // All points in one predicted cluster vs two true ones: n = [[2],[2]],
        // index 4, a-pairs 4, b-pairs 12, E = 4·12/12 = 4, max 8 → (4-4)/(8-4) = 0.
        assert_eq!(ari(&[0, 0, 1, 1], &[0, 0, 0, 0]), 0.0);
        // Both single-cluster: denominator 0 → 1.
        assert_eq!(ari(&[0, 0, 0], &[3, 3, 3]), 1.0);
        // Every point its own cluster on both sides: all pair counts 0 → 1.
        assert_eq!(ari(&[0, 1, 2], &[0, 1, 2]), 1.0);
        // One point: N(N-1) = 0 is clipped to 1, denominator 0 → 1.
        assert_eq!(ari(&[0], &[7]), 1.0);
        // sklearn's documented adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) = 4/7:
        // index 2, a-pairs 4, b-pairs 2, E = 8/12, max 3 → (2 - 2/3) / (3 - 2/3).
        assert!((ari(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 4.0 / 7.0).abs() < 1e-15);
        assert!((ari(&[0, 0, 1, 2], &[0, 0, 1, 1]) - 4.0 / 7.0).abs() < 1e-15);
        // Worse than chance is negative: [0,0,1,1] vs [0,1,0,1]: index 0, a-pairs 4,
        // b-pairs 4, E = 16/12, max 4 → (0 - 4/3) / (4 - 4/3) = -0.5.
        assert!((ari(&[0, 0, 1, 1], &[0, 1, 0, 1]) + 0.5).abs() < 1e-15);
    }

    #[test]
    fn fg_ari_ignores_background_and_unlabelled_points() {
        // Channel 0 is background (points 0-1); objects at 2-3 and 4-5. The prediction
        // merges the background into object 1's cluster: irrelevant to FG-ARI.
        let t = labels(&[0, 0, 1, 1, 2, 2]);
        let p = [9, 9, 9, 9, 4, 4];
        assert_eq!(adjusted_rand_index(&t, &p, FG).unwrap(), Some(1.0));
        let with_bg = adjusted_rand_index(&t, &p, PLAIN).unwrap().unwrap();
        assert!(with_bg < 1.0);
        // The same with the background as "no channel" (YTVIS-style ground truth).
        let t = one_hot(&[None, None, Some(0), Some(0), Some(1), Some(1)], 2);
        assert_eq!(adjusted_rand_index(&t, &p, PLAIN).unwrap(), Some(1.0));
    }

    #[test]
    fn ari_skips_and_special_cases() {
        // No ground-truth point at all: skipped.
        let empty = one_hot(&[None, None, None], 2);
        assert_eq!(
            adjusted_rand_index(&empty, &[0, 1, 2], PLAIN).unwrap(),
            None
        );
        // All background with ignore_background: not skipped (the skip looks at the
        // ground truth before the background is dropped), no foreground → 1.
        let all_bg = labels(&[0, 0, 0]);
        assert_eq!(
            adjusted_rand_index(&all_bg, &[0, 1, 2], FG).unwrap(),
            Some(1.0)
        );
        // Overlaps are an error unless ignored; ignored points leave every channel.
        let mut t = labels(&[0, 0, 1, 1]);
        t[1][1] = true;
        assert!(matches!(
            adjusted_rand_index(&t, &[0, 0, 1, 1], PLAIN),
            Err(EvalError::MaskMetric(_))
        ));
        let cfg = MaskMetricConfig {
            ignore_overlaps: true,
            ..PLAIN
        };
        // Point 1 dropped: [0, -, 1, 1] vs [0, 1, 1, 1] → perfect on the rest.
        assert_eq!(
            adjusted_rand_index(&t, &[0, 1, 1, 1], cfg).unwrap(),
            Some(1.0)
        );
        // Shape mismatch.
        assert!(adjusted_rand_index(&labels(&[0, 1]), &[0, 1, 2], PLAIN).is_err());
    }

    #[test]
    fn mbo_hand_cases() {
        // Object A = points 0-3, B = 4-5. Prediction: {0,1} and {2,3,4,5}.
        // A: IoU with {0,1} = 2/4, with {2..5} = 2/6 → 0.5. B: with {2..5} = 2/4 → 0.5.
        let t = one_hot(&[Some(0), Some(0), Some(0), Some(0), Some(1), Some(1)], 2);
        let p = [0, 0, 1, 1, 1, 1];
        assert_eq!(mean_best_overlap(&t, &p, PLAIN).unwrap(), Some(0.5));
        // Under-segmentation: one cluster for everything. Both objects pick it
        // (many-to-one): A 4/6, B 2/6 → mean 0.5, where a one-to-one matching would give
        // (4/6 + 0) / 2.
        let p = [3, 3, 3, 3, 3, 3];
        assert_eq!(mean_best_overlap(&t, &p, PLAIN).unwrap(), Some(0.5));
        // Perfect.
        assert_eq!(
            mean_best_overlap(&t, &[1, 1, 1, 1, 0, 0], PLAIN).unwrap(),
            Some(1.0)
        );
        // An empty channel is not averaged in; background dropped with ignore_background:
        // channel 0 = background (0-1), 1 = object (2-3), 2 = empty. Prediction {0,1,2},
        // {3}: object IoU with {0,1,2} = 1/4, with {3} = 1/2 → 0.5.
        let t = vec![
            vec![true, true, false, false],
            vec![false, false, true, true],
            vec![false; 4],
        ];
        assert_eq!(mean_best_overlap(&t, &[0, 0, 0, 1], FG).unwrap(), Some(0.5));
        // Only background: skipped.
        let t = vec![vec![true; 3], vec![false; 3]];
        assert_eq!(mean_best_overlap(&t, &[0, 0, 1], FG).unwrap(), None);
    }

    #[test]
    fn running_means() {
        let mut m = MaskMetrics::new(PLAIN);
        assert_eq!(m.fg_ari(), None);
        m.add(&labels(&[0, 0, 1, 1]), &[0, 0, 1, 1]).unwrap();
        m.add(&labels(&[0, 0, 1, 1]), &[0, 0, 0, 0]).unwrap();
        m.add(&one_hot(&[None, None], 1), &[0, 1]).unwrap();
        assert_eq!(m.counts(), (2, 2));
        assert_eq!(m.fg_ari(), Some(0.5));
        // mBO: 1 for the first; 2/4 for each object in the second → (1 + 0.5) / 2.
        assert_eq!(m.mbo(), Some(0.75));
    }
}
