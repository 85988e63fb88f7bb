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

/// Writes `bytes` to `path` atomically and durably; the one helper every file a later
/// stage trusts goes through (checkpoints and their sidecars, `eval.json`, summaries,
/// metrics, predictions, the synthetic dataset).
///
/// `tempfile`'s named temporary file in the same directory receives the bytes, is flushed
/// to disk (`fsync`), then renamed over `path` (`persist`), and the directory is synced so
/// the rename itself survives a crash. A reader never sees a half-written file; a killed
/// writer leaves the old file (or none) and at worst a `.tmp` file that is never read. On
/// failure the error names the path that failed.
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
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| (dir.to_path_buf(), e))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| (tmp_path, e))?;
    // On error `persist` hands the file back; dropping it removes the temporary.
    tmp.persist(path)
        .map_err(|e| (path.to_path_buf(), e.error))?;
    sync_dir(dir).map_err(|e| (dir.to_path_buf(), e))
}

/// Makes a rename in `dir` durable (a no-op where directories cannot be opened, e.g. on
/// Windows).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// [`write_atomic_io`] with a [`DataError`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    write_atomic_io(path, bytes).map_err(|(p, e)| DataError::io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/eval.json");
        write_atomic_io(&path, b"first").expect("write");
        write_atomic_io(&path, b"second, longer").expect("overwrite");
        assert_eq!(fs::read(&path).expect("read"), b"second, longer");
        let names: Vec<String> = fs::read_dir(path.parent().expect("parent"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["eval.json"], "no temporary left behind");
    }

    #[test]
    fn atomic_write_error_names_the_failing_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").expect("write");
        // The parent "directory" is a file: creating it fails and names it.
        let (failed, _) = write_atomic_io(&blocker.join("eval.json"), b"{}").expect_err("fails");
        assert_eq!(failed, blocker);
        assert_eq!(
            fs::read(&blocker).expect("read"),
            b"x",
            "nothing overwritten"
        );
    }
}
