//! The `pipelines` section of `make bench`: what the routing engine and the
//! synchronous bridge add to a tree of compiled plugins.
//!
//! Every step is the compiled no-op (the C program of `bench.rs`) under a
//! manifest that declares `handle`: it answers `status: ok` and emits nothing,
//! so each successor receives the synthetic `ductile.step.succeeded` event the
//! core emits for it. No Python runs in this section.
//!
//! - Per-hop overhead: sequential trees of a 10-step pipeline started with
//!   `POST /pipeline/ten`; per tree, from the ledger, the wall time from the
//!   root row's `created_at` (the intake commit) to the last step's
//!   `completed_at`, minus the steps' own process time (`job_stopwatch.dur_ns`,
//!   spawn to reap), divided by the 10 hops.
//! - `core.switch`: the same 10 steps, each behind an `if:` that is true,
//!   triggered alternately with the plain pipeline on the same daemon; the
//!   added overhead per tree, paired tree by tree, divided by the 10 switches.
//!   A switch row is settled in its upstream's completion transaction, so its
//!   own `created_at`/`completed_at` are one instant: the cost only shows in
//!   the tree around it.
//! - A synchronous 3-step pipeline over HTTP: sequential `POST
//!   /pipeline/three` on one keep-alive connection, latency to the whole
//!   answer.
//! - 1,000 idle synchronous waiters: 1,000 raw connections each waiting on its
//!   own tree of that pipeline, held behind a one-worker pool kept busy by a
//!   sleeper job; the daemon's CPU ticks and context switches over 10 s of
//!   idle, against the same daemon with the sleeper alone before the waiters
//!   connect.
//!
//! Figures are printed; a missed target is only printed. A tree that does not
//! finish with every step succeeded, or an answer that is not the expected
//! one, panics.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ductile::store::queue::{self, NewJob, SubmittedBy};
use serde_json::Value;

use super::http::{Daemon, count, wait_for, write_sleeper};
use super::{Bench, percentile, row, rss_kb};

/// Trees per pipeline in the per-hop and switch figures, after the warm-up.
const TREES: usize = 200;
/// Trees per pipeline run first and not counted (page cache, WAL, statements).
const WARM_TREES: usize = 20;
/// Steps of the long pipelines.
const STEPS: usize = 10;
/// Sequential synchronous calls measured, after the warm-up.
const CALLS: usize = 300;
const WARM_CALLS: usize = 30;
/// Synchronous callers held waiting at once.
const WAITERS: usize = 1_000;
/// The idle window measured with and without them.
const IDLE: Duration = Duration::from_secs(10);

const TOKEN: &str = "bench-pipelines-0123456789abcdef";

const HOP_MANIFEST: &str = "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: hop\nversion: 0.1.0\nprotocol: 2\nentrypoint: noop\ncommands:\n  - name: poll\n    type: read\n  - name: handle\n    type: read\n";

/// A condition that is true unless the payload carries `skip` (it never does).
const GATE: &str = "{not: {path: payload.skip, op: exists}}";

pub(super) fn run(bench: &Bench, noop: &Path, exe: &Path) {
    // Each waiter is a socket here and one in the daemon (which inherits the limit).
    let fds = raise_fd_limit(4 * WAITERS as u64);
    let hop = bench.dir.join("plugins/hop");
    std::fs::create_dir_all(&hop).unwrap();
    std::fs::write(hop.join("manifest.yaml"), HOP_MANIFEST).unwrap();
    std::fs::copy(noop, hop.join("noop")).unwrap();
    write_sleeper(bench);
    chains(bench, exe, noop);
    waiters(bench, exe, fds);
}

/// `hop1` … `hop10`: aliases of the compiled no-op, one per step.
fn hop_plugins() -> String {
    let mut s = String::from("plugins:\n  hop: {}\n");
    for i in 1..=STEPS {
        s.push_str(&format!("  hop{i}:\n    uses: hop\n"));
    }
    s
}

fn steps(n: usize, gated: bool) -> String {
    let mut s = String::from("    steps:\n");
    for i in 1..=n {
        s.push_str(&format!("      - id: s{i}\n        uses: hop{i}\n"));
        if gated {
            s.push_str(&format!("        if: {GATE}\n"));
        }
    }
    s
}

fn api(extra: &str) -> String {
    format!(
        "api:\n  enabled: true\n  listen: 127.0.0.1:0\n{extra}  auth:\n    tokens:\n      - token: {TOKEN}\n        scopes: [\"plugin:rw\"]\n"
    )
}

// ------------------------------------------------------------------ trees

/// One finished tree, read back from the ledger.
#[derive(Debug, Clone, Copy)]
struct Tree {
    /// Root row created (the intake commit) to the last job completed, ms.
    wall: f64,
    /// The steps' process time (spawn to reap), summed, ms.
    plugins: f64,
    /// Step jobs (plugin hops).
    steps: usize,
    /// `core.switch` rows.
    switches: usize,
}

impl Tree {
    /// Time the tree spent outside its plugins, ms.
    fn overhead(&self) -> f64 {
        self.wall - self.plugins
    }
}

/// A job of a tree: plugin, status, created_at, completed_at, stopwatch dur_ns.
type JobRow = (String, String, String, Option<String>, Option<i64>);

/// Reads the tree rooted at `root`; panics unless every job in it succeeded.
fn tree(conn: &rusqlite::Connection, root: &str) -> Tree {
    let mut stmt = conn
        .prepare_cached(
            "WITH RECURSIVE t(id) AS (
                 SELECT ?1
                 UNION ALL
                 SELECT q.id FROM job_queue q JOIN t ON q.parent_job_id = t.id
             )
             SELECT q.plugin, q.status, q.created_at, q.completed_at, s.dur_ns
             FROM t JOIN job_queue q ON q.id = t.id
             LEFT JOIN job_stopwatch s ON s.job_id = q.id",
        )
        .unwrap();
    let rows: Vec<JobRow> = stmt
        .query_map([root], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let ts = |s: &str| {
        ductile::clock::parse_ts(s)
            .unwrap_or_else(|| panic!("bad timestamp {s}"))
            .timestamp_micros()
    };
    let mut created = None;
    let mut last = i64::MIN;
    let mut plugins_ns = 0i64;
    let (mut steps, mut switches) = (0, 0);
    for (plugin, status, created_at, completed_at, dur_ns) in &rows {
        assert_eq!(
            status, "succeeded",
            "tree {root}: a `{plugin}` job ended {status}"
        );
        match plugin.as_str() {
            "pipeline" => created = Some(ts(created_at)),
            "core.switch" => switches += 1,
            _ => {
                steps += 1;
                plugins_ns +=
                    dur_ns.unwrap_or_else(|| panic!("tree {root}: a step has no stopwatch row"));
            }
        }
        if let Some(c) = completed_at {
            last = last.max(ts(c));
        }
    }
    let created = created.unwrap_or_else(|| panic!("tree {root}: no root row"));
    Tree {
        wall: (last - created) as f64 / 1e3,
        plugins: plugins_ns as f64 / 1e6,
        steps,
        switches,
    }
}

/// Starts a tree of `pipeline` and waits until nothing is queued or running.
fn one_tree(client: &mut Client, conn: &rusqlite::Connection, pipeline: &str) -> String {
    let (status, body) = client.post(&format!("/pipeline/{pipeline}"), "{\"payload\":{}}");
    assert_eq!(status, 202, "POST /pipeline/{pipeline}: {body}");
    let done = wait_for(Duration::from_secs(30), Duration::from_millis(1), || {
        count(
            conn,
            "SELECT EXISTS(SELECT 1 FROM job_queue WHERE status IN ('queued','running'))",
        ) == 0
    });
    assert!(done, "a tree of `{pipeline}` did not finish within 30 s");
    body["job_id"].as_str().unwrap().to_string()
}

/// Per-hop overhead, the switch hop and the synchronous 3-step call, on one
/// daemon.
fn chains(bench: &Bench, exe: &Path, noop: &Path) {
    let config = format!(
        "service:\n  max_workers: 2\n{}{}pipelines:\n  - name: ten\n    on: bench.ten\n{}  - name: gated\n    on: bench.gated\n{}  - name: three\n    on: bench.three\n    execution_mode: synchronous\n    timeout: 60s\n{}",
        api(""),
        hop_plugins(),
        steps(STEPS, false),
        steps(STEPS, true),
        steps(3, false),
    );
    let root = bench.config("pipelines-chains", &config);
    let daemon = Daemon::start(exe, &root, false);
    let conn = daemon.ledger();
    let mut client = Client::connect(&daemon.api);

    // Alternated, so the host's drift lands on both pipelines alike.
    let mut plain = Vec::new();
    let mut gated = Vec::new();
    for i in 0..WARM_TREES + TREES {
        let a = one_tree(&mut client, &conn, "ten");
        let b = one_tree(&mut client, &conn, "gated");
        if i >= WARM_TREES {
            plain.push(a);
            gated.push(b);
        }
    }
    let plain: Vec<Tree> = plain.iter().map(|r| tree(&conn, r)).collect();
    let gated: Vec<Tree> = gated.iter().map(|r| tree(&conn, r)).collect();
    for t in &plain {
        assert_eq!(
            (t.steps, t.switches),
            (STEPS, 0),
            "a `ten` tree is incomplete"
        );
    }
    for t in &gated {
        assert_eq!(
            (t.steps, t.switches),
            (STEPS, STEPS),
            "a `gated` tree is incomplete"
        );
    }
    let hops = STEPS as f64;
    let mut per_hop: Vec<f64> = plain.iter().map(|t| t.overhead() / hops).collect();
    let mut wall: Vec<f64> = plain.iter().map(|t| t.wall).collect();
    let mut own: Vec<f64> = plain.iter().map(|t| t.plugins / hops).collect();
    row(
        &format!("per-hop overhead, {STEPS}-step pipeline, p50 ({TREES} trees)"),
        format!("{:.3} ms", percentile(&mut per_hop, 0.5)),
        "<= 2 ms",
    );
    row(
        "per-hop overhead, p95",
        format!("{:.3} ms", percentile(&mut per_hop, 0.95)),
        "",
    );
    row(
        "  tree wall time, root created -> last step completed, p50",
        format!("{:.2} ms", percentile(&mut wall, 0.5)),
        "",
    );
    row(
        "  the no-op's own time per step, p50 (spawn to reap)",
        format!("{:.3} ms", percentile(&mut own, 0.5)),
        "",
    );
    row(
        "  the same no-op spawned by the bench alone, p50",
        format!("{:.3} ms", plugin_alone(noop)),
        "",
    );

    let mut per_switch: Vec<f64> = plain
        .iter()
        .zip(&gated)
        .map(|(p, g)| (g.overhead() - p.overhead()) / hops)
        .collect();
    let mut gated_hop: Vec<f64> = gated.iter().map(|t| t.overhead() / hops).collect();
    row(
        "core.switch hop, added per switch, p50 (paired trees)",
        format!("{:.3} ms", percentile(&mut per_switch, 0.5)),
        "<= 0.3 ms",
    );
    row(
        "core.switch hop, added per switch, p95",
        format!("{:.3} ms", percentile(&mut per_switch, 0.95)),
        "",
    );
    row(
        "  overhead per step behind an `if:`, p50",
        format!("{:.3} ms", percentile(&mut gated_hop, 0.5)),
        "",
    );

    sync_calls(&mut client, &conn);
    drop(client);
    daemon.stop();
}

/// Wall time of the compiled no-op run by the bench itself (spawn, a `handle`
/// request on stdin, reap), p50 of 200 runs: the part of the runner's
/// spawn-to-reap time that is the process's own.
fn plugin_alone(noop: &Path) -> f64 {
    const REQUEST: &[u8] = br#"{"protocol":2,"job_id":"x","command":"handle","config":{},"state":{},"context":{},"event":{"type":"ductile.step.succeeded","payload":{}},"deadline_at":"2026-01-01T00:00:00Z"}"#;
    let mut took = Vec::new();
    for i in 0..220 {
        let t = Instant::now();
        let mut child = std::process::Command::new(noop)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(REQUEST).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the compiled no-op failed");
        if i >= 20 {
            took.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    percentile(&mut took, 0.5)
}

/// Sequential synchronous calls of `three` on one keep-alive connection.
fn sync_calls(client: &mut Client, conn: &rusqlite::Connection) {
    let mut latency = Vec::new();
    let mut roots = Vec::new();
    for i in 0..WARM_CALLS + CALLS {
        let t = Instant::now();
        let (status, body) = client.post("/pipeline/three", "{\"payload\":{}}");
        let took = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(status, 200, "POST /pipeline/three: {body}");
        assert_eq!(body["status"], "succeeded", "POST /pipeline/three: {body}");
        if i >= WARM_CALLS {
            latency.push(took);
            roots.push(body["job_id"].as_str().unwrap().to_string());
        }
    }
    let trees: Vec<Tree> = roots.iter().map(|r| tree(conn, r)).collect();
    let mut beyond: Vec<f64> = latency
        .iter()
        .zip(&trees)
        .map(|(l, t)| l - t.wall)
        .collect();
    let mut wall: Vec<f64> = trees.iter().map(|t| t.wall).collect();
    let mut own: Vec<f64> = trees.iter().map(|t| t.plugins).collect();
    let p50 = percentile(&mut latency, 0.5);
    row(
        "synchronous 3-step pipeline over HTTP, p50",
        format!("{p50:.2} ms"),
        "<= 15 ms",
    );
    row(
        "synchronous 3-step pipeline over HTTP, p95",
        format!("{:.2} ms", percentile(&mut latency, 0.95)),
        "",
    );
    row(
        "  its tree, root created -> last step completed, p50",
        format!("{:.2} ms", percentile(&mut wall, 0.5)),
        "",
    );
    row(
        "  of which the 3 plugins' own time, p50",
        format!("{:.2} ms", percentile(&mut own, 0.5)),
        "",
    );
    row(
        "  call latency beyond the tree (HTTP, intake, bridge), p50",
        format!("{:.2} ms", percentile(&mut beyond, 0.5)),
        "",
    );
}

// ------------------------------------------------------------------ waiters

/// Context switches of every thread of `pid`, by thread id, with its name.
fn switches_by_thread(pid: u32) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let name = std::fs::read_to_string(t.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n: u64 = status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.insert(t.file_name().to_string_lossy().into_owned(), (name, n));
    }
    out
}

/// What the daemon did over `IDLE`: CPU ticks, and context switches by
/// thread name (threads that exist at both ends of the window).
struct Idle {
    ticks: u64,
    switches: BTreeMap<String, u64>,
    threads: usize,
}

impl Idle {
    fn measure(pid: u32) -> Idle {
        let c0 = super::cpu_ticks(pid);
        let s0 = switches_by_thread(pid);
        std::thread::sleep(IDLE);
        let c1 = super::cpu_ticks(pid);
        let s1 = switches_by_thread(pid);
        let mut switches = BTreeMap::new();
        for (tid, (name, n)) in &s1 {
            if let Some((_, before)) = s0.get(tid) {
                *switches.entry(name.clone()).or_insert(0) += n - before;
            }
        }
        Idle {
            ticks: c1 - c0,
            switches,
            threads: s1.len(),
        }
    }

    fn total(&self) -> u64 {
        self.switches.values().sum()
    }

    /// The held worker's switches: its plugin runner polls every 50 ms while
    /// the sleeper runs.
    fn workers(&self) -> u64 {
        self.switches
            .iter()
            .filter(|(name, _)| name.starts_with("worker"))
            .map(|(_, n)| n)
            .sum()
    }

    /// Threads that switched at all, `name=count`.
    fn busy(&self) -> String {
        let busy: Vec<String> = self
            .switches
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        if busy.is_empty() {
            "none".into()
        } else {
            busy.join(" ")
        }
    }
}

/// 1,000 synchronous calls parked on the bridge while nothing can run.
fn waiters(bench: &Bench, exe: &Path, fds: u64) {
    if fds < 2 * WAITERS as u64 + 200 {
        println!(
            "(skipped the idle waiters: the file descriptor limit is {fds}; {} needed)",
            2 * WAITERS + 200
        );
        return;
    }
    // One worker, held by a sleeper queued before the start: every tree's first
    // step stays queued, so every call waits until the daemon stops.
    let config = format!(
        "service:\n  max_workers: 1\n  shutdown_timeout: 1s\n{}{}  sleeper:\n    timeout: 10m\npipelines:\n  - name: three\n    on: bench.three\n    execution_mode: synchronous\n    timeout: 10m\n{}",
        api(&format!(
            "  max_connections: {}\n  max_concurrent_sync: {WAITERS}\n  max_sync_timeout: 10m\n",
            WAITERS + 100
        )),
        hop_plugins(),
        steps(3, false),
    );
    let root = bench.config("pipelines-waiters", &config);
    let mut conn = super::open_rw(&root);
    let tx = queue::begin(&mut conn).unwrap();
    let job = NewJob::new("sleeper", "poll", Value::Null, SubmittedBy::Cli, 1);
    queue::enqueue_in(&tx, &job, Duration::from_secs(86_400), chrono::Utc::now()).unwrap();
    tx.commit().unwrap();
    let daemon = Daemon::start(exe, &root, false);
    let pid = daemon.pid();
    let held = wait_for(Duration::from_secs(20), Duration::from_millis(5), || {
        count(
            &conn,
            "SELECT COUNT(*) FROM job_queue WHERE plugin = 'sleeper' AND status = 'running'",
        ) == 1
    });
    assert!(
        held,
        "the sleeper job did not start: the worker is not held"
    );
    std::thread::sleep(Duration::from_secs(2));
    let alone = Idle::measure(pid);
    let rss_alone = rss_kb(pid);

    let request = format!(
        "POST /pipeline/three HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{{\"payload\":{{}}}}",
        daemon.api
    );
    let t = Instant::now();
    // Paced a little: the listen backlog is 128, and a burst of 1,000 connects
    // would time the kernel's SYN retries (1 s, 3 s) rather than the daemon.
    let mut sockets: Vec<TcpStream> = (0..WAITERS)
        .map(|i| {
            if i % 32 == 31 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut s = TcpStream::connect(&daemon.api).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    let parked = wait_for(Duration::from_secs(60), Duration::from_millis(10), || {
        count(
            &conn,
            "SELECT COUNT(*) FROM job_queue WHERE plugin = 'pipeline'",
        ) >= WAITERS as u64
    });
    let took = t.elapsed();
    assert!(
        parked,
        "{WAITERS} synchronous calls did not all start their trees within 60 s"
    );
    std::thread::sleep(Duration::from_secs(2));
    let waiting = Idle::measure(pid);
    let rss_waiting = rss_kb(pid);
    // Every call must still be waiting: nothing answered, nothing closed.
    let mut answered = 0;
    for s in &sockets {
        s.set_nonblocking(true).unwrap();
        match s.peek(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => answered += 1,
        }
    }
    daemon.stop();
    // At shutdown the bridge answers each waiter 202 (still running).
    let mut at_stop = BTreeMap::<u16, usize>::new();
    for s in &mut sockets {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut head = [0u8; 12];
        let status = match s.read_exact(&mut head) {
            Ok(()) => std::str::from_utf8(&head[9..12])
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            Err(_) => 0,
        };
        *at_stop.entry(status).or_insert(0) += 1;
    }
    drop(sockets);
    assert_eq!(
        answered, 0,
        "{answered} of {WAITERS} synchronous calls were answered or closed while their trees were held"
    );

    let secs = IDLE.as_secs();
    row(
        &format!("{WAITERS} synchronous calls connected, all trees started"),
        format!("{:.2} s", took.as_secs_f64()),
        "",
    );
    row(
        &format!("idle CPU over {secs} s, {WAITERS} waiters (ticks of 10 ms)"),
        format!("{}", waiting.ticks),
        "~0",
    );
    row(
        "  same daemon before they connected (held worker alone)",
        format!("{}", alone.ticks),
        "",
    );
    row(
        &format!("idle wakeups over {secs} s, {WAITERS} waiters (all threads)"),
        format!("{}", waiting.total()),
        "heartbeat only",
    );
    row(
        "  of which the held worker (its runner's 50 ms poll)",
        format!("{}", waiting.workers()),
        "",
    );
    row(
        "  of which every other thread",
        format!("{}", waiting.total() - waiting.workers()),
        "~0",
    );
    row(
        "  same daemon before they connected: all / other threads",
        format!("{} / {}", alone.total(), alone.total() - alone.workers()),
        "",
    );
    println!("  threads that woke with the waiters: {}", waiting.busy());
    println!("  threads that woke before:           {}", alone.busy());
    row(
        "  daemon threads: before / with the waiters",
        format!("{} / {}", alone.threads, waiting.threads),
        "",
    );
    let mb = |kb: u64| format!("{:.2} MB", kb as f64 / 1024.0);
    row(
        "  daemon RSS: before / with the waiters",
        format!("{} / {}", mb(rss_alone), mb(rss_waiting)),
        "",
    );
    let stop: Vec<String> = at_stop
        .iter()
        .map(|(status, n)| format!("{n}x{status}"))
        .collect();
    row(
        "  answers at shutdown (0 = none read)",
        stop.join(" "),
        "every waiter 202",
    );
}

/// Raises the soft limit on open files towards `want` (within the hard
/// limit) and returns the limit in force.
#[allow(unsafe_code)]
fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit`, and `lim` is one.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur >= want {
        return lim.rlim_cur;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the `rlimit` it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        lim.rlim_cur
    }
}

// ------------------------------------------------------------------ client

/// A keep-alive HTTP/1.1 client on one raw connection, one request at a time.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    addr: String,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let writer = TcpStream::connect(addr).unwrap();
        writer.set_nodelay(true).unwrap();
        writer
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            addr: addr.to_string(),
        }
    }

    /// POSTs `body` with the bench's token; the status and the JSON answer.
    fn post(&mut self, path: &str, body: &str) -> (u16, Value) {
        write!(
            self.writer,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let mut bytes = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                bytes.extend_from_slice(&chunk[..size]);
            }
        } else {
            bytes.resize(length.unwrap_or(0), 0);
            self.reader.read_exact(&mut bytes).unwrap();
        }
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }
}
