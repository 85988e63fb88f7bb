//! Dataset statistics (`kdet data stats`): images, instances per class, and the COCO
//! size histogram (small < 32², medium < 96², large; by mask area when there are masks,
//! else box area, as COCO's `area` field).

use std::fmt;

use crate::coco::CocoDataset;

/// COCO's area thresholds (pycocotools `Params.areaRng`).
pub const SMALL_MAX_AREA: f64 = 32.0 * 32.0;
pub const MEDIUM_MAX_AREA: f64 = 96.0 * 96.0;

/// Counts for one split.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SplitStats {
    pub name: String,
    pub images: usize,
    pub images_without_objects: usize,
    pub instances: usize,
    pub crowd: usize,
    /// `(class name, instances)` in label order.
    pub per_class: Vec<(String, usize)>,
    pub small: usize,
    pub medium: usize,
    pub large: usize,
    /// Mean instances per image.
    pub mean_per_image: f64,
}

impl SplitStats {
    /// Counts a COCO split (crowd regions are counted apart, not in the classes).
    pub fn from_coco(name: &str, ds: &CocoDataset) -> Result<Self, crate::DataError> {
        let mut s = SplitStats {
            name: name.to_string(),
            images: ds.len(),
            per_class: ds.labels().names().iter().map(|n| (n.clone(), 0)).collect(),
            ..Default::default()
        };
        for r in ds.records() {
            let inst = &r.instances;
            let areas: Vec<f64> = match inst.masks() {
                Some(m) => m
                    .areas()
                    .map_err(|e| crate::DataError::Structures {
                        context: format!("{}: image id {}", ds.json_path().display(), r.image_id),
                        source: e,
                    })?
                    .into_iter()
                    .map(|a| a as f64)
                    .collect(),
                None => inst.boxes().area().into_iter().map(f64::from).collect(),
            };
            let mut objects = 0;
            for (i, &area) in areas.iter().enumerate() {
                if inst.is_crowd(i) {
                    s.crowd += 1;
                    continue;
                }
                objects += 1;
                s.per_class[inst.classes()[i]].1 += 1;
                if area < SMALL_MAX_AREA {
                    s.small += 1;
                } else if area < MEDIUM_MAX_AREA {
                    s.medium += 1;
                } else {
                    s.large += 1;
                }
            }
            s.instances += objects;
            s.images_without_objects += usize::from(objects == 0);
        }
        s.mean_per_image = s.instances as f64 / s.images.max(1) as f64;
        Ok(s)
    }
}

impl fmt::Display for SplitStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "split {}", self.name)?;
        writeln!(
            f,
            "  images {:>8}   without objects {:>6}   instances {:>8}   per image {:.2}   crowd {}",
            self.images,
            self.images_without_objects,
            self.instances,
            self.mean_per_image,
            self.crowd
        )?;
        let pct = |n: usize| 100.0 * n as f64 / self.instances.max(1) as f64;
        writeln!(
            f,
            "  size   small (<32²) {:>7} ({:5.1}%)   medium {:>7} ({:5.1}%)   large (≥96²) {:>7} ({:5.1}%)",
            self.small,
            pct(self.small),
            self.medium,
            pct(self.medium),
            self.large,
            pct(self.large)
        )?;
        writeln!(f, "  {:<20} {:>9} {:>7}", "class", "instances", "share")?;
        for (name, n) in &self.per_class {
            writeln!(f, "  {:<20} {:>9} {:>6.1}%", name, n, pct(*n))?;
        }
        Ok(())
    }
}

/// Counts for one YouTube-VIS split.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct VideoStats {
    pub name: String,
    pub videos: usize,
    pub frames: usize,
    pub tracks: usize,
    /// Frames in which some track is visible, summed over tracks.
    pub visible_instances: usize,
    /// Tracks that are absent in at least one frame (they enter, leave or are occluded).
    pub tracks_with_gaps: usize,
    /// `(class name, tracks)` in label order.
    pub per_class: Vec<(String, usize)>,
}

impl VideoStats {
    /// Counts a YouTube-VIS split.
    pub fn from_ytvis(name: &str, data: &crate::ytvis::YtvisData) -> Self {
        let mut s = VideoStats {
            name: name.to_string(),
            videos: data.num_videos(),
            frames: data.videos().iter().map(|v| v.length).sum(),
            per_class: data
                .labels()
                .names()
                .iter()
                .map(|n| (n.clone(), 0))
                .collect(),
            ..Default::default()
        };
        for ann in &data.dataset().annotations {
            s.tracks += 1;
            let visible = ann.segmentations.iter().filter(|m| m.is_some()).count();
            s.visible_instances += visible;
            s.tracks_with_gaps += usize::from(visible < ann.segmentations.len());
            if let Some(label) = data.labels().label(ann.category_id) {
                s.per_class[label].1 += 1;
            }
        }
        s
    }
}

impl fmt::Display for VideoStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "split {} (video)", self.name)?;
        writeln!(
            f,
            "  videos {:>6}   frames {:>7}   tracks {:>6}   visible instances {:>7}   tracks entering/leaving/occluded {:>5}",
            self.videos, self.frames, self.tracks, self.visible_instances, self.tracks_with_gaps
        )?;
        writeln!(f, "  {:<20} {:>7}", "class", "tracks")?;
        for (name, n) in &self.per_class {
            writeln!(f, "  {:<20} {:>7}", name, n)?;
        }
        Ok(())
    }
}
