//! `selfcheck`: six read-only invariants, in the reference's order and names.
//! The ledger checks run only while no other process holds the instance lock
//! (and hold it, as maintenance, while they run): a daemon writing the WAL
//! beside a full `integrity_check` is exactly what the check must not
//! disturb, so with a holder they are skipped with that reason.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use super::{Check, Report};
use crate::clock::format_ts;
use crate::lock::{self, InstanceLock, Role};
use crate::runtime::Runtime;
use crate::store::StoreError;
use crate::store::schema::{self, Depth};

/// Runs every selfcheck for the config at `--config` (or the discovery order).
pub fn selfcheck(config: Option<&Path>, now: DateTime<Utc>) -> Report {
    let mut checks = Vec::new();
    let root = match crate::config::resolve_root(config) {
        Ok(root) => {
            checks.push(Check::ok(
                "config_discovery",
                format!("config at {}", root.display()),
            ));
            root
        }
        Err(e) => {
            checks.push(Check::fail(
                "config_discovery",
                e.to_string(),
                "pass --config DIR or set DUCTILE_CONFIG_DIR to a directory holding config.yaml",
            ));
            return rest_skipped(checks, "no config was found");
        }
    };
    match Runtime::load(&root) {
        Ok(rt) => {
            checks.push(Check::ok(
                "config_load",
                format!(
                    "{} plugin(s), {} schedule(s) loaded",
                    rt.registry.plugins().count(),
                    rt.schedules.len()
                ),
            ));
            checks.extend(ledger_checks(&rt, now));
            Report {
                kind: "selfcheck",
                checks,
            }
        }
        Err(e) => {
            checks.push(Check::fail(
                "config_load",
                e.to_string(),
                "fix the file and key named above, then run `ductile config check`",
            ));
            rest_skipped(checks, "the config did not load")
        }
    }
}

/// Selfcheck of a runtime already loaded (the daemon's own, for
/// `GET /system/selfcheck`).
pub fn selfcheck_loaded(rt: &Runtime, now: DateTime<Utc>) -> Report {
    let mut checks = vec![
        Check::ok(
            "config_discovery",
            format!("config at {}", rt.root.display()),
        ),
        Check::ok(
            "config_load",
            format!(
                "{} plugin(s), {} schedule(s) loaded",
                rt.registry.plugins().count(),
                rt.schedules.len()
            ),
        ),
    ];
    checks.extend(ledger_checks(rt, now));
    Report {
        kind: "selfcheck",
        checks,
    }
}

const LEDGER_CHECKS: [&str; 3] = ["db_integrity", "db_schema", "queue_terminal_freshness"];

fn rest_skipped(mut checks: Vec<Check>, why: &str) -> Report {
    for name in ["config_load", "pid_lock"].into_iter().chain(LEDGER_CHECKS) {
        if !checks.iter().any(|c| c.name == name) {
            checks.push(Check::skipped(name, why));
        }
    }
    Report {
        kind: "selfcheck",
        checks,
    }
}

/// `pid_lock` and, when nobody else holds the lock, the three ledger checks.
fn ledger_checks(rt: &Runtime, now: DateTime<Utc>) -> Vec<Check> {
    let db = &rt.config.state.path;
    let mut checks = Vec::new();
    if !db.exists() {
        checks.push(Check::ok(
            "pid_lock",
            "not held: no ledger yet, so no ductile process uses it",
        ));
        let why = format!(
            "no ledger at {} yet (the daemon creates it at its first start)",
            db.display()
        );
        checks.extend(LEDGER_CHECKS.map(|n| Check::skipped(n, why.clone())));
        return checks;
    }
    let held = match InstanceLock::try_acquire(db, Role::Maintenance) {
        Ok(Some(held)) => held,
        Ok(None) => {
            // The kernel reports no holder to the holder itself: then it is
            // this process (a daemon answering `GET /system/selfcheck`).
            let who = lock::holder(db)
                .map(|h| h.describe())
                .unwrap_or_else(|| format!("this ductile daemon (pid {})", std::process::id()));
            checks.push(Check::ok("pid_lock", format!("held by {who}")));
            let why =
                format!("{who} holds the lock; stop it to run the ledger checks (WAL safety)");
            checks.extend(LEDGER_CHECKS.map(|n| Check::skipped(n, why.clone())));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail(
                "pid_lock",
                e.to_string(),
                "make the state directory and ductile.lock readable and writable by this user",
            ));
            checks.extend(LEDGER_CHECKS.map(|n| Check::skipped(n, "the lock could not be taken")));
            return checks;
        }
    };
    checks.push(Check::ok(
        "pid_lock",
        "not held: no ductile process uses the ledger",
    ));
    let shown = db.display().to_string();
    let conn = match Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail(
                "db_integrity",
                format!("{shown}: cannot open: {e}"),
                "check the file's permissions, or restore a backup with `ductile system restore`",
            ));
            checks.extend(
                LEDGER_CHECKS[1..]
                    .iter()
                    .map(|n| Check::skipped(*n, "the ledger could not be opened")),
            );
            return checks;
        }
    };
    checks.push(integrity(&conn, &shown));
    let schema_ok = match schema::verify(&conn, &shown, Depth::Thorough) {
        Ok(()) => {
            checks.push(Check::ok(
                "db_schema",
                format!(
                    "schema version {} as this ductile expects",
                    schema::SCHEMA_VERSION
                ),
            ));
            true
        }
        Err(e) => {
            let remedy = match &e {
                StoreError::NeedsMigration { .. } => "run `ductile system migrate`",
                _ => {
                    "restore a backup (`ductile system restore`) or point state.path at a fresh file"
                }
            };
            checks.push(Check::fail("db_schema", e.to_string(), remedy));
            false
        }
    };
    if schema_ok {
        checks.push(freshness(&conn, rt, now));
    } else {
        checks.push(Check::skipped(
            "queue_terminal_freshness",
            "the schema does not match",
        ));
    }
    drop(conn);
    drop(held);
    checks
}

/// `PRAGMA integrity_check`, the full one (selfcheck is offline; the daemon's
/// start-up runs the bounded `quick_check`).
fn integrity(conn: &Connection, shown: &str) -> Check {
    let rows: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA integrity_check(10)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {
            Check::ok("db_integrity", "PRAGMA integrity_check: ok")
        }
        Ok(rows) => Check::fail(
            "db_integrity",
            format!("{shown}: {}", rows.join("; ")),
            "stop ductile and restore the last good backup (`ductile system restore`)",
        ),
        Err(e) => Check::fail(
            "db_integrity",
            format!("{shown}: {e}"),
            "stop ductile and restore the last good backup (`ductile system restore`)",
        ),
    }
}

/// Terminal `job_queue` rows past `service.job_queue_retention` (with a
/// slack of two ticks or an hour, since retention runs once a tick).
fn freshness(conn: &Connection, rt: &Runtime, now: DateTime<Utc>) -> Check {
    let svc = &rt.config.service;
    let slack = (svc.tick_interval * 2).max(std::time::Duration::from_secs(3600));
    let window = svc.job_queue_retention.saturating_add(slack);
    let cutoff = chrono::Duration::from_std(window)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let stale: Result<i64, rusqlite::Error> = conn.query_row(
        "SELECT COUNT(*) FROM job_queue WHERE completed_at < ?1 AND status IN ('succeeded','failed','timed_out','dead')",
        [format_ts(cutoff)],
        |r| r.get(0),
    );
    match stale {
        Ok(0) => Check::ok(
            "queue_terminal_freshness",
            format!("no finished job older than {}", format_ts(cutoff)),
        ),
        Ok(n) => Check::fail(
            "queue_terminal_freshness",
            format!(
                "{n} finished job(s) completed before {} are still in job_queue (retention is behind)",
                format_ts(cutoff)
            ),
            "start the daemon: retention prunes them on its next tick (service.job_queue_retention)",
        ),
        Err(e) => Check::fail(
            "queue_terminal_freshness",
            format!("cannot count finished jobs: {e}"),
            "run `ductile system selfcheck` again; if it persists, restore a backup",
        ),
    }
}
