//! `state.replication: litestream`: the ledger is streamed off the box by
//! Litestream, which then owns checkpointing.
//!
//! Litestream copies each WAL frame before it is checkpointed into the
//! database file, so it must be the only checkpointer: it holds a read
//! transaction open to stop anyone else from rewinding the log past frames it
//! has not copied yet, and a process that checkpoints, truncates or deletes
//! the WAL behind its back forces a new snapshot (or, at worst, a gap). In this
//! mode every connection therefore turns automatic checkpoints off, keeps the
//! WAL on close, never asks for a WAL size limit, and nothing runs `VACUUM`
//! (whose whole-file rewrite would be replicated as one huge WAL); `VACUUM
//! INTO` for backups stays, as it writes a separate file.
//!
//! The mode is a property of the one ledger a process opens, set once when
//! the process loads its config ([`set_replication`]), so no caller has to
//! thread it through to [`super::open`].

use std::sync::atomic::{AtomicU8, Ordering};

use rusqlite::{Connection, config::DbConfig};

use super::StoreError;
use crate::config::Replication;

static MODE: AtomicU8 = AtomicU8::new(0);

/// Sets the replication mode for every connection this process opens from now on.
pub fn set_replication(mode: Replication) {
    let code = match mode {
        Replication::Off => 0,
        Replication::Litestream => 1,
    };
    MODE.store(code, Ordering::Relaxed);
}

/// The replication mode connections are opened in.
pub fn replication() -> Replication {
    match MODE.load(Ordering::Relaxed) {
        1 => Replication::Litestream,
        _ => Replication::Off,
    }
}

/// Whether Litestream owns checkpointing in this process.
pub fn litestream() -> bool {
    replication() == Replication::Litestream
}

/// Leaves the WAL to Litestream on `conn`: no automatic checkpoint (which
/// also removes any WAL hook), no size limit that would truncate the log, and
/// no checkpoint-and-delete when the last connection closes.
pub(super) fn hand_over(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = -1;")
        .map_err(|e| StoreError::sqlite("leave checkpoints to Litestream", e))?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| StoreError::sqlite("keep the WAL on close", e))?;
    Ok(())
}

/// Copies a new ledger's schema from the WAL into the database file, once.
///
/// Litestream reads the page size from the file's header and refuses to track
/// a database whose file is still empty ("db not ready: page size not
/// initialized"); with nobody else checkpointing, a ledger created in this
/// mode would stay in its WAL and never be replicated. While the file is
/// empty Litestream tracks nothing, so this PASSIVE checkpoint cannot take a
/// frame from it.
pub(super) fn write_header(conn: &Connection, path: &std::path::Path) -> Result<(), StoreError> {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if len > 0 {
        return Ok(());
    }
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .map_err(|e| StoreError::sqlite("write the new ledger's header for Litestream", e))
}

/// WAL size past which `system doctor` warns that Litestream seems not to be
/// checkpointing. Its passive checkpoints rewind a healthy log every 1000
/// pages or minute, and its TRUNCATE at 121359 pages (about 120 MiB of our
/// 1 KiB pages) empties the file, so a live Litestream never lets it get here.
pub const WAL_WARN_BYTES: u64 = 256 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::testing::TempDir;

    #[test]
    fn a_handed_over_connection_neither_checkpoints_nor_drops_the_wal() {
        let tmp = TempDir::new("litestream");
        let path = tmp.0.join("d.db");
        let wal = tmp.0.join("d.db-wal");
        {
            let conn = crate::store::open(&path, Synchronous::Normal).unwrap();
            hand_over(&conn).unwrap();
            let auto: i64 = conn
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .unwrap();
            assert_eq!(auto, 0);
            let limit: i64 = conn
                .query_row("PRAGMA journal_size_limit", [], |r| r.get(0))
                .unwrap();
            assert_eq!(limit, -1);
            // Twice past the 8000 frames at which ductile's own hook rewinds.
            for i in 0..20_000 {
                conn.execute(
                    "INSERT INTO system_events (kind, data, created_at) VALUES ('t', ?1, 't')",
                    [format!("{i:0>600}")],
                )
                .unwrap();
            }
        }
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let frames = len.saturating_sub(32) / (1024 + 24);
        assert!(
            frames > 16_000,
            "the log was never rewound and survives the last close: {frames} frames"
        );
    }
}
