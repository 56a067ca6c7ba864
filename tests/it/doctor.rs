//! `system selfcheck`, `system doctor` (and `GET /system/*`), the disk-space
//! guard on new work, and the skills manifest, against the real binary.

use std::time::Duration;

use serde_json::Value;

use crate::http::{ADMIN, Api, EVENTS_RO, HOOK_SECRET, JOBS_RO, WEBHOOKS, call, get, hook, sign};
use crate::support::TestDir;

const LONG: Duration = Duration::from_secs(30);

/// The check called `name` in a report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in {report:#}"))
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    check(report, name)["status"].as_str().unwrap()
}

/// A config with echo and a ledger holding one finished job.
fn with_ledger(tag: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.echo();
    dir.config("plugins:\n  echo:\n    config:\n      message: hi\n");
    dir.run(&["run", "echo"]).code(0);
    dir
}

#[test]
fn selfcheck_passes_offline_and_skips_the_ledger_checks_while_a_daemon_runs() {
    let dir = with_ledger("selfcheck-ok");
    let r = dir.run(&["system", "selfcheck", "--json"]).code(0);
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v:#}");
    for name in [
        "config_discovery",
        "config_load",
        "pid_lock",
        "db_integrity",
        "db_schema",
        "queue_terminal_freshness",
    ] {
        assert_eq!(status(&v, name), "ok", "{name}: {v:#}");
    }
    let text = dir.run(&["system", "selfcheck"]).code(0);
    assert!(text.stdout.contains("selfcheck: ok"), "{}", text.stdout);

    let daemon = dir.start();
    let v = dir.run(&["system", "selfcheck", "--json"]).code(0).json();
    assert_eq!(v["healthy"], true, "{v:#}");
    assert!(
        check(&v, "pid_lock")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("a ductile daemon (pid {})", daemon.pid())),
        "{v:#}"
    );
    for name in ["db_integrity", "db_schema", "queue_terminal_freshness"] {
        let c = check(&v, name);
        assert_eq!(c["status"], "skipped", "{v:#}");
        assert!(
            c["detail"]
                .as_str()
                .unwrap()
                .starts_with("skipped: a ductile daemon (pid"),
            "{v:#}"
        );
        assert!(
            c["detail"].as_str().unwrap().contains("WAL safety"),
            "{v:#}"
        );
    }
    drop(daemon);
}

#[test]
fn selfcheck_fails_on_schema_drift_and_stale_finished_jobs() {
    let dir = with_ledger("selfcheck-fail");
    dir.db()
        .execute_batch("UPDATE job_queue SET completed_at = '2000-01-01T00:00:00.000000Z'")
        .unwrap();
    let v = dir.run(&["system", "selfcheck", "--json"]).code(1).json();
    assert_eq!(v["status"], "failed");
    assert_eq!(status(&v, "db_integrity"), "ok");
    let stale = check(&v, "queue_terminal_freshness");
    assert_eq!(stale["status"], "fail", "{v:#}");
    assert!(
        stale["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 finished job(s) completed before"),
        "{v:#}"
    );
    assert!(stale["remedy"].as_str().unwrap().contains("retention"));

    dir.db()
        .execute_batch("DROP INDEX idx_job_queue_retry")
        .unwrap();
    let v = dir.run(&["system", "selfcheck", "--json"]).code(1).json();
    let schema = check(&v, "db_schema");
    assert_eq!(schema["status"], "fail", "{v:#}");
    assert!(
        schema["detail"]
            .as_str()
            .unwrap()
            .contains("missing index idx_job_queue_retry"),
        "{v:#}"
    );
    assert_eq!(status(&v, "queue_terminal_freshness"), "skipped");
}

#[test]
fn selfcheck_reports_a_config_that_does_not_load() {
    let dir = TestDir::new("selfcheck-config");
    dir.config("service:\n  max_workers: lots\n");
    let r = dir.run(&["system", "selfcheck", "--json"]).code(1);
    let v = r.json();
    assert_eq!(status(&v, "config_discovery"), "ok");
    let load = check(&v, "config_load");
    assert_eq!(load["status"], "fail", "{v:#}");
    assert!(load["detail"].as_str().unwrap().contains("max_workers"));
    assert_eq!(status(&v, "db_integrity"), "skipped");
}

#[test]
fn doctor_names_each_failing_check_with_a_remedy() {
    let dir = TestDir::new("doctor-fail");
    dir.echo();
    dir.fixture("error_no_retry");
    dir.config("plugins:\n  echo: {}\n  error_no_retry: {}\n");
    dir.run(&["run", "echo"]).code(0);
    let job = dir.text("SELECT id FROM job_queue").unwrap();
    dir.db()
        .execute_batch(&format!(
            "UPDATE job_queue SET status = 'running', started_at = '2001-01-01T00:00:00.000000Z', completed_at = NULL WHERE id = '{job}';
             INSERT INTO circuit_breakers (plugin, command, state, failure_count, opened_at, updated_at)
               VALUES ('echo', 'poll', 'open', 3, '2001-01-01T00:00:00Z', '2001-01-01T00:00:00Z');
             INSERT INTO schedule_entries (plugin, schedule_id, command, fingerprint, status, reason, created_at, updated_at)
               VALUES ('echo', 'nightly', 'poll', 'x', 'paused_invalid', 'cron `61 * * * *` does not parse', '2001-01-01T00:00:00Z', '2001-01-01T00:00:00Z');"
        ))
        .unwrap();
    let v = dir.run(&["system", "doctor", "--json"]).code(1).json();
    assert_eq!(v["kind"], "doctor");
    assert_eq!(v["status"], "failed");
    assert_eq!(status(&v, "plugin_health.echo"), "ok", "{v:#}");
    let health = check(&v, "plugin_health.error_no_retry");
    assert_eq!(health["status"], "fail");
    assert!(
        health["detail"]
            .as_str()
            .unwrap()
            .contains("error_no_retry: this input can never succeed"),
        "{v:#}"
    );
    assert!(
        health["remedy"]
            .as_str()
            .unwrap()
            .contains("ductile run error_no_retry health")
    );
    let breaker = check(&v, "breaker.echo.poll");
    assert_eq!(breaker["status"], "fail");
    assert!(
        breaker["remedy"]
            .as_str()
            .unwrap()
            .contains("ductile system reset echo --command poll"),
        "{v:#}"
    );
    let stuck = check(&v, "stuck_jobs");
    assert_eq!(stuck["status"], "fail");
    assert!(
        stuck["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{job} (echo poll)")),
        "{v:#}"
    );
    let schedule = check(&v, "schedule.echo.nightly");
    assert_eq!(schedule["status"], "fail");
    assert!(
        schedule["detail"]
            .as_str()
            .unwrap()
            .contains("does not parse")
    );
    assert_eq!(status(&v, "disk_free"), "ok");
    // Every failure carries its one-line fix; the text form shows it.
    for c in v["checks"].as_array().unwrap() {
        if c["status"] == "fail" {
            assert!(c["remedy"].as_str().is_some_and(|r| !r.is_empty()), "{c}");
        }
    }
    let text = dir.run(&["system", "doctor"]).code(1);
    assert!(
        text.stdout
            .contains("fix: see why with `ductile job logs --plugin echo --status failed`"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.ends_with("doctor: failed\n"), "{}", text.stdout);
}

#[test]
fn doctor_and_selfcheck_answer_over_http_with_a_read_scope() {
    let a = Api::start("doctor-http");
    for path in ["/system/doctor", "/system/selfcheck"] {
        assert_eq!(get(&a.api, path, None).status, 401, "{path}");
        assert_eq!(get(&a.api, path, Some(EVENTS_RO)).status, 403, "{path}");
    }
    let r = get(&a.api, "/system/doctor", Some(JOBS_RO));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["kind"], "doctor");
    assert_eq!(status(&v, "plugin_health.echo"), "ok", "{v:#}");
    assert_eq!(status(&v, "breakers"), "ok");
    assert_eq!(status(&v, "stuck_jobs"), "ok");
    let r = get(&a.api, "/system/selfcheck", Some(JOBS_RO));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["healthy"], true, "{v:#}");
    // The daemon answering holds the lock itself: the ledger checks skip.
    assert_eq!(status(&v, "db_integrity"), "skipped", "{v:#}");
    assert!(
        check(&v, "db_integrity")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("this ductile daemon (pid {})", a.daemon.pid())),
        "{v:#}"
    );
}

#[test]
fn the_disk_guard_refuses_new_work_below_min_free_bytes_and_resumes_after_a_reload() {
    let dir = TestDir::new("disk-guard");
    crate::http::write_tree(&dir, "", WEBHOOKS);
    let config = dir.path.join("config.yaml");
    let base = std::fs::read_to_string(&config).unwrap();
    let with_min = |min: &str| {
        base.replace(
            "  path: state/ductile.db\n",
            &format!("  path: state/ductile.db\n  min_free_bytes: {min}\n"),
        )
        .replace(
            "      message: hello\n",
            "      message: hello\n    schedules:\n      - id: tick\n        every: 1s\n",
        ) + "pipelines:\n  - name: relay\n    on: go\n    steps:\n      - uses: echo\n"
    };
    // No file system here has a pebibyte free: the guard refuses.
    std::fs::write(&config, with_min("1024TB")).unwrap();
    let a = Api::start_in(dir);
    let r = call(&a.api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}"));
    assert_eq!(r.status, 503, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(
            "below state.min_free_bytes (1 PiB); new work is refused until space is freed"
        ),
        "{error}"
    );
    assert!(r.header("retry-after").is_some());
    let body = br#"{"n":1}"#;
    let h = hook(
        &a.hooks,
        "/webhook/github",
        body,
        &[
            ("X-Hub-Signature-256", sign(HOOK_SECRET, body)),
            ("X-GitHub-Delivery", "d-1".to_string()),
        ],
    );
    assert_eq!(h.status, 503, "{}", h.text());
    a.daemon
        .wait_log(LONG, "new work is refused until space is freed");
    a.dir.wait_until(LONG, "a schedule skipped for disk space", || {
        a.dir.count(
            "SELECT COUNT(*) FROM system_events WHERE kind = 'scheduler.skipped' AND data LIKE '%admission refused%'",
        ) > 0
    });
    let run = a.dir.run(&["run", "echo"]).code(1);
    assert!(
        run.error().contains("below state.min_free_bytes"),
        "{}",
        run.stderr
    );
    let run = a.dir.run(&["pipeline", "run", "relay"]).code(1);
    assert!(
        run.error().contains("below state.min_free_bytes"),
        "{}",
        run.stderr
    );
    let r = call(&a.api, "POST", "/pipeline/relay", Some(ADMIN), Some("{}"));
    assert_eq!(r.status, 503, "{}", r.text());
    // Each refusal is a decision `explain` answers from: the API trigger,
    // the webhook delivery and the schedule.
    a.dir.wait_until(LONG, "every refusal recorded", || {
        let v = a.dir.run(&["explain", "echo", "--json"]).code(0).json();
        let scopes: Vec<String> = v["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == "admission_refused_disk")
            .map(|d| d["scope"].as_str().unwrap().to_string())
            .collect();
        ["api", "webhook:github", "tick"]
            .iter()
            .all(|want| scopes.iter().any(|s| s == want))
    });
    let v = a.dir.run(&["system", "doctor", "--json"]).code(1).json();
    let disk = check(&v, "disk_free");
    assert_eq!(disk["status"], "fail", "{v:#}");
    assert!(
        disk["detail"]
            .as_str()
            .unwrap()
            .contains("new work is refused")
    );
    assert_eq!(
        a.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE submitted_by != 'scheduler'"),
        0
    );

    // Lowering the threshold and reloading lets work in again, no restart.
    std::fs::write(&config, with_min("1KB")).unwrap();
    let r = call(&a.api, "POST", "/system/reload", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&a.api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}"));
    assert_eq!(r.status, 202, "{}", r.text());
    a.daemon.wait_log(LONG, "admitting new work again");
    a.dir.wait_until(LONG, "a scheduled poll fired again", || {
        a.dir
            .count("SELECT COUNT(*) FROM system_events WHERE kind = 'scheduler.fired'")
            > 0
    });
    let v = a.dir.run(&["system", "doctor", "--json"]).code(0).json();
    assert_eq!(status(&v, "disk_free"), "ok", "{v:#}");
}

#[test]
fn min_free_bytes_is_a_size_and_refuses_nonsense() {
    let dir = TestDir::new("disk-config");
    dir.echo();
    dir.write(
        "config.yaml",
        "plugin_roots: [plugins]\nstate:\n  path: state/ductile.db\n  min_free_bytes: lots\nplugins:\n  echo: {}\n",
    );
    let r = dir.run(&["config", "check"]).code(78);
    assert!(
        r.stderr
            .contains("state.min_free_bytes: invalid size `lots`"),
        "{}",
        r.stderr
    );
    dir.write(
        "config.yaml",
        "plugin_roots: [plugins]\nstate:\n  path: state/ductile.db\n  min_free_bytes: 2048TB\nplugins:\n  echo: {}\n",
    );
    let r = dir.run(&["config", "check"]).code(78);
    assert!(r.stderr.contains("larger than 1024TB"), "{}", r.stderr);
    // Zero turns the guard off.
    dir.write(
        "config.yaml",
        "plugin_roots: [plugins]\nstate:\n  path: state/ductile.db\n  min_free_bytes: 0\nplugins:\n  echo: {}\n",
    );
    dir.run(&["run", "echo"]).code(0);
}

/// The skills manifest of a fixed config, compared with its golden file
/// (`UPDATE_GOLDEN=1` rewrites it).
#[test]
fn skills_manifest_matches_its_golden_file() {
    let dir = TestDir::new("skills");
    dir.echo();
    dir.fixture("schemas");
    dir.config(
        "plugins:\n  echo:\n    config:\n      message: hi\n  schemas: {}\n  mailer:\n    uses: schemas\npipelines:\n  - name: relay-echo\n    on: echo.poll\n    from_plugin: echo\n    steps:\n      - uses: echo\n  - name: ask\n    on: question\n    execution_mode: synchronous\n    timeout: 10s\n    steps:\n      - id: first\n        uses: echo\n        if: {path: payload.go, op: eq, value: true}\n",
    );
    let out = dir.run(&["skills"]).code(0).stdout;
    let again = dir.run(&["system", "skills"]).code(0).stdout;
    assert_eq!(out, again, "the manifest is deterministic");
    assert!(
        !out.contains(dir.path.to_str().unwrap()),
        "no absolute path"
    );
    let golden = crate::support::repo().join("tests/fixtures/skills/expected.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &out).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        out,
        expected,
        "skills manifest differs from {}",
        golden.display()
    );
    let v = dir.run(&["skills", "--json"]).code(0).json();
    assert_eq!(v["skills"].as_str().unwrap(), out);
}

#[test]
fn selfcheck_without_any_config_fails_discovery() {
    let dir = TestDir::new("selfcheck-none");
    let out = dir
        .command_without_config(&["system", "selfcheck", "--json"])
        .env("HOME", &dir.path)
        .env("DUCTILE_CONFIG_DIR", dir.path.join("nowhere"))
        .output()
        .unwrap();
    let r = crate::support::Run::from(out).code(1);
    let v = r.json();
    assert_eq!(status(&v, "config_discovery"), "fail", "{v:#}");
    assert_eq!(status(&v, "config_load"), "skipped");
}

/// `ductile job logs` and `GET /job-logs` share one implementation: every
/// filter of the operator guides answers the same from both, and each one
/// actually filters.
#[test]
fn job_logs_filters_answer_the_same_from_the_cli_and_the_api() {
    let dir = TestDir::new("job-logs-filters");
    crate::http::write_tree(&dir, "", WEBHOOKS);
    dir.fixture("error_no_retry");
    let config = dir.path.join("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}  error_no_retry: {{}}\n")).unwrap();
    let a = Api::start_in(dir);
    assert_eq!(
        call(&a.api, "POST", "/plugin/echo/poll", Some(ADMIN), Some("{}")).status,
        202
    );
    assert_eq!(
        call(
            &a.api,
            "POST",
            "/plugin/error_no_retry/poll",
            Some(ADMIN),
            Some("{}")
        )
        .status,
        202
    );
    let body = br#"{"n":1}"#;
    let h = hook(
        &a.hooks,
        "/webhook/github",
        body,
        &[
            ("X-Hub-Signature-256", sign(HOOK_SECRET, body)),
            ("X-GitHub-Delivery", "d-1".to_string()),
        ],
    );
    assert_eq!(h.status, 202, "{}", h.text());
    a.dir.run(&["run", "echo"]).code(0);
    a.dir.wait_until(LONG, "four job_log rows", || {
        a.dir.count("SELECT COUNT(*) FROM job_log") == 4
    });

    let both = |cli: &[&str], query: &str| -> Value {
        let mut args = vec!["job", "logs", "--json"];
        args.extend_from_slice(cli);
        let from_cli = a.dir.run(&args).code(0).json();
        let r = get(&a.api, &format!("/job-logs{query}"), Some(JOBS_RO));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(from_cli, r.json(), "{cli:?} vs {query}");
        from_cli
    };
    let total = |v: &Value| v["total"].as_i64().unwrap();
    assert_eq!(total(&both(&[], "")), 4);
    let failed = both(&["--plugin", "error_no_retry"], "?plugin=error_no_retry");
    assert_eq!(total(&failed), 1);
    assert_eq!(failed["logs"][0]["status"], "failed");
    assert_eq!(total(&both(&["--status", "error"], "?status=error")), 1);
    assert_eq!(total(&both(&["--status", "failed"], "?status=failed")), 1);
    assert_eq!(total(&both(&["--status", "ok"], "?status=ok")), 3);
    assert_eq!(total(&both(&["--command", "handle"], "?command=handle")), 1);
    assert_eq!(
        total(&both(&["--submitted-by", "api"], "?submitted_by=api")),
        2
    );
    assert_eq!(
        total(&both(&["--submitted-by", "cli"], "?submitted_by=cli")),
        1
    );
    assert_eq!(
        total(&both(
            &["--query", "never succeed"],
            "?query=never%20succeed"
        )),
        1
    );
    assert_eq!(
        total(&both(
            &["--from", "2100-01-01T00:00:00Z"],
            "?from=2100-01-01T00:00:00Z"
        )),
        0
    );
    assert_eq!(
        total(&both(
            &["--to", "2000-01-01T00:00:00+00:00"],
            "?to=2000-01-01T00:00:00%2B00:00"
        )),
        0
    );
    assert_eq!(
        total(&both(
            &[
                "--from",
                "2000-01-01T00:00:00Z",
                "--to",
                "2100-01-01T00:00:00Z"
            ],
            "?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
        )),
        4
    );
    let one = both(&["--limit", "1"], "?limit=1");
    assert_eq!((one["logs"].as_array().unwrap().len(), total(&one)), (1, 4));
    let with = both(
        &["--plugin", "echo", "--command", "poll", "--include-result"],
        "?plugin=echo&command=poll&include_result=true",
    );
    assert!(with["logs"][0].get("result").is_some(), "{with:#}");
    let without = both(
        &["--plugin", "echo", "--command", "poll"],
        "?plugin=echo&command=poll",
    );
    assert!(without["logs"][0].get("result").is_none(), "{without:#}");
    // The cap of 200 and unknown statuses are usage errors on both sides.
    let r = a.dir.run(&["job", "logs", "--limit", "201"]).code(2);
    assert_eq!(
        r.error(),
        "limit must be an integer from 1 to 200, not `201`"
    );
    assert_eq!(
        get(&a.api, "/job-logs?limit=201", Some(JOBS_RO)).status,
        400
    );
    let r = a.dir.run(&["job", "logs", "--status", "broken"]).code(2);
    assert!(
        r.error().starts_with("unknown status `broken`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        get(&a.api, "/job-logs?status=broken", Some(JOBS_RO)).status,
        400
    );
}

#[test]
fn doctor_reports_a_ledger_it_cannot_open_as_a_finding() {
    let dir = TestDir::new("doctor-foreign");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    std::fs::create_dir_all(dir.path.join("state")).unwrap();
    dir.db()
        .execute_batch("CREATE TABLE notes (body TEXT);")
        .unwrap();
    let v = dir.run(&["system", "doctor", "--json"]).code(1).json();
    let ledger = check(&v, "ledger");
    assert_eq!(ledger["status"], "fail", "{v:#}");
    assert!(
        ledger["detail"]
            .as_str()
            .unwrap()
            .contains("not a ductile ledger"),
        "{v:#}"
    );
    assert_eq!(status(&v, "stuck_jobs"), "skipped");
    assert_eq!(status(&v, "plugin_health.echo"), "ok");
}
