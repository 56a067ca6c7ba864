//! The SQLite ledger. Every state change is one short immediate transaction; every
//! thread that touches the database opens its own [`Connection`] through [`open`],
//! the only place that sets pragmas.
//!
//! Owns: schema creation and validation, the job queue and its state machine,
//! plugin facts and state, breakers, schedule entries, the stopwatch ledger.
//! Must not: spawn processes or know about HTTP.

pub mod breakers;
pub mod completion;
pub mod context;
pub mod facts;
pub mod health;
pub mod queue;
pub mod retention;
pub mod schedules;
pub mod schema;

use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::Synchronous;

/// How long a writer waits for the write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from the ledger, each naming the operation that failed.
#[derive(Debug)]
pub enum StoreError {
    /// A SQLite call failed.
    Sqlite {
        /// What the store was doing.
        op: String,
        /// The driver's error.
        source: rusqlite::Error,
    },
    /// The file system refused (creating the state directory or file).
    Io {
        /// The path involved.
        path: String,
        /// What the store was doing.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database's schema is not the one this binary expects.
    Schema {
        /// The database file.
        path: String,
        /// What does not match.
        message: String,
    },
    /// A job state change that the state machine forbids.
    IllegalTransition {
        /// The job.
        job_id: String,
        /// Current status.
        from: String,
        /// Requested status.
        to: String,
    },
    /// A referenced row does not exist.
    NotFound {
        /// What kind of row.
        what: &'static str,
        /// Its id.
        id: String,
    },
}

impl StoreError {
    /// Wraps a driver error with the operation that failed.
    pub fn sqlite(op: impl Into<String>, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            op: op.into(),
            source,
        }
    }

    /// Whether the error means "the database is busy/locked" rather than broken.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite { op, source } => {
                write!(f, "database error while trying to {op}: {source}")
            }
            StoreError::Io { path, op, source } => write!(f, "{path}: cannot {op}: {source}"),
            StoreError::Schema { path, message } => write!(f, "{path}: {message}"),
            StoreError::IllegalTransition { job_id, from, to } => {
                write!(f, "job {job_id}: illegal status change {from} -> {to}")
            }
            StoreError::NotFound { what, id } => write!(f, "{what} `{id}` not found"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Sqlite { source, .. } => Some(source),
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Opens (creating if needed) the ledger at `path` for reading and writing: state
/// directory 0700, file 0600, WAL, the configured `synchronous`, foreign keys,
/// busy timeout; then creates or validates the schema.
pub fn open(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    path: dir.display().to_string(),
                    op: "create the state directory",
                    source,
                })?;
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
                path: shown.clone(),
                op: "create the database file",
                source,
            })?;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o600));
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| StoreError::sqlite(format!("open {shown}"), e))?;
    configure(&mut conn, sync)?;
    schema::ensure(&mut conn, &shown)?;
    Ok(conn)
}

/// Tunes a short-lived writer (a `ductile run` one-shot): do not checkpoint on
/// close, and checkpoint every 100 frames instead. Closing the last connection
/// would otherwise fsync twice and delete the WAL, whose re-creation costs two
/// more fsyncs (file and directory) on the next run; the small interval keeps the
/// WAL that the next process must index to a few hundred KiB.
pub fn tune_for_one_shot(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(|e| StoreError::sqlite("configure checkpointing", e))?;
    conn.pragma_update(None, "wal_autocheckpoint", 100)
        .map_err(|e| StoreError::sqlite("set the checkpoint interval", e))?;
    Ok(())
}

/// Opens an existing ledger for a read-only verb; never creates anything.
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(StoreError::Io {
            path: shown,
            op: "open the database",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file (has ductile run yet?)",
            ),
        });
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::sqlite(format!("open {shown}"), e))?;
    wait_when_busy(&mut conn)?;
    schema::ensure(&mut conn, &shown)?;
    Ok(conn)
}

/// Retries a busy database for up to [`BUSY_TIMEOUT`] with short naps.
///
/// SQLite's own busy timeout sleeps 1–100 ms between retries, while our writers
/// hold the lock for tens of microseconds; under contention between workers
/// that default alone cut job throughput by more than half.
fn wait_when_busy(conn: &mut Connection) -> Result<(), StoreError> {
    let started = std::cell::Cell::new(None::<std::time::Instant>);
    conn.busy_handler(Some(move |count: i32| {
        let t0 = match started.get() {
            Some(t) if count > 0 => t,
            _ => {
                let now = std::time::Instant::now();
                started.set(Some(now));
                now
            }
        };
        if t0.elapsed() >= BUSY_TIMEOUT {
            return false;
        }
        let nap = match count {
            0..=100 => Duration::from_micros(20),
            101..=1000 => Duration::from_micros(200),
            _ => Duration::from_millis(2),
        };
        std::thread::sleep(nap);
        true
    }))
    .map_err(|e| StoreError::sqlite("set busy handler", e))
}

/// The connection pragmas; set once per connection, outside any transaction.
fn configure(conn: &mut Connection, sync: Synchronous) -> Result<(), StoreError> {
    wait_when_busy(conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| StoreError::sqlite("enable WAL", e))?;
    let level = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", level)
        .map_err(|e| StoreError::sqlite("set synchronous", e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| StoreError::sqlite("enable foreign keys", e))?;
    // A job rewrites the same few hot pages (queue tail, index leaves) many
    // times; checkpointing every 8000 frames instead of 1000 copies each page
    // once per burst instead of eight times and fsyncs an eighth as often. The
    // size limit truncates the WAL file back after a checkpoint so a burst does
    // not leave a large file on a Pi's SD card.
    conn.pragma_update(None, "wal_autocheckpoint", 8000)
        .map_err(|e| StoreError::sqlite("set the checkpoint interval", e))?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(|e| StoreError::sqlite("set the WAL size limit", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    //! A unique on-disk ledger per test.

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A fresh temp directory for one test, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir()
                .join(format!("ductile-store-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TempDir;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn open_creates_a_private_wal_database() {
        let tmp = TempDir::new("open");
        let path = tmp.0.join("state/sub/ductile.db");
        let conn = open(&path, Synchronous::Normal).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        let file_mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        drop(conn);
        let conn = open(&path, Synchronous::Full).unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn read_only_open_never_creates() {
        let tmp = TempDir::new("ro");
        let path = tmp.0.join("none.db");
        let err = open_read_only(&path).unwrap_err().to_string();
        assert!(err.contains("none.db: cannot open the database"), "{err}");
        assert!(!path.exists());
    }
}
