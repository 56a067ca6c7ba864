//! The process runner: one plugin invocation as one fresh process group.
//!
//! Owns: spawning the entrypoint directly (no shell) as the leader of a new process
//! group with a cleared environment plus an allowlist; feeding the request to stdin
//! without ever blocking on it; draining stdout and stderr concurrently into capped
//! buffers; the deadline (TERM to the group, grace, KILL); cancellation; sweeping
//! the whole group once the leader exits; reaping; and classifying the result with
//! a fixed precedence: cancelled > timed out > output too large > exit 78 >
//! protocol error > the plugin's own status.
//! Must not: touch the database, decide retries or routing, or log per job; the
//! caller records the [`Outcome`].
//!
//! Design: a single thread drives a `poll(2)` loop over the stdin write end, the
//! stdout and stderr read ends and (on Linux) a pidfd that becomes readable when
//! the leader exits. Exit is detected with `waitid(WNOWAIT)` semantics, so the
//! leader stays an unreaped zombie until the group has been swept; while it is
//! unreaped its pid, and therefore the group id, cannot be recycled, which is what
//! makes signalling `-pgid` safe (from this thread and from [`CancelToken::cancel`]).
//! SIGPIPE is blocked on the running thread while it writes to a plugin, so a
//! plugin that closes stdin early yields EPIPE and never kills ductile, whatever
//! the process-wide SIGPIPE disposition is.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::plugin::protocol::{self, Response, ResponseStatus};

/// Exit code a plugin uses for a permanent configuration error (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// Environment variables every plugin receives when they are set (plus any `LC_*`).
pub const ENV_ALLOWLIST: [&str; 5] = ["PATH", "HOME", "TZ", "LANG", "TMPDIR"];

/// Longest time spent collecting output still buffered after the leader exited.
/// A grandchild that escaped the group may hold stdout open forever.
const DRAIN_BOUND: Duration = Duration::from_millis(100);
/// Longest wait for a SIGKILLed leader to become reapable before handing it to a
/// background reaper (a process stuck in uninterruptible sleep must not hang a worker).
const KILL_BOUND: Duration = Duration::from_secs(2);
/// Upper bound on one poll(2) sleep, so a cancellation that could not signal the
/// group (it raced the spawn) is still noticed promptly.
const MAX_POLL: Duration = Duration::from_millis(50);
/// Size of one read from a pipe.
const CHUNK: usize = 64 * 1024;
/// Longest piece of plugin text quoted in a one-line message.
const QUOTE_MAX: usize = 300;

/// Resource limits for one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget from spawn to exit.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL once the budget is spent.
    pub grace: Duration,
    /// Bytes of stdout accepted; one more byte fails the run.
    pub stdout_cap: usize,
    /// Bytes of stderr kept; the rest is read and discarded.
    pub stderr_cap: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            stdout_cap: 10 * 1024 * 1024,
            stderr_cap: 64 * 1024,
        }
    }
}

/// Everything needed to run one plugin process.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    /// Absolute path of the executable, run directly (no shell).
    pub entrypoint: &'a Path,
    /// Extra environment variable names passed through when set.
    pub env_passthrough: &'a [String],
    /// The serialized request, written to stdin.
    pub request: &'a [u8],
    /// Resource limits.
    pub limits: Limits,
    /// Stopwatch sub-span cap from the manifest.
    pub max_subs: usize,
}

/// Cancels a run from another thread. Shared by reference; one token per job.
#[derive(Debug, Default)]
pub struct CancelToken {
    cancelled: AtomicBool,
    inner: Mutex<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    reason: Option<String>,
    /// The process group of the run in progress, registered only while its leader
    /// is unreaped (so the id cannot name a recycled group).
    pgid: Option<i32>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels: SIGTERMs a running group (the runner sends SIGKILL after the grace)
    /// or makes a run that has not started return `Cancelled` at once. The first
    /// reason wins.
    pub fn cancel(&self, reason: &str) {
        let mut inner = self.lock();
        if inner.reason.is_none() {
            inner.reason = Some(reason.to_string());
        }
        self.cancelled.store(true, Ordering::SeqCst);
        if let Some(pgid) = inner.pgid {
            signal_group(pgid, libc::SIGTERM);
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The reason given to the first [`cancel`](Self::cancel).
    pub fn reason(&self) -> Option<String> {
        self.lock().reason.clone()
    }

    /// The process group currently registered, if a run is in progress.
    #[cfg(test)]
    fn running_group(&self) -> Option<i32> {
        self.lock().pgid
    }

    fn attach(&self, pgid: i32) {
        self.lock().pgid = Some(pgid);
    }

    fn detach(&self) {
        self.lock().pgid = None;
    }

    fn lock(&self) -> MutexGuard<'_, CancelInner> {
        // The guarded data stays consistent even if a holder panicked.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What happened to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The classification.
    pub kind: OutcomeKind,
    /// Exit code of the leader, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended the leader, when it was killed.
    pub signal: Option<i32>,
    /// Captured stdout (at most the cap).
    pub stdout: Vec<u8>,
    /// Captured stderr (at most the cap, lossily decoded).
    pub stderr: String,
    /// Whether stderr was longer than the cap.
    pub stderr_truncated: bool,
    /// Pid (and process group id) of the leader, when it was spawned.
    pub pid: Option<u32>,
    /// Wall-clock start.
    pub started_at: DateTime<Utc>,
    /// Wall-clock finish.
    pub finished_at: DateTime<Utc>,
    /// Monotonic duration of the whole run.
    pub duration: Duration,
}

/// The classification of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// Exit 0 and a valid `ok` response.
    Succeeded(Response),
    /// A valid `error` response (any exit code but 78).
    Failed(Response),
    /// Exit 78: a permanent configuration error, never retried.
    ConfigError {
        /// The response, if stdout held a valid one.
        response: Option<Response>,
        /// Detail: the last stderr line, else the response's error.
        message: String,
    },
    /// The deadline passed; the group was terminated.
    TimedOut,
    /// stdout exceeded its cap; the group was killed.
    OutputTooLarge,
    /// stdout was not a valid response, or the exit code contradicts it.
    ProtocolError(String),
    /// The process could not be started.
    SpawnFailed(String),
    /// The run was cancelled; holds the reason.
    Cancelled(String),
}

impl Outcome {
    /// One line for the job's `last_error`; `None` for a success.
    pub fn error_message(&self) -> Option<String> {
        let text = match &self.kind {
            OutcomeKind::Succeeded(_) => return None,
            OutcomeKind::Failed(r) => r
                .error
                .clone()
                .unwrap_or_else(|| "plugin reported an error".to_string()),
            OutcomeKind::ConfigError { message, .. } => {
                format!("plugin exited {EXIT_CONFIG} (configuration error): {message}")
            }
            OutcomeKind::TimedOut => format!("timed out after {}", human_duration(self.duration)),
            OutcomeKind::OutputTooLarge => {
                format!("stdout exceeded {}", human_bytes(self.stdout.len()))
            }
            OutcomeKind::ProtocolError(detail) => format!("protocol error: {detail}"),
            OutcomeKind::SpawnFailed(detail) => detail.clone(),
            OutcomeKind::Cancelled(reason) => format!("cancelled: {reason}"),
        };
        Some(one_line(&text, 2 * QUOTE_MAX))
    }

    /// Whether another attempt could help (the caller still applies its policy).
    pub fn retryable(&self) -> bool {
        match &self.kind {
            OutcomeKind::Succeeded(_)
            | OutcomeKind::ConfigError { .. }
            | OutcomeKind::Cancelled(_) => false,
            OutcomeKind::Failed(r) => r.retry,
            OutcomeKind::TimedOut
            | OutcomeKind::OutputTooLarge
            | OutcomeKind::ProtocolError(_)
            | OutcomeKind::SpawnFailed(_) => true,
        }
    }
}

/// Why the runner is ending the group before it exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Cancelled,
    TimedOut,
    Overflow,
}

/// Runs one plugin process to completion and classifies the result. Never panics
/// on plugin behaviour, always reaps (or hands off) the leader, and never leaves
/// members of its process group running.
pub fn run(inv: &Invocation<'_>, cancel: &CancelToken) -> Outcome {
    run_watching(inv, cancel, pidfd_open)
}

/// [`run`] with the way the leader's exit is watched made explicit: `open_pidfd`
/// returns a descriptor that polls readable on exit, or `None` to fall back to
/// `waitid(WNOWAIT)` on every turn (what happens on kernels without pidfds).
fn run_watching(
    inv: &Invocation<'_>,
    cancel: &CancelToken,
    open_pidfd: fn(i32) -> Option<OwnedFd>,
) -> Outcome {
    let started_at = Utc::now();
    let start = Instant::now();
    let not_started = |kind: OutcomeKind| Outcome {
        kind,
        exit_code: None,
        signal: None,
        stdout: Vec::new(),
        stderr: String::new(),
        stderr_truncated: false,
        pid: None,
        started_at,
        finished_at: Utc::now(),
        duration: start.elapsed(),
    };
    if let Some(reason) = cancel.reason() {
        return not_started(OutcomeKind::Cancelled(reason));
    }

    let mut cmd = Command::new(inv.entrypoint);
    cmd.env_clear()
        .envs(plugin_env(inv.env_passthrough))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return not_started(OutcomeKind::SpawnFailed(format!(
                "cannot start {}: {e}",
                inv.entrypoint.display()
            )));
        }
    };
    let pid = child.id();
    // Non-blocking ends let one thread serve all three pipes: a write never waits
    // for a plugin that does not read, a read never waits for one that is silent.
    let stdin = child.stdin.take().map(|s| nonblocking(OwnedFd::from(s)));
    let stdout = child.stdout.take().map(|s| nonblocking(OwnedFd::from(s)));
    let stderr = child.stderr.take().map(|s| nonblocking(OwnedFd::from(s)));
    // After the spawn: the child must not inherit a blocked SIGPIPE (std also
    // resets the child's mask, this just keeps the guard's scope honest).
    let _sigpipe = SigpipeBlock::new();
    let mut group = Group::new(child, cancel);
    // A cancel that raced the spawn found no group to signal; the loop below sees
    // the flag on its first turn and terminates the group itself.
    cancel.attach(group.pgid);

    let mut io = Io {
        stdin,
        request: inv.request,
        written: 0,
        stdout: Capture::stopping(stdout, inv.limits.stdout_cap),
        stderr: Capture::draining(stderr, inv.limits.stderr_cap),
        scratch: vec![0; CHUNK],
    };
    let pidfd = open_pidfd(group.pgid);
    let deadline = start.checked_add(inv.limits.timeout);

    io.write_stdin();
    let (ending, exited) = supervise(
        &mut io,
        &group,
        pidfd.as_ref(),
        deadline,
        inv.limits.grace,
        cancel,
    );
    // The precedence puts cancellation first even when it arrived during a timeout.
    let cancelled = cancel.reason();

    // Sweep background children that would otherwise outlive the job, then take
    // what is already buffered; bounded because an escaped grandchild may keep
    // the pipe open indefinitely.
    group.signal(libc::SIGKILL);
    io.stdin = None;
    io.drain(Instant::now() + DRAIN_BOUND);

    let status = if exited { group.reap() } else { None };
    let finished_at = Utc::now();
    let duration = start.elapsed();

    let stderr_text = String::from_utf8_lossy(&io.stderr.buf).into_owned();
    let kind = if let Some(reason) = cancelled {
        OutcomeKind::Cancelled(reason)
    } else if ending == Some(Ending::TimedOut) {
        OutcomeKind::TimedOut
    } else if io.stdout.overflowed || ending == Some(Ending::Overflow) {
        OutcomeKind::OutputTooLarge
    } else {
        classify(status, &io.stdout.buf, &stderr_text, inv.max_subs)
    };
    Outcome {
        kind,
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        stdout: std::mem::take(&mut io.stdout.buf),
        stderr: stderr_text,
        stderr_truncated: io.stderr.overflowed,
        pid: Some(pid),
        started_at,
        finished_at,
        duration,
    }
}

/// Drives the poll loop until the leader exits (returns `exited = true`) or, after a
/// SIGKILL, fails to exit within [`KILL_BOUND`] (returns `exited = false`).
fn supervise(
    io: &mut Io<'_>,
    group: &Group<'_>,
    pidfd: Option<&OwnedFd>,
    deadline: Option<Instant>,
    grace: Duration,
    cancel: &CancelToken,
) -> (Option<Ending>, bool) {
    let mut ending: Option<Ending> = None;
    let mut kill_at: Option<Instant> = None;
    let mut give_up_at: Option<Instant> = None;
    // Without a pidfd nothing wakes us when the leader exits after closing its
    // pipes, so the sleep starts short and backs off.
    let mut backoff = Duration::from_millis(1);
    loop {
        let now = Instant::now();
        if ending.is_none() {
            if cancel.is_cancelled() {
                ending = Some(Ending::Cancelled);
            } else if deadline.is_some_and(|d| now >= d) {
                ending = Some(Ending::TimedOut);
            }
            if ending.is_some() {
                group.signal(libc::SIGTERM);
                kill_at = Some(now + grace);
            }
        }
        if io.stdout.overflowed && ending.is_none() {
            // A runaway writer gets no grace: its output is already unusable.
            ending = Some(Ending::Overflow);
            kill_at = Some(now);
        }
        if let Some(at) = kill_at {
            if now >= at && give_up_at.is_none() {
                group.signal(libc::SIGKILL);
                give_up_at = Some(now + KILL_BOUND);
            }
        }
        if pidfd.is_none() && has_exited(group.pgid) {
            return (ending, true);
        }
        if give_up_at.is_some_and(|at| now >= at) {
            return (ending, false);
        }

        let mut wake = now + MAX_POLL;
        for t in [
            deadline.filter(|_| ending.is_none()),
            kill_at.filter(|_| give_up_at.is_none()),
            give_up_at,
        ]
        .into_iter()
        .flatten()
        {
            wake = wake.min(t);
        }
        if pidfd.is_none() && !io.any_open() {
            wake = wake.min(now + backoff);
            backoff = (backoff * 2).min(MAX_POLL);
        }

        let mut fds = PollSet::default();
        let stdin_at = io
            .stdin
            .as_ref()
            .map(|f| fds.push(f.as_raw_fd(), libc::POLLOUT));
        let stdout_at = io
            .stdout
            .file
            .as_ref()
            .map(|f| fds.push(f.as_raw_fd(), libc::POLLIN));
        let stderr_at = io
            .stderr
            .file
            .as_ref()
            .map(|f| fds.push(f.as_raw_fd(), libc::POLLIN));
        let pidfd_at = pidfd.map(|f| fds.push(f.as_raw_fd(), libc::POLLIN));
        fds.wait(wake.saturating_duration_since(now));

        if stdin_at.is_some_and(|i| fds.ready(i)) {
            io.write_stdin();
        }
        if stdout_at.is_some_and(|i| fds.ready(i)) {
            io.stdout.read_available(&mut io.scratch);
        }
        if stderr_at.is_some_and(|i| fds.ready(i)) {
            io.stderr.read_available(&mut io.scratch);
        }
        // A readable pidfd means the leader has exited (it stays unreaped).
        if pidfd_at.is_some_and(|i| fds.ready(i)) {
            return (ending, true);
        }
    }
}

/// The pipes of one run.
struct Io<'r> {
    stdin: Option<File>,
    request: &'r [u8],
    written: usize,
    stdout: Capture,
    stderr: Capture,
    scratch: Vec<u8>,
}

impl Io<'_> {
    fn any_open(&self) -> bool {
        self.stdin.is_some() || self.stdout.file.is_some() || self.stderr.file.is_some()
    }

    /// Writes as much of the request as the pipe takes; closes stdin when done or
    /// when the plugin stopped reading (EPIPE is expected, not an error).
    fn write_stdin(&mut self) {
        let Some(file) = self.stdin.as_mut() else {
            return;
        };
        while self.written < self.request.len() {
            match file.write(&self.request[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.stdin = None;
    }

    /// Reads whatever the pipes still hold until both reach EOF or `until` passes.
    fn drain(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let mut fds = PollSet::default();
            let out_at = self
                .stdout
                .file
                .as_ref()
                .map(|f| fds.push(f.as_raw_fd(), libc::POLLIN));
            let err_at = self
                .stderr
                .file
                .as_ref()
                .map(|f| fds.push(f.as_raw_fd(), libc::POLLIN));
            if out_at.is_none() && err_at.is_none() {
                break;
            }
            fds.wait(until - now);
            if out_at.is_some_and(|i| fds.ready(i)) {
                self.stdout.read_available(&mut self.scratch);
            }
            if err_at.is_some_and(|i| fds.ready(i)) {
                self.stderr.read_available(&mut self.scratch);
            }
        }
        self.stdout.file = None;
        self.stderr.file = None;
    }
}

/// A capped capture of one output pipe.
struct Capture {
    file: Option<File>,
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
    /// stdout stops reading at the cap (the run has failed anyway); stderr keeps
    /// draining so a chatty plugin never blocks on a full pipe.
    stop_at_cap: bool,
}

impl Capture {
    fn stopping(file: Option<File>, cap: usize) -> Capture {
        Capture {
            file,
            buf: Vec::new(),
            cap,
            overflowed: false,
            stop_at_cap: true,
        }
    }

    fn draining(file: Option<File>, cap: usize) -> Capture {
        Capture {
            stop_at_cap: false,
            ..Capture::stopping(file, cap)
        }
    }

    /// Reads until the pipe would block, reaches EOF, or (for a stopping capture) overflows.
    fn read_available(&mut self, scratch: &mut [u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        // Bounded so one flooding pipe cannot starve the deadline checks.
        for _ in 0..64 {
            match file.read(scratch) {
                Ok(0) => {
                    self.file = None;
                    return;
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.buf.len());
                    self.buf.extend_from_slice(&scratch[..n.min(room)]);
                    if n > room {
                        self.overflowed = true;
                        if self.stop_at_cap {
                            self.file = None;
                            return;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.file = None;
                    return;
                }
            }
        }
    }
}

/// The spawned leader: signals its group, reaps it, and on every path out (even a
/// panic) kills the group and makes sure the leader is reaped.
struct Group<'c> {
    child: Option<Child>,
    pgid: i32,
    cancel: &'c CancelToken,
}

impl<'c> Group<'c> {
    fn new(child: Child, cancel: &'c CancelToken) -> Group<'c> {
        // Pids fit in i32 on every unix; process_group(0) makes the pid the pgid.
        let pgid = i32::try_from(child.id()).unwrap_or(0);
        Group {
            child: Some(child),
            pgid,
            cancel,
        }
    }

    fn signal(&self, sig: i32) {
        if self.child.is_some() {
            signal_group(self.pgid, sig);
        }
    }

    /// Reaps the (already exited) leader. The cancel registration goes first: once
    /// reaped, the pgid may be recycled.
    fn reap(&mut self) -> Option<ExitStatus> {
        self.cancel.detach();
        let mut child = self.child.take()?;
        loop {
            match child.wait() {
                Ok(status) => return Some(status),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        self.cancel.detach();
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal_group(self.pgid, libc::SIGKILL);
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // Still not reapable after SIGKILL (uninterruptible sleep): reap in the
        // background instead of blocking the worker.
        let reaper = std::thread::Builder::new()
            .name("plugin-reaper".to_string())
            .spawn(move || {
                let _ = child.wait();
            });
        if let Err(e) = reaper {
            log::warn!(
                "cannot start a reaper thread for plugin process {}: {e}",
                self.pgid
            );
        }
    }
}

/// A small fixed set of pollfds.
struct PollSet {
    fds: [libc::pollfd; 4],
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
            fds: [empty; 4],
            len: 0,
        }
    }
}

impl PollSet {
    fn push(&mut self, fd: RawFd, events: i16) -> usize {
        let i = self.len;
        self.fds[i] = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        self.len += 1;
        i
    }

    fn ready(&self, i: usize) -> bool {
        self.fds[i].revents != 0
    }

    /// Waits up to `timeout` (rounded up to whole milliseconds) for any event.
    #[allow(unsafe_code)]
    fn wait(&mut self, timeout: Duration) {
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a live array of `len` initialised pollfd structs
        // (len <= 4), exclusively borrowed for the duration of the call.
        let rc = unsafe { libc::poll(self.fds.as_mut_ptr(), self.len as libc::nfds_t, ms) };
        if rc < 0 {
            // EINTR or a transient failure: report nothing ready; the caller loops.
            for fd in &mut self.fds[..self.len] {
                fd.revents = 0;
            }
        }
    }
}

/// The environment a plugin sees: the allowlist, any `LC_*`, and the passthrough names.
fn plugin_env(passthrough: &[String]) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(key, _)| {
            let Some(key) = key.to_str() else {
                return false;
            };
            ENV_ALLOWLIST.contains(&key)
                || key.starts_with("LC_")
                || passthrough.iter().any(|p| p == key)
        })
        .collect()
}

/// Classifies an exited, in-budget run from its exit status and output.
fn classify(
    status: Option<ExitStatus>,
    stdout: &[u8],
    stderr: &str,
    max_subs: usize,
) -> OutcomeKind {
    let Some(status) = status else {
        return OutcomeKind::ProtocolError("plugin exit status could not be collected".to_string());
    };
    let decoded = protocol::decode(stdout, &protocol::ResponseLimits::with_subs(max_subs));
    if status.code() == Some(EXIT_CONFIG) {
        let response = decoded.ok();
        let message = last_line(stderr)
            .or_else(|| {
                response
                    .as_ref()
                    .and_then(|r| r.error.as_deref())
                    .map(|e| one_line(e, QUOTE_MAX))
            })
            .unwrap_or_else(|| "no message on stderr".to_string());
        return OutcomeKind::ConfigError { response, message };
    }
    let exit = match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(code), _) => Some(format!("plugin exited with code {code}")),
        (None, Some(sig)) => Some(format!("plugin was killed by signal {sig}")),
        (None, None) => Some("plugin ended without an exit code".to_string()),
    };
    match (decoded, exit) {
        (Ok(r), _) if r.status == ResponseStatus::Error => OutcomeKind::Failed(r),
        (Ok(r), None) => OutcomeKind::Succeeded(r),
        // A crash after printing "ok" is not a success we can trust.
        (Ok(_), Some(exit)) => OutcomeKind::ProtocolError(exit),
        (Err(e), None) => OutcomeKind::ProtocolError(e.to_string()),
        (Err(e), Some(exit)) => {
            let hint = last_line(stderr)
                .map(|l| format!(" (last stderr line: {l})"))
                .unwrap_or_default();
            OutcomeKind::ProtocolError(format!("{exit}: {e}{hint}"))
        }
    }
}

/// The last non-blank line of `text`, shortened for a one-line message.
fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| one_line(l, QUOTE_MAX))
}

/// Collapses whitespace runs (newlines included) and shortens to `max` chars.
fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > max {
        let short: String = joined.chars().take(max).collect();
        format!("{short}…")
    } else {
        joined
    }
}

fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 < 100 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
    }
}

fn human_bytes(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n % KIB == 0 {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// Wraps our end of a pipe as a non-blocking `File`. If O_NONBLOCK cannot be set the
/// end is still usable: poll(2) readiness keeps reads from blocking, and a short
/// request fits the pipe buffer.
#[allow(unsafe_code)]
fn nonblocking(fd: OwnedFd) -> File {
    // SAFETY: fcntl(F_SETFL) on a descriptor we own; it only changes file status
    // flags (the access mode is ignored by F_SETFL).
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK);
    }
    File::from(fd)
}

/// Blocks SIGPIPE on the current thread for its lifetime; on drop, discards a
/// SIGPIPE that a write raised meanwhile and restores the previous mask.
struct SigpipeBlock {
    /// Whether this guard blocked it (false if it was already blocked or failed).
    blocked: bool,
}

impl SigpipeBlock {
    #[allow(unsafe_code)]
    fn new() -> SigpipeBlock {
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
    #[allow(unsafe_code)]
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

/// Sends `sig` to process group `pgid`; failures (the group is already gone) are ignored.
#[allow(unsafe_code)]
fn signal_group(pgid: i32, sig: i32) {
    // kill(-1) would signal every process we may signal, kill(0) our own group.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) only takes integers. Callers pass the pgid of a leader that is
    // not yet reaped, so the group id cannot have been recycled.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Whether `pid` (our child) has exited, without reaping it (`WNOWAIT`).
#[allow(unsafe_code)]
fn has_exited(pid: i32) -> bool {
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

/// A descriptor that becomes readable when `pid` exits (Linux 5.3+); `None` elsewhere.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned `fd` to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: i32) -> Option<OwnedFd> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::path::PathBuf;

    const REQUEST: &[u8] = br#"{"protocol":2,"job_id":"j1","command":"poll","config":{},"state":{},"context":{},"deadline_at":"2026-01-01T00:00:00Z"}"#;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/plugins")
            .join(name)
            .join("run.sh")
    }

    fn run_with(name: &str, limits: Limits, request: &[u8], passthrough: &[String]) -> Outcome {
        let path = fixture(name);
        let inv = Invocation {
            entrypoint: &path,
            env_passthrough: passthrough,
            request,
            limits,
            max_subs: 32,
        };
        run(&inv, &CancelToken::new())
    }

    fn run_fixture(name: &str) -> Outcome {
        run_with(name, Limits::default(), REQUEST, &[])
    }

    fn short_limits() -> Limits {
        Limits {
            timeout: Duration::from_millis(300),
            grace: Duration::from_millis(200),
            ..Limits::default()
        }
    }

    fn response(outcome: &Outcome) -> &Response {
        match &outcome.kind {
            OutcomeKind::Succeeded(r) => r,
            other => panic!(
                "expected success, got {other:?} (stderr: {})",
                outcome.stderr
            ),
        }
    }

    fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::yield_now();
        }
    }

    /// Whether any process of group `pgid` is still alive. Zombies do not count:
    /// orphans are reaped by init, which may take its time.
    #[allow(unsafe_code)]
    fn group_alive(pgid: i32) -> bool {
        // SAFETY: kill(2) with signal 0 only checks for existence; it takes integers.
        let rc = unsafe { libc::kill(-pgid, 0) };
        if rc != 0 {
            return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        }
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return true;
        };
        entries.flatten().any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            // Fields after the parenthesised command: state ppid pgrp ...
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z"
        })
    }

    fn assert_group_gone(outcome: &Outcome) {
        let pgid = match outcome.pid {
            Some(pid) => pid as i32,
            None => panic!("no pid in {outcome:?}"),
        };
        assert!(
            wait_until(Duration::from_secs(5), || !group_alive(pgid)),
            "process group {pgid} still has live members"
        );
    }

    #[allow(unsafe_code)]
    fn is_reaped(pid: u32) -> bool {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a specific pid; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
    }

    #[allow(unsafe_code)]
    fn kill_pid(pid: i32) {
        // SAFETY: kill(2) takes integers; `pid` is a test-spawned sleep.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    #[test]
    fn ok_basic_succeeds_and_is_reaped() {
        let o = run_fixture("ok_basic");
        let r = response(&o);
        assert_eq!(r.result, Some(json!("ok_basic done")));
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].event_type, "ok_basic.tick");
        assert_eq!(
            r.state_updates.clone().map(Value::Object),
            Some(json!({"cursor": "abc", "seen": 1}))
        );
        assert_eq!((o.exit_code, o.signal), (Some(0), None));
        assert_eq!(o.stderr, "");
        assert!(!o.stderr_truncated);
        assert_eq!(o.error_message(), None);
        assert!(!o.retryable());
        assert!(o.started_at <= o.finished_at);
        assert!(o.duration > Duration::ZERO && o.duration < Duration::from_secs(5));
        let pid = o.pid.unwrap_or(0);
        assert!(is_reaped(pid), "leader {pid} was not reaped");
        assert_group_gone(&o);
    }

    #[test]
    fn protocol_errors_are_named() {
        let cases = [
            (
                "garbage_stdout",
                "protocol error: plugin stdout is not JSON: expected ident at line 1 column 2",
            ),
            (
                "empty_stdout",
                "protocol error: plugin wrote nothing to stdout",
            ),
            (
                "ok_without_result",
                "protocol error: response has status \"ok\" but no `result`",
            ),
            ("exit_1_ok", "protocol error: plugin exited with code 1"),
        ];
        for (name, expected) in cases {
            let o = run_fixture(name);
            assert!(
                matches!(o.kind, OutcomeKind::ProtocolError(_)),
                "{name}: {:?}",
                o.kind
            );
            assert_eq!(o.error_message().as_deref(), Some(expected), "{name}");
            assert!(o.retryable(), "{name}");
        }
    }

    #[test]
    fn exit_78_is_a_config_error() {
        let o = run_fixture("exit_78");
        assert_eq!(
            o.kind,
            OutcomeKind::ConfigError {
                response: None,
                message: "exit_78: config key api_key is missing".to_string()
            }
        );
        assert_eq!(o.exit_code, Some(78));
        assert_eq!(
            o.error_message().as_deref(),
            Some("plugin exited 78 (configuration error): exit_78: config key api_key is missing")
        );
        assert!(!o.retryable());
        assert!(o.stderr.starts_with("exit_78: starting\n"));
    }

    #[test]
    fn error_without_retry_is_failed_and_final() {
        let o = run_fixture("error_no_retry");
        assert!(matches!(&o.kind, OutcomeKind::Failed(r) if !r.retry));
        assert_eq!(
            o.error_message().as_deref(),
            Some("error_no_retry: this input can never succeed")
        );
        assert!(!o.retryable());
    }

    #[test]
    fn huge_stdout_keeps_exactly_the_cap() {
        let o = run_fixture("huge_stdout");
        assert_eq!(o.kind, OutcomeKind::OutputTooLarge);
        assert_eq!(o.stdout.len(), 10 * 1024 * 1024);
        assert!(o.stdout.iter().all(|b| *b == b'a'));
        assert_eq!(o.error_message().as_deref(), Some("stdout exceeded 10 MiB"));
        assert!(o.retryable());
        assert_group_gone(&o);
    }

    #[test]
    fn small_stdout_cap_is_honoured() {
        let limits = Limits {
            stdout_cap: 1000,
            ..Limits::default()
        };
        let o = run_with("ok_basic", limits, REQUEST, &[]);
        assert!(matches!(o.kind, OutcomeKind::Succeeded(_)));
        let limits = Limits {
            stdout_cap: 10,
            ..Limits::default()
        };
        let o = run_with("ok_basic", limits, REQUEST, &[]);
        assert_eq!(o.kind, OutcomeKind::OutputTooLarge);
        assert_eq!(o.stdout, br#"{"status":"#.to_vec());
        assert_eq!(
            o.error_message().as_deref(),
            Some("stdout exceeded 10 bytes")
        );
    }

    #[test]
    fn hang_times_out_even_with_an_unread_large_request() {
        let limits = short_limits();
        let big = vec![b'x'; 1024 * 1024];
        let started = Instant::now();
        let o = run_with("hang", limits, &big, &[]);
        let elapsed = started.elapsed();
        assert_eq!(o.kind, OutcomeKind::TimedOut);
        assert!(elapsed >= limits.timeout, "{elapsed:?}");
        assert!(
            elapsed < limits.timeout + limits.grace + Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert_eq!(o.signal, Some(libc::SIGTERM));
        let msg = o.error_message().unwrap_or_default();
        assert!(
            msg.starts_with("timed out after ") && msg.ends_with("ms"),
            "{msg}"
        );
        assert!(o.retryable());
        assert!(is_reaped(o.pid.unwrap_or(0)));
        assert_group_gone(&o);
    }

    #[test]
    fn term_ignoring_plugin_is_killed_after_the_grace() {
        let limits = short_limits();
        let started = Instant::now();
        let o = run_with("ignores_term", limits, REQUEST, &[]);
        let elapsed = started.elapsed();
        assert_eq!(o.kind, OutcomeKind::TimedOut);
        assert_eq!(o.signal, Some(libc::SIGKILL));
        assert!(elapsed >= limits.timeout + limits.grace, "{elapsed:?}");
        assert!(
            elapsed < limits.timeout + limits.grace + Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert_group_gone(&o);
    }

    #[test]
    fn large_requests_do_not_block() {
        let big = vec![b'x'; 1024 * 1024];
        let o = run_with("early_stdin_close", Limits::default(), &big, &[]);
        assert_eq!(
            response(&o).result,
            Some(json!("answered without reading stdin"))
        );
        let o = run_with("ok_basic", Limits::default(), &big, &[]);
        assert_eq!(response(&o).result, Some(json!("ok_basic done")));
    }

    #[test]
    fn background_child_in_the_group_is_swept() {
        let started = Instant::now();
        let o = run_fixture("grandchild_holds_stdout");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let grandchild = response(&o)
            .result
            .as_ref()
            .and_then(|r| r["grandchild_pid"].as_i64());
        assert!(grandchild.is_some(), "{:?}", o.kind);
        assert_group_gone(&o);
    }

    #[test]
    #[allow(unsafe_code)]
    fn escaped_grandchild_does_not_hang_the_run() {
        let started = Instant::now();
        let o = run_fixture("setsid_grandchild");
        let elapsed = started.elapsed();
        let grandchild = response(&o)
            .result
            .as_ref()
            .and_then(|r| r["grandchild_pid"].as_i64())
            .unwrap_or(0) as i32;
        assert!(grandchild > 1, "{:?}", o.kind);
        // SAFETY: signal 0 only checks that the escaped sleep still exists.
        let alive = unsafe { libc::kill(grandchild, 0) } == 0;
        kill_pid(grandchild);
        assert!(alive, "the escaped grandchild should outlive the run");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert_group_gone(&o);
    }

    #[test]
    fn big_state_is_read_whole() {
        let o = run_fixture("big_state");
        let blob = response(&o)
            .state_updates
            .as_ref()
            .and_then(|s| s.get("blob"))
            .and_then(Value::as_str)
            .map(str::len);
        assert_eq!(blob, Some(2 * 1024 * 1024));
    }

    #[test]
    fn stderr_flood_is_truncated_but_drained() {
        let o = run_fixture("stderr_flood");
        assert_eq!(response(&o).result, Some(json!("survived a stderr flood")));
        assert!(o.stderr_truncated);
        assert_eq!(o.stderr.len(), 64 * 1024);
        assert!(o.stderr.bytes().all(|b| b == b'e'));
    }

    #[test]
    fn stopwatch_subs_are_capped_by_max_subs() {
        let o = run_fixture("subs_overflow");
        let r = response(&o);
        assert_eq!((r.stopwatch_subs.len(), r.subs_dropped), (32, 8));
        let path = fixture("subs_overflow");
        let inv = Invocation {
            entrypoint: &path,
            env_passthrough: &[],
            request: REQUEST,
            limits: Limits::default(),
            max_subs: 64,
        };
        let o = run(&inv, &CancelToken::new());
        let r = response(&o);
        assert_eq!((r.stopwatch_subs.len(), r.subs_dropped), (40, 0));
    }

    #[test]
    fn environment_is_an_allowlist() {
        let allowlisted = |n: &str| ENV_ALLOWLIST.contains(&n) || n.starts_with("LC_");
        // Two variables of this process that are not on the allowlist (cargo sets
        // several): one is passed through, the other must not leak.
        let others: Vec<String> = std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| {
                !allowlisted(k)
                    && k != "PWD"
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
            .collect();
        assert!(
            others.len() >= 2,
            "the test needs two non-allowlisted variables, found {others:?}"
        );
        let (passed, blocked) = (others[0].clone(), others[1].clone());
        let o = run_with(
            "env_dump",
            Limits::default(),
            REQUEST,
            &[passed.clone(), "DUCTILE_UNSET_VAR".to_string()],
        );
        let names: Vec<String> = response(&o)
            .result
            .as_ref()
            .and_then(|r| r["names"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert!(names.contains(&passed), "{passed} missing from {names:?}");
        assert!(!names.contains(&blocked), "{blocked} leaked into {names:?}");
        assert!(!names.iter().any(|n| n == "DUCTILE_UNSET_VAR"), "{names:?}");
        if std::env::var_os("PATH").is_some() {
            assert!(names.iter().any(|n| n == "PATH"), "{names:?}");
        }
        // Everything else is on the allowlist, or set by the shell itself.
        for n in &names {
            assert!(
                allowlisted(n) || *n == passed || n == "PWD",
                "unexpected variable {n} in {names:?}"
            );
        }
    }

    #[test]
    fn spawn_failures_are_reported() {
        let missing = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/plugins/missing_entrypoint/run.sh");
        let inv = Invocation {
            entrypoint: &missing,
            env_passthrough: &[],
            request: REQUEST,
            limits: Limits::default(),
            max_subs: 32,
        };
        let o = run(&inv, &CancelToken::new());
        let expected = format!(
            "cannot start {}: No such file or directory (os error 2)",
            missing.display()
        );
        assert_eq!(o.kind, OutcomeKind::SpawnFailed(expected.clone()));
        assert_eq!(o.error_message(), Some(expected));
        assert_eq!(o.pid, None);
        assert!(o.retryable());

        let o = run_fixture("not_executable");
        let expected = format!(
            "cannot start {}: Permission denied (os error 13)",
            fixture("not_executable").display()
        );
        assert_eq!(o.kind, OutcomeKind::SpawnFailed(expected));
    }

    #[test]
    fn cancelled_before_start_returns_at_once() {
        let token = CancelToken::new();
        token.cancel("shutdown");
        token.cancel("a later reason is ignored");
        assert!(token.is_cancelled());
        assert_eq!(token.reason().as_deref(), Some("shutdown"));
        let path = fixture("hang");
        let inv = Invocation {
            entrypoint: &path,
            env_passthrough: &[],
            request: REQUEST,
            limits: Limits::default(),
            max_subs: 32,
        };
        let o = run(&inv, &token);
        assert_eq!(o.kind, OutcomeKind::Cancelled("shutdown".to_string()));
        assert_eq!(o.pid, None);
        assert_eq!(o.error_message().as_deref(), Some("cancelled: shutdown"));
        assert!(!o.retryable());
    }

    /// Whether process `pid` has installed a SIGTERM handler (per /proc).
    fn catches_term(pid: i32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    }

    fn cancel_while_running(name: &str, limits: Limits) -> (Outcome, Duration) {
        let token = CancelToken::new();
        let path = fixture(name);
        let inv = Invocation {
            entrypoint: &path,
            env_passthrough: &[],
            request: REQUEST,
            limits,
            max_subs: 32,
        };
        std::thread::scope(|s| {
            let runner = s.spawn(|| run(&inv, &token));
            assert!(wait_until(Duration::from_secs(5), || token
                .running_group()
                .is_some()));
            if name == "ignores_term" {
                // Cancel only once the trap is in place, or TERM would simply work.
                let pid = token.running_group().unwrap_or(0);
                assert!(wait_until(Duration::from_secs(5), || catches_term(pid)));
            }
            let started = Instant::now();
            token.cancel("if_running: cancel");
            match runner.join() {
                Ok(o) => (o, started.elapsed()),
                Err(_) => panic!("runner panicked"),
            }
        })
    }

    #[test]
    fn cancel_from_another_thread_stops_a_hanging_run() {
        let limits = Limits {
            timeout: Duration::from_secs(30),
            grace: Duration::from_millis(200),
            ..Limits::default()
        };
        let (o, elapsed) = cancel_while_running("hang", limits);
        assert_eq!(
            o.kind,
            OutcomeKind::Cancelled("if_running: cancel".to_string())
        );
        assert_eq!(o.signal, Some(libc::SIGTERM));
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
        assert_group_gone(&o);
    }

    #[test]
    fn cancel_escalates_to_kill_for_a_term_ignoring_plugin() {
        let limits = Limits {
            timeout: Duration::from_secs(30),
            grace: Duration::from_millis(200),
            ..Limits::default()
        };
        let (o, elapsed) = cancel_while_running("ignores_term", limits);
        assert_eq!(
            o.kind,
            OutcomeKind::Cancelled("if_running: cancel".to_string())
        );
        assert_eq!(o.signal, Some(libc::SIGKILL));
        assert!(
            elapsed >= limits.grace && elapsed < limits.grace + Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert_group_gone(&o);
    }

    fn exit(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
    }

    fn check_classify(status: Option<ExitStatus>, stdout: &str, stderr: &str, expected: &str) {
        let kind = classify(status, stdout.as_bytes(), stderr, 32);
        let o = Outcome {
            kind,
            exit_code: None,
            signal: None,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.to_string(),
            stderr_truncated: false,
            pid: Some(1),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            duration: Duration::from_secs(1),
        };
        assert_eq!(
            o.error_message().unwrap_or_else(|| "<success>".into()),
            expected,
            "stdout {stdout:?}"
        );
    }

    #[test]
    fn classification_rules() {
        let ok = r#"{"status":"ok","result":"r"}"#;
        let err = r#"{"status":"error","error":"bad\nthing","retry":false}"#;
        check_classify(exit(0), ok, "", "<success>");
        check_classify(exit(0), err, "", "bad thing");
        check_classify(exit(3), err, "", "bad thing");
        check_classify(exit(2), ok, "", "protocol error: plugin exited with code 2");
        check_classify(
            exit(1),
            "",
            "",
            "protocol error: plugin exited with code 1: plugin wrote nothing to stdout",
        );
        check_classify(
            exit(1),
            "",
            "Traceback\n  KeyError: 'x'\n\n",
            "protocol error: plugin exited with code 1: plugin wrote nothing to stdout (last stderr line: KeyError: 'x')",
        );
        check_classify(
            Some(ExitStatus::from_raw(libc::SIGSEGV)),
            ok,
            "",
            "protocol error: plugin was killed by signal 11",
        );
        check_classify(
            exit(78),
            err,
            "",
            "plugin exited 78 (configuration error): bad thing",
        );
        check_classify(
            exit(78),
            ok,
            "",
            "plugin exited 78 (configuration error): no message on stderr",
        );
        check_classify(
            exit(78),
            err,
            "stderr wins\n",
            "plugin exited 78 (configuration error): stderr wins",
        );
        check_classify(
            None,
            ok,
            "",
            "protocol error: plugin exit status could not be collected",
        );
    }

    #[test]
    fn config_error_keeps_a_valid_response() {
        let kind = classify(
            exit(78),
            br#"{"status":"error","error":"no key","retry":true}"#,
            "",
            32,
        );
        assert!(
            matches!(kind, OutcomeKind::ConfigError { response: Some(ref r), .. } if r.error.as_deref() == Some("no key"))
        );
    }

    #[test]
    fn message_formats() {
        let cases = [
            (Duration::from_secs(60), "60s"),
            (Duration::from_millis(60_040), "60s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_millis(305), "305ms"),
        ];
        for (d, expected) in cases {
            assert_eq!(human_duration(d), expected);
        }
        let cases = [
            (10 * 1024 * 1024, "10 MiB"),
            (64 * 1024, "64 KiB"),
            (1000, "1000 bytes"),
            (1536, "1536 bytes"),
        ];
        for (n, expected) in cases {
            assert_eq!(human_bytes(n), expected);
        }
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn timed_out_message_uses_the_run_duration() {
        let o = Outcome {
            kind: OutcomeKind::TimedOut,
            exit_code: None,
            signal: Some(libc::SIGTERM),
            stdout: Vec::new(),
            stderr: String::new(),
            stderr_truncated: false,
            pid: Some(1),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            duration: Duration::from_millis(60_012),
        };
        assert_eq!(o.error_message().as_deref(), Some("timed out after 60s"));
    }

    fn run_echo(command: &str, config: Value, state: Value, event: Option<Value>) -> Outcome {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/echo/run.sh");
        let context = json!({});
        let request = protocol::Request {
            protocol: protocol::PROTOCOL_VERSION,
            job_id: "0b7e4c2e-echo",
            command,
            config: &config,
            state: &state,
            context: &context,
            event: event.as_ref(),
            deadline_at: "2026-01-01T00:00:00Z".to_string(),
        };
        let bytes = match protocol::encode(&request) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        };
        let inv = Invocation {
            entrypoint: &path,
            env_passthrough: &[],
            request: &bytes,
            limits: Limits::default(),
            max_subs: 32,
        };
        run(&inv, &CancelToken::new())
    }

    #[test]
    fn echo_poll_snapshots_the_configured_message() {
        let msg = r#"say "hi" \ 100% {ok}, "state":"#;
        let o = run_echo(
            "poll",
            json!({"message": msg, "other": 1}),
            json!({"message": "old"}),
            None,
        );
        let r = response(&o);
        assert_eq!(r.result, Some(json!(format!("echo: {msg}"))));
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].event_type, "echo.poll");
        assert_eq!(r.events[0].payload, json!({"message": msg}));
        assert_eq!(
            r.state_updates.clone().map(Value::Object),
            Some(json!({"message": msg}))
        );
    }

    #[test]
    fn echo_defaults_and_other_commands() {
        // The message comes from config only, never from state.
        let o = run_echo("poll", json!({}), json!({"message": "from state"}), None);
        assert_eq!(
            response(&o).state_updates.clone().map(Value::Object),
            Some(json!({"message": "hello from ductile"}))
        );
        let o = run_echo("poll", Value::Null, json!({}), None);
        assert_eq!(response(&o).result, Some(json!("echo: hello from ductile")));

        let event = json!({"type": "upstream.thing", "payload": {"message": "from event"}});
        let o = run_echo("handle", json!({"message": "m"}), json!({}), Some(event));
        let r = response(&o);
        assert_eq!(r.result, Some(json!("echo: handled")));
        assert_eq!(r.events[0].event_type, "echo.handled");
        assert_eq!(r.events[0].payload, json!({"message": "m"}));
        assert_eq!(r.state_updates, None);

        let o = run_echo("health", json!({}), json!({}), None);
        let r = response(&o);
        assert_eq!(r.result, Some(json!("healthy")));
        assert!(r.events.is_empty() && r.state_updates.is_none());

        let o = run_echo("init", json!({}), json!({}), None);
        assert_eq!(
            o.error_message().as_deref(),
            Some(
                "plugin exited 78 (configuration error): echo: unknown command `init` (this plugin knows poll, handle and health)"
            )
        );
    }

    #[test]
    fn waitid_fallback_behaves_the_same() {
        let watch = |name: &str, limits: Limits| {
            let path = fixture(name);
            let inv = Invocation {
                entrypoint: &path,
                env_passthrough: &[],
                request: REQUEST,
                limits,
                max_subs: 32,
            };
            run_watching(&inv, &CancelToken::new(), |_| None)
        };
        let o = watch("ok_basic", Limits::default());
        assert_eq!(response(&o).result, Some(json!("ok_basic done")));
        assert!(is_reaped(o.pid.unwrap_or(0)));

        let o = watch("exit_78", Limits::default());
        assert!(
            matches!(o.kind, OutcomeKind::ConfigError { .. }),
            "{:?}",
            o.kind
        );

        let started = Instant::now();
        let o = watch("grandchild_holds_stdout", Limits::default());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(o.kind, OutcomeKind::Succeeded(_)), "{:?}", o.kind);
        assert_group_gone(&o);

        let limits = short_limits();
        let started = Instant::now();
        let o = watch("ignores_term", limits);
        let elapsed = started.elapsed();
        assert_eq!(o.kind, OutcomeKind::TimedOut);
        assert!(
            elapsed < limits.timeout + limits.grace + Duration::from_secs(1),
            "{elapsed:?}"
        );
        assert_group_gone(&o);
    }

    #[test]
    #[allow(unsafe_code)]
    fn early_stdin_close_survives_default_sigpipe() {
        // SAFETY: installs the default SIGPIPE disposition process-wide for the
        // duration of this run (every plugin write in this binary is guarded), then
        // puts back the ignore disposition Rust binaries start with.
        let previous = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let big = vec![b'x'; 4 * 1024 * 1024];
        let o = run_with("early_stdin_close", Limits::default(), &big, &[]);
        // SAFETY: restores the disposition saved above.
        unsafe {
            libc::signal(libc::SIGPIPE, previous);
        }
        assert_eq!(
            response(&o).result,
            Some(json!("answered without reading stdin"))
        );
        // The guard left SIGPIPE unblocked and nothing pending on this thread.
        // SAFETY: reads the current mask and pending set into live locals.
        let (blocked, pending) = unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            let mut pend: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            libc::sigpending(&mut pend);
            (
                libc::sigismember(&mask, libc::SIGPIPE),
                libc::sigismember(&pend, libc::SIGPIPE),
            )
        };
        assert_eq!((blocked, pending), (0, 0));
    }
}
