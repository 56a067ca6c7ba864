//! Protocol v2 envelopes: the request ductile writes to a plugin's stdin and the
//! response it reads back from stdout.
//!
//! Owns: request serialization (compact JSON, fixed field order) and response
//! decoding, which is lenient where the spec says so (logs, stopwatch sub-spans,
//! defaults) and strict everywhere else (status, result, error, events, state).
//! Must not: run processes or interpret events, facts or retries; callers decide
//! what a decoded response means.

use std::fmt;

use serde::Serialize;
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
        }
    }
}

impl std::error::Error for ProtocolError {}

fn invalid(detail: String) -> ProtocolError {
    ProtocolError::Invalid { detail }
}

/// Decodes a plugin's stdout into a [`Response`], keeping at most `max_subs` sub-spans.
pub fn decode(stdout: &[u8], max_subs: usize) -> Result<Response, ProtocolError> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(ProtocolError::Empty);
    }
    let value: Value = serde_json::from_slice(stdout).map_err(|e| ProtocolError::NotJson {
        detail: e.to_string(),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(ProtocolError::NotObject {
            found: kind_of(&value),
        });
    };

    let status = match obj.get("status") {
        None | Some(Value::Null) => {
            return Err(invalid(
                "response has no `status` (must be \"ok\" or \"error\")".to_string(),
            ));
        }
        Some(Value::String(s)) if s == "ok" => ResponseStatus::Ok,
        Some(Value::String(s)) if s == "error" => ResponseStatus::Error,
        Some(v) => {
            return Err(invalid(format!(
                "response `status` must be \"ok\" or \"error\", got {}",
                show(v)
            )));
        }
    };
    let result = match obj.remove("result") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    };
    if status == ResponseStatus::Ok && result.is_none() {
        return Err(invalid(
            "response has status \"ok\" but no `result`".to_string(),
        ));
    }
    let error = match obj.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) if status == ResponseStatus::Error => {
            return Err(invalid(format!(
                "response `error` must be a string, got {}",
                show(v)
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
    let retry = match obj.get("retry") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(invalid(format!(
                "response `retry` must be true or false, got {}",
                show(v)
            )));
        }
    };
    let events = decode_events(obj.remove("events"))?;
    let state_updates = match obj.remove("state_updates") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(v) => {
            return Err(invalid(format!(
                "response `state_updates` must be an object, got {}",
                kind_of(&v)
            )));
        }
    };
    let logs = decode_logs(obj.remove("logs"));
    let (stopwatch_subs, subs_dropped) =
        decode_subs(obj.remove("ductile_stopwatch_subs"), max_subs);

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
        match decode(text.as_bytes(), 32) {
            Ok(r) => r,
            Err(e) => panic!("expected a response for {text:?}, got: {e}"),
        }
    }

    fn check_err(text: &str, expected: &str) {
        match decode(text.as_bytes(), 32) {
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
        let r = match decode(text.as_bytes(), 32) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.stopwatch_subs.len(), 32);
        assert_eq!(r.stopwatch_subs[0]["name"], "s0");
        assert_eq!(r.stopwatch_subs[31]["name"], "s31");
        assert_eq!(r.subs_dropped, 8);
        let r = match decode(text.as_bytes(), 64) {
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
        let err = match decode(text.as_bytes(), 32) {
            Ok(r) => panic!("{r:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err.ends_with("…"), "{err}");
        assert!(err.len() < 150, "{err}");
    }
}
