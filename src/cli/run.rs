//! `ductile run <plugin> [command]`: a one-shot that goes through the queue like
//! every other unit of work (idiom 1). With no daemon running it takes the
//! instance lock, enqueues, claims and executes its own job; when a daemon holds
//! the lock it enqueues, wakes the daemon (SIGUSR1) and waits for the job to end.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Args, CliError, output};
use crate::clock::{Clock, SystemClock, format_ts};
use crate::dispatch::{self, Executed};
use crate::lock::{self, InstanceLock, LockError};
use crate::plugin::spawn::CancelToken;
use crate::runtime::Runtime;
use crate::store;
use crate::store::queue::{self, Enqueued, NewJob, SubmittedBy};

/// Entry point of `ductile run` and `ductile plugin run`.
pub fn run(args: &Args, positionals: &[String]) -> Result<(), CliError> {
    let root = super::config_root(args)?;
    let rt = Arc::new(Runtime::load(&root)?);
    for w in &rt.warnings {
        log::warn!("{w}");
    }
    let name = positionals[0].as_str();
    let command = positionals.get(1).map(String::as_str).unwrap_or("poll");
    let plugin = find_plugin(&rt, name)?;
    if plugin.manifest.command(command).is_none() {
        let names: Vec<&str> = plugin
            .manifest
            .commands
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let hint = crate::suggest::closest(command, &names)
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        return Err(CliError::Usage(format!(
            "plugin `{name}` has no command `{command}` (it declares: {}){hint}",
            names.join(", ")
        )));
    }
    let payload = read_payload(args)?;
    let clock = SystemClock;
    let envelope = match (&payload, command) {
        (Some(p), _) => envelope(p.clone(), clock.now()),
        (None, "handle") => envelope(json!({}), clock.now()),
        (None, _) => Value::Null,
    };
    let job = NewJob::new(name, command, envelope, SubmittedBy::Cli, 1);
    if args.dry_run {
        let plan = json!({"dry_run": true, "would_enqueue": {"plugin": name, "command": command, "payload": job.payload, "submitted_by": "cli", "max_attempts": 1}});
        if args.json {
            output::json(&plan);
        } else {
            output::text(&format!(
                "dry run: would enqueue and run `{name} {command}` (nothing was changed)"
            ));
        }
        return Ok(());
    }
    let db = &rt.config.state.path;
    let mut conn = store::open(db, rt.config.state.synchronous)?;
    let lock_path = lock::path_for(db);
    let result = match InstanceLock::acquire(&lock_path) {
        Ok(held) => {
            let id = enqueue(&mut conn, &rt, &job, &clock)?;
            let claimed = queue::claim_job(&mut conn, &id, clock.now())?.ok_or_else(|| {
                CliError::Failed(format!(
                    "job {id} was taken by another process before it could run"
                ))
            })?;
            let executed =
                dispatch::execute(&mut conn, &rt, &claimed, &CancelToken::new(), &clock)?;
            drop(held);
            match executed {
                Executed::Recorded {
                    status,
                    last_error,
                    response,
                    stderr,
                    exit_code,
                    ..
                } => Report {
                    id,
                    plugin: name.to_string(),
                    command: command.to_string(),
                    status: status.to_string(),
                    last_error,
                    response,
                    stderr,
                    exit_code,
                },
                Executed::Abandoned => {
                    return Err(CliError::Failed(format!("job {id} was abandoned")));
                }
            }
        }
        Err(LockError::Held { pid, .. }) => {
            let id = enqueue(&mut conn, &rt, &job, &clock)?;
            log::info!(job_id = id.as_str(); "a daemon (pid {}) holds the lock; handing job over to it", pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()));
            let _ = lock::signal_holder(&lock_path, libc::SIGUSR1);
            wait_for(&conn, &id, name, command)?
        }
        Err(e) => return Err(e.into()),
    };
    report(args, &result)
}

fn find_plugin<'a>(
    rt: &'a Runtime,
    name: &str,
) -> Result<&'a Arc<crate::plugin::Plugin>, CliError> {
    if let Some(p) = rt.registry.get(name) {
        return Ok(p);
    }
    if let Some(s) = rt.registry.skipped().iter().find(|s| s.name == name) {
        return Err(CliError::Config(format!(
            "plugin `{name}` was not loaded: {}",
            s.reason
        )));
    }
    if let Some(conf) = rt.config.plugins.get(name) {
        if !conf.enabled {
            return Err(CliError::Config(format!(
                "plugin `{name}` is disabled (plugins.{name}.enabled: false)"
            )));
        }
    }
    if rt.registry.discovered().iter().any(|d| d.name == name) {
        return Err(CliError::Config(format!(
            "plugin `{name}` was discovered but is not configured; add `plugins: {{{name}: {{}}}}` to the config"
        )));
    }
    let known: Vec<&str> = rt.registry.plugins().map(|p| p.name.as_str()).collect();
    let hint = crate::suggest::closest(name, &known)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_else(|| " (see `ductile plugin list`)".into());
    Err(CliError::Failed(format!("unknown plugin `{name}`{hint}")))
}

fn read_payload(args: &Args) -> Result<Option<Value>, CliError> {
    let (text, source) = match (args.flag("payload"), args.flag("payload-file")) {
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "use either --payload or --payload-file, not both".into(),
            ));
        }
        (Some(p), None) => (p.to_string(), "--payload".to_string()),
        (None, Some(f)) => (
            std::fs::read_to_string(f)
                .map_err(|e| CliError::Usage(format!("--payload-file {f}: {e}")))?,
            format!("--payload-file {f}"),
        ),
        (None, None) => return Ok(None),
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{source} is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(CliError::Usage(format!("{source} must be a JSON object")));
    }
    Ok(Some(v))
}

/// The event envelope a one-shot delivers: the payload plus core-injected fields.
fn envelope(payload: Value, now: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "type": "cli.run",
        "payload": payload,
        "source": "cli",
        "timestamp": format_ts(now),
        "event_id": uuid::Uuid::new_v4().to_string(),
    })
}

fn enqueue(
    conn: &mut rusqlite::Connection,
    rt: &Runtime,
    job: &NewJob,
    clock: &dyn Clock,
) -> Result<String, CliError> {
    match queue::enqueue(conn, job, rt.config.service.dedupe_ttl, clock.now())? {
        Enqueued::Created(id) => Ok(id),
        Enqueued::Deduplicated(existing) => Err(CliError::Failed(format!(
            "dropped as a duplicate of job {existing}"
        ))),
    }
}

/// Waits for a job handed to the daemon to reach a terminal state.
fn wait_for(
    conn: &rusqlite::Connection,
    id: &str,
    plugin: &str,
    command: &str,
) -> Result<Report, CliError> {
    loop {
        let row = queue::find(conn, id)?
            .ok_or_else(|| CliError::Failed(format!("job {id} disappeared from the queue")))?;
        if row.status != "queued" && row.status != "running" {
            let log = queue::latest_log(conn, id)?.unwrap_or_default();
            let exit_code: Option<i32> = conn
                .query_row("SELECT exit_code FROM job_attempts WHERE job_id = ?1 ORDER BY attempt DESC LIMIT 1", [id], |r| r.get(0))
                .unwrap_or(None);
            return Ok(Report {
                id: id.to_string(),
                plugin: plugin.to_string(),
                command: command.to_string(),
                status: row.status,
                last_error: row.last_error,
                response: log.result.and_then(|r| serde_json::from_str(&r).ok()),
                stderr: log.stderr.unwrap_or_default(),
                exit_code,
            });
        }
        // Polling our own job row from a separate process; the daemon has no
        // channel to us, and 20 ms keeps the one-shot snappy without load.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the one-shot prints.
struct Report {
    id: String,
    plugin: String,
    command: String,
    status: String,
    last_error: Option<String>,
    response: Option<Value>,
    stderr: String,
    exit_code: Option<i32>,
}

fn report(args: &Args, r: &Report) -> Result<(), CliError> {
    let result = r.response.as_ref().and_then(|v| v.get("result")).cloned();
    if args.json {
        output::json(&json!({
            "job_id": r.id,
            "plugin": r.plugin,
            "command": r.command,
            "status": r.status,
            "result": result,
            "error": r.last_error,
            "response": r.response,
            "stderr": r.stderr,
            "exit_code": r.exit_code,
        }));
    } else {
        let mut text = format!("job {} {} ({} {})\n", r.id, r.status, r.plugin, r.command);
        if let Some(res) = &result {
            let shown = res
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| res.to_string());
            text.push_str(&format!("result: {shown}\n"));
        }
        if let Some(e) = &r.last_error {
            text.push_str(&format!("error: {e}\n"));
        }
        if !r.stderr.is_empty() {
            text.push_str(&format!("plugin stderr:\n{}", r.stderr));
        }
        output::text(&text);
    }
    if r.status == "succeeded" {
        return Ok(());
    }
    Err(CliError::Exit(if r.exit_code == Some(78) { 78 } else { 1 }))
}
