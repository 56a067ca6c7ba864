//! Backup and verified restore: one `tar.gz` archive holding a `VACUUM INTO`
//! snapshot of the ledger, the config directory, the plugin roots and the
//! environment files (by scope), and `BACKUP_MANIFEST.txt` naming every file
//! with its size and sha256.
//!
//! - [`create`] writes an archive; it never overwrites a path and never stops
//!   the daemon (the snapshot is a read transaction on the live ledger).
//! - [`restore`] reads an archive into staging directories beside its targets,
//!   verifies all of it (manifest, sizes, hashes, the ledger's integrity and row
//!   counts), and only then moves each old file to `<name>.pre-restore` and
//!   renames the new one in. A refused archive changes nothing.

pub mod create;
pub mod manifest;
pub mod restore;
mod walk;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// The name of the manifest inside every archive.
pub const MANIFEST_NAME: &str = "BACKUP_MANIFEST.txt";

/// Suffix given to a file a restore replaced.
pub const PRE_RESTORE: &str = ".pre-restore";

/// What a backup holds; each scope holds everything the previous one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The ledger snapshot only.
    Db,
    /// `Db` + the config directory.
    Config,
    /// `Config` + every plugin root.
    Plugins,
    /// `Plugins` + every `environment_vars.include` file.
    All,
}

impl Scope {
    /// Every scope's name, in ladder order.
    pub const NAMES: [&'static str; 4] = ["db", "config", "plugins", "all"];

    /// Parses `--scope`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "db" => Some(Scope::Db),
            "config" => Some(Scope::Config),
            "plugins" => Some(Scope::Plugins),
            "all" => Some(Scope::All),
            _ => None,
        }
    }

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Db => "db",
            Scope::Config => "config",
            Scope::Plugins => "plugins",
            Scope::All => "all",
        }
    }
}

/// Why a backup or restore did not happen.
#[derive(Debug)]
pub enum BackupError {
    /// A file could not be read, written or renamed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The backup destination exists already.
    Exists {
        /// The `--to` path.
        path: PathBuf,
    },
    /// The archive is not one this version can restore, or does not match its
    /// own manifest (truncated, altered, foreign).
    Archive {
        /// The archive.
        path: PathBuf,
        /// What is wrong, with the entry it concerns.
        detail: String,
    },
    /// A process holds the ledger a restore would replace.
    Locked {
        /// The ledger.
        db: PathBuf,
        /// Who holds it ("a ductile daemon (pid 12)").
        holder: String,
    },
    /// A `<file>.pre-restore` from an earlier restore is in the way.
    PreRestoreExists {
        /// The old copy that would be overwritten.
        path: PathBuf,
    },
    /// The ledger could not be opened or snapshotted.
    Store(StoreError),
    /// The snapshot taken for the archive failed its own checks.
    Snapshot {
        /// The ledger.
        db: PathBuf,
        /// What the check said.
        detail: String,
    },
}

impl BackupError {
    /// An [`BackupError::Io`] maker for `map_err`.
    pub(crate) fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, op, source }
    }

    /// An [`BackupError::Archive`] for `path`.
    pub(crate) fn archive(path: &Path, detail: impl Into<String>) -> BackupError {
        BackupError::Archive {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Io { path, op, source } => {
                write!(f, "{}: cannot {op}: {source}", path.display())
            }
            BackupError::Exists { path } => write!(
                f,
                "{} already exists; a backup never overwrites a file: choose a new name (e.g. with a timestamp) or remove it first",
                path.display()
            ),
            BackupError::Archive { path, detail } => write!(
                f,
                "{} cannot be restored: {detail}; nothing was changed",
                path.display()
            ),
            BackupError::Locked { db, holder } => write!(
                f,
                "{holder} is using {}; stop it before restoring (nothing was changed)",
                db.display()
            ),
            BackupError::PreRestoreExists { path } => write!(
                f,
                "{} is left from an earlier restore; move or remove it first (nothing was changed)",
                path.display()
            ),
            BackupError::Store(e) => e.fmt(f),
            BackupError::Snapshot { db, detail } => write!(
                f,
                "the snapshot of {} failed its check: {detail}; no archive was written",
                db.display()
            ),
        }
    }
}

impl std::error::Error for BackupError {}

impl From<StoreError> for BackupError {
    fn from(e: StoreError) -> BackupError {
        BackupError::Store(e)
    }
}

/// `<path><suffix>`, e.g. the `-wal` beside a database.
pub(crate) fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `sha256` of `bytes`, as lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Row counts of every table of the ledger at `conn`, by name.
pub(crate) fn table_counts(
    conn: &rusqlite::Connection,
) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
    let op = |e| StoreError::sqlite("count the snapshot's rows", e);
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(op)?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(op)?
        .collect::<Result<_, _>>()
        .map_err(op)?;
    let mut counts = std::collections::BTreeMap::new();
    for name in names {
        let quoted = name.replace('"', "\"\"");
        let n: i64 = conn
            .query_row(&format!("SELECT count(*) FROM \"{quoted}\""), [], |r| {
                r.get(0)
            })
            .map_err(op)?;
        counts.insert(name, n);
    }
    Ok(counts)
}

/// `PRAGMA integrity_check` of the database file at `path`, opened read-only;
/// `Ok(None)` when it is clean, the first findings otherwise.
pub(crate) fn integrity_of(
    path: &Path,
) -> Result<(Option<String>, std::collections::BTreeMap<String, i64>), StoreError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::sqlite(format!("open {}", path.display()), e))?;
    let op = |e| StoreError::sqlite(format!("check {}", path.display()), e);
    let mut stmt = conn.prepare("PRAGMA integrity_check(5)").map_err(op)?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(op)?
        .collect::<Result<_, _>>()
        .map_err(op)?;
    drop(stmt);
    let verdict = (lines != ["ok"]).then(|| lines.join("; "));
    let counts = if verdict.is_none() {
        table_counts(&conn)?
    } else {
        Default::default()
    };
    Ok((verdict, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_a_ladder() {
        let parsed: Vec<Scope> = Scope::NAMES
            .iter()
            .map(|n| Scope::parse(n).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [Scope::Db, Scope::Config, Scope::Plugins, Scope::All]
        );
        assert!(parsed.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Scope::parse("everything"), None);
        assert_eq!(Scope::All.as_str(), "all");
    }

    #[test]
    fn sha256_matches_the_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
