//! The integration harness: a temp directory per test, the real binary, real
//! plugin processes, a daemon handle that learns its state from its own log
//! lines and is killed on drop, and `wait_until` for every "eventually".

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ductile"))
}

/// The source tree.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique directory for one test; removed when the test passes, kept when it fails.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        TestDir::new_in(Path::new(env!("CARGO_TARGET_TMPDIR")), tag)
    }

    /// A test directory under `base` instead of the target directory.
    pub fn new_in(base: &Path, tag: &str) -> TestDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = base.join(format!("ductile-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("plugins")).unwrap();
        TestDir { path }
    }

    /// Writes a file (creating parents).
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Copies fixture plugin `fixture` into this dir's plugin root as `plugins/<fixture>`.
    pub fn fixture(&self, fixture: &str) -> PathBuf {
        let src = repo().join("tests/fixtures/plugins").join(fixture);
        let dst = self.path.join("plugins").join(fixture);
        copy_dir(&src, &dst);
        dst
    }

    /// Copies fixture plugin `fixture` to `rel` (a path under this dir), e.g. a
    /// second plugin root or a directory under another name.
    pub fn fixture_at(&self, fixture: &str, rel: &str) -> PathBuf {
        let dst = self.path.join(rel);
        copy_dir(&repo().join("tests/fixtures/plugins").join(fixture), &dst);
        dst
    }

    /// Copies the bundled echo plugin into this dir's plugin root.
    pub fn echo(&self) -> PathBuf {
        let dst = self.path.join("plugins/echo");
        copy_dir(&repo().join("plugins/echo"), &dst);
        dst
    }

    /// Writes `config.yaml`: plugin root `plugins`, db `state/ductile.db`, then `body`.
    pub fn config(&self, body: &str) -> PathBuf {
        self.write(
            "config.yaml",
            &format!("plugin_roots: [plugins]\nstate:\n  path: state/ductile.db\n{body}"),
        )
    }

    pub fn db_path(&self) -> PathBuf {
        self.path.join("state/ductile.db")
    }

    /// Opens the ledger for assertions.
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.db_path()).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    }

    /// A single integer from a query.
    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Runs `ductile <args> --config <dir>`.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run::from(out)
    }

    /// The command, for tests that need to add env or stdin.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args).arg("--config").arg(&self.path);
        c.env_remove("DUCTILE_CONFIG_DIR")
            .env_remove("DUCTILE_LOG")
            .env_remove("DUCTILE_FAULT");
        c
    }

    /// `ductile <args>` with no `--config` (config discovery decides) and none of
    /// the discovery variables inherited from the test process.
    pub fn command_without_config(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env_remove("DUCTILE_CONFIG_DIR")
            .env_remove("DUCTILE_LOG");
        c
    }

    /// A single text column from a query (`None` for no row or SQL NULL).
    pub fn text(&self, sql: &str) -> Option<String> {
        self.texts(sql).into_iter().next().flatten()
    }

    /// The first column of every row of a query, as text.
    pub fn texts(&self, sql: &str) -> Vec<Option<String>> {
        let db = self.db();
        let mut stmt = db.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get::<_, Option<String>>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// Waits until `cond` holds, woken by file changes in this directory, its
    /// ledger's directory and the plugins' output directories.
    pub fn wait_until(&self, within: Duration, what: &str, cond: impl FnMut() -> bool) {
        let out = self.path.join("out");
        let mut dirs = vec![self.path.clone(), self.path.join("state"), out.clone()];
        if let Ok(entries) = std::fs::read_dir(&out) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        wait_on_files(&dirs, within, what, cond);
    }

    /// Enqueues `n` poll jobs for `plugin` through the library's real enqueue
    /// path (no daemon needed), allowed 4 attempts; returns their ids.
    pub fn enqueue(&self, plugin: &str, n: usize) -> Vec<String> {
        use ductile::store::queue::{self, Enqueued, NewJob, SubmittedBy};
        let mut conn =
            ductile::store::open(&self.db_path(), ductile::config::Synchronous::Normal).unwrap();
        (0..n)
            .map(|_| {
                let job = NewJob::new(plugin, "poll", serde_json::Value::Null, SubmittedBy::Cli, 4);
                match queue::enqueue(
                    &mut conn,
                    &job,
                    Duration::from_secs(86_400),
                    chrono::Utc::now(),
                )
                .unwrap()
                {
                    Enqueued::Created(id) => id,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    /// Starts the daemon, after the operator's ritual: `config lock` seals the
    /// config first unless the test sealed it (or left a seal) itself.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    /// Starts the daemon with extra environment variables (sealing as [`TestDir::start`]).
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        if !self.path.join(".checksums").exists() {
            // A config that does not lock is left for the daemon to refuse.
            let _ = self
                .command(&["config", "lock"])
                .envs(env.iter().copied())
                .output();
        }
        self.start_unsealed(env)
    }

    /// Starts the daemon on the config dir exactly as it is (no `config lock`).
    pub fn start_unsealed(&self, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.command(&["system", "start"]);
        cmd.envs(env.iter().copied());
        Daemon::start(cmd)
    }
}

impl TestDir {
    /// Kills every process this test's jobs started that is still running
    /// (found by the job id ductile puts in each plugin's environment, or by a
    /// command line inside this directory) and returns those that belonged to
    /// a job the ledger records as finished: those are leaks.
    pub fn kill_job_processes(&self) -> Vec<String> {
        let jobs: Vec<(String, String)> = if self.db_path().exists() {
            rusqlite::Connection::open_with_flags(
                self.db_path(),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()
            .and_then(|c| {
                c.busy_timeout(Duration::from_secs(10)).ok()?;
                let mut s = c.prepare("SELECT id, status FROM job_queue").ok()?;
                let rows = s
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .ok()?
                    .filter_map(Result::ok)
                    .collect();
                Some(rows)
            })
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mine = self.path.to_string_lossy().into_owned();
        let me = std::process::id() as i64;
        let mut leaks = Vec::new();
        // Twice: a process forked while the first pass was killing.
        for _ in 0..2 {
            for pid in proc_pids() {
                if pid == me || !alive(pid) {
                    continue;
                }
                let job = job_of(pid);
                let inside = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&mine))
                    .unwrap_or(false);
                let status = job
                    .as_ref()
                    .and_then(|j| jobs.iter().find(|(id, _)| id == j))
                    .map(|(_, s)| s.as_str());
                if status.is_none() && !inside {
                    continue;
                }
                if let Some(s) = status.filter(|s| *s != "running" && *s != "queued") {
                    leaks.push(format!(
                        "pid {pid} ({}) of job {} which is {s}",
                        cmdline(pid),
                        job.clone().unwrap_or_default()
                    ));
                }
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
        leaks
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let leaks = self.kill_job_processes();
        if !std::thread::panicking() {
            assert!(
                leaks.is_empty(),
                "processes outlived their finished jobs: {leaks:#?}"
            );
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn proc_pids() -> Vec<i64> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(false)
}

/// The ductile job id in a process's environment.
pub fn job_of(pid: i64) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"DUCTILE_JOB_ID="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn cmdline(pid: i64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// A finished CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The first `error: ` line of stderr, without the prefix.
    pub fn error(&self) -> &str {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("error: "))
            .unwrap_or_else(|| panic!("no `error: ` line on stderr: {self:#?}"))
    }

    /// Asserts the exit code, showing the output on failure.
    pub fn code(self, expected: i32) -> Run {
        assert_eq!(self.code, expected, "unexpected exit code: {self:#?}");
        self
    }
}

/// Waits until `cond` holds or `within` passes (then panics with `what`), for
/// conditions with no event to wait on (a process exiting): re-checks with a
/// growing pause, never a fixed sleep standing in for synchronisation.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        std::thread::park_timeout(pause); // forbid: condition re-check
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Waits until `cond` holds, waking whenever a file changes in one of `dirs`
/// (a commit touches the WAL, a plugin writes its output); panics with `what`
/// after `within`. The one-second re-check covers directories created later.
pub fn wait_on_files(
    dirs: &[PathBuf],
    within: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) {
    use ductile::sys::{Inotify, Interest, PollSet, WATCH_CHANGES};
    let deadline = Instant::now() + within;
    loop {
        // Watch first, then look: a change between the two still wakes us.
        let watch = Inotify::new().unwrap();
        for d in dirs.iter().filter(|d| d.is_dir()) {
            let _ = watch.watch(d, WATCH_CHANGES);
        }
        if cond() {
            return;
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        let mut set = PollSet::default();
        set.push(watch.fd(), Interest::Read);
        set.wait(Some((deadline - now).min(Duration::from_secs(1))));
    }
}

/// Blocks until process `pid` (our child) has exited, on its pidfd, for at most
/// `within`; true when it has. The child is not reaped.
fn exited_within(pid: u32, within: Duration) -> bool {
    use std::os::fd::AsFd;
    let Ok(fd) = ductile::sys::pidfd_open(pid) else {
        return true;
    };
    let mut set = ductile::sys::PollSet::default();
    let at = set.push(fd.as_fd(), ductile::sys::Interest::Read);
    set.wait(Some(within));
    set.ready(at)
}

/// A running `ductile system start`; killed (SIGKILL) on drop if still alive.
pub struct Daemon {
    child: Option<Child>,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Daemon {
    fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.0.lock().unwrap().push(line);
                    lines.1.notify_all();
                }
            });
        }
        let d = Daemon {
            child: Some(child),
            lines,
        };
        d.wait_log(Duration::from_secs(20), "ductile running");
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle` (woken by each new line).
    pub fn wait_log(&self, within: Duration, needle: &str) {
        let deadline = Instant::now() + within;
        let (lines, arrived) = &*self.lines;
        let mut seen = lines.lock().unwrap();
        while !seen.iter().any(|l| l.contains(needle)) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {within:?} waiting for a log line containing {needle:?}; log:\n{}",
                seen.join("\n")
            );
            seen = arrived.wait_timeout(seen, deadline - now).unwrap().0;
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the process to exit and returns its code.
    pub fn wait_exit(mut self, within: Duration) -> i32 {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not exit within {within:?}; log:\n{}",
                    self.log().join("\n")
                );
            }
            // Block on the process's exit for the rest of the budget.
            exited_within(
                child.id(),
                deadline.saturating_duration_since(Instant::now()),
            );
        }
    }

    /// kill -9, as a crash.
    pub fn crash(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether process `pid` is alive and its command line contains `needle`.
pub fn runs(pid: i64, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

/// SIGKILLs process `pid` (its whole group with `group`) only while it still runs
/// `needle`: pids are recycled fast (pid_max may be 32768), and a stale pid could
/// name an unrelated process.
pub fn kill_if_runs(pid: i64, needle: &str, group: bool) {
    if runs(pid, needle) {
        let target = if group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(target)
            .status();
    }
}

/// A `ductile` command running in the background: waited on through its pidfd,
/// its output collected when it ends, killed on drop if still running.
pub struct Background {
    child: Option<Child>,
}

impl Background {
    /// Starts `cmd` with stdin closed and stdout/stderr captured.
    pub fn start(mut cmd: Command) -> Background {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Background { child: Some(child) }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `sig` (e.g. "INT").
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Waits for it to end (blocking on its pidfd) and returns its output;
    /// panics after `within`.
    pub fn finish(mut self, within: Duration) -> Run {
        let child = self.child.take().unwrap();
        let pid = child.id();
        // Collected on a thread, so a chatty process never blocks on a full pipe
        // while we wait for it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(within) {
            Ok(out) => Run::from(out.unwrap()),
            Err(_) => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
                let out = rx.recv().unwrap().unwrap();
                panic!("still running after {within:?}: {:#?}", Run::from(out));
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pids recorded as file names in `dir` (fixtures write `<dir>/<pid>`).
pub fn recorded_pids(dir: &Path) -> Vec<i64> {
    let mut pids: Vec<i64> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}
