//! What a detector's forward pass returns: typed taps for distillation, plus the loss
//! dictionary type.

use burn::tensor::Tensor;
use kdet_structures::ImageSize;

/// Shape information a module hands to the next builder (detectron2's `ShapeSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpec {
    pub channels: usize,
    /// Input pixels per feature-map cell.
    pub stride: usize,
}

/// A feature map with its stride.
#[derive(Debug, Clone)]
pub struct FeatureMap {
    /// `[B, C, H, W]`.
    pub tensor: Tensor<4>,
    pub stride: usize,
}

impl FeatureMap {
    pub fn spec(&self) -> FeatureSpec {
        FeatureSpec {
            channels: self.tensor.dims()[1],
            stride: self.stride,
        }
    }
}

/// The raw outputs of a dense head on one pyramid level.
///
/// Channel layouts (`A` = priors per location, `K` = classes):
/// - `cls_logits`: `[B, A*K, H, W]`, anchor-major (`a * K + k`); sigmoid logits for every
///   family here (GFL's are trained with QFL, RetinaNet/ATSS/FCOS's with focal loss).
/// - `box_regression`: `[B, A*R, H, W]` with `R` = 4 (deltas or distances) or
///   `4 * (reg_max + 1)` (GFL's edge-distribution logits, edge-major: `e * (reg_max+1) + i`
///   for edges l, t, r, b).
/// - `centerness`: `[B, A, H, W]` logits where the family has one (FCOS, ATSS).
/// - `cls_tower` / `reg_tower`: the tower features after the *first* tower conv block
///   (conv + norm + activation), `[B, C, H, W]` (PGD distils these).
#[derive(Debug, Clone)]
pub struct HeadLevel {
    pub stride: usize,
    pub cls_logits: Tensor<4>,
    pub box_regression: Tensor<4>,
    pub centerness: Option<Tensor<4>>,
    pub cls_tower: Tensor<4>,
    pub reg_tower: Tensor<4>,
}

/// Everything a forward pass produces.
#[derive(Debug, Clone)]
pub struct DetectorOutput {
    /// Backbone stages used by the neck (e.g. C3, C4, C5), shallow to deep.
    pub backbone: Vec<FeatureMap>,
    /// Neck levels (e.g. P3..P7), fine to coarse.
    pub neck: Vec<FeatureMap>,
    /// Head outputs, one per neck level.
    pub head: Vec<HeadLevel>,
    /// Each image's size inside the padded batch (boxes of the targets live here).
    pub image_sizes: Vec<ImageSize>,
    /// The padded batch size.
    pub padded_size: ImageSize,
}

/// One named loss term.
#[derive(Debug, Clone)]
pub struct LossTerm {
    pub name: String,
    /// A scalar `[1]`, already multiplied by its weight.
    pub value: Tensor<1>,
    /// Whether the term is part of the training objective. Terms logged for monitoring
    /// only (e.g. a metric-like quantity) have `false` and are left out of [`LossDict::total`].
    pub backprop: bool,
}

/// Named loss terms of one step.
#[derive(Debug, Clone, Default)]
pub struct LossDict {
    pub terms: Vec<LossTerm>,
}

impl LossDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a back-propagated term.
    pub fn push(&mut self, name: impl Into<String>, value: Tensor<1>) {
        self.terms.push(LossTerm {
            name: name.into(),
            value,
            backprop: true,
        });
    }

    /// Adds a term that is logged but not optimised.
    pub fn push_logged(&mut self, name: impl Into<String>, value: Tensor<1>) {
        self.terms.push(LossTerm {
            name: name.into(),
            value: value.detach(),
            backprop: false,
        });
    }

    /// Appends another dictionary's terms, prefixing their names (e.g. `"kd."`).
    pub fn extend_prefixed(&mut self, prefix: &str, other: LossDict) {
        for mut t in other.terms {
            t.name = format!("{prefix}{}", t.name);
            self.terms.push(t);
        }
    }

    /// Sum of the back-propagated terms; `None` when there is none.
    pub fn total(&self) -> Option<Tensor<1>> {
        self.terms
            .iter()
            .filter(|t| t.backprop)
            .map(|t| t.value.clone())
            .reduce(|a, b| a + b)
    }

    /// Every term as a number (reads the tensors back).
    pub fn scalars(&self) -> Vec<(String, f64)> {
        self.terms
            .iter()
            .map(|t| (t.name.clone(), t.value.clone().into_scalar::<f32>() as f64))
            .collect()
    }
}
