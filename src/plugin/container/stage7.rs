//! The `stage7` envelope: a Stage7 "container plugin" (an HTTP service in an
//! image, described by its own `manifest.json`) run unchanged, one container
//! per job, or one resident container per instance under `keep_warm` ([`warm`]).
//!
//! Per job: `ENGINE run -d` with the locked-down flags of [`super::run_args`]
//! and every declared port published on 127.0.0.1 only, `ENGINE port` to learn
//! the API's host port, `GET healthCheck.path` until it answers 2xx, one
//! request to `api.endpoint` with the Stage7 body, then `ENGINE rm -f` by name,
//! whatever happened (answer, error, timeout, cancel, shutdown). With a warm
//! container the job borrows its address from [`warm`] and only sends the
//! request. The answer becomes a protocol v2 [`Outcome`], so retries, logs
//! and events are those of any plugin.
//! Must not: leave a container behind, or listen on anything but loopback.

pub mod manifest;
pub mod warm;

use std::ffi::OsString;
use std::io::Read;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::engine::{self, Engine};
use super::spec::ContainerSpec;
use crate::plugin::protocol::{Event, Response};
use crate::plugin::spawn::{self, CancelToken, Invocation, Limits, Outcome, OutcomeKind};

/// The file that makes a directory (without `manifest.yaml`) a Stage7 plugin.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Longest single wait before the cancel token and the deadline are looked at again.
const SLICE: Duration = Duration::from_millis(50);
/// First pause between two health probes; it doubles up to the interval.
const FIRST_PAUSE: Duration = Duration::from_millis(10);

/// What a Stage7 manifest says beyond the container block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage7 {
    /// `id`: the plugin's name, sent as `context.plugin_id`.
    pub id: String,
    /// `version`, sent as `context.version`.
    pub version: String,
    /// Every port of `container.ports` (never empty: the default port when
    /// none is declared), the API's first; each is published on loopback.
    pub ports: Vec<u16>,
    /// `container.healthCheck`.
    pub health: HealthCheck,
    /// `api`.
    pub api: Api,
    /// Names declared by `inputDefinitions`, in order.
    pub inputs: Vec<String>,
}

impl Stage7 {
    /// The container port the API is served on: the first of `ports`.
    pub fn port(&self) -> u16 {
        self.ports
            .first()
            .copied()
            .unwrap_or(manifest::DEFAULT_PORT)
    }
}

/// `container.healthCheck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path answered with a 2xx once the service is ready.
    pub path: String,
    /// Longest pause between two probes; `interval × retries` is the start budget.
    pub interval: Duration,
    /// Budget of one probe.
    pub timeout: Duration,
    /// Failed probes, `interval` apart, after which the service is unhealthy.
    pub retries: u32,
}

/// `api`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// Path of the execute endpoint.
    pub endpoint: String,
    /// `POST` (or `PUT`).
    pub method: String,
    /// Budget of the request, from sending to the whole answer.
    pub timeout: Duration,
}

/// The client of every Stage7 call. No pooled connections: each job's
/// container has its own port, gone after the job.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .redirects(0)
            .max_idle_connections(0)
            .user_agent(concat!("ductile/", env!("CARGO_PKG_VERSION")))
            .build()
    })
}

/// Runs one job of a Stage7 plugin: in the instance's warm container when
/// `resident` is given and the registry serves it, else in a container of its
/// own that is removed afterwards, in every case.
pub fn run(
    spec: &ContainerSpec,
    s7: &Stage7,
    engine: &Engine,
    inv: &Invocation<'_>,
    cancel: &CancelToken,
    resident: Option<&warm::Resident<'_>>,
) -> Outcome {
    let started_at = Utc::now();
    let start = Instant::now();
    let env = engine::passthrough(inv.env_passthrough);
    let mut job = Job {
        engine,
        env: &env,
        job_id: inv.job_id,
        name: super::container_name(inv.job_id),
        deadline: start + inv.limits.timeout,
        cancel,
        warnings: Vec::new(),
    };
    let warm = resident.and_then(|r| job.in_warm(r, s7, inv));
    let kind = match warm {
        Some(kind) => kind,
        None => job.in_own(spec, s7, inv),
    };
    let stdout = super::v2::bytes(&kind).unwrap_or_default();
    Outcome {
        kind,
        exit_code: None,
        signal: None,
        stdout,
        stderr: String::new(),
        stderr_truncated: false,
        pid: None,
        started_at,
        finished_at: Utc::now(),
        duration: start.elapsed(),
        warnings: job.warnings,
        request_unread: 0,
    }
}

struct Job<'a> {
    engine: &'a Engine,
    env: &'a [String],
    job_id: &'a str,
    name: String,
    deadline: Instant,
    cancel: &'a CancelToken,
    warnings: Vec<String>,
}

impl Job<'_> {
    /// The job in a container of its own, removed afterwards.
    fn in_own(&mut self, spec: &ContainerSpec, s7: &Stage7, inv: &Invocation<'_>) -> OutcomeKind {
        // The engine's monitor of the detached container is our orphan and
        // carries the job id: it must outlive the `run -d` that started it.
        let held = spawn::group::hold(inv.job_id);
        let kind = self.attempt(spec, s7, inv);
        // `--rm` removes a container that stops, but this one serves until stopped.
        if let Err(e) = engine::remove(self.engine, std::slice::from_ref(&self.name)) {
            self.warnings.push(e);
        }
        drop(held);
        kind
    }

    /// The job in the instance's warm container; `None` when the registry
    /// does not serve it (the job was claimed under another config).
    fn in_warm(
        &mut self,
        resident: &warm::Resident<'_>,
        s7: &Stage7,
        inv: &Invocation<'_>,
    ) -> Option<OutcomeKind> {
        let mut lease = match resident.acquire(self.engine, self.env, &|| self.interrupted()) {
            warm::Acquired::Lease(l) => l,
            warm::Acquired::NotServed => return None,
            warm::Acquired::Stopped(stop) => return Some(stop.into_kind()),
        };
        let request: Value = serde_json::from_slice(inv.request).unwrap_or(Value::Null);
        if is_health(&request) {
            let url = format!("http://{}{}", lease.addr(), s7.health.path);
            return Some(match probe(&url, s7.health.timeout.min(self.remaining())) {
                Ok(()) => healthy(),
                Err(why) => {
                    let msg = format!(
                        "stage7: health check GET {} of warm container {}: {why}",
                        s7.health.path,
                        lease.name()
                    );
                    lease.spoil(msg.clone());
                    OutcomeKind::Failed(response(None, Some(msg), Vec::new()))
                }
            });
        }
        let (kind, suspect) = self.exchange(lease.addr(), s7, inv, &request);
        if let Some(why) = suspect {
            // The service may still be working on the request, or be gone:
            // the next job gets a fresh container.
            lease.spoil(why);
        }
        Some(kind)
    }

    fn attempt(&mut self, spec: &ContainerSpec, s7: &Stage7, inv: &Invocation<'_>) -> OutcomeKind {
        let request: Value = serde_json::from_slice(inv.request).unwrap_or(Value::Null);
        let args = start_args(spec, s7, self.job_id);
        let addr = match self.start(&args, spec, s7) {
            Ok((a, _id)) => a,
            Err(k) => return k.into_kind(),
        };
        if let Err(k) = self.wait_healthy(&addr, &s7.health) {
            return k.into_kind();
        }
        if is_health(&request) {
            return healthy();
        }
        self.exchange(&addr, s7, inv, &request).0
    }

    /// Sends the Stage7 request to the service at `addr` and translates its
    /// answer; also says why the service is suspect when the request did not
    /// come back whole (lost, timed out, abandoned).
    fn exchange(
        &mut self,
        addr: &str,
        s7: &Stage7,
        inv: &Invocation<'_>,
        request: &Value,
    ) -> (OutcomeKind, Option<String>) {
        let body = body(request, s7, self.job_id);
        let url = format!("http://{addr}{}", s7.api.endpoint);
        let budget = s7.api.timeout.min(self.remaining());
        let answer = match self.call(&s7.api.method, url, body, budget, inv.limits.stdout_cap) {
            Ok(a) => a,
            Err(k) => {
                let why = format!("a job's request was abandoned ({})", k.label());
                return (k.into_kind(), Some(why));
            }
        };
        let plugin = request
            .get("context")
            .and_then(|c| c.get("ductile_plugin"))
            .and_then(Value::as_str)
            .unwrap_or(&s7.id);
        match answer {
            Answer::TooLarge => (OutcomeKind::OutputTooLarge, None),
            Answer::Lost(why) if self.remaining().is_zero() => {
                self.warnings.push(format!(
                    "stage7: {} {}: {why}",
                    s7.api.method, s7.api.endpoint
                ));
                (
                    OutcomeKind::TimedOut,
                    Some(format!("a request got no answer: {why}")),
                )
            }
            Answer::TimedOut => {
                self.warnings.push(format!(
                    "stage7: {} {} gave no answer within api.timeout {}",
                    s7.api.method,
                    s7.api.endpoint,
                    crate::config::duration::format(s7.api.timeout)
                ));
                (
                    OutcomeKind::TimedOut,
                    Some("a request got no answer in time".to_string()),
                )
            }
            Answer::Lost(why) => {
                let msg = format!(
                    "stage7: {} {} failed: {why}",
                    s7.api.method, s7.api.endpoint
                );
                (
                    OutcomeKind::Failed(response(None, Some(msg.clone()), Vec::new())),
                    Some(msg),
                )
            }
            Answer::Status(status, bytes) => {
                (translate(status, &bytes, plugin, &s7.api.endpoint), None)
            }
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Why to stop now, if there is a reason.
    fn interrupted(&self) -> Option<Stop> {
        if self.cancel.is_cancelled() {
            let reason = self
                .cancel
                .reason()
                .unwrap_or_else(|| "cancelled".to_string());
            return Some(Stop::Cancelled(reason));
        }
        self.remaining().is_zero().then_some(Stop::TimedOut)
    }

    /// Starts the container detached with `args` (which name it
    /// `self.name`); returns `127.0.0.1:<host port of the API>` and the
    /// container's ID.
    fn start(
        &self,
        args: &[OsString],
        spec: &ContainerSpec,
        s7: &Stage7,
    ) -> Result<(String, String), Stop> {
        let out = self.engine_call(args, "start")?;
        let id = out.trim().to_string();
        if id.is_empty() {
            return Err(Stop::SpawnFailed(format!(
                "{} did not start image {}",
                self.engine.name, spec.image
            )));
        }
        let port_args = [
            OsString::from("port"),
            OsString::from(&self.name),
            OsString::from(format!("{}/tcp", s7.port())),
        ];
        let text = self.engine_call(&port_args, "port")?;
        let addr = host_port(&text)
            .map(|p| format!("127.0.0.1:{p}"))
            .ok_or_else(|| {
                Stop::SpawnFailed(format!(
                    "{} port {} {} printed no loopback port: {}",
                    self.engine.name,
                    self.name,
                    s7.port(),
                    text.trim()
                ))
            })?;
        Ok((addr, id))
    }

    /// Runs `ENGINE args` within what is left of the deadline; its stdout when
    /// it exits 0.
    fn engine_call(&self, args: &[OsString], what: &str) -> Result<String, Stop> {
        if let Some(k) = self.interrupted() {
            return Err(k);
        }
        let inv = Invocation {
            job_id: self.job_id,
            entrypoint: &self.engine.path,
            args,
            env_passthrough: self.env,
            request: b"",
            limits: Limits {
                timeout: self.remaining(),
                grace: Duration::from_secs(2),
                ..Limits::default()
            },
            response: Default::default(),
        };
        let o = spawn::run(&inv, self.cancel);
        match o.kind {
            OutcomeKind::TimedOut => return Err(Stop::TimedOut),
            OutcomeKind::Cancelled(r) => return Err(Stop::Cancelled(r)),
            OutcomeKind::SpawnFailed(m) => return Err(Stop::SpawnFailed(m)),
            _ => {}
        }
        if o.exit_code == Some(0) {
            return Ok(String::from_utf8_lossy(&o.stdout).into_owned());
        }
        let why = engine::last_line(&o.stderr).unwrap_or("no message");
        Err(Stop::SpawnFailed(format!(
            "{} {what} of {} failed (exit {}): {why}",
            self.engine.name,
            self.name,
            o.exit_code
                .map_or_else(|| "by signal".to_string(), |c| c.to_string())
        )))
    }

    /// Probes the health path until it answers 2xx. The start budget is
    /// `interval × retries` (when a resident engine would call the service
    /// unhealthy), bounded by the job deadline; within it the probes back off
    /// from 10 ms up to `interval`, so a service ready in 50 ms is used then.
    fn wait_healthy(&self, addr: &str, hc: &HealthCheck) -> Result<(), Stop> {
        let url = format!("http://{addr}{}", hc.path);
        let budget = hc.interval.saturating_mul(hc.retries);
        let until = Instant::now() + budget;
        let mut pause = FIRST_PAUSE;
        let mut tries = 0u32;
        loop {
            if let Some(k) = self.interrupted() {
                return Err(k);
            }
            tries += 1;
            let last = match probe(&url, hc.timeout.min(self.remaining())) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            let next = Instant::now() + pause;
            if next >= until {
                return Err(Stop::Unhealthy(format!(
                    "stage7: health check GET {} did not answer 2xx within {} (interval {} × {} retries; {tries} probes, last: {last})",
                    hc.path,
                    crate::config::duration::format(budget),
                    crate::config::duration::format(hc.interval),
                    hc.retries
                )));
            }
            self.pause(pause)?;
            pause = (pause * 2).min(hc.interval);
        }
    }

    /// Waits `d`, ended early by a cancel or the deadline.
    fn pause(&self, d: Duration) -> Result<(), Stop> {
        let end = Instant::now() + d;
        loop {
            if let Some(k) = self.interrupted() {
                return Err(k);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(SLICE).min(self.remaining()));
        }
    }

    /// Sends the request on a thread of its own, so that a cancel or the
    /// deadline is seen while it is in flight (removing the container then
    /// ends the request).
    fn call(
        &self,
        method: &str,
        url: String,
        body: Vec<u8>,
        budget: Duration,
        cap: usize,
    ) -> Result<Answer, Stop> {
        let (tx, rx) = mpsc::channel();
        let method = method.to_string();
        let spawned = std::thread::Builder::new()
            .name("stage7-call".to_string())
            .spawn(move || {
                let _ = tx.send(send(&method, &url, &body, budget, cap));
            });
        if let Err(e) = spawned {
            return Err(Stop::SpawnFailed(format!(
                "cannot start the request thread: {e}"
            )));
        }
        loop {
            match rx.recv_timeout(SLICE) {
                Ok(a) => return Ok(a),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(k) = self.interrupted() {
                        return Err(k);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Ok(Answer::Lost(
                        "the request thread ended without an answer".into(),
                    ));
                }
            }
        }
    }
}

/// The engine argv that starts a job's container: the locked-down flags of
/// every container job, detached rather than attached to stdin, with every
/// declared port published on loopback only, each on a port the engine picks.
pub fn start_args(spec: &ContainerSpec, s7: &Stage7, job_id: &str) -> Vec<OsString> {
    let mut args = super::run_args(spec, job_id, &[]);
    for a in args.iter_mut() {
        if a == "-i" {
            *a = OsString::from("-d");
        }
    }
    for (i, port) in s7.ports.iter().enumerate() {
        args.insert(
            1 + i,
            OsString::from(format!("--publish=127.0.0.1::{port}")),
        );
    }
    args
}

/// Why a job ended before the endpoint answered.
#[derive(Debug, Clone)]
enum Stop {
    /// The job's deadline passed.
    TimedOut,
    /// The job was cancelled (the reason).
    Cancelled(String),
    /// The engine could not start or describe the container.
    SpawnFailed(String),
    /// The health check never passed.
    Unhealthy(String),
}

impl Stop {
    /// A few words for a log line.
    fn label(&self) -> &'static str {
        match self {
            Stop::TimedOut => "timed out",
            Stop::Cancelled(_) => "cancelled",
            Stop::SpawnFailed(_) => "engine failure",
            Stop::Unhealthy(_) => "unhealthy",
        }
    }

    fn into_kind(self) -> OutcomeKind {
        match self {
            Stop::TimedOut => OutcomeKind::TimedOut,
            Stop::Cancelled(r) => OutcomeKind::Cancelled(r),
            Stop::SpawnFailed(m) => OutcomeKind::SpawnFailed(m),
            Stop::Unhealthy(m) => OutcomeKind::Failed(response(None, Some(m), Vec::new())),
        }
    }
}

/// What came back from the endpoint.
#[derive(Debug)]
enum Answer {
    /// An HTTP answer: its status and body.
    Status(u16, Vec<u8>),
    /// The body was over the stdout cap.
    TooLarge,
    /// No whole answer within the budget.
    TimedOut,
    /// No HTTP answer (refused, reset).
    Lost(String),
}

fn send(method: &str, url: &str, body: &[u8], budget: Duration, cap: usize) -> Answer {
    let sent = Instant::now();
    // ureq's timeout error has no kind of its own; the clock tells.
    let timed_out = || sent.elapsed() + Duration::from_millis(5) >= budget;
    let answer = agent()
        .request(method, url)
        .timeout(budget)
        .set("Content-Type", "application/json")
        .send_bytes(body);
    let answer = match answer {
        Ok(a) => a,
        Err(ureq::Error::Status(_, a)) => a,
        Err(ureq::Error::Transport(_)) if timed_out() => return Answer::TimedOut,
        Err(ureq::Error::Transport(t)) => return Answer::Lost(t.to_string()),
    };
    let status = answer.status();
    let mut bytes = Vec::new();
    match answer
        .into_reader()
        .take(cap as u64 + 1)
        .read_to_end(&mut bytes)
    {
        Ok(_) if bytes.len() > cap => Answer::TooLarge,
        Ok(_) => Answer::Status(status, bytes),
        Err(_) if timed_out() => Answer::TimedOut,
        Err(e) => Answer::Lost(format!("reading the answer: {e}")),
    }
}

/// One health probe: `Ok` on a 2xx.
fn probe(url: &str, timeout: Duration) -> Result<(), String> {
    match agent().get(url).timeout(timeout).call() {
        Ok(a) if (200..300).contains(&a.status()) => Ok(()),
        Ok(a) => Err(format!("answered {}", a.status())),
        Err(ureq::Error::Status(s, _)) => Err(format!("answered {s}")),
        Err(ureq::Error::Transport(t)) => Err(t.to_string()),
    }
}

/// The port of the first `127.0.0.1:<port>` line `ENGINE port` printed.
fn host_port(text: &str) -> Option<u16> {
    text.lines()
        .filter_map(|l| l.trim().rsplit_once(':'))
        .filter(|(host, _)| *host == "127.0.0.1")
        .find_map(|(_, port)| port.parse().ok())
}

/// The Stage7 request: every field of the event payload (and each declared
/// input the payload lacks but the plugin's config has) as `{value, args}`.
/// Whether `request` is the `health` command, which the health check alone
/// answers.
fn is_health(request: &Value) -> bool {
    request.get("command").and_then(Value::as_str) == Some("health")
}

/// The answer to a `health` command whose check passed.
fn healthy() -> OutcomeKind {
    OutcomeKind::Succeeded(response(Some(json!("healthy")), None, Vec::new()))
}

fn body(request: &Value, s7: &Stage7, job_id: &str) -> Vec<u8> {
    let mut inputs = Map::new();
    let payload = request
        .get("event")
        .and_then(|e| e.get("payload"))
        .and_then(Value::as_object);
    for (k, v) in payload.into_iter().flatten() {
        inputs.insert(k.clone(), json!({"value": v, "args": {}}));
    }
    let config = request.get("config").and_then(Value::as_object);
    for name in &s7.inputs {
        if inputs.contains_key(name) {
            continue;
        }
        if let Some(v) = config.and_then(|c| c.get(name)) {
            inputs.insert(name.clone(), json!({"value": v, "args": {}}));
        }
    }
    let body = json!({
        "inputs": inputs,
        "context": {"trace_id": job_id, "plugin_id": s7.id, "version": s7.version},
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The v2 outcome of the endpoint's answer.
fn translate(status: u16, bytes: &[u8], plugin: &str, endpoint: &str) -> OutcomeKind {
    let v: Option<Value> = serde_json::from_slice(bytes).ok();
    let success = v
        .as_ref()
        .and_then(|v| v.get("success"))
        .and_then(Value::as_bool);
    match (success, v) {
        (Some(true), Some(v)) if (200..300).contains(&status) => {
            let outputs = v.get("outputs").cloned().unwrap_or(Value::Null);
            let payload = match &outputs {
                Value::Object(_) => outputs.clone(),
                other => json!({"outputs": other}),
            };
            let event = Event {
                event_type: format!("{plugin}.executed"),
                payload,
                dedupe_key: None,
            };
            OutcomeKind::Succeeded(response(Some(outputs), None, vec![event]))
        }
        (Some(false), Some(v)) => {
            let error = match v.get("error") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => {
                    "the plugin reported failure without an error".to_string()
                }
                Some(other) => other.to_string(),
            };
            OutcomeKind::Failed(response(None, Some(error), Vec::new()))
        }
        _ if !(200..300).contains(&status) => {
            let text = String::from_utf8_lossy(bytes);
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no body");
            OutcomeKind::Failed(response(
                None,
                Some(format!("stage7: {endpoint} answered {status}: {first}")),
                Vec::new(),
            ))
        }
        _ => OutcomeKind::ProtocolError(format!(
            "stage7: the answer of {endpoint} is not {{success: true|false, ...}}"
        )),
    }
}

/// A Stage7 failure may pass on a later attempt: every answer is retryable.
fn response(result: Option<Value>, error: Option<String>, events: Vec<Event>) -> Response {
    super::v2::response(result, error, true, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s7() -> Stage7 {
        Stage7 {
            id: "wc".into(),
            version: "1.0".into(),
            ports: vec![8080],
            health: HealthCheck {
                path: "/health".into(),
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                retries: 3,
            },
            api: Api {
                endpoint: "/execute".into(),
                method: "POST".into(),
                timeout: Duration::from_secs(5),
            },
            inputs: vec!["text".into(), "lang".into(), "unset".into()],
        }
    }

    #[test]
    fn the_body_carries_payload_fields_and_config_defaults() {
        let req = json!({"config": {"lang": "en", "text": "from config"},
            "event": {"payload": {"text": "a b", "extra": 1}}});
        let body: Value = serde_json::from_slice(&body(&req, &s7(), "j1")).unwrap();
        assert_eq!(
            body,
            json!({"inputs": {"text": {"value": "a b", "args": {}}, "extra": {"value": 1, "args": {}},
                               "lang": {"value": "en", "args": {}}},
                   "context": {"trace_id": "j1", "plugin_id": "wc", "version": "1.0"}})
        );
    }

    #[test]
    fn answers_become_v2_outcomes() {
        let ok = translate(
            200,
            br#"{"success":true,"outputs":{"count":2}}"#,
            "wc",
            "/x",
        );
        let OutcomeKind::Succeeded(r) = ok else {
            panic!("{ok:?}")
        };
        assert_eq!(r.result, Some(json!({"count": 2})));
        assert_eq!(r.events[0].event_type, "wc.executed");
        assert_eq!(r.events[0].payload, json!({"count": 2}));
        let listed = translate(200, br#"{"success":true,"outputs":[1]}"#, "wc", "/x");
        let OutcomeKind::Succeeded(r) = listed else {
            panic!()
        };
        assert_eq!(r.events[0].payload, json!({"outputs": [1]}));
        let failed = translate(500, br#"{"success":false,"error":"no text"}"#, "wc", "/x");
        let OutcomeKind::Failed(r) = failed else {
            panic!()
        };
        assert_eq!(r.error.as_deref(), Some("no text"));
        let broken = translate(502, b"Bad Gateway\n", "wc", "/x");
        let OutcomeKind::Failed(r) = broken else {
            panic!()
        };
        assert_eq!(
            r.error.as_deref(),
            Some("stage7: /x answered 502: Bad Gateway")
        );
        assert!(matches!(
            translate(200, b"{}", "wc", "/x"),
            OutcomeKind::ProtocolError(_)
        ));
    }

    #[test]
    fn the_container_is_detached_locked_down_and_published_on_loopback() {
        let text = r#"{"id": "x", "verb": "X", "name": "X", "inputDefinitions": [], "outputDefinitions": [],
            "container": {"image": "x:1", "ports": [9000, {"container": 9100}]}, "api": {}}"#;
        let m = manifest::parse(std::path::Path::new("manifest.json"), text).unwrap();
        let spec = m.container.unwrap();
        let argv = crate::plugin::container::assert_flags(
            start_args(&spec, spec.stage7.as_ref().unwrap(), "j1"),
            &[
                "-d",
                "--rm",
                "--publish=127.0.0.1::9000",
                "--publish=127.0.0.1::9100",
                "--network=bridge",
                "--name=ductile-j1",
                "--read-only",
                "--cap-drop=ALL",
                "--security-opt=no-new-privileges",
                "--pull=never",
            ],
        );
        assert!(!argv.iter().any(|a| a == "-i"), "{argv:?}");
        assert_eq!(argv.last().map(String::as_str), Some("x:1"));
    }

    #[test]
    fn the_loopback_port_is_read_from_the_engine() {
        assert_eq!(host_port("127.0.0.1:40123\n"), Some(40123));
        assert_eq!(host_port("0.0.0.0:1\n127.0.0.1:2\n"), Some(2));
        assert_eq!(host_port("[::]:5\n"), None);
    }
}
