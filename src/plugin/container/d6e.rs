//! The `d6e-stf` envelope (a D6E "Docker STF"): the protocol v2 request
//! becomes `{workspace_id, stf_id, caller, api_url, api_token, input,
//! sources}` on stdin, and `{output}` or `{error, type, details?}` on stdout
//! becomes the v2 response.
//!
//! Identifiers are UUIDv5 under ductile's own namespace so they are stable
//! across restarts and hosts: the workspace from the instance name (unless
//! `config.d6e.workspace_id` sets one), the STF from the plugin name.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::v2::response;
use super::{ContainerSpec, Engine, Network};
use crate::http::d6e::{Grant, Session};

use crate::plugin::protocol::{Event, Response};
use crate::plugin::spawn::{EXIT_CONFIG, OutcomeKind};

/// The namespace of every UUIDv5 this envelope derives (itself the v5 of
/// `ductile.d6e` in the URL namespace).
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"ductile.d6e")
}

/// The default workspace of instance `instance`.
pub fn workspace_uuid(instance: &str) -> Uuid {
    Uuid::new_v5(&namespace(), format!("workspace:{instance}").as_bytes())
}

/// The STF id of plugin `plugin`.
pub fn stf_uuid(plugin: &str) -> Uuid {
    Uuid::new_v5(&namespace(), format!("stf:{plugin}").as_bytes())
}

/// A request translated for the STF.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The STF's stdin.
    pub request: Vec<u8>,
    /// The plugin (instance) name; names the `<plugin>.completed` event.
    pub plugin: String,
    /// The workspace the job runs in.
    pub workspace_id: Uuid,
    /// The STF's id.
    pub stf_id: Uuid,
    /// `config.d6e.database`, when the SQL callback is wanted.
    pub database: Option<String>,
}

/// The callback the STF may use, when one is served for the job.
#[derive(Debug, Clone)]
pub struct Callback {
    /// Base URL as seen from inside the container.
    pub api_url: String,
    /// The job's bearer token.
    pub api_token: String,
}

/// Why a job of an STF did not start (never retried).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl Refused {
    /// The error response a refused job records.
    pub fn into_response(self) -> Response {
        response(None, Some(self.0), false, Vec::new())
    }
}

/// Reads what the envelope needs from the v2 request of a job of the
/// instance named `instance`; the stdin is built by [`Prepared::with_callback`].
pub fn prepare(
    v2_request: &[u8],
    instance: &str,
    steps: Option<&Map<String, Value>>,
) -> Result<Prepared, Refused> {
    let req: Value = serde_json::from_slice(v2_request)
        .map_err(|e| Refused(format!("d6e-stf: the request cannot be read: {e}")))?;
    let context = req.get("context").cloned().unwrap_or(Value::Null);
    let plugin = context
        .get("ductile_plugin")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let d6e = req
        .get("config")
        .and_then(|c| c.get("d6e"))
        .cloned()
        .unwrap_or(Value::Null);
    let workspace_id = match d6e.get("workspace_id") {
        None | Some(Value::Null) => workspace_uuid(instance),
        Some(Value::String(s)) => Uuid::parse_str(s).map_err(|e| {
            Refused(format!(
                "d6e-stf: config.d6e.workspace_id must be a UUID, got `{s}`: {e}"
            ))
        })?,
        Some(_) => {
            return Err(Refused(
                "d6e-stf: config.d6e.workspace_id must be a UUID string".into(),
            ));
        }
    };
    let database = match d6e.get("database") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if Path::new(s).is_absolute() => Some(s.clone()),
        Some(_) => {
            return Err(Refused(
                "d6e-stf: config.d6e.database must be the absolute path of a SQLite file".into(),
            ));
        }
    };
    let mut input = match req.get("event").and_then(|e| e.get("payload")) {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    if !input.contains_key("operation") {
        let command = req.get("command").cloned().unwrap_or(Value::Null);
        input.insert("operation".into(), command);
    }
    let caller = context
        .get("ductile_pipeline_instance_id")
        .and_then(Value::as_str)
        .map_or(Value::Null, |s| Value::String(s.to_string()));
    let body = json!({
        "workspace_id": workspace_id.to_string(),
        "stf_id": stf_uuid(&plugin).to_string(),
        "caller": caller,
        "api_url": Value::Null,
        "api_token": Value::Null,
        "input": Value::Object(input),
        "sources": sources(steps),
    });
    let request = serde_json::to_vec(&body)
        .map_err(|e| Refused(format!("d6e-stf: cannot encode the request: {e}")))?;
    Ok(Prepared {
        request,
        stf_id: stf_uuid(&plugin),
        plugin,
        workspace_id,
        database,
    })
}

impl Prepared {
    /// The stdin with the callback's URL and token filled in.
    pub fn with_callback(&self, cb: &Callback) -> Vec<u8> {
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&self.request) else {
            return self.request.clone();
        };
        body.insert("api_url".into(), Value::String(cb.api_url.clone()));
        body.insert("api_token".into(), Value::String(cb.api_token.clone()));
        serde_json::to_vec(&body).unwrap_or_else(|_| self.request.clone())
    }
}

/// Why instance `name` cannot run with this container spec and config: the
/// SQL callback is reached over the bridge, so `network: none` cannot have it.
pub fn load_problem(name: &str, spec: &ContainerSpec, config: &Value) -> Option<String> {
    let wants_callback = config
        .get("d6e")
        .and_then(|d| d.get("database"))
        .is_some_and(|v| !v.is_null());
    (spec.envelope == super::Envelope::D6eStf && wants_callback && spec.network != Network::Bridge).then(|| {
        format!(
            "plugins.{name}.config.d6e.database: the SQL callback needs container.network: bridge (it is reached through the engine's host gateway), but network is {}",
            spec.network.as_str()
        )
    })
}

/// Starts the SQL callback of one job: a listener on the engine's bridge
/// gateway (or on every interface when no gateway address can be bound
/// now), and the URL the container reaches it at. Also returns the flag
/// docker needs to resolve that host name.
pub fn serve_callback(
    engine: &Engine,
    spec: &ContainerSpec,
    prep: &Prepared,
    database: &str,
) -> Result<(Session, Callback, Option<String>), Refused> {
    if spec.network != Network::Bridge {
        return Err(Refused(
            "d6e-stf: config.d6e.database needs container.network: bridge (the callback is reached through the engine's host gateway)".into(),
        ));
    }
    let grant = Grant {
        workspace_id: prep.workspace_id.to_string(),
        stf_id: prep.stf_id.to_string(),
        database: PathBuf::from(database),
    };
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let session = match gateway(engine) {
        Some(ip) => Session::start(ip, grant.clone()).or_else(|_| Session::start(any, grant)),
        None => Session::start(any, grant),
    }
    .map_err(|e| Refused(format!("d6e-stf: {e}")))?;
    let (host, add_host) = if engine.name == "docker" {
        (
            "host.docker.internal",
            Some("--add-host=host.docker.internal:host-gateway".to_string()),
        )
    } else {
        ("host.containers.internal", None)
    };
    let cb = Callback {
        api_url: format!("http://{host}:{}", session.addr().port()),
        api_token: session.token().to_string(),
    };
    Ok((session, cb, add_host))
}

/// `sources`: each earlier step of the tree as `{step id: {output: result}}`.
fn sources(steps: Option<&Map<String, Value>>) -> Value {
    Value::Object(
        steps
            .into_iter()
            .flatten()
            .map(|(step, result)| (step.clone(), json!({ "output": result })))
            .collect(),
    )
}

/// The gateway address of the engine's default bridge network.
fn gateway(engine: &Engine) -> Option<IpAddr> {
    let args: &[&str] = if engine.name == "docker" {
        &[
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        ]
    } else {
        &[
            "network",
            "inspect",
            "podman",
            "--format",
            "{{range .Subnets}}{{.Gateway}} {{end}}",
        ]
    };
    let o = super::engine::call(engine, args, "container-gateway");
    if o.exit_code != Some(0) {
        return None;
    }
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find_map(|w| w.parse::<IpAddr>().ok())
}

/// The v2 outcome of the STF's stdout and exit code.
pub fn translate(stdout: &[u8], exit_code: Option<i32>, prep: &Prepared) -> OutcomeKind {
    let v: Value = match serde_json::from_slice(stdout) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return OutcomeKind::ProtocolError("d6e-stf output is not an object".into()),
        Err(e) => return OutcomeKind::ProtocolError(format!("d6e-stf output is not JSON: {e}")),
    };
    let exit = exit_code.unwrap_or(-1);
    if let (Some(output), 0) = (v.get("output"), exit) {
        let event = Event {
            event_type: format!("{}.completed", prep.plugin),
            payload: output.clone(),
            dedupe_key: None,
        };
        return OutcomeKind::Succeeded(response(Some(output.clone()), None, false, vec![event]));
    }
    if let Some(error) = v.get("error") {
        if exit != 0 {
            let message = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_string);
            let kind = v.get("type").and_then(Value::as_str).unwrap_or("Error");
            let text = format!("{kind}: {message}");
            let result = json!({"type": kind, "error": message, "details": v.get("details").cloned().unwrap_or(Value::Null)});
            if exit == EXIT_CONFIG {
                return OutcomeKind::ConfigError {
                    response: Some(response(
                        Some(result),
                        Some(text.clone()),
                        false,
                        Vec::new(),
                    )),
                    message: text,
                };
            }
            return OutcomeKind::Failed(response(Some(result), Some(text), true, Vec::new()));
        }
    }
    OutcomeKind::ProtocolError(format!(
        "d6e-stf output has neither `output` with exit 0 nor `error` with a non-zero exit (exit {exit})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(req: Value) -> Prepared {
        prepare(&serde_json::to_vec(&req).unwrap(), "home", None).unwrap()
    }

    #[test]
    fn sources_name_each_earlier_step_with_its_output() {
        let steps: Map<String, Value> =
            serde_json::from_value(json!({"fetch": {"rows": 3}, "clean": "done"})).unwrap();
        let req = json!({"command": "handle", "config": {}, "event": {"payload": {}}});
        let p = prepare(&serde_json::to_vec(&req).unwrap(), "home", Some(&steps)).unwrap();
        let sent: Value = serde_json::from_slice(&p.request).unwrap();
        assert_eq!(
            sent["sources"],
            json!({"fetch": {"output": {"rows": 3}}, "clean": {"output": "done"}})
        );
    }

    #[test]
    fn the_request_carries_stable_ids_and_the_operation() {
        let p = prep(json!({
            "command": "handle",
            "config": {},
            "context": {"ductile_plugin": "ledger", "ductile_pipeline_instance_id": "0193aa00-0000-7000-8000-000000000001"},
            "event": {"type": "x", "payload": {"amount": 3}},
        }));
        let sent: Value = serde_json::from_slice(&p.request).unwrap();
        assert_eq!(sent["workspace_id"], workspace_uuid("home").to_string());
        assert_eq!(sent["stf_id"], stf_uuid("ledger").to_string());
        assert_ne!(workspace_uuid("home"), workspace_uuid("away"));
        assert_eq!(stf_uuid("ledger").get_version_num(), 5);
        assert_eq!(sent["caller"], "0193aa00-0000-7000-8000-000000000001");
        assert_eq!(sent["input"], json!({"amount": 3, "operation": "handle"}));
        assert_eq!(sent["sources"], json!({}));
        assert_eq!(sent["api_url"], Value::Null);
        let own = prep(
            json!({"command": "poll", "config": {"d6e": {"workspace_id": "6f1c1a52-5ad8-4a5e-9d1e-3b1d1a1c0b2a"}}, "event": {"payload": {"operation": "sum"}}}),
        );
        let sent: Value = serde_json::from_slice(&own.request).unwrap();
        assert_eq!(sent["workspace_id"], "6f1c1a52-5ad8-4a5e-9d1e-3b1d1a1c0b2a");
        assert_eq!(sent["input"]["operation"], "sum");
        assert_eq!(sent["caller"], Value::Null);
    }

    #[test]
    fn answers_translate_to_v2() {
        let p = prep(json!({"command": "handle", "context": {"ductile_plugin": "stf"}}));
        match translate(br#"{"output":{"status":"success","n":1}}"#, Some(0), &p) {
            OutcomeKind::Succeeded(r) => {
                assert_eq!(r.result, Some(json!({"status": "success", "n": 1})));
                assert_eq!(r.events[0].event_type, "stf.completed");
            }
            other => panic!("{other:?}"),
        }
        let err = br#"{"error":"no rows","type":"NotFound"}"#;
        match translate(err, Some(1), &p) {
            OutcomeKind::Failed(r) => {
                assert_eq!(r.error.as_deref(), Some("NotFound: no rows"));
                assert!(r.retry);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            translate(err, Some(78), &p),
            OutcomeKind::ConfigError { message, .. } if message == "NotFound: no rows"
        ));
        assert!(matches!(
            translate(err, Some(0), &p),
            OutcomeKind::ProtocolError(_)
        ));
        assert!(matches!(
            translate(b"nope", Some(0), &p),
            OutcomeKind::ProtocolError(_)
        ));
    }
}
