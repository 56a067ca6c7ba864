//! `schedule_entries`: the scheduler's durable memory, so a restart neither
//! double-fires nor forgets when a schedule is next due.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::clock::format_ts;

/// One schedule's persisted state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    /// Plugin instance.
    pub plugin: String,
    /// Schedule id.
    pub schedule_id: String,
    /// Command it enqueues.
    pub command: String,
    /// Fingerprint of the definition that computed `next_run_at`.
    pub fingerprint: String,
    /// active | paused_invalid | paused_manual | exhausted.
    pub status: String,
    /// Why it is paused, when it is.
    pub reason: Option<String>,
    /// Last time the scheduler enqueued for it.
    pub last_fired_at: Option<String>,
    /// Last success of a job it enqueued.
    pub last_success_at: Option<String>,
    /// That job.
    pub last_success_job_id: Option<String>,
    /// Next due instant.
    pub next_run_at: Option<String>,
}

const COLUMNS: &str = "plugin, schedule_id, command, fingerprint, status, reason, last_fired_at, last_success_at, last_success_job_id, next_run_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        plugin: r.get(0)?,
        schedule_id: r.get(1)?,
        command: r.get(2)?,
        fingerprint: r.get(3)?,
        status: r.get(4)?,
        reason: r.get(5)?,
        last_fired_at: r.get(6)?,
        last_success_at: r.get(7)?,
        last_success_job_id: r.get(8)?,
        next_run_at: r.get(9)?,
    })
}

/// Every entry, ordered by plugin and id.
pub fn all(conn: &Connection) -> Result<Vec<Entry>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedule_entries ORDER BY plugin, schedule_id"
    ))
    .and_then(|mut s| s.query_map([], from_row).and_then(|rows| rows.collect()))
    .map_err(|e| StoreError::sqlite("read schedule entries", e))
}

/// One entry.
pub fn find(conn: &Connection, plugin: &str, id: &str) -> Result<Option<Entry>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedule_entries WHERE plugin = ?1 AND schedule_id = ?2"
    ))
    .and_then(|mut s| s.query_row(params![plugin, id], from_row).optional())
    .map_err(|e| StoreError::sqlite(format!("read schedule {plugin}/{id}"), e))
}

/// Creates or replaces an entry's definition-derived fields (status, fingerprint,
/// next run), keeping its firing history; a manual pause outlives a redefinition.
#[allow(clippy::too_many_arguments)]
pub fn upsert(
    conn: &Connection,
    plugin: &str,
    id: &str,
    command: &str,
    fingerprint: &str,
    status: &str,
    reason: Option<&str>,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ts = format_ts(now);
    conn.prepare_cached(
        "INSERT INTO schedule_entries (plugin, schedule_id, command, fingerprint, status, reason, next_run_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT(plugin, schedule_id) DO UPDATE SET command = excluded.command, fingerprint = excluded.fingerprint,
           status = CASE WHEN schedule_entries.status = 'paused_manual' AND excluded.status = 'active' THEN 'paused_manual' ELSE excluded.status END,
           reason = CASE WHEN schedule_entries.status = 'paused_manual' AND excluded.status = 'active' THEN schedule_entries.reason ELSE excluded.reason END,
           next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| s.execute(params![plugin, id, command, fingerprint, status, reason, next_run_at.map(format_ts), ts]))
    .map_err(|e| StoreError::sqlite(format!("write schedule {plugin}/{id}"), e))?;
    Ok(())
}

/// Records a firing and the next due instant (`None` + exhausted for one-shots).
pub fn fired(
    conn: &Connection,
    plugin: &str,
    id: &str,
    fired_at: DateTime<Utc>,
    next_run_at: Option<DateTime<Utc>>,
    exhausted: bool,
) -> Result<(), StoreError> {
    let ts = format_ts(fired_at);
    conn.prepare_cached(
        "UPDATE schedule_entries SET last_fired_at = ?3, next_run_at = ?4, status = CASE WHEN ?5 THEN 'exhausted' ELSE status END, updated_at = ?3
         WHERE plugin = ?1 AND schedule_id = ?2",
    )
    .and_then(|mut s| s.execute(params![plugin, id, ts, next_run_at.map(format_ts), exhausted]))
    .map_err(|e| StoreError::sqlite(format!("record firing of schedule {plugin}/{id}"), e))?;
    Ok(())
}

/// Moves the next due instant without firing (skipped by a window, guard or breaker).
pub fn reschedule(
    conn: &Connection,
    plugin: &str,
    id: &str,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE schedule_entries SET next_run_at = ?3, updated_at = ?4 WHERE plugin = ?1 AND schedule_id = ?2")
        .and_then(|mut s| s.execute(params![plugin, id, next_run_at.map(format_ts), format_ts(now)]))
        .map_err(|e| StoreError::sqlite(format!("reschedule {plugin}/{id}"), e))?;
    Ok(())
}

/// Sets an entry's status by hand (`paused_manual` or back to `active`), with
/// its reason and next run; false when the entry does not exist.
pub fn set_status(
    conn: &Connection,
    plugin: &str,
    id: &str,
    status: &str,
    reason: Option<&str>,
    next_run_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE schedule_entries SET status = ?3, reason = ?4, next_run_at = ?5, updated_at = ?6 WHERE plugin = ?1 AND schedule_id = ?2")
        .and_then(|mut s| s.execute(params![plugin, id, status, reason, next_run_at.map(format_ts), format_ts(now)]))
        .map_err(|e| StoreError::sqlite(format!("set the status of schedule {plugin}/{id}"), e))?;
    Ok(n > 0)
}

/// Records the success of a job the schedule enqueued.
pub fn succeeded(
    conn: &Connection,
    plugin: &str,
    id: &str,
    job_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let ts = format_ts(now);
    conn.prepare_cached("UPDATE schedule_entries SET last_success_at = ?3, last_success_job_id = ?4, updated_at = ?3 WHERE plugin = ?1 AND schedule_id = ?2")
        .and_then(|mut s| s.execute(params![plugin, id, ts, job_id]))
        .map_err(|e| StoreError::sqlite(format!("record success of schedule {plugin}/{id}"), e))?;
    Ok(())
}

/// Deletes entries whose schedule no longer exists in the config.
pub fn retain(conn: &Connection, keep: &[(String, String)]) -> Result<usize, StoreError> {
    let mut removed = 0;
    for e in all(conn)? {
        if !keep
            .iter()
            .any(|(p, i)| *p == e.plugin && *i == e.schedule_id)
        {
            removed += conn
                .execute(
                    "DELETE FROM schedule_entries WHERE plugin = ?1 AND schedule_id = ?2",
                    params![e.plugin, e.schedule_id],
                )
                .map_err(|err| StoreError::sqlite("remove stale schedule", err))?;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;
    use crate::config::Synchronous;
    use crate::store::testing::TempDir;

    #[test]
    fn entries_keep_history_across_redefinition() {
        let tmp = TempDir::new("sched");
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        let t0 = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let t1 = parse_ts("2026-01-01T00:05:00Z").unwrap();
        upsert(
            &conn,
            "p",
            "default",
            "poll",
            "f1",
            "active",
            None,
            Some(t1),
            t0,
        )
        .unwrap();
        fired(
            &conn,
            "p",
            "default",
            t1,
            Some(t1 + chrono::Duration::minutes(5)),
            false,
        )
        .unwrap();
        succeeded(&conn, "p", "default", "job1", t1).unwrap();
        upsert(
            &conn,
            "p",
            "default",
            "poll",
            "f2",
            "active",
            None,
            Some(t1),
            t1,
        )
        .unwrap();
        let e = find(&conn, "p", "default").unwrap().unwrap();
        assert_eq!(e.fingerprint, "f2");
        assert_eq!(
            e.last_fired_at.as_deref(),
            Some("2026-01-01T00:05:00.000000Z")
        );
        assert_eq!(e.last_success_job_id.as_deref(), Some("job1"));
        fired(&conn, "p", "default", t1, None, true).unwrap();
        assert_eq!(
            find(&conn, "p", "default").unwrap().unwrap().status,
            "exhausted"
        );
        assert_eq!(retain(&conn, &[]).unwrap(), 1);
        assert!(all(&conn).unwrap().is_empty());
    }
}
