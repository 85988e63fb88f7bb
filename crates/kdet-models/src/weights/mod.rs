//! Weight import: PyTorch state dicts (`.pth` / `.pt`, zip or legacy pre-1.6 format) and
//! SafeTensors files onto kdet modules, through burn's store crate (`burn-store`):
//! backbones (torchvision, deep-sort), whole detectors (torchvision's in [`detectors`],
//! mmdetection's in [`mmdet`], **unverified** against released checkpoints) and kdet's
//! own exports.
//!
//! The steps, each visible in the [`ImportReport`]:
//! 1. [`StateDict::open`] reads the file's tensors lazily (bytes are read when applied). A
//!    training checkpoint that nests the weights under `state_dict` (mmdetection) or
//!    `model` (detectron2, torchvision references) is unwrapped; its other entries
//!    (optimizer state, ...) are left out.
//! 2. A [`WeightSource`]'s remap table renames every key to a kdet tensor path, or ignores
//!    it for a stated reason (a classifier a backbone does not have, BatchNorm's
//!    `num_batches_tracked`). One table per source, in [`sources`].
//! 3. burn-store's applier puts each tensor into the parameter of that path: enum variant
//!    names are skipped (`bn1.Batch.gamma` is `bn1.gamma`) and BatchNorm's `weight` / `bias`
//!    are read into `gamma` / `beta` (`PyTorchToBurnAdapter`). BatchNorm running
//!    statistics are loaded like any other tensor. A 0-d tensor (mmcv's `Scale` holds
//!    `torch.tensor(1.0)`) is read as shape `[1]`: burn has no 0-d tensors, so a
//!    one-element parameter is the only thing it can fill.
//! 4. Every missing, unexpected or wrongly-shaped key is gathered into one
//!    [`WeightsError::Mismatch`]. A module with missing tensors is returned only when
//!    [`ImportOptions::allow_missing`] asks for it, and the report then lists what was
//!    left at its initial value. On error the module is dropped, never handed back half
//!    loaded.
//!
//! burn-store's `PytorchStore` is not used for the apply step: it renumbers list indices
//! to be contiguous by default (which would silently shift `conv.3` to `conv.2` in the
//! legacy MobileNetV2 layout) and reports at most ten keys of each kind.

pub mod detectors;
pub mod mmdet;
pub mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::TensorData;
use burn_store::burn_pack::Tensor as PackTensor;
use burn_store::pytorch_reader::PytorchReader;
use burn_store::{
    ApplyError, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore, bridge,
};

pub use detectors::{
    TORCHVISION_COCO_CLASSES, load_detector, load_detector_file, load_model, load_model_file,
    save_detector_safetensors, save_safetensors, torchvision_fcos_config,
    torchvision_retinanet_config,
};
pub use mmdet::{
    MMDET_COCO_CLASSES, mmdet_atss_config, mmdet_fcos_config, mmdet_gfl_config,
    mmdet_retinanet_config,
};
pub use sources::{KeyMap, WeightSource};

use crate::backbone::Backbone;

/// The checkpoint keys that nest a state dict, tried in this order (mmdetection saves
/// `{"meta", "state_dict", "optimizer"}`; detectron2 and torchvision's reference scripts
/// `{"model", "optimizer", ...}`).
pub const NESTING_KEYS: [&str; 2] = ["state_dict", "model"];

/// A weights-import error. Carries every problem at once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    #[error("cannot read weights from {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write weights to {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    #[error("weights of source `{source_name}` cannot be loaded into a {target} model")]
    WrongTarget {
        source_name: &'static str,
        target: &'static str,
    },
}

/// Every key that did not load, gathered from one import.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mismatch {
    /// kdet tensor paths the file has no tensor for.
    pub missing: Vec<String>,
    /// Source keys (as written in the file) that no kdet tensor takes.
    pub unexpected: Vec<String>,
    /// Tensors present on both sides with different shapes.
    pub wrong_shape: Vec<WrongShape>,
    /// Anything else: wrong dtype kind, unreadable bytes, two keys mapped to one path.
    pub other: Vec<String>,
}

/// A tensor whose shape in the file differs from the kdet parameter's.
#[derive(Debug, Clone, PartialEq)]
pub struct WrongShape {
    /// The key in the file.
    pub key: String,
    /// The kdet tensor path it maps to.
    pub path: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.wrong_shape.is_empty()
            && self.other.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the weights do not fit the model: {} missing, {} unexpected, {} wrongly shaped, {} other",
            self.missing.len(),
            self.unexpected.len(),
            self.wrong_shape.len(),
            self.other.len()
        )?;
        for path in &self.missing {
            write!(f, "\n  missing (in the model, not in the file): {path}")?;
        }
        for key in &self.unexpected {
            write!(f, "\n  unexpected (in the file, not in the model): {key}")?;
        }
        for w in &self.wrong_shape {
            write!(
                f,
                "\n  wrong shape: {} -> {}: model {:?}, file {:?}",
                w.key, w.path, w.expected, w.found
            )?;
        }
        for o in &self.other {
            write!(f, "\n  {o}")?;
        }
        if !self.missing.is_empty() {
            write!(
                f,
                "\n(a partial load that leaves the missing tensors at their initial values must be asked for: allow_missing)"
            )?;
        }
        Ok(())
    }
}

/// The file formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// `torch.save` output: zip (PyTorch >= 1.6), legacy pickle stream (0.1.10-1.5), tar.
    Pytorch,
    SafeTensors,
}

/// The tensors of one weights file, by key, not yet read.
pub struct StateDict {
    tensors: BTreeMap<String, PackTensor>,
    /// Where the file came from (for messages).
    pub origin: String,
    pub format: WeightsFormat,
    /// The checkpoint key the state dict was nested under, if any.
    pub nested_under: Option<&'static str>,
    /// Tensors of the file outside the nested state dict (left out), by key.
    pub outside: Vec<String>,
}

impl fmt::Debug for StateDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateDict")
            .field("origin", &self.origin)
            .field("format", &self.format)
            .field("nested_under", &self.nested_under)
            .field("num_tensors", &self.tensors.len())
            .finish()
    }
}

impl StateDict {
    /// Reads a `.pth` / `.pt` (any `torch.save` format) or `.safetensors` file. The format
    /// is taken from the file's first bytes, not its name.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let path = path.as_ref();
        let read_err = |message: String| WeightsError::Read {
            path: path.to_path_buf(),
            message,
        };
        let mut header = [0u8; 9];
        let n = std::fs::File::open(path)
            .and_then(|mut f| read_up_to(&mut f, &mut header))
            .map_err(|e| read_err(e.to_string()))?;
        let (format, tensors) = if looks_like_safetensors(&header[..n]) {
            let mut store = SafetensorsStore::from_file(path);
            let tensors = store
                .get_all_tensors()
                .map_err(|e| read_err(e.to_string()))?
                .clone();
            (WeightsFormat::SafeTensors, tensors)
        } else {
            let reader = PytorchReader::new(path).map_err(|e| read_err(e.to_string()))?;
            let tensors = reader
                .into_tensors()
                .into_iter()
                .map(|(k, t)| (k, bridge::from_pytorch(t)))
                .collect();
            (WeightsFormat::Pytorch, tensors)
        };
        Ok(Self::unwrap_nested(
            tensors,
            path.display().to_string(),
            format,
        ))
    }

    /// A state dict from tensors in hand (tests, conversions). Nested keys are unwrapped
    /// as for a file.
    pub fn from_tensors(
        tensors: impl IntoIterator<Item = (String, TensorData)>,
        origin: impl Into<String>,
    ) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(k, data)| (k.clone(), bridge::from_data(data, k, None)))
            .collect();
        Self::unwrap_nested(tensors, origin.into(), WeightsFormat::SafeTensors)
    }

    /// Keeps only the tensors under the first [`NESTING_KEYS`] key present, without that
    /// prefix. A plain state dict (no key starts with `state_dict.` or `model.`) is kept
    /// whole. The reader flattens nested dicts to dotted keys, so `{"state_dict": {"conv1.weight": ..}}`
    /// arrives as `state_dict.conv1.weight`.
    fn unwrap_nested(
        tensors: BTreeMap<String, PackTensor>,
        origin: String,
        format: WeightsFormat,
    ) -> Self {
        let nested_under = NESTING_KEYS.into_iter().find(|k| {
            let prefix = format!("{k}.");
            tensors.keys().any(|key| key.starts_with(&prefix))
        });
        let Some(nest) = nested_under else {
            return Self {
                tensors,
                origin,
                format,
                nested_under: None,
                outside: Vec::new(),
            };
        };
        let prefix = format!("{nest}.");
        let mut kept = BTreeMap::new();
        let mut outside = Vec::new();
        for (key, mut tensor) in tensors {
            match key.strip_prefix(&prefix) {
                Some(inner) => {
                    tensor.name = inner.to_string();
                    kept.insert(inner.to_string(), tensor);
                }
                None => outside.push(key),
            }
        }
        Self {
            tensors: kept,
            origin,
            format,
            nested_under: Some(nest),
            outside,
        }
    }

    /// Keys and shapes, sorted by key.
    pub fn keys(&self) -> Vec<(String, Vec<usize>)> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.to_vec()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// One tensor's values, read from the file.
    pub fn tensor_data(&self, key: &str) -> Option<Result<TensorData, String>> {
        self.tensors
            .get(key)
            .map(|t| bridge::to_data(t).map_err(|e| format!("{e:?}")))
    }
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

/// A SafeTensors file opens with a little-endian `u64` header length and the JSON `{`.
fn looks_like_safetensors(header: &[u8]) -> bool {
    header.len() == 9 && header[8] == b'{' && {
        let mut len = [0u8; 8];
        len.copy_from_slice(&header[..8]);
        u64::from_le_bytes(len) < 100_000_000
    }
}

/// What an import may leave out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Keep the module even when the file lacks some of its tensors; they stay at their
    /// initial values and [`ImportReport::left_at_init`] lists them. Unexpected and
    /// wrongly-shaped keys are errors all the same.
    pub allow_missing: bool,
}

impl ImportOptions {
    /// Every tensor of the module must come from the file (the default).
    pub fn strict() -> Self {
        Self::default()
    }

    /// Tensors the file lacks stay at their initial values (reported).
    pub fn partial() -> Self {
        Self {
            allow_missing: true,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    pub origin: String,
    pub source: &'static str,
    pub nested_under: Option<&'static str>,
    /// kdet tensor paths that received a tensor.
    pub loaded: Vec<String>,
    /// kdet tensor paths left at their initial values (only with `allow_missing`).
    pub left_at_init: Vec<String>,
    /// Source keys the remap table ignores, with its reason.
    pub ignored: Vec<(String, &'static str)>,
    /// Tensors of the file outside the nested state dict.
    pub outside: Vec<String>,
    /// kdet tensor paths the source has no key for by design, set to a fixed value
    /// (e.g. torchvision FCOS's absent per-level scales: 1), with the reason.
    pub constants: Vec<(String, &'static str)>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {} tensors loaded",
            self.origin,
            self.source,
            self.loaded.len()
        )?;
        if let Some(k) = self.nested_under {
            write!(f, ", state dict nested under `{k}`")?;
        }
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, r) in &self.ignored {
            *reasons.entry(r).or_default() += 1;
        }
        for (r, n) in reasons {
            write!(f, "\n  ignored {n} keys: {r}")?;
        }
        for (p, r) in &self.constants {
            write!(f, "\n  set {p}: {r}")?;
        }
        if !self.outside.is_empty() {
            write!(
                f,
                "\n  left out {} tensors outside the state dict",
                self.outside.len()
            )?;
        }
        if !self.left_at_init.is_empty() {
            write!(
                f,
                "\n  left at initial values ({}):",
                self.left_at_init.len()
            )?;
            for p in &self.left_at_init {
                write!(f, "\n    {p}")?;
            }
        }
        Ok(())
    }
}

/// Loads `state` into `module`, renaming keys with `map_key`. Returns the loaded module, or
/// one error naming every missing, unexpected and wrongly-shaped tensor (the module is
/// dropped then).
pub fn import<M: Module>(
    module: M,
    state: &StateDict,
    source_name: &'static str,
    map_key: impl Fn(&str) -> KeyMap,
    options: &ImportOptions,
) -> Result<(M, ImportReport), WeightsError> {
    import_with_constants(module, state, source_name, map_key, &[], options)
}

/// [`import`], and the tensors `constants` (kdet path in the file's naming, value,
/// reason) put in as if the file held them.
pub(crate) fn import_with_constants<M: Module>(
    mut module: M,
    state: &StateDict,
    source_name: &'static str,
    map_key: impl Fn(&str) -> KeyMap,
    constants: &[(String, TensorData, &'static str)],
    options: &ImportOptions,
) -> Result<(M, ImportReport), WeightsError> {
    let mut mismatch = Mismatch::default();
    let mut ignored = Vec::new();
    // kdet path -> source key, to name the file's key in messages.
    let mut origin_of: BTreeMap<String, String> = BTreeMap::new();
    let mut tensors = Vec::with_capacity(state.tensors.len());
    for (key, tensor) in &state.tensors {
        match map_key(key) {
            KeyMap::Ignore(reason) => ignored.push((key.clone(), reason)),
            KeyMap::To(path) => {
                if let Some(first) = origin_of.get(&path) {
                    mismatch.other.push(format!(
                        "keys {first} and {key} both map to {path} (remap table error)"
                    ));
                    continue;
                }
                origin_of.insert(path.clone(), key.clone());
                tensors.push(scalar_as_vector(tensor.clone(), path));
            }
        }
    }
    for (path, data, _) in constants {
        if origin_of.contains_key(path) {
            mismatch
                .other
                .push(format!("{path} is both in the file and set to a constant"));
            continue;
        }
        origin_of.insert(path.clone(), format!("(constant) {path}"));
        tensors.push(bridge::from_data(data.clone(), path.clone(), None));
    }
    let result = module.apply(tensors, None, Some(Box::new(PyTorchToBurnAdapter)), true);

    // BatchNorm `gamma` / `beta` are found under the file's `weight` / `bias` names.
    let source_key = |path: &str| -> String {
        let alt = path
            .strip_suffix(".gamma")
            .map(|p| format!("{p}.weight"))
            .or_else(|| path.strip_suffix(".beta").map(|p| format!("{p}.bias")));
        origin_of
            .get(path)
            .or_else(|| alt.as_ref().and_then(|a| origin_of.get(a)))
            .cloned()
            .unwrap_or_else(|| path.to_string())
    };
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| p.clone()).collect();
    if !options.allow_missing {
        mismatch.missing = missing.clone();
    }
    mismatch.unexpected = result.unused.iter().map(|p| source_key(p)).collect();
    for e in &result.errors {
        match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => mismatch.wrong_shape.push(WrongShape {
                key: source_key(path),
                path: path.clone(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            }),
            other => mismatch.other.push(other.to_string()),
        }
    }
    mismatch.unexpected.sort();
    if !mismatch.is_empty() {
        return Err(WeightsError::Mismatch(Box::new(mismatch)));
    }
    let loaded_set: BTreeSet<&String> = result.applied.iter().collect();
    debug_assert!(missing.iter().all(|m| !loaded_set.contains(m)));
    let mut loaded = result.applied.clone();
    loaded.sort();
    Ok((
        module,
        ImportReport {
            origin: state.origin.clone(),
            source: source_name,
            nested_under: state.nested_under,
            loaded,
            left_at_init: if options.allow_missing {
                missing
            } else {
                Vec::new()
            },
            ignored,
            outside: state.outside.clone(),
            constants: constants.iter().map(|(p, _, r)| (p.clone(), *r)).collect(),
        },
    ))
}

/// `tensor` renamed to `path`; a 0-d tensor becomes shape `[1]` (burn has no 0-d
/// tensors; mmcv's `Scale` stores one), its bytes still read only when applied.
fn scalar_as_vector(mut tensor: PackTensor, path: String) -> PackTensor {
    if tensor.shape.num_dims() > 0 {
        tensor.name = path;
        return tensor;
    }
    let dtype = tensor.dtype;
    bridge::map_data(tensor, path, dtype, [1].into(), |data| {
        // `data` was read as a 0-d tensor (its length checked by burn-store): one element,
        // which is exactly the byte length `[1]` needs, so `from_bytes` cannot fail.
        let (bytes, _, dtype) = data.into_parts();
        TensorData::from_bytes(bytes, [1], dtype)
    })
}

/// Loads a backbone's weights from a state dict of `source`'s layout.
///
/// A MobileNetV2 builds only the `features` its deepest requested stage needs; the file's
/// deeper `features` are ignored (and reported as such). In kdet's layout the file may
/// also be a whole model's (`kdet export --format safetensors`, any family): its tensors
/// under `backbone.` are the backbone's, the others are ignored (and reported).
pub fn load_backbone(
    backbone: Backbone,
    state: &StateDict,
    source: WeightSource,
    options: &ImportOptions,
) -> Result<(Backbone, ImportReport), WeightsError> {
    use sources::Target;
    let target = match &backbone {
        Backbone::ResNet(_) => "ResNet",
        Backbone::MobileNetV2(_) => "MobileNetV2",
    };
    let fits = match (source.target(), &backbone) {
        (Target::Any, _)
        | (Target::ResNet, Backbone::ResNet(_))
        | (Target::MobileNetV2, Backbone::MobileNetV2(_)) => true,
        // Whole-detector layouts (`load_detector`) and the other backbone family.
        (
            Target::ResNet
            | Target::MobileNetV2
            | Target::RetinaNet
            | Target::Fcos
            | Target::Gfl
            | Target::Atss,
            _,
        ) => false,
    };
    if !fits {
        return Err(WeightsError::WrongTarget {
            source_name: source.name(),
            target,
        });
    }
    let built_features = match &backbone {
        Backbone::ResNet(_) => None,
        Backbone::MobileNetV2(m) => Some(m.features.len()),
    };
    // A whole model's file in kdet's layout (`kdet export --format safetensors` of any
    // family): its backbone is the tensors under `backbone.`; the rest is left out.
    let whole_model = source == WeightSource::Kdet
        && state
            .keys()
            .iter()
            .any(|(k, _)| k.starts_with(WHOLE_MODEL_BACKBONE));
    import(
        backbone,
        state,
        source.name(),
        |key| {
            let key = if whole_model {
                match key.strip_prefix(WHOLE_MODEL_BACKBONE) {
                    Some(inner) => inner,
                    None => return KeyMap::Ignore("outside the backbone of a whole model's file"),
                }
            } else {
                key
            };
            if let Some(n) = built_features
                && sources::feature_index(key).is_some_and(|i| i >= n)
            {
                return KeyMap::Ignore("a MobileNetV2 feature deeper than the deepest stage built");
            }
            source.map_key(key)
        },
        options,
    )
}

/// The prefix of a backbone's tensors in a whole model's kdet-layout file.
const WHOLE_MODEL_BACKBONE: &str = "backbone.";

/// Opens `path` and loads it into `backbone` ([`StateDict::open`] + [`load_backbone`]).
pub fn load_backbone_file(
    backbone: Backbone,
    path: impl AsRef<Path>,
    source: WeightSource,
    options: &ImportOptions,
) -> Result<(Backbone, ImportReport), WeightsError> {
    let state = StateDict::open(path)?;
    load_backbone(backbone, &state, source, options)
}

/// Writes a backbone's tensors (running statistics included) to a SafeTensors file under
/// kdet's paths (enum variants left out), BatchNorm affine terms named `weight` / `bias`
/// as in PyTorch, so that [`WeightSource::Kdet`] reads it back into any norm variant.
/// Refuses to replace an existing file. Returns the number of tensors written.
pub fn save_backbone_safetensors(
    backbone: &Backbone,
    path: impl AsRef<Path>,
) -> Result<usize, WeightsError> {
    save_safetensors(backbone, path, false, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: &[&str]) -> StateDict {
        StateDict::from_tensors(
            keys.iter()
                .map(|k| (k.to_string(), TensorData::new(vec![0f32; 2], [2]))),
            "test",
        )
    }

    #[test]
    fn nested_state_dicts_are_unwrapped() {
        let s = state(&[
            "state_dict.conv1.weight",
            "state_dict.bn1.running_mean",
            "optimizer.state.0.momentum_buffer",
        ]);
        assert_eq!(s.nested_under, Some("state_dict"));
        let keys: Vec<String> = s.keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["bn1.running_mean", "conv1.weight"]);
        assert_eq!(s.outside, ["optimizer.state.0.momentum_buffer"]);

        let s = state(&["model.backbone.conv1.weight"]);
        assert_eq!(s.nested_under, Some("model"));
        // `state_dict` wins over `model` (an mmdet checkpoint may hold both names).
        let s = state(&["state_dict.model.x", "model.y"]);
        assert_eq!(s.nested_under, Some("state_dict"));
        assert_eq!(s.keys()[0].0, "model.x");

        let plain = state(&["conv1.weight", "layer1.0.bn1.bias"]);
        assert_eq!(plain.nested_under, None);
        assert_eq!(plain.len(), 2);
    }

    #[test]
    fn safetensors_is_told_apart_by_its_header() {
        let mut st = 64u64.to_le_bytes().to_vec();
        st.push(b'{');
        assert!(looks_like_safetensors(&st));
        // A zip (`torch.save` >= 1.6) and a legacy pickle stream.
        assert!(!looks_like_safetensors(b"PK\x03\x04\x00\x00\x00\x00\x00"));
        assert!(!looks_like_safetensors(
            b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9"
        ));
        assert!(!looks_like_safetensors(b"{"));
    }

    #[test]
    fn a_mismatch_lists_every_key() {
        let m = Mismatch {
            missing: vec!["a.gamma".into(), "b.weight".into()],
            unexpected: vec!["fc.weight".into()],
            wrong_shape: vec![WrongShape {
                key: "c.weight".into(),
                path: "c.weight".into(),
                expected: vec![2, 3],
                found: vec![3, 2],
            }],
            other: vec![],
        };
        let text = WeightsError::Mismatch(Box::new(m)).to_string();
        for s in [
            "a.gamma",
            "b.weight",
            "fc.weight",
            "c.weight",
            "[2, 3]",
            "[3, 2]",
        ] {
            assert!(text.contains(s), "{s} in {text}");
        }
        assert!(text.contains("2 missing, 1 unexpected, 1 wrongly shaped"));
    }
}
