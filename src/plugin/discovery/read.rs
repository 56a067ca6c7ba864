//! Reading a manifest without trusting its path: what is there must be a regular
//! file within the size cap before a byte of it is read.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::MAX_MANIFEST_BYTES;

/// Reads a manifest without trusting the path: only a regular file, never one
/// larger than [`MAX_MANIFEST_BYTES`], and opened non-blocking so a FIFO that
/// replaced the file after the check cannot hang discovery.
pub(super) fn read_manifest(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let check = |meta: &fs::Metadata| -> Result<(), String> {
        if !meta.is_file() {
            return Err(format!(
                "{} is not a regular file (it is {}); it is not read",
                path.display(),
                file_kind(meta)
            ));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(too_big(path, meta.len()));
        }
        Ok(())
    };
    check(&fs::metadata(path).map_err(cannot)?)?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    check(&file.metadata().map_err(cannot)?)?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    // The file may have grown between the check and the read.
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_big(path, text.len() as u64));
    }
    Ok(text)
}

fn too_big(path: &Path, size: u64) -> String {
    format!(
        "{} is {size} bytes, over the {} KiB limit for a manifest; it is not read",
        path.display(),
        MAX_MANIFEST_BYTES / 1024
    )
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a file"
    }
}
