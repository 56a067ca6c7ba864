//! `routes:` and `pipelines:`: structure, the step modes, compiled values and
//! the exact text of every message (file, pipeline and step).

use super::*;
use crate::config::pipeline::{Action, ExecutionMode, Hook, Trigger};

/// A one-step pipeline `p` on `e`, with `extra` lines indented under the step.
fn one_step(extra: &str) -> String {
    format!("pipelines:\n  - name: p\n    on: e\n    steps:\n      - uses: echo\n{extra}")
}

#[test]
fn reads_every_pipeline_field() {
    let (_tree, loaded) = load(
        "pipelines:\n  - name: sync-one\n    on: build.done\n    from_plugin: ci\n    if: {path: payload.ok, op: eq, value: true}\n    max_depth: 4\n    execution_mode: synchronous\n    timeout: 2m\n    steps:\n      - id: first\n        uses: echo\n        with: {message: \"{payload.text}\"}\n        baggage: {build.id: payload.id}\n      - call: other\n        if: {path: payload.go, op: exists}\n      - steps: [{uses: a}, {uses: b}]\n      - split: [{uses: c}, {relay: {to: lab, event: x.ready, dedupe_key: payload.id}}]\n  - name: other\n    on-hook: job.timed_out\n    steps: [{uses: echo}]\n",
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let [p, other] = loaded.config.pipelines.as_slice() else {
        panic!("two pipelines expected");
    };
    assert_eq!(p.name, "sync-one");
    assert_eq!(p.origin, "pipelines[0] (sync-one)");
    assert_eq!(p.trigger, Trigger::Event("build.done".to_string()));
    assert_eq!(p.from_plugin.as_deref(), Some("ci"));
    assert_eq!(
        p.condition.as_ref().unwrap().source,
        serde_json::json!({"path": "payload.ok", "op": "eq", "value": true})
    );
    assert_eq!(p.max_depth, Some(4));
    assert_eq!(p.execution_mode, ExecutionMode::Synchronous);
    assert_eq!(p.timeout, Some(secs(120)));
    assert_eq!(p.steps.len(), 4);
    let first = &p.steps[0];
    assert_eq!(
        (first.id.as_deref(), first.name()),
        (Some("first"), "first")
    );
    assert_eq!(first.origin, "pipelines[0] (sync-one).steps[0]");
    let Action::Uses(uses) = &first.action else {
        panic!("uses expected");
    };
    assert_eq!(uses.plugin, "echo");
    assert_eq!(
        uses.with.as_ref().unwrap().source,
        serde_json::json!({"message": "{payload.text}"})
    );
    assert_eq!(
        uses.baggage.as_ref().unwrap().source,
        serde_json::json!({"build.id": "payload.id"})
    );
    assert!(matches!(&p.steps[1].action, Action::Call(t) if t == "other"));
    assert!(p.steps[1].condition.is_some());
    assert_eq!(p.steps[1].name(), "steps[1]");
    let Action::Steps(nested) = &p.steps[2].action else {
        panic!("steps expected");
    };
    assert_eq!(nested[1].path, "steps[2].steps[1]");
    assert_eq!(
        nested[1].origin,
        "pipelines[0] (sync-one).steps[2].steps[1]"
    );
    let Action::Split(branches) = &p.steps[3].action else {
        panic!("split expected");
    };
    let Action::Relay(relay) = &branches[1].action else {
        panic!("relay expected");
    };
    assert_eq!(branches[1].path, "steps[3].split[1]");
    assert_eq!(
        (relay.to.as_str(), relay.event.as_str()),
        ("lab", "x.ready")
    );
    assert_eq!(relay.dedupe_key.as_deref(), Some("payload.id"));
    assert_eq!(other.trigger, Trigger::Hook(Hook::JobTimedOut));
    assert_eq!(other.execution_mode, ExecutionMode::Asynchronous);
    assert_eq!((other.max_depth, other.timeout), (None, None));
}

#[test]
fn reads_routes_in_order() {
    let (tree, loaded) = load(
        "routes:\n  - {from: withings, event_type: new_health_data, to: analyzer}\n  - {from: analyzer, event_type: alert, to: notify}\n",
    );
    assert!(loaded.warnings.is_empty());
    let routes = &loaded.config.routes;
    assert_eq!(routes.len(), 2);
    assert_eq!(
        (
            routes[1].from.as_str(),
            routes[1].event_type.as_str(),
            routes[1].to.as_str()
        ),
        ("analyzer", "alert", "notify")
    );
    assert_eq!(routes[1].origin, "routes[1]");
    assert_eq!(routes[1].file, tree.path("config.yaml"));
    assert!(loaded.config.inactive.is_empty());
    assert!(loaded.config.extra.is_empty());
}

#[test]
fn async_is_the_default_and_both_spellings_are_read() {
    for (mode, expected) in [
        ("async", ExecutionMode::Asynchronous),
        ("asynchronous", ExecutionMode::Asynchronous),
        ("synchronous", ExecutionMode::Synchronous),
    ] {
        let (_tree, loaded) = load(&format!(
            "pipelines: [{{name: p, on: e, execution_mode: {mode}, steps: [{{uses: echo}}]}}]\n"
        ));
        assert_eq!(loaded.config.pipelines[0].execution_mode, expected);
    }
}

#[test]
fn pipeline_rules_name_the_pipeline() {
    let twice = "pipelines:\n  - {name: twice, on: a, steps: [{uses: echo}]}\n  - {name: twice, on: b, steps: [{uses: echo}]}\n";
    let tree = TempTree::new();
    tree.write("config.yaml", twice);
    assert_eq!(
        tree.error(&[]),
        format!(
            "{f}: pipelines[1] (twice).name: duplicate pipeline name `twice` (also pipelines[0] (twice) in {f})",
            f = tree.path("config.yaml").display()
        )
    );
    let cases = [
        (
            "pipelines: [{on: e, steps: [{uses: echo}]}]\n",
            "pipelines[0]",
            "`name` is required",
        ),
        (
            "pipelines: [{name: p, on: e, on-hook: job.completed, steps: [{uses: echo}]}]\n",
            "pipelines[0] (p)",
            "set `on` or `on-hook`, not both",
        ),
        (
            "pipelines: [{name: p, steps: [{uses: echo}]}]\n",
            "pipelines[0] (p)",
            "`on` or `on-hook` is required",
        ),
        (
            "pipelines: [{name: p, on: e}]\n",
            "pipelines[0] (p)",
            "`steps` is required",
        ),
        (
            "pipelines: [{name: p, on: e, steps: []}]\n",
            "pipelines[0] (p).steps",
            "`steps` must not be empty",
        ),
        (
            "pipelines: [{name: p, on: e, max_depth: -1, steps: [{uses: echo}]}]\n",
            "pipelines[0] (p).max_depth",
            "must not be negative, got -1 (0 means unlimited)",
        ),
        (
            "pipelines: [{name: p, on: e, max_depth: deep, steps: [{uses: echo}]}]\n",
            "pipelines[0] (p).max_depth",
            "expected a non-negative integer, found `deep`",
        ),
        (
            "pipelines: [{name: p, on-hook: job.done, steps: [{uses: echo}]}]\n",
            "pipelines[0] (p).on-hook",
            "unknown hook `job.done`: expected job.completed, job.failed or job.timed_out",
        ),
        (
            "pipelines: [{name: p, on: e, execution_mode: sync, steps: [{uses: echo}]}]\n",
            "pipelines[0] (p).execution_mode",
            "invalid execution_mode `sync`: expected async, asynchronous or synchronous",
        ),
        (
            "pipelines: [{name: p, on: e, execution_mode: synchronous, timeout: 0s, steps: [{uses: echo}]}]\n",
            "pipelines[0] (p).timeout",
            "must be longer than 0s",
        ),
        (
            "pipelines: [{name: \"a b\", on: e, steps: [{uses: echo}]}]\n",
            "pipelines[0].name",
            "invalid value `a b`: expected a name without spaces",
        ),
        (
            "pipelines: [{name: \"a:b\", on: e, steps: [{uses: echo}]}]\n",
            "pipelines[0].name",
            "invalid name `a:b`: use letters, digits, `-`, `_` and `.`",
        ),
        (
            "pipelines: [{name: p, on: [e], steps: [{uses: echo}]}]\n",
            "pipelines[0] (p).on",
            "expected a string, found a list",
        ),
        (
            "pipelines: {p: {}}\n",
            "pipelines",
            "expected a list, found a mapping",
        ),
    ];
    for (text, path, message) in cases {
        check(text, path, message);
    }
}

#[test]
fn step_rules_name_the_pipeline_and_step() {
    let cases = [
        (
            one_step("        call: other\n"),
            "pipelines[0] (p).steps[0]",
            "a step does exactly one of `uses`, `call`, `steps`, `split` or `relay`; this one sets `uses` and `call`",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{id: x}]}]\n".to_string(),
            "pipelines[0] (p).steps[0]",
            "a step needs one of `uses`, `call`, `steps`, `split` or `relay`",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{split: [{uses: a}, {steps: []}]}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].split[1].steps",
            "`steps` must not be empty",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{split: []}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].split",
            "`split` must not be empty",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{call: q, with: {a: b}}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].with",
            "`with` applies only to `uses` and `relay` steps, not to `call`",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{split: [{uses: a}], baggage: {a.b: payload.c}}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].baggage",
            "`baggage` applies only to `uses` and `relay` steps, not to `split`",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{steps: [{uses: a}], payload: {a: b}}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].with",
            "`with` applies only to `uses` and `relay` steps, not to `steps`",
        ),
        (
            one_step("        with: {a: 1}\n        payload: {a: 2}\n"),
            "pipelines[0] (p).steps[0].payload",
            "`payload` is an alias of `with`; set only one of them",
        ),
        (
            one_step("        with: [a]\n"),
            "pipelines[0] (p).steps[0].with",
            "expected a mapping, found a list",
        ),
        (
            one_step("        baggage: payload.x\n"),
            "pipelines[0] (p).steps[0].baggage",
            "expected a mapping, found `payload.x`",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{id: a, uses: x}, {split: [{id: a, uses: y}]}]}]\n".to_string(),
            "pipelines[0] (p).steps[1].split[0].id",
            "duplicate step id `a` (also pipelines[0] (p).steps[0]); ids are unique within a pipeline",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{id: \"a/b\", uses: x}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].id",
            "invalid name `a/b`: use letters, digits, `-`, `_` and `.`",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{relay: {event: x}}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].relay",
            "`to` is required",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{relay: {to: lab, event: x, dedupe_key: id}}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].relay.dedupe_key",
            "`id` must start with `payload.` or `context.`",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [{relay: {to: lab, event: x, with: {a: b}}, with: {c: d}}]}]\n".to_string(),
            "pipelines[0] (p).steps[0].relay.with",
            "`with` is set both here and on the step (pipelines[0] (p).steps[0]); set it once",
        ),
        (
            "pipelines: [{name: p, on: e, steps: [uses echo]}]\n".to_string(),
            "pipelines[0] (p).steps[0]",
            "expected a mapping, found `uses echo`",
        ),
    ];
    for (text, path, message) in cases {
        check(&text, path, message);
    }
}

#[test]
fn compile_errors_are_placed_below_the_step() {
    // The condition compiler's own message follows the path; the location is ours.
    let tree = TempTree::new();
    tree.write("config.yaml", &one_step("        if: 3\n"));
    let error = tree.error(&[]);
    let prefix = format!(
        "{}: pipelines[0] (p).steps[0].if",
        tree.path("config.yaml").display()
    );
    assert!(error.starts_with(&prefix), "{error}");
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "pipelines: [{name: p, on: e, if: 3, steps: [{uses: a}]}]\n",
    );
    let error = tree.error(&[]);
    let prefix = format!(
        "{}: pipelines[0] (p).if",
        tree.path("config.yaml").display()
    );
    assert!(error.starts_with(&prefix), "{error}");
}

#[test]
fn payload_is_read_as_with_and_warned_about() {
    let (_tree, loaded) = load(&one_step("        payload: {message: hi}\n"));
    let Action::Uses(uses) = &loaded.config.pipelines[0].steps[0].action else {
        panic!("uses expected");
    };
    assert_eq!(
        uses.with.as_ref().unwrap().source,
        serde_json::json!({"message": "hi"})
    );
    warns(
        &one_step("        payload: {message: hi}\n"),
        &["pipelines[0] (p).steps[0].payload: read as `with:`; write `with:` instead"],
    );
}

#[test]
fn unknown_keys_and_ignored_settings_warn() {
    warns(
        "pipelines:\n  - name: p\n    on: e\n    timeout: 5s\n    stepz: 1\n    steps:\n      - uses: echo\n        uzes: x\n      - relay: {to: lab, event: x, dedupe_ky: payload.id}\nroutes:\n  - {from: a, event_type: e, to: b, too: c}\n",
        &[
            "routes[0].too: unknown key `too`; did you mean `to`?",
            "pipelines[0] (p).stepz: unknown key `stepz`; did you mean `steps`?",
            "pipelines[0] (p).timeout: `timeout` applies only to `execution_mode: synchronous`; it is ignored here",
            "pipelines[0] (p).steps[0].uzes: unknown key `uzes`; did you mean `uses`?",
            "pipelines[0] (p).steps[1].relay.dedupe_ky: unknown key `dedupe_ky`; did you mean `dedupe_key`?",
        ],
    );
}

#[test]
fn a_repeated_route_is_warned_about() {
    let (tree, loaded) =
        load("routes:\n  - {from: a, event_type: e, to: b}\n  - {from: a, event_type: e, to: b}\n");
    let f = tree.path("config.yaml");
    let got: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [format!(
            "{f}: routes[1]: the same route as routes[0] in {f}; each event would be delivered twice",
            f = f.display()
        )]
    );
    assert_eq!(loaded.config.routes.len(), 2);
}

#[test]
fn route_rules_name_the_route() {
    check(
        "routes: [{from: a, event_type: e}]\n",
        "routes[0]",
        "`to` is required",
    );
    check(
        "routes: [{from: a, event_type: \"new data\", to: b}]\n",
        "routes[0].event_type",
        "invalid value `new data`: expected a name without spaces",
    );
    check(
        "routes: {a: b}\n",
        "routes",
        "expected a list, found a mapping",
    );
}

#[test]
fn messages_name_the_included_file_that_declared_the_pipeline() {
    let tree = TempTree::new();
    tree.write(
        "config.yaml",
        "include: [pipelines.yaml, more.yaml]\npipelines: [{name: first, on: e, steps: [{uses: a}]}]\n",
    );
    tree.write(
        "pipelines.yaml",
        "pipelines:\n  - {name: second, on: e, steps: [{uses: a}]}\n",
    );
    tree.write(
        "more.yaml",
        "pipelines:\n  - name: third\n    on: e\n    steps:\n      - uses: a\n        call: b\n",
    );
    assert_eq!(
        tree.error(&[]),
        format!(
            "{}: pipelines[2] (third).steps[0]: a step does exactly one of `uses`, `call`, `steps`, `split` or `relay`; this one sets `uses` and `call`",
            tree.path("more.yaml").display()
        )
    );
}
