//! burn `Dataset` and `Batcher` implementations for detection, and a multi-threaded,
//! deterministic loader.
//!
//! The loader is our own rather than burn's `DataLoaderBuilder` because training needs
//! three things that one does not give: (1) the shuffle order and every augmentation are
//! a pure function of (seed, epoch, position), so a resumed run sees exactly the batches
//! an uninterrupted one would (`iter(epoch, start_batch)` skips without loading); (2) a
//! bad file stops the run with its error instead of a panic in a worker; (3) batches come
//! out in order while samples are decoded in parallel on a dedicated pool.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::tensor::Device;
use kdet_structures::{ImageBatch, ImageSize, Instances};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::DataError;
use crate::coco::CocoDataset;
use crate::transforms::{Normalize, Pipeline, Sample};

impl Dataset<Sample, DataError> for CocoDataset {
    /// Decodes image `index` with its ground truth (no augmentation).
    fn get(&self, index: usize) -> Result<Sample, DataError> {
        let image = self.load_image(index)?;
        let r = &self.records()[index];
        Ok(Sample {
            image_id: r.image_id,
            image,
            instances: r.instances.clone(),
            original_size: ImageSize::new(r.size.height, r.size.width),
        })
    }

    fn len(&self) -> usize {
        CocoDataset::len(self)
    }
}

/// A batch ready for a detector: padded images and per-image targets.
#[derive(Debug, Clone)]
pub struct DetectionBatch {
    pub images: ImageBatch,
    /// Ground truth in the resized (unpadded) image's pixels.
    pub targets: Vec<Instances>,
    pub image_ids: Vec<u64>,
}

/// Normalises and pads samples into a [`DetectionBatch`].
#[derive(Debug, Clone)]
pub struct DetectionBatcher {
    pub normalize: Normalize,
    /// Padded sizes are multiples of this (the detector's largest stride, e.g. 32 or 128).
    pub size_divisor: usize,
}

impl Batcher<Sample, Result<DetectionBatch, DataError>> for DetectionBatcher {
    fn batch(&self, items: Vec<Sample>, device: &Device) -> Result<DetectionBatch, DataError> {
        let batch_items: Vec<_> = items
            .iter()
            .map(|s| self.normalize.to_batch_item(s))
            .collect();
        // The padding value 0 is the mean colour after normalisation (detectron2, mmdet).
        let images =
            ImageBatch::from_items(&batch_items, self.size_divisor, 0.0, device).map_err(|e| {
                DataError::Structures {
                    context: format!(
                        "batching image ids {:?}",
                        items.iter().map(|s| s.image_id).collect::<Vec<_>>()
                    ),
                    source: e,
                }
            })?;
        Ok(DetectionBatch {
            images,
            image_ids: items.iter().map(|s| s.image_id).collect(),
            targets: items.into_iter().map(|s| s.instances).collect(),
        })
    }
}

/// How batches are drawn.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle each epoch with a permutation seeded by `(seed, epoch)`.
    pub shuffle: bool,
    pub seed: u64,
    /// Decoding threads (at least 1).
    pub num_workers: usize,
    /// Drop a last, smaller batch (training) or keep it (evaluation).
    pub drop_last: bool,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 2,
            shuffle: true,
            seed: 0,
            num_workers: 2,
            drop_last: true,
            prefetch: 2,
        }
    }
}

/// Multi-threaded, deterministic batch loader over any detection `Dataset`.
pub struct Loader<D> {
    dataset: Arc<D>,
    pipeline: Arc<Pipeline>,
    batcher: Arc<DetectionBatcher>,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
}

/// Seed of sample `position` of `epoch`: all randomness of one sample derives from it.
fn sample_seed(seed: u64, epoch: u64, position: usize) -> u64 {
    // SplitMix64-style mixing keeps nearby (epoch, position) pairs uncorrelated.
    let mut z = seed
        ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (position as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<D: Dataset<Sample, DataError> + 'static> Loader<D> {
    pub fn new(
        dataset: Arc<D>,
        pipeline: Pipeline,
        batcher: DetectionBatcher,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.num_workers.max(1))
            .thread_name(|i| format!("kdet-loader-{i}"))
            .build()
            .map_err(|e| {
                DataError::invalid("<loader>", format!("cannot start loader threads: {e}"))
            })?;
        Ok(Self {
            dataset,
            pipeline: Arc::new(pipeline),
            batcher: Arc::new(batcher),
            config,
            pool: Arc::new(pool),
        })
    }

    /// Dataset indices in the order epoch `epoch` visits them.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(sample_seed(
                self.config.seed,
                epoch,
                usize::MAX,
            )));
        }
        order
    }

    /// Number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size.max(1));
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Iterates over epoch `epoch`'s batches from batch `start_batch` on (for resuming).
    /// Loading runs ahead on the pool; dropping the iterator stops it.
    pub fn iter(&self, epoch: u64, start_batch: usize, device: &Device) -> LoaderIter {
        let order = self.order(epoch);
        let bs = self.config.batch_size.max(1);
        let batches: Vec<(usize, Vec<usize>)> = order
            .chunks(bs)
            .enumerate()
            .filter(|(_, c)| !self.config.drop_last || c.len() == bs)
            .skip(start_batch)
            .map(|(b, c)| (b * bs, c.to_vec()))
            .collect();
        let (tx, rx): (SyncSender<_>, Receiver<_>) = sync_channel(self.config.prefetch.max(1));
        let (dataset, pipeline, batcher, pool) = (
            self.dataset.clone(),
            self.pipeline.clone(),
            self.batcher.clone(),
            self.pool.clone(),
        );
        let seed = self.config.seed;
        let device = device.clone();
        let handle = std::thread::spawn(move || {
            for (first_position, indices) in batches {
                let samples: Result<Vec<Sample>, DataError> = pool.install(|| {
                    indices
                        .par_iter()
                        .enumerate()
                        .map(|(k, &i)| {
                            let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(
                                seed,
                                epoch,
                                first_position + k,
                            ));
                            pipeline.apply(dataset.get(i)?, &mut rng)
                        })
                        .collect()
                });
                let out = samples.and_then(|s| batcher.batch(s, &device));
                let stop = out.is_err();
                if tx.send(out).is_err() || stop {
                    break;
                }
            }
        });
        LoaderIter {
            rx,
            handle: Some(handle),
        }
    }
}

/// Batches of one epoch, in order; the first error ends the iteration.
pub struct LoaderIter {
    rx: Receiver<Result<DetectionBatch, DataError>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for LoaderIter {
    type Item = Result<DetectionBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                // The producer finished (or stopped after sending an error).
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                None
            }
        }
    }
}
