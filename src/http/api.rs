//! The REST API (20-api-reference): one route table, read by the router, the
//! 405 `Allow` answers and the scope checks alike.

use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::auth::{Area, AuthError, Credential, Level, Need};
use super::intake::{Work, Written};
use super::request::Outcome;
use super::settings::Settings;
use super::{Db, Reply, Req, Services, openapi, session, ui};
use crate::clock::{format_ts, parse_ts};
use crate::plugin::manifest::CommandKind;
use crate::runtime::Runtime;
use crate::scheduler::expr::Schedule;
use crate::scheduler::{manage, preview};
use crate::store::decisions::{Decision, Kind};
use crate::store::jobs::{self, JobQuery, LogQuery};
use crate::store::queue::{self, Enqueued, NewJob, SubmittedBy};
use crate::store::{StoreError, schedules, sessions};

/// Who may call a route.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone.
    Public,
    /// A token with this scope.
    Scope(Area, Level),
    /// A token with `*`.
    Admin,
    /// Decided by the handler once it knows what is asked (plugin commands).
    Handler,
    /// `/metrics`: `jobs:ro` unless `api.metrics_public`.
    Metrics,
}

type Handler = fn(&mut Ctx<'_>) -> Result<Outcome, Reply>;

/// One route: method, path template (`{x}` is a segment), access, handler.
struct Route {
    method: &'static str,
    template: &'static str,
    access: Access,
    handler: Handler,
}

const fn route(
    method: &'static str,
    template: &'static str,
    access: Access,
    handler: Handler,
) -> Route {
    Route {
        method,
        template,
        access,
        handler,
    }
}

use Access::{Admin, Handler as ByHandler, Metrics, Public, Scope};

/// Every route of the API.
const ROUTES: &[Route] = &[
    route("GET", "/", Public, root),
    route("GET", "/healthz", Public, healthz),
    route("POST", "/plugin/{plugin}/{command}", ByHandler, trigger),
    route(
        "POST",
        "/pipeline/{name}",
        Scope(Area::Plugin, Level::Rw),
        pipeline_trigger,
    ),
    route("GET", "/job/{id}", Scope(Area::Jobs, Level::Ro), job),
    route(
        "GET",
        "/job/{id}/tree",
        Scope(Area::Jobs, Level::Ro),
        job_tree,
    ),
    route(
        "POST",
        "/job/{id}/retry",
        Scope(Area::Jobs, Level::Rw),
        job_retry,
    ),
    route(
        "POST",
        "/job/{id}/cancel",
        Scope(Area::Jobs, Level::Rw),
        job_cancel,
    ),
    route("GET", "/jobs", Scope(Area::Jobs, Level::Ro), jobs_list),
    route("GET", "/job-logs", Scope(Area::Jobs, Level::Ro), job_logs),
    route("GET", "/plugins", Public, plugins),
    route(
        "GET",
        "/plugin/{name}",
        Scope(Area::Plugin, Level::Ro),
        plugin,
    ),
    route("GET", "/plugin/{name}/openapi.json", Public, plugin_openapi),
    route(
        "POST",
        "/plugin/{name}/breaker/reset",
        Scope(Area::Plugin, Level::Rw),
        breaker_reset,
    ),
    route(
        "GET",
        "/schedules",
        Scope(Area::Jobs, Level::Ro),
        schedules_list,
    ),
    route(
        "POST",
        "/schedule/{id}/pause",
        Scope(Area::Jobs, Level::Rw),
        schedule_pause,
    ),
    route(
        "POST",
        "/schedule/{id}/resume",
        Scope(Area::Jobs, Level::Rw),
        schedule_resume,
    ),
    route(
        "GET",
        "/schedule/{id}/preview",
        Scope(Area::Jobs, Level::Ro),
        schedule_preview,
    ),
    route(
        "GET",
        "/schedule/{id}/explain",
        Scope(Area::Jobs, Level::Ro),
        schedule_explain,
    ),
    route("GET", "/openapi.json", Public, openapi_document),
    route("GET", "/skills", Public, skills),
    route("GET", "/.well-known/ai-plugin.json", Public, ai_plugin),
    route("POST", "/system/reload", Admin, reload),
    route(
        "GET",
        "/system/doctor",
        Scope(Area::Jobs, Level::Ro),
        system_doctor,
    ),
    route(
        "GET",
        "/system/selfcheck",
        Scope(Area::Jobs, Level::Ro),
        system_selfcheck,
    ),
    route("GET", "/analytics/queue", Admin, analytics_queue),
    route("GET", "/analytics/summary", Admin, analytics_summary),
    route("GET", "/config/view", Admin, config_view),
    route(
        "GET",
        "/stopwatch/{plugin}",
        Scope(Area::Jobs, Level::Ro),
        stopwatch,
    ),
    route("GET", "/topology", Scope(Area::Plugin, Level::Ro), topology),
    route("GET", "/events", Scope(Area::Events, Level::Ro), events),
    route("GET", "/metrics", Metrics, metrics),
    route("POST", "/session", Public, session_open),
    route("GET", "/session", ByHandler, session_show),
    route("DELETE", "/session", ByHandler, session_close),
];

/// What a handler works with.
pub struct Ctx<'a> {
    svc: &'a Services,
    db: &'a mut Db,
    req: &'a Req,
    params: Vec<&'a str>,
    rt: Arc<Runtime>,
    settings: Arc<Settings>,
}

impl<'a> Ctx<'a> {
    fn param(&self, i: usize) -> &str {
        self.params.get(i).copied().unwrap_or("")
    }

    fn authorize(&mut self, need: &Need) -> Result<(), Reply> {
        let credential = self.credential()?;
        self.rt
            .tokens
            .authorize(credential, need)
            .map(|_| ())
            .map_err(|e| auth_reply(&e))
    }

    /// What the request acts with: its bearer header, else (with the
    /// dashboard on) the token its session cookie was opened with, once the
    /// session is found live and, for a mutation, the CSRF token checked. A
    /// bearer header wins over a cookie.
    fn credential(&mut self) -> Result<Credential<'a>, Reply> {
        let req: &'a Req = self.req;
        if let Some(header) = req.header("authorization") {
            return Ok(Credential::Header(header));
        }
        let Some((cookie, found)) = self.session()? else {
            return Ok(Credential::None);
        };
        if session::mutating(&req.method) && !session::csrf_ok(req, &cookie) {
            return Err(auth_reply(&AuthError::Csrf));
        }
        opened_with(&found).map_err(|e| auth_reply(&e))
    }

    /// The request's session cookie and its live session; `None` without a
    /// cookie or with the dashboard off (a cookie is then no credential), 401
    /// for a cookie whose session ended.
    fn session(&mut self) -> Result<Option<(String, sessions::Session)>, Reply> {
        if !ui::served(&self.rt.config.api) {
            return Ok(None);
        }
        let Some(cookie) = session::presented(self.req).map(str::to_string) else {
            return Ok(None);
        };
        let now = self.svc.clock.now();
        let found = match self.conn() {
            Ok(conn) => sessions::find(conn, &session::id_hash(&cookie), now),
            Err(reply) => return Err(reply),
        };
        match found {
            Ok(Some(found)) => Ok(Some((cookie, found))),
            Ok(None) => Err(auth_reply(&AuthError::SessionEnded)),
            Err(e) => Err(store_reply(self.db, &e)),
        }
    }

    fn conn(&mut self) -> Result<&mut Connection, Reply> {
        if let Err(e) = self.db.get() {
            return Err(store_reply(self.db, &e));
        }
        self.db
            .get()
            .map_err(|_| Reply::error(500, "the ledger cannot be opened"))
    }
}

fn auth_reply(e: &AuthError) -> Reply {
    let r = Reply::error(e.status(), e.message());
    if e.status() == 401 {
        r.with("WWW-Authenticate", "Bearer".into())
    } else {
        r
    }
}

/// A ledger error: logged with its context, answered 500 (503 when busy).
fn store_reply(db: &mut Db, e: &StoreError) -> Reply {
    log::error!(target: "http", "ledger error: {e}");
    db.reset();
    if e.is_busy() {
        Reply::error(503, "the ledger is busy; retry").with("Retry-After", "1".into())
    } else {
        Reply::error(500, "internal error reading or writing the ledger")
    }
}

/// Routes one API request.
pub fn handle(svc: &Services, db: &mut Db, req: &mut Req) -> Outcome {
    // One look at the snapshot in force per request (it is behind a lock
    // every request thread takes).
    let rt = svc.cell.current();
    if let Err(reply) = strip_base_path(&rt.config.api.base_path, req) {
        return reply.into();
    }
    // The dashboard's static files are not API routes: no scope, no OpenAPI entry.
    if let Some(page) = super::ui::handle(&rt.config.api, req) {
        return page;
    }
    if let Some(answer) = super::relay::ingress(svc, req) {
        return answer;
    }
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let matched: Vec<(&Route, Vec<&str>)> = ROUTES
        .iter()
        .filter_map(|r| Some((r, matches(r.template, &segs)?)))
        .collect();
    // A path two templates match belongs to the one with more fixed
    // segments, as OpenAPI reads its paths (concrete before templated): `POST
    // /plugin/x/openapi.json` is a 405, not a trigger of a command
    // `openapi.json`.
    let fixed = |r: &Route| {
        r.template
            .split('/')
            .filter(|s| !s.is_empty() && !s.starts_with('{'))
            .count()
    };
    let most = matched.iter().map(|(r, _)| fixed(r)).max();
    let mut allowed: Vec<&'static str> = Vec::new();
    let mut found = None;
    for (r, params) in matched {
        if Some(fixed(r)) != most {
            continue;
        }
        if r.method == req.method || (r.method == "GET" && req.method == "HEAD") {
            found = Some((r, params));
            break;
        }
        allowed.push(r.method);
    }
    let Some((r, params)) = found else {
        if allowed.is_empty() {
            return Reply::error(404, &format!("no route for {} {}", req.method, req.path)).into();
        }
        allowed.dedup();
        return Reply::error(
            405,
            &format!("{} is not allowed on {}", req.method, req.path),
        )
        .with("Allow", allowed.join(", "))
        .into();
    };
    req.route = r.template;
    let settings = Settings::of(&rt);
    let mut ctx = Ctx {
        svc,
        db,
        req,
        params,
        rt,
        settings,
    };
    let checked = match r.access {
        Public | ByHandler => Ok(()),
        Scope(area, level) => ctx.authorize(&Need::Area(area, level)),
        Admin => ctx.authorize(&Need::Admin),
        Metrics if ctx.settings.api.metrics_public => Ok(()),
        Metrics => ctx.authorize(&Need::Area(Area::Jobs, Level::Ro)),
    };
    match checked.and_then(|()| (r.handler)(&mut ctx)) {
        Ok(o) => o,
        Err(reply) => reply.into(),
    }
}

/// Takes `api.base_path` off the front of the request's path, so routing
/// sees `/jobs` for `/ductile/jobs`; a path outside the prefix is 404.
fn strip_base_path(base: &str, req: &mut Req) -> Result<(), Reply> {
    if base.is_empty() {
        return Ok(());
    }
    let prefix: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
    let inside = req.segments.len() >= prefix.len()
        && req.segments.iter().zip(&prefix).all(|(s, p)| s == p)
        && req.path.starts_with(base)
        && matches!(req.path.as_bytes().get(base.len()), None | Some(b'/'));
    if !inside {
        return Err(Reply::error(
            404,
            &format!(
                "no route for {} {} (the API is served under api.base_path `{base}`)",
                req.method, req.path
            ),
        ));
    }
    req.segments.drain(..prefix.len());
    req.path = match &req.path[base.len()..] {
        "" => "/".to_string(),
        rest => rest.to_string(),
    };
    Ok(())
}

/// The parameters of `segs` under `template`, or None when it does not match.
fn matches<'s>(template: &str, segs: &[&'s str]) -> Option<Vec<&'s str>> {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() != segs.len() {
        return None;
    }
    let mut params = Vec::new();
    for (p, s) in parts.iter().zip(segs) {
        if p.starts_with('{') {
            params.push(*s);
        } else if p != s {
            return None;
        }
    }
    Some(params)
}

fn ok(value: Value) -> Result<Outcome, Reply> {
    Ok(Reply::json(200, &value).into())
}

fn sql_err(db: &mut Db, what: &'static str, e: rusqlite::Error) -> Reply {
    store_reply(db, &StoreError::sqlite(what, e))
}

// ------------------------------------------------------------------ session

/// The dashboard's session routes exist only while the dashboard is served.
fn dashboard_on(c: &Ctx<'_>) -> Result<(), Reply> {
    if ui::served(&c.rt.config.api) {
        Ok(())
    } else {
        Err(Reply::error(
            404,
            &format!("no route for {} {}", c.req.method, c.req.path),
        ))
    }
}

/// `POST /session {"token": ...}`: signs the dashboard in. The body must be
/// sent as `application/json`, which a cross-site form cannot do, so no other
/// site can sign a browser in with a token of its choosing.
fn session_open(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    dashboard_on(c)?;
    let json_body = c
        .req
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return Err(Reply::error(
            415,
            "sign in with a JSON body {\"token\": \"...\"} sent as Content-Type: application/json",
        ));
    }
    let token = match c.req.json()? {
        Some(Value::Object(body)) => match body.get("token") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            _ => return Err(Reply::error(400, "`token` must be a non-empty string")),
        },
        _ => return Err(Reply::error(400, "the body must be {\"token\": \"...\"}")),
    };
    let presented = blake3::hash(token.as_bytes());
    let rt = c.rt.clone();
    let Ok(identity) = rt.tokens.identify(Credential::Token(presented)) else {
        log::info!(target: "http", "dashboard sign-in refused: the token is not one of this daemon's");
        return Err(auth_reply(&AuthError::Unknown));
    };
    let lifetime = rt.config.api.session_lifetime;
    let now = c.svc.clock.now();
    let expires = now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(12));
    let value = session::new_value();
    let record = sessions::Session {
        token_hash: presented.to_hex().to_string(),
        token_name: identity.name().to_string(),
        expires_at: format_ts(expires),
    };
    let opened = match c.conn() {
        Ok(conn) => sessions::open(conn, &session::id_hash(&value), &record, now),
        Err(reply) => return Err(reply),
    };
    opened.map_err(|e| store_reply(c.db, &e))?;
    log::info!(target: "http", "dashboard session opened with token `{}`", identity.name());
    let body = json!({
        "name": identity.name(),
        "scopes": identity.scopes(),
        "csrf_token": session::csrf_token(&value),
        "expires_at": record.expires_at,
    });
    let cookie = session::set_cookie(
        &value,
        &rt.config.api.base_path,
        lifetime.as_secs(),
        session::over_tls(c.req),
    );
    Ok(Reply::json(201, &body)
        .with("Set-Cookie", cookie)
        .with("Cache-Control", "no-store".into())
        .into())
}

/// The token a session was opened with, as a credential.
fn opened_with(found: &sessions::Session) -> Result<Credential<'static>, AuthError> {
    blake3::Hash::from_hex(&found.token_hash)
        .map(Credential::Token)
        .map_err(|_| AuthError::SessionEnded)
}

/// The request's cookie and its live session, for the routes that act on
/// the session itself (404 with the dashboard off, 401 without one).
fn live_session(c: &mut Ctx<'_>) -> Result<(String, sessions::Session), Reply> {
    dashboard_on(c)?;
    c.session()?.ok_or_else(|| auth_reply(&AuthError::Missing))
}

/// `GET /session`: who the session cookie signs in as, and its CSRF token.
fn session_show(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let (cookie, found) = live_session(c)?;
    let rt = c.rt.clone();
    let identity = opened_with(&found)
        .and_then(|h| rt.tokens.identify(h).map_err(|_| AuthError::SessionEnded))
        .map_err(|e| auth_reply(&e))?;
    let body = json!({
        "name": identity.name(),
        "scopes": identity.scopes(),
        "csrf_token": session::csrf_token(&cookie),
        "expires_at": found.expires_at,
    });
    Ok(Reply::json(200, &body)
        .with("Cache-Control", "no-store".into())
        .into())
}

/// `DELETE /session`: signs out (the CSRF token is required, as for any
/// change made with the cookie).
fn session_close(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let (cookie, found) = live_session(c)?;
    if !session::csrf_ok(c.req, &cookie) {
        return Err(auth_reply(&AuthError::Csrf));
    }
    let closed = match c.conn() {
        Ok(conn) => sessions::close(conn, &session::id_hash(&cookie)),
        Err(reply) => return Err(reply),
    };
    closed.map_err(|e| store_reply(c.db, &e))?;
    log::info!(target: "http", "dashboard session of token `{}` signed out", found.token_name);
    let clear = session::clear_cookie(&c.rt.config.api.base_path, session::over_tls(c.req));
    Ok(Reply::json(200, &json!({"signed_out": true}))
        .with("Set-Cookie", clear)
        .with("Cache-Control", "no-store".into())
        .into())
}

// ------------------------------------------------------------------ discovery

fn root(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    ok(openapi::root(c.svc.started.elapsed().as_secs()))
}

fn plugins(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    ok(openapi::plugins_catalog(&c.rt))
}

fn plugin(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let name = c.param(0).to_string();
    match openapi::plugin_detail(&c.rt, &name) {
        Some(v) => ok(v),
        None => Err(unknown_plugin(&c.rt, &name)),
    }
}

fn plugin_openapi(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let name = c.param(0).to_string();
    match openapi::plugin_document(&c.rt, &name) {
        Some(v) => ok(v),
        None => Err(unknown_plugin(&c.rt, &name)),
    }
}

fn openapi_document(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    ok(openapi::document(&c.rt))
}

fn skills(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    ok(openapi::skills(&c.rt))
}

fn ai_plugin(_: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    ok(openapi::ai_plugin())
}

fn unknown_plugin(rt: &Runtime, name: &str) -> Reply {
    let names: Vec<&str> = rt.registry.plugins().map(|p| p.name.as_str()).collect();
    let hint = crate::suggest::hint(name, &names);
    Reply::error(404, &format!("no plugin `{name}` is loaded{hint}"))
}

// ------------------------------------------------------------------ health

/// The `/healthz` body, shared with the webhook listener.
pub fn health_body(svc: &Services, db: &mut Db) -> Reply {
    let rt = svc.cell.current();
    let counts = db.get().and_then(|conn| {
        let count = |sql: &str, what: &'static str| -> Result<i64, StoreError> {
            conn.prepare_cached(sql)
                .and_then(|mut st| st.query_row([], |r| r.get(0)))
                .map_err(|e| StoreError::sqlite(what, e))
        };
        let depth = count(
            "SELECT COUNT(*) FROM job_queue WHERE status = 'queued'",
            "count queued jobs",
        )?;
        let open = count(
            "SELECT COUNT(*) FROM circuit_breakers WHERE state = 'open'",
            "count open breakers",
        )?;
        Ok((depth, open))
    });
    let (depth, open) = match counts {
        Ok(c) => c,
        Err(e) => {
            log::error!(target: "http", "health check cannot read the ledger: {e}");
            db.reset();
            return Reply::json(
                503,
                &json!({"status": "unavailable", "error": "the ledger cannot be read"}),
            );
        }
    };
    // The binary does not move while the daemon runs: read the link once.
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let binary = BINARY.get_or_init(|| {
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    });
    Reply::json(
        200,
        &json!({
            "status": "ok",
            "uptime_seconds": svc.started.elapsed().as_secs(),
            "queue_depth": depth,
            "plugins_loaded": rt.registry.plugins().count(),
            "plugins_circuit_open": open,
            "config_path": rt.config.dir.display().to_string(),
            "binary_path": binary,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

fn healthz(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    Ok(health_body(c.svc, c.db).into())
}

// ------------------------------------------------------------------ trigger

/// The commands every plugin may declare: asking for one the plugin did not
/// declare is a bad request, asking for any other name is not found.
const STANDARD_COMMANDS: &[&str] = &["poll", "handle", "health", "init"];

fn trigger(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    // Who asks comes first: an anonymous caller learns nothing about plugins.
    let rt = c.rt.clone();
    let credential = c.credential()?;
    let caller = rt.tokens.identify(credential).map_err(|e| auth_reply(&e))?;
    let name = c.param(0).to_string();
    let command = c.param(1).to_string();
    let Some(p) = rt.registry.get(&name) else {
        return Err(unknown_plugin(&rt, &name));
    };
    let Some(spec) = p.manifest.command(&command) else {
        let declared: Vec<&str> = p
            .manifest
            .commands
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let msg = format!(
            "plugin `{name}` does not declare command `{command}` (it declares: {})",
            declared.join(", ")
        );
        let status = if STANDARD_COMMANDS.contains(&command.as_str()) {
            400
        } else {
            404
        };
        return Err(Reply::error(status, &msg));
    };
    caller
        .allows(&Need::Plugin {
            plugin: name.clone(),
            write: spec.kind == CommandKind::Write,
        })
        .map_err(|e| auth_reply(&e))?;
    let payload = trigger_payload(c.req)?;
    if let Err(answer) = admit_work(&rt) {
        c.svc.intake.note(Decision::new(
            &name,
            "api",
            &command,
            Kind::AdmissionRefusedDisk,
            "free disk space is below state.min_free_bytes",
            c.svc.clock.now(),
        ));
        return Err(answer);
    }
    let now = c.svc.clock.now();
    let envelope = if command == "handle" {
        queue::envelope("api.trigger", "api", payload, now)
    } else {
        payload
    };
    let job = NewJob::new(
        &name,
        &command,
        envelope,
        SubmittedBy::Api,
        p.conf.retry.max_attempts,
    );
    let ttl = rt.config.service.dedupe_ttl;
    let id = match c.svc.intake.write(Work::Job(Box::new(job)), ttl) {
        Ok(Written::Job(Enqueued::Created(id) | Enqueued::Deduplicated(id))) => id,
        Ok(Written::Plan(_) | Written::Recorded) | Err(_) => return Err(intake_failed()),
    };
    c.svc.wake_dispatcher();
    Ok(Reply::json(
        202,
        &json!({"job_id": id, "status": "queued", "plugin": name, "command": command}),
    )
    .into())
}

/// 503 while the disk-space guard refuses new work (`state.min_free_bytes`);
/// the guard logs when it starts and stops refusing.
pub(super) fn admit_work(rt: &Runtime) -> Result<(), Reply> {
    crate::disk::admit(&rt.config.state)
        .map_err(|r| Reply::error(503, &r.to_string()).with("Retry-After", "5".into()))
}

/// The answer when the intake writer could not commit (already logged).
pub(super) fn intake_failed() -> Reply {
    Reply::error(503, "the job could not be recorded; retry").with("Retry-After", "1".into())
}

/// The `payload` of a trigger body (`{"payload": {...}}`, optional).
fn trigger_payload(req: &Req) -> Result<Value, Reply> {
    Ok(match req.json()? {
        None => Value::Object(Map::new()),
        Some(Value::Object(mut body)) => match body.remove("payload") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(other) => {
                return Err(Reply::error(
                    400,
                    &format!(
                        "`payload` must be a JSON object, not {}",
                        crate::router::condition::kind(&other)
                    ),
                ));
            }
        },
        Some(other) => {
            return Err(Reply::error(
                400,
                &format!(
                    "the body must be a JSON object like {{\"payload\": {{...}}}}, not {}",
                    crate::router::condition::kind(&other)
                ),
            ));
        }
    })
}

fn pipeline_trigger(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &["async"])?;
    let name = c.param(0).to_string();
    let rt = c.rt.clone();
    let Some(p) = rt.graph.pipeline(&name) else {
        let names: Vec<&str> = rt
            .graph
            .pipelines()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let hint = crate::suggest::hint(&name, &names);
        return Err(Reply::error(404, &format!("no pipeline `{name}`{hint}")));
    };
    let force_async = parse_bool(c.req, "async")?;
    let payload = trigger_payload(c.req)?;
    let sync =
        p.execution_mode == crate::config::pipeline::ExecutionMode::Synchronous && !force_async;
    if sync && p.entry.len() > 1 {
        return Err(Reply::error(
            400,
            &format!(
                "pipeline `{name}` is synchronous but starts {} branches at once; call it with ?async=true",
                p.entry.len()
            ),
        ));
    }
    let (max_waiting, cap) = (
        rt.config.api.max_concurrent_sync,
        rt.config.api.max_sync_timeout,
    );
    admit_work(&rt)?;
    if sync && !c.svc.bridge.admit(max_waiting) {
        return Err(Reply::error(
            503,
            &format!("{max_waiting} synchronous pipeline calls are already waiting (api.max_concurrent_sync); retry, or call with ?async=true"),
        )
        .with("Retry-After", "1".into()));
    }
    let started = std::time::Instant::now();
    let now = c.svc.clock.now();
    let plan = match crate::router::engine::start_pipeline(
        &rt,
        p,
        payload,
        "api.trigger",
        "api",
        SubmittedBy::Api,
        now,
    ) {
        Ok(plan) => plan,
        Err(why) => {
            if sync {
                c.svc.bridge.release();
            }
            return Ok(Reply::json(
                200,
                &json!({"status": "skipped", "pipeline": name, "message": why}),
            )
            .into());
        }
    };
    let root = plan
        .first()
        .and_then(|r| r.job.id.clone())
        .unwrap_or_default();
    let ttl = rt.config.service.dedupe_ttl;
    let written = c
        .svc
        .intake
        .write(Work::Plan(plan), ttl)
        .map(|_| ())
        .map_err(|_| intake_failed());
    if let Err(reply) = written {
        if sync {
            c.svc.bridge.release();
        }
        return Err(reply);
    }
    c.svc.wake_dispatcher();
    if !sync {
        return Ok(Reply::json(
            202,
            &json!({"job_id": root, "status": "queued", "plugin": "pipeline", "command": name}),
        )
        .into());
    }
    let wait = p.timeout.unwrap_or(super::bridge::DEFAULT_WAIT).min(cap);
    Ok(Outcome::Wait {
        root,
        deadline: started + wait,
    })
}

// ------------------------------------------------------------------ jobs

fn job(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let id = c.param(0).to_string();
    let found = jobs::job(c.conn()?, &id);
    match found {
        Ok(Some(v)) => ok(v),
        Ok(None) => Err(Reply::error(404, &format!("no job `{id}`"))),
        Err(e) => Err(store_reply(c.db, &e)),
    }
}

fn job_tree(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let id = c.param(0).to_string();
    let found = jobs::tree(c.conn()?, &id);
    match found {
        Ok(Some(v)) => ok(Value::Array(v)),
        Ok(None) => Err(Reply::error(404, &format!("no job `{id}`"))),
        Err(e) => Err(store_reply(c.db, &e)),
    }
}

fn job_retry(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &[])?;
    let id = c.param(0).to_string();
    admit_work(&c.rt)?;
    let now = c.svc.clock.now();
    let conn = c.conn()?;
    let done = queue::begin(conn)
        .map_err(queue::RetryRefused::Store)
        .and_then(|tx| {
            let new = queue::retry_in(&tx, &id, SubmittedBy::Api, now)?;
            tx.commit().map_err(|e| {
                queue::RetryRefused::Store(StoreError::sqlite(
                    format!("commit the retry of job {id}"),
                    e,
                ))
            })?;
            Ok(new)
        });
    match done {
        Ok(new) => {
            c.svc.wake_dispatcher();
            Ok(Reply::json(
                202,
                &json!({"job_id": new, "status": "queued", "retry_of": id}),
            )
            .into())
        }
        Err(queue::RetryRefused::Missing) => {
            Err(Reply::error(404, &format!("no job `{id}` in the queue")))
        }
        Err(queue::RetryRefused::NotFailed(s)) => Err(Reply::error(
            409,
            &format!("job `{id}` is {s}: only a failed, timed-out or dead job can be retried"),
        )),
        Err(queue::RetryRefused::AlreadyRetried(earlier)) => Err(Reply::error(
            409,
            &format!("job `{id}` was already retried as `{earlier}`; retry that one if it failed"),
        )),
        Err(queue::RetryRefused::Store(e)) => Err(store_reply(c.db, &e)),
    }
}

fn job_cancel(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &[])?;
    let id = c.param(0).to_string();
    let now = c.svc.clock.now();
    let reason = "cancelled over the API";
    let read = job_status(c.conn()?, &id);
    let mut status = read.map_err(|e| sql_err(c.db, "read the job", e))?;
    match status.as_deref() {
        None => return Err(Reply::error(404, &format!("no job `{id}` in the queue"))),
        Some("queued") => {
            let cancelled = queue::cancel_queued(c.conn()?, &id, reason, now);
            match cancelled {
                Ok(true) => {
                    crate::oneshot::notify_done(&id);
                    c.svc.events.notify();
                    return Ok(Reply::json(
                        200,
                        &json!({"job_id": id, "status": "dead", "cancelled": true}),
                    )
                    .into());
                }
                // Claimed between the read and the cancellation: it runs now.
                Ok(false) => {
                    let read = job_status(c.conn()?, &id);
                    status = read.map_err(|e| sql_err(c.db, "read the job", e))?;
                }
                Err(e) => return Err(store_reply(c.db, &e)),
            }
        }
        Some(_) => {}
    }
    match status.as_deref() {
        Some("running") => {}
        Some(s) => {
            return Err(Reply::error(
                409,
                &format!("job `{id}` is {s}: only a queued or running job can be cancelled"),
            ));
        }
        None => return Err(Reply::error(404, &format!("no job `{id}` in the queue"))),
    }
    if !c.svc.running.cancel(&id, reason) {
        // Claimed a moment ago and not registered yet: the dispatcher
        // carries the request out at its next wake.
        let asked = queue::request_cancel(c.conn()?, &id, reason, SubmittedBy::Api, now);
        if let Err(e) = asked {
            return Err(store_reply(c.db, &e));
        }
        c.svc
            .requests
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = c.svc.wake.try_send(());
    }
    // The worker records the job dead once its process group has ended.
    Ok(Reply::json(
        202,
        &json!({"job_id": id, "status": "running", "cancelled": false, "cancelling": true}),
    )
    .into())
}

fn job_status(conn: &Connection, id: &str) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT status FROM job_queue WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

// ------------------------------------------------------------------ breakers

fn breaker_reset(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &["command"])?;
    let name = c.param(0).to_string();
    if c.rt.registry.get(&name).is_none() {
        return Err(unknown_plugin(&c.rt, &name));
    }
    let only = owned(c.req, "command");
    let now = c.svc.clock.now();
    let conn = c.conn()?;
    let done = (|| -> Result<Vec<String>, StoreError> {
        let mut reset = Vec::new();
        for b in crate::store::breakers::for_plugin(conn, &name)? {
            if only.as_ref().is_some_and(|o| *o != b.command) || b.state == "closed" {
                continue;
            }
            if crate::store::breakers::reset(conn, &name, &b.command, now)? {
                reset.push(b.command);
            }
        }
        Ok(reset)
    })();
    match done {
        Ok(reset) => {
            c.svc.events.notify();
            ok(json!({"plugin": name, "reset": reset, "state": "closed"}))
        }
        Err(e) => Err(store_reply(c.db, &e)),
    }
}

// ------------------------------------------------------------------ schedules

/// The compiled schedule the `{id}` segment names (`plugin:id`, or a plugin
/// with one schedule).
fn schedule_of<'r>(rt: &'r Runtime, target: &str) -> Result<&'r Schedule, Reply> {
    manage::resolve(&rt.schedules, target).map_err(|e| Reply::error(404, &e.to_string()))
}

/// When the daemon started, on the clock's time line (anchors `after:`).
fn started_at(c: &Ctx<'_>) -> chrono::DateTime<chrono::Utc> {
    let up = chrono::Duration::from_std(c.svc.started.elapsed()).unwrap_or_default();
    c.svc.clock.now() - up
}

/// Firings listed per schedule by `GET /schedules`.
const LISTED_FIRINGS: usize = 3;
/// Most firings `GET /schedule/{id}/preview` computes.
const MAX_PREVIEW: i64 = 1000;

fn schedules_list(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &[])?;
    let rt = c.rt.clone();
    let (now, started) = (c.svc.clock.now(), started_at(c));
    let conn = c.conn()?;
    let stored = schedules::all(conn).map_err(|e| store_reply(c.db, &e))?;
    let rows: Vec<Value> = rt
        .schedules
        .iter()
        .map(|s| {
            let e = stored
                .iter()
                .find(|e| e.plugin == s.plugin && e.schedule_id == s.id);
            let mut v = manage::describe(s, e);
            v["next_firings"] = json!(manage::next_firings(s, now, started, LISTED_FIRINGS));
            v
        })
        .collect();
    ok(json!({ "schedules": rows }))
}

fn schedule_change(c: &mut Ctx<'_>, pause: bool) -> Result<Outcome, Reply> {
    check_query(c.req, &[])?;
    let rt = c.rt.clone();
    let s = schedule_of(&rt, c.param(0))?;
    let now = c.svc.clock.now();
    let conn = c.conn()?;
    let done = if pause {
        let reason = format!("paused over the API at {}", format_ts(now));
        manage::pause(conn, s, &reason, now)
    } else {
        manage::resume(conn, s, now)
    };
    match done {
        Ok(v) => ok(json!({"schedule": manage::name(s), "status": v.status, "changed": v.changed})),
        Err(manage::Refused::Store(e)) => Err(store_reply(c.db, &e)),
        Err(other) => Err(Reply::error(409, &other.to_string())),
    }
}

fn schedule_pause(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    schedule_change(c, true)
}

fn schedule_resume(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    schedule_change(c, false)
}

fn schedule_preview(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &["n", "from"])?;
    let rt = c.rt.clone();
    let s = schedule_of(&rt, c.param(0))?;
    let n = match c.req.param("n") {
        None => 20,
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_PREVIEW).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "n must be an integer from 1 to {MAX_PREVIEW}, not `{t}`"
                ))
            })?,
    };
    let from = parse_time(c.req, "from")?
        .and_then(|t| parse_ts(&t))
        .unwrap_or_else(|| c.svc.clock.now());
    let started = started_at(c);
    let lines = preview::preview(s, from, started, usize::try_from(n).unwrap_or(20));
    ok(json!({
        "schedule": manage::name(s),
        "trigger": s.trigger.to_string(),
        "timezone": s.tz.name(),
        "only_between": manage::window_text(s),
        "not_on": manage::not_on_text(s),
        "from": format_ts(from),
        "lines": lines,
    }))
}

fn schedule_explain(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &["since"])?;
    let rt = c.rt.clone();
    let s = schedule_of(&rt, c.param(0))?;
    let since = parse_time(c.req, "since")?.and_then(|t| parse_ts(&t));
    let shown = manage::name(s);
    let conn = c.conn()?;
    match crate::explain::subject(Some(conn), &s.plugin, Some(&s.id), since, &shown) {
        Ok(e) => ok(e.to_json()),
        Err(e) => Err(store_reply(c.db, &e)),
    }
}

fn bad(msg: String) -> Reply {
    Reply::error(400, &msg)
}

/// Refuses a query parameter the route does not take, and one given twice.
fn check_query(req: &Req, known: &[&str]) -> Result<(), Reply> {
    match req.query.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        Some((k, _)) if known.is_empty() => Err(bad(format!(
            "unknown query parameter `{k}` (this route takes none)"
        ))),
        Some((k, _)) => Err(bad(format!(
            "unknown query parameter `{k}` (expected: {})",
            known.join(", ")
        ))),
        // A filter given twice would otherwise keep its last value silently
        // (`?status=failed&status=dead` listing only dead jobs).
        None => match req
            .query
            .iter()
            .enumerate()
            .find(|(i, (k, _))| req.query[..*i].iter().any(|(seen, _)| seen == k))
        {
            Some((_, (k, _))) => Err(bad(format!(
                "query parameter `{k}` is given more than once"
            ))),
            None => Ok(()),
        },
    }
}

fn owned(req: &Req, key: &str) -> Option<String> {
    req.param(key).map(str::to_string)
}

fn status_param(req: &Req) -> Result<Option<&'static str>, Reply> {
    req.param("status")
        .map(jobs::status_filter)
        .transpose()
        .map_err(bad)
}

fn jobs_list(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &["plugin", "command", "status", "limit", "before"])?;
    let q = JobQuery {
        plugin: owned(c.req, "plugin"),
        command: owned(c.req, "command"),
        status: status_param(c.req)?,
        limit: jobs::parse_limit(c.req.param("limit")).map_err(bad)?,
        before: owned(c.req, "before"),
    };
    let listed = jobs::list(c.conn()?, &q);
    listed.map_or_else(|e| Err(store_reply(c.db, &e)), ok)
}

fn parse_time(req: &Req, key: &str) -> Result<Option<String>, Reply> {
    match req.param(key) {
        None => Ok(None),
        Some(t) => match parse_ts(t) {
            Some(ts) => Ok(Some(format_ts(ts))),
            None => Err(bad(format!(
                "`{key}` must be an RFC 3339 time like 2026-02-21T10:00:00Z, not `{t}`"
            ))),
        },
    }
}

fn parse_bool(req: &Req, key: &str) -> Result<bool, Reply> {
    match req.param(key) {
        None => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(bad(format!("`{key}` must be true or false, not `{other}`"))),
    }
}

fn job_logs(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(
        c.req,
        &[
            "job_id",
            "plugin",
            "command",
            "status",
            "submitted_by",
            "from",
            "to",
            "query",
            "limit",
            "include_result",
        ],
    )?;
    let q = LogQuery {
        job_id: owned(c.req, "job_id"),
        plugin: owned(c.req, "plugin"),
        command: owned(c.req, "command"),
        status: status_param(c.req)?,
        submitted_by: owned(c.req, "submitted_by"),
        from: parse_time(c.req, "from")?,
        to: parse_time(c.req, "to")?,
        query: owned(c.req, "query"),
        limit: jobs::parse_limit(c.req.param("limit")).map_err(bad)?,
        include_result: parse_bool(c.req, "include_result")?,
    };
    let listed = jobs::logs(c.conn()?, &q);
    listed.map_or_else(|e| Err(store_reply(c.db, &e)), ok)
}

// ------------------------------------------------------------------ operations

fn system_doctor(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &[])?;
    let rt = c.rt.clone();
    let now = c.svc.clock.now();
    let conn = c.conn()?;
    ok(crate::doctor::doctor(&rt, crate::doctor::Ledger::Open(conn), now).to_json())
}

fn system_selfcheck(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &[])?;
    ok(crate::doctor::selfcheck_loaded(&c.rt, c.svc.clock.now()).to_json())
}

fn reload(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    match (c.svc.reload)() {
        Ok(at) => ok(json!({
            "status": "ok",
            "reloaded_at": at,
            "message": "Configuration reloaded successfully.",
        })),
        Err(findings) => Err(Reply::json(
            400,
            &json!({
                "error": "the new configuration is invalid; the running one is kept",
                "findings": findings,
            }),
        )),
    }
}

fn analytics_queue(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let conn = c.conn()?;
    let counts = (|| -> rusqlite::Result<(i64, i64)> {
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM job_queue WHERE status IN ('queued','running') GROUP BY status",
        )?;
        let mut q = 0;
        let mut r = 0;
        for row in stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })? {
            let (s, n) = row?;
            if s == "queued" {
                q = n;
            } else {
                r = n;
            }
        }
        Ok((q, r))
    })();
    let (queued, running) = counts.map_err(|e| sql_err(c.db, "count the queue", e))?;
    let total = c.rt.config.service.max_workers;
    let busy = c.svc.running.len().min(total);
    ok(json!({
        "queue_depth": {"queued": queued, "running": running},
        "storage": storage(&c.svc.db),
        "workers": {"total": total, "busy": busy, "utilization": if total == 0 { 0.0 } else { busy as f64 / total as f64 }},
    }))
}

/// The ledger's size on disk, its WAL's and the space left beside them; a
/// size that cannot be read is null rather than an error.
fn storage(db: &std::path::Path) -> Value {
    let size = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.len());
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    json!({
        "db_bytes": size(db),
        "wal_bytes": size(std::path::Path::new(&wal)),
        "free_bytes": crate::disk::free_for(db).ok(),
    })
}

fn analytics_summary(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let since = format_ts(c.svc.clock.now() - chrono::Duration::hours(24));
    let conn = c.conn()?;
    let stats = (|| -> rusqlite::Result<Map<String, Value>> {
        let mut m = Map::new();
        for s in ["succeeded", "failed", "timed_out", "dead"] {
            m.insert(s.into(), json!(0));
        }
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM job_queue WHERE completed_at >= ?1 GROUP BY status",
        )?;
        for row in stmt.query_map([&since], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (s, n) = row?;
            m.insert(s, json!(n));
        }
        Ok(m)
    })();
    let stats = stats.map_err(|e| sql_err(c.db, "summarise jobs", e))?;
    ok(json!({"window": "24h", "stats": stats}))
}

/// Keys whose values never leave the daemon.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "key",
        "token",
        "password",
        "passwd",
        "credential",
        "auth",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// `value` with every secret-looking key's value replaced.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) {
                        json!("[REDACTED]")
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

fn config_view(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    ok(config_document(&c.rt, &c.settings))
}

/// The reconciled config with secrets removed (`GET /config/view`).
pub fn config_document(rt: &Runtime, settings: &Settings) -> Value {
    let cfg = &rt.config;
    let s = &cfg.service;
    let plugins: Map<String, Value> = cfg
        .plugins
        .values()
        .map(|p| {
            (
                p.name.clone(),
                json!({
                    "enabled": p.enabled,
                    "uses": p.uses,
                    "parallelism": p.parallelism,
                    "max_outstanding_polls": p.max_outstanding_polls,
                    "schedules": p.schedules.iter().map(|s| json!({"id": s.id, "command": s.command, "every": s.every, "cron": s.cron, "at": s.at, "after": s.after})).collect::<Vec<_>>(),
                    "config": redact(&p.config),
                }),
            )
        })
        .collect();
    let extra: Map<String, Value> = cfg
        .extra
        .iter()
        .map(|(k, v)| (k.clone(), redact(v)))
        .collect();
    json!({
        "service": {
            "name": s.name,
            "tick_interval": crate::config::duration::format(s.tick_interval),
            "log_level": s.log_level,
            "max_workers": s.max_workers,
            "strict_mode": s.strict_mode,
            "dedupe_ttl": crate::config::duration::format(s.dedupe_ttl),
            "job_log_retention": crate::config::duration::format(s.job_log_retention),
            "job_queue_retention": crate::config::duration::format(s.job_queue_retention),
            "shutdown_timeout": crate::config::duration::format(s.shutdown_timeout),
        },
        "plugin_roots": cfg.plugin_roots,
        "state": {"path": cfg.state.path},
        "api": {
            "enabled": settings.api.enabled,
            "listen": settings.api.listen,
            "threads": settings.api.threads,
            "max_connections": settings.api.max_connections,
            "max_body_size": settings.api.max_body_size,
            "metrics_public": settings.api.metrics_public,
            "max_event_streams": settings.api.max_event_streams,
            "tokens": rt.tokens.describe(),
        },
        "webhooks": {
            "listen": settings.webhooks_listen,
            "endpoints": settings.webhooks.iter().map(|e| json!({
                "name": e.name, "path": e.path, "plugin": e.plugin, "command": e.command,
                "signature_header": e.signature_header, "token_header": e.token_header,
                "max_body_size": e.max_body_size,
                "dedupe_header": e.dedupe_header, "auth": if e.token_auth { "token" } else { "hmac" },
            })).collect::<Vec<_>>(),
        },
        "plugins": plugins,
        "compiled_routes": rt.graph.describe(),
        "other": extra,
    })
}

fn stopwatch(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &["window"])?;
    let name = c.param(0).to_string();
    if c.rt.registry.get(&name).is_none() {
        return Err(unknown_plugin(&c.rt, &name));
    }
    let window_text = c.req.param("window").unwrap_or("1h").to_string();
    let window = crate::config::duration::parse(&window_text)
        .map_err(|e| Reply::error(400, &format!("window `{window_text}`: {e}")))?;
    let since = format_ts(crate::clock::sub_saturating(c.svc.clock.now(), window));
    let conn = c.conn()?;
    let rows = (|| -> rusqlite::Result<Vec<(String, i64)>> {
        let mut stmt = conn.prepare_cached(
            "SELECT command, dur_ns FROM job_stopwatch WHERE plugin = ?1 AND created_at >= ?2",
        )?;
        stmt.query_map(rusqlite::params![name, since], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect()
    })();
    let rows = rows.map_err(|e| sql_err(c.db, "read the stopwatch", e))?;
    let summary = |durs: &mut Vec<i64>| -> Value {
        durs.sort_unstable();
        let pick = |p: f64| -> Value {
            if durs.is_empty() {
                return Value::Null;
            }
            let i = ((durs.len() as f64 - 1.0) * p).round() as usize;
            json!(durs[i.min(durs.len() - 1)] as f64 / 1e6)
        };
        json!({"count": durs.len(), "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99)})
    };
    let mut all: Vec<i64> = rows.iter().map(|(_, d)| *d).collect();
    let mut by_command: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for (cmd, d) in rows {
        by_command.entry(cmd).or_default().push(d);
    }
    let mut out = summary(&mut all);
    if let Value::Object(m) = &mut out {
        m.insert("plugin".into(), json!(name));
        m.insert("window".into(), json!(window_text));
        m.insert(
            "commands".into(),
            Value::Object(
                by_command
                    .iter_mut()
                    .map(|(k, v)| (k.clone(), summary(v)))
                    .collect(),
            ),
        );
    }
    ok(out)
}

fn topology(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let rt = &c.rt;
    let plugins: Vec<Value> = rt
        .registry
        .plugins()
        .map(|p| {
            json!({
                "name": p.name,
                "uses": p.base,
                "commands": p.manifest.commands.iter().map(|c| json!({"name": c.name, "type": if c.kind == CommandKind::Read { "read" } else { "write" }})).collect::<Vec<_>>(),
                "schedules": p.conf.schedules.iter().map(|s| json!({"id": s.id, "command": s.command})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let webhooks: Vec<Value> = c
        .settings
        .webhooks
        .iter()
        .map(|e| json!({"name": e.name, "path": e.path, "plugin": e.plugin, "command": e.command}))
        .collect();
    ok(json!({"plugins": plugins, "webhooks": webhooks, "routes": [], "pipelines": []}))
}

fn events(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    check_query(c.req, &[])?;
    if c.req.method == "HEAD" {
        // What a GET would start, without holding a stream open.
        return Ok(Reply::text(200, "text/event-stream", String::new()).into());
    }
    let last = match c.req.header("last-event-id") {
        Some(v) => Some(
            std::str::from_utf8(v)
                .map_err(|_| Reply::error(400, "Last-Event-ID is not UTF-8"))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    match c.svc.events.open(last.as_deref()) {
        Ok(stream) => Ok(Outcome::Stream(stream)),
        Err((status, msg)) => Err(Reply::error(status, &msg)),
    }
}

fn metrics(c: &mut Ctx<'_>) -> Result<Outcome, Reply> {
    let svc = c.svc;
    let conn = c.conn()?;
    match svc.metrics.render(svc, conn) {
        Ok(text) => Ok(Reply::text(200, "text/plain; version=0.0.4; charset=utf-8", text).into()),
        Err(e) => Err(store_reply(c.db, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_segments_and_capture_parameters() {
        assert_eq!(matches("/job/{id}", &["job", "x"]), Some(vec!["x"]));
        assert_eq!(matches("/job/{id}", &["job"]), None);
        assert_eq!(
            matches("/job/{id}/tree", &["job", "x", "tree"]),
            Some(vec!["x"])
        );
        assert_eq!(matches("/", &[]), Some(vec![]));
    }

    #[test]
    fn redaction_covers_nested_secret_keys() {
        let v =
            json!({"api_key": "k", "nested": {"Password": "p", "ok": 1}, "list": [{"token": "t"}]});
        let r = redact(&v);
        assert_eq!(r["api_key"], "[REDACTED]");
        assert_eq!(r["nested"]["Password"], "[REDACTED]");
        assert_eq!(r["nested"]["ok"], 1);
        assert_eq!(r["list"][0]["token"], "[REDACTED]");
    }
}
