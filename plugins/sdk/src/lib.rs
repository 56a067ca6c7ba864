//! Write a ductile plugin in Rust: protocol v2 in one file.
//!
//! A plugin is an executable that reads one JSON request on stdin, writes one
//! JSON response on stdout and exits. This crate reads the request (fully, so
//! the writer never blocks on a full pipe), hands it to your handler and writes
//! the [`Response`] you build back as one compact JSON line:
//!
//! ```no_run
//! use ductile_plugin::{Request, Response, run};
//!
//! fn handle(req: &Request) -> Response {
//!     match req.command.as_str() {
//!         "health" => Response::ok("healthy"),
//!         "poll" => Response::ok("polled")
//!             .event("greet.polled", serde_json::json!({"message": "hi"})),
//!         other => Response::unknown_command(other, &["poll", "health"]),
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     run(handle)
//! }
//! ```
//!
//! The file depends on `serde` (derive) and `serde_json` only, so it can be
//! copied into a plugin that lives outside the ductile repository.

use std::fmt;
use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value};

/// The wire protocol this SDK speaks.
pub const PROTOCOL_VERSION: u64 = 2;

/// Exit status for a permanent configuration failure (EX_CONFIG): ductile never
/// retries it, whatever the response says.
pub const EX_CONFIG: u8 = 78;

/// Largest request read from stdin; ductile's own are far smaller.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024 * 1024;

/// The request envelope ductile writes to the plugin's stdin.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    /// The protocol version ductile speaks (always 2 here).
    pub protocol: u64,
    /// The job this invocation belongs to.
    #[serde(default)]
    pub job_id: String,
    /// The command to run (`poll`, `handle`, `health`, `init` or a declared one).
    pub command: String,
    /// The instance's static config, already interpolated.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// The compatibility view: the last snapshot, `{}` when none.
    #[serde(default = "empty_object")]
    pub state: Value,
    /// Pipeline baggage, `{}` when none.
    #[serde(default = "empty_object")]
    pub context: Value,
    /// The triggering event (`{type, payload, ...}`), only for `handle`.
    #[serde(default)]
    pub event: Option<Value>,
    /// Informational RFC 3339 deadline; ductile enforces the real one.
    #[serde(default)]
    pub deadline_at: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Why stdin did not hold a request this plugin can answer.
#[derive(Debug)]
pub enum RequestError {
    /// stdin could not be read.
    Read(io::Error),
    /// stdin held more than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// stdin is not a request envelope.
    NotJson(String),
    /// The request speaks another protocol version.
    Protocol(u64),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Read(e) => write!(f, "cannot read the request from stdin: {e}"),
            RequestError::TooLarge => {
                write!(f, "the request is larger than {MAX_REQUEST_BYTES} bytes")
            }
            RequestError::NotJson(e) => write!(f, "stdin is not a protocol request: {e}"),
            RequestError::Protocol(v) => write!(
                f,
                "unsupported protocol {v}: this plugin speaks protocol {PROTOCOL_VERSION}"
            ),
        }
    }
}

impl std::error::Error for RequestError {}

impl Request {
    /// Parses a request envelope and checks its protocol version.
    pub fn from_slice(bytes: &[u8]) -> Result<Request, RequestError> {
        let req: Request =
            serde_json::from_slice(bytes).map_err(|e| RequestError::NotJson(e.to_string()))?;
        if req.protocol != PROTOCOL_VERSION {
            return Err(RequestError::Protocol(req.protocol));
        }
        Ok(req)
    }

    /// Reads all of `input` (stdin in a plugin) and parses it.
    pub fn read_from(input: impl Read) -> Result<Request, RequestError> {
        let mut bytes = Vec::new();
        input
            .take(MAX_REQUEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(RequestError::Read)?;
        if bytes.len() as u64 > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge);
        }
        Request::from_slice(&bytes)
    }

    /// One config value, if set and not null.
    pub fn config(&self, key: &str) -> Option<&Value> {
        self.config.get(key).filter(|v| !v.is_null())
    }

    /// A config string, if set to one.
    pub fn config_str(&self, key: &str) -> Option<&str> {
        self.config(key).and_then(Value::as_str)
    }

    /// The triggering event's type, for `handle`.
    pub fn event_type(&self) -> Option<&str> {
        self.event.as_ref()?.get("type")?.as_str()
    }

    /// The triggering event's payload, for `handle` (`None` when absent or not an object).
    pub fn payload(&self) -> Option<&Map<String, Value>> {
        self.event.as_ref()?.get("payload")?.as_object()
    }

    /// A named input: the event payload's field first, then the pipeline's
    /// baggage (spec: payload is step-specific, context the accumulated fallback).
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.payload()
            .and_then(|p| p.get(name))
            .filter(|v| !v.is_null())
            .or_else(|| self.context.get(name).filter(|v| !v.is_null()))
    }

    /// A named input as text: strings as they are, numbers and booleans rendered.
    pub fn value_text(&self, name: &str) -> Option<String> {
        match self.value(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// One emitted event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Routing key, `<plugin>.<past_tense_verb>` by convention.
    pub event_type: String,
    /// The payload (an object by convention).
    pub payload: Value,
    /// Optional dedupe key inherited by downstream jobs.
    pub dedupe_key: Option<String>,
}

impl Event {
    /// An event without a dedupe key.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Event {
        Event {
            event_type: event_type.into(),
            payload,
            dedupe_key: None,
        }
    }

    /// The same event with a dedupe key.
    pub fn dedupe(mut self, key: impl Into<String>) -> Event {
        self.dedupe_key = Some(key.into());
        self
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(self.event_type.clone()));
        m.insert("payload".into(), self.payload.clone());
        if let Some(k) = &self.dedupe_key {
            m.insert("dedupe_key".into(), Value::String(k.clone()));
        }
        Value::Object(m)
    }
}

/// Log levels ductile stores with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

impl Level {
    /// The level as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// The response envelope, built with chained calls and written by [`run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    ok: bool,
    result: Value,
    error: Option<String>,
    retry: Option<bool>,
    /// Emitted events, in order.
    pub events: Vec<Event>,
    /// The snapshot, if this command emits one.
    pub state_updates: Option<Map<String, Value>>,
    logs: Vec<(Level, String)>,
    subs: Vec<Span>,
}

impl Response {
    /// Success with a short summary (`result` is required on ok).
    pub fn ok(result: impl Into<Value>) -> Response {
        Response {
            ok: true,
            result: result.into(),
            error: None,
            retry: None,
            events: Vec::new(),
            state_updates: None,
            logs: Vec::new(),
            subs: Vec::new(),
        }
    }

    /// A failure that retrying may fix (network down, 5xx, a busy resource).
    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: Value::Null,
            error: Some(message.into()),
            ..Response::ok(Value::Null)
        }
    }

    /// A failure that retrying the same request cannot fix (bad config,
    /// invalid input): `retry: false`.
    pub fn permanent(message: impl Into<String>) -> Response {
        Response::error(message).with_retry(false)
    }

    /// The permanent error for a command this plugin does not have.
    pub fn unknown_command(command: &str, known: &[&str]) -> Response {
        Response::permanent(format!(
            "unknown command `{command}` (this plugin knows {})",
            known.join(", ")
        ))
    }

    /// Sets `retry` explicitly.
    pub fn with_retry(mut self, retry: bool) -> Response {
        self.retry = Some(retry);
        self
    }

    /// Whether this is an ok response.
    pub fn is_ok(&self) -> bool {
        self.ok
    }

    /// The summary (null on error).
    pub fn result(&self) -> &Value {
        &self.result
    }

    /// The error message, on error.
    pub fn error_message(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The retry verdict as it will be read (`true` unless set).
    pub fn retry(&self) -> bool {
        self.retry.unwrap_or(true)
    }

    /// Appends an event.
    pub fn event(mut self, event_type: impl Into<String>, payload: Value) -> Response {
        self.events.push(Event::new(event_type, payload));
        self
    }

    /// Appends a prepared event (with a dedupe key, say).
    pub fn push_event(mut self, event: Event) -> Response {
        self.events.push(event);
        self
    }

    /// Appends several events.
    pub fn events(mut self, events: impl IntoIterator<Item = Event>) -> Response {
        self.events.extend(events);
        self
    }

    /// Sets the snapshot (a full object; the manifest's `fact_outputs` decides
    /// whether ductile records it).
    pub fn state(mut self, snapshot: Map<String, Value>) -> Response {
        self.state_updates = Some(snapshot);
        self
    }

    /// Appends a log line.
    pub fn log(mut self, level: Level, message: impl Into<String>) -> Response {
        self.logs.push((level, message.into()));
        self
    }

    /// Appends a stopwatch sub-span (ductile keeps the first 32 by default:
    /// put the high-signal ones first).
    pub fn span(mut self, span: Span) -> Response {
        self.subs.push(span);
        self
    }

    /// Appends several sub-spans.
    pub fn spans(mut self, spans: impl IntoIterator<Item = Span>) -> Response {
        self.subs.extend(spans);
        self
    }

    /// The envelope as JSON, fields in a fixed order.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "status".into(),
            Value::String(if self.ok { "ok" } else { "error" }.into()),
        );
        if self.ok {
            // `result` must be non-null on ok; an explicit null becomes "".
            let result = match &self.result {
                Value::Null => Value::String(String::new()),
                v => v.clone(),
            };
            m.insert("result".into(), result);
        }
        if let Some(e) = &self.error {
            m.insert("error".into(), Value::String(e.clone()));
        }
        if let Some(r) = self.retry {
            m.insert("retry".into(), Value::Bool(r));
        }
        if !self.events.is_empty() {
            m.insert(
                "events".into(),
                Value::Array(self.events.iter().map(Event::to_value).collect()),
            );
        }
        if let Some(s) = &self.state_updates {
            m.insert("state_updates".into(), Value::Object(s.clone()));
        }
        if !self.logs.is_empty() {
            let logs = self
                .logs
                .iter()
                .map(|(level, message)| {
                    let mut l = Map::new();
                    l.insert("level".into(), Value::String(level.as_str().into()));
                    l.insert("message".into(), Value::String(message.clone()));
                    Value::Object(l)
                })
                .collect();
            m.insert("logs".into(), Value::Array(logs));
        }
        if !self.subs.is_empty() {
            m.insert(
                "ductile_stopwatch_subs".into(),
                Value::Array(self.subs.iter().map(Span::to_value).collect()),
            );
        }
        Value::Object(m)
    }

    /// The envelope as one compact JSON line.
    pub fn to_json(&self) -> String {
        let mut text = self.to_value().to_string();
        text.push('\n');
        text
    }
}

/// Outcome of a timed phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStatus {
    /// The phase succeeded.
    Ok,
    /// The phase failed.
    Err,
    /// The phase was skipped (explains a zero duration).
    Skip,
}

impl SpanStatus {
    fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Ok => "ok",
            SpanStatus::Err => "err",
            SpanStatus::Skip => "skip",
        }
    }
}

/// One stopwatch sub-span: a plugin-internal phase and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Dotted `<plugin>.<phase>` name.
    pub name: String,
    /// Monotonic duration in nanoseconds.
    pub dur_ns: u64,
    /// Outcome, if known.
    pub status: Option<SpanStatus>,
    /// Bytes moved, for I/O phases.
    pub bytes: Option<u64>,
    /// Items handled, for batch phases.
    pub count: Option<u64>,
}

impl Span {
    /// A span of a known duration.
    pub fn new(name: impl Into<String>, dur: Duration) -> Span {
        Span {
            name: name.into(),
            dur_ns: u64::try_from(dur.as_nanos()).unwrap_or(u64::MAX),
            status: None,
            bytes: None,
            count: None,
        }
    }

    /// Sets the status.
    pub fn status(mut self, status: SpanStatus) -> Span {
        self.status = Some(status);
        self
    }

    /// Sets the byte count.
    pub fn bytes(mut self, bytes: u64) -> Span {
        self.bytes = Some(bytes);
        self
    }

    /// Sets the item count.
    pub fn count(mut self, count: u64) -> Span {
        self.count = Some(count);
        self
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), Value::String(self.name.clone()));
        m.insert("dur_ns".into(), Value::from(self.dur_ns));
        if let Some(s) = self.status {
            m.insert("status".into(), Value::String(s.as_str().into()));
        }
        if let Some(b) = self.bytes {
            m.insert("bytes".into(), Value::from(b));
        }
        if let Some(c) = self.count {
            m.insert("count".into(), Value::from(c));
        }
        Value::Object(m)
    }
}

/// Times one phase on the monotonic clock.
#[derive(Debug)]
pub struct Stopwatch {
    name: String,
    started: Instant,
}

impl Stopwatch {
    /// Starts timing the phase `name`.
    pub fn start(name: impl Into<String>) -> Stopwatch {
        Stopwatch {
            name: name.into(),
            started: Instant::now(),
        }
    }

    /// Stops with the given status.
    pub fn finish(self, status: SpanStatus) -> Span {
        Span::new(self.name, self.started.elapsed()).status(status)
    }

    /// Stops as a success.
    pub fn ok(self) -> Span {
        self.finish(SpanStatus::Ok)
    }

    /// Stops as a failure.
    pub fn err(self) -> Span {
        self.finish(SpanStatus::Err)
    }
}

/// Formats a wall-clock time as RFC 3339 UTC with second precision
/// (`2026-04-22T01:02:03Z`), without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The current time as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Runs one invocation: reads the request from stdin, calls `handler`, writes
/// its response to stdout. A request that cannot be read, or that speaks
/// another protocol, is a configuration failure: a message on stderr and exit
/// [`EX_CONFIG`], as the protocol asks.
pub fn run(handler: impl FnOnce(&Request) -> Response) -> ExitCode {
    let request = match Request::read_from(io::stdin().lock()) {
        Ok(r) => r,
        Err(e) => {
            // Nothing else can carry this: there is no request to answer.
            let _ = writeln!(io::stderr(), "{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let response = handler(&request);
    let mut out = io::stdout().lock();
    match out
        .write_all(response.to_json().as_bytes())
        .and_then(|()| out.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "cannot write the response: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_parses_with_defaults_and_inputs() {
        let req = Request::from_slice(
            br#"{"protocol":2,"job_id":"j","command":"handle","config":{"a":"b"},"state":{},"context":{"ctx":"c","n":null},"event":{"type":"x.y","payload":{"p":1,"n":"pay"}},"deadline_at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(req.command, "handle");
        assert_eq!(req.config_str("a"), Some("b"));
        assert_eq!(req.event_type(), Some("x.y"));
        assert_eq!(req.value_text("p").as_deref(), Some("1"));
        assert_eq!(req.value_text("ctx").as_deref(), Some("c"));
        assert_eq!(req.value_text("n").as_deref(), Some("pay"));
        assert_eq!(req.value("missing"), None);
        let bare = Request::from_slice(br#"{"protocol":2,"command":"health"}"#).unwrap();
        assert_eq!(bare.config, json!({}));
        assert!(bare.event.is_none() && bare.payload().is_none());
    }

    #[test]
    fn request_refuses_other_protocols_and_garbage() {
        let e = Request::from_slice(br#"{"protocol":1,"command":"poll"}"#).unwrap_err();
        assert!(matches!(e, RequestError::Protocol(1)), "{e}");
        let e = Request::from_slice(b"not json").unwrap_err();
        assert!(matches!(e, RequestError::NotJson(_)), "{e}");
        let e = Request::read_from(&b""[..]).unwrap_err();
        assert!(matches!(e, RequestError::NotJson(_)), "{e}");
    }

    #[test]
    fn ok_response_serializes_in_field_order() {
        let r = Response::ok("done")
            .event("a.done", json!({"k": 1}))
            .push_event(Event::new("a.other", json!({})).dedupe("d1"))
            .state(json!({"x": 1}).as_object().cloned().unwrap())
            .log(Level::Warn, "careful")
            .span(
                Span::new("a.phase", Duration::from_nanos(5))
                    .bytes(3)
                    .count(2),
            );
        assert_eq!(
            r.to_json(),
            concat!(
                r#"{"status":"ok","result":"done","events":[{"type":"a.done","payload":{"k":1}},"#,
                r#"{"type":"a.other","payload":{},"dedupe_key":"d1"}],"state_updates":{"x":1},"#,
                r#""logs":[{"level":"warn","message":"careful"}],"#,
                r#""ductile_stopwatch_subs":[{"name":"a.phase","dur_ns":5,"bytes":3,"count":2}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn error_responses_carry_message_and_retry() {
        let r = Response::error("down");
        assert_eq!(r.to_value(), json!({"status": "error", "error": "down"}));
        assert!(r.retry());
        let r = Response::permanent("bad config");
        assert_eq!(
            r.to_value(),
            json!({"status": "error", "error": "bad config", "retry": false})
        );
        let r = Response::unknown_command("zap", &["poll", "health"]);
        assert_eq!(
            r.error_message(),
            Some("unknown command `zap` (this plugin knows poll, health)")
        );
        assert!(!r.retry());
        // ok never goes out with a null result.
        assert_eq!(
            Response::ok(Value::Null).to_value(),
            json!({"status": "ok", "result": ""})
        );
    }

    #[test]
    fn stopwatch_measures_a_phase() {
        let sw = Stopwatch::start("t.phase");
        let span = sw.ok();
        assert_eq!(span.name, "t.phase");
        assert_eq!(span.status, Some(SpanStatus::Ok));
        assert_eq!(
            Stopwatch::start("t.x").err().to_value()["status"],
            json!("err")
        );
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_713_747_723);
        assert_eq!(rfc3339(t), "2024-04-22T01:02:03Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
