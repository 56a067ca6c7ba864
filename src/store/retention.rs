//! Retention: old history is pruned in bounded batches so a scheduler tick never
//! holds the write lock long enough to stall dispatch.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::StoreError;
use crate::clock::format_ts;

/// Rows deleted per statement.
pub const BATCH: usize = 500;

/// How many rows one pass removed, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// `job_log` rows.
    pub job_log: usize,
    /// Terminal `job_queue` rows.
    pub job_queue: usize,
    /// `job_transitions`, `job_attempts`, `job_stopwatch`, `system_events` and `decisions` rows.
    pub history: usize,
    /// `config_snapshots` rows beyond the newest kept.
    pub snapshots: usize,
    /// Free pages given back to the file system afterwards.
    pub pages_freed: i64,
}

/// Deletes the oldest rows of an append-only table while their `time_col` is
/// before `cutoff`. Rows are appended in time order, so the old ones are a rowid
/// prefix: no time index is needed (each would cost a page write per job).
fn prune_prefix(
    conn: &Connection,
    table: &str,
    time_col: &str,
    cutoff: &str,
    max_batches: usize,
) -> Result<usize, StoreError> {
    let mut total = 0;
    for _ in 0..max_batches {
        let rows: Vec<(i64, Option<String>)> = conn
            .prepare_cached(&format!(
                "SELECT rowid, {time_col} FROM {table} ORDER BY rowid LIMIT ?1"
            ))
            .and_then(|mut s| {
                s.query_map([BATCH as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .and_then(|rows| rows.collect())
            })
            .map_err(|e| StoreError::sqlite(format!("scan {table} for retention"), e))?;
        let old = rows
            .iter()
            .take_while(|(_, t)| t.as_deref().is_some_and(|t| t < cutoff))
            .count();
        if old == 0 {
            break;
        }
        let last = rows[old - 1].0;
        total += conn
            .prepare_cached(&format!("DELETE FROM {table} WHERE rowid <= ?1"))
            .and_then(|mut s| s.execute([last]))
            .map_err(|e| StoreError::sqlite(format!("prune {table}"), e))?;
        if old < rows.len() || rows.len() < BATCH {
            break;
        }
    }
    Ok(total)
}

/// Deletes `job_log` (and transition/attempt/stopwatch/system-event history) older than
/// `log_cutoff` and terminal `job_queue` rows completed before `queue_cutoff`,
/// at most `max_batches` batches per table.
pub fn prune(
    conn: &Connection,
    log_cutoff: DateTime<Utc>,
    queue_cutoff: DateTime<Utc>,
    max_batches: usize,
) -> Result<Pruned, StoreError> {
    let log_ts = format_ts(log_cutoff);
    let queue_ts = format_ts(queue_cutoff);
    let mut out = Pruned::default();
    let batched = |sql: &str, cutoff: &str| -> Result<usize, StoreError> {
        let mut total = 0;
        for _ in 0..max_batches {
            let n = conn
                .prepare_cached(sql)
                .and_then(|mut s| s.execute(params![cutoff, BATCH as i64]))
                .map_err(|e| StoreError::sqlite("prune history", e))?;
            total += n;
            if n < BATCH {
                break;
            }
        }
        Ok(total)
    };
    out.job_log = prune_prefix(conn, "job_log", "completed_at", &log_ts, max_batches)?;
    out.job_queue = batched(
        "DELETE FROM job_queue WHERE rowid IN (SELECT rowid FROM job_queue WHERE completed_at < ?1 AND status IN ('succeeded','failed','timed_out','dead') LIMIT ?2)",
        &queue_ts,
    )?;
    out.history += prune_prefix(conn, "job_transitions", "created_at", &log_ts, max_batches)?;
    out.history += prune_prefix(conn, "job_attempts", "completed_at", &log_ts, max_batches)?;
    out.history += prune_prefix(conn, "job_stopwatch", "created_at", &log_ts, max_batches)?;
    out.history += prune_prefix(conn, "system_events", "created_at", &log_ts, max_batches)?;
    out.history += super::decisions::prune(conn, &log_ts, max_batches)?;
    out.snapshots = super::snapshots::prune(conn)?;
    if out.job_log + out.job_queue + out.history + out.snapshots > 0 {
        out.pages_freed = give_space_back(conn)?;
    }
    Ok(out)
}

/// Hands free pages back to the file system (ledgers vacuum incrementally, so a
/// Pi's SD card does not keep the high-water mark of a burst forever), at most
/// [`VACUUM_PAGES`] per call so the write lock is held briefly; the pages freed.
fn give_space_back(conn: &Connection) -> Result<i64, StoreError> {
    let free = |conn: &Connection| -> Result<i64, StoreError> {
        conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(|e| StoreError::sqlite("count free pages", e))
    };
    let before = free(conn)?;
    if before == 0 {
        return Ok(0);
    }
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))
        .map_err(|e| StoreError::sqlite("give free pages back", e))?;
    Ok(before - free(conn)?)
}

/// Pages one retention pass gives back at most (4 MiB of 1 KiB pages).
pub const VACUUM_PAGES: i64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_ts;
    use crate::config::Synchronous;
    use crate::store::completion::{self, AttemptRecord, Completion, Decision};
    use crate::store::queue::{self, NewJob, SubmittedBy};
    use crate::store::testing::TempDir;
    use std::time::Duration;

    #[test]
    fn old_history_goes_in_batches_and_fresh_or_live_rows_stay() {
        let tmp = TempDir::new("retention");
        let mut conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        let old = parse_ts("2026-01-01T00:00:00Z").unwrap();
        let new = parse_ts("2026-03-01T00:00:00Z").unwrap();
        let day = Duration::from_secs(86_400);
        for (at, n) in [(old, 1_200), (new, 3)] {
            for _ in 0..n {
                let job = NewJob::new("p", "poll", serde_json::Value::Null, SubmittedBy::Cli, 1);
                queue::enqueue(&mut conn, &job, day, at).unwrap();
                let c = queue::claim_next(&mut conn, &|_| 1, at).unwrap().unwrap();
                let done = Completion {
                    job: &c,
                    decision: Decision::Succeeded,
                    last_error: None,
                    record: AttemptRecord::default(),
                    state: None,
                    children: vec![],
                    stopwatch: None,
                    effects: vec![],
                };
                completion::complete(&mut conn, &done, day, at).unwrap();
            }
        }
        for at in [old, new] {
            crate::store::events::record(
                &conn,
                "config.reloaded",
                None,
                None,
                None,
                &serde_json::Value::Null,
                at,
            )
            .unwrap();
        }
        // A live job from long ago is never pruned.
        queue::enqueue(
            &mut conn,
            &NewJob::new("p", "poll", serde_json::Value::Null, SubmittedBy::Cli, 1),
            day,
            old,
        )
        .unwrap();
        let cutoff = parse_ts("2026-02-01T00:00:00Z").unwrap();
        let first = prune(&conn, cutoff, cutoff, 1).unwrap();
        assert_eq!(first.job_log, BATCH, "one batch per call when capped at 1");
        let rest = prune(&conn, cutoff, cutoff, 10).unwrap();
        assert_eq!(first.job_log + rest.job_log, 1_200);
        assert_eq!(first.job_queue + rest.job_queue, 1_200);
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM job_log"), 3);
        assert_eq!(
            count("SELECT COUNT(*) FROM system_events"),
            1,
            "system events age out with the job history"
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM job_queue WHERE status = 'succeeded'"),
            3
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM job_queue WHERE status = 'queued'"),
            1
        );
        assert_eq!(prune(&conn, cutoff, cutoff, 10).unwrap(), Pruned::default());
        assert!(
            first.pages_freed + rest.pages_freed > 0,
            "the pruned rows' pages went back to the file system"
        );
        let free: i64 = count("PRAGMA freelist_count");
        assert!(free < VACUUM_PAGES, "free pages left: {free}");
    }
}
