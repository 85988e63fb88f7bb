//! Dense detection heads, one folder per family (`head.rs` modules and forward,
//! `loss.rs` targets and losses, `inference.rs` decoding), plus what they share:
//! flattening of per-level maps, assignment-to-target plumbing ([`DenseTargets`]) and
//! post-processing ([`inference`]).

pub mod atss;
pub mod fcos;
pub mod gfl;
pub mod inference;
pub mod retina;

pub use inference::TestConfig;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::{Device, Int, Tensor, TensorData};
use kdet_structures::Instances;

use crate::assignment::{Assignment, Priors};
use crate::layers::{ConvNormAct, ConvNormActConfig, NormKind, Scale};
use crate::losses::FocalLossConfig;
use crate::output::{FeatureMap, HeadLevel};
use crate::priors::AnchorGeneratorConfig;

/// The classification bias that makes every initial sigmoid score `prior_prob`
/// (RetinaNet paper Sec. 4.1; mmdet `bias_init_with_prob`): `−ln((1 − π) / π)`.
pub fn bias_init_with_prob(prior_prob: f32) -> f32 {
    -((1.0 - prior_prob) / prior_prob).ln()
}

/// A head's output conv3x3 (padding 1) with mmdet's `normal_init(std, bias)`: weights
/// `N(0, init_std)`, every bias `bias`.
pub fn output_conv(
    in_channels: usize,
    out_channels: usize,
    init_std: f64,
    bias: f32,
    device: &Device,
) -> Conv2d {
    let mut conv = Conv2dConfig::new([in_channels, out_channels], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: init_std,
        })
        .init(device);
    conv.bias = Some(Param::from_tensor(Tensor::full(
        [out_channels],
        bias,
        device,
    )));
    conv
}

/// A tower of `num_convs` conv3x3 + norm + ReLU blocks (mmdet `ConvModule`s, weights
/// `N(0, init_std)`; with a norm the conv has no bias, `bias='auto'`).
pub fn tower(
    in_channels: usize,
    feat_channels: usize,
    num_convs: usize,
    norm: NormKind,
    init_std: f64,
    device: &Device,
) -> Vec<ConvNormAct> {
    (0..num_convs)
        .map(|i| {
            ConvNormActConfig::new(
                if i == 0 { in_channels } else { feat_channels },
                feat_channels,
            )
            .with_norm(norm)
            .with_init_std(Some(init_std))
            .init(device)
        })
        .collect()
}

/// Sets the biases of a tower's convs to 0 (mmdet `normal_init(std, bias=0)`; burn draws
/// a conv bias from the weight initializer) and, with `conv_bias`, gives the normed convs
/// a zero bias too (mmdet `ConvModule(bias=True)` before GN).
pub(crate) fn zero_tower_biases(
    mut convs: Vec<ConvNormAct>,
    conv_bias: bool,
    device: &Device,
) -> Vec<ConvNormAct> {
    for block in &mut convs {
        let out_channels = block.conv.weight.dims()[0];
        block.conv.bias = match block.conv.bias.take() {
            Some(bias) => Some(bias.map(|b| b.zeros_like())),
            None if conv_bias => Some(Param::from_tensor(Tensor::zeros([out_channels], device))),
            None => None,
        };
    }
    convs
}

/// One learnable [`Scale`] per level, initialised to 1 (mmdet `Scale(1.0)` of the
/// GFL / ATSS / FCOS heads).
pub fn level_scales(num_levels: usize, device: &Device) -> Vec<Scale> {
    (0..num_levels).map(|_| Scale::new(1.0, device)).collect()
}

/// The shape contract of a head's input: one neck level per configured stride, in that
/// order, each of `in_channels` channels. `head` names the family in the message.
///
/// # Panics
/// If the levels' number, strides or channels differ from the configuration.
pub fn check_neck(head: &str, neck: &[FeatureMap], strides: &[usize], in_channels: usize) {
    assert_eq!(
        neck.len(),
        strides.len(),
        "{head} head: expected {} neck levels, got {}",
        strides.len(),
        neck.len()
    );
    for (l, (f, &stride)) in neck.iter().zip(strides).enumerate() {
        assert_eq!(
            f.stride, stride,
            "{head} head: level {l} has stride {}, expected {stride}",
            f.stride
        );
        let c = f.tensor.dims()[1];
        assert_eq!(
            c, in_channels,
            "{head} head: level {l} has {c} channels, expected {in_channels}"
        );
    }
}

/// `(H, W)` of each level's maps: the prior grid of that level.
pub fn level_sizes(levels: &[HeadLevel]) -> Vec<(usize, usize)> {
    levels
        .iter()
        .map(|l| {
            let [_, _, h, w] = l.cls_logits.dims();
            (h, w)
        })
        .collect()
}

/// The anchors of an anchor-based head (GFL, ATSS, RetinaNet) for its output levels.
///
/// # Panics
/// If the levels' strides differ from the anchor generator's.
pub fn anchor_priors(anchor: &AnchorGeneratorConfig, levels: &[HeadLevel]) -> Priors {
    let strides: Vec<usize> = levels.iter().map(|l| l.stride).collect();
    assert_eq!(
        strides, anchor.strides,
        "levels at strides {strides:?}, head configured for {:?}",
        anchor.strides
    );
    anchor.grid_priors(&level_sizes(levels))
}

/// Runs a tower; returns its output and the output of its *first* block (the tap
/// `HeadLevel::{cls,reg}_tower`; the input itself for an empty tower).
pub fn run_tower(convs: &[ConvNormAct], x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    let mut first = None;
    let mut y = x;
    for conv in convs {
        y = conv.forward(y);
        if first.is_none() {
            first = Some(y.clone());
        }
    }
    let first = first.unwrap_or_else(|| y.clone());
    (y, first)
}

/// The largest group count ≤ 32 that divides `channels` (GN(32) where it fits; presets
/// with narrow heads use it).
pub fn group_norm_groups(channels: usize) -> usize {
    (1..=32.min(channels.max(1)))
        .rev()
        .find(|&g| channels.is_multiple_of(g))
        .unwrap_or(1)
}

/// Flattens one level's `[B, A*C, H, W]` map to `[B, H*W*A, C]`, the prior order of
/// [`crate::Priors`].
///
/// # Panics
/// If the channel count is not a multiple of `per_prior` (a shape contract).
pub fn flatten_level(map: Tensor<4>, per_prior: usize) -> Tensor<3> {
    let [b, c, h, w] = map.dims();
    assert!(
        per_prior > 0 && c.is_multiple_of(per_prior),
        "a map of {c} channels does not hold {per_prior} channels per prior"
    );
    // [B, A*C, H, W] -> [B, H, W, A*C] -> [B, H*W*A, C]
    map.permute([0, 2, 3, 1])
        .reshape([b, h * w * (c / per_prior), per_prior])
}

/// [`flatten_level`] for every level, concatenated along the prior axis:
/// `[B, N, C]` with `N = Σ H_l W_l A`.
pub fn flatten_levels(maps: Vec<Tensor<4>>, per_prior: usize) -> Tensor<3> {
    Tensor::cat(
        maps.into_iter()
            .map(|m| flatten_level(m, per_prior))
            .collect(),
        1,
    )
}

/// A batch's head outputs with all levels flattened into `B*N` rows, the order of
/// [`DenseTargets`] (what every loss starts from).
#[derive(Debug, Clone)]
pub struct FlatOutputs {
    /// Images `B`.
    pub batch_size: usize,
    /// Priors per image `N`.
    pub num_priors: usize,
    /// `[B*N, K]` classification logits.
    pub cls_logits: Tensor<2>,
    /// `[B*N, R]` box regression (`R` channels per prior).
    pub box_regression: Tensor<2>,
    /// `[B*N]` centerness logits, for heads with a centerness branch.
    pub centerness: Option<Tensor<1>>,
}

impl FlatOutputs {
    /// Flattens `levels` of a head with `num_classes` classes and `box_channels`
    /// regression channels per prior.
    ///
    /// # Panics
    /// If the levels hold another number of priors per image than `priors` (a caller
    /// invariant: both come from the same head).
    pub fn new(
        levels: &[HeadLevel],
        num_classes: usize,
        box_channels: usize,
        priors: &Priors,
    ) -> Self {
        let k = num_classes;
        let cls = flatten_levels(levels.iter().map(|l| l.cls_logits.clone()).collect(), k);
        let [b, n, _] = cls.dims();
        assert_eq!(
            n,
            priors.len(),
            "head outputs for {n} priors per image, assignment for {}",
            priors.len()
        );
        let box_regression = flatten_levels(
            levels.iter().map(|l| l.box_regression.clone()).collect(),
            box_channels,
        )
        .reshape([b * n, box_channels]);
        let centerness = levels
            .iter()
            .map(|l| l.centerness.clone())
            .collect::<Option<Vec<_>>>()
            .map(|maps| flatten_levels(maps, 1).reshape([b * n]));
        FlatOutputs {
            batch_size: b,
            num_priors: n,
            cls_logits: cls.reshape([b * n, k]),
            box_regression,
            centerness,
        }
    }
}

/// The sigmoid focal classification loss of RetinaNet, FCOS and ATSS: one-hot targets
/// (all-zero rows for background), ignored priors weight 0, divided by `avg_factor`.
///
/// # Shapes
/// - `cls_logits`: `[B*N, K]` → `[1]`
pub fn focal_cls_loss(
    config: &FocalLossConfig,
    cls_logits: Tensor<2>,
    targets: &DenseTargets,
    avg_factor: f32,
) -> Tensor<1> {
    let [_, k] = cls_logits.dims();
    let device = cls_logits.device();
    config.init().forward(
        cls_logits,
        targets.one_hot(k, &device),
        Some(targets.label_weight_tensor(&device)),
        avg_factor,
    )
}

/// The per-prior targets of a batch, gathered from an [`Assignment`], in the flattened
/// `[B*N]` order of `flatten_levels(..).reshape([B*N, C])`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseTargets {
    /// Priors per image (`N`).
    pub num_priors: usize,
    /// Flattened indices `b * N + i` of the positives, image by image, ascending.
    pub positive_indices: Vec<usize>,
    /// Prior index `i` (within its image) of each positive.
    pub positive_priors: Vec<usize>,
    /// Image of each positive.
    pub positive_images: Vec<usize>,
    /// Class of each positive's matched ground truth.
    pub positive_classes: Vec<usize>,
    /// Matched ground-truth box of each positive (input pixels).
    pub positive_boxes: Vec<[f32; 4]>,
    /// Per prior of the batch: the class for positives, `num_classes` (background) else.
    pub labels: Vec<usize>,
    /// Per prior of the batch: 1 for positives and negatives, 0 for ignored priors
    /// (mmdet `label_weights`).
    pub label_weights: Vec<f32>,
}

impl DenseTargets {
    /// Gathers the targets; `num_classes` is the background label.
    ///
    /// # Panics
    /// If `targets` and `assignment` disagree on the number of images, or a matched index
    /// is out of range (caller invariants: the assignment was made from these targets).
    pub fn new(assignment: &Assignment, targets: &[Instances], num_classes: usize) -> Self {
        assert_eq!(
            assignment.images.len(),
            targets.len(),
            "one assignment per image"
        );
        let n = assignment.priors().len();
        let mut out = DenseTargets {
            num_priors: n,
            positive_indices: Vec::new(),
            positive_priors: Vec::new(),
            positive_images: Vec::new(),
            positive_classes: Vec::new(),
            positive_boxes: Vec::new(),
            labels: Vec::with_capacity(n * targets.len()),
            label_weights: Vec::with_capacity(n * targets.len()),
        };
        for (b, (img, gt)) in assignment.images.iter().zip(targets).enumerate() {
            assert_eq!(img.matched_gt.len(), n, "one assignment entry per prior");
            for (i, (m, &ignored)) in img.matched_gt.iter().zip(&img.ignore).enumerate() {
                match m {
                    Some(g) => {
                        let class = gt.classes()[*g];
                        out.positive_indices.push(b * n + i);
                        out.positive_priors.push(i);
                        out.positive_images.push(b);
                        out.positive_classes.push(class);
                        out.positive_boxes.push(gt.boxes().as_slice()[*g]);
                        out.labels.push(class);
                        out.label_weights.push(1.0);
                    }
                    None => {
                        out.labels.push(num_classes);
                        out.label_weights.push(if ignored { 0.0 } else { 1.0 });
                    }
                }
            }
        }
        out
    }

    pub fn num_positives(&self) -> usize {
        self.positive_indices.len()
    }

    /// `positive_indices` as an index tensor for `select(0, ..)`.
    pub fn positive_index_tensor(&self, device: &Device) -> Tensor<1, Int> {
        index_tensor(&self.positive_indices, device)
    }

    /// One-hot class targets `[B*N, K]` (all-zero rows for background and ignored).
    pub fn one_hot(&self, num_classes: usize, device: &Device) -> Tensor<2> {
        // Background label K gets its own column, dropped again.
        let labels = index_tensor(&self.labels, device);
        let total = self.labels.len();
        labels
            .one_hot::<2>(num_classes + 1)
            .float()
            .slice([0..total, 0..num_classes])
    }

    /// `label_weights` as a `[B*N]` tensor.
    pub fn label_weight_tensor(&self, device: &Device) -> Tensor<1> {
        Tensor::from_data(
            TensorData::new(self.label_weights.clone(), [self.label_weights.len()]),
            device,
        )
    }

    /// `positive_boxes` as a `[P, 4]` tensor.
    pub fn positive_box_tensor(&self, device: &Device) -> Tensor<2> {
        boxes_tensor(&self.positive_boxes, device)
    }
}

/// An `Int` index tensor `[len]`.
pub fn index_tensor(indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [indices.len()]), device)
}

/// Boxes (or any 4-vectors) as a `[len, 4]` tensor.
pub fn boxes_tensor(boxes: &[[f32; 4]], device: &Device) -> Tensor<2> {
    let v: Vec<f32> = boxes.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(v, [boxes.len(), 4]), device)
}

/// Points as a `[len, 2]` tensor.
pub fn points_tensor(points: &[[f32; 2]], device: &Device) -> Tensor<2> {
    let v: Vec<f32> = points.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(v, [points.len(), 2]), device)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::assignment::ImageAssignment;
    use burn::tensor::Distribution;
    use kdet_structures::{Boxes, ImageSize};

    /// Neck levels of `N(0, 1)` noise for the head tests: `[batch, channels, h, w]` maps
    /// at each `(stride, h, w)`, drawn in that order.
    pub(crate) fn random_neck(
        device: &Device,
        batch: usize,
        channels: usize,
        levels: &[(usize, usize, usize)],
    ) -> Vec<FeatureMap> {
        levels
            .iter()
            .map(|&(stride, h, w)| FeatureMap {
                tensor: Tensor::random(
                    [batch, channels, h, w],
                    Distribution::Normal(0.0, 1.0),
                    device,
                ),
                stride,
            })
            .collect()
    }

    /// Sigmoid focal loss (γ 2, α 0.25) of one logit `z` against target `t`, written out
    /// from the paper's formula as an oracle for the heads' loss tests.
    pub(crate) fn reference_focal(z: f32, t: f32) -> f64 {
        let p = 1.0 / (1.0 + (-z).exp());
        let bce = z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
        let pt = p * t + (1.0 - p) * (1.0 - t);
        let at = 0.25 * t + 0.75 * (1.0 - t);
        (at * (1.0 - pt).powi(2) * bce) as f64
    }

    /// Two images, levels 8×8 (stride 8) and 4×4 (stride 16) of a 64×64 batch (the GFL and
    /// ATSS tests).
    pub(crate) fn tiny_neck(device: &Device, channels: usize) -> Vec<FeatureMap> {
        random_neck(device, 2, channels, &[(8, 8, 8), (16, 4, 4)])
    }

    /// Image 0 of a [`tiny_neck`]: the fixed features of the overfitting smoke tests.
    pub(crate) fn one_image_neck(device: &Device, channels: usize) -> Vec<FeatureMap> {
        tiny_neck(device, channels)
            .into_iter()
            .map(|mut f| {
                f.tensor = f.tensor.narrow(0, 0, 1);
                f
            })
            .collect()
    }

    /// `steps` Adam steps (lr 1e-2) of `head` on fixed neck features; returns the trained
    /// head and the first and last total loss.
    pub(crate) fn train_on_fixed_features(
        mut head: crate::DenseHead,
        neck: &[FeatureMap],
        targets: &[Instances],
        steps: usize,
    ) -> (crate::DenseHead, f32, f32) {
        use burn::optim::{AdamConfig, GradientsParams};
        let mut optim = AdamConfig::new().init();
        let mut first = None;
        let mut last = 0.0;
        for _ in 0..steps {
            let levels = head.forward(neck);
            let priors = head.priors(&levels);
            let assignment = head.assign(&priors, targets);
            let total = head
                .loss(&levels, targets, &assignment)
                .total()
                .expect("terms");
            last = total.clone().into_scalar::<f32>();
            first.get_or_insert(last);
            let grads = GradientsParams::from_grads(total.backward(), &head);
            head = optim.step(1e-2, head, grads);
        }
        (head, first.expect("ran"), last)
    }

    /// Asserts that every ground truth of `gt` has a detection of its class at IoU > 0.5
    /// among the `top` best of `det`.
    pub(crate) fn assert_found_in_top(det: &Instances, gt: &Instances, top: usize) {
        for (g, &c) in gt.boxes().iter().zip(gt.classes()) {
            let found = det
                .boxes()
                .iter()
                .zip(det.classes())
                .take(top)
                .any(|(b, &k)| k == c && kdet_structures::iou::iou_xyxy(*b, *g) > 0.5);
            assert!(found, "no detection of {g:?} in {det:?}");
        }
    }

    #[test]
    fn flatten_follows_prior_order() {
        // [B=1, A*K = 2*3, H=1, W=2]; channel c = a*3 + k, value = 100 c + x.
        let device = Device::flex();
        let v: Vec<f32> = (0..6)
            .flat_map(|c| (0..2).map(move |x| (100 * c + x) as f32))
            .collect();
        let map = Tensor::<4>::from_data(TensorData::new(v, [1, 6, 1, 2]), &device);
        let flat = flatten_level(map, 3);
        assert_eq!(flat.dims(), [1, 4, 3]);
        let got: Vec<f32> = flat.into_data().try_to_vec::<f32>().expect("f32");
        // Prior order (y, x, a): (x=0, a=0): channels 0..3 at x=0, then (x=0, a=1): 3..6, ...
        assert_eq!(
            got,
            vec![
                0., 100., 200., 300., 400., 500., 1., 101., 201., 301., 401., 501.
            ]
        );
    }

    #[test]
    fn dense_targets_gather_positives() {
        let priors = Priors {
            boxes: vec![[0.0; 4]; 3],
            centers: vec![[0.0; 2]; 3],
            level_offsets: vec![0, 3],
            strides: vec![8],
            level_sizes: vec![(1, 3)],
            num_per_location: 1,
        };
        let gt = |b: Vec<[f32; 4]>, c: Vec<usize>| {
            Instances::new(ImageSize::new(8, 24), Boxes::new(b), c).expect("valid")
        };
        let targets = vec![gt(vec![[1.0, 1.0, 5.0, 5.0]], vec![2]), gt(vec![], vec![])];
        let a = Assignment::dense(
            priors,
            vec![
                ImageAssignment {
                    matched_gt: vec![None, Some(0), None],
                    ignore: vec![false, false, true],
                    max_iou: vec![0.0; 3],
                },
                ImageAssignment {
                    matched_gt: vec![None; 3],
                    ignore: vec![false; 3],
                    max_iou: vec![0.0; 3],
                },
            ],
        );
        let t = DenseTargets::new(&a, &targets, 3);
        assert_eq!(t.positive_indices, vec![1]);
        assert_eq!(t.positive_classes, vec![2]);
        assert_eq!(t.labels, vec![3, 2, 3, 3, 3, 3]);
        assert_eq!(t.label_weights, vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        let oh: Vec<f32> = t
            .one_hot(3, &Device::flex())
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        assert_eq!(&oh[3..6], &[0.0, 0.0, 1.0]);
        assert_eq!(oh.iter().sum::<f32>(), 1.0);
    }
}
