//! Tests of what the heartbeat records when due work does not run: a manual
//! pause held across occurrences (and resumed without a burst), and the
//! occurrences `only_between` refuses, on a clock the tests move.

use std::sync::Arc;

use super::tests::{heartbeat, jobs, setup, t};
use crate::clock::ManualClock;
use crate::store::{decisions, schedules};

fn kinds(hb: &super::Heartbeat) -> Vec<(String, i64)> {
    decisions::for_plugin(&hb.conn, "ok_basic", None, None, 100)
        .unwrap()
        .into_iter()
        .map(|r| (r.kind, r.count))
        .collect()
}

#[test]
fn a_manual_pause_holds_every_occurrence_and_a_resume_fires_only_the_next() {
    let (_tmp, root) = setup("hb-pause", "      - every: 1m\n        catch_up: run_all\n");
    let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
    let mut hb = heartbeat(&root, clock.clone());
    let paused = "paused by hand";
    schedules::set_status(
        &hb.conn,
        "ok_basic",
        "default",
        "paused_manual",
        Some(paused),
        Some(t("2026-03-01T00:01:00Z")),
        t("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    for minute in 1..=5 {
        clock.set(t(&format!("2026-03-01T00:0{minute}:00Z")));
        assert!(hb.tick().unwrap().fired.is_empty(), "minute {minute}");
    }
    assert_eq!(jobs(&root), 0);
    assert_eq!(kinds(&hb), [("paused".to_string(), 5)]);
    let entry = schedules::find(&hb.conn, "ok_basic", "default")
        .unwrap()
        .unwrap();
    assert_eq!(
        entry.next_run_at.as_deref(),
        Some("2026-03-01T00:06:00.000000Z")
    );
    // A restart while paused makes nothing up, even with run_all.
    drop(hb);
    clock.set(t("2026-03-01T00:30:00Z"));
    let mut hb = heartbeat(&root, clock.clone());
    assert_eq!(jobs(&root), 0);
    // Resume as `ductile schedule resume` does: from the next occurrence.
    schedules::set_status(
        &hb.conn,
        "ok_basic",
        "default",
        "active",
        None,
        Some(t("2026-03-01T00:31:00Z")),
        t("2026-03-01T00:30:00Z"),
    )
    .unwrap();
    assert!(hb.tick().unwrap().fired.is_empty());
    clock.set(t("2026-03-01T00:31:00Z"));
    assert_eq!(hb.tick().unwrap().fired.len(), 1);
    assert_eq!(jobs(&root), 1, "one run, no burst of the 30 held back");
}

#[test]
fn a_pause_survives_a_redefinition() {
    let (_tmp, root) = setup("hb-pause-reload", "      - every: 1m\n");
    let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
    let hb = heartbeat(&root, clock.clone());
    schedules::set_status(
        &hb.conn,
        "ok_basic",
        "default",
        "paused_manual",
        Some("x"),
        None,
        t("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    drop(hb);
    let text = std::fs::read_to_string(&root)
        .unwrap()
        .replace("every: 1m", "every: 2m");
    std::fs::write(&root, text).unwrap();
    let hb = heartbeat(&root, clock.clone());
    let entry = schedules::find(&hb.conn, "ok_basic", "default")
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, "paused_manual");
    assert_eq!(entry.reason.as_deref(), Some("x"));
    assert_eq!(
        entry.next_run_at.as_deref(),
        Some("2026-03-01T00:02:00.000000Z")
    );
}

#[test]
fn a_night_outside_the_window_is_one_decision() {
    let (_tmp, root) = setup(
        "hb-window",
        "      - every: 1h\n        only_between: \"08:00-10:00\"\n",
    );
    let clock = Arc::new(ManualClock::new(t("2026-03-01T08:30:00Z")));
    let mut hb = heartbeat(&root, clock.clone());
    clock.set(t("2026-03-01T09:30:00Z"));
    assert_eq!(hb.tick().unwrap().fired.len(), 1);
    super::tests::finish_all(&root);
    clock.set(t("2026-03-02T08:00:00Z"));
    assert_eq!(hb.tick().unwrap().fired.len(), 1);
    let rows = decisions::for_plugin(&hb.conn, "ok_basic", Some("default"), None, 10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].kind, "outside_only_between");
    assert_eq!(rows[0].detail, "outside only_between 08:00-10:00 (UTC)");
    assert_eq!(
        rows[0].due_at.as_deref(),
        Some("2026-03-01T10:30:00.000000Z")
    );
}

#[test]
fn a_paused_one_shot_left_due_does_not_wake_the_loop_at_once() {
    let (_tmp, root) = setup("hb-pause-at", "      - at: \"2026-03-01T00:10:00Z\"\n");
    let clock = Arc::new(ManualClock::new(t("2026-03-01T00:00:00Z")));
    let mut hb = heartbeat(&root, clock.clone());
    assert_eq!(hb.next_due().unwrap(), Some(t("2026-03-01T00:10:00Z")));
    schedules::set_status(
        &hb.conn,
        "ok_basic",
        "default",
        "paused_manual",
        None,
        Some(t("2026-03-01T00:10:00Z")),
        t("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    clock.set(t("2026-03-01T00:20:00Z"));
    assert!(hb.tick().unwrap().fired.is_empty());
    // Still due (a one-shot waits for its resume), but not a reason to spin.
    assert_eq!(hb.next_due().unwrap(), None);
    assert_eq!(kinds(&hb), [("paused".to_string(), 1)]);
}
