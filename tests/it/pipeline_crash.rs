//! Crash safety of pipelines: the daemon killed at the named points of a
//! job's life (the crash points of the test build, `src/fault.rs`) and by a
//! SIGKILL storm over running pipelines. Afterwards every tree is complete,
//! every hop ran once per upstream job and event, a step ran more than once
//! only when a crash interrupted it, and the lineage in `job_queue` and
//! `event_context` holds together.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::hardening::env_number;
use crate::support::{Daemon, TestDir, alive};

const LONG: Duration = Duration::from_secs(120);

/// A step, a split whose two branches start with the same plugin and command
/// (two hops for one event), a gated step (`payload.n > 5`) in one branch, and
/// a last step that runs once per branch.
const PIPELINE: &str = "pipelines:
  - name: crash
    on: go
    steps:
      - id: first
        uses: a
      - id: fan
        split:
          - id: left
            uses: b
          - steps:
              - id: right
                uses: b
              - id: gated
                uses: c
                if:
                  path: payload.n
                  op: gt
                  value: 5
      - id: last
        uses: d
";

/// The hops a tree of `crash` runs for `n`, with how many jobs each has.
fn expected_hops(n: i64) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (hop, count) in [
        ("crash:first", 1),
        ("crash:left", 1),
        ("crash:right", 1),
        ("crash:gated/if", 1),
        ("crash:gated", usize::from(n > 5)),
        ("crash:last", 2),
    ] {
        if count > 0 {
            m.insert(hop.to_string(), count);
        }
    }
    m
}

/// Writes the config: plugins `a`..`d` are `pipe_step` instances that record
/// every run in `out/runs`.
fn setup(tag: &str, workers: usize) -> TestDir {
    let dir = TestDir::new(tag);
    dir.fixture("pipe_step");
    let out = dir.path.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut plugins = String::from("plugins:\n");
    for n in ["a", "b", "c", "d"] {
        plugins.push_str(&format!(
            "  {n}:\n    uses: pipe_step\n    max_attempts: 100\n    config:\n      name: {n}\n      runs: {}\n",
            out.join("runs").display()
        ));
    }
    dir.config(&format!(
        "service:\n  tick_interval: 1s\n  max_workers: {workers}\n{plugins}{PIPELINE}"
    ));
    dir
}

/// Starts a tree from the command line (the ledger directly, no daemon
/// needed); returns its root job.
fn trigger(dir: &TestDir, n: i64) -> String {
    let payload = format!("{{\"n\": {n}}}");
    let v = dir
        .run(&["pipeline", "run", "crash", "--payload", &payload, "--json"])
        .code(0)
        .json();
    v["job_id"].as_str().unwrap().to_string()
}

fn unfinished(dir: &TestDir) -> i64 {
    dir.count("SELECT COUNT(*) FROM job_queue WHERE status IN ('queued', 'running')")
}

fn runs_file(dir: &TestDir) -> std::path::PathBuf {
    dir.path.join("out/runs")
}

/// Plugin runs so far: lines of `out/runs`.
fn runs_so_far(dir: &TestDir) -> usize {
    std::fs::read_to_string(runs_file(dir))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

struct Job {
    id: String,
    plugin: String,
    status: String,
    attempt: i64,
    parent: Option<String>,
    source_event: Option<String>,
    hop: Option<String>,
    context: Option<String>,
    /// The root's event id, from its payload.
    event_id: Option<String>,
    /// The root's `payload.n`.
    n: Option<i64>,
}

struct Context {
    parent: Option<String>,
    step: Option<String>,
    instance: Option<String>,
}

/// What the ledger shows once everything settled.
#[derive(Debug, Default)]
struct Report {
    trees: usize,
    jobs: usize,
    /// Plugin processes started.
    runs: usize,
    /// Runs beyond one per plugin job: each one a crash's doing.
    reruns: usize,
    /// Attempts a crash cut short (recorded by recovery).
    interrupted: usize,
    /// Jobs sharing (upstream job, event, hop) with another.
    twins: usize,
}

/// The job state machine (`store::queue::legal`) plus enqueue.
fn legal(from: Option<&str>, to: &str) -> bool {
    matches!(
        (from, to),
        (None, "queued")
            | (Some("queued"), "running" | "dead")
            | (
                Some("running"),
                "succeeded" | "failed" | "timed_out" | "dead" | "queued"
            )
            | (Some("failed" | "timed_out"), "queued" | "dead")
    )
}

/// Checks the settled ledger of `crash` trees and returns its figures; panics
/// on the first thing that does not hold.
fn check(dir: &TestDir) -> Report {
    let db = dir.db();
    assert_eq!(unfinished(dir), 0, "nothing is left queued or running");
    assert_eq!(dir.text("PRAGMA integrity_check").as_deref(), Some("ok"));
    let jobs: Vec<Job> = db
        .prepare("SELECT id, plugin, status, attempt, parent_job_id, source_event_id, hop, event_context_id, json_extract(payload, '$.event_id'), json_extract(payload, '$.payload.n') FROM job_queue ORDER BY rowid")
        .unwrap()
        .query_map([], |r| {
            Ok(Job {
                id: r.get(0)?,
                plugin: r.get(1)?,
                status: r.get(2)?,
                attempt: r.get(3)?,
                parent: r.get(4)?,
                source_event: r.get(5)?,
                hop: r.get(6)?,
                context: r.get(7)?,
                event_id: r.get(8)?,
                n: r.get(9)?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    let contexts: HashMap<String, Context> = db
        .prepare("SELECT id, parent_id, step_id, json_extract(accumulated_json, '$.ductile_pipeline_instance_id') FROM event_context")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Context {
                    parent: r.get(1)?,
                    step: r.get(2)?,
                    instance: r.get(3)?,
                },
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut transitions: HashMap<String, Vec<(Option<String>, String, i64)>> = HashMap::new();
    let mut stmt = db
        .prepare("SELECT job_id, from_status, to_status, attempt FROM job_transitions ORDER BY id")
        .unwrap();
    for row in stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
    {
        let (job, from, to, attempt) = row.unwrap();
        transitions
            .entry(job)
            .or_default()
            .push((from, to, attempt));
    }
    let mut attempts: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
    let mut stmt = db
        .prepare("SELECT job_id, status, error FROM job_attempts ORDER BY id")
        .unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
    {
        let (job, status, error) = row.unwrap();
        attempts.entry(job).or_default().push((status, error));
    }
    let logs: HashMap<String, usize> = db
        .prepare("SELECT job_id, COUNT(*) FROM job_log GROUP BY job_id")
        .unwrap()
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut runs: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(runs_file(dir))
        .unwrap_or_default()
        .lines()
    {
        let job = line.split_whitespace().next().unwrap().to_string();
        assert!(
            by_id.contains_key(job.as_str()),
            "a run of unknown job {job}"
        );
        *runs.entry(job).or_default() += 1;
    }

    let mut report = Report {
        jobs: jobs.len(),
        ..Report::default()
    };
    let root_of = |job: &Job| -> String {
        let mut at = job;
        let mut seen = 0;
        while let Some(p) = &at.parent {
            at = by_id
                .get(p.as_str())
                .unwrap_or_else(|| panic!("job {} names parent {p}, which does not exist", at.id));
            seen += 1;
            assert!(seen <= 32, "a parent cycle through {}", job.id);
        }
        at.id.clone()
    };
    let mut hops: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    let mut keys: HashMap<(String, String, String), usize> = HashMap::new();
    let mut tree_keys: HashMap<(String, String, String), usize> = HashMap::new();
    for job in &jobs {
        let what = format!("job {} ({} at {:?})", job.id, job.plugin, job.hop);
        // Every transition chains from the one before, follows the state
        // machine and ends where the job is.
        let moves = transitions
            .get(&job.id)
            .unwrap_or_else(|| panic!("{what}: no transitions"));
        let mut at: Option<&str> = None;
        for (from, to, _) in moves {
            assert_eq!(from.as_deref(), at, "{what}: transitions {moves:?}");
            assert!(
                legal(from.as_deref(), to),
                "{what}: illegal move in {moves:?}"
            );
            at = Some(to);
        }
        assert_eq!(at, Some(job.status.as_str()), "{what}: {moves:?}");
        assert_eq!(job.status, "succeeded", "{what}");
        let claims = moves
            .iter()
            .filter(|(f, t, _)| f.as_deref() == Some("queued") && t == "running")
            .count();
        let tried = attempts.get(&job.id).map_or(&[][..], Vec::as_slice);
        let logged = logs.get(&job.id).copied().unwrap_or(0);
        if job.plugin == "pipeline" || job.plugin == "core.switch" {
            // Settled in-process: never claimed by a worker, never spawned.
            assert_eq!(claims, 1, "{what}: {moves:?}");
            assert!(
                tried.is_empty() && logged == 1,
                "{what}: {tried:?}, {logged} log rows"
            );
            assert!(!runs.contains_key(&job.id), "{what} was spawned");
        } else {
            // Every claim ended in one attempt row and one job_log row; all
            // but the last were cut short by a crash.
            assert_eq!(tried.len(), claims, "{what}: {tried:?} for {moves:?}");
            assert_eq!(logged, claims, "{what}: job_log rows");
            assert_eq!(job.attempt as usize, claims, "{what}: attempt number");
            let (last, earlier) = tried.split_last().unwrap();
            assert_eq!(last.0, "succeeded", "{what}: {tried:?}");
            for (status, error) in earlier {
                assert!(
                    status == "dead" && error.as_deref().is_some_and(|e| e.starts_with("orphaned")),
                    "{what}: an earlier attempt ended otherwise than by a crash: {tried:?}"
                );
            }
            report.interrupted += earlier.len();
            // At least once: it ran; more only for attempts a crash cut short.
            let ran = runs.get(&job.id).copied().unwrap_or(0);
            assert!(ran >= 1, "{what} succeeded without running");
            assert!(
                ran - 1 <= earlier.len(),
                "{what} ran {ran} times in {claims} attempt(s)"
            );
            report.runs += ran;
            report.reruns += ran - 1;
        }
        let Some(parent) = &job.parent else {
            assert_eq!(
                job.plugin, "pipeline",
                "{what}: only tree roots have no parent"
            );
            report.trees += 1;
            continue;
        };
        let up = by_id[parent.as_str()];
        let root = root_of(job);
        let hop = job.hop.clone().unwrap_or_else(|| panic!("{what}: no hop"));
        let event = job
            .source_event
            .clone()
            .unwrap_or_else(|| panic!("{what}: no source event"));
        *hops
            .entry(root.clone())
            .or_default()
            .entry(hop.clone())
            .or_default() += 1;
        *keys
            .entry((parent.clone(), event.clone(), hop.clone()))
            .or_default() += 1;
        *tree_keys
            .entry((root.clone(), hop.clone(), event.clone()))
            .or_default() += 1;
        // What reaches a hop: the root's event at the entry, the event a
        // switch saw behind it.
        if up.plugin == "pipeline" {
            assert_eq!(Some(&event), up.event_id.as_ref(), "{what}: entry event");
        }
        if up.plugin == "core.switch" {
            assert_eq!(
                Some(&event),
                up.source_event.as_ref(),
                "{what}: behind a switch"
            );
        }
        // The context chain follows the job chain, inside one tree instance.
        let cid = job
            .context
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: no context"));
        let ctx = contexts
            .get(cid)
            .unwrap_or_else(|| panic!("{what}: context {cid} missing"));
        assert_eq!(
            ctx.step.as_deref(),
            Some(hop.as_str()),
            "{what}: context step"
        );
        assert_eq!(
            ctx.instance.as_deref(),
            Some(root.as_str()),
            "{what}: tree instance"
        );
        match &up.context {
            None => assert_eq!(
                ctx.parent, None,
                "{what}: an entry hop's context has no parent"
            ),
            Some(up_ctx) => {
                assert_eq!(ctx.parent.as_ref(), Some(up_ctx), "{what}: context parent");
                assert!(
                    contexts.contains_key(up_ctx),
                    "{what}: upstream context missing"
                );
            }
        }
    }
    report.twins = keys.values().filter(|&&n| n > 1).map(|n| n - 1).sum();
    assert_eq!(
        report.twins,
        0,
        "jobs sharing (upstream job, event, hop): {:?}",
        keys.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let repeated: Vec<_> = tree_keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "(tree, hop, event) with more than one job: {repeated:?}"
    );
    // Every tree is whole: each hop its shape and its `n` call for, no more.
    for root in jobs.iter().filter(|j| j.parent.is_none()) {
        let n = root
            .n
            .unwrap_or_else(|| panic!("root {} has no payload.n", root.id));
        let got = hops.remove(&root.id).unwrap_or_default();
        assert_eq!(got, expected_hops(n), "tree {} (n = {n})", root.id);
    }
    report
}

/// Kills the daemon at `point` on its `pass`-th pass while one tree runs
/// (one worker, so the order is fixed), restarts it unarmed and checks the
/// result: `reruns` plugin runs beyond one per job and `interrupted` attempts.
fn crash_at(tag: &str, point: &str, pass: u32, reruns: usize, interrupted: usize) {
    let dir = setup(tag, 1);
    let fault = format!("{point}:{pass}");
    let daemon = dir.start_with_env(&[("DUCTILE_FAULT", fault.as_str())]);
    daemon.wait_log(LONG, "fault injection armed");
    trigger(&dir, 10);
    daemon.wait_log(
        LONG,
        &format!("fault injection: killing this process at `{point}`, pass {pass}"),
    );
    assert_eq!(daemon.wait_exit(LONG), -1, "killed by a signal");
    let daemon = dir.start();
    dir.wait_until(LONG, "the tree finished after the restart", || {
        unfinished(&dir) == 0
    });
    let report = check(&dir);
    assert_eq!(report.trees, 1);
    inspect_is_coherent(&dir);
    assert_eq!(
        (report.reruns, report.interrupted),
        (reruns, interrupted),
        "{fault}: {report:?}"
    );
    stop(daemon);
}

/// `job inspect` of every job of the last step: its lineage up runs from a
/// root to its parent, each hop the parent of the next.
fn inspect_is_coherent(dir: &TestDir) {
    let last: Vec<String> = dir
        .texts("SELECT id FROM job_queue WHERE plugin = 'd'")
        .into_iter()
        .flatten()
        .collect();
    assert!(!last.is_empty());
    for id in last {
        let v = dir.run(&["job", "inspect", &id, "--json"]).code(0).json();
        let up = v["lineage_up"].as_array().unwrap();
        assert_eq!(up[0]["parent_job_id"], serde_json::Value::Null, "{v:#}");
        assert_eq!(up[0]["plugin"], "pipeline");
        for pair in up.windows(2) {
            assert_eq!(pair[1]["parent_job_id"], pair[0]["job_id"], "{v:#}");
        }
        assert_eq!(v["parent_job_id"], up[up.len() - 1]["job_id"], "{v:#}");
        assert_eq!(v["step_id"], "last");
        assert_eq!(v["status"], "succeeded");
    }
}

fn stop(daemon: Daemon) {
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(LONG), 0);
}

// The tree's jobs complete in this order with one worker: first (pass 1),
// left, right (pass 3, whose completion writes the switch and the gated
// step), then the two `last` steps and the gated one.

#[test]
fn pipeline_crash_after_the_claim_before_the_spawn() {
    // The claimed job never ran: it runs once, on its second attempt.
    crash_at("pcrash-spawn-1", "before-spawn", 1, 0, 1);
    crash_at("pcrash-spawn-3", "before-spawn", 3, 0, 1);
}

#[test]
fn pipeline_crash_after_the_answer_before_the_completion() {
    // The answer is lost with the process: the step runs again, and its
    // events are routed once, by the second run.
    crash_at("pcrash-answer-1", "after-answer", 1, 1, 1);
    crash_at("pcrash-answer-3", "after-answer", 3, 1, 1);
}

#[test]
fn pipeline_crash_with_the_children_inserted_before_the_commit() {
    crash_at("pcrash-children-1", "children-inserted", 1, 1, 1);
    crash_at("pcrash-children-3", "children-inserted", 3, 1, 1);
}

#[test]
fn pipeline_crash_inside_a_switch_decision() {
    // The switch is written in `right`'s completion transaction: the crash
    // rolls all of it back and `right` runs again.
    crash_at("pcrash-settle-1", "settle", 1, 1, 1);
}

#[test]
fn pipeline_crash_inside_the_trigger_leaves_no_tree() {
    // The root is settled in the trigger's own transaction: a trigger killed
    // there wrote nothing, and the daemon has nothing to finish.
    let dir = setup("pcrash-trigger", 1);
    let daemon = dir.start();
    let killed = dir
        .command(&["pipeline", "run", "crash", "--payload", "{\"n\": 10}"])
        .env("DUCTILE_FAULT", "settle:1")
        .output()
        .unwrap();
    assert_eq!(killed.status.code(), None, "killed by a signal: {killed:?}");
    assert_eq!(dir.count("SELECT COUNT(*) FROM job_queue"), 0);
    assert_eq!(dir.count("SELECT COUNT(*) FROM event_context"), 0);
    trigger(&dir, 10);
    dir.wait_until(LONG, "the next tree finished", || unfinished(&dir) == 0);
    assert_eq!(check(&dir).trees, 1);
    stop(daemon);
}

#[test]
fn pipeline_crash_right_after_the_commit() {
    // The completion stands; the job claimed with it is interrupted before
    // it ran.
    crash_at("pcrash-commit-1", "after-commit", 1, 0, 1);
    crash_at("pcrash-commit-3", "after-commit", 3, 0, 1);
}

// ---------------------------------------------------------------- the storm

/// xorshift, seeded per run and printed, so a failing storm can be replayed
/// with `DUCTILE_PIPELINE_STORM_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Trees started but not finished that the storm allows at once, so the
/// backlog stays small enough to drain once the kills stop.
const BACKLOG: i64 = 12;

#[test]
fn pipeline_crash_storm_completes_every_tree_exactly_once() {
    // Size from the environment: a few kills in CI, many under `make bench`.
    let kills = env_number("DUCTILE_PIPELINE_STORM_KILLS", 4);
    let clients = env_number("DUCTILE_PIPELINE_STORM_CLIENTS", 2);
    let seed = env_number(
        "DUCTILE_PIPELINE_STORM_SEED",
        u64::from(std::process::id()) << 16 | 0x7f4a,
    );
    eprintln!("pipeline crash storm: {kills} kills, {clients} clients, seed {seed}");
    let mut rng = Rng(seed | 1);
    let dir = setup("pcrash-storm", 3);
    let started = Instant::now();
    let stop_clients = AtomicBool::new(false);
    let triggered = AtomicU64::new(0);
    let transitions = || dir.count("SELECT COUNT(*) FROM job_transitions");
    // The ledger exists once the daemon runs; the clients look at it.
    let mut daemon = dir.start();
    let daemon = std::thread::scope(|s| {
        let clients: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    while !stop_clients.load(Ordering::SeqCst) {
                        dir.wait_until(LONG, "room in the backlog", || {
                            stop_clients.load(Ordering::SeqCst) || unfinished(&dir) < BACKLOG
                        });
                        if stop_clients.load(Ordering::SeqCst) {
                            break;
                        }
                        // n alternates around the gate's threshold.
                        let n = (triggered.fetch_add(1, Ordering::SeqCst) % 11) as i64;
                        trigger(&dir, n);
                    }
                })
            })
            .collect();
        for _ in 0..kills {
            // A kill lands a few ledger transitions on, or just after a
            // plugin started: anywhere in a job's life.
            if rng.below(2) == 0 {
                let target = transitions() + 1 + rng.below(40) as i64;
                dir.wait_until(LONG, "transitions before the next kill", || {
                    transitions() >= target
                });
            } else {
                let target = runs_so_far(&dir) + 1 + rng.below(8) as usize;
                dir.wait_until(LONG, "plugin runs before the next kill", || {
                    runs_so_far(&dir) >= target
                });
            }
            // A daemon that stopped by itself (a ledger error it found fatal)
            // would pass for a killed one.
            assert!(
                alive(i64::from(daemon.pid())),
                "the daemon stopped by itself: {:#?}",
                daemon.log()
            );
            daemon.crash();
            daemon = dir.start();
        }
        stop_clients.store(true, Ordering::SeqCst);
        // Their last trees are in the ledger before the wait for the end.
        for c in clients {
            c.join().unwrap();
        }
        daemon
    });
    dir.wait_until(LONG, "every tree finished", || unfinished(&dir) == 0);
    stop(daemon);
    let report = check(&dir);
    assert_eq!(report.trees as u64, triggered.load(Ordering::SeqCst));
    assert!(report.trees > 0);
    eprintln!(
        "pipeline crash storm: {kills} kills, {} trees, {} jobs, {} plugin runs ({} reruns), {} interrupted attempts, {} twins, {:.1}s",
        report.trees,
        report.jobs,
        report.runs,
        report.reruns,
        report.interrupted,
        report.twins,
        started.elapsed().as_secs_f64()
    );
}
