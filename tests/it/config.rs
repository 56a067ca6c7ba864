//! Config hardening end to end: value ranges, `${VAR}` values arriving as
//! exactly their text, file rules, keys whose feature has not landed, and the
//! daemon's `service.log_level`.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Run, TestDir};

const LONG: Duration = Duration::from_secs(30);

/// A dir with the bundled echo plugin configured as `echo: {}` plus `body`.
fn echo_with(tag: &str, body: &str) -> (TestDir, std::path::PathBuf) {
    let dir = TestDir::new(tag);
    dir.echo();
    let file = dir.config(&format!("{body}plugins:\n  echo: {{}}\n"));
    (dir, file)
}

/// `ductile config check` exits 78 with exactly `error: <file>: <message>`.
fn assert_refused(dir: &TestDir, file: &std::path::Path, message: &str) {
    let run = dir.run(&["config", "check"]).code(78);
    assert_eq!(
        run.stderr,
        format!("error: {}: {message}\n", file.display())
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn config_check_refuses_out_of_range_values_naming_key_and_range() {
    for (body, message) in [
        (
            "service:\n  max_workers: 100000\n",
            "service.max_workers: must be between 1 and 256, got 100000",
        ),
        (
            "service:\n  tick_interval: 1ns\n",
            "service.tick_interval: must be between 100ms and 1h, got 1ns",
        ),
        (
            "service:\n  job_log_retention: 315360001\n",
            "service.job_log_retention: must be between 1h and 3650d, got 315360001",
        ),
    ] {
        let (dir, file) = echo_with("range", body);
        assert_refused(&dir, &file, message);
    }
    let dir = TestDir::new("range-plugin");
    dir.echo();
    let file = dir.config("plugins:\n  echo:\n    timeouts: {poll: 0s}\n");
    assert_refused(
        &dir,
        &file,
        "plugins.echo.timeouts.poll: must be between 1s and 1d, got 0s",
    );
    let file = dir.config("plugins:\n  echo:\n    max_outstanding_polls: 0\n");
    assert_refused(
        &dir,
        &file,
        "plugins.echo.max_outstanding_polls: must be between 1 and 1000, got 0",
    );
    // The bounds themselves are accepted.
    dir.config(
        "service:\n  max_workers: 256\n  tick_interval: 100ms\nplugins:\n  echo:\n    timeouts: {poll: 24h}\n    max_outstanding_polls: 1000\n",
    );
    dir.run(&["config", "check"]).code(0);
}

#[test]
fn a_variable_reaches_the_plugin_as_exactly_its_text() {
    let dir = TestDir::new("var-text");
    dir.echo();
    dir.config("plugins:\n  echo:\n    config:\n      message: ${MSG}\n");
    let mut lock = dir.command(&["config", "lock"]);
    lock.env("MSG", "sealed");
    Run::from(lock.output().unwrap()).code(0);
    for value in [
        "abc #def",
        "x\n      other: injected",
        "x\nservice: {allow_symlinks: true}",
        "[1, 2]",
    ] {
        let mut command = dir.command(&["run", "echo", "--json"]);
        command.env("MSG", value);
        let run = Run::from(command.output().unwrap()).code(0);
        assert_eq!(run.json()["result"], format!("echo: {value}"), "{value:?}");
        let mut check = dir.command(&["config", "check"]);
        check.env("MSG", value);
        let run = Run::from(check.output().unwrap()).code(0);
        assert_eq!(
            run.stdout, "config ok: 1 file(s), 1 plugin(s) loaded, 0 error(s), 0 warning(s)\n",
            "no key was added by {value:?}"
        );
    }
}

#[test]
fn an_included_fifo_is_refused_instead_of_blocking() {
    let (dir, _) = echo_with("fifo", "include: [pipe.yaml]\n");
    let pipe = dir.path.join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    assert_refused(
        &dir,
        &pipe,
        "not a regular file; config and .env files must be plain files (not a FIFO, device or socket)",
    );
}

#[test]
fn deep_flow_nesting_is_refused_with_its_position() {
    let n = 100_000;
    let (dir, file) = echo_with(
        "deep",
        &format!("x-deep: {}{}\n", "[".repeat(n), "]".repeat(n)),
    );
    let run = dir.run(&["config", "check"]).code(78);
    // `x-deep: ` is line 4 of the harness config; the 65th `[` is column 73.
    assert_eq!(
        run.stderr,
        format!(
            "error: {}:4:73: flow collections (`[...]`, `{{...}}`) nest more than 64 levels deep\n",
            file.display()
        )
    );
}

const INACTIVE_BODY: &str =
    "service:\n  strict_mode: true\n  preferred_window: x\nrelay:\n  x: 1\n";

#[test]
fn config_check_warns_about_keys_that_do_nothing_yet_even_under_strict_mode() {
    let (dir, file) = echo_with("inactive", INACTIVE_BODY);
    dir.run(&["config", "lock"]).code(0);
    let run = dir.run(&["config", "check"]).code(0);
    let hint = "  hint: remove the key, or keep it for when the feature lands";
    assert_eq!(
        run.stdout,
        format!(
            "note: {f}:7: relay: parsed but not yet active\n{hint}\nnote: {f}:6: service.preferred_window: parsed but not yet active\n{hint}\nconfig ok: 1 file(s), 1 plugin(s) loaded, 0 error(s), 0 warning(s) (strict: warnings are errors)\n",
            f = file.display()
        )
    );
    let v = dir.run(&["config", "check", "--json"]).code(0).json();
    assert_eq!(v["ok"], true);
    assert_eq!(
        v["info"],
        serde_json::json!([
            format!("{}:7: relay: parsed but not yet active", file.display()),
            format!(
                "{}:6: service.preferred_window: parsed but not yet active",
                file.display()
            ),
        ])
    );
    // Any other warning still makes strict_mode refuse.
    dir.config(&format!(
        "{INACTIVE_BODY}bogus: 1\nplugins:\n  echo: {{}}\n"
    ));
    dir.run(&["config", "check"]).code(1);
}

/// Whether `line` is a JSON log line at `level` whose message is `message`.
fn logged(line: &str, level: &str, message: &str) -> bool {
    serde_json::from_str::<Value>(line)
        .is_ok_and(|v| v["level"] == level && v["message"].as_str() == Some(message))
}

#[test]
fn the_daemon_starts_under_strict_mode_and_warns_about_inactive_keys_at_start_and_reload() {
    let (dir, file) = echo_with("inactive-daemon", INACTIVE_BODY);
    let daemon = dir.start();
    let warning = format!(
        "{}: service.preferred_window: parsed but not yet active",
        file.display()
    );
    let count = |daemon: &crate::support::Daemon| {
        daemon
            .log()
            .iter()
            .filter(|l| logged(l, "warn", &warning))
            .count()
    };
    assert_eq!(count(&daemon), 1, "{:#?}", daemon.log());
    daemon.signal("HUP");
    daemon.wait_log(LONG, "config reloaded");
    assert_eq!(count(&daemon), 2, "{:#?}", daemon.log());
}

/// Runs one echo job through a running daemon and waits until the daemon has
/// logged its completion.
fn run_one_job(dir: &TestDir, daemon: &crate::support::Daemon) {
    dir.run(&["run", "echo"]).code(0);
    daemon.wait_log(LONG, "job succeeded (poll)");
}

fn debug_lines(daemon: &crate::support::Daemon) -> Vec<String> {
    daemon
        .log()
        .into_iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"] == "debug"))
        .collect()
}

#[test]
fn service_log_level_debug_makes_the_daemon_log_debug_lines() {
    let (dir, _) = echo_with("log-debug", "service:\n  log_level: debug\n");
    let daemon = dir.start();
    run_one_job(&dir, &daemon);
    let lines = debug_lines(&daemon);
    assert!(
        lines.iter().any(|l| logged(l, "debug", "claimed")
            && serde_json::from_str::<Value>(l).unwrap()["component"] == "dispatch"),
        "no debug `claimed` line from dispatch: {:#?}",
        daemon.log()
    );
}

#[test]
fn the_default_level_logs_no_debug_lines_until_a_reload_asks_for_them() {
    let (dir, _) = echo_with("log-reload", "");
    let daemon = dir.start();
    run_one_job(&dir, &daemon);
    assert_eq!(debug_lines(&daemon), Vec::<String>::new());
    dir.config("service:\n  log_level: debug\nplugins:\n  echo: {}\n");
    daemon.signal("HUP");
    daemon.wait_log(LONG, "config reloaded");
    dir.run(&["run", "echo"]).code(0);
    crate::support::wait_until(LONG, "a debug `claimed` line after the reload", || {
        daemon.log().iter().any(|l| logged(l, "debug", "claimed"))
    });
}

#[test]
fn a_webhook_must_reach_a_loaded_plugin_and_a_declared_command() {
    let hooks = |plugin: &str, command: &str| {
        format!(
            "tokens:\n  - {{name: gh, key: s3cret}}\nwebhooks:\n  listen: 127.0.0.1:0\n  endpoints:\n    - {{name: github, path: /hook, plugin: {plugin}, command: {command}, secret_ref: gh}}\n"
        )
    };
    let (dir, file) = echo_with("webhook-plugin", &hooks("echo", "handle"));
    dir.run(&["config", "check"]).code(0);
    dir.config(&format!(
        "{}plugins:\n  echo: {{}}\n",
        hooks("ehco", "handle")
    ));
    assert_refused(
        &dir,
        &file,
        "webhooks.endpoints[0].plugin: webhook `github`: plugin `ehco` is not loaded (not configured, disabled or skipped)",
    );
    dir.config(&format!(
        "{}plugins:\n  echo: {{}}\n",
        hooks("echo", "deploy")
    ));
    assert_refused(
        &dir,
        &file,
        "webhooks.endpoints[0].command: webhook `github`: plugin `echo` declares no command `deploy`",
    );
}

#[test]
fn a_token_whose_scope_file_fails_its_pin_is_dropped_with_a_warning_or_refused_under_strict_mode() {
    let pin = format!(
        "blake3:{}",
        blake3::hash(b"{\"scopes\": [\"jobs:ro\"]}").to_hex()
    );
    let body = "include: [tokens.yaml]\n";
    let (dir, _) = echo_with("scope-pin", body);
    let tokens = dir.write(
        "tokens.yaml",
        &format!("tokens:\n  - {{name: cli, key: k1, scopes_file: scopes/cli.json, scopes_hash: '{pin}'}}\n"),
    );
    let scopes = dir.write("scopes/cli.json", "{\"scopes\": [\"*\"]}");
    dir.run(&["config", "lock"]).code(0);
    let run = dir.run(&["config", "check"]).code(0);
    assert_eq!(
        run.stdout,
        format!(
            "warning: {}: tokens[0].scopes_file: token `cli` dropped: scopes file `{}` does not match scopes_hash\n  hint: see docs/CONFIG.md for this key\nconfig ok: 2 file(s), 1 plugin(s) loaded, 0 error(s), 1 warning(s)\n",
            tokens.display(),
            scopes.display()
        )
    );
    dir.config(&format!(
        "service:\n  strict_mode: true\n{body}plugins:\n  echo: {{}}\n"
    ));
    assert_refused(
        &dir,
        &tokens,
        &format!(
            "tokens[0].scopes_file: token `cli`: scopes file `{}` does not match scopes_hash (strict_mode)",
            scopes.display()
        ),
    );
}
