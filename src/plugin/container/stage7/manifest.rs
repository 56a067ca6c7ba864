//! A Stage7 `manifest.json`, read as it is and turned into the ductile
//! [`Manifest`] it stands for: commands `handle` and `health`, `input_schema`
//! from `inputDefinitions`, `output_schema` from `outputDefinitions`, and a
//! `container:` block with the `stage7` envelope.
//!
//! Every refusal names the file and the Stage7 field (`container.healthCheck.retries`),
//! never the ductile field it maps to.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Api, HealthCheck, Stage7};
use crate::plugin::container::spec::{self, Envelope};
use crate::plugin::manifest::{
    CommandKind, CommandSpec, DEFAULT_MAX_SUBS, Manifest, ManifestError,
};
use crate::plugin::protocol::PROTOCOL_VERSION;

/// The port a Stage7 plugin serves on when its manifest names none.
pub const DEFAULT_PORT: u16 = 8080;
/// `healthCheck.path` when unset.
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// `healthCheck.interval` when unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// `healthCheck.timeout` when unset.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// `healthCheck.retries` when unset.
pub const DEFAULT_RETRIES: u32 = 3;
/// `api.endpoint` when unset.
pub const DEFAULT_ENDPOINT: &str = "/execute";
/// `api.timeout` when unset.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(30);
/// The version a manifest without `version` is given.
pub const UNVERSIONED: &str = "0.0.0";

struct Rules<'a> {
    file: &'a Path,
}

impl Rules<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    fn object<'v>(
        &self,
        v: Option<&'v Value>,
        field: &str,
    ) -> Result<Option<&'v Map<String, Value>>, ManifestError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(self.err(field, format!("must be an object, got {}", kind(other)))),
        }
    }

    fn string(&self, v: Option<&Value>, field: &str) -> Result<Option<String>, ManifestError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(self.err(
                field,
                format!("must be a non-empty string, got {}", kind(other)),
            )),
        }
    }

    fn required(&self, v: Option<&Value>, field: &str) -> Result<String, ManifestError> {
        self.string(v, field)?
            .ok_or_else(|| self.err(field, "is required"))
    }

    /// A duration: a string such as `30s` or `500ms`, or a number of milliseconds.
    fn duration(
        &self,
        v: Option<&Value>,
        field: &str,
        default: Duration,
    ) -> Result<Duration, ManifestError> {
        let d = match v {
            None | Some(Value::Null) => return Ok(default),
            Some(Value::Number(n)) => n.as_u64().map(Duration::from_millis).ok_or_else(|| {
                self.err(
                    field,
                    format!("must be a positive number of milliseconds, got {n}"),
                )
            })?,
            Some(Value::String(s)) => {
                crate::config::duration::parse(s).map_err(|e| self.err(field, e))?
            }
            Some(other) => {
                return Err(self.err(
                    field,
                    format!(
                        "must be a duration such as \"30s\" or a number of milliseconds, got {}",
                        kind(other)
                    ),
                ));
            }
        };
        if d.is_zero() || d > Duration::from_secs(24 * 3600) {
            return Err(self.err(field, "must be more than 0 and at most 24h"));
        }
        Ok(d)
    }
}

/// Reads the Stage7 manifest `text` from `file` into the manifest ductile runs.
pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let r = Rules { file };
    let doc: Value =
        serde_json::from_str(text).map_err(|e| r.err("", format!("invalid JSON: {e}")))?;
    let Value::Object(top) = &doc else {
        return Err(r.err(
            "",
            format!("the manifest must be an object, got {}", kind(&doc)),
        ));
    };
    let id = r.required(top.get("id"), "id")?;
    if let Some(bad) = id
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '/')
    {
        return Err(r.err(
            "id",
            format!("must not contain {bad:?}, got `{id}` (it is the plugin's name in ductile)"),
        ));
    }
    let verb = r.required(top.get("verb"), "verb")?;
    let name = r.required(top.get("name"), "name")?;
    let version = match top.get("version") {
        None | Some(Value::Null) => UNVERSIONED.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        v => r.required(v, "version")?,
    };
    let description = r.string(top.get("description"), "description")?;
    let (input_schema, inputs) = definitions(&r, top.get("inputDefinitions"), "inputDefinitions")?;
    let (output_schema, _) = definitions(&r, top.get("outputDefinitions"), "outputDefinitions")?;
    let container = r
        .object(top.get("container"), "container")?
        .ok_or_else(|| r.err("container", "is required"))?;
    let api = r
        .object(top.get("api"), "api")?
        .ok_or_else(|| r.err("api", "is required"))?;
    let (mut spec, ports, health) = container_block(&r, container)?;
    let api = api_block(&r, api)?;
    spec.envelope = Envelope::Stage7;
    spec.stage7 = Some(Box::new(Stage7 {
        id: id.clone(),
        version: version.clone(),
        ports,
        health,
        api,
        inputs,
    }));
    let summary = description.unwrap_or_else(|| name.clone());
    Ok(Manifest {
        name: id,
        version,
        protocol: PROTOCOL_VERSION,
        entrypoint: String::new(),
        description: Some(format!("{summary} (Stage7 verb {verb})")),
        concurrency_safe: true,
        commands: vec![
            CommandSpec {
                name: "handle".to_string(),
                kind: CommandKind::Write,
                description: Some(format!("{name}: the event payload's fields are its inputs")),
                idempotent: None,
                retry_safe: None,
                input_schema: Some(input_schema),
                output_schema: Some(output_schema),
                values: None,
            },
            CommandSpec {
                name: "health".to_string(),
                kind: CommandKind::Read,
                description: Some(
                    "starts the container and waits for its health check".to_string(),
                ),
                idempotent: Some(true),
                retry_safe: Some(true),
                input_schema: None,
                output_schema: None,
                values: None,
            },
        ],
        fact_outputs: Vec::new(),
        config_keys: Default::default(),
        stopwatch_max_subs: DEFAULT_MAX_SUBS,
        container: Some(spec),
    })
}

/// `inputDefinitions` / `outputDefinitions` as a JSON Schema of an object,
/// and the declared names.
fn definitions(
    r: &Rules<'_>,
    v: Option<&Value>,
    field: &str,
) -> Result<(Value, Vec<String>), ManifestError> {
    let items = match v {
        None | Some(Value::Null) => {
            return Err(r.err(field, "is required (a list, possibly empty)"));
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(r.err(field, format!("must be a list, got {}", kind(other)))),
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let def = r
            .object(Some(item), &at)?
            .ok_or_else(|| r.err(&at, "must be an object"))?;
        let name = r.required(def.get("name"), &format!("{at}.name"))?;
        if names.contains(&name) {
            return Err(r.err(&format!("{at}.name"), format!("`{name}` is declared twice")));
        }
        let mut prop = Map::new();
        // Stage7 has types JSON Schema does not (`any`, `plan`, `directory`):
        // those are left unconstrained.
        if let Some(t) = r.string(def.get("type"), &format!("{at}.type"))? {
            let t = t.to_ascii_lowercase();
            if ["string", "number", "integer", "boolean", "object", "array"].contains(&t.as_str()) {
                prop.insert("type".into(), Value::String(t));
            }
        }
        if let Some(d) = r.string(def.get("description"), &format!("{at}.description"))? {
            prop.insert("description".into(), Value::String(d));
        }
        match def.get("required") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => required.push(Value::String(name.clone())),
            Some(other) => {
                return Err(r.err(
                    &format!("{at}.required"),
                    format!("must be true or false, got {}", kind(other)),
                ));
            }
        }
        properties.insert(name.clone(), Value::Object(prop));
        names.push(name);
    }
    let mut schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        schema["required"] = Value::Array(required);
    }
    Ok((schema, names))
}

/// `container`: the ductile container block (checked by its own rules, with
/// Stage7's field names in messages), the API port and the health check.
fn container_block(
    r: &Rules<'_>,
    c: &Map<String, Value>,
) -> Result<(spec::ContainerSpec, Vec<u16>, HealthCheck), ManifestError> {
    let image = r.required(c.get("image"), "container.image")?;
    r.string(c.get("dockerfile"), "container.dockerfile")?;
    let mut block = serde_yaml::Mapping::new();
    let mut put = |k: &str, v: serde_yaml::Value| {
        block.insert(serde_yaml::Value::String(k.to_string()), v);
    };
    put("image", image.into());
    // A Stage7 image is named by the tag its Dockerfile was built under; the
    // seal records the ID it resolves to, so a moved tag shows as drift.
    put("allow_mutable_tag", true.into());
    // A published port needs a network; the port is bound on loopback only.
    put("network", "bridge".into());
    if let Some(env) = r.object(c.get("environment"), "container.environment")? {
        let mut m = serde_yaml::Mapping::new();
        for (k, v) in env {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(r.err(
                        &format!("container.environment.{k}"),
                        format!("must be a string, number or boolean, got {}", kind(other)),
                    ));
                }
            };
            m.insert(k.clone().into(), v.into());
        }
        put("env", serde_yaml::Value::Mapping(m));
    }
    if let Some(res) = r.object(c.get("resources"), "container.resources")? {
        let mut m = serde_yaml::Mapping::new();
        for (k, v) in res {
            let key = match k.as_str() {
                "memory" => "memory",
                "cpu" | "cpus" => "cpus",
                _ => {
                    return Err(r.err(
                        &format!("container.resources.{k}"),
                        "unknown key (known: memory, cpu)",
                    ));
                }
            };
            let v = match v {
                Value::String(s) => serde_yaml::Value::String(s.clone()),
                Value::Number(n) => serde_yaml::Value::String(n.to_string()),
                other => {
                    return Err(r.err(
                        &format!("container.resources.{k}"),
                        format!("must be a string or a number, got {}", kind(other)),
                    ));
                }
            };
            m.insert(key.into(), v);
        }
        put("resources", serde_yaml::Value::Mapping(m));
    }
    let spec = spec::parse(&serde_yaml::Value::Mapping(block)).map_err(|(field, msg)| {
        let field = match field.as_str() {
            "env" => "container.environment".to_string(),
            f if f.starts_with("env.") => format!("container.environment.{}", &f[4..]),
            "resources.cpus" => "container.resources.cpu".to_string(),
            f => format!("container.{f}"),
        };
        r.err(&field, msg)
    })?;
    let ports = ports(r, c.get("ports"))?;
    let health = match r.object(c.get("healthCheck"), "container.healthCheck")? {
        None => HealthCheck {
            path: DEFAULT_HEALTH_PATH.to_string(),
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            retries: DEFAULT_RETRIES,
        },
        Some(h) => {
            let path = r
                .string(h.get("path"), "container.healthCheck.path")?
                .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
            url_path(r, &path, "container.healthCheck.path")?;
            let retries = match h.get("retries") {
                None | Some(Value::Null) => DEFAULT_RETRIES,
                Some(v) => match v.as_u64() {
                    Some(n @ 1..=1000) => n as u32,
                    _ => {
                        return Err(r.err(
                            "container.healthCheck.retries",
                            format!("must be an integer from 1 to 1000, got {v}"),
                        ));
                    }
                },
            };
            HealthCheck {
                path,
                interval: r.duration(
                    h.get("interval"),
                    "container.healthCheck.interval",
                    DEFAULT_INTERVAL,
                )?,
                timeout: r.duration(
                    h.get("timeout"),
                    "container.healthCheck.timeout",
                    DEFAULT_HEALTH_TIMEOUT,
                )?,
                retries,
            }
        }
    };
    Ok((spec, ports, health))
}

/// The container ports of every `ports` entry, never empty: `8080`, `"8080"`
/// or `{container: 8080, host: ...}` each (the host port is not used: ductile
/// publishes each on an ephemeral loopback port). The first is the API port.
fn ports(r: &Rules<'_>, v: Option<&Value>) -> Result<Vec<u16>, ManifestError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(vec![DEFAULT_PORT]),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(r.err(
                "container.ports",
                format!("must be a list, got {}", kind(other)),
            ));
        }
    };
    if items.is_empty() {
        return Ok(vec![DEFAULT_PORT]);
    }
    let mut out: Vec<u16> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("container.ports[{i}]");
        let value = match item {
            Value::Object(m) => m
                .get("container")
                .ok_or_else(|| r.err(&field, "has no `container` port"))?,
            other => other,
        };
        let n = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().trim_end_matches("/tcp").parse::<u64>().ok(),
            _ => None,
        };
        let port = match n {
            Some(p @ 1..=65535) => p as u16,
            _ => {
                return Err(r.err(
                    &field,
                    format!("must be a TCP port from 1 to 65535, got {value}"),
                ));
            }
        };
        if let Some(first) = out.iter().position(|p| *p == port) {
            return Err(r.err(
                &field,
                format!("port {port} is already listed as container.ports[{first}]"),
            ));
        }
        out.push(port);
    }
    Ok(out)
}

fn api_block(r: &Rules<'_>, a: &Map<String, Value>) -> Result<Api, ManifestError> {
    let endpoint = r
        .string(a.get("endpoint"), "api.endpoint")?
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    url_path(r, &endpoint, "api.endpoint")?;
    let method = r
        .string(a.get("method"), "api.method")?
        .unwrap_or_else(|| "POST".to_string())
        .to_ascii_uppercase();
    if method != "POST" && method != "PUT" {
        return Err(r.err("api.method", format!("must be POST or PUT, got `{method}`")));
    }
    let timeout = r.duration(a.get("timeout"), "api.timeout", DEFAULT_API_TIMEOUT)?;
    Ok(Api {
        endpoint,
        method,
        timeout,
    })
}

fn url_path(r: &Rules<'_>, path: &str, field: &str) -> Result<(), ManifestError> {
    let ok = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'#' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(r.err(
            field,
            format!("must be a URL path starting with `/`, got `{path}`"),
        ))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "plugins/s7/manifest.json";

    fn manifest(extra: &str) -> String {
        format!(
            r#"{{"id": "word-count", "verb": "COUNT_WORDS", "name": "Word count", "version": "1.2.0",
            "inputDefinitions": [{{"name": "text", "type": "string", "required": true, "description": "what to count"}},
                                 {{"name": "mode", "type": "plan"}}],
            "outputDefinitions": [{{"name": "count", "type": "number"}}],
            "container": {{"dockerfile": "Dockerfile", "image": "stage7/word-count:1.0",
                "ports": [{{"container": 9000, "host": 9000}}], "environment": {{"LANG_MODE": "fast", "N": 3}},
                "resources": {{"memory": "64m", "cpu": "0.5"}},
                "healthCheck": {{"path": "/healthz", "interval": "200ms", "timeout": 2000, "retries": 4}}}},
            "api": {{"endpoint": "/run", "method": "post", "timeout": "10s"}}{extra}}}"#
        )
    }

    fn check_err(text: &str, field: &str, message: &str) {
        let e = parse(Path::new(FILE), text).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (field, message),
            "{text}"
        );
        let shown = if field.is_empty() {
            format!("{FILE}: {message}")
        } else {
            format!("{FILE}: {field}: {message}")
        };
        assert_eq!(e.to_string(), shown);
    }

    #[test]
    fn a_stage7_manifest_becomes_a_container_plugin() {
        let m = parse(Path::new(FILE), &manifest("")).unwrap();
        assert_eq!(
            (m.name.as_str(), m.version.as_str()),
            ("word-count", "1.2.0")
        );
        let names: Vec<&str> = m.commands.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["handle", "health"]);
        let handle = m.command("handle").unwrap();
        assert_eq!(
            handle.input_schema,
            Some(
                json!({"type": "object", "required": ["text"], "properties": {
                    "text": {"type": "string", "description": "what to count"},
                    "mode": {}
                }})
            )
        );
        let c = m.container.unwrap();
        assert_eq!(c.envelope, Envelope::Stage7);
        assert_eq!(c.network, spec::Network::Bridge);
        assert_eq!((c.memory.as_str(), c.cpus.as_str()), ("64m", "0.5"));
        assert_eq!(c.env.get("N").map(String::as_str), Some("3"));
        let s = c.stage7.unwrap();
        assert_eq!(s.port(), 9000);
        assert_eq!(s.ports, [9000]);
        assert_eq!(s.inputs, ["text", "mode"]);
        assert_eq!(
            s.health,
            HealthCheck {
                path: "/healthz".into(),
                interval: Duration::from_millis(200),
                timeout: Duration::from_secs(2),
                retries: 4
            }
        );
        assert_eq!(
            s.api,
            Api {
                endpoint: "/run".into(),
                method: "POST".into(),
                timeout: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn defaults_fill_what_is_not_declared() {
        let text = r#"{"id": "x", "verb": "X", "name": "X", "inputDefinitions": [], "outputDefinitions": [],
            "container": {"image": "x:1"}, "api": {}}"#;
        let m = parse(Path::new(FILE), text).unwrap();
        assert_eq!(m.version, UNVERSIONED);
        let s = m.container.unwrap().stage7.unwrap();
        assert_eq!(s.port(), DEFAULT_PORT);
        assert_eq!(s.ports, [DEFAULT_PORT]);
        assert_eq!(s.health.path, "/health");
        assert_eq!(s.api.endpoint, "/execute");
        assert_eq!(s.api.timeout, DEFAULT_API_TIMEOUT);
    }

    #[test]
    fn refusals_name_the_stage7_field() {
        check_err("[1]", "", "the manifest must be an object, got a list");
        check_err(
            &manifest("").replace(r#""id": "word-count", "#, ""),
            "id",
            "is required",
        );
        check_err(
            &manifest("").replace(r#""cpu": "0.5""#, r#""cpu": "lots""#),
            "container.resources.cpu",
            "must be a positive number such as 1 or 0.5, got `lots`",
        );
        check_err(
            &manifest("").replace(r#""LANG_MODE""#, r#""1BAD""#),
            "container.environment.1BAD",
            "is not a valid variable name",
        );
        check_err(
            &manifest("").replace(r#""retries": 4"#, r#""retries": 0"#),
            "container.healthCheck.retries",
            "must be an integer from 1 to 1000, got 0",
        );
        check_err(
            &manifest("").replace(r#""interval": "200ms""#, r#""interval": "soon""#),
            "container.healthCheck.interval",
            "invalid duration `soon`: expected a number before `soon`",
        );
        check_err(
            &manifest("").replace(r#""container": 9000,"#, r#""container": 70000,"#),
            "container.ports[0]",
            "must be a TCP port from 1 to 65535, got 70000",
        );
        check_err(
            &manifest("").replace(
                r#"{"container": 9000, "host": 9000}"#,
                r#"{"container": 9000, "host": 9000}, "9100/tcp", 9000"#,
            ),
            "container.ports[2]",
            "port 9000 is already listed as container.ports[0]",
        );
        check_err(
            &manifest("").replace(r#""endpoint": "/run""#, r#""endpoint": "run""#),
            "api.endpoint",
            "must be a URL path starting with `/`, got `run`",
        );
        check_err(
            &manifest("").replace(r#""method": "post""#, r#""method": "GET""#),
            "api.method",
            "must be POST or PUT, got `GET`",
        );
        check_err(
            &manifest("").replace(
                r#""outputDefinitions": [{"name": "count", "type": "number"}],"#,
                "",
            ),
            "outputDefinitions",
            "is required (a list, possibly empty)",
        );
        check_err(
            &manifest("").replace(r#"{"name": "mode", "type": "plan"}"#, r#"{"name": "text"}"#),
            "inputDefinitions[1].name",
            "`text` is declared twice",
        );
    }
}
