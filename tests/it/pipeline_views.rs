//! `ductile pipeline list|show|visualize` over the pipeline fixtures and their
//! stand-in plugins: text and `--json`, unknown names, no ledger touched; and
//! the compiled routes in `GET /config/view`.

use std::path::Path;

use serde_json::json;

use crate::http::{ADMIN, Api, WEBHOOKS, get, write_tree};
use crate::support::{TestDir, repo};

/// The pipeline fixtures: stand-in plugins, their instances, and the cases.
fn fixtures() -> std::path::PathBuf {
    repo().join("tests/fixtures/pipelines")
}

/// Copies the stand-in plugins into `dir`'s plugin root and writes the
/// fixtures' instances as `plugins.yaml` and `pipelines` as `pipelines.yaml`.
fn write_pipelines(dir: &TestDir, pipelines: &str) {
    for plugin in ["stub", "poll_only"] {
        let src = fixtures().join("plugins").join(plugin);
        let dst = dir.path.join("plugins").join(plugin);
        std::fs::create_dir_all(&dst).unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            // `fs::copy` keeps the mode, so `run.sh` stays executable.
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
    dir.write(
        "plugins.yaml",
        &std::fs::read_to_string(fixtures().join("plugins.yaml")).unwrap(),
    );
    dir.write("pipelines.yaml", pipelines);
}

/// A config tree whose pipelines are the fixture file `fixture`.
fn tree(tag: &str, fixture: &str) -> TestDir {
    let dir = TestDir::new(tag);
    write_pipelines(
        &dir,
        &std::fs::read_to_string(fixtures().join(fixture)).unwrap(),
    );
    dir.config("include: [plugins.yaml, pipelines.yaml]\n");
    dir
}

/// Asserts that no command created the ledger or its directory.
fn ledger_untouched(dir: &TestDir) {
    assert!(
        !dir.path.join("state").exists(),
        "a pipeline verb created {}",
        dir.path.join("state").display()
    );
}

fn ends_with(value: &serde_json::Value, suffix: &str) -> bool {
    value
        .as_str()
        .is_some_and(|f| Path::new(f).ends_with(suffix))
}

#[test]
fn pipeline_list_shows_every_pipeline_and_plain_route_in_a_table() {
    let dir = tree("pv-list", "dsl/routing-spec.yaml");
    let out = dir.run(&["pipeline", "list"]).code(0);
    assert_eq!(
        out.stdout,
        "\
PIPELINE               TRIGGER                         FROM  MODE          TIMEOUT  DEPTH         HOPS  FILE
wisdom-chain           on discord.video_link_received  -     asynchronous  -        5 (computed)  6     pipelines.yaml
standard-audio-wisdom  on audio.ready                  -     asynchronous  -        2 (computed)  2     pipelines.yaml
fetch-and-summarize    on url.received                 -     asynchronous  -        2 (computed)  2     pipelines.yaml

ROUTE FROM       EVENT TYPE       TO               FILE
withings         new_health_data  health-analyzer  pipelines.yaml
health-analyzer  alert            notify           pipelines.yaml
"
    );
    ledger_untouched(&dir);
}

#[test]
fn pipeline_list_json_has_trigger_guards_hops_and_file() {
    let dir = tree("pv-list-json", "dsl/routing-spec.yaml");
    let v = dir.run(&["pipeline", "list", "--json"]).code(0).json();
    let pipelines = v["pipelines"].as_array().unwrap();
    let names: Vec<&str> = pipelines
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "wisdom-chain",
            "standard-audio-wisdom",
            "fetch-and-summarize"
        ]
    );
    let wisdom = &pipelines[0];
    assert_eq!(
        wisdom["trigger"],
        json!({"on": "discord.video_link_received"})
    );
    assert_eq!(wisdom["from_plugin"], json!(null));
    assert_eq!(wisdom["execution_mode"], "asynchronous");
    assert_eq!(wisdom["timeout"], json!(null));
    assert_eq!(wisdom["max_depth"], 5);
    assert_eq!(wisdom["max_depth_source"], "computed");
    assert_eq!(wisdom["hops"], 6);
    assert!(ends_with(&wisdom["file"], "pipelines.yaml"), "{wisdom}");
    let routes = v["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["from"], "withings");
    assert_eq!(routes[0]["event_type"], "new_health_data");
    assert_eq!(routes[0]["to"], "health-analyzer");
    assert_eq!(routes[0]["origin"], "routes[0]");
    assert!(ends_with(&routes[0]["file"], "pipelines.yaml"), "{v}");
    ledger_untouched(&dir);
}

#[test]
fn pipeline_list_spells_hooks_sources_set_and_unlimited_depth_and_timeouts() {
    let dir = TestDir::new("pv-list-guards");
    write_pipelines(
        &dir,
        "\
pipelines:
  - name: sync-fetch
    on: sync.fetch
    execution_mode: synchronous
    timeout: 2m
    max_depth: 4
    steps:
      - uses: web_fetch
  - name: page-on-claude-failure
    on-hook: job.failed
    from_plugin: claude_harvest
    max_depth: 0
    steps:
      - uses: pagerduty_notify
",
    );
    dir.config("include: [plugins.yaml, pipelines.yaml]\n");
    let out = dir.run(&["pipeline", "list"]).code(0);
    assert_eq!(
        out.stdout,
        "\
PIPELINE                TRIGGER             FROM            MODE          TIMEOUT  DEPTH      HOPS  FILE
sync-fetch              on sync.fetch       -               synchronous   2m       4 (set)    1     pipelines.yaml
page-on-claude-failure  on-hook job.failed  claude_harvest  asynchronous  -        unlimited  1     pipelines.yaml
"
    );
    let v = dir.run(&["pipeline", "list", "--json"]).code(0).json();
    let sync = &v["pipelines"][0];
    assert_eq!(sync["timeout"], "2m");
    assert_eq!(sync["execution_mode"], "synchronous");
    assert_eq!(
        (&sync["max_depth"], &sync["max_depth_source"]),
        (&json!(4), &json!("set"))
    );
    let hook = &v["pipelines"][1];
    assert_eq!(hook["trigger"], json!({"on_hook": "job.failed"}));
    assert_eq!(hook["from_plugin"], "claude_harvest");
    assert_eq!(
        (&hook["max_depth"], &hook["max_depth_source"]),
        (&json!(0), &json!("unlimited"))
    );
    assert_eq!(v["routes"], json!([]));
}

#[test]
fn pipeline_show_prints_hops_conditions_and_successors_per_outcome() {
    let dir = tree("pv-show", "dsl/conditions.yaml");
    let out = dir.run(&["pipeline", "show", "repo-changelog"]).code(0);
    assert_eq!(
        out.stdout,
        r#"pipeline        repo-changelog
trigger         on git_repo_sync.completed
from_plugin     -
if              {"path":"payload.new_commits","op":"eq","value":true}
execution_mode  asynchronous
timeout         -
max_depth       3 (computed); longest chain 3, hop cap 20
entry           repo-changelog:changelog
file            pipelines.yaml

hops (3):
  repo-changelog:changelog  uses changelog_microblog (handle)
    step          changelog
    succeeded ->  repo-changelog:commit/if
  repo-changelog:commit/if  switch (core.switch)
    step      commit
    if        {"path":"payload.changed","op":"eq","value":true}
    true ->   repo-changelog:commit
    false ->  end
  repo-changelog:commit  uses git_commit_push (handle)
    step          commit
    succeeded ->  end
"#
    );
    ledger_untouched(&dir);
}

#[test]
fn pipeline_show_shows_with_baggage_and_call_inlining_as_authored() {
    let dir = tree("pv-show-call", "dsl/routing-spec.yaml");
    let out = dir
        .run(&["pipeline", "show", "fetch-and-summarize"])
        .code(0);
    assert!(
        out.stdout
            .contains("    baggage       {\"web.url\":\"payload.url\"}\n"),
        "{}",
        out.stdout
    );
    let out = dir.run(&["pipeline", "show", "wisdom-chain"]).code(0);
    assert!(
        out.stdout.contains(
            "  wisdom-chain:processing>standard-audio-wisdom:steps[0]  uses whisper (handle)\n    step          steps[0]\n    pipeline      standard-audio-wisdom\n    via call      wisdom-chain:processing\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "    succeeded ->  wisdom-chain:steps[2].split[0], wisdom-chain:steps[2].split[1].steps[0]\n"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn pipeline_show_json_is_the_compiled_route_of_config_view() {
    let dir = tree("pv-show-json", "dsl/conditions.yaml");
    let v = dir
        .run(&["pipeline", "show", "repo-changelog", "--json"])
        .code(0)
        .json();
    assert_eq!(v["name"], "repo-changelog");
    assert_eq!(v["kind"], "pipeline");
    assert_eq!(v["trigger"], json!({"on": "git_repo_sync.completed"}));
    assert_eq!(
        v["if"],
        json!({"path": "payload.new_commits", "op": "eq", "value": true})
    );
    assert_eq!(v["entry"], json!(["repo-changelog:changelog"]));
    let hops = v["hops"].as_array().unwrap();
    let kinds: Vec<&str> = hops.iter().map(|h| h["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["uses", "switch", "uses"]);
    assert_eq!(hops[0]["plugin"], "changelog_microblog");
    assert_eq!(
        hops[0]["next"],
        json!({"succeeded": ["repo-changelog:commit/if"]})
    );
    assert_eq!(hops[1]["plugin"], "core.switch");
    assert_eq!(
        hops[1]["if"],
        json!({"path": "payload.changed", "op": "eq", "value": true})
    );
    assert_eq!(
        hops[1]["next"],
        json!({"true": ["repo-changelog:commit"], "false": []})
    );
    let hook = dir
        .run(&["pipeline", "show", "page-on-claude-failure", "--json"])
        .code(0)
        .json();
    assert_eq!(hook["trigger"], json!({"on_hook": "job.failed"}));
    assert_eq!(hook["source_plugin"], "claude_harvest");
}

#[test]
fn pipeline_visualize_draws_a_switch_as_a_diamond() {
    let dir = tree("pv-mermaid", "dsl/conditions.yaml");
    let out = dir
        .run(&["pipeline", "visualize", "repo-changelog"])
        .code(0);
    let chart = "\
flowchart TD
  start([\"on: git_repo_sync.completed<br/>if payload.new_commits eq true\"])
  n0[\"changelog<br/>uses changelog_microblog\"]
  n1{\"if payload.changed eq true\"}
  n2[\"commit<br/>uses git_commit_push\"]
  done((\"end\"))
  start --> n0
  n0 --> n1
  n1 -- true --> n2
  n1 -- false --> done
  n2 --> done
";
    assert_eq!(out.stdout, chart);
    let v = dir
        .run(&["pipeline", "visualize", "repo-changelog", "--json"])
        .code(0)
        .json();
    assert_eq!(v, json!({"pipeline": "repo-changelog", "mermaid": chart}));
    ledger_untouched(&dir);
}

#[test]
fn an_unknown_pipeline_fails_with_the_closest_name() {
    let dir = tree("pv-unknown", "dsl/conditions.yaml");
    for verb in ["show", "visualize"] {
        let out = dir.run(&["pipeline", verb, "repo-changelg"]).code(1);
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.error(),
            "no pipeline `repo-changelg`; did you mean `repo-changelog`?"
        );
        let out = dir.run(&["pipeline", verb, "zzz"]).code(1);
        assert_eq!(
            out.error(),
            "no pipeline `zzz` (see `ductile pipeline list`)"
        );
        let v = dir.run(&["pipeline", verb, "zzz", "--json"]).code(1).json();
        assert_eq!(
            v,
            json!({"error": "no pipeline `zzz` (see `ductile pipeline list`)", "exit_code": 1})
        );
    }
    let out = dir.run(&["pipeline", "show"]).code(2);
    assert_eq!(
        out.error(),
        "`ductile pipeline show` needs <pipeline>; usage: ductile pipeline show <pipeline>"
    );
    ledger_untouched(&dir);
}

#[test]
fn config_view_lists_the_compiled_routes() {
    let dir = TestDir::new("pv-config-view");
    write_tree(&dir, "", WEBHOOKS);
    write_pipelines(
        &dir,
        &std::fs::read_to_string(fixtures().join("dsl/conditions.yaml")).unwrap(),
    );
    let path = dir.path.join("config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let include = "include: [tokens.yaml, webhooks.yaml]";
    assert!(text.contains(include), "{text}");
    std::fs::write(
        &path,
        text.replace(
            include,
            "include: [tokens.yaml, webhooks.yaml, plugins.yaml, pipelines.yaml]",
        ),
    )
    .unwrap();
    let a = Api::start_in(dir);
    let view = get(&a.api, "/config/view", Some(ADMIN));
    assert_eq!(view.status, 200, "{}", view.text());
    let v = view.json();
    let routes = &v["compiled_routes"];
    let pipeline = &routes["repo-changelog"];
    assert_eq!(pipeline["kind"], "pipeline", "{routes}");
    assert_eq!(
        pipeline["trigger"],
        json!({"on": "git_repo_sync.completed"})
    );
    assert_eq!(pipeline["max_depth"], 3);
    assert_eq!(pipeline["hops"][1]["type"], "switch");
    assert_eq!(
        routes["page-on-claude-failure"]["source_plugin"],
        "claude_harvest"
    );
    // What the CLI shows is what the daemon serves.
    let mut shown = a
        .dir
        .run(&["pipeline", "show", "repo-changelog", "--json"])
        .code(0)
        .json();
    shown.as_object_mut().unwrap().remove("name");
    assert_eq!(&shown, pipeline);
}
