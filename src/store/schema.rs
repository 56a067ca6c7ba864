//! The ledger's DDL, its identity and its version check. A fresh database gets
//! the whole schema in one exclusive transaction (re-checked inside it, so when
//! several processes open a new `state.path` at once exactly one creates it); an
//! existing one is validated and never migrated silently: an older version is
//! refused with the command that migrates it ([`super::migrate`]), a newer one
//! with an upgrade hint, and a missing table, column or index by name.
//!
//! A ledger carries [`APPLICATION_ID`] in its header, so a SQLite file of
//! another application is recognised and refused before anything touches it.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The schema version this binary writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 7;

/// `PRAGMA application_id` of a ductile ledger: "Duct" in ASCII. Version 1
/// ledgers predate it and carry 0.
pub const APPLICATION_ID: i32 = 0x4475_6374;

/// Every table of the ledger at [`SCHEMA_VERSION`]. Statements are stored
/// verbatim in `sqlite_master`, which the fast validation path compares. The
/// `warnings` column of `job_log` and the `hop` column of `job_queue` are
/// written in the shape `ALTER TABLE ... ADD COLUMN` leaves, so a migrated
/// ledger stores exactly the same text as a new one.
const DDL: &str = r#"
CREATE TABLE job_queue (
    id               TEXT PRIMARY KEY,
    plugin           TEXT NOT NULL,
    command          TEXT NOT NULL,
    payload          JSON,
    status           TEXT NOT NULL CHECK (status IN ('queued','running','succeeded','failed','timed_out','dead')),
    attempt          INTEGER NOT NULL DEFAULT 1,
    max_attempts     INTEGER NOT NULL DEFAULT 4,
    submitted_by     TEXT NOT NULL,
    dedupe_key       TEXT,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    completed_at     TEXT,
    next_retry_at    TEXT,
    last_error       TEXT,
    parent_job_id    TEXT,
    source_event_id  TEXT,
    event_context_id TEXT
, hop TEXT);
CREATE INDEX idx_job_queue_status ON job_queue(status);
CREATE INDEX idx_job_queue_dedupe ON job_queue(dedupe_key, status) WHERE dedupe_key IS NOT NULL;
CREATE INDEX idx_job_queue_completed_at ON job_queue(completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX idx_job_queue_parent ON job_queue(parent_job_id) WHERE parent_job_id IS NOT NULL;
CREATE INDEX idx_job_queue_retry ON job_queue(next_retry_at) WHERE status = 'queued' AND next_retry_at IS NOT NULL;
CREATE INDEX idx_job_queue_created_at ON job_queue(created_at);
CREATE UNIQUE INDEX idx_job_queue_routed_child ON job_queue(parent_job_id, source_event_id, hop, plugin, command) WHERE parent_job_id IS NOT NULL AND source_event_id IS NOT NULL AND hop IS NOT NULL;

CREATE TABLE job_transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX idx_job_transitions_job ON job_transitions(job_id);

CREATE TABLE job_attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    completed_at TEXT,
    pid          INTEGER,
    exit_code    INTEGER,
    error        TEXT
);
CREATE INDEX idx_job_attempts_job ON job_attempts(job_id, attempt);

CREATE TABLE job_log (
    id               TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL,
    plugin           TEXT NOT NULL,
    command          TEXT NOT NULL,
    status           TEXT NOT NULL,
    result           TEXT,
    attempt          INTEGER NOT NULL,
    submitted_by     TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    completed_at     TEXT NOT NULL,
    last_error       TEXT,
    stderr           TEXT,
    stdout           TEXT,
    parent_job_id    TEXT,
    source_event_id  TEXT,
    event_context_id TEXT
, warnings TEXT);
CREATE INDEX idx_job_log_job ON job_log(job_id);
CREATE INDEX idx_job_log_plugin_completed_at ON job_log(plugin, completed_at);
CREATE INDEX idx_job_log_completed_at ON job_log(completed_at);

CREATE TABLE plugin_state (
    plugin_name TEXT PRIMARY KEY,
    state       JSON NOT NULL DEFAULT '{}',
    updated_at  TEXT
);

CREATE TABLE plugin_facts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    seq         INTEGER,
    plugin_name TEXT NOT NULL,
    fact_type   TEXT NOT NULL,
    job_id      TEXT,
    command     TEXT,
    fact_json   JSON NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX idx_plugin_facts_plugin_seq ON plugin_facts(plugin_name, seq);

CREATE TABLE storage_sequences (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE event_context (
    id               TEXT PRIMARY KEY,
    parent_id        TEXT,
    pipeline_name    TEXT,
    step_id          TEXT,
    accumulated_json JSON NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX idx_event_context_parent ON event_context(parent_id);

CREATE TABLE circuit_breakers (
    plugin          TEXT NOT NULL,
    command         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('closed','open','half_open')),
    failure_count   INTEGER NOT NULL DEFAULT 0,
    opened_at       TEXT,
    last_failure_at TEXT,
    last_job_id     TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (plugin, command)
);

CREATE TABLE circuit_breaker_transitions (
    id            TEXT PRIMARY KEY,
    plugin        TEXT NOT NULL,
    command       TEXT NOT NULL,
    from_state    TEXT,
    to_state      TEXT NOT NULL,
    failure_count INTEGER NOT NULL DEFAULT 0,
    reason        TEXT NOT NULL,
    job_id        TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX idx_breaker_transitions_plugin ON circuit_breaker_transitions(plugin, command, created_at);

CREATE TABLE schedule_entries (
    plugin              TEXT NOT NULL,
    schedule_id         TEXT NOT NULL,
    command             TEXT NOT NULL,
    fingerprint         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('active','paused_invalid','paused_manual','exhausted')),
    reason              TEXT,
    last_fired_at       TEXT,
    last_success_at     TEXT,
    last_success_job_id TEXT,
    next_run_at         TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (plugin, schedule_id)
);

CREATE TABLE job_stopwatch (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL,
    plugin          TEXT NOT NULL,
    command         TEXT NOT NULL,
    step_name       TEXT,
    attempt         INTEGER NOT NULL,
    enter_wall_ns   INTEGER NOT NULL,
    exit_wall_ns    INTEGER NOT NULL,
    dur_ns          INTEGER NOT NULL,
    runtime_pre_ns  INTEGER NOT NULL,
    runtime_post_ns INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok','err','timeout','capture_error')),
    subs_json       JSON,
    created_at      TEXT NOT NULL
);
CREATE INDEX idx_job_stopwatch_job ON job_stopwatch(job_id);
CREATE INDEX idx_job_stopwatch_plugin ON job_stopwatch(plugin, created_at);

CREATE TABLE plugin_health (
    plugin      TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending','healthy','unhealthy')),
    last_error  TEXT,
    job_id      TEXT,
    updated_at  TEXT NOT NULL
);

CREATE TABLE job_cancel_requests (
    job_id       TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL
);

CREATE TABLE config_snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash TEXT NOT NULL,
    files_json  JSON NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE system_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    plugin     TEXT,
    command    TEXT,
    job_id     TEXT,
    data       JSON,
    created_at TEXT NOT NULL
);

CREATE TABLE decisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    command    TEXT,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    job_id     TEXT,
    due_at     TEXT,
    count      INTEGER NOT NULL DEFAULT 1,
    first_at   TEXT NOT NULL,
    last_at    TEXT NOT NULL
);
CREATE INDEX idx_decisions_subject ON decisions(plugin, scope, id);
CREATE INDEX idx_decisions_job ON decisions(job_id) WHERE job_id IS NOT NULL;
CREATE INDEX idx_decisions_last_at ON decisions(last_at);
CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    token_name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX idx_ui_sessions_expires_at ON ui_sessions(expires_at);
CREATE INDEX idx_job_queue_plugin_created_at ON job_queue(plugin, created_at);
"#;

/// How much a validation checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The verbatim DDL comparison, falling back to the detailed check only
    /// when it does not match (every `ductile run` pays this).
    Fast,
    /// Every table, column and index by name (daemon start, migration).
    Thorough,
}

/// The identity fields of a database header, read through SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `PRAGMA application_id`.
    pub application_id: i32,
    /// `PRAGMA user_version`.
    pub version: i64,
    /// User tables in `sqlite_master`.
    pub tables: i64,
}

/// Reads the identity fields of the open database.
pub fn identity(conn: &Connection) -> Result<Identity, StoreError> {
    // One statement: it is the first on every connection, so it also pays for
    // reading the schema, and every extra statement here is paid per `ductile run`.
    // Litestream adds `_litestream_seq` and `_litestream_lock` to the file it
    // replicates, possibly before ductile has created its schema: they do not
    // make an empty file someone else's.
    conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id), (SELECT user_version FROM pragma_user_version), (SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND name NOT IN ('_litestream_seq', '_litestream_lock'))",
        [],
        |r| {
            Ok(Identity {
                application_id: r.get::<_, i64>(0)? as i32,
                version: r.get(1)?,
                tables: r.get(2)?,
            })
        },
    )
    .map_err(|e| StoreError::sqlite("read the database header", e))
}

/// What an existing database is, judged from its identity and tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// No tables and no identity: ours to create.
    Empty,
    /// A ductile ledger at this version.
    Current,
    /// A ductile ledger at an older version that [`super::migrate`] upgrades.
    Older(i64),
    /// A ductile ledger written by a newer ductile.
    Newer(i64),
    /// Not a ductile ledger; the text says what it looks like instead.
    Foreign(String),
}

impl Kind {
    /// Why nothing may use a database of this kind (`Newer`, `Foreign`);
    /// `None` for the kinds ductile can work with (or migrate, or create).
    pub(super) fn refusal(&self, path: &str) -> Option<StoreError> {
        Some(match self {
            Kind::Newer(version) => StoreError::Schema {
                path: path.to_string(),
                message: format!(
                    "database schema version {version} is newer than this ductile supports ({SCHEMA_VERSION}); upgrade ductile or restore a backup"
                ),
            },
            Kind::Foreign(what) => StoreError::NotALedger {
                path: path.to_string(),
                detail: format!("a SQLite database of another application ({what})"),
            },
            Kind::Empty | Kind::Current | Kind::Older(_) => return None,
        })
    }
}

/// Classifies the open database. Reads only; changes nothing.
pub fn classify(conn: &Connection) -> Result<Kind, StoreError> {
    let id = identity(conn)?;
    if id.application_id == 0 && id.version == 0 && id.tables == 0 {
        return Ok(Kind::Empty);
    }
    let ours = match id.application_id {
        APPLICATION_ID => true,
        // Version 1 ledgers have no application id: recognise them by their queue.
        0 if id.version == 1 => has_table(conn, "job_queue")? && has_table(conn, "job_log")?,
        _ => false,
    };
    if !ours {
        let what = if id.application_id != 0 {
            format!("application_id {:#010x}", id.application_id)
        } else if id.tables == 0 {
            format!("user_version {} and no tables", id.version)
        } else {
            format!(
                "{} table(s), user_version {}, no job_queue/job_log",
                id.tables, id.version
            )
        };
        return Ok(Kind::Foreign(what));
    }
    Ok(match id.version.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => Kind::Current,
        std::cmp::Ordering::Less => Kind::Older(id.version),
        std::cmp::Ordering::Greater => Kind::Newer(id.version),
    })
}

fn has_table(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(|e| StoreError::sqlite("inspect schema", e))
}

/// Creates the schema when the database is empty, or validates it. Exactly one
/// of several processes opening a new file creates it: the emptiness is
/// re-checked inside the exclusive transaction, and the losers validate what
/// the winner wrote.
pub fn ensure(conn: &mut Connection, path: &str, depth: Depth) -> Result<(), StoreError> {
    let kind = classify(conn)?;
    ensure_kind(conn, path, depth, kind)
}

/// [`ensure`] for a database already classified as `kind` (the caller looked
/// before changing anything).
pub(super) fn ensure_kind(
    conn: &mut Connection,
    path: &str,
    depth: Depth,
    kind: Kind,
) -> Result<(), StoreError> {
    if kind == Kind::Empty && create(conn)? {
        return Ok(());
    }
    if kind == Kind::Empty {
        // Another process created it meanwhile: judge what it wrote.
        return verify(conn, path, depth);
    }
    verify_kind(conn, path, depth, kind)
}

/// Creates the schema if the database is still empty once the exclusive lock is
/// held; false when another process created it first.
fn create(conn: &mut Connection) -> Result<bool, StoreError> {
    // Only effective before the first write (a connection that already chose
    // WAL mode set it in `store::configure`).
    set_incremental_vacuum(conn)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(|e| StoreError::sqlite("begin schema creation", e))?;
    if classify(&tx)? != Kind::Empty {
        return Ok(false);
    }
    tx.execute_batch(DDL)
        .map_err(|e| StoreError::sqlite("create schema", e))?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(|e| StoreError::sqlite("set the application id", e))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| StoreError::sqlite("set schema version", e))?;
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit schema creation", e))?;
    Ok(true)
}

/// Asks for incremental auto-vacuum: it takes effect only on a database that is
/// still empty (no header written, not even WAL mode), so it is issued only
/// there; on a ledger it would cost a write transaction per open. Incremental
/// lets retention hand pages back to the file system (an SD card fills up
/// otherwise) without the full rewrite a VACUUM costs.
pub(super) fn set_incremental_vacuum(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(|e| StoreError::sqlite("set auto_vacuum", e))
}

/// Page size of new ledgers, in bytes. A job changes a few small rows in ~20
/// pages, and every changed page is written whole to the WAL (and again by the
/// checkpoint): 1 KiB pages write 48 KiB per job where 4 KiB pages wrote
/// 131 KiB, at the same throughput, which matters on an SD card.
pub const PAGE_SIZE: u32 = 1024;

/// Chooses [`PAGE_SIZE`]; effective only on an empty file, before its first read.
pub(super) fn set_page_size(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(|e| StoreError::sqlite("set the page size", e))
}

/// Validates an existing database against this binary's schema.
pub fn verify(conn: &Connection, path: &str, depth: Depth) -> Result<(), StoreError> {
    verify_kind(conn, path, depth, classify(conn)?)
}

fn verify_kind(conn: &Connection, path: &str, depth: Depth, kind: Kind) -> Result<(), StoreError> {
    if let Some(refused) = kind.refusal(path) {
        return Err(refused);
    }
    match kind {
        Kind::Current => {}
        Kind::Empty => {
            return Err(StoreError::Schema {
                path: path.to_string(),
                message: "the database is empty (no ductile tables)".to_string(),
            });
        }
        Kind::Older(version) => {
            return Err(StoreError::NeedsMigration {
                path: path.to_string(),
                from: version,
                to: SCHEMA_VERSION,
            });
        }
        Kind::Newer(_) | Kind::Foreign(_) => {}
    }
    // Fast path (every open pays it, including each `ductile run`): a ledger we
    // created or migrated stores our DDL verbatim, so one query decides.
    if depth == Depth::Fast && stores_our_ddl(conn)? {
        return Ok(());
    }
    let missing = missing_objects(conn, DDL)?;
    if !missing.is_empty() {
        return Err(StoreError::Schema {
            path: path.to_string(),
            message: format!(
                "database schema does not match this ductile (missing {}); restore a backup or start from a fresh state.path",
                missing.join(", ")
            ),
        });
    }
    Ok(())
}

/// Whether every statement of our DDL is stored, verbatim, in `sqlite_master`.
fn stores_our_ddl(conn: &Connection) -> Result<bool, StoreError> {
    let mut stmt = conn
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
        .map_err(|e| StoreError::sqlite("inspect schema", e))?;
    let stored: std::collections::HashSet<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| StoreError::sqlite("inspect schema", e))?;
    Ok(statements(DDL).all(|s| stored.contains(s)))
}

/// The statements of a DDL text, trimmed.
pub(super) fn statements(ddl: &str) -> impl Iterator<Item = &str> {
    ddl.split(';').map(str::trim).filter(|s| !s.is_empty())
}

/// Tables, columns and indexes `ddl` declares but the database lacks.
pub(super) fn missing_objects(conn: &Connection, ddl: &str) -> Result<Vec<String>, StoreError> {
    let mut missing = Vec::new();
    for (table, columns) in expected_tables(ddl) {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(|e| StoreError::sqlite("inspect schema", e))?;
        let have: Vec<String> = stmt
            .query_map([&table], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| StoreError::sqlite("inspect schema", e))?;
        if have.is_empty() {
            missing.push(format!("table {table}"));
            continue;
        }
        for col in columns {
            if !have.contains(&col) {
                missing.push(format!("column {table}.{col}"));
            }
        }
    }
    for index in expected_indexes(ddl) {
        let found: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type='index' AND name=?1",
                [&index],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::sqlite("inspect schema", e))?;
        if found == 0 {
            missing.push(format!("index {index}"));
        }
    }
    Ok(missing)
}

/// (table, columns) pairs read from `ddl`, so the check can never drift from it.
fn expected_tables(ddl: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for s in statements(ddl) {
        let Some(rest) = s.strip_prefix("CREATE TABLE ") else {
            continue;
        };
        let Some((name, body)) = rest.split_once('(') else {
            continue;
        };
        let columns = body
            .lines()
            .map(|l| l.trim().trim_start_matches(',').trim_start())
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| {
                !w.is_empty()
                    && w.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && *w != "PRIMARY"
            })
            .map(str::to_string)
            .collect();
        out.push((name.trim().to_string(), columns));
    }
    out
}

/// Index names read from `ddl`.
fn expected_indexes(ddl: &str) -> Vec<String> {
    statements(ddl)
        .filter_map(|s| {
            s.strip_prefix("CREATE INDEX ")
                .or_else(|| s.strip_prefix("CREATE UNIQUE INDEX "))
        })
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        ensure(&mut conn, ":memory:", Depth::Thorough).unwrap();
        conn
    }

    #[test]
    fn ddl_parsing_sees_every_table_column_and_index() {
        let tables: Vec<String> = expected_tables(DDL).into_iter().map(|t| t.0).collect();
        for t in [
            "job_queue",
            "job_transitions",
            "job_attempts",
            "job_log",
            "plugin_state",
            "plugin_facts",
            "storage_sequences",
            "event_context",
            "circuit_breakers",
            "circuit_breaker_transitions",
            "schedule_entries",
            "job_stopwatch",
            "plugin_health",
            "job_cancel_requests",
            "config_snapshots",
            "system_events",
            "decisions",
        ] {
            assert!(tables.contains(&t.to_string()), "{t}");
        }
        let log = expected_tables(DDL)
            .into_iter()
            .find(|t| t.0 == "job_log")
            .unwrap();
        assert!(log.1.contains(&"event_context_id".to_string()));
        assert!(
            log.1.contains(&"warnings".to_string()),
            "the comma-led column counts"
        );
        assert!(!log.1.iter().any(|c| c == "CREATE" || c == "PRIMARY"));
        assert!(expected_indexes(DDL).contains(&"idx_job_queue_status".to_string()));
        assert!(
            expected_indexes(DDL).contains(&"idx_job_queue_routed_child".to_string()),
            "unique indexes count"
        );
        let queue = expected_tables(DDL)
            .into_iter()
            .find(|t| t.0 == "job_queue")
            .unwrap();
        assert!(queue.1.contains(&"hop".to_string()));
    }

    #[test]
    fn fresh_database_gets_the_schema_identity_and_then_validates() {
        let mut conn = fresh();
        assert!(
            stores_our_ddl(&conn).unwrap(),
            "the fast path recognises it"
        );
        ensure(&mut conn, ":memory:", Depth::Fast).unwrap();
        let id = identity(&conn).unwrap();
        assert_eq!(id.version, SCHEMA_VERSION);
        assert_eq!(id.application_id, APPLICATION_ID);
        assert_eq!(classify(&conn).unwrap(), Kind::Current);
    }

    #[test]
    fn a_missing_table_or_index_refuses_with_its_name() {
        let conn = fresh();
        conn.execute_batch("DROP TABLE config_snapshots; DROP INDEX idx_job_log_job;")
            .unwrap();
        let err = verify(&conn, "x.db", Depth::Fast).unwrap_err().to_string();
        assert_eq!(
            err,
            "x.db: database schema does not match this ductile (missing table config_snapshots, index idx_job_log_job); restore a backup or start from a fresh state.path"
        );
    }

    #[test]
    fn a_foreign_database_is_refused_and_left_alone() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE job_queue (id TEXT PRIMARY KEY);")
            .unwrap();
        let err = ensure(&mut conn, "x.db", Depth::Fast)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "x.db is not a ductile ledger: a SQLite database of another application (1 table(s), user_version 0, no job_queue/job_log); point state.path at a new file or at an existing ductile ledger"
        );
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2, "nothing was created (the table and its autoindex)");
        let mut other = Connection::open_in_memory().unwrap();
        other.pragma_update(None, "application_id", 42).unwrap();
        other.pragma_update(None, "user_version", 3).unwrap();
        let err = ensure(&mut other, "y.db", Depth::Fast)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(application_id 0x0000002a)"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused_and_an_older_one_names_the_migration() {
        let conn = fresh();
        conn.pragma_update(None, "user_version", 9).unwrap();
        let err = verify(&conn, "x.db", Depth::Fast).unwrap_err().to_string();
        assert!(err.contains("schema version 9 is newer"), "{err}");
        conn.pragma_update(None, "user_version", 1).unwrap();
        let err = verify(&conn, "x.db", Depth::Fast).unwrap_err().to_string();
        assert_eq!(
            err,
            "x.db: the ledger is at schema version 1 and this ductile needs version 7; run `ductile system migrate` (it backs the file up first), then start again"
        );
    }

    #[test]
    fn a_version_1_ledger_is_recognised_without_an_application_id() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE job_queue (id TEXT); CREATE TABLE job_log (id TEXT); PRAGMA user_version = 1;")
            .unwrap();
        assert_eq!(classify(&conn).unwrap(), Kind::Older(1));
    }

    #[test]
    fn new_ledgers_vacuum_incrementally() {
        let dir = crate::store::testing::TempDir::new("autovac");
        let mut conn = Connection::open(dir.0.join("a.db")).unwrap();
        ensure(&mut conn, "a.db", Depth::Thorough).unwrap();
        let mode: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2, "INCREMENTAL");
    }
}
