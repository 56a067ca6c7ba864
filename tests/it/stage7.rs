//! Stage7 container plugins on a real engine (podman): a plugin directory
//! holding only a Stage7 `manifest.json` runs as it is. The test image is
//! built per test `FROM scratch` with the host's static busybox serving
//! `busybox httpd -f -p 8080 -h /www`: `/www/health` is a file, and
//! `/www/cgi-bin/execute` a sh CGI script answering the Stage7 JSON (it
//! echoes the request it got, fails when an input is called `fail` and
//! never answers when one is called `slow`); `/www/cgi-bin/health` answers
//! 503 once `/tmp/sick` exists (a tmpfs under `--read-only`).
//! Every test checks that no `ductile-<job_id>` container is left; the
//! `keep_warm` tests, that no container of the test's image is left at all.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::containers::{Image, containers_of_jobs};
use crate::http::ADMIN;
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

const HEALTH: &str = r#"#!/bin/busybox sh
if [ -e /tmp/sick ]; then printf 'Status: 503 Sick\r\nContent-Type: text/plain\r\n\r\nsick\n'; exit 0; fi
printf 'Content-Type: text/plain\r\n\r\nok\n'
"#;

/// The test image: busybox httpd serving `/www`.
fn build_image(dir: &TestDir) -> Image {
    Image::build_with(
        dir,
        |ctx| {
            std::fs::create_dir_all(ctx.join("www/cgi-bin")).unwrap();
            std::fs::write(ctx.join("www/health"), "ok\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            for (name, script) in [("execute", EXECUTE), ("health", HEALTH)] {
                let path = ctx.join("www/cgi-bin").join(name);
                std::fs::write(&path, script).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
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
    // The figure is the time the job took, removal of the container
    // included, so a loaded machine may say 3s.
    assert!(all.contains("timed out after "), "{all}");
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

// ------------------------------------------------------------- keep_warm

/// A Stage7 manifest for a warm instance `id`: its health check is the CGI
/// that `/tmp/sick` turns unhealthy, and it declares a second port.
fn warm_manifest(id: &str, image: &str) -> String {
    let mut m: Value = serde_json::from_str(&manifest(id, image, "/cgi-bin/health")).unwrap();
    m["container"]["ports"] = json!([{"container": 8080, "host": 8080}, 9090]);
    m.to_string()
}

/// Every container (any state) of this test's image, as (name, ID).
fn ours(dir: &TestDir) -> Vec<(String, String)> {
    let label = dir.path.file_name().unwrap().to_string_lossy().to_string();
    let out = std::process::Command::new("podman")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=ductile.test={label}"),
            "--format",
            "{{.Names}} {{.ID}}",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, id)| (n.to_string(), id.to_string()))
        .collect()
}

/// The one container of this test's image, which must be `greeter`'s warm one.
fn the_warm_one(dir: &TestDir, instance: &str) -> (String, String) {
    let all = ours(dir);
    assert_eq!(all.len(), 1, "{all:?}");
    let (name, id) = all.into_iter().next().unwrap();
    assert!(
        name.starts_with(&format!("ductile-warm-{instance}-")),
        "{name}"
    );
    (name, id)
}

/// `ductile run greeter handle` with `payload` (handed to the daemon when one
/// runs); the job's `result`.
fn greet(dir: &TestDir, payload: &str) -> Value {
    let (code, all) = run(dir, &["run", "greeter", "handle", "--payload", payload]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(job_field(dir, "status").as_deref(), Some("succeeded"));
    last_response(dir)["result"].clone()
}

fn count_lines(daemon: &crate::support::Daemon, needle: &str) -> usize {
    daemon.log().iter().filter(|l| l.contains(needle)).count()
}

/// A daemon serving the `greeter` Stage7 plugin with `keep_warm`, in a new
/// test dir; the image lives as long as the returned value.
fn warm_daemon(tag: &str, keep_warm: &str) -> (TestDir, Image, crate::support::Daemon) {
    let (dir, image) = warm_dir(tag, keep_warm);
    let daemon = dir.start_with_env(&[("CI", "")]);
    (dir, image, daemon)
}

/// A new test dir configured with the `greeter` Stage7 plugin and `keep_warm`.
fn warm_dir(tag: &str, keep_warm: &str) -> (TestDir, Image) {
    let dir = TestDir::new(tag);
    let image = build_image(&dir);
    dir.write(
        "plugins/greeter/manifest.json",
        &warm_manifest("greeter", &image.id),
    );
    dir.config(&warm_config(keep_warm));
    (dir, image)
}

fn warm_config(keep_warm: &str) -> String {
    format!(
        "service:\n  shutdown_timeout: 5s\nplugins:\n  greeter:\n    enabled: true\n    keep_warm: {keep_warm}\n"
    )
}

#[test]
fn keep_warm_jobs_share_one_container_published_on_every_port_until_the_daemon_stops() {
    let (dir, _image) = warm_dir("s7-warm-reuse", "10m");
    // With the API, which reports the resident container too.
    dir.config(&format!(
        "{}api:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"plugin:ro\"]\n",
        warm_config("10m")
    ));
    let daemon = dir.start_with_env(&[("CI", "")]);
    let api = crate::http::listening(&daemon, "api.listen");
    // Started on first use, not before.
    assert!(ours(&dir).is_empty());

    let first = greet(&dir, r#"{"text":"one"}"#);
    assert_eq!(first["greeting"], "hello", "{first}");
    let job1 = job_field(&dir, "id").unwrap();
    assert_eq!(first["request"]["context"]["trace_id"], job1.as_str());
    let (name, id) = the_warm_one(&dir, "greeter");
    // Every declared port, each on loopback only.
    let out = std::process::Command::new("podman")
        .args(["port", &name])
        .output()
        .unwrap();
    let ports = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    for (line, port) in lines.iter().zip(["8080/tcp", "9090/tcp"]) {
        assert!(
            line.starts_with(&format!("{port} -> 127.0.0.1:")),
            "{ports}"
        );
    }

    let second = greet(&dir, r#"{"text":"two"}"#);
    let job2 = job_field(&dir, "id").unwrap();
    assert_ne!(job1, job2);
    assert_eq!(
        second["request"]["inputs"]["text"]["value"], "two",
        "{second}"
    );
    assert_eq!(second["request"]["context"]["trace_id"], job2.as_str());
    // The same container served it: no second start.
    assert_eq!(the_warm_one(&dir, "greeter"), (name.clone(), id));
    assert_eq!(count_lines(&daemon, "started warm container"), 1);
    assert!(containers_of_jobs(&dir).is_empty());
    // `plugin list` names it, and the window it is kept for.
    let listed = |dir: &TestDir| {
        let out = dir.command(&["plugin", "list", "--json"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let entry = v["plugins"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "greeter"))
            .cloned()
            .unwrap_or_else(|| panic!("no greeter in {v}"));
        entry["container"].clone()
    };
    let c = listed(&dir);
    assert_eq!(c["keep_warm"], 600, "{c}");
    assert_eq!(c["resident"], serde_json::json!([name.clone()]), "{c}");
    // So does the API, from the daemon's own record of what it holds.
    let detail = crate::http::get(&api, "/plugin/greeter", Some(ADMIN));
    assert_eq!(detail.status, 200, "{}", detail.json());
    let c = &detail.json()["container"];
    assert_eq!(c["envelope"], "stage7", "{c}");
    assert_eq!(c["keep_warm"], 600, "{c}");
    assert_eq!(c["resident"], serde_json::json!([name.clone()]), "{c}");

    // A stop removes it before the daemon exits.
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert!(ours(&dir).is_empty(), "{:?}", ours(&dir));
    assert!(!dir.path.join("state/warm").join(&name).exists());
    assert_eq!(listed(&dir)["resident"], serde_json::json!([]));
}

#[test]
fn a_warm_container_failing_its_health_check_is_replaced_and_the_next_job_succeeds() {
    let (dir, _image, daemon) = warm_daemon("s7-warm-sick", "10m");
    greet(&dir, r#"{"text":"before"}"#);
    let (sick, sick_id) = the_warm_one(&dir, "greeter");

    // The service turns unhealthy while it idles: 3 probes 200 ms apart fail.
    let st = std::process::Command::new("podman")
        .args(["exec", &sick, "/bin/busybox", "touch", "/tmp/sick"])
        .status()
        .unwrap();
    assert!(st.success());
    daemon.wait_log(LONG, "3 health checks in a row failed (last: answered 503)");
    daemon.wait_log(LONG, &format!("removed warm container {sick}"));
    crate::support::wait_until(LONG, "a fresh warm container", || {
        count_lines(&daemon, "started warm container") == 2
    });
    let (fresh, fresh_id) = the_warm_one(&dir, "greeter");
    assert_ne!((&fresh, &fresh_id), (&sick, &sick_id));

    let after = greet(&dir, r#"{"text":"after"}"#);
    assert_eq!(after["greeting"], "hello", "{after}");
    assert_eq!(the_warm_one(&dir, "greeter"), (fresh, fresh_id));
    assert_eq!(count_lines(&daemon, "started warm container"), 2);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert!(ours(&dir).is_empty(), "{:?}", ours(&dir));
}

#[test]
fn a_warm_container_goes_when_keep_warm_lapses_and_when_a_reload_removes_its_plugin() {
    let (dir, _image, daemon) = warm_daemon("s7-warm-lapse", "1s");
    greet(&dir, r#"{"text":"x"}"#);
    let (name, _) = the_warm_one(&dir, "greeter");
    daemon.wait_log(
        LONG,
        &format!("removed warm container {name}: keep_warm 1s lapsed after its last job"),
    );
    assert!(ours(&dir).is_empty(), "{:?}", ours(&dir));
    assert!(!dir.path.join("state/warm").join(&name).exists());

    // A reload that removes the plugin removes its container.
    dir.config(&warm_config("10m"));
    dir.run(&["system", "reload"]).code(0);
    greet(&dir, r#"{"text":"y"}"#);
    let warm = the_warm_one(&dir, "greeter");
    // A reload that leaves its entry and manifest alone keeps it.
    dir.config(&warm_config("10m").replace("shutdown_timeout: 5s", "shutdown_timeout: 6s"));
    dir.run(&["system", "reload"]).code(0);
    greet(&dir, r#"{"text":"z"}"#);
    assert_eq!(the_warm_one(&dir, "greeter"), warm);
    // So does one that changes only what the container is not built from
    // (retries, schedules, the request's config).
    dir.config(&format!("{}    max_attempts: 2\n", warm_config("10m")));
    dir.run(&["system", "reload"]).code(0);
    greet(&dir, r#"{"text":"z2"}"#);
    assert_eq!(the_warm_one(&dir, "greeter"), warm);
    // A new keep_warm window replaces it.
    dir.config(&warm_config("20m"));
    dir.run(&["system", "reload"]).code(0);
    daemon.wait_log(
        LONG,
        &format!(
            "removed warm container {}: a reload removed the plugin or changed its config",
            warm.0
        ),
    );
    greet(&dir, r#"{"text":"z3"}"#);
    let (name, _) = the_warm_one(&dir, "greeter");
    assert_ne!(name, warm.0);
    dir.config("plugins: {}\n");
    dir.run(&["system", "reload"]).code(0);
    daemon.wait_log(
        LONG,
        &format!(
            "removed warm container {name}: a reload removed the plugin or changed its config"
        ),
    );
    assert!(ours(&dir).is_empty(), "{:?}", ours(&dir));
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn a_one_shot_run_ignores_keep_warm_and_leaves_no_container() {
    let (dir, _image) = warm_dir("s7-warm-oneshot", "10m");
    let result = greet(&dir, r#"{"text":"once"}"#);
    assert_eq!(result["greeting"], "hello", "{result}");
    assert!(ours(&dir).is_empty(), "{:?}", ours(&dir));
    assert!(!dir.path.join("state/warm").exists());
}

#[test]
fn a_warm_container_left_by_a_killed_daemon_is_removed_at_the_next_start() {
    let (dir, _image, daemon) = warm_daemon("s7-warm-crash", "10m");
    greet(&dir, r#"{"text":"x"}"#);
    let (name, _) = the_warm_one(&dir, "greeter");
    daemon.crash();
    // The engine keeps it running without its daemon.
    assert_eq!(the_warm_one(&dir, "greeter").0, name);
    assert!(dir.path.join("state/warm").join(&name).exists());

    let daemon = dir.start_with_env(&[("CI", "")]);
    // Removed before the daemon calls itself running.
    assert!(ours(&dir).is_empty(), "{:?}", ours(&dir));
    assert!(
        daemon.log().iter().any(|l| l
            .contains("removed 1 warm container(s) a previous daemon left")
            && l.contains(&name)),
        "{:#?}",
        daemon.log()
    );
    assert!(!dir.path.join("state/warm").join(&name).exists());
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn keep_warm_on_a_plugin_that_is_not_stage7_refuses_the_instance() {
    let dir = TestDir::new("s7-warm-refused");
    dir.fixture("ok_basic");
    dir.config("plugins:\n  ok_basic:\n    keep_warm: 5m\n");
    let (code, all) = run(&dir, &["plugin", "list", "--json"]);
    assert_eq!(code, 0, "{all}");
    let v: Value = serde_json::from_str(&all).unwrap_or(Value::Null);
    let reason = v["skipped"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "ok_basic"))
        .and_then(|s| s["reason"].as_str())
        .unwrap_or_else(|| panic!("ok_basic not refused: {all}"));
    assert_eq!(
        reason,
        "plugins.ok_basic.keep_warm: only a Stage7 plugin (a directory with manifest.json) keeps a warm container; `ok_basic` is a local plugin (remove keep_warm)"
    );
    let (code, all) = run(&dir, &["run", "ok_basic"]);
    assert_ne!(code, 0, "{all}");
}

#[test]
fn a_warm_job_whose_request_times_out_retires_the_container() {
    let (dir, _image) = warm_dir("s7-warm-slow", "10m");
    dir.config(&format!(
        "{}    max_attempts: 1\n    timeouts:\n      handle: 3s\n",
        warm_config("10m")
    ));
    let daemon = dir.start_with_env(&[("CI", "")]);
    greet(&dir, r#"{"text":"warm it"}"#);
    let (name, _) = the_warm_one(&dir, "greeter");
    // The service would go on with the abandoned request: the container goes.
    let (code, all) = run(
        &dir,
        &["run", "greeter", "handle", "--payload", r#"{"slow":true}"#],
    );
    assert_eq!(code, 1, "{all}");
    assert_eq!(job_field(&dir, "status").as_deref(), Some("timed_out"));
    daemon.wait_log(LONG, &format!("removed warm container {name}: a "));
    let after = greet(&dir, r#"{"text":"fresh"}"#);
    assert_eq!(after["greeting"], "hello", "{after}");
    assert_ne!(the_warm_one(&dir, "greeter").0, name);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    assert!(ours(&dir).is_empty(), "{:?}", ours(&dir));
}
