//! A job's processes, contained. Three layers, because no one of them catches
//! everything:
//!
//! 1. **The process group.** The leader is spawned as the leader of its own
//!    group; once it exits, or when the run ends for any other reason, the whole
//!    group is killed. This catches background children.
//! 2. **The subreaper.** A process that runs plugins is the reaper of its
//!    orphans (`PR_SET_CHILD_SUBREAPER`), so a descendant that left the group
//!    (`setsid`, `setpgid`) and lost its parent becomes our child instead of
//!    init's. After each run the orphans are swept: every process starts with
//!    [`JOB_ID_ENV`](super::JOB_ID_ENV) in its environment, and an orphan whose
//!    job is no longer running here is killed (with its own group) and reaped;
//!    an orphan that cleared its environment is killed once no job runs here.
//! 3. **After a crash.** The processes of a dead daemon's jobs carry their
//!    job ids: the next holder of the lock finds them in `/proc`
//!    ([`kill_leftovers`]) and kills them before the job is requeued, so an old
//!    copy never runs beside its retry. (A parent-death signal would kill the
//!    leader sooner, but asking for one needs a pre-exec hook, which turns the
//!    spawn from `posix_spawn` into a fork of the daemon: measured at +0.6 ms
//!    per job, half the budget of a compiled plugin's whole run.)
//!
//! What remains possible: between a daemon's crash and the next start, its
//! jobs' processes run on, their output unread; and a descendant that leaves
//! the group, clears its environment and outlives a crashed daemon survives
//! until something else ends it (under systemd, the unit's cgroup does:
//! `KillMode=control-group`, the default).

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use super::{CancelToken, JOB_ID_ENV};
use crate::sys::{self, Interest, PollSet};

/// How long a sweep waits for the processes it killed to exit.
const SWEEP_BOUND: Duration = Duration::from_secs(2);

/// Leaders of the runs in progress in this process, with their job ids.
static RUNNING: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<(i32, String)>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process the reaper of its orphaned descendants, once.
pub(super) fn reap_orphans_here() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = sys::become_subreaper() {
            log::warn!(target: "plugin", "cannot become the reaper of plugin descendants ({e}); a plugin child that leaves its process group may outlive its job");
        }
    });
}

/// Spawns `cmd` and records its leader as running `job_id`.
pub(super) fn spawn_registered(cmd: &mut Command, job_id: &str) -> std::io::Result<Child> {
    let child = cmd.spawn()?;
    // Pids fit in i32 on every unix; process_group(0) makes the pid the pgid.
    running().push((child.id() as i32, job_id.to_string()));
    Ok(child)
}

/// Keeps the processes of `job_id` that an engine CLI leaves running on
/// purpose (the monitor of a detached container) from being swept as strays
/// while the guard lives; the job removes its container itself before
/// dropping it, and the drop sweeps whatever is left. Crash recovery still
/// finds them by their job id.
pub fn hold(job_id: &str) -> Held {
    running().push((HELD, job_id.to_string()));
    Held {
        job_id: job_id.to_string(),
    }
}

/// The leader pid of a held job's entry: no orphan has pid 0.
const HELD: i32 = 0;

/// See [`hold`].
#[derive(Debug)]
pub struct Held {
    job_id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        {
            let mut live = running();
            if let Some(i) = live
                .iter()
                .position(|(p, j)| *p == HELD && *j == self.job_id)
            {
                live.remove(i);
            }
        }
        sweep();
    }
}

/// The spawned leader: signals its group, reaps it, and on every path out (even a
/// panic) kills the group, makes sure the leader is reaped and sweeps orphans.
pub(super) struct Group<'c> {
    child: Option<Child>,
    pgid: i32,
    cancel: &'c CancelToken,
}

impl<'c> Group<'c> {
    pub(super) fn new(child: Child, _job_id: &str, cancel: &'c CancelToken) -> Group<'c> {
        let pgid = i32::try_from(child.id()).unwrap_or(0);
        Group {
            child: Some(child),
            pgid,
            cancel,
        }
    }

    pub(super) fn pgid(&self) -> i32 {
        self.pgid
    }

    pub(super) fn signal(&self, sig: i32) {
        if self.child.is_some() {
            sys::signal_group(self.pgid, sig);
        }
    }

    /// Reaps the (already exited) leader. The cancel registration goes first: once
    /// reaped, the pgid may be recycled.
    pub(super) fn reap(&mut self) -> Option<ExitStatus> {
        self.cancel.detach();
        let mut child = self.child.take()?;
        loop {
            match child.wait() {
                Ok(status) => return Some(status),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        self.cancel.detach();
        if let Some(mut child) = self.child.take() {
            sys::signal_group(self.pgid, libc::SIGKILL);
            if !matches!(child.try_wait(), Ok(Some(_))) {
                // Still not reapable after SIGKILL (uninterruptible sleep): reap
                // in the background instead of blocking the worker.
                let pgid = self.pgid;
                let reaper = std::thread::Builder::new()
                    .name("plugin-reaper".to_string())
                    .spawn(move || {
                        let _ = child.wait();
                    });
                if let Err(e) = reaper {
                    log::warn!("cannot start a reaper thread for plugin process {pgid}: {e}");
                }
            }
        }
        running().retain(|(pid, _)| *pid != self.pgid);
        sweep();
    }
}

/// Kills and reaps this process's orphans whose job no longer runs here (see
/// the module docs); bounded by [`SWEEP_BOUND`].
fn sweep() {
    let deadline = Instant::now() + SWEEP_BOUND;
    // Each round can uncover more: a killed orphan's own children are
    // re-parented to us when it dies.
    for _ in 0..16 {
        let live: Vec<(i32, String)> = running().clone();
        let mut dying: Vec<OwnedFd> = Vec::new();
        let mut reaped = false;
        for pid in orphans() {
            if live.iter().any(|(p, _)| *p == pid) {
                continue;
            }
            let Some(stat) = Stat::read(pid) else {
                continue;
            };
            if stat.zombie {
                reaped |= sys::reap_if_exited(pid);
                continue;
            }
            let stray = match job_of(pid) {
                Some(job) => !live.iter().any(|(_, j)| *j == job),
                None => live.is_empty(),
            };
            if stray {
                if let Ok(fd) = sys::pidfd_open(pid as u32) {
                    dying.push(fd);
                }
                if stat.pgrp == pid {
                    sys::signal_group(pid, libc::SIGKILL);
                }
                let _ = sys::signal_process(pid, libc::SIGKILL);
            }
        }
        if dying.is_empty() && !reaped {
            return;
        }
        wait_all(&dying, deadline);
        if Instant::now() >= deadline {
            return;
        }
    }
}

/// Waits until every pidfd in `fds` reports its process exited, or `deadline`.
fn wait_all(fds: &[OwnedFd], deadline: Instant) {
    let mut open: Vec<&OwnedFd> = fds.iter().collect();
    while !open.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        for chunk in open.chunks(8) {
            let mut set = PollSet::default();
            for fd in chunk {
                set.push(fd.as_fd(), Interest::Read);
            }
            set.wait(Some(deadline - now));
        }
        open.retain(|fd| {
            let mut set = PollSet::default();
            set.push(fd.as_fd(), Interest::Read);
            set.wait(Some(Duration::ZERO));
            !set.ready(0)
        });
    }
}

/// Our children that are not leaders we spawned: orphans re-parented to us as
/// their subreaper. They are children of the main thread.
fn orphans() -> Vec<i32> {
    let me = sys::pid();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{me}/children")) {
        return text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    // Kernels without CONFIG_PROC_CHILDREN: scan for our children.
    all_pids()
        .into_iter()
        .filter(|pid| Stat::read(*pid).is_some_and(|s| s.ppid == me))
        .collect()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of `/proc/<pid>/stat` the sweep needs.
struct Stat {
    zombie: bool,
    ppid: i32,
    pgrp: i32,
}

impl Stat {
    fn read(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command may contain spaces and parentheses: the fields that
        // follow it start after the last ')'.
        let (_, rest) = text.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some(Stat {
            zombie: state == "Z" || state == "X",
            ppid,
            pgrp,
        })
    }
}

/// The job id in a process's environment, if it has one we can read.
fn job_of(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let key = format!("{JOB_ID_ENV}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(key.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Kills every process, anywhere on the machine we may signal, that carries one
/// of `job_ids` in its environment: what is left of jobs whose daemon died.
/// Call before requeueing them, so an old copy never runs beside a new one.
/// Returns the pids killed.
pub fn kill_leftovers(job_ids: &[String]) -> Vec<u32> {
    if job_ids.is_empty() {
        return Vec::new();
    }
    let wanted: HashSet<&str> = job_ids.iter().map(String::as_str).collect();
    let me = sys::pid();
    let mut killed = Vec::new();
    let deadline = Instant::now() + SWEEP_BOUND;
    // A second round catches children forked while the first was killing.
    for _ in 0..3 {
        let mut dying = Vec::new();
        for pid in all_pids() {
            if pid == me {
                continue;
            }
            let Some(job) = job_of(pid) else { continue };
            if !wanted.contains(job.as_str()) {
                continue;
            }
            if let Ok(fd) = sys::pidfd_open(pid as u32) {
                dying.push(fd);
            }
            if Stat::read(pid).is_some_and(|s| s.pgrp == pid) {
                sys::signal_group(pid, libc::SIGKILL);
            }
            if sys::signal_process(pid, libc::SIGKILL).is_ok() {
                killed.push(pid as u32);
            }
        }
        if dying.is_empty() {
            break;
        }
        wait_all(&dying, deadline);
    }
    killed.sort_unstable();
    killed.dedup();
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let me = sys::pid();
        let stat = Stat::read(me).unwrap();
        assert!(!stat.zombie);
        assert!(stat.ppid > 0);
    }

    #[test]
    fn leftovers_are_found_by_job_id_and_killed() {
        let job = format!("leftover-test-{}", std::process::id());
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("sleep 3600")
            .env(JOB_ID_ENV, &job)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        // Not found until its environment is readable (after exec).
        let deadline = Instant::now() + Duration::from_secs(10);
        while job_of(pid as i32).as_deref() != Some(job.as_str()) {
            assert!(Instant::now() < deadline, "the marker never appeared");
            std::thread::yield_now();
        }
        assert!(kill_leftovers(&["some-other-job".to_string()]).is_empty());
        let killed = kill_leftovers(std::slice::from_ref(&job));
        assert!(killed.contains(&pid), "{killed:?} lacks {pid}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
