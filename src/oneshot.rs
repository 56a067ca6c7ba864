//! `ductile run`: one job through the queue, now, from a process that may or
//! may not be the daemon. The protocol between such processes:
//!
//! - **No daemon, lock free**: take the instance lock, recover what a crashed
//!   holder left `running`, enqueue and claim the job in one transaction, run it
//!   through the same [`dispatch::execute`] as the daemon, release the lock.
//! - **A ready daemon** (see [`lock`]): enqueue, bind a datagram socket named
//!   after the job, wake the daemon (SIGUSR1 through a pidfd), then sleep on
//!   that socket, the daemon's pidfd and the interrupt pipe. The daemon sends a
//!   datagram when a one-shot's job ends ([`notify_done`]); nothing polls.
//! - **Another holder** (a one-shot, a starting daemon, maintenance): wait for
//!   the lock to change and look again. A daemon waiting to start goes first:
//!   one-shots then wait for it to be ready and hand over.
//! - **Interrupted** (Ctrl-C, SIGTERM): a job of our own is killed and recorded
//!   dead; a job handed over is cancelled if still queued, else the daemon is
//!   asked to cancel it and we wait for that (a second interrupt stops waiting).
//! - **The daemon dies** mid-job: whoever takes the lock next recovers the job;
//!   a one-shot's single attempt then ends `dead`, and the report says so.
//!
//! SIGUSR1 and SIGHUP never kill a one-shot: they are caught and ignored.

use std::io;
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::Value;

use crate::clock::Clock;
use crate::dispatch::{self, Executed};
use crate::lock::{self, DaemonHandle, InstanceLock, LockError, Role};
use crate::plugin::spawn::CancelToken;
use crate::runtime::Runtime;
use crate::store::queue::{self, ClaimedJob, Enqueued, JobStatus, NewJob, SubmittedBy};
use crate::store::{self, StoreError};
use crate::sys::{Interest, PollSet};

/// The longest wait between looks at a lock held by another one-shot, in case
/// a change slipped past the watch (a lock file replaced under us).
const LOCK_RECHECK: Duration = Duration::from_secs(1);
/// How long an interrupted one-shot waits for the daemon to cancel its job.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// How a one-shot ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// The job.
    pub id: String,
    /// Plugin.
    pub plugin: String,
    /// Command.
    pub command: String,
    /// Its final status.
    pub status: JobStatus,
    /// Error text, for failures.
    pub last_error: Option<String>,
    /// The decoded response, when the plugin gave one.
    pub response: Option<Value>,
    /// Captured stderr.
    pub stderr: String,
    /// Exit code of the plugin, when it exited normally.
    pub exit_code: Option<i32>,
    /// Who ran it: "this process" or "the daemon (pid N)".
    pub ran_by: String,
    /// Something the reader should know about how it ended (interruption,
    /// a daemon that died).
    pub note: Option<String>,
}

/// Why a one-shot could not report an outcome.
#[derive(Debug)]
pub enum OneShotError {
    /// The ledger failed.
    Store(StoreError),
    /// The lock could not be used.
    Lock(LockError),
    /// Dedupe dropped the job: an identical one exists.
    Duplicate(String),
    /// Interrupted while the daemon still had the job; the text says what now.
    Interrupted(String),
}

impl std::fmt::Display for OneShotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OneShotError::Store(e) => e.fmt(f),
            OneShotError::Lock(e) => e.fmt(f),
            OneShotError::Duplicate(id) => write!(f, "dropped as a duplicate of job {id}"),
            OneShotError::Interrupted(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for OneShotError {}

impl From<StoreError> for OneShotError {
    fn from(e: StoreError) -> OneShotError {
        OneShotError::Store(e)
    }
}

impl From<LockError> for OneShotError {
    fn from(e: LockError) -> OneShotError {
        OneShotError::Lock(e)
    }
}

/// Runs `job` to its end, here or in the daemon; `notice` receives progress
/// lines meant for the person waiting (waits, hand-overs, interruptions).
pub fn run(
    rt: &Arc<Runtime>,
    job: &NewJob,
    clock: &dyn Clock,
    notice: &dyn Fn(&str),
) -> Result<Report, OneShotError> {
    ignore_daemon_signals();
    let db = rt.config.state.path.clone();
    let mut conn: Option<Connection> = None;
    let mut job_id: Option<String> = None;
    let mut waited_for: Option<u32> = None;
    loop {
        if lock::daemon_starting(&db).is_none() {
            if let Some(held) = InstanceLock::try_acquire(&db, Role::OneShot)? {
                let conn = connection(&mut conn, rt)?;
                let report = run_here(conn, rt, job, job_id.as_deref(), clock);
                drop(held);
                return report;
            }
        }
        if let Some(daemon) = lock::ready_daemon(&db) {
            let conn = connection(&mut conn, rt)?;
            let id = match job_id.take() {
                Some(id) => id,
                None => enqueue(conn, rt, job, clock)?,
            };
            match hand_over(conn, &daemon, &id, clock, notice)? {
                Some(report) => return Ok(report),
                // The daemon stopped first: look at the lock again.
                None => job_id = Some(id),
            }
            continue;
        }
        let holder = lock::holder(&db);
        let pid = holder.map(|h| h.pid).or_else(|| lock::daemon_starting(&db));
        if pid.is_some() && pid != waited_for {
            let who = match (holder, lock::daemon_starting(&db)) {
                (_, Some(starting)) => {
                    format!("a ductile daemon that is starting (pid {starting})")
                }
                (Some(h), None) => h.describe(),
                (None, None) => "another ductile process".to_string(),
            };
            notice(&format!("waiting for {who} to finish with the ledger"));
            waited_for = pid;
        }
        lock::wait_for_change(&db, pid, LOCK_RECHECK);
    }
}

fn connection<'c>(
    slot: &'c mut Option<Connection>,
    rt: &Runtime,
) -> Result<&'c mut Connection, StoreError> {
    if slot.is_none() {
        let mut conn = store::open(&rt.config.state.path, rt.config.state.synchronous)?;
        store::tune_for_one_shot(&mut conn)?;
        *slot = Some(conn);
    }
    // Just filled when it was empty.
    slot.as_mut().ok_or_else(|| StoreError::NotFound {
        what: "connection",
        id: rt.config.state.path.display().to_string(),
    })
}

/// SIGUSR1 (a daemon's wake-up) and SIGHUP (reload) are for daemons: caught so
/// their default action never kills a one-shot. Caught, not ignored, so the
/// plugin we exec starts with default dispositions.
fn ignore_daemon_signals() {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGUSR1, libc::SIGHUP] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
}

fn enqueue(
    conn: &mut Connection,
    rt: &Runtime,
    job: &NewJob,
    clock: &dyn Clock,
) -> Result<String, OneShotError> {
    match queue::enqueue(conn, job, rt.config.service.dedupe_ttl, clock.now())? {
        Enqueued::Created(id) => Ok(id),
        Enqueued::Deduplicated(existing) => Err(OneShotError::Duplicate(existing)),
    }
}

/// Runs the job in this process, which holds the lock: a new job is enqueued
/// and claimed at once; a job handed to a daemon that then stopped is claimed if
/// still queued, or reported as the recovery left it.
fn run_here(
    conn: &mut Connection,
    rt: &Arc<Runtime>,
    job: &NewJob,
    handed: Option<&str>,
    clock: &dyn Clock,
) -> Result<Report, OneShotError> {
    let recovered = dispatch::recover(conn, clock)?;
    let claimed = match handed {
        None => queue::enqueue_and_claim(conn, job, rt.config.service.dedupe_ttl, clock.now())?
            .map_err(OneShotError::Duplicate)?,
        Some(id) => match queue::claim_job(conn, id, clock.now())? {
            Some(c) => c,
            None => {
                let mut report = report_from_ledger(conn, id, "the daemon")?;
                if recovered.iter().any(|r| r.id == id) {
                    report.note = Some(format!(
                        "the daemon stopped while running job {id}; its only attempt was interrupted, so the job is recorded {} (run it again with `ductile run {} {}`)",
                        report.status, report.plugin, report.command
                    ));
                }
                return Ok(report);
            }
        },
    };
    run_claimed(conn, rt, &claimed, clock)
}

/// Executes our own claimed job. Ctrl-C or SIGTERM kills the plugin's group
/// and records the job dead instead of leaving a `running` row behind.
fn run_claimed(
    conn: &mut Connection,
    rt: &Arc<Runtime>,
    claimed: &ClaimedJob,
    clock: &dyn Clock,
) -> Result<Report, OneShotError> {
    // Without handlers (they could not be installed) Ctrl-C still kills us;
    // the job is then recovered by the next holder of the lock.
    let token = CancelToken::on_interrupt().unwrap_or_default();
    let executed = dispatch::execute(conn, rt, claimed, &token, clock);
    drop(token);
    match executed? {
        Executed::Recorded {
            status,
            last_error,
            response,
            stderr,
            exit_code,
            ..
        } => Ok(Report {
            id: claimed.id.clone(),
            plugin: claimed.plugin.clone(),
            command: claimed.command.clone(),
            status,
            last_error,
            response: response.and_then(|text| serde_json::from_str(&text).ok()),
            stderr,
            exit_code,
            ran_by: "this process".to_string(),
            note: None,
        }),
        // Only a daemon's shutdown abandons a job; nothing here asks for it.
        Executed::Abandoned => Err(OneShotError::Interrupted(format!(
            "job {} was abandoned while running; it is recovered by the next process that takes the lock",
            claimed.id
        ))),
    }
}

/// Where a one-shot waits to hear that its job ended: a datagram socket in the
/// abstract namespace named after the job (no file to clean up; job ids are
/// UUIDs). The datagram carries nothing: the ledger is the truth, the datagram
/// only says "look".
fn done_address(job_id: &str) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("ductile/job/{job_id}").as_bytes())
}

/// Daemon side: tells the one-shot waiting for job `job_id`, if any, that the
/// job has ended. Best effort: nobody listening is the common case.
pub fn notify_done(job_id: &str) {
    thread_local! {
        // One unbound socket per worker thread: a send is then one syscall.
        static SOCKET: Option<UnixDatagram> = UnixDatagram::unbound().ok();
    }
    if let Ok(addr) = done_address(job_id) {
        SOCKET.with(|s| {
            if let Some(s) = s {
                let _ = s.send_to_addr(&[1], &addr);
            }
        });
    }
}

/// Interrupts delivered while waiting on the daemon, as a pollable pipe.
struct Interrupts {
    read: UnixStream,
    ids: Vec<signal_hook::SigId>,
}

impl Interrupts {
    fn install() -> io::Result<Interrupts> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut ids = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM] {
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        Ok(Interrupts { read, ids })
    }

    /// Consumes pending interrupts; their count.
    fn take(&self) -> usize {
        let mut buf = [0u8; 16];
        let mut n = 0;
        while let Ok(k) = io::Read::read(&mut &self.read, &mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Hands job `id` to `daemon` and waits for it to end. `None` when the daemon
/// exited with the job not ended (the caller looks at the lock again).
fn hand_over(
    conn: &mut Connection,
    daemon: &DaemonHandle,
    id: &str,
    clock: &dyn Clock,
    notice: &dyn Fn(&str),
) -> Result<Option<Report>, OneShotError> {
    let ran_by = format!("the daemon (pid {})", daemon.pid());
    let socket = done_address(id)
        .and_then(|a| UnixDatagram::bind_addr(&a))
        .ok();
    if let Some(s) = &socket {
        let _ = s.set_nonblocking(true);
    }
    let interrupts = Interrupts::install().ok();
    log::info!(job_id = id; "a daemon (pid {}) holds the lock; handing the job over", daemon.pid());
    let _ = daemon.signal(libc::SIGUSR1);
    let mut cancel_asked = false;
    let mut cancelled_here = false;
    let mut giving_up: Option<std::time::Instant> = None;
    loop {
        let row = queue::find(conn, id)?.ok_or_else(|| StoreError::NotFound {
            what: "job",
            id: id.to_string(),
        })?;
        let status = row.status;
        if !matches!(status, JobStatus::Queued | JobStatus::Running) {
            let mut report = report_from_ledger(conn, id, &ran_by)?;
            if cancelled_here {
                report.note = Some(format!(
                    "interrupted: job {id} was cancelled before the daemon started it"
                ));
            } else if cancel_asked {
                report.note = Some(format!("interrupted: the daemon cancelled job {id}"));
            }
            return Ok(Some(report));
        }
        if giving_up.is_some_and(|t| std::time::Instant::now() >= t) {
            return Err(cancel_pending(id, daemon));
        }
        let mut set = PollSet::default();
        let sock_at = socket.as_ref().map(|s| set.push(s.as_fd(), Interest::Read));
        let exit_at = set.push(daemon.exit_fd(), Interest::Read);
        let int_at = interrupts
            .as_ref()
            .map(|i| set.push(i.read.as_fd(), Interest::Read));
        // Without the socket (bind failed) fall back to looking every second.
        let limit = match (socket.is_some(), giving_up) {
            (_, Some(t)) => Some(t.saturating_duration_since(std::time::Instant::now())),
            (true, None) => None,
            (false, None) => Some(LOCK_RECHECK),
        };
        set.wait(limit);
        if let (Some(s), Some(i)) = (&socket, sock_at) {
            if set.ready(i) {
                let mut buf = [0u8; 8];
                while s.recv(&mut buf).is_ok() {}
            }
        }
        if let (Some(ints), Some(i)) = (&interrupts, int_at) {
            if set.ready(i) && ints.take() > 0 {
                if cancel_asked {
                    return Err(cancel_pending(id, daemon));
                }
                cancel_asked = true;
                let reason = "interrupted by the `ductile run` that submitted it";
                if queue::cancel_queued(conn, id, reason, clock.now())? {
                    cancelled_here = true;
                    continue;
                }
                queue::request_cancel(conn, id, reason, SubmittedBy::Cli, clock.now())?;
                let _ = daemon.signal(libc::SIGUSR1);
                notice(&format!(
                    "interrupted: asking the daemon (pid {}) to cancel job {id}; interrupt again to stop waiting",
                    daemon.pid()
                ));
                giving_up = Some(std::time::Instant::now() + CANCEL_WAIT);
            }
        }
        if set.ready(exit_at) {
            let row = queue::find(conn, id)?;
            if row.is_some_and(|r| matches!(r.status, JobStatus::Queued | JobStatus::Running)) {
                return Ok(None);
            }
        }
    }
}

fn cancel_pending(id: &str, daemon: &DaemonHandle) -> OneShotError {
    OneShotError::Interrupted(format!(
        "stopped waiting: the daemon (pid {}) has been asked to cancel job {id} and records it as cancelled when it does (`ductile system status` shows the queue)",
        daemon.pid()
    ))
}

/// A report built from the ledger, for a job another process ran.
fn report_from_ledger(conn: &Connection, id: &str, ran_by: &str) -> Result<Report, OneShotError> {
    let row = queue::find(conn, id)?.ok_or_else(|| StoreError::NotFound {
        what: "job",
        id: id.to_string(),
    })?;
    let log = queue::latest_log(conn, id)?.unwrap_or_default();
    Ok(Report {
        id: id.to_string(),
        plugin: row.plugin,
        command: row.command,
        status: row.status,
        last_error: row.last_error,
        response: log.result.and_then(|r| serde_json::from_str(&r).ok()),
        stderr: log.stderr.unwrap_or_default(),
        exit_code: queue::last_exit_code(conn, id)?,
        ran_by: ran_by.to_string(),
        note: None,
    })
}
