//! `ductile system start`: the worker pool, crash recovery, shutdown, the
//! instance lock, reload, retries, breakers and parallelism caps.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::TestDir;

const LONG: Duration = Duration::from_secs(60);

/// A config with the counter plugin writing under `out/`.
fn counter_config(dir: &TestDir, extra_plugin: &str, service: &str) {
    dir.fixture("counter");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n{service}plugins:\n  counter:\n{extra_plugin}    config:\n      out: {}\n",
        out.display()
    ));
}

fn enqueue(dir: &TestDir, plugin: &str, n: usize) -> Vec<String> {
    dir.enqueue(plugin, n)
}

fn status_counts(dir: &TestDir) -> HashMap<String, i64> {
    let db = dir.db();
    let mut stmt = db
        .prepare("SELECT status, COUNT(*) FROM job_queue GROUP BY status")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

fn runs(dir: &TestDir) -> Vec<String> {
    std::fs::read_to_string(dir.path.join("out/runs"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn kill_9_with_200_jobs_in_flight_loses_and_duplicates_nothing() {
    let dir = TestDir::new("crash200");
    counter_config(&dir, "    parallelism: 2\n", "  max_workers: 2\n");
    // Create the schema, then queue 200 jobs before any daemon runs.
    let ids = enqueue(&dir, "counter", 200);
    let daemon = dir.start();
    dir.wait_until(LONG, "some jobs done before the crash", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded'") >= 20
    });
    daemon.crash();
    let before = status_counts(&dir);
    assert!(
        before.get("queued").copied().unwrap_or(0) > 0,
        "the crash left work queued: {before:?}"
    );
    let daemon = dir.start();
    dir.wait_until(LONG, "all 200 jobs terminal", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status IN ('queued','running')") == 0
    });
    let after = status_counts(&dir);
    assert_eq!(after.get("succeeded").copied(), Some(200), "{after:?}");
    let recovered = dir.count(
        "SELECT COUNT(*) FROM job_transitions WHERE reason = 'orphaned by a crash; requeued'",
    );
    // At-least-once: every job ran; a job ran twice only if it was orphaned by the crash.
    let runs = runs(&dir);
    for id in &ids {
        assert!(runs.contains(id), "job {id} never ran");
    }
    assert!(
        runs.len() as i64 <= 200 + recovered,
        "{} runs for 200 jobs with {recovered} orphans",
        runs.len()
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue"),
        200,
        "no job rows duplicated"
    );
    drop(daemon);
}

#[test]
fn sigterm_lets_a_running_job_finish() {
    let dir = TestDir::new("sigterm");
    counter_config(&dir, "", "");
    let out = dir.path.join("out");
    dir.config(&format!(
        "plugins:\n  counter:\n    config:\n      out: {}\n      delay: \"1\"\n",
        out.display()
    ));
    enqueue(&dir, "counter", 1);
    let daemon = dir.start();
    dir.wait_until(LONG, "job running", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='running'") == 1
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded'"),
        1
    );
}

#[test]
fn shutdown_timeout_kills_the_job_and_the_next_start_recovers_it() {
    let dir = TestDir::new("sigterm-kill");
    dir.fixture("counter");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  shutdown_timeout: 300ms\nplugins:\n  counter:\n    config:\n      out: {}\n      delay: \"30\"\n",
        out.display()
    ));
    enqueue(&dir, "counter", 1);
    let daemon = dir.start();
    dir.wait_until(LONG, "plugin started", || out.join("concurrency").exists());
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='running'"),
        1,
        "left recoverable"
    );
    // The killed plugin never removed its pid file.
    let pid: i32 = std::fs::read_dir(out.join("pids"))
        .unwrap()
        .next()
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .expect("the plugin recorded its pid");
    assert!(pid > 1);
    assert!(!alive(pid), "plugin process {pid} was killed");
    // Restart with a fast plugin: the orphan is requeued as attempt 2 and succeeds.
    dir.config(&format!(
        "plugins:\n  counter:\n    config:\n      out: {}\n",
        out.display()
    ));
    let daemon = dir.start();
    dir.wait_until(LONG, "recovered job succeeded", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded' AND attempt=2") == 1
    });
    drop(daemon);
}

fn alive(pid: i32) -> bool {
    crate::support::alive(i64::from(pid))
}

#[test]
fn a_second_daemon_on_the_same_db_refuses() {
    let dir = TestDir::new("twodaemons");
    counter_config(&dir, "", "");
    let daemon = dir.start();
    let second = dir.run(&["system", "start"]).code(1);
    assert_eq!(
        second.error(),
        format!(
            "a ductile daemon (pid {}) already runs on {}; stop it first, or apply a new config with `ductile system reload`",
            daemon.pid(),
            dir.db_path().display()
        ),
        "{second:?}"
    );
    daemon.signal("INT");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn a_one_shot_hands_its_job_to_the_running_daemon() {
    let dir = TestDir::new("handover");
    counter_config(&dir, "", "");
    let daemon = dir.start();
    let run = dir.run(&["run", "counter", "--json"]).code(0);
    let v = run.json();
    assert_eq!(v["status"], "succeeded");
    let id = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(runs(&dir), vec![id]);
    daemon.wait_log(LONG, "job succeeded");
}

#[test]
fn failed_attempts_are_retried_and_each_keeps_its_stderr() {
    let dir = TestDir::new("retry");
    dir.fixture("flaky");
    let out = dir.path.join("out");
    dir.config(&format!(
        "plugins:\n  flaky:\n    retry:\n      max_attempts: 3\n      backoff_base: 100ms\n    config:\n      out: {}\n      fail_times: 2\n",
        out.display()
    ));
    let ids = enqueue(&dir, "flaky", 1);
    let daemon = dir.start();
    dir.wait_until(LONG, "job succeeded", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded'") == 1
    });
    let db = dir.db();
    let attempt: i64 = db
        .query_row(
            "SELECT attempt FROM job_queue WHERE id = ?1",
            [&ids[0]],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(attempt, 3);
    let mut stmt = db
        .prepare("SELECT attempt, status, stderr FROM job_log WHERE job_id = ?1 ORDER BY attempt")
        .unwrap();
    let rows: Vec<(i64, String, String)> = stmt
        .query_map([&ids[0]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        (rows[0].1.as_str(), rows[0].2.trim()),
        ("failed", "flaky: failing call 1")
    );
    assert_eq!(
        (rows[1].1.as_str(), rows[1].2.trim()),
        ("failed", "flaky: failing call 2")
    );
    assert_eq!(rows[2].1, "succeeded");
    // Plugin stderr also reaches the daemon's log, at WARN, tagged with the job.
    let warn = daemon
        .log()
        .into_iter()
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("flaky: failing call 1"))
        })
        .expect("a log line carrying the plugin's stderr");
    assert_eq!(warn["level"], "warn");
    assert_eq!(warn["plugin"], "flaky");
    assert_eq!(warn["job_id"], ids[0].as_str());
    drop(daemon);
}

#[test]
fn exit_78_is_never_retried() {
    let dir = TestDir::new("exit78");
    dir.fixture("exit_78");
    dir.config("plugins:\n  exit_78: {}\n");
    enqueue(&dir, "exit_78", 1);
    let daemon = dir.start();
    dir.wait_until(LONG, "job terminal", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='failed'") == 1
    });
    assert_eq!(dir.count("SELECT attempt FROM job_queue"), 1);
    assert_eq!(dir.count("SELECT COUNT(*) FROM job_log"), 1);
    drop(daemon);
}

#[test]
fn parallelism_caps_hold_under_load() {
    let dir = TestDir::new("parallel");
    dir.fixture("counter");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  max_workers: 4\nplugins:\n  counter:\n    parallelism: 2\n    config:\n      out: {}\n      delay: \"0.05\"\n",
        out.display()
    ));
    enqueue(&dir, "counter", 24);
    let daemon = dir.start();
    dir.wait_until(LONG, "all done", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded'") == 24
    });
    let seen: Vec<usize> = std::fs::read_to_string(out.join("concurrency"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 24);
    assert!(
        seen.iter().all(|n| *n <= 2),
        "never more than 2 at once: {seen:?}"
    );
    assert!(seen.contains(&2), "the cap was actually used: {seen:?}");
    drop(daemon);
}

#[test]
fn concurrency_unsafe_plugins_run_serially_by_default() {
    let dir = TestDir::new("serial");
    let plugin = dir.fixture("counter");
    let manifest = std::fs::read_to_string(plugin.join("manifest.yaml")).unwrap();
    std::fs::write(
        plugin.join("manifest.yaml"),
        format!("{manifest}concurrency_safe: false\n"),
    )
    .unwrap();
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  max_workers: 4\nplugins:\n  counter:\n    config:\n      out: {}\n      delay: \"0.05\"\n",
        out.display()
    ));
    enqueue(&dir, "counter", 8);
    let daemon = dir.start();
    dir.wait_until(LONG, "all done", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded'") == 8
    });
    let seen = std::fs::read_to_string(out.join("concurrency")).unwrap();
    assert!(seen.lines().all(|l| l.trim() == "1"), "serial: {seen}");
    drop(daemon);
}

#[test]
fn reload_with_a_broken_file_keeps_serving() {
    let dir = TestDir::new("reload-broken");
    counter_config(&dir, "", "");
    let daemon = dir.start();
    std::fs::write(dir.path.join("config.yaml"), "plugins: [unclosed\n").unwrap();
    daemon.signal("HUP");
    daemon.wait_log(LONG, "reload rejected");
    // The verdict is logged first, then recorded.
    dir.wait_until(LONG, "the rejection recorded", || {
        dir.count("SELECT COUNT(*) FROM system_events WHERE kind = 'config.reload_rejected'") == 1
    });
    let rejected: String = dir
        .db()
        .query_row(
            "SELECT data ->> '$.findings[0]' FROM system_events WHERE kind = 'config.reload_rejected'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rejected.contains("config.yaml"), "{rejected}");
    // The CLI refuses to send a reload for a config it can see is invalid.
    let refused = dir.run(&["system", "reload"]).code(78);
    assert!(refused.stderr.contains("config.yaml:"), "{refused:?}");
    // Still serving on the old config (the one-shot validates the file itself, so
    // enqueue directly and wake the daemon).
    enqueue(&dir, "counter", 1);
    daemon.signal("USR1");
    dir.wait_until(LONG, "job ran on the old config", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded'") == 1
    });
}

#[test]
fn reload_removing_a_plugin_kills_its_queued_jobs() {
    let dir = TestDir::new("reload-remove");
    dir.fixture("counter");
    let out = dir.path.join("out");
    let with_counter = format!(
        "plugins:\n  counter:\n    parallelism: 1\n    config:\n      out: {}\n      delay: \"30\"\n",
        out.display()
    );
    dir.config(&with_counter);
    enqueue(&dir, "counter", 3);
    let daemon = dir.start();
    dir.wait_until(LONG, "first job running", || {
        out.join("concurrency").exists()
    });
    dir.config("plugins: {}\n");
    let r = dir.run(&["system", "reload"]).code(0);
    assert_eq!(
        r.stdout,
        format!(
            "ductile (pid {}) reloaded {}\n",
            daemon.pid(),
            dir.path.join("config.yaml").display()
        ),
        "the daemon's verdict: {r:?}"
    );
    dir.wait_until(LONG, "queued jobs dead", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='dead'") == 2
    });
    let reason: String = dir
        .db()
        .query_row(
            "SELECT last_error FROM job_queue WHERE status='dead' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        reason,
        "plugin `counter` was removed or disabled by a config reload"
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='running'"),
        1,
        "in-flight job continues on its snapshot"
    );
    let (kind, data): (String, String) = dir
        .db()
        .query_row(
            "SELECT kind, data FROM system_events WHERE kind LIKE 'config.%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (kind.as_str(), data.as_str()),
        (
            "config.reloaded",
            r#"{"plugins":0,"removed":["counter"],"findings":[]}"#
        ),
        "the event stream hears of the reload"
    );
    drop(daemon);
    // The 30 s plugin of the killed daemon would linger: clean up its group.
    kill_recorded_pids(&out);
}

/// Kills the groups of counter plugins a test left running (their pid files
/// remain when they were killed or abandoned).
fn kill_recorded_pids(out: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(out.join("pids")) {
        for e in entries.flatten() {
            if let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() {
                crate::support::kill_if_runs(pid, "counter/run.sh", true);
            }
        }
    }
}

#[test]
fn scheduled_failures_open_the_breaker_and_status_shows_it() {
    let dir = TestDir::new("breaker");
    dir.fixture("flaky");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  tick_interval: 200ms\nplugins:\n  flaky:\n    retry:\n      max_attempts: 1\n    circuit_breaker:\n      threshold: 2\n      reset_after: 1h\n    schedules:\n      - every: 1s\n    config:\n      out: {}\n      fail_times: 100\n",
        out.display()
    ));
    let daemon = dir.start();
    dir.wait_until(LONG, "breaker open", || {
        dir.count("SELECT COUNT(*) FROM circuit_breakers WHERE state='open'") == 1
    });
    let v = dir
        .run(&["system", "breaker", "flaky", "--json"])
        .code(0)
        .json();
    assert_eq!(v["breakers"][0]["state"], "open");
    assert_eq!(v["transitions"][0]["reason"], "failure_threshold");
    let status = dir.run(&["system", "status", "--json"]).code(0).json();
    assert_eq!(status["running"], true);
    assert_eq!(status["plugins"][0]["breakers"][0]["state"], "open");
    daemon.wait_log(LONG, "circuit breaker is open");
    let r = dir.run(&["system", "reset", "flaky"]).code(0);
    assert!(r.stdout.contains("reset to closed"), "{r:?}");
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM circuit_breaker_transitions WHERE reason='manual_reset'"),
        1
    );
}

#[test]
fn if_running_cancel_kills_the_running_process_group() {
    let dir = TestDir::new("cancel");
    dir.fixture("counter");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  tick_interval: 200ms\nplugins:\n  counter:\n    retry:\n      max_attempts: 1\n    schedules:\n      - every: 2s\n        if_running: cancel\n    config:\n      out: {}\n      delay: \"30\"\n",
        out.display()
    ));
    let daemon = dir.start();
    dir.wait_until(LONG, "a job was cancelled", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='dead'") >= 1
    });
    let reason: String = dir
        .db()
        .query_row(
            "SELECT last_error FROM job_queue WHERE status='dead' LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        reason.contains("cancelled by schedule `default` (if_running: cancel)"),
        "{reason}"
    );
    let pid: i64 = dir.db().query_row("SELECT a.pid FROM job_attempts a JOIN job_queue q ON q.id = a.job_id WHERE q.status='dead' LIMIT 1", [], |r| r.get(0)).unwrap();
    assert!(
        !alive(pid as i32),
        "the cancelled plugin process {pid} is gone"
    );
    drop(daemon);
    kill_recorded_pids(&out);
}

#[test]
fn init_runs_once_per_definition_and_a_failure_marks_the_plugin_unhealthy() {
    let dir = TestDir::new("init");
    dir.fixture("with_init");
    dir.config("plugins:\n  with_init:\n    config:\n      fail_init: \"yes\"\n");
    let daemon = dir.start();
    dir.wait_until(LONG, "init ran", || {
        dir.count("SELECT COUNT(*) FROM plugin_health WHERE status = 'unhealthy'") == 1
    });
    let status = dir.run(&["system", "status", "--json"]).code(0).json();
    assert_eq!(status["plugins"][0]["health"], "unhealthy");
    assert_eq!(
        status["plugins"][0]["health_error"],
        "init refused: fail_init is set"
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue WHERE command = 'init'"),
        1,
        "not retried"
    );
    // A config change re-runs init; an unchanged restart does not.
    dir.config("plugins:\n  with_init:\n    config:\n      fail_init: \"no\"\n");
    dir.run(&["system", "reload"]).code(0);
    dir.wait_until(LONG, "init re-ran", || {
        dir.count("SELECT COUNT(*) FROM plugin_health WHERE status = 'healthy'") == 1
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    let daemon = dir.start();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue WHERE command = 'init'"),
        2
    );
}

#[test]
fn reload_refuses_to_move_the_database() {
    let dir = TestDir::new("reload-state");
    counter_config(&dir, "", "");
    let daemon = dir.start();
    let text = std::fs::read_to_string(dir.path.join("config.yaml")).unwrap();
    std::fs::write(
        dir.path.join("config.yaml"),
        text.replace("state/ductile.db", "elsewhere/ductile.db"),
    )
    .unwrap();
    // The CLI looks for a daemon on the new path and does not find one.
    let r = dir.run(&["system", "reload"]).code(1);
    assert!(
        r.error().contains("a changed state.path needs a restart"),
        "{r:?}"
    );
    // A SIGHUP from elsewhere is refused by the daemon itself, and recorded.
    daemon.signal("HUP");
    daemon.wait_log(LONG, "state.path changed from");
    dir.wait_until(LONG, "the rejection recorded", || {
        dir.count("SELECT COUNT(*) FROM config_snapshots WHERE reason LIKE 'reload rejected: state.path changed%'") == 1
    });
    assert!(!dir.path.join("elsewhere").exists());
}

#[test]
fn every_daemon_log_line_is_one_json_object_with_the_spec_fields() {
    let dir = TestDir::new("logs");
    counter_config(&dir, "", "");
    enqueue(&dir, "counter", 2);
    let daemon = dir.start();
    dir.wait_until(LONG, "jobs done", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status='succeeded'") == 2
    });
    daemon.signal("TERM");
    daemon.wait_log(LONG, "ductile stopped");
    let lines = daemon.log();
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert!(lines.len() >= 5, "{lines:?}");
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["timestamp", "level", "component", "message"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        assert!(
            ductile::clock::parse_ts(v["timestamp"].as_str().unwrap()).is_some(),
            "{line}"
        );
    }
    let done: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("job succeeded"))
        .collect();
    assert_eq!(done.len(), 2, "{lines:?}");
    for l in done {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(
            (
                v["level"].as_str(),
                v["component"].as_str(),
                v["plugin"].as_str()
            ),
            (Some("info"), Some("dispatch"), Some("counter"))
        );
        assert!(v["job_id"].as_str().is_some_and(|id| id.len() == 36), "{l}");
    }
}
