//! YouTube-VIS (2019/2021, OVIS) reader: parsing, validation, per-frame instances.
//!
//! The schema is [`kdet_structures::ytvis`]. On top of it this module adds:
//! - **Validation** at load, with errors naming the file and the video / annotation id:
//!   malformed JSON (serde's line and column); duplicate video, annotation or category
//!   ids; a video with zero width or height or whose `length` differs from the number of
//!   `file_names`; an annotation whose `video_id` or `category_id` is unknown, whose
//!   per-frame arrays (`segmentations`, and `bboxes` / `areas` when present) do not
//!   have the video's length, whose RLE size differs from the video's size or does not
//!   decode, whose box is non-finite or negative, or that has a box in a frame without
//!   a mask.
//! - **Labels**: categories sorted by id, label `i` is the `i`-th ([`LabelMap`]).
//! - **Frames**: [`YtvisData::frame_instances`] gives the objects of one frame as
//!   [`Instances`] — boxes from the per-frame `bbox` (or from the mask when the file has
//!   none), masks (RLE; polygons stay polygons), classes, crowd flags, and track ids equal
//!   to the annotation ids.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hotcoco::types::Segmentation;
use image::RgbImage;
use kdet_structures::ytvis::{YtvisAnnotation, YtvisDataset, YtvisVideo};
use kdet_structures::{Boxes, ImageSize, Instances, Mask, Masks, Xywh};

use crate::coco::LabelMap;

/// Errors of the YouTube-VIS reader; each names the file and, where one exists, the
/// video / annotation id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum YtvisError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid JSON or not the YouTube-VIS schema; serde's message has line and column.
    #[error("{}: malformed YouTube-VIS JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A record breaks the format's rules.
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error("{}: frame {frame} of video id {video_id} does not exist", path.display())]
    MissingFrame {
        path: PathBuf,
        video_id: u64,
        frame: usize,
    },
    #[error("{}: cannot decode frame {frame} of video id {video_id}: {source}", path.display())]
    CorruptFrame {
        path: PathBuf,
        video_id: u64,
        frame: usize,
        #[source]
        source: image::ImageError,
    },
    #[error(
        "{}: frame {frame} of video id {video_id} is {got_w}x{got_h} pixels but the annotation file says {expected_w}x{expected_h}",
        path.display()
    )]
    FrameSize {
        path: PathBuf,
        video_id: u64,
        frame: usize,
        expected_w: u32,
        expected_h: u32,
        got_w: u32,
        got_h: u32,
    },
}

/// One track's visible state in one frame: mask and `[x, y, w, h]` box.
#[derive(Debug, Clone)]
struct FrameObject {
    mask: Mask,
    bbox: [f64; 4],
}

/// A validated YouTube-VIS dataset; videos in file order.
#[derive(Debug)]
pub struct YtvisData {
    json_path: PathBuf,
    frames_root: PathBuf,
    dataset: YtvisDataset,
    labels: LabelMap,
    /// Per video index: indices into `dataset.annotations`, in file order.
    tracks: Vec<Vec<usize>>,
    /// Per annotation, per frame: the decoded object, `None` where not visible.
    objects: Vec<Vec<Option<FrameObject>>>,
}

/// Read and validate `json`; frame `file_names` are relative to `frames_root`.
pub fn load_ytvis(json: &Path, frames_root: &Path) -> Result<YtvisData, YtvisError> {
    let bytes = std::fs::read(json).map_err(|source| YtvisError::Io {
        path: json.to_path_buf(),
        source,
    })?;
    let dataset: YtvisDataset =
        serde_json::from_slice(&bytes).map_err(|source| YtvisError::Json {
            path: json.to_path_buf(),
            source,
        })?;
    YtvisData::new(dataset, json, frames_root)
}

impl YtvisData {
    /// Validate an already parsed dataset (`json` is only used in error messages).
    pub fn new(dataset: YtvisDataset, json: &Path, frames_root: &Path) -> Result<Self, YtvisError> {
        let invalid = |what: String| YtvisError::Invalid {
            path: json.to_path_buf(),
            what,
        };
        if dataset.categories.is_empty() {
            return Err(invalid("no categories".to_string()));
        }
        let labels = LabelMap::from_categories(&dataset.categories).map_err(invalid)?;

        let mut video_index = HashMap::new();
        for (i, v) in dataset.videos.iter().enumerate() {
            if video_index.insert(v.id, i).is_some() {
                return Err(invalid(format!("video id {} appears twice", v.id)));
            }
            if v.width == 0 || v.height == 0 {
                return Err(invalid(format!(
                    "video id {} has size {}x{}",
                    v.id, v.width, v.height
                )));
            }
            if v.length != v.file_names.len() {
                return Err(invalid(format!(
                    "video id {} has length {} but {} file_names",
                    v.id,
                    v.length,
                    v.file_names.len()
                )));
            }
        }

        let mut tracks = vec![Vec::new(); dataset.videos.len()];
        let mut objects = Vec::with_capacity(dataset.annotations.len());
        let mut seen = HashSet::new();
        for (k, a) in dataset.annotations.iter().enumerate() {
            if !seen.insert(a.id) {
                return Err(invalid(format!("annotation id {} appears twice", a.id)));
            }
            let Some(&vi) = video_index.get(&a.video_id) else {
                return Err(invalid(format!(
                    "annotation id {} refers to unknown video id {}",
                    a.id, a.video_id
                )));
            };
            if labels.label(a.category_id).is_none() {
                return Err(invalid(format!(
                    "annotation id {} has unknown category id {}",
                    a.id, a.category_id
                )));
            }
            objects.push(decode_track(a, &dataset.videos[vi]).map_err(invalid)?);
            tracks[vi].push(k);
        }
        Ok(YtvisData {
            json_path: json.to_path_buf(),
            frames_root: frames_root.to_path_buf(),
            dataset,
            labels,
            tracks,
            objects,
        })
    }

    /// The annotation file this was read from.
    pub fn json_path(&self) -> &Path {
        &self.json_path
    }

    /// The folder frame `file_names` are relative to.
    pub fn frames_root(&self) -> &Path {
        &self.frames_root
    }

    /// The parsed file.
    pub fn dataset(&self) -> &YtvisDataset {
        &self.dataset
    }

    pub fn labels(&self) -> &LabelMap {
        &self.labels
    }

    pub fn num_videos(&self) -> usize {
        self.dataset.videos.len()
    }

    pub fn videos(&self) -> &[YtvisVideo] {
        &self.dataset.videos
    }

    /// # Panics
    /// If `video_index >= num_videos()`.
    pub fn video(&self, video_index: usize) -> &YtvisVideo {
        &self.dataset.videos[video_index]
    }

    /// The tracks (annotations) of a video, in file order.
    ///
    /// # Panics
    /// If `video_index >= num_videos()`.
    pub fn tracks(&self, video_index: usize) -> impl Iterator<Item = &YtvisAnnotation> {
        self.tracks[video_index]
            .iter()
            .map(|&k| &self.dataset.annotations[k])
    }

    /// The objects visible in one frame, in the file order of their tracks: boxes
    /// (`[x1, y1, x2, y2]`), labels, masks, crowd flags, and track ids (= annotation ids).
    ///
    /// # Panics
    /// If the video index or frame is out of range.
    pub fn frame_instances(&self, video_index: usize, frame: usize) -> Instances {
        let video = &self.dataset.videos[video_index];
        assert!(
            frame < video.length,
            "frame {frame} out of range for video id {} with {} frames",
            video.id,
            video.length
        );
        let size = ImageSize::new(video.height, video.width);
        let (mut boxes, mut classes, mut masks, mut ids, mut crowd) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &k in &self.tracks[video_index] {
            let Some(obj) = &self.objects[k][frame] else {
                continue;
            };
            let a = &self.dataset.annotations[k];
            boxes.push(obj.bbox.map(|v| v as f32));
            classes.push(
                self.labels
                    .label(a.category_id)
                    .expect("category ids are validated at load"),
            );
            masks.push(obj.mask.clone());
            ids.push(a.id);
            crowd.push(a.iscrowd);
        }
        let masks =
            Masks::new(video.height, video.width, masks).expect("mask sizes are validated at load");
        Instances::new(size, Boxes::<Xywh>::new(boxes).to_xyxy(), classes)
            .and_then(|i| i.with_masks(masks))
            .and_then(|i| i.with_track_ids(ids))
            .and_then(|i| i.with_crowd(crowd))
            .expect("boxes are validated finite and fields are built aligned")
    }

    /// Path of a frame file.
    ///
    /// # Panics
    /// If the video index or frame is out of range.
    pub fn frame_path(&self, video_index: usize, frame: usize) -> PathBuf {
        self.frames_root
            .join(&self.dataset.videos[video_index].file_names[frame])
    }

    /// Decode a frame to 8-bit RGB, checking it has the video's size.
    ///
    /// # Panics
    /// If the video index or frame is out of range.
    pub fn load_frame(&self, video_index: usize, frame: usize) -> Result<RgbImage, YtvisError> {
        let video = &self.dataset.videos[video_index];
        let path = self.frame_path(video_index, frame);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(YtvisError::MissingFrame {
                    path,
                    video_id: video.id,
                    frame,
                });
            }
            Err(source) => return Err(YtvisError::Io { path, source }),
        };
        let img = match image::load_from_memory(&bytes) {
            Ok(img) => img.to_rgb8(),
            Err(source) => {
                return Err(YtvisError::CorruptFrame {
                    path,
                    video_id: video.id,
                    frame,
                    source,
                });
            }
        };
        if img.dimensions() != (video.width, video.height) {
            return Err(YtvisError::FrameSize {
                path,
                video_id: video.id,
                frame,
                expected_w: video.width,
                expected_h: video.height,
                got_w: img.width(),
                got_h: img.height(),
            });
        }
        Ok(img)
    }
}

/// Check one annotation against its video and decode its per-frame masks and boxes.
fn decode_track(
    a: &YtvisAnnotation,
    video: &YtvisVideo,
) -> Result<Vec<Option<FrameObject>>, String> {
    let n = video.length;
    let per_frame = |field: &str, len: usize, optional: bool| {
        if len == n || (optional && len == 0) {
            Ok(())
        } else {
            Err(format!(
                "annotation id {} has {len} {field} but video id {} has {n} frames",
                a.id, video.id
            ))
        }
    };
    per_frame("segmentations", a.segmentations.len(), false)?;
    per_frame("bboxes", a.bboxes.len(), true)?;
    per_frame("areas", a.areas.len(), true)?;
    let (h, w) = (video.height, video.width);
    let mut out = Vec::with_capacity(n);
    for (f, seg) in a.segmentations.iter().enumerate() {
        let bbox = a.bboxes.get(f).copied().flatten();
        let Some(seg) = seg else {
            if bbox.is_some() {
                return Err(format!(
                    "annotation id {} has a box but no mask in frame {f}",
                    a.id
                ));
            }
            out.push(None);
            continue;
        };
        if let Segmentation::CompressedRle { size, .. } | Segmentation::UncompressedRle { size, .. } =
            seg
            && *size != [h, w]
        {
            return Err(format!(
                "annotation id {} frame {f}: RLE size {}x{} differs from video id {} size {h}x{w} (height x width)",
                a.id, size[0], size[1], video.id
            ));
        }
        let rle = seg
            .to_rle(h, w)
            .map_err(|e| format!("annotation id {} frame {f}: bad mask: {e}", a.id))?;
        let bbox = match bbox {
            Some(b) => {
                if b.iter().any(|v| !v.is_finite()) || b[2] < 0.0 || b[3] < 0.0 {
                    return Err(format!(
                        "annotation id {} frame {f}: invalid bbox {b:?}",
                        a.id
                    ));
                }
                b
            }
            None => hotcoco::mask::to_bbox(&rle),
        };
        let mask = match seg.polygons() {
            Some(p) => Mask::Polygons(p.into_owned()),
            None => Mask::Rle(rle),
        };
        out.push(Some(FrameObject { mask, bbox }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Split, SynthConfig, generate_video, write_dataset};

    fn video_cfg() -> SynthConfig {
        SynthConfig {
            seed: 11,
            image_size: 48,
            train_images: 2,
            val_images: 1,
            video: true,
            frames_per_video: 6,
            ..Default::default()
        }
    }

    #[test]
    fn generated_videos_read_back_exactly() {
        let cfg = video_cfg();
        let dir = tempfile::tempdir().expect("tempdir");
        write_dataset(dir.path(), &cfg).expect("write synthetic videos");
        let split = dir.path().join("train");
        let data =
            load_ytvis(&split.join("instances.json"), &split.join("JPEGImages")).expect("load");
        assert_eq!(data.num_videos(), 2);
        assert_eq!(data.labels().len(), crate::synth::CLASS_NAMES.len());
        let mut seen_tracks = HashSet::new();
        for v in 0..data.num_videos() {
            let generated = generate_video(&cfg, Split::Train, v);
            // Generator track index -> annotation id, which must not change over frames.
            let mut track_to_ann: HashMap<u64, u64> = HashMap::new();
            for (f, frame) in generated.frames.iter().enumerate() {
                let inst = data.frame_instances(v, f);
                assert_eq!(inst.len(), frame.objects.len(), "video {v} frame {f}");
                let labels: Vec<usize> = frame.objects.iter().map(|o| o.label).collect();
                assert_eq!(inst.classes(), &labels[..]);
                let masks = inst.masks().expect("masks").to_rles().expect("rles");
                let ids = inst.track_ids().expect("track ids");
                for (i, o) in frame.objects.iter().enumerate() {
                    assert_eq!(
                        hotcoco::mask::decode(&masks[i]),
                        o.mask,
                        "video {v} frame {f} object {i}"
                    );
                    let track = o.track_id.expect("video objects have track ids");
                    assert_eq!(*track_to_ann.entry(track).or_insert(ids[i]), ids[i]);
                    seen_tracks.insert(ids[i]);
                    let [x, y, w, h] = hotcoco::mask::to_bbox(&masks[i]);
                    let b = inst.boxes().as_slice()[i];
                    assert_eq!(b, [x as f32, y as f32, (x + w) as f32, (y + h) as f32]);
                }
                let img = data.load_frame(v, f).expect("frame decodes");
                assert_eq!(img.as_raw(), frame.rgb.as_raw(), "PNG frames are lossless");
            }
        }
        assert_eq!(
            seen_tracks.len(),
            data.dataset().annotations.len(),
            "every track shows up"
        );
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "videos": [{"id": 3, "width": 4, "height": 2, "length": 2,
                        "file_names": ["v/0.png", "v/1.png"]}],
            "annotations": [{"id": 9, "video_id": 3, "category_id": 5, "iscrowd": 0,
                             "segmentations": [null, {"size": [2, 4], "counts": [2, 2, 4]}],
                             "bboxes": [null, null], "areas": [null, 2.0]}],
            "categories": [{"id": 5, "name": "thing"}, {"id": 1, "name": "other"}]
        })
    }

    fn load_value(value: &serde_json::Value) -> Result<YtvisData, YtvisError> {
        let dataset: YtvisDataset =
            serde_json::from_value(value.clone()).expect("test JSON fits the schema");
        YtvisData::new(dataset, Path::new("in.json"), Path::new("frames"))
    }

    #[test]
    fn boxes_come_from_masks_when_absent_and_labels_are_sorted_by_id() {
        let data = load_value(&minimal()).expect("valid");
        assert!(data.frame_instances(0, 0).is_empty());
        let inst = data.frame_instances(0, 1);
        // Runs: 2 background, 2 foreground (column 1), rest background.
        assert_eq!(inst.boxes().as_slice(), &[[1.0, 0.0, 2.0, 2.0]]);
        assert_eq!(inst.classes(), &[1], "category 5 is the second by id");
        assert_eq!(inst.track_ids(), Some(&[9][..]));
        assert_eq!(data.frame_path(0, 1), Path::new("frames").join("v/1.png"));
    }

    fn invalid_message(edit: impl Fn(&mut serde_json::Value)) -> String {
        let mut v = minimal();
        edit(&mut v);
        let err = load_value(&v).expect_err("invalid file");
        let msg = err.to_string();
        assert!(msg.starts_with("in.json: "), "{msg}");
        msg
    }

    #[test]
    fn validation_names_the_record() {
        let m = invalid_message(|v| v["videos"][0]["length"] = 3.into());
        assert!(m.contains("video id 3") && m.contains("length 3"), "{m}");
        let m = invalid_message(|v| v["annotations"][0]["video_id"] = 4.into());
        assert!(
            m.contains("annotation id 9") && m.contains("video id 4"),
            "{m}"
        );
        let m = invalid_message(|v| v["annotations"][0]["category_id"] = 2.into());
        assert!(
            m.contains("annotation id 9") && m.contains("category id 2"),
            "{m}"
        );
        let m =
            invalid_message(|v| v["annotations"][0]["segmentations"] = serde_json::json!([null]));
        assert!(
            m.contains("annotation id 9") && m.contains("1 segmentations"),
            "{m}"
        );
        let m = invalid_message(|v| v["annotations"][0]["bboxes"] = serde_json::json!([null]));
        assert!(m.contains("1 bboxes"), "{m}");
        let m = invalid_message(|v| {
            v["annotations"][0]["segmentations"][1]["size"] = serde_json::json!([4, 2]);
        });
        assert!(
            m.contains("annotation id 9 frame 1") && m.contains("RLE size"),
            "{m}"
        );
        let m = invalid_message(|v| {
            v["annotations"][0]["segmentations"][1]["counts"] = serde_json::json!([2, 9]);
        });
        assert!(
            m.contains("annotation id 9 frame 1") && m.contains("bad mask"),
            "{m}"
        );
        let m =
            invalid_message(|v| v["annotations"][0]["bboxes"][0] = serde_json::json!([0, 0, 1, 1]));
        assert!(m.contains("box but no mask in frame 0"), "{m}");
        let m = invalid_message(|v| {
            v["annotations"][0]["bboxes"][1] = serde_json::json!([0, 0, -1, 1])
        });
        assert!(m.contains("invalid bbox"), "{m}");
        let m = invalid_message(|v| {
            let a = v["annotations"][0].clone();
            v["annotations"].as_array_mut().expect("array").push(a);
        });
        assert!(m.contains("annotation id 9 appears twice"), "{m}");
        let m = invalid_message(|v| v["categories"][1]["id"] = 5.into());
        assert!(m.contains("category id 5"), "{m}");
    }

    #[test]
    fn file_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = dir.path().join("bad.json");
        std::fs::write(&json, b"{\n  \"videos\": [,]\n}").expect("write");
        let msg = load_ytvis(&json, dir.path())
            .expect_err("malformed")
            .to_string();
        assert!(msg.contains("bad.json") && msg.contains("line 2"), "{msg}");
        let missing = dir.path().join("none.json");
        let msg = load_ytvis(&missing, dir.path())
            .expect_err("missing")
            .to_string();
        assert!(msg.contains("none.json"), "{msg}");

        std::fs::write(&json, serde_json::to_vec(&minimal()).expect("json")).expect("write");
        let data = load_ytvis(&json, dir.path()).expect("valid");
        let msg = data
            .load_frame(0, 0)
            .expect_err("no frame file")
            .to_string();
        assert!(msg.contains("0.png") && msg.contains("video id 3"), "{msg}");
        std::fs::create_dir_all(dir.path().join("v")).expect("mkdir");
        std::fs::write(dir.path().join("v/1.png"), b"not a png").expect("write");
        let err = data.load_frame(0, 1).expect_err("corrupt");
        assert!(
            matches!(err, YtvisError::CorruptFrame { frame: 1, .. }),
            "{err}"
        );
        image::RgbImage::new(3, 2)
            .save(dir.path().join("v/0.png"))
            .expect("write png");
        let err = data.load_frame(0, 0).expect_err("wrong size");
        assert!(err.to_string().contains("3x2"), "{err}");
    }
}
