//! The `replication` section: daemon throughput (compiled no-op, 2 workers)
//! with `state.replication: litestream` while the real Litestream replicates
//! to a file replica, against the default mode in the same run; then the
//! replication lag under that load, from a job's commit to its presence in a
//! `litestream restore`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Bench, fill, open_rw, percentile, row, start_daemon, stop_daemon, wait_drained};

/// Jobs per throughput run: a few seconds each at the target rate.
const JOBS: usize = 6_000;
/// Jobs under which the lag is sampled.
const LAG_JOBS: usize = 4_000;

fn litestream_bin() -> Option<PathBuf> {
    let p = std::env::var_os("DUCTILE_LITESTREAM").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/litestream/bin/litestream"),
        PathBuf::from,
    );
    p.exists().then_some(p)
}

/// A `litestream replicate`, killed when dropped.
struct Replicating(Child);

impl Drop for Replicating {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `truncate-page-n` docs/REPLICATION.md recommends: 16 MiB of our 1 KiB
/// pages, past which Litestream forces a TRUNCATE checkpoint.
const TRUNCATE_PAGE_N: u32 = 16_384;

/// `step`: Litestream's `monitor-interval` and the replica's `sync-interval`.
fn replicate(ls: &Path, root: &Path, replica: &Path, step: &str) -> Replicating {
    let dir = root.parent().unwrap();
    let yml = dir.join("litestream.yml");
    std::fs::write(
        &yml,
        format!(
            "logging:\n  level: info\n  stderr: true\ndbs:\n  - path: {}\n    monitor-interval: {step}\n    truncate-page-n: {TRUNCATE_PAGE_N}\n    replica:\n      url: file://{}\n      sync-interval: {step}\n",
            dir.join("db/ductile.db").display(),
            replica.display()
        ),
    )
    .unwrap();
    Replicating(
        Command::new(ls)
            .args(["replicate", "-config"])
            .arg(&yml)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("litestream.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// A config dir with the ledger created (so Litestream has a file to follow).
fn setup(bench: &Bench, name: &str, mode: &str) -> PathBuf {
    let root = bench.config(
        name,
        "service:\n  max_workers: 2\n  job_log_retention: 30d\nplugins:\n  noop: {}\n",
    );
    let text = std::fs::read_to_string(&root).unwrap();
    std::fs::write(
        &root,
        text.replace(
            "  path: db/ductile.db\n",
            &format!("  path: db/ductile.db\n  replication: {mode}\n"),
        ),
    )
    .unwrap();
    drop(open_rw(&root));
    root
}

/// Jobs per second draining `n` queued no-op jobs.
fn drain(exe: &Path, root: &Path, n: usize) -> f64 {
    let mut conn = open_rw(root);
    fill(&mut conn, "noop", n);
    let t = Instant::now();
    let child = start_daemon(exe, root);
    wait_drained(&conn, n as i64);
    let secs = t.elapsed().as_secs_f64();
    stop_daemon(child);
    n as f64 / secs
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |d| {
        d.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_size(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

pub(crate) fn run(bench: &Bench, exe: &Path) {
    let Some(ls) = litestream_bin() else {
        println!("(skipped replication: no litestream; run ./.ci/run to install it)");
        return;
    };
    let plain = setup(bench, "repl-off", "off");
    let off = drain(exe, &plain, JOBS);
    let root = setup(bench, "repl-on", "litestream");
    let replica = bench.dir.join("repl-on/replica");
    let on = {
        // Litestream's defaults, as deployed.
        let _ls = replicate(&ls, &root, &replica, "1s");
        drain(exe, &root, JOBS)
    };
    row(
        &format!("throughput, {JOBS} jobs, 2 workers, replication off"),
        format!("{off:.0} jobs/s"),
        "(baseline)",
    );
    row(
        "throughput, same, litestream replicating (1s intervals)",
        format!("{on:.0} jobs/s ({:.0} %)", on / off * 100.0),
        ">= 85 % of off",
    );
    lag(bench, exe, &ls);
}

/// Commit-to-restore lag of probe jobs enqueued every 100 ms while the
/// daemon drains [`LAG_JOBS`]; a prober restores the replica in a loop and
/// dates each probe by the start of the first restore that holds it.
fn lag(bench: &Bench, exe: &Path, ls: &Path) {
    let root = setup(bench, "repl-lag", "litestream");
    let replica = bench.dir.join("repl-lag/replica");
    let _ls = replicate(ls, &root, &replica, "250ms");
    let mut conn = open_rw(&root);
    fill(&mut conn, "noop", LAG_JOBS);
    let child = start_daemon(exe, &root);
    let probes: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let restores = bench.dir.join("repl-lag/restores");
    std::fs::create_dir_all(&restores).unwrap();
    let prober = {
        let (probes, stop, ls, replica) = (probes.clone(), stop.clone(), ls.to_path_buf(), replica);
        std::thread::spawn(move || {
            let mut lags = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut restore_secs = Vec::new();
            let mut n = 0;
            let mut stopped_at = None;
            loop {
                let done = stop.load(Ordering::SeqCst);
                if done && stopped_at.is_none() {
                    stopped_at = Some(Instant::now());
                }
                if stopped_at.is_some_and(|t: Instant| t.elapsed() > Duration::from_secs(20)) {
                    println!("  warning: some probes never reached the replica");
                    break;
                }
                let pending: Vec<(String, Instant)> = probes
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(id, _)| !seen.contains(id))
                    .cloned()
                    .collect();
                if done && pending.is_empty() {
                    break;
                }
                n += 1;
                let to = restores.join(format!("r{n}.db"));
                let started = Instant::now();
                let ok = Command::new(&ls)
                    .args(["restore", "-o"])
                    .arg(&to)
                    .arg(format!("file://{}", replica.display()))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                restore_secs.push(started.elapsed().as_secs_f64());
                if ok {
                    let c = rusqlite::Connection::open(&to).unwrap();
                    for (id, at) in pending {
                        let found: i64 = c
                            .query_row("SELECT COUNT(*) FROM job_queue WHERE id = ?1", [&id], |r| {
                                r.get(0)
                            })
                            .unwrap_or(0);
                        if found == 1 {
                            lags.push(started.saturating_duration_since(at).as_secs_f64());
                            seen.insert(id);
                        }
                    }
                }
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
                }
            }
            (lags, restore_secs)
        })
    };
    let t = Instant::now();
    loop {
        let id = {
            use ductile::store::queue::{NewJob, SubmittedBy};
            let job = NewJob::new("noop", "poll", serde_json::Value::Null, SubmittedBy::Cli, 1);
            super::enqueue_new(&mut conn, &job, chrono::Utc::now())
        };
        probes.lock().unwrap().push((id, Instant::now()));
        let busy: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM job_queue WHERE status IN ('queued','running')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if busy <= 1 || t.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let (mut lags, mut restore_secs) = prober.join().unwrap();
    stop_daemon(child);
    let n = lags.len();
    row(
        &format!("replication lag p50, {n} probes under load (commit -> restore)"),
        format!("{:.0} ms", percentile(&mut lags, 0.5) * 1e3),
        "monitor 250ms + sync 250ms",
    );
    row(
        "replication lag p99",
        format!("{:.0} ms", percentile(&mut lags, 0.99) * 1e3),
        &format!(
            "(one restore takes {:.0} ms, p50)",
            percentile(&mut restore_secs, 0.5) * 1e3
        ),
    );
    row(
        "replica size after the lag run",
        format!(
            "{:.1} MB",
            dir_size(&bench.dir.join("repl-lag/replica")) as f64 / 1e6
        ),
        &format!(
            "(ledger {:.1} MB)",
            dir_size(&bench.dir.join("repl-lag/db")) as f64 / 1e6
        ),
    );
}

/// Jobs the growth run records.
const GROWTH_JOBS: usize = 100_000;
/// Jobs per second the growth run records: about twice what the daemon
/// commits with 2 workers (docs/PERFORMANCE.md).
const GROWTH_RATE: f64 = 1_500.0;

/// Ledger, WAL and replica sizes after [`GROWTH_JOBS`] jobs recorded
/// in-process (enqueue, claim, completion: the daemon's transactions without
/// the plugin) while Litestream replicates, and again after retention pruned
/// them all.
pub(crate) fn growth(bench: &Bench) {
    use ductile::store::completion::{self, AttemptRecord, Completion, Decision};
    use ductile::store::queue::{self, NewJob, SubmittedBy};
    let Some(ls) = litestream_bin() else {
        println!("(skipped growth: no litestream; run ./.ci/run to install it)");
        return;
    };
    let root = setup(bench, "repl-growth", "litestream");
    let dir = bench.dir.join("repl-growth");
    let replica = dir.join("replica");
    let db = dir.join("db/ductile.db");
    let wal = dir.join("db/ductile.db-wal");
    let _ls = replicate(&ls, &root, &replica, "1s");
    let mut conn = open_rw(&root);
    let day = Duration::from_secs(86_400);
    let mut wal_max = 0;
    let t = Instant::now();
    let jobs = std::env::var("DUCTILE_GROWTH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(GROWTH_JOBS);
    for i in 0..jobs {
        // Paced at GROWTH_RATE: a writer that takes the lock again the instant
        // it commits starves Litestream, whose 1 s busy timeout never catches
        // the gap (it cannot even create its tables, replicates nothing and
        // the WAL grows without end); the daemon's commits leave such gaps.
        let due = t + Duration::from_secs_f64(i as f64 / GROWTH_RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = chrono::Utc::now();
        let job = NewJob::new("noop", "poll", serde_json::Value::Null, SubmittedBy::Cli, 1);
        queue::enqueue(&mut conn, &job, day, now).unwrap();
        let c = queue::claim_next(&mut conn, &|_| 1, now).unwrap().unwrap();
        let done = Completion {
            job: &c,
            decision: Decision::Succeeded,
            last_error: None,
            record: AttemptRecord::default(),
            state: None,
            children: vec![],
            stopwatch: None,
            effects: vec![],
        };
        completion::complete(&mut conn, &done, day, now).unwrap();
        if i % 1000 == 0 {
            wal_max = wal_max.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    // Litestream's next monitor pass and sync ship the tail.
    std::thread::sleep(Duration::from_secs(2));
    // Litestream's debug log, for a reader who wants to see its checkpoints.
    if let Some(keep) = std::env::var_os("DUCTILE_BENCH_LITESTREAM_LOG") {
        let _ = std::fs::copy(dir.join("litestream.log"), keep);
    }
    let mb = |n: u64| format!("{:.1} MB", n as f64 / 1e6);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    row(
        &format!(
            "growth: {jobs} jobs recorded in-process at most {GROWTH_RATE} jobs/s, replicating"
        ),
        format!("{:.0} jobs/s", jobs as f64 / secs),
        "",
    );
    row(
        "growth: ledger / WAL high-water / replica",
        format!(
            "{} / {} / {}",
            mb(size(&db)),
            mb(wal_max),
            mb(dir_size(&replica))
        ),
        "WAL bounded by Litestream",
    );
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    loop {
        let p = ductile::store::retention::prune(&conn, cutoff, cutoff, 10).unwrap();
        wal_max = wal_max.max(size(&wal));
        // The daemon's heartbeat prunes 10 batches a pass; the pause between
        // passes is what leaves Litestream its lock (see the load above).
        std::thread::sleep(Duration::from_millis(50));
        if p.job_log + p.job_queue + p.history + p.snapshots == 0 && p.pages_freed == 0 {
            break;
        }
    }
    // Two of Litestream's monitor passes and syncs, and its checkpoint.
    std::thread::sleep(Duration::from_secs(5));
    row(
        "growth: after retention pruned every job: ledger / WAL / replica",
        format!(
            "{} / {} / {}",
            mb(size(&db)),
            mb(wal_max),
            mb(dir_size(&replica))
        ),
        "ledger shrinks; replica until compaction",
    );
}
