//! The model-family contract in code (`docs/models-contract.md`).
//!
//! Two levels:
//! - [`ModelFamily`]: what the training loop, the distiller, evaluation and the CLI need
//!   from *any* model (dense detectors today; query-based mask models, two-stage RoI
//!   models, video and slot models next): a pure `forward` to a typed [`ModelOutput`]
//!   with taps, an assignment of *predictions* (priors, RoIs or queries) to ground truth
//!   computed without gradients, the task loss, and post-processing to `Instances`.
//!   [`crate::Detector`] (backbone → FPN → dense head) is the first implementation.
//! - [`DenseHeadFamily`] / [`DenseHeadFamilyConfig`]: what one *dense head* family (GFL,
//!   ATSS, FCOS, RetinaNet) implements in its own folder. The enums [`crate::HeadConfig`]
//!   and [`crate::DenseHead`] and their dispatch are generated from one list
//!   (`dense_heads!`, invoked in `detector.rs`): adding a dense head
//!   = its folder + one line there, no other `match` to edit.

use burn::tensor::{Device, Tensor};
use kdet_structures::{ImageBatch, ImageSize, Instances};

use crate::assignment::{Assignment, Priors};
use crate::heads::inference::TestConfig;
use crate::output::{FeatureMap, FeatureSpec, HeadLevel, LossDict};

pub use crate::output::DetectorOutput as ModelOutput;

/// The contract of a model family (see the module doc).
///
/// `forward` is pure (no mode flag: BatchNorm statistics follow the device); `assign`
/// runs on the host, never on the autograd graph, and returns an [`Assignment`] keyed by
/// prediction, whatever the predictions are (a Hungarian matcher yields the same type:
/// [`Assignment::from_matches`]); `loss` uses that assignment (the distiller hands the
/// same one to every KD method); `postprocess` returns detections in the *original*
/// image's pixels.
pub trait ModelFamily {
    /// The network on a padded batch, with every tap the family exposes.
    fn forward(&self, batch: &ImageBatch) -> ModelOutput;

    /// Which prediction learns from which ground-truth instance (no gradients).
    /// `targets` are in the batch's resized pixels.
    fn assign(&self, out: &ModelOutput, targets: &[Instances]) -> Assignment;

    /// The task losses, with the family's official reductions.
    fn loss(&self, out: &ModelOutput, targets: &[Instances], assignment: &Assignment) -> LossDict;

    /// Detections (boxes, scores, labels; masks and track ids where the family has them)
    /// per image, in the original image's pixels.
    fn postprocess(&self, out: &ModelOutput, batch: &ImageBatch) -> Vec<Instances>;

    /// Number of object classes `K` (without a no-object class).
    fn num_classes(&self) -> usize;

    /// The family's name as in configs (`gfl`, `fcos`, ...).
    fn family(&self) -> &'static str;
}

/// One dense head family (GFL, ATSS, FCOS, RetinaNet), implemented in its folder by its
/// head module. The per-level maps are [`HeadLevel`]s, the predictions are priors
/// (anchors or points) in the order of the flattened maps.
pub trait DenseHeadFamily {
    /// The family's name as in configs (`type = "gfl"`).
    const NAME: &'static str;

    /// Classes `K`.
    fn num_classes(&self) -> usize;

    /// GFL's `reg_max` (bins − 1 of the box-edge distributions); `None` for families that
    /// regress 4 numbers.
    fn reg_max(&self) -> Option<usize> {
        None
    }

    /// One [`HeadLevel`] per neck level.
    fn forward(&self, neck: &[FeatureMap]) -> Vec<HeadLevel>;

    /// The priors of these levels (a pure function of their map sizes and strides).
    fn priors(&self, levels: &[HeadLevel]) -> Priors;

    /// Label assignment on plain numbers.
    fn assign(&self, priors: &Priors, targets: &[Instances]) -> Assignment;

    /// The task losses.
    fn loss(
        &self,
        levels: &[HeadLevel],
        targets: &[Instances],
        assignment: &Assignment,
    ) -> LossDict;

    /// Detections per image in input pixels, clipped to `image_sizes[i]`.
    fn predict(
        &self,
        levels: &[HeadLevel],
        priors: &Priors,
        image_sizes: &[ImageSize],
        test: &TestConfig,
    ) -> Vec<Instances>;

    /// Decoded boxes of every prior (input pixels, not clipped), in prior order: what
    /// post-processing decodes before thresholds and NMS (PGD's teacher boxes). The
    /// caller detaches the regression maps.
    ///
    /// # Shapes
    /// - returns `[B, N, 4]` for `N = priors.len()`
    fn decode_boxes(&self, levels: &[HeadLevel], priors: &Priors) -> Tensor<3>;
}

/// The config of a dense head family.
pub trait DenseHeadFamilyConfig {
    type Head: DenseHeadFamily;

    fn init(&self, device: &Device) -> Self::Head;

    /// Classes `K`.
    fn num_classes(&self) -> usize;

    /// Input channels (must equal the neck's output channels).
    fn in_channels(&self) -> usize;

    /// Strides of the levels the head expects, fine to coarse.
    fn strides(&self) -> Vec<usize>;

    /// Takes the input channels and level strides from the neck's outputs (fine to
    /// coarse), so that no config repeats them.
    ///
    /// # Panics
    /// If the neck's levels differ in channels (a dense head shares its towers across
    /// levels) or `specs` is empty.
    fn fit_to_neck(&mut self, specs: &[FeatureSpec]);
}

/// The channels every level of `specs` has (what [`DenseHeadFamilyConfig::fit_to_neck`]
/// sets as the head's input channels) and the strides, fine to coarse.
///
/// # Panics
/// If `specs` is empty or its levels differ in channels.
pub fn shared_channels_and_strides(specs: &[FeatureSpec]) -> (usize, Vec<usize>) {
    let channels = specs
        .first()
        .expect("a neck with no output levels")
        .channels;
    assert!(
        specs.iter().all(|s| s.channels == channels),
        "a dense head needs neck levels of equal channels, got {specs:?}"
    );
    (channels, specs.iter().map(|s| s.stride).collect())
}

/// Generates, from the list of dense head families, the config enum `HeadConfig` (serde,
/// tagged by `type`), the module enum `DenseHead`, and their dispatch. Each line is
/// `Variant(ConfigType => HeadType)`; the `type` name is `HeadType::NAME` (checked by a
/// test against serde's snake_case variant name).
macro_rules! dense_heads {
    ($($(#[$doc:meta])* $variant:ident($config:ty => $head:ty),)+) => {
        /// Which dense head (generated from the family list).
        #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum HeadConfig {
            $($(#[$doc])* $variant($config),)+
        }

        /// A dense head of any family (generated from the family list).
        #[derive(burn::module::Module, Debug)]
        pub enum DenseHead {
            $($variant($head),)+
        }

        impl HeadConfig {
            /// Every family's `type` name, in list order.
            pub const FAMILIES: &'static [&'static str] =
                &[$(<$head as $crate::family::DenseHeadFamily>::NAME,)+];

            pub fn init(&self, device: &burn::tensor::Device) -> DenseHead {
                match self {
                    $(Self::$variant(c) => DenseHead::$variant(
                        $crate::family::DenseHeadFamilyConfig::init(c, device),
                    ),)+
                }
            }

            /// Input channels of the head (must equal the neck's output channels).
            pub fn in_channels(&self) -> usize {
                match self {
                    $(Self::$variant(c) => $crate::family::DenseHeadFamilyConfig::in_channels(c),)+
                }
            }

            pub fn num_classes(&self) -> usize {
                match self {
                    $(Self::$variant(c) => $crate::family::DenseHeadFamilyConfig::num_classes(c),)+
                }
            }

            /// Takes the input channels and strides from the neck's outputs
            /// ([`DenseHeadFamilyConfig::fit_to_neck`]).
            pub fn fit_to_neck(&mut self, specs: &[$crate::output::FeatureSpec]) {
                match self {
                    $(Self::$variant(c) => $crate::family::DenseHeadFamilyConfig::fit_to_neck(c, specs),)+
                }
            }

            /// Strides of the levels the head expects, fine to coarse.
            pub fn strides(&self) -> Vec<usize> {
                match self {
                    $(Self::$variant(c) => $crate::family::DenseHeadFamilyConfig::strides(c),)+
                }
            }
        }

        impl DenseHead {
            pub fn forward(&self, neck: &[$crate::output::FeatureMap]) -> Vec<$crate::output::HeadLevel> {
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::forward(h, neck),)+
                }
            }

            pub fn priors(&self, levels: &[$crate::output::HeadLevel]) -> $crate::assignment::Priors {
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::priors(h, levels),)+
                }
            }

            pub fn assign(
                &self,
                priors: &$crate::assignment::Priors,
                targets: &[kdet_structures::Instances],
            ) -> $crate::assignment::Assignment {
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::assign(h, priors, targets),)+
                }
            }

            pub fn loss(
                &self,
                levels: &[$crate::output::HeadLevel],
                targets: &[kdet_structures::Instances],
                assignment: &$crate::assignment::Assignment,
            ) -> $crate::output::LossDict {
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::loss(h, levels, targets, assignment),)+
                }
            }

            pub fn predict(
                &self,
                levels: &[$crate::output::HeadLevel],
                priors: &$crate::assignment::Priors,
                sizes: &[kdet_structures::ImageSize],
                test: &$crate::heads::inference::TestConfig,
            ) -> Vec<kdet_structures::Instances> {
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::predict(h, levels, priors, sizes, test),)+
                }
            }

            /// Decoded boxes of every prior (input pixels, not clipped, detached), in
            /// prior order; what post-processing decodes before thresholds and NMS
            /// (PGD's teacher boxes).
            ///
            /// # Shapes
            /// - returns `[B, N, 4]` for `N = priors.len()`
            pub fn decode_boxes(
                &self,
                levels: &[$crate::output::HeadLevel],
                priors: &$crate::assignment::Priors,
            ) -> burn::tensor::Tensor<3> {
                let levels: Vec<$crate::output::HeadLevel> = levels
                    .iter()
                    .map(|l| $crate::output::HeadLevel {
                        box_regression: l.box_regression.clone().detach(),
                        ..l.clone()
                    })
                    .collect();
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::decode_boxes(h, &levels, priors),)+
                }
            }

            /// Number of object classes (`K`).
            pub fn num_classes(&self) -> usize {
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::num_classes(h),)+
                }
            }

            /// GFL's `reg_max`; `None` for the families that regress 4 numbers.
            pub fn reg_max(&self) -> Option<usize> {
                match self {
                    $(DenseHead::$variant(h) => $crate::family::DenseHeadFamily::reg_max(h),)+
                }
            }

            /// The family's name as in configs (`gfl`, `atss`, `fcos`, `retina`).
            pub fn family(&self) -> &'static str {
                match self {
                    $(DenseHead::$variant(_) => <$head as $crate::family::DenseHeadFamily>::NAME,)+
                }
            }
        }
    };
}

pub(crate) use dense_heads;

/// Inside `impl DenseHeadFamily for Head`: `forward`, `priors`, `assign`, `loss` and
/// `predict` delegate to the head's inherent methods of the same names (the family's own
/// code in its folder; inherent methods take precedence in `<Head>::name` paths).
macro_rules! delegate_dense_head {
    ($head:ty) => {
        fn forward(&self, neck: &[$crate::output::FeatureMap]) -> Vec<$crate::output::HeadLevel> {
            <$head>::forward(self, neck)
        }

        fn priors(&self, levels: &[$crate::output::HeadLevel]) -> $crate::assignment::Priors {
            <$head>::priors(self, levels)
        }

        fn assign(
            &self,
            priors: &$crate::assignment::Priors,
            targets: &[kdet_structures::Instances],
        ) -> $crate::assignment::Assignment {
            <$head>::assign(self, priors, targets)
        }

        fn loss(
            &self,
            levels: &[$crate::output::HeadLevel],
            targets: &[kdet_structures::Instances],
            assignment: &$crate::assignment::Assignment,
        ) -> $crate::output::LossDict {
            <$head>::loss(self, levels, targets, assignment)
        }

        fn predict(
            &self,
            levels: &[$crate::output::HeadLevel],
            priors: &$crate::assignment::Priors,
            image_sizes: &[kdet_structures::ImageSize],
            test: &$crate::heads::inference::TestConfig,
        ) -> Vec<kdet_structures::Instances> {
            <$head>::predict(self, levels, priors, image_sizes, test)
        }
    };
}

pub(crate) use delegate_dense_head;
