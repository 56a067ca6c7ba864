//! The runner against the fixture zoo and the bundled echo plugin.

use super::classify::{classify, human_bytes, human_duration, one_line};
use super::*;
use crate::plugin::protocol::{self, ResponseLimits};
use serde_json::{Value, json};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;

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
        job_id: "test-job",
        entrypoint: &path,
        args: &[],
        env_passthrough: passthrough,
        request,
        limits,
        response: ResponseLimits::with_subs(32),
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

/// Waits for `cond`, re-checking after brief parks; false when `limit` passed.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(2)); // forbid: condition re-check
    }
}

/// Whether any process of group `pgid` is still alive. Zombies do not count:
/// orphans are reaped by init, which may take its time.
#[allow(unsafe_code)]
fn group_alive(pgid: i32) -> bool {
    assert!(pgid > 1, "no process group recorded");
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
    // waitpid(0) would mean "any child of our group": never a vacuous pass.
    assert!(pid > 1, "no pid recorded");
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on a specific pid; `status` is a valid out-pointer.
    let rc = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
    rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
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
    assert!(!crate::dispatch::retry::retryable(&o));
    assert!(o.started_at <= o.finished_at);
    assert!(o.duration > Duration::ZERO);
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
    ];
    for (name, expected) in cases {
        let o = run_fixture(name);
        assert!(
            matches!(o.kind, OutcomeKind::ProtocolError(_)),
            "{name}: {:?}",
            o.kind
        );
        assert_eq!(o.error_message().as_deref(), Some(expected), "{name}");
        assert!(crate::dispatch::retry::retryable(&o), "{name}");
    }
}

#[test]
fn ok_then_exit_1_succeeds_with_a_warning() {
    let o = run_fixture("exit_1_ok");
    assert_eq!(response(&o).result, Some(json!("looks fine")));
    assert_eq!(o.exit_code, Some(1));
    assert_eq!(
        o.warnings,
        vec!["plugin exited with code 1 after writing a valid response; the response stands"]
    );
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
    assert!(!crate::dispatch::retry::retryable(&o));
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
    assert!(!crate::dispatch::retry::retryable(&o));
}

#[test]
fn huge_stdout_keeps_exactly_the_cap() {
    let o = run_fixture("huge_stdout");
    assert_eq!(o.kind, OutcomeKind::OutputTooLarge);
    assert_eq!(o.stdout.len(), 10 * 1024 * 1024);
    assert!(o.stdout.iter().all(|b| *b == b'a'));
    assert_eq!(o.error_message().as_deref(), Some("stdout exceeded 10 MiB"));
    assert!(crate::dispatch::retry::retryable(&o));
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
    assert_eq!(o.signal, Some(libc::SIGTERM));
    let msg = o.error_message().unwrap_or_default();
    assert!(
        msg.starts_with("timed out after ") && msg.ends_with("ms"),
        "{msg}"
    );
    assert!(crate::dispatch::retry::retryable(&o));
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
    // The background sleep holds stdout for an hour: the run ends when the
    // leader exits, not when the pipe closes (no time bound asserted; the test
    // would simply not finish).
    let o = run_fixture("grandchild_holds_stdout");
    let grandchild = response(&o)
        .result
        .as_ref()
        .and_then(|r| r["grandchild_pid"].as_i64());
    assert!(grandchild.is_some(), "{:?}", o.kind);
    assert_group_gone(&o);
}

#[test]
fn escaped_grandchild_is_killed_with_its_job() {
    let o = run_fixture("setsid_grandchild");
    let grandchild = response(&o)
        .result
        .as_ref()
        .and_then(|r| r["grandchild_pid"].as_i64())
        .unwrap_or(0) as i32;
    assert!(grandchild > 1, "{:?}", o.kind);
    // It left the group (setsid) and lost its parent, so it became our orphan
    // and the sweep killed and reaped it: nothing of the job runs on.
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(grandchild)),
        "escaped grandchild {grandchild} outlived its job"
    );
    assert_group_gone(&o);
}

#[test]
fn lingering_after_answering_succeeds_with_a_warning() {
    let o = run_fixture("linger_after_answer");
    assert_eq!(response(&o).result, Some(json!("answered, then lingered")));
    assert_eq!(o.signal, Some(libc::SIGKILL), "killed after the grace");
    assert_eq!(
        o.warnings,
        vec![
            "the plugin answered and closed stdout but was still running 1s later; its processes were killed and the answer kept"
        ]
    );
    assert_group_gone(&o);
}

#[test]
fn the_job_id_reaches_the_plugin_environment() {
    let o = run_fixture("env_dump");
    let names: Vec<&str> = response(&o)
        .result
        .as_ref()
        .and_then(|r| r["names"].as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&JOB_ID_ENV), "{names:?}");
}

/// Whether `pid` exists and is not a zombie.
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
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
        job_id: "test-job",
        entrypoint: &path,
        args: &[],
        env_passthrough: &[],
        request: REQUEST,
        limits: Limits::default(),
        response: ResponseLimits::with_subs(64),
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
            allowlisted(n) || *n == passed || n == "PWD" || n == JOB_ID_ENV,
            "unexpected variable {n} in {names:?}"
        );
    }
}

#[test]
fn spawn_failures_are_reported() {
    let missing = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plugins/missing_entrypoint/run.sh");
    let inv = Invocation {
        job_id: "test-job",
        entrypoint: &missing,
        args: &[],
        env_passthrough: &[],
        request: REQUEST,
        limits: Limits::default(),
        response: ResponseLimits::with_subs(32),
    };
    let o = run(&inv, &CancelToken::new());
    let expected = format!(
        "cannot start {}: No such file or directory (os error 2)",
        missing.display()
    );
    assert_eq!(o.kind, OutcomeKind::SpawnFailed(expected.clone()));
    assert_eq!(o.error_message(), Some(expected));
    assert_eq!(o.pid, None);
    assert!(crate::dispatch::retry::retryable(&o));

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
        job_id: "test-job",
        entrypoint: &path,
        args: &[],
        env_passthrough: &[],
        request: REQUEST,
        limits: Limits::default(),
        response: ResponseLimits::with_subs(32),
    };
    let o = run(&inv, &token);
    assert_eq!(o.kind, OutcomeKind::Cancelled("shutdown".to_string()));
    assert_eq!(o.pid, None);
    assert_eq!(o.error_message().as_deref(), Some("cancelled: shutdown"));
    assert!(!crate::dispatch::retry::retryable(&o));
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
        job_id: "test-job",
        entrypoint: &path,
        args: &[],
        env_passthrough: &[],
        request: REQUEST,
        limits,
        response: ResponseLimits::with_subs(32),
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
    let _ = elapsed;
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
    assert!(elapsed >= limits.grace, "{elapsed:?}");
    assert_group_gone(&o);
}

fn exit(code: i32) -> Option<ExitStatus> {
    Some(ExitStatus::from_raw(code << 8))
}

fn check_classify(status: Option<ExitStatus>, stdout: &str, stderr: &str, expected: &str) {
    check_classify_warned(status, stdout, stderr, expected, &[]);
}

fn check_classify_warned(
    status: Option<ExitStatus>,
    stdout: &str,
    stderr: &str,
    expected: &str,
    expected_warnings: &[&str],
) {
    let mut warnings = Vec::new();
    let kind = classify(
        status,
        None,
        stdout.as_bytes(),
        stderr,
        &ResponseLimits::with_subs(32),
        &mut warnings,
    );
    assert_eq!(warnings, expected_warnings, "stdout {stdout:?}");
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
        warnings,
        request_unread: 0,
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
    // A valid response stands whatever the exit code (78 aside), with a warning.
    check_classify_warned(
        exit(2),
        ok,
        "",
        "<success>",
        &["plugin exited with code 2 after writing a valid response; the response stands"],
    );
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
    check_classify_warned(
        Some(ExitStatus::from_raw(libc::SIGSEGV)),
        ok,
        "",
        "<success>",
        &["plugin was killed by signal 11 after writing a valid response; the response stands"],
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
        None,
        br#"{"status":"error","error":"no key","retry":true}"#,
        "",
        &ResponseLimits::with_subs(32),
        &mut Vec::new(),
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
        warnings: Vec::new(),
        request_unread: 0,
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
        job_id: "test-job",
        entrypoint: &path,
        args: &[],
        env_passthrough: &[],
        request: &bytes,
        limits: Limits::default(),
        response: ResponseLimits::with_subs(32),
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
            job_id: "test-job",
            entrypoint: &path,
            args: &[],
            env_passthrough: &[],
            request: REQUEST,
            limits,
            response: ResponseLimits::with_subs(32),
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

    let o = watch("grandchild_holds_stdout", Limits::default());
    assert!(matches!(o.kind, OutcomeKind::Succeeded(_)), "{:?}", o.kind);
    assert_group_gone(&o);

    let limits = short_limits();
    let o = watch("ignores_term", limits);
    assert_eq!(o.kind, OutcomeKind::TimedOut);
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
