//! The one place an edit touches the seal: an edit of a sealed config is
//! re-sealed through `config lock`'s own code path (`integrity::lock`), and
//! the caller reports it; `config init` seals its starter the same way.
//!
//! Owns: the hand-off to integrity. Must not: write `.checksums` itself.

use std::path::Path;

use crate::config::integrity;

/// Whether the config directory `dir` is sealed (has a `.checksums`).
pub fn is_sealed(dir: &Path) -> bool {
    integrity::is_sealed(dir)
}

/// Seals `dir` as `config lock` does; the error says why it could not.
pub fn reseal(dir: &Path) -> Result<integrity::LockReport, String> {
    integrity::lock(dir, false).map_err(|e| format!("cannot re-seal {}: {e}", dir.display()))
}
