//! The outbox: an event on its way to a remote instance is a job (`relay` /
//! `send`) committed before any network I/O, so a crash, a restart or a
//! receiver that is down for an hour loses nothing. The job's payload holds
//! the target instance and the exact envelope every attempt sends; only the
//! timestamp and the signature are made fresh per attempt.

use serde_json::{Map, Value, json};

use crate::config::relay::Instance;
use crate::store::queue::{NewJob, SubmittedBy};

/// The `plugin` of an outbox job (and of a received event's root row).
pub const PLUGIN: &str = "relay";
/// The `command` of an outbox job.
pub const SEND: &str = "send";

/// An event to relay, before it becomes a job.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The remote event type (`backup.ready`).
    pub event_type: String,
    /// The remote event payload (an object).
    pub payload: Map<String, Value>,
    /// The receiver's dedupe key for this event, if any.
    pub dedupe_key: Option<String>,
    /// The local plugin the event comes from.
    pub origin_plugin: Option<String>,
    /// The local job the event comes from.
    pub origin_job_id: Option<String>,
    /// The event's id; when unset the outbox job's id is used, so every
    /// redelivery of the row carries the same id and the receiver recognises it.
    pub origin_event_id: Option<String>,
    /// Baggage offered to the receiver (it keeps only its `baggage.allow` keys).
    pub baggage: Map<String, Value>,
}

/// Why an event cannot be put in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// The outbox job delivering `event` to `instance` as `sender` (this
/// instance's `service.name`); `id` is the job's id, fixed in advance.
pub fn job(
    instance: &Instance,
    sender: &str,
    event: &Outgoing,
    id: &str,
    submitted_by: SubmittedBy,
) -> Result<NewJob, Refused> {
    check(instance, &event.event_type)?;
    let body = envelope(sender, event, id);
    let payload = json!({"instance": instance.name, "body": body});
    let mut job = NewJob::new(
        PLUGIN,
        SEND,
        payload,
        submitted_by,
        instance.retry.max_attempts,
    );
    job.id = Some(id.to_string());
    job.submitter = Some(instance.name.clone());
    Ok(job)
}

/// Whether `instance` may be sent `event_type` now.
pub fn check(instance: &Instance, event_type: &str) -> Result<(), Refused> {
    if !instance.enabled {
        return Err(Refused(format!(
            "relay instance `{}` is disabled (`enabled: false` at {} in {})",
            instance.name,
            instance.origin,
            instance.file.display()
        )));
    }
    if !valid_event_type(event_type) {
        return Err(Refused(format!(
            "`{event_type}` is not an event type: lower-case dotted words, such as `backup.ready`"
        )));
    }
    if !instance.allows(event_type) {
        return Err(Refused(format!(
            "relay instance `{}` does not allow `{event_type}` (its `allow:` lists {}; {} in {})",
            instance.name,
            instance.allow.join(", "),
            instance.origin,
            instance.file.display()
        )));
    }
    Ok(())
}

/// The receiver refuses types with whitespace, empty ones and long ones; the
/// sender refuses them before they reach the outbox.
fn valid_event_type(t: &str) -> bool {
    !t.is_empty() && t.len() <= 256 && !t.contains(char::is_whitespace)
}

/// The wire body of 18-remote-event-relay.
pub fn envelope(sender: &str, event: &Outgoing, job_id: &str) -> Value {
    let mut ev = Map::new();
    ev.insert("type".into(), json!(event.event_type));
    ev.insert("payload".into(), Value::Object(event.payload.clone()));
    if let Some(k) = &event.dedupe_key {
        ev.insert("dedupe_key".into(), json!(k));
    }
    let mut origin = Map::new();
    origin.insert("instance".into(), json!(sender));
    if let Some(p) = &event.origin_plugin {
        origin.insert("plugin".into(), json!(p));
    }
    if let Some(j) = &event.origin_job_id {
        origin.insert("job_id".into(), json!(j));
    }
    origin.insert(
        "event_id".into(),
        json!(event.origin_event_id.as_deref().unwrap_or(job_id)),
    );
    json!({"event": ev, "origin": origin, "baggage": event.baggage})
}

/// The instance and body of an outbox job's payload.
pub fn parts(payload: &Value) -> Option<(&str, &Value)> {
    let instance = payload.get("instance")?.as_str()?;
    let body = payload.get("body").filter(|b| b.is_object())?;
    Some((instance, body))
}

/// The breaker of deliveries to `instance`: one per target, beside the
/// plugins' own in `circuit_breakers`.
pub fn breaker_key(instance: &str) -> (String, &'static str) {
    (format!("{PLUGIN}:{instance}"), SEND)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(allow: &[&str], enabled: bool) -> Instance {
        Instance {
            name: "lab".into(),
            enabled,
            base_url: "http://127.0.0.1:1".into(),
            ingress_path: "/ingest/peer/home".into(),
            secret_ref: "k".into(),
            secret: crate::secret::Secret::new("s".to_string()),
            key_id: Some("v1".into()),
            timeout: std::time::Duration::from_secs(1),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            allow_insecure: false,
            retry: crate::config::relay::default_retry(),
            circuit_breaker: crate::config::relay::default_breaker(),
            file: "relay-instances.yaml".into(),
            origin: "instances[0]".into(),
        }
    }

    #[test]
    fn the_envelope_is_the_specs_shape_and_carries_a_stable_event_id() {
        let mut e = Outgoing {
            event_type: "backup.ready".into(),
            dedupe_key: Some("k1".into()),
            origin_plugin: Some("backup-runner".into()),
            ..Outgoing::default()
        };
        e.payload.insert("archive_id".into(), json!("n1"));
        e.baggage.insert("trace_id".into(), json!("t"));
        let job = job(&instance(&[], true), "home", &e, "J1", SubmittedBy::Cli).unwrap();
        assert_eq!(
            (job.plugin.as_str(), job.command.as_str()),
            ("relay", "send")
        );
        assert_eq!(job.max_attempts, 30);
        let (to, body) = parts(&job.payload).unwrap();
        assert_eq!(to, "lab");
        assert_eq!(
            body,
            &json!({
                "event": {"type": "backup.ready", "payload": {"archive_id": "n1"}, "dedupe_key": "k1"},
                "origin": {"instance": "home", "plugin": "backup-runner", "event_id": "J1"},
                "baggage": {"trace_id": "t"}
            })
        );
    }

    #[test]
    fn disabled_instances_and_types_outside_allow_are_refused() {
        let e = Outgoing {
            event_type: "backup.ready".into(),
            ..Outgoing::default()
        };
        let off = job(&instance(&[], false), "home", &e, "J", SubmittedBy::Cli).unwrap_err();
        assert!(off.0.contains("disabled"), "{off}");
        let other = job(&instance(&["x.y"], true), "home", &e, "J", SubmittedBy::Cli).unwrap_err();
        assert!(other.0.contains("does not allow `backup.ready`"), "{other}");
        let bad = Outgoing {
            event_type: "two words".into(),
            ..Outgoing::default()
        };
        assert!(job(&instance(&[], true), "home", &bad, "J", SubmittedBy::Cli).is_err());
    }
}
