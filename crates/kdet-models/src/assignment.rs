//! Priors (anchors / points) and the label assignment shared by the task loss and KD.
//!
//! Assignment runs on plain `f32` numbers, never on the autograd graph: it is computed
//! once per step and handed to the task loss and to every KD loss that needs positives,
//! their matched ground truth or their IoU. It is keyed by *prediction*: per image, one
//! entry per prediction, whatever the predictions are ([`Predictions`]: dense priors,
//! RoIs or queries). A dense assigner fills it prior by prior; a Hungarian matcher over
//! queries gives the same type through [`Assignment::from_matches`].

/// The priors of all pyramid levels, concatenated level by level, each level in
/// row-major `(y, x, a)` order — the same order as the flattened head outputs
/// (`[B, A*K, H, W] -> [B, H*W*A, K]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Priors {
    /// `[x1, y1, x2, y2]` in (padded) input pixels. Point-based heads (FCOS) use zero-size
    /// boxes at the point; GFL/ATSS/RetinaNet use their anchor boxes.
    pub boxes: Vec<[f32; 4]>,
    /// Centre of each prior (the anchor point), in input pixels.
    pub centers: Vec<[f32; 2]>,
    /// Start of each level's priors in `boxes`; `level_offsets.len() == num_levels + 1`.
    pub level_offsets: Vec<usize>,
    /// Stride of each level.
    pub strides: Vec<usize>,
    /// `(height, width)` of each level's feature map.
    pub level_sizes: Vec<(usize, usize)>,
    /// Priors per location (`A`).
    pub num_per_location: usize,
}

impl Priors {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    pub fn num_levels(&self) -> usize {
        self.strides.len()
    }

    /// The level a prior index belongs to.
    pub fn level_of(&self, index: usize) -> usize {
        self.level_offsets.partition_point(|&o| o <= index) - 1
    }
}

/// The assignment of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageAssignment {
    /// Per prior: `Some(g)` = positive, matched to ground-truth instance `g` of this image
    /// (an index into that image's `Instances`); `None` = negative or ignored (see `ignore`).
    pub matched_gt: Vec<Option<usize>>,
    /// Per prior: excluded from the classification loss (e.g. RetinaNet's IoU band
    /// between the negative and positive thresholds, or overlapping a crowd region).
    pub ignore: Vec<bool>,
    /// Per prior: IoU with its matched (or best) ground truth, 0 when there is none.
    pub max_iou: Vec<f32>,
}

impl ImageAssignment {
    /// Indices of the positive priors.
    pub fn positives(&self) -> Vec<usize> {
        self.matched_gt
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.map(|_| i))
            .collect()
    }

    pub fn num_positives(&self) -> usize {
        self.matched_gt.iter().filter(|m| m.is_some()).count()
    }
}

/// What the predictions of an [`Assignment`] are; prediction `i` of an image is entry `i`
/// of its [`ImageAssignment`].
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Dense priors (anchors or points), shared by every image of the padded batch.
    Priors(Priors),
    /// `num_queries` learned queries per image (DETR, Mask2Former): prediction `q` is the
    /// output of query `q`.
    Queries { num_queries: usize },
    /// Per-image regions of interest of a two-stage model, `[x1, y1, x2, y2]` in input
    /// pixels.
    Rois(Vec<Vec<[f32; 4]>>),
}

impl Predictions {
    /// Predictions of image `image` (equal for every image, except RoIs).
    pub fn len_for(&self, image: usize) -> usize {
        match self {
            Predictions::Priors(p) => p.len(),
            Predictions::Queries { num_queries } => *num_queries,
            Predictions::Rois(rois) => rois.get(image).map_or(0, Vec::len),
        }
    }
}

/// The assignment of a batch: what the predictions are and one [`ImageAssignment`] per
/// image, indexed by prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub predictions: Predictions,
    pub images: Vec<ImageAssignment>,
}

impl Assignment {
    /// A dense assignment over `priors` (shared by the batch).
    pub fn dense(priors: Priors, images: Vec<ImageAssignment>) -> Self {
        Self {
            predictions: Predictions::Priors(priors),
            images,
        }
    }

    /// The assignment a one-to-one matcher (Hungarian) gives: `matches[i]` lists image
    /// `i`'s `(query, ground-truth instance)` pairs; the other queries are negatives (no
    /// object), none is ignored. `max_iou` is 0 (query models match on costs, not IoU).
    ///
    /// # Panics
    /// If a query index is `>= num_queries` or a query is matched twice (a matcher
    /// invariant).
    pub fn from_matches(num_queries: usize, matches: &[Vec<(usize, usize)>]) -> Self {
        let images = matches
            .iter()
            .map(|pairs| {
                let mut matched_gt = vec![None; num_queries];
                for &(q, g) in pairs {
                    assert!(
                        q < num_queries,
                        "query {q} out of range ({num_queries} queries)"
                    );
                    assert!(matched_gt[q].is_none(), "query {q} matched twice");
                    matched_gt[q] = Some(g);
                }
                ImageAssignment {
                    matched_gt,
                    ignore: vec![false; num_queries],
                    max_iou: vec![0.0; num_queries],
                }
            })
            .collect();
        Self {
            predictions: Predictions::Queries { num_queries },
            images,
        }
    }

    /// The priors of a dense assignment.
    ///
    /// # Panics
    /// If the predictions are not dense priors (a dense head or a dense KD method was
    /// handed another family's assignment: a wiring bug the planner rules out).
    pub fn priors(&self) -> &Priors {
        match &self.predictions {
            Predictions::Priors(p) => p,
            other => panic!(
                "a dense-prior assignment was expected, got {}",
                match other {
                    Predictions::Queries { .. } => "queries",
                    Predictions::Rois(_) => "RoIs",
                    Predictions::Priors(_) => "priors",
                }
            ),
        }
    }

    /// Positives over the whole batch.
    pub fn num_positives(&self) -> usize {
        self.images.iter().map(ImageAssignment::num_positives).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hungarian_matches_become_an_assignment_keyed_by_query() {
        let a = Assignment::from_matches(4, &[vec![(2, 0), (0, 1)], vec![]]);
        assert_eq!(a.images[0].matched_gt, [Some(1), None, Some(0), None]);
        assert_eq!(a.images[0].positives(), [0, 2]);
        assert_eq!(
            a.images[1].num_positives(),
            0,
            "no ground truth: all negatives"
        );
        assert_eq!(a.num_positives(), 2);
        assert_eq!(a.predictions.len_for(1), 4);
        assert!(a.images.iter().all(|i| i.ignore.iter().all(|&x| !x)));
    }

    #[test]
    #[should_panic(expected = "query 1 matched twice")]
    fn a_query_matched_twice_is_a_matcher_bug() {
        Assignment::from_matches(3, &[vec![(1, 0), (1, 1)]]);
    }

    #[test]
    #[should_panic(expected = "a dense-prior assignment was expected, got queries")]
    fn dense_code_refuses_a_query_assignment() {
        let a = Assignment::from_matches(2, &[vec![]]);
        let _ = a.priors();
    }
}
