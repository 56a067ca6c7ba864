//! The `dashboard` section of `make bench`: the web dashboard against a
//! ledger of 100,000 jobs, over loopback, signed in with a session cookie.
//!
//! - First load of the overview: the requests the page makes, in its order
//!   and with its parallelism (the page, then its two assets, the session,
//!   the four scope probes, then the overview's reads), timed end to end.
//! - Idle cost of open tabs: the daemon's CPU over 10 s with ten idle tabs'
//!   event streams open against the same 10 s with none.
//!
//! Retention is set past the seeded span, so nothing is pruned meanwhile.
//! Figures are printed; a missed target is only printed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::http::{Daemon, thread_cpu_ns};
use super::{Bench, percentile, row};

const TOKEN: &str = "bench-dashboard-0123456789abcdef";
/// Jobs in the seeded ledger (the figure).
const JOBS: usize = 100_000;
/// Seconds between two seeded jobs: 100,000 of them span about 3.5 days.
const SPACING: i64 = 3;
/// Timed first loads, after one warm-up.
const LOADS: usize = 11;
/// Open tabs, each holding one event stream.
const TABS: usize = 10;
const IDLE: Duration = Duration::from_secs(10);

pub(super) fn run(bench: &Bench, exe: &Path) {
    let config = format!(
        "service:\n  job_queue_retention: 30d\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {TOKEN}\n        scopes: [\"*\"]\n"
    );
    let root = bench.config("dashboard", &config);
    seed(&mut super::open_rw(&root));
    let daemon = Daemon::start(exe, &root, false);
    let agent = ureq::AgentBuilder::new().build();
    let base = format!("http://{}", daemon.api);
    let cookie = sign_in(&agent, &base);

    let mut loads = Vec::new();
    let mut slowest = Vec::new();
    for i in 0..=LOADS {
        let (total, slow) = first_load(&agent, &base, &cookie);
        if i > 0 {
            loads.push(total);
            slowest.push(slow);
        }
    }
    let p50 = percentile(&mut loads.clone(), 0.5);
    row(
        "dashboard overview first load, 100k jobs: p50 / p95",
        format!("{p50:.1} / {:.1} ms", percentile(&mut loads, 0.95)),
        if p50 <= 150.0 {
            "≤ 150 ms"
        } else {
            "≤ 150 ms MISSED"
        },
    );
    row(
        "  its slowest single request, p50",
        format!("{:.1} ms", percentile(&mut slowest, 0.5)),
        "",
    );

    let alone = cpu_over(daemon.pid(), IDLE);
    let streams: Vec<TcpStream> = (0..TABS)
        .map(|_| open_stream(&daemon.api, &cookie))
        .collect();
    let with_tabs = cpu_over(daemon.pid(), IDLE);
    row(
        &format!("daemon CPU over 10 s idle: {TABS} open tabs / none"),
        format!("{with_tabs:.1} / {alone:.1} ms"),
        "no measurable difference",
    );
    drop(streams);
    // Retention is set past the seeded span: the figures are the dashboard's
    // reads over the whole ledger, not a pruning pass.
    let left = super::http::count(&daemon.ledger(), "SELECT COUNT(*) FROM job_queue");
    assert_eq!(left, JOBS as u64, "the seeded ledger was pruned");
}

/// 100,000 finished jobs, one every 3 s back from now, 5 % of them failed,
/// each with its queue row and its log row, as the daemon would leave them.
fn seed(conn: &mut rusqlite::Connection) {
    let tx = conn.transaction().unwrap();
    {
        let mut queue = tx
            .prepare("INSERT INTO job_queue (id, plugin, command, payload, status, attempt, max_attempts, submitted_by, created_at, started_at, completed_at, last_error) VALUES (?1, ?2, 'poll', NULL, ?3, 1, 1, 'scheduler', ?4, ?4, ?5, ?6)")
            .unwrap();
        let mut log = tx
            .prepare("INSERT INTO job_log (id, job_id, plugin, command, status, result, attempt, submitted_by, created_at, completed_at, last_error) VALUES (?1, ?2, ?3, 'poll', ?4, NULL, 1, 'scheduler', ?5, ?6, ?7)")
            .unwrap();
        let now = Utc::now();
        for n in 0..JOBS {
            let at = now - chrono::Duration::seconds(SPACING * (JOBS - n) as i64);
            let done = at + chrono::Duration::milliseconds(40);
            let (created, completed) = (ts(at), ts(done));
            let failed = n % 20 == 0;
            let plugin = ["echo", "fetch", "notify", "sys_exec"][n % 4];
            let id = uuid::Uuid::now_v7().to_string();
            let error = failed.then_some("exit status 1: upstream answered 503");
            let status = if failed { "failed" } else { "succeeded" };
            queue
                .execute(rusqlite::params![
                    id, plugin, status, created, completed, error
                ])
                .unwrap();
            // `job_log` stores the native statuses; `ok`/`error` are API aliases.
            let log_status = status;
            log.execute(rusqlite::params![
                uuid::Uuid::now_v7().to_string(),
                id,
                plugin,
                log_status,
                created,
                completed,
                error
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn ts(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Signs in as the page does; the session cookie's `name=value`.
fn sign_in(agent: &ureq::Agent, base: &str) -> String {
    let answer = agent
        .post(&format!("{base}/session"))
        .set("Content-Type", "application/json")
        .send_string(&format!("{{\"token\": \"{TOKEN}\"}}"))
        .unwrap();
    let set = answer.header("Set-Cookie").unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

/// One first load of the overview: the total and its slowest request, ms.
fn first_load(agent: &ureq::Agent, base: &str, cookie: &str) -> (f64, f64) {
    let started = Instant::now();
    let mut slowest = 0.0f64;
    let get = |path: &str| -> f64 {
        let t = Instant::now();
        let (method, path) = path.split_once(' ').unwrap_or(("GET", path));
        let answer = agent
            .request(method, &format!("{base}{path}"))
            .set("Cookie", cookie)
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let mut body = Vec::new();
        answer.into_reader().read_to_end(&mut body).unwrap();
        t.elapsed().as_secs_f64() * 1e3
    };
    let parallel = |paths: &[String]| -> f64 {
        std::thread::scope(|s| {
            let handles: Vec<_> = paths.iter().map(|p| s.spawn(|| get(p))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold(0.0, f64::max)
        })
    };
    let since = |secs: i64| ts(Utc::now() - chrono::Duration::seconds(secs));
    let steps: Vec<Vec<String>> = vec![
        vec!["/ui/".into()],
        vec!["/ui/app.js".into(), "/ui/app.css".into()],
        vec!["/session".into()],
        vec![
            "/jobs?status=running&limit=1".into(),
            "HEAD /events".into(),
            "/topology".into(),
            "/analytics/queue".into(),
        ],
        vec!["/healthz".into()],
        vec!["/analytics/queue".into()],
        vec![
            "/jobs?status=running&limit=200".into(),
            format!("/job-logs?status=error&limit=1&from={}", since(86_400)),
            format!("/job-logs?limit=200&from={}", since(3_600)),
        ],
    ];
    for step in &steps {
        slowest = slowest.max(parallel(step));
    }
    (started.elapsed().as_secs_f64() * 1e3, slowest)
}

/// An idle tab's event stream, opened with the session cookie.
fn open_stream(addr: &str, cookie: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the event stream was refused");
    s
}

/// The CPU time (ms) all of `pid`'s threads use over `span`, from their
/// schedstat (ns), which a tick count would round to nothing or to 10 ms.
fn cpu_over(pid: u32, span: Duration) -> f64 {
    let before = thread_cpu_ns(pid, "");
    std::thread::sleep(span);
    thread_cpu_ns(pid, "").saturating_sub(before) as f64 / 1e6
}
