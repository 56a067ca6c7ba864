//! Dispatch: the execution of one claimed job (shared by the daemon's workers and
//! `ductile run`, so a one-shot is recorded exactly like a daemon job), and the
//! worker pool that decides who runs next.
//!
//! Invariant: no database work happens while a plugin process runs; a job's
//! outcome is written in one completion transaction.

pub mod pool;
mod relay;
pub mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::Value;

use crate::clock::{Clock, random_below};
use crate::plugin::Plugin;
use crate::plugin::container;
use crate::plugin::container::stage7::warm::{Resident, Warm};
use crate::plugin::protocol::{self, Request, Response};
use crate::plugin::spawn::{self, CancelToken, Invocation, Limits, Outcome, OutcomeKind};
use crate::runtime::Runtime;
use crate::store::StoreError;
use crate::store::completion::{self, AttemptRecord, Completion, Decision, Effect, Stopwatch};
use crate::store::facts::{self, MAX_STATE_BYTES, StateWrite};
use crate::store::queue::{self, ClaimedJob, JobStatus, Recovered, SubmittedBy};

/// Grace between SIGTERM and SIGKILL for a plugin past its deadline.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// The reason a shutdown gives when it abandons a running job.
pub const SHUTDOWN_REASON: &str = "shutdown";

/// What became of a claimed job.
#[derive(Debug)]
pub enum Executed {
    /// The outcome was recorded.
    Recorded {
        /// The job's status now (queued when a retry was scheduled).
        status: JobStatus,
        /// Error text for failures.
        last_error: Option<String>,
        /// The plugin's response as the JSON text it wrote, when it gave a valid one.
        response: Option<String>,
        /// Captured stderr.
        stderr: String,
        /// Time spent in the plugin process.
        plugin_time: Duration,
        /// The plugin's exit code, when it exited normally.
        exit_code: Option<i32>,
        /// The root of the pipeline tree the job belongs to, when it does.
        tree: Option<String>,
        /// The next job, claimed in the same transaction (see [`execute_then_claim`]).
        next: Option<Box<ClaimedJob>>,
    },
    /// Shutdown killed the plugin; the job stays `running` for crash recovery.
    Abandoned,
}

/// Crash recovery, for a process that has just taken the instance lock: kills
/// whatever is left of the processes of `running` jobs (a dead holder's), then
/// requeues those jobs or buries them, each with a WARN line. Killing comes
/// first, so an old copy of a plugin never runs beside its retry.
pub fn recover(conn: &mut Connection, clock: &dyn Clock) -> Result<Vec<Recovered>, StoreError> {
    let orphans = queue::running_ids(conn)?;
    if orphans.is_empty() {
        return Ok(Vec::new());
    }
    let killed = spawn::group::kill_leftovers(&orphans);
    if !killed.is_empty() {
        log::warn!(
            "killed {} leftover process(es) of {} orphaned job(s) (pids {killed:?})",
            killed.len(),
            orphans.len()
        );
    }
    // Their containers too: an engine keeps a container whose client died.
    container::remove_leftovers(&orphans);
    let recovered = queue::recover_orphans(conn, clock.now())?;
    for r in &recovered {
        match r.status {
            JobStatus::Queued => {
                log::warn!(plugin = r.plugin.as_str(), job_id = r.id.as_str(); "recovered orphaned job: attempt {} was interrupted; requeued for attempt {}", r.attempt, r.attempt + 1)
            }
            _ => {
                log::warn!(plugin = r.plugin.as_str(), job_id = r.id.as_str(); "recovered orphaned job: attempt {} was interrupted and was its last; now {}", r.attempt, r.status)
            }
        }
    }
    Ok(recovered)
}

/// Runs `job` to completion and records its outcome.
pub fn execute(
    conn: &mut Connection,
    rt: &Arc<Runtime>,
    job: &ClaimedJob,
    cancel: &CancelToken,
    clock: &dyn Clock,
) -> Result<Executed, StoreError> {
    execute_then_claim(conn, rt, job, cancel, clock, None, None)
}

/// [`execute`], and when `next` gives the parallelism caps, the worker's next
/// job is claimed in the completion's own transaction. With `warm` (the
/// daemon's), a Stage7 instance with `keep_warm` runs in its resident container.
pub fn execute_then_claim(
    conn: &mut Connection,
    rt: &Arc<Runtime>,
    job: &ClaimedJob,
    cancel: &CancelToken,
    clock: &dyn Clock,
    next: Option<&dyn Fn(&str) -> usize>,
    warm: Option<&Warm>,
) -> Result<Executed, StoreError> {
    let pre_start = Instant::now();
    if job.plugin == crate::relay::outbox::PLUGIN && job.command == crate::relay::outbox::SEND {
        return relay::execute(conn, rt, job, clock, next);
    }
    let Some(plugin) = rt.registry.get(&job.plugin).cloned() else {
        let msg = format!(
            "plugin `{}` is not loaded (removed, disabled or failed to load)",
            job.plugin
        );
        return record_without_run(
            conn,
            rt,
            job,
            Decision::Terminal(JobStatus::Dead),
            msg,
            clock,
        );
    };
    if plugin.manifest.command(&job.command).is_none() {
        let msg = format!("plugin `{}` has no command `{}`", job.plugin, job.command);
        return record_without_run(
            conn,
            rt,
            job,
            Decision::Terminal(JobStatus::Failed),
            msg,
            clock,
        );
    }
    let state = facts::read_state(conn, &job.plugin)?;
    let context_row = match job.event_context_id.as_deref() {
        Some(id) => crate::store::context::row(conn, id)?,
        None => None,
    };
    let mut context = context_row.as_ref().map_or_else(
        || Value::Object(serde_json::Map::new()),
        |r| r.accumulated.clone(),
    );
    // Plugins of the reference read which instance they run as from here,
    // whatever produced the job (a schedule, `ductile run`, a route).
    if let Value::Object(m) = &mut context {
        m.insert("ductile_plugin".into(), Value::String(job.plugin.clone()));
    }
    let timeout = plugin.conf.timeouts.for_command(&job.command);
    let now = clock.now();
    let deadline = now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    // `event` is for handle; other commands see it only when their job carries a
    // non-empty payload (a schedule's or a trigger's), so poll plugins can read it.
    let carries_payload = job
        .payload
        .get("payload")
        .is_some_and(|p| !p.is_null() && p.as_object().is_none_or(|m| !m.is_empty()));
    let event = if !job.payload.is_null() && (job.command == "handle" || carries_payload) {
        Some(&job.payload)
    } else {
        None
    };
    let request = Request {
        protocol: protocol::PROTOCOL_VERSION,
        job_id: &job.id,
        command: &job.command,
        config: &plugin.conf.config,
        state: &state,
        context: &context,
        event,
        deadline_at: crate::clock::format_ts(deadline),
    };
    let request_bytes = serde_json::to_vec(&request).unwrap_or_default();
    let inv = Invocation {
        job_id: &job.id,
        entrypoint: &plugin.entrypoint,
        args: &[],
        env_passthrough: &rt.config.service.plugin_env_passthrough,
        request: &request_bytes,
        limits: Limits {
            timeout,
            grace: KILL_GRACE,
            ..Limits::default()
        },
        response: protocol::ResponseLimits {
            max_subs: plugin.manifest.stopwatch_max_subs,
            max_events: rt.config.service.max_response_events,
            ..protocol::ResponseLimits::default()
        },
    };
    let runtime_pre = pre_start.elapsed();
    crate::fault::hit(crate::fault::Point::BeforeSpawn);
    log::debug!(plugin = job.plugin.as_str(), job_id = job.id.as_str(); "spawning {} {}", job.plugin, job.command);
    let outcome = match &plugin.manifest.container {
        Some(spec) => {
            let resident = warm.and_then(|w| Resident::of(w, &plugin));
            let sources = match spec.envelope {
                container::Envelope::D6eStf => {
                    Some(crate::store::context::step_outputs(conn, &job.id)?)
                }
                _ => None,
            };
            let host = container::Host {
                engine: rt.config.service.container_engine.as_deref(),
                state_dir: crate::disk::ledger_dir(&rt.config.state.path),
                instance: &rt.config.service.name,
                resident: resident.as_ref(),
                sources: sources.as_ref(),
            };
            container::run(spec, &inv, &host, cancel)
        }
        None => spawn::run(&inv, cancel),
    };
    let post_start = Instant::now();
    if let OutcomeKind::Cancelled(reason) = &outcome.kind {
        if reason == SHUTDOWN_REASON {
            log::warn!(plugin = job.plugin.as_str(), job_id = job.id.as_str(); "shutdown killed the plugin; the job stays running and is recovered at the next start");
            return Ok(Executed::Abandoned);
        }
    }
    if !outcome.stderr.is_empty() {
        log::warn!(plugin = job.plugin.as_str(), job_id = job.id.as_str(), stderr_truncated = outcome.stderr_truncated; "plugin stderr: {}", outcome.stderr.trim_end());
    }
    let now = clock.now();
    let (decision, last_error, state_write) = decide(conn, &plugin, job, &outcome, now)?;
    let Outcome {
        kind,
        stdout,
        stderr,
        pid,
        exit_code,
        started_at,
        finished_at,
        duration,
        warnings,
        ..
    } = outcome;
    for w in &warnings {
        log::warn!(plugin = job.plugin.as_str(), job_id = job.id.as_str(); "{w}");
    }
    let stdout_len = stdout.len();
    let decoded = matches!(
        kind,
        OutcomeKind::Succeeded(_)
            | OutcomeKind::Failed(_)
            | OutcomeKind::ConfigError {
                response: Some(_),
                ..
            }
    );
    let status_label = stopwatch_status(&kind);
    // What the job's events start: computed before the transaction, written in it.
    // A config without pipelines or routes routes nothing: no event is
    // copied or completed for a job outside a tree.
    let routes = !rt.graph.is_empty() || context_row.is_some();
    let children = match (&decision, &kind) {
        (Decision::Succeeded, OutcomeKind::Succeeded(r)) if routes => {
            let events: Vec<Value> = r
                .events
                .iter()
                .map(|e| serde_json::json!({"type": e.event_type, "payload": e.payload}))
                .collect();
            let result_text = r.result.as_ref().map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let inherited = r
                .events
                .iter()
                .find_map(|e| e.dedupe_key.clone())
                .or_else(|| job.dedupe_key.clone());
            let up = crate::router::engine::Upstream {
                job_id: &job.id,
                plugin: &job.plugin,
                dedupe_key: inherited.as_deref(),
                context: context_row.as_ref(),
                event: &job.payload,
                result: result_text.as_deref(),
            };
            crate::router::engine::after_success(rt, &up, &events, now)
        }
        _ => Vec::new(),
    };
    let mut children = children;
    // A root job of a plugin that opted in starts its lifecycle hooks.
    let terminal = match &decision {
        Decision::Succeeded => Some(JobStatus::Succeeded),
        Decision::Terminal(s) => Some(*s),
        Decision::Exhausted(_) => Some(JobStatus::Dead),
        Decision::Retry { .. } => None,
    };
    if let (Some(status), None, true) =
        (terminal, &job.parent_job_id, plugin.conf.notify_on_complete)
    {
        let message = last_error.clone().unwrap_or_else(|| match &kind {
            OutcomeKind::Succeeded(r) => r
                .result
                .as_ref()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_default(),
            _ => String::new(),
        });
        let fields = serde_json::json!({
            "plugin": job.plugin,
            "command": job.command,
            "message": message,
            "text": message,
            "error": last_error,
            "status": status.as_str(),
            "attempt": job.attempt,
            "duration_ms": duration.as_millis() as u64,
            "job_id": job.id,
        });
        children.extend(crate::router::engine::after_terminal(
            rt,
            &job.plugin,
            status,
            fields,
            now,
        ));
    }
    let subs = match kind {
        OutcomeKind::Succeeded(r) | OutcomeKind::Failed(r) => {
            if r.subs_dropped > 0 {
                log::warn!(plugin = job.plugin.as_str(), job_id = job.id.as_str(); "dropped {} stopwatch sub-spans over the cap of {}", r.subs_dropped, plugin.manifest.stopwatch_max_subs);
            }
            r.stopwatch_subs
        }
        // The rest of the decoded response is dropped here: from now on the raw
        // text is the only copy of it.
        _ => Vec::new(),
    };
    // A decoded response is valid JSON, hence UTF-8: its own bytes are the log's
    // copy, neither parsed again nor re-serialized.
    let (result, raw) = if decoded {
        match String::from_utf8(stdout) {
            Ok(mut text) => {
                text.truncate(text.trim_end().len());
                (Some(text), None)
            }
            Err(e) => (
                None,
                Some(String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    } else if stdout.is_empty() {
        (None, None)
    } else {
        (None, Some(String::from_utf8_lossy(&stdout).into_owned()))
    };
    let record = AttemptRecord {
        result,
        stdout: raw,
        stderr: stderr.clone(),
        pid,
        exit_code,
        warnings,
    };
    let mut stopwatch = Stopwatch {
        enter_wall_ns: wall_ns(started_at),
        exit_wall_ns: wall_ns(finished_at),
        dur_ns: duration.as_nanos().min(i64::MAX as u128) as i64,
        runtime_pre_ns: runtime_pre.as_nanos() as i64,
        runtime_post_ns: 0,
        status: status_label,
        subs,
    };
    stopwatch.runtime_post_ns = post_start.elapsed().as_nanos() as i64;
    let completion = Completion {
        job,
        decision,
        last_error: last_error.clone(),
        record,
        state: state_write,
        children,
        stopwatch: Some(stopwatch),
        effects: effects(job, &plugin),
    };
    crate::fault::hit(crate::fault::Point::AfterAnswer);
    let (done, next) = commit(conn, rt, &completion, now, next)?;
    let response = completion.record.result;
    if stdout_len >= LARGE_RESPONSE {
        // glibc keeps freed small allocations in the worker thread's arena, so
        // one big response would otherwise leave the daemon's RSS at its peak.
        crate::sys::release_freed_memory();
    }
    Ok(Executed::Recorded {
        status: done.status,
        last_error,
        response,
        stderr,
        plugin_time: duration,
        exit_code,
        tree: tree_of(context_row.as_ref()),
        next: next.map(Box::new),
    })
}

/// Writes an attempt's completion (claiming the worker's next job with it
/// when `next` gives the caps) and logs its outcome.
fn commit(
    conn: &mut Connection,
    rt: &Runtime,
    completion: &Completion<'_>,
    now: DateTime<Utc>,
    next: Option<&dyn Fn(&str) -> usize>,
) -> Result<(completion::Completed, Option<ClaimedJob>), StoreError> {
    let ttl = rt.config.service.dedupe_ttl;
    let (done, next) = match next {
        Some(cap) => completion::complete_then_claim(conn, completion, ttl, now, cap)?,
        None => (completion::complete(conn, completion, ttl, now)?, None),
    };
    log_outcome(
        completion.job,
        done.status,
        completion.last_error.as_deref(),
        &completion.decision,
    );
    Ok((done, next))
}

/// The pipeline tree a job's context row places it in, if any.
fn tree_of(row: Option<&crate::store::context::ContextRow>) -> Option<String> {
    row.and_then(|r| r.accumulated.get("ductile_pipeline_instance_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Responses at least this large are followed by [`crate::sys::release_freed_memory`].
const LARGE_RESPONSE: usize = 1024 * 1024;

/// Maps a process outcome to the job's decision, its error text and its state write.
fn decide(
    conn: &Connection,
    plugin: &Plugin,
    job: &ClaimedJob,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<(Decision, Option<String>, Option<StateWrite>), StoreError> {
    let retry = &plugin.conf.retry;
    let fail = |status: JobStatus, retryable: bool, msg: String| {
        let d = retry::after_failure(
            status,
            retryable,
            job.attempt,
            job.max_attempts,
            retry.backoff_base,
            now,
            random_below,
        );
        (d, Some(msg), None)
    };
    Ok(match &outcome.kind {
        OutcomeKind::Succeeded(resp) => match state_write(conn, plugin, job, resp)? {
            Ok(write) => (Decision::Succeeded, None, write),
            Err(msg) => fail(JobStatus::Failed, false, msg),
        },
        OutcomeKind::TimedOut => fail(
            JobStatus::TimedOut,
            true,
            outcome
                .error_message()
                .unwrap_or_else(|| "timed out".into()),
        ),
        OutcomeKind::Cancelled(reason) => (
            Decision::Terminal(JobStatus::Dead),
            Some(format!("cancelled: {reason}")),
            None,
        ),
        _ => fail(
            JobStatus::Failed,
            retry::retryable(outcome),
            outcome
                .error_message()
                .unwrap_or_else(|| "plugin failed".into()),
        ),
    })
}

/// Turns a successful response's `state_updates` into a state write, enforcing the
/// 1 MiB cap; `Err` carries the job's error text.
fn state_write(
    conn: &Connection,
    plugin: &Plugin,
    job: &ClaimedJob,
    resp: &Response,
) -> Result<Result<Option<StateWrite>, String>, StoreError> {
    let Some(updates) = &resp.state_updates else {
        return Ok(Ok(None));
    };
    if let Some(rule) = plugin.manifest.fact_rule(&job.command) {
        let size = Value::Object(updates.clone()).to_string().len();
        if size > MAX_STATE_BYTES {
            return Ok(Err(too_big(size)));
        }
        return Ok(Ok(Some(StateWrite::Fact {
            fact_type: rule.fact_type.clone(),
            snapshot: updates.clone(),
        })));
    }
    let size = facts::merged_size(conn, &job.plugin, updates)?;
    if size > MAX_STATE_BYTES {
        return Ok(Err(too_big(size)));
    }
    Ok(Ok(Some(StateWrite::Merge(updates.clone()))))
}

fn too_big(size: usize) -> String {
    format!("state_updates rejected: plugin_state would be {size} bytes, over the 1 MiB limit")
}

/// Records a job that could not even be started (its plugin is gone or lacks the command).
fn record_without_run(
    conn: &mut Connection,
    rt: &Runtime,
    job: &ClaimedJob,
    decision: Decision,
    msg: String,
    clock: &dyn Clock,
) -> Result<Executed, StoreError> {
    let now = clock.now();
    let completion = Completion {
        job,
        decision,
        last_error: Some(msg.clone()),
        record: AttemptRecord::default(),
        state: None,
        children: Vec::new(),
        stopwatch: None,
        effects: Vec::new(),
    };
    let done = completion::complete(conn, &completion, rt.config.service.dedupe_ttl, now)?;
    log_outcome(job, done.status, Some(&msg), &completion.decision);
    let tree = match job.event_context_id.as_deref() {
        Some(id) => tree_of(crate::store::context::row(conn, id)?.as_ref()),
        None => None,
    };
    Ok(Executed::Recorded {
        status: done.status,
        last_error: Some(msg),
        response: None,
        stderr: String::new(),
        plugin_time: Duration::ZERO,
        exit_code: None,
        tree,
        next: None,
    })
}

fn log_outcome(job: &ClaimedJob, status: JobStatus, err: Option<&str>, decision: &Decision) {
    let (plugin, id) = (job.plugin.as_str(), job.id.as_str());
    match decision {
        Decision::Succeeded => {
            log::info!(plugin = plugin, job_id = id, attempt = job.attempt; "job succeeded ({})", job.command)
        }
        Decision::Retry { at, .. } => {
            log::warn!(plugin = plugin, job_id = id, attempt = job.attempt; "attempt {} failed, retry at {}: {}", job.attempt, crate::clock::format_ts(*at), err.unwrap_or(""))
        }
        _ => {
            log::info!(plugin = plugin, job_id = id, attempt = job.attempt; "job {status}: {}", err.unwrap_or(""))
        }
    }
}

/// The side ledgers this job's outcome feeds.
fn effects(job: &ClaimedJob, plugin: &Plugin) -> Vec<Effect> {
    let mut out = Vec::new();
    if job.submitted_by == SubmittedBy::Scheduler {
        if job.command == "poll" {
            out.push(Effect::Breaker {
                threshold: plugin.conf.circuit_breaker.threshold,
            });
        }
        if let Some(id) = job.payload.get("schedule_id").and_then(Value::as_str) {
            out.push(Effect::Schedule {
                schedule_id: id.to_string(),
            });
        }
    }
    if job.command == "init" && job.submitted_by == SubmittedBy::System {
        out.push(Effect::Init);
    }
    out
}

fn stopwatch_status(kind: &OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Succeeded(_) => "ok",
        OutcomeKind::TimedOut => "timeout",
        _ => "err",
    }
}

fn wall_ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(0)
}
