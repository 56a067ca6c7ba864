//! The job queue and the job state machine: enqueue (with dedupe), claim,
//! recovery and cancellation. Every status change — here and in
//! [`super::completion`] — goes through [`transition`], which checks legality and
//! records the change, inside the caller's transaction.
//!
//! A job's life is three transactions: enqueue, claim, complete. Crash recovery
//! turns `running` orphans back into `queued` (or `dead`).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::Value;

use super::StoreError;
use crate::clock::format_ts;

/// A job's status; the spec's six states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting in the queue (possibly for a retry time).
    Queued,
    /// Claimed by a worker; a plugin process is (or was, before a crash) running.
    Running,
    /// Terminal: the plugin answered ok.
    Succeeded,
    /// The plugin failed; terminal unless a retry follows.
    Failed,
    /// The plugin exceeded its deadline; terminal unless a retry follows.
    TimedOut,
    /// Terminal: retries exhausted, cancelled, or its plugin was removed.
    Dead,
}

impl JobStatus {
    /// The ledger's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Dead => "dead",
        }
    }

    /// Parses the ledger's spelling.
    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "timed_out" => JobStatus::TimedOut,
            "dead" => JobStatus::Dead,
            _ => return None,
        })
    }

    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::Dead,
    ];
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state machine: queued → running → succeeded | failed | timed_out | dead;
/// failed/timed_out → queued (retry) or dead; running → queued (crash recovery);
/// queued → dead (cancelled, plugin removed).
pub fn legal(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    matches!(
        (from, to),
        (Queued, Running)
            | (Queued, Dead)
            | (Running, Succeeded)
            | (Running, Failed)
            | (Running, TimedOut)
            | (Running, Dead)
            | (Running, Queued)
            | (Failed, Queued)
            | (Failed, Dead)
            | (TimedOut, Queued)
            | (TimedOut, Dead)
    )
}

/// Who produced a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmittedBy {
    /// The scheduler heartbeat.
    Scheduler,
    /// The webhook listener.
    Webhook,
    /// The router (a plugin event).
    Route,
    /// `ductile run`.
    Cli,
    /// The HTTP API.
    Api,
    /// The core itself (plugin `init` runs).
    System,
    /// Remote event relay ingress (`relay:<peer>`).
    Relay,
}

impl SubmittedBy {
    /// The ledger's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SubmittedBy::Scheduler => "scheduler",
            SubmittedBy::Webhook => "webhook",
            SubmittedBy::Route => "route",
            SubmittedBy::Cli => "cli",
            SubmittedBy::Api => "api",
            SubmittedBy::System => "system",
            SubmittedBy::Relay => "relay",
        }
    }

    /// Parses the ledger's spelling; a detail after `:` (`webhook:github`)
    /// names the producer within its kind.
    pub fn parse(s: &str) -> Option<SubmittedBy> {
        let kind = s.split_once(':').map_or(s, |(kind, _)| kind);
        Some(match kind {
            "scheduler" => SubmittedBy::Scheduler,
            "webhook" => SubmittedBy::Webhook,
            "route" => SubmittedBy::Route,
            "cli" => SubmittedBy::Cli,
            "api" => SubmittedBy::Api,
            "system" => SubmittedBy::System,
            "relay" => SubmittedBy::Relay,
            _ => return None,
        })
    }
}

/// Reads a ledger column spelled by `parse`, refusing what it does not know.
fn from_column<T>(
    value: rusqlite::types::ValueRef<'_>,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::types::FromSqlResult<T> {
    let text = value.as_str()?;
    parse(text).ok_or_else(|| {
        rusqlite::types::FromSqlError::Other(format!("unknown value `{text}`").into())
    })
}

impl rusqlite::types::FromSql for JobStatus {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        from_column(value, JobStatus::parse)
    }
}

impl rusqlite::types::FromSql for SubmittedBy {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        from_column(value, SubmittedBy::parse)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Plugin instance name.
    pub plugin: String,
    /// Command name.
    pub command: String,
    /// The event envelope delivered to the plugin, or `Value::Null`.
    pub payload: Value,
    /// Producer.
    pub submitted_by: SubmittedBy,
    /// Total attempts allowed.
    pub max_attempts: u32,
    /// Optional dedupe key.
    pub dedupe_key: Option<String>,
    /// Per-enqueue dedupe window; when set, in-flight duplicates are refused too.
    pub dedupe_ttl: Option<Duration>,
    /// Which producer of its kind, recorded as `kind:detail` (a webhook's name).
    pub submitter: Option<String>,
    /// The id to give the row, when the caller needs it before the insert
    /// (a routing plan links children to parents it has not inserted yet).
    pub id: Option<String>,
    /// Whether the dedupe rules apply; routed children carry their tree's key
    /// for lineage without being deduplicated against their own ancestors.
    pub dedupe_check: bool,
    /// Producing job, for routed jobs.
    pub parent_job_id: Option<String>,
    /// Core-assigned id of the event that produced this job.
    pub source_event_id: Option<String>,
    /// Baggage row for this job.
    pub event_context_id: Option<String>,
    /// The route-graph hop a routed job runs. With `parent_job_id` and
    /// `source_event_id` it names the job once: the ledger holds at most one
    /// job per upstream job, event and hop (`idx_job_queue_routed_child`).
    pub hop: Option<String>,
}

impl NewJob {
    /// A plain job with no dedupe or lineage.
    pub fn new(
        plugin: &str,
        command: &str,
        payload: Value,
        submitted_by: SubmittedBy,
        max_attempts: u32,
    ) -> NewJob {
        NewJob {
            plugin: plugin.to_string(),
            command: command.to_string(),
            payload,
            submitted_by,
            max_attempts,
            dedupe_key: None,
            dedupe_ttl: None,
            submitter: None,
            id: None,
            dedupe_check: true,
            parent_job_id: None,
            source_event_id: None,
            event_context_id: None,
            hop: None,
        }
    }
}

impl NewJob {
    /// The ledger's `submitted_by`: the kind, with its detail when there is one.
    fn submitted_by_column(&self) -> std::borrow::Cow<'static, str> {
        match &self.submitter {
            Some(detail) => format!("{}:{detail}", self.submitted_by.as_str()).into(),
            None => self.submitted_by.as_str().into(),
        }
    }
}

/// The event envelope of an externally triggered job: the payload plus the
/// fields the core injects (type, source, timestamp, event id).
pub fn envelope(event_type: &str, source: &str, payload: Value, now: DateTime<Utc>) -> Value {
    serde_json::json!({
        "type": event_type,
        "payload": payload,
        "source": source,
        "timestamp": format_ts(now),
        "event_id": uuid::Uuid::new_v4().to_string(),
    })
}

/// What enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job row.
    Created(String),
    /// Dropped as a duplicate of this existing job.
    Deduplicated(String),
}

/// A job a worker owns after a claim.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// Job id.
    pub id: String,
    /// Plugin instance name.
    pub plugin: String,
    /// Command.
    pub command: String,
    /// Event envelope or null.
    pub payload: Value,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Allowed attempts.
    pub max_attempts: u32,
    /// Producer.
    pub submitted_by: SubmittedBy,
    /// Dedupe key.
    pub dedupe_key: Option<String>,
    /// Creation time, as stored.
    pub created_at: String,
    /// Parent job.
    pub parent_job_id: Option<String>,
    /// Source event.
    pub source_event_id: Option<String>,
    /// Baggage row.
    pub event_context_id: Option<String>,
}

/// Begins the immediate transaction every write uses (waits for the write lock
/// up front instead of failing on a read-to-write upgrade).
pub fn begin(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| StoreError::sqlite("begin transaction", e))
}

/// Enqueues `job` in its own transaction.
pub fn enqueue(
    conn: &mut Connection,
    job: &NewJob,
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Enqueued, StoreError> {
    let tx = begin(conn)?;
    let out = enqueue_in(&tx, job, default_ttl, now)?;
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit enqueue", e))?;
    Ok(out)
}

/// Enqueues `job` inside an open transaction, applying the dedupe rules of
/// spec §3.6: with a per-enqueue TTL, a queued/running job with the same key
/// blocks; any succeeded job with the same key inside the window blocks.
pub fn enqueue_in(
    tx: &Transaction<'_>,
    job: &NewJob,
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Enqueued, StoreError> {
    if let Some(key) = job.dedupe_key.as_ref().filter(|_| job.dedupe_check) {
        if job.dedupe_ttl.is_some() {
            let inflight: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM job_queue WHERE dedupe_key = ?1 AND status IN ('queued','running') ORDER BY rowid LIMIT 1",
                )
                .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
                .map_err(|e| StoreError::sqlite("check in-flight duplicates", e))?;
            if let Some(existing) = inflight {
                log::info!(plugin = job.plugin.as_str(), dedupe_key = key.as_str(), existing_job_id = existing.as_str(); "dedupe: dropped enqueue, an identical job is in flight");
                return Ok(Enqueued::Deduplicated(existing));
            }
        }
        let ttl = job.dedupe_ttl.unwrap_or(default_ttl);
        let cutoff =
            format_ts(now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX));
        let recent: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM job_queue WHERE dedupe_key = ?1 AND status = 'succeeded' AND completed_at >= ?2 ORDER BY completed_at DESC LIMIT 1",
            )
            .and_then(|mut s| s.query_row(params![key, cutoff], |r| r.get(0)).optional())
            .map_err(|e| StoreError::sqlite("check recent duplicates", e))?;
        if let Some(existing) = recent {
            log::info!(plugin = job.plugin.as_str(), dedupe_key = key.as_str(), existing_job_id = existing.as_str(); "dedupe: dropped enqueue, an identical job succeeded within the window");
            return Ok(Enqueued::Deduplicated(existing));
        }
    }
    let id = job
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let ts = format_ts(now);
    let payload = if job.payload.is_null() {
        None
    } else {
        Some(job.payload.to_string())
    };
    // A routed job that is already there (the same upstream job, event and
    // hop) is not inserted again: routing an event twice is a no-op, whatever
    // made it happen.
    let inserted = tx
        .prepare_cached(
            "INSERT INTO job_queue (id, plugin, command, payload, status, attempt, max_attempts, submitted_by, dedupe_key, created_at, parent_job_id, source_event_id, event_context_id, hop)
         VALUES (?1, ?2, ?3, ?4, 'queued', 1, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (parent_job_id, source_event_id, hop, plugin, command)
             WHERE parent_job_id IS NOT NULL AND source_event_id IS NOT NULL AND hop IS NOT NULL
         DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                job.plugin,
                job.command,
                payload,
                job.max_attempts.max(1),
                job.submitted_by_column().as_ref(),
                job.dedupe_key,
                ts,
                job.parent_job_id,
                job.source_event_id,
                job.event_context_id,
                job.hop,
            ])
        })
        .map_err(|e| StoreError::sqlite(format!("enqueue {} {}", job.plugin, job.command), e))?;
    if inserted == 0 {
        let existing: String = tx
            .prepare_cached(
                "SELECT id FROM job_queue WHERE parent_job_id = ?1 AND source_event_id = ?2 AND hop = ?3 AND plugin = ?4 AND command = ?5",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![job.parent_job_id, job.source_event_id, job.hop, job.plugin, job.command],
                    |r| r.get(0),
                )
            })
            .map_err(|e| StoreError::sqlite(format!("find the routed twin of {} {}", job.plugin, job.command), e))?;
        log::warn!(plugin = job.plugin.as_str(), job_id = existing.as_str(); "event {} of job {} reached hop `{}` before; not routed again", job.source_event_id.as_deref().unwrap_or("-"), job.parent_job_id.as_deref().unwrap_or("-"), job.hop.as_deref().unwrap_or("-"));
        return Ok(Enqueued::Deduplicated(existing));
    }
    record_transition(tx, &id, None, JobStatus::Queued, 1, "enqueued", &ts)?;
    Ok(Enqueued::Created(id))
}

/// Why a job cannot be retried.
#[derive(Debug)]
pub enum RetryRefused {
    /// No such job in the queue (pruned, or never existed).
    Missing,
    /// It has not failed: its status now.
    NotFailed(JobStatus),
    /// It was retried already, as this job (retry that one if it failed too).
    AlreadyRetried(String),
    /// The ledger failed.
    Store(StoreError),
}

/// The job that resumed job `id` ([`retry_in`]): its child with the same
/// plugin, command and context row, if there is one.
pub fn retried_as(conn: &Connection, id: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached(
        "SELECT r.id FROM job_queue f JOIN job_queue r ON r.parent_job_id = f.id AND r.plugin = f.plugin AND r.command = f.command AND r.event_context_id IS f.event_context_id
         WHERE f.id = ?1 ORDER BY r.rowid LIMIT 1",
    )
    .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
    .map_err(|e| StoreError::sqlite(format!("look for retries of job {id}"), e))
}

/// Resume from a failed step: a new job with exactly the event and context
/// the failed (or dead) job `id` first saw, child of that job, so the tree
/// goes on from there once it succeeds; the failed rows stay as history.
/// Returns the new job's id.
pub fn retry_in(
    tx: &Transaction<'_>,
    id: &str,
    submitted_by: SubmittedBy,
    now: DateTime<Utc>,
) -> Result<String, RetryRefused> {
    let row = tx
        .prepare_cached(
            "SELECT plugin, command, payload, status, max_attempts, dedupe_key, source_event_id, event_context_id, hop FROM job_queue WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, JobStatus>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })
            .optional()
        })
        .map_err(|e| RetryRefused::Store(StoreError::sqlite(format!("read job {id}"), e)))?;
    let Some((
        plugin,
        command,
        payload,
        status,
        max_attempts,
        dedupe_key,
        source_event_id,
        context,
        hop,
    )) = row
    else {
        return Err(RetryRefused::Missing);
    };
    if !matches!(
        status,
        JobStatus::Failed | JobStatus::Dead | JobStatus::TimedOut
    ) {
        return Err(RetryRefused::NotFailed(status));
    }
    // One resumption per failure, so a step never runs twice for one event.
    if let Some(earlier) = retried_as(tx, id).map_err(RetryRefused::Store)? {
        return Err(RetryRefused::AlreadyRetried(earlier));
    }
    let payload = payload
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or(Value::Null);
    let mut job = NewJob::new(&plugin, &command, payload, submitted_by, max_attempts);
    job.parent_job_id = Some(id.to_string());
    job.source_event_id = source_event_id;
    job.event_context_id = context;
    job.hop = hop;
    job.dedupe_key = dedupe_key;
    job.dedupe_check = false;
    match enqueue_in(tx, &job, Duration::ZERO, now).map_err(RetryRefused::Store)? {
        Enqueued::Created(new) | Enqueued::Deduplicated(new) => Ok(new),
    }
}

/// Inserts `job` and finishes it at once, in-process: a `core.switch`
/// decision, a pipeline's root row, a hop refused before it could run (its
/// `with:` or `baggage:` failed). The row goes queued → running → succeeded
/// (with `result` as its response) or failed (with the error), with its
/// transitions and a `job_log` row, like any job: nothing about it is hidden.
/// A routed job that exists already is left as it is (`Deduplicated`).
pub fn settle_in(
    tx: &Transaction<'_>,
    job: &NewJob,
    outcome: Result<&Value, &str>,
    now: DateTime<Utc>,
) -> Result<Enqueued, StoreError> {
    // Routed rows arrive with `dedupe_check` off; a relay root keeps it on,
    // so a redelivered event finds its first acceptance.
    let id = match enqueue_in(tx, job, Duration::ZERO, now)? {
        Enqueued::Created(id) => id,
        twin @ Enqueued::Deduplicated(_) => return Ok(twin),
    };
    let ts = format_ts(now);
    let claim = match outcome {
        Ok(_) => "evaluated in-process".to_string(),
        Err(e) => format!("{}{e}", super::events::PREFLIGHT_FAILED),
    };
    transition(
        tx,
        &id,
        JobStatus::Queued,
        JobStatus::Running,
        &Change::new(1, &claim, &ts),
    )?;
    crate::fault::hit(crate::fault::Point::Settle);
    let (status, result, error) = match outcome {
        Ok(result) => (JobStatus::Succeeded, Some(result.to_string()), None),
        Err(e) => (JobStatus::Failed, None, Some(e)),
    };
    let reason = error.unwrap_or("completed");
    transition(
        tx,
        &id,
        JobStatus::Running,
        status,
        &Change::new(1, reason, &ts).error(error),
    )?;
    tx.prepare_cached(
        "INSERT INTO job_log (id, job_id, plugin, command, status, result, attempt, submitted_by, created_at, completed_at, last_error, parent_job_id, source_event_id, event_context_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            uuid::Uuid::now_v7().to_string(),
            id,
            job.plugin,
            job.command,
            status.as_str(),
            result,
            job.submitted_by_column().as_ref(),
            ts,
            error,
            job.parent_job_id,
            job.source_event_id,
            job.event_context_id,
        ])
    })
    .map_err(|e| StoreError::sqlite(format!("write job_log for job {id}"), e))?;
    Ok(Enqueued::Created(id))
}

/// The columns a status change writes besides the status itself.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The attempt the change belongs to (for a requeue: the next attempt).
    pub attempt: u32,
    /// Why, for `job_transitions`.
    pub reason: &'a str,
    /// When.
    pub ts: &'a str,
    /// `last_error` for a terminal status or a requeue.
    pub last_error: Option<&'a str>,
    /// `next_retry_at` for a requeue.
    pub next_retry_at: Option<&'a str>,
}

impl<'a> Change<'a> {
    /// A change with no error and no retry time.
    pub fn new(attempt: u32, reason: &'a str, ts: &'a str) -> Change<'a> {
        Change {
            attempt,
            reason,
            ts,
            last_error: None,
            next_retry_at: None,
        }
    }

    /// The same change with `last_error` set.
    pub fn error(self, last_error: Option<&'a str>) -> Change<'a> {
        Change { last_error, ..self }
    }
}

/// Moves job `id` from `from` to `to`: the one place a job's status changes.
/// The edge is checked against [`legal`]; the row is updated only if it is
/// still in `from` (`Err(IllegalTransition)` naming its real status otherwise);
/// the change is recorded in `job_transitions`. Running sets `started_at`;
/// queued sets the attempt, the retry time and the error and clears the run's
/// times; every other status ends the job (`completed_at`, `last_error`).
pub fn transition(
    tx: &Transaction<'_>,
    id: &str,
    from: JobStatus,
    to: JobStatus,
    c: &Change<'_>,
) -> Result<(), StoreError> {
    let illegal = |actual: String| StoreError::IllegalTransition {
        job_id: id.to_string(),
        from: actual,
        to: to.to_string(),
    };
    if !legal(from, to) {
        return Err(illegal(from.to_string()));
    }
    let changed = match to {
        JobStatus::Running => tx
            .prepare_cached("UPDATE job_queue SET status = 'running', started_at = ?3, next_retry_at = NULL WHERE id = ?1 AND status = ?2")
            .and_then(|mut s| s.execute(params![id, from.as_str(), c.ts])),
        JobStatus::Queued => tx
            .prepare_cached("UPDATE job_queue SET status = 'queued', attempt = ?3, next_retry_at = ?4, last_error = ?5, started_at = NULL, completed_at = NULL WHERE id = ?1 AND status = ?2")
            .and_then(|mut s| s.execute(params![id, from.as_str(), c.attempt, c.next_retry_at, c.last_error])),
        _ => tx
            .prepare_cached("UPDATE job_queue SET status = ?3, completed_at = ?4, last_error = ?5 WHERE id = ?1 AND status = ?2")
            .and_then(|mut s| s.execute(params![id, from.as_str(), to.as_str(), c.ts, c.last_error])),
    }
    .map_err(|e| StoreError::sqlite(format!("change job {id} from {from} to {to}"), e))?;
    if changed == 0 {
        let actual: Option<String> = tx
            .prepare_cached("SELECT status FROM job_queue WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| StoreError::sqlite(format!("read job {id}"), e))?;
        return Err(match actual {
            Some(actual) => illegal(actual),
            None => StoreError::NotFound {
                what: "job",
                id: id.to_string(),
            },
        });
    }
    record_transition(tx, id, Some(from), to, c.attempt, c.reason, c.ts)
}

fn record_transition(
    tx: &Transaction<'_>,
    id: &str,
    from: Option<JobStatus>,
    to: JobStatus,
    attempt: u32,
    reason: &str,
    ts: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO job_transitions (job_id, from_status, to_status, attempt, reason, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![id, from.map(JobStatus::as_str), to.as_str(), attempt, reason, ts]))
    .map_err(|e| StoreError::sqlite(format!("record transition of job {id}"), e))?;
    Ok(())
}

const CLAIM_COLUMNS: &str = "id, plugin, command, payload, attempt, max_attempts, submitted_by, dedupe_key, created_at, parent_job_id, source_event_id, event_context_id";

fn claimed_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedJob> {
    let payload: Option<String> = r.get(3)?;
    Ok(ClaimedJob {
        id: r.get(0)?,
        plugin: r.get(1)?,
        command: r.get(2)?,
        payload: payload
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or(Value::Null),
        attempt: r.get(4)?,
        max_attempts: r.get(5)?,
        submitted_by: r.get(6)?,
        dedupe_key: r.get(7)?,
        created_at: r.get(8)?,
        parent_job_id: r.get(9)?,
        source_event_id: r.get(10)?,
        event_context_id: r.get(11)?,
    })
}

/// Claims the oldest eligible job: queued, retry time passed, its plugin below its
/// parallelism cap (`cap(plugin)`), and no running job with the same dedupe key on
/// the same plugin+command. Returns `None` when nothing is eligible.
pub fn claim_next(
    conn: &mut Connection,
    cap: &dyn Fn(&str) -> usize,
    now: DateTime<Utc>,
) -> Result<Option<ClaimedJob>, StoreError> {
    let tx = begin(conn)?;
    let Some(job) = claim_next_in(&tx, cap, now)? else {
        return Ok(None);
    };
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit claim", e))?;
    Ok(Some(job))
}

/// [`claim_next`] inside an open transaction (a completion that claims the
/// worker's next job in the same commit).
pub fn claim_next_in(
    tx: &Transaction<'_>,
    cap: &dyn Fn(&str) -> usize,
    now: DateTime<Utc>,
) -> Result<Option<ClaimedJob>, StoreError> {
    let ts = format_ts(now);
    let mut full: Vec<String> = Vec::new();
    {
        let mut stmt = tx
            .prepare_cached(
                "SELECT plugin, COUNT(*) FROM job_queue WHERE status = 'running' GROUP BY plugin",
            )
            .map_err(|e| StoreError::sqlite("count running jobs", e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| StoreError::sqlite("count running jobs", e))?;
        for row in rows {
            let (plugin, n) = row.map_err(|e| StoreError::sqlite("count running jobs", e))?;
            if n as usize >= cap(&plugin) {
                full.push(plugin);
            }
        }
    }
    let full_json = serde_json::to_string(&full).unwrap_or_else(|_| "[]".to_string());
    let job = tx
        .prepare_cached(&format!(
            "SELECT {CLAIM_COLUMNS} FROM job_queue q INDEXED BY idx_job_queue_status
             WHERE q.status = 'queued'
               AND (q.next_retry_at IS NULL OR q.next_retry_at <= ?1)
               AND q.plugin NOT IN (SELECT value FROM json_each(?2))
               AND (q.dedupe_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM job_queue r
                    WHERE r.dedupe_key = q.dedupe_key AND r.status = 'running'
                      AND r.plugin = q.plugin AND r.command = q.command))
             ORDER BY q.rowid LIMIT 1"
        ))
        .and_then(|mut s| {
            s.query_row(params![ts, full_json], claimed_from_row)
                .optional()
        })
        .map_err(|e| StoreError::sqlite("select next job", e))?;
    let Some(job) = job else {
        return Ok(None);
    };
    mark_running(tx, &job, &ts)?;
    Ok(Some(job))
}

/// Claims one specific queued job (a one-shot running its own job); `None` if it
/// is no longer queued.
pub fn claim_job(
    conn: &mut Connection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<ClaimedJob>, StoreError> {
    let tx = begin(conn)?;
    let job = claim_job_in(&tx, id, &format_ts(now))?;
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit claim", e))?;
    Ok(job)
}

/// Enqueues `job` and claims it in one transaction, for a one-shot that holds
/// the instance lock and runs its own job (`Err` carries the id of the job it
/// duplicates). The job still goes through the queue and its state machine.
pub fn enqueue_and_claim(
    conn: &mut Connection,
    job: &NewJob,
    default_ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Result<ClaimedJob, String>, StoreError> {
    let tx = begin(conn)?;
    let id = match enqueue_in(&tx, job, default_ttl, now)? {
        Enqueued::Created(id) => id,
        Enqueued::Deduplicated(existing) => return Ok(Err(existing)),
    };
    let claimed = claim_job_in(&tx, &id, &format_ts(now))?.ok_or_else(|| StoreError::NotFound {
        what: "job",
        id: id.clone(),
    })?;
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit enqueue and claim", e))?;
    Ok(Ok(claimed))
}

fn claim_job_in(
    tx: &Transaction<'_>,
    id: &str,
    ts: &str,
) -> Result<Option<ClaimedJob>, StoreError> {
    let job = tx
        .prepare_cached(&format!(
            "SELECT {CLAIM_COLUMNS} FROM job_queue WHERE id = ?1 AND status = 'queued'"
        ))
        .and_then(|mut s| s.query_row([id], claimed_from_row).optional())
        .map_err(|e| StoreError::sqlite(format!("claim job {id}"), e))?;
    let Some(job) = job else {
        return Ok(None);
    };
    mark_running(tx, &job, ts)?;
    Ok(Some(job))
}

fn mark_running(tx: &Transaction<'_>, job: &ClaimedJob, ts: &str) -> Result<(), StoreError> {
    // The attempt row is written once, when the attempt ends (completion or
    // recovery): `job_queue.started_at` marks a running attempt meanwhile, and
    // one insert per attempt instead of insert + update halves that table's writes.
    transition(
        tx,
        &job.id,
        JobStatus::Queued,
        JobStatus::Running,
        &Change::new(job.attempt, "claimed", ts),
    )
}

/// A job that was `running` when the previous process died, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Job id.
    pub id: String,
    /// Plugin.
    pub plugin: String,
    /// The attempt that was interrupted.
    pub attempt: u32,
    /// queued (its next attempt is `attempt + 1`) or dead.
    pub status: JobStatus,
}

/// The ids of jobs marked `running`, oldest first.
pub fn running_ids(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM job_queue INDEXED BY idx_job_queue_status WHERE status = 'running' ORDER BY rowid")
        .map_err(|e| StoreError::sqlite("find running jobs", e))?;
    stmt.query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::sqlite("find running jobs", e))
}

/// Crash recovery: every `running` row is an orphan (call only while holding
/// the instance lock, once the orphans' processes are gone). Its attempt gets
/// its `job_attempts` and `job_log` rows, and the job goes back to `queued`
/// for its next attempt, or to `dead` when that would exceed `max_attempts`.
/// One transaction.
pub fn recover_orphans(
    conn: &mut Connection,
    now: DateTime<Utc>,
) -> Result<Vec<Recovered>, StoreError> {
    let tx = begin(conn)?;
    let ts = format_ts(now);
    let orphans: Vec<(String, String, u32, u32)> = {
        let mut stmt = tx
            .prepare("SELECT id, plugin, attempt, max_attempts FROM job_queue WHERE status = 'running' ORDER BY rowid")
            .map_err(|e| StoreError::sqlite("find orphans", e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| StoreError::sqlite("find orphans", e))?
    };
    let mut out = Vec::new();
    for (id, plugin, attempt, max) in orphans {
        let lost = "orphaned: ductile stopped while the attempt was running";
        tx.prepare_cached(
            "INSERT INTO job_attempts (job_id, attempt, status, started_at, completed_at, error)
             SELECT id, attempt, 'dead', COALESCE(started_at, ?2), ?2, ?3 FROM job_queue WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, ts, lost]))
        .map_err(|e| StoreError::sqlite(format!("close orphaned attempt of job {id}"), e))?;
        // Every attempt has a job_log row, an interrupted one too.
        tx.prepare_cached(
            "INSERT INTO job_log (id, job_id, plugin, command, status, attempt, submitted_by, created_at, completed_at, last_error, parent_job_id, source_event_id, event_context_id)
             SELECT ?2, id, plugin, command, 'dead', attempt, submitted_by, created_at, ?3, ?4, parent_job_id, source_event_id, event_context_id FROM job_queue WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, uuid::Uuid::now_v7().to_string(), ts, lost]))
        .map_err(|e| StoreError::sqlite(format!("log orphaned attempt of job {id}"), e))?;
        let status = if attempt >= max {
            let why =
                format!("orphaned by a crash on attempt {attempt}; max attempts ({max}) exhausted");
            transition(
                &tx,
                &id,
                JobStatus::Running,
                JobStatus::Dead,
                &Change::new(attempt, &why, &ts).error(Some(&why)),
            )?;
            JobStatus::Dead
        } else {
            let why = "orphaned by a crash; requeued";
            transition(
                &tx,
                &id,
                JobStatus::Running,
                JobStatus::Queued,
                &Change::new(attempt + 1, why, &ts).error(Some(why)),
            )?;
            JobStatus::Queued
        };
        out.push(Recovered {
            id,
            plugin,
            attempt,
            status,
        });
    }
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit recovery", e))?;
    Ok(out)
}

/// Marks queued jobs of a plugin dead (its plugin was removed, or a schedule
/// cancels them). Returns the ids.
pub fn kill_queued(
    tx: &Transaction<'_>,
    where_plugin: &str,
    command: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let ts = format_ts(now);
    let ids: Vec<(String, u32)> = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, attempt FROM job_queue WHERE plugin = ?1 AND (?2 IS NULL OR command = ?2) AND status = 'queued' ORDER BY rowid",
            )
            .map_err(|e| StoreError::sqlite("find queued jobs", e))?;
        stmt.query_map(params![where_plugin, command], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::sqlite("find queued jobs", e))?
    };
    for (id, attempt) in &ids {
        transition(
            tx,
            id,
            JobStatus::Queued,
            JobStatus::Dead,
            &Change::new(*attempt, reason, &ts).error(Some(reason)),
        )?;
    }
    Ok(ids.into_iter().map(|(id, _)| id).collect())
}

/// Cancels job `id` if it is still queued; false when it is not (claimed,
/// ended or unknown), in which case nothing changed.
pub fn cancel_queued(
    conn: &mut Connection,
    id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let tx = begin(conn)?;
    let cancelled = cancel_queued_in(&tx, id, reason, now)?;
    tx.commit()
        .map_err(|e| StoreError::sqlite(format!("commit cancellation of job {id}"), e))?;
    Ok(cancelled)
}

fn cancel_queued_in(
    tx: &Transaction<'_>,
    id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let attempt: Option<u32> = tx
        .prepare_cached("SELECT attempt FROM job_queue WHERE id = ?1 AND status = 'queued'")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite(format!("read job {id}"), e))?;
    let Some(attempt) = attempt else {
        return Ok(false);
    };
    let ts = format_ts(now);
    let why = format!("cancelled: {reason}");
    transition(
        tx,
        id,
        JobStatus::Queued,
        JobStatus::Dead,
        &Change::new(attempt, &why, &ts).error(Some(&why)),
    )?;
    Ok(true)
}

/// Asks whoever runs job `id` to cancel it (the daemon acts on it when it is
/// woken); a repeated request keeps the first reason.
pub fn request_cancel(
    conn: &Connection,
    id: &str,
    reason: &str,
    requested_by: SubmittedBy,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO job_cancel_requests (job_id, reason, requested_by, requested_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![id, reason, requested_by.as_str(), format_ts(now)]))
    .map_err(|e| StoreError::sqlite(format!("request cancellation of job {id}"), e))?;
    Ok(())
}

/// A cancellation the daemon must carry out on a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    /// The job, running when the request was taken.
    pub job_id: String,
    /// Why.
    pub reason: String,
}

/// Takes every pending cancel request in one transaction: queued jobs are
/// cancelled at once (their ids come back in `.1`), running ones are returned
/// for the caller to kill (`.0`), and requests for ended jobs are dropped.
pub fn take_cancel_requests(
    conn: &mut Connection,
    now: DateTime<Utc>,
) -> Result<(Vec<CancelRequest>, Vec<String>), StoreError> {
    let tx = begin(conn)?;
    let pending: Vec<(String, String, Option<String>)> = {
        let mut stmt = tx
            .prepare_cached("SELECT r.job_id, r.reason, q.status FROM job_cancel_requests r LEFT JOIN job_queue q ON q.id = r.job_id ORDER BY r.rowid")
            .map_err(|e| StoreError::sqlite("read cancel requests", e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| StoreError::sqlite("read cancel requests", e))?
    };
    if pending.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut running = Vec::new();
    let mut cancelled = Vec::new();
    for (id, reason, status) in pending {
        match status.as_deref() {
            Some("running") => running.push(CancelRequest { job_id: id, reason }),
            Some("queued") if cancel_queued_in(&tx, &id, &reason, now)? => cancelled.push(id),
            _ => {}
        }
    }
    tx.execute("DELETE FROM job_cancel_requests", [])
        .map_err(|e| StoreError::sqlite("clear cancel requests", e))?;
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit cancel requests", e))?;
    Ok((running, cancelled))
}

/// Puts a claimed job back in the queue until `at` without spending its
/// attempt: it was not tried (its target's breaker is open). The attempt
/// guard of a completion applies: a job no longer running this attempt is a
/// stale claim.
pub fn defer(
    conn: &mut Connection,
    job: &ClaimedJob,
    at: DateTime<Utc>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tx = begin(conn)?;
    let (ts, at_ts) = (format_ts(now), format_ts(at));
    let current: Option<u32> = tx
        .prepare_cached("SELECT attempt FROM job_queue WHERE id = ?1 AND status = 'running'")
        .and_then(|mut s| s.query_row([&job.id], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite(format!("read job {}", job.id), e))?;
    if current != Some(job.attempt) {
        return Err(StoreError::StaleAttempt {
            job_id: job.id.clone(),
            attempt: job.attempt,
            now: "not running this attempt".to_string(),
        });
    }
    let change = Change {
        next_retry_at: Some(&at_ts),
        ..Change::new(job.attempt, reason, &ts)
    };
    transition(&tx, &job.id, JobStatus::Running, JobStatus::Queued, &change)?;
    tx.commit()
        .map_err(|e| StoreError::sqlite(format!("commit deferral of job {}", job.id), e))
}

/// Queued or running jobs of a plugin+command, oldest first: (id, status).
pub fn inflight(
    conn: &Connection,
    plugin: &str,
    command: &str,
) -> Result<Vec<(String, JobStatus)>, StoreError> {
    conn.prepare_cached("SELECT id, status FROM job_queue INDEXED BY idx_job_queue_status WHERE status IN ('queued','running') AND plugin = ?1 AND command = ?2 ORDER BY rowid")
        .and_then(|mut s| {
            s.query_map(params![plugin, command], |r| {
                let status: String = r.get(1)?;
                Ok((r.get(0)?, JobStatus::parse(&status).unwrap_or(JobStatus::Queued)))
            })
            .and_then(|rows| rows.collect())
        })
        .map_err(|e| StoreError::sqlite("find in-flight jobs", e))
}

/// The earliest pending retry time, if any job waits for one.
pub fn next_retry_at(conn: &Connection) -> Result<Option<DateTime<Utc>>, StoreError> {
    let next: Option<String> = conn
        .prepare_cached("SELECT next_retry_at FROM job_queue INDEXED BY idx_job_queue_retry WHERE status = 'queued' AND next_retry_at IS NOT NULL ORDER BY next_retry_at LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite("find the next retry", e))?
        .flatten();
    Ok(next.as_deref().and_then(crate::clock::parse_ts))
}

/// The exit code of a job's latest attempt, when the plugin exited normally.
pub fn last_exit_code(conn: &Connection, id: &str) -> Result<Option<i32>, StoreError> {
    conn.prepare_cached(
        "SELECT exit_code FROM job_attempts WHERE job_id = ?1 ORDER BY attempt DESC, id DESC LIMIT 1",
    )
    .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
    .map(Option::flatten)
    .map_err(|e| StoreError::sqlite(format!("read the attempts of job {id}"), e))
}

/// A job row as stored, for inspection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRow {
    /// Job id.
    pub id: String,
    /// Plugin instance.
    pub plugin: String,
    /// Command.
    pub command: String,
    /// Status.
    pub status: JobStatus,
    /// Attempt number.
    pub attempt: u32,
    /// Allowed attempts.
    pub max_attempts: u32,
    /// Producer.
    pub submitted_by: SubmittedBy,
    /// Dedupe key.
    pub dedupe_key: Option<String>,
    /// Created.
    pub created_at: String,
    /// Started.
    pub started_at: Option<String>,
    /// Completed.
    pub completed_at: Option<String>,
    /// Next retry.
    pub next_retry_at: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Parent job.
    pub parent_job_id: Option<String>,
    /// Source event.
    pub source_event_id: Option<String>,
    /// Baggage row.
    pub event_context_id: Option<String>,
}

/// Reads one job row.
pub fn find(conn: &Connection, id: &str) -> Result<Option<JobRow>, StoreError> {
    conn.prepare_cached(
        "SELECT id, plugin, command, status, attempt, max_attempts, submitted_by, dedupe_key, created_at, started_at, completed_at, next_retry_at, last_error, parent_job_id, source_event_id, event_context_id FROM job_queue WHERE id = ?1",
    )
    .and_then(|mut s| {
        s.query_row([id], |r| {
            Ok(JobRow {
                id: r.get(0)?,
                plugin: r.get(1)?,
                command: r.get(2)?,
                status: r.get(3)?,
                attempt: r.get(4)?,
                max_attempts: r.get(5)?,
                submitted_by: r.get(6)?,
                dedupe_key: r.get(7)?,
                created_at: r.get(8)?,
                started_at: r.get(9)?,
                completed_at: r.get(10)?,
                next_retry_at: r.get(11)?,
                last_error: r.get(12)?,
                parent_job_id: r.get(13)?,
                source_event_id: r.get(14)?,
                event_context_id: r.get(15)?,
            })
        })
        .optional()
    })
    .map_err(|e| StoreError::sqlite(format!("read job {id}"), e))
}

/// The parts of a job's latest `job_log` row a reader usually wants.
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    /// Attempt status.
    pub status: String,
    /// The response JSON.
    pub result: Option<String>,
    /// Captured stderr.
    pub stderr: Option<String>,
    /// Error text.
    pub last_error: Option<String>,
}

/// The latest `job_log` row of a job.
pub fn latest_log(conn: &Connection, job_id: &str) -> Result<Option<LogSummary>, StoreError> {
    conn.prepare_cached("SELECT status, result, stderr, last_error FROM job_log WHERE job_id = ?1 ORDER BY attempt DESC, rowid DESC LIMIT 1")
        .and_then(|mut s| {
            s.query_row([job_id], |r| {
                Ok(LogSummary {
                    status: r.get(0)?,
                    result: r.get(1)?,
                    stderr: r.get(2)?,
                    last_error: r.get(3)?,
                })
            })
            .optional()
        })
        .map_err(|e| StoreError::sqlite(format!("read log of job {job_id}"), e))
}

/// A plugin's most recent finished attempt.
#[derive(Debug, Clone)]
pub struct LastRun {
    /// Attempt status.
    pub status: String,
    /// When it ended.
    pub completed_at: String,
    /// Its error, if it failed.
    pub last_error: Option<String>,
}

/// The most recent `job_log` row of `plugin`.
pub fn last_run(conn: &Connection, plugin: &str) -> Result<Option<LastRun>, StoreError> {
    conn.prepare_cached("SELECT status, completed_at, last_error FROM job_log INDEXED BY idx_job_log_plugin_completed_at WHERE plugin = ?1 ORDER BY completed_at DESC LIMIT 1")
        .and_then(|mut s| {
            s.query_row([plugin], |r| {
                Ok(LastRun {
                    status: r.get(0)?,
                    completed_at: r.get(1)?,
                    last_error: r.get(2)?,
                })
            })
            .optional()
        })
        .map_err(|e| StoreError::sqlite(format!("read the last run of {plugin}"), e))
}

/// Queue depth by status.
pub fn depth_by_status(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT status, COUNT(*) FROM job_queue GROUP BY status")
        .map_err(|e| StoreError::sqlite("count jobs", e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::sqlite("count jobs", e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;
    use crate::config::Synchronous;
    use crate::store::completion::{AttemptRecord, Completion, Decision, complete};
    use crate::store::testing::TempDir;

    fn t(s: &str) -> DateTime<Utc> {
        parse_ts(s).unwrap()
    }

    fn db(tag: &str) -> (TempDir, Connection) {
        let tmp = TempDir::new(tag);
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        (tmp, conn)
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn job(plugin: &str) -> NewJob {
        NewJob::new(plugin, "poll", Value::Null, SubmittedBy::Cli, 3)
    }

    fn created(e: Enqueued) -> String {
        match e {
            Enqueued::Created(id) => id,
            other => panic!("expected a new job, got {other:?}"),
        }
    }

    fn statuses(conn: &Connection, id: &str) -> Vec<String> {
        let mut s = conn
            .prepare("SELECT COALESCE(from_status,'-') || '>' || to_status FROM job_transitions WHERE job_id = ?1 ORDER BY id")
            .unwrap();
        s.query_map([id], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn done(job: &ClaimedJob, decision: Decision) -> Completion<'_> {
        Completion {
            job,
            decision,
            last_error: None,
            record: AttemptRecord::default(),
            state: None,
            children: vec![],
            stopwatch: None,
            effects: vec![],
        }
    }

    #[test]
    fn state_machine_allows_only_the_spec_edges() {
        use JobStatus::*;
        assert!(legal(Queued, Running));
        assert!(legal(Running, Succeeded));
        assert!(legal(Failed, Queued));
        assert!(legal(TimedOut, Dead));
        assert!(!legal(Succeeded, Queued));
        assert!(!legal(Queued, Succeeded));
        assert!(!legal(Dead, Queued));
        assert!(!legal(Running, Running));
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn claim_is_fifo_and_respects_parallelism() {
        let (_tmp, mut conn) = db("fifo");
        let now = t("2026-01-01T00:00:00Z");
        let a1 = created(enqueue(&mut conn, &job("a"), DAY, now).unwrap());
        let a2 = created(enqueue(&mut conn, &job("a"), DAY, now).unwrap());
        let b1 = created(enqueue(&mut conn, &job("b"), DAY, now).unwrap());
        let cap1 = |_: &str| 1usize;
        assert_eq!(claim_next(&mut conn, &cap1, now).unwrap().unwrap().id, a1);
        // a is at its cap of 1, so b1 is next even though a2 is older.
        assert_eq!(claim_next(&mut conn, &cap1, now).unwrap().unwrap().id, b1);
        assert!(claim_next(&mut conn, &cap1, now).unwrap().is_none());
        let cap2 = |_: &str| 2usize;
        assert_eq!(claim_next(&mut conn, &cap2, now).unwrap().unwrap().id, a2);
        assert_eq!(statuses(&conn, &a1), vec!["->queued", "queued>running"]);
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM job_attempts"),
            0,
            "written when attempts end"
        );
    }

    #[test]
    fn same_dedupe_key_same_target_waits_but_other_targets_run() {
        let (_tmp, mut conn) = db("dedupe-run");
        let now = t("2026-01-01T00:00:00Z");
        let keyed = |plugin: &str, command: &str| NewJob {
            dedupe_key: Some("k".into()),
            command: command.into(),
            ..job(plugin)
        };
        let first = created(enqueue(&mut conn, &keyed("a", "handle"), DAY, now).unwrap());
        let twin = created(enqueue(&mut conn, &keyed("a", "handle"), DAY, now).unwrap());
        let other = created(enqueue(&mut conn, &keyed("b", "handle"), DAY, now).unwrap());
        let cap = |_: &str| 10usize;
        assert_eq!(claim_next(&mut conn, &cap, now).unwrap().unwrap().id, first);
        assert_eq!(claim_next(&mut conn, &cap, now).unwrap().unwrap().id, other);
        assert!(
            claim_next(&mut conn, &cap, now).unwrap().is_none(),
            "twin waits for first"
        );
        let first_job = ClaimedJob {
            id: first.clone(),
            ..claim_placeholder(&first)
        };
        complete(&mut conn, &done(&first_job, Decision::Succeeded), DAY, now).unwrap();
        assert_eq!(claim_next(&mut conn, &cap, now).unwrap().unwrap().id, twin);
    }

    fn claim_placeholder(id: &str) -> ClaimedJob {
        ClaimedJob {
            id: id.to_string(),
            plugin: "a".into(),
            command: "handle".into(),
            payload: Value::Null,
            attempt: 1,
            max_attempts: 3,
            submitted_by: SubmittedBy::Cli,
            dedupe_key: None,
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            parent_job_id: None,
            source_event_id: None,
            event_context_id: None,
        }
    }

    #[test]
    fn dedupe_drops_recent_successes_and_inflight_only_with_override() {
        let (_tmp, mut conn) = db("dedupe");
        let now = t("2026-01-01T00:00:00Z");
        let keyed = NewJob {
            dedupe_key: Some("k1".into()),
            ..job("a")
        };
        let first = created(enqueue(&mut conn, &keyed, DAY, now).unwrap());
        // Without a per-enqueue TTL, an in-flight twin is allowed (only successes block).
        let twin = created(enqueue(&mut conn, &keyed, DAY, now).unwrap());
        // With a TTL override, in-flight twins are refused.
        let scoped = NewJob {
            dedupe_ttl: Some(Duration::from_secs(60)),
            ..keyed.clone()
        };
        assert_eq!(
            enqueue(&mut conn, &scoped, DAY, now).unwrap(),
            Enqueued::Deduplicated(first.clone())
        );
        let cap = |_: &str| 10usize;
        let c = claim_next(&mut conn, &cap, now).unwrap().unwrap();
        complete(&mut conn, &done(&c, Decision::Succeeded), DAY, now).unwrap();
        let c2 = claim_next(&mut conn, &cap, now).unwrap().unwrap();
        assert_eq!(c2.id, twin);
        complete(&mut conn, &done(&c2, Decision::Succeeded), DAY, now).unwrap();
        let later = now + chrono::Duration::hours(1);
        assert!(matches!(
            enqueue(&mut conn, &keyed, DAY, later).unwrap(),
            Enqueued::Deduplicated(_)
        ));
        // Outside the override window a new job is created.
        assert!(matches!(
            enqueue(&mut conn, &scoped, DAY, later).unwrap(),
            Enqueued::Created(_)
        ));
        // Outside the default window too.
        let much_later = now + chrono::Duration::hours(25);
        assert!(matches!(
            enqueue(&mut conn, &keyed, DAY, much_later).unwrap(),
            Enqueued::Created(_)
        ));
    }

    #[test]
    fn retry_requeues_with_a_time_and_logs_every_attempt() {
        let (_tmp, mut conn) = db("retry");
        let now = t("2026-01-01T00:00:00Z");
        let id = created(enqueue(&mut conn, &job("a"), DAY, now).unwrap());
        let cap = |_: &str| 1usize;
        let c = claim_next(&mut conn, &cap, now).unwrap().unwrap();
        let at = now + chrono::Duration::seconds(30);
        let mut comp = done(
            &c,
            Decision::Retry {
                status: JobStatus::Failed,
                at,
            },
        );
        comp.last_error = Some("boom".into());
        comp.record.stderr = "first attempt stderr".into();
        let out = complete(&mut conn, &comp, DAY, now).unwrap();
        assert_eq!(out.status, JobStatus::Queued);
        assert!(
            claim_next(&mut conn, &cap, now).unwrap().is_none(),
            "not before next_retry_at"
        );
        let c2 = claim_next(&mut conn, &cap, at).unwrap().unwrap();
        assert_eq!(c2.attempt, 2);
        let mut comp2 = done(&c2, Decision::Exhausted(JobStatus::Failed));
        comp2.last_error = Some("boom again".into());
        complete(&mut conn, &comp2, DAY, at).unwrap();
        let row = find(&conn, &id).unwrap().unwrap();
        assert_eq!(row.status, JobStatus::Dead);
        assert_eq!(row.last_error.as_deref(), Some("boom again"));
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM job_log"), 2);
        let stderr: String = conn
            .query_row("SELECT stderr FROM job_log WHERE attempt = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stderr, "first attempt stderr");
        assert_eq!(
            statuses(&conn, &id),
            vec![
                "->queued",
                "queued>running",
                "running>failed",
                "failed>queued",
                "queued>running",
                "running>failed",
                "failed>dead"
            ]
        );
    }

    #[test]
    fn completing_a_job_twice_is_refused() {
        let (_tmp, mut conn) = db("twice");
        let now = t("2026-01-01T00:00:00Z");
        enqueue(&mut conn, &job("a"), DAY, now).unwrap();
        let c = claim_next(&mut conn, &|_| 1, now).unwrap().unwrap();
        complete(&mut conn, &done(&c, Decision::Succeeded), DAY, now).unwrap();
        let err = complete(&mut conn, &done(&c, Decision::Succeeded), DAY, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "job {}: refused the outcome of attempt 1, which is no longer current (the job is now succeeded, attempt 1); nothing was recorded",
                c.id
            )
        );
        assert_eq!(
            count(&conn, "SELECT COUNT(*) FROM job_log"),
            1,
            "the failed txn wrote nothing"
        );
    }

    #[test]
    fn a_stale_attempt_cannot_overwrite_the_current_one() {
        let (_tmp, mut conn) = db("stale");
        let now = t("2026-01-01T00:00:00Z");
        let id = created(enqueue(&mut conn, &job("a"), DAY, now).unwrap());
        let first = claim_next(&mut conn, &|_| 1, now).unwrap().unwrap();
        // The process running attempt 1 is presumed dead: recovery requeues the
        // job and a second process claims attempt 2.
        recover_orphans(&mut conn, now).unwrap();
        let second = claim_next(&mut conn, &|_| 1, now).unwrap().unwrap();
        assert_eq!(second.attempt, 2);
        let err = complete(&mut conn, &done(&first, Decision::Succeeded), DAY, now).unwrap_err();
        assert!(
            matches!(err, StoreError::StaleAttempt { attempt: 1, .. }),
            "{err}"
        );
        assert_eq!(
            find(&conn, &id).unwrap().unwrap().status,
            JobStatus::Running
        );
        complete(&mut conn, &done(&second, Decision::Succeeded), DAY, now).unwrap();
        assert_eq!(
            find(&conn, &id).unwrap().unwrap().status,
            JobStatus::Succeeded
        );
    }

    #[test]
    fn orphans_are_requeued_or_killed() {
        let (_tmp, mut conn) = db("orphans");
        let now = t("2026-01-01T00:00:00Z");
        let a = created(enqueue(&mut conn, &job("a"), DAY, now).unwrap());
        let b = created(
            enqueue(
                &mut conn,
                &NewJob {
                    max_attempts: 1,
                    ..job("b")
                },
                DAY,
                now,
            )
            .unwrap(),
        );
        claim_next(&mut conn, &|_| 5, now).unwrap().unwrap();
        claim_next(&mut conn, &|_| 5, now).unwrap().unwrap();
        let rec = recover_orphans(&mut conn, now).unwrap();
        assert_eq!(rec.len(), 2);
        let ra = find(&conn, &a).unwrap().unwrap();
        assert_eq!((ra.status, ra.attempt), (JobStatus::Queued, 2));
        let rb = find(&conn, &b).unwrap().unwrap();
        assert_eq!(rb.status, JobStatus::Dead);
        assert!(
            rb.last_error
                .unwrap()
                .contains("max attempts (1) exhausted")
        );
        assert!(recover_orphans(&mut conn, now).unwrap().is_empty());
    }

    #[test]
    fn children_are_created_in_the_same_transaction() {
        let (_tmp, mut conn) = db("children");
        let now = t("2026-01-01T00:00:00Z");
        enqueue(&mut conn, &job("a"), DAY, now).unwrap();
        let c = claim_next(&mut conn, &|_| 1, now).unwrap().unwrap();
        let mut comp = done(&c, Decision::Succeeded);
        comp.children = vec![
            NewJob {
                parent_job_id: Some(c.id.clone()),
                ..job("b")
            }
            .into(),
        ];
        let out = complete(&mut conn, &comp, DAY, now).unwrap();
        assert_eq!(out.children.len(), 1);
        let child = find(&conn, &out.children[0]).unwrap().unwrap();
        assert_eq!(child.parent_job_id.as_deref(), Some(c.id.as_str()));
    }

    /// A routed child of `parent` at `hop` for event `event`, planned with
    /// fresh ids the way the routing engine plans one.
    fn routed(
        parent: &str,
        event: &str,
        hop: &str,
        plugin: &str,
    ) -> crate::store::completion::Child {
        use crate::store::context::ContextRow;
        let id = uuid::Uuid::now_v7().to_string();
        let context = uuid::Uuid::now_v7().to_string();
        crate::store::completion::Child {
            job: NewJob {
                command: "handle".into(),
                id: Some(id),
                parent_job_id: Some(parent.into()),
                source_event_id: Some(event.into()),
                event_context_id: Some(context.clone()),
                hop: Some(hop.into()),
                dedupe_check: false,
                ..job(plugin)
            },
            context: Some(ContextRow {
                id: context,
                parent_id: None,
                pipeline: Some("p".into()),
                hop: Some(hop.into()),
                accumulated: serde_json::json!({}),
            }),
            settled: None,
        }
    }

    fn plant(conn: &mut Connection, plan: &[crate::store::completion::Child]) -> Vec<String> {
        let now = t("2026-01-01T00:00:00Z");
        let tx = begin(conn).unwrap();
        let ids = crate::store::completion::insert_children(&tx, plan, DAY, now).unwrap();
        tx.commit().unwrap();
        ids
    }

    #[test]
    fn an_event_reaches_each_hop_once_per_upstream_job() {
        use crate::store::completion::Settled;
        let (_tmp, mut conn) = db("routed-once");
        let first = vec![routed("up", "ev1", "p:steps[1]", "b")];
        assert_eq!(plant(&mut conn, &first).len(), 1);
        // The same event routed again from the same upstream job, planned
        // anew (other ids), with a switch and the step behind it: nothing of
        // it is written, its context rows included.
        let mut again = vec![routed("up", "ev1", "p:steps[1]", "b")];
        let mut switch = routed("up", "ev1", "p:steps[2]/if", "core.switch");
        switch.settled = Some(Settled::Succeeded(serde_json::json!({"status": "ok"})));
        let behind = routed(switch.job.id.as_deref().unwrap(), "ev1", "p:steps[2]", "c");
        // The twin of the first child takes its planned subtree along.
        let under_twin = routed(
            again[0].job.id.as_deref().unwrap(),
            "ev9",
            "p:steps[3]",
            "d",
        );
        again.push(under_twin);
        let jobs = count(&conn, "SELECT COUNT(*) FROM job_queue");
        let contexts = count(&conn, "SELECT COUNT(*) FROM event_context");
        assert!(plant(&mut conn, &again).is_empty());
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM job_queue"), jobs);
        assert_eq!(count(&conn, "SELECT COUNT(*) FROM event_context"), contexts);
        // A switch that is new is written, and so is what it plans.
        assert_eq!(plant(&mut conn, &[switch, behind]).len(), 2);
        // The index itself refuses a twin, whoever writes it.
        let err = conn
            .execute(
                "INSERT INTO job_queue (id, plugin, command, status, submitted_by, created_at, parent_job_id, source_event_id, hop) VALUES ('x', 'b', 'handle', 'queued', 'route', '2026-01-01T00:00:00Z', 'up', 'ev1', 'p:steps[1]')",
                [],
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("UNIQUE constraint failed"),
            "{err}"
        );
    }

    #[test]
    fn a_split_and_a_resume_are_not_twins() {
        let (_tmp, mut conn) = db("routed-legit");
        let now = t("2026-01-01T00:00:00Z");
        // One event into two branches that run the same plugin and command.
        let split = vec![
            routed("up", "ev1", "p:steps[1].split[0]", "b"),
            routed("up", "ev1", "p:steps[1].split[1]", "b"),
        ];
        let ids = plant(&mut conn, &split);
        assert_eq!(ids.len(), 2);
        // Two events of one upstream job into one hop.
        assert_eq!(
            plant(
                &mut conn,
                &[routed("up", "ev2", "p:steps[1].split[0]", "b")]
            )
            .len(),
            1
        );
        // A branch fails; resuming it is a new job with the same event, hop
        // and context, under the failed one.
        let c = claim_next(&mut conn, &|_| 1, now).unwrap().unwrap();
        assert_eq!(c.id, ids[0]);
        complete(
            &mut conn,
            &done(&c, Decision::Terminal(JobStatus::Failed)),
            DAY,
            now,
        )
        .unwrap();
        let tx = begin(&mut conn).unwrap();
        let resumed = retry_in(&tx, &ids[0], SubmittedBy::Cli, now).unwrap();
        tx.commit().unwrap();
        let row = find(&conn, &resumed).unwrap().unwrap();
        assert_eq!(row.parent_job_id.as_deref(), Some(ids[0].as_str()));
        assert_eq!(row.source_event_id.as_deref(), Some("ev1"));
        let hop: Option<String> = conn
            .query_row("SELECT hop FROM job_queue WHERE id = ?1", [&resumed], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(hop.as_deref(), Some("p:steps[1].split[0]"));
        let tx = begin(&mut conn).unwrap();
        assert!(matches!(
            retry_in(&tx, &ids[0], SubmittedBy::Cli, now),
            Err(RetryRefused::AlreadyRetried(id)) if id == resumed
        ));
    }

    #[test]
    fn kill_queued_marks_dead_with_reason() {
        let (_tmp, mut conn) = db("kill");
        let now = t("2026-01-01T00:00:00Z");
        let a = created(enqueue(&mut conn, &job("gone"), DAY, now).unwrap());
        let tx = begin(&mut conn).unwrap();
        let ids = kill_queued(&tx, "gone", None, "plugin removed by reload", now).unwrap();
        tx.commit().unwrap();
        assert_eq!(ids, vec![a.clone()]);
        let row = find(&conn, &a).unwrap().unwrap();
        assert_eq!(
            (row.status.as_str(), row.last_error.as_deref()),
            ("dead", Some("plugin removed by reload"))
        );
    }
}
