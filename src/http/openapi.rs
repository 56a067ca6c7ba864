//! The discovery documents: the OpenAPI 3.1 document of the whole API
//! (`GET /openapi.json`) and of one plugin (`GET /plugin/{name}/openapi.json`),
//! the plugin catalog (`GET /plugins`) and detail (`GET /plugin/{name}`), the
//! skills index (`GET /skills`), the AI plugin manifest
//! (`GET /.well-known/ai-plugin.json`) and the root index (`GET /`).
//!
//! Owns: the documents built from [`routes::ROUTES`] (every route the API
//! serves) and the operations built from the loaded plugins' manifests (one per
//! command).
//! Must not: do HTTP or touch the database. Every function is pure over a
//! runtime snapshot, so the HTTP layer serves what it returns and a reload
//! changes the documents with the snapshot.

pub mod routes;
mod schemas;

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::plugin::manifest::{CommandKind, CommandSpec, Manifest, Values};
use crate::runtime::Runtime;
use routes::{
    Access, Body, E400, E401, E403, E404, E413, E503, Kind, Location, Param, ROUTES, Reply, Route,
    TAGS, json_reply,
};
use schemas::reference;

/// The service name every document shows.
const TITLE: &str = "Ductile Gateway";

/// A loaded plugin instance: its name (what the API paths use) and manifest.
#[derive(Clone, Copy)]
struct Entry<'a> {
    name: &'a str,
    manifest: &'a Manifest,
}

fn entries(rt: &Runtime) -> Vec<Entry<'_>> {
    rt.registry
        .plugins()
        .map(|p| Entry {
            name: &p.name,
            manifest: &p.manifest,
        })
        .collect()
}

/// The OpenAPI 3.1 document of the whole API: every route of [`ROUTES`] and one
/// operation per command of every loaded plugin.
pub fn document(rt: &Runtime) -> Value {
    let mut doc = document_of(&entries(rt));
    // Behind a proxy prefix every path is relative to it.
    let base = &rt.config.api.base_path;
    if !base.is_empty() {
        doc["servers"] = json!([{ "url": base }]);
    }
    doc
}

/// The OpenAPI 3.1 document scoped to `plugin`'s commands; None when no loaded
/// plugin instance has that name.
pub fn plugin_document(rt: &Runtime, plugin: &str) -> Option<Value> {
    let p = rt.registry.get(plugin)?;
    Some(plugin_document_of(Entry {
        name: &p.name,
        manifest: &p.manifest,
    }))
}

fn document_of(plugins: &[Entry<'_>]) -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            item.insert(route.method.to_ascii_lowercase(), route_operation(route));
        }
    }
    let mut tags: Vec<Value> = TAGS
        .iter()
        .map(|(name, description)| json!({ "name": name, "description": description }))
        .collect();
    let mut tagged: HashSet<&str> = TAGS.iter().map(|(name, _)| *name).collect();
    let mut ids = HashSet::new();
    for p in plugins {
        // A tag named like a core tag (a plugin called `jobs`) is listed once.
        if tagged.insert(p.name) {
            tags.push(plugin_tag(p));
        }
        command_paths(*p, &mut ids, &mut paths);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every route of the ductile API, and one operation per command of every loaded plugin.",
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "securitySchemes": security_schemes(),
            "schemas": schemas::all(),
        },
    })
}

fn plugin_document_of(p: Entry<'_>) -> Value {
    let mut paths = Map::new();
    command_paths(p, &mut HashSet::new(), &mut paths);
    let all = schemas::all();
    let used: Map<String, Value> = ["Error", "JobAccepted", "JobStatus"]
        .iter()
        .filter_map(|name| Some((name.to_string(), all.get(*name)?.clone())))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("The commands of plugin `{}`.", p.name),
        },
        "tags": [plugin_tag(&p)],
        "paths": paths,
        "components": {
            "securitySchemes": security_schemes(),
            "schemas": used,
        },
    })
}

fn security_schemes() -> Value {
    json!({
        "BearerAuth": { "type": "http", "scheme": "bearer" },
        "SessionCookie": { "type": "apiKey", "in": "cookie", "name": super::session::COOKIE },
    })
}

fn security(access: Access) -> Value {
    match access {
        Access::Public => json!([]),
        Access::Bearer => json!([{ "BearerAuth": [] }, { "SessionCookie": [] }]),
        Access::Session => json!([{ "SessionCookie": [] }]),
    }
}

fn plugin_tag(p: &Entry<'_>) -> Value {
    match &p.manifest.description {
        Some(d) => json!({ "name": p.name, "description": d }),
        None => json!({ "name": p.name }),
    }
}

fn route_operation(route: &Route) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.operation_id));
    op.insert("summary".into(), json!(route.summary));
    op.insert("tags".into(), json!([route.tag]));
    if !route.params.is_empty() {
        op.insert(
            "parameters".into(),
            route.params.iter().map(parameter).collect(),
        );
    }
    if let Some(schema) = route.request {
        op.insert(
            "requestBody".into(),
            json!({
                "required": false,
                "content": { "application/json": { "schema": reference(schema) } },
            }),
        );
    }
    let mut responses = Map::new();
    for reply in std::iter::once(&route.ok).chain(route.errors) {
        responses.insert(reply.status.to_string(), response(reply, route.summary));
    }
    op.insert("responses".into(), Value::Object(responses));
    op.insert("security".into(), security(route.access));
    Value::Object(op)
}

fn parameter(p: &Param) -> Value {
    let location = match p.location {
        Location::Path => "path",
        Location::Query => "query",
        Location::Header => "header",
    };
    let schema = match p.kind {
        // An empty segment is dropped before routing (`/job//tree` is
        // `/job/tree`), so a path parameter is never empty.
        Kind::Text if p.location == Location::Path => json!({ "type": "string", "minLength": 1 }),
        Kind::Text => json!({ "type": "string" }),
        Kind::Integer { min, max, default } => {
            json!({ "type": "integer", "minimum": min, "maximum": max, "default": default })
        }
        Kind::Boolean => json!({ "type": "boolean" }),
        Kind::DateTime => json!({ "type": "string", "format": "date-time" }),
        Kind::OneOf(values) => json!({ "type": "string", "enum": values }),
    };
    json!({
        "name": p.name,
        "in": location,
        "required": p.location == Location::Path,
        "description": p.description,
        "schema": schema,
    })
}

/// A response object; a 200 is described by `summary`, the operation's own line.
fn response(reply: &Reply, summary: &str) -> Value {
    let description = match reply.status {
        200 | 201 => summary,
        202 => "Job queued",
        400 => "Bad request",
        401 => "Missing or invalid bearer token, or an ended session",
        403 => {
            "The token lacks the scope this needs, or a change made with the session cookie lacks X-CSRF-Token"
        }
        404 => "Not found",
        405 => "Method not allowed on this path (see `Allow`)",
        409 => "The job is not in a state that allows this",
        413 => "Request body too large",
        415 => "The body is not sent as application/json",
        503 => "Unavailable for now (the ledger is busy, or too many streams are open); retry",
        _ => "See the status",
    };
    let content = match reply.body {
        Body::Json(schema) => json!({ "application/json": { "schema": reference(schema) } }),
        Body::Text(media) => json!({ media: { "schema": { "type": "string" } } }),
    };
    let mut out = json!({ "description": description, "content": content });
    // Headers the server always sends with these statuses.
    let header = match reply.status {
        401 => Some(("WWW-Authenticate", "`Bearer`")),
        405 => Some(("Allow", "The methods this path takes")),
        _ => None,
    };
    if let Some((name, description)) = header {
        out["headers"] = json!({ name: {
            "description": description,
            "required": true,
            "schema": { "type": "string" },
        } });
    }
    out
}

/// Adds one `POST /plugin/<name>/<command>` path per command of `p`; `ids`
/// keeps operation ids unique across plugins whose names contain `__`.
fn command_paths(p: Entry<'_>, ids: &mut HashSet<String>, paths: &mut Map<String, Value>) {
    for c in &p.manifest.commands {
        let base = format!("{}__{}", p.name, c.name);
        let mut id = base.clone();
        let mut n = 2;
        while !ids.insert(id.clone()) {
            id = format!("{base}_{n}");
            n += 1;
        }
        let path = format!("/plugin/{}/{}", segment(p.name), segment(&c.name));
        paths.insert(path, json!({ "post": command_operation(p.name, c, &id) }));
    }
}

fn command_operation(plugin: &str, c: &CommandSpec, id: &str) -> Value {
    let scope = match c.kind {
        CommandKind::Read => "`plugin:ro`, `plugin:rw` or `*`",
        CommandKind::Write => "`plugin:rw` or `*`",
    };
    let mut op = Map::new();
    op.insert("operationId".into(), json!(id));
    op.insert("summary".into(), json!(summary(plugin, c)));
    op.insert(
        "description".into(),
        json!(format!(
            "Enqueues one `{}` job of plugin `{plugin}` (a `{}` command; needs scope {scope}).",
            c.name,
            c.kind.as_str()
        )),
    );
    op.insert("tags".into(), json!([plugin]));
    // Without an input_schema there is nothing true to say about the body, so
    // none is documented (the spec's graceful degradation).
    if let Some(schema) = &c.input_schema {
        op.insert(
            "requestBody".into(),
            json!({
                "required": false,
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "properties": { "payload": schema },
                } } },
            }),
        );
    }
    let mut responses = Map::new();
    for reply in [
        json_reply(202, "JobAccepted"),
        E400,
        E401,
        E403,
        E404,
        E413,
        E503,
    ] {
        responses.insert(reply.status.to_string(), response(&reply, ""));
    }
    op.insert("responses".into(), Value::Object(responses));
    op.insert("security".into(), security(Access::Bearer));
    Value::Object(op)
}

/// A command's one-line summary: its description, else `plugin: command`.
fn summary(plugin: &str, c: &CommandSpec) -> String {
    c.description
        .clone()
        .unwrap_or_else(|| format!("{plugin}: {}", c.name))
}

/// `name` as one path segment: RFC 3986 unreserved characters as they are,
/// every other byte percent-encoded (so no name can open a `{template}` or
/// add a segment).
pub(crate) fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `GET /plugins`: `{plugins: [{name, version, description, commands}]}`.
pub fn plugins_catalog(rt: &Runtime) -> Value {
    catalog_of(&entries(rt))
}

fn catalog_of(plugins: &[Entry<'_>]) -> Value {
    let list: Vec<Value> = plugins
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "version": p.manifest.version,
                "description": p.manifest.description,
                "commands": p.manifest.commands.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "plugins": list })
}

/// `GET /plugin/{name}`: the manifest's details and every command's contract;
/// None when no loaded plugin instance has that name.
pub fn plugin_detail(rt: &Runtime, name: &str) -> Option<Value> {
    let p = rt.registry.get(name)?;
    let mut detail = detail_of(Entry {
        name: &p.name,
        manifest: &p.manifest,
    });
    if let (Some(c), Value::Object(fields)) = (&p.manifest.container, &mut detail) {
        let held = p.conf.keep_warm.map(|_| {
            let state = crate::disk::ledger_dir(&rt.config.state.path);
            crate::plugin::container::stage7::warm::held(state, &p.name)
        });
        let summary = crate::plugin::container::summary(c, p.conf.keep_warm, held);
        fields.insert("container".into(), Value::Object(summary));
    }
    Some(detail)
}

fn detail_of(p: Entry<'_>) -> Value {
    let commands: Vec<Value> = p
        .manifest
        .commands
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.kind.as_str(),
                "description": c.description,
                "input_schema": c.input_schema,
                "output_schema": c.output_schema,
                "values": c.values.as_ref().map(values_json),
            })
        })
        .collect();
    json!({
        "name": p.name,
        "version": p.manifest.version,
        "description": p.manifest.description,
        "protocol": p.manifest.protocol,
        "commands": commands,
    })
}

fn values_json(v: &Values) -> Value {
    let emit: Vec<Value> = v
        .emit
        .iter()
        .map(|e| json!({ "event": e.event, "values": e.values }))
        .collect();
    json!({ "consume": v.consume, "emit": emit })
}

/// `GET /skills`: one `plugin.<plugin>.<command>` skill per loaded command.
/// Pipelines join the index when pipelines are loaded.
pub fn skills(rt: &Runtime) -> Value {
    skills_of(&entries(rt))
}

fn skills_of(plugins: &[Entry<'_>]) -> Value {
    let list: Vec<Value> = plugins
        .iter()
        .flat_map(|p| {
            p.manifest.commands.iter().map(move |c| {
                let tier = match c.kind {
                    CommandKind::Read => "READ",
                    CommandKind::Write => "WRITE",
                };
                json!({
                    "name": format!("plugin.{}.{}", p.name, c.name),
                    "kind": "plugin",
                    "description": summary(p.name, c),
                    "endpoint": format!("/plugin/{}/{}", segment(p.name), segment(&c.name)),
                    "tier": tier,
                    "plugin": p.name,
                    "command": c.name,
                })
            })
        })
        .collect();
    json!({ "skills": list })
}

/// `GET /.well-known/ai-plugin.json`: points agents at `/openapi.json`.
pub fn ai_plugin() -> Value {
    json!({
        "schema_version": "v1",
        "name_for_human": TITLE,
        "name_for_model": "ductile",
        "description_for_human": "Integration gateway for triggering plugins and pipelines.",
        "description_for_model": "Discover and invoke plugins. Fetch /openapi.json for the full spec, or /plugin/{name}/openapi.json for a single plugin. Invoke commands via POST /plugin/{name}/{command}.",
        "auth": { "type": "bearer" },
        "api": { "type": "openapi", "url": "/openapi.json" },
    })
}

/// `GET /`: the discovery index.
pub fn root(uptime_seconds: u64) -> Value {
    json!({
        "name": TITLE,
        "description": "Lightweight, open-source integration engine for the agentic era.",
        "uptime_seconds": uptime_seconds,
        "discovery": {
            "health": "/healthz",
            "skills": "/skills",
            "plugins": "/plugins",
            "openapi": "/openapi.json",
            "ai_plugin": "/.well-known/ai-plugin.json",
        },
    })
}

#[cfg(test)]
mod tests;
