//! Priors (anchors / points) and the label assignment shared by the task loss and KD.
//!
//! Assignment runs on plain `f32` numbers, never on the autograd graph: it is computed
//! once per step and handed to the task loss and to every KD loss that needs positives,
//! their matched ground truth or their IoU.

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

/// The assignment of a batch: the priors (shared by all images of the padded batch) and
/// one [`ImageAssignment`] per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub priors: Priors,
    pub images: Vec<ImageAssignment>,
}

impl Assignment {
    /// Positives over the whole batch.
    pub fn num_positives(&self) -> usize {
        self.images.iter().map(ImageAssignment::num_positives).sum()
    }
}
