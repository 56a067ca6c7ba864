//! The component schemas of the OpenAPI document: one per response or request
//! body shape the API serves (20-api-reference).
//!
//! Schemas say which fields are there and what they hold, and never forbid
//! more: `additionalProperties` stays open so that a field the server adds later
//! does not make a client that validates responses reject them. Fields that can
//! be null say so with OpenAPI 3.1's `type: [T, "null"]`.

use serde_json::{Map, Value, json};

/// Every job status the ledger records.
pub(super) const JOB_STATUSES: [&str; 6] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "dead",
];

/// A `$ref` to component schema `name`.
pub(super) fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn nullable_time() -> Value {
    json!({ "type": ["string", "null"], "format": "date-time" })
}

fn object(required: &[&str], properties: Value) -> Value {
    if required.is_empty() {
        json!({ "type": "object", "properties": properties })
    } else {
        json!({ "type": "object", "required": required, "properties": properties })
    }
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn any(description: &str) -> Value {
    json!({ "description": description })
}

/// `{"error": "..."}`, the body of every error response.
fn error() -> Value {
    object(
        &["error"],
        json!({ "error": { "type": "string", "description": "What went wrong, one line." } }),
    )
}

fn job() -> Value {
    object(
        &["job_id", "status", "plugin", "command"],
        json!({
            "job_id": { "type": "string" },
            "status": reference("JobStatus"),
            "plugin": { "type": "string" },
            "command": { "type": "string" },
            "submitted_by": nullable("string"),
            "created_at": { "type": "string", "format": "date-time" },
            "started_at": nullable_time(),
            "completed_at": nullable_time(),
            "attempt": count(),
            "result": any("The plugin's response envelope once the job completed; null before."),
            "last_error": nullable("string"),
        }),
    )
}

fn job_tree_node() -> Value {
    object(
        &["job_id", "plugin", "command", "status"],
        json!({
            "job_id": { "type": "string" },
            "parent_job_id": nullable("string"),
            "plugin": { "type": "string" },
            "command": { "type": "string" },
            "status": reference("JobStatus"),
            "result": any("The job's result, null until it completes."),
            "started_at": nullable_time(),
            "completed_at": nullable_time(),
        }),
    )
}

fn job_summary() -> Value {
    object(
        &["job_id", "plugin", "command", "status"],
        json!({
            "job_id": { "type": "string" },
            "plugin": { "type": "string" },
            "command": { "type": "string" },
            "status": reference("JobStatus"),
            "submitted_by": nullable("string"),
            "created_at": { "type": "string", "format": "date-time" },
            "started_at": nullable_time(),
            "completed_at": nullable_time(),
            "attempt": count(),
        }),
    )
}

fn job_log() -> Value {
    object(
        &["job_id", "plugin", "command", "status"],
        json!({
            "job_id": { "type": "string" },
            "log_id": { "type": "string" },
            "plugin": { "type": "string" },
            "command": { "type": "string" },
            "status": reference("JobStatus"),
            "attempt": count(),
            "submitted_by": nullable("string"),
            "created_at": nullable_time(),
            "completed_at": nullable_time(),
            "last_error": nullable("string"),
            "stderr": nullable("string"),
            "result": any("The attempt's result; present only with include_result=true."),
        }),
    )
}

fn values() -> Value {
    json!({
        "type": ["object", "null"],
        "properties": {
            "consume": strings(),
            "emit": {
                "type": "array",
                "items": object(&["event", "values"], json!({
                    "event": { "type": "string" },
                    "values": strings(),
                })),
            },
        },
    })
}

fn plugin_detail() -> Value {
    let command = object(
        &["name", "type"],
        json!({
            "name": { "type": "string" },
            "type": { "type": "string", "enum": ["read", "write"] },
            "description": nullable("string"),
            "input_schema": any("The command's request payload JSON Schema, or null."),
            "output_schema": any("The command's response JSON Schema, or null."),
            "values": values(),
        }),
    );
    let container = object(
        &["image", "envelope", "network", "keep_warm", "resident"],
        json!({
            "image": { "type": "string" },
            "envelope": { "type": "string", "enum": ["protocol-v2", "d6e-stf", "stage7", "processor-v1"] },
            "network": { "type": "string", "enum": ["none", "bridge"] },
            "keep_warm": {
                "type": ["integer", "null"],
                "description": "Seconds a Stage7 instance keeps its container after its last job; null without keep_warm.",
            },
            "resident": {
                "type": ["array", "null"],
                "items": { "type": "string" },
                "description": "The warm containers the daemon holds for this instance now (starting or up); null without keep_warm.",
            },
        }),
    );
    object(
        &["name", "version", "protocol", "commands"],
        json!({
            "name": { "type": "string" },
            "version": { "type": "string" },
            "description": nullable("string"),
            "protocol": { "type": "integer" },
            "commands": { "type": "array", "items": command },
            "container": container,
        }),
    )
}

fn skill() -> Value {
    object(
        &["name", "kind", "endpoint"],
        json!({
            "name": { "type": "string", "description": "`plugin.<plugin>.<command>` or `pipeline.<name>`." },
            "kind": { "type": "string", "enum": ["plugin", "pipeline"] },
            "description": { "type": "string" },
            "endpoint": { "type": "string" },
            "tier": { "type": "string", "enum": ["READ", "WRITE"] },
            "plugin": { "type": "string" },
            "command": { "type": "string" },
            "pipeline": { "type": "string" },
            "trigger": { "type": "string" },
            "execution_mode": { "type": "string", "enum": ["synchronous", "asynchronous"] },
            "timeout_secs": count(),
        }),
    )
}

fn stopwatch_figures() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("count".into(), count());
    for p in ["p50_ms", "p95_ms", "p99_ms"] {
        m.insert(p.into(), nullable("number"));
    }
    m
}

fn stopwatch() -> Value {
    let mut properties = Map::new();
    properties.insert("plugin".into(), json!({ "type": "string" }));
    properties.insert("window".into(), json!({ "type": "string" }));
    properties.extend(stopwatch_figures());
    properties.insert(
        "commands".into(),
        json!({
            "type": "object",
            "description": "Per command name, the same figures.",
            "additionalProperties": { "type": "object", "properties": stopwatch_figures() },
        }),
    );
    object(&["plugin", "window", "count"], Value::Object(properties))
}

fn topology() -> Value {
    let loose = json!({ "type": "object" });
    object(
        &["plugins", "webhooks", "routes", "pipelines"],
        json!({
            "plugins": {
                "type": "array",
                "items": object(&["name", "commands"], json!({
                    "name": { "type": "string" },
                    "uses": { "type": "string", "description": "The plugin the instance runs (itself unless a `uses:` alias)." },
                    "commands": {
                        "type": "array",
                        "items": object(&["name", "type"], json!({
                            "name": { "type": "string" },
                            "type": { "type": "string", "enum": ["read", "write"] },
                        })),
                    },
                    "schedules": {
                        "type": "array",
                        "items": object(&["id", "command"], json!({
                            "id": { "type": "string" },
                            "command": { "type": "string" },
                        })),
                    },
                })),
            },
            "webhooks": {
                "type": "array",
                "items": object(&["name", "path", "plugin", "command"], json!({
                    "name": { "type": "string" },
                    "path": { "type": "string" },
                    "plugin": { "type": "string" },
                    "command": { "type": "string" },
                })),
            },
            "routes": { "type": "array", "items": loose },
            "pipelines": { "type": "array", "items": loose },
        }),
    )
}

/// Every component schema, by name, in the order the document lists them.
pub(super) fn all() -> Map<String, Value> {
    let mut m = Map::new();
    let mut add = |name: &str, schema: Value| {
        m.insert(name.to_string(), schema);
    };
    add("Error", error());
    add(
        "ReloadError",
        object(
            &["error"],
            json!({ "error": { "type": "string" }, "findings": strings() }),
        ),
    );
    add(
        "Root",
        object(
            &["name", "description", "uptime_seconds", "discovery"],
            json!({
                "name": { "type": "string" },
                "description": { "type": "string" },
                "uptime_seconds": count(),
                "discovery": object(&[], json!({
                    "health": { "type": "string" },
                    "skills": { "type": "string" },
                    "plugins": { "type": "string" },
                    "openapi": { "type": "string" },
                    "ai_plugin": { "type": "string" },
                })),
            }),
        ),
    );
    add(
        "Health",
        object(
            &["status", "uptime_seconds", "queue_depth", "plugins_loaded"],
            json!({
                "status": { "type": "string" },
                "uptime_seconds": count(),
                "queue_depth": count(),
                "plugins_loaded": count(),
                "plugins_circuit_open": count(),
                "config_path": nullable("string"),
                "binary_path": nullable("string"),
                "version": { "type": "string" },
            }),
        ),
    );
    add(
        "TriggerRequest",
        object(
            &[],
            json!({ "payload": {
                "type": "object",
                "description": "Passed to the command as its payload (wrapped into an `api.trigger` event for `handle`).",
            } }),
        ),
    );
    add(
        "RetryAccepted",
        object(
            &["job_id", "status", "retry_of"],
            json!({
                "job_id": { "type": "string", "description": "The new job." },
                "status": { "type": "string" },
                "retry_of": { "type": "string", "description": "The failed job it resumes." },
            }),
        ),
    );
    add(
        "CancelResult",
        object(
            &["job_id", "status", "cancelled"],
            json!({
                "job_id": { "type": "string" },
                "status": { "type": "string", "description": "`dead` for a queued job cancelled at once; `running` while a running job's process group is being ended (202)." },
                "cancelled": { "type": "boolean", "description": "True when the job is already recorded dead." },
                "cancelling": { "type": "boolean", "description": "A running job is being cancelled; it ends `dead`." },
            }),
        ),
    );
    add(
        "BreakerReset",
        object(
            &["plugin", "reset", "state"],
            json!({
                "plugin": { "type": "string" },
                "reset": { "type": "array", "items": { "type": "string" }, "description": "The commands whose breaker was open or half-open and is now closed." },
                "state": { "type": "string", "enum": ["closed"] },
            }),
        ),
    );
    add(
        "SignIn",
        object(
            &["token"],
            json!({ "token": { "type": "string", "minLength": 1, "description": "An API token (api.auth.tokens or tokens.yaml)." } }),
        ),
    );
    add(
        "Session",
        object(
            &["name", "scopes", "csrf_token", "expires_at"],
            json!({
                "name": { "type": "string", "description": "The token's name, never its value." },
                "scopes": { "type": "array", "items": { "type": "string" } },
                "csrf_token": { "type": "string", "description": "Send as X-CSRF-Token with every request that changes anything." },
                "expires_at": { "type": "string", "format": "date-time" },
            }),
        ),
    );
    add(
        "SignedOut",
        object(
            &["signed_out"],
            json!({ "signed_out": { "type": "boolean", "enum": [true] } }),
        ),
    );
    let schedule = object(
        &["plugin", "schedule", "name", "command", "trigger", "status"],
        json!({
            "plugin": { "type": "string" },
            "schedule": { "type": "string", "description": "The schedule's id." },
            "name": { "type": "string", "description": "`plugin:id`, the `{id}` of the /schedule routes." },
            "command": { "type": "string" },
            "trigger": { "type": "string" },
            "timezone": { "type": "string" },
            "only_between": nullable("string"),
            "not_on": { "type": "array", "items": { "type": "string" } },
            "jitter": nullable("string"),
            "catch_up": { "type": "string" },
            "if_running": { "type": "string" },
            "status": { "type": "string", "enum": ["active", "paused_manual", "paused_invalid", "exhausted", "not armed"] },
            "reason": nullable("string"),
            "next_run_at": nullable_time(),
            "last_fired_at": nullable_time(),
            "last_success_at": nullable_time(),
            "last_success_job_id": nullable("string"),
            "next_firings": { "type": "array", "items": { "type": "string", "format": "date-time" } },
        }),
    );
    add(
        "ScheduleList",
        object(
            &["schedules"],
            json!({ "schedules": { "type": "array", "items": schedule } }),
        ),
    );
    add(
        "ScheduleChange",
        object(
            &["schedule", "status", "changed"],
            json!({
                "schedule": { "type": "string" },
                "status": { "type": "string", "enum": ["active", "paused_manual"] },
                "changed": { "type": "boolean", "description": "False when it already was in that state." },
            }),
        ),
    );
    add(
        "SchedulePreview",
        object(
            &["schedule", "from", "lines"],
            json!({
                "schedule": { "type": "string" },
                "trigger": { "type": "string" },
                "timezone": { "type": "string" },
                "only_between": nullable("string"),
                "not_on": { "type": "array", "items": { "type": "string" } },
                "from": { "type": "string", "format": "date-time" },
                "lines": { "type": "array", "items": object(
                    &["at", "local", "kind"],
                    json!({
                        "at": { "type": "string", "format": "date-time" },
                        "local": { "type": "string" },
                        "kind": { "type": "string", "enum": ["fire", "excluded"] },
                        "excluded": { "type": "string", "enum": ["not_on", "outside_only_between"] },
                        "resumes_at": { "type": "string", "format": "date-time" },
                        "dst": { "type": "string" },
                    }),
                ) },
            }),
        ),
    );
    add(
        "ScheduleExplanation",
        object(
            &["plugin", "sentences"],
            json!({
                "plugin": { "type": "string" },
                "schedule": nullable("string"),
                "since": nullable_time(),
                "schedules": { "type": "array", "items": { "type": "object" } },
                "decisions": { "type": "array", "items": { "type": "object" } },
                "sentences": { "type": "array", "items": { "type": "string" }, "description": "The schedule's state, then each decision that kept it from running, newest first." },
            }),
        ),
    );
    add(
        "PipelineAccepted",
        object(
            &["job_id", "status"],
            json!({
                "job_id": { "type": "string", "description": "The tree's root job (plugin `pipeline`)." },
                "status": { "type": "string", "description": "`queued`, or `running` when a synchronous wait timed out." },
                "plugin": { "type": "string" },
                "command": { "type": "string" },
                "timeout_exceeded": { "type": "boolean" },
                "message": { "type": "string" },
            }),
        ),
    );
    add(
        "PipelineResult",
        object(
            &["status"],
            json!({
                "job_id": { "type": "string" },
                "status": { "type": "string", "description": "`succeeded` or `failed` for the whole tree; `skipped` when the pipeline's if: was false." },
                "duration_ms": { "type": "integer", "minimum": 0 },
                "result": { "description": "The response of the terminal step actually reached." },
                "tree": { "type": "array", "items": reference("Job") },
                "pipeline": { "type": "string" },
                "message": { "type": "string" },
            }),
        ),
    );
    add(
        "JobAccepted",
        object(
            &["job_id", "status", "plugin", "command"],
            json!({
                "job_id": { "type": "string" },
                "status": reference("JobStatus"),
                "plugin": { "type": "string" },
                "command": { "type": "string" },
            }),
        ),
    );
    add(
        "JobStatus",
        json!({ "type": "string", "enum": JOB_STATUSES }),
    );
    add("Job", job());
    add("JobTreeNode", job_tree_node());
    add(
        "JobTree",
        json!({ "type": "array", "items": reference("JobTreeNode") }),
    );
    add("JobSummary", job_summary());
    add(
        "JobList",
        object(
            &["jobs", "total"],
            json!({
                "jobs": { "type": "array", "items": reference("JobSummary") },
                "total": count(),
                "next_cursor": { "type": ["string", "null"], "description": "Pass as `before` for the next page; null on the last." },
            }),
        ),
    );
    add("JobLog", job_log());
    add(
        "JobLogList",
        object(
            &["logs", "total"],
            json!({
                "logs": { "type": "array", "items": reference("JobLog") },
                "total": count(),
            }),
        ),
    );
    add(
        "PluginCatalog",
        object(
            &["plugins"],
            json!({ "plugins": { "type": "array", "items": object(
                &["name", "version", "commands"],
                json!({
                    "name": { "type": "string" },
                    "version": { "type": "string" },
                    "description": nullable("string"),
                    "commands": strings(),
                }),
            ) } }),
        ),
    );
    add("PluginDetail", plugin_detail());
    add(
        "OpenApiDocument",
        object(
            &["openapi", "info"],
            json!({
                "openapi": { "type": "string" },
                "info": { "type": "object" },
                "paths": { "type": "object" },
            }),
        ),
    );
    add("Skill", skill());
    add(
        "SkillIndex",
        object(
            &["skills"],
            json!({ "skills": { "type": "array", "items": reference("Skill") } }),
        ),
    );
    add(
        "AiPlugin",
        object(
            &["schema_version", "name_for_model", "api"],
            json!({
                "schema_version": { "type": "string" },
                "name_for_human": { "type": "string" },
                "name_for_model": { "type": "string" },
                "description_for_human": { "type": "string" },
                "description_for_model": { "type": "string" },
                "auth": object(&["type"], json!({ "type": { "type": "string" } })),
                "api": object(&["type", "url"], json!({
                    "type": { "type": "string" },
                    "url": { "type": "string" },
                })),
            }),
        ),
    );
    add(
        "ReloadResult",
        object(
            &["status"],
            json!({
                "status": { "type": "string" },
                "reloaded_at": { "type": "string", "format": "date-time" },
                "message": { "type": "string" },
            }),
        ),
    );
    add(
        "DiagnosticReport",
        object(
            &["kind", "status", "healthy", "checks"],
            json!({
                "kind": { "type": "string", "enum": ["doctor", "selfcheck"] },
                "status": { "type": "string", "enum": ["ok", "degraded", "failed"] },
                "healthy": { "type": "boolean" },
                "checks": {
                    "type": "array",
                    "items": object(&["name", "status", "detail"], json!({
                        "name": { "type": "string" },
                        "status": { "type": "string", "enum": ["ok", "warn", "fail", "skipped"] },
                        "detail": { "type": "string" },
                        "remedy": { "type": "string" },
                    })),
                },
            }),
        ),
    );
    add(
        "QueueAnalytics",
        object(
            &["queue_depth", "workers"],
            json!({
                "queue_depth": object(&["queued", "running"], json!({
                    "queued": count(),
                    "running": count(),
                })),
                "workers": object(&["total", "busy"], json!({
                    "total": count(),
                    "busy": count(),
                })),
                "storage": object(&[], json!({
                    "db_bytes": { "type": ["integer", "null"], "minimum": 0, "description": "The ledger file." },
                    "wal_bytes": { "type": ["integer", "null"], "minimum": 0, "description": "Its write-ahead log (null when there is none)." },
                    "free_bytes": { "type": ["integer", "null"], "minimum": 0, "description": "Free space on the ledger's file system." },
                })),
            }),
        ),
    );
    add(
        "SummaryAnalytics",
        object(
            &["window", "stats"],
            json!({
                "window": { "type": "string", "examples": ["24h"] },
                "stats": object(&[], json!({
                    "succeeded": count(),
                    "failed": count(),
                    "timed_out": count(),
                    "dead": count(),
                })),
            }),
        ),
    );
    add(
        "ConfigView",
        json!({
            "type": "object",
            "description": "The reconciled config with secrets redacted (`[REDACTED]`) and token values omitted.",
        }),
    );
    add("Stopwatch", stopwatch());
    add("Topology", topology());
    m
}
