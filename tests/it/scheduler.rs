//! Schedules through the real binary: invalid schedules are config errors at
//! load (check, start, reload), and `after: 0s` runs as soon as the daemon is up.

use std::time::Duration;

use crate::support::{TestDir, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// An echo plugin whose only schedule is the YAML `entry` (one list item).
fn echo_with(tag: &str, entry: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.config(&format!(
        "service:\n  tick_interval: 1s\nplugins:\n  echo:\n    schedules:\n      - {entry}\n"
    ));
    dir
}

fn scheduled_successes(dir: &TestDir) -> i64 {
    dir.count(
        "SELECT COUNT(*) FROM job_queue WHERE submitted_by = 'scheduler' AND status = 'succeeded'",
    )
}

#[test]
fn config_check_refuses_each_invalid_schedule_with_its_file_key_and_reason() {
    let cases = [
        (
            "cron: \"0 24 * * *\"",
            "invalid cron expression `0 24 * * *`: hour 24 out of range 0-23",
        ),
        (
            "cron: \"0 0 30 2 *\"",
            "cron `0 0 30 2 *` never fires: no month it allows has a day it allows",
        ),
        (
            "{every: 5m, timezone: Mars/Olympus}",
            "unknown timezone `Mars/Olympus`",
        ),
        (
            "at: \"next tuesday\"",
            "invalid at `next tuesday`: expected an RFC 3339 timestamp such as 2026-03-15T14:00:00Z",
        ),
        (
            "{every: 5m, only_between: \"08:00-25:00\"}",
            "invalid only_between `08:00-25:00`: hour 25 out of range 0-23",
        ),
        (
            "{every: 5m, not_on: [saturday, caturday]}",
            "not_on: unknown weekday `caturday` (use sunday-saturday, sun-sat or 0-7)",
        ),
        (
            "{every: 5m, cron: \"* * * * *\"}",
            "schedule sets `every` and `cron`; use exactly one of `every`, `cron`, `at` or `after`",
        ),
    ];
    for (entry, reason) in cases {
        let dir = echo_with("sched-check", entry);
        let file = dir.path.join("config.yaml");
        let expected = format!("{}: plugins.echo.schedules[0]: {reason}", file.display());
        let run = dir.run(&["config", "check"]).code(78);
        assert_eq!(run.error(), expected, "{entry}");
        let v = dir.run(&["config", "check", "--json"]).code(78).json();
        assert_eq!(v["errors"], serde_json::json!([expected]), "{entry}");
    }
}

#[test]
fn a_schedule_in_an_included_file_is_blamed_on_that_file() {
    let dir = TestDir::new("sched-include");
    dir.echo();
    dir.config("include: [schedules.yaml]\nplugins:\n  echo: {}\n");
    let included = dir.write(
        "schedules.yaml",
        "plugins:\n  echo:\n    schedules:\n      - {id: ok, every: 5m}\n      - {id: bad, cron: \"*/0 * * * *\"}\n",
    );
    let run = dir.run(&["config", "check"]).code(78);
    assert_eq!(
        run.error(),
        format!(
            "{}: plugins.echo.schedules[1]: invalid cron expression `*/0 * * * *`: minute step 0 must be at least 1",
            included.display()
        )
    );
}

#[test]
fn start_and_reload_refuse_an_invalid_schedule() {
    let dir = echo_with("sched-start", "{every: 5m, timezone: Moon/Tranquility}");
    let file = dir.path.join("config.yaml");
    let expected = format!(
        "{}: plugins.echo.schedules[0]: unknown timezone `Moon/Tranquility`",
        file.display()
    );
    let run = dir.run(&["system", "start"]).code(78);
    assert_eq!(run.error(), expected);
    assert!(!dir.db_path().exists(), "a refused start creates no ledger");

    // A running daemon keeps its config when the new one has a bad schedule.
    dir.config("plugins:\n  echo:\n    schedules:\n      - every: 5m\n");
    let daemon = dir.start();
    dir.config("plugins:\n  echo:\n    schedules:\n      - cron: \"0 0 31 4 *\"\n");
    let expected = format!(
        "{}: plugins.echo.schedules[0]: cron `0 0 31 4 *` never fires: no month it allows has a day it allows",
        file.display()
    );
    let run = dir.run(&["system", "reload"]).code(78);
    assert_eq!(run.error(), expected);
    // SIGHUP straight to the daemon (no CLI check first) is refused the same way.
    daemon.signal("HUP");
    daemon.wait_log(
        LONG,
        &format!("reload rejected, keeping the running config: {expected}"),
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn after_zero_runs_right_after_each_start() {
    let dir = echo_with("sched-after0", "{id: hello, after: 0s}");
    let daemon = dir.start();
    wait_until(LONG, "the after: 0s job succeeded", || {
        scheduled_successes(&dir) == 1
    });
    assert_eq!(
        dir.text("SELECT status FROM schedule_entries WHERE schedule_id = 'hello'")
            .as_deref(),
        Some("exhausted")
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);

    // `after` counts from each start of the service.
    let daemon = dir.start();
    wait_until(LONG, "a second run after the restart", || {
        scheduled_successes(&dir) == 2
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn the_shipped_config_runs_a_first_job_at_once() {
    let dir = TestDir::new("sched-shipped");
    dir.echo();
    let shipped = crate::support::repo().join("config");
    for file in ["config.yaml", "plugins.yaml"] {
        let text = std::fs::read_to_string(shipped.join(file)).unwrap();
        let text = text
            .replace("../plugins", "plugins")
            .replace("./data/ductile.db", "state/ductile.db")
            .replace("127.0.0.1:8080", "127.0.0.1:0");
        dir.write(file, &text);
    }
    let daemon = dir.start();
    // The API is on, with its public routes answering and a warning that no
    // token is configured for the others.
    daemon.wait_log(LONG, "no token configured");
    daemon.wait_log(LONG, "api.listen listening on http://127.0.0.1:");
    wait_until(LONG, "the first echo job succeeded", || {
        dir.count("SELECT COUNT(*) FROM job_log WHERE plugin = 'echo' AND status = 'succeeded'")
            >= 1
    });
    // The five-minute schedule is still there, next due minutes from now.
    assert_eq!(
        dir.text("SELECT status FROM schedule_entries WHERE schedule_id = 'default'")
            .as_deref(),
        Some("active")
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}
