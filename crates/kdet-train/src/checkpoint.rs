//! Checkpoints: the model's and the optimizer's burn records, the loop position and the
//! resolved configuration in one file with a CRC-32, written atomically.
//!
//! File layout (all integers little-endian):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | magic `KDETCKPT` |
//! | 8 | 4 | format version (1) |
//! | 12 | 8 | `h` = header length |
//! | 20 | 8 | `m` = model record length |
//! | 28 | 8 | `o` = optimizer record length |
//! | 36 | `h` | header: [`CheckpointMeta`] as JSON |
//! | 36+h | `m` | model: `ModuleRecord::into_bytes` (burnpack, parameters at full precision, with their `ParamId`s) |
//! | 36+h+m | `o` | optimizer: `ModuleOptimizer::into_bytes` (burnpack, keyed by `ParamId`); with a second optimizer (`own_optimizer_len` = `n` in the header) its record is the last `n` bytes |
//! | 36+h+m+o | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! The CRC is checked before anything is parsed, so a flipped bit or a truncated file is
//! an error naming the file, never a partially loaded model. Each checkpoint has a JSON
//! sidecar (`last.json` beside `last.ckpt`) for people and scripts; the `.ckpt` alone is
//! authoritative.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::TrainConfig;
use crate::schedule::LrSchedule;

const MAGIC: &[u8; 8] = b"KDETCKPT";
const VERSION: u32 = 1;
const PREFIX: usize = 36;

/// The file every checkpoint also updates, and that [`crate::Trainer::resume`] reads.
pub const LAST: &str = "last.ckpt";

/// Path of `run_dir`'s latest checkpoint.
pub fn last_checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join(LAST)
}

/// Where the loop stands and what it was configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps completed.
    pub step: u64,
    /// Epoch the next step belongs to (0-based).
    pub epoch: u64,
    /// Index, within `epoch`, of the next batch (`Loader::iter(epoch, batch_in_epoch, ..)`).
    pub batch_in_epoch: usize,
    pub batches_per_epoch: usize,
    pub dataset_len: usize,
    /// FNV-1a hash of `Loader::order(epoch)`: a resumed run with another seed or dataset
    /// would silently see other data; this catches it.
    pub order_fingerprint: u64,
    pub images_seen: u64,
    /// Training wall time so far, summed over resumed sessions.
    pub elapsed_s: f64,
    /// The lr of the last step taken.
    pub lr: f64,
    pub config: TrainConfig,
    pub schedule: LrSchedule,
    /// The caller's fully resolved experiment (model, data, ...), so a run can be rebuilt
    /// from its checkpoint alone.
    pub experiment: Option<serde_json::Value>,
    pub kdet_train_version: String,
    /// Length of the second optimizer's record (a distillation method's own modules,
    /// `kdet_distill::OwnOptimizer`), stored at the end of the optimizer section; absent
    /// when the run has one optimizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_optimizer_len: Option<u64>,
}

/// A verified checkpoint, records not yet applied.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    model: Vec<u8>,
    optimizer: Vec<u8>,
}

/// What the sidecar JSON says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub file: String,
    pub step: u64,
    pub epoch: u64,
    pub batch_in_epoch: usize,
    pub bytes: u64,
    /// CRC-32 of the file without its last 4 bytes (the stored checksum), hex.
    pub crc32: String,
    pub written_unix_s: u64,
}

fn encode(meta: &CheckpointMeta, model: &[u8], optimizer: &[u8]) -> Result<Vec<u8>, TrainError> {
    let header = serde_json::to_vec(meta)
        .map_err(|e| TrainError::config("<checkpoint header>", e.to_string()))?;
    let mut out = Vec::with_capacity(PREFIX + header.len() + model.len() + optimizer.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for len in [header.len(), model.len(), optimizer.len()] {
        out.extend_from_slice(&(len as u64).to_le_bytes());
    }
    out.extend_from_slice(&header);
    out.extend_from_slice(model);
    out.extend_from_slice(optimizer);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The three sections of a verified checkpoint file.
#[derive(Debug)]
struct Sections<'a> {
    header: &'a [u8],
    model: &'a [u8],
    optimizer: &'a [u8],
}

/// Checks structure and checksum.
fn decode<'a>(path: &Path, bytes: &'a [u8]) -> Result<Sections<'a>, TrainError> {
    if bytes.len() < PREFIX + 4 {
        return Err(TrainError::corrupt(
            path,
            format!("{} bytes, shorter than the fixed header", bytes.len()),
        ));
    }
    if &bytes[..8] != MAGIC {
        return Err(TrainError::corrupt(
            path,
            "not a kdet checkpoint (bad magic)",
        ));
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(TrainError::corrupt(
            path,
            format!("format version {version}, this build reads {VERSION}"),
        ));
    }
    let lens = [u64_at(bytes, 12), u64_at(bytes, 20), u64_at(bytes, 28)];
    let expected = lens
        .iter()
        .try_fold(PREFIX as u64 + 4, |acc, &l| acc.checked_add(l));
    if expected != Some(bytes.len() as u64) {
        return Err(TrainError::corrupt(
            path,
            format!(
                "{} bytes but the header describes {} (truncated or overwritten?)",
                bytes.len(),
                expected.map_or_else(|| "an impossible size".to_string(), |e| e.to_string())
            ),
        ));
    }
    let body = bytes.len() - 4;
    let stored = u32_at(bytes, body);
    let actual = crc32fast::hash(&bytes[..body]);
    if stored != actual {
        return Err(TrainError::corrupt(
            path,
            format!("checksum mismatch: stored {stored:08x}, computed {actual:08x}"),
        ));
    }
    // The lengths sum to the file size, so each fits in usize.
    let (h, m) = (lens[0] as usize, lens[1] as usize);
    let header = &bytes[PREFIX..PREFIX + h];
    let model = &bytes[PREFIX + h..PREFIX + h + m];
    let optimizer = &bytes[PREFIX + h + m..body];
    Ok(Sections {
        header,
        model,
        optimizer,
    })
}

/// Writes a checkpoint to `path` atomically (temporary file in the same directory, then a
/// rename) and its sidecar `<stem>.json`. Returns the sidecar's content.
pub fn write_checkpoint(
    path: &Path,
    meta: &CheckpointMeta,
    model: &[u8],
    optimizer: &[u8],
) -> Result<CheckpointInfo, TrainError> {
    let bytes = encode(meta, model, optimizer)?;
    write_encoded(path, meta, &bytes)
}

fn write_encoded(
    path: &Path,
    meta: &CheckpointMeta,
    bytes: &[u8],
) -> Result<CheckpointInfo, TrainError> {
    kdet_data::image_io::write_atomic_io(path, bytes).map_err(|(p, e)| TrainError::io(p, e))?;
    let info = CheckpointInfo {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        step: meta.step,
        epoch: meta.epoch,
        batch_in_epoch: meta.batch_in_epoch,
        bytes: bytes.len() as u64,
        crc32: format!("{:08x}", u32_at(bytes, bytes.len() - 4)),
        written_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let sidecar = path.with_extension("json");
    let mut json = serde_json::to_vec_pretty(&info)
        .map_err(|e| TrainError::config("<checkpoint sidecar>", e.to_string()))?;
    json.push(b'\n');
    kdet_data::image_io::write_atomic_io(&sidecar, &json).map_err(|(p, e)| TrainError::io(p, e))?;
    Ok(info)
}

/// Writes the same checkpoint to several paths (e.g. `last.ckpt` and a kept copy),
/// encoding it once.
pub(crate) fn write_checkpoints(
    paths: &[PathBuf],
    meta: &CheckpointMeta,
    model: &[u8],
    optimizer: &[u8],
) -> Result<Option<CheckpointInfo>, TrainError> {
    let bytes = encode(meta, model, optimizer)?;
    let mut last = None;
    for p in paths {
        last = Some(write_encoded(p, meta, &bytes)?);
    }
    Ok(last)
}

impl Checkpoint {
    /// Reads and verifies `path` (size, magic, version, CRC, header).
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let Sections {
            header,
            model,
            optimizer,
        } = decode(path, &bytes)?;
        let meta: CheckpointMeta = serde_json::from_slice(header)
            .map_err(|e| TrainError::corrupt(path, format!("malformed header: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            meta,
            model: model.to_vec(),
            optimizer: optimizer.to_vec(),
        })
    }

    /// Size in bytes of the model and optimizer records.
    pub fn record_sizes(&self) -> (usize, usize) {
        (self.model.len(), self.optimizer.len())
    }

    /// Applies the model record to `model` (parameters and their ids, so optimizer state
    /// keyed by id lines up). Every missing, unexpected or mis-shaped parameter is named.
    pub fn load_model<M: Module>(&self, model: M) -> Result<M, TrainError> {
        self.apply_record(model, false)
    }

    /// [`Checkpoint::load_model`] into a module that holds only part of the checkpointed
    /// one under the same paths (e.g. the `student` of a distillation run): parameters of
    /// the record that `model` lacks are ignored; every parameter of `model` must be there.
    pub fn load_submodel<M: Module>(&self, model: M) -> Result<M, TrainError> {
        self.apply_record(model, true)
    }

    fn apply_record<M: Module>(&self, model: M, allow_unused: bool) -> Result<M, TrainError> {
        let record =
            ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.model.clone())).map_err(|e| {
                TrainError::Record {
                    path: self.path.clone(),
                    what: "reading the model record",
                    message: e.to_string(),
                }
            })?;
        model
            .try_load_record(record.allow_unused(allow_unused))
            .map_err(|e| TrainError::Incompatible {
                path: self.path.clone(),
                what: format!("the model does not match the checkpoint's parameters: {e}"),
            })
    }

    /// Whether the checkpoint holds optimizer state (weights-only ones, see
    /// [`Checkpoint::write_weights_only`], cannot resume training).
    pub fn has_optimizer_state(&self) -> bool {
        !self.optimizer.is_empty()
    }

    /// Writes the weights and the header (step, experiment, ...) without the optimizer
    /// state to `path` (atomically, with its sidecar): a third of an AdamW checkpoint, for
    /// shipping a trained model. With `model` the record of another module (e.g. a
    /// distilled student without its distillation modules) replaces the stored one.
    pub fn write_weights_only<M: Module>(
        &self,
        path: &Path,
        model: Option<M>,
    ) -> Result<CheckpointInfo, TrainError> {
        let record = match model {
            Some(m) => {
                let bytes = m
                    .into_record()
                    .into_bytes()
                    .map_err(|e| TrainError::Record {
                        path: path.to_path_buf(),
                        what: "encoding the model record",
                        message: e.to_string(),
                    })?;
                bytes.to_vec()
            }
            None => self.model.clone(),
        };
        let meta = CheckpointMeta {
            own_optimizer_len: None,
            ..self.meta.clone()
        };
        write_checkpoint(path, &meta, &record, &[])
    }

    /// The two parts of the optimizer section: the main optimizer's record and the second
    /// one's (empty without one).
    fn optimizer_parts(&self) -> Result<(&[u8], &[u8]), TrainError> {
        let own = self.meta.own_optimizer_len.unwrap_or(0) as usize;
        if own > self.optimizer.len() {
            return Err(TrainError::Record {
                path: self.path.clone(),
                what: "reading the optimizer record",
                message: format!(
                    "the header gives the second optimizer {own} bytes, the optimizer section has {}",
                    self.optimizer.len()
                ),
            });
        }
        Ok(self.optimizer.split_at(self.optimizer.len() - own))
    }

    /// Applies the second optimizer's record (a distillation method's own modules) to a
    /// freshly built one.
    pub fn load_own_optimizer(
        &self,
        optimizer: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, TrainError> {
        let (_, own) = self.optimizer_parts()?;
        if self.meta.own_optimizer_len.is_none() {
            return Err(TrainError::Record {
                path: self.path.clone(),
                what: "reading the second optimizer's record",
                message: "the run trains a method's modules with their own optimizer, and this checkpoint holds no state for it (written by a run without one)".into(),
            });
        }
        optimizer
            .from_bytes(Bytes::from_bytes_vec(own.to_vec()))
            .map_err(|e| TrainError::Record {
                path: self.path.clone(),
                what: "reading the second optimizer's record",
                message: e.to_string(),
            })
    }

    /// Applies the optimizer record to a freshly built optimizer.
    pub fn load_optimizer(
        &self,
        optimizer: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, TrainError> {
        if self.optimizer.is_empty() {
            return Err(TrainError::Record {
                path: self.path.clone(),
                what: "reading the optimizer record",
                message: "the checkpoint holds weights only (no optimizer state): it can be evaluated or used as a teacher, not resumed".into(),
            });
        }
        let (main, _) = self.optimizer_parts()?;
        optimizer
            .from_bytes(Bytes::from_bytes_vec(main.to_vec()))
            .map_err(|e| TrainError::Record {
                path: self.path.clone(),
                what: "reading the optimizer record",
                message: e.to_string(),
            })
    }
}

/// FNV-1a over the indices (as little-endian u64).
pub(crate) fn fingerprint(order: &[usize]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &i in order {
        for b in (i as u64).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    fn meta() -> CheckpointMeta {
        let config = TrainConfig::default();
        CheckpointMeta {
            step: 7,
            epoch: 1,
            batch_in_epoch: 2,
            batches_per_epoch: 5,
            dataset_len: 10,
            order_fingerprint: fingerprint(&[3, 1, 2]),
            images_seen: 14,
            elapsed_s: 1.5,
            lr: 0.01,
            schedule: LrSchedule::new(&config.schedule, 0.01, 5),
            config,
            experiment: Some(serde_json::json!({"model": "toy"})),
            kdet_train_version: "test".into(),
            own_optimizer_len: None,
        }
    }

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.ckpt");
        let info = write_checkpoint(&path, &meta(), b"model-bytes", b"optim").expect("write");
        assert_eq!(info.step, 7);
        let sidecar: CheckpointInfo =
            serde_json::from_slice(&std::fs::read(dir.path().join("a.json")).expect("sidecar"))
                .expect("json");
        assert_eq!(sidecar, info);
        let ck = Checkpoint::read(&path).expect("read");
        assert_eq!(ck.meta, meta());
        assert_eq!(ck.model, b"model-bytes");
        assert_eq!(ck.optimizer, b"optim");

        let good = std::fs::read(&path).expect("bytes");
        // Every single-byte flip and every truncation is an error naming the file.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            let err = decode(&path, &bad).expect_err("flip must be caught");
            assert!(err.to_string().contains("a.ckpt"), "{err}");
        }
        for n in 0..good.len() {
            assert!(decode(&path, &good[..n]).is_err(), "truncated to {n}");
        }
    }

    #[test]
    fn fingerprint_depends_on_order() {
        assert_ne!(fingerprint(&[0, 1, 2]), fingerprint(&[0, 2, 1]));
        assert_eq!(fingerprint(&[5, 4]), fingerprint(&[5, 4]));
    }
}
