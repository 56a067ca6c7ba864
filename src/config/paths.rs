//! Configured paths: `~` expansion, relative paths joined to the directory that
//! declares them, `.` and `..` removed lexically.

use std::path::{Component, Path, PathBuf};

/// Resolves a configured path: `~` expanded, relative paths joined to `base`,
/// `.` and `..` removed lexically (the path may not exist yet).
pub(super) fn resolve_path(base: &Path, entry: &str) -> Result<PathBuf, String> {
    let expanded = if entry == "~" || entry.starts_with("~/") {
        let home = std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .ok_or_else(|| format!("cannot expand `~` in `{entry}`: HOME is not set"))?;
        PathBuf::from(home).join(entry[1..].trim_start_matches('/'))
    } else {
        PathBuf::from(entry)
    };
    Ok(normalize(&base.join(expanded)))
}

/// Removes `.` and resolves `..` without touching the filesystem.
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_lexically() {
        assert_eq!(
            resolve_path(Path::new("/etc/d"), "./a/../b").unwrap(),
            Path::new("/etc/d/b")
        );
        assert_eq!(
            resolve_path(Path::new("/etc/d"), "/abs").unwrap(),
            Path::new("/abs")
        );
    }
}
