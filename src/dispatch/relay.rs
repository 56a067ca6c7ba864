//! Running an outbox job (`relay` / `send`): one delivery attempt in the
//! worker itself, no subprocess. The job goes through the same completion
//! transaction as a plugin's, so an attempt is recorded with its answer, a
//! failure is retried with the instance's backoff, a 4xx ends it, and a
//! delivery that succeeded continues its pipeline. The breaker of the target
//! instance counts every attempt; while it is open, jobs wait in the queue
//! without spending attempts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::{Value, json};

use super::{Executed, commit, record_without_run, retry, tree_of, wall_ns};
use crate::clock::{Clock, random_below};
use crate::config::relay::{Instance, MAX_BACKOFF};
use crate::relay::outbox;
use crate::relay::send::{self, Delivery};
use crate::runtime::Runtime;
use crate::store::StoreError;
use crate::store::breakers::{self, Admission};
use crate::store::completion::{AttemptRecord, Completion, Decision, Effect, Stopwatch};
use crate::store::queue::{self, ClaimedJob, JobStatus};

/// How long a job waits while its instance's breaker has a probe out.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// Delivers an outbox job's event and records the attempt.
pub(super) fn execute(
    conn: &mut Connection,
    rt: &Arc<Runtime>,
    job: &ClaimedJob,
    clock: &dyn Clock,
    next: Option<&dyn Fn(&str) -> usize>,
) -> Result<Executed, StoreError> {
    let failed = Decision::Terminal(JobStatus::Failed);
    let Some((name, body)) = outbox::parts(&job.payload) else {
        let msg = format!(
            "job {} is not an outbox job: its payload needs `instance` and an object `body`",
            job.id
        );
        return record_without_run(conn, rt, job, failed, msg, clock);
    };
    let Some(instance) = rt.config.relay.instance(name) else {
        let msg = format!(
            "relay instance `{name}` is no longer configured (relay-instances.yaml); the event stays in this job's payload, and `ductile job retry {}` sends it once the instance is back",
            job.id
        );
        return record_without_run(conn, rt, job, failed, msg, clock);
    };
    let event_type = body.pointer("/event/type").and_then(Value::as_str);
    if let Err(refused) = outbox::check(instance, event_type.unwrap_or("")) {
        return record_without_run(conn, rt, job, failed, refused.0, clock);
    }
    let (breaker, command) = outbox::breaker_key(name);
    let now = clock.now();
    let cooldown = instance.circuit_breaker.reset_after;
    match breakers::admit(conn, &breaker, command, cooldown, now)? {
        Admission::Allow | Admission::Probe => {}
        // A probe that never reported (its process died mid-attempt) must
        // not hold the instance half open for ever: past a cooldown and a
        // request timeout, this job probes again.
        Admission::Deny if stale_probe(conn, &breaker, cooldown + instance.timeout, now)? => {}
        Admission::Deny => return defer(conn, job, &breaker, cooldown, clock),
    }
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    crate::fault::hit(crate::fault::Point::BeforeSpawn);
    let started_at = clock.now();
    let started = Instant::now();
    let delivery = send::deliver(
        instance,
        &rt.config.service.name,
        &bytes,
        started_at.timestamp(),
    );
    let duration = started.elapsed();
    crate::fault::hit(crate::fault::Point::AfterAnswer);
    let attempt = Attempt {
        delivery: &delivery,
        duration,
        started_at,
        ended_at: clock.now().max(started_at),
    };
    record(conn, rt, job, instance, &attempt, next)
}

/// One delivery attempt, timed.
struct Attempt<'d> {
    delivery: &'d Delivery,
    duration: Duration,
    started_at: chrono::DateTime<chrono::Utc>,
    ended_at: chrono::DateTime<chrono::Utc>,
}

/// The attempt's completion: decision, answer, breaker, events, pipeline.
fn record(
    conn: &mut Connection,
    rt: &Arc<Runtime>,
    job: &ClaimedJob,
    instance: &Instance,
    attempt: &Attempt<'_>,
    next: Option<&dyn Fn(&str) -> usize>,
) -> Result<Executed, StoreError> {
    let Attempt {
        delivery,
        duration,
        started_at,
        ended_at: now,
    } = *attempt;
    let (breaker, _) = outbox::breaker_key(&instance.name);
    let threshold = instance.circuit_breaker.threshold;
    let event_type = job
        .payload
        .pointer("/body/event/type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut effects = Vec::new();
    let (decision, last_error, answer) = match delivery {
        Delivery::Accepted { job_id } => (
            Decision::Succeeded,
            None,
            json!({
                "status": "ok",
                "result": format!("delivered `{event_type}` to `{}`", instance.name),
                "remote": {"status": 202, "job_id": job_id},
            }),
        ),
        Delivery::Duplicate => (
            Decision::Succeeded,
            None,
            json!({
                "status": "ok",
                "result": format!("`{}` already had this `{event_type}` (a redelivery)", instance.name),
                "remote": {"status": 200, "duplicate": true},
            }),
        ),
        Delivery::Refused {
            status,
            code,
            message,
        } => (
            Decision::Terminal(JobStatus::Failed),
            Some(format!("{message}; not retried")),
            json!({
                "status": "error",
                "error": message,
                "retry": false,
                "remote": {"status": status, "code": code},
            }),
        ),
        Delivery::Unavailable(message) => {
            let d = retry::after_failure(
                JobStatus::Failed,
                true,
                job.attempt,
                job.max_attempts,
                instance.retry.backoff_base,
                now,
                random_below,
            );
            let d = match d {
                Decision::Retry { status, at } => Decision::Retry {
                    status,
                    at: at.min(now + chrono::Duration::from_std(MAX_BACKOFF).unwrap_or_default()),
                },
                other => other,
            };
            (
                d,
                Some(message.clone()),
                json!({"status": "error", "error": message, "retry": true}),
            )
        }
    };
    // The breaker guards against a receiver that cannot be reached: a 4xx
    // came from a receiver that is there, so it closes it like a success
    // (and a half-open probe answered 4xx does not leave it half open).
    let reached = !matches!(delivery, Delivery::Unavailable(_));
    effects.push(Effect::Delivery {
        breaker,
        threshold,
        reached,
    });
    let kind = match (&decision, delivery) {
        (Decision::Succeeded, _) => "relay.sent",
        (Decision::Retry { .. }, _) => "relay.retry",
        _ => "relay.failed",
    };
    effects.push(Effect::Event {
        kind,
        data: json!({
            "instance": instance.name,
            "event_type": event_type,
            "attempt": job.attempt,
            "duration_ms": duration.as_secs_f64() * 1000.0,
            "error": last_error,
            "remote_status": answer.pointer("/remote/status"),
        }),
    });
    let context_row = match job.event_context_id.as_deref() {
        Some(id) => crate::store::context::row(conn, id)?,
        None => None,
    };
    // A delivered relay step continues its pipeline like any step that
    // succeeded without events.
    let children = match (&decision, &context_row) {
        (Decision::Succeeded, Some(row)) => {
            let up = crate::router::engine::Upstream {
                job_id: &job.id,
                plugin: &job.plugin,
                dedupe_key: job.dedupe_key.as_deref(),
                context: Some(row),
                event: &job.payload,
                result: None,
            };
            crate::router::engine::after_success(rt, &up, &[], now)
        }
        _ => Vec::new(),
    };
    let result = answer.to_string();
    let completion = Completion {
        job,
        decision,
        last_error: last_error.clone(),
        record: AttemptRecord {
            result: Some(result.clone()),
            ..AttemptRecord::default()
        },
        state: None,
        children,
        stopwatch: Some(Stopwatch {
            enter_wall_ns: wall_ns(started_at),
            exit_wall_ns: wall_ns(now),
            dur_ns: duration.as_nanos().min(i64::MAX as u128) as i64,
            runtime_pre_ns: 0,
            runtime_post_ns: 0,
            status: if matches!(delivery, Delivery::Accepted { .. } | Delivery::Duplicate) {
                "ok"
            } else {
                "err"
            },
            subs: Vec::new(),
        }),
        effects,
    };
    let (done, next) = commit(conn, rt, &completion, now, next)?;
    Ok(Executed::Recorded {
        status: done.status,
        last_error,
        response: Some(result),
        stderr: String::new(),
        plugin_time: duration,
        exit_code: None,
        tree: tree_of(context_row.as_ref()),
        next: next.map(Box::new),
    })
}

/// Whether the breaker is half open since longer than `patience`.
fn stale_probe(
    conn: &Connection,
    breaker: &str,
    patience: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, StoreError> {
    let row = breakers::find(conn, breaker, outbox::SEND)?;
    Ok(row
        .filter(|b| b.state == "half_open")
        .and_then(|b| crate::clock::parse_ts(&b.updated_at))
        .is_some_and(|t| now > t + chrono::Duration::from_std(patience).unwrap_or_default()))
}

/// The breaker is open (or its probe is out): back in the queue, untried.
fn defer(
    conn: &mut Connection,
    job: &ClaimedJob,
    breaker: &str,
    cooldown: Duration,
    clock: &dyn Clock,
) -> Result<Executed, StoreError> {
    let now = clock.now();
    let row = breakers::find(conn, breaker, outbox::SEND)?;
    let at = match row.as_ref().map(|b| b.state.as_str()) {
        Some("open") => row
            .as_ref()
            .and_then(|b| b.opened_at.as_deref())
            .and_then(crate::clock::parse_ts)
            .map(|t| t + chrono::Duration::from_std(cooldown).unwrap_or_default())
            .filter(|t| *t > now)
            .unwrap_or(now + chrono::Duration::from_std(PROBE_WAIT).unwrap_or_default()),
        _ => now + chrono::Duration::from_std(PROBE_WAIT).unwrap_or_default(),
    };
    let why = format!(
        "not sent: the breaker of relay instance `{}` is open; waits until {}",
        breaker.trim_start_matches("relay:"),
        crate::clock::format_ts(at)
    );
    queue::defer(conn, job, at, &why, now)?;
    log::debug!(plugin = job.plugin.as_str(), job_id = job.id.as_str(); "{why}");
    let tree = match job.event_context_id.as_deref() {
        Some(id) => tree_of(crate::store::context::row(conn, id)?.as_ref()),
        None => None,
    };
    Ok(Executed::Recorded {
        status: JobStatus::Queued,
        last_error: Some(why),
        response: None,
        stderr: String::new(),
        plugin_time: Duration::ZERO,
        exit_code: None,
        tree,
        next: None,
    })
}
