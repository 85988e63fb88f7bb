//! What a detector's forward pass returns: typed taps for distillation, plus the loss
//! dictionary type.

use std::fmt;

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

/// One decoder layer of a query-based model (DETR, Mask2Former): what its queries predict
/// after that layer (deep supervision and matched-query KD read every layer).
#[derive(Debug, Clone)]
pub struct QueryLayer {
    /// `[B, Q, D]` query embeddings after the layer.
    pub embeddings: Tensor<3>,
    /// `[B, Q, K + 1]` class logits, the last class being "no object".
    pub class_logits: Tensor<3>,
    /// `[B, Q, H, W]` mask logits on the grid of [`DetectorOutput::pixel_embeddings`],
    /// where the model predicts masks.
    pub mask_logits: Option<Tensor<4>>,
    /// `[B, Q, 4]` boxes as normalised `(cx, cy, w, h)` in `[0, 1]` of each image's own
    /// area (`image_sizes[i]`, before padding: DETR normalises its targets so and masks
    /// the padding out of attention), where the model predicts boxes.
    pub boxes: Option<Tensor<3>>,
}

/// Region-of-interest features of a two-stage model.
#[derive(Debug, Clone)]
pub struct RoiOutput {
    /// `[R, C, S, S]` pooled features (RoIAlign), RoIs of every image concatenated.
    pub features: Tensor<4>,
    /// `[R, 5]`: image index in the batch, then `x1, y1, x2, y2` in input pixels.
    pub rois: Tensor<2>,
}

/// What a slot-attention model produces for a batch of frames.
#[derive(Debug, Clone)]
pub struct SlotOutput {
    /// `[B, S, D]` slots.
    pub slots: Tensor<3>,
    /// `[B, S, H, W]` the decoder's alpha masks (a softmax over the `S` slots).
    pub masks: Tensor<4>,
    /// `[B, S, N]` slot attention over the `N` encoder tokens (last iteration), where kept.
    pub attention: Option<Tensor<3>>,
}

/// Everything a forward pass produces: every tap a KD method may read. A family fills
/// what it has and leaves the rest empty (`Vec::new()` / `None`): a dense detector has
/// `backbone`, `neck` and `head`; a query model `queries` (and `pixel_embeddings` for
/// masks); a two-stage model `rois`; a slot model `slots`.
#[derive(Debug, Clone)]
pub struct DetectorOutput {
    /// Backbone stages used by the neck (e.g. C3, C4, C5), shallow to deep.
    pub backbone: Vec<FeatureMap>,
    /// Neck levels (e.g. P3..P7), fine to coarse.
    pub neck: Vec<FeatureMap>,
    /// Dense head outputs, one per neck level (dense families only).
    pub head: Vec<HeadLevel>,
    /// Query families: one entry per decoder layer, the last one the final prediction.
    pub queries: Vec<QueryLayer>,
    /// Query mask families: the per-pixel embeddings the masks are read from
    /// (Mask2Former's pixel decoder output, `[B, D, H, W]`).
    pub pixel_embeddings: Option<FeatureMap>,
    /// Two-stage families: the RoI features.
    pub rois: Option<RoiOutput>,
    /// Slot families: slots and their masks.
    pub slots: Option<SlotOutput>,
    /// Each image's size inside the padded batch (boxes of the targets live here).
    pub image_sizes: Vec<ImageSize>,
    /// The padded batch size.
    pub padded_size: ImageSize,
}

impl DetectorOutput {
    /// The output of a dense detector: backbone, neck and head taps, the others empty.
    pub fn dense(
        backbone: Vec<FeatureMap>,
        neck: Vec<FeatureMap>,
        head: Vec<HeadLevel>,
        image_sizes: Vec<ImageSize>,
        padded_size: ImageSize,
    ) -> Self {
        Self {
            backbone,
            neck,
            head,
            queries: Vec::new(),
            pixel_embeddings: None,
            rois: None,
            slots: None,
            image_sizes,
            padded_size,
        }
    }
}

/// What a loss term is: a task loss of the model being trained, or a term of a
/// distillation recipe entry. Logs (`metrics.jsonl`, progress lines) spell it as text
/// ([`fmt::Display`]; read back with [`LossKey::parse`]): `loss_cls`, `kd.<entry>` for a
/// method with one term, `kd.<entry>.<term>` otherwise. Entry names hold no `.` (the
/// recipe planner checks), so the text parses back to the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LossKey {
    /// A task loss (`loss_cls`, `loss_bbox`, ...).
    Task(String),
    /// A distillation term: the recipe entry's name and, for a method with several terms,
    /// the term's.
    Kd { entry: String, term: Option<String> },
}

impl LossKey {
    /// Reads the text form back; anything not under `kd.` is a task loss.
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix("kd.") {
            Some(rest) if !rest.is_empty() => match rest.split_once('.') {
                Some((entry, term)) => LossKey::Kd {
                    entry: entry.to_string(),
                    term: Some(term.to_string()),
                },
                None => LossKey::Kd {
                    entry: rest.to_string(),
                    term: None,
                },
            },
            _ => LossKey::Task(text.to_string()),
        }
    }

    pub fn is_kd(&self) -> bool {
        matches!(self, LossKey::Kd { .. })
    }
}

impl fmt::Display for LossKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossKey::Task(name) => f.write_str(name),
            LossKey::Kd { entry, term: None } => write!(f, "kd.{entry}"),
            LossKey::Kd {
                entry,
                term: Some(term),
            } => write!(f, "kd.{entry}.{term}"),
        }
    }
}

/// One loss term.
#[derive(Debug, Clone)]
pub struct LossTerm {
    pub key: LossKey,
    /// A scalar `[1]`, already multiplied by its weight.
    pub value: Tensor<1>,
    /// Whether the term is part of the training objective. Terms logged for monitoring
    /// only (e.g. a metric-like quantity) have `false` and are left out of [`LossDict::total`].
    pub backprop: bool,
}

/// The loss terms of one step (losses only: step timings travel beside it, see
/// `kdet_train::StepLosses`).
#[derive(Debug, Clone, Default)]
pub struct LossDict {
    pub terms: Vec<LossTerm>,
}

impl LossDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a back-propagated task loss.
    pub fn push(&mut self, name: impl Into<String>, value: Tensor<1>) {
        self.push_term(LossKey::Task(name.into()), value);
    }

    /// Adds a back-propagated term under its key.
    pub fn push_term(&mut self, key: LossKey, value: Tensor<1>) {
        self.terms.push(LossTerm {
            key,
            value,
            backprop: true,
        });
    }

    /// Adds a task-side term that is logged but not optimised.
    pub fn push_logged(&mut self, name: impl Into<String>, value: Tensor<1>) {
        self.terms.push(LossTerm {
            key: LossKey::Task(name.into()),
            value: value.detach(),
            backprop: false,
        });
    }

    /// Sum of the back-propagated terms; `None` when there is none.
    pub fn total(&self) -> Option<Tensor<1>> {
        self.terms
            .iter()
            .filter(|t| t.backprop)
            .map(|t| t.value.clone())
            .reduce(|a, b| a + b)
    }

    /// Every term as a number (reads the tensors back), named by its key's text form.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        self.terms
            .iter()
            .map(|t| {
                (
                    t.key.to_string(),
                    t.value.clone().into_scalar::<f32>() as f64,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod loss_key_tests {
    use super::LossKey;

    #[test]
    fn loss_keys_read_back_from_their_text() {
        let kd = |entry: &str, term: Option<&str>| LossKey::Kd {
            entry: entry.into(),
            term: term.map(Into::into),
        };
        for (key, text) in [
            (LossKey::Task("loss_cls".into()), "loss_cls"),
            (kd("ld", Some("kd")), "kd.ld.kd"),
            (kd("pkd", None), "kd.pkd"),
            (kd("fgd", Some("attention")), "kd.fgd.attention"),
        ] {
            assert_eq!(key.to_string(), text);
            assert_eq!(LossKey::parse(text), key, "{text}");
        }
        // Not a KD key: a task loss, whatever its name.
        assert_eq!(LossKey::parse("kd."), LossKey::Task("kd.".into()));
        assert_eq!(
            LossKey::parse("mean_output"),
            LossKey::Task("mean_output".into())
        );
    }
}
