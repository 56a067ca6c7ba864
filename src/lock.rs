//! The instance lock: which one process may run jobs against a ledger, and who
//! it is.
//!
//! - **Exclusion** is a `flock` on the database file itself, so it lives exactly
//!   as long as the ledger: deleting `ductile.lock` (tmpfiles, a cleanup of the
//!   data directory) cannot let a second daemon in. The kernel drops it when the
//!   holder dies.
//! - **Identity** is a set of one-byte POSIX record locks on `ductile.lock`
//!   beside the database, which the kernel reports to other processes with the
//!   holder's pid (`F_GETLK`), so nobody has to trust the file's contents:
//!   byte 0 is held by the holder of the instance lock, byte 1 by a daemon that
//!   has installed its signal handlers and accepts work ("ready"), byte 2 by a
//!   daemon waiting for a one-shot to finish so it can start ("starting"). The
//!   file also carries `pid role` for people reading it.
//! - **Signalling** goes through a pidfd, re-checked against byte 1 after it was
//!   opened, so only a live, ready daemon can ever receive SIGUSR1 or SIGHUP
//!   (never a one-shot, a starting daemon or a recycled pid).
//!
//! Closing any descriptor of a file drops every POSIX record lock the process
//! holds on it: SQLite's on the database file, ours on `ductile.lock`. So each
//! of the two files is opened once per process ([`pinned`]) and that descriptor
//! is never closed while the process runs; `flock` is released with `LOCK_UN`.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys;

/// Byte of `ductile.lock` held by whoever holds the instance lock.
const HOLDER_BYTE: u64 = 0;
/// Byte held by a daemon that is ready for work and signals.
const READY_BYTE: u64 = 1;
/// Byte held by a daemon waiting to take the instance lock.
const STARTING_BYTE: u64 = 2;

/// Who holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `ductile system start`.
    Daemon,
    /// `ductile run`.
    OneShot,
    /// `ductile system migrate` and other maintenance on the ledger.
    Maintenance,
}

impl Role {
    /// The word written in the lock file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Daemon => "daemon",
            Role::OneShot => "run",
            Role::Maintenance => "maintenance",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "daemon" => Some(Role::Daemon),
            "run" => Some(Role::OneShot),
            "maintenance" => Some(Role::Maintenance),
            _ => None,
        }
    }

    /// How a holder of this role is named in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Daemon => "a ductile daemon",
            Role::OneShot => "a `ductile run` one-shot",
            Role::Maintenance => "a ductile maintenance command",
        }
    }
}

/// Why the lock could not be used.
#[derive(Debug)]
pub enum LockError {
    /// A file could not be opened, locked or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state directory or database file cannot be used (permissions).
    Store(crate::store::StoreError),
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Io { path, op, source } => {
                write!(f, "{}: cannot {op}: {source}", path.display())
            }
            LockError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LockError {}

/// The identity file that belongs to the database at `db_path`.
pub fn path_for(db_path: &Path) -> PathBuf {
    db_path.with_file_name("ductile.lock")
}

fn io_error<'p>(path: &'p Path, op: &'static str) -> impl FnOnce(std::io::Error) -> LockError + 'p {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// A held instance lock; released on drop.
#[derive(Debug)]
pub struct InstanceLock {
    db: PathBuf,
    path: PathBuf,
    role: Role,
    ready: bool,
}

impl InstanceLock {
    /// Takes the instance lock for `db` without waiting; `Ok(None)` when another
    /// process holds it. Creates the state directory and database file if needed.
    pub fn try_acquire(db: &Path, role: Role) -> Result<Option<InstanceLock>, LockError> {
        crate::store::prepare(db).map_err(LockError::Store)?;
        if !pinned::flock_db(db)? {
            return Ok(None);
        }
        let path = path_for(db);
        let holder =
            pinned::with_lock_file(&path, true, |f| sys::set_byte_lock(f, HOLDER_BYTE, true));
        match holder {
            Ok(Some(Ok(true))) => {}
            // Someone holds the identity without the database lock: the ledger
            // was replaced under a running process. Stay out of its way.
            Ok(Some(Ok(false))) | Ok(None) => {
                pinned::unflock_db(db);
                return Ok(None);
            }
            Ok(Some(Err(e))) | Err(e) => {
                pinned::unflock_db(db);
                return Err(io_error(&path, "lock")(e));
            }
        }
        let lock = InstanceLock {
            db: db.to_path_buf(),
            path,
            role,
            ready: false,
        };
        lock.write_content()?;
        Ok(Some(lock))
    }

    /// Advertises a daemon as ready for work and signals: call only once its
    /// signal handlers are installed.
    pub fn advertise_ready(&mut self) -> Result<(), LockError> {
        pinned::with_lock_file(&self.path, true, |f| {
            sys::set_byte_lock(f, READY_BYTE, true)
        })
        .map_err(io_error(&self.path, "lock"))?;
        self.ready = true;
        self.write_content()
    }

    /// Re-creates `ductile.lock` (file, byte locks and content) if it was
    /// deleted or replaced since we locked it; true when it had to. The database
    /// lock was never at risk; this restores the identity others look up.
    pub fn restore_identity(&mut self) -> Result<bool, LockError> {
        if pinned::lock_file_current(&self.path) {
            return Ok(false);
        }
        let ready = self.ready;
        pinned::with_lock_file(&self.path, true, |f| {
            sys::set_byte_lock(f, HOLDER_BYTE, true)?;
            if ready {
                sys::set_byte_lock(f, READY_BYTE, true)?;
            }
            Ok::<(), std::io::Error>(())
        })
        .map_err(io_error(&self.path, "open"))?
        .transpose()
        .map_err(io_error(&self.path, "lock"))?;
        self.write_content()?;
        Ok(true)
    }

    /// The identity file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_content(&self) -> Result<(), LockError> {
        let state = if self.ready { " ready" } else { "" };
        let text = format!("{} {}{state}\n", std::process::id(), self.role.as_str());
        pinned::with_lock_file(&self.path, true, |mut f| {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(text.as_bytes())
        })
        .map_err(io_error(&self.path, "open"))?
        .transpose()
        .map_err(io_error(&self.path, "write"))?;
        Ok(())
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Empty the pid so readers do not report a recycled one, then drop the
        // byte locks and the database lock.
        let _ = pinned::with_lock_file(&self.path, false, |f| {
            let _ = f.set_len(0);
            let _ = sys::set_byte_lock(f, READY_BYTE, false);
            let _ = sys::set_byte_lock(f, HOLDER_BYTE, false);
        });
        pinned::unflock_db(&self.db);
    }
}

/// A daemon's claim to be the next holder: while it waits for a one-shot to
/// finish, one-shots stop taking the lock and wait to hand their jobs over.
#[derive(Debug)]
pub struct StartIntent {
    path: PathBuf,
}

impl StartIntent {
    /// Announces a daemon start for `db`; `Err(pid)` when another daemon is
    /// already starting (pid when the kernel reports it).
    pub fn announce(db: &Path) -> Result<Result<StartIntent, Option<u32>>, LockError> {
        crate::store::prepare(db).map_err(LockError::Store)?;
        let path = path_for(db);
        let taken = pinned::with_lock_file(&path, true, |f| {
            if sys::set_byte_lock(f, STARTING_BYTE, true)? {
                Ok(None)
            } else {
                sys::lock_holder(f, STARTING_BYTE).map(Some)
            }
        })
        .map_err(io_error(&path, "open"))?
        .transpose()
        .map_err(io_error(&path, "lock"))?
        .flatten();
        match taken {
            None => Ok(Ok(StartIntent { path })),
            Some(other) => Ok(Err(other)),
        }
    }
}

impl Drop for StartIntent {
    fn drop(&mut self) {
        let _ = pinned::with_lock_file(&self.path, false, |f| {
            sys::set_byte_lock(f, STARTING_BYTE, false)
        });
    }
}

/// The current holder of the lock, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its role: `Daemon` when it is a ready daemon; otherwise what the file
    /// says (a daemon still starting reads as `Daemon` too).
    pub role: Option<Role>,
    /// Whether it is a daemon that accepts work and signals.
    pub ready: bool,
}

impl Holder {
    /// "a `ductile run` one-shot (pid 123)".
    pub fn describe(&self) -> String {
        let what = match (self.ready, self.role) {
            (true, _) => "a ductile daemon",
            (false, Some(Role::Daemon)) => "a ductile daemon that is still starting",
            (false, Some(role)) => role.describe(),
            (false, None) => "another ductile process",
        };
        format!("{what} (pid {})", self.pid)
    }
}

/// Who holds the lock on `db`, if anyone else does.
pub fn holder(db: &Path) -> Option<Holder> {
    pinned::with_lock_file(&path_for(db), false, |mut f| {
        let pid = sys::lock_holder(f, HOLDER_BYTE).ok()??;
        let ready = sys::lock_holder(f, READY_BYTE).ok().flatten() == Some(pid);
        let mut text = String::new();
        let _ = f.seek(SeekFrom::Start(0));
        let _ = f.read_to_string(&mut text);
        let mut words = text.split_whitespace();
        let role = match (words.next(), words.next()) {
            (Some(p), Some(r)) if p.parse::<u32>().ok() == Some(pid) => Role::parse(r),
            _ => None,
        };
        Some(Holder {
            pid,
            role: if ready { Some(Role::Daemon) } else { role },
            ready,
        })
    })
    .ok()
    .flatten()
    .flatten()
}

/// The pid of another daemon waiting to start on `db`, if one is.
pub fn daemon_starting(db: &Path) -> Option<u32> {
    pinned::with_lock_file(&path_for(db), false, |f| {
        sys::lock_holder(f, STARTING_BYTE).ok().flatten()
    })
    .ok()
    .flatten()
    .flatten()
}

/// A ready daemon, pinned by a pidfd: signals reach that very process or none.
#[derive(Debug)]
pub struct DaemonHandle {
    pid: u32,
    pidfd: OwnedFd,
}

impl DaemonHandle {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` (SIGUSR1: look at the queue; SIGHUP: reload).
    pub fn signal(&self, sig: i32) -> std::io::Result<()> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), sig)
    }

    /// A descriptor that polls readable once the daemon has exited.
    pub fn exit_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// The ready daemon of `db`, if one runs. The pidfd is opened first and the
/// ready byte re-checked after, so the handle cannot name a recycled pid.
pub fn ready_daemon(db: &Path) -> Option<DaemonHandle> {
    pinned::with_lock_file(&path_for(db), false, |f| {
        let pid = sys::lock_holder(f, READY_BYTE).ok()??;
        let pidfd = sys::pidfd_open(pid).ok()?;
        (sys::lock_holder(f, READY_BYTE).ok()? == Some(pid)).then_some(DaemonHandle { pid, pidfd })
    })
    .ok()
    .flatten()
    .flatten()
}

/// Waits for a change to the lock of `db`: a file in its directory is written,
/// closed, replaced or removed, or the process `holder` exits; at most `limit`.
/// Returns early when anything happened, so callers look at the lock again.
pub fn wait_for_change(db: &Path, holder: Option<u32>, limit: Duration) {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let watch = sys::Inotify::new().and_then(|w| w.watch(&dir, sys::WATCH_CHANGES).map(|()| w));
    let pidfd = holder.and_then(|pid| sys::pidfd_open(pid).ok());
    let mut set = sys::PollSet::default();
    if let Ok(w) = &watch {
        set.push(w.fd(), sys::Interest::Read);
    }
    if let Some(fd) = &pidfd {
        set.push(fd.as_fd(), sys::Interest::Read);
    }
    set.wait(Some(limit));
}

/// The two files of the lock, each opened once per process and never closed
/// (see the module docs). Process-wide because the kernel state it mirrors is.
mod pinned {
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::LockError;
    use crate::sys;

    struct Pinned {
        path: PathBuf,
        file: File,
        /// For a database file: whether this process holds its `flock`.
        flocked: bool,
    }

    /// Every pinned descriptor. A file replaced at its path gets a new entry;
    /// the old one stays open (it may carry locks) but is no longer used.
    static FILES: Mutex<Vec<Pinned>> = Mutex::new(Vec::new());

    fn dev_ino(path: &Path) -> Option<(u64, u64)> {
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    fn same_file(file: &File, path: &Path) -> bool {
        let ours = file.metadata().ok().map(|m| (m.dev(), m.ino()));
        ours.is_some() && ours == dev_ino(path)
    }

    /// The index of the current entry for `path`, opening the file when there
    /// is none or the path names another file now; `None` when the file does
    /// not exist and `create` is false.
    fn entry(files: &mut Vec<Pinned>, path: &Path, create: bool) -> std::io::Result<Option<usize>> {
        if let Some(i) = files
            .iter()
            .rposition(|p| p.path == path && same_file(&p.file, path))
        {
            return Ok(Some(i));
        }
        if !create && !path.exists() {
            return Ok(None);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        files.push(Pinned {
            path: path.to_path_buf(),
            file,
            flocked: false,
        });
        Ok(Some(files.len() - 1))
    }

    fn files() -> std::sync::MutexGuard<'static, Vec<Pinned>> {
        FILES.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the pinned descriptor of the identity file at `path`.
    pub(super) fn with_lock_file<R>(
        path: &Path,
        create: bool,
        f: impl FnOnce(&File) -> R,
    ) -> std::io::Result<Option<R>> {
        let mut files = files();
        Ok(entry(&mut files, path, create)?.map(|i| f(&files[i].file)))
    }

    /// Whether our pinned identity file is still the one at `path`.
    pub(super) fn lock_file_current(path: &Path) -> bool {
        files()
            .iter()
            .rev()
            .find(|p| p.path == path)
            .is_some_and(|p| same_file(&p.file, path))
    }

    /// Takes the `flock` on the database file `db` without waiting; false when
    /// another open file description has it (or this process already holds it).
    pub(super) fn flock_db(db: &Path) -> Result<bool, LockError> {
        let mut files = files();
        let io = |op, source| LockError::Io {
            path: db.to_path_buf(),
            op,
            source,
        };
        if files.iter().any(|p| p.path == db && p.flocked) {
            return Ok(false);
        }
        let i = entry(&mut files, db, false)
            .map_err(|e| io("open the database to lock it", e))?
            .ok_or_else(|| {
                io(
                    "open the database to lock it",
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })?;
        let taken = sys::try_flock(&files[i].file).map_err(|e| io("lock the database", e))?;
        files[i].flocked = taken;
        Ok(taken)
    }

    /// Releases the `flock` on `db` (`LOCK_UN`; the descriptor stays open).
    pub(super) fn unflock_db(db: &Path) {
        for p in files().iter_mut().filter(|p| p.path == db && p.flocked) {
            let _ = sys::unlock_flock(&p.file);
            p.flocked = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_holder_and_drop_releases() {
        let tmp = crate::store::testing::TempDir::new("lock");
        let db = tmp.0.join("state/ductile.db");
        let lock = InstanceLock::try_acquire(&db, Role::OneShot)
            .unwrap()
            .unwrap();
        // A lock this process holds is held for it too.
        assert!(
            InstanceLock::try_acquire(&db, Role::Daemon)
                .unwrap()
                .is_none()
        );
        let text = std::fs::read_to_string(path_for(&db)).unwrap();
        assert_eq!(text, format!("{} run\n", std::process::id()));
        drop(lock);
        assert_eq!(std::fs::read_to_string(path_for(&db)).unwrap(), "");
        let again = InstanceLock::try_acquire(&db, Role::Daemon).unwrap();
        assert!(again.is_some(), "released on drop");
    }

    #[test]
    fn removing_the_identity_file_does_not_open_the_door() {
        let tmp = crate::store::testing::TempDir::new("lock-removed");
        let db = tmp.0.join("d.db");
        let mut lock = InstanceLock::try_acquire(&db, Role::Daemon)
            .unwrap()
            .unwrap();
        std::fs::remove_file(path_for(&db)).unwrap();
        assert!(
            InstanceLock::try_acquire(&db, Role::Daemon)
                .unwrap()
                .is_none(),
            "the database itself is locked"
        );
        assert!(lock.restore_identity().unwrap());
        assert!(!lock.restore_identity().unwrap(), "once");
        assert_eq!(
            std::fs::read_to_string(path_for(&db)).unwrap(),
            format!("{} daemon\n", std::process::id())
        );
    }

    #[test]
    fn describe_names_role_and_pid() {
        let h = Holder {
            pid: 7,
            role: Some(Role::OneShot),
            ready: false,
        };
        assert_eq!(h.describe(), "a `ductile run` one-shot (pid 7)");
        let d = Holder {
            pid: 8,
            role: Some(Role::Daemon),
            ready: false,
        };
        assert_eq!(
            d.describe(),
            "a ductile daemon that is still starting (pid 8)"
        );
    }
}
