//! The operating-system calls the core makes that `std` does not offer: file
//! locks (flock and POSIX record locks), pidfds, poll, inotify, process-group
//! signals, `waitid(WNOWAIT)`, the subreaper and parent-death settings, and a
//! few queries. Every `unsafe` block of the crate lives here, each with the
//! reason it is sound; callers get safe functions that return `io::Result`.
//!
//! Linux is the target (pidfds need 5.3+, which every supported distribution
//! and Raspberry Pi OS ships); the few calls that have no fallback say so.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

// ---------------------------------------------------------------- file locks

/// `flock(LOCK_EX | LOCK_NB)`: true when taken, false when another open file
/// description holds it.
pub fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: flock only reads the integer fd, which `file` keeps open for the
    // duration of the call; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// `flock(LOCK_UN)`: releases a `flock` without closing the descriptor.
pub fn unlock_flock(file: &File) -> io::Result<()> {
    // SAFETY: as in `try_flock`.
    check(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) }).map(|_| ())
}

fn record_lock(kind: libc::c_int, byte: u64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte as libc::off_t,
        l_len: 1,
        l_pid: 0,
    }
}

/// Takes (or, with `lock = false`, releases) a POSIX write lock on one byte of
/// `file` without waiting: true when held. POSIX locks belong to the process and
/// the kernel reports the holder's pid to others ([`lock_holder`]), which is
/// what makes them the instance lock's identity.
pub fn set_byte_lock(file: &File, byte: u64, lock: bool) -> io::Result<bool> {
    let kind = if lock { libc::F_WRLCK } else { libc::F_UNLCK };
    let fl = record_lock(kind, byte);
    // SAFETY: `fl` is a valid, initialised flock struct that fcntl only reads;
    // the fd is kept open by `file`.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EACCES | libc::EAGAIN) => Ok(false),
        _ => Err(err),
    }
}

/// The pid of another process holding a POSIX lock on `byte` of `file`, if any.
pub fn lock_holder(file: &File, byte: u64) -> io::Result<Option<u32>> {
    let mut fl = record_lock(libc::F_WRLCK, byte);
    // SAFETY: `fl` is a valid flock struct that F_GETLK reads and overwrites in
    // place; the fd is kept open by `file`.
    check(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) })?;
    if fl.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    Ok(u32::try_from(fl.l_pid).ok().filter(|p| *p > 0))
}

// ---------------------------------------------------------------- processes

/// A descriptor that refers to process `pid` for as long as it is open, even
/// after the pid is recycled, and polls readable when it exits (Linux 5.3+).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = RawFd::try_from(fd)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(io::Error::last_os_error)?;
    // SAFETY: the kernel just returned `fd` to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `sig` to the process a pidfd refers to; fails with ESRCH once it has
/// exited, so a recycled pid can never receive it.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: the syscall takes the fd, the signal number, a null siginfo (the
    // kernel fills in a default) and zero flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `sig` to process group `pgid`; a group that is already gone is not an
/// error. Refuses the ids that mean "every process" or "our own group".
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Sends `sig` to process `pid` (never to a group or to everyone).
pub fn signal_process(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) only takes integers.
    check(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Whether our child `pid` has exited, without reaping it (`WNOWAIT`), so its
/// pid (and process group id) cannot be recycled while we still signal it.
pub fn has_exited(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain old data, for which all-zero bytes are a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `info` is a valid, exclusively borrowed siginfo_t for waitid to fill.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            // ECHILD: someone else reaped it; there is nothing left to wait for.
            _ => return true,
        }
    }
    // SAFETY: waitid succeeded, so `info` holds either a zeroed struct (WNOHANG, no
    // state change) or a SIGCHLD siginfo whose si_pid field is initialised.
    unsafe { info.si_pid() != 0 }
}

/// Reaps our child `pid` if it has exited (`WNOHANG`); true when it is gone.
pub fn reap_if_exited(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our local integer.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc == pid || (rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Makes this process the reaper of its orphaned descendants: a plugin's
/// grandchild whose parent exits is re-parented to us instead of init, so a job
/// can be swept whole even when part of it left the process group.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes integers only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(|_| ())
}

/// Hands memory the allocator holds freed back to the OS (`malloc_trim`):
/// walks every arena, so callers use it only after large allocations.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes
    // no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// CLOCK_MONOTONIC in microseconds: the clock systemd's `MONOTONIC_USEC`
/// means (`Instant` measures it too but does not expose its value).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives for the
    // call; CLOCK_MONOTONIC exists on every Linux, so it cannot fail with EINVAL.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as u64 / 1_000)
}

/// This process's pid.
pub fn pid() -> i32 {
    std::process::id() as i32
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The errno when this process may not write `path` (for a directory: write
/// and enter it), judged with the effective ids: `None` when it may.
pub fn write_denied(path: &Path) -> Option<i32> {
    let c = c_path(path).ok()?;
    let mode = if path.is_dir() {
        libc::W_OK | libc::X_OK
    } else {
        libc::R_OK | libc::W_OK
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // faccessat reads it and touches no other memory.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) };
    if rc == 0 {
        return None;
    }
    let errno = io::Error::last_os_error().raw_os_error()?;
    matches!(errno, libc::EACCES | libc::EPERM | libc::EROFS).then_some(errno)
}

// ---------------------------------------------------------------- descriptors

/// Sets O_NONBLOCK on `fd`. A failure is ignored: poll(2) readiness still keeps
/// reads from blocking.
pub fn set_nonblocking(fd: BorrowedFd<'_>) {
    // SAFETY: fcntl(F_GETFL/F_SETFL) on a descriptor the caller keeps open; it
    // only changes file status flags.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Widens a pipe to hold `bytes` (up to 1 MiB, the default system maximum) so
/// a request can be written whole before its reader starts. A pipe that cannot
/// be widened keeps its size: the rest of the request is then streamed.
pub fn widen_pipe(fd: BorrowedFd<'_>, bytes: usize) {
    const DEFAULT: usize = 64 * 1024;
    const MAX: usize = 1024 * 1024;
    if bytes <= DEFAULT {
        return;
    }
    let size = bytes.min(MAX) as libc::c_int;
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor the caller keeps open takes an
    // integer and touches no memory of ours.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size);
    }
}

/// What to wait for on one descriptor.
#[derive(Debug, Clone, Copy)]
pub enum Interest {
    /// Readable (or hung up).
    Read,
    /// Writable (or the reader went away).
    Write,
}

/// A small fixed set of descriptors for `poll(2)`.
pub struct PollSet {
    fds: [libc::pollfd; 8],
    len: usize,
}

impl Default for PollSet {
    fn default() -> PollSet {
        let empty = libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        };
        PollSet {
            fds: [empty; 8],
            len: 0,
        }
    }
}

impl PollSet {
    /// Adds `fd`; returns its index for [`ready`](Self::ready). At most 8.
    pub fn push(&mut self, fd: BorrowedFd<'_>, interest: Interest) -> usize {
        let i = self.len.min(self.fds.len() - 1);
        self.fds[i] = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: match interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
            },
            revents: 0,
        };
        self.len = i + 1;
        i
    }

    /// Whether the descriptor at `i` had an event (readiness, hang-up or error).
    pub fn ready(&self, i: usize) -> bool {
        self.fds[i].revents != 0
    }

    /// Waits up to `timeout` (forever with `None`; rounded up to whole
    /// milliseconds) for any event. EINTR reports nothing ready.
    pub fn wait(&mut self, timeout: Option<Duration>) {
        let ms = timeout.map_or(-1, |t| {
            t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `fds` is a live array of `len` (<= 8) initialised pollfd
        // structs, exclusively borrowed for the duration of the call.
        let rc = unsafe { libc::poll(self.fds.as_mut_ptr(), self.len as libc::nfds_t, ms) };
        if rc < 0 {
            for fd in &mut self.fds[..self.len] {
                fd.revents = 0;
            }
        }
    }
}

// ---------------------------------------------------------------- inotify

/// An inotify instance (non-blocking, close-on-exec).
#[derive(Debug)]
pub struct Inotify {
    fd: OwnedFd,
}

/// Events worth waking for: a file written, closed after writing, deleted,
/// moved or created.
pub const WATCH_CHANGES: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO;

impl Inotify {
    /// A new instance.
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags and returns a new descriptor or -1.
        let fd = check(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: the kernel just returned `fd`; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { fd })
    }

    /// Watches `path` (a file or a directory) for `mask` events.
    pub fn watch(&self, path: &Path, mask: u32) -> io::Result<()> {
        let c = c_path(path)?;
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        check(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) }).map(|_| ())
    }

    /// The descriptor, for a [`PollSet`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Reads every pending event and returns the names they concern (empty for
    /// events on a watched file itself).
    pub fn drain(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: `buf` is a live, exclusively borrowed byte buffer of the
            // length passed.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            let header = std::mem::size_of::<libc::inotify_event>();
            let mut at = 0;
            while at + header <= n {
                // The name length sits after wd, mask and cookie (3 × u32).
                let len_at = at + 12;
                let len = u32::from_ne_bytes([
                    buf[len_at],
                    buf[len_at + 1],
                    buf[len_at + 2],
                    buf[len_at + 3],
                ]) as usize;
                let name = &buf[(at + header).min(n)..(at + header + len).min(n)];
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                names.push(String::from_utf8_lossy(name).into_owned());
                at += header + len;
            }
        }
        names
    }
}

// ---------------------------------------------------------------- signals

/// Blocks SIGPIPE on the current thread for its lifetime; on drop, discards a
/// SIGPIPE that a write raised meanwhile and restores the previous mask. A
/// plugin that closes stdin early then yields EPIPE instead of killing us,
/// whatever the process-wide SIGPIPE disposition is.
pub struct SigpipeBlock {
    /// Whether this guard blocked it (false if it was already blocked or failed).
    blocked: bool,
}

impl Default for SigpipeBlock {
    fn default() -> SigpipeBlock {
        SigpipeBlock::new()
    }
}

impl SigpipeBlock {
    /// Blocks SIGPIPE on this thread.
    pub fn new() -> SigpipeBlock {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before use;
        // pthread_sigmask only reads `set` and writes `old`, both live locals.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return SigpipeBlock { blocked: false };
            }
            SigpipeBlock {
                blocked: libc::sigismember(&old, libc::SIGPIPE) == 0,
            }
        }
    }
}

impl Drop for SigpipeBlock {
    fn drop(&mut self) {
        if !self.blocked {
            return;
        }
        // SAFETY: as in `new`; sigtimedwait with a zero timeout only dequeues a
        // pending SIGPIPE of this thread (raised by our own EPIPE write) and
        // never blocks; the mask is then restored for exactly this signal.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut pending: libc::sigset_t = std::mem::zeroed();
            if libc::sigpending(&mut pending) == 0
                && libc::sigismember(&pending, libc::SIGPIPE) == 1
            {
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
            }
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Bytes an unprivileged process may still write on the file system holding
/// `path` (`statvfs`: available blocks times the fragment size).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let c = c_path(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call and
    // `st` points to writable memory of the struct's size; statvfs fills it.
    check(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs returned 0, so it initialised the whole struct (it was
    // zeroed before, too).
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field widths differ between targets
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// The size of a memory page (for turning /proc page counts into bytes).
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers and only reads a constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // Every Linux answers this; 4 KiB is the page size of every target we run on.
    u64::try_from(n).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_locks_report_their_holder_to_other_processes_only() {
        let dir = std::env::temp_dir().join(format!("ductile-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l");
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        assert!(set_byte_lock(&f, 1, true).unwrap());
        // Our own lock does not conflict with us, so we see no holder.
        assert_eq!(lock_holder(&f, 1).unwrap(), None);
        // Other processes see us: the integration tests of the instance lock
        // (one-shots against a daemon) exercise that side.
        assert!(set_byte_lock(&f, 1, false).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pidfds_signal_only_the_process_they_name() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id()).unwrap();
        use std::os::fd::AsFd;
        pidfd_send_signal(fd.as_fd(), libc::SIGKILL).unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let err = pidfd_send_signal(fd.as_fd(), libc::SIGKILL).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "gone is gone");
    }

    #[test]
    fn inotify_reports_names_in_a_watched_directory() {
        let dir = std::env::temp_dir().join(format!("ductile-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        ino.watch(&dir, WATCH_CHANGES).unwrap();
        std::fs::write(dir.join("a.txt"), b"x").unwrap();
        let mut set = PollSet::default();
        let i = set.push(ino.fd(), Interest::Read);
        set.wait(Some(Duration::from_secs(10)));
        assert!(set.ready(i));
        assert!(ino.drain().iter().any(|n| n == "a.txt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
