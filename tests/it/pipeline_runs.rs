//! More pipeline shapes run by the real daemon with real plugin processes:
//! split fan-out, `call` with baggage, pipeline-level `if:` on context, hook
//! recursion, the synchronous timeout, the event stream's preflight and step
//! events, and every 10-cookbook pipeline end to end with stand-in plugins.

use serde_json::{Value, json};

use crate::http::{ADMIN, Stream, call, get};
use crate::pipelines::{LONG, Running, by_plugin, received, settled_tree, start, trigger};
use crate::support::TestDir;

/// Starts `pipeline` with `payload` and waits for its tree: its root and jobs.
fn run_tree(r: &Running, pipeline: &str, payload: Value) -> (String, Vec<Value>) {
    let v = trigger(r, pipeline, payload);
    let root = v["job_id"].as_str().unwrap().to_string();
    let tree = settled_tree(r, &root);
    (root, tree)
}

/// The ids of `jobs`, for comparing parent links.
fn ids<'t>(jobs: &[&'t Value]) -> Vec<&'t str> {
    jobs.iter().filter_map(|j| j["job_id"].as_str()).collect()
}

#[test]
fn a_split_runs_every_branch_once_from_the_same_step() {
    let r = start(
        "pipe-split",
        "pipelines:\n  - name: fan\n    on: go\n    steps:\n      - id: first\n        uses: a\n      - split:\n          - uses: b\n          - steps:\n              - uses: c\n              - uses: d\n      - uses: e\n",
        "",
    );
    let (_, tree) = run_tree(&r, "fan", json!({"n": 1}));
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{tree:#?}");
    let a = by_plugin(&tree, "a");
    let (b, c, d) = (
        by_plugin(&tree, "b"),
        by_plugin(&tree, "c"),
        by_plugin(&tree, "d"),
    );
    assert_eq!(
        (a.len(), b.len(), c.len(), d.len()),
        (1, 1, 1, 1),
        "{tree:#?}"
    );
    // Both branches start from the step before the split.
    assert_eq!(b[0]["parent_job_id"], a[0]["job_id"]);
    assert_eq!(c[0]["parent_job_id"], a[0]["job_id"]);
    assert_eq!(d[0]["parent_job_id"], c[0]["job_id"]);
    assert_eq!(received(&r, d[0])["trail"], json!(["a", "c"]));
    // The step after a split follows each branch's end.
    let e = by_plugin(&tree, "e");
    assert_eq!(e.len(), 2, "one per branch end: {tree:#?}");
    let mut parents: Vec<&str> = e
        .iter()
        .filter_map(|j| j["parent_job_id"].as_str())
        .collect();
    parents.sort_unstable();
    let mut ends = vec![ids(&b)[0], ids(&d)[0]];
    ends.sort_unstable();
    assert_eq!(parents, ends);
}

#[test]
fn a_call_runs_the_other_pipeline_with_the_callers_baggage() {
    let r = start(
        "pipe-call",
        "pipelines:\n  - name: tail\n    on: never.sent\n    steps:\n      - uses: c\n      - uses: d\n  - name: head\n    on: go\n    steps:\n      - uses: a\n        baggage:\n          job.size: payload.size\n      - call: tail\n      - uses: e\n",
        "",
    );
    let (root, tree) = run_tree(&r, "head", json!({"size": 4}));
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{tree:#?}");
    for p in ["a", "c", "d", "e"] {
        assert_eq!(by_plugin(&tree, p).len(), 1, "{p}: {tree:#?}");
    }
    let d = received(&r, by_plugin(&tree, "d")[0]);
    assert_eq!(d["trail"], json!(["a", "c"]));
    // d's input came from c, inside the called pipeline: it saw the claim.
    assert_eq!(d["seen"]["job"]["size"], 4);
    assert_eq!(d["seen"]["ductile_pipeline_instance_id"], root.as_str());
    let e = received(&r, by_plugin(&tree, "e")[0]);
    assert_eq!(e["trail"], json!(["a", "c", "d"]), "back in the caller");
    assert_eq!(e["seen"]["job"]["size"], 4);
}

#[test]
fn a_pipeline_if_on_context_decides_whether_it_starts_at_all() {
    let r = start(
        "pipe-gate",
        "pipelines:\n  - name: first\n    on: go\n    steps:\n      - uses: f\n        baggage:\n          job.size: payload.size\n  - name: gated\n    on: big.thing\n    if:\n      path: context.job.size\n      op: gt\n      value: 2\n    steps:\n      - uses: b\n  - name: ungated\n    on: big.thing\n    if:\n      path: context.job.missing\n      op: exists\n    steps:\n      - uses: c\n",
        "  f:\n    uses: pipe_step\n    config:\n      name: f\n      emit: big.thing\n",
    );
    let (_, tree) = run_tree(&r, "first", json!({"size": 3}));
    assert_eq!(by_plugin(&tree, "f").len(), 1, "{tree:#?}");
    assert_eq!(by_plugin(&tree, "b").len(), 1, "size 3 > 2: {tree:#?}");
    assert!(
        by_plugin(&tree, "c").is_empty(),
        "a missing context path is false: {tree:#?}"
    );
    let (_, tree) = run_tree(&r, "first", json!({"size": 1}));
    assert_eq!(by_plugin(&tree, "f").len(), 1);
    assert!(by_plugin(&tree, "b").is_empty(), "{tree:#?}");
    // Nothing else was dispatched anywhere for the small one.
    assert_eq!(
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE plugin IN ('b', 'c')"),
        1
    );
}

#[test]
fn a_hook_whose_own_step_fails_does_not_fire_again() {
    // The hook's step is the very plugin that opted in and fails: its job is
    // part of the hook's tree, not a root, so no second hook fires.
    let r = start(
        "pipe-hook-loop",
        "pipelines:\n  - name: on_failure\n    on-hook: job.failed\n    steps:\n      - uses: f\n",
        "  f:\n    uses: pipe_step\n    notify_on_complete: true\n    config:\n      name: f\n      fail: true\n",
    );
    let a = call(&r.api, "POST", "/plugin/f/handle", Some(ADMIN), Some("{}"));
    assert_eq!(a.status, 202, "{}", a.text());
    let first = a.json()["job_id"].as_str().unwrap().to_string();
    let hook_roots = || {
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'pipeline'")
    };
    r.dir
        .wait_until(LONG, "the hook tree started", || hook_roots() == 1);
    let root = r
        .dir
        .text("SELECT id FROM job_queue WHERE plugin = 'pipeline'")
        .unwrap();
    let tree = settled_tree(&r, &root);
    let f = by_plugin(&tree, "f");
    assert_eq!(f.len(), 1, "{tree:#?}");
    assert_eq!(f[0]["status"], "failed");
    assert_eq!(received(&r, f[0])["job_id"], first.as_str());
    // Every job is settled and still only one hook tree exists.
    r.dir.wait_until(LONG, "nothing left to run", || {
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE status IN ('queued', 'running')")
            == 0
    });
    assert_eq!(hook_roots(), 1);
    assert_eq!(
        r.dir
            .count("SELECT COUNT(*) FROM job_queue WHERE plugin = 'f'"),
        2,
        "the trigger and the hook's step"
    );
}

#[test]
fn a_synchronous_timeout_answers_202_and_the_tree_finishes_later() {
    let dir_probe = TestDir::new("pipe-sync-timeout-gate");
    let gate = dir_probe.path.join("release");
    let r = start(
        "pipe-sync-timeout",
        "pipelines:\n  - name: slow\n    on: go\n    execution_mode: synchronous\n    timeout: 1s\n    steps:\n      - uses: a\n      - uses: w\n",
        &format!(
            "  w:\n    uses: pipe_step\n    config:\n      name: w\n      wait_for: {}\n",
            gate.display()
        ),
    );
    let body = json!({"payload": {"q": 1}}).to_string();
    let a = call(&r.api, "POST", "/pipeline/slow", Some(ADMIN), Some(&body));
    assert_eq!(a.status, 202, "{}", a.text());
    let v = a.json();
    assert_eq!(v["timeout_exceeded"], true, "{v:#?}");
    let root = v["job_id"].as_str().unwrap().to_string();
    // Still running: the waiting step has not finished.
    let w_status = || {
        r.dir
            .text("SELECT status FROM job_queue WHERE plugin = 'w'")
    };
    assert_ne!(w_status().as_deref(), Some("succeeded"));
    std::fs::write(&gate, "go").unwrap();
    let tree = settled_tree(&r, &root);
    assert!(tree.iter().all(|j| j["status"] == "succeeded"), "{tree:#?}");
    assert_eq!(by_plugin(&tree, "w").len(), 1);
    let job = get(&r.api, &format!("/job/{root}"), Some(ADMIN));
    assert_eq!(job.status, 200);
}

#[test]
fn the_event_stream_reports_each_steps_preflight_and_place() {
    let r = start(
        "pipe-sse",
        "pipelines:\n  - name: watched\n    on: go\n    steps:\n      - id: one\n        uses: a\n      - id: gate\n        uses: b\n        if:\n          path: payload.n\n          op: eq\n          value: 1\n      - id: broken\n        uses: c\n        with:\n          x: \"{payload.nope}\"\n",
        "",
    );
    let mut stream = Stream::open_as(&r.api, None, ADMIN);
    let v = trigger(&r, "watched", json!({"n": 1}));
    let root = v["job_id"].as_str().unwrap().to_string();
    let frames = stream.until(|f| {
        f.kind == "job.failed" && f.data["plugin"] == "c" && f.data["tree"] == root.as_str()
    });
    let mine: Vec<_> = frames
        .iter()
        .filter(|f| f.data["tree"] == root.as_str())
        .collect();
    let preflight = |plugin: &str| {
        mine.iter()
            .find(|f| f.kind == "job.preflight" && f.data["plugin"] == plugin)
            .unwrap_or_else(|| panic!("no preflight for {plugin}: {mine:#?}"))
    };
    for p in ["a", "core.switch", "b"] {
        let f = preflight(p);
        assert_eq!(f.data["decision"], "run", "{f:?}");
        assert_eq!(f.data["reason"], "");
        assert_eq!(f.data["pipeline"], "watched");
        assert!(f.id.is_empty(), "a preflight has no id of its own");
    }
    let c = preflight("c");
    assert_eq!(c.data["decision"], "fail");
    assert!(
        c.data["reason"].as_str().unwrap().contains("payload.nope"),
        "{c:?}"
    );
    assert_eq!(c.data["step_id"], "broken");
    // Every job event of a step says where it sits.
    let started_b = mine
        .iter()
        .find(|f| f.kind == "job.started" && f.data["plugin"] == "b")
        .unwrap();
    assert_eq!(started_b.data["step_id"], "gate");
    assert_eq!(started_b.data["pipeline"], "watched");
    assert!(started_b.data["hop"].is_string());
    let succeeded_a = mine
        .iter()
        .find(|f| f.kind == "job.succeeded" && f.data["plugin"] == "a")
        .unwrap();
    assert_eq!(succeeded_a.data["step_id"], "one");
    // The preflight comes right before its claim.
    let at = frames
        .iter()
        .position(|f| f.kind == "job.preflight" && f.data["plugin"] == "a")
        .unwrap();
    assert_eq!(frames[at + 1].kind, "job.started");
    assert_eq!(frames[at + 1].data["job_id"], frames[at].data["job_id"]);
}

/// A cookbook file run end to end: its plugins are `pipe_step` instances
/// that emit what the real ones would; `source` polls once to start it.
struct Cookbook {
    fixture: &'static str,
    /// `name: emitted event type` for every plugin the file names or needs.
    plugins: &'static [(&'static str, &'static str)],
    /// The plugin whose poll starts the run.
    source: &'static str,
    /// The plugins that must have run, in order along the tree.
    chain: &'static [&'static str],
}

fn run_cookbook(book: &Cookbook) -> (Running, Vec<Value>) {
    let pipelines = std::fs::read_to_string(
        crate::support::repo()
            .join("tests/fixtures/pipelines")
            .join(book.fixture),
    )
    .unwrap();
    let mut extra = String::new();
    for (name, emit) in book.plugins {
        extra.push_str(&format!(
            "  {name}:\n    uses: pipe_step\n    config:\n      name: {name}\n      emit: {emit}\n"
        ));
    }
    let tag = format!("cookbook-{}", book.source);
    let r = start(&tag, &pipelines, &extra);
    let a = call(
        &r.api,
        "POST",
        &format!("/plugin/{}/poll", book.source),
        Some(ADMIN),
        Some("{}"),
    );
    assert_eq!(a.status, 202, "{}", a.text());
    let root = a.json()["job_id"].as_str().unwrap().to_string();
    // Children are written with their parent's completion: a tree with
    // nothing queued or running is the whole run.
    let tree = settled_tree(&r, &root);
    assert!(
        tree.iter().all(|j| j["status"] == "succeeded"),
        "{}: {tree:#?}",
        book.fixture
    );
    let last = by_plugin(&tree, book.chain[book.chain.len() - 1]);
    assert_eq!(last.len(), 1, "{}: {tree:#?}", book.fixture);
    let trail = received(&r, last[0])["trail"].clone();
    let expected: Vec<&str> = book.chain[..book.chain.len() - 1].to_vec();
    assert_eq!(trail, json!(expected), "{}", book.fixture);
    (r, tree)
}

#[test]
fn the_cookbook_astro_rebuild_runs() {
    run_cookbook(&Cookbook {
        fixture: "cookbook/astro-rebuild.yaml",
        plugins: &[
            ("folder_watch", "astro.summaries.changed"),
            ("astro_rebuild_staging", "astro.rebuilt"),
        ],
        source: "folder_watch",
        chain: &["folder_watch", "astro_rebuild_staging"],
    });
}

#[test]
fn the_cookbook_playlist_pipelines_run() {
    let plugins: &[(&str, &str)] = &[
        ("youtube_playlist", "youtube.playlist_item"),
        ("youtube_transcript", "transcript.ready"),
        ("fabric", "summary.ready"),
        ("file_handler", "file.written"),
        ("discord_notify", "discord.sent"),
    ];
    run_cookbook(&Cookbook {
        fixture: "cookbook/playlist-wisdom.yaml",
        plugins,
        source: "youtube_playlist",
        chain: &[
            "youtube_playlist",
            "youtube_transcript",
            "fabric",
            "file_handler",
        ],
    });
    let (r, tree) = run_cookbook(&Cookbook {
        fixture: "cookbook/end-to-end.yaml",
        plugins,
        source: "youtube_playlist",
        chain: &[
            "youtube_playlist",
            "youtube_transcript",
            "fabric",
            "file_handler",
            "discord_notify",
        ],
    });
    // The cookbook's step-level `payload:` is read as `with:`.
    let notify = received(&r, by_plugin(&tree, "discord_notify")[0]);
    assert_eq!(notify["title"], "New summary ready");
}

#[test]
fn the_cookbook_discord_notifications_run() {
    let plugins: &[(&str, &str)] = &[
        ("builder", "build.complete"),
        ("watcher", "job.failed"),
        ("discord_notify", "discord.sent"),
    ];
    run_cookbook(&Cookbook {
        fixture: "cookbook/discord.yaml",
        plugins,
        source: "builder",
        chain: &["builder", "discord_notify"],
    });
    let (r, tree) = run_cookbook(&Cookbook {
        fixture: "cookbook/discord.yaml",
        plugins,
        source: "watcher",
        chain: &["watcher", "discord_notify"],
    });
    let alert = received(&r, by_plugin(&tree, "discord_notify")[0]);
    assert_eq!(alert["message"], "A job failed — check the dashboard.");
}

#[test]
fn the_cookbook_url_routing_runs() {
    run_cookbook(&Cookbook {
        fixture: "cookbook/route-urls.yaml",
        plugins: &[
            ("discord_bot", "discord.ai.command"),
            ("check_youtube", "youtube.url.detected"),
            ("youtube_transcript", "transcript.ready"),
            ("fabric", "summary.ready"),
            ("file_handler", "file.written"),
        ],
        source: "discord_bot",
        chain: &[
            "discord_bot",
            "check_youtube",
            "youtube_transcript",
            "fabric",
            "file_handler",
        ],
    });
    run_cookbook(&Cookbook {
        fixture: "cookbook/route-urls.yaml",
        plugins: &[
            ("web_probe", "web.url.detected"),
            ("fabric", "summary.ready"),
            ("check_youtube", "youtube.url.detected"),
            ("youtube_transcript", "transcript.ready"),
            ("file_handler", "file.written"),
        ],
        source: "web_probe",
        chain: &["web_probe", "fabric"],
    });
}

#[test]
fn job_inspect_shows_lineage_steps_baggage_decisions_and_timing() {
    let r = start(
        "pipe-inspect",
        "pipelines:\n  - name: looked\n    on: go\n    steps:\n      - id: one\n        uses: a\n        baggage:\n          job.size: payload.size\n      - id: gate\n        uses: b\n        if:\n          path: payload.size\n          op: gt\n          value: 1\n      - id: last\n        uses: c\n      - id: broken\n        uses: d\n        with:\n          x: \"{payload.nope}\"\n",
        "",
    );
    let (root, tree) = run_tree(&r, "looked", json!({"size": 2}));
    let b = by_plugin(&tree, "b")[0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = r.dir.run(&["job", "inspect", &b, "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = out.json();
    assert_eq!(v["job_id"], b.as_str());
    assert_eq!(v["pipeline"], "looked");
    assert_eq!(v["step_id"], "gate");
    assert_eq!(v["tree"], root.as_str());
    assert_eq!(v["decision"], "run");
    assert_eq!(v["baggage"], json!({"job": {"size": 2}}));
    for k in ["wait_ms", "run_ms", "total_ms"] {
        let ms = v["timing"][k].as_f64().unwrap_or(-1.0);
        assert!((0.0..60_000.0).contains(&ms), "{k}: {v:#?}");
    }
    // Up: the root, the first step, the switch that let b run.
    let up: Vec<&str> = v["lineage_up"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(up, ["pipeline", "a", "core.switch"], "{v:#?}");
    let switch = &v["lineage_up"][2];
    assert_eq!(switch["decision"], "ductile.switch.true");
    assert!(switch["reason"].as_str().unwrap().contains("payload.size"));
    assert_eq!(v["lineage_up"][1]["step_id"], "one");
    // Down: c, then d, whose remap failed before it could run.
    let down = v["lineage_down"].as_array().unwrap();
    assert_eq!(down.len(), 2, "{v:#?}");
    assert_eq!(
        (down[0]["plugin"].as_str(), down[0]["level"].as_u64()),
        (Some("c"), Some(1))
    );
    assert_eq!(
        (down[1]["plugin"].as_str(), down[1]["level"].as_u64()),
        (Some("d"), Some(2))
    );
    assert_eq!(down[1]["decision"], "fail");
    assert!(down[1]["reason"].as_str().unwrap().contains("payload.nope"));
    assert_eq!(down[1]["parent_job_id"], down[0]["job_id"]);
    // The same, for a person.
    let text = r.dir.run(&["job", "inspect", &b]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains("step: gate of pipeline looked"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("lineage up (3 jobs, root first):"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("ductile.switch.true"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("[looked:broken]  fail ("),
        "{}",
        text.stdout
    );
    // An unknown id is an error in the landed shape.
    let missing = r.dir.run(&["job", "inspect", "nope", "--json"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("no job `nope`")
    );
}
