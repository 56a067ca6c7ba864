//! Remote event relay between real daemons on loopback: a pipeline on A
//! relays to B and B runs its own pipeline with the allowed baggage only; a
//! receiver that is down gets the event when it comes back; `relay send`
//! with no daemon delivers the outbox row itself; a 4xx is not retried.

use std::net::TcpListener;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{ADMIN, call, listening};
use crate::pipelines::{Running, plugins};
use crate::support::{Daemon, TestDir};

pub(crate) const SECRET: &str = "relay-send-secret-0123456789abcdef";
const LONG: Duration = Duration::from_secs(60);

/// A free loopback port: B must come back on the address A sends to.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Receiver `lab`: accepts `backup.ready` from `home-primary` (baggage
/// `trace_id` only) and runs plugin `a` for it.
pub(crate) fn receiver_dir(tag: &str, port: u16, secret: &str) -> TestDir {
    receiver_dir_for(tag, port, secret, &["home-primary"], true)
}

/// Receiver `lab` trusting each of `peers` with the shared secret `secret`
/// (key id `v1`, `backup.ready` only, baggage `trace_id` only); with
/// `pipeline`, it runs plugin `a` for each accepted event, else it only
/// records the acceptances.
pub(crate) fn receiver_dir_for(
    tag: &str,
    port: u16,
    secret: &str,
    peers: &[&str],
    pipeline: bool,
) -> TestDir {
    let dir = TestDir::new(&format!("relay-b-{tag}"));
    dir.fixture("pipe_step");
    dir.write(
        "tokens.yaml",
        &format!("tokens:\n  - {{name: relay-v1, key: {secret}, scopes: [\"*\"]}}\n"),
    );
    let mut ingress = String::from(
        "remote_ingress:\n  listen_path: /ingest/peer\n  allowed_clock_skew: 5m\n  require_key_id: true\n  peers:\n",
    );
    for p in peers {
        ingress.push_str(&format!(
            "    - name: {p}\n      secret_ref: relay-v1\n      key_id: v1\n      accept: [backup.ready]\n      baggage: {{allow: [trace_id]}}\n"
        ));
    }
    dir.write("relay-ingress.yaml", &ingress);
    let pipelines = if pipeline {
        "pipelines:\n  - name: offsite\n    on: backup.ready\n    steps:\n      - uses: a\n"
    } else {
        ""
    };
    dir.config(&format!(
        "include: [tokens.yaml, relay-ingress.yaml]\nservice:\n  name: lab\n  tick_interval: 1s\n  max_workers: 2\napi:\n  enabled: true\n  listen: 127.0.0.1:{port}\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"*\"]\n{}{pipelines}",
        plugins("")
    ));
    assert_eq!(dir.run(&["config", "lock"]).code, 0);
    dir
}

/// Sender `home-primary`: instance `lab` at `port`, and a pipeline that
/// relays `backup.created` there as `backup.ready`, then runs `b`.
pub(crate) fn sender_dir(tag: &str, port: u16, extra_instance: &str) -> TestDir {
    sender_dir_as(
        tag,
        "home-primary",
        &format!("http://127.0.0.1:{port}"),
        extra_instance,
        "      - uses: b\n",
    )
}

/// [`sender_dir`] with `lab`'s `circuit_breaker:` set to `breaker`.
pub(crate) fn sender_dir_with(
    tag: &str,
    port: u16,
    breaker: &str,
    extra_instance: &str,
) -> TestDir {
    sender_full(
        tag,
        "home-primary",
        &format!("http://127.0.0.1:{port}"),
        extra_instance,
        "      - uses: b\n",
        breaker,
    )
}

/// Sender `service`: instance `lab` at `base_url` (tight retry, a breaker
/// that does not open in a test), and pipeline `ship` that relays
/// `backup.created` there as `backup.ready` (dedupe key
/// `payload.archive_id`), followed by `after_relay` (more steps, or nothing).
pub(crate) fn sender_dir_as(
    tag: &str,
    service: &str,
    base_url: &str,
    extra_instance: &str,
    after_relay: &str,
) -> TestDir {
    sender_full(
        tag,
        service,
        base_url,
        extra_instance,
        after_relay,
        "{threshold: 1000, reset_after: 1s}",
    )
}

fn sender_full(
    tag: &str,
    service: &str,
    base_url: &str,
    extra_instance: &str,
    after_relay: &str,
    breaker: &str,
) -> TestDir {
    let dir = TestDir::new(&format!("relay-a-{tag}"));
    dir.fixture("pipe_step");
    dir.write(
        "tokens.yaml",
        &format!("tokens:\n  - {{name: relay-v1, key: {SECRET}, scopes: [\"*\"]}}\n"),
    );
    dir.write(
        "relay-instances.yaml",
        &format!(
            "instances:\n  - name: lab\n    base_url: {base_url}\n    ingress_path: /ingest/peer/{service}\n    secret_ref: relay-v1\n    key_id: v1\n    timeout: 5s\n    allow: [backup.ready, backup.other]\n    retry: {{max_attempts: 50, backoff_base: 100ms}}\n    circuit_breaker: {breaker}\n{extra_instance}"
        ),
    );
    dir.config(&format!(
        "include: [tokens.yaml, relay-instances.yaml]\nservice:\n  name: {service}\n  tick_interval: 1s\n  max_workers: 2\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {ADMIN}\n        scopes: [\"*\"]\n{}pipelines:\n  - name: ship\n    on: backup.created\n    steps:\n      - id: relay-to-lab\n        relay:\n          to: lab\n          event: backup.ready\n          dedupe_key: payload.archive_id\n          with:\n            archive_id: payload.archive_id\n          baggage:\n            trace_id: payload.trace_id\n            secret_plan: payload.secret_plan\n{after_relay}",
        plugins("")
    ));
    assert_eq!(dir.run(&["config", "lock"]).code, 0);
    let check = dir.run(&["config", "check"]);
    assert_eq!(check.code, 0, "config check: {check:?}");
    dir
}

pub(crate) fn start(dir: TestDir) -> Running {
    let daemon = dir.start();
    let api = listening(&daemon, "api.listen");
    Running { dir, daemon, api }
}

/// The context plugin `a` ran with on `dir`'s ledger.
fn context_of_a(dir: &TestDir) -> Value {
    let text = dir
        .text("SELECT c.accumulated_json FROM job_queue j JOIN event_context c ON c.id = j.event_context_id WHERE j.plugin = 'a'")
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn succeeded(dir: &TestDir, plugin: &str) -> i64 {
    dir.count(&format!(
        "SELECT count(*) FROM job_queue WHERE plugin = '{plugin}' AND status = 'succeeded'"
    ))
}

#[test]
fn a_pipeline_relay_step_runs_the_receivers_pipeline_with_allowed_baggage_then_continues() {
    let port = free_port();
    let b = start(receiver_dir("pipe", port, SECRET));
    let a = start(sender_dir("pipe", port, ""));
    let answer = call(
        &a.api,
        "POST",
        "/pipeline/ship",
        Some(ADMIN),
        Some(
            &json!({"payload": {"archive_id": "nightly-7", "trace_id": "tr-1", "secret_plan": "stay home", "bulky": "x"}})
                .to_string(),
        ),
    );
    assert_eq!(answer.status, 202, "{}", answer.text());
    b.dir.wait_until(LONG, "B's pipeline to run plugin a", || {
        succeeded(&b.dir, "a") == 1
    });
    a.dir
        .wait_until(LONG, "A's pipeline to continue after the relay", || {
            succeeded(&a.dir, "b") == 1
        });
    let context = context_of_a(&b.dir);
    assert_eq!(context["trace_id"], "tr-1", "{context}");
    assert!(context.get("secret_plan").is_none(), "{context}");
    let payload: Value = serde_json::from_str(
        &b.dir
            .text("SELECT payload FROM job_queue WHERE plugin = 'a'")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["payload"]["archive_id"], "nightly-7", "{payload}");
    assert!(payload["payload"].get("bulky").is_none(), "{payload}");
    // The outbox row on A: one delivery, answered 202, its lineage intact.
    let outbox = a
        .dir
        .run(&["job", "list", "--plugin", "relay", "--json"])
        .code(0)
        .json();
    let jobs = outbox["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{outbox}");
    assert_eq!(jobs[0]["status"], "succeeded");
    assert_eq!(
        b.dir
            .text("SELECT submitted_by FROM job_queue WHERE plugin = 'relay'")
            .as_deref(),
        Some("relay:home-primary")
    );
    // The live stream saw the send on A and the acceptance on B.
    assert_eq!(
        a.dir
            .count("SELECT count(*) FROM system_events WHERE kind = 'relay.sent'"),
        1
    );
    assert_eq!(
        b.dir
            .count("SELECT count(*) FROM system_events WHERE kind = 'relay.accepted'"),
        1
    );
    drop(a);
    drop(b);
}

#[test]
fn a_receiver_that_is_down_gets_the_event_when_it_comes_back() {
    let port = free_port();
    let b_dir = receiver_dir("down", port, SECRET);
    let a_dir = sender_dir("down", port, "");
    // No daemon anywhere: `relay send` tries once itself and leaves the row
    // in the outbox for the daemon.
    let sent = a_dir.run(&[
        "relay",
        "send",
        "lab",
        "--event",
        "backup.ready",
        "--payload",
        r#"{"archive_id":"n-2"}"#,
        "--baggage",
        r#"{"trace_id":"tr-2"}"#,
        "--json",
    ]);
    assert_eq!(sent.code, 75, "{sent:?}");
    let v = sent.json();
    assert_eq!(v["status"], "queued", "{v}");
    assert!(v["error"].as_str().unwrap().contains("cannot reach"), "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let a = start(a_dir);
    // A keeps failing while B is down.
    a.dir.wait_until(LONG, "a few failed attempts", || {
        a.dir.count(&format!(
            "SELECT count(*) FROM job_attempts WHERE job_id = '{id}'"
        )) >= 3
    });
    let b = start(b_dir);
    b.dir.wait_until(LONG, "B to run the relayed event", || {
        succeeded(&b.dir, "a") == 1
    });
    a.dir.wait_until(LONG, "the outbox row to succeed", || {
        a.dir
            .text(&format!("SELECT status FROM job_queue WHERE id = '{id}'"))
            .as_deref()
            == Some("succeeded")
    });
    assert_eq!(context_of_a(&b.dir)["trace_id"], "tr-2");

    // The operator's views on A: the outbox, the failures it went through,
    // the receiver reachable now, and the metrics.
    let status = a.dir.run(&["relay", "status", "--json"]).code(0).json();
    let lab = &status["instances"][0];
    assert_eq!(lab["name"], "lab", "{status}");
    assert_eq!(lab["depth"], 0, "{status}");
    assert_eq!(lab["outbox"]["delivered"], 1, "{status}");
    assert_eq!(lab["breaker"], "closed", "{status}");
    assert!(
        lab["outbox"]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{status}"
    );
    let doctor = a.dir.run(&["system", "doctor", "--probe", "--json"]).json();
    let check = |name: &str| {
        doctor["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {doctor}"))
    };
    assert_eq!(check("relay.lab")["status"], "ok", "{doctor}");
    assert_eq!(check("relay_probe.lab")["status"], "ok", "{doctor}");
    let b_doctor = b.dir.run(&["system", "doctor", "--json"]).json();
    let peer = b_doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "relay_peer.home-primary")
        .cloned()
        .unwrap();
    assert_eq!(peer["status"], "ok", "{peer}");
    assert!(
        peer["detail"].as_str().unwrap().contains("clock skew"),
        "{peer}"
    );
    let metrics = call(&a.api, "GET", "/metrics", Some(ADMIN), None).text();
    assert!(
        metrics.contains("ductile_relay_sends_total{instance=\"lab\",outcome=\"sent\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ductile_relay_sends_total{instance=\"lab\",outcome=\"retry\"}"),
        "{metrics}"
    );
    let b_metrics = call(&b.api, "GET", "/metrics", Some(ADMIN), None).text();
    assert!(
        b_metrics.contains(
            "ductile_relay_received_total{peer=\"home-primary\",outcome=\"accepted\",reason=\"\"} 1"
        ),
        "{b_metrics}"
    );
    // B stopped again: the probe says so.
    drop(b);
    let doctor = a.dir.run(&["system", "doctor", "--probe", "--json"]);
    assert_eq!(doctor.code, 1, "{doctor:?}");
    assert!(doctor.stdout.contains("relay_probe.lab"), "{doctor:?}");
}

#[test]
fn relay_send_without_a_daemon_delivers_and_a_4xx_is_not_retried() {
    let port = free_port();
    let b = start(receiver_dir("cli", port, SECRET));
    let a_dir = sender_dir("cli", port, "");
    let sent = a_dir.run(&[
        "relay",
        "send",
        "lab",
        "--event",
        "backup.ready",
        "--payload",
        r#"{"archive_id":"n-3"}"#,
        "--dedupe-key",
        "backup.ready:n-3",
        "--json",
    ]);
    assert_eq!(sent.code, 0, "{sent:?}");
    let v = sent.json();
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["remote"]["status"], 202, "{v}");
    b.dir
        .wait_until(LONG, "B to run it", || succeeded(&b.dir, "a") == 1);
    // The same dedupe key again: B acknowledges it and runs nothing.
    let again = a_dir.run(&[
        "relay",
        "send",
        "lab",
        "--event",
        "backup.ready",
        "--payload",
        r#"{"archive_id":"n-3"}"#,
        "--dedupe-key",
        "backup.ready:n-3",
        "--json",
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json()["remote"]["duplicate"], true);
    // An event type B does not accept: 403, recorded failed after one attempt.
    let refused = a_dir.run(&["relay", "send", "lab", "--event", "backup.other", "--json"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    let r = refused.json();
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("event_not_accepted"),
        "{r}"
    );
    let id = r["job_id"].as_str().unwrap();
    assert_eq!(
        a_dir.count(&format!(
            "SELECT count(*) FROM job_attempts WHERE job_id = '{id}'"
        )),
        1
    );
    // A type the instance does not allow never reaches the outbox.
    let blocked = a_dir.run(&["relay", "send", "lab", "--event", "report.done"]);
    assert_eq!(blocked.code, 2, "{blocked:?}");
    assert!(
        blocked.stderr.contains("does not allow `report.done`"),
        "{blocked:?}"
    );
    assert_eq!(succeeded(&b.dir, "a"), 1);
    drop::<Daemon>(b.daemon);
}

#[test]
fn an_open_breaker_holds_deliveries_without_spending_attempts_then_a_probe_resumes_them() {
    let port = free_port();
    let b_dir = receiver_dir("breaker", port, SECRET);
    let a = start(sender_dir_with(
        "breaker",
        port,
        "{threshold: 2, reset_after: 2s}",
        "",
    ));
    let mut ids = Vec::new();
    for n in 0..3 {
        let sent = a.dir.run(&[
            "relay",
            "send",
            "lab",
            "--event",
            "backup.ready",
            "--payload",
            &format!(r#"{{"archive_id":"b-{n}"}}"#),
            "--json",
        ]);
        assert_eq!(sent.code, 0, "{sent:?}");
        assert_eq!(sent.json()["status"], "queued");
        ids.push(sent.json()["job_id"].as_str().unwrap().to_string());
    }
    a.dir.wait_until(LONG, "the breaker of lab to open", || {
        a.dir
            .text("SELECT state FROM circuit_breakers WHERE plugin = 'relay:lab' AND command = 'send'")
            .as_deref()
            == Some("open")
    });
    let doctor = a.dir.run(&["system", "doctor", "--json"]);
    assert_eq!(doctor.code, 1, "{doctor:?}");
    assert!(
        doctor.stdout.contains("breaker open: deliveries paused"),
        "{doctor:?}"
    );
    // While it is open, waiting jobs are put back untried: their attempt
    // numbers stay where the failures left them.
    let attempts_before = a.dir.count("SELECT count(*) FROM job_attempts");
    a.dir.wait_until(LONG, "a deferral to be recorded", || {
        a.dir.count("SELECT count(*) FROM job_transitions WHERE reason LIKE 'not sent: the breaker of relay instance `lab` is open%'") >= 1
    });
    assert!(a.dir.count("SELECT count(*) FROM job_attempts") <= attempts_before + 1);
    let b = start(b_dir);
    b.dir
        .wait_until(LONG, "B to run all three", || succeeded(&b.dir, "a") == 3);
    a.dir.wait_until(LONG, "the breaker to close", || {
        a.dir
            .text("SELECT state FROM circuit_breakers WHERE plugin = 'relay:lab'")
            .as_deref()
            == Some("closed")
    });
    for id in &ids {
        assert_eq!(
            a.dir
                .text(&format!("SELECT status FROM job_queue WHERE id = '{id}'"))
                .as_deref(),
            Some("succeeded")
        );
    }
}
