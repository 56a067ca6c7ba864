//! The trust checks a plugin directory must pass before its entrypoint is run.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::plugin::manifest::Manifest;

/// Applies the trust checks to one candidate; returns the canonical entrypoint.
pub(super) fn trust(
    dir: &Path,
    manifest: &Manifest,
    approved: &[PathBuf],
    allow_symlinks: bool,
    warnings: &mut Vec<String>,
) -> Result<PathBuf, String> {
    let name = &manifest.name;
    let canon_dir = fs::canonicalize(dir)
        .map_err(|e| format!("plugin dir {} cannot be resolved: {e}", dir.display()))?;
    let dir_is_link = fs::symlink_metadata(dir)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if dir_is_link {
        if !allow_symlinks {
            return Err(format!(
                "plugin dir {} is a symlink to {} (refused: service.allow_symlinks is false)",
                dir.display(),
                canon_dir.display()
            ));
        }
        warnings.push(format!(
            "plugin `{name}`: plugin dir {} is a symlink to {} (allowed by service.allow_symlinks)",
            dir.display(),
            canon_dir.display()
        ));
    }
    if !approved.iter().any(|root| canon_dir.starts_with(root)) {
        return Err(format!(
            "plugin dir {} resolves to {}, outside every plugin root",
            dir.display(),
            canon_dir.display()
        ));
    }
    let dir_mode = fs::metadata(&canon_dir)
        .map_err(|e| format!("plugin dir {} cannot be read: {e}", dir.display()))?
        .permissions()
        .mode();
    if dir_mode & 0o002 != 0 {
        return Err(format!(
            "plugin dir {} is world-writable (mode {:o}; run chmod o-w on it)",
            dir.display(),
            dir_mode & 0o7777
        ));
    }

    if let Some(c) = &manifest.container {
        if c.pinning == crate::plugin::container::Pinning::MutableTag {
            warnings.push(format!(
                "plugin `{name}`: image `{}` is a mutable tag (allowed by allow_mutable_tag); what runs can change without the config changing",
                c.image
            ));
        }
        // The program is in the image; the directory is the build context.
        return Ok(canon_dir);
    }
    let rel = &manifest.entrypoint;
    let path = dir.join(rel);
    if let Err(e) = fs::symlink_metadata(&path) {
        return Err(if e.kind() == std::io::ErrorKind::NotFound {
            // A Rust plugin's entrypoint is its built binary: say how to get it.
            let hint = if dir.join("Cargo.toml").is_file() {
                " (a compiled plugin: `make build` builds it)"
            } else {
                ""
            };
            format!(
                "entrypoint `{rel}` does not exist in {}{hint}",
                dir.display()
            )
        } else {
            format!(
                "entrypoint `{rel}` in {} cannot be read: {e}",
                dir.display()
            )
        });
    }
    let canon = fs::canonicalize(&path).map_err(|e| {
        format!(
            "entrypoint `{rel}` in {} cannot be resolved: {e}",
            dir.display()
        )
    })?;
    // A symlink anywhere between the plugin dir and the file (the file itself or an
    // intermediate directory) makes the resolved path differ from the literal one.
    let literal: PathBuf = Path::new(rel)
        .components()
        .filter(|c| *c != Component::CurDir)
        .fold(canon_dir.clone(), |acc, c| acc.join(c));
    if canon != literal {
        if !allow_symlinks {
            return Err(format!(
                "entrypoint `{rel}` in {} is reached through a symlink (resolves to {}; refused: service.allow_symlinks is false)",
                dir.display(),
                canon.display()
            ));
        }
        warnings.push(format!(
            "plugin `{name}`: entrypoint `{rel}` resolves through a symlink to {} (allowed by service.allow_symlinks)",
            canon.display()
        ));
    }
    if !canon.starts_with(&canon_dir) {
        return Err(format!(
            "entrypoint `{rel}` resolves to {}, outside the plugin dir {}",
            canon.display(),
            canon_dir.display()
        ));
    }
    if !approved.iter().any(|root| canon.starts_with(root)) {
        return Err(format!(
            "entrypoint `{rel}` resolves to {}, outside every plugin root",
            canon.display()
        ));
    }
    let meta = fs::metadata(&canon).map_err(|e| {
        format!(
            "entrypoint `{rel}` in {} cannot be read: {e}",
            dir.display()
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "entrypoint `{rel}` in {} is not a regular file",
            dir.display()
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "entrypoint `{rel}` in {} is not executable (run chmod +x on it)",
            dir.display()
        ));
    }
    Ok(canon)
}

/// The name of a file in `dir` that looks like an entrypoint (`run*`, `main*`, or
/// any executable regular file), if there is one.
pub(super) fn entrypoint_like(dir: &Path) -> Option<String> {
    let mut names: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    names.into_iter().find_map(|(name, path)| {
        let meta = fs::metadata(&path).ok()?;
        if !meta.is_file() {
            return None;
        }
        let stem = name.split('.').next().unwrap_or_default();
        let looks = stem == "run" || stem == "main" || meta.permissions().mode() & 0o111 != 0;
        looks.then_some(name)
    })
}
