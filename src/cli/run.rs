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
use crate::lock::{self, InstanceLock, LockError, Role};
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
    store::tune_for_one_shot(&conn)?;
    let lock_path = lock::path_for(db);
    let mut job_id: Option<String> = None;
    let result = loop {
        match InstanceLock::acquire(&lock_path, Role::OneShot) {
            Ok(held) => {
                let claimed = match job_id.take() {
                    Some(id) => {
                        queue::claim_job(&mut conn, &id, clock.now())?.ok_or_else(|| {
                            CliError::Failed(format!(
                                "job {id} was taken by another process before it could run"
                            ))
                        })?
                    }
                    None => queue::enqueue_and_claim(
                        &mut conn,
                        &job,
                        rt.config.service.dedupe_ttl,
                        clock.now(),
                    )?
                    .map_err(|existing| {
                        CliError::Failed(format!("dropped as a duplicate of job {existing}"))
                    })?,
                };
                let report = run_own(&mut conn, &rt, &claimed, &clock);
                drop(held);
                break report?;
            }
            Err(LockError::Held { .. }) => match lock::holder_role(&lock_path) {
                Some((pid, Role::Daemon)) => {
                    let id = match job_id.take() {
                        Some(id) => id,
                        None => enqueue(&mut conn, &rt, &job, &clock)?,
                    };
                    log::info!(job_id = id.as_str(); "a daemon (pid {pid}) holds the lock; handing the job over");
                    let _ = lock::signal_holder(&lock_path, libc::SIGUSR1);
                    match wait_for(&conn, &lock_path, &id, name, command)? {
                        Some(report) => break report,
                        // The daemon stopped with our job still queued: run it ourselves.
                        None => job_id = Some(id),
                    }
                }
                // Another one-shot (or a holder that just left): wait our turn.
                _ => pause(),
            },
            Err(e) => return Err(e.into()),
        }
    };
    report(args, &result)
}

/// Runs our own claimed job (the caller holds the lock) and reports it.
fn run_own(
    conn: &mut rusqlite::Connection,
    rt: &Arc<Runtime>,
    claimed: &queue::ClaimedJob,
    clock: &SystemClock,
) -> Result<Report, CliError> {
    let (id, plugin, command) = (
        claimed.id.as_str(),
        claimed.plugin.as_str(),
        claimed.command.as_str(),
    );
    // Ctrl-C or SIGTERM kills the plugin's process group and records the job as
    // dead ("cancelled: interrupted by ..."), instead of leaving a `running`
    // row and a stray plugin behind.
    let token = Arc::new(CancelToken::new());
    let watcher = interrupt_watcher(token.clone());
    let executed = dispatch::execute(conn, rt, claimed, &token, clock);
    if let Some((handle, thread)) = watcher {
        handle.close();
        let _ = thread.join();
    }
    match executed? {
        Executed::Recorded {
            status,
            last_error,
            response,
            stderr,
            exit_code,
            ..
        } => Ok(Report {
            id: id.to_string(),
            plugin: plugin.to_string(),
            command: command.to_string(),
            status: status.to_string(),
            last_error,
            response: response.and_then(|text| serde_json::from_str(&text).ok()),
            stderr,
            exit_code,
        }),
        Executed::Abandoned => Err(CliError::Failed(format!("job {id} was abandoned"))),
    }
}

/// Cancels `token` on SIGINT or SIGTERM until the returned handle is closed.
fn interrupt_watcher(
    token: Arc<CancelToken>,
) -> Option<(signal_hook::iterator::Handle, std::thread::JoinHandle<()>)> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM]).ok()?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                token.cancel(&format!("interrupted by {name}"));
            }
        })
        .ok()?;
    Some((handle, thread))
}

/// A short pause between looks at another process's progress; the one-shot has no
/// channel to the daemon, and 20 ms keeps it snappy without load.
fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}

fn find_plugin<'a>(
    rt: &'a Runtime,
    name: &str,
) -> Result<&'a Arc<crate::plugin::Plugin>, CliError> {
    if let Some(p) = rt.registry.get(name) {
        return Ok(p);
    }
    // Only configured manifests were read; to say why `name` is not runnable,
    // read them all.
    let all = crate::plugin::Registry::survey(&rt.config);
    if let Some(s) = all.skipped().iter().find(|s| s.name == name) {
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
    if all.discovered().iter().any(|d| d.name == name) {
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
/// Waits for a job handed to the daemon to end. `None` when the daemon went away
/// while the job was still queued (the caller then runs it itself).
fn wait_for(
    conn: &rusqlite::Connection,
    lock_path: &std::path::Path,
    id: &str,
    plugin: &str,
    command: &str,
) -> Result<Option<Report>, CliError> {
    loop {
        let row = queue::find(conn, id)?
            .ok_or_else(|| CliError::Failed(format!("job {id} disappeared from the queue")))?;
        if row.status != "queued" && row.status != "running" {
            let log = queue::latest_log(conn, id)?.unwrap_or_default();
            let exit_code: Option<i32> = conn
                .query_row("SELECT exit_code FROM job_attempts WHERE job_id = ?1 ORDER BY attempt DESC LIMIT 1", [id], |r| r.get(0))
                .unwrap_or(None);
            return Ok(Some(Report {
                id: id.to_string(),
                plugin: plugin.to_string(),
                command: command.to_string(),
                status: row.status,
                last_error: row.last_error,
                response: log.result.and_then(|r| serde_json::from_str(&r).ok()),
                stderr: log.stderr.unwrap_or_default(),
                exit_code,
            }));
        }
        if !matches!(lock::holder_role(lock_path), Some((_, Role::Daemon))) {
            // The daemon may have finished our job just before it stopped.
            let now = queue::find(conn, id)?.map(|r| r.status).unwrap_or_default();
            if now != row.status {
                continue;
            }
            if row.status == "queued" {
                return Ok(None);
            }
            return Err(CliError::Failed(format!(
                "the daemon stopped while running job {id}; it is recovered and rerun at the next start"
            )));
        }
        pause();
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
