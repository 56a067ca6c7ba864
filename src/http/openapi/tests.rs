use super::*;
use crate::plugin::manifest;
use std::path::Path;

const ECHO: &str = include_str!("../../../plugins/echo/manifest.yaml");
const SCHEMAS: &str = include_str!("../../../tests/fixtures/plugins/schemas/manifest.yaml");

fn parse(text: &str) -> Manifest {
    match manifest::parse(Path::new("manifest.yaml"), text) {
        Ok(m) => m,
        Err(e) => panic!("fixture manifest does not parse: {e}"),
    }
}

fn entry<'a>(name: &'a str, manifest: &'a Manifest) -> Entry<'a> {
    Entry { name, manifest }
}

/// Every `$ref` under `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn assert_refs_resolve(doc: &Value) {
    let mut found = Vec::new();
    refs(doc, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let Some(name) = r.strip_prefix("#/components/schemas/") else {
            panic!("unexpected $ref {r}");
        };
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
}

#[test]
fn every_path_template_segment_has_its_path_parameter() {
    for route in ROUTES {
        let mut in_path: Vec<&str> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let mut declared: Vec<&str> = route
            .params
            .iter()
            .filter(|p| p.location == Location::Path)
            .map(|p| p.name)
            .collect();
        in_path.sort_unstable();
        declared.sort_unstable();
        assert_eq!(in_path, declared, "{} {}", route.method, route.path);
    }
}

#[test]
fn routes_are_unique_and_their_schemas_exist() {
    let all = schemas::all();
    let mut ids = HashSet::new();
    let mut routes = HashSet::new();
    for route in ROUTES {
        assert!(ids.insert(route.operation_id), "{}", route.operation_id);
        assert!(routes.insert((route.method, route.path)), "{}", route.path);
        assert!(TAGS.iter().any(|(t, _)| *t == route.tag), "{}", route.tag);
        let bodies = std::iter::once(&route.ok).chain(route.errors);
        for name in bodies
            .filter_map(|r| match r.body {
                Body::Json(name) => Some(name),
                Body::Text(_) => None,
            })
            .chain(route.request)
        {
            assert!(all.contains_key(name), "{name}");
        }
        // The other answers: errors, and for a pipeline the 200 a
        // synchronous run gives besides the 202.
        for e in route.errors {
            assert!(e.status != route.ok.status, "{}", route.path);
        }
    }
}

#[test]
fn only_the_discovery_routes_and_health_are_public() {
    let public: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        public,
        [
            "/",
            "/healthz",
            "/plugins",
            "/plugin/{name}/openapi.json",
            "/openapi.json",
            "/skills",
            "/.well-known/ai-plugin.json",
            "/session"
        ]
    );
    let doc = document_of(&[]);
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        let expected = match route.access {
            Access::Public => json!([]),
            Access::Bearer => json!([{ "BearerAuth": [] }, { "SessionCookie": [] }]),
            Access::Session => json!([{ "SessionCookie": [] }]),
        };
        assert_eq!(op["security"], expected, "{}", route.path);
        // A route with a token can always be refused for it.
        if route.access != Access::Public {
            assert!(op["responses"].get("401").is_some(), "{}", route.path);
        }
        if route.access == Access::Bearer {
            assert!(op["responses"].get("403").is_some(), "{}", route.path);
        }
    }
}

#[test]
fn every_route_statuses_are_documented_as_listed() {
    let doc = document_of(&[]);
    let statuses = |method: &str, path: &str| -> Vec<String> {
        match doc["paths"][path][method]["responses"].as_object() {
            Some(m) => m.keys().cloned().collect(),
            None => panic!("no {method} {path}"),
        }
    };
    assert_eq!(
        statuses("post", "/plugin/{plugin}/{command}"),
        ["202", "400", "401", "403", "404", "405", "413", "503"]
    );
    assert_eq!(
        statuses("get", "/jobs"),
        ["200", "400", "401", "403", "503"]
    );
    assert_eq!(
        statuses("get", "/events"),
        ["200", "400", "401", "403", "503"]
    );
    assert_eq!(
        statuses("get", "/plugin/{name}/openapi.json"),
        ["200", "400", "404"]
    );
    assert_eq!(
        statuses("get", "/stopwatch/{plugin}"),
        ["200", "400", "401", "403", "404", "503"]
    );
    assert_eq!(statuses("get", "/healthz"), ["200", "503"]);
    assert_eq!(
        statuses("get", "/job/{id}"),
        ["200", "400", "401", "403", "404", "503"]
    );
    assert_eq!(
        statuses("post", "/system/reload"),
        ["200", "400", "401", "403", "413"]
    );
    let trigger = &doc["paths"]["/plugin/{plugin}/{command}"]["post"]["responses"];
    assert_eq!(trigger["405"]["headers"]["Allow"]["required"], json!(true));
    assert_eq!(
        doc["paths"]["/system/reload"]["post"]["responses"]["400"]["content"]["application/json"]["schema"],
        json!({ "$ref": "#/components/schemas/ReloadError" })
    );
    assert_eq!(
        doc["paths"]["/events"]["get"]["responses"]["200"]["content"],
        json!({ "text/event-stream": { "schema": { "type": "string" } } })
    );
    assert_eq!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"],
        json!({ "text/plain": { "schema": { "type": "string" } } })
    );
}

#[test]
fn query_and_header_parameters_carry_their_types() {
    let doc = document_of(&[]);
    let params = &doc["paths"]["/job-logs"]["get"]["parameters"];
    let by_name = |name: &str| -> Value {
        match params
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        {
            Some(p) => p.clone(),
            None => panic!("no parameter {name}"),
        }
    };
    assert_eq!(
        by_name("limit"),
        json!({
            "name": "limit", "in": "query", "required": false,
            "description": "Most rows returned.",
            "schema": { "type": "integer", "minimum": 1, "maximum": 200, "default": 50 }
        })
    );
    assert_eq!(
        by_name("from")["schema"],
        json!({ "type": "string", "format": "date-time" })
    );
    assert_eq!(by_name("include_result")["schema"]["type"], "boolean");
    assert_eq!(
        by_name("status")["schema"]["enum"],
        json!([
            "queued",
            "running",
            "succeeded",
            "failed",
            "timed_out",
            "dead",
            "pending",
            "ok",
            "error"
        ])
    );
    let events = &doc["paths"]["/events"]["get"]["parameters"][0];
    assert_eq!(events["in"], "header");
    assert_eq!(events["name"], "Last-Event-ID");
    let job = &doc["paths"]["/job/{id}"]["get"]["parameters"][0];
    assert_eq!(
        (&job["in"], &job["required"]),
        (&json!("path"), &json!(true))
    );
    // Empty segments are dropped before routing: a path parameter never is.
    assert_eq!(job["schema"], json!({ "type": "string", "minLength": 1 }));
}

#[test]
fn a_command_without_input_schema_has_no_request_body() {
    let echo = parse(ECHO);
    let doc = document_of(&[entry("echo", &echo)]);
    assert_eq!(
        doc["paths"]["/plugin/echo/poll"],
        json!({ "post": {
            "operationId": "echo__poll",
            "summary": "Emits one echo.poll event carrying the configured message and snapshots it.",
            "description": "Enqueues one `poll` job of plugin `echo` (a `read` command; needs scope `plugin:ro`, `plugin:rw` or `*`).",
            "tags": ["echo"],
            "responses": {
                "202": { "description": "Job queued", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobAccepted" } } } },
                "400": { "description": "Bad request", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "401": {
                    "description": "Missing or invalid bearer token, or an ended session",
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
                    "headers": { "WWW-Authenticate": { "description": "`Bearer`", "required": true, "schema": { "type": "string" } } }
                },
                "403": { "description": "The token lacks the scope this needs, or a change made with the session cookie lacks X-CSRF-Token", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "404": { "description": "Not found", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "413": { "description": "Request body too large", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "503": { "description": "Unavailable for now (the ledger is busy, or too many streams are open); retry", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            },
            "security": [{ "BearerAuth": [] }, { "SessionCookie": [] }]
        } })
    );
    // The generic route stays beside the concrete ones.
    assert!(doc["paths"]["/plugin/{plugin}/{command}"]["post"].is_object());
    assert!(doc["paths"]["/plugin/echo/handle"]["post"].is_object());
    assert!(doc["paths"]["/plugin/echo/health"]["post"].is_object());
}

#[test]
fn a_command_input_schema_is_the_payload_property() {
    let m = parse(SCHEMAS);
    let doc = document_of(&[entry("schemas", &m)]);
    let body = |command: &str| -> Value {
        doc["paths"][format!("/plugin/schemas/{command}")]["post"]["requestBody"].clone()
    };
    assert_eq!(
        body("fetch"),
        json!({ "required": false, "content": { "application/json": { "schema": {
            "type": "object",
            "properties": { "payload": {
                "type": "object",
                "properties": { "url": { "type": "string" }, "depth": { "type": "integer" } }
            } }
        } } } })
    );
    assert_eq!(
        body("send")["content"]["application/json"]["schema"]["properties"]["payload"],
        json!({
            "type": "object",
            "required": ["to"],
            "properties": {
                "to": { "type": "string", "format": "email" },
                "body": { "type": ["string", "null"] },
                "retries": { "type": "integer", "minimum": 0, "maximum": 5 }
            },
            "additionalProperties": false
        })
    );
    assert_eq!(body("health"), Value::Null);
    let send = &doc["paths"]["/plugin/schemas/send"]["post"];
    // No description: the summary names the plugin and command.
    assert_eq!(send["summary"], "schemas: send");
    assert_eq!(
        send["description"],
        "Enqueues one `send` job of plugin `schemas` (a `write` command; needs scope `plugin:rw` or `*`)."
    );
}

#[test]
fn whole_document_lists_core_and_plugin_tags_and_resolves_every_ref() {
    let (echo, m) = (parse(ECHO), parse(SCHEMAS));
    let doc = document_of(&[entry("echo", &echo), entry("jobs", &m)]);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Ductile Gateway");
    assert_eq!(
        doc["components"]["securitySchemes"],
        json!({
            "BearerAuth": { "type": "http", "scheme": "bearer" },
            "SessionCookie": { "type": "apiKey", "in": "cookie", "name": "ductile_session" }
        })
    );
    let tags: Vec<&str> = match doc["tags"].as_array() {
        Some(tags) => tags.iter().filter_map(|t| t["name"].as_str()).collect(),
        None => panic!("no tags"),
    };
    // `jobs` is a core tag already: listed once.
    assert_eq!(
        tags,
        [
            "discovery",
            "system",
            "plugins",
            "pipelines",
            "jobs",
            "schedules",
            "analytics",
            "events",
            "session",
            "echo"
        ]
    );
    assert_refs_resolve(&doc);
    // Every error response is `{"error": string}` (or the reload findings).
    let mut errors = 0;
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for op in item.as_object().into_iter().flat_map(|m| m.values()) {
            for (status, r) in op["responses"].as_object().into_iter().flatten() {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &r["content"]["application/json"]["schema"]["$ref"];
                    assert!(
                        schema == "#/components/schemas/Error"
                            || schema == "#/components/schemas/ReloadError",
                        "{status}: {schema}"
                    );
                    errors += 1;
                }
            }
        }
    }
    assert!(errors > 50);
    assert_eq!(
        doc["components"]["schemas"]["Error"],
        json!({
            "type": "object",
            "required": ["error"],
            "properties": { "error": { "type": "string", "description": "What went wrong, one line." } }
        })
    );
}

#[test]
fn plugin_document_holds_only_that_plugins_commands() {
    let m = parse(SCHEMAS);
    let doc = plugin_document_of(entry("schemas", &m));
    let paths: Vec<&String> = match doc["paths"].as_object() {
        Some(p) => p.keys().collect(),
        None => panic!("no paths"),
    };
    assert_eq!(
        paths,
        [
            "/plugin/schemas/fetch",
            "/plugin/schemas/send",
            "/plugin/schemas/health"
        ]
    );
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["tags"],
        json!([{ "name": "schemas", "description": "Declares request and response schemas in both forms; answers ok." }])
    );
    assert_refs_resolve(&doc);
    let schemas: Vec<&String> = match doc["components"]["schemas"].as_object() {
        Some(s) => s.keys().collect(),
        None => panic!("no schemas"),
    };
    assert_eq!(schemas, ["Error", "JobAccepted", "JobStatus"]);
}

#[test]
fn names_outside_the_unreserved_set_are_percent_encoded_and_ids_stay_unique() {
    assert_eq!(segment("echo"), "echo");
    assert_eq!(segment("a b/{c}é"), "a%20b%2F%7Bc%7D%C3%A9");
    let m = parse(&ECHO.replace("name: echo\n", "name: x\n").replace(
        "  - name: poll\n",
        "  - name: b__poll\n    type: read\n  - name: poll\n",
    ));
    // `a__b` + `poll` and `a` + `b__poll` would share an id.
    let doc = document_of(&[entry("a", &m), entry("a__b", &m)]);
    assert_eq!(
        doc["paths"]["/plugin/a/b__poll"]["post"]["operationId"],
        "a__b__poll"
    );
    assert_eq!(
        doc["paths"]["/plugin/a__b/poll"]["post"]["operationId"],
        "a__b__poll_2"
    );
}

#[test]
fn catalog_lists_each_instance_with_its_command_names() {
    let (echo, m) = (parse(ECHO), parse(SCHEMAS));
    let mut no_description = parse(SCHEMAS);
    no_description.description = None;
    assert_eq!(
        catalog_of(&[
            entry("echo", &echo),
            entry("schemas", &m),
            entry("terse", &no_description)
        ]),
        json!({ "plugins": [
            {
                "name": "echo",
                "version": "0.1.0",
                "description": "Echoes a configured message back as events and a snapshot; a smoke test with no external side effects.",
                "commands": ["poll", "handle", "health"]
            },
            {
                "name": "schemas",
                "version": "0.2.0",
                "description": "Declares request and response schemas in both forms; answers ok.",
                "commands": ["fetch", "send", "health"]
            },
            {
                "name": "terse",
                "version": "0.2.0",
                "description": null,
                "commands": ["fetch", "send", "health"]
            }
        ] })
    );
}

#[test]
fn detail_carries_each_commands_contract() {
    let m = parse(SCHEMAS);
    let d = detail_of(entry("schemas", &m));
    assert_eq!(d["name"], "schemas");
    assert_eq!(d["protocol"], 2);
    assert_eq!(
        d["commands"][0],
        json!({
            "name": "fetch",
            "type": "read",
            "description": "Fetches a URL to a depth.",
            "input_schema": {
                "type": "object",
                "properties": { "url": { "type": "string" }, "depth": { "type": "integer" } }
            },
            "output_schema": {
                "type": "object",
                "properties": {
                    "status": { "type": "string" },
                    "events": { "type": "array" },
                    "state_updates": { "type": "object" }
                }
            },
            "values": {
                "consume": ["payload.url", "payload.depth"],
                "emit": [{ "event": "schemas.fetched", "values": ["payload.url", "payload.text"] }]
            }
        })
    );
    assert_eq!(
        d["commands"][2],
        json!({
            "name": "health",
            "type": "read",
            "description": null,
            "input_schema": null,
            "output_schema": null,
            "values": null
        })
    );
}

#[test]
fn skills_name_every_command_with_its_tier() {
    let m = parse(SCHEMAS);
    assert_eq!(
        skills_of(&[entry("schemas", &m)]),
        json!({ "skills": [
            {
                "name": "plugin.schemas.fetch", "kind": "plugin",
                "description": "Fetches a URL to a depth.",
                "endpoint": "/plugin/schemas/fetch", "tier": "READ",
                "plugin": "schemas", "command": "fetch"
            },
            {
                "name": "plugin.schemas.send", "kind": "plugin",
                "description": "schemas: send",
                "endpoint": "/plugin/schemas/send", "tier": "WRITE",
                "plugin": "schemas", "command": "send"
            },
            {
                "name": "plugin.schemas.health", "kind": "plugin",
                "description": "schemas: health",
                "endpoint": "/plugin/schemas/health", "tier": "READ",
                "plugin": "schemas", "command": "health"
            }
        ] })
    );
    assert_eq!(skills_of(&[]), json!({ "skills": [] }));
}

#[test]
fn ai_plugin_and_root_match_the_spec() {
    assert_eq!(
        ai_plugin(),
        json!({
            "schema_version": "v1",
            "name_for_human": "Ductile Gateway",
            "name_for_model": "ductile",
            "description_for_human": "Integration gateway for triggering plugins and pipelines.",
            "description_for_model": "Discover and invoke plugins. Fetch /openapi.json for the full spec, or /plugin/{name}/openapi.json for a single plugin. Invoke commands via POST /plugin/{name}/{command}.",
            "auth": { "type": "bearer" },
            "api": { "type": "openapi", "url": "/openapi.json" }
        })
    );
    assert_eq!(
        root(3600),
        json!({
            "name": "Ductile Gateway",
            "description": "Lightweight, open-source integration engine for the agentic era.",
            "uptime_seconds": 3600,
            "discovery": {
                "health": "/healthz",
                "skills": "/skills",
                "plugins": "/plugins",
                "openapi": "/openapi.json",
                "ai_plugin": "/.well-known/ai-plugin.json"
            }
        })
    );
}
