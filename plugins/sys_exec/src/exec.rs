//! Running the command: its own process group (so a timeout ends everything
//! it started), both output streams drained to their caps, and a deadline.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Config, Program};

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
    /// It outlived `timeout_seconds` and was killed.
    TimedOut,
}

/// One stream, up to its cap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The first bytes, at most the cap.
    pub bytes: Vec<u8>,
    /// How many bytes the stream carried in all.
    pub total: u64,
}

impl Captured {
    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }

    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub exit: Exit,
    /// stdout, capped.
    pub stdout: Captured,
    /// stderr, capped.
    pub stderr: Captured,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

/// After the leader is gone, how long the output readers may take: a
/// descendant that escaped the group could hold a pipe open indefinitely.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Runs the configured command with `extra_env` on top of the config's.
pub fn run(cfg: &Config, extra_env: &[(String, String)]) -> io::Result<Outcome> {
    let mut cmd = match &cfg.program {
        Program::Shell(script) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
        Program::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    if let Some(dir) = &cfg.working_dir {
        cmd.current_dir(dir);
    }
    cmd.envs(&cfg.env)
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so the timeout can end what it spawned; ductile still
        // finds the group by the job id it inherits.
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let readers = [
        child
            .stdout
            .take()
            .map(|s| drain(s, cfg.max_output_bytes, tx.clone(), 0)),
        child
            .stderr
            .take()
            .map(|s| drain(s, cfg.max_output_bytes, tx.clone(), 1)),
    ];
    drop(tx);
    let status = wait(child, cfg.timeout, pid);
    let elapsed = started.elapsed();
    // Whatever the leader left behind in its group goes with it.
    kill_group(pid);
    let mut streams = [Captured::default(), Captured::default()];
    let until = Instant::now() + DRAIN_GRACE;
    for _ in readers.iter().flatten() {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, c)) => streams[i] = c,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = streams;
    let exit = match status? {
        None => Exit::TimedOut,
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Signal(0),
        },
    };
    Ok(Outcome {
        exit,
        stdout,
        stderr,
        elapsed,
    })
}

/// Waits for the child for at most `timeout`; `None` when it had to be killed.
fn wait(
    mut child: Child,
    timeout: Duration,
    pid: u32,
) -> io::Result<Option<std::process::ExitStatus>> {
    let (tx, rx) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => {
            let _ = waiter.join();
            status.map(Some)
        }
        Err(_) => {
            kill_group(pid);
            // SIGKILL cannot be ignored: the wait returns promptly.
            let _ = rx.recv();
            let _ = waiter.join();
            Ok(None)
        }
    }
}

/// Reads `stream` to its end, keeping the first `cap` bytes.
fn drain(
    mut stream: impl Read + Send + 'static,
    cap: usize,
    tx: mpsc::Sender<(usize, Captured)>,
    index: usize,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut out = Captured::default();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(out.bytes.len());
                    out.bytes.extend_from_slice(&buf[..n.min(room)]);
                    out.total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send((index, out));
    })
}

/// SIGKILL to the process group led by `pid` (ours: spawned with `process_group(0)`).
fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: killpg takes plain integers and touches no memory of ours; the
    // group is the one this process created for its own child.
    #[allow(unsafe_code)]
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> Config {
        Config::parse(&v).unwrap()
    }

    #[test]
    fn captures_exit_code_and_both_streams() {
        let o = run(
            &cfg(json!({"command": "echo out; echo err >&2; exit 3", "shell": true})),
            &[],
        )
        .unwrap();
        assert_eq!(o.exit, Exit::Code(3));
        assert_eq!(o.stdout.text(), "out\n");
        assert_eq!(o.stderr.text(), "err\n");
    }

    #[test]
    fn argv_runs_without_a_shell_and_sees_env_and_dir() {
        let dir = std::env::temp_dir();
        let o = run(
            &cfg(
                json!({"command": ["sh", "-c", "printf '%s %s' \"$A\" \"$(pwd)\""],
                        "env": {"A": "from-config"}, "working_dir": dir}),
            ),
            &[("DUCTILE_PAYLOAD_X".into(), "px".into())],
        )
        .unwrap();
        let canon = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(o.stdout.text(), format!("from-config {}", canon.display()));
        let o = run(
            &cfg(json!({"command": "printenv DUCTILE_PAYLOAD_X"})),
            &[("DUCTILE_PAYLOAD_X".into(), "px".into())],
        )
        .unwrap();
        assert_eq!(o.stdout.text(), "px\n");
    }

    #[test]
    fn output_beyond_the_cap_is_counted_not_kept() {
        let o = run(
            &cfg(json!({"command": "head -c 100000 /dev/zero", "shell": true, "max_output_bytes": 10})),
            &[],
        )
        .unwrap();
        assert_eq!(o.exit, Exit::Code(0));
        assert_eq!(o.stdout.bytes.len(), 10);
        assert_eq!(o.stdout.total, 100_000);
        assert!(o.stdout.truncated());
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        // The background child holds stdout open; the group kill ends it too.
        let o = run(
            &cfg(json!({"command": "sleep 30 & sleep 30", "shell": true, "timeout_seconds": 0.2})),
            &[],
        )
        .unwrap();
        assert_eq!(o.exit, Exit::TimedOut);
        assert!(o.elapsed < Duration::from_secs(10), "{:?}", o.elapsed);
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run(&cfg(json!({"command": ["/nonexistent/prog"]})), &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
