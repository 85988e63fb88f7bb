//! What an evaluation reports: the 12 COCO summary numbers, a per-class AP table and
//! precision-recall curves, all derived from one accumulated precision/recall tensor.
//!
//! The same [`Accumulated`] shape serves image AP (filled from hotcoco's accumulation)
//! and video AP (filled by [`crate::ytvis`]); [`Accumulated::summarize`] is
//! pycocotools' `summarize()` (`_summarizeDets`), including its numpy summation order, so a
//! summary computed here equals the reference's to the last bit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Names of the 12 summary numbers, in `COCOeval.stats` order.
pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

/// What was evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EvalKind {
    /// COCO box AP (pycocotools `iouType="bbox"`).
    Bbox,
    /// COCO mask AP (pycocotools `iouType="segm"`).
    Segm,
    /// YouTube-VIS video mask AP (the youtubevos fork's `YTVOSeval`).
    Video,
}

impl fmt::Display for EvalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvalKind::Bbox => "bbox",
            EvalKind::Segm => "segm",
            EvalKind::Video => "video segm",
        })
    }
}

/// The 12 summary numbers in `COCOeval.stats` order: AP, AP50, AP75, APs, APm, APl, AR1,
/// AR10, AR100, ARs, ARm, ARl. `-1.0` means "not computed" (no ground truth in that slice),
/// as in pycocotools.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Stats(pub [f64; 12]);

impl Stats {
    /// The value named `name` (one of [`STAT_NAMES`]).
    pub fn get(&self, name: &str) -> Option<f64> {
        STAT_NAMES
            .iter()
            .position(|&n| n == name)
            .map(|i| self.0[i])
    }

    /// `(name, value)` pairs in `COCOeval.stats` order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        STAT_NAMES.iter().copied().zip(self.0.iter().copied())
    }

    /// AP over IoU 0.50:0.95 (the headline number).
    pub fn ap(&self) -> f64 {
        self.0[0]
    }
}

/// One row of the per-class table. Values are `-1.0` where the class has no ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAp {
    pub category_id: u64,
    pub name: String,
    /// AP over IoU 0.50:0.95, area "all", the largest max-detections setting.
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    /// Recall over IoU 0.50:0.95 at the largest max-detections setting.
    pub ar: f64,
}

/// Precision at each recall threshold for one IoU threshold, averaged over the classes
/// that have ground truth (area "all", the largest max-detections setting): the curve a
/// chart draws, and the one the headline AP is the mean of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrCurve {
    pub iou_threshold: f64,
    /// One value per recall threshold; `-1.0` when no class has ground truth.
    pub precision: Vec<f64>,
}

/// Precision/recall as pycocotools' `accumulate()` leaves them (`eval['precision']`,
/// `eval['recall']`), with the axes they are indexed by.
///
/// `precision` is `[T, R, K, A, M]` and `recall` `[T, K, A, M]`, both row-major (numpy's C
/// order): T IoU thresholds, R recall thresholds, K categories (ascending id), A area
/// ranges, M max-detections settings. `-1.0` marks a cell without ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accumulated {
    pub iou_thresholds: Vec<f64>,
    pub recall_thresholds: Vec<f64>,
    /// Category id of each K slot, ascending.
    pub category_ids: Vec<u64>,
    /// `(label, [min, max])` of each A slot; the summary reads "all", "small", "medium"
    /// and "large".
    pub area_ranges: Vec<(String, [f64; 2])>,
    pub max_dets: Vec<usize>,
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
}

impl Accumulated {
    /// `[T, R, K, A, M]`.
    pub fn shape(&self) -> [usize; 5] {
        [
            self.iou_thresholds.len(),
            self.recall_thresholds.len(),
            self.category_ids.len(),
            self.area_ranges.len(),
            self.max_dets.len(),
        ]
    }

    /// Index into `precision`.
    pub fn precision_index(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        let [_, nr, nk, na, nm] = self.shape();
        (((t * nr + r) * nk + k) * na + a) * nm + m
    }

    /// Index into `recall`.
    pub fn recall_index(&self, t: usize, k: usize, a: usize, m: usize) -> usize {
        let [_, _, nk, na, nm] = self.shape();
        ((t * nk + k) * na + a) * nm + m
    }

    fn area_index(&self, label: &str) -> Option<usize> {
        self.area_ranges.iter().position(|(l, _)| l == label)
    }

    /// The slot of the largest max-detections setting (what AP and AP50 are read at).
    fn max_det_index(&self) -> Option<usize> {
        let cap = self.max_dets.iter().copied().max()?;
        self.max_dets.iter().position(|&d| d == cap)
    }

    /// The slot of IoU threshold `thr`. pycocotools compares with `==` against
    /// `np.linspace(.5, .95, 10)`; the tolerance only absorbs a grid computed another way.
    fn iou_index(&self, thr: f64) -> Option<usize> {
        self.iou_thresholds
            .iter()
            .position(|&t| (t - thr).abs() < 1e-9)
    }

    /// Mean of the computed (`> -1`) precision values over IoU thresholds `ts` (all when
    /// `None`), every recall threshold and the categories `ks`, at area `a` and detections
    /// slot `m`, visited in numpy's C order (`k` fastest) so the sum is numpy's.
    fn mean_precision(
        &self,
        ts: Option<usize>,
        ks: &[usize],
        a: usize,
        m: usize,
        scratch: &mut Vec<f64>,
    ) -> f64 {
        let [nt, nr, ..] = self.shape();
        let t_range = ts.map_or(0..nt, |t| t..t + 1);
        scratch.clear();
        for t in t_range {
            for r in 0..nr {
                for &k in ks {
                    scratch.push(self.precision[self.precision_index(t, r, k, a, m)]);
                }
            }
        }
        mean_of_computed(scratch)
    }

    fn mean_recall(
        &self,
        ts: Option<usize>,
        ks: &[usize],
        a: usize,
        m: usize,
        scratch: &mut Vec<f64>,
    ) -> f64 {
        let nt = self.iou_thresholds.len();
        let t_range = ts.map_or(0..nt, |t| t..t + 1);
        scratch.clear();
        for t in t_range {
            for &k in ks {
                scratch.push(self.recall[self.recall_index(t, k, a, m)]);
            }
        }
        mean_of_computed(scratch)
    }

    /// pycocotools' `_summarizeDets`: the 12 summary numbers. A slice that cannot be
    /// found (a missing area label, max-detections setting or IoU threshold) is `-1.0`.
    pub fn summarize(&self) -> Stats {
        let ks: Vec<usize> = (0..self.category_ids.len()).collect();
        let mut scratch = Vec::with_capacity(self.precision.len());
        let mut stat = |ap: bool, iou: Option<f64>, area: &str, max_det_slot: usize| -> f64 {
            let (Some(a), Some(&max_det)) =
                (self.area_index(area), self.max_dets.get(max_det_slot))
            else {
                return -1.0;
            };
            let Some(m) = self.max_dets.iter().position(|&d| d == max_det) else {
                return -1.0;
            };
            let t = match iou {
                Some(thr) => match self.iou_index(thr) {
                    Some(t) => Some(t),
                    None => return -1.0,
                },
                None => None,
            };
            if ap {
                self.mean_precision(t, &ks, a, m, &mut scratch)
            } else {
                self.mean_recall(t, &ks, a, m, &mut scratch)
            }
        };
        // pycocotools reads `maxDets[2]` for every stat but AR1/AR10 (slots 0 and 1).
        Stats([
            stat(true, None, "all", 2),
            stat(true, Some(0.5), "all", 2),
            stat(true, Some(0.75), "all", 2),
            stat(true, None, "small", 2),
            stat(true, None, "medium", 2),
            stat(true, None, "large", 2),
            stat(false, None, "all", 0),
            stat(false, None, "all", 1),
            stat(false, None, "all", 2),
            stat(false, None, "small", 2),
            stat(false, None, "medium", 2),
            stat(false, None, "large", 2),
        ])
    }

    /// AP, AP50, AP75 and AR of every category (area "all", the largest max-detections
    /// setting), named by `name_of`.
    pub fn per_class(&self, name_of: impl Fn(u64) -> String) -> Vec<ClassAp> {
        let (Some(a), Some(m)) = (self.area_index("all"), self.max_det_index()) else {
            return Vec::new();
        };
        let t50 = self.iou_index(0.5);
        let t75 = self.iou_index(0.75);
        let mut scratch = Vec::new();
        self.category_ids
            .iter()
            .enumerate()
            .map(|(k, &category_id)| {
                let ks = [k];
                let mut at = |t: Option<usize>| self.mean_precision(t, &ks, a, m, &mut scratch);
                let ap = at(None);
                let ap50 = t50.map_or(-1.0, |t| at(Some(t)));
                let ap75 = t75.map_or(-1.0, |t| at(Some(t)));
                ClassAp {
                    category_id,
                    name: name_of(category_id),
                    ap,
                    ap50,
                    ap75,
                    ar: self.mean_recall(None, &ks, a, m, &mut scratch),
                }
            })
            .collect()
    }

    /// One class-averaged precision-recall curve per IoU threshold (area "all", the largest
    /// max-detections setting).
    pub fn pr_curves(&self) -> Vec<PrCurve> {
        let (Some(a), Some(m)) = (self.area_index("all"), self.max_det_index()) else {
            return Vec::new();
        };
        let [_, nr, nk, ..] = self.shape();
        let mut scratch = Vec::with_capacity(nk);
        self.iou_thresholds
            .iter()
            .enumerate()
            .map(|(t, &iou_threshold)| PrCurve {
                iou_threshold,
                precision: (0..nr)
                    .map(|r| {
                        scratch.clear();
                        scratch.extend(
                            (0..nk).map(|k| self.precision[self.precision_index(t, r, k, a, m)]),
                        );
                        mean_of_computed(&mut scratch)
                    })
                    .collect(),
            })
            .collect()
    }

    /// Precision at every recall threshold of one category at one IoU threshold (area
    /// "all", the largest max-detections setting); `None` for an unknown slot.
    pub fn class_pr_curve(&self, category_id: u64, iou_threshold: f64) -> Option<Vec<f64>> {
        let k = self.category_ids.iter().position(|&c| c == category_id)?;
        let t = self.iou_index(iou_threshold)?;
        let (a, m) = (self.area_index("all")?, self.max_det_index()?);
        Some(
            (0..self.recall_thresholds.len())
                .map(|r| self.precision[self.precision_index(t, r, k, a, m)])
                .collect(),
        )
    }
}

/// `np.mean(s[s > -1])`, or `-1.0` when nothing was computed. `values` is filtered in
/// place, keeping its order (the summation order depends on it).
fn mean_of_computed(values: &mut Vec<f64>) -> f64 {
    values.retain(|&v| v > -1.0);
    if values.is_empty() {
        -1.0
    } else {
        pairwise_sum(values) / values.len() as f64
    }
}

/// Sums in the order numpy's `add.reduce` does for a contiguous `float64` array (and so
/// `np.sum` / `np.mean`): serial below 8 values, eight interleaved accumulators up to 128,
/// and recursive halving (at a multiple of 8) above. A port of `pairwise_sum` in numpy's
/// `loops_utils.h.src`; hotcoco has the same function but keeps it crate-private.
pub(crate) fn pairwise_sum(values: &[f64]) -> f64 {
    const UNROLL: usize = 8;
    const BLOCK: usize = 128;
    let n = values.len();
    if n < UNROLL {
        values.iter().fold(0.0, |s, &v| s + v)
    } else if n <= BLOCK {
        let mut r = [0.0f64; UNROLL];
        r.copy_from_slice(&values[..UNROLL]);
        let end = n - n % UNROLL;
        for block in values[UNROLL..end].chunks_exact(UNROLL) {
            for (acc, &v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let head = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        values[end..].iter().fold(head, |s, &v| s + v)
    } else {
        let half = n / 2;
        let split = half - half % UNROLL;
        pairwise_sum(&values[..split]) + pairwise_sum(&values[split..])
    }
}

/// Everything one evaluation reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub kind: EvalKind,
    /// Images (videos) evaluated.
    pub num_images: usize,
    /// Detections (predicted tracks) evaluated.
    pub num_detections: usize,
    pub stats: Stats,
    pub per_class: Vec<ClassAp>,
    /// The recall axis of every curve in `pr_curves`.
    pub recall_thresholds: Vec<f64>,
    pub pr_curves: Vec<PrCurve>,
}

impl EvalReport {
    /// Builds the report parts that derive from the accumulation; `stats` is taken as given
    /// (hotcoco's own summary for image AP, [`Accumulated::summarize`] for video AP).
    pub(crate) fn from_accumulated(
        kind: EvalKind,
        num_images: usize,
        num_detections: usize,
        stats: Stats,
        acc: &Accumulated,
        name_of: impl Fn(u64) -> String,
    ) -> Self {
        EvalReport {
            kind,
            num_images,
            num_detections,
            stats,
            per_class: acc.per_class(name_of),
            recall_thresholds: acc.recall_thresholds.clone(),
            pr_curves: acc.pr_curves(),
        }
    }

    /// The summary as pycocotools prints it, with 6 decimals instead of 3.
    pub fn summary_lines(&self) -> Vec<String> {
        const ROWS: [(&str, &str, &str, &str); 12] = [
            ("Average Precision", "0.50:0.95", "all", "100"),
            ("Average Precision", "0.50", "all", "100"),
            ("Average Precision", "0.75", "all", "100"),
            ("Average Precision", "0.50:0.95", "small", "100"),
            ("Average Precision", "0.50:0.95", "medium", "100"),
            ("Average Precision", "0.50:0.95", "large", "100"),
            ("Average Recall", "0.50:0.95", "all", "1"),
            ("Average Recall", "0.50:0.95", "all", "10"),
            ("Average Recall", "0.50:0.95", "all", "100"),
            ("Average Recall", "0.50:0.95", "small", "100"),
            ("Average Recall", "0.50:0.95", "medium", "100"),
            ("Average Recall", "0.50:0.95", "large", "100"),
        ];
        ROWS.iter()
            .zip(self.stats.iter())
            .map(|(&(title, iou, area, dets), (name, v))| {
                format!(" {title:<17} {name:<6} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {v:.6}")
            })
            .collect()
    }

    /// The per-class table, one line per class, with a header.
    pub fn class_table_lines(&self) -> Vec<String> {
        let width = self
            .per_class
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let mut lines = vec![format!(
            " {:>6}  {:<width$}  {:>9}  {:>9}  {:>9}  {:>9}",
            "cat_id", "category", "AP", "AP50", "AP75", "AR100"
        )];
        for c in &self.per_class {
            lines.push(format!(
                " {:>6}  {:<width$}  {:>9.6}  {:>9.6}  {:>9.6}  {:>9.6}",
                c.category_id, c.name, c.ap, c.ap50, c.ap75, c.ar
            ));
        }
        lines
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} evaluation: {} {}, {} detections",
            self.kind,
            self.num_images,
            if self.kind == EvalKind::Video {
                "videos"
            } else {
                "images"
            },
            self.num_detections
        )?;
        for line in self.summary_lines() {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A 2-threshold, 3-recall, 2-category accumulation with one area range per label.
    fn tiny() -> Accumulated {
        let labels = ["all", "small", "medium", "large"];
        let mut acc = Accumulated {
            iou_thresholds: vec![0.5, 0.75],
            recall_thresholds: vec![0.0, 0.5, 1.0],
            category_ids: vec![3, 8],
            area_ranges: labels.iter().map(|l| (l.to_string(), [0.0, 1.0])).collect(),
            max_dets: vec![1, 10, 100],
            precision: vec![],
            recall: vec![],
        };
        acc.precision = vec![-1.0; 2 * 3 * 2 * 4 * 3];
        acc.recall = vec![-1.0; 2 * 2 * 4 * 3];
        // Category 3 at area "all", max dets 100: precision 1, 1, 0.5 at IoU 0.5 and
        // 1, 0, 0 at IoU 0.75; recall 1.0 and 0.5. Category 8 has no ground truth (-1).
        for (t, row) in [[1.0, 1.0, 0.5], [1.0, 0.0, 0.0]].iter().enumerate() {
            for (r, &p) in row.iter().enumerate() {
                let i = acc.precision_index(t, r, 0, 0, 2);
                acc.precision[i] = p;
            }
            let i = acc.recall_index(t, 0, 0, 2);
            acc.recall[i] = [1.0, 0.5][t];
        }
        acc
    }

    #[test]
    fn summarize_by_hand() {
        let s = tiny().summarize();
        // AP = mean(1, 1, .5, 1, 0, 0) = 3.5 / 6; AP50 = 2.5 / 3; AP75 = 1 / 3.
        assert_eq!(s.get("AP").unwrap(), 3.5 / 6.0);
        assert_eq!(s.get("AP50").unwrap(), 2.5 / 3.0);
        assert_eq!(s.get("AP75").unwrap(), 1.0 / 3.0);
        assert_eq!(s.get("AR100").unwrap(), 0.75);
        // Nothing computed for small/medium/large or at max dets 1 and 10.
        for name in ["APs", "APm", "APl", "AR1", "AR10", "ARs", "ARm", "ARl"] {
            assert_eq!(s.get(name).unwrap(), -1.0, "{name}");
        }
        assert_eq!(s.get("nope"), None);
    }

    #[test]
    fn per_class_and_curves() {
        let acc = tiny();
        let rows = acc.per_class(|id| format!("c{id}"));
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].category_id, rows[0].name.as_str()), (3, "c3"));
        assert_eq!(rows[0].ap, 3.5 / 6.0);
        assert_eq!(rows[0].ap50, 2.5 / 3.0);
        assert_eq!(rows[0].ar, 0.75);
        assert_eq!((rows[1].ap, rows[1].ap50, rows[1].ar), (-1.0, -1.0, -1.0));
        let curves = acc.pr_curves();
        assert_eq!(curves.len(), 2);
        assert_eq!(curves[0].precision, vec![1.0, 1.0, 0.5]);
        assert_eq!(curves[1].precision, vec![1.0, 0.0, 0.0]);
        assert_eq!(acc.class_pr_curve(3, 0.75).unwrap(), vec![1.0, 0.0, 0.0]);
        assert_eq!(acc.class_pr_curve(8, 0.5).unwrap(), vec![-1.0; 3]);
        assert!(acc.class_pr_curve(4, 0.5).is_none());
    }

    #[test]
    fn pairwise_sum_follows_numpy_order() {
        // Serial and pairwise orders differ on a large value followed by many small ones;
        // the expected values are what the three branches give, derived by hand:
        // fewer than 8 values add serially.
        let v = [1e16, 1.0, 1.0, 1.0];
        assert_eq!(pairwise_sum(&v), 1e16);
        // 16 values: lanes r0 = 1e16 + 1 (= 1e16), r1..r7 = 2 each, combined pairwise.
        let mut v = vec![1.0; 16];
        v[0] = 1e16;
        assert_eq!(pairwise_sum(&v), 1e16 + 14.0);
        let serial: f64 = v.iter().sum();
        assert_ne!(serial, pairwise_sum(&v));
        // Above 128 values the slice is halved at a multiple of 8.
        let v: Vec<f64> = (0..1000).map(|i| i as f64 * 0.1).collect();
        let want = pairwise_sum(&v[..496]) + pairwise_sum(&v[496..]);
        assert_eq!(pairwise_sum(&v), want);
        assert_eq!(pairwise_sum(&[]), 0.0);
    }

    #[test]
    fn summary_lines_have_six_decimals() {
        let report =
            EvalReport::from_accumulated(EvalKind::Segm, 4, 9, tiny().summarize(), &tiny(), |id| {
                id.to_string()
            });
        let lines = report.summary_lines();
        assert_eq!(lines.len(), 12);
        assert!(
            lines[0].contains("AP ") && lines[0].ends_with("= 0.583333"),
            "{}",
            lines[0]
        );
        assert!(
            lines[6].contains("maxDets=  1") && lines[6].ends_with("= -1.000000"),
            "{}",
            lines[6]
        );
        let table = report.class_table_lines();
        assert_eq!(table.len(), 3);
        assert!(table[1].contains("0.583333"), "{}", table[1]);
        let text = report.to_string();
        assert!(
            text.starts_with("segm evaluation: 4 images, 9 detections"),
            "{text}"
        );
    }
}
