//! `ductile relay send`: an event into the outbox, delivered here when no
//! daemon runs (like `ductile run`), else handed to the daemon's workers.
//! `ductile relay peers`: the trusted inbound peers of `relay-ingress.yaml`
//! beside what the ledger knows of each (last accepted event, refusals). It
//! reads the config and the ledger directly, with or without a daemon.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Args, CliError, output};
use crate::clock::{Clock, SystemClock};
use crate::config::relay::Peer;
use crate::oneshot::{self, OneShotError};
use crate::relay::outbox::{self, Outgoing};
use crate::runtime::Runtime;
use crate::store;
use crate::store::queue::{self, Enqueued, JobStatus, SubmittedBy};

/// `relay send <instance> --event TYPE --payload JSON [...]`.
pub fn send(args: &Args, positionals: &[String]) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Arc::new(Runtime::load(&root)?);
    let name = positionals[0].as_str();
    let Some(instance) = rt.config.relay.instance(name) else {
        let names: Vec<&str> = rt
            .config
            .relay
            .instances
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        let known = if names.is_empty() {
            " (no instance is configured: add `instances:` in relay-instances.yaml)".to_string()
        } else {
            format!(
                " (configured: {}){}",
                names.join(", "),
                crate::suggest::hint(name, &names)
            )
        };
        return Err(CliError::Usage(format!(
            "`{name}` is not a relay instance{known}"
        )));
    };
    let event_type = args
        .flag("event")
        .ok_or_else(|| CliError::Usage("--event TYPE is required".into()))?;
    let payload = match super::run::read_payload(args)? {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let baggage = match args.flag("baggage") {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(CliError::Usage("--baggage must be a JSON object".into())),
            Err(e) => {
                return Err(CliError::Usage(format!("--baggage is not valid JSON: {e}")));
            }
        },
    };
    let text = |flag: &str| args.flag(flag).map(str::to_string);
    let event = Outgoing {
        event_type: event_type.to_string(),
        payload,
        dedupe_key: text("dedupe-key"),
        origin_plugin: text("origin-plugin"),
        origin_job_id: text("origin-job-id"),
        origin_event_id: text("origin-event-id"),
        baggage,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let job = outbox::job(
        instance,
        &rt.config.service.name,
        &event,
        &id,
        SubmittedBy::Cli,
    )
    .map_err(|e| CliError::Usage(e.0))?;
    if args.dry_run {
        let plan = json!({"dry_run": true, "would_enqueue": {"plugin": job.plugin, "command": job.command, "payload": job.payload, "max_attempts": job.max_attempts}, "url": instance.url()});
        if args.json {
            output::json(&plan);
        } else {
            output::text(&format!(
                "dry run: would put `{event_type}` in the outbox for `{name}` ({}) (nothing was changed)",
                instance.url()
            ));
        }
        return Ok(());
    }
    crate::disk::admit(&rt.config.state).map_err(|r| CliError::Failed(r.to_string()))?;
    let clock = SystemClock;
    // A ready daemon owns delivery: the row is committed and the daemon woken,
    // and the command returns without waiting for a receiver that may be down.
    if let Some(daemon) = crate::lock::ready_daemon(&rt.config.state.path) {
        let mut conn = store::open(&rt.config.state.path, rt.config.state.synchronous)?;
        let id = match queue::enqueue(&mut conn, &job, rt.config.service.dedupe_ttl, clock.now())? {
            Enqueued::Created(id) | Enqueued::Deduplicated(id) => id,
        };
        let _ = daemon.signal(libc::SIGUSR1);
        let note = format!(
            "queued in the outbox; the daemon (pid {}) delivers it (`ductile job show {id}`)",
            daemon.pid()
        );
        return send_report(args, &id, name, JobStatus::Queued, None, None, Some(&note));
    }
    match oneshot::run(&rt, &job, &clock, &|line| output::notice(line)) {
        Ok(r) => {
            let note = match r.status {
                JobStatus::Queued => Some(format!(
                    "the event stays in the outbox and is retried by the daemon (`ductile system start`), attempt {} of {}",
                    2.min(job.max_attempts),
                    job.max_attempts
                )),
                _ => r.note.clone(),
            };
            send_report(
                args,
                &r.id,
                name,
                r.status,
                r.last_error.as_deref(),
                r.response.as_ref(),
                note.as_deref(),
            )
        }
        Err(OneShotError::Store(e)) => Err(e.into()),
        Err(OneShotError::Lock(e)) => Err(e.into()),
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}

/// Prints how a send ended: 0 delivered or queued with a daemon, 75 left in
/// the outbox for a retry, 1 refused for good.
fn send_report(
    args: &Args,
    id: &str,
    instance: &str,
    status: JobStatus,
    error: Option<&str>,
    response: Option<&Value>,
    note: Option<&str>,
) -> Result<(), CliError> {
    let result = response.and_then(|r| r.get("result")).cloned();
    let remote = response.and_then(|r| r.get("remote")).cloned();
    let handed_over = status == JobStatus::Queued && error.is_none();
    if args.json {
        output::json(&json!({
            "job_id": id,
            "instance": instance,
            "status": status.as_str(),
            "result": result,
            "remote": remote,
            "error": error,
            "note": note,
        }));
    } else {
        let mut text = format!("job {id} {status} (relay send to {instance})\n");
        if let Some(r) = result.as_ref().and_then(Value::as_str) {
            text.push_str(&format!("result: {r}\n"));
        }
        if let Some(e) = error {
            text.push_str(&format!("error: {e}\n"));
        }
        if let Some(n) = note {
            text.push_str(&format!("note: {n}\n"));
        }
        output::text(&text);
    }
    match status {
        JobStatus::Succeeded => Ok(()),
        JobStatus::Queued if handed_over => Ok(()),
        JobStatus::Queued => Err(CliError::Exit(75)),
        _ => Err(CliError::Exit(1)),
    }
}

/// `relay status [--json]`: per instance, its outbox and its breaker.
pub fn status(args: &Args) -> Result<(), CliError> {
    let loaded = crate::config::load(&super::config_root(args)?)?;
    let config = loaded.config;
    let conn = if config.state.path.exists() {
        Some(store::open_read_only(&config.state.path)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for i in &config.relay.instances {
        let (outbox, breaker) = match &conn {
            Some(c) => {
                let (plugin, command) = outbox::breaker_key(&i.name);
                (
                    store::relay::outbox(c, &i.name)?,
                    store::breakers::find(c, &plugin, command)?,
                )
            }
            None => (store::relay::Outbox::default(), None),
        };
        rows.push(json!({
            "name": i.name,
            "enabled": i.enabled,
            "url": i.url(),
            "key_id": i.key_id,
            "allow": i.allow,
            "outbox": outbox,
            "depth": outbox.queued + outbox.running,
            "breaker": breaker.as_ref().map_or("closed", |b| b.state.as_str()),
            "breaker_failures": breaker.as_ref().map_or(0, |b| b.failure_count),
        }));
    }
    if args.json {
        output::json(&json!({"sender": config.service.name, "instances": rows}));
        return Ok(());
    }
    if rows.is_empty() {
        output::text("no relay instance is configured (`instances:` in relay-instances.yaml)");
        return Ok(());
    }
    let mut out = format!(
        "{:<16} {:<8} {:>6} {:>9} {:>7} {:<10} {:<24}  LAST ERROR\n",
        "INSTANCE", "ENABLED", "DEPTH", "DELIVERED", "FAILED", "BREAKER", "LAST SUCCESS"
    );
    for r in &rows {
        let o = &r["outbox"];
        out.push_str(&format!(
            "{:<16} {:<8} {:>6} {:>9} {:>7} {:<10} {:<24}  {}\n",
            r["name"].as_str().unwrap_or(""),
            if r["enabled"] == Value::Bool(true) {
                "yes"
            } else {
                "no"
            },
            r["depth"],
            o["delivered"],
            o["failed"],
            r["breaker"].as_str().unwrap_or(""),
            o["last_success_at"].as_str().unwrap_or("never"),
            match (o["last_error_at"].as_str(), o["last_error"].as_str()) {
                (Some(at), Some(e)) => format!("{at}: {e}"),
                _ => "-".to_string(),
            }
        ));
    }
    output::text(&out);
    Ok(())
}

/// `relay peers [--json]`.
pub fn peers(args: &Args) -> Result<(), CliError> {
    let loaded = crate::config::load(&super::config_root(args)?)?;
    let config = loaded.config;
    let Some(ingress) = &config.relay.ingress else {
        if args.json {
            output::json(&json!({"listen_path": null, "peers": []}));
        } else {
            output::text("no relay ingress is configured (`remote_ingress` in relay-ingress.yaml)");
        }
        return Ok(());
    };
    let conn = if config.state.path.exists() {
        Some(store::open_read_only(&config.state.path)?)
    } else {
        None
    };
    let mut rows = Vec::new();
    for p in &ingress.peers {
        let (last, refused) = match &conn {
            Some(c) => ledger_view(c, p)?,
            None => (None, 0),
        };
        rows.push(json!({
            "name": p.name,
            "enabled": p.enabled,
            "path": format!("{}/{}", ingress.listen_path, p.name),
            "key_ids": p.keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
            "accept": p.accept,
            "baggage_allow": p.baggage_allow,
            "last_accepted_at": last,
            "refusals": refused,
        }));
    }
    if args.json {
        output::json(&json!({"listen_path": ingress.listen_path, "peers": rows}));
        return Ok(());
    }
    let mut out = format!(
        "{:<20} {:<8} {:<12} {:<24} {:>8}  PATH\n",
        "PEER", "ENABLED", "KEY IDS", "LAST ACCEPTED", "REFUSED"
    );
    for r in &rows {
        let ids: Vec<&str> = r["key_ids"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap_or("-")).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20} {:<8} {:<12} {:<24} {:>8}  {}\n",
            r["name"].as_str().unwrap_or(""),
            if r["enabled"] == Value::Bool(true) {
                "yes"
            } else {
                "no"
            },
            ids.join(","),
            r["last_accepted_at"].as_str().unwrap_or("never"),
            r["refusals"],
            r["path"].as_str().unwrap_or("")
        ));
    }
    output::text(&out);
    Ok(())
}

/// The peer's last accepted event and how many requests naming it were refused.
fn ledger_view(conn: &rusqlite::Connection, p: &Peer) -> Result<(Option<String>, i64), CliError> {
    let scope = format!("relay:{}", p.name);
    let last: Option<String> = conn
        .query_row(
            "SELECT max(created_at) FROM job_queue WHERE plugin = 'relay' AND submitted_by = ?1",
            [&scope],
            |r| r.get(0),
        )
        .map_err(|e| store::StoreError::sqlite("read the last relay acceptance", e))?;
    let refused: i64 = conn
        .query_row(
            "SELECT coalesce(sum(count), 0) FROM decisions WHERE kind = 'relay_rejected' AND scope = ?1",
            [&scope],
            |r| r.get(0),
        )
        .map_err(|e| store::StoreError::sqlite("count relay refusals", e))?;
    Ok((last, refused))
}
