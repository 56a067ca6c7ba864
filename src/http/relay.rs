//! Relay ingress (18-remote-event-relay): `POST <listen_path>/<peer>` on the
//! API listener. Checks run in a fixed order (body size, peer, key id,
//! timestamp, signature, envelope, `accept`), each refusal answered with a
//! stable code that says which check failed and nothing about why, and noted
//! in the decisions ledger. An accepted event becomes a fresh local root whose
//! dedupe key makes a replay or a redelivery a 200 without a second run.

use serde_json::{Map, Value, json};

use super::auth::verify_hmac;
use super::intake::{Work, Written};
use super::request::Outcome;
use super::{Reply, Req, Services};
use crate::config::relay::{Ingress, Peer};
use crate::relay::wire;
use crate::store::StoreError;
use crate::store::completion::{Child, Settled};
use crate::store::decisions::{Decision, Kind};
use crate::store::events;

/// Why a request was refused: its status and its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The body is over `max_body_size`.
    BodyTooLarge,
    /// The peer is unknown, disabled, or not the one the headers name.
    UnknownPeer,
    /// `X-Ductile-Key-Id` is missing (when required) or names no key of the peer.
    BadKeyId,
    /// `X-Ductile-Timestamp` is missing or outside `allowed_clock_skew`.
    StaleTimestamp,
    /// `X-Ductile-Signature` does not verify.
    BadSignature,
    /// The body is not a relay envelope.
    BadEnvelope,
    /// The peer may not send this event type (`accept`).
    EventNotAccepted,
}

impl Refusal {
    /// The code in the answer and the ledger.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::UnknownPeer => "unknown_peer",
            Refusal::BadKeyId => "bad_key_id",
            Refusal::StaleTimestamp => "stale_timestamp",
            Refusal::BadSignature => "bad_signature",
            Refusal::BadEnvelope => "bad_envelope",
            Refusal::EventNotAccepted => "event_not_accepted",
        }
    }

    fn status(self) -> u16 {
        match self {
            Refusal::BodyTooLarge => 413,
            Refusal::UnknownPeer | Refusal::EventNotAccepted => 403,
            Refusal::BadKeyId | Refusal::StaleTimestamp | Refusal::BadSignature => 401,
            Refusal::BadEnvelope => 400,
        }
    }
}

/// Answers `req` when it is under the ingress root, else `None` (the API's own
/// route table takes it).
pub fn ingress(svc: &Services, req: &mut Req) -> Option<Outcome> {
    let rt = svc.cell.current();
    let ingress = rt.config.relay.ingress.as_ref()?;
    let peer_name = req
        .path
        .strip_prefix(ingress.listen_path.as_str())?
        .strip_prefix('/')?
        .to_string();
    if peer_name.is_empty() || peer_name.contains('/') {
        return None;
    }
    req.route = "relay-ingress";
    if req.method != "POST" {
        return Some(
            Reply::error(405, "relay ingress accepts POST only")
                .with("Allow", "POST".into())
                .into(),
        );
    }
    let reply = match check(svc, ingress, &peer_name, req) {
        Ok((peer, envelope, signature)) => accept(svc, &rt, peer, envelope, &signature),
        Err(refusal) => {
            log::warn!(target: "http", "relay ingress: request for peer `{}` refused ({})", peer_name.escape_debug(), refusal.code());
            let scope = format!("relay:{}", truncate(&peer_name));
            svc.intake.note(Decision::new(
                "relay",
                &scope,
                "accept",
                Kind::RelayRejected,
                refusal.code(),
                svc.clock.now(),
            ));
            Reply::json(
                refusal.status(),
                &json!({"error": "relay request refused", "code": refusal.code()}),
            )
        }
    };
    Some(reply.into())
}

/// A peer name for the ledger: what a prober sends is bounded.
fn truncate(name: &str) -> String {
    name.chars().take(64).collect()
}

/// A verified envelope.
struct Envelope {
    event_type: String,
    payload: Value,
    dedupe_key: Option<String>,
    event_id: Option<String>,
    baggage: Map<String, Value>,
    /// This clock minus the sender's timestamp, in seconds.
    skew_seconds: i64,
}

fn check<'i>(
    svc: &Services,
    ingress: &'i Ingress,
    peer_name: &str,
    req: &Req,
) -> Result<(&'i Peer, Envelope, String), Refusal> {
    if req.body.len() > ingress.max_body_size {
        return Err(Refusal::BodyTooLarge);
    }
    let header = |name: &str| {
        req.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    };
    let peer = ingress
        .peer(peer_name)
        .filter(|p| p.enabled)
        .filter(|p| header(wire::PEER) == Some(p.name.as_str()))
        .ok_or(Refusal::UnknownPeer)?;
    let key_id = header(wire::KEY_ID).filter(|k| !k.is_empty());
    let candidates: Vec<_> = match key_id {
        Some(id) => peer
            .keys
            .iter()
            .filter(|k| k.key_id.as_deref() == Some(id))
            .collect(),
        None if ingress.require_key_id => Vec::new(),
        // Without an id every key of the peer may have signed it.
        None => peer.keys.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(Refusal::BadKeyId);
    }
    let ts_text = header(wire::TIMESTAMP).ok_or(Refusal::StaleTimestamp)?;
    let ts: i64 = ts_text.parse().map_err(|_| Refusal::StaleTimestamp)?;
    let skew = i64::try_from(ingress.allowed_clock_skew.as_secs()).unwrap_or(i64::MAX);
    if (svc.clock.now().timestamp() - ts).abs() > skew {
        return Err(Refusal::StaleTimestamp);
    }
    let signature = req.header(wire::SIGNATURE).ok_or(Refusal::BadSignature)?;
    let message = wire::message(&req.method, &req.path, ts_text, &req.body);
    if !candidates
        .iter()
        .any(|k| verify_hmac(k.secret.expose().as_bytes(), &message, signature))
    {
        return Err(Refusal::BadSignature);
    }
    let mut envelope = parse(&req.body, &peer.name).ok_or(Refusal::BadEnvelope)?;
    if !peer.accepts(&envelope.event_type) {
        return Err(Refusal::EventNotAccepted);
    }
    envelope.skew_seconds = svc.clock.now().timestamp() - ts;
    let signature = String::from_utf8_lossy(signature).trim().to_string();
    Ok((peer, envelope, signature))
}

/// The envelope of the spec; `origin.instance` must be the peer itself.
fn parse(body: &[u8], peer: &str) -> Option<Envelope> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let event = v.get("event")?.as_object()?;
    let event_type = event.get("type")?.as_str()?;
    if event_type.is_empty() || event_type.len() > 256 || event_type.contains(char::is_whitespace) {
        return None;
    }
    let payload = match event.get("payload") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return None,
    };
    let short_text = |v: Option<&Value>| -> Option<Option<String>> {
        match v {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(Some(s.clone())),
            Some(_) => None,
        }
    };
    let dedupe_key = short_text(event.get("dedupe_key"))?;
    let origin = v.get("origin")?.as_object()?;
    if origin.get("instance")?.as_str()? != peer {
        return None;
    }
    for k in ["plugin", "job_id"] {
        short_text(origin.get(k))?;
    }
    let event_id = short_text(origin.get("event_id"))?;
    let baggage = match v.get("baggage") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return None,
    };
    Some(Envelope {
        event_type: event_type.to_string(),
        payload,
        dedupe_key,
        event_id,
        baggage,
        skew_seconds: 0,
    })
}

fn accept(
    svc: &Services,
    rt: &crate::runtime::Runtime,
    peer: &Peer,
    envelope: Envelope,
    signature: &str,
) -> Reply {
    if let Err(answer) = super::api::admit_work(rt) {
        return answer;
    }
    // One key per event: the sender's dedupe key, else its event id, else the
    // signature itself (which a replay repeats byte for byte).
    let dedupe_key = match (&envelope.dedupe_key, &envelope.event_id) {
        (Some(k), _) => format!("relay:{}:key:{k}", peer.name),
        (None, Some(id)) => format!("relay:{}:event:{id}", peer.name),
        (None, None) => format!("relay:{}:sig:{signature}", peer.name),
    };
    let baggage: Map<String, Value> = envelope
        .baggage
        .into_iter()
        .filter(|(k, _)| peer.baggage_allow.iter().any(|a| a == k))
        .collect();
    let ttl = rt.config.service.dedupe_ttl;
    let now = svc.clock.now();
    let mut plan = crate::router::engine::start_remote(
        rt,
        &envelope.event_type,
        envelope.payload,
        Value::Object(baggage),
        &peer.name,
        &dedupe_key,
        ttl,
        now,
    );
    // The skew rides on the root's answer: `system doctor` reads the last one.
    if let Some(Settled::Succeeded(Value::Object(answer))) =
        plan.first_mut().and_then(|c| c.settled.as_mut())
    {
        answer.insert("skew_seconds".into(), json!(envelope.skew_seconds));
    }
    let root = plan
        .first()
        .and_then(|c| c.job.id.clone())
        .unwrap_or_default();
    match svc.intake.write(Work::Plan(plan), ttl) {
        Ok(Written::Plan(ids)) if ids.first() == Some(&root) => {
            svc.wake_dispatcher();
            log::info!(target: "http", job_id = root.as_str(); "relay ingress: accepted `{}` from peer `{}`", envelope.event_type, peer.name);
            Reply::json(202, &json!({"status": "accepted", "job_id": root}))
        }
        Ok(Written::Plan(_)) => {
            svc.intake.note(Decision::new(
                "relay",
                &format!("relay:{}", peer.name),
                "accept",
                Kind::Deduplicated,
                format!("same dedupe key `{dedupe_key}` as an event accepted recently"),
                now,
            ));
            Reply::json(200, &json!({"status": "duplicate"}))
        }
        Ok(Written::Job(_) | Written::Recorded) | Err(_) => super::api::intake_failed(),
    }
}

/// Inside the intake's transaction: a `relay.accepted` event for a plan
/// whose root is a relay acceptance that was created (not a redelivery).
pub(super) fn record_acceptance(
    tx: &rusqlite::Transaction<'_>,
    plan: &[Child],
    created: &[String],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    let Some(root) = plan.first() else {
        return Ok(());
    };
    let job = &root.job;
    if job.plugin != crate::relay::outbox::PLUGIN
        || job.command != "accept"
        || job.id.is_none()
        || created.first() != job.id.as_ref()
    {
        return Ok(());
    }
    let skew = match &root.settled {
        Some(Settled::Succeeded(answer)) => answer.get("skew_seconds").cloned(),
        _ => None,
    };
    let data = json!({
        "peer": job.submitter,
        "event_type": job.payload.get("type"),
        "skew_seconds": skew,
        "routed_jobs": created.len().saturating_sub(1),
    });
    events::record(
        tx,
        "relay.accepted",
        Some(&job.plugin),
        Some(&job.command),
        job.id.as_deref(),
        &data,
        now,
    )
}

/// Inside the intake's transaction: a `relay.rejected` event for a refusal.
pub(super) fn record_refusal(
    tx: &rusqlite::Transaction<'_>,
    d: &Decision,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), StoreError> {
    if d.kind != Kind::RelayRejected {
        return Ok(());
    }
    let peer = d.scope.strip_prefix("relay:").unwrap_or(&d.scope);
    let data = json!({"peer": peer, "reason": d.detail});
    events::record(
        tx,
        "relay.rejected",
        Some(&d.plugin),
        d.command.as_deref(),
        None,
        &data,
        now,
    )
}
