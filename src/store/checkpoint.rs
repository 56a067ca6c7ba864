//! WAL checkpoints that also bring the log back to its start under load.
//!
//! SQLite's own auto-checkpoint is passive: it copies frames back into the
//! database but rewinds the WAL only when a writer begins while the log is fully
//! copied and no reader sits on it. Two workers committing in turn never meet
//! that: each one begins its transaction while the other's checkpoint runs. The
//! WAL then grows for as long as the queue drains (1.5 GB over 100k jobs, every
//! commit past the threshold paying a checkpoint and its fsyncs), and every
//! connection maps its ever-larger index. A RESTART checkpoint instead waits
//! for the readers on the log (our transactions last microseconds) so that the
//! next writer starts again at frame 0. Its wait is capped at
//! [`READER_WAIT`]; a reader that outlasts it (a long report) defers the next
//! attempt by another threshold's worth of frames, so no commit pays the wait
//! twice in a row.

use std::time::Duration;

use rusqlite::{Connection, config::DbConfig, hooks::Wal, wal::CheckpointMode};

use super::{StoreError, with_busy_budget};

/// Frames a daemon connection lets the WAL reach before checkpointing: a job
/// rewrites the same hot pages (queue tail, index leaves) many times, and
/// copying them once per 8000 frames instead of per 1000 also fsyncs an eighth
/// as often.
pub(super) const DAEMON_FRAMES: i32 = 8000;

/// Frames a one-shot lets the WAL reach: small enough that the next process
/// indexes little (about 1 MiB at 1 KiB pages), large enough that its fsyncing
/// checkpoint is rare.
const ONE_SHOT_FRAMES: i32 = 1000;

/// Longest a committing thread waits for readers to leave the log.
const READER_WAIT: Duration = Duration::from_millis(50);

/// Checkpoints on `conn`'s commits once the WAL holds `frames` frames (replaces
/// `wal_autocheckpoint`, which would replace this in turn).
pub(super) fn install(conn: &mut Connection, frames: i32) -> Result<(), StoreError> {
    let mut next_try = frames;
    conn.wal_hook(Some(move |wal: &mut Wal, in_log: i32| {
        if in_log < frames {
            // The log was rewound since the last attempt.
            next_try = frames;
        } else if in_log >= next_try {
            let done = with_busy_budget(READER_WAIT, || wal.checkpoint_v2(CheckpointMode::RESTART));
            match done {
                Ok(_) => next_try = frames,
                Err(e) => {
                    next_try = in_log.saturating_add(frames);
                    log::debug!(target: "store", "WAL rewind deferred to {next_try} frames: {e}");
                }
            }
        }
        // The commit has happened whatever the checkpoint did: an error here
        // would make the committing statement report one.
        Ok(())
    }))
    .map_err(|e| StoreError::sqlite("install the checkpoint hook", e))
}

/// Tunes a short-lived writer (a `ductile run` one-shot): no checkpoint on
/// close, and a checkpoint every [`ONE_SHOT_FRAMES`]. Closing the last
/// connection would otherwise fsync twice and delete the WAL, whose re-creation
/// costs two more fsyncs (file and directory) on the next run.
pub fn tune_for_one_shot(conn: &mut Connection) -> Result<(), StoreError> {
    if super::replication::litestream() {
        // `open` already left the WAL to Litestream; a hook would take it back.
        return Ok(());
    }
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| StoreError::sqlite("configure checkpointing", e))?;
    install(conn, ONE_SHOT_FRAMES)
}
