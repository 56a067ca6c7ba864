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
    /// `job_transitions`, `job_attempts` and `job_stopwatch` rows.
    pub history: usize,
}

/// Deletes `job_log` (and transition/attempt/stopwatch history) older than
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
    out.job_log = batched(
        "DELETE FROM job_log WHERE rowid IN (SELECT rowid FROM job_log WHERE completed_at < ?1 LIMIT ?2)",
        &log_ts,
    )?;
    out.job_queue = batched(
        "DELETE FROM job_queue WHERE rowid IN (SELECT rowid FROM job_queue WHERE completed_at < ?1 AND status IN ('succeeded','failed','timed_out','dead') LIMIT ?2)",
        &queue_ts,
    )?;
    out.history += batched(
        "DELETE FROM job_transitions WHERE id IN (SELECT id FROM job_transitions WHERE created_at < ?1 LIMIT ?2)",
        &log_ts,
    )?;
    out.history += batched(
        "DELETE FROM job_attempts WHERE id IN (SELECT id FROM job_attempts WHERE started_at < ?1 AND completed_at IS NOT NULL LIMIT ?2)",
        &log_ts,
    )?;
    out.history += batched(
        "DELETE FROM job_stopwatch WHERE id IN (SELECT id FROM job_stopwatch WHERE created_at < ?1 LIMIT ?2)",
        &log_ts,
    )?;
    Ok(out)
}
