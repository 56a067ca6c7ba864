//! The API routes that operate the daemon by hand, over real HTTP: schedules
//! listed, previewed, explained, paused and resumed; jobs cancelled queued and
//! running; circuit breakers reset. Each is refused to a token without the
//! scope it needs.

use std::time::Duration;

use serde_json::json;

use crate::http::{ADMIN, JOBS_RO, PLUGIN_RO, PLUGIN_RW, call, get, listening};
use crate::support::{Daemon, TestDir};

const LONG: Duration = Duration::from_secs(30);

fn start(tag: &str, plugins: &str) -> (TestDir, Daemon, String) {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.fixture("hang");
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n  max_workers: 2\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"*\"]\n      - token: {PLUGIN_RW}\n        scopes: [\"plugin:rw\"]\n      - token: {PLUGIN_RO}\n        scopes: [\"plugin:ro\"]\n      - token: {JOBS_RO}\n        scopes: [\"jobs:ro\"]\nplugins:\n{plugins}"
    ));
    let daemon = dir.start();
    let api = listening(&daemon, "api.listen");
    (dir, daemon, api)
}

fn status_of(dir: &TestDir, id: &str) -> Option<String> {
    dir.text(&format!("SELECT status FROM job_queue WHERE id = '{id}'"))
}

/// The processes that carry job `id` in their environment.
fn processes_of(id: &str) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| crate::support::job_of(*pid).as_deref() == Some(id))
        .collect()
}

#[test]
fn schedules_are_listed_previewed_paused_explained_and_resumed_over_the_api() {
    let (dir, _daemon, api) = start(
        "op-sched",
        "  echo:\n    schedules:\n      - id: nightly\n        cron: \"0 3 * * *\"\n      - id: hourly\n        every: 1h\n",
    );
    // The heartbeat arms both entries on its first tick.
    dir.wait_until(LONG, "both schedules armed", || {
        dir.count("SELECT COUNT(*) FROM schedule_entries") == 2
    });

    let listed = get(&api, "/schedules", Some(JOBS_RO));
    assert_eq!(listed.status, 200, "{}", listed.text());
    let rows = listed.json()["schedules"].as_array().unwrap().clone();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["echo:nightly", "echo:hourly"]);
    let nightly = &rows[0];
    assert_eq!(nightly["status"], "active");
    assert_eq!(nightly["command"], "poll");
    assert!(
        nightly["next_run_at"]
            .as_str()
            .unwrap()
            .contains("T03:00:00")
    );
    let firings = nightly["next_firings"].as_array().unwrap();
    assert_eq!(firings.len(), 3);
    for f in firings {
        assert!(f.as_str().unwrap().contains("T03:00:00"), "{f}");
    }
    assert_eq!(get(&api, "/schedules", None).status, 401);
    assert_eq!(get(&api, "/schedules", Some(PLUGIN_RO)).status, 403);

    let preview = get(&api, "/schedule/echo:hourly/preview?n=2", Some(JOBS_RO));
    assert_eq!(preview.status, 200, "{}", preview.text());
    assert_eq!(preview.json()["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(&api, "/schedule/echo:hourly/preview?n=0", Some(JOBS_RO)).status,
        400
    );
    let unknown = get(&api, "/schedule/echo:nighty/preview", Some(JOBS_RO));
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.json()["error"],
        "unknown schedule `echo:nighty`; closest: echo:nightly, echo:hourly"
    );
    // A bare plugin name with two schedules and no `default` is ambiguous.
    assert_eq!(
        get(&api, "/schedule/echo/preview", Some(JOBS_RO)).json()["error"],
        "plugin `echo` has 2 schedules; name one: echo:nightly, echo:hourly"
    );

    // A read-only token is refused and nothing changes.
    let refused = call(
        &api,
        "POST",
        "/schedule/echo:nightly/pause",
        Some(JOBS_RO),
        None,
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    let stored = "SELECT status FROM schedule_entries WHERE schedule_id = 'nightly'";
    assert_eq!(dir.text(stored).as_deref(), Some("active"));

    let paused = call(
        &api,
        "POST",
        "/schedule/echo:nightly/pause",
        Some(ADMIN),
        None,
    );
    assert_eq!(paused.status, 200, "{}", paused.text());
    assert_eq!(
        paused.json(),
        json!({"schedule": "echo:nightly", "status": "paused_manual", "changed": true})
    );
    assert_eq!(dir.text(stored).as_deref(), Some("paused_manual"));
    let again = call(
        &api,
        "POST",
        "/schedule/echo:nightly/pause",
        Some(ADMIN),
        None,
    );
    assert_eq!(again.json()["changed"], false);

    let explained = get(&api, "/schedule/echo:nightly/explain", Some(JOBS_RO));
    assert_eq!(explained.status, 200, "{}", explained.text());
    let first = explained.json()["sentences"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        first.starts_with("Schedule `echo:nightly` is paused (paused over the API at "),
        "{first}"
    );
    let listed = get(&api, "/schedules", Some(JOBS_RO)).json();
    assert_eq!(listed["schedules"][0]["status"], "paused_manual");
    assert_eq!(listed["schedules"][1]["status"], "active");

    let resumed = call(
        &api,
        "POST",
        "/schedule/echo:nightly/resume",
        Some(ADMIN),
        None,
    );
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(resumed.json()["changed"], true);
    assert_eq!(dir.text(stored).as_deref(), Some("active"));
    let again = call(
        &api,
        "POST",
        "/schedule/echo:nightly/resume",
        Some(ADMIN),
        None,
    );
    assert_eq!(again.json()["changed"], false);
}

#[test]
fn jobs_are_cancelled_queued_at_once_and_running_by_ending_their_process() {
    let (dir, _daemon, api) = start("op-cancel", "  echo: {}\n  hang:\n    parallelism: 1\n");
    let trigger = || {
        let r = call(&api, "POST", "/plugin/hang/poll", Some(ADMIN), Some("{}"));
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["job_id"].as_str().unwrap().to_string()
    };
    let running = trigger();
    dir.wait_until(LONG, "the first hang job running", || {
        status_of(&dir, &running).as_deref() == Some("running")
    });
    // Parallelism 1: the second waits in the queue.
    let queued = trigger();
    assert_eq!(status_of(&dir, &queued).as_deref(), Some("queued"));

    let path = |id: &str| format!("/job/{id}/cancel");
    let refused = call(&api, "POST", &path(&queued), Some(JOBS_RO), None);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(status_of(&dir, &queued).as_deref(), Some("queued"));

    let cancelled = call(&api, "POST", &path(&queued), Some(ADMIN), None);
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(
        cancelled.json(),
        json!({"job_id": queued, "status": "dead", "cancelled": true})
    );
    // One transaction: the status and its transition are there as it answers.
    assert_eq!(status_of(&dir, &queued).as_deref(), Some("dead"));
    assert_eq!(
        dir.text(&format!(
            "SELECT reason FROM job_transitions WHERE job_id = '{queued}' AND to_status = 'dead'"
        ))
        .as_deref(),
        Some("cancelled: cancelled over the API")
    );

    let pid = processes_of(&running);
    assert!(!pid.is_empty(), "no process runs job {running}");
    let cancelling = call(&api, "POST", &path(&running), Some(ADMIN), None);
    assert_eq!(cancelling.status, 202, "{}", cancelling.text());
    assert_eq!(cancelling.json()["cancelling"], true);
    dir.wait_until(LONG, "the running job recorded dead", || {
        status_of(&dir, &running).as_deref() == Some("dead")
    });
    assert_eq!(
        dir.text(&format!(
            "SELECT last_error FROM job_queue WHERE id = '{running}'"
        ))
        .as_deref(),
        Some("cancelled: cancelled over the API")
    );
    for p in pid {
        assert!(!crate::support::alive(p), "plugin process {p} still runs");
    }

    let terminal = call(&api, "POST", &path(&running), Some(ADMIN), None);
    assert_eq!(terminal.status, 409);
    assert_eq!(
        terminal.json()["error"],
        format!("job `{running}` is dead: only a queued or running job can be cancelled")
    );
    let unknown = call(&api, "POST", &path("nope"), Some(ADMIN), None);
    assert_eq!(unknown.status, 404);
    assert_eq!(get(&api, &path(&running), Some(ADMIN)).status, 405);
}

#[test]
fn an_open_breaker_is_reset_over_the_api_with_plugin_rw() {
    let (dir, _daemon, api) = start("op-breaker", "  echo: {}\n");
    dir.db()
        .execute_batch(
            "INSERT INTO circuit_breakers (plugin, command, state, failure_count, opened_at, last_failure_at, last_job_id, updated_at)
             VALUES ('echo', 'poll', 'open', 3, '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z', NULL, '2026-01-01T00:00:00.000000Z')",
        )
        .unwrap();
    // The overview's storage figures ride on the queue analytics.
    let storage = get(&api, "/analytics/queue", Some(ADMIN)).json()["storage"].clone();
    // At least its header page (the schema may still be in the WAL).
    assert!(storage["db_bytes"].as_u64().unwrap() >= 512, "{storage}");
    assert!(storage["wal_bytes"].as_u64().is_some(), "{storage}");
    assert!(storage["free_bytes"].as_u64().unwrap() > 0, "{storage}");
    let path = "/plugin/echo/breaker/reset";
    let refused = call(&api, "POST", path, Some(PLUGIN_RO), None);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(call(&api, "POST", path, Some(JOBS_RO), None).status, 403);
    let state = "SELECT state FROM circuit_breakers WHERE plugin = 'echo'";
    assert_eq!(dir.text(state).as_deref(), Some("open"));

    let reset = call(&api, "POST", path, Some(PLUGIN_RW), None);
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(
        reset.json(),
        json!({"plugin": "echo", "reset": ["poll"], "state": "closed"})
    );
    assert_eq!(dir.text(state).as_deref(), Some("closed"));
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM circuit_breaker_transitions WHERE reason = 'manual_reset'"),
        1
    );
    // Nothing left open: nothing reset, no second transition.
    let again = call(&api, "POST", path, Some(PLUGIN_RW), None);
    assert_eq!(again.json()["reset"], json!([]));
    assert_eq!(
        call(
            &api,
            "POST",
            "/plugin/nope/breaker/reset",
            Some(PLUGIN_RW),
            None
        )
        .status,
        404
    );
}

#[test]
fn the_job_list_pages_with_a_cursor_in_its_own_order() {
    let (_dir, _daemon, api) = start("op-pages", "  echo: {}\n");
    for _ in 0..5 {
        let r = call(&api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}"));
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = get(
        &api,
        "/jobs?plugin=echo&command=poll&limit=200",
        Some(JOBS_RO),
    )
    .json();
    assert_eq!(all["total"], 5);
    assert_eq!(all["next_cursor"], serde_json::Value::Null);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/jobs?plugin=echo&command=poll&limit=2".to_string(),
            Some(c) => format!("/jobs?plugin=echo&command=poll&limit=2&before={c}"),
        };
        let page = get(&api, &path, Some(JOBS_RO));
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        // The total counts the whole filter on every page.
        assert_eq!(page["total"], 5);
        paged.extend(ids(&page));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(Some(c), paged.last().map(String::as_str));
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, ids(&all));
    // An unknown cursor lists nothing rather than everything.
    let none = get(&api, "/jobs?before=nope", Some(JOBS_RO)).json();
    assert_eq!(none["jobs"], json!([]));
}
