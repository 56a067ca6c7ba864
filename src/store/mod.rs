//! The SQLite ledger. Every state change is one short immediate transaction; every
//! thread that touches the database opens its own [`Connection`] through [`open`],
//! the only place that sets pragmas.
//!
//! Owns: schema creation and validation, the job queue and its state machine,
//! plugin facts and state, breakers, schedule entries, the stopwatch ledger.
//! Must not: spawn processes or know about HTTP.

pub mod breakers;
mod checkpoint;
pub mod completion;
pub mod context;
pub mod decisions;
pub mod events;
pub mod facts;
pub mod health;
pub mod integrity;
pub mod jobs;
mod location;
pub mod migrate;
pub mod queue;
pub mod relay;
pub mod replication;
pub mod retention;
pub mod schedules;
pub mod schema;
pub mod sessions;
pub mod snapshots;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::config::Synchronous;
pub use checkpoint::tune_for_one_shot;
pub use location::{NotWritable, prepare};
pub use replication::{replication, set_replication};
use schema::Depth;

/// How long a writer waits for the write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    /// How long this thread's busy handler keeps retrying; lowered for the
    /// duration of a checkpoint that must not hold writers up for long.
    static BUSY_BUDGET: std::cell::Cell<Duration> = const { std::cell::Cell::new(BUSY_TIMEOUT) };
}

/// Runs `f` with this thread's busy waits limited to `budget`. A connection is
/// only ever used by the thread that holds it, so its busy handler runs here.
fn with_busy_budget<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    let before = BUSY_BUDGET.with(|b| b.replace(budget));
    let out = f();
    BUSY_BUDGET.with(|b| b.set(before));
    out
}

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
    /// The state directory or database file cannot be written by this user.
    NotWritable(Box<NotWritable>),
    /// The database's schema is not the one this binary expects.
    Schema {
        /// The database file.
        path: String,
        /// What does not match.
        message: String,
    },
    /// The file at `state.path` is not a ductile ledger; it was not modified.
    NotALedger {
        /// The file.
        path: String,
        /// What it is instead.
        detail: String,
    },
    /// The ledger is an older schema version; `ductile system migrate` upgrades it.
    NeedsMigration {
        /// The file.
        path: String,
        /// Its version.
        from: i64,
        /// The version this binary needs.
        to: i64,
    },
    /// The ledger failed its integrity check.
    Damaged {
        /// The file.
        path: String,
        /// The first problems SQLite reported.
        detail: String,
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
    /// A completion for an attempt that is no longer the job's current one (the
    /// job was recovered and claimed again meanwhile); nothing was written.
    StaleAttempt {
        /// The job.
        job_id: String,
        /// The attempt the completion was for.
        attempt: u32,
        /// The job's status and attempt now.
        now: String,
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

    /// Whether the error says the database file was moved, deleted or replaced
    /// under an open connection (SQLite's `SQLITE_READONLY_DBMOVED`).
    pub fn is_file_moved(&self) -> bool {
        matches!(
            self,
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            } if e.extended_code == rusqlite::ffi::SQLITE_READONLY_DBMOVED
        )
    }

    /// Whether the problem lies in what the operator configured or must do
    /// first (exit 78) rather than in a failed operation (exit 1).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StoreError::Schema { .. }
                | StoreError::NotALedger { .. }
                | StoreError::NeedsMigration { .. }
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
            StoreError::NotWritable(n) => n.fmt(f),
            StoreError::Schema { path, message } => write!(f, "{path}: {message}"),
            StoreError::NotALedger { path, detail } => write!(
                f,
                "{path} is not a ductile ledger: {detail}; point state.path at a new file or at an existing ductile ledger"
            ),
            StoreError::NeedsMigration { path, from, to } => write!(
                f,
                "{path}: the ledger is at schema version {from} and this ductile needs version {to}; run `ductile system migrate` (it backs the file up first), then start again"
            ),
            StoreError::Damaged { path, detail } => write!(
                f,
                "{path} is damaged ({detail}); stop here and restore a backup, or salvage what SQLite can read with `sqlite3 {path} .recover | sqlite3 recovered.db` and point state.path at recovered.db"
            ),
            StoreError::IllegalTransition { job_id, from, to } => {
                write!(f, "job {job_id}: illegal status change {from} -> {to}")
            }
            StoreError::StaleAttempt {
                job_id,
                attempt,
                now,
            } => write!(
                f,
                "job {job_id}: refused the outcome of attempt {attempt}, which is no longer current (the job is now {now}); nothing was recorded"
            ),
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

/// Opens (creating if needed) the ledger at `path` for reading and writing:
/// state directory 0700, file 0600, WAL, the configured `synchronous`, foreign
/// keys, busy timeout; then creates or validates the schema (fast check).
///
/// Nothing is changed before the file is known to be a ductile ledger (or
/// empty): a foreign database is refused byte-identical.
pub fn open(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    open_with(path, sync, Depth::Fast)
}

/// [`open`] with the thorough schema check (every table, column and index),
/// for the daemon's start.
pub fn open_checked(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    open_with(path, sync, Depth::Thorough)
}

fn open_with(path: &Path, sync: Synchronous, depth: Depth) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    location::prepare(path)?;
    let mut conn = open_rw(path)?;
    if location::is_new(path) {
        // The page size must be chosen before the first read, not only
        // before the first write.
        schema::set_page_size(&conn)?;
    }
    let kind = location::refuse_foreign(&conn, path)?;
    configure(&mut conn, sync, kind == schema::Kind::Empty)?;
    schema::ensure_kind(&mut conn, &shown, depth, kind)?;
    if replication::litestream() {
        replication::write_header(&conn, path)?;
    }
    Ok(conn)
}

/// Opens an existing ledger whose version may be older, for `system migrate`;
/// refuses foreign and newer files like [`open`] does, never creates one.
pub fn open_for_migration(path: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(missing(path));
    }
    location::prepare(path)?;
    let mut conn = open_rw(path)?;
    let kind = location::refuse_foreign(&conn, path)?;
    configure(&mut conn, sync, kind == schema::Kind::Empty)?;
    Ok(conn)
}

fn open_rw(path: &Path) -> Result<Connection, StoreError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| StoreError::sqlite(format!("open {}", path.display()), e))
}

fn missing(path: &Path) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        op: "open the database",
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file (has ductile run yet?)",
        ),
    }
}

/// Opens an existing ledger for a read-only verb; never creates anything.
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let shown = path.display().to_string();
    if !path.exists() {
        return Err(missing(path));
    }
    location::refuse_foreign_read_only(path)?;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::sqlite(format!("open {shown}"), e))?;
    wait_when_busy(&mut conn)?;
    schema::verify(&conn, &shown, Depth::Fast)?;
    Ok(conn)
}

/// Retries a busy database for up to [`BUSY_TIMEOUT`] (or this thread's
/// [`with_busy_budget`]) with short naps.
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
        if t0.elapsed() >= BUSY_BUDGET.with(std::cell::Cell::get) {
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
/// `fresh`: the file is still empty, so file-level settings are chosen now.
fn configure(conn: &mut Connection, sync: Synchronous, fresh: bool) -> Result<(), StoreError> {
    wait_when_busy(conn)?;
    if fresh {
        // Before WAL mode writes the first header, or it is too late.
        schema::set_incremental_vacuum(conn)?;
    }
    let level = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    // One batch (every statement here is paid by each `ductile run`). WAL mode
    // is persistent, but asking again costs little and repairs a file someone
    // switched back. The size limit truncates the WAL file back after the log
    // rewinds so a burst does not leave a large file on a Pi's SD card.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {level}; PRAGMA journal_size_limit = {};",
        64 * 1024 * 1024
    ))
    .map_err(|e| StoreError::sqlite("configure the connection", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    if replication::litestream() {
        return replication::hand_over(conn);
    }
    checkpoint::install(conn, checkpoint::DAEMON_FRAMES)
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
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            page,
            i64::from(schema::PAGE_SIZE),
            "set before the first write"
        );
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
