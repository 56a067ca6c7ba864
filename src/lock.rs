//! The single-instance lock: `ductile.lock` beside the database, held with
//! `flock(LOCK_EX | LOCK_NB)` for the life of the process and carrying its PID.
//! The kernel releases it on exit or crash, so a stale file never blocks a start.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Who holds the lock: the daemon, or a `ductile run` one-shot. Written beside
/// the PID so a one-shot knows whether it may hand its job over (only a daemon
/// answers SIGUSR1) or must wait its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `ductile system start`.
    Daemon,
    /// `ductile run`.
    OneShot,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Daemon => "daemon",
            Role::OneShot => "run",
        }
    }
}

/// A held instance lock; released on drop.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another live process holds it.
    Held {
        /// The lock file.
        path: PathBuf,
        /// The PID written by the holder, if readable.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or written.
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held {
                path,
                pid: Some(pid),
            } => write!(
                f,
                "another ductile (pid {pid}) holds the lock {}; stop it first or use `ductile system reload`",
                path.display()
            ),
            LockError::Held { path, pid: None } => {
                write!(f, "another ductile holds the lock {}", path.display())
            }
            LockError::Io { path, source } => {
                write!(f, "{}: cannot use lock file: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

/// The lock file that guards the database at `db_path`.
pub fn path_for(db_path: &Path) -> PathBuf {
    db_path.with_file_name("ductile.lock")
}

impl InstanceLock {
    /// Takes the lock without waiting and writes our PID and role into it.
    pub fn acquire(path: &Path, role: Role) -> Result<InstanceLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        if !try_flock(&file).map_err(io)? {
            return Err(LockError::Held {
                path: path.to_path_buf(),
                pid: read_pid(path),
            });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{} {}", std::process::id(), role.as_str()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(InstanceLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Empty the PID so readers do not signal a recycled PID; closing the fd
        // releases the flock.
        let _ = self.file.set_len(0);
    }
}

/// The PID of the live holder of the lock at `path`, if any process holds it.
pub fn holder(path: &Path) -> Option<u32> {
    let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    match try_flock(&file) {
        Ok(true) => None, // nobody held it; our probe lock drops with `file`
        Ok(false) => read_pid(path),
        Err(_) => None,
    }
}

/// Sends `signal` to the live holder of the lock at `path`; returns its PID, or
/// `None` when no process holds the lock.
pub fn signal_holder(path: &Path, signal: libc::c_int) -> std::io::Result<Option<u32>> {
    let Some(pid) = holder(path) else {
        return Ok(None);
    };
    send_signal(pid, signal)?;
    Ok(Some(pid))
}

#[allow(unsafe_code)]
fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The live holder of the lock at `path` and its role, if any process holds it.
pub fn holder_role(path: &Path) -> Option<(u32, Role)> {
    let pid = holder(path)?;
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    let role = if s.split_whitespace().nth(1) == Some("run") {
        Role::OneShot
    } else {
        Role::Daemon
    };
    Some((pid, role))
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(path).ok()?.read_to_string(&mut s).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// `flock(LOCK_EX | LOCK_NB)`: Ok(true) when taken, Ok(false) when held elsewhere.
#[allow(unsafe_code)]
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock only reads the integer fd, which `file` keeps open for the
    // duration of the call; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_holder_and_drop_releases() {
        let dir = std::env::temp_dir().join(format!("ductile-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ductile.lock");
        let lock = InstanceLock::acquire(&path, Role::Daemon).unwrap();
        // flock locks belong to the open file description, so a second open in the
        // same process conflicts just like another process would.
        let err = InstanceLock::acquire(&path, Role::OneShot).unwrap_err();
        let me = std::process::id();
        assert_eq!(
            err.to_string(),
            format!(
                "another ductile (pid {me}) holds the lock {}; stop it first or use `ductile system reload`",
                path.display()
            )
        );
        assert_eq!(holder(&path), Some(me));
        drop(lock);
        assert_eq!(holder(&path), None);
        assert_eq!(holder_role(&path), None);
        let again = InstanceLock::acquire(&path, Role::OneShot).unwrap();
        assert_eq!(holder_role(&path), Some((me, Role::OneShot)));
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
