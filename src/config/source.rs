//! Reading one config or `.env` file under the file rules: regular files only,
//! a size cap per file and for the whole tree, UTF-8 text, a leading byte order
//! mark accepted.
//!
//! A FIFO would block the reader forever and `/dev/zero` would grow memory until
//! allocation fails, so the type is checked before opening, the file is opened
//! non-blocking (a FIFO swapped in after the check cannot block either) and
//! checked again through the open handle, and at most one byte more than the cap
//! is ever read.
//!
//! Owns: file IO of config text. Must not: parse anything.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{ConfigError, ErrorKind};

/// The largest config or `.env` file read (1 MiB).
pub(super) const FILE_LIMIT: u64 = 1024 * 1024;

/// The most bytes read for one config tree, every file together (4 MiB).
pub(super) const TREE_LIMIT: u64 = 4 * 1024 * 1024;

/// The byte order mark some editors write at the start of UTF-8 files.
const BOM: char = '\u{feff}';

/// One file's bytes, as read.
pub(super) struct Text {
    /// `blake3:<hex>` of the raw bytes (byte order mark included).
    pub(super) hash: String,
    /// The text, without a leading byte order mark.
    pub(super) text: String,
}

/// How much of the tree's byte allowance is left.
pub(super) struct Allowance {
    left: u64,
}

impl Allowance {
    /// The allowance of one tree.
    pub(super) fn new() -> Allowance {
        Allowance { left: TREE_LIMIT }
    }
}

/// Why a file could not be opened at all; the caller words "does not exist"
/// for its own context (an include entry, the root).
pub(super) enum Unreadable {
    /// Nothing at the path.
    NotFound,
    /// Something else went wrong; the error says what.
    Error(ConfigError),
}

/// Reads `path` under the file rules, charging its size to `allowance`.
pub(super) fn read(path: &Path, allowance: &mut Allowance) -> Result<Text, Unreadable> {
    let fail = |kind: ErrorKind| Unreadable::Error(ConfigError::in_file(path.to_path_buf(), kind));
    let metadata = fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Unreadable::NotFound,
        _ => fail(ErrorKind::Read { source }),
    })?;
    if !metadata.is_file() {
        return Err(fail(ErrorKind::NotRegularFile));
    }
    let file = open_nonblocking(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Unreadable::NotFound,
        _ => fail(ErrorKind::Read { source }),
    })?;
    let opened = file
        .metadata()
        .map_err(|source| fail(ErrorKind::Read { source }))?;
    if !opened.is_file() {
        return Err(fail(ErrorKind::NotRegularFile));
    }
    let mut bytes = Vec::new();
    file.take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| fail(ErrorKind::Read { source }))?;
    let size = bytes.len() as u64;
    if size > FILE_LIMIT {
        return Err(fail(ErrorKind::FileTooLarge { limit: FILE_LIMIT }));
    }
    if size > allowance.left {
        return Err(fail(ErrorKind::TreeTooLarge { limit: TREE_LIMIT }));
    }
    allowance.left -= size;
    let hash = format!("blake3:{}", blake3::hash(&bytes).to_hex());
    let mut text = String::from_utf8(bytes).map_err(|_| fail(ErrorKind::NotUtf8))?;
    if text.starts_with(BOM) {
        text.drain(..BOM.len_utf8());
    }
    Ok(Text { hash, text })
}

/// Reads the regular file at `path`, at most `limit` bytes, for files checked
/// against a pin rather than parsed as config (scope files). The error is a
/// short reason for a message that names the file.
pub(super) fn read_pinned(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let reason = |error: io::Error| match error.kind() {
        io::ErrorKind::NotFound => "it does not exist".to_string(),
        _ => error.to_string(),
    };
    let not_regular = || "it is not a regular file".to_string();
    if !fs::metadata(path).map_err(reason)?.is_file() {
        return Err(not_regular());
    }
    let file = open_nonblocking(path).map_err(reason)?;
    if !file.metadata().map_err(reason)?.is_file() {
        return Err(not_regular());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(reason)?;
    if bytes.len() as u64 > limit {
        return Err(format!("it is larger than {} KiB", limit / 1024));
    }
    Ok(bytes)
}

/// Opens for reading without blocking on a FIFO and without leaking the
/// descriptor into plugin processes.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::temp_tree::TempTree;

    #[test]
    fn opening_a_fifo_does_not_wait_for_a_writer() {
        let tree = TempTree::new();
        let fifo = tree.path("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // A blocking open would wait here for a writer forever; the check
        // through the handle then refuses it.
        let file = open_nonblocking(&fifo).unwrap();
        assert!(!file.metadata().unwrap().is_file());
    }

    #[test]
    fn reads_charge_the_tree_allowance() {
        let tree = TempTree::new();
        let path = tree.write("a.yaml", "\u{feff}a: 1\n");
        let mut allowance = Allowance::new();
        let Ok(text) = read(&path, &mut allowance) else {
            panic!("readable");
        };
        assert_eq!(text.text, "a: 1\n");
        assert_eq!(allowance.left, TREE_LIMIT - 8);
        assert!(matches!(
            read(&tree.path("none"), &mut allowance),
            Err(Unreadable::NotFound)
        ));
    }
}
