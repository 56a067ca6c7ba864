//! Pipelines and routes run by the real daemon with real plugin processes:
//! sequences, switches, remaps, baggage, event-triggered pipelines, plain
//! routes and the synchronous bridge.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{ADMIN, call, get, listening};
use crate::support::{Daemon, TestDir};

pub(crate) const LONG: Duration = Duration::from_secs(60);

/// Plugins `a`..`e` are `pipe_step` instances named after themselves.
pub(crate) fn plugins(extra: &str) -> String {
    let mut s = String::from("plugins:\n");
    for n in ["a", "b", "c", "d", "e"] {
        s.push_str(&format!(
            "  {n}:\n    uses: pipe_step\n    config:\n      name: {n}\n"
        ));
    }
    s.push_str(extra);
    s
}

pub(crate) struct Running {
    pub(crate) dir: TestDir,
    pub(crate) daemon: Daemon,
    pub(crate) api: String,
}

/// A test dir holding the `pipe_step` plugins `a`..`e` (plus `extra_plugins`),
/// an admin token and `pipelines`, checked by `config check`.
pub(crate) fn configure(tag: &str, pipelines: &str, extra_plugins: &str) -> TestDir {
    let dir = TestDir::new(tag);
    dir.fixture("pipe_step");
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n  max_workers: 2\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"*\"]\n{}{pipelines}",
        plugins(extra_plugins)
    ));
    let check = dir.run(&["config", "check"]);
    assert_eq!(check.code, 0, "config check: {check:?}");
    dir
}

/// [`configure`], then the daemon started on it.
pub(crate) fn start(tag: &str, pipelines: &str, extra_plugins: &str) -> Running {
    let dir = configure(tag, pipelines, extra_plugins);
    let daemon = dir.start();
    let api = listening(&daemon, "api.listen");
    Running { dir, daemon, api }
}

pub(crate) fn trigger(r: &Running, pipeline: &str, payload: Value) -> Value {
    let body = json!({ "payload": payload }).to_string();
    let a = call(
        &r.api,
        "POST",
        &format!("/pipeline/{pipeline}"),
        Some(ADMIN),
        Some(&body),
    );
    assert!(
        a.status == 200 || a.status == 202,
        "{} {}",
        a.status,
        a.text()
    );
    a.json()
}

/// Waits until no job of the tree rooted at `root` is queued or running, then
/// returns the tree.
pub(crate) fn settled_tree(r: &Running, root: &str) -> Vec<Value> {
    let mut tree = Vec::new();
    r.dir.wait_until(LONG, "the tree finished", || {
        let a = get(&r.api, &format!("/job/{root}/tree"), Some(ADMIN));
        if a.status != 200 {
            return false;
        }
        tree = a.json().as_array().cloned().unwrap_or_default();
        !tree.is_empty()
            && tree
                .iter()
                .all(|j| !matches!(j["status"].as_str(), Some("queued" | "running")))
    });
    tree
}

pub(crate) fn by_plugin<'t>(tree: &'t [Value], plugin: &str) -> Vec<&'t Value> {
    tree.iter().filter(|j| j["plugin"] == plugin).collect()
}

/// The event payload a job received.
pub(crate) fn received(r: &Running, job: &Value) -> Value {
    let id = job["job_id"].as_str().unwrap();
    let text = r
        .dir
        .text(&format!("SELECT payload FROM job_queue WHERE id = '{id}'"))
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["payload"].clone()
}

#[test]
fn a_three_step_pipeline_runs_in_order_with_its_context() {
    let r = start(
        "pipe-seq",
        "pipelines:\n  - name: seq\n    on: go\n    steps:\n      - id: first\n        uses: a\n      - id: second\n        uses: b\n      - id: third\n        uses: c\n",
        "",
    );
    let v = trigger(&r, "seq", json!({"x": 1}));
    assert_eq!(v["status"], "queued");
    assert_eq!(v["plugin"], "pipeline");
    let root = v["job_id"].as_str().unwrap().to_string();
    let tree = settled_tree(&r, &root);
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{tree:#?}");
    let c = by_plugin(&tree, "c");
    assert_eq!(c.len(), 1);
    let payload = received(&r, c[0]);
    assert_eq!(payload["trail"], json!(["a", "b"]));
    assert_eq!(payload["x"], 1);
    // The context the third step saw (the second step echoed its own).
    let seen = &payload["seen"];
    assert_eq!(seen["ductile_pipeline"], "seq");
    assert_eq!(seen["ductile_step_id"], "second");
    assert_eq!(seen["ductile_plugin"], "b");
    assert_eq!(seen["ductile_pipeline_instance_id"], root.as_str());
    // Lineage: each step's parent is the step before.
    let a = by_plugin(&tree, "a")[0];
    let b = by_plugin(&tree, "b")[0];
    assert_eq!(a["parent_job_id"], root.as_str());
    assert_eq!(b["parent_job_id"], a["job_id"]);
    assert_eq!(c[0]["parent_job_id"], b["job_id"]);
}

#[test]
fn a_step_if_records_its_switch_and_takes_the_right_branch() {
    let r = start(
        "pipe-if",
        "pipelines:\n  - name: gate\n    on: go\n    steps:\n      - uses: a\n      - id: only_big\n        uses: b\n        if:\n          path: payload.size\n          op: gt\n          value: 10\n      - uses: c\n",
        "",
    );
    for (size, ran) in [(50, true), (5, false)] {
        let v = trigger(&r, "gate", json!({"size": size}));
        let tree = settled_tree(&r, v["job_id"].as_str().unwrap());
        let switches = by_plugin(&tree, "core.switch");
        assert_eq!(switches.len(), 1, "{tree:#?}");
        assert_eq!(switches[0]["status"], "succeeded");
        let event = if ran {
            "ductile.switch.true"
        } else {
            "ductile.switch.false"
        };
        assert_eq!(switches[0]["result"]["events"][0]["type"], event);
        assert_eq!(
            by_plugin(&tree, "b").len(),
            usize::from(ran),
            "size {size}: {tree:#?}"
        );
        // The step after the gated one runs either way, with what reached it.
        let c = by_plugin(&tree, "c");
        assert_eq!(c.len(), 1);
        let trail = if ran { json!(["a", "b"]) } else { json!(["a"]) };
        assert_eq!(received(&r, c[0])["trail"], trail);
    }
}

#[test]
fn with_keeps_json_types_and_a_bad_path_fails_the_step() {
    let r = start(
        "pipe-with",
        "pipelines:\n  - name: remap\n    on: go\n    steps:\n      - uses: a\n      - uses: b\n        with:\n          count: \"{payload.n}\"\n          label: \"n is {payload.n}\"\n  - name: broken\n    on: go2\n    steps:\n      - uses: a\n      - uses: b\n        with:\n          missing: \"{payload.nope}\"\n",
        "",
    );
    let v = trigger(&r, "remap", json!({"n": 7}));
    let tree = settled_tree(&r, v["job_id"].as_str().unwrap());
    let b = received(&r, by_plugin(&tree, "b")[0]);
    assert_eq!(b["count"], 7);
    assert_eq!(b["label"], "n is 7");
    let v = trigger(&r, "broken", json!({"n": 7}));
    let tree = settled_tree(&r, v["job_id"].as_str().unwrap());
    let b = by_plugin(&tree, "b");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["status"], "failed");
    assert!(
        b[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("payload.nope"),
        "{:?}",
        b[0]["last_error"]
    );
}

#[test]
fn baggage_accretes_and_an_inherited_path_cannot_change() {
    let r = start(
        "pipe-bag",
        "pipelines:\n  - name: bag\n    on: go\n    steps:\n      - uses: a\n        baggage:\n          job.size: payload.size\n      - uses: b\n        baggage:\n          job.trail: payload.trail\n      - uses: c\n  - name: clash\n    on: go2\n    steps:\n      - uses: a\n        baggage:\n          job.size: payload.size\n      - uses: b\n        baggage:\n          job.size: payload.trail\n",
        "",
    );
    let v = trigger(&r, "bag", json!({"size": 3}));
    let tree = settled_tree(&r, v["job_id"].as_str().unwrap());
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{tree:#?}");
    let seen = &received(&r, by_plugin(&tree, "c")[0])["seen"];
    // c's input came from b, which saw a's claims and its own.
    assert_eq!(seen["job"]["size"], 3);
    assert_eq!(seen["job"]["trail"], json!(["a"]));
    let v = trigger(&r, "clash", json!({"size": 3}));
    let tree = settled_tree(&r, v["job_id"].as_str().unwrap());
    let b = by_plugin(&tree, "b");
    assert_eq!(b[0]["status"], "failed", "{tree:#?}");
    assert!(b[0]["last_error"].as_str().unwrap().contains("job.size"));
}

#[test]
fn emitted_events_start_pipelines_and_routes_from_their_source() {
    let r = start(
        "pipe-events",
        "routes:\n  - from: src\n    event_type: hop.one\n    to: d\npipelines:\n  - name: follow\n    on: hop.one\n    from_plugin: src\n    steps:\n      - uses: b\n      - uses: c\n  - name: elsewhere\n    on: hop.one\n    from_plugin: e\n    steps:\n      - uses: e\n",
        "  src:\n    uses: pipe_step\n    config:\n      name: src\n      emit: hop.one\n",
    );
    let out = r
        .dir
        .run(&["run", "src", "handle", "--payload", r#"{"k":1}"#, "--json"])
        .code(0)
        .json();
    let id = out["job_id"].as_str().unwrap().to_string();
    let tree = settled_tree(&r, &id);
    let names: Vec<&str> = tree.iter().map(|j| j["plugin"].as_str().unwrap()).collect();
    assert_eq!(by_plugin(&tree, "d").len(), 1, "the route: {names:?}");
    assert_eq!(
        by_plugin(&tree, "b").len(),
        1,
        "the pipeline from src: {names:?}"
    );
    assert_eq!(by_plugin(&tree, "c").len(), 1, "its second step: {names:?}");
    assert!(
        by_plugin(&tree, "e").is_empty(),
        "scoped to another plugin: {names:?}"
    );
    // The core fills the event's own fields.
    let d = received(&r, by_plugin(&tree, "d")[0]);
    assert_eq!(d["k"], 1);
    let text = r
        .dir
        .text(&format!(
            "SELECT payload FROM job_queue WHERE id = '{}'",
            by_plugin(&tree, "d")[0]["job_id"].as_str().unwrap()
        ))
        .unwrap();
    let event: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(event["type"], "hop.one");
    assert_eq!(event["source"], "src");
    assert_eq!(event["result"], "src done");
    assert!(event["event_id"].as_str().is_some_and(|s| s.len() == 36));
    assert!(event["timestamp"].is_string());
}

#[test]
fn a_synchronous_pipeline_answers_with_its_last_steps_result() {
    let r = start(
        "pipe-sync",
        "pipelines:\n  - name: now\n    on: go\n    execution_mode: synchronous\n    timeout: 20s\n    steps:\n      - uses: a\n      - uses: b\n",
        "",
    );
    let body = json!({"payload": {"q": 1}}).to_string();
    let a = call(&r.api, "POST", "/pipeline/now", Some(ADMIN), Some(&body));
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"]["result"], "b done");
    assert!(v["duration_ms"].is_number());
    assert_eq!(v["tree"].as_array().unwrap().len(), 3, "{v:#?}");
    // ?async=true answers at once.
    let a = call(
        &r.api,
        "POST",
        "/pipeline/now?async=true",
        Some(ADMIN),
        Some(&body),
    );
    assert_eq!(a.status, 202, "{}", a.text());
    // Unknown pipelines are 404 with a hint.
    let a = call(&r.api, "POST", "/pipeline/nowx", Some(ADMIN), Some(&body));
    assert_eq!(a.status, 404);
    assert!(a.text().contains("did you mean"));
    drop(r.daemon);
}

/// Regression: the listener's connection pool queued a burst of connections
/// behind its few idle threads, and a waiting synchronous call holds its
/// connection's thread, so callers that arrived together were never read
/// while the first ones waited (4 of 50 started their trees).
#[test]
fn a_burst_of_synchronous_callers_is_read_while_the_first_ones_wait() {
    use std::io::Write;
    const CALLERS: usize = 50;
    let dir = TestDir::new("pipe-sync-burst");
    dir.fixture("hang");
    // One worker, taken by the first tree's step for good: every call waits.
    dir.config(&format!(
        "service:\n  max_workers: 1\n  shutdown_timeout: 1s\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  max_concurrent_sync: {CALLERS}\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"*\"]\nplugins:\n  hang: {{}}\npipelines:\n  - name: held\n    on: go\n    execution_mode: synchronous\n    timeout: 60s\n    steps:\n      - uses: hang\n"
    ));
    let daemon = dir.start();
    let api = listening(&daemon, "api.listen");
    let body = "{\"payload\":{}}";
    let request = format!(
        "POST /pipeline/held HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let callers: Vec<std::net::TcpStream> = (0..CALLERS)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&api).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    dir.wait_until(
        Duration::from_secs(20),
        "every caller's tree started",
        || dir.count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'pipeline'") == CALLERS as i64,
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    drop(callers);
}

#[test]
fn hooks_fire_once_for_opted_in_root_jobs_as_fresh_trees() {
    let r = start(
        "pipe-hooks",
        "pipelines:\n  - name: on_failure\n    on-hook: job.failed\n    steps:\n      - uses: e\n",
        "  f:\n    uses: pipe_step\n    notify_on_complete: true\n    config:\n      name: f\n      fail: true\n  g:\n    uses: pipe_step\n    config:\n      name: g\n      fail: true\n",
    );
    let trigger = |plugin: &str| {
        let a = call(
            &r.api,
            "POST",
            &format!("/plugin/{plugin}/handle"),
            Some(ADMIN),
            Some("{}"),
        );
        assert_eq!(a.status, 202, "{}", a.text());
        a.json()["job_id"].as_str().unwrap().to_string()
    };
    let failing = trigger("f");
    let silent = trigger("g");
    let hooked = || {
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'e' AND status = 'succeeded'")
    };
    r.dir.wait_until(LONG, "the hook ran", || hooked() == 1);
    // The hook's job saw the failure's fields, in a tree of its own.
    let e_id = r
        .dir
        .text("SELECT id FROM job_queue WHERE plugin = 'e'")
        .unwrap();
    let job = get(&r.api, &format!("/job/{e_id}"), Some(ADMIN)).json();
    let payload = received(&r, &job);
    assert_eq!(payload["plugin"], "f");
    assert_eq!(payload["status"], "failed");
    assert_eq!(payload["job_id"], failing.as_str());
    assert!(payload["error"].as_str().unwrap().contains("f failed"));
    let root = job["parent_job_id"].as_str().unwrap().to_string();
    assert_ne!(root, failing);
    let root_job = get(&r.api, &format!("/job/{root}"), Some(ADMIN)).json();
    assert_eq!(root_job["plugin"], "pipeline");
    assert!(
        root_job["parent_job_id"].is_null(),
        "a hook tree is a fresh root"
    );
    // g did not opt in; wait for it to finish, then nothing more ran.
    r.dir.wait_until(LONG, "g failed", || {
        r.dir
            .text(&format!(
                "SELECT status FROM job_queue WHERE id = '{silent}'"
            ))
            .as_deref()
            == Some("failed")
    });
    settled_tree(&r, &root);
    assert_eq!(hooked(), 1);
    assert_eq!(
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'pipeline'"),
        1
    );
}

#[test]
fn a_failed_step_resumes_with_its_event_and_the_tree_goes_on() {
    let r = start(
        "pipe-resume",
        "pipelines:\n  - name: mend\n    on: go\n    steps:\n      - uses: a\n        baggage:\n          job.x: payload.x\n      - uses: flaky\n      - uses: c\n",
        "  flaky:\n    uses: pipe_step\n    config:\n      name: flaky\n      fail: true\n",
    );
    let v = trigger(&r, "mend", json!({"x": 5}));
    let root = v["job_id"].as_str().unwrap().to_string();
    let tree = settled_tree(&r, &root);
    let failed = by_plugin(&tree, "flaky")[0].clone();
    assert_eq!(failed["status"], "failed");
    assert!(by_plugin(&tree, "c").is_empty());
    // Retrying a job that has not failed is refused.
    let a_id = by_plugin(&tree, "a")[0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = call(
        &r.api,
        "POST",
        &format!("/job/{a_id}/retry"),
        Some(ADMIN),
        None,
    );
    assert_eq!(refused.status, 409, "{}", refused.text());
    // Fix the cause, reload, resume.
    let path = r.dir.path.join("config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("      fail: true\n", "      fail: false\n"),
    )
    .unwrap();
    assert_eq!(
        call(&r.api, "POST", "/system/reload", Some(ADMIN), None).status,
        200
    );
    let fid = failed["job_id"].as_str().unwrap();
    let again = call(
        &r.api,
        "POST",
        &format!("/job/{fid}/retry"),
        Some(ADMIN),
        None,
    );
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json()["retry_of"], fid);
    r.dir.wait_until(LONG, "the tree went on", || {
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'c' AND status = 'succeeded'")
            == 1
    });
    let tree = settled_tree(&r, &root);
    let flaky = by_plugin(&tree, "flaky");
    assert_eq!(flaky.len(), 2, "the failed row stays as history");
    let resumed = flaky.iter().find(|j| j["status"] == "succeeded").unwrap();
    assert_eq!(resumed["parent_job_id"], fid);
    // Exactly the event it first saw, and the context (baggage) it had.
    assert_eq!(received(&r, resumed), received(&r, &failed));
    let c = received(&r, by_plugin(&tree, "c")[0]);
    assert_eq!(c["trail"], json!(["a", "flaky"]));
    assert_eq!(c["seen"]["job"]["x"], 5);
    // Once is enough: the CLI verb says why it refuses a second resumption.
    let cli = r.dir.run(&["job", "retry", fid]);
    assert_eq!(cli.code, 1, "{cli:?}");
    assert!(cli.stderr.contains("already retried"), "{}", cli.stderr);
    // `job inspect` links the failure and its resumption both ways.
    let rid = resumed["job_id"].as_str().unwrap();
    let failed_view = r.dir.run(&["job", "inspect", fid, "--json"]).json();
    assert_eq!(failed_view["retried_as"], rid);
    let resumed_view = r.dir.run(&["job", "inspect", rid, "--json"]).json();
    assert_eq!(resumed_view["retry_of"], fid);
    assert_eq!(resumed_view["baggage"]["job"]["x"], 5);
}

#[test]
fn pipeline_run_starts_a_tree_and_waits_for_it() {
    let r = start(
        "pipe-cli",
        "pipelines:\n  - name: two\n    on: go\n    steps:\n      - uses: a\n      - uses: b\n",
        "",
    );
    let v = r
        .dir
        .run(&[
            "pipeline",
            "run",
            "two",
            "--payload",
            r#"{"x":2}"#,
            "--wait",
            "--json",
        ])
        .code(0)
        .json();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"]["result"], "b done");
    assert_eq!(v["tree"].as_array().unwrap().len(), 3);
    let root = v["job_id"].as_str().unwrap();
    let b = by_plugin(v["tree"].as_array().unwrap(), "b")[0].clone();
    assert_eq!(received(&r, &b)["x"], 2);
    assert_eq!(
        get(&r.api, &format!("/job/{root}"), Some(ADMIN)).json()["plugin"],
        "pipeline"
    );
    let bad = r.dir.run(&["pipeline", "run", "tow"]).code(1);
    assert!(bad.stderr.contains("did you mean"), "{}", bad.stderr);
}
