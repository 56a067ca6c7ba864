//! The `relay` section of `make bench`: two daemons on loopback, A sending
//! and B receiving, as in 18-remote-event-relay.
//!
//! - Throughput: 5,000 events put in A's outbox (one transaction, before A
//!   starts), delivered by A's two workers; the clock runs from A's start
//!   until every outbox row on A succeeded and B holds 5,000 accepted roots
//!   (each a committed row on both sides). B has no pipeline for them, so
//!   the figure is the relay's own: sign, POST, verify, intake commit, answer,
//!   completion commit. Also B's acceptance rate, first to last accepted root.
//! - Added latency of a relay hop: sequential triggers on A, alternating a
//!   local pipeline (one compiled no-op step on A) and a remote one (a relay
//!   step to B, whose pipeline runs the same no-op). From the ledgers: A's
//!   root row created to the no-op job completed (on A, or on B for the
//!   remote one; same host clock); the figure is the remote p50 minus the
//!   local p50.
//!
//! A missed target is only printed; an event lost or accepted twice panics.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ductile::relay::outbox::{self, Outgoing};
use ductile::runtime::Runtime;
use ductile::store::queue::{self, SubmittedBy};
use serde_json::{Map, Value, json};

use super::http::{Daemon, count, wait_for};
use super::{Bench, cpu_ticks, percentile, row};

/// Events in the throughput run.
const EVENTS: usize = 5_000;
/// Paired triggers measured for the latency, after the warm-up.
const PAIRS: usize = 200;
const WARM_PAIRS: usize = 20;

const TOKEN: &str = "bench-relay-0123456789abcdef";
const SECRET: &str = "bench-relay-secret-0123456789abcdef";

const HOP_MANIFEST: &str = "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: relayhop\nversion: 0.1.0\nprotocol: 2\nentrypoint: noop\ncommands:\n  - name: poll\n    type: read\n  - name: handle\n    type: read\n";

pub(super) fn run(bench: &Bench, noop: &Path, exe: &Path) {
    let hop = bench.dir.join("plugins/relayhop");
    std::fs::create_dir_all(&hop).unwrap();
    std::fs::write(hop.join("manifest.yaml"), HOP_MANIFEST).unwrap();
    std::fs::copy(noop, hop.join("noop")).unwrap();

    let b_root = receiver(bench);
    super::lock(exe, &b_root);
    let b = Daemon::start(exe, &b_root, false);
    let a_root = sender(bench, &b.api);
    super::lock(exe, &a_root);
    let a_conn = fill_outbox(&a_root);
    let b_conn = b.ledger();

    let b_ticks = cpu_ticks(b.pid());
    let started = Instant::now();
    let a = Daemon::start(exe, &a_root, false);
    let drained = wait_for(Duration::from_secs(300), Duration::from_millis(5), || {
        count(
            &a_conn,
            "SELECT COUNT(*) FROM job_queue WHERE plugin = 'relay' AND command = 'send' AND status = 'succeeded'",
        ) == EVENTS as u64
            && count(
                &b_conn,
                "SELECT COUNT(*) FROM job_queue WHERE plugin = 'relay' AND command = 'accept'",
            ) == EVENTS as u64
    });
    let secs = started.elapsed().as_secs_f64();
    let (a_cpu, b_cpu) = (cpu_ticks(a.pid()), cpu_ticks(b.pid()) - b_ticks);
    assert!(drained, "the outbox did not drain within 300 s");
    let distinct = count(
        &b_conn,
        "SELECT COUNT(DISTINCT json_extract(payload, '$.payload.seq')) FROM job_queue WHERE plugin = 'relay' AND command = 'accept'",
    );
    assert_eq!(distinct, EVENTS as u64, "B accepted an event twice");
    let span: f64 = b_conn
        .query_row(
            "SELECT (julianday(MAX(created_at)) - julianday(MIN(created_at))) * 86400.0 FROM job_queue WHERE plugin = 'relay' AND command = 'accept'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    row(
        &format!("relay throughput A -> B, {EVENTS} events, 2 workers"),
        format!("{:.0} events/s", EVENTS as f64 / secs),
        ">= 1000 events/s",
    );
    row(
        "  B's acceptance rate, first to last accepted root",
        format!("{:.0} events/s", (EVENTS - 1) as f64 / span.max(1e-9)),
        "",
    );
    let per_event = |ticks: u64| ticks as f64 * 1000.0 / clock_ticks() / EVENTS as f64;
    row(
        "  CPU per event, A (sender) / B (receiver)",
        format!("{:.2} / {:.2} ms", per_event(a_cpu), per_event(b_cpu)),
        "",
    );
    let mut round_trip: Vec<f64> = {
        let mut stmt = a_conn
            .prepare("SELECT s.dur_ns FROM job_stopwatch s JOIN job_queue q ON q.id = s.job_id WHERE q.plugin = 'relay' AND q.command = 'send'")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|d| d.unwrap() as f64 / 1e6)
            .collect()
    };
    row(
        "  one delivery's HTTP round trip (A's stopwatch), p50 / p95",
        format!(
            "{:.2} / {:.2} ms",
            percentile(&mut round_trip, 0.5),
            percentile(&mut round_trip, 0.95)
        ),
        "",
    );
    latency(&a, &a_conn, &b_conn);
    a.stop();
    b.stop();
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn api() -> String {
    format!(
        "api:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {TOKEN}\n        scopes: [\"plugin:rw\"]\n"
    )
}

fn tokens(dir: &Path) {
    std::fs::write(
        dir.join("tokens.yaml"),
        format!("tokens:\n  - {{name: relay-v1, key: {SECRET}, scopes: [\"*\"]}}\n"),
    )
    .unwrap();
}

/// B (`lab`): trusts `home`; runs the no-op for `bench.remote`, nothing for
/// the throughput's `bench.bulk`.
fn receiver(bench: &Bench) -> PathBuf {
    let root = bench.config(
        "relay-b",
        &format!(
            "service:\n  name: lab\n  max_workers: 2\n  job_log_retention: 30d\n{}include: [tokens.yaml, relay-ingress.yaml]\nplugins:\n  relayhop: {{}}\npipelines:\n  - name: offsite\n    on: bench.remote\n    steps:\n      - uses: relayhop\n",
            api()
        ),
    );
    let dir = root.parent().unwrap();
    tokens(dir);
    std::fs::write(
        dir.join("relay-ingress.yaml"),
        "remote_ingress:\n  listen_path: /ingest/peer\n  allowed_clock_skew: 5m\n  require_key_id: true\n  peers:\n    - name: home\n      secret_ref: relay-v1\n      key_id: v1\n",
    )
    .unwrap();
    root
}

/// A (`home`): instance `lab` at `b_api`; pipeline `local` runs the no-op,
/// pipeline `remote` relays to B.
fn sender(bench: &Bench, b_api: &str) -> PathBuf {
    let root = bench.config(
        "relay-a",
        &format!(
            "service:\n  name: home\n  max_workers: 2\n  job_log_retention: 30d\n{}include: [tokens.yaml, relay-instances.yaml]\nplugins:\n  relayhop: {{}}\npipelines:\n  - name: local\n    on: bench.local\n    steps:\n      - uses: relayhop\n  - name: remote\n    on: bench.remote\n    steps:\n      - id: to-lab\n        relay:\n          to: lab\n          event: bench.remote\n          with:\n            seq: payload.seq\n",
            api()
        ),
    );
    let dir = root.parent().unwrap();
    tokens(dir);
    std::fs::write(
        dir.join("relay-instances.yaml"),
        format!(
            "instances:\n  - name: lab\n    base_url: http://{b_api}\n    ingress_path: /ingest/peer/home\n    secret_ref: relay-v1\n    key_id: v1\n    timeout: 10s\n    retry: {{max_attempts: 5, backoff_base: 100ms}}\n"
        ),
    )
    .unwrap();
    root
}

/// Puts the throughput's events in A's outbox in one transaction, through
/// the same outbox job `relay send` makes; returns A's ledger.
fn fill_outbox(a_root: &Path) -> rusqlite::Connection {
    let rt = Runtime::load(a_root).unwrap();
    let instance = rt.config.relay.instance("lab").unwrap();
    let mut conn = super::open_rw(a_root);
    let tx = queue::begin(&mut conn).unwrap();
    let now = chrono::Utc::now();
    for seq in 0..EVENTS {
        let mut payload = Map::new();
        payload.insert("seq".into(), json!(seq));
        let event = Outgoing {
            event_type: "bench.bulk".into(),
            payload,
            ..Outgoing::default()
        };
        let id = uuid::Uuid::now_v7().to_string();
        let job = outbox::job(
            instance,
            &rt.config.service.name,
            &event,
            &id,
            SubmittedBy::Cli,
        )
        .unwrap();
        queue::enqueue_in(&tx, &job, Duration::from_secs(86_400), now).unwrap();
    }
    tx.commit().unwrap();
    conn
}

/// POSTs a pipeline trigger on `api`; the root job's id.
fn trigger(agent: &ureq::Agent, api: &str, pipeline: &str, seq: usize) -> String {
    let answer = agent
        .post(&format!("http://{api}/pipeline/{pipeline}"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/json")
        .send_string(&json!({"payload": {"seq": seq}}).to_string())
        .unwrap();
    assert_eq!(answer.status(), 202, "POST /pipeline/{pipeline}");
    let body: Value = serde_json::from_str(&answer.into_string().unwrap()).unwrap();
    body["job_id"].as_str().unwrap().to_string()
}

/// A text column of the first row of `sql` with `?1` bound to `arg`.
fn text(conn: &rusqlite::Connection, sql: &str, arg: &str) -> Option<String> {
    use rusqlite::OptionalExtension;
    conn.query_row(sql, [arg], |r| r.get::<_, Option<String>>(0))
        .optional()
        .unwrap()
        .flatten()
}

/// Milliseconds from `from` to `to` (RFC 3339, microseconds).
fn ms(from: &str, to: &str) -> f64 {
    let f = ductile::clock::parse_ts(from).unwrap();
    let t = ductile::clock::parse_ts(to).unwrap();
    (t - f).num_microseconds().unwrap() as f64 / 1000.0
}

const CREATED: &str = "SELECT created_at FROM job_queue WHERE id = ?1";
const CHILD_DONE: &str = "SELECT completed_at FROM job_queue WHERE parent_job_id = ?1 AND plugin = 'relayhop' AND status = 'succeeded'";
const REMOTE_ROOT: &str = "SELECT json_extract(l.result, '$.remote.job_id') FROM job_queue q JOIN job_log l ON l.job_id = q.id WHERE q.parent_job_id = ?1 AND q.plugin = 'relay' AND l.status = 'succeeded'";

/// Waits for the row `sql` finds for `arg`, re-checking every millisecond.
fn wait_text(conn: &rusqlite::Connection, sql: &str, arg: &str) -> String {
    let mut found = None;
    let ok = wait_for(Duration::from_secs(30), Duration::from_millis(1), || {
        found = text(conn, sql, arg);
        found.is_some()
    });
    assert!(ok, "nothing for {arg} within 30 s: {sql}");
    found.unwrap()
}

fn latency(a: &Daemon, a_conn: &rusqlite::Connection, b_conn: &rusqlite::Connection) {
    let agent = ureq::AgentBuilder::new().build();
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for i in 0..WARM_PAIRS + PAIRS {
        let root = trigger(&agent, &a.api, "local", i);
        let done = wait_text(a_conn, CHILD_DONE, &root);
        let l = ms(&text(a_conn, CREATED, &root).unwrap(), &done);

        let root = trigger(&agent, &a.api, "remote", i);
        let b_root = wait_text(a_conn, REMOTE_ROOT, &root);
        let done = wait_text(b_conn, CHILD_DONE, &b_root);
        let r = ms(&text(a_conn, CREATED, &root).unwrap(), &done);
        if i >= WARM_PAIRS {
            local.push(l);
            remote.push(r);
        }
    }
    let mut added: Vec<f64> = remote.iter().zip(&local).map(|(r, l)| r - l).collect();
    let (l50, r50) = (percentile(&mut local, 0.5), percentile(&mut remote, 0.5));
    row(
        &format!("relay hop added latency, p50 ({PAIRS} pairs)"),
        format!("{:.2} ms", r50 - l50),
        "<= 5 ms",
    );
    row(
        "  trigger -> no-op done, local route, p50",
        format!("{l50:.2} ms"),
        "",
    );
    row(
        "  trigger -> no-op done on B, via relay, p50",
        format!("{r50:.2} ms"),
        "",
    );
    row(
        "  added per pair, p95",
        format!("{:.2} ms", percentile(&mut added, 0.95)),
        "",
    );
}
