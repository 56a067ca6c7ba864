//! The webhook listener (12-webhooks, 05-architecture-spec §10): each endpoint
//! verifies an HMAC-SHA256 signature over the raw body (or, opted in, a token)
//! and enqueues one job, answered 202 only once the job row is committed.

use serde_json::{Value, json};

use super::api::health_body;
use super::auth::{constant_time_eq, verify_hmac};
use super::intake::{Work, Written};
use super::request::Outcome;
use super::settings::{Endpoint, Settings};
use super::{Db, Reply, Req, Services};
use crate::store::decisions::{Decision, Kind};
use crate::store::queue::{self, Enqueued, NewJob, SubmittedBy};

/// Routes one request on the webhook listener.
pub fn handle(svc: &Services, db: &mut Db, req: &mut Req) -> Outcome {
    if req.path == "/healthz" {
        req.route = "/healthz";
        if req.method != "GET" && req.method != "HEAD" {
            return Reply::error(405, "only GET is allowed on /healthz")
                .with("Allow", "GET".into())
                .into();
        }
        return health_body(svc, db).into();
    }
    let settings = Settings::of(&svc.cell.current());
    let Some(endpoint) = settings.endpoint(&req.path) else {
        req.route = "-";
        return Reply::error(404, &format!("no webhook endpoint at {}", req.path)).into();
    };
    req.route = "webhook";
    if req.method != "POST" {
        svc.metrics.webhook(&endpoint.name, "method");
        return Reply::error(405, "webhooks accept POST only")
            .with("Allow", "POST".into())
            .into();
    }
    let (reply, outcome) = accept(svc, req, endpoint);
    svc.metrics.webhook(&endpoint.name, outcome);
    reply.into()
}

/// Verifies and enqueues; returns the answer and the outcome label for metrics.
fn accept(svc: &Services, req: &Req, e: &Endpoint) -> (Reply, &'static str) {
    // The listener refused bodies over the endpoint's limit before reading
    // them; this guards a limit lowered by a reload in between.
    if req.body.len() > e.max_body_size {
        return (Reply::error(413, "request body too large"), "too_large");
    }
    let authentic = if e.token_auth {
        token_ok(req, e)
    } else {
        req.header(&e.signature_header)
            .is_some_and(|sig| verify_hmac(&e.secret, &req.body, sig))
    };
    if !authentic {
        // No detail: a prober learns nothing about what was wrong.
        let what = if e.token_auth { "token" } else { "signature" };
        log::warn!(target: "http", "webhook `{}`: request refused (bad or missing {what})", e.name);
        svc.intake.note(refused(
            svc,
            e,
            Kind::WebhookSignatureRejected,
            format!("bad or missing {what} on {}", e.path),
        ));
        return (Reply::error(403, "forbidden"), "forbidden");
    }
    let payload: Value = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(err) => {
                svc.intake.note(refused(
                    svc,
                    e,
                    Kind::ParseInvalid,
                    "the body is not valid JSON",
                ));
                return (
                    Reply::error(400, &format!("the body is not valid JSON: {err}")),
                    "bad_json",
                );
            }
        }
    };
    let dedupe_key = match &e.dedupe_header {
        None => None,
        Some(h) => match req.header(h).map(std::str::from_utf8) {
            Some(Ok(v)) if !v.trim().is_empty() && v.len() <= 256 => {
                Some(format!("webhook:{}:{}", e.name, v.trim()))
            }
            Some(_) => {
                return (
                    Reply::error(400, &format!("header {h} must be 1 to 256 bytes of UTF-8")),
                    "bad_header",
                );
            }
            None => {
                return (
                    Reply::error(400, &format!("header {h} is required by this endpoint")),
                    "bad_header",
                );
            }
        },
    };
    let rt = svc.cell.current();
    let Some(p) = rt.registry.get(&e.plugin) else {
        // Load validated the plugin; a reload that removed it leaves this path.
        return (
            Reply::error(503, &format!("plugin `{}` is not loaded", e.plugin)),
            "unavailable",
        );
    };
    if let Err(answer) = super::api::admit_work(&rt) {
        svc.intake.note(refused(
            svc,
            e,
            Kind::AdmissionRefusedDisk,
            "free disk space is below state.min_free_bytes",
        ));
        return (answer, "refused");
    }
    let now = svc.clock.now();
    // The whole body is the event payload: senders (GitHub, Gitea...) post
    // their own JSON shapes, and the plugin reads them as sent.
    let envelope = queue::envelope(
        "webhook.received",
        &format!("webhook:{}", e.name),
        payload,
        now,
    );
    let mut job = NewJob::new(
        &e.plugin,
        &e.command,
        envelope,
        SubmittedBy::Webhook,
        p.conf.retry.max_attempts,
    );
    job.submitter = Some(e.name.clone());
    if let Some(key) = dedupe_key {
        job.dedupe_key = Some(key);
        // Redelivery within the window is dropped, in flight or done.
        job.dedupe_ttl = Some(rt.config.service.dedupe_ttl);
    }
    match svc
        .intake
        .write(Work::Job(Box::new(job)), rt.config.service.dedupe_ttl)
    {
        Ok(Written::Job(Enqueued::Created(id))) => {
            svc.wake_dispatcher();
            (
                Reply::json(202, &json!({"job_id": id, "status": "queued"})),
                "accepted",
            )
        }
        Ok(Written::Job(Enqueued::Deduplicated(id))) => (
            Reply::json(200, &json!({"job_id": id, "status": "duplicate"})),
            "duplicate",
        ),
        Ok(Written::Plan(_) | Written::Recorded) | Err(_) => (super::api::intake_failed(), "error"),
    }
}

fn token_ok(req: &Req, e: &Endpoint) -> bool {
    let presented = match req.header("authorization") {
        Some(v) => match v
            .strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "))
        {
            Some(t) => t,
            None => return false,
        },
        // The raw key in `token_header` (the config's name for it), else in
        // `signature_header` as before `token_header` existed.
        None => match req.header(e.token_header.as_deref().unwrap_or(&e.signature_header)) {
            Some(v) => v,
            None => return false,
        },
    };
    constant_time_eq(presented, &e.secret)
}

/// The ledger's record of a delivery to `e` refused before it became a job.
fn refused(svc: &Services, e: &Endpoint, kind: Kind, why: impl Into<String>) -> Decision {
    let scope = format!("webhook:{}", e.name);
    Decision::new(&e.plugin, &scope, &e.command, kind, why, svc.clock.now())
}
