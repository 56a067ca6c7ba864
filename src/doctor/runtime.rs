//! `doctor`: the running system's health, read from the config in force and
//! the ledger (a read connection; nothing is written). Plugin `health`
//! commands run as plain invocations outside the queue, all at once, each
//! bounded by its own `timeouts.health`: a diagnostic is not a job.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::Value;

use super::{Check, Report};
use crate::clock::parse_ts;
use crate::disk;
use crate::plugin::Plugin;
use crate::plugin::protocol::{self, Request};
use crate::plugin::spawn::{self, CancelToken, Invocation, Limits, OutcomeKind};
use crate::runtime::Runtime;
use crate::store::{breakers, schedules};

/// A WAL larger than this means checkpoints are being held back.
const WAL_WARN: u64 = 64 * 1024 * 1024;
/// Time past a job's own timeout before it counts as stuck: the runner's
/// TERM→KILL grace and the completion transaction fit well inside it.
const STUCK_SLACK: Duration = Duration::from_secs(60);

/// What doctor reads the ledger's checks from.
#[derive(Debug)]
pub enum Ledger<'a> {
    /// A read connection.
    Open(&'a Connection),
    /// No ledger file yet (the daemon creates it): its checks are skipped.
    Missing,
    /// The ledger could not be opened; the text says why.
    Unreadable(String),
}

impl Ledger<'_> {
    /// Opens the ledger at `db` read-only for doctor: a missing file or one
    /// that cannot be read is a finding, not an error.
    pub fn open(db: &std::path::Path) -> Result<Connection, String> {
        crate::store::open_read_only(db).map_err(|e| e.to_string())
    }
}

/// Runs every doctor check against the config in force and the ledger.
pub fn doctor(rt: &Runtime, ledger: Ledger<'_>, now: DateTime<Utc>) -> Report {
    let mut checks = health_checks(rt, now);
    checks.extend(container_checks(rt));
    checks.push(disk_check(rt));
    checks.push(wal_check(rt));
    match ledger {
        Ledger::Open(conn) => {
            checks.extend(breaker_checks(conn));
            checks.push(stuck_check(rt, conn, now));
            checks.extend(schedule_checks(conn));
            checks.extend(super::relay::checks(rt, conn, now));
        }
        Ledger::Missing => {
            let why = format!("no ledger at {} yet", rt.config.state.path.display());
            for name in ["breakers", "stuck_jobs", "schedules"] {
                checks.push(Check::skipped(name, why.clone()));
            }
        }
        Ledger::Unreadable(why) => {
            checks.push(Check::fail(
                "ledger",
                why,
                "run `ductile system selfcheck` (with the daemon stopped) to see what is wrong with it",
            ));
            for name in ["breakers", "stuck_jobs", "schedules"] {
                checks.push(Check::skipped(name, "the ledger could not be opened"));
            }
        }
    }
    Report {
        kind: "doctor",
        checks,
    }
}

/// One `plugin_health.<name>` per loaded plugin, in name order; the health
/// commands run in parallel so the slowest bounds the whole.
fn health_checks(rt: &Runtime, now: DateTime<Utc>) -> Vec<Check> {
    let plugins: Vec<&std::sync::Arc<Plugin>> = rt.registry.plugins().collect();
    std::thread::scope(|scope| {
        let running: Vec<_> = plugins
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let name = format!("plugin_health.{}", p.name);
                if p.manifest.command("health").is_none() {
                    return Err(Check::skipped(
                        name,
                        "the plugin declares no health command",
                    ));
                }
                let probe_name = name.clone();
                Ok((name, scope.spawn(move || probe(rt, p, now, probe_name))))
            })
            .collect();
        running
            .into_iter()
            .map(|r| match r {
                Err(check) => check,
                Ok((name, handle)) => handle.join().unwrap_or_else(|_| {
                    Check::fail(name, "the health probe panicked", "report this as a bug")
                }),
            })
            .collect()
    })
}

/// One `container.<name>` per container plugin: its engine installed and its
/// image present locally (images are never pulled).
fn container_checks(rt: &Runtime) -> Vec<Check> {
    let engine = rt.config.service.container_engine.as_deref();
    rt.registry
        .plugins()
        .filter_map(|p| p.manifest.container.as_ref().map(|c| (p, c)))
        .map(|(p, c)| {
            let name = format!("container.{}", p.name);
            match crate::plugin::container::readiness(&p.name, c, engine) {
                Ok((e, id)) => Check::ok(name, format!("image {id} present in {}", e.name)),
                Err(nr) => Check::fail(name, nr.problem, nr.fix),
            }
        })
        .collect()
}

/// Runs `health` of one plugin and judges the answer.
fn probe(rt: &Runtime, p: &Plugin, now: DateTime<Utc>, name: String) -> Check {
    let timeout = p.conf.timeouts.for_command("health");
    let deadline = now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let empty = Value::Object(serde_json::Map::new());
    let context = serde_json::json!({"ductile_plugin": p.name});
    let job_id = format!("doctor-health-{}", p.name);
    let request = Request {
        protocol: protocol::PROTOCOL_VERSION,
        job_id: &job_id,
        command: "health",
        config: &p.conf.config,
        state: &empty,
        context: &context,
        event: None,
        deadline_at: crate::clock::format_ts(deadline),
    };
    let Ok(bytes) = protocol::encode(&request) else {
        return Check::fail(
            name,
            "the health request cannot be encoded",
            "report this as a bug",
        );
    };
    let inv = Invocation {
        job_id: &job_id,
        entrypoint: &p.entrypoint,
        args: &[],
        env_passthrough: &rt.config.service.plugin_env_passthrough,
        request: &bytes,
        limits: Limits {
            timeout,
            grace: Duration::from_secs(2),
            ..Limits::default()
        },
        response: protocol::ResponseLimits::default(),
    };
    let outcome = match &p.manifest.container {
        Some(spec) => {
            let host = crate::plugin::container::Host {
                engine: rt.config.service.container_engine.as_deref(),
                state_dir: disk::ledger_dir(&rt.config.state.path),
                instance: &rt.config.service.name,
                // Outside the queue: a container of its own, never the daemon's.
                resident: None,
                sources: None,
            };
            crate::plugin::container::run(spec, &inv, &host, &CancelToken::new())
        }
        None => spawn::run(&inv, &CancelToken::new()),
    };
    let took = outcome.duration.as_millis();
    match &outcome.kind {
        OutcomeKind::Succeeded(_) => Check::ok(name, format!("health ok in {took} ms")),
        _ => Check::fail(
            name,
            format!(
                "health failed: {}",
                outcome.error_message().unwrap_or_default()
            ),
            format!(
                "run `ductile run {} health` to see its output, then fix the plugin's config (plugins.{}) or its dependencies",
                p.name, p.name
            ),
        ),
    }
}

/// Free space for the ledger against `state.min_free_bytes`.
fn disk_check(rt: &Runtime) -> Check {
    let state = &rt.config.state;
    let dir = disk::ledger_dir(&state.path);
    match disk::free_for(&state.path) {
        Err(e) => Check::warn(
            "disk_free",
            format!("cannot read the free space of {}: {e}", dir.display()),
            "check that the state directory exists and is reachable",
        ),
        Ok(free) if free < state.min_free_bytes => Check::fail(
            "disk_free",
            format!(
                "{} free on {}, below state.min_free_bytes ({}): new work is refused",
                disk::human(free),
                dir.display(),
                disk::human(state.min_free_bytes)
            ),
            "free space on that file system (old backups, logs); intake resumes by itself within a second",
        ),
        Ok(free) if free < state.min_free_bytes.saturating_mul(2) => Check::warn(
            "disk_free",
            format!(
                "{} free on {}, less than twice state.min_free_bytes ({})",
                disk::human(free),
                dir.display(),
                disk::human(state.min_free_bytes)
            ),
            "free space soon: below the threshold the daemon stops admitting work",
        ),
        Ok(free) => Check::ok(
            "disk_free",
            format!("{} free on {}", disk::human(free), dir.display()),
        ),
    }
}

/// The size of the ledger's write-ahead log.
fn wal_check(rt: &Runtime) -> Check {
    let db = &rt.config.state.path;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    if crate::store::replication::litestream() {
        return litestream_wal_check(std::fs::metadata(&wal).ok().map(|m| m.len()), db);
    }
    match std::fs::metadata(&wal) {
        Err(_) => Check::ok("wal_size", "no write-ahead log (checkpointed)"),
        Ok(m) if m.len() > WAL_WARN => Check::warn(
            "wal_size",
            format!("the write-ahead log is {}", disk::human(m.len())),
            "a long-lived reader is holding checkpoints back: close other sqlite3 sessions on the ledger",
        ),
        Ok(m) => Check::ok(
            "wal_size",
            format!("the write-ahead log is {}", disk::human(m.len())),
        ),
    }
}

/// The WAL check when Litestream owns checkpointing: nothing in ductile
/// shrinks the log any more, so a large one means Litestream is not running
/// (or cannot keep up).
fn litestream_wal_check(len: Option<u64>, db: &std::path::Path) -> Check {
    let limit = crate::store::replication::WAL_WARN_BYTES;
    match len {
        None => Check::ok(
            "wal_size",
            "no write-ahead log yet (replication: litestream)",
        ),
        Some(n) if n > limit => Check::warn(
            "wal_size",
            format!(
                "the write-ahead log is {} (over {}) and state.replication is litestream, which leaves checkpoints to Litestream",
                disk::human(n),
                disk::human(limit)
            ),
            format!(
                "Litestream seems not to be running or not checkpointing: check `systemctl status` of the unit that runs `litestream replicate`, `litestream databases` lists {}, and `litestream ltx {}` shows recent files; its log names the error",
                db.display(),
                db.display()
            ),
        ),
        Some(n) => Check::ok(
            "wal_size",
            format!(
                "the write-ahead log is {} (checkpointed by Litestream)",
                disk::human(n)
            ),
        ),
    }
}

/// One check per breaker that is not closed (open fails, half-open warns).
fn breaker_checks(conn: &Connection) -> Vec<Check> {
    let list = match breakers::not_closed(conn) {
        Ok(list) => list,
        Err(e) => {
            return vec![Check::fail(
                "breakers",
                format!("cannot read the breakers: {e}"),
                "run `ductile system selfcheck` with the daemon stopped",
            )];
        }
    };
    if list.is_empty() {
        return vec![Check::ok("breakers", "every circuit breaker is closed")];
    }
    list.into_iter()
        .map(|b| {
            let name = format!("breaker.{}.{}", b.plugin, b.command);
            let detail = format!(
                "{} after {} consecutive failure(s) (opened {})",
                b.state,
                b.failure_count,
                b.opened_at.as_deref().unwrap_or("-")
            );
            let remedy = match b.plugin.strip_prefix("relay:") {
                Some(instance) => format!(
                    "deliveries to `{instance}` resume by themselves after the cooldown; see why with `ductile relay status`, or `ductile system reset {} --command {}` once it is fixed",
                    b.plugin, b.command
                ),
                None => format!(
                    "see why with `ductile job logs --plugin {} --status failed`; after fixing it, `ductile system reset {} --command {}`",
                    b.plugin, b.plugin, b.command
                ),
            };
            if b.state == "open" {
                Check::fail(name, detail, remedy)
            } else {
                Check::warn(name, detail, remedy)
            }
        })
        .collect()
}

/// A running job: id, plugin, command, started_at.
type Running = (String, String, String, Option<String>);

/// Jobs `running` for longer than their command's timeout allows.
fn stuck_check(rt: &Runtime, conn: &Connection, now: DateTime<Utc>) -> Check {
    let rows: Result<Vec<Running>, rusqlite::Error> = conn
        .prepare("SELECT id, plugin, command, started_at FROM job_queue WHERE status = 'running' ORDER BY started_at")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        });
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            return Check::fail(
                "stuck_jobs",
                format!("cannot read running jobs: {e}"),
                "run `ductile system selfcheck` with the daemon stopped",
            );
        }
    };
    let stuck: Vec<String> = rows
        .into_iter()
        .filter(|(_, plugin, command, started)| {
            let timeout = rt
                .registry
                .get(plugin)
                .map(|p| p.conf.timeouts.for_command(command))
                .unwrap_or(Duration::from_secs(60));
            let limit =
                chrono::Duration::from_std(timeout + STUCK_SLACK).unwrap_or(chrono::Duration::MAX);
            started
                .as_deref()
                .and_then(parse_ts)
                .is_some_and(|t| now.signed_duration_since(t) > limit)
        })
        .map(|(id, plugin, command, _)| format!("{id} ({plugin} {command})"))
        .collect();
    if stuck.is_empty() {
        return Check::ok("stuck_jobs", "no job is running past its timeout");
    }
    let shown: Vec<&str> = stuck.iter().take(5).map(String::as_str).collect();
    Check::fail(
        "stuck_jobs",
        format!(
            "{} job(s) running past their timeout: {}{}",
            stuck.len(),
            shown.join(", "),
            if stuck.len() > 5 { ", ..." } else { "" }
        ),
        "no worker owns them (a crashed holder): restart the daemon, which recovers them; `ductile job inspect <id>` shows their history",
    )
}

/// One check per schedule paused because its definition is invalid.
fn schedule_checks(conn: &Connection) -> Vec<Check> {
    let entries = match schedules::all(conn) {
        Ok(e) => e,
        Err(e) => {
            return vec![Check::fail(
                "schedules",
                format!("cannot read the schedules: {e}"),
                "run `ductile system selfcheck` with the daemon stopped",
            )];
        }
    };
    let invalid: Vec<Check> = entries
        .iter()
        .filter(|e| e.status == "paused_invalid")
        .map(|e| {
            Check::fail(
                format!("schedule.{}.{}", e.plugin, e.schedule_id),
                format!(
                    "paused_invalid: {}",
                    e.reason
                        .as_deref()
                        .unwrap_or("its definition does not compile")
                ),
                format!(
                    "fix plugins.{}.schedules (id {}) and run `ductile system reload`",
                    e.plugin, e.schedule_id
                ),
            )
        })
        .collect();
    if invalid.is_empty() {
        vec![Check::ok(
            "schedules",
            format!("{} schedule(s), none paused as invalid", entries.len()),
        )]
    } else {
        invalid
    }
}
