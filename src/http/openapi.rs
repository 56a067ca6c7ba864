//! The discovery documents: the OpenAPI 3.1 document of the whole API
//! (`GET /openapi.json`) and of one plugin (`GET /plugin/{name}/openapi.json`),
//! the plugin catalog (`GET /plugins`) and detail (`GET /plugin/{name}`), the
//! skills index (`GET /skills`), the AI plugin manifest
//! (`GET /.well-known/ai-plugin.json`) and the root index (`GET /`).
//!
//! Owns: [`ROUTES`], the table of every route the API serves with its
//! parameters, bodies, statuses and whether it needs a token, and the operations
//! built from the loaded plugins' manifests (one per command).
//! Must not: do HTTP or touch the database. Every function is pure over a
//! runtime snapshot, so the HTTP layer serves what it returns and a reload
//! changes the documents with the snapshot.

mod schemas;

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::plugin::manifest::{CommandKind, CommandSpec, Manifest, Values};
use crate::runtime::Runtime;
use schemas::reference;

/// The service name every document shows.
const TITLE: &str = "Ductile Gateway";

/// Whether a route needs a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Served to anyone (discovery and health).
    Public,
    /// Needs `Authorization: Bearer <token>` with a fitting scope.
    Bearer,
}

/// Where a parameter travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A `{name}` segment of the path.
    Path,
    /// A query-string parameter.
    Query,
    /// A request header.
    Header,
}

/// A parameter's value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any string.
    Text,
    /// An integer in `min..=max`, `default` when absent.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
        /// Value used when the parameter is absent.
        default: i64,
    },
    /// `true` or `false`.
    Boolean,
    /// An RFC 3339 timestamp.
    DateTime,
    /// One of the listed strings.
    OneOf(&'static [&'static str]),
}

/// One documented parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Name as it appears in the path template, query string or header.
    pub name: &'static str,
    /// Where it travels.
    pub location: Location,
    /// Its value type.
    pub kind: Kind,
    /// One line for the reader.
    pub description: &'static str,
}

/// A body: JSON described by a component schema, or text of one media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// `application/json` described by `components.schemas.<name>`.
    Json(&'static str),
    /// Text of this media type (`text/plain`, `text/event-stream`).
    Text(&'static str),
}

/// One documented response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// What the body holds.
    pub body: Body,
}

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path template with `{name}` segments.
    pub path: &'static str,
    /// The operation's unique id.
    pub operation_id: &'static str,
    /// One line.
    pub summary: &'static str,
    /// The tag grouping it.
    pub tag: &'static str,
    /// Whether it needs a token.
    pub access: Access,
    /// Path, query and header parameters.
    pub params: &'static [Param],
    /// The JSON request body's component schema, if it takes one.
    pub request: Option<&'static str>,
    /// The success response.
    pub ok: Reply,
    /// Every documented failure.
    pub errors: &'static [Reply],
}

const fn path(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: Location::Path,
        kind: Kind::Text,
        description,
    }
}

const fn query(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param {
        name,
        location: Location::Query,
        kind,
        description,
    }
}

const fn json(status: u16, schema: &'static str) -> Reply {
    Reply {
        status,
        body: Body::Json(schema),
    }
}

const E400: Reply = json(400, "Error");
const E401: Reply = json(401, "Error");
const E403: Reply = json(403, "Error");
const E404: Reply = json(404, "Error");
const E413: Reply = json(413, "Error");
const E503: Reply = json(503, "Error");

const PLUGIN: Param = path("plugin", "Plugin instance name (a key under `plugins:`).");
const COMMAND: Param = path("command", "Command declared in the plugin's manifest.");
const NAME: Param = path("name", "Plugin instance name (a key under `plugins:`).");
const JOB_ID: Param = path("id", "Job id.");

/// Accepted by the `status` filters: the ledger's statuses and their aliases
/// (`pending` = queued, `ok` = succeeded, `error` = failed).
const STATUS_FILTER: &[&str] = &[
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "dead",
    "pending",
    "ok",
    "error",
];
const LIMIT: Param = query(
    "limit",
    Kind::Integer {
        min: 1,
        max: 200,
        default: 50,
    },
    "Most rows returned.",
);
const PLUGIN_FILTER: Param = query("plugin", Kind::Text, "Exact plugin name.");
const COMMAND_FILTER: Param = query("command", Kind::Text, "Exact command name.");
const STATUS: Param = query(
    "status",
    Kind::OneOf(STATUS_FILTER),
    "Job status (`pending`, `ok` and `error` are aliases of queued, succeeded and failed).",
);

/// Every route of the API, in the order the documents list them.
pub static ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/",
        operation_id: "root",
        summary: "Discovery index",
        tag: "discovery",
        access: Access::Public,
        params: &[],
        request: None,
        ok: json(200, "Root"),
        errors: &[],
    },
    Route {
        method: "GET",
        path: "/healthz",
        operation_id: "health",
        summary: "Service health",
        tag: "system",
        access: Access::Public,
        params: &[],
        request: None,
        ok: json(200, "Health"),
        errors: &[],
    },
    Route {
        method: "POST",
        path: "/plugin/{plugin}/{command}",
        operation_id: "trigger_plugin_command",
        summary: "Enqueue one job for a plugin command (bypasses pipeline routing)",
        tag: "plugins",
        access: Access::Bearer,
        params: &[PLUGIN, COMMAND],
        request: Some("TriggerRequest"),
        ok: json(202, "JobAccepted"),
        errors: &[E400, E401, E403, E404, E413],
    },
    Route {
        method: "GET",
        path: "/job/{id}",
        operation_id: "get_job",
        summary: "A job's status and result",
        tag: "jobs",
        access: Access::Bearer,
        params: &[JOB_ID],
        request: None,
        ok: json(200, "Job"),
        errors: &[E401, E403, E404],
    },
    Route {
        method: "GET",
        path: "/job/{id}/tree",
        operation_id: "get_job_tree",
        summary: "A job and every job descended from it",
        tag: "jobs",
        access: Access::Bearer,
        params: &[JOB_ID],
        request: None,
        ok: json(200, "JobTree"),
        errors: &[E401, E403, E404],
    },
    Route {
        method: "GET",
        path: "/jobs",
        operation_id: "list_jobs",
        summary: "Jobs, most recent first",
        tag: "jobs",
        access: Access::Bearer,
        params: &[PLUGIN_FILTER, COMMAND_FILTER, STATUS, LIMIT],
        request: None,
        ok: json(200, "JobList"),
        errors: &[E400, E401, E403],
    },
    Route {
        method: "GET",
        path: "/job-logs",
        operation_id: "list_job_logs",
        summary: "Stored attempt records, most recently completed first",
        tag: "jobs",
        access: Access::Bearer,
        params: &[
            query("job_id", Kind::Text, "Job id."),
            PLUGIN_FILTER,
            COMMAND_FILTER,
            STATUS,
            query("submitted_by", Kind::Text, "Exact submitter."),
            query("from", Kind::DateTime, "Completed at or after."),
            query("to", Kind::DateTime, "Completed at or before."),
            query(
                "query",
                Kind::Text,
                "Text searched in last_error, stderr and result.",
            ),
            LIMIT,
            query(
                "include_result",
                Kind::Boolean,
                "Include each attempt's full result.",
            ),
        ],
        request: None,
        ok: json(200, "JobLogList"),
        errors: &[E400, E401, E403],
    },
    Route {
        method: "GET",
        path: "/plugins",
        operation_id: "list_plugins",
        summary: "Catalog of loaded plugins",
        tag: "discovery",
        access: Access::Public,
        params: &[],
        request: None,
        ok: json(200, "PluginCatalog"),
        errors: &[],
    },
    Route {
        method: "GET",
        path: "/plugin/{name}",
        operation_id: "get_plugin",
        summary: "A plugin's manifest details and command schemas",
        tag: "plugins",
        access: Access::Bearer,
        params: &[NAME],
        request: None,
        ok: json(200, "PluginDetail"),
        errors: &[E401, E403, E404],
    },
    Route {
        method: "GET",
        path: "/plugin/{name}/openapi.json",
        operation_id: "get_plugin_openapi",
        summary: "OpenAPI document scoped to one plugin's commands",
        tag: "discovery",
        access: Access::Public,
        params: &[NAME],
        request: None,
        ok: json(200, "OpenApiDocument"),
        errors: &[E404],
    },
    Route {
        method: "GET",
        path: "/openapi.json",
        operation_id: "get_openapi",
        summary: "This document",
        tag: "discovery",
        access: Access::Public,
        params: &[],
        request: None,
        ok: json(200, "OpenApiDocument"),
        errors: &[],
    },
    Route {
        method: "GET",
        path: "/skills",
        operation_id: "list_skills",
        summary: "Skill index: plugin commands and pipelines",
        tag: "discovery",
        access: Access::Public,
        params: &[],
        request: None,
        ok: json(200, "SkillIndex"),
        errors: &[],
    },
    Route {
        method: "GET",
        path: "/.well-known/ai-plugin.json",
        operation_id: "get_ai_plugin",
        summary: "AI plugin manifest pointing at /openapi.json",
        tag: "discovery",
        access: Access::Public,
        params: &[],
        request: None,
        ok: json(200, "AiPlugin"),
        errors: &[],
    },
    Route {
        method: "POST",
        path: "/system/reload",
        operation_id: "reload",
        summary: "Reload the configuration without restarting",
        tag: "system",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json(200, "ReloadResult"),
        errors: &[json(400, "ReloadError"), E401, E403],
    },
    Route {
        method: "GET",
        path: "/analytics/queue",
        operation_id: "queue_analytics",
        summary: "Queue depth and worker utilisation",
        tag: "analytics",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json(200, "QueueAnalytics"),
        errors: &[E401, E403],
    },
    Route {
        method: "GET",
        path: "/analytics/summary",
        operation_id: "summary_analytics",
        summary: "Job outcomes over the last 24 hours",
        tag: "analytics",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json(200, "SummaryAnalytics"),
        errors: &[E401, E403],
    },
    Route {
        method: "GET",
        path: "/config/view",
        operation_id: "view_config",
        summary: "The reconciled configuration, secrets redacted",
        tag: "system",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json(200, "ConfigView"),
        errors: &[E401, E403],
    },
    Route {
        method: "GET",
        path: "/stopwatch/{plugin}",
        operation_id: "stopwatch",
        summary: "Latency percentiles of a plugin's jobs",
        tag: "analytics",
        access: Access::Bearer,
        params: &[
            PLUGIN,
            query(
                "window",
                Kind::Text,
                "How far back to look, as a duration such as `1h`.",
            ),
        ],
        request: None,
        ok: json(200, "Stopwatch"),
        errors: &[E400, E401, E403, E404],
    },
    Route {
        method: "GET",
        path: "/topology",
        operation_id: "topology",
        summary: "Plugins, schedules, webhooks, routes and pipelines as a graph",
        tag: "system",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json(200, "Topology"),
        errors: &[E401, E403],
    },
    Route {
        method: "GET",
        path: "/events",
        operation_id: "events",
        summary: "Server-sent event stream, resumable from Last-Event-ID",
        tag: "events",
        access: Access::Bearer,
        params: &[Param {
            name: "Last-Event-ID",
            location: Location::Header,
            kind: Kind::Text,
            description: "Resume after this event id.",
        }],
        request: None,
        ok: Reply {
            status: 200,
            body: Body::Text("text/event-stream"),
        },
        errors: &[E401, E403, E503],
    },
    Route {
        method: "GET",
        path: "/metrics",
        operation_id: "metrics",
        summary: "Metrics in the Prometheus text format",
        tag: "analytics",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: Reply {
            status: 200,
            body: Body::Text("text/plain"),
        },
        errors: &[E401, E403],
    },
];

/// The core tags, with what they group.
const TAGS: &[(&str, &str)] = &[
    (
        "discovery",
        "Unauthenticated documents describing this API.",
    ),
    ("system", "Health, reload and configuration."),
    ("plugins", "Plugin details and direct command execution."),
    ("jobs", "The job ledger."),
    ("analytics", "Queue, outcome and latency figures."),
    ("events", "Live event stream."),
];

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
    document_of(&entries(rt))
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
    json!({ "BearerAuth": { "type": "http", "scheme": "bearer" } })
}

fn security(access: Access) -> Value {
    match access {
        Access::Public => json!([]),
        Access::Bearer => json!([{ "BearerAuth": [] }]),
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
        200 => summary,
        202 => "Job queued",
        400 => "Bad request",
        401 => "Missing or invalid bearer token",
        403 => "The token lacks the scope this needs",
        404 => "Not found",
        413 => "Request body too large",
        503 => "Unavailable: too many open streams",
        _ => "See the status",
    };
    let content = match reply.body {
        Body::Json(schema) => json!({ "application/json": { "schema": reference(schema) } }),
        Body::Text(media) => json!({ media: { "schema": { "type": "string" } } }),
    };
    json!({ "description": description, "content": content })
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
    for reply in [json(202, "JobAccepted"), E400, E401, E403, E404] {
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
fn segment(name: &str) -> String {
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
    Some(detail_of(Entry {
        name: &p.name,
        manifest: &p.manifest,
    }))
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
