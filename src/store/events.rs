//! The event ledger behind `GET /events`: job lifecycle events are the
//! `job_transitions` rows (no extra write per job), everything else is a row of
//! `system_events`, written in the same transaction as the change it reports.
//! Both tables number their rows with AUTOINCREMENT, so a [`Cursor`] holding
//! one id of each is a durable position that survives restarts and pruning.
//!
//! Owns: recording system events, reading both tables after a cursor as one
//! ordered sequence of [`Event`]s. Must not: know about HTTP or SSE framing.

use std::fmt;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};
use serde_json::{Map, Value};

use super::StoreError;
use crate::clock::format_ts;

/// A position in the event sequence: the last `job_transitions` id and the
/// last `system_events` id delivered. The SSE event id is its [`Display`] form,
/// `"<transitions>-<system>"`, so one id resumes both sequences exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The last `job_transitions.id` delivered (0: none).
    pub transitions: i64,
    /// The last `system_events.id` delivered (0: none).
    pub system: i64,
}

impl Cursor {
    /// A cursor past every possible row: the upper bound of an open-ended read.
    pub const END: Cursor = Cursor {
        transitions: i64::MAX,
        system: i64::MAX,
    };

    /// Parses the `"<transitions>-<system>"` form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (t, s) = s.trim().split_once('-')?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(t) || !digits(s) {
            return None;
        }
        Some(Cursor {
            transitions: t.parse().ok()?,
            system: s.parse().ok()?,
        })
    }

    /// The position after the newest row of each table now.
    pub fn head(conn: &Connection) -> Result<Cursor, StoreError> {
        conn.query_row(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM job_transitions), (SELECT COALESCE(MAX(id), 0) FROM system_events)",
            [],
            |r| {
                Ok(Cursor {
                    transitions: r.get(0)?,
                    system: r.get(1)?,
                })
            },
        )
        .map_err(|e| StoreError::sqlite("read the newest event ids", e))
    }

    /// Whether every row this cursor covers is also covered by `other`.
    pub fn is_within(self, other: Cursor) -> bool {
        self.transitions <= other.transitions && self.system <= other.system
    }

    /// The component-wise minimum (a cursor never reaches past `other`).
    pub fn min(self, other: Cursor) -> Cursor {
        Cursor {
            transitions: self.transitions.min(other.transitions),
            system: self.system.min(other.system),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.transitions, self.system)
    }
}

/// One event, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The position after this event: the id a client resumes from.
    pub cursor: Cursor,
    /// `job.queued`, `scheduler.fired`, `breaker.open`, ….
    pub kind: String,
    /// The event's fields, a JSON object.
    pub data: Value,
    /// Whether the event has a position of its own to resume from. A
    /// preflight has not: it is sent with the claim that follows it.
    pub resumable: bool,
}

/// Appends a system event inside the caller's transaction (or as its own
/// statement on a connection in autocommit mode). `data`'s fields are stored
/// as given; `plugin`, `command` and `job_id` have their own columns.
pub fn record(
    conn: &Connection,
    kind: &str,
    plugin: Option<&str>,
    command: Option<&str>,
    job_id: Option<&str>,
    data: &Value,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    record_at(conn, kind, plugin, command, job_id, data, &format_ts(now))
}

/// [`record`] with the time already in the ledger's format (a writer that
/// stamps the row it reports on with the same string).
pub(super) fn record_at(
    conn: &Connection,
    kind: &str,
    plugin: Option<&str>,
    command: Option<&str>,
    job_id: Option<&str>,
    data: &Value,
    ts: &str,
) -> Result<(), StoreError> {
    let data = if data.is_null() {
        None
    } else {
        Some(data.to_string())
    };
    conn.prepare_cached(
        "INSERT INTO system_events (kind, plugin, command, job_id, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| s.execute(params![kind, plugin, command, job_id, data, ts]))
    .map_err(|e| StoreError::sqlite(format!("record event {kind}"), e))?;
    Ok(())
}

/// The events after `cursor`, oldest first, at most `limit`.
pub fn since(conn: &Connection, cursor: Cursor, limit: usize) -> Result<Vec<Event>, StoreError> {
    between(conn, cursor, Cursor::END, limit)
}

/// The events after `after` and within `upto`, oldest first, at most `limit`.
///
/// Each table is read in id order; the two are merged by `created_at`, a
/// transition before a system event of the same time. A batch stops where a
/// table's read rows run out while it may hold more, so consecutive batches
/// join into exactly the sequence one unbounded read would give.
pub fn between(
    conn: &Connection,
    after: Cursor,
    upto: Cursor,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let transitions = read_transitions(conn, after.transitions, upto.transitions, limit)?;
    let system = read_system(conn, after.system, upto.system, limit)?;
    let (t_more, s_more) = (transitions.len() == limit, system.len() == limit);
    let mut t = transitions.into_iter().peekable();
    let mut s = system.into_iter().peekable();
    let mut cursor = after;
    let mut out = Vec::with_capacity(limit);
    while out.len() < limit {
        let take_transition = match (t.peek(), s.peek()) {
            (Some(a), Some(b)) => a.at <= b.at,
            // One side's rows ran out: go on with the other only if the empty
            // side is known to have no more rows in range.
            (Some(_), None) if !s_more => true,
            (None, Some(_)) if !t_more => false,
            _ => break,
        };
        let row = if take_transition { t.next() } else { s.next() };
        let Some(row) = row else { break };
        let before = cursor;
        if take_transition {
            cursor.transitions = row.id;
        } else {
            cursor.system = row.id;
        }
        if let Some(data) = row.preflight {
            // Stamped with the position before its row: a client that saw it
            // but not the row's own event replays both, never loses one.
            out.push(Event {
                cursor: before,
                kind: PREFLIGHT.to_string(),
                data,
                resumable: false,
            });
        }
        out.push(Event {
            cursor,
            kind: row.kind,
            data: row.data,
            resumable: true,
        });
    }
    Ok(out)
}

/// A row of either table, before the merge.
struct Row {
    id: i64,
    at: String,
    kind: String,
    data: Value,
    /// A claim's `job.preflight` event, sent just before its `job.started`.
    preflight: Option<Value>,
}

/// The kind of the event that reports a claim's preflight decision. Its
/// frame carries no SSE id: a client's last id stays the event before it, so
/// a client that resumes there is sent the preflight again with its claim.
pub const PREFLIGHT: &str = "job.preflight";

/// The reason a settled row's claim carries when its preflight failed (a
/// `with:` remap, a baggage claim or a relay that could not be made): the
/// job never ran, and the stream reports the preflight as `fail`.
pub const PREFLIGHT_FAILED: &str = "preflight failed: ";

/// The preflight decision a claim's transition reason records: `("run", "")`,
/// or `("fail", why)` for a hop settled without running.
pub fn preflight(claim_reason: &str) -> (&'static str, &str) {
    match claim_reason.strip_prefix(PREFLIGHT_FAILED) {
        Some(why) => ("fail", why),
        None => ("run", ""),
    }
}

/// The event kind of a job transition.
fn job_kind(from: Option<&str>, to: &str) -> String {
    match (from, to) {
        (None, "queued") => "job.queued".to_string(),
        // Back to the queue after a failure, a timeout or an interrupted run.
        (Some(_), "queued") => "job.retry".to_string(),
        (_, "running") => "job.started".to_string(),
        (_, to) => format!("job.{to}"),
    }
}

fn read_transitions(
    conn: &Connection,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let op = "read job transitions for the event stream";
    let mut stmt = conn
        .prepare_cached(
            "SELECT t.id, t.job_id, t.from_status, t.to_status, t.attempt, t.reason, t.created_at, q.plugin, q.command,
                    c.pipeline_name, c.step_id, json_extract(c.accumulated_json, '$.ductile_step_id'),
                    json_extract(c.accumulated_json, '$.ductile_pipeline_instance_id')
             FROM job_transitions t LEFT JOIN job_queue q ON q.id = t.job_id
             LEFT JOIN event_context c ON c.id = q.event_context_id
             WHERE t.id > ?1 AND t.id <= ?2 ORDER BY t.id LIMIT ?3",
        )
        .map_err(|e| StoreError::sqlite(op, e))?;
    let rows = stmt
        .query_map(params![after, upto, limit as i64], |r| {
            let from: Option<String> = r.get(2)?;
            let to: String = r.get(3)?;
            let at: String = r.get(6)?;
            let job_id: String = r.get(1)?;
            let plugin: Option<String> = r.get(7)?;
            let command: Option<String> = r.get(8)?;
            let reason: String = r.get(5)?;
            let mut data = serde_json::json!({
                "job_id": job_id,
                "plugin": plugin,
                "command": command,
                "attempt": r.get::<_, i64>(4)?,
                "from": from,
                "to": to,
                "reason": reason,
                "at": at,
            });
            // A pipeline step's events say where in which tree it sits.
            let pipeline: Option<String> = r.get(9)?;
            let hop: Option<String> = r.get(10)?;
            let step = Step {
                pipeline,
                step_id: r.get(11)?,
                hop,
                tree: r.get(12)?,
            };
            step.annotate(&mut data);
            let preflight = (to == "running").then(|| {
                let (decision, why) = preflight(&reason);
                let mut p = serde_json::json!({
                    "job_id": job_id,
                    "plugin": plugin,
                    "command": command,
                    "decision": decision,
                    "reason": why,
                    "at": at,
                });
                step.annotate(&mut p);
                p
            });
            Ok(Row {
                id: r.get(0)?,
                kind: job_kind(from.as_deref(), &to),
                at,
                data,
                preflight,
            })
        })
        .map_err(|e| StoreError::sqlite(op, e))?;
    rows.collect::<Result<_, _>>()
        .map_err(|e| StoreError::sqlite(op, e))
}

/// Where a job sits in a pipeline tree (all `None` outside one).
struct Step {
    pipeline: Option<String>,
    step_id: Option<String>,
    hop: Option<String>,
    tree: Option<String>,
}

impl Step {
    /// Adds `pipeline`, `step_id`, `hop` and `tree` to an event's fields when
    /// the job belongs to a tree.
    fn annotate(&self, data: &mut Value) {
        let Value::Object(m) = data else { return };
        if self.hop.is_none() && self.tree.is_none() {
            return;
        }
        m.insert("pipeline".into(), self.pipeline.clone().into());
        m.insert("step_id".into(), self.step_id.clone().into());
        m.insert("hop".into(), self.hop.clone().into());
        m.insert("tree".into(), self.tree.clone().into());
    }
}

fn read_system(
    conn: &Connection,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let op = "read system events for the event stream";
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, kind, plugin, command, job_id, data, created_at FROM system_events
             WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        )
        .map_err(|e| StoreError::sqlite(op, e))?;
    let rows = stmt
        .query_map(params![after, upto, limit as i64], |r| {
            let stored: Option<String> = r.get(5)?;
            let at: String = r.get(6)?;
            // The columns come first and win over a stored field of the same name.
            let mut data = Map::new();
            data.insert("plugin".into(), r.get::<_, Option<String>>(2)?.into());
            data.insert("command".into(), r.get::<_, Option<String>>(3)?.into());
            data.insert("job_id".into(), r.get::<_, Option<String>>(4)?.into());
            if let Some(Value::Object(fields)) =
                stored.and_then(|s| serde_json::from_str::<Value>(&s).ok())
            {
                for (k, v) in fields {
                    data.entry(k).or_insert(v);
                }
            }
            data.insert("at".into(), Value::String(at.clone()));
            Ok(Row {
                id: r.get(0)?,
                kind: r.get(1)?,
                at,
                data: Value::Object(data),
                preflight: None,
            })
        })
        .map_err(|e| StoreError::sqlite(op, e))?;
    rows.collect::<Result<_, _>>()
        .map_err(|e| StoreError::sqlite(op, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;
    use crate::config::Synchronous;
    use crate::store::queue::{self, Change, JobStatus, NewJob, SubmittedBy};
    use crate::store::testing::TempDir;
    use serde_json::json;
    use std::time::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        parse_ts(s).unwrap()
    }

    fn db(tag: &str) -> (TempDir, Connection) {
        let tmp = TempDir::new(tag);
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        (tmp, conn)
    }

    fn enqueue(conn: &mut Connection, at: &str) -> String {
        let job = NewJob::new("echo", "poll", Value::Null, SubmittedBy::Cli, 2);
        match queue::enqueue(conn, &job, Duration::from_secs(60), t(at)).unwrap() {
            queue::Enqueued::Created(id) => id,
            other => panic!("{other:?}"),
        }
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events.iter().map(|e| e.kind.clone()).collect()
    }

    #[test]
    fn a_cursor_round_trips_and_refuses_anything_else() {
        let c = Cursor {
            transitions: 12,
            system: 3,
        };
        assert_eq!(c.to_string(), "12-3");
        assert_eq!(Cursor::parse("12-3"), Some(c));
        assert_eq!(Cursor::parse(" 0-0 "), Some(Cursor::default()));
        for bad in [
            "",
            "12",
            "12-",
            "-3",
            "a-3",
            "1-2-3",
            "+1-2",
            "1--2",
            "99999999999999999999-1",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
        assert!(c.is_within(Cursor::END));
        assert!(!Cursor::END.is_within(c));
    }

    #[test]
    fn job_transitions_become_job_events_with_their_plugin() {
        let (_tmp, mut conn) = db("events-jobs");
        let id = enqueue(&mut conn, "2026-01-01T00:00:00Z");
        let cap = |_: &str| 1usize;
        let job = queue::claim_next(&mut conn, &cap, t("2026-01-01T00:00:01Z"))
            .unwrap()
            .unwrap();
        let tx = queue::begin(&mut conn).unwrap();
        let ts = "2026-01-01T00:00:02.000000Z";
        queue::transition(
            &tx,
            &job.id,
            JobStatus::Running,
            JobStatus::Failed,
            &Change::new(1, "plugin failed", ts).error(Some("boom")),
        )
        .unwrap();
        queue::transition(
            &tx,
            &job.id,
            JobStatus::Failed,
            JobStatus::Queued,
            &Change::new(2, "retry", ts),
        )
        .unwrap();
        tx.commit().unwrap();
        let events = since(&conn, Cursor::default(), 100).unwrap();
        assert_eq!(
            kinds(&events),
            [
                "job.queued",
                "job.preflight",
                "job.started",
                "job.failed",
                "job.retry"
            ]
        );
        assert_eq!(
            events[1].data,
            json!({"job_id": id, "plugin": "echo", "command": "poll", "decision": "run",
                   "reason": "", "at": events[1].data["at"]})
        );
        assert_eq!(
            events[1].cursor, events[0].cursor,
            "a preflight carries the position before its claim"
        );
        assert_eq!(
            events[3].data,
            json!({"job_id": id, "plugin": "echo", "command": "poll", "attempt": 1,
                   "from": "running", "to": "failed", "reason": "plugin failed", "at": ts})
        );
        assert_eq!(events[4].cursor, Cursor::head(&conn).unwrap());
        assert_eq!(
            since(&conn, events[2].cursor, 100).unwrap(),
            events[3..].to_vec(),
            "resumes right after the cursor"
        );
    }

    #[test]
    fn both_tables_merge_by_time_and_batches_join_exactly() {
        let (_tmp, mut conn) = db("events-merge");
        // Interleave: a job event at :00, a system event at :01, a job at :02,
        // two system events at :02 (after the transition of the same time) and :03.
        enqueue(&mut conn, "2026-01-01T00:00:00Z");
        record(
            &conn,
            "config.reloaded",
            None,
            None,
            None,
            &json!({"plugins": 1}),
            t("2026-01-01T00:00:01Z"),
        )
        .unwrap();
        enqueue(&mut conn, "2026-01-01T00:00:02Z");
        for at in ["2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"] {
            record(
                &conn,
                "scheduler.skipped",
                Some("echo"),
                Some("poll"),
                None,
                &json!({"schedule": "default", "why": "poll guard", "plugin": "ignored"}),
                t(at),
            )
            .unwrap();
        }
        let all = since(&conn, Cursor::default(), 100).unwrap();
        assert_eq!(
            kinds(&all),
            [
                "job.queued",
                "config.reloaded",
                "job.queued",
                "scheduler.skipped",
                "scheduler.skipped"
            ]
        );
        let ids: Vec<String> = all.iter().map(|e| e.cursor.to_string()).collect();
        assert_eq!(ids, ["1-0", "1-1", "2-1", "2-2", "2-3"]);
        assert_eq!(all[3].data["plugin"], "echo", "the column wins");
        assert_eq!(all[3].data["why"], "poll guard");
        assert_eq!(all[1].data["job_id"], Value::Null);
        for limit in 1..=5 {
            let mut cursor = Cursor::default();
            let mut joined = Vec::new();
            loop {
                let batch = since(&conn, cursor, limit).unwrap();
                let Some(last) = batch.last() else { break };
                cursor = last.cursor;
                joined.extend(batch);
            }
            assert_eq!(joined, all, "batches of {limit}");
        }
        let upto = all[2].cursor;
        assert_eq!(
            between(&conn, all[0].cursor, upto, 100).unwrap(),
            all[1..3].to_vec(),
            "an upper bound stops the replay"
        );
    }

    #[test]
    fn a_pruned_job_still_yields_its_events_without_a_plugin() {
        let (_tmp, mut conn) = db("events-pruned");
        let id = enqueue(&mut conn, "2026-01-01T00:00:00Z");
        conn.execute("DELETE FROM job_queue WHERE id = ?1", [&id])
            .unwrap();
        let events = since(&conn, Cursor::default(), 10).unwrap();
        assert_eq!(events[0].data["plugin"], Value::Null);
        assert_eq!(events[0].data["job_id"], Value::String(id));
    }
}
