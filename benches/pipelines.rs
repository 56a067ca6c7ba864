//! The `pipelines` section of `make bench`: the routing engine's own cost.
//!
//! Every step is the compiled no-op plugin (C, static), answering `ok` with
//! no events, so each hop goes on through the core's synthetic
//! `ductile.step.succeeded`.
//!
//! - Per-hop overhead: a 10-step pipeline run 200 times; per tree, the wall
//!   time from the root row's creation to the last step's completion (ledger
//!   timestamps) minus the plugins' own time (`job_stopwatch.dur_ns`, spawn to
//!   exit), divided by the 10 hops.
//! - A synchronous 3-step pipeline over HTTP: the latency of
//!   `POST /pipeline/{name}` as a client sees it, 200 calls in a row.
//! - `core.switch`: the same 10 steps each behind a true `if:` (10 switch
//!   hops more per tree); the added overhead per switch hop.
//! - 1,000 synchronous callers waiting at once with dispatch held (the one
//!   worker busy with a sleeper): the daemon's CPU ticks and wakeups over 5 s
//!   of idle, against the same daemon with no caller waiting.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ductile::store::queue::{self, NewJob, SubmittedBy};
use serde_json::Value;

use super::http::{Daemon, count, wait_for};
use super::{Bench, cpu_ticks, percentile, row, wakeups};

const TOKEN: &str = "bench-pipelines-0123456789abcdef";
const TREES: usize = 200;
const WAITERS: usize = 1_000;

const HANDLE_MANIFEST: &str = "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: hnoop\nversion: 0.1.0\nprotocol: 2\nentrypoint: noop\nconcurrency_safe: true\ncommands:\n  - name: poll\n    type: read\n  - name: handle\n    type: write\n";

fn config(workers: usize) -> String {
    let mut c = format!(
        "service:\n  tick_interval: 1s\n  max_workers: {workers}\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  max_connections: 1200\n  max_concurrent_sync: 1100\n  auth:\n    tokens:\n      - token: {TOKEN}\n        scopes: [\"*\"]\nplugins:\n  sleeper: {{}}\n"
    );
    for i in 0..10 {
        c.push_str(&format!("  s{i}:\n    uses: hnoop\n"));
    }
    c.push_str(
        "pipelines:\n  - name: ten\n    on: go.ten\n    execution_mode: synchronous\n    steps:\n",
    );
    for i in 0..10 {
        c.push_str(&format!("      - uses: s{i}\n"));
    }
    c.push_str(
        "  - name: switched\n    on: go.switched\n    execution_mode: synchronous\n    steps:\n",
    );
    for i in 0..10 {
        c.push_str(&format!(
            "      - uses: s{i}\n        if:\n          path: payload.n\n          op: eq\n          value: 1\n"
        ));
    }
    c.push_str("  - name: three\n    on: go.three\n    execution_mode: synchronous\n    timeout: 10m\n    steps:\n      - uses: s0\n      - uses: s1\n      - uses: s2\n");
    c
}

/// One blocking `POST /pipeline/{name}`; the status and the body.
fn post(addr: &str, name: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = r#"{"payload":{"n":1}}"#;
    write!(
        s,
        "POST /pipeline/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn ns(ts: &str) -> i64 {
    ductile::clock::parse_ts(ts)
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// Per-hop overhead of each tree, in ms.
fn hop_overhead(conn: &rusqlite::Connection, roots: &[String], hops: f64) -> Vec<f64> {
    roots
        .iter()
        .map(|root| {
            let (created, last, plugins): (String, String, i64) = conn
                .query_row(
                    "WITH RECURSIVE t(id) AS (SELECT ?1 UNION ALL SELECT q.id FROM job_queue q JOIN t ON q.parent_job_id = t.id)
                     SELECT (SELECT created_at FROM job_queue WHERE id = ?1),
                            (SELECT MAX(completed_at) FROM job_queue WHERE id IN t),
                            (SELECT COALESCE(SUM(dur_ns), 0) FROM job_stopwatch WHERE job_id IN t)",
                    [root],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap();
            (ns(&last) - ns(&created) - plugins) as f64 / 1e6 / hops
        })
        .collect()
}

fn run_trees(d: &Daemon, name: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (status, v) = post(&d.api, name);
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["status"], "succeeded", "{v}");
            v["job_id"].as_str().unwrap().to_string()
        })
        .collect()
}

pub(super) fn run(bench: &Bench, exe: &Path, noop: &Path) {
    let dir = bench.dir.join("plugins").join("hnoop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.yaml"), HANDLE_MANIFEST).unwrap();
    std::fs::copy(noop, dir.join("noop")).unwrap();
    let sleeper = bench.dir.join("plugins").join("sleeper");
    if !sleeper.exists() {
        let p = bench.plugin("sleeper", "run.sh");
        std::fs::write(p.join("run.sh"), "#!/bin/sh\nexec sleep 300\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let root = bench.config("pipelines-run", &config(2));
    let d = Daemon::start(exe, &root, false);
    let conn = d.ledger();
    run_trees(&d, "ten", 20);
    let roots = run_trees(&d, "ten", TREES);
    let mut plain = hop_overhead(&conn, &roots, 10.0);
    row(
        "pipeline per-hop overhead p50 (10 compiled no-op steps)",
        format!("{:.2} ms", percentile(&mut plain, 0.5)),
        "<= 2 ms",
    );
    row(
        "pipeline per-hop overhead p95",
        format!("{:.2} ms", percentile(&mut plain, 0.95)),
        "",
    );
    let roots = run_trees(&d, "switched", TREES);
    // 20 hops each: 10 switches, 10 steps.
    let mut switched = hop_overhead(&conn, &roots, 10.0);
    let per_switch = percentile(&mut switched, 0.5) - percentile(&mut plain, 0.5);
    row(
        "core.switch hop (added overhead per switch, p50)",
        if per_switch <= 0.0 {
            format!("{per_switch:.3} ms (noise)")
        } else {
            format!("{per_switch:.3} ms")
        },
        "<= 0.3 ms",
    );
    let mut lat: Vec<f64> = (0..TREES)
        .map(|_| {
            let t = Instant::now();
            let (status, v) = post(&d.api, "three");
            assert_eq!(status, 200, "{v}");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    row(
        "synchronous 3-step pipeline over HTTP p50",
        format!("{:.2} ms", percentile(&mut lat, 0.5)),
        "<= 15 ms",
    );
    row(
        "synchronous 3-step pipeline over HTTP p95",
        format!("{:.2} ms", percentile(&mut lat, 0.95)),
        "",
    );
    drop(conn);
    d.stop();

    // Idle waiters: one worker, held by a sleeper queued before the start.
    let root = bench.config("pipelines-waiters", &config(1));
    let mut conn = super::open_rw(&root);
    let tx = queue::begin(&mut conn).unwrap();
    let job = NewJob::new("sleeper", "poll", Value::Null, SubmittedBy::Cli, 1);
    queue::enqueue_in(&tx, &job, Duration::from_secs(86_400), chrono::Utc::now()).unwrap();
    tx.commit().unwrap();
    let d = Daemon::start(exe, &root, false);
    let held = wait_for(Duration::from_secs(20), Duration::from_millis(5), || {
        count(
            &conn,
            "SELECT COUNT(*) FROM job_queue WHERE plugin = 'sleeper' AND status = 'running'",
        ) == 1
    });
    assert!(held, "the sleeper did not start");
    let idle = |pid: u32| {
        let (t0, w0) = (cpu_ticks(pid), wakeups(pid));
        std::thread::sleep(Duration::from_secs(5));
        (cpu_ticks(pid) - t0, wakeups(pid) - w0)
    };
    let (base_ticks, base_wakes) = idle(d.pid());
    let body = r#"{"payload":{"n":1}}"#;
    let waiters: Vec<TcpStream> = (0..WAITERS)
        .map(|_| {
            let mut s = TcpStream::connect(&d.api).unwrap();
            write!(
                s,
                "POST /pipeline/three HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            s
        })
        .collect();
    let all = wait_for(Duration::from_secs(60), Duration::from_millis(20), || {
        count(
            &conn,
            "SELECT COUNT(*) FROM job_queue WHERE plugin = 's0' AND status = 'queued'",
        ) == WAITERS as u64
    });
    if !all {
        row(
            "1,000 idle sync waiters",
            format!(
                "not reached: {} of {WAITERS} accepted in 60 s",
                count(
                    &conn,
                    "SELECT COUNT(*) FROM job_queue WHERE plugin = 'pipeline'"
                )
            ),
            "all waiting",
        );
        drop(waiters);
        drop(conn);
        d.stop();
        return;
    }
    let (ticks, wakes) = idle(d.pid());
    row(
        "1,000 idle sync waiters: daemon CPU over 5 s",
        format!("{ticks} ticks ({base_ticks} with none)"),
        "~0",
    );
    row(
        "1,000 idle sync waiters: wakeups over 5 s",
        format!("{wakes} ({base_wakes} with none)"),
        "no more than with none",
    );
    drop(waiters);
    drop(conn);
    d.stop();
}
