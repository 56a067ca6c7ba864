//! What the ledger knows of the relay: each target instance's outbox (the
//! `relay`/`send` jobs addressed to it) and each peer's last accepted event,
//! for `relay status`, `system doctor` and the metrics.

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::StoreError;

/// The outbox of one target instance.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Outbox {
    /// Events waiting for their next attempt.
    pub queued: i64,
    /// Events being delivered now.
    pub running: i64,
    /// Events delivered.
    pub delivered: i64,
    /// Events given up on (refused with a 4xx, or out of attempts).
    pub failed: i64,
    /// When the oldest waiting event was put in the outbox.
    pub oldest_queued_at: Option<String>,
    /// When the last delivery succeeded.
    pub last_success_at: Option<String>,
    /// When the last attempt failed, and why.
    pub last_error_at: Option<String>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
}

/// The outbox of `instance`.
pub fn outbox(conn: &Connection, instance: &str) -> Result<Outbox, StoreError> {
    let err = |e| StoreError::sqlite(format!("read the relay outbox of `{instance}`"), e);
    let mut out = Outbox::default();
    let mut stmt = conn
        .prepare_cached(
            "SELECT status, count(*), min(created_at), max(completed_at) FROM job_queue
             WHERE plugin = 'relay' AND command = 'send' AND json_extract(payload, '$.instance') = ?1
             GROUP BY status",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map([instance], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .map_err(err)?;
    for row in rows {
        let (status, n, oldest, newest) = row.map_err(err)?;
        match status.as_str() {
            "queued" => {
                out.queued = n;
                out.oldest_queued_at = oldest;
            }
            "running" => out.running = n,
            "succeeded" => {
                out.delivered = n;
                out.last_success_at = newest;
            }
            _ => out.failed += n,
        }
    }
    let last: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT a.completed_at, a.error FROM job_attempts a JOIN job_queue q ON q.id = a.job_id
             WHERE q.plugin = 'relay' AND q.command = 'send' AND json_extract(q.payload, '$.instance') = ?1
               AND a.status <> 'succeeded'
             ORDER BY a.completed_at DESC LIMIT 1",
        )
        .and_then(|mut s| s.query_row([instance], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(err)?;
    if let Some((at, error)) = last {
        out.last_error_at = Some(at);
        out.last_error = error;
    }
    Ok(out)
}

/// The last event accepted from `peer`: when, and the clock skew it showed
/// (this clock minus the sender's timestamp, seconds).
pub fn last_acceptance(
    conn: &Connection,
    peer: &str,
) -> Result<Option<(String, Option<i64>)>, StoreError> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT created_at, data FROM system_events
             WHERE kind = 'relay.accepted' AND json_extract(data, '$.peer') = ?1
             ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut s| {
            s.query_row([peer], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(|e| StoreError::sqlite(format!("read the last acceptance from `{peer}`"), e))?;
    Ok(row.map(|(at, data)| {
        let skew = data
            .and_then(|d| serde_json::from_str::<Value>(&d).ok())
            .and_then(|d| d.get("skew_seconds").and_then(Value::as_i64));
        (at, skew)
    }))
}
