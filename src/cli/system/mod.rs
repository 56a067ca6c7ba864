//! `ductile system start|status|reload|reset|breaker`; `backup` holds
//! `backup` and `restore`, `doctor` holds `selfcheck`, `doctor` and `skills`.

pub mod backup;
pub mod doctor;
pub mod watch;

pub use backup::{backup, restore};

use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::clock::{Clock, SystemClock};
use crate::lock;
use crate::runtime::Runtime;
use crate::store::{self, breakers, health, migrate, queue, schedules, snapshots};

/// `ductile system start`: the daemon, in the foreground.
pub fn start(args: &Args) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    if args.dry_run {
        let rt = Runtime::load(&root)?;
        output::text(&format!(
            "dry run: would start ductile with {} plugin(s), {} worker(s), database {}",
            rt.registry.plugins().count(),
            rt.config.service.max_workers,
            rt.config.state.path.display()
        ));
        return Ok(());
    }
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let started = |s: &crate::daemon::Started| {
        if on_terminal {
            let http = match s.listening.first() {
                Some(addr) => format!(" HTTP on http://{addr} (try `curl http://{addr}/healthz`)."),
                None => String::new(),
            };
            output::notice(&format!(
                "ductile is running (pid {}) with {} plugin(s) [{}] and {} worker(s); ledger {}.{http} In another terminal try `ductile system status --config {}` or `ductile run {} --config {}`; Ctrl-C stops it.",
                s.pid,
                s.plugins.len(),
                s.plugins.join(", "),
                s.workers,
                s.db.display(),
                s.config.display(),
                s.plugins.first().map(String::as_str).unwrap_or("<plugin>"),
                s.config.display(),
            ));
        }
    };
    crate::daemon::run(&root, &started).map_err(|e| match e {
        crate::daemon::DaemonError::Config(m) => CliError::Config(m),
        crate::daemon::DaemonError::Failed(m) => CliError::Failed(m),
    })
}

/// `ductile system reload`: validates the config, signals the ready daemon
/// (SIGHUP, through a pidfd), then waits for its verdict in the ledger: the
/// daemon records every reload it applies or rejects.
pub fn reload(args: &Args) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let db = &rt.config.state.path;
    let Some(daemon) = lock::ready_daemon(db) else {
        return Err(CliError::Failed(match lock::holder(db) {
            Some(h) => format!(
                "no ductile daemon runs on {}: {} holds it, and only a daemon reloads; nothing was signalled",
                db.display(),
                h.describe()
            ),
            None => format!(
                "no running ductile daemon uses {}; nothing to reload (a daemon started with another state.path is not reloaded: a changed state.path needs a restart)",
                db.display()
            ),
        }));
    };
    let pid = daemon.pid();
    if args.dry_run {
        output::text(&format!(
            "dry run: config is valid; would send SIGHUP to ductile (pid {pid})"
        ));
        return Ok(());
    }
    let conn = store::open_read_only(db)?;
    let before = snapshots::latest_id(&conn)?;
    daemon
        .signal(libc::SIGHUP)
        .map_err(|e| CliError::Failed(format!("cannot signal ductile (pid {pid}): {e}")))?;
    let verdict = wait_for_verdict(&conn, &daemon, before)?;
    match verdict.strip_prefix(snapshots::REJECTED) {
        Some(why) => Err(CliError::Config(format!(
            "ductile (pid {pid}) rejected the reload and keeps its running config: {why}"
        ))),
        None if args.json => {
            output::json(&json!({"reloaded": true, "pid": pid, "config": root}));
            Ok(())
        }
        None => {
            output::text(&format!("ductile (pid {pid}) reloaded {}", root.display()));
            Ok(())
        }
    }
}

/// How long `system reload` waits for the daemon's verdict.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits for the first config snapshot after `before` (the daemon's record of
/// the reload), or for the daemon to exit; wakes on writes to the ledger.
fn wait_for_verdict(
    conn: &rusqlite::Connection,
    daemon: &lock::DaemonHandle,
    before: i64,
) -> Result<String, CliError> {
    let deadline = std::time::Instant::now() + RELOAD_WAIT;
    let db = conn
        .path()
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let watch = crate::sys::Inotify::new().and_then(|w| {
        w.watch(
            db.parent().unwrap_or(std::path::Path::new(".")),
            crate::sys::WATCH_CHANGES,
        )
        .map(|()| w)
    });
    loop {
        if let Some(reason) = snapshots::reason_after(conn, before)? {
            return Ok(reason);
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return Err(CliError::Failed(format!(
                "ductile (pid {}) did not confirm the reload within {}s; see its log",
                daemon.pid(),
                RELOAD_WAIT.as_secs()
            )));
        }
        let mut set = crate::sys::PollSet::default();
        if let Ok(w) = &watch {
            set.push(w.fd(), crate::sys::Interest::Read);
        }
        let exit_at = set.push(daemon.exit_fd(), crate::sys::Interest::Read);
        set.wait(Some(
            (deadline - now).min(std::time::Duration::from_secs(1)),
        ));
        if let Ok(w) = &watch {
            w.drain();
        }
        if set.ready(exit_at) && snapshots::reason_after(conn, before)?.is_none() {
            return Err(CliError::Failed(format!(
                "ductile (pid {}) exited before confirming the reload",
                daemon.pid()
            )));
        }
    }
}

/// `ductile system migrate [--dry-run]`: upgrades an older ledger. Needs the
/// ledger to itself (no daemon, no one-shot); copies the file first.
pub fn migrate(args: &Args) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let db = &rt.config.state.path;
    if !db.exists() {
        return Err(CliError::Failed(format!(
            "{} does not exist; there is nothing to migrate (ductile creates a new ledger when it starts)",
            db.display()
        )));
    }
    let Some(_held) = lock::InstanceLock::try_acquire(db, lock::Role::Maintenance)? else {
        let who = lock::holder(db)
            .map(|h| h.describe())
            .unwrap_or_else(|| "another ductile process".into());
        return Err(CliError::Failed(format!(
            "{who} is using {}; stop it before migrating",
            db.display()
        )));
    };
    let mut conn = store::open_for_migration(db, rt.config.state.synchronous)?;
    let shown = db.display().to_string();
    let plan = migrate::plan(&conn, &shown)?;
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .map(|s| json!({"from": s.from, "to": s.from + 1, "summary": s.summary}))
        .collect();
    if plan.steps.is_empty() {
        if args.json {
            output::json(
                &json!({"database": db, "version": plan.to, "migrated": false, "steps": steps}),
            );
        } else {
            output::text(&format!(
                "{} is already at schema version {}; nothing to do",
                db.display(),
                plan.to
            ));
        }
        return Ok(());
    }
    let backup = db.with_file_name(format!(
        "{}.v{}-{}.bak",
        db.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        plan.from,
        SystemClock.now().format("%Y%m%dT%H%M%SZ")
    ));
    if args.dry_run {
        if args.json {
            output::json(
                &json!({"dry_run": true, "database": db, "from": plan.from, "to": plan.to, "backup": backup, "steps": steps}),
            );
        } else {
            let mut out = format!(
                "dry run: would back {} up to {}, then migrate it from schema version {} to {} in one transaction:\n",
                db.display(),
                backup.display(),
                plan.from,
                plan.to
            );
            for s in &plan.steps {
                out.push_str(&format!("  {} -> {}: {}\n", s.from, s.from + 1, s.summary));
            }
            out.push_str("nothing was changed\n");
            output::text(&out);
        }
        return Ok(());
    }
    migrate::backup(&conn, &backup)?;
    migrate::apply(&mut conn, &plan, &shown)?;
    let vacuumed = migrate::enable_incremental_vacuum(&conn)?;
    if args.json {
        output::json(
            &json!({"database": db, "from": plan.from, "to": plan.to, "backup": backup, "migrated": true, "steps": steps, "incremental_vacuum_enabled": vacuumed}),
        );
    } else {
        let mut out = format!(
            "migrated {} from schema version {} to {} (backup of the old file: {})\n",
            db.display(),
            plan.from,
            plan.to,
            backup.display()
        );
        for s in &plan.steps {
            out.push_str(&format!("  {} -> {}: {}\n", s.from, s.from + 1, s.summary));
        }
        if vacuumed {
            out.push_str(
                "  switched the file to incremental auto-vacuum (retention now gives space back)\n",
            );
        }
        output::text(&out);
    }
    Ok(())
}

/// `ductile system reset <plugin> [--command poll]`: closes a circuit breaker.
pub fn reset(args: &Args, plugin: &str) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let command = args.flag("command").unwrap_or("poll");
    if args.dry_run {
        output::text(&format!(
            "dry run: would reset the circuit breaker of {plugin}/{command} to closed"
        ));
        return Ok(());
    }
    let conn = store::open(&rt.config.state.path, rt.config.state.synchronous)?;
    let changed = breakers::reset(&conn, plugin, command, SystemClock.now())?;
    if args.json {
        output::json(
            &json!({"plugin": plugin, "command": command, "state": "closed", "changed": changed}),
        );
    } else if changed {
        output::text(&format!(
            "circuit breaker {plugin}/{command} reset to closed"
        ));
    } else {
        output::text(&format!(
            "circuit breaker {plugin}/{command} has no recorded failures; nothing to reset"
        ));
    }
    Ok(())
}

/// `ductile system breaker <plugin>`: current state and recent transitions.
pub fn breaker(args: &Args, plugin: &str) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let conn = store::open_read_only(&rt.config.state.path)?;
    let current = breakers::for_plugin(&conn, plugin)?;
    let history = breakers::history(&conn, plugin, 20)?;
    if args.json {
        output::json(&json!({
            "plugin": plugin,
            "breakers": current,
            "transitions": history.iter().map(|(c, t)| json!({"command": c, "from_state": t.from_state, "to_state": t.to_state, "failure_count": t.failure_count, "reason": t.reason, "job_id": t.job_id, "created_at": t.created_at})).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut out = String::new();
    if current.is_empty() {
        out.push_str(&format!("{plugin}: no circuit breaker recorded (closed)\n"));
    }
    for b in &current {
        out.push_str(&format!(
            "{}/{}: {} (failures {}, opened {})\n",
            b.plugin,
            b.command,
            b.state,
            b.failure_count,
            b.opened_at.as_deref().unwrap_or("-")
        ));
    }
    for (c, t) in &history {
        out.push_str(&format!(
            "  {} {c}: {} -> {} ({}, failures {})\n",
            t.created_at,
            t.from_state.as_deref().unwrap_or("-"),
            t.to_state,
            t.reason,
            t.failure_count
        ));
    }
    output::text(&out);
    Ok(())
}

/// `ductile system status`: lock holder, queue depth, plugin health, breakers, schedules, last runs.
pub fn status(args: &Args) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let db = &rt.config.state.path;
    let holder = lock::holder(db);
    let pid = holder.filter(|h| h.ready).map(|h| h.pid);
    let mut doc = json!({
        "running": pid.is_some(),
        "pid": pid,
        "lock_holder": holder.map(|h| json!({"pid": h.pid, "role": h.role.map(lock::Role::as_str), "ready": h.ready})),
        "config": root,
        "database": db,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if db.exists() {
        let conn = store::open_read_only(db)?;
        let queue: serde_json::Map<String, Value> = queue::depth_by_status(&conn)?
            .into_iter()
            .map(|(s, n)| (s, json!(n)))
            .collect();
        let healths = health::all(&conn)?;
        let open = breakers::not_closed(&conn)?;
        let mut plugins = Vec::new();
        for p in rt.registry.plugins() {
            let last = queue::last_run(&conn, &p.name)?;
            let h = healths.iter().find(|h| h.plugin == p.name);
            plugins.push(json!({
                "name": p.name,
                "health": h.map(|h| h.status.as_str()).unwrap_or("unknown"),
                "health_error": h.and_then(|h| h.last_error.clone()),
                "breakers": open.iter().filter(|b| b.plugin == p.name).map(|b| json!({"command": b.command, "state": b.state, "failure_count": b.failure_count})).collect::<Vec<_>>(),
                "last_run": last.map(|l| json!({"status": l.status, "completed_at": l.completed_at, "error": l.last_error})),
            }));
        }
        doc["queue"] = Value::Object(queue);
        doc["plugins"] = Value::Array(plugins);
        doc["schedules"] = serde_json::to_value(schedules::all(&conn)?).unwrap_or(Value::Null);
    } else {
        doc["queue"] = json!({});
        doc["plugins"] = json!([]);
        doc["schedules"] = json!([]);
    }
    if args.json {
        output::json(&doc);
        return Ok(());
    }
    let mut out = String::new();
    match holder {
        Some(h) if h.ready => out.push_str(&format!("ductile is running (pid {})\n", h.pid)),
        Some(h) => out.push_str(&format!(
            "no daemon is running; {} holds the ledger\n",
            h.describe()
        )),
        None => out.push_str("ductile is not running\n"),
    }
    out.push_str(&format!("database: {}\n", db.display()));
    if let Some(q) = doc["queue"].as_object() {
        let parts: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "queue: {}\n",
            if parts.is_empty() {
                "empty".to_string()
            } else {
                parts.join(" ")
            }
        ));
    }
    for p in doc["plugins"].as_array().into_iter().flatten() {
        let last = p["last_run"]
            .as_object()
            .map(|l| {
                format!(
                    "last {} at {}",
                    l["status"].as_str().unwrap_or("?"),
                    l["completed_at"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "never run".into());
        let brk: Vec<String> = p["breakers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "breaker {} {}",
                    b["command"].as_str().unwrap_or("?"),
                    b["state"].as_str().unwrap_or("?")
                )
            })
            .collect();
        out.push_str(&format!(
            "plugin {}: health {}; {}{}\n",
            p["name"].as_str().unwrap_or("?"),
            p["health"].as_str().unwrap_or("?"),
            last,
            if brk.is_empty() {
                String::new()
            } else {
                format!("; {}", brk.join(", "))
            }
        ));
    }
    for s in doc["schedules"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "schedule {}/{}: {} next {}\n",
            s["plugin"].as_str().unwrap_or("?"),
            s["schedule_id"].as_str().unwrap_or("?"),
            s["status"].as_str().unwrap_or("?"),
            s["next_run_at"].as_str().unwrap_or("-")
        ));
    }
    output::text(&out);
    Ok(())
}
