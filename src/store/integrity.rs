//! The ledger's health as a file: a bounded `PRAGMA quick_check` before the
//! daemon writes anything, and the identity (device and inode) of the database
//! and its WAL, so a file deleted or replaced under a running daemon is noticed
//! instead of committing into an unlinked inode.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;
use super::location::side_file;

/// What a bounded integrity check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// `quick_check` passed.
    Ok,
    /// The time budget ran out first (a large ledger on slow storage); not a verdict.
    Unfinished,
}

/// Runs `PRAGMA quick_check` for at most `budget`; `Err(Damaged)` names the first
/// problems SQLite found.
pub fn quick_check(conn: &Connection, path: &str, budget: Duration) -> Result<Checked, StoreError> {
    // A watchdog interrupts the statement once the budget is spent; it is told
    // to stand down as soon as the check returns.
    let interrupt = conn.get_interrupt_handle();
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let watchdog = std::thread::Builder::new()
        .name("quick-check".into())
        .spawn(move || {
            if done_rx.recv_timeout(budget) == Err(crossbeam_channel::RecvTimeoutError::Timeout) {
                interrupt.interrupt();
            }
        })
        .map_err(|source| StoreError::Io {
            path: path.to_string(),
            op: "start the integrity check",
            source,
        })?;
    let result: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    drop(done_tx);
    let _ = watchdog.join();
    match result {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Ok(Checked::Ok),
        Ok(lines) => Err(StoreError::Damaged {
            path: path.to_string(),
            detail: format!("quick_check: {}", one_line(&lines)),
        }),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            Ok(Checked::Unfinished)
        }
        Err(rusqlite::Error::SqliteFailure(e, msg))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            Err(StoreError::Damaged {
                path: path.to_string(),
                detail: msg.unwrap_or_else(|| e.to_string()),
            })
        }
        Err(e) => Err(StoreError::sqlite("check the ledger's integrity", e)),
    }
}

/// SQLite's findings as one line: rows may hold several lines each, and the
/// header naming the database adds nothing (there is one).
fn one_line(rows: &[String]) -> String {
    rows.iter()
        .flat_map(|r| r.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("*** in database"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The device and inode of the ledger's files when a process opened them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    db: PathBuf,
    files: Vec<(PathBuf, Option<(u64, u64)>)>,
}

impl FileIdentity {
    /// Records the current identity of `db` and its `-wal` and `-shm` files.
    pub fn of(db: &Path) -> FileIdentity {
        let files = [
            db.to_path_buf(),
            side_file(db, "-wal"),
            side_file(db, "-shm"),
        ]
        .into_iter()
        .map(|p| {
            let id = dev_ino(&p);
            (p, id)
        })
        .collect();
        FileIdentity {
            db: db.to_path_buf(),
            files,
        }
    }

    /// The first file that was deleted or replaced since [`of`](Self::of), with
    /// what happened to it. A side file that did not exist then is not judged.
    pub fn changed(&self) -> Option<String> {
        for (path, then) in &self.files {
            let Some(then) = then else { continue };
            match dev_ino(path) {
                None => return Some(format!("{} was deleted", path.display())),
                Some(now) if now != *then => {
                    return Some(format!("{} was replaced by another file", path.display()));
                }
                Some(_) => {}
            }
        }
        None
    }

    /// The database path.
    pub fn db(&self) -> &Path {
        &self.db
    }
}

fn dev_ino(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::testing::TempDir;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn a_healthy_ledger_passes_and_a_damaged_page_is_named() {
        let tmp = TempDir::new("quick-check");
        let path = tmp.0.join("d.db");
        {
            let mut conn = crate::store::open(&path, Synchronous::Normal).unwrap();
            let shown = path.display().to_string();
            assert_eq!(
                quick_check(&conn, &shown, Duration::from_secs(30)).unwrap(),
                Checked::Ok
            );
            let tx = crate::store::queue::begin(&mut conn).unwrap();
            for i in 0..400 {
                tx.execute(
                    "INSERT INTO job_log (id, job_id, plugin, command, status, attempt, submitted_by, created_at, completed_at, stderr) VALUES (?1, 'j', 'p', 'poll', 'succeeded', 1, 'cli', 't', 't', ?2)",
                    rusqlite::params![format!("row{i}"), "x".repeat(500)],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        }
        // Scribble over a page in the middle of the file (not page 1, which a
        // plain open would trip over first).
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        f.seek(SeekFrom::Start(len / 2 / 4096 * 4096)).unwrap();
        f.write_all(&[0xA5; 4096]).unwrap();
        drop(f);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let shown = path.display().to_string();
        let err = quick_check(&conn, &shown, Duration::from_secs(30))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{shown} is damaged (quick_check: ")),
            "{err}"
        );
        assert!(err.contains(".recover"), "{err}");
        assert!(
            !err.contains('\n') && !err.contains("***"),
            "one line: {err}"
        );
    }

    #[test]
    fn deletion_and_replacement_are_noticed() {
        let tmp = TempDir::new("identity");
        let path = tmp.0.join("d.db");
        drop(crate::store::open(&path, Synchronous::Normal).unwrap());
        let id = FileIdentity::of(&path);
        assert_eq!(id.changed(), None);
        std::fs::rename(&path, tmp.0.join("moved.db")).unwrap();
        assert_eq!(
            id.changed(),
            Some(format!("{} was deleted", path.display()))
        );
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            id.changed(),
            Some(format!("{} was replaced by another file", path.display()))
        );
    }
}
