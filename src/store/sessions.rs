//! `ui_sessions`: the dashboard's sign-in sessions. A row holds hashes only:
//! of the cookie value (so a copy of the ledger opens no session) and of the
//! token the session was opened with (so the token's scopes, looked up in the
//! config in force at each request, decide what the session may do, and
//! removing the token ends its sessions).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::clock::format_ts;

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// BLAKE3 of the token it was opened with, hex.
    pub token_hash: String,
    /// That token's display name when the session was opened.
    pub token_name: String,
    /// When it ends, whatever happens meanwhile.
    pub expires_at: String,
}

/// Records a new session and drops every expired one, in one transaction.
pub fn open(
    conn: &mut Connection,
    id_hash: &str,
    session: &Session,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tx = conn
        .transaction()
        .map_err(|e| StoreError::sqlite("begin opening a dashboard session", e))?;
    tx.prepare_cached("DELETE FROM ui_sessions WHERE expires_at <= ?1")
        .and_then(|mut s| s.execute([format_ts(now)]))
        .map_err(|e| StoreError::sqlite("drop expired dashboard sessions", e))?;
    tx.prepare_cached(
        "INSERT INTO ui_sessions (id_hash, token_hash, token_name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id_hash,
            session.token_hash,
            session.token_name,
            format_ts(now),
            session.expires_at
        ])
    })
    .map_err(|e| StoreError::sqlite("record a dashboard session", e))?;
    tx.commit()
        .map_err(|e| StoreError::sqlite("commit a dashboard session", e))
}

/// The session whose cookie hashes to `id_hash`, unless it has expired.
pub fn find(
    conn: &Connection,
    id_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<Session>, StoreError> {
    conn.prepare_cached(
        "SELECT token_hash, token_name, expires_at FROM ui_sessions WHERE id_hash = ?1 AND expires_at > ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![id_hash, format_ts(now)], |r| {
            Ok(Session {
                token_hash: r.get(0)?,
                token_name: r.get(1)?,
                expires_at: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(|e| StoreError::sqlite("read a dashboard session", e))
}

/// Ends a session (sign-out); whether it existed.
pub fn close(conn: &Connection, id_hash: &str) -> Result<bool, StoreError> {
    conn.prepare_cached("DELETE FROM ui_sessions WHERE id_hash = ?1")
        .and_then(|mut s| s.execute([id_hash]))
        .map(|n| n > 0)
        .map_err(|e| StoreError::sqlite("end a dashboard session", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TempDir;
    use chrono::Duration;

    #[test]
    fn a_session_lives_until_it_expires_or_is_closed() {
        let tmp = TempDir::new("sessions");
        let mut conn =
            crate::store::open(&tmp.0.join("l.db"), crate::config::Synchronous::Normal).unwrap();
        let now = Utc::now();
        let s = Session {
            token_hash: "t".into(),
            token_name: "ops".into(),
            expires_at: format_ts(now + Duration::hours(1)),
        };
        open(&mut conn, "a", &s, now).unwrap();
        assert_eq!(find(&conn, "a", now).unwrap(), Some(s.clone()));
        assert_eq!(find(&conn, "b", now).unwrap(), None);
        assert_eq!(find(&conn, "a", now + Duration::hours(2)).unwrap(), None);
        // Opening another later drops the expired one.
        let later = Session {
            expires_at: format_ts(now + Duration::hours(3)),
            ..s
        };
        open(&mut conn, "b", &later, now + Duration::hours(2)).unwrap();
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM ui_sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1);
        assert!(close(&conn, "b").unwrap());
        assert!(!close(&conn, "b").unwrap());
    }
}
