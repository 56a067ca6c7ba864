//! The service-manager protocol: a real unix datagram socket stands where
//! systemd's would (`NOTIFY_SOCKET`, a path or an `@abstract` name), and the
//! daemon's datagrams are read off it: READY, STATUS, RELOADING with
//! MONOTONIC_USEC, STOPPING, and WATCHDOG pings that stop when the dispatcher
//! wedges. Also `service.log_level` and `ductile version`.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Background, TestDir};

const LONG: Duration = Duration::from_secs(20);

static ABSTRACT: AtomicUsize = AtomicUsize::new(0);

/// The socket a service manager would listen on, and every datagram read so far.
struct Manager {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET` for the daemon.
    address: String,
    seen: Vec<String>,
}

impl Manager {
    /// A socket file in the test directory.
    fn at_path(dir: &TestDir) -> Manager {
        let path = dir.path.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            socket,
            address: path.display().to_string(),
            seen: Vec::new(),
        }
    }

    /// A name in the abstract namespace, unique to this test.
    fn abstract_name() -> Manager {
        let name = format!(
            "ductile-it-notify-{}-{}",
            std::process::id(),
            ABSTRACT.fetch_add(1, Ordering::SeqCst)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        Manager {
            socket,
            address: format!("@{name}"),
            seen: Vec::new(),
        }
    }

    /// The next datagram within `within`, if one comes.
    fn next(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(left)).unwrap();
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    return Some(msg);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// Reads until a datagram satisfies `pred` (returned) or `within` passes.
    fn wait_for(&mut self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(m) if pred(&m) => return m,
                Some(_) => {}
                None => panic!(
                    "no datagram {what} within {within:?}; got: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Everything that arrives within `within` (a window in which some
    /// datagram must not come).
    fn during(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            got.push(m);
        }
        got
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn value<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn echo_dir(tag: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.config(
        "api:\n  enabled: true\n  listen: 127.0.0.1:0\nplugins:\n  echo:\n    enabled: true\n",
    );
    dir
}

#[test]
fn ready_reloading_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = echo_dir("notify-path");
    let mut sd = Manager::at_path(&dir);
    let daemon = dir.start_with_env(&[
        ("NOTIFY_SOCKET", sd.address.as_str()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    let ready = sd.wait_for(LONG, "with READY=1", |m| has_line(m, "READY=1"));
    let status = value(&ready, "STATUS").unwrap();
    assert!(
        status.starts_with("running: 1 plugin(s), ") && status.contains("listening on 127.0.0.1:"),
        "{ready}"
    );
    // What came before READY said what the daemon was doing.
    let before: Vec<&String> = sd.seen.iter().take(sd.seen.len() - 1).collect();
    assert!(
        before
            .iter()
            .any(|m| value(m, "STATUS").is_some_and(|s| s.starts_with("starting: taking the lock"))),
        "{before:?}"
    );
    assert!(before.iter().all(|m| !has_line(m, "READY=1")));

    // Pings, one per second (half of WATCHDOG_USEC).
    for _ in 0..2 {
        sd.wait_for(LONG, "WATCHDOG=1", |m| has_line(m, "WATCHDOG=1"));
    }

    daemon.signal("HUP");
    let reloading = sd.wait_for(LONG, "with RELOADING=1", |m| has_line(m, "RELOADING=1"));
    let stamp: u64 = value(&reloading, "MONOTONIC_USEC")
        .expect("RELOADING=1 carries MONOTONIC_USEC")
        .parse()
        .unwrap();
    let now = ductile::sys::monotonic_usec();
    assert!(
        stamp <= now && now - stamp < 60_000_000,
        "MONOTONIC_USEC={stamp} is CLOCK_MONOTONIC (now {now})"
    );
    let again = sd.wait_for(LONG, "READY=1 after the reload", |m| has_line(m, "READY=1"));
    assert!(
        value(&again, "STATUS").is_some_and(|s| s.contains("(config reloaded)")),
        "{again}"
    );

    // A rejected reload ends ready too (the previous config runs on), and
    // says why.
    dir.config("service:\n  log_level: verbose\n");
    daemon.signal("HUP");
    sd.wait_for(LONG, "with RELOADING=1 again", |m| {
        has_line(m, "RELOADING=1")
    });
    let kept = sd.wait_for(LONG, "READY=1 after the rejection", |m| {
        has_line(m, "READY=1")
    });
    let status = value(&kept, "STATUS").unwrap();
    assert!(
        status.starts_with("running the previous config: reload rejected: ")
            && status.contains("log_level"),
        "{kept}"
    );

    daemon.signal("TERM");
    let stopping = sd.wait_for(LONG, "with STOPPING=1", |m| has_line(m, "STOPPING=1"));
    assert!(
        value(&stopping, "STATUS").is_some_and(|s| s.starts_with("stopping (SIGTERM)")),
        "{stopping}"
    );
    assert_eq!(daemon.wait_exit(LONG), 0);
    // The watchdog stopped before STOPPING=1: no ping follows it.
    let after = sd.during(Duration::from_millis(100));
    assert!(
        after.iter().all(|m| !has_line(m, "WATCHDOG=1")),
        "{after:?}"
    );
}

#[test]
fn an_abstract_notify_socket_hears_ready_and_stopping_and_no_pings_unasked() {
    let dir = echo_dir("notify-abstract");
    let mut sd = Manager::abstract_name();
    assert!(sd.address.starts_with('@'));
    let daemon = dir.start_with_env(&[("NOTIFY_SOCKET", sd.address.as_str())]);
    sd.wait_for(LONG, "with READY=1", |m| has_line(m, "READY=1"));
    daemon.signal("TERM");
    sd.wait_for(LONG, "with STOPPING=1", |m| has_line(m, "STOPPING=1"));
    assert_eq!(daemon.wait_exit(LONG), 0);
    sd.during(Duration::from_millis(100));
    // No WATCHDOG_USEC, no watchdog.
    assert!(
        sd.seen.iter().all(|m| !has_line(m, "WATCHDOG=1")),
        "{:#?}",
        sd.seen
    );
}

#[test]
fn a_wedged_dispatcher_stops_the_watchdog_pings() {
    let dir = echo_dir("notify-wedge");
    let mut sd = Manager::at_path(&dir);
    // The dispatcher's first look at requests is at its start; the second,
    // after the SIGUSR1 below, wedges it.
    let daemon = dir.start_with_env(&[
        ("NOTIFY_SOCKET", sd.address.as_str()),
        ("WATCHDOG_USEC", "1000000"),
        ("DUCTILE_FAULT", "wedge-dispatcher:2"),
    ]);
    sd.wait_for(LONG, "with READY=1", |m| has_line(m, "READY=1"));
    for _ in 0..2 {
        sd.wait_for(LONG, "WATCHDOG=1 while healthy", |m| {
            has_line(m, "WATCHDOG=1")
        });
    }
    daemon.signal("USR1");
    daemon.wait_log(
        LONG,
        "fault injection: wedging this thread at `wedge-dispatcher`",
    );
    let stalled = sd.wait_for(LONG, "saying the dispatcher stalled", |m| {
        value(m, "STATUS").is_some_and(|s| s.contains("the dispatch loop has not come round"))
    });
    assert!(!has_line(&stalled, "WATCHDOG=1"), "{stalled}");
    daemon.wait_log(LONG, "withholding WATCHDOG=1");
    // Four ping periods (500ms each) with no ping: systemd would have
    // restarted the daemon after two.
    let after = sd.during(Duration::from_secs(2));
    assert!(
        after.iter().all(|m| !has_line(m, "WATCHDOG=1")),
        "pings went on after the stall: {after:?}"
    );
    // Dropping the handle kills the wedged daemon.
}

#[test]
fn service_log_level_silences_the_daemons_info_lines() {
    let dir = TestDir::new("notify-log-level");
    dir.echo();
    dir.config("service:\n  log_level: error\nplugins:\n  echo:\n    enabled: true\n");
    let mut sd = Manager::at_path(&dir);
    let mut cmd = dir.command(&["system", "start"]);
    cmd.env("NOTIFY_SOCKET", &sd.address);
    let daemon = Background::start(cmd);
    // No "ductile running" line to wait for at this level: READY=1 says it.
    sd.wait_for(LONG, "with READY=1", |m| has_line(m, "READY=1"));
    daemon.signal("TERM");
    let run = daemon.finish(LONG).code(0);
    assert!(!run.stdout.contains("ductile running"), "{}", run.stdout);
    assert!(!run.stdout.contains("\"level\":\"info\""), "{}", run.stdout);

    // The same config at `info` does log it (the level, not the daemon, was quiet).
    dir.config("service:\n  log_level: info\nplugins:\n  echo:\n    enabled: true\n");
    let daemon = dir.start();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn version_names_the_commit_and_an_rfc3339_build_date() {
    let dir = TestDir::new("notify-version");
    let v = dir.run(&["version", "--json"]).code(0).json();
    let commit = v["commit"].as_str().unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        // The binary was built from this checkout; HEAD may have moved since
        // (a commit without a rebuild), so only its shape is certain.
        Some(_) => assert!(
            commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{commit}"
        ),
        None => assert_eq!(commit, "unknown"),
    }
    let built = v["build_date"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(built).is_ok(),
        "{built}"
    );
    assert!(built.ends_with('Z'), "{built}");
    assert_eq!(v["target"], env!("DUCTILE_TARGET"));
    // The spec's and every CLI's spellings answer the same.
    for spelling in ["--version", "-V"] {
        let again = dir.run(&[spelling, "--json"]).code(0).json();
        assert_eq!(again, v, "{spelling}");
    }
}
