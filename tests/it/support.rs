//! The integration harness: a temp directory per test, the real binary, real
//! plugin processes, a daemon handle that learns its state from its own log
//! lines and is killed on drop, and `wait_until` for every "eventually".

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("it-{tag}-{}-{n}", std::process::id()));
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
        c.env_remove("DUCTILE_CONFIG_DIR").env_remove("DUCTILE_LOG");
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

    /// Starts the daemon.
    pub fn start(&self) -> Daemon {
        Daemon::start(self.command(&["system", "start"]))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
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

/// Polls `cond` until it holds or `within` passes; panics with `what` on timeout.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        // A short park between polls of an observable condition; never a fixed
        // wait standing in for synchronisation.
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// A running `ductile system start`; killed (SIGKILL) on drop if still alive.
pub struct Daemon {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
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
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, within: Duration, needle: &str) {
        let lines = self.lines.clone();
        wait_until(within, &format!("log line containing {needle:?}"), || {
            lines.lock().unwrap().iter().any(|l| l.contains(needle))
        });
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
            std::thread::park_timeout(Duration::from_millis(10));
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
