//! "Why didn't it run?": every scheduler and intake decision that did not
//! produce a run is a ledger row, and `ductile explain` reads it back as a
//! sentence. Each test provokes one kind of decision through the real daemon
//! (or the real HTTP listener) and asks the real binary why.

use std::time::Duration;

use chrono::{Datelike, Timelike, Utc};
use serde_json::Value;

use crate::http::{Api, HOOK_SECRET, hook, sign};
use crate::support::TestDir;

const LONG: Duration = Duration::from_secs(60);

/// Decision rows of `kind` recorded so far.
fn rows(dir: &TestDir, kind: &str) -> i64 {
    dir.count(&format!(
        "SELECT COUNT(*) FROM decisions WHERE kind = '{kind}'"
    ))
}

/// `ductile explain <target> --json`.
fn explain(dir: &TestDir, target: &str) -> Value {
    dir.run(&["explain", target, "--json"]).code(0).json()
}

/// The decision of `kind` in an `explain --json` answer.
fn decision<'v>(v: &'v Value, kind: &str) -> &'v Value {
    v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} decision in {v:#}"))
}

/// Kills the plugin processes the counter fixture recorded (its jobs sleep
/// past the daemon's end on purpose).
fn kill_counter_runs(out: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(out.join("pids")) {
        for e in entries.flatten() {
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() {
                crate::support::kill_if_runs(pid, "counter/run.sh", true);
            }
        }
    }
}

#[test]
fn if_running_skip_and_the_poll_guard_are_explained_and_coalesced() {
    let dir = TestDir::new("explain-busy");
    dir.fixture("counter");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  tick_interval: 200ms\nplugins:\n  counter:\n    max_outstanding_polls: 1\n    retry:\n      max_attempts: 1\n    schedules:\n      - id: slow\n        every: 1s\n      - id: guarded\n        every: 1s\n        if_running: queue\n    config:\n      out: {}\n      delay: \"30\"\n",
        out.display()
    ));
    let daemon = dir.start();
    dir.wait_until(LONG, "three skips of each kind", || {
        dir.count("SELECT COALESCE(MIN(count), 0) FROM decisions WHERE kind IN ('if_running_skip', 'poll_guard')") >= 3
            && rows(&dir, "if_running_skip") == 1
            && rows(&dir, "poll_guard") == 1
    });
    drop(daemon);
    kill_counter_runs(&out);
    // One row per reason however often it repeated.
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM decisions WHERE scope = 'slow'"),
        1
    );
    let slow = explain(&dir, "counter:slow");
    let d = decision(&slow, "if_running_skip");
    assert!(d["count"].as_i64().unwrap() >= 3, "{d:#}");
    let sentence = d["sentence"].as_str().unwrap();
    assert!(
        sentence.contains("schedule `counter:slow` was skipped because a previous run was still queued or running (a previous run is still queued or running (if_running: skip))"),
        "{sentence}"
    );
    assert!(sentence.contains(" times from "), "{sentence}");
    let guarded = explain(&dir, "counter:guarded");
    let d = decision(&guarded, "poll_guard");
    assert!(
        d["sentence"].as_str().unwrap().contains(
            "was held back by the poll guard (poll guard: max_outstanding_polls reached)"
        ),
        "{d:#}"
    );
    // Scoped: the guard's decisions are not the slow schedule's.
    assert!(
        slow["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["scope"] == "slow")
    );
    let text = dir.run(&["explain", "counter"]).code(0).stdout;
    assert!(text.contains("Schedule `counter:slow` is active"), "{text}");
    assert!(text.contains("poll guard"), "{text}");
}

#[test]
fn an_open_breaker_is_explained() {
    let dir = TestDir::new("explain-breaker");
    dir.fixture("flaky");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  tick_interval: 200ms\nplugins:\n  flaky:\n    retry:\n      max_attempts: 1\n    circuit_breaker:\n      threshold: 1\n      reset_after: 1h\n    schedules:\n      - every: 1s\n    config:\n      out: {}\n      fail_times: 100\n",
        out.display()
    ));
    let daemon = dir.start();
    dir.wait_until(LONG, "a poll held by the breaker", || {
        rows(&dir, "breaker_open") >= 1
    });
    drop(daemon);
    let v = explain(&dir, "flaky:default");
    let d = decision(&v, "breaker_open");
    assert_eq!(d["command"], "poll");
    assert!(
        d["sentence"].as_str().unwrap().contains(
            "schedule `flaky:default` was held back because the circuit breaker was open"
        ),
        "{d:#}"
    );
    assert!(d["due_at"].is_string(), "the occurrence is named: {d:#}");
}

#[test]
fn only_between_and_not_on_exclusions_are_explained_when_armed() {
    let dir = TestDir::new("explain-window");
    dir.echo();
    let now = Utc::now();
    // A window that opens two hours from now, so now is outside it; and today
    // and tomorrow excluded, so the next second is on a not_on day.
    let open = (now.hour() + 2) % 24;
    let close = (now.hour() + 3) % 24;
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let today = now.weekday().num_days_from_sunday() as usize;
    dir.config(&format!(
        "service:\n  tick_interval: 200ms\nplugins:\n  echo:\n    schedules:\n      - id: window\n        every: 1s\n        only_between: \"{open:02}:00-{close:02}:00\"\n      - id: weekday\n        every: 1s\n        not_on: [{}, {}]\n",
        DAYS[today],
        DAYS[(today + 1) % 7]
    ));
    let daemon = dir.start();
    dir.wait_until(LONG, "both exclusions recorded", || {
        rows(&dir, "outside_only_between") == 1 && rows(&dir, "not_on") == 1
    });
    drop(daemon);
    let v = explain(&dir, "echo:window");
    let d = decision(&v, "outside_only_between");
    // A window closing at midnight is shown ending at 24:00.
    let shown_close = if close == 0 { 24 } else { close };
    let expected = format!(
        "did not run because the time fell outside only_between (outside only_between {open:02}:00-{shown_close:02}:00 (UTC))"
    );
    assert!(d["sentence"].as_str().unwrap().contains(&expected), "{d:#}");
    let v = explain(&dir, "echo:weekday");
    let d = decision(&v, "not_on");
    let expected = format!(
        "did not run because the day is excluded by not_on (not_on [{}] (UTC))",
        {
            let mut days = [DAYS[today], DAYS[(today + 1) % 7]];
            days.sort_by_key(|d| DAYS.iter().position(|x| x == d));
            days.join(", ")
        }
    );
    assert!(d["sentence"].as_str().unwrap().contains(&expected), "{d:#}");
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue"),
        0,
        "nothing ran"
    );
}

#[test]
fn runs_dropped_by_catch_up_skip_are_explained() {
    let dir = TestDir::new("explain-catchup");
    dir.echo();
    dir.config("service:\n  tick_interval: 200ms\nplugins:\n  echo:\n    schedules:\n      - id: hourly\n        every: 1h\n");
    let daemon = dir.start();
    dir.wait_until(LONG, "armed", || {
        dir.count("SELECT COUNT(*) FROM schedule_entries") == 1
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    // Downtime, as the ledger sees it: the next run was due 2.5 hours ago, so
    // three hourly runs were missed.
    let due = (Utc::now() - chrono::TimeDelta::minutes(150)).format("%Y-%m-%dT%H:%M:%S%.6fZ");
    dir.db()
        .execute(
            &format!("UPDATE schedule_entries SET next_run_at = '{due}'"),
            [],
        )
        .unwrap();
    let daemon = dir.start();
    dir.wait_until(LONG, "catch-up decision", || {
        rows(&dir, "catch_up_skipped") == 1
    });
    drop(daemon);
    let v = explain(&dir, "echo:hourly");
    let d = decision(&v, "catch_up_skipped");
    assert!(
        d["sentence"]
            .as_str()
            .unwrap()
            .contains("schedule `echo:hourly` did not make up missed runs (missed 3 run(s) while stopped; catch_up: skip enqueued 0)"),
        "{d:#}"
    );
    assert_eq!(dir.count("SELECT COUNT(*) FROM job_queue"), 0);
}

#[test]
fn webhook_refusals_and_duplicates_are_explained() {
    let a = Api::start("explain-hooks");
    let body = br#"{"action":"push"}"#;
    let signed = |delivery: &str| {
        hook(
            &a.hooks,
            "/webhook/github",
            body,
            &[
                ("X-Hub-Signature-256", sign(HOOK_SECRET, body)),
                ("X-GitHub-Delivery", delivery.to_string()),
            ],
        )
    };
    let first = signed("d-1");
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.json()["job_id"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(signed("d-1").status, 200);
    }
    let forged = hook(
        &a.hooks,
        "/webhook/github",
        body,
        &[
            ("X-Hub-Signature-256", sign("wrong", body)),
            ("X-GitHub-Delivery", "d-2".into()),
        ],
    );
    assert_eq!(forged.status, 403);
    let garbled = b"{not json";
    let bad = hook(
        &a.hooks,
        "/webhook/github",
        garbled,
        &[
            ("X-Hub-Signature-256", sign(HOOK_SECRET, garbled)),
            ("X-GitHub-Delivery", "d-3".into()),
        ],
    );
    assert_eq!(bad.status, 400);
    // Refusals are recorded without holding up the answer: wait for them.
    a.dir.wait_until(LONG, "refusals recorded", || {
        rows(&a.dir, "webhook_signature_rejected") == 1 && rows(&a.dir, "parse_invalid") == 1
    });
    let v = explain(&a.dir, "echo:webhook:github");
    let d = decision(&v, "deduplicated");
    assert_eq!(d["count"], 2, "two redeliveries, one row: {d:#}");
    assert_eq!(d["job_id"], id.as_str());
    let d = decision(&v, "webhook_signature_rejected");
    assert!(
        d["sentence"]
            .as_str()
            .unwrap()
            .contains("a delivery to webhook `github` was refused: bad or missing webhook signature (bad or missing signature on /webhook/github)"),
        "{d:#}"
    );
    let d = decision(&v, "parse_invalid");
    assert!(
        d["sentence"]
            .as_str()
            .unwrap()
            .contains("was refused because it could not be parsed (the body is not valid JSON)"),
        "{d:#}"
    );
    let story = a.dir.run(&["explain", "job", &id]).code(0).stdout;
    assert!(
        story.contains("2 later submissions were deduplicated onto this job"),
        "{story}"
    );
    assert!(
        story.contains(&format!(
            "Job {id} (echo handle, submitted by webhook:github"
        )),
        "{story}"
    );
}

#[test]
fn a_disk_refusal_recorded_by_any_code_is_explained() {
    let dir = TestDir::new("explain-disk");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    dir.run(&["run", "echo"]).code(0);
    {
        use ductile::store::decisions::{self, Decision, Kind};
        let conn =
            ductile::store::open(&dir.db_path(), ductile::config::Synchronous::Normal).unwrap();
        let d = Decision::new(
            "echo",
            "api",
            "poll",
            Kind::AdmissionRefusedDisk,
            "12 MiB free, below state.min_free_bytes (64 MiB)",
            Utc::now(),
        );
        decisions::record(&conn, &d).unwrap();
        decisions::record(&conn, &d).unwrap();
    }
    let v = explain(&dir, "echo");
    let d = decision(&v, "admission_refused_disk");
    assert_eq!(d["count"], 2);
    assert!(
        d["sentence"]
            .as_str()
            .unwrap()
            .contains("a submission by api was refused because the disk is nearly full (12 MiB free, below state.min_free_bytes (64 MiB))"),
        "{d:#}"
    );
    // --since after the refusal leaves it out.
    let later = (Utc::now() + chrono::TimeDelta::minutes(1)).to_rfc3339();
    let v = dir
        .run(&["explain", "echo", "--since", &later, "--json"])
        .code(0)
        .json();
    assert_eq!(v["decisions"], serde_json::json!([]));
    assert!(
        v["sentences"][0]
            .as_str()
            .unwrap()
            .starts_with("No decision kept echo from running since"),
        "{v:#}"
    );
}

#[test]
fn explain_refuses_unknown_names_and_bad_times() {
    let dir = TestDir::new("explain-bad");
    dir.echo();
    dir.config(
        "plugins:\n  echo:\n    schedules:\n      - id: nightly\n        cron: \"0 3 * * *\"\n",
    );
    let r = dir.run(&["explain", "ecko"]).code(1);
    assert_eq!(r.error(), "unknown plugin `ecko`; did you mean `echo`?");
    let r = dir.run(&["explain", "echo:nightlly", "--json"]).code(1);
    assert_eq!(r.json()["exit_code"], 1);
    assert_eq!(
        r.error(),
        "unknown schedule `echo:nightlly`; closest: echo:nightly"
    );
    dir.run(&["explain", "echo", "--since", "yesterday"])
        .code(2);
    dir.run(&["explain", "job", "nope"]).code(1);
}

#[test]
fn system_migrate_upgrades_a_v4_ledger_and_explain_reads_it() {
    let dir = TestDir::new("explain-v4");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    std::fs::create_dir_all(dir.path.join("state")).unwrap();
    {
        let c = rusqlite::Connection::open(dir.db_path()).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
        c.execute_batch(include_str!("../fixtures/ledgers/v4.sql"))
            .unwrap();
    }
    dir.run(&["explain", "echo"]).code(78);
    let v = dir.run(&["system", "migrate", "--json"]).code(0).json();
    assert_eq!((v["from"].as_i64(), v["to"].as_i64()), (Some(4), Some(7)));
    assert_eq!(dir.count("SELECT COUNT(*) FROM decisions"), 0);
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue"),
        3,
        "rows survive"
    );
    let text = dir.run(&["explain", "echo"]).code(0).stdout;
    assert!(
        text.contains("No decision kept echo from running"),
        "{text}"
    );
}
