//! Which files of a directory tree go into an archive: every regular file,
//! in sorted order, except what is rebuilt elsewhere or not ours to keep
//! (version control, dependency installs, virtualenvs, bytecode), links
//! (never followed), and what the caller names (the ledger, plugin roots).

use std::path::{Path, PathBuf};

use super::BackupError;
use super::manifest::Excluded;

/// Prefix of the temporary files and directories a backup or restore makes.
pub(super) const WORK_PREFIX: &str = ".ductile-";

/// A file to archive.
#[derive(Debug, Clone)]
pub(super) struct Found {
    /// Where it is.
    pub(super) path: PathBuf,
    /// Its path relative to the walked root, `/`-separated.
    pub(super) rel: String,
}

/// Why a directory entry named `name` is left out, by its name alone.
pub(super) fn excluded_by_name(name: &str, is_dir: bool) -> Option<&'static str> {
    if is_dir {
        return match name {
            ".git" | ".hg" | ".svn" => Some("version-control metadata"),
            "node_modules" => Some("installed dependencies (reinstall them from the lockfile)"),
            ".venv" | "venv" => Some("a Python virtual environment (recreate it)"),
            "__pycache__" => Some("Python bytecode cache"),
            _ if name.starts_with(WORK_PREFIX) => Some("a backup or restore in progress"),
            _ => None,
        };
    }
    if name == ".DS_Store" {
        Some("Finder metadata")
    } else if name.ends_with(".pyc") || name.ends_with(".pyo") {
        Some("Python bytecode")
    } else if name.ends_with(super::PRE_RESTORE) {
        Some("a file an earlier restore replaced")
    } else if name.starts_with(WORK_PREFIX) {
        Some("a backup or restore in progress")
    } else {
        None
    }
}

/// Walks `root`, adding its files to `found` and what it leaves out to
/// `excluded`; `special` names paths to leave out for the caller's reasons.
pub(super) fn walk(
    root: &Path,
    special: &dyn Fn(&Path) -> Option<String>,
    found: &mut Vec<Found>,
    excluded: &mut Vec<Excluded>,
) -> Result<(), BackupError> {
    walk_dir(root, "", special, found, excluded)
}

fn walk_dir(
    dir: &Path,
    rel: &str,
    special: &dyn Fn(&Path) -> Option<String>,
    found: &mut Vec<Found>,
    excluded: &mut Vec<Excluded>,
) -> Result<(), BackupError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        // A subdirectory removed since its parent was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(BackupError::io(dir, "list the directory")(e)),
    };
    let mut names: Vec<std::ffi::OsString> = listing
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(BackupError::io(dir, "list the directory"))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let leave = |reason: String, excluded: &mut Vec<Excluded>| {
            excluded.push(Excluded {
                path: path.clone(),
                reason,
            });
        };
        let Some(text) = name.to_str() else {
            leave("its name is not UTF-8".into(), excluded);
            continue;
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Gone since the listing (a plugin's scratch file): nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(BackupError::io(&path, "inspect")(e)),
        };
        let child_rel = if rel.is_empty() {
            text.to_string()
        } else {
            format!("{rel}/{text}")
        };
        if let Some(reason) = special(&path) {
            leave(reason, excluded);
        } else if meta.file_type().is_symlink() {
            leave("a symbolic link (not followed)".into(), excluded);
        } else if let Some(reason) = excluded_by_name(text, meta.is_dir()) {
            leave(reason.into(), excluded);
        } else if meta.is_dir() {
            walk_dir(&path, &child_rel, special, found, excluded)?;
        } else if meta.is_file() {
            found.push(Found {
                path,
                rel: child_rel,
            });
        } else {
            leave("not a regular file".into(), excluded);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_clutter_is_left_out_by_name() {
        assert_eq!(
            excluded_by_name(".git", true),
            Some("version-control metadata")
        );
        assert!(excluded_by_name("node_modules", true).is_some());
        assert!(excluded_by_name("venv", true).is_some());
        assert!(excluded_by_name("__pycache__", true).is_some());
        assert!(excluded_by_name("x.pyc", false).is_some());
        assert!(excluded_by_name("config.yaml.pre-restore", false).is_some());
        assert_eq!(excluded_by_name("venv", false), None, "a file called venv");
        assert_eq!(excluded_by_name("run.sh", false), None);
    }

    #[test]
    fn a_walk_is_sorted_and_skips_links_and_special_paths() {
        let tmp = crate::store::testing::TempDir::new("backup-walk");
        let root = &tmp.0;
        std::fs::create_dir_all(root.join("b/.git")).unwrap();
        std::fs::write(root.join("b/.git/HEAD"), "x").unwrap();
        std::fs::write(root.join("b/z.yaml"), "z").unwrap();
        std::fs::write(root.join("a.yaml"), "a").unwrap();
        std::fs::write(root.join("secret.db"), "s").unwrap();
        std::os::unix::fs::symlink(root.join("a.yaml"), root.join("link")).unwrap();
        let db = root.join("secret.db");
        let special = move |p: &Path| (p == db).then(|| "the ledger".to_string());
        let (mut found, mut excluded) = (Vec::new(), Vec::new());
        walk(root, &special, &mut found, &mut excluded).unwrap();
        let rels: Vec<&str> = found.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(rels, ["a.yaml", "b/z.yaml"]);
        let reasons: Vec<&str> = excluded.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "version-control metadata",
                "a symbolic link (not followed)",
                "the ledger"
            ]
        );
    }
}
