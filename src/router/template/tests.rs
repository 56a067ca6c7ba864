use serde_json::{Value, json};

use super::*;

fn yaml(text: &str) -> Value {
    match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("bad test YAML {text:?}: {e}"),
    }
}

fn compile(value: &Value) -> Template {
    match Template::compile(value) {
        Ok(t) => t,
        Err(e) => panic!("expected {value} to compile, got: {e}"),
    }
}

struct Scope {
    payload: Value,
    context: Value,
    config: Value,
}

impl Scope {
    fn new() -> Scope {
        Scope {
            payload: json!({
                "stdout": "done",
                "count": 3,
                "ratio": 0.5,
                "ok": true,
                "none": null,
                "items": [1, "two"],
                "meta": {"a": 1, "b": [true]},
                "status": "green",
            }),
            context: json!({"origin_channel_id": "C42", "web": {"url": "https://x.test"}}),
            config: json!({"prefix": ">>"}),
        }
    }

    fn roots(&self) -> Roots<'_> {
        Roots {
            payload: &self.payload,
            context: &self.context,
            config: &self.config,
        }
    }

    fn render(&self, with: &Value) -> Result<Map<String, Value>, TemplateError> {
        compile(with).render(&self.roots())
    }
}

fn rendered(with: Value) -> Value {
    match Scope::new().render(&with) {
        Ok(map) => Value::Object(map),
        Err(e) => panic!("expected {with} to render, got: {e}"),
    }
}

#[test]
fn spec_example_renders() {
    let with = yaml(
        "message: \"{payload.stdout}\"\nchannel: \"{context.origin_channel_id}\"\nsummary: \"Build finished: {payload.status}\"\n",
    );
    assert_eq!(
        rendered(with),
        json!({"message": "done", "channel": "C42", "summary": "Build finished: green"})
    );
}

#[test]
fn a_pure_reference_keeps_the_json_type() {
    let cases = [
        ("{payload.count}", json!(3)),
        ("{payload.ratio}", json!(0.5)),
        ("{payload.ok}", json!(true)),
        ("{payload.none}", Value::Null),
        ("{payload.items}", json!([1, "two"])),
        ("{payload.meta}", json!({"a": 1, "b": [true]})),
        ("{payload.meta.a}", json!(1)),
        ("{context.web}", json!({"url": "https://x.test"})),
        ("{config.prefix}", json!(">>")),
    ];
    for (text, want) in cases {
        assert_eq!(
            rendered(json!({ "v": text })),
            json!({ "v": want }),
            "{text}"
        );
    }
}

#[test]
fn mixed_text_renders_a_string() {
    let cases = [
        ("n={payload.count}", "n=3"),
        ("{payload.ratio}%", "0.5%"),
        ("ok: {payload.ok}", "ok: true"),
        ("none: {payload.none}", "none: null"),
        ("items {payload.items}", r#"items [1,"two"]"#),
        ("meta {payload.meta}", r#"meta {"a":1,"b":[true]}"#),
        ("{payload.stdout}{payload.count}", "done3"),
        (
            "{config.prefix} {payload.stdout} in {context.origin_channel_id}",
            ">> done in C42",
        ),
        ("no placeholders", "no placeholders"),
        ("", ""),
    ];
    for (text, want) in cases {
        assert_eq!(
            rendered(json!({ "v": text })),
            json!({ "v": want }),
            "{text}"
        );
    }
}

#[test]
fn doubled_braces_are_literal_braces() {
    let cases = [
        ("{{payload.count}}", "{payload.count}"),
        ("{{{payload.count}}}", "{3}"),
        (r#"{{"n": {payload.count}}}"#, r#"{"n": 3}"#),
        ("a }} b", "a } b"),
    ];
    for (text, want) in cases {
        assert_eq!(
            rendered(json!({ "v": text })),
            json!({ "v": want }),
            "{text}"
        );
    }
}

#[test]
fn non_string_values_and_nesting_render_recursively() {
    let with = json!({
        "n": 7,
        "flag": false,
        "nil": null,
        "blocks": [{"text": "{payload.stdout}", "count": "{payload.count}"}, "x {payload.ok}"],
        "nested": {"deeper": {"url": "{context.web.url}"}},
    });
    assert_eq!(
        rendered(with),
        json!({
            "n": 7,
            "flag": false,
            "nil": null,
            "blocks": [{"text": "done", "count": 3}, "x true"],
            "nested": {"deeper": {"url": "https://x.test"}},
        })
    );
}

#[test]
fn entries_read_the_snapshot_not_each_other() {
    // `stdout` is overridden, and `copy` still sees the original.
    let with = json!({"stdout": "changed", "copy": "{payload.stdout}"});
    assert_eq!(rendered(with), json!({"stdout": "changed", "copy": "done"}));
}

#[test]
fn a_missing_path_fails_naming_the_placeholder_and_key() {
    let scope = Scope::new();
    let cases = [
        (
            json!({"message": "{payload.stderr}"}),
            "message: placeholder `{payload.stderr}` does not resolve: `payload` has no key `stderr`",
        ),
        (
            json!({"message": "x {payload.stdout.len}"}),
            "message: placeholder `{payload.stdout.len}` does not resolve: `payload.stdout` is a string, not an object",
        ),
        (
            json!({"blocks": [1, {"text": "{context.nope}"}]}),
            "blocks[1].text: placeholder `{context.nope}` does not resolve: `context` has no key `nope`",
        ),
        (
            json!({"a": {"b": "{payload.meta.c}"}}),
            "a.b: placeholder `{payload.meta.c}` does not resolve: `payload.meta` has no key `c`",
        ),
    ];
    for (with, want) in cases {
        match scope.render(&with) {
            Ok(map) => panic!("expected an error for {with}, rendered {map:?}"),
            Err(e) => assert_eq!(e.to_string(), want),
        }
    }
}

#[test]
fn a_missing_context_fails_rather_than_rendering_null() {
    let scope = Scope {
        context: Value::Null,
        ..Scope::new()
    };
    match scope.render(&json!({"c": "{context.origin_channel_id}"})) {
        Ok(map) => panic!("rendered {map:?}"),
        Err(e) => assert_eq!(
            e.to_string(),
            "c: placeholder `{context.origin_channel_id}` does not resolve: `context` is null, not an object"
        ),
    }
}

#[test]
fn malformed_templates_are_rejected_at_compile() {
    let cases = [
        (
            json!("text"),
            "`with` must be a mapping of payload keys to values; found a string",
        ),
        (
            json!(["a"]),
            "`with` must be a mapping of payload keys to values; found an array",
        ),
        (json!({"": "x"}), "a payload key cannot be empty"),
        (
            json!({"m": "{payload.x"}),
            r#"m: unterminated `{` in "{payload.x"; close the placeholder with `}`, or write `{{` for a literal brace"#,
        ),
        (
            json!({"m": "{payload.x {payload.y}"}),
            r#"m: unterminated `{` in "{payload.x {payload.y}"; close the placeholder with `}`, or write `{{` for a literal brace"#,
        ),
        (
            json!({"m": "a } b"}),
            r#"m: unmatched `}` in "a } b"; write `}}` for a literal brace"#,
        ),
        (json!({"m": "{}"}), "m: placeholder `{}`: the path is empty"),
        (
            json!({"m": "{event.x}"}),
            "m: placeholder `{event.x}`: `event.x` starts with `event`; a path starts with payload, context or config",
        ),
        (
            json!({"m": "{payload..x}"}),
            "m: placeholder `{payload..x}`: `payload..x` has an empty segment",
        ),
        (
            json!({"m": "{payload.x.}"}),
            "m: placeholder `{payload.x.}`: `payload.x.` has an empty segment",
        ),
        (
            json!({"m": "{ payload.x }"}),
            "m: placeholder `{ payload.x }`: ` payload.x ` starts with ` payload`; a path starts with payload, context or config",
        ),
        (
            json!({"list": ["ok", {"deep": "{nope}"}]}),
            "list[1].deep: placeholder `{nope}`: `nope` starts with `nope`; a path starts with payload, context or config",
        ),
    ];
    for (with, want) in cases {
        match Template::compile(&with) {
            Ok(t) => panic!("expected an error for {with}, compiled {t:?}"),
            Err(e) => assert_eq!(e.to_string(), want, "{with}"),
        }
    }
}

#[test]
fn a_bare_root_references_the_whole_document() {
    assert_eq!(
        rendered(json!({"all": "{config}"})),
        json!({"all": {"prefix": ">>"}})
    );
}

#[test]
fn paths_lists_each_placeholder_once() {
    let t = compile(&json!({
        "a": "{payload.x} and {context.y}",
        "b": ["{payload.x}", {"c": "{config.z}"}],
        "d": 5,
    }));
    assert_eq!(t.paths(), ["payload.x", "context.y", "config.z"]);
}

#[test]
fn non_ascii_text_around_placeholders_is_kept() {
    assert_eq!(
        rendered(json!({"m": "✓ {payload.stdout} — ünïcode {{ok}}"})),
        json!({"m": "✓ done — ünïcode {ok}"})
    );
}
