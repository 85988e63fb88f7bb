//! Taps: the typed places of a [`DetectorOutput`] a KD method reads (no hooks, no string
//! paths into modules), their per-level shapes on an input size, and reading them.

use burn::module::Module;
use burn::tensor::Tensor;
use kdet_models::{DetectorOutput, Model, ModelFamily};
use kdet_structures::{ImageBatch, ImageSize};
use serde::{Deserialize, Serialize};

/// A typed place in [`kdet_models::DetectorOutput`] a loss reads from (no hooks, no
/// string paths into modules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tap {
    /// Backbone stages handed to the neck (C3..C5), shallow to deep.
    Backbone,
    /// FPN outputs (P3..), before any activation (FGD hooks `fpn_convs.*.conv`).
    Neck,
    /// The classification tower after its first conv block (PGD).
    ClsTower,
    /// The regression tower after its first conv block (PGD).
    RegTower,
    /// Raw per-level class logits `[N, A*K, H, W]`.
    ClsLogits,
    /// Raw per-level box outputs (GFL: edge-distribution logits).
    BoxRegression,
}

impl Tap {
    pub fn name(self) -> &'static str {
        match self {
            Tap::Backbone => "backbone",
            Tap::Neck => "neck",
            Tap::ClsTower => "cls_tower",
            Tap::RegTower => "reg_tower",
            Tap::ClsLogits => "cls_logits",
            Tap::BoxRegression => "box_regression",
        }
    }
}

/// Channel count, stride and map size of each level of a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelShape {
    pub channels: usize,
    pub stride: usize,
    pub height: usize,
    pub width: usize,
}

/// The shapes of every tap of a detector on an input size.
#[derive(Debug, Clone, PartialEq)]
pub struct TapShapes {
    pub backbone: Vec<LevelShape>,
    pub neck: Vec<LevelShape>,
    pub cls_tower: Vec<LevelShape>,
    pub reg_tower: Vec<LevelShape>,
    pub cls_logits: Vec<LevelShape>,
    pub box_regression: Vec<LevelShape>,
    /// `[Q, D]` (queries, embedding width) of every decoder layer of a query model; empty
    /// for other families.
    pub query_layers: Vec<[usize; 2]>,
}

impl TapShapes {
    /// Runs `detector` (any family) once on a zero batch of `size` (padded size of the training data)
    /// without autodiff (`Module::valid`) and reads every tap's shape.
    pub fn probe(detector: &Model, size: ImageSize) -> Self {
        let plain = detector.valid();
        let device = plain
            .devices()
            .into_iter()
            .next()
            .expect("a detector has parameters");
        let images = Tensor::<4>::zeros([1, 3, size.height as usize, size.width as usize], &device);
        let batch = ImageBatch::new(images, vec![size], vec![size])
            .expect("one image of the padded size fits its batch");
        let out = plain.forward(&batch);
        let shape = |t: &Tensor<4>, stride: usize| {
            let [_, c, h, w] = t.dims();
            LevelShape {
                channels: c,
                stride,
                height: h,
                width: w,
            }
        };
        TapShapes {
            backbone: out
                .backbone
                .iter()
                .map(|f| shape(&f.tensor, f.stride))
                .collect(),
            neck: out
                .neck
                .iter()
                .map(|f| shape(&f.tensor, f.stride))
                .collect(),
            cls_tower: out
                .head
                .iter()
                .map(|l| shape(&l.cls_tower, l.stride))
                .collect(),
            reg_tower: out
                .head
                .iter()
                .map(|l| shape(&l.reg_tower, l.stride))
                .collect(),
            cls_logits: out
                .head
                .iter()
                .map(|l| shape(&l.cls_logits, l.stride))
                .collect(),
            box_regression: out
                .head
                .iter()
                .map(|l| shape(&l.box_regression, l.stride))
                .collect(),
            query_layers: out
                .queries
                .iter()
                .map(|q| {
                    let [_, n, d] = q.embeddings.dims();
                    [n, d]
                })
                .collect(),
        }
    }

    pub fn tap(&self, tap: Tap) -> &[LevelShape] {
        match tap {
            Tap::Backbone => &self.backbone,
            Tap::Neck => &self.neck,
            Tap::ClsTower => &self.cls_tower,
            Tap::RegTower => &self.reg_tower,
            Tap::ClsLogits => &self.cls_logits,
            Tap::BoxRegression => &self.box_regression,
        }
    }
}

/// The tensors of a tap, one per level.
pub fn tap_tensors(out: &DetectorOutput, tap: Tap) -> Vec<Tensor<4>> {
    match tap {
        Tap::Backbone => out.backbone.iter().map(|f| f.tensor.clone()).collect(),
        Tap::Neck => out.neck.iter().map(|f| f.tensor.clone()).collect(),
        Tap::ClsTower => out.head.iter().map(|l| l.cls_tower.clone()).collect(),
        Tap::RegTower => out.head.iter().map(|l| l.reg_tower.clone()).collect(),
        Tap::ClsLogits => out.head.iter().map(|l| l.cls_logits.clone()).collect(),
        Tap::BoxRegression => out.head.iter().map(|l| l.box_regression.clone()).collect(),
    }
}

/// The tensors of `levels`, in that order.
pub fn select(levels: &[usize], tensors: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
    levels.iter().map(|&l| tensors[l].clone()).collect()
}
