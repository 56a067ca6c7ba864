//! Protocol v2 envelopes: the request ductile writes to a plugin's stdin and the
//! response it reads back from stdout.
//!
//! Owns: request serialization (compact JSON, fixed field order) and response
//! decoding, which is lenient where the spec says so (logs, stopwatch sub-spans,
//! defaults) and strict everywhere else (status, result, error, events, state).
//! Must not: run processes or interpret events, facts or retries; callers decide
//! what a decoded response means.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The wire protocol this ductile speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The request envelope written to the plugin's stdin.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The job this invocation belongs to.
    pub job_id: &'a str,
    /// The command to run.
    pub command: &'a str,
    /// The instance's static config, interpolated.
    pub config: &'a Value,
    /// The compatibility-view state row (`{}` when none).
    pub state: &'a Value,
    /// Pipeline baggage (`{}` when none).
    pub context: &'a Value,
    /// The triggering event; only for `handle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a Value>,
    /// Informational RFC 3339 deadline; ductile enforces the real one.
    pub deadline_at: String,
}

/// Serializes `request` as compact JSON, fields in declaration order.
pub fn encode(request: &Request<'_>) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(request)
}

/// A decoded, validated response envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// What the plugin says happened.
    pub status: ResponseStatus,
    /// Summary; always present (non-null) when `status` is ok.
    pub result: Option<Value>,
    /// Diagnostic; always present when `status` is error.
    pub error: Option<String>,
    /// The plugin's view of whether retrying can help (default true).
    pub retry: bool,
    /// Emitted events, in order.
    pub events: Vec<Event>,
    /// The emitted snapshot, if any.
    pub state_updates: Option<Map<String, Value>>,
    /// Well-formed log lines (malformed ones are dropped).
    pub logs: Vec<LogLine>,
    /// Stopwatch sub-spans kept (objects only, at most the manifest's cap).
    pub stopwatch_subs: Vec<Value>,
    /// Sub-span objects dropped because they exceeded the cap.
    pub subs_dropped: usize,
}

/// The plugin's own verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    /// `"status": "ok"`.
    Ok,
    /// `"status": "error"`.
    Error,
}

/// One emitted event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Routing key; non-empty.
    pub event_type: String,
    /// Arbitrary payload (`{}` when omitted).
    pub payload: Value,
    /// Optional dedupe key inherited by downstream jobs.
    pub dedupe_key: Option<String>,
}

/// One log line from the response's `logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Level as written (`info` when omitted).
    pub level: String,
    /// The message.
    pub message: String,
}

/// Why a plugin's stdout is not an acceptable response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Nothing but whitespace on stdout.
    Empty,
    /// stdout is not (exactly one) JSON document.
    NotJson {
        /// The parser's one-line explanation.
        detail: String,
    },
    /// stdout is JSON but not an object.
    NotObject {
        /// What it was instead (`array`, `string`, ...).
        found: &'static str,
    },
    /// The object breaks an envelope rule.
    Invalid {
        /// Which rule, naming the field.
        detail: String,
    },
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More events than [`ResponseLimits::max_events`].
    TooManyEvents {
        /// Events in the response.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// More JSON values than [`ResponseLimits::max_values`].
    TooManyValues {
        /// JSON values in the response (every scalar, array and object).
        count: usize,
        /// The cap.
        max: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Empty => write!(f, "plugin wrote nothing to stdout"),
            ProtocolError::NotJson { detail } => write!(f, "plugin stdout is not JSON: {detail}"),
            ProtocolError::NotObject { found } => {
                write!(f, "plugin stdout is JSON but not an object (got {found})")
            }
            ProtocolError::Invalid { detail } => write!(f, "{detail}"),
            ProtocolError::TooDeep => write!(f, "response nests deeper than {MAX_DEPTH} levels"),
            ProtocolError::TooManyEvents { count, max } => {
                write!(f, "response has {count} events, over the cap of {max}")
            }
            ProtocolError::TooManyValues { count, max } => {
                write!(
                    f,
                    "response holds {count} JSON values, over the cap of {max}"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

fn invalid(detail: String) -> ProtocolError {
    ProtocolError::Invalid { detail }
}

/// Deepest nesting of arrays and objects accepted in a response (serde_json's
/// own recursion limit, 128, is never reached).
pub const MAX_DEPTH: usize = 64;

/// What one response may cost once decoded. The byte cap on stdout bounds the
/// text, not its decoded form: a few bytes of JSON (`0,`) become a tree node of
/// ~80 bytes, so counts are checked on the text before anything is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Stopwatch sub-spans kept (the manifest's `stopwatch.max_subs`); the rest
    /// are dropped and counted.
    pub max_subs: usize,
    /// Events accepted; a response with more is a protocol error (default 1000).
    pub max_events: usize,
    /// JSON values accepted in the whole response, every scalar, array and
    /// object counted (default 250,000).
    pub max_values: usize,
}

impl Default for ResponseLimits {
    fn default() -> ResponseLimits {
        ResponseLimits {
            max_subs: crate::plugin::manifest::DEFAULT_MAX_SUBS,
            max_events: 1000,
            max_values: 250_000,
        }
    }
}

impl ResponseLimits {
    /// The default limits with the manifest's sub-span cap.
    pub fn with_subs(max_subs: usize) -> ResponseLimits {
        ResponseLimits {
            max_subs,
            ..ResponseLimits::default()
        }
    }
}

/// The envelope as written: every field keeps its JSON value (null reads as
/// absent) so the rule pass can say exactly what was wrong with it.
#[derive(Deserialize)]
struct Wire {
    status: Option<Value>,
    result: Option<Value>,
    error: Option<Value>,
    retry: Option<Value>,
    events: Option<Value>,
    state_updates: Option<Value>,
    logs: Option<Value>,
    ductile_stopwatch_subs: Option<Value>,
}

/// Decodes a plugin's stdout into a [`Response`] within `limits`.
pub fn decode(stdout: &[u8], limits: &ResponseLimits) -> Result<Response, ProtocolError> {
    let Some(&first) = stdout.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ProtocolError::Empty);
    };
    let shape = measure(stdout)?;
    if shape.events > limits.max_events {
        return Err(ProtocolError::TooManyEvents {
            count: shape.events,
            max: limits.max_events,
        });
    }
    if shape.values > limits.max_values {
        return Err(ProtocolError::TooManyValues {
            count: shape.values,
            max: limits.max_values,
        });
    }
    let not_json = |e: serde_json::Error| ProtocolError::NotJson {
        detail: e.to_string(),
    };
    if first != b'{' {
        serde_json::from_slice::<serde::de::IgnoredAny>(stdout).map_err(not_json)?;
        let found = match first {
            b'[' => "array",
            b'"' => "string",
            b't' | b'f' => "boolean",
            b'n' => "null",
            _ => "number",
        };
        return Err(ProtocolError::NotObject { found });
    }
    let wire: Wire = serde_json::from_slice(stdout).map_err(|e| match e.classify() {
        // Well-formed JSON that no envelope can be (a duplicated field).
        serde_json::error::Category::Data => invalid(format!("response is not an envelope: {e}")),
        _ => not_json(e),
    })?;

    let status = match wire.status {
        None => {
            return Err(invalid(
                "response has no `status` (must be \"ok\" or \"error\")".to_string(),
            ));
        }
        Some(Value::String(s)) if s == "ok" => ResponseStatus::Ok,
        Some(Value::String(s)) if s == "error" => ResponseStatus::Error,
        Some(v) => {
            return Err(invalid(format!(
                "response `status` must be \"ok\" or \"error\", got {}",
                show(&v)
            )));
        }
    };
    let result = wire.result;
    if status == ResponseStatus::Ok && result.is_none() {
        return Err(invalid(
            "response has status \"ok\" but no `result`".to_string(),
        ));
    }
    let error = match wire.error {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(v) if status == ResponseStatus::Error => {
            return Err(invalid(format!(
                "response `error` must be a string, got {}",
                show(&v)
            )));
        }
        // An ok response's stray non-string `error` carries no meaning; ignore it.
        Some(_) => None,
    };
    if status == ResponseStatus::Error && error.is_none() {
        return Err(invalid(
            "response has status \"error\" but no `error` message".to_string(),
        ));
    }
    let retry = match wire.retry {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(v) => {
            return Err(invalid(format!(
                "response `retry` must be true or false, got {}",
                show(&v)
            )));
        }
    };
    let events = decode_events(wire.events)?;
    // `measure` knows the key only as written; `"ev\u0065nts"` is caught here.
    if events.len() > limits.max_events {
        return Err(ProtocolError::TooManyEvents {
            count: events.len(),
            max: limits.max_events,
        });
    }
    let state_updates = match wire.state_updates {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(v) => {
            return Err(invalid(format!(
                "response `state_updates` must be an object, got {}",
                kind_of(&v)
            )));
        }
    };
    let logs = decode_logs(wire.logs);
    let (stopwatch_subs, subs_dropped) = decode_subs(wire.ductile_stopwatch_subs, limits.max_subs);

    Ok(Response {
        status,
        result,
        error,
        retry,
        events,
        state_updates,
        logs,
        stopwatch_subs,
        subs_dropped,
    })
}

/// Counts found by [`measure`].
struct Shape {
    /// Every JSON value: scalars, arrays and objects (object keys not counted).
    values: usize,
    /// Elements of the top-level `events` array.
    events: usize,
}

/// One pass over the text, before anything is allocated: counts the values and
/// the events and refuses nesting deeper than [`MAX_DEPTH`]. Not a validator:
/// malformed text is left for the parser to describe.
fn measure(text: &[u8]) -> Result<Shape, ProtocolError> {
    let mut shape = Shape {
        values: 0,
        events: 0,
    };
    let mut open: Vec<u8> = Vec::with_capacity(MAX_DEPTH);
    // The innermost open container is an object whose next string is a key.
    let mut expect_key = false;
    // The last key of the top-level object was `events`.
    let mut events_key = false;
    // The top-level `events` array is open.
    let mut in_events = false;
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        i += 1;
        let is_value = match c {
            b'{' | b'[' => true,
            b'"' => {
                let start = i;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                let end = i.min(text.len());
                i += 1;
                if expect_key {
                    expect_key = false;
                    if open.len() == 1 {
                        events_key = &text[start..end] == b"events";
                    }
                    false
                } else {
                    true
                }
            }
            b'}' | b']' => {
                if in_events && open.len() == 2 {
                    in_events = false;
                }
                open.pop();
                expect_key = false;
                false
            }
            b',' => {
                expect_key = open.last() == Some(&b'{');
                false
            }
            b':' | b' ' | b'\t' | b'\n' | b'\r' => false,
            _ => {
                // A number or literal: skip to its end.
                while i < text.len() && !b",]}: \t\n\r\"[{".contains(&text[i]) {
                    i += 1;
                }
                true
            }
        };
        if !is_value {
            continue;
        }
        shape.values += 1;
        if in_events && open.len() == 2 {
            shape.events += 1;
        }
        if c == b'{' || c == b'[' {
            if open.len() == MAX_DEPTH {
                return Err(ProtocolError::TooDeep);
            }
            in_events |= c == b'[' && open.len() == 1 && events_key;
            open.push(c);
            expect_key = c == b'{';
        }
    }
    Ok(shape)
}

fn decode_events(raw: Option<Value>) -> Result<Vec<Event>, ProtocolError> {
    let items = match raw {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(invalid(format!(
                "response `events` must be an array, got {}",
                kind_of(&v)
            )));
        }
    };
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut ev) = item else {
            return Err(invalid(format!(
                "response events[{i}] must be an object, got {}",
                kind_of(&item)
            )));
        };
        let event_type = match ev.remove("type") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            _ => {
                return Err(invalid(format!(
                    "response events[{i}] has no `type` (a non-empty string is required)"
                )));
            }
        };
        let payload = match ev.remove("payload") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v) => v,
        };
        let dedupe_key = match ev.remove("dedupe_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                return Err(invalid(format!(
                    "response events[{i}].dedupe_key must be a string, got {}",
                    show(&v)
                )));
            }
        };
        events.push(Event {
            event_type,
            payload,
            dedupe_key,
        });
    }
    Ok(events)
}

/// Logs are advisory: anything that is not `{level?, message}` is dropped, never fatal.
fn decode_logs(raw: Option<Value>) -> Vec<LogLine> {
    let Some(Value::Array(items)) = raw else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Object(mut line) = item else {
                return None;
            };
            let message = match line.remove("message") {
                Some(Value::String(s)) => s,
                _ => return None,
            };
            let level = match line.remove("level") {
                None | Some(Value::Null) => "info".to_string(),
                Some(Value::String(s)) => s,
                Some(_) => return None,
            };
            Some(LogLine { level, message })
        })
        .collect()
}

/// Sub-spans are advisory: non-objects vanish silently; objects past the cap are counted.
fn decode_subs(raw: Option<Value>, max_subs: usize) -> (Vec<Value>, usize) {
    let Some(Value::Array(items)) = raw else {
        return (Vec::new(), 0);
    };
    let mut kept = Vec::new();
    let mut dropped = 0;
    for item in items.into_iter().filter(Value::is_object) {
        if kept.len() < max_subs {
            kept.push(item);
        } else {
            dropped += 1;
        }
    }
    (kept, dropped)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Renders a scalar for a message (JSON text, shortened); collections by kind.
fn show(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => kind_of(v).to_string(),
        scalar => {
            let text = scalar.to_string();
            if text.chars().count() > 60 {
                let short: String = text.chars().take(60).collect();
                format!("{short}…")
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
