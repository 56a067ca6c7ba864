//! Crash safety of pipelines: the daemon aborted at injected points while a
//! tree runs (the `fault-injection` feature, which `make test` enables), then
//! restarted; afterwards every tree is complete, no step ran for one event
//! more than at-least-once allows, and the lineage is coherent.

use serde_json::{Value, json};

use crate::hardening::env_number;
use crate::http::{ADMIN, call, listening};
use crate::pipelines::{LONG, Running, by_plugin, configure, settled_tree, trigger};

const SEQUENCE: &str = "pipelines:\n  - name: seq\n    on: go\n    steps:\n      - uses: a\n      - uses: b\n        if:\n          path: payload.n\n          op: eq\n          value: 1\n      - split:\n          - uses: c\n          - uses: d\n";

/// Runs the tree with the daemon armed to abort at `point` while it
/// finishes a job of `b`, restarts it unarmed, and returns the settled tree
/// and how many attempts each plugin's jobs made.
fn crash_and_recover(tag: &str, point: &str) -> (Running, Vec<Value>) {
    let dir = configure(tag, SEQUENCE, "");
    let daemon = dir.start_with_env("DUCTILE_FAULT", &format!("{point}:b"));
    let api = listening(&daemon, "api.listen");
    let armed = Running { dir, daemon, api };
    let root = trigger(&armed, "seq", json!({"n": 1}))["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let Running { dir, daemon, .. } = armed;
    let code = daemon.wait_exit(LONG);
    assert_ne!(code, 0, "the armed daemon aborted at {point}");
    let daemon = dir.start();
    let api = listening(&daemon, "api.listen");
    let r = Running { dir, daemon, api };
    let tree = settled_tree(&r, &root);
    (r, tree)
}

/// The attempts of `plugin`'s jobs that ran and were recorded (they have
/// the plugin's pid), and those recovery closed as orphaned (no pid: the
/// daemon stopped before it could record them).
fn attempts(r: &Running, plugin: &str) -> (i64, i64) {
    let count = |pid: &str| {
        r.dir.count(&format!(
            "SELECT COUNT(*) FROM job_attempts a JOIN job_queue q ON q.id = a.job_id WHERE q.plugin = '{plugin}' AND a.pid IS {pid}"
        ))
    };
    (count("NOT NULL"), count("NULL"))
}

/// Every step ran to success exactly once per event, each child's parent
/// and context chain lead to the root, nothing is left to run.
fn assert_whole(r: &Running, tree: &[Value]) {
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{tree:#?}");
    for p in ["a", "core.switch", "b", "c", "d"] {
        assert_eq!(by_plugin(tree, p).len(), 1, "{p} once: {tree:#?}");
    }
    let b = by_plugin(tree, "b")[0];
    for p in ["c", "d"] {
        assert_eq!(by_plugin(tree, p)[0]["parent_job_id"], b["job_id"]);
    }
    assert_eq!(
        r.dir.count(
            "SELECT COUNT(*) FROM job_queue q LEFT JOIN job_queue p ON p.id = q.parent_job_id WHERE q.parent_job_id IS NOT NULL AND p.id IS NULL"
        ),
        0,
        "a child without its parent"
    );
    assert_eq!(
        r.dir.count(
            "SELECT COUNT(*) FROM job_queue q JOIN event_context c ON c.id = q.event_context_id LEFT JOIN event_context pc ON pc.id = c.parent_id WHERE c.parent_id IS NOT NULL AND pc.id IS NULL"
        ),
        0,
        "a context row without its parent"
    );
    assert_eq!(
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE status IN ('queued', 'running')"),
        0
    );
    // The steps after the crash ran once. (One may have been claimed in the
    // crashed commit, so recovery closed that claim as orphaned first.)
    for p in ["c", "d"] {
        let (ran, orphaned) = attempts(r, p);
        assert_eq!(ran, 1, "{p} ran once");
        assert!(orphaned <= 1, "{p}: {orphaned} orphaned claims");
    }
    let inspect = r
        .dir
        .run(&[
            "job",
            "inspect",
            by_plugin(tree, "c")[0]["job_id"].as_str().unwrap(),
            "--json",
        ])
        .json();
    let up: Vec<&str> = inspect["lineage_up"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(up, ["pipeline", "a", "core.switch", "b"], "{inspect:#?}");
}

#[test]
fn a_crash_after_the_plugin_answered_reruns_the_step_and_routes_once() {
    let (r, tree) = crash_and_recover("crash-answered", "answered");
    assert_whole(&r, &tree);
    // Its answer was never recorded: recovery closed that attempt and ran b
    // again (at least once).
    assert_eq!(attempts(&r, "b"), (1, 1));
    assert_eq!(by_plugin(&tree, "b")[0]["attempt"], 2);
}

#[test]
fn a_crash_inside_the_completion_transaction_loses_and_duplicates_nothing() {
    let (r, tree) = crash_and_recover("crash-children", "children_written");
    assert_whole(&r, &tree);
    // The children were written with b's outcome and rolled back with it;
    // b ran again and routed once.
    assert_eq!(attempts(&r, "b"), (1, 1));
    assert_eq!(by_plugin(&tree, "b")[0]["attempt"], 2);
}

#[test]
fn a_crash_right_after_the_completion_committed_keeps_its_children() {
    let (r, tree) = crash_and_recover("crash-committed", "committed");
    assert_whole(&r, &tree);
    assert_eq!(attempts(&r, "b"), (1, 0), "b is not run again");
    assert_eq!(by_plugin(&tree, "b")[0]["attempt"], 1);
}

#[test]
fn pipeline_crash_storm_completes_every_tree_with_each_step_once() {
    // Sized from the environment: a few kills here, many under `make bench`.
    let kills = env_number("DUCTILE_PIPELINE_STORM_KILLS", 3);
    let per_round = env_number("DUCTILE_PIPELINE_STORM_TREES", 4);
    let dir = configure("pipeline-storm", SEQUENCE, "");
    let succeeded = || {
        dir.count(
            "SELECT COUNT(*) FROM job_queue WHERE status = 'succeeded' AND plugin != 'pipeline'",
        )
    };
    let mut roots = Vec::new();
    let mut daemon = dir.start();
    for round in 0..kills {
        let api = listening(&daemon, "api.listen");
        let body = json!({"payload": {"n": 1}}).to_string();
        for _ in 0..per_round {
            let a = call(&api, "POST", "/pipeline/seq", Some(ADMIN), Some(&body));
            assert_eq!(a.status, 202, "{}", a.text());
            roots.push(a.json()["job_id"].as_str().unwrap().to_string());
        }
        // Kill while the trees are mid-way: after some steps of this round.
        let target = succeeded() + 1 + (round % 3) as i64;
        dir.wait_until(LONG, "some steps done before the kill", || {
            succeeded() >= target
        });
        daemon.crash();
        daemon = dir.start();
    }
    let api = listening(&daemon, "api.listen");
    let r = Running { dir, daemon, api };
    for root in &roots {
        let tree = settled_tree(&r, root);
        assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{tree:#?}");
        for p in ["a", "core.switch", "b", "c", "d"] {
            assert_eq!(
                by_plugin(&tree, p).len(),
                1,
                "{p} once in {root}: {tree:#?}"
            );
        }
    }
    // At least once, and exactly once where the run was recorded.
    for p in ["a", "b", "c", "d"] {
        let ran = r.dir.count(&format!(
            "SELECT COUNT(*) FROM job_attempts a JOIN job_queue q ON q.id = a.job_id WHERE q.plugin = '{p}' AND a.pid IS NOT NULL"
        ));
        assert_eq!(ran, roots.len() as i64, "{p}: one recorded run per tree");
    }
    assert_eq!(
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE status IN ('queued', 'running')"),
        0
    );
    assert_eq!(r.dir.text("PRAGMA integrity_check").as_deref(), Some("ok"));
    eprintln!(
        "pipeline crash storm: {kills} kills, {} trees, {} recovered orphans",
        roots.len(),
        r.dir
            .count("SELECT COUNT(*) FROM job_transitions WHERE reason LIKE 'orphaned%'")
    );
}
