//! Protocol v2 envelopes: the request ductile writes to a plugin's stdin and the
//! response it reads back from stdout.
//!
//! Owns: request serialization (compact JSON, fixed field order) and response
//! decoding, which is lenient where the spec says so (logs, stopwatch sub-spans,
//! defaults) and strict everywhere else (status, result, error, events, state).
//! Decoding happens once, into serde-derived fields checked by a rule pass, and
//! only after a pass over the text has checked what it would build (events,
//! JSON values, nesting) against [`ResponseLimits`].
//! Must not: run processes or interpret events, facts or retries; callers decide
//! what a decoded response means.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod measure;

use measure::measure;

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
mod tests;
