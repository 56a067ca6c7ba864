//! `config_snapshots`: which files made up the config in force, each time the
//! daemon started or reloaded, and each reload it rejected. `system reload`
//! reads the row the daemon writes after its SIGHUP to report the verdict.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::clock::format_ts;

/// The reason a rejected reload is recorded with, before its message.
pub const REJECTED: &str = "reload rejected: ";

/// Rows kept by retention: enough history to explain recent reloads.
pub const KEEP: i64 = 200;

/// Records a snapshot (`reason`: start, reload, or [`REJECTED`] + why).
pub fn record(
    conn: &Connection,
    config_hash: &str,
    files_json: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO config_snapshots (config_hash, files_json, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![config_hash, files_json, reason, format_ts(now)]))
    .map_err(|e| StoreError::sqlite("record config snapshot", e))?;
    Ok(conn.last_insert_rowid())
}

/// The id of the newest snapshot (0 when there is none).
pub fn latest_id(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM config_snapshots",
        [],
        |r| r.get(0),
    )
    .map_err(|e| StoreError::sqlite("read config snapshots", e))
}

/// The reason of the first snapshot newer than `id`, if one was written.
pub fn reason_after(conn: &Connection, id: i64) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT reason FROM config_snapshots WHERE id > ?1 ORDER BY id LIMIT 1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite("read config snapshots", e))
}

/// Deletes all but the newest [`KEEP`] snapshots; the number deleted.
pub fn prune(conn: &Connection) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM config_snapshots WHERE id <= (SELECT MAX(id) FROM config_snapshots) - ?1",
        [KEEP],
    )
    .map_err(|e| StoreError::sqlite("prune config snapshots", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::testing::TempDir;

    #[test]
    fn reasons_after_an_id_and_pruning_keeps_the_newest() {
        let tmp = TempDir::new("snapshots");
        let conn = crate::store::open(&tmp.0.join("d.db"), Synchronous::Normal).unwrap();
        let now = Utc::now();
        let before = latest_id(&conn).unwrap();
        assert_eq!(reason_after(&conn, before).unwrap(), None);
        record(&conn, "h", "[]", "start", now).unwrap();
        assert_eq!(
            reason_after(&conn, before).unwrap().as_deref(),
            Some("start")
        );
        for _ in 0..(KEEP + 5) {
            record(&conn, "h", "[]", "reload", now).unwrap();
        }
        assert_eq!(prune(&conn).unwrap(), 6);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM config_snapshots", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, KEEP);
    }
}
