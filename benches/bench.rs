//! `make bench`: throughput, latency and footprint figures for the runner and the
//! daemon, printed as a table. Not a test: a figure is never asserted; the
//! targets are printed beside each figure so a reader can compare. The `http`,
//! `pipelines`, `relay` and `dashboard` sections (benches/http.rs, benches/pipelines.rs,
//! benches/relay.rs) do panic when a correctness check fails.
//!
//! Plugins: a no-op compiled from C at start (the "compiled plugin"), the same
//! no-op in Python run by Debian's /usr/bin/python3 when present, and the test
//! fixture `big_response` for the memory cost of one large response.

// Bench code: a failed unwrap aborts the measurement, and printing is its job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod containers;
mod dashboard;
mod http;
mod pipelines;
mod relay;
mod replication;
mod stage7;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ductile::clock::SystemClock;
use ductile::config::Synchronous;
use ductile::plugin::spawn::CancelToken;
use ductile::runtime::Runtime;
use ductile::store::queue::{self, NewJob, SubmittedBy};
use serde_json::Value;

const NOOP_C: &str = r#"
#include <unistd.h>
int main(void) {
    char buf[65536];
    while (read(0, buf, sizeof buf) > 0) {}
    static const char out[] = "{\"status\":\"ok\",\"result\":\"noop\"}\n";
    return write(1, out, sizeof out - 1) == (ssize_t)(sizeof out - 1) ? 0 : 1;
}
"#;

const NOOP_PY: &str = "#!/usr/bin/python3\nimport sys\nsys.stdin.read()\nsys.stdout.write('{\"status\":\"ok\",\"result\":\"noop\"}\\n')\n";

const MANIFEST: &str = "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: NAME\nversion: 0.1.0\nprotocol: 2\nentrypoint: ENTRY\ncommands:\n  - name: poll\n    type: read\n";

struct Bench {
    dir: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("plugins")).unwrap();
        Bench { dir }
    }

    fn plugin(&self, name: &str, entry: &str) -> PathBuf {
        let p = self.dir.join("plugins").join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("manifest.yaml"),
            MANIFEST.replace("NAME", name).replace("ENTRY", entry),
        )
        .unwrap();
        p
    }

    fn config(&self, name: &str, body: &str) -> PathBuf {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("config.yaml"),
            format!(
                "plugin_roots: [{}]\nstate:\n  path: db/ductile.db\n{body}",
                self.dir.join("plugins").display()
            ),
        )
        .unwrap();
        d.join("config.yaml")
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn row(name: &str, value: String, target: &str) {
    println!("{name:<58} {value:>16}   {target}");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and a
    // test run must not spend minutes measuring.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Optional filters: `cargo bench --bench bench -- throughput idle`.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let bench = Bench::new();
    let noop_dir = bench.plugin("noop", "noop");
    std::fs::write(noop_dir.join("noop.c"), NOOP_C).unwrap();
    // Static when the C library allows it: no dynamic loader work per spawn, the
    // leanest compiled plugin there is.
    let build = |extra: &[&str]| {
        Command::new("cc")
            .arg("-O2")
            .args(extra)
            .arg("-o")
            .arg(noop_dir.join("noop"))
            .arg(noop_dir.join("noop.c"))
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(build(&["-static"]) || build(&[]), "cc failed");
    let python = Path::new("/usr/bin/python3").exists();
    if python {
        let py = bench.plugin("pynoop", "run.py");
        std::fs::write(py.join("run.py"), NOOP_PY).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(py.join("run.py"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }
    // `make bench` names the release binary it built; plain `cargo bench` falls
    // back to the default release path.
    let exe = std::env::var_os("DUCTILE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ductile"));
    println!("{:<58} {:>16}   target", "figure", "measured");
    println!("{}", "-".repeat(100));
    if want("runner") {
        runner_overhead(&bench);
    }
    if !exe.exists() {
        println!("(build target/ductile first for the daemon figures: make release)");
        return;
    }
    if want("oneshot") {
        oneshot_wall(&bench, &exe, &noop_dir.join("noop"));
    }
    if want("size") {
        let size = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0);
        row(
            "release binary size (stripped)",
            format!("{:.2} MB", size as f64 / 1e6),
            "<= 8 MB",
        );
    }
    if want("throughput") {
        throughput(
            &bench,
            &exe,
            "noop",
            20_000,
            "compiled no-op",
            ">= 1200 jobs/s",
        );
        if python {
            throughput(
                &bench,
                &exe,
                "pynoop",
                1_000,
                "python no-op (/usr/bin/python3)",
                ">= 75 jobs/s",
            );
        } else {
            println!("(skipped python throughput: /usr/bin/python3 not found)");
        }
    }
    if want("latency") {
        latency(&bench);
    }
    if want("idle") {
        idle(&bench, &exe);
    }
    if want("memory") {
        memory_flat(&bench, &exe);
    }
    if want("response") {
        response_memory(&bench, &exe);
    }
    if want("http") {
        http::run(&bench, &exe);
    }
    if want("replication") {
        replication::run(&bench, &exe);
    }
    if want("growth") {
        replication::growth(&bench);
    }
    if want("pipelines") {
        pipelines::run(&bench, &noop_dir.join("noop"), &exe);
    }
    if want("relay") {
        relay::run(&bench, &noop_dir.join("noop"), &exe);
    }
    if want("containers") {
        containers::run(&bench, &exe, &noop_dir.join("noop"));
    }
    if want("stage7") {
        stage7::run(&bench, &exe);
    }
    if want("dashboard") {
        dashboard::run(&bench, &exe);
    }
}

/// Ductile-side time per job in-process: enqueue + claim + request + spawn
/// bookkeeping + completion, minus the time the plugin process itself took.
fn runner_overhead(bench: &Bench) {
    let root = bench.config("runner", "plugins:\n  noop: {}\n");
    let rt = Arc::new(Runtime::load(&root).unwrap());
    let mut conn = ductile::store::open(&rt.config.state.path, Synchronous::Normal).unwrap();
    let clock = SystemClock;
    let mut overhead = Vec::new();
    let mut plugin = Vec::new();
    for i in 0..2_000 {
        let t0 = Instant::now();
        let job = NewJob::new("noop", "poll", Value::Null, SubmittedBy::Cli, 1);
        let id = enqueue_new(&mut conn, &job, chrono::Utc::now());
        let claimed = queue::claim_job(&mut conn, &id, chrono::Utc::now())
            .unwrap()
            .unwrap();
        let out = ductile::dispatch::execute(&mut conn, &rt, &claimed, &CancelToken::new(), &clock)
            .unwrap();
        let total = t0.elapsed().as_secs_f64() * 1e3;
        if let ductile::dispatch::Executed::Recorded { plugin_time, .. } = out {
            if i >= 100 {
                overhead.push(total - plugin_time.as_secs_f64() * 1e3);
                plugin.push(plugin_time.as_secs_f64() * 1e3);
            }
        }
    }
    row(
        "runner overhead per job, p50 (ductile time, compiled no-op)",
        format!("{:.3} ms", percentile(&mut overhead, 0.5)),
        "<= 0.5 ms",
    );
    row(
        "runner overhead per job, p95",
        format!("{:.3} ms", percentile(&mut overhead, 0.95)),
        "",
    );
    row(
        "plugin process time per job, p50 (spawn to reap)",
        format!("{:.3} ms", percentile(&mut plugin, 0.5)),
        "",
    );
}

/// `ductile run noop` whole-process wall time vs the plugin binary's own, and
/// `ductile version` (process start-up alone) for scale.
fn oneshot_wall(bench: &Bench, exe: &Path, noop: &Path) {
    let root = bench.config("oneshot", "plugins:\n  noop: {}\n");
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut version = Vec::new();
    let mut added = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        let st = Command::new(exe)
            .args(["run", "noop", "--config"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let run = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut child = Command::new(noop)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(br#"{"protocol":2,"job_id":"x","command":"poll","config":{},"state":{},"context":{},"deadline_at":"2026-01-01T00:00:00Z"}"#);
        }
        child.wait().unwrap();
        let plugin = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let st = Command::new(exe)
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let v = t.elapsed().as_secs_f64() * 1e3;
        // The first runs warm the page cache and build the WAL.
        if i >= 20 {
            ours.push(run);
            theirs.push(plugin);
            version.push(v);
            added.push(run - plugin);
        }
    }
    let a = percentile(&mut ours, 0.5);
    let b = percentile(&mut theirs, 0.5);
    row(
        "`ductile run noop` wall time, p50",
        format!("{a:.2} ms"),
        "",
    );
    row(
        "compiled plugin alone wall time, p50",
        format!("{b:.2} ms"),
        "",
    );
    row(
        "`ductile version` wall time, p50 (start-up alone)",
        format!("{:.2} ms", percentile(&mut version, 0.5)),
        "",
    );
    row(
        "`ductile run` added over the plugin's wall time, p50",
        format!("{:.2} ms", percentile(&mut added, 0.5)),
        "<= 2.5 ms",
    );
    row(
        "`ductile run` added over the plugin's wall time, p95",
        format!("{:.2} ms", percentile(&mut added, 0.95)),
        "",
    );
}

fn start_daemon(exe: &Path, root: &Path) -> std::process::Child {
    let mut child = Command::new(exe)
        .args(["system", "start", "--config"])
        .arg(root)
        .env("DUCTILE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = root.parent().unwrap().join("db/ductile.lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ductile::lock::holder(&lock).is_none() {
        assert!(Instant::now() < deadline, "daemon did not start");
        if let Ok(Some(st)) = child.try_wait() {
            panic!("daemon exited: {st}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn stop_daemon(mut child: std::process::Child) {
    unsafe_free_kill(child.id(), "TERM");
    let _ = child.wait();
}

fn unsafe_free_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Enqueues `job` as created at `now` (a day's dedupe window) and returns
/// the new row's id.
fn enqueue_new(
    conn: &mut rusqlite::Connection,
    job: &NewJob,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    match queue::enqueue(conn, job, Duration::from_secs(86_400), now).unwrap() {
        queue::Enqueued::Created(id) => id,
        other => panic!("not enqueued: {other:?}"),
    }
}

/// Seals `root` as an operator would before the first start.
fn lock(exe: &Path, root: &Path) {
    let st = Command::new(exe)
        .args(["config", "lock", "--config"])
        .arg(root)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "config lock failed for {}", root.display());
}

fn open_rw(root: &Path) -> rusqlite::Connection {
    let rt = Runtime::load(root).unwrap();
    ductile::store::open(&rt.config.state.path, Synchronous::Normal).unwrap()
}

fn fill(conn: &mut rusqlite::Connection, plugin: &str, n: usize) {
    let tx = queue::begin(conn).unwrap();
    let now = chrono::Utc::now();
    for _ in 0..n {
        let job = NewJob::new(plugin, "poll", Value::Null, SubmittedBy::Cli, 1);
        queue::enqueue_in(&tx, &job, Duration::from_secs(86_400), now).unwrap();
    }
    tx.commit().unwrap();
}

fn wait_drained(conn: &rusqlite::Connection, total: i64) {
    loop {
        let done: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM job_queue WHERE status NOT IN ('queued','running')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if done >= total {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drain `n` queued jobs with 2 workers.
fn throughput(bench: &Bench, exe: &Path, plugin: &str, n: usize, label: &str, target: &str) {
    let root = bench.config(
        &format!("tp-{plugin}"),
        &format!(
            "service:\n  max_workers: 2\n  job_log_retention: 30d\nplugins:\n  {plugin}: {{}}\n"
        ),
    );
    let mut conn = open_rw(&root);
    fill(&mut conn, plugin, n);
    let t = Instant::now();
    let child = start_daemon(exe, &root);
    wait_drained(&conn, n as i64);
    let secs = t.elapsed().as_secs_f64();
    stop_daemon(child);
    let ok: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM job_queue WHERE status='succeeded'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    row(
        &format!("throughput, {n} jobs, 2 workers, {label}"),
        format!("{:.0} jobs/s", n as f64 / secs),
        target,
    );
    if ok != n as i64 {
        println!("  warning: only {ok} of {n} succeeded");
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn wakeups(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for l in s.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    total += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    total
}

/// Idle footprint with a few plugins scheduled hourly and the default tick.
fn idle(bench: &Bench, exe: &Path) {
    let root = bench.config(
        "idle",
        "plugins:\n  noop:\n    schedules:\n      - every: 1h\n  noop2:\n    uses: noop\n    schedules:\n      - cron: \"0 * * * *\"\n  noop3:\n    uses: noop\n    schedules:\n      - every: 6h\n",
    );
    let child = start_daemon(exe, &root);
    std::thread::sleep(Duration::from_secs(2));
    let pid = child.id();
    let (c0, w0) = (cpu_ticks(pid), wakeups(pid));
    std::thread::sleep(Duration::from_secs(10));
    let (c1, w1) = (cpu_ticks(pid), wakeups(pid));
    row(
        "idle RSS, 3 scheduled plugins",
        format!("{:.2} MB", rss_kb(pid) as f64 / 1024.0),
        "<= 8 MB",
    );
    row(
        "idle CPU over 10 s (clock ticks of 10 ms)",
        format!("{}", c1 - c0),
        "~0",
    );
    row(
        "idle thread wakeups over 10 s (all threads)",
        format!("{}", w1 - w0),
        "few",
    );
    stop_daemon(child);
}

/// RSS after 1k jobs vs after 100k jobs.
fn memory_flat(bench: &Bench, exe: &Path) {
    let root = bench.config("mem", "service:\n  max_workers: 2\nplugins:\n  noop: {}\n");
    let mut conn = open_rw(&root);
    let child = start_daemon(exe, &root);
    let pid = child.id();
    fill(&mut conn, "noop", 1_000);
    unsafe_free_kill(pid, "USR1");
    wait_drained(&conn, 1_000);
    let r1 = rss_kb(pid);
    for _ in 0..11 {
        fill(&mut conn, "noop", 9_000);
        unsafe_free_kill(pid, "USR1");
    }
    wait_drained(&conn, 100_000);
    let r2 = rss_kb(pid);
    row(
        "RSS after 1k jobs",
        format!("{:.2} MB", r1 as f64 / 1024.0),
        "",
    );
    row(
        "RSS after 100k jobs",
        format!("{:.2} MB", r2 as f64 / 1024.0),
        "within 2 MB of 1k",
    );
    stop_daemon(child);
}

fn hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Daemon RSS idle, at its peak during one ~9 MB response (1000 events of 9 KB,
/// the test fixture `big_response`), and once that job is done.
fn response_memory(bench: &Bench, exe: &Path) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plugins/big_response");
    let dst = bench.dir.join("plugins/big_response");
    std::fs::create_dir_all(&dst).unwrap();
    for file in ["manifest.yaml", "run.sh"] {
        std::fs::copy(src.join(file), dst.join(file)).unwrap();
    }
    let root = bench.config(
        "response",
        "service:\n  max_workers: 1\nplugins:\n  big_response:\n    config:\n      events: 1000\n      pad: 9000\n",
    );
    let mut conn = open_rw(&root);
    let child = start_daemon(exe, &root);
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kb(pid);
    fill(&mut conn, "big_response", 1);
    unsafe_free_kill(pid, "USR1");
    wait_drained(&conn, 1);
    // Let the worker finish dropping the job before looking.
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kb(pid);
    let peak = hwm_kb(pid);
    let size: i64 = conn
        .query_row("SELECT length(result) FROM job_log", [], |r| r.get(0))
        .unwrap_or(0);
    let mb = |kb: u64| format!("{:.2} MB", kb as f64 / 1024.0);
    row("daemon RSS idle (response section)", mb(idle), "");
    row(
        &format!(
            "daemon peak RSS, one {:.1} MB response job",
            size as f64 / 1e6
        ),
        mb(peak),
        "<= idle + 10x response",
    );
    row(
        "daemon RSS after that job",
        mb(after),
        "within 10 MB of idle",
    );
    stop_daemon(child);
}

/// Enqueue → plugin started, with an idle in-process pool.
fn latency(bench: &Bench) {
    use ductile::dispatch::pool::{Pool, PoolConfig, RunningJobs};
    let root = bench.config(
        "latency",
        "service:\n  max_workers: 2\nplugins:\n  noop: {}\n",
    );
    let rt = Arc::new(Runtime::load(&root).unwrap());
    let mut conn = ductile::store::open(&rt.config.state.path, Synchronous::Normal).unwrap();
    let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
    let (fatal_tx, _fatal_rx) = crossbeam_channel::unbounded();
    let pool = Pool::start(PoolConfig {
        db: rt.config.state.path.clone(),
        synchronous: Synchronous::Normal,
        workers: 2,
        runtime: Arc::new(ductile::runtime::RuntimeCell::new(rt.clone())),
        clock: Arc::new(SystemClock),
        running: Arc::new(RunningJobs::default()),
        wake_rx,
        requests: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        fatal_tx,
        committed: Arc::new(|_: Option<&str>| {}),
        beat: None,
        warm: None,
    })
    .unwrap();
    let mut lat = Vec::new();
    for _ in 0..300 {
        let job = NewJob::new("noop", "poll", Value::Null, SubmittedBy::Cli, 1);
        let now = chrono::Utc::now();
        let id = enqueue_new(&mut conn, &job, now);
        let _ = wake_tx.try_send(());
        let enter: i64 = loop {
            let r: Option<i64> = conn
                .query_row(
                    "SELECT enter_wall_ns FROM job_stopwatch WHERE job_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .ok();
            if let Some(v) = r {
                break v;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let created_ns = now.timestamp_nanos_opt().unwrap_or(0);
        lat.push((enter - created_ns) as f64 / 1e6);
    }
    row(
        "latency enqueue -> plugin started, p50 (idle worker)",
        format!("{:.3} ms", percentile(&mut lat, 0.5)),
        "<= 1 ms",
    );
    row(
        "latency enqueue -> plugin started, p95",
        format!("{:.3} ms", percentile(&mut lat, 0.95)),
        "",
    );
    drop(wake_tx);
    pool.join();
}
