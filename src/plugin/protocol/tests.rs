use super::*;
use serde_json::json;

fn ok(text: &str) -> Response {
    match decode(text.as_bytes(), &ResponseLimits::with_subs(32)) {
        Ok(r) => r,
        Err(e) => panic!("expected a response for {text:?}, got: {e}"),
    }
}

fn check_err(text: &str, expected: &str) {
    match decode(text.as_bytes(), &ResponseLimits::with_subs(32)) {
        Ok(r) => panic!("expected error {expected:?} for {text:?}, got {r:?}"),
        Err(e) => assert_eq!(e.to_string(), expected, "input: {text}"),
    }
}

#[test]
fn request_serializes_compactly_in_field_order() {
    let config = json!({"message": "hi"});
    let empty = json!({});
    let event = json!({"type": "x", "payload": {}});
    let mut req = Request {
        protocol: PROTOCOL_VERSION,
        job_id: "j1",
        command: "poll",
        config: &config,
        state: &empty,
        context: &empty,
        event: None,
        deadline_at: "2026-01-01T00:00:00Z".to_string(),
    };
    let text = match encode(&req) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        text,
        r#"{"protocol":2,"job_id":"j1","command":"poll","config":{"message":"hi"},"state":{},"context":{},"deadline_at":"2026-01-01T00:00:00Z"}"#
    );
    req.event = Some(&event);
    let text = match encode(&req) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => panic!("{e}"),
    };
    assert!(
        text.contains(r#""context":{},"event":{"type":"x","payload":{}},"deadline_at""#),
        "{text}"
    );
}

#[test]
fn full_response_decodes() {
    let r = ok(r#"  {"status":"ok","result":"did it","retry":false,
            "events":[{"type":"a.b","payload":{"n":1},"dedupe_key":"k"},{"type":"c"}],
            "state_updates":{"cursor":"x"},
            "logs":[{"level":"warn","message":"careful"},{"message":"plain"}],
            "ductile_stopwatch_subs":[{"name":"s","dur_ns":1}],
            "unknown_field": 1}
            "#);
    assert_eq!(r.status, ResponseStatus::Ok);
    assert_eq!(r.result, Some(json!("did it")));
    assert_eq!(r.error, None);
    assert!(!r.retry);
    assert_eq!(
        r.events,
        vec![
            Event {
                event_type: "a.b".into(),
                payload: json!({"n": 1}),
                dedupe_key: Some("k".into())
            },
            Event {
                event_type: "c".into(),
                payload: json!({}),
                dedupe_key: None
            },
        ]
    );
    assert_eq!(
        r.state_updates.map(Value::Object),
        Some(json!({"cursor": "x"}))
    );
    assert_eq!(
        r.logs,
        vec![
            LogLine {
                level: "warn".into(),
                message: "careful".into()
            },
            LogLine {
                level: "info".into(),
                message: "plain".into()
            },
        ]
    );
    assert_eq!(r.stopwatch_subs, vec![json!({"name": "s", "dur_ns": 1})]);
    assert_eq!(r.subs_dropped, 0);
}

#[test]
fn defaults_apply() {
    let r = ok(r#"{"status":"ok","result":{"n":1}}"#);
    assert!(r.retry);
    assert!(r.events.is_empty());
    assert_eq!(r.state_updates, None);
    assert!(r.logs.is_empty());
    assert_eq!(r.result, Some(json!({"n": 1})));
    let r = ok(r#"{"status":"error","error":"boom"}"#);
    assert_eq!(r.status, ResponseStatus::Error);
    assert_eq!(r.error.as_deref(), Some("boom"));
    assert!(r.retry);
    assert_eq!(r.result, None);
    let r = ok(
        r#"{"status":"ok","result":"x","events":null,"state_updates":null,"retry":null,"logs":"nope","ductile_stopwatch_subs":{"a":1}}"#,
    );
    assert!(r.events.is_empty() && r.state_updates.is_none() && r.retry);
    assert!(r.logs.is_empty() && r.stopwatch_subs.is_empty());
}

#[test]
fn malformed_logs_are_dropped() {
    let r = ok(
        r#"{"status":"ok","result":"x","logs":[1,"s",{"level":"info"},{"level":3,"message":"m"},{"message":5},{"level":"error","message":"kept"}]}"#,
    );
    assert_eq!(
        r.logs,
        vec![LogLine {
            level: "error".into(),
            message: "kept".into()
        }]
    );
}

#[test]
fn stopwatch_subs_are_capped_head_first() {
    let subs: Vec<Value> = (0..40)
        .map(|i| json!({"name": format!("s{i}"), "dur_ns": i}))
        .collect();
    let mut with_junk = vec![json!(1), json!("x"), json!(null)];
    with_junk.extend(subs);
    let text =
        json!({"status": "ok", "result": "x", "ductile_stopwatch_subs": with_junk}).to_string();
    let r = match decode(text.as_bytes(), &ResponseLimits::with_subs(32)) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.stopwatch_subs.len(), 32);
    assert_eq!(r.stopwatch_subs[0]["name"], "s0");
    assert_eq!(r.stopwatch_subs[31]["name"], "s31");
    assert_eq!(r.subs_dropped, 8);
    let r = match decode(text.as_bytes(), &ResponseLimits::with_subs(64)) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!((r.stopwatch_subs.len(), r.subs_dropped), (40, 0));
}

#[test]
fn error_texts() {
    let cases = [
        ("", "plugin wrote nothing to stdout"),
        (" \n\t ", "plugin wrote nothing to stdout"),
        (
            "hello",
            "plugin stdout is not JSON: expected value at line 1 column 1",
        ),
        (
            r#"{"status":"ok","result":"x"} {"again":1}"#,
            "plugin stdout is not JSON: trailing characters at line 1 column 30",
        ),
        (
            r#"{"status":"ok""#,
            "plugin stdout is not JSON: EOF while parsing an object at line 1 column 14",
        ),
        (
            "[1,2]",
            "plugin stdout is JSON but not an object (got array)",
        ),
        (
            "\"ok\"",
            "plugin stdout is JSON but not an object (got string)",
        ),
        (
            "{}",
            "response has no `status` (must be \"ok\" or \"error\")",
        ),
        (
            r#"{"status":"done"}"#,
            "response `status` must be \"ok\" or \"error\", got \"done\"",
        ),
        (
            r#"{"status":1}"#,
            "response `status` must be \"ok\" or \"error\", got 1",
        ),
        (
            r#"{"status":"ok"}"#,
            "response has status \"ok\" but no `result`",
        ),
        (
            r#"{"status":"ok","result":null}"#,
            "response has status \"ok\" but no `result`",
        ),
        (
            r#"{"status":"error"}"#,
            "response has status \"error\" but no `error` message",
        ),
        (
            r#"{"status":"error","error":{"a":1}}"#,
            "response `error` must be a string, got object",
        ),
        (
            r#"{"status":"ok","result":"x","retry":"no"}"#,
            "response `retry` must be true or false, got \"no\"",
        ),
        (
            r#"{"status":"ok","result":"x","events":{}}"#,
            "response `events` must be an array, got object",
        ),
        (
            r#"{"status":"ok","result":"x","events":[3]}"#,
            "response events[0] must be an object, got number",
        ),
        (
            r#"{"status":"ok","result":"x","events":[{"type":"a"},{"payload":{}}]}"#,
            "response events[1] has no `type` (a non-empty string is required)",
        ),
        (
            r#"{"status":"ok","result":"x","events":[{"type":""}]}"#,
            "response events[0] has no `type` (a non-empty string is required)",
        ),
        (
            r#"{"status":"ok","result":"x","events":[{"type":7}]}"#,
            "response events[0] has no `type` (a non-empty string is required)",
        ),
        (
            r#"{"status":"ok","result":"x","events":[{"type":"a","dedupe_key":5}]}"#,
            "response events[0].dedupe_key must be a string, got 5",
        ),
        (
            r#"{"status":"ok","result":"x","state_updates":[1]}"#,
            "response `state_updates` must be an object, got array",
        ),
        (
            r#"{"status":"ok","result":"x","state_updates":"s"}"#,
            "response `state_updates` must be an object, got string",
        ),
    ];
    for (text, expected) in cases {
        check_err(text, expected);
    }
}

#[test]
fn ok_with_stray_error_field_is_accepted() {
    let r = ok(r#"{"status":"ok","result":"x","error":false}"#);
    assert_eq!(r.error, None);
    let r = ok(r#"{"status":"ok","result":"x","error":"note"}"#);
    assert_eq!(r.error.as_deref(), Some("note"));
}

#[test]
fn long_scalars_are_shortened_in_messages() {
    let long = "x".repeat(200);
    let text = format!(r#"{{"status":"{long}"}}"#);
    let err = match decode(text.as_bytes(), &ResponseLimits::with_subs(32)) {
        Ok(r) => panic!("{r:?}"),
        Err(e) => e.to_string(),
    };
    assert!(err.ends_with("…"), "{err}");
    assert!(err.len() < 150, "{err}");
}

fn limits(max_events: usize, max_values: usize) -> ResponseLimits {
    ResponseLimits {
        max_subs: 32,
        max_events,
        max_values,
    }
}

fn check_err_with(text: &str, limits: &ResponseLimits, expected: &str) {
    match decode(text.as_bytes(), limits) {
        Ok(r) => panic!("expected error {expected:?}, got {r:?}"),
        Err(e) => assert_eq!(e.to_string(), expected),
    }
}

fn events_doc(n: usize) -> String {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "t", "payload": {"i": i, "deep": [[i]]}}))
        .collect();
    json!({"status": "ok", "result": "x", "events": events}).to_string()
}

#[test]
fn events_over_the_cap_fail_naming_count_and_cap() {
    let at_cap = match decode(events_doc(1000).as_bytes(), &ResponseLimits::default()) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(at_cap.events.len(), 1000);
    check_err_with(
        &events_doc(1001),
        &ResponseLimits::default(),
        "response has 1001 events, over the cap of 1000",
    );
    check_err_with(
        &events_doc(3),
        &limits(2, 1000),
        "response has 3 events, over the cap of 2",
    );
    // A key spelled with an escape is the same key; the decoded list is checked too.
    check_err_with(
        r#"{"status":"ok","result":"x","ev\u0065nts":[{"type":"a"},{"type":"b"},{"type":"c"}]}"#,
        &limits(2, 1000),
        "response has 3 events, over the cap of 2",
    );
    // Nested `events` keys and strings are not the envelope's events.
    let r = match decode(
            br#"{"status":"ok","result":{"events":[1,2,3]},"events":[{"type":"a","payload":{"events":[1,2,3]}}],"note":"events"}"#,
            &limits(1, 1000),
        ) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
    assert_eq!(r.events.len(), 1);
}

#[test]
fn values_over_the_cap_fail_before_anything_is_built() {
    let text = json!({"status": "ok", "result": "x", "state_updates": {"list": [1, 2, 3, "a", null, true]}}).to_string();
    // The envelope, status, result, state_updates, list and its 6 items.
    let r = decode(text.as_bytes(), &limits(1000, 11));
    assert!(r.is_ok(), "{r:?}");
    check_err_with(
        &text,
        &limits(1000, 10),
        "response holds 11 JSON values, over the cap of 10",
    );
    // Escapes, brackets and quotes inside strings are one value each.
    let text = r#"{"status":"ok","result":"[[{\"x\\\"]}","logs":[{"message":"a,b:c"}]}"#;
    check_err_with(
        text,
        &limits(1000, 5),
        "response holds 6 JSON values, over the cap of 5",
    );
    let big = format!(r#"{{"status":"ok","result":[{}0]}}"#, "0,".repeat(300_000));
    check_err_with(
        &big,
        &ResponseLimits::default(),
        "response holds 300004 JSON values, over the cap of 250000",
    );
}

#[test]
fn deep_nesting_is_a_protocol_error_never_a_stack_overflow() {
    let nest = |n: usize| {
        format!(
            r#"{{"status":"ok","result":{}1{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    // The envelope is one level, so 63 more fit.
    let r = match decode(nest(63).as_bytes(), &ResponseLimits::default()) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    assert!(r.result.is_some());
    for n in [64, 200, 1_000_000] {
        check_err_with(
            &nest(n),
            &ResponseLimits::default(),
            "response nests deeper than 64 levels",
        );
    }
    // Objects count as levels too, and brackets inside strings do not.
    let objects = format!(
        r#"{{"status":"ok","result":{}1{}}}"#,
        r#"{"a":"#.repeat(64),
        "}".repeat(64)
    );
    check_err_with(
        &objects,
        &ResponseLimits::default(),
        "response nests deeper than 64 levels",
    );
    let quoted = format!(r#"{{"status":"ok","result":"{}"}}"#, "[".repeat(1000));
    assert!(decode(quoted.as_bytes(), &ResponseLimits::default()).is_ok());
}

#[test]
fn a_duplicated_field_is_not_an_envelope() {
    check_err(
        r#"{"status":"ok","result":"x","status":"error"}"#,
        "response is not an envelope: duplicate field `status` at line 1 column 36",
    );
}
