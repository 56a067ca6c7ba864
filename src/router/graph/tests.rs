//! The route graph compiled from real config trees: the spec's and the
//! cookbook's pipelines load, manifest-dependent checks, and the shape of the
//! graph (sequence, split, call inlining, switches, entries, depth).

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::config::pipeline::Hook;
use crate::router::visualize;
use crate::runtime::Runtime;

/// The pipeline fixtures: stand-in plugins, their instances, and the cases.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelines")
}

/// A config directory holding `pipelines.yaml` and the fixtures' instances,
/// removed on drop.
struct Tree {
    dir: PathBuf,
}

impl Tree {
    fn new(pipelines: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!(
            "ductile-graph-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).unwrap();
        let dir = fs::canonicalize(&dir).unwrap();
        let roots = fixtures().join("plugins");
        fs::write(
            dir.join("config.yaml"),
            format!(
                "plugin_roots: [\"{}\"]\ninclude: [plugins.yaml, relay.yaml, pipelines.yaml]\n",
                roots.display()
            ),
        )
        .unwrap();
        // The `lab` instance the spec's relay step names.
        fs::write(
            dir.join("relay.yaml"),
            "tokens:\n  - {name: relay-lab, key: relay-lab-secret-0123456789abcdef, scopes: [\"*\"]}\ninstances:\n  - {name: lab, base_url: \"https://lab.example\", ingress_path: /ingest/peer/home, secret_ref: relay-lab}\n",
        )
        .unwrap();
        fs::copy(fixtures().join("plugins.yaml"), dir.join("plugins.yaml")).unwrap();
        fs::write(dir.join("pipelines.yaml"), pipelines).unwrap();
        Tree { dir }
    }

    fn of_fixture(name: &str) -> Tree {
        Tree::new(&fs::read_to_string(fixtures().join(name)).unwrap())
    }

    fn load(&self) -> Result<Runtime, crate::config::ConfigError> {
        Runtime::load(&self.dir.join("config.yaml"))
    }

    fn runtime(&self) -> Runtime {
        self.load().unwrap()
    }

    /// The message loading must fail with, `FILE` standing for `pipelines.yaml`.
    fn error(&self) -> String {
        match self.load() {
            Ok(_) => panic!("expected the config to be refused"),
            Err(e) => e.to_string().replace(
                &self.dir.join("pipelines.yaml").display().to_string(),
                "FILE",
            ),
        }
    }

    /// The warnings about routes and pipelines, `FILE` standing for `pipelines.yaml`.
    fn warnings(&self) -> Vec<String> {
        let file = self.dir.join("pipelines.yaml").display().to_string();
        self.runtime()
            .warnings
            .iter()
            .filter(|w| w.starts_with(&file))
            .map(|w| w.replace(&file, "FILE"))
            .collect()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn ids(hops: &[HopId]) -> Vec<&str> {
    hops.iter().map(HopId::as_str).collect()
}

fn graph(pipelines: &str) -> Arc<RouteGraph> {
    Tree::new(pipelines).runtime().graph
}

use std::sync::Arc;

// ---- the spec's and the cookbook's pipelines ----

#[test]
fn every_cookbook_pipeline_loads() {
    let cases: [(&str, &[&str]); 5] = [
        ("cookbook/astro-rebuild.yaml", &["astro-rebuild-on-change"]),
        ("cookbook/playlist-wisdom.yaml", &["playlist-wisdom"]),
        (
            "cookbook/discord.yaml",
            &["notify-on-build", "notify-on-error"],
        ),
        ("cookbook/end-to-end.yaml", &["playlist-wisdom"]),
        (
            "cookbook/route-urls.yaml",
            &["ai-dispatch", "youtube-wisdom", "web-summarize"],
        ),
    ];
    for (file, names) in cases {
        let rt = Tree::of_fixture(file).runtime();
        let loaded: Vec<&str> = rt
            .graph
            .pipelines()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(loaded, names, "{file}");
    }
}

#[test]
fn the_cookbooks_step_payload_is_read_as_with_with_a_warning() {
    let tree = Tree::of_fixture("cookbook/discord.yaml");
    assert_eq!(
        tree.warnings(),
        [
            "FILE: pipelines[1] (notify-on-error).steps[0].payload: read as `with:`; write `with:` instead"
        ]
    );
    let rt = tree.runtime();
    let hop = rt.graph.hop("notify-on-error:alert").unwrap();
    let HopKind::Uses { with, .. } = &hop.kind else {
        panic!("uses expected");
    };
    assert_eq!(
        with.as_ref().unwrap().source,
        serde_json::json!({"message": "A job failed — check the dashboard."})
    );
}

#[test]
fn every_dsl_example_loads() {
    let cases: [(&str, &[&str]); 5] = [
        (
            "dsl/top-level.yaml",
            &[
                "FILE: pipelines[0] (my-workflow).timeout: `timeout` applies only to `execution_mode: synchronous`; it is ignored here",
            ],
        ),
        ("dsl/conditions.yaml", &[]),
        ("dsl/step-types.yaml", &[]),
        ("dsl/hooks.yaml", &[]),
        ("dsl/routing-spec.yaml", &[]),
    ];
    for (file, warnings) in cases {
        assert_eq!(Tree::of_fixture(file).warnings(), warnings, "{file}");
    }
}

#[test]
fn documented_errors_are_the_ones_refused() {
    let cases = [
        (
            "invalid/call-cycle.yaml",
            "FILE: pipelines[1] (b).steps[0].call: call cycle: a -> b -> a",
        ),
        (
            "invalid/negative-depth.yaml",
            "FILE: pipelines[0] (deep).max_depth: must not be negative, got -1 (0 means unlimited)",
        ),
        (
            "invalid/on-and-hook.yaml",
            "FILE: pipelines[0] (both): set `on` or `on-hook`, not both",
        ),
        (
            "invalid/duplicate-name.yaml",
            "FILE: pipelines[1] (twice).name: duplicate pipeline name `twice` (also pipelines[0] (twice) in FILE)",
        ),
        (
            "invalid/dangling-call.yaml",
            "FILE: pipelines[0] (caller).steps[0].call: `standard-sumarizer` names no pipeline; did you mean `standard-summarizer`?",
        ),
        (
            "invalid/with-on-call.yaml",
            "FILE: pipelines[1] (caller).steps[0].with: `with` applies only to `uses` and `relay` steps, not to `call`",
        ),
    ];
    for (file, message) in cases {
        assert_eq!(Tree::of_fixture(file).error(), message, "{file}");
    }
}

// ---- checks that need manifests ----

#[test]
fn plugins_must_be_configured_and_take_handle() {
    let cases = [
        (
            "pipelines: [{name: p, on: e, steps: [{uses: fabrik}]}]\n",
            "FILE: pipelines[0] (p).steps[0].uses: `fabrik` is not a configured plugin; did you mean `fabric`?",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{split: [{uses: stub}, {steps: [{uses: poll_only}]}]}]}]\n",
            "FILE: pipelines[0] (p).steps[0].split[1].steps[0].uses: plugin `poll_only` declares no `handle` command (it has poll); steps and routes run `handle`",
        ),
        (
            "pipelines: [{name: p, on-hook: job.failed, from_plugin: nobody, steps: [{uses: stub}]}]\n",
            "FILE: pipelines[0] (p).from_plugin: `nobody` is not a configured plugin",
        ),
        (
            "routes: [{from: stub, event_type: e, to: poll_only}]\n",
            "FILE: routes[0].to: plugin `poll_only` declares no `handle` command (it has poll); steps and routes run `handle`",
        ),
        (
            "routes: [{from: ghost, event_type: e, to: stub}]\n",
            "FILE: routes[0].from: `ghost` is not a configured plugin",
        ),
        (
            "routes: [{from: stub, event_type: e, to: ghost}]\n",
            "FILE: routes[0].to: `ghost` is not a configured plugin",
        ),
    ];
    for (text, message) in cases {
        assert_eq!(Tree::new(text).error(), message, "{text}");
    }
}

#[test]
fn a_step_on_a_disabled_plugin_and_a_silent_hook_are_warned_about() {
    let tree = Tree::new(
        "pipelines:\n  - {name: p, on: e, steps: [{uses: switched_off}]}\n  - {name: h, on-hook: job.failed, from_plugin: stub, steps: [{uses: stub}]}\n",
    );
    assert_eq!(
        tree.warnings(),
        [
            "FILE: pipelines[0] (p).steps[0].uses: plugin `switched_off` is not loaded (disabled, or skipped at discovery); its jobs will fail",
            "FILE: pipelines[1] (h).from_plugin: plugin `stub` does not set `notify_on_complete: true`, so this hook pipeline never fires",
        ]
    );
}

#[test]
fn call_cycles_are_printed_whole() {
    let direct = Tree::new(
        "pipelines: [{name: self, on: e, steps: [{uses: stub}, {split: [{call: self}]}]}]\n",
    );
    assert_eq!(
        direct.error(),
        "FILE: pipelines[0] (self).steps[1].split[0].call: call cycle: self -> self"
    );
    let long = Tree::new(
        "pipelines:\n  - {name: a, on: e, steps: [{call: b}]}\n  - {name: b, on: e, steps: [{steps: [{call: c}]}]}\n  - {name: c, on: e, steps: [{uses: stub}, {call: a}]}\n",
    );
    assert_eq!(
        long.error(),
        "FILE: pipelines[2] (c).steps[1].call: call cycle: a -> b -> c -> a"
    );
}

#[test]
fn a_pipeline_longer_than_the_hop_cap_is_refused() {
    let steps = vec!["{uses: stub}"; 21].join(", ");
    let tree = Tree::new(&format!(
        "pipelines: [{{name: long, on: e, steps: [{steps}]}}]\n"
    ));
    assert_eq!(
        tree.error(),
        "FILE: pipelines[0] (long): its longest path runs 21 hops (switch hops and called pipelines count), more than the hop cap of 20"
    );
    let steps = vec!["{uses: stub}"; 20].join(", ");
    graph(&format!(
        "pipelines: [{{name: long, on: e, steps: [{steps}]}}]\n"
    ));
}

// ---- shape ----

#[test]
fn a_sequence_chains_its_steps() {
    let g = graph(
        "pipelines: [{name: p, on: e, steps: [{id: one, uses: stub}, {uses: fabric}, {steps: [{uses: whisper}]}]}]\n",
    );
    let p = g.pipeline("p").unwrap();
    assert_eq!(ids(&p.entry), ["p:one"]);
    assert_eq!(ids(g.next("p:one", Outcome::Succeeded)), ["p:steps[1]"]);
    assert_eq!(
        ids(g.next("p:steps[1]", Outcome::Succeeded)),
        ["p:steps[2].steps[0]"]
    );
    assert!(g.next("p:steps[2].steps[0]", Outcome::Succeeded).is_empty());
    // A plugin hop never switches; an unknown hop has no successors.
    assert!(g.next("p:one", Outcome::SwitchTrue).is_empty());
    assert!(g.next("nope", Outcome::Succeeded).is_empty());
    let hop = g.hop("p:steps[2].steps[0]").unwrap();
    assert_eq!(hop.plugin(), Some("whisper"));
    assert_eq!(hop.step, "steps[2].steps[0]");
    assert_eq!(hop.origin, "pipelines[0] (p).steps[2].steps[0]");
    assert!(matches!(
        hop.kind,
        HopKind::Uses {
            command: "handle",
            ..
        }
    ));
    assert_eq!(p.longest_chain, 3);
    assert_eq!(p.max_depth, MaxDepth::Computed(3));
}

#[test]
fn split_fans_out_and_each_branch_continues() {
    let g = graph(
        "pipelines: [{name: p, on: e, steps: [{split: [{uses: stub}, {steps: [{uses: fabric}, {uses: whisper}]}]}, {uses: notify}]}]\n",
    );
    let p = g.pipeline("p").unwrap();
    assert_eq!(
        ids(&p.entry),
        ["p:steps[0].split[0]", "p:steps[0].split[1].steps[0]"]
    );
    assert_eq!(
        ids(g.next("p:steps[0].split[0]", Outcome::Succeeded)),
        ["p:steps[1]"]
    );
    assert_eq!(
        ids(g.next("p:steps[0].split[1].steps[0]", Outcome::Succeeded)),
        ["p:steps[0].split[1].steps[1]"]
    );
    assert_eq!(
        ids(g.next("p:steps[0].split[1].steps[1]", Outcome::Succeeded)),
        ["p:steps[1]"]
    );
    assert_eq!(p.longest_chain, 3);
}

#[test]
fn call_inlines_the_callee_before_the_callers_continuation() {
    let g = Tree::of_fixture("dsl/routing-spec.yaml").runtime().graph;
    let p = g.pipeline("wisdom-chain").unwrap();
    assert_eq!(ids(&p.entry), ["wisdom-chain:downloader"]);
    let inlined = "wisdom-chain:processing>standard-audio-wisdom:steps[0]";
    assert_eq!(
        ids(g.next("wisdom-chain:downloader", Outcome::Succeeded)),
        [inlined]
    );
    let hop = g.hop(inlined).unwrap();
    assert_eq!(hop.root.as_deref(), Some("wisdom-chain"));
    assert_eq!(hop.pipeline.as_deref(), Some("standard-audio-wisdom"));
    assert_eq!(hop.calls, ["wisdom-chain:processing"]);
    let second = "wisdom-chain:processing>standard-audio-wisdom:steps[1]";
    assert_eq!(ids(g.next(inlined, Outcome::Succeeded)), [second]);
    assert_eq!(
        ids(g.next(second, Outcome::Succeeded)),
        [
            "wisdom-chain:steps[2].split[0]",
            "wisdom-chain:steps[2].split[1].steps[0]"
        ]
    );
    // The callee alone still ends after its own steps.
    let callee = g.pipeline("standard-audio-wisdom").unwrap();
    assert_eq!(ids(&callee.entry), ["standard-audio-wisdom:steps[0]"]);
    assert!(
        g.next("standard-audio-wisdom:steps[1]", Outcome::Succeeded)
            .is_empty()
    );
    assert_eq!(p.longest_chain, 5);
}

#[test]
fn a_step_if_becomes_a_switch_whose_false_edge_bypasses_the_step() {
    let g = graph(
        "pipelines: [{name: p, on: e, steps: [{uses: stub}, {id: gate, uses: fabric, if: {path: payload.ok, op: exists}}, {uses: whisper}]}]\n",
    );
    assert_eq!(ids(g.next("p:steps[0]", Outcome::Succeeded)), ["p:gate/if"]);
    let switch = g.hop("p:gate/if").unwrap();
    assert_eq!(switch.plugin(), Some(SWITCH));
    assert_eq!(switch.step, "gate");
    assert!(matches!(switch.kind, HopKind::Switch { .. }));
    assert_eq!(ids(g.next("p:gate/if", Outcome::SwitchTrue)), ["p:gate"]);
    assert_eq!(
        ids(g.next("p:gate/if", Outcome::SwitchFalse)),
        ["p:steps[2]"]
    );
    assert!(g.next("p:gate/if", Outcome::Succeeded).is_empty());
    assert_eq!(ids(g.next("p:gate", Outcome::Succeeded)), ["p:steps[2]"]);
    assert_eq!(g.pipeline("p").unwrap().longest_chain, 4);
    // A gated last step bypasses to the end of the pipeline.
    let g = graph(
        "pipelines: [{name: q, on: e, steps: [{uses: stub, if: {path: payload.x, op: exists}}]}]\n",
    );
    assert_eq!(ids(&g.pipeline("q").unwrap().entry), ["q:steps[0]/if"]);
    assert!(g.next("q:steps[0]/if", Outcome::SwitchFalse).is_empty());
}

#[test]
fn events_reach_matching_pipelines_scoped_by_source_and_then_routes() {
    let g = graph(
        "pipelines:\n  - {name: any, on: done, steps: [{uses: stub}]}\n  - {name: only-fabric, on: done, from_plugin: fabric, steps: [{uses: stub}]}\n  - {name: other, on: else, steps: [{uses: stub}]}\nroutes:\n  - {from: fabric, event_type: done, to: whisper}\n  - {from: fabric, event_type: done, to: notify}\n  - {from: stub, event_type: done, to: notify}\n",
    );
    let names = |entries: Vec<Entry<'_>>| -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Pipeline(p) => p.name.clone(),
                Entry::Route(r) => format!("{} -> {}", r.origin, r.to),
            })
            .collect()
    };
    assert_eq!(
        names(g.entries_for_event("fabric", "done")),
        [
            "any",
            "only-fabric",
            "routes[0] -> whisper",
            "routes[1] -> notify"
        ]
    );
    assert_eq!(
        names(g.entries_for_event("stub", "done")),
        ["any", "routes[2] -> notify"]
    );
    // No source (webhook, scheduler) never matches a `from_plugin`.
    assert_eq!(names(g.entries_for_event("", "done")), ["any"]);
    assert!(g.entries_for_event("fabric", "nothing").is_empty());
    let route = g.entries_for_event("fabric", "done")[2];
    assert_eq!(ids(route.hops()), ["route:fabric:done:whisper"]);
    let hop = g.hop("route:fabric:done:whisper").unwrap();
    assert_eq!((hop.plugin(), hop.root.as_deref()), (Some("whisper"), None));
}

#[test]
fn hooks_reach_hook_pipelines_scoped_by_plugin() {
    let g = Tree::of_fixture("dsl/conditions.yaml").runtime().graph;
    let names = |entries: Vec<Entry<'_>>| -> Vec<String> {
        entries
            .iter()
            .filter_map(|e| match e {
                Entry::Pipeline(p) => Some(p.name.clone()),
                Entry::Route(_) => None,
            })
            .collect()
    };
    assert_eq!(
        names(g.entries_for_hook(Hook::JobFailed, "claude_harvest")),
        [
            "notify-on-real-failure",
            "page-on-claude-failure",
            "page-on-high-severity-claude-failure"
        ]
    );
    assert_eq!(
        names(g.entries_for_hook(Hook::JobFailed, "fabric")),
        ["notify-on-real-failure"]
    );
    assert!(g.entries_for_hook(Hook::JobCompleted, "fabric").is_empty());
    // A hook pipeline is not started by an event of the same name.
    assert!(
        g.entries_for_event("claude_harvest", "job.failed")
            .is_empty()
    );
    let p = g.pipeline("repo-changelog").unwrap();
    assert!(p.condition.is_some());
}

#[test]
fn max_depth_is_computed_set_or_unlimited() {
    let tree = Tree::new(
        "pipelines:\n  - {name: auto, on: e, steps: [{uses: stub}, {uses: stub}]}\n  - {name: set, on: e, max_depth: 1, steps: [{uses: stub}, {uses: stub}]}\n  - {name: free, on: e, max_depth: 0, steps: [{uses: stub}]}\n",
    );
    assert_eq!(
        tree.warnings(),
        [
            "FILE: pipelines[1] (set).max_depth: 1 is less than the pipeline's longest path (2 hops); a tree stops after 1"
        ]
    );
    let g = tree.runtime().graph;
    assert_eq!(g.pipeline("auto").unwrap().max_depth, MaxDepth::Computed(2));
    assert_eq!(g.pipeline("set").unwrap().max_depth.limit(), Some(1));
    assert_eq!(g.pipeline("free").unwrap().max_depth, MaxDepth::Unlimited);
    assert_eq!(MaxDepth::Unlimited.limit(), None);
}

#[test]
fn a_relay_step_is_stored_as_a_hop() {
    let g = Tree::of_fixture("dsl/step-types.yaml").runtime().graph;
    let hop = g.hop("relay-step:relay-to-lab").unwrap();
    let HopKind::Relay(relay) = &hop.kind else {
        panic!("relay expected");
    };
    assert_eq!(
        (relay.to.as_str(), relay.event.as_str()),
        ("lab", "backup.ready")
    );
    assert!(relay.with.is_some() && relay.baggage.is_some());
    assert_eq!(hop.plugin(), None);
}

#[test]
fn describe_shows_trigger_source_predicate_depth_and_hops() {
    let g = graph(
        "pipelines:\n  - name: p\n    on-hook: job.failed\n    from_plugin: check_youtube\n    if: {path: payload.severity, op: eq, value: high}\n    execution_mode: synchronous\n    timeout: 30s\n    steps:\n      - {id: page, uses: stub, if: {path: payload.x, op: exists}}\nroutes:\n  - {from: stub, event_type: done, to: fabric}\n",
    );
    let view = g.describe();
    let keys: Vec<&String> = view.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["p", "routes[0]"]);
    let p = &view["p"];
    assert_eq!(p["trigger"], serde_json::json!({"on_hook": "job.failed"}));
    assert_eq!(p["source_plugin"], "check_youtube");
    assert_eq!(
        p["if"],
        serde_json::json!({"path": "payload.severity", "op": "eq", "value": "high"})
    );
    assert_eq!(
        (p["max_depth"].clone(), p["max_depth_source"].clone()),
        (2.into(), "computed".into())
    );
    assert_eq!(p["hop_cap"], 20);
    assert_eq!(p["execution_mode"], "synchronous");
    assert_eq!(p["timeout"], "30s");
    assert_eq!(p["entry"], serde_json::json!(["p:page/if"]));
    assert_eq!(p["hops"][0]["type"], "switch");
    assert_eq!(
        p["hops"][0]["next"],
        serde_json::json!({"true": ["p:page"], "false": []})
    );
    assert_eq!(p["hops"][1]["plugin"], "stub");
    assert_eq!(p["hops"][1]["command"], "handle");
    let r = &view["routes[0]"];
    assert_eq!(r["kind"], "route");
    assert_eq!(r["source_plugin"], "stub");
    assert_eq!(r["hops"][0]["plugin"], "fabric");
}

#[test]
fn reload_swaps_the_graph_and_the_old_one_stays_whole() {
    let tree = Tree::new("pipelines: [{name: p, on: e, steps: [{uses: stub}]}]\n");
    let before = tree.runtime().graph;
    fs::write(
        tree.dir.join("pipelines.yaml"),
        "pipelines: [{name: q, on: e, steps: [{uses: fabric}]}]\n",
    )
    .unwrap();
    let after = tree.runtime().graph;
    assert!(before.pipeline("p").is_some() && before.hop("p:steps[0]").is_some());
    assert!(after.pipeline("p").is_none() && after.pipeline("q").is_some());
}

// ---- Mermaid ----

#[test]
fn mermaid_draws_switches_splits_and_calls() {
    let g = graph(
        "pipelines:\n  - name: chain\n    on: video.received\n    from_plugin: stub\n    steps:\n      - {id: download, uses: yt-dlp-plugin}\n      - {id: gate, uses: fabric, if: {all: [{path: payload.kind, op: eq, value: video}, {path: payload.duration_sec, op: gte, value: 30}]}}\n      - {id: processing, call: audio}\n      - split:\n          - {uses: discord-notifier}\n          - {uses: s3-archiver}\n  - {name: audio, on: audio.ready, steps: [{uses: whisper}]}\n",
    );
    let expected = r#"flowchart TD
  start(["on: video.received<br/>from stub"])
  n0["download<br/>uses yt-dlp-plugin"]
  n1{"if all(payload.kind eq video; payload.duration_sec gte 30)"}
  n2["gate<br/>uses fabric"]
  n4["steps[3].split[0]<br/>uses discord-notifier"]
  n5["steps[3].split[1]<br/>uses s3-archiver"]
  subgraph call1_0["call audio"]
    n3["steps[0]<br/>uses whisper"]
  end
  done(("end"))
  start --> n0
  n0 --> n1
  n1 -- true --> n2
  n1 -- false --> n3
  n2 --> n3
  n3 --> n4
  n3 --> n5
  n4 --> done
  n5 --> done
"#;
    assert_eq!(visualize::mermaid(&g, "chain").unwrap(), expected);
    assert!(visualize::mermaid(&g, "missing").is_none());
}

#[test]
fn a_relay_step_must_name_a_configured_instance_that_allows_its_event() {
    let unknown = Tree::new(
        "pipelines:\n  - name: p\n    on: x.y\n    steps:\n      - relay: {to: labb, event: backup.ready}\n",
    );
    assert_eq!(
        unknown.error(),
        "FILE: pipelines[0] (p).steps[0].relay.to: `labb` is not an instance of relay-instances.yaml (`instances:`); did you mean `lab`?"
    );
    let relay = "tokens:\n  - {name: relay-lab, key: relay-lab-secret-0123456789abcdef, scopes: [\"*\"]}\ninstances:\n  - {name: lab, base_url: \"https://lab.example\", ingress_path: /in/home, secret_ref: relay-lab, allow: [backup.ready]}\n";
    let tree = Tree::new(
        "pipelines:\n  - name: p\n    on: x.y\n    steps:\n      - relay: {to: lab, event: report.done}\n",
    );
    fs::write(tree.dir.join("relay.yaml"), relay).unwrap();
    assert_eq!(
        tree.error(),
        "FILE: pipelines[0] (p).steps[0].relay.event: instance `lab` does not allow `report.done` (its `allow:` lists backup.ready)"
    );
}
