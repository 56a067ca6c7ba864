//! Hostile inputs at their limits, end to end: manifests that are not regular
//! files, manifests far over the size cap, unconfigured broken plugins, and
//! responses that are large, over the event cap or too dense to decode.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Run, TestDir, bin, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// Runs `ductile <args> --config <dir>` to completion and returns the run and the
/// peak RSS of the ductile process in bytes (`ru_maxrss` from `wait4` on exactly
/// this child, so parallel tests cannot skew it).
// The child is reaped by `wait4`, which std's `Child` cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(dir: &TestDir, args: &[&str]) -> (Run, u64) {
    let child = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(&dir.path)
        .env_remove("DUCTILE_CONFIG_DIR")
        .env_remove("DUCTILE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Drain both pipes while the child runs, so a chatty run cannot block.
    let (mut out, mut err) = (child.stdout.unwrap(), child.stderr.unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let (status, rusage) = wait4(pid);
    let run = Run {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    // Linux reports ru_maxrss in KiB.
    (run, rusage.ru_maxrss as u64 * 1024)
}

#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live, writable locals; `pid` is our own
        // unreaped child (std's Child is never waited on).
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return (status, usage);
        }
        assert_eq!(
            std::io::Error::last_os_error().kind(),
            std::io::ErrorKind::Interrupted,
            "wait4 failed"
        );
    }
}

/// `ductile <args>` that must finish within `within` (for inputs that could block).
fn run_within(dir: &TestDir, args: &[&str], within: Duration) -> Run {
    let mut child = dir
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut exited = false;
    wait_until(within, "ductile to exit", || {
        exited = child.try_wait().unwrap().is_some();
        exited || start.elapsed() >= within
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "ductile {args:?} blocked: {out:?}");
    Run::from(out)
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

fn skipped(v: &Value) -> Vec<(String, String)> {
    v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

#[test]
fn a_fifo_named_manifest_yaml_is_skipped_without_blocking() {
    let dir = TestDir::new("fifo-manifest");
    dir.fixture("ok_basic");
    let fifo = dir.path.join("plugins/fifo/manifest.yaml");
    mkfifo(&fifo);
    dir.config("plugins:\n  ok_basic: {}\n  fifo: {}\n");
    let reason = format!(
        "{} is not a regular file (it is a FIFO); it is not read",
        fifo.display()
    );
    let run = run_within(&dir, &["plugin", "list", "--json"], LONG).code(0);
    assert_eq!(
        skipped(&run.json())[0],
        ("fifo".to_string(), reason.clone())
    );
    // Configured, it is refused with the same reason; the rest still runs.
    let run = run_within(&dir, &["run", "fifo"], LONG).code(78);
    assert_eq!(
        run.error(),
        format!("plugin `fifo` was not loaded: {reason}")
    );
    run_within(&dir, &["run", "ok_basic"], LONG).code(0);
}

#[test]
fn a_10_mb_manifest_is_skipped_unread_naming_the_file_and_the_cap() {
    let dir = TestDir::new("huge-manifest");
    dir.fixture_at("ok_basic", "plugins/big");
    let mut text = String::from(
        "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: big\nversion: 0.1.0\nprotocol: 2\nentrypoint: run.sh\ncommands:\n",
    );
    let mut i = 0;
    while text.len() < 10_000_000 {
        text.push_str(&format!(
            "  - name: cmd_{i}\n    type: read\n    description: command number {i}\n"
        ));
        i += 1;
    }
    let manifest = dir.write("plugins/big/manifest.yaml", &text);
    dir.config("plugins:\n  big: {}\n");
    let reason = format!(
        "{} is {} bytes, over the 256 KiB limit for a manifest; it is not read",
        manifest.display(),
        text.len()
    );
    let v = dir.run(&["plugin", "list", "--json"]).code(0).json();
    assert_eq!(skipped(&v)[0], ("big".to_string(), reason.clone()));
    let run = dir.run(&["run", "big"]).code(78);
    assert_eq!(
        run.error(),
        format!("plugin `big` was not loaded: {reason}")
    );
}

#[test]
fn an_unconfigured_broken_plugin_does_not_warn_on_a_run_of_another() {
    let dir = TestDir::new("quiet-run");
    dir.fixture("ok_basic");
    dir.fixture("not_executable");
    dir.fixture("bad_protocol_3");
    dir.write("plugins/broken/manifest.yaml", "name: [unclosed\n");
    mkfifo(&dir.path.join("plugins/fifo/manifest.yaml"));
    dir.config("plugins:\n  ok_basic: {}\n");
    let run = run_within(&dir, &["run", "ok_basic"], LONG).code(0);
    assert!(!run.stderr.contains("skipped"), "{}", run.stderr);
    assert!(!run.stderr.contains("\"level\":\"warn\""), "{}", run.stderr);
    // `plugin list` still reports every one of them.
    let v = run_within(&dir, &["plugin", "list", "--json"], LONG)
        .code(0)
        .json();
    let names: Vec<String> = skipped(&v).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["bad_protocol_3", "broken", "fifo", "not_executable"]
    );
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// A dir with `big_response` configured with `config` (YAML lines under `config:`).
fn big_response(tag: &str, config: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.fixture("big_response");
    dir.config(&format!(
        "plugins:\n  big_response:\n    timeouts:\n      poll: 60s\n    config:\n{config}"
    ));
    dir
}

/// The peak RSS of `ductile run` on a one-event response: the baseline.
fn baseline_rss() -> u64 {
    let dir = big_response("rss-baseline", "      events: 1\n");
    let (run, rss) = run_measured(&dir, &["run", "big_response"]);
    assert_eq!(run.code, 0, "{run:#?}");
    rss
}

fn response_size(dir: &TestDir) -> u64 {
    dir.count("SELECT length(result) FROM job_log") as u64
}

#[test]
fn a_9_mb_response_under_the_caps_succeeds_within_10x_its_size() {
    let dir = big_response("rss-9mb", "      events: 1000\n      pad: 9000\n");
    let (run, peak) = run_measured(&dir, &["run", "big_response"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(
        run.stdout.lines().nth(1),
        Some("result: 1000 events"),
        "{run:#?}"
    );
    // The log keeps the plugin's own bytes: valid JSON, byte for byte.
    let size = response_size(&dir);
    assert!(size > 9_000_000, "response of {size} bytes");
    let logged = dir.text("SELECT result FROM job_log").unwrap();
    let v: Value = serde_json::from_str(&logged).unwrap();
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1000));
    assert!(
        logged.starts_with(r#"{"status":"ok","result":"1000 events","events":[{"type":"big.item""#)
    );
    let base = baseline_rss();
    assert!(
        peak <= 10 * size + base,
        "peak RSS {peak} B for a {size} B response (baseline {base} B)"
    );
}

#[test]
fn a_response_over_the_event_cap_fails_loudly_without_the_memory_blowup() {
    // 560,000 events of 16 bytes: ~9 MB, inside the 10 MiB stdout cap.
    let dir = big_response("rss-events", "      events: 560000\n");
    let (run, peak) = run_measured(&dir, &["run", "big_response", "--json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["status"], "failed");
    assert_eq!(
        v["error"],
        "protocol error: response has 560000 events, over the cap of 1000"
    );
    let size = dir.count("SELECT length(stdout) FROM job_log") as u64;
    let base = baseline_rss();
    assert!(
        peak <= 10 * size + base,
        "peak RSS {peak} B for a {size} B response (baseline {base} B)"
    );
}

#[test]
fn a_response_too_dense_to_decode_fails_naming_its_value_count() {
    // 1000 events under the cap, each with 4,500 one-digit numbers: ~9 MB that
    // would decode into ~45x its size.
    let dir = big_response("rss-dense", "      events: 1000\n      numbers: 4500\n");
    let (run, peak) = run_measured(&dir, &["run", "big_response", "--json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    // Envelope, status, result, events; per event: itself, type, payload, i,
    // the numbers array and its items.
    let values = 4 + 1000 * (5 + 4500);
    assert_eq!(
        v["error"],
        format!("protocol error: response holds {values} JSON values, over the cap of 250000")
    );
    let size = dir.count("SELECT length(stdout) FROM job_log") as u64;
    let base = baseline_rss();
    assert!(
        peak <= 10 * size + base,
        "peak RSS {peak} B for a {size} B response (baseline {base} B)"
    );
}

#[test]
fn the_event_cap_is_the_configured_service_max_response_events() {
    let dir = TestDir::new("event-cap-config");
    dir.fixture("big_response");
    dir.config("service:\n  max_response_events: 5\nplugins:\n  big_response:\n    config:\n      events: 6\n");
    let run = dir.run(&["run", "big_response", "--json"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        v["error"],
        "protocol error: response has 6 events, over the cap of 5"
    );
    dir.config("service:\n  max_response_events: 6\nplugins:\n  big_response:\n    config:\n      events: 6\n");
    dir.run(&["run", "big_response"]).code(0);
}
