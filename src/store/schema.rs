//! The ledger's DDL and its version check. A fresh database gets the whole schema
//! in one exclusive transaction; an existing one is validated and never migrated
//! silently: a missing table, column or index refuses the open with a message
//! naming what is missing.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// The schema version this binary writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Every table of the ledger.
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
);
CREATE INDEX idx_job_queue_status ON job_queue(status);
CREATE INDEX idx_job_queue_dedupe ON job_queue(dedupe_key, status) WHERE dedupe_key IS NOT NULL;
CREATE INDEX idx_job_queue_completed_at ON job_queue(completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX idx_job_queue_parent ON job_queue(parent_job_id) WHERE parent_job_id IS NOT NULL;
CREATE INDEX idx_job_queue_retry ON job_queue(next_retry_at) WHERE status = 'queued' AND next_retry_at IS NOT NULL;

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
);
CREATE INDEX idx_job_log_job ON job_log(job_id);
CREATE INDEX idx_job_log_plugin_completed_at ON job_log(plugin, completed_at);

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

CREATE TABLE config_snapshots (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash TEXT NOT NULL,
    files_json  JSON NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
"#;

/// Creates the schema on a database that has no tables, or validates an existing one.
pub fn ensure(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::sqlite("read schema version", e))?;
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| StoreError::sqlite("inspect schema", e))?;
    if version == 0 && tables == 0 {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(|e| StoreError::sqlite("begin schema creation", e))?;
        tx.execute_batch(DDL)
            .map_err(|e| StoreError::sqlite("create schema", e))?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| StoreError::sqlite("set schema version", e))?;
        tx.commit()
            .map_err(|e| StoreError::sqlite("commit schema creation", e))?;
        return Ok(());
    }
    // Fast path (every open pays it, including each `ductile run`): a database we
    // created stores our DDL verbatim, so one query over sqlite_master decides.
    if version == SCHEMA_VERSION && stores_our_ddl(conn)? {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Schema {
            path: path.to_string(),
            message: format!(
                "database schema version {version} is newer than this ductile supports ({SCHEMA_VERSION}); upgrade ductile or restore a backup"
            ),
        });
    }
    let missing = missing_objects(conn)?;
    if !missing.is_empty() || version != SCHEMA_VERSION {
        let detail = if missing.is_empty() {
            format!("schema version is {version}, expected {SCHEMA_VERSION}")
        } else {
            format!("missing {}", missing.join(", "))
        };
        return Err(StoreError::Schema {
            path: path.to_string(),
            message: format!(
                "database schema does not match this ductile ({detail}); refusing to start without a migration (back up the file, then migrate or start from a fresh state.path)"
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
    Ok(DDL
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|s| stored.contains(s)))
}

/// Tables, columns and indexes the DDL declares but the database lacks.
fn missing_objects(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut missing = Vec::new();
    for (table, columns) in expected_tables() {
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
    for index in expected_indexes() {
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

/// (table, columns) pairs read from the DDL, so the check can never drift from it.
fn expected_tables() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stmt in DDL.split(';') {
        let s = stmt.trim();
        let Some(rest) = s.strip_prefix("CREATE TABLE ") else {
            continue;
        };
        let Some((name, body)) = rest.split_once('(') else {
            continue;
        };
        let columns = body
            .lines()
            .map(str::trim)
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

/// Index names read from the DDL.
fn expected_indexes() -> Vec<String> {
    DDL.split(';')
        .filter_map(|s| s.trim().strip_prefix("CREATE INDEX "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_parsing_sees_every_table_and_index() {
        let tables: Vec<String> = expected_tables().into_iter().map(|t| t.0).collect();
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
            "config_snapshots",
        ] {
            assert!(tables.contains(&t.to_string()), "{t}");
        }
        let queue = expected_tables()
            .into_iter()
            .find(|t| t.0 == "job_queue")
            .unwrap();
        assert!(queue.1.contains(&"event_context_id".to_string()));
        assert!(!queue.1.iter().any(|c| c == "CREATE" || c == "PRIMARY"));
        assert!(expected_indexes().contains(&"idx_job_queue_status".to_string()));
    }

    #[test]
    fn fresh_database_gets_the_schema_and_then_validates() {
        let mut conn = Connection::open_in_memory().unwrap();
        ensure(&mut conn, ":memory:").unwrap();
        assert!(
            stores_our_ddl(&conn).unwrap(),
            "the fast path recognises our own schema"
        );
        ensure(&mut conn, ":memory:").unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    #[test]
    fn a_missing_table_or_index_refuses_with_its_name() {
        let mut conn = Connection::open_in_memory().unwrap();
        ensure(&mut conn, "x.db").unwrap();
        conn.execute_batch("DROP TABLE config_snapshots; DROP INDEX idx_job_log_job;")
            .unwrap();
        let err = ensure(&mut conn, "x.db").unwrap_err().to_string();
        assert_eq!(
            err,
            "x.db: database schema does not match this ductile (missing table config_snapshots, index idx_job_log_job); refusing to start without a migration (back up the file, then migrate or start from a fresh state.path)"
        );
    }

    #[test]
    fn a_foreign_database_is_refused_not_migrated() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE job_queue (id TEXT PRIMARY KEY);")
            .unwrap();
        let err = ensure(&mut conn, "x.db").unwrap_err().to_string();
        assert!(err.contains("column job_queue.plugin"), "{err}");
        assert!(err.contains("table job_log"), "{err}");
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type='table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "nothing was created");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        ensure(&mut conn, "x.db").unwrap();
        conn.pragma_update(None, "user_version", 9).unwrap();
        let err = ensure(&mut conn, "x.db").unwrap_err().to_string();
        assert!(err.contains("schema version 9 is newer"), "{err}");
    }
}
