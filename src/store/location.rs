//! Where the ledger lives, checked before SQLite touches it: the state directory
//! exists (created 0700) and this user can write it and the files in it, and a
//! file already at `state.path` is a ductile ledger (or empty). A foreign file is
//! refused without a byte of it, or of its directory, changing.

use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::schema::{self, Kind};

/// The state directory or a ledger file that this process may not write.
#[derive(Debug)]
pub struct NotWritable {
    /// The directory or file.
    pub path: PathBuf,
    /// "state directory", "database file", ...
    pub what: &'static str,
    /// Why, from its owner and mode or the file system.
    pub reason: String,
}

impl fmt::Display for NotWritable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} is not writable by {}: {}; give that user write access or point state.path at a directory it owns",
            self.what,
            self.path.display(),
            current_user(),
            self.reason
        )
    }
}

/// Makes sure the state directory and the database file can be used: creates
/// the directory (0700) and the file (0600) when missing, and refuses with the
/// path, the user and the reason when they cannot be written.
pub fn prepare(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        if let Err(source) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            let ancestor = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
            if let Some(denied) = check_writable(ancestor, "parent directory")? {
                return Err(denied);
            }
            return Err(StoreError::Io {
                path: dir.display().to_string(),
                op: "create the state directory",
                source,
            });
        }
    }
    if let Some(denied) = check_writable(dir, "state directory")? {
        return Err(denied);
    }
    for (file, what) in [
        (path.to_path_buf(), "database file"),
        (side_file(path, "-wal"), "write-ahead log"),
        (side_file(path, "-shm"), "shared-memory file"),
    ] {
        if file.exists() {
            if let Some(denied) = check_writable(&file, what)? {
                return Err(denied);
            }
        }
    }
    if !path.exists() {
        // Create the file ourselves so it is 0600 from its first byte; SQLite would
        // create it with the umask's permissions.
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| StoreError::Io {
                path: path.display().to_string(),
                op: "create the database file",
                source,
            })?;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

/// Whether the database file has no content yet: no bytes, and no WAL that
/// could hold some.
pub(super) fn is_new(path: &Path) -> bool {
    let len = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    len(path) == 0 && len(&side_file(path, "-wal")) == 0
}

/// `<path><suffix>`, e.g. the `-wal` beside a database.
pub(crate) fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `None` when `path` is writable by us; the refusal otherwise.
fn check_writable(path: &Path, what: &'static str) -> Result<Option<StoreError>, StoreError> {
    let Some(errno) = crate::sys::write_denied(path) else {
        return Ok(None);
    };
    let reason = if errno == libc::EROFS {
        "it is on a read-only file system".to_string()
    } else {
        match fs::metadata(path) {
            Ok(m) => format!(
                "it is owned by {} with mode {:04o}",
                user_name(m.uid()),
                m.permissions().mode() & 0o7777
            ),
            Err(e) => e.to_string(),
        }
    };
    Ok(Some(StoreError::NotWritable(Box::new(NotWritable {
        path: path.to_path_buf(),
        what,
        reason,
    }))))
}

/// "user alice (uid 1000)" for the effective user of this process.
fn current_user() -> String {
    format!("user {}", user_name(crate::sys::euid()))
}

/// "alice (uid 1000)", or "uid 1000" when `/etc/passwd` does not name it.
fn user_name(uid: u32) -> String {
    let name = fs::read_to_string("/etc/passwd").ok().and_then(|text| {
        text.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?;
            (id.parse::<u32>().ok() == Some(uid)).then(|| name.to_string())
        })
    });
    match name {
        Some(n) => format!("{n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// Refuses an open database that is not a ductile ledger (or empty), before
/// anything has changed it: the caller has only opened it. SQLite reads a
/// file lazily, so a file that is not SQLite at all shows here too.
pub(super) fn refuse_foreign(conn: &Connection, path: &Path) -> Result<Kind, StoreError> {
    let not_ours = |detail: String| StoreError::NotALedger {
        path: path.display().to_string(),
        detail,
    };
    match schema::classify(conn) {
        Ok(kind) => match kind.refusal(&path.display().to_string()) {
            // A newer ledger is ours: its version is judged (and refused) later.
            Some(refused) if matches!(kind, Kind::Foreign(_)) => Err(refused),
            _ => Ok(kind),
        },
        Err(StoreError::Sqlite {
            source: rusqlite::Error::SqliteFailure(e, _),
            ..
        }) if e.code == rusqlite::ErrorCode::NotADatabase => {
            Err(not_ours("not a SQLite database".to_string()))
        }
        Err(e) => Err(e),
    }
}

/// [`refuse_foreign`] for a read-only connection, which (unlike a read-write
/// one) leaves a `-wal` and `-shm` behind on a WAL-mode file: those are
/// removed again when the file turns out not to be ours.
pub(super) fn refuse_foreign_read_only(path: &Path) -> Result<Kind, StoreError> {
    let sides = [side_file(path, "-wal"), side_file(path, "-shm")];
    let existed = sides.clone().map(|p| p.exists());
    let verdict = {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::sqlite(format!("open {}", path.display()), e))?;
        refuse_foreign(&conn, path)
    };
    if verdict.is_err() {
        for (side, existed) in sides.iter().zip(existed) {
            let empty_wal = !side.to_string_lossy().ends_with("-wal")
                || fs::metadata(side).is_ok_and(|m| m.len() == 0);
            if !existed && empty_wal {
                let _ = fs::remove_file(side);
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TempDir;

    fn digest(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    #[test]
    fn a_foreign_wal_database_stays_byte_identical_and_leaves_nothing_behind() {
        let tmp = TempDir::new("foreign-wal");
        let path = tmp.0.join("other.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('x'); PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let before = digest(&path);
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let listing = names(&tmp.0);
        let err = crate::store::open(&path, crate::config::Synchronous::Normal)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{} is not a ductile ledger: a SQLite database of another application (1 table(s), user_version 1, no job_queue/job_log); point state.path at a new file or at an existing ductile ledger",
                path.display()
            )
        );
        assert_eq!(digest(&path), before, "byte-identical");
        assert_eq!(names(&tmp.0), listing, "no -wal or -shm left behind");
    }

    #[test]
    fn unrelated_files_are_refused_untouched() {
        let tmp = TempDir::new("header");
        let other = tmp.0.join("app.db");
        {
            let c = Connection::open(&other).unwrap();
            c.execute_batch("PRAGMA application_id = 1234; CREATE TABLE t (a);")
                .unwrap();
        }
        let before = digest(&other);
        let err = crate::store::open(&other, crate::config::Synchronous::Normal)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(application_id 0x000004d2)"), "{err}");
        assert_eq!(digest(&other), before);
        let text = tmp.0.join("notes.db");
        let plain = "hello, this is plain text and long enough to matter";
        fs::write(&text, plain).unwrap();
        let err = crate::store::open(&text, crate::config::Synchronous::Normal)
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("is not a ductile ledger: not a SQLite database; point state.path at a new file or at an existing ductile ledger"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&text).unwrap(), plain, "untouched");
        let err = crate::store::open_read_only(&other)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(application_id 0x000004d2)"), "{err}");
    }

    #[test]
    fn side_files_are_named_after_the_database() {
        assert_eq!(
            side_file(Path::new("/x/d.db"), "-wal"),
            PathBuf::from("/x/d.db-wal")
        );
    }
}
