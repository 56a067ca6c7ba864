//! Schedules for humans, through the real binary: `schedule list`, `schedule
//! preview` against fixed instants across DST transitions, and `schedule
//! pause|resume` with and without a running daemon.

use std::time::Duration;

use serde_json::Value;

use crate::support::TestDir;

const LONG: Duration = Duration::from_secs(60);

fn preview(dir: &TestDir, target: &str, from: &str, next: &str) -> Value {
    dir.run(&[
        "schedule", "preview", target, "--from", from, "--next", next, "--json",
    ])
    .code(0)
    .json()
}

fn at(v: &Value) -> Vec<(String, String)> {
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_string(),
                l["at"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(kind: &str, at: &str) -> (String, String) {
    (kind.to_string(), at.to_string())
}

#[test]
fn preview_walks_the_berlin_spring_forward_and_marks_the_shift() {
    let dir = TestDir::new("preview-berlin");
    dir.echo();
    dir.config("plugins:\n  echo:\n    schedules:\n      - id: morning\n        cron: \"30 9 * * *\"\n        timezone: Europe/Berlin\n        not_on: [mon]\n");
    // Sunday 2026-03-29 02:00 CET jumps to 03:00 CEST.
    let v = preview(&dir, "echo:morning", "2026-03-28T00:00:00Z", "3");
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert_eq!(
        at(&v),
        [
            pair("fire", "2026-03-28T08:30:00.000000Z"),
            pair("fire", "2026-03-29T07:30:00.000000Z"),
            pair("excluded", "2026-03-30T07:30:00.000000Z"),
            pair("fire", "2026-03-31T07:30:00.000000Z"),
        ]
    );
    let lines = v["lines"].as_array().unwrap();
    assert_eq!(lines[0]["local"], "2026-03-28 09:30:00 CET (+01:00)");
    assert!(lines[0].get("dst").is_none());
    assert_eq!(lines[1]["local"], "2026-03-29 09:30:00 CEST (+02:00)");
    assert_eq!(lines[1]["dst"], "DST shift: UTC offset +01:00 -> +02:00");
    assert_eq!(lines[2]["excluded"], "not_on");
    assert_eq!(lines[2]["resumes_at"], "2026-03-31T07:30:00.000000Z");
    let text = dir
        .run(&[
            "schedule",
            "preview",
            "echo",
            "--from",
            "2026-03-28T00:00:00Z",
            "--next",
            "2",
        ])
        .code(0)
        .stdout;
    assert_eq!(
        text,
        "echo:morning (cron 30 9 * * *) in Europe/Berlin, from 2026-03-28T00:00:00.000000Z\n  2026-03-28 09:30:00 CET (+01:00)  2026-03-28T08:30:00.000000Z\n  2026-03-29 09:30:00 CEST (+02:00)  2026-03-29T07:30:00.000000Z  [DST shift: UTC offset +01:00 -> +02:00]\n"
    );
}

#[test]
fn preview_shows_a_new_york_fall_back_and_window_exclusions() {
    let dir = TestDir::new("preview-ny");
    dir.echo();
    dir.config("plugins:\n  echo:\n    schedules:\n      - id: office\n        every: 4h\n        timezone: America/New_York\n        only_between: \"00:00-05:00\"\n");
    // 2026-11-01 02:00 EDT falls back to 01:00 EST.
    let v = preview(&dir, "echo:office", "2026-11-01T03:00:00Z", "3");
    let lines = v["lines"].as_array().unwrap();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["fire", "excluded", "fire", "fire"], "{v:#}");
    // 03:00Z + 4h = 07:00Z = 02:00 EST, after the fall-back.
    assert_eq!(lines[0]["at"], "2026-11-01T07:00:00.000000Z");
    assert_eq!(lines[0]["local"], "2026-11-01 02:00:00 EST (-05:00)");
    assert_eq!(lines[0]["dst"], "DST shift: UTC offset -04:00 -> -05:00");
    assert_eq!(lines[1]["excluded"], "outside_only_between");
    // The window opens again at midnight, local time.
    assert_eq!(lines[1]["resumes_at"], "2026-11-02T05:00:00.000000Z");
    assert_eq!(lines[2]["at"], "2026-11-02T05:00:00.000000Z");
}

#[test]
fn preview_of_an_unknown_schedule_names_the_closest() {
    let dir = TestDir::new("preview-unknown");
    dir.echo();
    dir.config("plugins:\n  echo:\n    schedules:\n      - id: nightly\n        cron: \"0 3 * * *\"\n      - id: hourly\n        every: 1h\n");
    let r = dir.run(&["schedule", "preview", "echo:nigthly"]).code(1);
    assert_eq!(
        r.error(),
        "unknown schedule `echo:nigthly`; closest: echo:nightly, echo:hourly"
    );
    let r = dir
        .run(&["schedule", "preview", "ech:hourly", "--json"])
        .code(1);
    assert_eq!(r.json()["exit_code"], 1);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("closest: echo:hourly")
    );
    let r = dir.run(&["schedule", "preview", "echo"]).code(1);
    assert_eq!(
        r.error(),
        "plugin `echo` has 2 schedules; name one: echo:nightly, echo:hourly"
    );
    dir.run(&["schedule", "preview", "echo:hourly", "--next", "0"])
        .code(2);
    dir.run(&["schedule", "preview", "echo:hourly", "--from", "soon"])
        .code(2);
}

/// Scheduler jobs in the ledger.
fn fired(dir: &TestDir) -> i64 {
    dir.count("SELECT COUNT(*) FROM job_queue WHERE submitted_by = 'scheduler'")
}

fn paused_count(dir: &TestDir) -> i64 {
    dir.count("SELECT COALESCE(SUM(count), 0) FROM decisions WHERE kind = 'paused'")
}

#[test]
fn a_pause_written_without_a_daemon_holds_and_a_live_resume_does_not_burst() {
    let dir = TestDir::new("pause-offline");
    dir.echo();
    dir.config("service:\n  tick_interval: 200ms\nplugins:\n  echo:\n    schedules:\n      - id: tick\n        every: 1s\n        catch_up: run_all\n");
    let dry = dir
        .run(&["schedule", "pause", "echo:tick", "--dry-run"])
        .code(0);
    assert_eq!(dry.stdout, "dry run: would pause schedule `echo:tick`\n");
    assert!(!dir.db_path().exists(), "a dry run writes nothing");
    let r = dir
        .run(&["schedule", "pause", "echo", "--json"])
        .code(0)
        .json();
    assert_eq!(r["status"], "paused_manual");
    assert_eq!(r["changed"], true);
    let list = dir.run(&["schedule", "list", "--json"]).code(0).json();
    assert_eq!(list["schedules"][0]["status"], "paused_manual");
    assert!(
        list["schedules"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("paused by `ductile schedule pause` at "),
    );
    let daemon = dir.start();
    dir.wait_until(LONG, "three paused occurrences", || paused_count(&dir) >= 3);
    assert_eq!(fired(&dir), 0, "a paused schedule does not fire");
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM decisions WHERE kind = 'paused'"),
        1,
        "repeats coalesce"
    );
    let why = dir.run(&["explain", "echo:tick"]).code(0).stdout;
    assert!(why.contains("Schedule `echo:tick` is paused"), "{why}");
    assert!(
        why.contains("did not run because the schedule is paused"),
        "{why}"
    );
    dir.run(&["schedule", "resume", "echo:tick"]).code(0);
    dir.wait_until(LONG, "a run after the resume", || fired(&dir) >= 1);
    drop(daemon);
    let missed = paused_count(&dir);
    // run_all makes up downtime, not a pause: the resume adds no burst of the
    // occurrences held while paused.
    assert!(
        fired(&dir) < missed.min(3),
        "{} runs after {missed} paused occurrences",
        fired(&dir)
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM decisions WHERE kind = 'catch_up_skipped'"),
        0
    );
    let again = dir.run(&["schedule", "resume", "echo:tick"]).code(0);
    assert_eq!(again.stdout, "schedule `echo:tick` is not paused\n");
}

#[test]
fn a_pause_written_while_the_daemon_runs_stops_its_firings() {
    let dir = TestDir::new("pause-live");
    dir.echo();
    dir.config("service:\n  tick_interval: 200ms\nplugins:\n  echo:\n    schedules:\n      - id: tick\n        every: 1s\n");
    let daemon = dir.start();
    dir.wait_until(LONG, "a first run", || fired(&dir) >= 1);
    dir.run(&["schedule", "pause", "echo:tick"]).code(0);
    let at_pause = fired(&dir);
    dir.wait_until(LONG, "three paused occurrences", || paused_count(&dir) >= 3);
    // A tick that read the entry just before the pause may still have fired once.
    assert!(
        fired(&dir) <= at_pause + 1,
        "{} > {at_pause} + 1",
        fired(&dir)
    );
    let list = dir.run(&["schedule", "list"]).code(0).stdout;
    assert!(list.contains("paused_manual"), "{list}");
    assert!(list.starts_with("SCHEDULE"), "{list}");
    let again = dir.run(&["schedule", "pause", "echo:tick"]).code(0);
    assert_eq!(again.stdout, "schedule `echo:tick` is already paused\n");
    drop(daemon);
}

#[test]
fn a_resume_after_a_long_paused_downtime_makes_nothing_up() {
    let dir = TestDir::new("pause-downtime");
    dir.echo();
    dir.config("service:\n  tick_interval: 200ms\nplugins:\n  echo:\n    schedules:\n      - id: hourly\n        every: 1h\n        catch_up: run_all\n");
    dir.run(&["schedule", "pause", "echo:hourly"]).code(0);
    // Paused and stopped for 2.5 hours, as the ledger sees it.
    let due =
        (chrono::Utc::now() - chrono::TimeDelta::minutes(150)).format("%Y-%m-%dT%H:%M:%S%.6fZ");
    dir.db()
        .execute(
            &format!("UPDATE schedule_entries SET next_run_at = '{due}'"),
            [],
        )
        .unwrap();
    dir.run(&["schedule", "resume", "echo:hourly"]).code(0);
    let next = dir
        .text("SELECT next_run_at FROM schedule_entries")
        .unwrap();
    assert!(next > due.to_string(), "{next} moved past {due}");
    let daemon = dir.start();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    // Three hourly runs fell in the paused downtime; run_all makes up none.
    assert_eq!(fired(&dir), 0);
    let list = dir.run(&["schedule", "list", "--json"]).code(0).json();
    assert_eq!(list["schedules"][0]["status"], "active");
    assert_eq!(list["schedules"][0]["next_run_at"], next.as_str());
}
