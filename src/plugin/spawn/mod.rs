//! The process runner: one plugin invocation as one fresh process group.
//!
//! Owns: spawning the entrypoint directly (no shell) as the leader of a new process
//! group with a cleared environment plus an allowlist; feeding the request to stdin
//! without ever blocking on it; draining stdout and stderr concurrently into capped
//! buffers; the deadline (TERM to the group, grace, KILL); cancellation; a plugin
//! that answered but does not exit; containing the whole process tree of a job
//! ([`group`]); and classifying the result ([`classify`]) with a fixed
//! precedence: cancelled > timed out > output too large > exit 78 > protocol
//! error > the plugin's own status.
//! Must not: touch the database, decide retries or routing, or log per job; the
//! caller records the [`Outcome`].
//!
//! Design: a single thread drives a `poll(2)` loop over the stdin write end, the
//! stdout and stderr read ends and a pidfd that becomes readable when the leader
//! exits. Exit is detected with `waitid(WNOWAIT)` semantics, so the leader stays
//! an unreaped zombie until the group has been swept; while it is unreaped its
//! pid, and therefore the group id, cannot be recycled, which is what makes
//! signalling `-pgid` safe (from this thread and from [`CancelToken::cancel`]).
//! SIGPIPE is blocked on the running thread while it writes to a plugin.

mod classify;
pub mod group;
mod pipes;

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::plugin::protocol::{Response, ResponseLimits};
use crate::sys::{self, Interest, PollSet, SigpipeBlock};
use classify::{human_bytes, human_duration, one_line};
use group::Group;
use pipes::{Capture, Io};

/// Exit code a plugin uses for a permanent configuration error (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// Environment variables every plugin receives when they are set (plus any `LC_*`).
pub const ENV_ALLOWLIST: [&str; 5] = ["PATH", "HOME", "TZ", "LANG", "TMPDIR"];

/// Set in every plugin's environment to the id of its job. Processes the job
/// starts inherit it, which is how the core finds a job's descendants that
/// left its process group, or outlived a crashed daemon.
pub const JOB_ID_ENV: &str = "DUCTILE_JOB_ID";

/// Longest time spent collecting output still buffered after the leader exited.
/// A grandchild that escaped the group may hold stdout open forever.
const DRAIN_BOUND: Duration = Duration::from_millis(100);
/// How long a plugin that has written a complete response and closed stdout may
/// take to exit before its group is killed and the response taken as the answer.
const LINGER_GRACE: Duration = Duration::from_secs(1);
/// Longest wait for a SIGKILLed leader to become reapable before handing it to a
/// background reaper (a process stuck in uninterruptible sleep must not hang a worker).
const KILL_BOUND: Duration = Duration::from_secs(2);
/// Upper bound on one poll(2) sleep, so a cancellation that could not signal the
/// group (it raced the spawn) is still noticed promptly.
const MAX_POLL: Duration = Duration::from_millis(50);
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
    /// The job this run belongs to (exported as [`JOB_ID_ENV`]).
    pub job_id: &'a str,
    /// Absolute path of the executable, run directly (no shell).
    pub entrypoint: &'a Path,
    /// Arguments after the entrypoint (empty for a local plugin; the engine's
    /// `run` argv for a container plugin).
    pub args: &'a [OsString],
    /// Extra environment variable names passed through when set.
    pub env_passthrough: &'a [String],
    /// The serialized request, written to stdin.
    pub request: &'a [u8],
    /// Resource limits.
    pub limits: Limits,
    /// What a response may hold (sub-spans, events, values).
    pub response: ResponseLimits,
}

/// Cancels a run from another thread, or (see
/// [`on_interrupt`](Self::on_interrupt)) from a signal. Shared by reference;
/// one token per job.
#[derive(Debug, Default)]
pub struct CancelToken {
    cancelled: AtomicBool,
    inner: Mutex<CancelInner>,
    /// The number of the interrupting signal, set by its handler (0: none).
    signal: Arc<AtomicUsize>,
    /// Handlers to remove when the token goes.
    handlers: Vec<signal_hook::SigId>,
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

    /// A token that SIGINT and SIGTERM cancel ("interrupted by SIGINT"), for a
    /// process that runs one plugin in the foreground. The handler only sets a
    /// flag (no thread): the runner sees it within one turn of its poll loop and
    /// terminates the group itself.
    pub fn on_interrupt() -> std::io::Result<CancelToken> {
        let mut token = CancelToken::new();
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let id = signal_hook::flag::register_usize(sig, token.signal.clone(), sig as usize)?;
            token.handlers.push(id);
        }
        Ok(token)
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
            sys::signal_group(pgid, libc::SIGTERM);
        }
    }

    /// Whether [`cancel`](Self::cancel) was called or an interrupt arrived.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.signal.load(Ordering::SeqCst) != 0
    }

    /// The reason given to the first [`cancel`](Self::cancel), or the interrupt.
    pub fn reason(&self) -> Option<String> {
        if let Some(r) = self.lock().reason.clone() {
            return Some(r);
        }
        match self.signal.load(Ordering::SeqCst) as i32 {
            0 => None,
            libc::SIGINT => Some("interrupted by SIGINT".to_string()),
            _ => Some("interrupted by SIGTERM".to_string()),
        }
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

impl Drop for CancelToken {
    fn drop(&mut self) {
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
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
    /// Things worth knowing about a run whose answer still counts (it exited
    /// non-zero after answering, or did not exit after answering).
    pub warnings: Vec<String>,
    /// Bytes of the request the plugin never took from stdin (it exited or
    /// closed stdin first); what `plugin check` reads to tell a plugin that does
    /// not read its request fully.
    pub request_unread: usize,
}

/// The classification of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// A valid `ok` response (whatever the exit code, except 78).
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
    /// stdout was not a valid response.
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
}

/// Why the runner is ending the group before it exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Cancelled,
    TimedOut,
    Overflow,
    /// It answered and closed stdout but did not exit within [`LINGER_GRACE`].
    Lingered,
}

/// Runs one plugin process to completion and classifies the result. Never panics
/// on plugin behaviour, always reaps (or hands off) the leader, and leaves no
/// process of the job running: its group is killed once the leader exits, and
/// descendants that left the group are swept ([`group`]).
pub fn run(inv: &Invocation<'_>, cancel: &CancelToken) -> Outcome {
    run_watching(inv, cancel, |pid| sys::pidfd_open(pid).ok())
}

/// [`run`] with the way the leader's exit is watched made explicit: `open_pidfd`
/// returns a descriptor that polls readable on exit, or `None` to fall back to
/// `waitid(WNOWAIT)` on every turn (what happens on kernels without pidfds).
fn run_watching(
    inv: &Invocation<'_>,
    cancel: &CancelToken,
    open_pidfd: fn(u32) -> Option<OwnedFd>,
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
        warnings: Vec::new(),
        request_unread: inv.request.len(),
    };
    if let Some(reason) = cancel.reason() {
        return not_started(OutcomeKind::Cancelled(reason));
    }
    group::reap_orphans_here();

    // The request goes into stdin before the process exists: one that fits the
    // pipe (most do, and the pipe is widened up to 1 MiB for it) is complete on
    // the plugin's stdin whatever happens to us next, so a daemon dying
    // mid-spawn can never leave a plugin reading an empty or truncated request.
    let (stdin_read, stdin_write) = match std::io::pipe() {
        Ok(ends) => ends,
        Err(e) => {
            return not_started(OutcomeKind::SpawnFailed(format!(
                "cannot create a pipe for {}: {e}",
                inv.entrypoint.display()
            )));
        }
    };
    let stdin = pipes::nonblocking(OwnedFd::from(stdin_write));
    sys::widen_pipe(stdin.as_fd(), inv.request.len());
    let mut io = Io {
        stdin: Some(stdin),
        request: inv.request,
        written: 0,
        stdout: Capture::stopping(None, inv.limits.stdout_cap),
        stderr: Capture::draining(None, inv.limits.stderr_cap),
        scratch: vec![0; pipes::CHUNK],
        answer: None,
        response: inv.response,
    };
    io.write_stdin();

    let mut cmd = Command::new(inv.entrypoint);
    cmd.args(inv.args)
        .env_clear()
        .envs(plugin_env(inv.env_passthrough))
        .env(JOB_ID_ENV, inv.job_id)
        .stdin(Stdio::from(stdin_read))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // No pre-exec hook: std then starts the plugin with posix_spawn (vfork-like),
    // which costs a fraction of a fork of the daemon.
    let spawned = group::spawn_registered(&mut cmd, inv.job_id);
    // Our copy of the read end goes with the command, so the writer sees EPIPE
    // when the plugin closes stdin.
    drop(cmd);
    let mut child = match spawned {
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
    io.stdout.file = child
        .stdout
        .take()
        .map(|s| pipes::nonblocking(OwnedFd::from(s)));
    io.stderr.file = child
        .stderr
        .take()
        .map(|s| pipes::nonblocking(OwnedFd::from(s)));
    let _sigpipe = SigpipeBlock::new();
    let mut group = Group::new(child, inv.job_id, cancel);
    // A cancel that raced the spawn found no group to signal; the loop below sees
    // the flag on its first turn and terminates the group itself.
    cancel.attach(group.pgid());

    let pidfd = open_pidfd(pid);
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
    drop(group);
    let finished_at = Utc::now();
    let duration = start.elapsed();

    let stderr_text = String::from_utf8_lossy(&io.stderr.buf).into_owned();
    let mut warnings = Vec::new();
    let kind = if let Some(reason) = cancelled {
        OutcomeKind::Cancelled(reason)
    } else if ending == Some(Ending::TimedOut) {
        OutcomeKind::TimedOut
    } else if io.stdout.overflowed || ending == Some(Ending::Overflow) {
        OutcomeKind::OutputTooLarge
    } else if ending == Some(Ending::Lingered) {
        warnings.push(format!(
            "the plugin answered and closed stdout but was still running {} later; its processes were killed and the answer kept",
            human_duration(LINGER_GRACE)
        ));
        classify::answered(io.take_answer())
    } else {
        classify::classify(
            status,
            io.take_answer(),
            &io.stdout.buf,
            &stderr_text,
            &inv.response,
            &mut warnings,
        )
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
        warnings,
        request_unread: inv.request.len().saturating_sub(io.written),
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
    let mut linger_until: Option<Instant> = None;
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
        // stdout closed with a complete, valid response: that is the answer. A
        // plugin that then does not exit (a forgotten background process, a
        // slow cleanup) must not hold its worker until the deadline.
        if ending.is_none() && linger_until.is_none() && io.answered() {
            linger_until = Some(now + LINGER_GRACE);
        }
        if ending.is_none() && linger_until.is_some_and(|t| now >= t) {
            ending = Some(Ending::Lingered);
            kill_at = Some(now);
        }
        if let Some(at) = kill_at {
            if now >= at && give_up_at.is_none() {
                group.signal(libc::SIGKILL);
                give_up_at = Some(now + KILL_BOUND);
            }
        }
        if pidfd.is_none() && sys::has_exited(group.pgid()) {
            return (ending, true);
        }
        if give_up_at.is_some_and(|at| now >= at) {
            return (ending, false);
        }

        let mut wake = now + MAX_POLL;
        for t in [
            deadline.filter(|_| ending.is_none()),
            linger_until.filter(|_| ending.is_none()),
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
            .map(|f| fds.push(f.as_fd(), Interest::Write));
        let stdout_at = io
            .stdout
            .file
            .as_ref()
            .map(|f| fds.push(f.as_fd(), Interest::Read));
        let stderr_at = io
            .stderr
            .file
            .as_ref()
            .map(|f| fds.push(f.as_fd(), Interest::Read));
        let pidfd_at = pidfd.map(|f| fds.push(f.as_fd(), Interest::Read));
        fds.wait(Some(wake.saturating_duration_since(now)));

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

#[cfg(test)]
mod tests;
