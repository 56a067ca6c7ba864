//! Stage7 container plugins on a real engine (podman): a plugin directory
//! holding only a Stage7 `manifest.json` runs as it is. The test image is
//! built per test `FROM scratch` with the host's static busybox serving
//! `busybox httpd -f -p 8080 -h /www`: `/www/health` is a file, and
//! `/www/cgi-bin/execute` a sh CGI script answering the Stage7 JSON (it
//! echoes the request it got, fails when an input is called `fail` and
//! never answers when one is called `slow`).
//! Every test checks that no `ductile-<job_id>` container is left.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::containers::{Image, containers_of_jobs};
use crate::support::TestDir;

const LONG: Duration = Duration::from_secs(60);

const EXECUTE: &str = r#"#!/bin/busybox sh
body=$(/bin/busybox head -c "$CONTENT_LENGTH")
printf 'Content-Type: application/json\r\n\r\n'
case "$body" in *'"slow"'*) exec sleep 120;; esac
case "$body" in *'"fail"'*)
  printf '{"success":false,"error":"asked to fail by %s"}' "$GREETING"; exit 0;;
esac
printf '{"success":true,"outputs":{"greeting":"%s","method":"%s","request":%s}}' "$GREETING" "$REQUEST_METHOD" "$body"
"#;

/// The test image: busybox httpd serving `/www`.
fn build_image(dir: &TestDir) -> Image {
    Image::build_with(
        dir,
        |ctx| {
            std::fs::create_dir_all(ctx.join("www/cgi-bin")).unwrap();
            std::fs::write(ctx.join("www/health"), "ok\n").unwrap();
            let execute = ctx.join("www/cgi-bin/execute");
            std::fs::write(&execute, EXECUTE).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&execute, std::fs::Permissions::from_mode(0o755)).unwrap();
        },
        "COPY www /www\n",
        r#"["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]"#,
    )
}

/// A Stage7 manifest for `id` running `image`, its health check at `health`.
fn manifest(id: &str, image: &str, health: &str) -> String {
    json!({
        "id": id,
        "verb": "GREET",
        "name": "Greeter",
        "version": "1.4.0",
        "description": "greets and echoes",
        "inputDefinitions": [
            {"name": "text", "type": "string", "required": true},
            {"name": "lang", "type": "string"}
        ],
        "outputDefinitions": [{"name": "greeting", "type": "string"}],
        "container": {
            "dockerfile": "Dockerfile",
            "image": image,
            "ports": [{"container": 8080, "host": 8080}],
            "environment": {"GREETING": "hello"},
            "resources": {"memory": "64m", "cpu": "0.5"},
            "healthCheck": {"path": health, "interval": "200ms", "timeout": "2s", "retries": 3}
        },
        "api": {"endpoint": "/cgi-bin/execute", "method": "POST", "timeout": "20s"}
    })
    .to_string()
}

fn run(dir: &TestDir, args: &[&str]) -> (i32, String) {
    let out = dir.command(args).env_remove("CI").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The v2 response recorded for the latest attempt.
fn last_response(dir: &TestDir) -> Value {
    let text = dir
        .text("SELECT result FROM job_log ORDER BY completed_at DESC, attempt DESC LIMIT 1")
        .unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Enqueues one `handle` job of `greeter` carrying `payload`; its id.
fn enqueue_handle(dir: &TestDir, payload: Value) -> String {
    use ductile::store::queue::{self, Enqueued, NewJob, SubmittedBy};
    let mut conn =
        ductile::store::open(&dir.db_path(), ductile::config::Synchronous::Normal).unwrap();
    let event = json!({"type": "api.trigger", "payload": payload});
    let job = NewJob::new("greeter", "handle", event, SubmittedBy::Cli, 1);
    match queue::enqueue(
        &mut conn,
        &job,
        Duration::from_secs(3600),
        chrono::Utc::now(),
    )
    .unwrap()
    {
        Enqueued::Created(id) => id,
        other => panic!("{other:?}"),
    }
}

fn job_field(dir: &TestDir, field: &str) -> Option<String> {
    dir.text(&format!(
        "SELECT CAST({field} AS TEXT) FROM job_queue ORDER BY created_at DESC LIMIT 1"
    ))
}

#[test]
fn a_stage7_plugin_dir_runs_as_it_is_and_its_container_is_removed() {
    let dir = TestDir::new("s7-ok");
    let image = build_image(&dir);
    dir.write(
        "plugins/greeter/manifest.json",
        &manifest("greeter", &image.id, "/health"),
    );
    dir.config("plugins:\n  greeter:\n    enabled: true\n    config:\n      lang: en\n");
    let (code, all) = run(&dir, &["plugin", "list", "--json"]);
    assert_eq!(code, 0, "{all}");
    let v: Value = serde_json::from_str(&all).unwrap_or(Value::Null);
    let p = v["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "greeter"))
        .unwrap_or_else(|| panic!("greeter not listed: {all}"));
    assert_eq!(p["container"]["envelope"], "stage7", "{all}");
    assert_eq!(p["container"]["runnable"], true, "{all}");

    let (code, all) = run(
        &dir,
        &["run", "greeter", "handle", "--payload", r#"{"text":"a b"}"#],
    );
    assert_eq!(code, 0, "{all}");
    let job = job_field(&dir, "id").unwrap();
    assert_eq!(job_field(&dir, "status").as_deref(), Some("succeeded"));
    let r = last_response(&dir);
    // The request the service got: payload fields and config defaults for
    // declared inputs as `{value, args}`, and the trace context.
    assert_eq!(
        r["result"],
        json!({
            "greeting": "hello",
            "method": "POST",
            "request": {
                "inputs": {"text": {"value": "a b", "args": {}}, "lang": {"value": "en", "args": {}}},
                "context": {"trace_id": job, "plugin_id": "greeter", "version": "1.4.0"}
            }
        }),
        "{all}"
    );
    assert_eq!(r["events"][0]["type"], "greeter.executed", "{r}");
    assert_eq!(r["events"][0]["payload"], r["result"], "{r}");
    assert!(containers_of_jobs(&dir).is_empty());

    // `health` starts it, waits for its check and removes it.
    let (code, all) = run(&dir, &["run", "greeter", "health"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(last_response(&dir)["result"], "healthy", "{all}");
    assert!(containers_of_jobs(&dir).is_empty());
}

#[test]
fn success_false_fails_the_job_and_a_health_check_that_never_passes_gives_up() {
    let dir = TestDir::new("s7-fail");
    let image = build_image(&dir);
    dir.write(
        "plugins/greeter/manifest.json",
        &manifest("greeter", &image.id, "/health"),
    );
    dir.write(
        "plugins/sick/manifest.json",
        &manifest("sick", &image.id, "/missing"),
    );
    dir.config(
        "plugins:\n  greeter:\n    enabled: true\n    max_attempts: 1\n  sick:\n    enabled: true\n    max_attempts: 1\n",
    );
    let (code, all) = run(
        &dir,
        &["run", "greeter", "handle", "--payload", r#"{"fail":true}"#],
    );
    assert_eq!(code, 1, "{all}");
    assert_eq!(job_field(&dir, "status").as_deref(), Some("failed"));
    assert_eq!(
        job_field(&dir, "last_error").as_deref(),
        Some("asked to fail by hello")
    );
    assert!(containers_of_jobs(&dir).is_empty());

    let started = Instant::now();
    let (code, all) = run(
        &dir,
        &["run", "sick", "handle", "--payload", r#"{"text":"x"}"#],
    );
    assert_eq!(code, 1, "{all}");
    // 200 ms × 3 retries of start budget, not the job's 120 s timeout.
    assert!(started.elapsed() < Duration::from_secs(30), "{all}");
    assert_eq!(job_field(&dir, "status").as_deref(), Some("failed"));
    let error = job_field(&dir, "last_error").unwrap_or_default();
    assert!(
        error.starts_with(
            "stage7: health check GET /missing did not answer 2xx within 600ms (interval 200ms × 3 retries; "
        ) && error.ends_with("last: answered 404)"),
        "{error}"
    );
    assert!(containers_of_jobs(&dir).is_empty());
}

#[test]
fn a_bad_stage7_manifest_is_refused_naming_the_file_and_field() {
    let dir = TestDir::new("s7-bad");
    let text = manifest("broken", "x:1", "/health").replace("\"200ms\"", "\"soon\"");
    let file = dir.write("plugins/broken/manifest.json", &text);
    dir.write("plugins/notjson/manifest.json", "{\"id\": ");
    dir.config("plugins:\n  broken:\n    enabled: true\n");
    let (code, all) = run(&dir, &["plugin", "list", "--json"]);
    assert_eq!(code, 0, "{all}");
    let v: Value = serde_json::from_str(&all).unwrap_or(Value::Null);
    let reason = |path: &std::path::Path| {
        v["skipped"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["path"] == path.display().to_string()))
            .and_then(|s| s["reason"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{} not skipped: {all}", path.display()))
    };
    assert_eq!(
        reason(&file),
        format!(
            "{}: container.healthCheck.interval: invalid duration `soon`: expected a number before `soon`",
            file.display()
        )
    );
    let notjson = dir.path.join("plugins/notjson/manifest.json");
    assert!(
        reason(&notjson).starts_with(&format!("{}: invalid JSON: ", notjson.display())),
        "{all}"
    );
}

#[test]
fn a_stage7_plugin_runs_in_a_pipeline_next_to_a_local_plugin() {
    let dir = TestDir::new("s7-pipe");
    let image = build_image(&dir);
    dir.fixture("ok_basic");
    dir.write(
        "plugins/greeter/manifest.json",
        &manifest("greeter", &image.id, "/health"),
    );
    dir.config(
        "plugins:\n  greeter:\n    enabled: true\n  ok_basic:\n    enabled: true\npipelines:\n  - name: mixed\n    on: go\n    steps:\n      - uses: greeter\n      - uses: ok_basic\n",
    );
    let daemon = dir.start_with_env(&[("CI", "")]);
    let (code, all) = run(
        &dir,
        &[
            "pipeline",
            "run",
            "mixed",
            "--payload",
            r#"{"text":"hi"}"#,
            "--wait",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{all}");
    let v: Value = serde_json::from_str(&all).unwrap_or(Value::Null);
    let tree = v["tree"].as_array().unwrap_or_else(|| panic!("{all}"));
    let plugins: Vec<&str> = tree
        .iter()
        .filter_map(|j| j["plugin"].as_str())
        .filter(|p| *p != "pipeline")
        .collect();
    assert!(
        plugins.contains(&"greeter") && plugins.contains(&"ok_basic"),
        "{all}"
    );
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{all}");
    drop(daemon);
    dir.wait_until(LONG, "no container is left", || {
        containers_of_jobs(&dir).is_empty()
    });
}

#[test]
fn a_timeout_and_a_shutdown_remove_the_container() {
    let dir = TestDir::new("s7-stop");
    let image = build_image(&dir);
    dir.write(
        "plugins/greeter/manifest.json",
        &manifest("greeter", &image.id, "/health"),
    );
    dir.config(
        "service:\n  shutdown_timeout: 1s\nplugins:\n  greeter:\n    enabled: true\n    max_attempts: 1\n    timeouts:\n      handle: 2s\n",
    );
    let started = Instant::now();
    let (code, all) = run(
        &dir,
        &["run", "greeter", "handle", "--payload", r#"{"slow":true}"#],
    );
    assert_eq!(code, 1, "{all}");
    assert!(all.contains("timed out after 2"), "{all}");
    assert!(started.elapsed() < Duration::from_secs(20), "{all}");
    assert_eq!(job_field(&dir, "status").as_deref(), Some("timed_out"));
    assert!(containers_of_jobs(&dir).is_empty());

    // A daemon stopped while the service works on a request removes its
    // container; the job stays running for the next start's recovery.
    dir.config("service:\n  shutdown_timeout: 1s\nplugins:\n  greeter:\n    enabled: true\n");
    let job = enqueue_handle(&dir, json!({"slow": true}));
    let daemon = dir.start_with_env(&[("CI", "")]);
    dir.wait_until(LONG, "its container serves", || {
        containers_of_jobs(&dir) == [format!("ductile-{job}")]
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert!(containers_of_jobs(&dir).is_empty());
    assert_eq!(job_field(&dir, "status").as_deref(), Some("running"));
}
