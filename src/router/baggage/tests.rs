use serde_json::{Value, json};

use super::*;

fn yaml(text: &str) -> Value {
    match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("bad test YAML {text:?}: {e}"),
    }
}

fn compile(value: &Value) -> Claims {
    match Claims::compile(value) {
        Ok(c) => c,
        Err(e) => panic!("expected {value} to compile, got: {e}"),
    }
}

fn payload() -> Value {
    json!({
        "url": "https://x.test/a",
        "content_hash": "abc",
        "truncated": false,
        "count": 2,
        "metadata": {"lang": "en", "model": {"name": "small"}},
        "status": "ok",
    })
}

fn apply(claims: &Value, inherited: &Value) -> Result<Value, BaggageError> {
    let context = inherited.clone();
    compile(claims).apply(inherited, &payload(), &context)
}

fn applied(claims: &Value, inherited: &Value) -> Value {
    match apply(claims, inherited) {
        Ok(v) => v,
        Err(e) => panic!("expected {claims} to apply on {inherited}, got: {e}"),
    }
}

fn apply_err(claims: &Value, inherited: &Value) -> String {
    match apply(claims, inherited) {
        Ok(v) => panic!("expected {claims} on {inherited} to fail, got {v}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn spec_example_claims_dotted_paths_with_their_types() {
    let claims = yaml(
        "web.url: payload.url\nweb.content_hash: payload.content_hash\nweb.truncated: payload.truncated\n",
    );
    assert_eq!(
        applied(&claims, &Value::Null),
        json!({"web": {"url": "https://x.test/a", "content_hash": "abc", "truncated": false}})
    );
}

#[test]
fn claims_accrete_onto_the_inherited_context_without_changing_it() {
    let inherited = json!({"origin": {"channel": "C1"}, "web": {"url": "https://x.test/a"}});
    let before = inherited.clone();
    let claims = json!({"web.hash": "payload.content_hash", "status.current": "payload.status"});
    assert_eq!(
        applied(&claims, &inherited),
        json!({
            "origin": {"channel": "C1"},
            "web": {"url": "https://x.test/a", "hash": "abc"},
            "status": {"current": "ok"},
        })
    );
    assert_eq!(inherited, before);
}

#[test]
fn sources_may_come_from_the_context() {
    let inherited = json!({"origin": {"channel": "C1"}});
    assert_eq!(
        applied(
            &json!({"copy.channel": "context.origin.channel"}),
            &inherited
        ),
        json!({"origin": {"channel": "C1"}, "copy": {"channel": "C1"}})
    );
}

#[test]
fn re_claiming_the_same_value_is_allowed() {
    let inherited =
        json!({"web": {"url": "https://x.test/a", "count": 2.0}, "meta": {"lang": "en"}});
    let claims = json!({
        "web.url": "payload.url",
        "web.count": "payload.count",
        "meta": "payload.metadata",
    });
    // `meta` is an object: it merges key by key, adding `model` beside `lang`.
    assert_eq!(
        applied(&claims, &inherited),
        json!({
            "web": {"url": "https://x.test/a", "count": 2.0},
            "meta": {"lang": "en", "model": {"name": "small"}},
        })
    );
}

#[test]
fn inherited_paths_are_immutable() {
    let cases = [
        (
            json!({"web.url": "payload.url"}),
            json!({"web": {"url": "https://other.test"}}),
            r#"web.url: inherited path `web.url` is immutable: it holds "https://other.test", the claim would make it "https://x.test/a""#,
        ),
        (
            json!({"n": "payload.count"}),
            json!({"n": "2"}),
            r#"n: inherited path `n` is immutable: it holds "2", the claim would make it 2"#,
        ),
        (
            json!({"web.url": "payload.url"}),
            json!({"web": "flat"}),
            r#"web.url: inherited path `web` is immutable: it holds "flat", the claim would make it an object"#,
        ),
        (
            json!({"web": "payload.url"}),
            json!({"web": {"url": "https://x.test/a"}}),
            r#"web: inherited path `web` is immutable: it holds {"url":"https://x.test/a"}, the claim would make it "https://x.test/a""#,
        ),
        (
            json!({"meta": "payload.metadata"}),
            json!({"meta": {"model": {"name": "large"}}}),
            r#"meta: inherited path `meta.model.name` is immutable: it holds "large", the claim would make it "small""#,
        ),
    ];
    for (claims, inherited, want) in cases {
        assert_eq!(
            apply_err(&claims, &inherited),
            want,
            "{claims} on {inherited}"
        );
    }
}

#[test]
fn two_claims_of_one_step_cannot_disagree() {
    let claims = yaml("a: payload.metadata\na.lang: payload.status\n");
    assert_eq!(
        apply_err(&claims, &json!({})),
        r#"a.lang: `a.lang` is already claimed as "en" by this step; it cannot also be "ok""#
    );
}

#[test]
fn a_missing_source_fails_naming_the_claim() {
    let cases = [
        (
            json!({"web.url": "payload.link"}),
            json!({}),
            "web.url: source `payload.link` is missing (`payload` has no key `link`); a claim is never skipped",
        ),
        (
            json!({"x": "payload.url.host"}),
            json!({}),
            "x: source `payload.url.host` is missing (`payload.url` is a string, not an object); a claim is never skipped",
        ),
        (
            json!({"x": "context.origin"}),
            Value::Null,
            "x: source `context.origin` is missing (`context` is null, not an object); a claim is never skipped",
        ),
        (
            json!({"from": "payload.extra", "namespace": "ns"}),
            json!({}),
            "from: source `payload.extra` is missing (`payload` has no key `extra`); a claim is never skipped",
        ),
    ];
    for (claims, inherited, want) in cases {
        assert_eq!(apply_err(&claims, &inherited), want, "{claims}");
    }
}

#[test]
fn a_null_source_value_is_present_and_claimed() {
    let claims = compile(&json!({"x": "payload.none"}));
    match claims.apply(&json!({}), &json!({"none": null}), &json!({})) {
        Ok(v) => assert_eq!(v, json!({"x": null})),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn bulk_import_goes_under_its_namespace() {
    let claims = yaml("from: payload.metadata\nnamespace: whisper\n");
    let inherited = json!({"whisper": {"job": 1}});
    assert_eq!(
        applied(&claims, &inherited),
        json!({"whisper": {"job": 1, "lang": "en", "model": {"name": "small"}}})
    );
    let nested = json!({"from": "payload.metadata", "namespace": "media.whisper"});
    assert_eq!(
        applied(&nested, &json!({})),
        json!({"media": {"whisper": {"lang": "en", "model": {"name": "small"}}}})
    );
}

#[test]
fn bulk_import_from_the_whole_payload() {
    let claims = compile(&json!({"from": "payload", "namespace": "step1"}));
    match claims.apply(
        &Value::Null,
        &json!({"a": 1, "b": {"c": true}}),
        &Value::Null,
    ) {
        Ok(v) => assert_eq!(v, json!({"step1": {"a": 1, "b": {"c": true}}})),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn bulk_import_needs_an_object_and_keeps_immutability() {
    assert_eq!(
        apply_err(
            &json!({"from": "payload.url", "namespace": "ns"}),
            &json!({})
        ),
        "from: `payload.url` is a string; a bulk claim imports an object"
    );
    assert_eq!(
        apply_err(
            &json!({"from": "payload.metadata", "namespace": "ns"}),
            &json!({"ns": {"lang": "fr"}})
        ),
        r#"from: inherited path `ns.lang` is immutable: it holds "fr", the claim would make it "en""#
    );
}

#[test]
fn invalid_claims_are_rejected_at_compile() {
    let cases = [
        (
            json!("payload.url"),
            "`baggage` must be a mapping of durable paths to source paths, or `from` with `namespace`; found a string",
        ),
        (
            json!({"from": "payload.metadata"}),
            "a bulk claim needs `namespace`; imported keys are never placed at the root of the durable context",
        ),
        (
            json!({"namespace": "ns"}),
            "`namespace` needs `from`, the object to import",
        ),
        (
            json!({"from": "payload.metadata", "namespace": "ns", "web.url": "payload.url"}),
            "web.url: a bulk claim has only `from` and `namespace`; claim other paths in a step of their own",
        ),
        (
            json!({"from": "payload.metadata", "namespace": 3}),
            "namespace: `namespace` must be a string; found a number",
        ),
        (
            json!({"from": "payload.metadata", "namespace": ""}),
            "namespace: a durable path cannot be empty",
        ),
        (
            json!({"from": "payload.metadata", "namespace": "a..b"}),
            "namespace: durable path `a..b` has an empty segment",
        ),
        (
            json!({"from": "config.token", "namespace": "ns"}),
            "from: `config.token`: `config` cannot be used here; a path starts with payload or context",
        ),
        (
            json!({"web.url": 5}),
            "web.url: a source is a path such as `payload.url`; found a number",
        ),
        (
            json!({"web.url": "{payload.url}"}),
            "web.url: a source is a plain path, not a template; write `payload.url`",
        ),
        (
            json!({"web.url": "event.url"}),
            "web.url: `event.url` starts with `event`; a path starts with payload or context",
        ),
        (
            json!({"web.url": "payload..url"}),
            "web.url: `payload..url` has an empty segment",
        ),
        (
            json!({"web..url": "payload.url"}),
            "web..url: durable path `web..url` has an empty segment",
        ),
        (
            json!({".url": "payload.url"}),
            ".url: durable path `.url` has an empty segment",
        ),
        (
            json!({"web url": "payload.url"}),
            "web url: durable path `web url`: segment `web url` contains a space or a brace",
        ),
        (json!({"": "payload.url"}), "a durable path cannot be empty"),
    ];
    for (claims, want) in cases {
        match Claims::compile(&claims) {
            Ok(c) => panic!("expected an error for {claims}, compiled {c:?}"),
            Err(e) => assert_eq!(e.to_string(), want, "{claims}"),
        }
    }
}

#[test]
fn an_empty_mapping_claims_nothing() {
    let claims = compile(&json!({}));
    assert!(claims.is_empty());
    let inherited = json!({"a": 1});
    assert_eq!(applied(&json!({}), &inherited), inherited);
}

#[test]
fn an_inherited_context_that_is_not_an_object_is_an_error() {
    assert_eq!(
        apply_err(&json!({"a": "payload.url"}), &json!([1])),
        "the inherited context is an array, not an object"
    );
}

#[test]
fn targets_and_sources_are_listed_in_order() {
    let claims = compile(&yaml("b.x: payload.url\na: context.y\n"));
    assert_eq!(claims.targets(), ["b.x", "a"]);
    assert_eq!(claims.sources(), ["payload.url", "context.y"]);
    let bulk = compile(&json!({"namespace": "whisper", "from": "payload.metadata"}));
    assert_eq!(bulk.targets(), ["whisper"]);
    assert_eq!(bulk.sources(), ["payload.metadata"]);
}

#[test]
fn long_values_are_shortened_in_messages() {
    let long = "x".repeat(100);
    let claims = compile(&json!({"t": "payload.text"}));
    let inherited = json!({"t": "short"});
    match claims.apply(&inherited, &json!({ "text": long }), &inherited) {
        Ok(v) => panic!("applied: {v}"),
        Err(e) => assert_eq!(
            e.to_string(),
            format!(
                r#"t: inherited path `t` is immutable: it holds "short", the claim would make it "{}…"#,
                "x".repeat(59)
            )
        ),
    }
}
