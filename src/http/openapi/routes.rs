//! The route table: every route of the API with its parameters, bodies,
//! statuses and whether it needs a token. The OpenAPI document is built from
//! it, and the HTTP layer can check its own routing against it, so the two
//! cannot drift apart unnoticed.

/// Whether a route needs a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Served to anyone (discovery and health).
    Public,
    /// Needs `Authorization: Bearer <token>` with a fitting scope, or the
    /// dashboard's session cookie opened with such a token.
    Bearer,
    /// Needs the dashboard's session cookie.
    Session,
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
    /// Every other documented answer: the failures, and a second success
    /// where there is one (a synchronous pipeline's 200).
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

pub(super) const fn json_reply(status: u16, schema: &'static str) -> Reply {
    Reply {
        status,
        body: Body::Json(schema),
    }
}

pub(super) const E400: Reply = json_reply(400, "Error");
pub(super) const E401: Reply = json_reply(401, "Error");
pub(super) const E403: Reply = json_reply(403, "Error");
pub(super) const E404: Reply = json_reply(404, "Error");
pub(super) const E413: Reply = json_reply(413, "Error");
pub(super) const E503: Reply = json_reply(503, "Error");
const E405: Reply = json_reply(405, "Error");

const PLUGIN: Param = path("plugin", "Plugin instance name (a key under `plugins:`).");
const COMMAND: Param = path("command", "Command declared in the plugin's manifest.");
const NAME: Param = path("name", "Plugin instance name (a key under `plugins:`).");
const JOB_ID: Param = path("id", "Job id.");
const SCHEDULE_ID: Param = path(
    "id",
    "Schedule, as `plugin:id` (or a plugin name when it has one schedule, or a `default` one).",
);
const PIPELINE: Param = path("name", "Pipeline name (`pipelines[].name`).");
const ASYNC: Param = query(
    "async",
    Kind::Boolean,
    "Answer 202 at once even for a synchronous pipeline.",
);

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
///
/// Each lists every status its handler answers, and also 400 where a path
/// parameter can be refused before routing (`.`, `..`, an encoded `/` or
/// bytes that are not UTF-8), 413 where it takes a body and 503 where it reads
/// or writes the ledger (busy: retry). What the listener answers whatever the
/// route (405 for another method, 408, 431, 503 over the connection cap) is in
/// docs/API.md, not repeated on every operation.
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
        ok: json_reply(200, "Root"),
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
        ok: json_reply(200, "Health"),
        errors: &[E503],
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
        ok: json_reply(202, "JobAccepted"),
        // 405: with an empty `command` the path is `/plugin/{name}`, a GET.
        errors: &[E400, E401, E403, E404, E405, E413, E503],
    },
    Route {
        method: "POST",
        path: "/pipeline/{name}",
        operation_id: "trigger_pipeline",
        summary: "Start a named pipeline; a synchronous one answers when its whole tree has finished",
        tag: "pipelines",
        access: Access::Bearer,
        params: &[PIPELINE, ASYNC],
        request: Some("TriggerRequest"),
        ok: json_reply(202, "PipelineAccepted"),
        errors: &[
            json_reply(200, "PipelineResult"),
            E400,
            E401,
            E403,
            E404,
            E413,
            E503,
        ],
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
        ok: json_reply(200, "Job"),
        errors: &[E400, E401, E403, E404, E503],
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
        ok: json_reply(200, "JobTree"),
        errors: &[E400, E401, E403, E404, E503],
    },
    Route {
        method: "POST",
        path: "/job/{id}/retry",
        operation_id: "retry_job",
        summary: "Resume from a failed step: run the job again with the event and context it first saw",
        tag: "jobs",
        access: Access::Bearer,
        params: &[JOB_ID],
        request: None,
        ok: json_reply(202, "RetryAccepted"),
        // 405: with an empty `id` the path is `/job/retry`, a GET.
        errors: &[
            E400,
            E401,
            E403,
            E404,
            E405,
            json_reply(409, "Error"),
            E413,
            E503,
        ],
    },
    Route {
        method: "POST",
        path: "/job/{id}/cancel",
        operation_id: "cancel_job",
        summary: "Cancel a job: a queued one at once (200), a running one by ending its process group (202); needs jobs:rw",
        tag: "jobs",
        access: Access::Bearer,
        params: &[JOB_ID],
        request: None,
        ok: json_reply(200, "CancelResult"),
        // 405: with an empty `id` the path is `/job/cancel`, a GET.
        errors: &[
            json_reply(202, "CancelResult"),
            E400,
            E401,
            E403,
            E404,
            E405,
            json_reply(409, "Error"),
            E413,
            E503,
        ],
    },
    Route {
        method: "GET",
        path: "/jobs",
        operation_id: "list_jobs",
        summary: "Jobs, most recent first",
        tag: "jobs",
        access: Access::Bearer,
        params: &[
            PLUGIN_FILTER,
            COMMAND_FILTER,
            STATUS,
            LIMIT,
            query(
                "before",
                Kind::Text,
                "A job id: list the jobs after it (the previous page's `next_cursor`).",
            ),
        ],
        request: None,
        ok: json_reply(200, "JobList"),
        errors: &[E400, E401, E403, E503],
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
        ok: json_reply(200, "JobLogList"),
        errors: &[E400, E401, E403, E503],
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
        ok: json_reply(200, "PluginCatalog"),
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
        ok: json_reply(200, "PluginDetail"),
        errors: &[E400, E401, E403, E404],
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
        ok: json_reply(200, "OpenApiDocument"),
        errors: &[E400, E404],
    },
    Route {
        method: "POST",
        path: "/plugin/{name}/breaker/reset",
        operation_id: "reset_breaker",
        summary: "Close a plugin's open or half-open circuit breakers (all, or `command`'s); needs plugin:rw",
        tag: "plugins",
        access: Access::Bearer,
        params: &[
            NAME,
            query("command", Kind::Text, "Reset only this command's breaker."),
        ],
        request: None,
        ok: json_reply(200, "BreakerReset"),
        errors: &[E400, E401, E403, E404, E413, E503],
    },
    Route {
        method: "GET",
        path: "/schedules",
        operation_id: "list_schedules",
        summary: "Every configured schedule with its state, next firings and last runs; needs jobs:ro",
        tag: "schedules",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json_reply(200, "ScheduleList"),
        errors: &[E400, E401, E403, E503],
    },
    Route {
        method: "POST",
        path: "/schedule/{id}/pause",
        operation_id: "pause_schedule",
        summary: "Pause a schedule until it is resumed; needs jobs:rw",
        tag: "schedules",
        access: Access::Bearer,
        params: &[SCHEDULE_ID],
        request: None,
        ok: json_reply(200, "ScheduleChange"),
        errors: &[E400, E401, E403, E404, json_reply(409, "Error"), E413, E503],
    },
    Route {
        method: "POST",
        path: "/schedule/{id}/resume",
        operation_id: "resume_schedule",
        summary: "Resume a paused schedule from its next occurrence; needs jobs:rw",
        tag: "schedules",
        access: Access::Bearer,
        params: &[SCHEDULE_ID],
        request: None,
        ok: json_reply(200, "ScheduleChange"),
        errors: &[E400, E401, E403, E404, E413, E503],
    },
    Route {
        method: "GET",
        path: "/schedule/{id}/preview",
        operation_id: "preview_schedule",
        summary: "A schedule's next firings on its zone's wall clock, with excluded occurrences and DST shifts; needs jobs:ro",
        tag: "schedules",
        access: Access::Bearer,
        params: &[
            SCHEDULE_ID,
            query(
                "n",
                Kind::Integer {
                    min: 1,
                    max: 1000,
                    default: 20,
                },
                "Firings to list.",
            ),
            query(
                "from",
                Kind::DateTime,
                "Start from this instant (default now).",
            ),
        ],
        request: None,
        ok: json_reply(200, "SchedulePreview"),
        errors: &[E400, E401, E403, E404],
    },
    Route {
        method: "GET",
        path: "/schedule/{id}/explain",
        operation_id: "explain_schedule",
        summary: "Why a schedule did not run, from the decision ledger; needs jobs:ro",
        tag: "schedules",
        access: Access::Bearer,
        params: &[
            SCHEDULE_ID,
            query("since", Kind::DateTime, "Only decisions at or after."),
        ],
        request: None,
        ok: json_reply(200, "ScheduleExplanation"),
        errors: &[E400, E401, E403, E404, E503],
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
        ok: json_reply(200, "OpenApiDocument"),
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
        ok: json_reply(200, "SkillIndex"),
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
        ok: json_reply(200, "AiPlugin"),
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
        ok: json_reply(200, "ReloadResult"),
        errors: &[json_reply(400, "ReloadError"), E401, E403, E413],
    },
    Route {
        method: "GET",
        path: "/system/doctor",
        operation_id: "doctor",
        summary: "Runtime health: plugin health commands, breakers, free disk, stuck jobs, invalid schedules, WAL size",
        tag: "system",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json_reply(200, "DiagnosticReport"),
        errors: &[E400, E401, E403, E503],
    },
    Route {
        method: "GET",
        path: "/system/selfcheck",
        operation_id: "selfcheck",
        summary: "Read-only invariants (the ledger checks are skipped while the daemon holds the lock)",
        tag: "system",
        access: Access::Bearer,
        params: &[],
        request: None,
        ok: json_reply(200, "DiagnosticReport"),
        errors: &[E400, E401, E403],
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
        ok: json_reply(200, "QueueAnalytics"),
        errors: &[E400, E401, E403, E503],
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
        ok: json_reply(200, "SummaryAnalytics"),
        errors: &[E400, E401, E403, E503],
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
        ok: json_reply(200, "ConfigView"),
        errors: &[E400, E401, E403],
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
        ok: json_reply(200, "Stopwatch"),
        errors: &[E400, E401, E403, E404, E503],
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
        ok: json_reply(200, "Topology"),
        errors: &[E400, E401, E403],
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
        // 400: a Last-Event-ID that is not an id of this server, or a query.
        errors: &[E400, E401, E403, E503],
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
        errors: &[E400, E401, E403, E503],
    },
    Route {
        method: "POST",
        path: "/session",
        operation_id: "sign_in",
        summary: "Sign the dashboard in: exchange a token for an HttpOnly, SameSite=Strict session cookie (sent as application/json); 404 while api.ui is off",
        tag: "session",
        access: Access::Public,
        params: &[],
        request: Some("SignIn"),
        ok: json_reply(201, "Session"),
        errors: &[E400, E401, E404, json_reply(415, "Error"), E503],
    },
    Route {
        method: "GET",
        path: "/session",
        operation_id: "show_session",
        summary: "The session the cookie opens: token name, scopes, CSRF token (for X-CSRF-Token) and expiry",
        tag: "session",
        access: Access::Session,
        params: &[],
        request: None,
        ok: json_reply(200, "Session"),
        errors: &[E400, E401, E404, E503],
    },
    Route {
        method: "DELETE",
        path: "/session",
        operation_id: "sign_out",
        summary: "Sign out: end the session and clear its cookie (needs X-CSRF-Token)",
        tag: "session",
        access: Access::Session,
        params: &[],
        request: None,
        ok: json_reply(200, "SignedOut"),
        errors: &[E400, E401, E403, E404, E503],
    },
];

/// The core tags, with what they group.
pub(super) const TAGS: &[(&str, &str)] = &[
    (
        "discovery",
        "Unauthenticated documents describing this API.",
    ),
    ("system", "Health, reload and configuration."),
    ("plugins", "Plugin details and direct command execution."),
    ("pipelines", "Named pipelines started on demand."),
    ("jobs", "The job ledger."),
    (
        "schedules",
        "Schedules: state, preview, pause and resume, and why one did not run.",
    ),
    ("analytics", "Queue, outcome and latency figures."),
    ("events", "Live event stream."),
    (
        "session",
        "Dashboard sign-in: a session cookie in place of the bearer header, with a CSRF token for changes.",
    ),
];
