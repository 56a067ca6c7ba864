//! Writing an edit: every changed file gets a `.bak` of its old bytes and its
//! new bytes by atomic rename; then the whole config is loaded again as the
//! daemon would. An edit that fails to load, or adds a finding, is undone: the
//! old bytes go back (by rename again) and no `.bak` of this edit remains, so
//! a refused edit leaves every file as it was. A sealed config is re-sealed
//! after a good edit, through `config lock`'s path, and the caller says so.
//!
//! Owns: the write, validate, restore sequence. Must not: decide what to edit.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::EditError;
use super::redact;
use super::seal;
use crate::runtime::Runtime;

/// One file's change: `before` is `None` for a new file, `after` `None` to delete it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The file.
    pub path: PathBuf,
    /// Its bytes now, if it exists.
    pub before: Option<Vec<u8>>,
    /// Its bytes after the edit, if it is kept.
    pub after: Option<Vec<u8>>,
    /// Permission bits of a new file (an existing file keeps its own).
    pub mode: u32,
}

impl Change {
    /// A change of an existing (or new, when `before` is `None`) text file.
    pub fn text(path: PathBuf, before: Option<&str>, after: &str) -> Change {
        Change {
            path,
            before: before.map(|b| b.as_bytes().to_vec()),
            after: Some(after.as_bytes().to_vec()),
            mode: 0o644,
        }
    }
}

/// What a written edit did besides the files.
#[derive(Debug, Default)]
pub struct Written {
    /// The `.bak` files holding the old bytes.
    pub backups: Vec<PathBuf>,
    /// Whether `.checksums` was rewritten (`config lock`).
    pub resealed: bool,
}

/// A unified diff of `changes` (secrets masked), for `--dry-run` and reports.
pub fn diff(changes: &[Change], dir: &Path, known: &[String]) -> String {
    let mut out = String::new();
    for c in changes {
        let name = c
            .path
            .strip_prefix(dir)
            .unwrap_or(&c.path)
            .display()
            .to_string();
        let before = c
            .before
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let after = c
            .after
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if before == after {
            continue;
        }
        let old: Vec<&str> = before.lines().collect();
        let new: Vec<&str> = after.lines().collect();
        let head = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
        let tail = old[head..]
            .iter()
            .rev()
            .zip(new[head..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let from = head.saturating_sub(2);
        let old_to = (old.len() - tail + 2).min(old.len());
        let new_to = (new.len() - tail + 2).min(new.len());
        out.push_str(&format!(
            "--- {}\n+++ {}\n",
            if c.before.is_some() {
                format!("a/{name}")
            } else {
                "/dev/null".into()
            },
            if c.after.is_some() {
                format!("b/{name}")
            } else {
                "/dev/null".into()
            },
        ));
        out.push_str(&format!(
            "@@ -{},{} +{},{} @@\n",
            from + 1,
            old_to - from,
            from + 1,
            new_to - from
        ));
        let mut push = |mark: char, l: &str| {
            out.push(mark);
            out.push_str(&redact::line(l, known));
            out.push('\n');
        };
        for l in &old[from..head] {
            push(' ', l);
        }
        for l in &old[head..old.len() - tail] {
            push('-', l);
        }
        for l in &new[head..new.len() - tail] {
            push('+', l);
        }
        for l in &old[old.len() - tail..old_to] {
            push(' ', l);
        }
    }
    out
}

/// Loads the config at `root` as the daemon would: its warnings, or why it cannot run.
pub fn validate(root: &Path) -> Result<Vec<String>, String> {
    Runtime::load(root)
        .map(|rt| rt.warnings)
        .map_err(|e| e.to_string())
}

/// Writes `changes`, revalidates the config rooted at `root`, and undoes
/// everything when the result does not load or has findings the config
/// before did not have.
pub fn write(root: &Path, changes: &[Change]) -> Result<Written, EditError> {
    let dir = root.parent().unwrap_or(Path::new("/")).to_path_buf();
    // One edit at a time per config directory; the lock goes with the handle.
    let guard = fs::File::open(&dir).map_err(|source| EditError::Io {
        file: dir.clone(),
        action: "open",
        source,
    })?;
    match crate::sys::try_flock(&guard) {
        Ok(true) => {}
        Ok(false) => {
            return Err(EditError::Busy {
                message: format!(
                    "another config edit is in progress in {}; run the command again",
                    dir.display()
                ),
            });
        }
        Err(source) => {
            return Err(EditError::Io {
                file: dir,
                action: "lock",
                source,
            });
        }
    }
    // The edit was computed from the bytes read earlier; a file changed since
    // (by hand or by another edit) would be overwritten blind.
    for c in changes {
        let now = fs::read(&c.path).ok();
        if now != c.before {
            return Err(EditError::Busy {
                message: format!(
                    "{} changed since it was read; run the command again",
                    c.path.display()
                ),
            });
        }
    }
    let sealed = seal::is_sealed(&dir);
    let before: Vec<String> = validate(root).unwrap_or_default();
    let mut undo = Undo::default();
    let result = write_all(changes, &mut undo).and_then(|backups| {
        let after = validate(root).map_err(|message| EditError::Refused { message })?;
        let new: Vec<&String> = after.iter().filter(|w| !before.contains(w)).collect();
        if !new.is_empty() {
            let list: Vec<&str> = new.iter().map(|s| s.as_str()).collect();
            return Err(EditError::Refused {
                message: format!("the edit adds findings: {}", list.join("; ")),
            });
        }
        let resealed = if sealed {
            seal::reseal(&dir).map_err(|message| EditError::Seal { message })?;
            true
        } else {
            false
        };
        Ok(Written { backups, resealed })
    });
    let result = match result {
        Ok(w) => Ok(w),
        Err(e) => {
            undo.run();
            Err(e)
        }
    };
    drop(guard);
    result
}

/// What to put back if the edit is refused, newest first.
#[derive(Default)]
struct Undo {
    steps: Vec<(PathBuf, Option<Vec<u8>>, u32)>,
}

impl Undo {
    fn remember(&mut self, path: &Path) -> io::Result<()> {
        match fs::read(path) {
            Ok(bytes) => {
                let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
                self.steps.push((path.to_path_buf(), Some(bytes), mode));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.steps.push((path.to_path_buf(), None, 0));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn run(self) {
        for (path, bytes, mode) in self.steps.into_iter().rev() {
            // Best effort: a failure here leaves the `.bak` to recover from,
            // and the error the caller reports already names the edit.
            match bytes {
                Some(b) => {
                    let _ = atomic_write(&path, &b, mode);
                }
                None => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

fn write_all(changes: &[Change], undo: &mut Undo) -> Result<Vec<PathBuf>, EditError> {
    let io_err = |file: &Path, action: &'static str| {
        let file = file.to_path_buf();
        move |source| EditError::Io {
            file,
            action,
            source,
        }
    };
    let mut backups = Vec::new();
    for c in changes {
        let mode = match fs::metadata(&c.path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(_) => c.mode,
        };
        if let Some(old) = &c.before {
            let bak = backup_path(&c.path);
            undo.remember(&bak).map_err(io_err(&bak, "read"))?;
            atomic_write(&bak, old, mode).map_err(io_err(&bak, "write"))?;
            backups.push(bak);
        }
        undo.remember(&c.path).map_err(io_err(&c.path, "read"))?;
        if let Some(parent) = c.path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent, "create"))?;
        }
        match &c.after {
            Some(bytes) => atomic_write(&c.path, bytes, mode).map_err(io_err(&c.path, "write"))?,
            None => match fs::remove_file(&c.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&c.path, "remove")(e)),
            },
        }
    }
    Ok(backups)
}

/// `<file>.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Writes `bytes` to a temp file beside `path`, syncs it and renames it over
/// `path`: a reader sees the old file or the new one, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename is durable only once the directory is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ductile-commit-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("config.yaml"), "service:\n  name: x # keep\n").unwrap();
        dir
    }

    fn change(dir: &Path, before: &str, after: &str) -> Change {
        Change::text(dir.join("config.yaml"), Some(before), after)
    }

    #[test]
    fn a_good_edit_is_written_with_a_backup() {
        let dir = scratch("good");
        let old = "service:\n  name: x # keep\n";
        let w = write(
            &dir.join("config.yaml"),
            &[change(&dir, old, "service:\n  name: y # keep\n")],
        )
        .unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("config.yaml")).unwrap(),
            "service:\n  name: y # keep\n"
        );
        assert_eq!(w.backups, vec![dir.join("config.yaml.bak")]);
        assert_eq!(
            fs::read_to_string(dir.join("config.yaml.bak")).unwrap(),
            old
        );
        assert!(!w.resealed);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refused_or_stale_edit_leaves_every_byte() {
        let dir = scratch("refused");
        let old = "service:\n  name: x # keep\n";
        let err = write(
            &dir.join("config.yaml"),
            &[change(&dir, old, "service:\n  max_workers: 0\n")],
        )
        .unwrap_err();
        assert!(matches!(err, EditError::Refused { .. }), "{err}");
        let stale = write(
            &dir.join("config.yaml"),
            &[change(&dir, "other", "service: {}\n")],
        )
        .unwrap_err();
        assert!(
            stale
                .to_string()
                .ends_with("changed since it was read; run the command again"),
            "{stale}"
        );
        assert_eq!(fs::read_to_string(dir.join("config.yaml")).unwrap(), old);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("config.yaml")]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_diff_masks_secrets() {
        let dir = Path::new("/c");
        let c = Change::text(
            dir.join("t.yaml"),
            Some("a: 1\nkey: old\nb: 2\n"),
            "a: 1\nkey: new\nb: 2\n",
        );
        assert_eq!(
            diff(&[c], dir, &[]),
            "--- a/t.yaml\n+++ b/t.yaml\n@@ -1,3 +1,3 @@\n a: 1\n-key: [REDACTED]\n+key: [REDACTED]\n b: 2\n"
        );
    }
}
