//! Forward migrations: an ordered, append-only list of steps, each taking the
//! ledger from one schema version to the next. `ductile system migrate` copies
//! the file first (`VACUUM INTO`), then applies every pending step in one
//! exclusive transaction and checks the result against the current DDL before
//! committing, so a migration either completes exactly or changes nothing.
//! Nothing migrates silently: opening an older ledger anywhere else is refused
//! with a message naming the command.
//!
//! A step's SQL is history: it is never edited once released. Each released
//! version has a fixture under `tests/fixtures/ledgers/`, and the tests migrate
//! every one of them and compare the result with a new ledger, object by object.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;
use super::schema::{self, APPLICATION_ID, Depth, Kind, SCHEMA_VERSION};

/// One migration step, from `from` to `from + 1`.
#[derive(Debug)]
pub struct Step {
    /// The version this step upgrades.
    pub from: i64,
    /// What it changes, for `--dry-run` and the migration report.
    pub summary: &'static str,
    /// The statements, run inside the migration transaction.
    sql: &'static str,
}

/// Every step, in order. Append only.
pub const STEPS: &[Step] = &[
    Step {
        from: 1,
        summary: "add job_log.warnings (a succeeded attempt's warnings) and job_cancel_requests (cancelling a job another process runs); mark the file with ductile's application id",
        sql: "ALTER TABLE job_log ADD COLUMN warnings TEXT;
CREATE TABLE job_cancel_requests (
    job_id       TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at TEXT NOT NULL
);",
    },
    Step {
        from: 2,
        summary: "add system_events (scheduler decisions, breaker transitions and reloads, for the resumable event stream)",
        sql: "CREATE TABLE system_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    plugin     TEXT,
    command    TEXT,
    job_id     TEXT,
    data       JSON,
    created_at TEXT NOT NULL
);",
    },
    Step {
        from: 3,
        summary: "add job_queue.hop (the route-graph hop a routed job runs) and a unique index on (parent_job_id, source_event_id, hop, plugin, command), so an event reaches each hop once per upstream job; rows written before keep no hop and are not constrained",
        sql: "ALTER TABLE job_queue ADD COLUMN hop TEXT;
CREATE UNIQUE INDEX idx_job_queue_routed_child ON job_queue(parent_job_id, source_event_id, hop, plugin, command) WHERE parent_job_id IS NOT NULL AND source_event_id IS NOT NULL AND hop IS NOT NULL;",
    },
    Step {
        from: 4,
        summary: "add decisions (why due or submitted work did not run: scheduler skips, pauses, duplicates, refused webhooks; repeats coalesced into one row with a count)",
        sql: "CREATE TABLE decisions (
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
CREATE INDEX idx_decisions_last_at ON decisions(last_at);",
    },
    Step {
        from: 5,
        summary: "index job_log by completion time and job_queue by creation time (the newest-first lists and time ranges of job logs, /jobs and the dashboard)",
        sql: "CREATE INDEX idx_job_queue_created_at ON job_queue(created_at);
CREATE INDEX idx_job_log_completed_at ON job_log(completed_at);",
    },
    Step {
        from: 6,
        summary: "add ui_sessions (the dashboard's sign-in sessions: hashes of the cookie and of the token it was opened with, and its expiry) and index job_queue by plugin and creation time (the job list filtered by plugin, and its total)",
        sql: "CREATE TABLE ui_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    token_name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX idx_ui_sessions_expires_at ON ui_sessions(expires_at);
CREATE INDEX idx_job_queue_plugin_created_at ON job_queue(plugin, created_at);",
    },
];

/// What a migration would do.
#[derive(Debug)]
pub struct Plan {
    /// The ledger's version now.
    pub from: i64,
    /// The version after the migration.
    pub to: i64,
    /// The steps to apply, in order (empty: already current).
    pub steps: Vec<&'static Step>,
}

/// Works out the steps from the ledger's version to [`SCHEMA_VERSION`]; reads only.
pub fn plan(conn: &Connection, path: &str) -> Result<Plan, StoreError> {
    let kind = schema::classify(conn)?;
    let from = match kind {
        Kind::Current => SCHEMA_VERSION,
        Kind::Older(v) => v,
        Kind::Empty => {
            return Err(StoreError::Schema {
                path: path.to_string(),
                message: "the database is empty; there is nothing to migrate (ductile creates a new ledger when it starts)".to_string(),
            });
        }
        Kind::Newer(_) | Kind::Foreign(_) => {
            return Err(kind.refusal(path).unwrap_or_else(|| StoreError::Schema {
                path: path.to_string(),
                message: "not a ductile ledger".to_string(),
            }));
        }
    };
    let steps: Vec<&'static Step> = STEPS
        .iter()
        .filter(|s| s.from >= from && s.from < SCHEMA_VERSION)
        .collect();
    if steps.len() as i64 != SCHEMA_VERSION - from {
        return Err(StoreError::Schema {
            path: path.to_string(),
            message: format!("no migration path from schema version {from} to {SCHEMA_VERSION}"),
        });
    }
    Ok(Plan {
        from,
        to: SCHEMA_VERSION,
        steps,
    })
}

/// Copies the whole ledger, consistently, to `to` (which must not exist).
pub fn backup(conn: &Connection, to: &Path) -> Result<(), StoreError> {
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])
        .map_err(|e| StoreError::sqlite(format!("back the ledger up to {}", to.display()), e))?;
    Ok(())
}

/// Applies `plan` in one exclusive transaction; the result is validated
/// against the current DDL before the commit.
pub fn apply(conn: &mut Connection, plan: &Plan, path: &str) -> Result<(), StoreError> {
    if plan.steps.is_empty() {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(|e| StoreError::sqlite("begin the migration", e))?;
    let now = schema::identity(&tx)?.version;
    if now != plan.from {
        return Err(StoreError::Schema {
            path: path.to_string(),
            message: format!(
                "the ledger changed to version {now} while the migration was prepared; run it again"
            ),
        });
    }
    for step in &plan.steps {
        tx.execute_batch(step.sql).map_err(|e| {
            StoreError::sqlite(
                format!("migrate from version {} to {}", step.from, step.from + 1),
                e,
            )
        })?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(|e| StoreError::sqlite("set the application id", e))?;
    tx.pragma_update(None, "user_version", plan.to)
        .map_err(|e| StoreError::sqlite("set schema version", e))?;
    schema::verify(&tx, path, Depth::Thorough)?;
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit the migration", e))?;
    Ok(())
}

/// Switches a migrated ledger to incremental auto-vacuum (ledgers created
/// before version 2 have none) with a full `VACUUM`; true when it did.
pub fn enable_incremental_vacuum(conn: &Connection) -> Result<bool, StoreError> {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(|e| StoreError::sqlite("read auto_vacuum", e))?;
    if mode == 2 {
        return Ok(false);
    }
    if super::replication::litestream() {
        // A full VACUUM rewrites every page through the WAL, which Litestream
        // would ship as one huge transaction; the ledger works without it.
        log::warn!(target: "store", "state.replication is litestream: incremental auto-vacuum not enabled (it needs a full VACUUM); run `ductile system migrate` once with replication off to enable it");
        return Ok(false);
    }
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        .map_err(|e| StoreError::sqlite("switch to incremental auto-vacuum", e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TempDir;

    /// Every released schema version, as the fixture that release wrote.
    const FIXTURES: &[(i64, &str)] = &[
        (1, include_str!("../../tests/fixtures/ledgers/v1.sql")),
        (2, include_str!("../../tests/fixtures/ledgers/v2.sql")),
        (3, include_str!("../../tests/fixtures/ledgers/v3.sql")),
        (4, include_str!("../../tests/fixtures/ledgers/v4.sql")),
        (5, include_str!("../../tests/fixtures/ledgers/v5.sql")),
        (6, include_str!("../../tests/fixtures/ledgers/v6.sql")),
    ];

    fn load(tmp: &TempDir, version: i64, sql: &str) -> (std::path::PathBuf, Connection) {
        let path = tmp.0.join(format!("v{version}.db"));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
        conn.execute_batch(sql).unwrap();
        (path, conn)
    }

    /// Every object's stored SQL, by (type, name).
    fn objects(conn: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut s = conn
            .prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    fn fresh_objects() -> Vec<(String, String, Option<String>)> {
        let mut conn = Connection::open_in_memory().unwrap();
        schema::ensure(&mut conn, ":memory:", Depth::Thorough).unwrap();
        objects(&conn)
    }

    #[test]
    fn every_released_version_migrates_to_exactly_the_current_schema() {
        assert_eq!(
            FIXTURES.len() as i64,
            SCHEMA_VERSION - 1,
            "a fixture per released version"
        );
        for (version, sql) in FIXTURES {
            let tmp = TempDir::new(&format!("migrate-v{version}"));
            let (path, mut conn) = load(&tmp, *version, sql);
            let shown = path.display().to_string();
            let jobs: i64 = conn
                .query_row("SELECT COUNT(*) FROM job_queue", [], |r| r.get(0))
                .unwrap();
            assert!(
                matches!(
                    schema::verify(&conn, &shown, Depth::Fast),
                    Err(StoreError::NeedsMigration { from, .. }) if from == *version
                ),
                "v{version} is refused until migrated"
            );
            let plan = plan(&conn, &shown).unwrap();
            assert_eq!((plan.from, plan.to), (*version, SCHEMA_VERSION));
            apply(&mut conn, &plan, &shown).unwrap();
            assert_eq!(
                objects(&conn),
                fresh_objects(),
                "v{version}: same objects, same SQL"
            );
            schema::verify(&conn, &shown, Depth::Fast).unwrap();
            let after: i64 = conn
                .query_row("SELECT COUNT(*) FROM job_queue", [], |r| r.get(0))
                .unwrap();
            assert_eq!(after, jobs, "rows survive");
            assert!(
                plan_is_empty(&conn, &shown),
                "a second run has nothing to do"
            );
        }
    }

    fn plan_is_empty(conn: &Connection, path: &str) -> bool {
        plan(conn, path).unwrap().steps.is_empty()
    }

    #[test]
    fn a_failing_step_changes_nothing() {
        let tmp = TempDir::new("migrate-fail");
        let (path, mut conn) = load(&tmp, 1, FIXTURES[0].1);
        // Sabotage: the table the step creates already exists.
        conn.execute_batch("CREATE TABLE job_cancel_requests (x);")
            .unwrap();
        let shown = path.display().to_string();
        let plan = plan(&conn, &shown).unwrap();
        let err = apply(&mut conn, &plan, &shown).unwrap_err().to_string();
        assert!(err.contains("migrate from version 1 to 2"), "{err}");
        assert_eq!(schema::identity(&conn).unwrap().version, 1);
        let cols: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('job_log') WHERE name = 'warnings'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cols, 0, "the ALTER was rolled back too");
    }

    #[test]
    fn backup_then_vacuum_mode_switch() {
        let tmp = TempDir::new("migrate-backup");
        let (path, mut conn) = load(&tmp, 1, FIXTURES[0].1);
        let copy = tmp.0.join("copy.db");
        backup(&conn, &copy).unwrap();
        let shown = path.display().to_string();
        let plan = plan(&conn, &shown).unwrap();
        apply(&mut conn, &plan, &shown).unwrap();
        assert!(enable_incremental_vacuum(&conn).unwrap());
        assert!(!enable_incremental_vacuum(&conn).unwrap(), "only once");
        let old = Connection::open(&copy).unwrap();
        assert_eq!(
            schema::identity(&old).unwrap().version,
            1,
            "the copy is the old ledger"
        );
    }
}
