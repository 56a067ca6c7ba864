//! Regression tests for the core's hardening: processes, locks and storage.
//! Each test is named after the defect it proves fixed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{Background, TestDir, alive, recorded_pids, wait_until};

const LONG: Duration = Duration::from_secs(60);

/// A dir with `fixture` configured with `config.out` (and `extra` lines under
/// the plugin); returns the dir and the out directory.
fn with_fixture(tag: &str, fixture: &str, extra: &str, service: &str) -> (TestDir, PathBuf) {
    let dir = TestDir::new(tag);
    dir.fixture(fixture);
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n{service}plugins:\n  {fixture}:\n{extra}    config:\n      out: {}\n",
        out.display()
    ));
    (dir, out)
}

fn family_pids(out: &Path) -> Vec<i64> {
    recorded_pids(&out.join("family"))
}

fn enqueue(dir: &TestDir, plugin: &str) -> String {
    dir.enqueue(plugin, 1).remove(0)
}

/// Sets the fixture's `config.delay` (seconds, as text) in the dir's config.
fn set_delay(dir: &TestDir, delay: &str) {
    let path = dir.path.join("config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("delay:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, format!("{text}      delay: \"{delay}\"\n")).unwrap();
}

// ---------------------------------------------------------------- processes

#[test]
fn item_1_a_crashed_daemons_plugins_never_run_beside_their_retry() {
    let (dir, out) = with_fixture(
        "crash-family",
        "family",
        "    timeouts:\n      poll: 5m\n",
        "",
    );
    // The first attempt sleeps long; its retry (after recovery) answers at once.
    let job = enqueue(&dir, "family");
    std::fs::create_dir_all(&out).unwrap();
    set_delay(&dir, "600");
    let daemon = dir.start();
    dir.wait_until(LONG, "leader, child and escaped grandchild running", || {
        family_pids(&out).len() == 3
    });
    let first = family_pids(&out);
    daemon.crash();
    // The crashed daemon's plugin and its descendants run on until the next
    // daemon recovers the job: found by their job id, they are killed first.
    set_delay(&dir, "0");
    let daemon = dir.start();
    dir.wait_until(LONG, "the retry succeeded", || {
        dir.text(&format!("SELECT status FROM job_queue WHERE id = '{job}'"))
            .as_deref()
            == Some("succeeded")
    });
    assert!(
        !out.join("overlap").exists(),
        "the retry saw processes of the first attempt alive: {}",
        std::fs::read_to_string(out.join("overlap")).unwrap_or_default()
    );
    for pid in first {
        assert!(!alive(pid), "pid {pid} of the crashed attempt still runs");
    }
    assert!(
        daemon
            .log()
            .iter()
            .any(|l| l.contains("leftover process(es) of 1 orphaned job(s)")),
        "{:?}",
        daemon.log()
    );
    assert_eq!(
        dir.count(&format!(
            "SELECT COUNT(*) FROM job_log WHERE job_id = '{job}'"
        )),
        2,
        "the interrupted attempt has its own job_log row"
    );
}

#[test]
fn item_2_descendants_that_leave_the_group_die_with_their_job() {
    let (dir, out) = with_fixture("escape", "family", "", "");
    let run = dir.run(&["run", "family"]).code(0);
    assert!(run.stdout.contains("family done"), "{run:?}");
    let pids = family_pids(&out);
    assert_eq!(pids.len(), 3, "leader, child, setsid grandchild: {pids:?}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} outlived its succeeded job");
    }
}

#[test]
fn item_2_a_daemon_contains_escaping_descendants_too() {
    let (dir, out) = with_fixture("escape-daemon", "family", "", "");
    let job = enqueue(&dir, "family");
    let _daemon = dir.start();
    dir.wait_until(LONG, "job succeeded", || {
        dir.text(&format!("SELECT status FROM job_queue WHERE id = '{job}'"))
            .as_deref()
            == Some("succeeded")
    });
    for pid in family_pids(&out) {
        wait_until(LONG, &format!("pid {pid} gone"), || !alive(pid));
    }
}

#[test]
fn item_3_an_answer_followed_by_lingering_succeeds_with_a_warning() {
    let dir = TestDir::new("linger");
    dir.fixture("linger_after_answer");
    dir.config("plugins:\n  linger_after_answer:\n    timeouts:\n      poll: 10m\n");
    let run = dir.run(&["run", "linger_after_answer", "--json"]).code(0);
    let v = run.json();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"], "answered, then lingered");
    assert_eq!(
        dir.text("SELECT warnings FROM job_log").as_deref(),
        Some(
            r#"["the plugin answered and closed stdout but was still running 1s later; its processes were killed and the answer kept"]"#
        )
    );
}

// ---------------------------------------------------------------- locks

#[test]
fn item_4_concurrent_one_shots_all_finish_and_none_is_signalled() {
    let (dir, out) = with_fixture("oneshot-storm", "counter", "", "");
    set_delay(&dir, "0.05");
    let runs: Vec<Background> = (0..8)
        .map(|_| Background::start(dir.command(&["run", "counter"])))
        .collect();
    for r in runs {
        let done = r.finish(LONG);
        assert_eq!(done.code, 0, "{done:#?}");
    }
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status = 'succeeded'"),
        8
    );
    let _ = out;
}

#[test]
fn item_4_sigusr1_and_sighup_do_not_kill_a_one_shot() {
    let (dir, out) = with_fixture("oneshot-signals", "counter", "", "");
    set_delay(&dir, "2");
    let run = Background::start(dir.command(&["run", "counter"]));
    dir.wait_until(LONG, "the plugin runs", || {
        !recorded_pids(&out.join("pids")).is_empty()
    });
    run.signal("USR1");
    run.signal("HUP");
    // Nor does `system reload`, which signals only a ready daemon.
    let reload = dir.run(&["system", "reload"]).code(1);
    assert_eq!(
        reload.error(),
        format!(
            "no ductile daemon runs on {}: a `ductile run` one-shot (pid {}) holds it, and only a daemon reloads; nothing was signalled",
            dir.db_path().display(),
            run.pid()
        )
    );
    let done = run.finish(LONG);
    assert_eq!(done.code, 0, "{done:#?}");
}

#[test]
fn item_5_a_daemon_waits_for_a_one_shot_and_then_starts() {
    let (dir, out) = with_fixture("daemon-waits", "counter", "", "");
    set_delay(&dir, "2");
    let run = Background::start(dir.command(&["run", "counter"]));
    dir.wait_until(LONG, "the one-shot's plugin runs", || {
        !recorded_pids(&out.join("pids")).is_empty()
    });
    let daemon = Background::start(dir.command(&["system", "start"]));
    // A starting daemon announces itself: a one-shot arriving now waits for it
    // and hands its job over instead of racing it for the lock.
    dir.wait_until(LONG, "the daemon announced its start", || {
        ductile::lock::daemon_starting(&dir.db_path()).is_some()
    });
    // Signals sent while it waits do not kill it.
    daemon.signal("HUP");
    daemon.signal("USR1");
    let late = Background::start(dir.command(&["run", "counter", "--json"]));
    assert_eq!(run.finish(LONG).code, 0);
    let late = late.finish(LONG);
    assert_eq!(late.code, 0, "{late:#?}");
    assert!(
        late.json()["ran_by"]
            .as_str()
            .unwrap()
            .starts_with("the daemon (pid"),
        "{late:#?}"
    );
    dir.wait_until(LONG, "the daemon is ready", || {
        ductile::lock::ready_daemon(&dir.db_path()).is_some()
    });
    daemon.signal("TERM");
    let d = daemon.finish(LONG);
    assert_eq!(d.code, 0, "{d:#?}");
    assert!(
        d.stdout
            .contains("waiting up to 60s for a `ductile run` one-shot (pid"),
        "{d:#?}"
    );
}

#[test]
fn item_6_ctrl_c_on_a_handed_over_one_shot_cancels_its_job() {
    let (dir, out) = with_fixture("handover-cancel", "counter", "", "");
    set_delay(&dir, "600");
    let daemon = dir.start();
    let run = Background::start(dir.command(&["run", "counter"]));
    dir.wait_until(LONG, "the daemon runs the job", || {
        !recorded_pids(&out.join("pids")).is_empty()
    });
    let plugin = recorded_pids(&out.join("pids"))[0];
    run.signal("INT");
    let done = run.finish(LONG);
    assert_eq!(done.code, 1, "{done:#?}");
    assert!(
        done.stderr.contains(&format!(
            "note: interrupted: asking the daemon (pid {}) to cancel job",
            daemon.pid()
        )),
        "{done:#?}"
    );
    assert!(
        done.stdout
            .contains("note: interrupted: the daemon cancelled job"),
        "{done:#?}"
    );
    assert_eq!(
        dir.text("SELECT status || ': ' || last_error FROM job_queue")
            .as_deref(),
        Some("dead: cancelled: interrupted by the `ductile run` that submitted it")
    );
    wait_until(LONG, "the plugin is gone", || !alive(plugin));
}

#[test]
fn item_6_ctrl_c_on_a_queued_handed_over_job_cancels_it_before_it_runs() {
    let (dir, out) = with_fixture("handover-queued", "counter", "    parallelism: 1\n", "");
    set_delay(&dir, "600");
    let busy = enqueue(&dir, "counter");
    let _daemon = dir.start();
    dir.wait_until(LONG, "the daemon is busy", || {
        !recorded_pids(&out.join("pids")).is_empty()
    });
    let run = Background::start(dir.command(&["run", "counter", "--json"]));
    dir.wait_until(LONG, "the one-shot's job is queued", || {
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status = 'queued'") == 1
    });
    run.signal("INT");
    let done = run.finish(LONG);
    assert_eq!(done.code, 1, "{done:#?}");
    let v = done.json();
    assert_eq!(v["status"], "dead");
    assert_eq!(
        v["error"],
        "cancelled: interrupted by the `ductile run` that submitted it"
    );
    let id = v["job_id"].as_str().unwrap();
    assert_ne!(id, busy);
    assert_eq!(
        dir.count(&format!(
            "SELECT COUNT(*) FROM job_transitions WHERE job_id = '{id}' AND to_status = 'running'"
        )),
        0,
        "it never ran"
    );
}

#[test]
fn item_6_a_daemon_dying_mid_job_tells_the_one_shot_the_truth() {
    let (dir, out) = with_fixture("handover-crash", "counter", "", "");
    set_delay(&dir, "600");
    let daemon = dir.start();
    let run = Background::start(dir.command(&["run", "counter"]));
    dir.wait_until(LONG, "the daemon runs the job", || {
        !recorded_pids(&out.join("pids")).is_empty()
    });
    let plugin = recorded_pids(&out.join("pids"))[0];
    daemon.crash();
    let done = run.finish(LONG);
    assert_eq!(done.code, 1, "{done:#?}");
    assert!(
        done.stdout
            .contains("note: the daemon stopped while running job")
            && done
                .stdout
                .contains("its only attempt was interrupted, so the job is recorded dead"),
        "{done:#?}"
    );
    assert_eq!(
        dir.text("SELECT status FROM job_queue").as_deref(),
        Some("dead")
    );
    assert!(
        !alive(plugin),
        "the one-shot's recovery killed the orphan plugin"
    );
}

#[test]
fn item_7_deleting_the_lock_file_does_not_let_a_second_daemon_in() {
    let (dir, _out) = with_fixture("lock-removed", "counter", "", "");
    let daemon = dir.start();
    let lock = dir.path.join("state/ductile.lock");
    std::fs::remove_file(&lock).unwrap();
    let second = dir.run(&["system", "start"]).code(1);
    assert!(
        second.error().starts_with("a ductile daemon (pid ")
            || second.error().starts_with("another ductile"),
        "{second:#?}"
    );
    // The daemon notices and puts its identity back.
    daemon.wait_log(LONG, "was deleted or replaced; re-created it");
    assert!(lock.exists());
    assert_eq!(
        ductile::lock::ready_daemon(&dir.db_path()).map(|d| d.pid()),
        Some(daemon.pid())
    );
}

// ---------------------------------------------------------------- storage

#[test]
fn item_8_processes_racing_to_create_a_ledger_all_succeed() {
    let dir = TestDir::new("create-race");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    // `system reset` opens the ledger without the instance lock, like any
    // process that only records something: eight of them race a one-shot.
    let mut all: Vec<Background> = (0..8)
        .map(|_| Background::start(dir.command(&["system", "reset", "echo"])))
        .collect();
    all.push(Background::start(dir.command(&["run", "echo"])));
    for b in all {
        let done = b.finish(LONG);
        assert_eq!(done.code, 0, "{done:#?}");
    }
}

#[test]
fn item_9_a_foreign_database_is_refused_byte_identical() {
    let dir = TestDir::new("foreign");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    std::fs::create_dir_all(dir.path.join("state")).unwrap();
    {
        let c = rusqlite::Connection::open(dir.db_path()).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE photos (id INTEGER); PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let before = std::fs::read(dir.db_path()).unwrap();
    let run = dir.run(&["run", "echo"]).code(78);
    assert_eq!(
        run.error(),
        format!(
            "{} is not a ductile ledger: a SQLite database of another application (1 table(s), user_version 3, no job_queue/job_log); point state.path at a new file or at an existing ductile ledger",
            dir.db_path().display()
        )
    );
    dir.run(&["system", "start"]).code(78);
    dir.run(&["system", "status"]).code(78);
    assert_eq!(
        std::fs::read(dir.db_path()).unwrap(),
        before,
        "byte-identical"
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec!["ductile.db", "ductile.lock"],
        "no -wal or -shm left behind"
    );
}

#[test]
fn item_10_a_damaged_ledger_is_refused_at_start_with_the_recovery_command() {
    let dir = TestDir::new("damaged");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    for _ in 0..30 {
        dir.run(&["run", "echo"]).code(0);
    }
    {
        let c = dir.db();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.db_path())
        .unwrap();
    // Scribble over the last 4 KiB (several pages of any page size).
    let len = f.metadata().unwrap().len();
    assert!(len >= 8 * 4096, "a ledger with many pages: {len}");
    f.seek(SeekFrom::Start((len / 4096 - 1) * 4096)).unwrap();
    f.write_all(&[0xA5; 4096]).unwrap();
    drop(f);
    let start = dir.run(&["system", "start"]).code(1);
    let shown = dir.db_path().display().to_string();
    assert!(
        start
            .error()
            .starts_with(&format!("{shown} is damaged (quick_check: ")),
        "{start:#?}"
    );
    assert_eq!(start.stderr.lines().count(), 1, "one line: {start:#?}");
    assert!(
        start.error().ends_with(&format!(
            "stop here and restore a backup, or salvage what SQLite can read with `sqlite3 {shown} .recover | sqlite3 recovered.db` and point state.path at recovered.db"
        )),
        "{start:#?}"
    );
}

#[test]
fn item_11_a_ledger_deleted_under_the_daemon_stops_it() {
    let (dir, _out) = with_fixture("ledger-deleted", "counter", "", "");
    let daemon = Background::start(dir.command(&["system", "start"]));
    dir.wait_until(LONG, "the daemon is ready", || {
        ductile::lock::ready_daemon(&dir.db_path()).is_some()
    });
    std::fs::remove_file(dir.db_path()).unwrap();
    let done = daemon.finish(LONG);
    assert_eq!(done.code, 1, "{done:#?}");
    assert!(
        done.stdout.contains(&format!(
            "{} was deleted: the ledger this daemon writes is gone from {}",
            dir.db_path().display(),
            dir.db_path().display()
        )),
        "{done:#?}"
    );
}

#[test]
fn item_11_a_wal_replaced_under_the_daemon_stops_it() {
    let (dir, _out) = with_fixture("wal-replaced", "counter", "", "");
    let daemon = Background::start(dir.command(&["system", "start"]));
    dir.wait_until(LONG, "the daemon is ready", || {
        ductile::lock::ready_daemon(&dir.db_path()).is_some()
    });
    let wal = dir.path.join("state/ductile.db-wal");
    assert!(wal.exists());
    let other = dir.path.join("state/other");
    std::fs::write(&other, b"").unwrap();
    std::fs::rename(&other, &wal).unwrap();
    let done = daemon.finish(LONG);
    assert_eq!(done.code, 1, "{done:#?}");
    assert!(
        done.stdout
            .contains(&format!("{} was replaced by another file", wal.display())),
        "{done:#?}"
    );
}

#[test]
fn item_12_an_unwritable_state_directory_names_the_path_and_the_user() {
    // Under the system temp dir, which every user may traverse.
    let dir = TestDir::new_in(&std::env::temp_dir(), "unwritable");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    let state = dir.path.join("state");
    std::fs::create_dir_all(&state).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let root = ductile::sys::euid() == 0;
    let mut cmd = dir.command(&["run", "echo"]);
    if root {
        // Root may write anywhere: run as nobody, with the tree readable.
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        make_readable(&dir.path);
        assert!(
            std::process::Command::new("setpriv")
                .arg("--version")
                .output()
                .is_ok(),
            "this test needs setpriv (util-linux) to run as an unprivileged user"
        );
        // A copy of the binary the unprivileged user can reach, wherever the
        // checkout lives.
        let exe = dir.path.join("ductile");
        std::fs::copy(crate::support::bin(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut wrapped = std::process::Command::new("setpriv");
        wrapped
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(["run", "echo", "--config"])
            .arg(&dir.path)
            .env_remove("DUCTILE_CONFIG_DIR");
        cmd = wrapped;
    } else {
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let run = crate::support::Run::from(cmd.output().unwrap());
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(run.code, 1, "{run:#?}");
    let err = run.error();
    assert!(
        err.starts_with(&format!(
            "state directory {} is not writable by user ",
            state.display()
        )),
        "{err}"
    );
    assert!(err.contains(" with mode 0"), "{err}");
    assert!(
        err.ends_with("give that user write access or point state.path at a directory it owns"),
        "{err}"
    );
}

fn make_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in walk(dir) {
        let _ = std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o755));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn item_14_an_older_ledger_is_refused_until_migrated_then_works() {
    let dir = TestDir::new("migrate");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    std::fs::create_dir_all(dir.path.join("state")).unwrap();
    {
        let c = rusqlite::Connection::open(dir.db_path()).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
        c.execute_batch(include_str!("../fixtures/ledgers/v1.sql"))
            .unwrap();
    }
    let shown = dir.db_path().display().to_string();
    let refused = format!(
        "{shown}: the ledger is at schema version 1 and this ductile needs version 7; run `ductile system migrate` (it backs the file up first), then start again"
    );
    assert_eq!(dir.run(&["run", "echo"]).code(78).error(), refused);
    assert_eq!(dir.run(&["system", "start"]).code(78).error(), refused);
    let before = std::fs::read(dir.db_path()).unwrap();
    let dry = dir.run(&["system", "migrate", "--dry-run"]).code(0);
    assert!(
        dry.stdout
            .starts_with(&format!("dry run: would back {shown} up to ")),
        "{dry:#?}"
    );
    assert!(
        dry.stdout
            .contains("from schema version 1 to 7 in one transaction"),
        "{dry:#?}"
    );
    assert!(
        dry.stdout.contains("  1 -> 2: add job_log.warnings"),
        "{dry:#?}"
    );
    assert_eq!(
        std::fs::read(dir.db_path()).unwrap(),
        before,
        "a dry run changes nothing"
    );
    let done = dir.run(&["system", "migrate", "--json"]).code(0);
    let v = done.json();
    assert_eq!((v["from"].as_i64(), v["to"].as_i64()), (Some(1), Some(7)));
    let backup = PathBuf::from(v["backup"].as_str().unwrap());
    assert!(backup.exists(), "{backup:?}");
    let old = rusqlite::Connection::open(&backup).unwrap();
    let v1: i64 = old
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v1, 1, "the backup is the old ledger");
    assert_eq!(v["incremental_vacuum_enabled"], true);
    let jobs_before = dir.count("SELECT COUNT(*) FROM job_queue");
    dir.run(&["run", "echo"]).code(0);
    assert_eq!(dir.count("SELECT COUNT(*) FROM job_queue"), jobs_before + 1);
    assert!(
        dir.run(&["system", "migrate"])
            .code(0)
            .stdout
            .contains("already at schema version 7"),
    );
}

#[test]
fn item_14_new_ledgers_give_space_back() {
    let dir = TestDir::new("autovacuum");
    dir.echo();
    dir.config("plugins:\n  echo: {}\n");
    dir.run(&["run", "echo"]).code(0);
    assert_eq!(dir.count("PRAGMA auto_vacuum"), 2, "INCREMENTAL");
}

/// Workers committing in turn must still bring the WAL back to its start: the
/// shared-memory index grows by 32 KiB per 4096 frames the log holds.
#[test]
fn item_14_the_wal_rewinds_while_a_queue_drains() {
    let dir = TestDir::new("walrewind");
    dir.fixture("ok_basic");
    dir.config("service:\n  tick_interval: 1s\n  max_workers: 8\nplugins:\n  ok_basic: {}\n");
    let jobs = 3000;
    dir.enqueue("ok_basic", jobs);
    let daemon = dir.start();
    let done = || dir.count("SELECT COUNT(*) FROM job_queue WHERE status = 'succeeded'");
    dir.wait_until(Duration::from_secs(120), "the queue drained", || {
        done() == jobs as i64
    });
    let shm = std::fs::metadata(dir.path.join("state/ductile.db-shm"))
        .unwrap()
        .len();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
    // 8000 frames between checkpoints take two 32 KiB blocks; one deferred
    // rewind (a busy machine) four. Without rewinds this drain reaches seven.
    assert!(
        shm <= 128 * 1024,
        "WAL index reached {shm} bytes: the log never rewound"
    );
}

// ---------------------------------------------------------------- crash storm

/// A small deterministic generator (xorshift), seeded per run and printed, so
/// a failing storm can be replayed with `DUCTILE_STORM_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn crash_storm_leaves_every_job_accounted_for() {
    // Size from the environment: a few kills in CI, many under `make bench`.
    let kills = env_number("DUCTILE_STORM_KILLS", 5);
    let clients = env_number("DUCTILE_STORM_CLIENTS", 3);
    let seed = env_number(
        "DUCTILE_STORM_SEED",
        u64::from(std::process::id()) << 16 | 0x9e37,
    );
    eprintln!("crash storm: {kills} kills, {clients} clients, seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = TestDir::new("storm");
    dir.fixture("storm");
    let out = dir.path.join("out");
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n  max_workers: 2\n  shutdown_timeout: 10s\nplugins:\n  storm:\n    max_outstanding_polls: 2\n    schedules:\n      - id: boot\n        after: 0s\n      - id: fast\n        every: 1s\n        if_running: queue\n    config:\n      out: {}\n",
        out.display()
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let stop = stop.clone();
            let outcomes = outcomes.clone();
            let cmd = {
                let c = dir.command(&["run", "storm"]);
                (
                    c.get_program().to_owned(),
                    c.get_args().map(ToOwned::to_owned).collect::<Vec<_>>(),
                )
            };
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut c = std::process::Command::new(&cmd.0);
                    c.args(&cmd.1)
                        .env_remove("DUCTILE_CONFIG_DIR")
                        .env_remove("DUCTILE_LOG");
                    let done = Background::start(c).finish(Duration::from_secs(120));
                    outcomes.lock().unwrap().push(done);
                }
            })
        })
        .collect();
    let succeeded = || dir.count("SELECT COUNT(*) FROM job_queue WHERE status = 'succeeded'");
    let mut daemon = dir.start();
    for _ in 0..kills {
        let target = succeeded() + 1 + rng.below(6) as i64;
        dir.wait_until(LONG, "work done before the next kill", || {
            succeeded() >= target
        });
        daemon.crash();
        daemon = dir.start();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);

    // Every client got an exit code with a message.
    let outcomes = outcomes.lock().unwrap();
    assert!(!outcomes.is_empty());
    for o in outcomes.iter() {
        match o.code {
            0 => assert!(o.stdout.contains(" succeeded (storm poll)"), "{o:#?}"),
            1 => assert!(
                o.stderr.contains("error: ")
                    || o.stdout.contains("note: ")
                    || o.stdout.contains("error: "),
                "a failed client says why: {o:#?}"
            ),
            _ => panic!("unexpected exit: {o:#?}"),
        }
    }
    // Every job is terminal, or queued with the reason it is waiting.
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue WHERE status = 'running'"),
        0
    );
    assert_eq!(
        dir.count("SELECT COUNT(*) FROM job_queue q WHERE status = 'queued' AND NOT EXISTS (SELECT 1 FROM job_transitions t WHERE t.job_id = q.id AND t.to_status = 'queued')"),
        0
    );
    // No job ran twice at the same time.
    assert!(
        !out.join("overlap").exists(),
        "{}",
        std::fs::read_to_string(out.join("overlap")).unwrap_or_default()
    );
    assert_eq!(dir.text("PRAGMA integrity_check").as_deref(), Some("ok"));
    // No plugin process survives (the test directory checks finished jobs'
    // processes when it is dropped; here, every process of any job).
    let left: Vec<i64> = proc_pids_of_jobs(&dir);
    assert!(left.is_empty(), "leftover plugin processes: {left:?}");
    eprintln!(
        "crash storm: {} client runs, {} jobs ({} scheduled), {} recovered orphans",
        outcomes.len(),
        dir.count("SELECT COUNT(*) FROM job_queue"),
        dir.count("SELECT COUNT(*) FROM job_queue WHERE submitted_by = 'scheduler'"),
        dir.count("SELECT COUNT(*) FROM job_transitions WHERE reason LIKE 'orphaned%'")
    );
}

/// Live processes carrying the id of one of this test's jobs.
fn proc_pids_of_jobs(dir: &TestDir) -> Vec<i64> {
    let ids: Vec<String> = dir
        .texts("SELECT id FROM job_queue")
        .into_iter()
        .flatten()
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()))
        .filter(|pid| alive(*pid))
        .filter(|pid| crate::support::job_of(*pid).is_some_and(|j| ids.contains(&j)))
        .collect()
}
