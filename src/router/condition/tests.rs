use serde_json::{Value, json};

use super::*;

fn yaml(text: &str) -> Value {
    match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("bad test YAML {text:?}: {e}"),
    }
}

fn compile(text: &str) -> Condition {
    match Condition::compile(&yaml(text)) {
        Ok(c) => c,
        Err(e) => panic!("expected {text:?} to compile, got: {e}"),
    }
}

fn compile_err(value: &Value) -> String {
    match Condition::compile(value) {
        Ok(c) => panic!("expected an error for {value}, compiled {c}"),
        Err(e) => e.to_string(),
    }
}

fn payload() -> Value {
    json!({
        "status": "OK",
        "count": 5,
        "ratio": 0.5,
        "big": 9007199254740993u64,
        "flag": true,
        "nothing": null,
        "text": "Build finished: Success",
        "tags": ["alpha", "beta", 3],
        "user": {"name": "Ada", "roles": ["admin"]},
        "id": "abc-123",
    })
}

fn check(cases: &[(&str, bool)]) {
    let payload = payload();
    let context = json!({"origin": {"channel": "c1"}});
    let config = json!({"threshold": 4});
    let roots = Roots {
        payload: &payload,
        context: &context,
        config: &config,
    };
    for (text, want) in cases {
        let condition = compile(text);
        assert_eq!(
            condition.eval(&roots),
            *want,
            "{text}  (compiled: {condition})"
        );
    }
}

#[test]
fn every_operator_on_matching_and_mismatching_values() {
    check(&[
        ("{path: payload.status, op: exists}", true),
        ("{path: payload.nothing, op: exists}", true),
        ("{path: payload.absent, op: exists}", false),
        ("{path: payload.status, op: eq, value: OK}", true),
        ("{path: payload.status, op: eq, value: ok}", false),
        ("{path: payload.status, op: neq, value: ok}", true),
        ("{path: payload.status, op: neq, value: OK}", false),
        (
            "{path: payload.user, op: eq, value: {roles: [admin], name: Ada}}",
            true,
        ),
        (
            "{path: payload.tags, op: eq, value: [alpha, beta, 3]}",
            true,
        ),
        (
            "{path: payload.tags, op: eq, value: [beta, alpha, 3]}",
            false,
        ),
        ("{path: payload.nothing, op: eq, value: null}", true),
        ("{path: payload.status, op: in, value: [OK, FAILED]}", true),
        ("{path: payload.status, op: in, value: [FAILED]}", false),
        ("{path: payload.count, op: in, value: [1, 5.0]}", true),
        ("{path: payload.count, op: gt, value: 4}", true),
        ("{path: payload.count, op: gt, value: 5}", false),
        ("{path: payload.count, op: gte, value: 5}", true),
        ("{path: payload.count, op: gte, value: 5.5}", false),
        ("{path: payload.count, op: lt, value: 5.5}", true),
        ("{path: payload.count, op: lt, value: 5}", false),
        ("{path: payload.count, op: lte, value: 5}", true),
        ("{path: payload.ratio, op: lte, value: 0.25}", false),
        ("{path: payload.text, op: contains, value: FINISHED}", true),
        ("{path: payload.text, op: contains, value: failed}", false),
        ("{path: payload.tags, op: contains, value: beta}", true),
        ("{path: payload.tags, op: contains, value: Beta}", false),
        ("{path: payload.tags, op: contains, value: 3}", true),
        ("{path: payload.text, op: startswith, value: build}", true),
        (
            "{path: payload.text, op: startswith, value: finished}",
            false,
        ),
        ("{path: payload.text, op: endswith, value: SUCCESS}", true),
        ("{path: payload.text, op: endswith, value: build}", false),
        (
            "{path: payload.id, op: regex, value: '[a-z]+-[0-9]+'}",
            true,
        ),
        ("{path: payload.id, op: regex, value: '[0-9]+'}", false),
        ("{path: payload.id, op: regex, value: 'abc'}", false),
        ("{path: payload.status, op: regex, value: '(?i)ok'}", true),
        ("{path: payload.status, op: regex, value: 'ok|OK'}", true),
    ]);
}

#[test]
fn typing_is_strict_without_coercion() {
    check(&[
        // "5" is not 5, and 5 is not "5".
        ("{path: payload.count, op: eq, value: '5'}", false),
        ("{path: payload.count, op: neq, value: '5'}", true),
        ("{path: payload.count, op: in, value: ['5']}", false),
        // Integers and floats compare by value.
        ("{path: payload.count, op: eq, value: 5.0}", true),
        ("{path: payload.ratio, op: gt, value: 0}", true),
        // Large integers compare exactly, not through f64.
        ("{path: payload.big, op: gt, value: 9007199254740992}", true),
        (
            "{path: payload.big, op: eq, value: 9007199254740992}",
            false,
        ),
        // Numeric operators on a string, string operators on a number: false.
        ("{path: payload.id, op: gt, value: 0}", false),
        ("{path: payload.count, op: contains, value: '5'}", false),
        ("{path: payload.count, op: startswith, value: '5'}", false),
        ("{path: payload.count, op: regex, value: '5'}", false),
        ("{path: payload.flag, op: eq, value: 'true'}", false),
        ("{path: payload.flag, op: eq, value: 1}", false),
        ("{path: payload.flag, op: eq, value: true}", true),
        ("{path: payload.nothing, op: lt, value: 1}", false),
    ]);
}

#[test]
fn missing_paths_compare_as_null() {
    check(&[
        ("{path: payload.absent, op: eq, value: x}", false),
        ("{path: payload.absent, op: eq, value: null}", true),
        ("{path: payload.absent, op: neq, value: x}", true),
        ("{path: payload.absent, op: in, value: [x, y]}", false),
        ("{path: payload.absent, op: gt, value: 0}", false),
        ("{path: payload.absent, op: lte, value: 0}", false),
        ("{path: payload.absent, op: contains, value: x}", false),
        ("{path: payload.absent, op: startswith, value: ''}", false),
        ("{path: payload.absent, op: endswith, value: ''}", false),
        ("{path: payload.absent, op: regex, value: '.*'}", false),
        ("{not: {path: payload.absent, op: exists}}", true),
        // Through a value that is not an object.
        ("{path: payload.status.deeper, op: exists}", false),
        ("{path: payload.tags.0, op: exists}", false),
    ]);
}

#[test]
fn roots_context_and_config_resolve() {
    check(&[
        ("{path: context.origin.channel, op: eq, value: c1}", true),
        ("{path: context.origin.missing, op: exists}", false),
        ("{path: config.threshold, op: lt, value: 5}", true),
    ]);
}

#[test]
fn an_absent_context_makes_context_predicates_false() {
    let payload = payload();
    let empty = json!({});
    let null = Value::Null;
    let condition = compile("{path: context.origin.channel, op: eq, value: c1}");
    for context in [&empty, &null] {
        let roots = Roots {
            payload: &payload,
            context,
            config: &empty,
        };
        assert!(!condition.eval(&roots));
    }
}

#[test]
fn combinators_all_any_not() {
    check(&[
        (
            "{all: [{path: payload.status, op: eq, value: OK}, {path: payload.count, op: gte, value: 5}]}",
            true,
        ),
        (
            "{all: [{path: payload.status, op: eq, value: OK}, {path: payload.count, op: gt, value: 5}]}",
            false,
        ),
        (
            "{any: [{path: payload.status, op: eq, value: no}, {path: payload.count, op: gt, value: 4}]}",
            true,
        ),
        (
            "{any: [{path: payload.status, op: eq, value: no}, {path: payload.count, op: gt, value: 5}]}",
            false,
        ),
        ("{not: {path: payload.status, op: eq, value: OK}}", false),
        (
            "{not: {any: [{path: payload.status, op: in, value: [x]}, {all: [{path: payload.flag, op: eq, value: false}]}]}}",
            true,
        ),
    ]);
}

#[test]
fn spec_examples_compile_and_evaluate() {
    let condition = compile(
        "all:\n  - path: payload.kind\n    op: eq\n    value: video\n  - path: payload.duration_sec\n    op: gte\n    value: 30\n",
    );
    let roots_for = |payload: &'static str| serde_json::from_str::<Value>(payload);
    let empty = json!({});
    for (text, want) in [
        (r#"{"kind": "video", "duration_sec": 31}"#, true),
        (r#"{"kind": "video", "duration_sec": 29}"#, false),
        (r#"{"kind": "audio", "duration_sec": 90}"#, false),
    ] {
        let payload = match roots_for(text) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let roots = Roots {
            payload: &payload,
            context: &empty,
            config: &empty,
        };
        assert_eq!(condition.eval(&roots), want, "{text}");
    }
    let hook =
        compile("not:\n  path: payload.plugin\n  op: in\n  value: [check_youtube, jina-reader]\n");
    let payload = json!({"plugin": "jina-reader"});
    let roots = Roots {
        payload: &payload,
        context: &empty,
        config: &empty,
    };
    assert!(!hook.eval(&roots));
}

#[test]
fn invalid_trees_are_rejected_with_their_path() {
    let cases: &[(&str, &str)] = &[
        (
            "[]",
            "a condition is a mapping with `path` and `op`, or with one of `all`, `any`, `not`; found an array",
        ),
        (
            "{}",
            "missing `path`; a condition is a mapping with `path` and `op`, or with one of `all`, `any`, `not`",
        ),
        (
            "{path: payload.x}",
            "missing `op`; a condition is a mapping with `path` and `op`, or with one of `all`, `any`, `not`",
        ),
        (
            "{path: payload.x, op: eq, value: 1, extra: 2}",
            "extra: unknown key `extra`; expected `path`, `op`, `value`, `all`, `any`, `not`",
        ),
        (
            "{path: payload.x, op: eq, vaule: 1}",
            "vaule: unknown key `vaule`; did you mean `value`?",
        ),
        (
            "{path: payload.x, op: equals, value: 1}",
            "op: unknown operator `equals`; expected one of exists, eq, neq, in, gt, gte, lt, lte, contains, startswith, endswith, regex",
        ),
        (
            "{path: payload.x, op: regx, value: a}",
            "op: unknown operator `regx`; did you mean `regex`?",
        ),
        (
            "{path: payload.x, op: 3}",
            "op: `op` must be a string; found a number",
        ),
        (
            "{path: [payload], op: exists}",
            "path: `path` must be a string; found an array",
        ),
        ("{path: payload.x, op: eq}", "`eq` needs a `value`"),
        (
            "{path: payload.x, op: exists, value: true}",
            "value: `exists` takes no value",
        ),
        (
            "{path: payload.x, op: exists, value: null}",
            "value: `exists` takes no value",
        ),
        (
            "{path: payload.x, op: in, value: a}",
            "value: `in` needs a list of values; the value is a string",
        ),
        (
            "{path: payload.x, op: gt, value: '5'}",
            "value: `gt` compares numbers; the value is a string",
        ),
        (
            "{path: payload.x, op: lte, value: null}",
            "value: `lte` compares numbers; the value is null",
        ),
        (
            "{path: payload.x, op: startswith, value: 5}",
            "value: `startswith` compares strings; the value is a number",
        ),
        (
            "{path: payload.x, op: endswith, value: [a]}",
            "value: `endswith` compares strings; the value is an array",
        ),
        (
            "{path: payload.x, op: regex, value: true}",
            "value: `regex` compares strings; the value is a boolean",
        ),
        (
            "{path: payload.x, op: regex, value: 'a(b'}",
            "value: invalid regex: unclosed group",
        ),
        (
            "{path: payload.x, op: regex, value: 'a{1000}{1000}'}",
            "value: invalid regex: Compiled regex exceeds size limit of 1048576 bytes.",
        ),
        (
            "{path: event.x, op: exists}",
            "path: `event.x` starts with `event`; a path starts with payload, context or config",
        ),
        ("{path: '', op: exists}", "path: the path is empty"),
        (
            "{path: payload..x, op: exists}",
            "path: `payload..x` has an empty segment",
        ),
        (
            "{path: payload.x., op: exists}",
            "path: `payload.x.` has an empty segment",
        ),
        (
            "{path: '{payload.x}', op: exists}",
            "path: `{payload.x}` starts with `{payload`; a path starts with payload, context or config",
        ),
        (
            "{path: payload.a b, op: exists}",
            "path: `payload.a b`: segment `a b` contains a space or a brace",
        ),
        (
            "{path: payload, op: exists}",
            "path: `payload` names a whole root; a condition tests a field such as `payload.status`",
        ),
        ("{all: []}", "all: `all` needs at least one condition"),
        (
            "{any: {path: payload.x, op: exists}}",
            "any: `any` takes a list of conditions; found an object",
        ),
        (
            "{not: [{path: payload.x, op: exists}]}",
            "not: `not` takes one condition, not a list; wrap a list in `all` or `any`",
        ),
        (
            "{all: [{path: payload.x, op: exists}], any: [{path: payload.x, op: exists}]}",
            "`all` and `any` cannot share a mapping; nest one inside the other",
        ),
        (
            "{all: [{path: payload.x, op: exists}], path: payload.y}",
            "path: `path` cannot stand beside `all`; nest the predicate inside it",
        ),
        (
            "{all: [{path: payload.x, op: exists}, {any: [{path: payload.y, op: exists}, {path: payload.z, op: eq, value: 1, nope: 1}]}]}",
            "all[1].any[1].nope: unknown key `nope`; expected `path`, `op`, `value`, `all`, `any`, `not`",
        ),
        (
            "{all: [{path: payload.x, op: exists}, {any: [{path: payload.y, op: bogus}]}]}",
            "all[1].any[0].op: unknown operator `bogus`; expected one of exists, eq, neq, in, gt, gte, lt, lte, contains, startswith, endswith, regex",
        ),
        (
            "{not: {path: payload.x, op: gt, value: a}}",
            "not.value: `gt` compares numbers; the value is a string",
        ),
        (
            "{any: [{path: payload.x, op: eq}]}",
            "any[0]: `eq` needs a `value`",
        ),
        (
            "{any: [3]}",
            "any[0]: a condition is a mapping with `path` and `op`, or with one of `all`, `any`, `not`; found a number",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(compile_err(&yaml(text)), *want, "{text}");
    }
}

fn atom() -> Value {
    json!({"path": "payload.x", "op": "exists"})
}

/// `not` wrapped `levels - 1` times around one predicate: `levels` deep.
fn nested(levels: usize) -> Value {
    let mut value = atom();
    for _ in 1..levels {
        value = json!({ "not": value });
    }
    value
}

#[test]
fn nesting_is_limited_to_max_depth() {
    assert!(Condition::compile(&nested(MAX_DEPTH)).is_ok());
    let too_deep = nested(MAX_DEPTH + 1);
    let path = ["not"; MAX_DEPTH].join(".");
    assert_eq!(
        compile_err(&too_deep),
        format!("{path}: conditions nest more than 8 levels deep")
    );
    let mixed = json!({"all": [{"any": [{"not": {"all": [{"any": [{"not": {"all": [{"any": [{"not": atom()}]}]}}]}]}}]}]});
    assert_eq!(
        compile_err(&mixed),
        // The ninth level is the `not` mapping, the first element of the eighth.
        "all[0].any[0].not.all[0].any[0].not.all[0].any[0]: conditions nest more than 8 levels deep"
    );
}

#[test]
fn node_count_is_limited_to_max_nodes() {
    // `all` itself is one node, so it may hold MAX_NODES - 1 predicates.
    let fits = json!({ "all": vec![atom(); MAX_NODES - 1] });
    assert!(Condition::compile(&fits).is_ok());
    let over = json!({ "all": vec![atom(); MAX_NODES] });
    assert_eq!(
        compile_err(&over),
        "all[63]: a condition tree holds at most 64 predicates and combinators"
    );
}

#[test]
fn display_is_compact_and_one_line() {
    let cases: &[(&str, &str)] = &[
        (
            "{path: payload.status, op: eq, value: ok}",
            r#"payload.status eq "ok""#,
        ),
        ("{path: payload.x, op: exists}", "payload.x exists"),
        (
            "{all: [{path: payload.kind, op: eq, value: video}, {path: payload.duration_sec, op: gte, value: 30}]}",
            r#"all(payload.kind eq "video", payload.duration_sec gte 30)"#,
        ),
        (
            "{not: {any: [{path: payload.plugin, op: in, value: [a, b]}, {path: context.x, op: regex, value: '^a.*'}]}}",
            r#"not(any(payload.plugin in ["a","b"], context.x regex "^a.*"))"#,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(compile(text).to_string(), *want);
    }
}

#[test]
fn paths_lists_each_path_once_in_order() {
    let condition = compile(
        "{any: [{path: payload.b, op: exists}, {not: {path: context.a, op: exists}}, {path: payload.b, op: eq, value: 1}, {path: config.c, op: exists}]}",
    );
    assert_eq!(condition.paths(), ["payload.b", "context.a", "config.c"]);
}

#[test]
fn to_value_round_trips_through_compile() {
    let text = "{all: [{path: payload.kind, op: eq, value: video}, {not: {path: payload.x, op: exists}}, {path: payload.id, op: regex, value: 'a.*'}]}";
    let condition = compile(text);
    let value = condition.to_value();
    assert_eq!(value, yaml(text));
    match Condition::compile(&value) {
        Ok(again) => assert_eq!(again.to_string(), condition.to_string()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn regex_matches_the_whole_string_in_linear_time() {
    // A pattern that backtracking engines take exponential time on.
    let condition = compile("{path: payload.s, op: regex, value: '(a+)+$'}");
    let mut long = "a".repeat(5000);
    long.push('!');
    let payload = json!({ "s": long });
    let empty = json!({});
    let roots = Roots {
        payload: &payload,
        context: &empty,
        config: &empty,
    };
    assert!(!condition.eval(&roots));
}

#[test]
fn path_parse_respects_allowed_roots() {
    assert_eq!(
        Path::parse("config.x", &[Root::Payload, Root::Context]),
        Err(
            "`config.x`: `config` cannot be used here; a path starts with payload or context"
                .to_string()
        )
    );
    match Path::parse("context", &Root::ALL) {
        Ok(path) => {
            assert_eq!(path.root(), Root::Context);
            assert!(path.segments().is_empty());
            assert_eq!(path.to_string(), "context");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn explain_miss_names_the_missing_key_or_the_non_object() {
    let payload = payload();
    let empty = json!({});
    let roots = Roots {
        payload: &payload,
        context: &Value::Null,
        config: &empty,
    };
    let explain = |text: &str| match Path::parse(text, &Root::ALL) {
        Ok(p) => p.explain_miss(&roots),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        explain("payload.user.email"),
        "`payload.user` has no key `email`"
    );
    assert_eq!(
        explain("payload.status.x"),
        "`payload.status` is a string, not an object"
    );
    assert_eq!(explain("context.x"), "`context` is null, not an object");
}
