//! `ductile system start|status|reload|reset|breaker`.

use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::clock::{Clock, SystemClock};
use crate::lock;
use crate::runtime::Runtime;
use crate::store::{self, breakers, health, queue, schedules};

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
    crate::daemon::run(&root).map_err(|e| match e {
        crate::daemon::DaemonError::Config(m) => CliError::Config(m),
        crate::daemon::DaemonError::Failed(m) => CliError::Failed(m),
    })
}

/// `ductile system reload`: validates the config, then sends SIGHUP to the daemon.
pub fn reload(args: &Args) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Runtime::load(&root)?;
    let lock_path = lock::path_for(&rt.config.state.path);
    let Some(pid) = lock::holder(&lock_path) else {
        return Err(CliError::Failed(format!(
            "no running ductile holds {}; nothing to reload",
            lock_path.display()
        )));
    };
    if args.dry_run {
        output::text(&format!(
            "dry run: config is valid; would send SIGHUP to ductile (pid {pid})"
        ));
        return Ok(());
    }
    lock::signal_holder(&lock_path, libc::SIGHUP)
        .map_err(|e| CliError::Failed(format!("cannot signal ductile (pid {pid}): {e}")))?;
    if args.json {
        output::json(&json!({"reloaded": true, "pid": pid}));
    } else {
        output::text(&format!(
            "sent SIGHUP to ductile (pid {pid}); it reloads {}",
            root.display()
        ));
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
    let pid = lock::holder(&lock::path_for(db));
    let mut doc = json!({
        "running": pid.is_some(),
        "pid": pid,
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
            let last: Option<(String, String, Option<String>)> = conn
                .query_row(
                    "SELECT status, completed_at, last_error FROM job_log WHERE plugin = ?1 ORDER BY completed_at DESC LIMIT 1",
                    [&p.name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .ok();
            let h = healths.iter().find(|h| h.plugin == p.name);
            plugins.push(json!({
                "name": p.name,
                "health": h.map(|h| h.status.as_str()).unwrap_or("unknown"),
                "health_error": h.and_then(|h| h.last_error.clone()),
                "breakers": open.iter().filter(|b| b.plugin == p.name).map(|b| json!({"command": b.command, "state": b.state, "failure_count": b.failure_count})).collect::<Vec<_>>(),
                "last_run": last.map(|(s, at, e)| json!({"status": s, "completed_at": at, "error": e})),
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
    match pid {
        Some(pid) => out.push_str(&format!("ductile is running (pid {pid})\n")),
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
