//! The ledger watch: a thread blocked on inotify for the state directory that
//! tells the control loop when the database, its WAL, its shared-memory file or
//! the lock file is deleted, moved or replaced. It costs no wake-up while
//! nothing happens there; the control loop decides what a change means.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;

use super::Control;
use crate::sys::{self, Interest, PollSet};

/// Events that can replace or remove a file: names created, deleted or moved
/// in the directory, and the directory itself going away.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// The running watch; stops when dropped.
pub(super) struct Watch {
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Closing our end wakes the thread's poll with a hang-up.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches the directory of `db` for changes to the ledger's and the lock's files.
pub(super) fn spawn(db: &Path, control: Sender<Control>) -> std::io::Result<Watch> {
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let base = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names = [
        base.clone(),
        format!("{base}-wal"),
        format!("{base}-shm"),
        "ductile.lock".to_string(),
    ];
    let inotify = sys::Inotify::new()?;
    inotify.watch(&dir, MASK)?;
    let (stop, stopped) = UnixStream::pair()?;
    let thread = thread::Builder::new()
        .name("ledger-watch".into())
        .spawn(move || {
            loop {
                let mut set = PollSet::default();
                let events = set.push(inotify.fd(), Interest::Read);
                let stop_at = set.push(stopped.as_fd(), Interest::Read);
                set.wait(None);
                if set.ready(stop_at) {
                    return;
                }
                if set.ready(events) {
                    let changed = inotify.drain();
                    // An empty name is the directory itself.
                    if changed.iter().any(|n| n.is_empty() || names.contains(n))
                        && control.send(Control::FilesChanged).is_err()
                    {
                        return;
                    }
                }
            }
        })?;
    Ok(Watch {
        stop: Some(stop),
        thread: Some(thread),
    })
}
