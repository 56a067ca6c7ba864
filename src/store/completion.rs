//! Completion: the one transaction that records how an attempt ended — the
//! job's new status or its retry, its transitions, the attempt and `job_log`
//! rows, state/facts, the stopwatch record, breaker/schedule/health effects and
//! routed children. Either all of it happens or none of it does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

use super::queue::{
    self, Change, ClaimedJob, Enqueued, JobStatus, NewJob, begin, enqueue_in, transition,
};
use super::{StoreError, facts};
use crate::clock::format_ts;
use crate::fault::{self, Point};

/// How a finished attempt ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The job succeeded.
    Succeeded,
    /// The attempt failed with `status` (failed or timed_out) and will run again at `at`.
    Retry {
        /// failed or timed_out.
        status: JobStatus,
        /// When the next attempt becomes eligible.
        at: DateTime<Utc>,
    },
    /// The job ends with this terminal status (failed or timed_out): no retry applies.
    Terminal(JobStatus),
    /// The attempt failed with `status` and the retry budget is spent: the job dies.
    Exhausted(JobStatus),
}

/// What one attempt left behind, for `job_log` and `job_attempts`.
#[derive(Debug, Clone, Default)]
pub struct AttemptRecord {
    /// The decoded protocol response as JSON text, when there was one.
    pub result: Option<String>,
    /// Raw stdout, kept only when it was not a valid response (diagnostics).
    pub stdout: Option<String>,
    /// Captured stderr (already capped).
    pub stderr: String,
    /// Process id of the plugin.
    pub pid: Option<u32>,
    /// Exit code, if it exited normally.
    pub exit_code: Option<i32>,
    /// Things worth knowing about an attempt that still counts (it exited 1
    /// after answering ok, it lingered after answering); kept in `job_log.warnings`.
    pub warnings: Vec<String>,
}

/// The supervisor's timing record for one attempt (spec: stopwatch).
#[derive(Debug, Clone)]
pub struct Stopwatch {
    /// Wall-clock entry, ns since the epoch.
    pub enter_wall_ns: i64,
    /// Wall-clock exit, ns since the epoch.
    pub exit_wall_ns: i64,
    /// Monotonic spawn duration.
    pub dur_ns: i64,
    /// Dispatcher work between request build and spawn.
    pub runtime_pre_ns: i64,
    /// Dispatcher work between spawn return and record write.
    pub runtime_post_ns: i64,
    /// ok | err | timeout | capture_error.
    pub status: &'static str,
    /// Plugin sub-spans (already capped), if any.
    pub subs: Vec<Value>,
}

/// Everything the completion transaction writes.
#[derive(Debug, Clone)]
pub struct Completion<'a> {
    /// The job as claimed.
    pub job: &'a ClaimedJob,
    /// How it ends.
    pub decision: Decision,
    /// Error text for failed attempts.
    pub last_error: Option<String>,
    /// The attempt's output.
    pub record: AttemptRecord,
    /// Durable state produced by a successful attempt.
    pub state: Option<facts::StateWrite>,
    /// Jobs produced by routing the attempt's events.
    pub children: Vec<Child>,
    /// Timing.
    pub stopwatch: Option<Stopwatch>,
    /// Other ledgers the outcome updates in the same transaction.
    pub effects: Vec<Effect>,
}

/// A job a routing plan inserts with its upstream's completion: its id is
/// fixed in advance so its own children can name it.
#[derive(Debug, Clone)]
pub struct Child {
    /// The job (with `id`, `parent_job_id`, `event_context_id` set).
    pub job: NewJob,
    /// Its context row, inserted first.
    pub context: Option<super::context::ContextRow>,
    /// Some when the job is finished in-process as it is inserted.
    pub settled: Option<Settled>,
}

impl From<NewJob> for Child {
    fn from(job: NewJob) -> Child {
        Child {
            job,
            context: None,
            settled: None,
        }
    }
}

/// How an in-process job ends.
#[derive(Debug, Clone)]
pub enum Settled {
    /// Succeeded with this response.
    Succeeded(Value),
    /// Failed with this error (a remap or claim that could not be made).
    Failed(String),
}

/// Inserts a routing plan in order (parents before children): each job,
/// queued or settled in-process, then its context row. Returns the ids created.
/// A job that is not created (deduplicated, or a routed twin already in the
/// ledger) takes the part of the plan below it along: its planned children
/// name a parent that does not exist.
pub fn insert_children(
    tx: &Transaction<'_>,
    children: &[Child],
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    let mut dropped: Vec<&str> = Vec::new();
    for child in children {
        if let Some(parent) = child.job.parent_job_id.as_deref() {
            if dropped.contains(&parent) {
                if let Some(id) = child.job.id.as_deref() {
                    dropped.push(id);
                }
                continue;
            }
        }
        let written = match &child.settled {
            Some(Settled::Succeeded(result)) => queue::settle_in(tx, &child.job, Ok(result), now)?,
            Some(Settled::Failed(error)) => queue::settle_in(tx, &child.job, Err(error), now)?,
            None => enqueue_in(tx, &child.job, default_ttl, now)?,
        };
        match written {
            Enqueued::Created(id) => {
                if let Some(row) = &child.context {
                    super::context::insert(tx, row, now)?;
                }
                ids.push(id);
            }
            Enqueued::Deduplicated(_) => {
                if let Some(id) = child.job.id.as_deref() {
                    dropped.push(id);
                }
            }
        }
    }
    Ok(ids)
}

/// A side ledger a job's terminal outcome updates atomically with the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A scheduler poll: count towards its circuit breaker.
    Breaker {
        /// Consecutive failures that open it.
        threshold: u32,
    },
    /// A scheduled job: record success on its schedule entry.
    Schedule {
        /// The schedule id.
        schedule_id: String,
    },
    /// A plugin `init` run: its result is the plugin's health.
    Init,
    /// A relay delivery attempt: every attempt (not only the last) counts
    /// towards the breaker of its target instance.
    Delivery {
        /// The breaker's plugin key (`relay:<instance>`).
        breaker: String,
        /// Consecutive failed attempts that open it.
        threshold: u32,
        /// Whether the receiver was reached and took the event.
        reached: bool,
    },
    /// An event for the live stream and the metrics, written with the outcome.
    Event {
        /// The event kind (`relay.sent`).
        kind: &'static str,
        /// Its data.
        data: Value,
    },
}

/// The status a finished job row ends in, and the ids of children created.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    /// Status now in `job_queue` (queued when a retry was scheduled).
    pub status: JobStatus,
    /// Children created (deduplicated children are not listed).
    pub children: Vec<String>,
}

/// Records a finished attempt in one transaction: the job's new status (or its
/// retry), its transitions, a `job_log` row for this attempt (every attempt, not
/// only the last), the attempt row, state/facts, routed children and the
/// stopwatch record. Either all of it happens or none of it does.
pub fn complete(
    conn: &mut Connection,
    c: &Completion<'_>,
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Completed, StoreError> {
    let tx = begin(conn)?;
    let out = complete_in(&tx, c, default_ttl, now)?;
    tx.commit()
        .map_err(|e| StoreError::sqlite(format!("commit completion of job {}", c.job.id), e))?;
    fault::hit(Point::AfterCommit);
    Ok(out)
}

/// [`complete`], and in the same transaction the next eligible job
/// ([`queue::claim_next_in`]) for the worker that just finished: one commit
/// per job instead of two when a queue is draining.
pub fn complete_then_claim(
    conn: &mut Connection,
    c: &Completion<'_>,
    default_ttl: Duration,
    now: DateTime<Utc>,
    cap: &dyn Fn(&str) -> usize,
) -> Result<(Completed, Option<ClaimedJob>), StoreError> {
    let tx = begin(conn)?;
    let out = complete_in(&tx, c, default_ttl, now)?;
    let next = queue::claim_next_in(&tx, cap, now)?;
    tx.commit()
        .map_err(|e| StoreError::sqlite(format!("commit completion of job {}", c.job.id), e))?;
    fault::hit(Point::AfterCommit);
    Ok((out, next))
}

fn complete_in(
    tx: &Transaction<'_>,
    c: &Completion<'_>,
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Completed, StoreError> {
    let job = c.job;
    let ts = format_ts(now);
    let current: Option<(String, u32, Option<String>)> = tx
        .prepare_cached("SELECT status, attempt, started_at FROM job_queue WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([&job.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(|e| StoreError::sqlite(format!("read job {}", job.id), e))?;
    let (current, attempt, started_at) = current.ok_or_else(|| StoreError::NotFound {
        what: "job",
        id: job.id.clone(),
    })?;
    // A completion names its attempt: after a recovery (or a second process
    // claiming the job) this outcome belongs to an attempt that no longer
    // exists, and recording it would overwrite the current one's.
    if current != "running" || attempt != job.attempt {
        return Err(StoreError::StaleAttempt {
            job_id: job.id.clone(),
            attempt: job.attempt,
            now: format!("{current}, attempt {attempt}"),
        });
    }
    let (attempt_status, final_status) = match &c.decision {
        Decision::Succeeded => (JobStatus::Succeeded, JobStatus::Succeeded),
        Decision::Retry { status, .. } => (*status, JobStatus::Queued),
        Decision::Terminal(s) => (*s, *s),
        Decision::Exhausted(s) => (*s, JobStatus::Dead),
    };
    let reason = c.last_error.as_deref().unwrap_or("completed");
    let error = c.last_error.as_deref();
    let ended = Change::new(job.attempt, reason, &ts).error(error);
    match &c.decision {
        Decision::Succeeded
        | Decision::Terminal(JobStatus::Failed | JobStatus::TimedOut | JobStatus::Dead) => {
            transition(tx, &job.id, JobStatus::Running, final_status, &ended)?;
        }
        Decision::Exhausted(failed_as) => {
            // Record the attempt's own failure, then the death it leads to.
            transition(tx, &job.id, JobStatus::Running, *failed_as, &ended)?;
            let why = format!("max attempts ({}) exhausted: {reason}", job.max_attempts);
            let died = Change::new(job.attempt, &why, &ts).error(error);
            transition(tx, &job.id, *failed_as, JobStatus::Dead, &died)?;
        }
        Decision::Terminal(other) => {
            return Err(StoreError::IllegalTransition {
                job_id: job.id.clone(),
                from: "running".to_string(),
                to: other.to_string(),
            });
        }
        Decision::Retry { status, at } => {
            transition(tx, &job.id, JobStatus::Running, *status, &ended)?;
            let at_ts = format_ts(*at);
            let why = format!("retry scheduled at {at_ts}");
            let again = Change {
                next_retry_at: Some(&at_ts),
                ..Change::new(job.attempt + 1, &why, &ts).error(error)
            };
            transition(tx, &job.id, *status, JobStatus::Queued, &again)?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO job_attempts (job_id, attempt, status, started_at, completed_at, pid, exit_code, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![job.id, job.attempt, attempt_status.as_str(), started_at.as_deref().unwrap_or(&ts), ts, c.record.pid, c.record.exit_code, c.last_error])
    })
    .map_err(|e| StoreError::sqlite(format!("record attempt of job {}", job.id), e))?;
    let log_status = if final_status == JobStatus::Dead {
        JobStatus::Dead
    } else {
        attempt_status
    };
    let warnings =
        (!c.record.warnings.is_empty()).then(|| Value::from(c.record.warnings.clone()).to_string());
    tx.prepare_cached(
        "INSERT INTO job_log (id, job_id, plugin, command, status, result, attempt, submitted_by, created_at, completed_at, last_error, stderr, stdout, parent_job_id, source_event_id, event_context_id, warnings)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )
    .and_then(|mut s| {
        s.execute(params![
            uuid::Uuid::now_v7().to_string(),
            job.id,
            job.plugin,
            job.command,
            log_status.as_str(),
            c.record.result,
            job.attempt,
            job.submitted_by.as_str(),
            job.created_at,
            ts,
            c.last_error,
            c.record.stderr,
            c.record.stdout,
            job.parent_job_id,
            job.source_event_id,
            job.event_context_id,
            warnings,
        ])
    })
    .map_err(|e| StoreError::sqlite(format!("write job_log for job {}", job.id), e))?;
    if let Some(state) = &c.state {
        facts::apply(tx, &job.plugin, &job.id, &job.command, state, &ts)?;
    }
    if let Some(sw) = &c.stopwatch {
        let subs = if sw.subs.is_empty() {
            None
        } else {
            Some(Value::Array(sw.subs.clone()).to_string())
        };
        tx.prepare_cached(
            "INSERT INTO job_stopwatch (job_id, plugin, command, attempt, enter_wall_ns, exit_wall_ns, dur_ns, runtime_pre_ns, runtime_post_ns, status, subs_json, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut s| {
            s.execute(params![
                job.id,
                job.plugin,
                job.command,
                job.attempt,
                sw.enter_wall_ns,
                sw.exit_wall_ns,
                sw.dur_ns,
                sw.runtime_pre_ns,
                sw.runtime_post_ns,
                sw.status,
                subs,
                ts
            ])
        })
        .map_err(|e| StoreError::sqlite(format!("write stopwatch for job {}", job.id), e))?;
    }
    let terminal = !matches!(c.decision, Decision::Retry { .. });
    let succeeded = c.decision == Decision::Succeeded;
    for effect in &c.effects {
        match effect {
            Effect::Breaker { threshold } if terminal => {
                super::breakers::record(
                    tx,
                    &job.plugin,
                    &job.command,
                    &job.id,
                    succeeded,
                    *threshold,
                    now,
                )?;
            }
            Effect::Schedule { schedule_id } if succeeded => {
                super::schedules::succeeded(tx, &job.plugin, schedule_id, &job.id, now)?;
            }
            Effect::Delivery {
                breaker,
                threshold,
                reached,
            } => {
                super::breakers::record(
                    tx,
                    breaker,
                    &job.command,
                    &job.id,
                    *reached,
                    *threshold,
                    now,
                )?;
            }
            Effect::Event { kind, data } => {
                super::events::record_at(
                    tx,
                    kind,
                    Some(&job.plugin),
                    Some(&job.command),
                    Some(&job.id),
                    data,
                    &format_ts(now),
                )?;
            }
            Effect::Init if terminal => {
                super::health::record_init(
                    tx,
                    &job.plugin,
                    &job.id,
                    succeeded,
                    c.last_error.as_deref(),
                    now,
                )?;
            }
            _ => {}
        }
    }
    let children = insert_children(tx, &c.children, default_ttl, now)?;
    fault::hit(Point::ChildrenInserted);
    Ok(Completed {
        status: final_status,
        children,
    })
}
