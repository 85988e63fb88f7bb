//! Reading and writing image files with errors that name the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::DataError;

/// Decodes an image file (PNG or JPEG, any colour type) to 8-bit RGB.
///
/// A missing file and an undecodable one are different errors, both naming the path and
/// the image id they were read for.
pub fn read_rgb(path: &Path, image_id: u64) -> Result<RgbImage, DataError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::MissingImage {
                path: path.to_path_buf(),
                image_id,
            });
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    let img = image::load_from_memory(&bytes).map_err(|e| DataError::CorruptImage {
        path: path.to_path_buf(),
        image_id,
        message: e.to_string(),
    })?;
    Ok(img.to_rgb8())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, then a
/// rename, so a reader never sees a half-written file and a killed writer leaves the old
/// file (or none) in place. On failure the error names the path that failed.
pub fn write_atomic_io(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        Ok(())
    };
    write().map_err(|e| (tmp.clone(), e))?;
    fs::rename(&tmp, path).map_err(|e| {
        // Best effort: do not leave the temporary behind; the rename error is the one to report.
        let _ = fs::remove_file(&tmp);
        (path.to_path_buf(), e)
    })
}

/// [`write_atomic_io`] with a [`DataError`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_atomic_io(path, bytes).map_err(|(p, e)| DataError::io(p, e))
}
