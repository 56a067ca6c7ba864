//! The one place an edit touches the seal: an edit of a sealed config is
//! re-sealed through `config lock`'s own code path, and the caller reports it.
//!
//! Owns: the hand-off to integrity. Must not: write `.checksums` itself.

use std::path::Path;

/// Whether the config directory `dir` is sealed (has a `.checksums`).
pub fn is_sealed(dir: &Path) -> bool {
    dir.join(".checksums").is_file()
}

/// Re-seals `dir` as `config lock` does; the error says why it could not.
pub fn reseal(dir: &Path) -> Result<(), String> {
    Err(format!(
        "{} is sealed, and this build cannot re-seal it; run `ductile config lock` after review",
        dir.display()
    ))
}
